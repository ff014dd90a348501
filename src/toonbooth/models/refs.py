"""What an engine says it needs: a model of a kind, by name, for a spec field (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelRef:
    """One model a job needs.

    `kind` is a model family's kind (checkpoint, controlnet, lora, embedding, sam, lama, ...), `name` what the
    spec says (a registry name, a file stem, a hub id), `field` the spec field it came from (errors name it),
    `arch` the base architecture it must fit (sd15 / sdxl) when that matters, `optional` whether the job can
    run without it (then its absence is reported, not refused)."""

    kind: str
    name: str
    field: str
    arch: str | None = None
    optional: bool = False

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r}"
