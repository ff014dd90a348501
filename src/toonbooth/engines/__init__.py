"""Engines: one file per studio / job kind. an `Engine` (base.py) with `run(spec, ctx) -> Output`. Engines never import each other."""
