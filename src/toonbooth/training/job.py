"""The training jobs: `TrainEngine` for kinds `train_lora`, `train_dreambooth` and `train_ti` (one engine per
kind in the runtime's engine registry, on the training queue; training sits above engines in the layers).

Reads top-down like the engines: check inputs, prepare the images, load a private copy of the base model,
make the class images of prior preservation (cached), cache latents, train (resuming from the job's last
checkpoint), export + register the style under its owner, make sample images, clean up.
"""

from __future__ import annotations

import gc
import hashlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image

from ..core.artifacts import ImageArtifact
from ..core.errors import InputError, ToonboothError
from ..core.fs import atomic_path
from ..core.images import format_a1111_parameters, load_image
from ..core.settings import Settings
from ..core.specs import TrainDreamBoothSpec, TrainLoraSpec, TrainTISpec
from ..engines.base import Engine, EngineContext, EngineOutput, JobCost
from ..models.infotext import version_text
from ..models.manager import ModelManager
from . import checkpoint as ckpt
from .dataset import build_caption, fit_to_bucket, prepare_examples
from .export import kohya_metadata, save_kohya_lora, save_peft_lora, save_ti, save_ti_stages, style_metadata
from .loop import LoopConfig, Precision, TrainData, Trainer, encode_latent_dists, resolve_precision, too_long
from .presets import image_count_bounds, total_steps
from .styles import StyleInfo, check_name_free, register_style

TrainSpec = TrainLoraSpec | TrainDreamBoothSpec | TrainTISpec
MAX_LOSS_POINTS = 2000
_FINGERPRINT_EXCLUDE = {
    "sample_prompts", "sample_steps", "sample_guidance", "delete_images_after", "checkpoint_every", "image_names",
    "owner",
}  # fmt: skip


class _Progress:
    """One 0..total progress stream over class images, training steps and samples."""

    def __init__(self, ctx: EngineContext, total: int):
        self.ctx, self.total, self.done = ctx, max(1, total), 0

    def advance(self, n: int, stage: str) -> None:
        self.done += n
        self.ctx.progress(min(self.done, self.total), self.total, stage=stage)


class TrainOutput(EngineOutput):
    """Sample images made with the trained style (fixed prompts and seeds); the style itself is registered
    under its owner (see `info["style"]`)."""

    primary: ClassVar[str] = "samples"
    item_names: ClassVar[dict[str, str]] = {"samples": "sample_{i}"}
    samples: list[ImageArtifact]


class TrainEngine(Engine):
    """One training kind (LoRA, DreamBooth-LoRA, textual inversion): long jobs on the training queue."""

    queue = "train"
    Output = TrainOutput

    def __init__(self, spec_type: type[TrainLoraSpec | TrainDreamBoothSpec | TrainTISpec]):
        self.Spec = spec_type
        self.kind = spec_type.model_fields["kind"].default

    def check_inputs(self, spec: TrainSpec, models: ModelManager, owner: str | None) -> None:
        check_name_free(models.registry, Path(models.registry.models_dirs[0]), owner, spec.style_name)
        entry = models.entry(spec.base, "checkpoint", owner)
        if spec.arch == "auto" and entry.arch not in ("sd15", "sdxl"):
            raise InputError(
                "arch", f"cannot tell whether {spec.base!r} is sd15 or sdxl ({entry.arch}): give `arch`", spec.arch
            )
        if isinstance(spec, TrainTISpec):  # textual inversion learns the token: every given caption must hold it
            names = list(spec.image_names) or [f"image {i + 1}" for i in range(len(spec.captions))]
            for i, caption in enumerate(spec.captions):
                build_caption(caption, template=spec.caption_template, trigger=spec.effective_trigger(),
                              class_word=spec.class_word, prefix_trigger=False, require_trigger=True,
                              field=f"captions.{i}", name=names[i] if i < len(names) else f"image {i + 1}")  # fmt: skip

    def cost(self, spec: TrainSpec, settings: Settings) -> JobCost:
        res = spec.resolution or 1024  # the arch's default resolution is at most 1024
        steps = spec.steps or 1000  # epochs: bounded by the image count (<= a few hundred) in practice
        return JobCost(train_pixel_steps=(steps * res * res, "steps" if spec.steps else "resolution"))

    def run(self, spec: TrainSpec, ctx: EngineContext) -> TrainOutput:
        return run(spec, ctx)


