"""Pose-change job spec (webtoon seed 001): re-draw a character in another pose, and the ControlNet
preprocessor job behind sd-webui-controlnet's `/controlnet/detect`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from .base import Backend, ImageRef, SpecBase
from .diffusion import DiffusionParams

REPOSE_PROMPT = "best quality, a character, full body, clean lineart, simple background"
REPOSE_NEGATIVE_PROMPT = (
    "lowres, blurry, bad anatomy, extra limbs, extra fingers, deformed hands, watermark, text, jpeg artifacts"
)
MAX_SKELETON_CHARS = 2_000_000
POSE_MODULES: tuple[str, ...] = ("openpose", "openpose_full", "dw_openpose_full")
DETECT_MODULES: tuple[str, ...] = ("canny", "invert", "none", *POSE_MODULES)


# AnimateAnyone's single-image settings (Moore-AnimateAnyone `log_validation`: 20 steps, CFG 3.5); the light
# path reads the same steps / CFG / seed and its checkpoint, sampler and LoRAs from `diffusion`. A partial
# `diffusion` object keeps these defaults for the fields it leaves out.
REPOSE_DIFFUSION: dict[str, Any] = {
    "checkpoint": "stable-diffusion-v1-5", "sampler": "DDIM", "steps": 20, "cfg_scale": 3.5, "strength": 1.0,
}  # fmt: skip


def _repose_diffusion() -> DiffusionParams:
    return DiffusionParams(**REPOSE_DIFFUSION)


class ReposeSpec(SpecBase):
    """Pose change: the `character` drawn again in the pose of `pose_image` (a photo, DWPose estimates the
    133 whole-body keypoints) or of `skeleton` (OpenPose JSON, as A1111's openpose editor and ControlNet
    write it).

    Methods: `animate_anyone` (Moore-AnimateAnyone reference UNet + denoising UNet + PoseGuider, CLIP image
    embedding, DDIM v-prediction zero-SNR, no motion module), `controlnet` (the light path: SD1.5 +
    ControlNet openpose + IP-Adapter with the character image + the artist's style LoRAs in
    `diffusion.loras`), `auto` (AnimateAnyone when its weights are here, else the light path). Without
    re-rendering weights the classic backend returns the skeleton drawing and an overlay on the character
    — it never fakes a re-rendering. `mode="skeleton"` only estimates and draws the pose (the preview)."""

    kind: Literal["repose"] = "repose"
    version: Literal[1] = 1
    mode: Literal["full", "skeleton"] = Field(
        "full", description="full: re-render the character; skeleton: only estimate / draw the pose (preview)."
    )
    character: ImageRef | None = Field(
        None, validate_default=True, description="The character to re-pose (needed for mode full)."
    )
    pose_image: ImageRef | None = Field(
        None, description="A photo of the wanted pose (DWPose finds the person). Give this or `skeleton`."
    )
    skeleton: dict[str, Any] | str | None = Field(
        None,
        validate_default=True,
        description="The wanted pose as OpenPose JSON (`people[].pose_keypoints_2d` ..., `canvas_width`, "
        "`canvas_height`; pixels or 0-1 fractions), as an object or a JSON string. Give this or `pose_image`.",
    )
    people: Literal["best", "all"] = Field(
        "best",
        description="best: the person with the highest body score (AnimateAnyone re-poses one character); "
        "all: every person of the pose (drawn for ControlNet).",
    )
    hands: bool = Field(True, description="Draw the hands of the skeleton.")
    face: bool = Field(True, description="Draw the face points of the skeleton.")
    method: Literal["auto", "animate_anyone", "controlnet"] = Field(
        "auto",
        description="animate_anyone (reference attention + PoseGuider), controlnet (SD1.5 + openpose "
        "ControlNet + IP-Adapter + style LoRA) or auto (the first whose weights are here).",
    )
    backend: Backend = Field(
        "auto",
        description="neural: re-render (409 without weights); classic: skeleton drawing + overlay only; "
        "auto: neural when the method's weights are here, else classic (reported with the reason).",
    )

    # --- size ---
    size: int = Field(
        512, ge=64, le=1024, description="Long side of the result (multiple of 8); the character's aspect is kept."
    )
    width: int | None = Field(None, ge=64, le=1024, description="Result width (multiple of 8); overrides `size`.")
    height: int | None = Field(None, ge=64, le=1024, description="Result height (multiple of 8); overrides `size`.")

    # --- sampling ---
    diffusion: DiffusionParams = Field(
        default_factory=_repose_diffusion,
        description="steps (20-30), cfg_scale (3.5 for AnimateAnyone), seed for both methods; checkpoint, "
        "sampler and loras (the artist's style LoRAs) for the controlnet method.",
    )
    prompt: str = Field(REPOSE_PROMPT, max_length=4000, description="controlnet method: A1111-syntax prompt.")
    negative_prompt: str = Field(REPOSE_NEGATIVE_PROMPT, max_length=4000)

    # --- models ---
    pose_model: str = Field(
        "dwpose", min_length=1, max_length=400,
        description="DWPose ONNX pair (yolox_l.onnx + dw-ll_ucoco_384.onnx) in <models>/DWPose/.",
    )  # fmt: skip
    animate_anyone: str = Field(
        "animate-anyone", min_length=1, max_length=400,
        description="AnimateAnyone folder (reference_unet, denoising_unet, pose_guider) in <models>/AnimateAnyone/.",
    )  # fmt: skip
    image_encoder: str = Field(
        "sd-image-variations-diffusers", min_length=1, max_length=400,
        description="CLIP image encoder (CLIPVisionModelWithProjection folder) in <models>/clip_vision/.",
    )  # fmt: skip
    vae: str = Field("sd-vae-ft-mse", min_length=1, max_length=400, description="VAE of the AnimateAnyone method.")
    controlnet: str = Field(
        "control_v11p_sd15_openpose", min_length=1, max_length=400, description="SD1.5 openpose ControlNet."
    )
    controlnet_weight: float = Field(1.0, ge=0.0, le=2.0, description="How strongly the pose holds (controlnet).")
    ip_adapter: str | None = Field(
        "ip-adapter_sd15", max_length=400,
        description="IP-Adapter (controlnet method) carrying the character's look; None = prompt and style only.",
    )  # fmt: skip
    ip_adapter_scale: float = Field(0.7, ge=0.0, le=2.0, description="IP-Adapter strength.")

    # --- layers ---
    background: Literal["keep", "remove"] = Field(
        "keep", description="keep: the result as drawn; remove: also a character mask and an RGBA layer."
    )
    background_image: ImageRef | None = Field(
        None, description="A background (e.g. from the background job) the character is composited onto."
    )
    segment_model: str = Field(
        "facebook/sam-vit-base", min_length=1, max_length=400,
        description="SAM for the character mask (GrabCut seeded by the skeleton when it is not installed).",
    )  # fmt: skip
    feather_px: float = Field(2.0, ge=0.0, le=64.0, description="Soft edge of the character mask.")

    @field_validator("diffusion", mode="before")
    @classmethod
    def _diffusion_defaults(cls, v: Any) -> Any:
        return {**REPOSE_DIFFUSION, **v} if isinstance(v, dict) else v

    @field_validator("size", "width", "height")
    @classmethod
    def _multiple_of_8(cls, v: int | None) -> int | None:
        if v is not None and v % 8:
            raise ValueError("must be a multiple of 8")
        return v

    @field_validator("skeleton")
    @classmethod
    def _skeleton_size(cls, v: Any) -> Any:
        if isinstance(v, str) and len(v) > MAX_SKELETON_CHARS:
            raise ValueError(f"OpenPose JSON text is limited to {MAX_SKELETON_CHARS} characters, got {len(v)}")
        return v

    @field_validator("character")
    @classmethod
    def _character(cls, v: str | None, info: Any) -> str | None:
        if v is None and info.data.get("mode", "full") == "full":
            raise ValueError("mode full needs the character image to re-pose")
        return v

    @field_validator("skeleton")
    @classmethod
    def _one_pose_source(cls, v: Any, info: Any) -> Any:
        photo = info.data.get("pose_image")
        if v is None and photo is None:
            raise ValueError("give the pose as `pose_image` (a photo) or `skeleton` (OpenPose JSON)")
        if v is not None and photo is not None:
            raise ValueError("give `pose_image` or `skeleton`, not both")
        return v


class ControlDetectSpec(SpecBase):
    """ControlNet preprocessing only (sd-webui-controlnet's `/controlnet/detect`): the control map of each
    image for `module` (canny, invert, none, openpose, openpose_full, dw_openpose_full), and for the pose
    modules the OpenPose JSON of each image."""

    kind: Literal["control_detect"] = "control_detect"
    version: Literal[1] = 1
    module: str = Field("none", description=f"Preprocessor: {', '.join(DETECT_MODULES)}.")
    images: list[ImageRef] = Field(min_length=1, max_length=8, description="The images to preprocess.")
    processor_res: int = Field(512, ge=64, le=2048, description="Short side the preprocessor runs at.")
    threshold_a: float = Field(-1, ge=-1, le=255, description="canny: low threshold; -1 = 100.")
    threshold_b: float = Field(-1, ge=-1, le=255, description="canny: high threshold; -1 = 200.")
    pose_model: str = Field("dwpose", min_length=1, max_length=400, description="DWPose ONNX pair (pose modules).")

    @field_validator("module", mode="before")
    @classmethod
    def _module(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        name = v.strip().lower()
        name = {"invert (from white bg & black line)": "invert"}.get(name, name)
        if name not in DETECT_MODULES:
            raise ValueError(f"unknown ControlNet module {v!r}; supported: {', '.join(DETECT_MODULES)}")
        return name
