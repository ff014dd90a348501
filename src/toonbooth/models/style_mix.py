"""Styles by name, combined: a studio names one or more styles with a strength each (`[{name, weight}]`) and
this turns them into what a Stable Diffusion job needs — LoRAs with weights for `models.sd.apply_loras`, and
prompt words (a LoRA style's trigger word; a textual-inversion style's name, emphasised by its weight as
A1111 does: `(name:0.7)`).

A style is a LoRA or a textual-inversion embedding (multi-stage ones included: `models.sd.job_prompts` swaps
their stages during denoising) that the registry shows to the job's owner: the owner's own trained styles
first, then shared files. The trigger word of a LoRA comes from its file's safetensors header, where
toonbooth's trainer writes it (`toonbooth.trigger`, also `modelspec.trigger_phrase`, the field other trainers
use). Weight 0 switches a style off completely (no adapter, no trigger word): the base model's output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..core.errors import InputError, ModelError, ModelNotFoundError
from .manager import ModelManager

STYLE_KINDS = ("lora", "embedding")
TRIGGER_KEYS = ("toonbooth.trigger", "modelspec.trigger_phrase")


class StyleUse(BaseModel):
    """One style of a job, resolved: what it is, whose it is, how it enters the job."""

    name: str
    kind: Literal["lora", "embedding"]
    weight: float
    arch: str
    mine: bool = Field(description="True: the job owner's own style; False: a shared one.")
    trigger: str | None = Field(None, description="LoRA trigger word put into the prompt (from the file).")
    prompt_words: str = Field("", description="What this style adds to the prompt ('' for weight 0).")


@dataclass(frozen=True)
class StyleMix:
    """The styles of a job: the LoRAs to activate and the words they add to the prompt."""

    uses: list[StyleUse]

    @property
    def loras(self) -> list[tuple[str, float]]:
        """(name, weight) of the active LoRA styles, for `models.sd.apply_loras`."""
        return [(u.name, u.weight) for u in self.uses if u.kind == "lora" and u.weight != 0]

    @property
    def prompt_words(self) -> str:
        """The styles' words, comma-separated, in the order given ('' when none)."""
        return ", ".join(u.prompt_words for u in self.uses if u.prompt_words)

    def text(self) -> str:
        """`name:weight, ...` for infotext."""
        return ", ".join(f"{u.name}:{u.weight:g}" for u in self.uses)


def lora_trigger(entry: Any) -> str | None:
    """The trigger word stored in a LoRA file's safetensors header, if any (only the header is read)."""
    from .probe import read_header

    path = getattr(entry, "path", None)
    if path is None or not path.is_file() or path.suffix.lower() != ".safetensors":
        return None
    try:
        meta = read_header(path).metadata
    except ModelError:
        return None
    for key in TRIGGER_KEYS:
        value = (meta.get(key) or "").strip()
        if value:
            return value
    return None


def _find(models: ModelManager, name: str, owner: str | None) -> Any:
    """The registry entry of style `name`: a LoRA or an embedding; the owner's own wins, then a LoRA."""
    found = []
    for kind in STYLE_KINDS:
        try:
            found.append(models.entry(name, kind, owner))
        except ModelNotFoundError:
            continue
    if not found:
        raise ModelNotFoundError(name)
    found.sort(key=lambda e: (owner is None or e.owner != owner, STYLE_KINDS.index(e.kind)))
    return found[0]


def _known(models: ModelManager, owner: str | None) -> str:
    mine = sorted({e.name for k in STYLE_KINDS for e in models.registry.list(k, owner) if e.owner and e.owner == owner})
    shared = sorted({e.name for k in STYLE_KINDS for e in models.registry.list(k, owner) if e.owner is None})
    return f"yours: {', '.join(mine) or '(none)'}; shared: {', '.join(shared[:30]) or '(none)'}"


def resolve_styles(
    models: ModelManager, styles: Sequence[Any], arch: str, owner: str | None, *, field: str = "styles"
) -> StyleMix:
    """Resolve `styles` (objects with `name` and `weight`) for a checkpoint of `arch`. Errors name the item's
    field (`styles.1.name`): an unknown name (listing the owner's and the shared styles), a style of another
    architecture, a name given twice."""
    uses: list[StyleUse] = []
    seen: set[str] = set()
    for i, style in enumerate(styles):
        where = f"{field}.{i}.name"
        try:
            entry = _find(models, style.name, owner)
        except ModelNotFoundError:
            raise InputError(
                where, f"no style called {style.name!r} (a LoRA or textual-inversion embedding); "
                f"{_known(models, owner)}", style.name,
            ) from None  # fmt: skip
        except ModelError as exc:  # a pickled or unreadable file of that name
            raise InputError(where, str(exc), style.name) from None
        if entry.arch not in (arch, "unknown"):
            raise InputError(where, f"style {style.name!r} is for {entry.arch}, the checkpoint is {arch}", style.name)
        key = f"{entry.kind}:{entry.name}".lower()
        if key in seen:
            raise InputError(where, f"style {style.name!r} is given twice", style.name)
        seen.add(key)
        weight = float(style.weight)
        trigger = lora_trigger(entry) if entry.kind == "lora" else None
        if weight == 0:
            words = ""
        elif entry.kind == "embedding":
            words = entry.name if weight == 1 else f"({entry.name}:{weight:g})"
        else:
            words = trigger or ""
        uses.append(StyleUse(
            name=entry.name, kind=entry.kind, weight=weight, arch=entry.arch if entry.arch != "unknown" else arch,
            mine=owner is not None and entry.owner == owner, trigger=trigger, prompt_words=words,
        ))  # fmt: skip
    return StyleMix(uses)


def join_prompt(*parts: str) -> str:
    """Non-empty parts joined with ', ' (trailing commas and spaces of each part trimmed)."""
    cleaned = [p.strip().strip(",").strip() for p in parts]
    return ", ".join(p for p in cleaned if p)


__all__ = ["StyleMix", "StyleUse", "join_prompt", "lora_trigger", "resolve_styles"]
