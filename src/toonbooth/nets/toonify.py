"""Photo -> FFHQ-aligned face -> latent -> toon: the reusable Toonify pipeline, with loaded models as arguments.

The recipe of Pinkney & Adler, "Resolution Dependent GAN Interpolation for Controllable Image Synthesis
Between Domains" (https://arxiv.org/abs/2010.05334; justinpinkney/toonify "Toonify yourself"): align the
photo the FFHQ way (`vision.ffhq_align`), find its W+ latent in the FFHQ generator (by optimisation, or in
one pass with a pSp / e4e encoder -- Richardson et al. 2021, Tov et al. 2021), then synthesise that latent
with the cartoon generator (a layer-swap blend of the FFHQ model and its cartoon fine-tune, `nets.blend`).
The pSp "toonify" encoder instead inverts straight into the toon generator's space (then no base is needed).

Nothing here touches files or the model registry: callers (the toon studio, the talking-emoticon studio)
load the generators / encoder / perceptual net through `ctx.models` and pass them in.

Main entry point::

    result = toonify_photo(photo, landmarks, generator=toon_g, base_generator=ffhq_g, encoder=e4e,
                           projector_steps=0, strength=1.0, truncation=1.0, output_size=1024)
    result.toon                      # PIL, the toon face in the aligned frame (output_size square)
    result.transform.paste_back(result.toon, photo)   # back into the photo

`strength` interpolates the synthesis generator's weights between the base (0: the photo's own
reconstruction) and the toon generator (1); `truncation` pulls the latent toward `truncation_latent`.
Synthesis always uses the generator's stored noise maps, so results are deterministic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from PIL import Image

from ..core.errors import InputError, ModelError
from ..vision.ffhq_align import AlignedFace, AlignTransform, align_face
from ..vision.landmarks import FaceLandmarks
from .blend import blend_state_dicts
from .psp import PSPInverter
from .stylegan2 import Generator
from .stylegan2_project import ProjectionConfig, project

__all__ = [
    "Inversion",
    "StepCallback",
    "ToonifyResult",
    "blend_generators",
    "image_to_tensor",
    "interpolate_generators",
    "invert",
    "synthesize",
    "tensor_to_image",
    "toonify_photo",
]

StepCallback = Callable[[str, int, int, "float | None"], None]
"""`on_step(stage, step, total, loss)`: stage is `align`, `invert`, `project` (one call per projector step,
with its loss) or `synthesize`. It may raise (e.g. a cancel) to stop the pipeline."""

PROJECT_TARGET = 256
"""Projector targets are at most this size (generated images are box-downsampled to it, as published)."""


@dataclass
class Inversion:
    """A photo's latent in one generator's W+ space."""

    latent: torch.Tensor
    """(1, n_latent, style_dim)."""
    method: Literal["encoder", "projector", "encoder+projector"]
    losses: list[float] = field(default_factory=list)
    """Projector loss per step (empty for the encoder alone)."""
    image: torch.Tensor | None = None
    """The latent rendered by the inversion generator (1, 3, S, S) in [-1, 1]: the reconstruction."""
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class ToonifyResult:
    """What `toonify_photo` made."""

    toon: Image.Image
    """The toon face, FFHQ-aligned, `output_size` square."""
    aligned: Image.Image
    """The photo's face, FFHQ-aligned, `output_size` square."""
    transform: AlignTransform
    """Aligned (`output_size`) pixel -> photo pixel; `transform.paste_back(toon, photo)` puts the toon back."""
    landmarks_aligned: np.ndarray
    """(68, 2) the photo's landmarks in the aligned frame (`output_size` pixels)."""
    latent: torch.Tensor
    """(1, n_latent, style_dim) W+ that made the toon (after truncation)."""
    inversion: Inversion
    reconstruction: Image.Image | None = None
    """The inverted latent rendered by the inversion generator, `output_size` square."""
    padded: bool = False
    timings: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------