def _owner(spec: TrainSpec, ctx: EngineContext) -> str | None:
    ctx_owner = ctx.owner
    if ctx_owner is not None:
        if spec.owner not in (None, ctx_owner):
            raise InputError(
                "owner",
                f"styles can only be trained for yourself ({ctx_owner!r}), got {spec.owner!r}",
                spec.owner,
            )
        return ctx_owner
    return spec.owner


def fingerprint(spec: TrainSpec, base_location: str) -> str:
    body = spec.model_dump_json(exclude=_FINGERPRINT_EXCLUDE)
    return hashlib.sha256(f"{body}\n{base_location}".encode()).hexdigest()


def work_dir(ctx: EngineContext, fp: str) -> Path:
    """`<data>/training/<job id>` (a restarted job finds its checkpoints); CLI runs key on the spec."""
    job_id = str(ctx.job_id or "")
    key = re.sub(r"[^A-Za-z0-9_.-]", "_", job_id)[:80] if job_id else f"local-{fp[:20]}"
    return ctx.settings.resolved_data_dir / "training" / key


def _load_pipeline(ctx: EngineContext, entry: Any, arch: str, precision: Precision) -> Any:
    """A private txt2img pipeline of the base (never the cached one: adapters are added to it), loaded
    through the model manager's checkpoint family."""
    import diffusers

    from ..models import sd

    if entry.arch == "unknown":
        entry = entry.model_copy(update={"arch": arch})
    base = ctx.models.load_uncached(entry, device=precision.device, dtype=precision.weight_dtype)
    cls = diffusers.StableDiffusionXLPipeline if arch == "sdxl" else diffusers.StableDiffusionPipeline
    extra = {} if arch == "sdxl" else {"requires_safety_checker": False}
    pipe = sd.compose(cls, base, **extra)
    pipe.to(precision.device)
    return pipe


