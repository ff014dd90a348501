"""Toon studio job specs (seed 003, "MyTalkCon", part 1): a photo as a StyleGAN2 toon (Toonify), and
fine-tuning a toon style on the user's cartoon images (FreezeD + ADA)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import Backend, ImageRef, SpecBase

TOON_STYLE_RE = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$"
TOON_MIN_IMAGES = 16
DEFAULT_TOON_STYLE = "toonify"
DEFAULT_BASE_GENERATOR = "stylegan2-ffhq-config-f"
DEFAULT_ENCODER = "e4e_ffhq_encode"

Inversion = Literal["auto", "encoder", "projector", "encoder+projector"]


def _power_of_two(v: int, field: str) -> int:
    if v < 4 or v & (v - 1):
        raise ValueError(f"{field} must be powers of two >= 4 (4, 8, 16, ... 1024), got {v}")
    return v


class ToonSpec(SpecBase):
    """Toon me: the photo's face FFHQ-aligned (dlib 68 landmarks), inverted into a StyleGAN2 latent (pSp / e4e
    encoder in one pass, or the optimisation projector, or both), synthesised with the toon generator (a
    layer-swap blend of the FFHQ base and a cartoon model, or any StyleGAN2 style) -> the toon face (aligned),
    the toon pasted back into the photo, a transparent sticker and the aligned input.

    Several `blend_resolutions` compare blends side by side (one output per blend plus a strip); one blend can
    be saved as a named style (`save_blend_as`). The classic backend (no weights) applies the classic toon
    look to the aligned face."""

    kind: Literal["toon"] = "toon"
    version: Literal[1] = 1
    image: ImageRef
    backend: Backend = Field(
        "auto",
        description="neural: StyleGAN2 (weights needed); classic: the classic toon filter on the aligned face; "
        "auto: neural when every model it needs is here, else classic (the job says which and why).",
    )
    # --- models ---
    style: str = Field(
        DEFAULT_TOON_STYLE, min_length=1, max_length=400,
        description="The toon generator (StyleGAN2 family): a cartoon fine-tune of FFHQ, a saved blend or one "
        "of your toon styles.",
    )  # fmt: skip
    base_model: str | None = Field(
        DEFAULT_BASE_GENERATOR, max_length=400,
        description="The FFHQ generator: blends take their high-resolution layers from it, the photo is inverted "
        "in its space and strength < 1 leans toward it. None: invert straight into the style (e.g. with the pSp "
        "toonify encoder), no blend.",
    )  # fmt: skip
    encoder: str | None = Field(
        DEFAULT_ENCODER, max_length=400,
        description="pSp / e4e encoder for one-pass inversion (its generator's space must be the base's, or the "
        "style's without a base).",
    )  # fmt: skip
    # --- blend ---
    blend_resolutions: list[int] = Field(
        default_factory=list, max_length=8,
        description="Layer-swap blends of style (low resolutions) and base (high): the switch resolution of each; "
        "several = compare them side by side; empty = the style as it is.",
    )  # fmt: skip
    blend_level: Literal[0, 1] = Field(0, description="Switch at the resolution's first conv (0) or its second (1).")
    blend_width: float | None = Field(
        None, gt=0.0, le=8.0, description="Logistic blend over this many layers; None = hard switch."
    )
    mapping_from: Literal["toon", "base"] = Field(
        "toon", description="Which model gives the blend its mapping network (Toonify: the toon)."
    )
    save_blend_as: str | None = Field(
        None, pattern=TOON_STYLE_RE,
        description="Save the (one) blend as your style of this name, usable as `style` afterwards.",
    )  # fmt: skip
    # --- inversion ---
    inversion: Inversion = Field(
        "auto",
        description="encoder: one pass; projector: optimise the latent; encoder+projector: refine the encoder's "
        "code; auto: the encoder when one is named, else the projector.",
    )
    projector_steps: int = Field(300, ge=1, le=2000, description="Optimisation steps (published: 1000).")
    perceptual: Literal["lpips", "mse"] = Field(
        "lpips", description="Projector loss: LPIPS on VGG16 (needs the vgg16 model) or pixel MSE."
    )
    vgg_model: str = Field("vgg16", min_length=1, max_length=400, description="VGG16 weights for LPIPS.")
    lpips_model: str | None = Field(
        "lpips-vgg", max_length=400, description="LPIPS linear layers; None = unweighted feature distance."
    )
    identity_model: str | None = Field(
        None, max_length=400, description="IR-SE50 face-recognition net for an identity loss in the projector."
    )
    identity_weight: float = Field(0.1, ge=0.0, le=10.0, description="Weight of the identity loss.")
    w_plus: bool = Field(True, description="Project into W+ (one vector per layer) instead of W.")
    # --- synthesis ---
    strength: float = Field(
        1.0, ge=0.0, le=1.0,
        description="How far toward the toon: the generator's weights between the base (0) and the style (1).",
    )  # fmt: skip
    truncation: float = Field(1.0, gt=0.0, le=1.0, description="Pull the latent toward the average (< 1).")
    output_size: int | None = Field(
        None, ge=64, le=1024, description="Side of the aligned outputs; default the generator's (classic: 512)."
    )
    # --- face and composition ---
    detector: Literal["auto", "hog", "cnn"] = Field(
        "auto", description="dlib face detector: HOG, CNN (three-quarter faces), or auto (HOG, then CNN)."
    )
    feather: float = Field(0.06, ge=0.0, le=0.5, description="Soft edge of the paste-back, share of the face.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the projector's noise.")

    @field_validator("blend_resolutions")
    @classmethod
    def _resolutions(cls, v: list[int]) -> list[int]:
        for r in v:
            _power_of_two(r, "blend_resolutions")
        if len(set(v)) != len(v):
            raise ValueError(f"blend_resolutions must not repeat a value, got {v}")
        return v

    @model_validator(mode="after")
    def _combinations(self) -> ToonSpec:
        if self.save_blend_as and len(self.blend_resolutions) != 1:
            raise ValueError("save_blend_as saves one blend: give exactly one blend resolution")
        return self

    def effective_inversion(self) -> str:
        if self.inversion != "auto":
            return self.inversion
        return "encoder" if self.encoder else "projector"

    def uses_encoder(self) -> bool:
        return self.effective_inversion() in ("encoder", "encoder+projector")

    def uses_projector(self) -> bool:
        return self.effective_inversion() in ("projector", "encoder+projector")


class TrainToonSpec(SpecBase):
    """Fine-tune a StyleGAN2 on your cartoon images (FreezeD + ADA, R1 and path-length regularisation as in
    StyleGAN2), then register the result as your own toon style (usable as `style` in toon jobs and in blends).
    Checks the set first (too few images, too small, duplicates, optionally faces), can FFHQ-align the images
    and remove their backgrounds, checkpoints every N steps and resumes a crashed job where it stopped."""

    kind: Literal["train_toon"] = "train_toon"
    version: Literal[1] = 1
    style_name: str = Field(pattern=TOON_STYLE_RE, description="Name of the new toon style.")
    owner: str | None = Field(
        None, max_length=64,
        description="Owner of the style. The service sets it from the signed-in user; the CLI may give it.",
    )  # fmt: skip
    images: list[ImageRef] = Field(min_length=1, max_length=2000, description="Cartoon face images.")
    image_names: list[str] = Field(default_factory=list, max_length=2000, description="File names (messages).")
    base: str = Field(
        DEFAULT_BASE_GENERATOR, min_length=1, max_length=400,
        description="The StyleGAN2 to start from (with its discriminator `d` for FreezeD), e.g. FFHQ.",
    )  # fmt: skip
    steps: int = Field(2000, ge=1, le=200_000, description="Training iterations (one D and one G step each).")
    batch_size: int = Field(4, ge=1, le=64)
    learning_rate: float = Field(0.002, gt=0.0, le=0.1)
    freeze_d: int = Field(4, ge=0, le=16, description="FreezeD: keep the first k discriminator blocks fixed.")
    augment: bool = Field(True, description="ADA augmentation of everything the discriminator sees.")
    ada_target: float = Field(0.6, gt=0.0, lt=1.0, description="ADA's target for E[sign(D(real))].")
    augment_p: float = Field(0.0, ge=0.0, le=1.0, description="Starting augmentation probability.")
    ada_kimg: float = Field(100.0, gt=0.0, le=10_000.0, description="Images for p to move by 1 (fine-tuning: 100).")
    r1: float = Field(10.0, ge=0.0, le=1000.0, description="R1 regularisation weight.")
    path_regularize: float = Field(2.0, ge=0.0, le=100.0, description="Path-length regularisation weight.")
    mixing: float = Field(0.9, ge=0.0, le=1.0, description="Style-mixing probability.")
    align: bool = Field(False, description="FFHQ-align each image from its 68 landmarks first.")
    require_faces: bool = Field(False, description="Refuse an image where no face is found (naming it).")
    face_detector: Literal["auto", "hog", "cnn"] = Field(
        "hog", description="dlib detector for align / require_faces (cnn: three-quarter faces, ~2 s per image)."
    )
    remove_background: bool = Field(False, description="Cut each image's subject out (GrabCut), flat background.")
    background_color: tuple[int, int, int] = Field((255, 255, 255), description="Colour behind cut-out images.")
    checkpoint_every: int = Field(500, ge=0, le=100_000, description="Resumable checkpoint every N steps; 0 = never.")
    sample_every: int = Field(0, ge=0, le=100_000, description="Sample grid (progress preview) every N steps; 0 = end only.")
    n_samples: int = Field(8, ge=1, le=16, description="Images in each sample grid (fixed latents).")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Same seed + same spec = same weights.")
    delete_images_after: bool = Field(False, description="Delete the uploaded images when training succeeds.")

    @field_validator("image_names")
    @classmethod
    def _names(cls, v: list[str], info: Any) -> list[str]:
        n = len(info.data.get("images") or [])
        if v and len(v) != n:
            raise ValueError(f"must have one entry per image ({n}), got {len(v)}")
        return v

    @field_validator("background_color")
    @classmethod
    def _colour(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 0 <= c <= 255 for c in v):
            raise ValueError(f"must be three values 0-255, got {v}")
        return v