# Tensors <-> images
# ---------------------------------------------------------------------------------------------------


def image_to_tensor(img: Image.Image, size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """RGB image -> (1, 3, size, size) float32 in [-1, 1] (Lanczos resize when needed)."""
    rgb = img.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
    arr = torch.from_numpy(np.asarray(rgb, dtype=np.float32).copy()).permute(2, 0, 1).unsqueeze(0)
    return (arr / 127.5 - 1.0).to(device)


def tensor_to_image(t: torch.Tensor, size: int | None = None) -> Image.Image:
    """(1, 3, S, S) or (3, S, S) in [-1, 1] -> RGB image (clamped, rounded), resized to `size` (Lanczos)."""
    x = t.detach().float().cpu()
    x = x[0] if x.ndim == 4 else x
    arr = ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    img = Image.fromarray(np.ascontiguousarray(arr), "RGB")
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return img


# ---------------------------------------------------------------------------------------------------
# Generators: blend, interpolate, synthesise
# ---------------------------------------------------------------------------------------------------


def _check_same(a: Generator, b: Generator, what: str) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    if set(sa) != set(sb) or any(tuple(sa[k].shape) != tuple(sb[k].shape) for k in sa):
        raise ModelError(
            f"{what}: the toon and base generators differ in architecture "
            f"({a.size} px / style {a.style_dim} vs {b.size} px / style {b.style_dim}): fine-tunes of one model needed"
        )


def blend_generators(
    toon: Generator,
    base: Generator,
    resolution: int,
    level: int = 0,
    blend_width: float | None = None,
    mapping_from: Literal["toon", "base"] = "toon",
) -> Generator:
    """A new generator: the low-resolution layers (pose, face shape) from `toon`, the high-resolution ones
    (texture, lighting) from `base`, switching at (`resolution`, `level`) -- hard, or logistic over
    `blend_width` positions; the mapping network from `mapping_from` (`nets.blend` has the position rules)."""
    _check_same(toon, base, "blend")
    if resolution > toon.size:
        raise InputError("blend_resolutions", f"{resolution} is above the generator's {toon.size} px", resolution)
    state = blend_state_dicts(
        toon.state_dict(), base.state_dict(), resolution, level=level, blend_width=blend_width,
        mapping_from="lo" if mapping_from == "toon" else "hi",
    )  # fmt: skip
    device = next(toon.parameters()).device
    out = Generator(toon.config).to(device)
    out.load_state_dict(state, strict=True)
    return out.eval().requires_grad_(False)


def interpolate_generators(base: Generator, toon: Generator, strength: float) -> Generator:
    """Weights `(1 - strength) * base + strength * toon` (buffers such as the noise maps from `toon`);
    `strength` 1 returns `toon` itself, 0 `base`."""
    if not 0.0 <= strength <= 1.0:
        raise InputError("strength", f"must be in [0, 1], got {strength}", strength)
    if strength >= 1.0:
        return toon
    if strength <= 0.0:
        return base
    _check_same(toon, base, "strength")
    device = next(toon.parameters()).device
    out = Generator(toon.config).to(device)
    params = {name for name, _ in toon.named_parameters()}
    sb, st = base.state_dict(), toon.state_dict()
    state = {
        k: (sb[k].double() * (1.0 - strength) + v.double() * strength).to(v.dtype) if k in params else v.clone()
        for k, v in st.items()
    }
    out.load_state_dict(state, strict=True)
    return out.eval().requires_grad_(False)


@torch.no_grad()
def synthesize(
    generator: Generator,
    latent: torch.Tensor,
    truncation: float = 1.0,
    truncation_latent: torch.Tensor | None = None,
) -> torch.Tensor:
    """Render a W+ latent (1, n_latent, D) with the generator's stored noise maps -> (1, 3, S, S) in [-1, 1].
    `truncation` < 1 pulls the latent toward `truncation_latent` (D,) first."""
    w = _truncate(latent, truncation, truncation_latent)
    if w.shape[1] != generator.n_latent:
        raise InputError(
            "latent", f"the generator takes {generator.n_latent} styles, the latent has {w.shape[1]}", tuple(w.shape)
        )
    img, _ = generator([w], input_is_latent=True, noise=generator.fixed_noise())
    return img


def _truncate(latent: torch.Tensor, truncation: float, avg: torch.Tensor | None) -> torch.Tensor:
    if not 0.0 < truncation <= 1.0:
        raise InputError("truncation", f"must be in (0, 1], got {truncation}", truncation)
    if truncation >= 1.0:
        return latent
    if avg is None:
        raise InputError("truncation", "truncation < 1 needs a truncation latent (the generator's latent_avg)", truncation)
    avg = avg.to(latent.device, latent.dtype).reshape(1, 1, -1)
    return avg + truncation * (latent - avg)


# ---------------------------------------------------------------------------------------------------
# Inversion
# ---------------------------------------------------------------------------------------------------


def invert(
    aligned: Image.Image,
    generator: Generator,
    *,
    encoder: PSPInverter | None = None,
    projector_steps: int = 0,
    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    identity: Callable[[torch.Tensor], torch.Tensor] | None = None,
    identity_weight: float = 0.0,
    w_plus: bool = True,
    seed: int = 0,
    on_step: StepCallback | None = None,
) -> Inversion:
    """The W+ latent of an aligned face in `generator`'s space: one pass of `encoder`, then (or instead)
    `projector_steps` steps of the optimisation projector (published schedule; `perceptual` loss, e.g.
    `nets.vgg.LPIPS`, else pixel MSE; optional identity term). Refining an encoder's code is done in W+."""
    device = next(generator.parameters()).device
    if encoder is None and projector_steps < 1:
        raise InputError("inversion", "needs an encoder or at least one projector step", projector_steps)
    timings: dict[str, float] = {}
    latent: torch.Tensor | None = None
    losses: list[float] = []
    if encoder is not None:
        t0 = time.perf_counter()
        n = encoder.encoder.config.n_styles
        if n != generator.n_latent or encoder.encoder.config.style_dim != generator.style_dim:
            raise ModelError(
                f"the encoder predicts {n} styles of {encoder.encoder.config.style_dim}, the generator takes "
                f"{generator.n_latent} of {generator.style_dim}: they were not made for each other"
            )
        x = image_to_tensor(aligned, encoder.encoder.config.input_size, device)
        with torch.no_grad():
            latent = encoder.encode(x).detach()
        timings["encoder"] = time.perf_counter() - t0
        if on_step is not None:
            on_step("invert", 1, 1, None)
    method: Literal["encoder", "projector", "encoder+projector"] = "encoder"
    if projector_steps > 0:
        t0 = time.perf_counter()
        size = min(PROJECT_TARGET, generator.size)
        target = image_to_tensor(aligned, size, device)
        cfg = ProjectionConfig(
            steps=projector_steps, w_plus=w_plus or latent is not None, identity=identity_weight,
            n_mean_latent=10000, keep_path_every=0,
        )  # fmt: skip

        def step(i: int, total: int, loss: float) -> None:
            if on_step is not None:
                on_step("project", i, total, loss)

        rng = torch.Generator(device=device).manual_seed(seed)
        res = project(generator, target, cfg, perceptual=perceptual, identity=identity if identity_weight > 0 else None,
                      on_step=step, rng=rng, init_latent=latent)  # fmt: skip
        latent = res.latent if res.latent.ndim == 3 else res.latent.unsqueeze(1).repeat(1, generator.n_latent, 1)
        losses = list(res.losses)
        method = "encoder+projector" if encoder is not None else "projector"
        timings["projector"] = time.perf_counter() - t0
        timings["projector_per_step"] = timings["projector"] / projector_steps
    assert latent is not None
    t0 = time.perf_counter()
    image = synthesize(generator, latent)
    timings["reconstruction"] = time.perf_counter() - t0
    return Inversion(latent=latent.detach(), method=method, losses=losses, image=image, timings=timings)


# ---------------------------------------------------------------------------------------------------
# The whole pipeline
# ---------------------------------------------------------------------------------------------------


def align_for(
    photo: Image.Image, landmarks: FaceLandmarks | np.ndarray, size: int
) -> AlignedFace:
    """FFHQ-align the face at `size` px (the generator's resolution)."""
    return align_face(photo, landmarks, output_size=size)


def toonify_photo(
    photo: Image.Image,
    landmarks: FaceLandmarks | np.ndarray,
    *,
    generator: Generator,
    base_generator: Generator | None = None,
    encoder: PSPInverter | None = None,
    projector_steps: int = 0,
    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    identity: Callable[[torch.Tensor], torch.Tensor] | None = None,
    identity_weight: float = 0.0,
    strength: float = 1.0,
    truncation: float = 1.0,
    truncation_latent: torch.Tensor | None = None,
    output_size: int | None = None,
    w_plus: bool = True,
    seed: int = 0,
    on_step: StepCallback | None = None,
) -> ToonifyResult:
    """Photo + its 68 landmarks -> the toon face (aligned), the aligned photo face and the transform back.

    `generator`: the toon generator (a blend or a cartoon fine-tune). `base_generator`: the FFHQ generator;
    when given, the photo is inverted in *its* space (the Toonify recipe) and `strength` < 1 interpolates
    the toon generator's weights toward it; without it the photo is inverted in `generator`'s space (e.g. the
    pSp toonify encoder) and `strength` must be 1. `encoder` (pSp / e4e, one pass) and/or `projector_steps`
    choose the inversion. Alignment runs at the generator's resolution; outputs are `output_size` square
    (default: the generator's)."""
    timings: dict[str, float] = {}
    size = generator.size
    out_size = int(output_size or size)
    if base_generator is None and strength < 1.0:
        raise InputError("strength", "strength < 1 interpolates toward a base (FFHQ) generator: give one", strength)
    # 1. Align
    t0 = time.perf_counter()
    aligned = align_for(photo, landmarks, size)
    timings["align"] = time.perf_counter() - t0
    if on_step is not None:
        on_step("align", 1, 1, None)
    # 2. Invert
    inv_g = base_generator if base_generator is not None else generator
    inversion = invert(
        aligned.image, inv_g, encoder=encoder, projector_steps=projector_steps, perceptual=perceptual,
        identity=identity, identity_weight=identity_weight, w_plus=w_plus, seed=seed, on_step=on_step,
    )  # fmt: skip
    timings.update({f"invert_{k}": v for k, v in inversion.timings.items()})
    # 3. Synthesise with the toon generator (weights interpolated toward the base for strength < 1)
    t0 = time.perf_counter()
    g = interpolate_generators(base_generator, generator, strength) if base_generator is not None else generator
    latent = _truncate(inversion.latent, truncation, truncation_latent)
    toon = synthesize(g, latent)
    timings["synthesize"] = time.perf_counter() - t0
    if on_step is not None:
        on_step("synthesize", 1, 1, None)
    transform = aligned.transform.resized(out_size) if out_size != size else aligned.transform
    pts = landmarks.points if isinstance(landmarks, FaceLandmarks) else np.asarray(landmarks, np.float64)
    aligned_img = aligned.image if out_size == size else aligned.image.resize((out_size, out_size), Image.Resampling.LANCZOS)
    return ToonifyResult(
        toon=tensor_to_image(toon, out_size), aligned=aligned_img, transform=transform,
        landmarks_aligned=transform.to_aligned(pts), latent=latent.detach(), inversion=inversion,
        reconstruction=tensor_to_image(inversion.image, out_size) if inversion.image is not None else None,
        padded=aligned.padded, timings=timings,
    )  # fmt: skip