def _class_images(
    spec: TrainDreamBoothSpec, ctx: EngineContext, pipe: Any, entry: Any, base_hash: str | None, resolution: int,
    progress: _Progress,
) -> list[Image.Image]:  # fmt: skip
    """Given class images, else the base model's, cached in `<data>/cache/class-images/<key>` and reused."""
    if spec.class_images:
        given = [ctx.load_image(ref, field=f"class_images[{i}]") for i, ref in enumerate(spec.class_images)]
        progress.advance(len(given), "class images (given)")
        return given
    count = spec.class_image_count(on_gpu=pipe.device.type != "cpu")
    prompt = spec.effective_class_prompt()
    ident = {"base": entry.location, "hash": base_hash, "prompt": prompt, "res": resolution,
             "steps": spec.class_image_steps, "dtype": str(pipe.unet.dtype)}  # fmt: skip
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]
    folder = ctx.settings.resolved_data_dir / "cache" / "class-images" / key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "about.json").write_text(json.dumps(ident, indent=2), encoding="utf-8")
    limits = {"max_bytes": 1 << 30, "max_pixels": 1 << 30}
    out: list[Image.Image] = []
    made = 0
    missing = sum(not (folder / f"{i:05d}.png").is_file() for i in range(count))
    if missing:
        ctx.log(f"class images: generating {missing} of {count} with the base model ({spec.class_image_steps} steps "
                f"each; the time per image follows after the first)")  # fmt: skip
    started = time.perf_counter()
    for i in range(count):
        path = folder / f"{i:05d}.png"
        if path.is_file():
            out.append(load_image(path, field="class image cache", **limits))
            progress.advance(1, f"class images {i + 1}/{count} (cached)")
            continue
        ctx.check_canceled()
        gen = torch.Generator(device="cpu").manual_seed(i)
        img = pipe(
            prompt, num_inference_steps=spec.class_image_steps, guidance_scale=7.0, generator=gen,
            height=resolution, width=resolution,
        ).images[0]  # fmt: skip
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG")
        out.append(img)
        made += 1
        if made == 1 and missing > 1:
            each = time.perf_counter() - started
            ctx.log(f"class images: {each:.1f} s each, about {_fmt_eta(each * (missing - 1))} for the other {missing - 1}")
        progress.advance(1, f"class images {i + 1}/{count}")
    ctx.log(f"class images: {len(out) - made} reused from the cache, {made} generated ({prompt!r})")
    return out


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def run(spec: TrainSpec, ctx: EngineContext) -> TrainOutput:
    from diffusers import DDPMScheduler

    is_ti = isinstance(spec, TrainTISpec)
    is_db = isinstance(spec, TrainDreamBoothSpec)
    # 1. Check inputs (cheap, before any model is touched)
    owner = _owner(spec, ctx)
    models = ctx.models
    registry = models.registry
    models_dir = Path(registry.models_dirs[0])
    check_name_free(registry, models_dir, owner, spec.style_name)
    entry = models.entry(spec.base, "checkpoint", owner)
    arch = entry.arch if spec.arch == "auto" else spec.arch
    if arch not in ("sd15", "sdxl"):
        raise InputError(
            "arch",
            f"cannot tell whether {spec.base!r} is sd15 or sdxl ({entry.arch}): give `arch`",
            spec.arch,
        )
    if entry.arch not in (arch, "unknown"):
        raise InputError("arch", f"{spec.base!r} is a {entry.arch} checkpoint, got arch {arch!r}", arch)
    precision = resolve_precision(spec.mixed_precision, models.device)
    resolution = spec.effective_resolution(arch)
    trigger = spec.effective_trigger()
    base_hash = models.short_hash(entry)
    fp = fingerprint(spec, entry.location)
    work = work_dir(ctx, fp)

    # 2. Prepare the images: safe decoding, duplicates, (face) crops, buckets, captions
    images = [ctx.load_image(ref, field=f"images[{i}]") for i, ref in enumerate(spec.images)]
    names = list(spec.image_names) or [f"image {i + 1}" for i in range(len(images))]
    lo, hi = image_count_bounds(spec.preset)
    examples = prepare_examples(
        images, names, list(spec.captions), resolution=resolution, buckets=spec.buckets, face_crop=spec.face_crop,
        trigger=trigger, class_word=spec.class_word, template=spec.caption_template,
        prefix_trigger=spec.caption_prefix_trigger and not is_ti, require_trigger=is_ti, min_images=lo, max_images=hi,
    )  # fmt: skip
    del images
    buckets = sorted({ex.bucket for ex in examples})
    ctx.log(f"{len(examples)} images at {resolution}px, buckets {', '.join(f'{w}x{h}' for w, h in buckets)}")

    # 3. Load a private copy of the base model and the noise schedule
    pipe = _load_pipeline(ctx, entry, arch, precision)
    ctx.check_canceled()
    tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if arch == "sdxl" else [])
    text_encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if arch == "sdxl" else [])
    for te in text_encoders:
        te.requires_grad_(False)
    pipe.unet.requires_grad_(False)
    pipe.vae.requires_grad_(False)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction = (
        noise_scheduler.config.prediction_type if spec.prediction_type == "auto" else spec.prediction_type
    )
    if prediction not in ("epsilon", "v_prediction"):
        raise InputError(
            "prediction_type", f"the base uses {prediction!r}; give epsilon or v_prediction", prediction
        )
    long = too_long(tokenizers[0], [ex.caption for ex in examples])
    if long:
        ctx.log(
            f"{len(long)} caption(s) are longer than 75 tokens and are cut there, e.g. {long[0][:80]!r}",
            warning=True,
        )

    batches = -(-len(examples) // spec.batch_size)
    steps = total_steps(spec.steps, spec.epochs, batches, spec.gradient_accumulation_steps)
    n_samples = max(1, len(spec.sample_prompts))
    n_class = spec.class_image_count(on_gpu=pipe.device.type != "cpu") if is_db and spec.prior_preservation else 0
    progress = _Progress(ctx, steps + n_samples + n_class)

    # 4. Prior preservation: class images from the base model (cached by base + prompt), before any adapter
    class_latents = None
    class_imgs: list[Image.Image] = []
    if is_db and spec.prior_preservation:
        class_imgs = _class_images(spec, ctx, pipe, entry, base_hash, resolution, progress)
        cache: dict[tuple[int, tuple[int, int]], tuple[torch.Tensor, torch.Tensor]] = {}

        def class_latents(
            c: int, bucket: tuple[int, int], vae: Any = pipe.vae
        ) -> tuple[torch.Tensor, torch.Tensor]:
            if (c, bucket) not in cache:
                cache[(c, bucket)] = encode_latent_dists(
                    vae, [fit_to_bucket(class_imgs[c], bucket)], precision.device
                )[0]
            return cache[(c, bucket)]

    # 5. Cache the latent posteriors of the training images (VAE in fp32)
    latents = encode_latent_dists(pipe.vae, [ex.image for ex in examples], precision.device)
    data = TrainData(
        latents=latents, captions=[ex.caption for ex in examples], buckets=[ex.bucket for ex in examples],
        original_sizes=[ex.original_size for ex in examples], crops=[ex.crop_top_left for ex in examples],
        class_latents=class_latents, class_count=len(class_imgs),
        class_caption=spec.effective_class_prompt() if is_db else "",
    )  # fmt: skip

    # 6. The method: LoRA adapters or new token vectors
    if is_ti:
        from .textual_inversion import TextualInversionMethod

        method: Any = TextualInversionMethod(
            arch, text_encoders, tokenizers, trigger=trigger, num_vectors=spec.num_vectors, stages=spec.stages,
            initializer_token=spec.initializer_token, learning_rate=spec.learning_rate, device=precision.device,
            num_train_timesteps=int(noise_scheduler.config.num_train_timesteps),
        )  # fmt: skip
        alpha = 0.0
    else:
        from .lora import LoraMethod

        alpha = float(spec.alpha or spec.rank)
        method = LoraMethod(
            arch, pipe.unet, text_encoders, tokenizers, rank=spec.rank, alpha=alpha,
            target_modules=list(spec.target_modules), train_text_encoder=spec.train_text_encoder,
            learning_rate=spec.learning_rate, text_encoder_lr=spec.text_encoder_lr, dropout=spec.lora_dropout,
            device=precision.device, seed=spec.seed,
        )  # fmt: skip
        pipe.unet.train()
    if spec.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
        if is_ti or getattr(spec, "train_text_encoder", False):
            for te in text_encoders:
                te.gradient_checkpointing_enable()
    cfg = LoopConfig(
        steps=steps, batch_size=spec.batch_size, grad_accum=spec.gradient_accumulation_steps,
        learning_rate=spec.learning_rate, lr_scheduler=spec.lr_scheduler, lr_warmup_steps=spec.lr_warmup_steps,
        weight_decay=spec.weight_decay, max_grad_norm=spec.max_grad_norm, snr_gamma=spec.snr_gamma,
        noise_offset=spec.noise_offset, prediction_type=prediction, optimizer=spec.optimizer, seed=spec.seed,
        prior_loss_weight=spec.prior_loss_weight if is_db else 1.0,
    )  # fmt: skip
    trainer = Trainer(
        arch=arch, unet=pipe.unet, noise_scheduler=noise_scheduler, method=method, data=data, cfg=cfg,
        precision=precision, vae_scaling=float(pipe.vae.config.scaling_factor),
        vae_shift=getattr(pipe.vae.config, "shift_factor", None),
    )  # fmt: skip
    if trainer.optimizer_note:
        ctx.log(trainer.optimizer_note, warning=True)
    ctx.log(
        f"training {spec.kind} on {arch} ({precision.label}, {trainer.optimizer_name}, {prediction}): {steps} steps"
    )

    # 7. Resume from this job's last checkpoint (same spec only)
    last = ckpt.latest_checkpoint(work)
    if last is not None:
        state = ckpt.read_state(last)
        if state["extra"].get("fingerprint") == fp:
            ckpt.load_checkpoint(
                last, trainables=method.trainables(), optimizer=trainer.optimizer, lr_scheduler=trainer.lr_scheduler,
                scaler=trainer.scaler, generator=trainer.generator,
            )  # fmt: skip
            trainer.step = int(state["step"])
            trainer.losses = [float(x) for x in state["extra"]["losses"]]
            ctx.log(f"resumed from the checkpoint at step {trainer.step}")
            progress.advance(trainer.step, f"resumed at step {trainer.step}")
        else:
            ctx.log("a checkpoint of a different spec was found and discarded", warning=True)
            ckpt.clear_checkpoints(work)

    # 8. Train (with the loss on fixed noise before and after, a noise-free measure of learning)
    if trainer.step == 0:
        eval_start = trainer.evaluate()
    else:
        eval_start = float(state["extra"].get("eval_start", float("nan")))
    log_every = max(1, steps // 20)
    started, first_step = time.perf_counter(), trainer.step
    while trainer.step < steps:
        ctx.check_canceled()
        r = trainer.train_step()
        if not torch.isfinite(torch.tensor(r.loss)):
            raise InputError(
                "learning_rate",
                f"training diverged (loss {r.loss}) at step {r.step}: lower it",
                spec.learning_rate,
            )
        rate = (time.perf_counter() - started) / max(1, r.step - first_step)
        eta = _fmt_eta(rate * (steps - r.step))
        progress.advance(1, f"training step {r.step}/{steps} loss {r.loss:.4f} lr {r.lr:.2e} eta {eta}")
        if r.step % log_every == 0 or r.step == steps:
            ctx.log(
                f"step {r.step}/{steps} loss {r.loss:.4f} lr {r.lr:.2e} {1 / max(rate, 1e-9):.2f} steps/s eta {eta}"
            )
        if spec.checkpoint_every and r.step % spec.checkpoint_every == 0 and r.step < steps:
            ckpt.save_checkpoint(
                work, r.step, trainables=method.trainables(), optimizer=trainer.optimizer,
                lr_scheduler=trainer.lr_scheduler, scaler=trainer.scaler, generator=trainer.generator,
                extra={
                    "fingerprint": fp,
                    "losses": trainer.losses,
                    "position": trainer.position(),
                    "eval_start": eval_start,
                },
            )  # fmt: skip

    eval_end = trainer.evaluate()
    ctx.log(f"loss on fixed noise: {eval_start:.4f} before, {eval_end:.4f} after training")

    # 9. Export: PEFT + kohya LoRA, or A1111 embedding (+ stages)
    pipe.unet.eval()
    for te in text_encoders:
        te.eval()
    facts: dict[str, Any] = {
        "kind": spec.kind, "arch": arch, "base_model": entry.name, "base_model_hash": base_hash, "trigger": trigger,
        "preset": spec.preset, "steps": steps, "image_count": len(examples), "resolution": resolution,
        "seed": spec.seed, "owner": owner, "style_name": spec.style_name, "captions": data.captions,
        "learning_rate": spec.learning_rate, "lr_scheduler": spec.lr_scheduler, "lr_warmup_steps": spec.lr_warmup_steps,
        "batch_size": spec.batch_size, "grad_accum": spec.gradient_accumulation_steps,
        "optimizer": trainer.optimizer_name, "precision": precision.label, "snr_gamma": spec.snr_gamma,
        "noise_offset": spec.noise_offset, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "stages": getattr(spec, "stages", None), "num_train_timesteps": trainer.num_train_timesteps,
        "target_modules": list(getattr(spec, "target_modules", [])),
        "prior_loss_weight": getattr(spec, "prior_loss_weight", None),
    }  # fmt: skip
    meta = style_metadata(facts)
    out_dir = work / "export"
    shutil.rmtree(out_dir, ignore_errors=True)
    extras: dict[str, Path] = {}
    staged = None
    if is_ti:
        from .textual_inversion import StagedEmbedding

        vectors = method.stage_vectors()
        model_file = save_ti(out_dir / f"{spec.style_name}.safetensors", arch, vectors, meta, spec.ti_layout)
        if spec.stages > 1:
            extras["stages"] = save_ti_stages(out_dir / "stages.safetensors", vectors, meta)
        method.unwrap()
        staged = StagedEmbedding(vectors, trigger, trainer.num_train_timesteps)
        staged.install(pipe)
        model_kind, usage = "embedding", trigger
    else:
        layers, metas = method.lora_layers()
        extras["peft"] = save_peft_lora(
            out_dir / "pytorch_lora_weights.safetensors", arch, layers, metas, meta
        )
        model_file = save_kohya_lora(
            out_dir / f"{spec.style_name}.safetensors", arch, pipe.unet.config, layers, alpha,
            {**meta, **kohya_metadata(facts, spec.rank, alpha)},
        )  # fmt: skip
        model_kind, usage = "lora", f"<lora:{spec.style_name}:0.8> {trigger}"

    # 10. Sample images with fixed prompts and seeds
    prompts = [p.format(trigger=trigger, class_word=spec.class_word) for p in spec.sample_prompts] or [
        spec.caption_template.format(trigger=trigger, class_word=spec.class_word)
    ]
    samples: list[ImageArtifact] = []
    for i, prompt in enumerate(prompts):
        ctx.check_canceled()
        gen = torch.Generator(device="cpu").manual_seed(spec.seed + i)
        common = {"num_inference_steps": spec.sample_steps, "guidance_scale": spec.sample_guidance, "generator": gen,
                  "height": resolution, "width": resolution}  # fmt: skip
        with torch.no_grad():
            if staged is not None:
                img = staged.generate(pipe, prompt, **common).images[0]
            else:
                img = pipe(prompt, **common).images[0]
        shown = prompt if is_ti else f"{prompt} <lora:{spec.style_name}:1>"
        params = format_a1111_parameters(shown, "", {
            "Steps": spec.sample_steps, "Sampler": type(pipe.scheduler).__name__, "CFG scale": spec.sample_guidance,
            "Seed": spec.seed + i, "Size": f"{resolution}x{resolution}", "Model": entry.name,
            "Model hash": base_hash or "", "Version": version_text(),
        })  # fmt: skip
        path = out_dir / f"sample_{i}.png"
        from ..core.images import save_png

        save_png(img, path, params)
        extras[f"sample_{i}"] = path
        samples.append(ImageArtifact(img, params))
        progress.advance(1, f"sample {i + 1}/{len(prompts)}")

    # 11. Register the style under its owner
    info = StyleInfo(
        name=spec.style_name, owner=owner, model_kind=model_kind, training_kind=spec.kind, arch=arch, trigger=trigger,
        usage=usage, base_model=entry.name, base_model_hash=base_hash, preset=spec.preset, steps=steps,
        image_count=len(examples), resolution=resolution, stages=getattr(spec, "stages", None),
        created_at=time.time(), files={}, final_loss=trainer.losses[-1] if trainer.losses else None,
    )  # fmt: skip
    info = register_style(registry, models_dir, owner, info, model_file, extras)
    ctx.log(f"style {spec.style_name!r} saved ({model_kind}); use it as {usage}")

    # 12. Clean up: training images (privacy), checkpoints, the private model copy
    deleted = _delete_training_images(spec, ctx) if spec.delete_images_after else 0
    if deleted:
        ctx.log(f"deleted {deleted} uploaded training image(s)")
    shutil.rmtree(work, ignore_errors=True)
    losses = trainer.losses
    stride = max(1, -(-len(losses) // MAX_LOSS_POINTS))
    result_info = {
        "style": info.model_dump(mode="json"), "steps": steps, "loss_history": losses[::stride],
        "loss_stride": stride, "optimizer": trainer.optimizer_name, "precision": precision.label,
        "images_deleted": deleted,
        "eval_loss": {"before": eval_start, "after": eval_end},
    }  # fmt: skip
    del pipe, trainer, method
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return TrainOutput(samples=samples, backend="neural", backend_reason=f"{spec.kind} on {arch}", info=result_info)


def _delete_training_images(spec: TrainSpec, ctx: EngineContext) -> int:
    """Release the uploaded training images (privacy). With the runtime's `ctx.release_upload` the blob
    goes only when no other user owns it and no other unfinished job needs it (uploads are
    content-addressed, so an identical photo of another user is the same blob); a context without it
    (the CLI's own storage) deletes the blob. Returns how many stored blobs were deleted."""
    refs = list(dict.fromkeys(ref for ref in spec.images if isinstance(ref, str) and ref.startswith("blob:")))
    count = 0
    for ref in refs:
        try:
            count += bool(ctx.release_upload(ref))
        except ToonboothError:
            continue
    if len(refs) > count:
        ctx.log(
            f"{len(refs) - count} training image(s) not deleted: another user or another of your unfinished "
            "jobs or results uses the same file (or it was already gone)"
        )
    return count
