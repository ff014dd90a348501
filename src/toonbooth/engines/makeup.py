"""Makeup studio (seed 004, "Diffusion MakeUp"): the makeup of a reference photo on your face.

Steps of a job:

1. faces    — the main face of the source and of the reference (68 dlib landmarks; no face -> 422 naming
              `source` / `reference`), their makeup regions (BiSeNet face parsing on the FFHQ-aligned crop when
              its weights are installed, else landmark polygons: `vision.face_regions`), warnings about the
              reference (no/small face, blur, exposure, uneven light, turned head: the seed's first open
              problem) and, on request, the reference warped onto the source's face position.
2. makeup   — neural: Stable-Makeup on SD1.5 (`nets.stable_makeup`): the aligned 512 x 512 source face is
              noised to `int(steps * strength)` steps before the end (img2img, the seed's speed-up) and
              denoised with the reference's makeup tokens in every cross-attention, the identity ControlNet
              (the source face) and the structure ControlNet (the landmark drawing); the made-up face is warped
              back into the photo (the `neural_layer`). Classic: per-region Lab statistics transfer
              (`vision.makeup_classic`, no weights, a fraction of a second).
3. blend    — per-region intensity (lips, eyes, brows, skin, blush; 0-1.5): the neural layer is blended with the
              source inside each region's feathered mask (hair, background, eyeballs and teeth never change);
              a later job with `reblend_from` = that layer re-blends with new intensities without diffusion.
4. describe — result, before/after, an overlay of the regions that changed, the change per region.

`backend="auto"` runs neural when the checkpoint and the Stable-Makeup files are installed and says why not
otherwise; models come only through `ctx.models` (families `checkpoint`, `stable_makeup`, `face_parsing`).
"""

from __future__ import annotations

import hashlib
import random
import time
import types
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from ..core.artifacts import ImageArtifact
from ..core.errors import BackendUnavailableError, InputError, ModelError
from ..core.specs import MakeupSpec
from ..models import sd
from ..models.infotext import plain_infotext
from ..models.manager import ModelManager
from ..models.refs import ModelRef
from ..vision.makeup_faces import (
    AnalysisCache,
    FaceAnalysis,
    MemoRegions,
    before_after,
    blend_regions,
    change_report,
    changed_regions,
    check_photo_size,
    find_face,
    region_overlay,
)
from .base import Engine, EngineContext, EngineOutput, check_model_names

ARCH = "sd15"
PULL_HINT = "fetch them with `toonbooth models pull makeup`"


class MakeupOutput(EngineOutput):
    """The made-up photo (primary), before/after side by side, the changed regions outlined, and (neural) the
    un-blended neural layer that `reblend_from` takes."""

    primary: ClassVar[str] = "result"
    result: ImageArtifact
    comparison: ImageArtifact
    overlay: ImageArtifact
    neural_layer: ImageArtifact | None = None
    intensity: dict[str, float] = {}
    changed: list[str] = []
    changes: dict[str, dict[str, float]] = {}
    quality: list[dict[str, Any]] = []


@dataclass
class Plan:
    backend: str  # neural | classic | reblend
    reason: str
    regions: str  # parsing | landmarks
    regions_reason: str
    parser_location: str = ""
    parser_name: str = ""


@dataclass
class _Faces:
    source: FaceAnalysis
    reference: FaceAnalysis | None
    reference_image: Image.Image | None
    quality: list[dict[str, Any]] = field(default_factory=list)


def _missing(models: ModelManager, refs: list[ModelRef], owner: str | None) -> list[str]:
    """`models.missing`, with a refused entry (an incomplete Stable-Makeup folder, a non-BiSeNet file) as a reason."""
    reasons: list[str] = []
    for ref in refs:
        try:
            reasons += models.missing([ref], owner=owner)
        except ModelError as exc:
            reasons.append(f"{ref.kind} {ref.name!r}: {exc}")
    return reasons


