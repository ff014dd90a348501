"""toonbooth.training layer: LoRA, DreamBooth-LoRA and textual-inversion training as jobs.

`job.run(spec, ctx)` is what the runtime calls for kinds `train_lora`, `train_dreambooth` and `train_ti`;
`styles` lists and deletes the trained styles of an owner; `presets` describes the presets.
"""
