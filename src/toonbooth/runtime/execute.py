"""Run one job spec through its engine and store its outputs. CLI, server runners and workers all call
`execute`: there is one execution path."""

from __future__ import annotations

from typing import Any

from ..core.results import JobOutput, OutputRef
from ..core.specs import SpecBase
from ..engines.base import EngineOutput, EngineRegistry, check_model_names
from .context import JobContext
from .outputs import encode_artifact


def execute(spec: SpecBase, ctx: JobContext, engines: EngineRegistry | None = None) -> JobOutput:
    """Run `spec` with the engine of its kind (from `engines`; default: this program's engines) and store
    every artifact of its output with its media type."""
    if engines is None:
        from .engines import default_engines

        engines = default_engines()
    engine = engines.engine(spec.kind)  # type: ignore[attr-defined]
    # 1. Refuse bad input before any heavy work (the service did at submit; the CLI has not)
    check_model_names(engine.required_models(spec), ctx.models)
    engine.check_inputs(spec, ctx.models, ctx.owner)
    # 2. Run, then store every artifact
    output = engine.run(spec, ctx)
    if not isinstance(output, engine.Output):
        raise TypeError(f"engine {engine!r} returned {type(output).__name__}, not {engine.Output.__name__}")
    return store_output(output, ctx.storage)


def store_output(output: EngineOutput, storage: Any) -> JobOutput:
    """Encode and store the artifacts (primary first) and describe them as a JobOutput."""
    refs = []
    for name, artifact, primary in output.artifacts():
        encoded = encode_artifact(artifact)
        ref = storage.put(encoded.data, content_type=encoded.media_type)
        refs.append(OutputRef(
            name=name, ref=ref, media_type=encoded.media_type, primary=primary, width=encoded.width,
            height=encoded.height, frames=encoded.frames, duration_s=encoded.duration_s,
        ))  # fmt: skip
    return JobOutput(
        outputs=refs, backend=output.backend, backend_reason=output.backend_reason, warnings=output.warnings,
        info=output.details(),
    )  # fmt: skip