class MakeupEngine(Engine[MakeupSpec, MakeupOutput]):
    kind = "makeup"
    Spec = MakeupSpec
    Output = MakeupOutput

    def __init__(self) -> None:
        self.analyses = AnalysisCache()

    # --- models and checks ----------------------------------------------------------------------
    def neural_refs(self, spec: MakeupSpec) -> list[ModelRef]:
        refs = [ModelRef("checkpoint", spec.diffusion.checkpoint, "diffusion.checkpoint", ARCH),
                ModelRef("stable_makeup", spec.makeup_model, "makeup_model", ARCH)]  # fmt: skip
        refs += [ModelRef("lora", lo.name, f"diffusion.loras.{i}.name", ARCH) for i, lo in enumerate(spec.diffusion.loras)]
        return refs

    def parser_ref(self, spec: MakeupSpec) -> ModelRef:
        return ModelRef("face_parsing", spec.face_parser, "face_parser", optional=spec.regions != "parsing")

    def required_models(self, spec: MakeupSpec) -> list[ModelRef]:
        refs = [] if spec.regions == "landmarks" else [self.parser_ref(spec)]
        if spec.backend != "classic" and spec.reblend_from is None:
            refs = self.neural_refs(spec) + refs
        return refs

    def check_inputs(self, spec: MakeupSpec, models: ModelManager, owner: str | None) -> None:
        check_combinations(spec)
        check_model_names(self.required_models(spec), models)
        plan = self.plan(spec, models, owner)
        if plan.backend == "neural":
            sd.check_diffusion(spec.diffusion, models, owner, ARCH)

    def plan(self, spec: MakeupSpec, models: ModelManager, owner: str | None) -> Plan:
        """Which backend and which region source run, and why (409 when one that was asked for cannot)."""
        parser = ""
        if spec.regions == "landmarks":
            regions, regions_reason, location = "landmarks", "asked for landmark regions", ""
        else:
            missing = _missing(models, [self.parser_ref(spec)], owner)
            if not missing:
                entry = models.entry(spec.face_parser, "face_parsing", owner)
                regions, regions_reason, location = "parsing", f"face parsing {entry.name}", entry.location
                parser = spec.face_parser
            elif spec.regions == "parsing":
                raise BackendUnavailableError("face parsing weights missing: " + "; ".join(missing) + f" ({PULL_HINT})")
            else:
                regions, location = "landmarks", ""
                regions_reason = "landmark regions because " + "; ".join(missing)
        where = (regions, regions_reason, location, parser)
        if spec.reblend_from is not None:
            return Plan("reblend", "re-blended from the neural layer of an earlier job (no diffusion)", *where)
        if spec.backend == "classic":
            return Plan("classic", "asked for the classic backend", *where)
        missing = _missing(models, self.neural_refs(spec), owner)
        if not missing:
            return Plan("neural", "Stable-Makeup and the SD1.5 checkpoint are installed", *where)
        why = "neural weights missing: " + "; ".join(missing) + f" ({PULL_HINT})"
        if spec.backend == "neural":
            raise BackendUnavailableError(why)
        return Plan("classic", why, *where)

    # --- the job --------------------------------------------------------------------------------
    def cost(self, spec, settings):  # type: ignore[override]
        from .base import JobCost

        px = spec.size * spec.size
        return JobCost(pixels=(px, "size"), pixel_steps=(px * spec.diffusion.steps_run(), "diffusion.steps"))

    def run(self, spec: MakeupSpec, ctx: EngineContext) -> MakeupOutput:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()

        # 1. Check inputs and decide what runs
        check_combinations(spec)
        plan = self.plan(spec, ctx.models, ctx.owner)
        source = ctx.load_image(spec.source, field="source")
        check_photo_size(source, "source")
        reference = None
        if plan.backend != "reblend":
            reference = ctx.load_image(spec.reference, field="reference")  # type: ignore[arg-type]
            check_photo_size(reference, "reference")
        layer = None
        if plan.backend == "reblend":
            layer = ctx.load_image(spec.reblend_from, field="reblend_from")  # type: ignore[arg-type]
            if layer.size != source.size:
                raise InputError("reblend_from", f"is {layer.width}x{layer.height}, the source is {source.width}x"
                                 f"{source.height}: use the neural layer of a job on this source", list(layer.size))  # fmt: skip
        ctx.log(f"backend: {plan.backend} ({plan.reason}); regions: {plan.regions} ({plan.regions_reason})")
        n_steps = spec.diffusion.steps_run() if plan.backend == "neural" else 0
        total = 3 + n_steps  # faces, makeup (+ n denoising steps), describe
        ctx.progress(0, total, stage="faces")

        # 2. Faces: landmarks, regions, reference quality, optional alignment
        faces = self._faces(spec, ctx, plan, source, reference)
        timings["faces"] = time.perf_counter() - t0
        ctx.progress(1, total, stage="makeup")

        # 3. Makeup: neural layer (or the earlier one), or the classic transfer
        t1 = time.perf_counter()
        levels = spec.intensity.as_dict()
        neural_info: dict[str, Any] = {}
        if plan.backend == "classic":
            from ..vision.makeup_classic import transfer_makeup

            assert faces.reference is not None and faces.reference_image is not None
            classic = transfer_makeup(source, faces.source.regions, faces.reference_image, faces.reference.regions,
                                      levels)  # fmt: skip
            result = classic.image
            neural_info["skipped"] = classic.skipped
        else:
            if plan.backend == "neural":
                assert faces.reference_image is not None and faces.reference is not None
                layer, neural_info = _neural_layer(spec, ctx, source, faces, offset=1, total=total)
            assert layer is not None
            timings["makeup"] = time.perf_counter() - t1
            t1 = time.perf_counter()
            result = blend_regions(source, layer, faces.source.regions, levels)
            timings["blend"] = time.perf_counter() - t1
        if plan.backend == "classic":
            timings["makeup"] = time.perf_counter() - t1
        ctx.progress(total - 1, total, stage="describe")

        # 4. Describe: what changed, before/after, the overlay, parameters
        changes = change_report(source, result, faces.source.regions, levels)
        changed = changed_regions(changes)
        warnings = [q["message"] for q in faces.quality]
        for w in warnings:
            ctx.log(w, warning=True)
        backend = "classic" if plan.backend == "classic" else "neural"
        settings = {
            "Backend": {"neural": "neural (Stable-Makeup, SD1.5)", "reblend": "neural (re-blended, no diffusion)",
                        "classic": "classic (per-region Lab transfer, no neural weights)"}[plan.backend],
            "Regions": f"{faces.source.method}", "Size": f"{source.width}x{source.height}",
            "Intensity": ", ".join(f"{k} {v:g}" for k, v in levels.items()),
            "Changed": ", ".join(changed) or "none", **neural_info.get("settings", {}),
        }  # fmt: skip
        params = plain_infotext("makeup transfer", settings)
        outputs: dict[str, Any] = {
            "result": ImageArtifact(result, params),
            "comparison": ImageArtifact(before_after(source, result)),
            "overlay": ImageArtifact(region_overlay(result, faces.source.regions, changed)),
        }
        if plan.backend == "neural":
            outputs["neural_layer"] = ImageArtifact(layer, params)
        timings["total"] = time.perf_counter() - t0
        info = {
            "backends": {"makeup": plan.backend, "regions": faces.source.method},
            "reasons": {"makeup": plan.reason, "regions": plan.regions_reason},
            "size": [source.width, source.height], "landmarks": faces.source.landmarks.as_dict(),
            "timings": {k: round(v, 4) for k, v in timings.items()}, **neural_info.get("info", {}),
        }  # fmt: skip
        if plan.backend == "classic" and neural_info.get("skipped"):
            info["skipped"] = neural_info["skipped"]
        ctx.progress(total, total, stage="describe")
        return MakeupOutput(
            **outputs, backend=backend, backend_reason=plan.reason, warnings=warnings, info=info,
            intensity=levels, changed=changed, changes=changes, quality=faces.quality,
        )  # fmt: skip

    # --- faces ----------------------------------------------------------------------------------
    def _faces(self, spec: MakeupSpec, ctx: EngineContext, plan: Plan, source: Image.Image,
               reference: Image.Image | None) -> _Faces:  # fmt: skip
        from ..vision.makeup_classic import align_reference, reference_quality
        from ..vision.makeup_faces import packaged_landmarker

        landmarker = packaged_landmarker()
        src_key = _image_key(spec.source)
        src = self._analyse(ctx, plan, landmarker, source, (src_key,), "source")
        if reference is None:
            return _Faces(src, None, None)
        ref_key = _image_key(spec.reference or "")
        ref = self._analyse(ctx, plan, landmarker, reference, (ref_key,), "reference")
        if ref.quality is None:  # once per reference photo (kept with its analysis)
            ref.quality = [{"code": q.code, "message": q.message, "value": q.value}
                           for q in reference_quality(reference, ref.landmarks)]  # fmt: skip
        quality = ref.quality
        ref_image = reference
        if spec.align_reference:
            ref_image, moved = align_reference(reference, ref.landmarks, src.landmarks, source.size)
            ref = self._analyse(ctx, plan, landmarker, ref_image, ("aligned", ref_key, src_key), "reference",
                                landmarks=moved)  # fmt: skip
        return _Faces(src, ref, ref_image, quality)

    def _analyse(self, ctx: EngineContext, plan: Plan, landmarker: Any, image: Image.Image, key: tuple[str, ...],
                 field: str, landmarks: Any = None) -> FaceAnalysis:  # fmt: skip
        """Landmarks and regions of one photo (cached by what they depend on)."""
        full_key = (*key, plan.regions, plan.parser_location, image.size)
        hit = self.analyses.get(full_key)
        if hit is not None:
            return hit
        from ..vision.face_regions import regions_from_landmarks, regions_from_parsing

        lm = landmarks if landmarks is not None else find_face(landmarker, image, field, field)
        ctx.check_canceled()
        if plan.regions == "parsing":
            from ..nets.bisenet import parse_face
            from ..vision.ffhq_align import align_face
            from ..vision.makeup_faces import PARSING_SIZE, labels_to_photo

            parser = ctx.models.load("face_parsing", plan.parser_name, ctx.owner)
            crop = align_face(image, lm, output_size=PARSING_SIZE, transform_size=PARSING_SIZE)
            labels = parse_face(crop.image, parser, size=PARSING_SIZE)
            regions = regions_from_parsing(labels_to_photo(labels, crop.transform.matrix, image.size), lm)
        else:
            regions = regions_from_landmarks(lm, (image.height, image.width))
        analysis = FaceAnalysis(lm, MemoRegions.of(regions), plan.regions)
        self.analyses.put(full_key, analysis)
        return analysis


