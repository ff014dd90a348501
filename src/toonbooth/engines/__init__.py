"""Engines: one file per studio / job kind. `run(spec, ctx) -> EngineResult`. Engines never import each other."""
