"""Run one job spec through its engine and store its outputs. CLI, server runners and workers all
call `execute`: there is one execution path."""

from __future__ import annotations

import importlib

from ..core.errors import InputError
from ..core.images import image_to_png_bytes
from ..core.results import JobOutput, OutputRef
from ..core.specs import SpecBase
from .context import JobContext

# kind -> engine module (each exposes `run(spec, ctx) -> EngineResult`)
ENGINES: dict[str, str] = {
    "avatar": "toonbooth.engines.avatar",
    "generate": "toonbooth.engines.generate",
    "train_lora": "toonbooth.training.job",
    "train_dreambooth": "toonbooth.training.job",
    "train_ti": "toonbooth.training.job",
    "anime": "toonbooth.engines.anime",
}


def engine_for(kind: str):
    if kind not in ENGINES:
        raise InputError("kind", f"no engine for job kind {kind!r}; known: {', '.join(sorted(ENGINES))}", kind)
    return importlib.import_module(ENGINES[kind])


def execute(spec: SpecBase, ctx: JobContext) -> JobOutput:
    engine = engine_for(spec.kind)  # type: ignore[attr-defined]
    result = engine.run(spec, ctx)
    outputs = []
    for named in result.images:
        png = image_to_png_bytes(named.image, parameters=named.parameters)
        ref = ctx.storage.put(png)
        outputs.append(OutputRef(name=named.name, ref=ref, width=named.image.width, height=named.image.height))
    return JobOutput(
        outputs=outputs,
        backend=result.backend,
        backend_reason=result.backend_reason,
        warnings=result.warnings,
        info=result.info,
    )