def check_combinations(spec: MakeupSpec) -> None:
    """Option combinations the spec's fields alone do not refuse (errors name the field)."""
    if spec.reblend_from is None and spec.reference is None:
        raise InputError("reference", "a reference photo is required (except when re-blending with `reblend_from`)")
    if spec.reblend_from is not None and spec.backend == "classic":
        raise InputError("reblend_from", "re-blending uses a neural layer; it cannot run with backend 'classic'",
                         spec.reblend_from[:40])  # fmt: skip
    if spec.diffusion.controlnet_units:
        raise InputError("diffusion.controlnet_units", "the makeup studio brings its own two ControlNets; extra "
                         "units are not supported", len(spec.diffusion.controlnet_units))  # fmt: skip


def _image_key(ref: str) -> str:
    """What identifies an image reference's content: the blob ref itself (content-addressed), else a digest."""
    if ref.startswith("blob:"):
        return ref
    return "sha256:" + hashlib.sha256(ref.encode("utf-8", "surrogatepass")).hexdigest()


# ---------------------------------------------------------------------------------------------------
# Neural backend
# ---------------------------------------------------------------------------------------------------


def _neural_layer(spec: MakeupSpec, ctx: EngineContext, source: Image.Image, faces: _Faces, *, offset: int,
                  total: int) -> tuple[Image.Image, dict[str, Any]]:  # fmt: skip
    """The Stable-Makeup face of the source, warped back into the photo (un-blended: the `neural_layer`)."""
    import torch

    from ..models.samplers import make_scheduler
    from ..nets.stable_makeup import run_stable_makeup
    from ..vision.face_structure import draw_structure
    from ..vision.ffhq_align import align_face

    models, owner, d = ctx.models, ctx.owner, spec.diffusion
    assert faces.reference is not None and faces.reference_image is not None

    # a. Load (cached between jobs): the SD1.5 base, the Stable-Makeup set for its UNet, the job's LoRAs
    base, base_entry = sd.base_pipeline(models, d.checkpoint, ARCH, owner)
    makeup_entry = models.entry(spec.makeup_model, "stable_makeup", owner)
    bundle = models.load_entry(makeup_entry, unet=base.unet, unet_key=base_entry.location)
    loras = sd.apply_loras(models, base, [(lo.name, lo.weight) for lo in d.loras], owner)
    try:
        scheduler = make_scheduler(d.sampler, base._toonbooth_scheduler_config, d.schedule_type)
    except InputError as exc:
        raise exc.renamed("diffusion.schedule_type" if exc.field == "schedule_type" else "diffusion.sampler") from None
    ctx.check_canceled()

    # b. Inputs at the working size: aligned source (identity + img2img start), its landmark drawing, the
    #    aligned reference (makeup)
    size = spec.size
    src = align_face(source, faces.source.landmarks, output_size=size)
    ref = align_face(faces.reference_image, faces.reference.landmarks, output_size=size)
    structure = draw_structure(src.landmarks, size=size)
    seed = d.seed if d.seed != -1 else random.randint(0, 2**32 - 1)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    callback = ctx.step_callback(offset=offset, total=total, stage="denoise", arch=ARCH)

    def on_step(i: int, t: Any, latents: Any, n: int) -> None:
        callback(types.SimpleNamespace(num_timesteps=n), i, t, {"latents": latents})

    # c. Denoise: img2img from the source face, int(steps * strength) steps
    run = run_stable_makeup(
        bundle, unet=base.unet, vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
        scheduler=scheduler, source=src.image, structure=structure, reference=ref.image, steps=d.steps,
        strength=d.strength, cfg_scale=d.cfg_scale, generator=generator, makeup_scale=spec.makeup_scale,
        controlnet_scales=(spec.identity_weight, spec.structure_weight), on_step=on_step,
    )  # fmt: skip

    # d. Back into the photo (the whole crop square, its edge feathered): the neural layer
    layer = src.transform.paste_back(run.image, source, feather=0.04)
    settings = {
        "Steps": d.steps, "Sampler": d.sampler, "CFG scale": d.cfg_scale, "Seed": seed,
        "Denoising strength": d.strength, "Model": base_entry.name,
        "Model hash": models.short_hash(base_entry), "Makeup model": makeup_entry.name,
        "Makeup scale": spec.makeup_scale, "Identity weight": spec.identity_weight,
        "Structure weight": spec.structure_weight, "Face size": size,
        "Lora hashes": ", ".join(f"{x.name}: {x.short_hash}" for x in loras if x.short_hash) or None,
    }  # fmt: skip
    info = {
        "seed": seed, "steps_run": run.steps_run, "checkpoint": base_entry.name, "makeup_model": makeup_entry.name,
        "face_size": size, "loras": sd.lora_info(loras), "crop_quad": np.round(src.transform.quad, 2).tolist(),
    }  # fmt: skip
    return layer, {"settings": settings, "info": info}
