"""Talking emoticon job spec (seed 003, part 2): a face (a photo or a toon) speaks with the user's voice.

One `talk` job turns a face image and a voice recording into an MP4 (H.264 + AAC, the voice in sync, 25
fps), animated WebP / GIF stickers and a still frame. Backends: `neural` (LivePortrait renderer driven by
JoyVASA motion from HuBERT audio features) or `classic` (no weights: the mouth follows the voice's loudness
and spectrum along the 68 face landmarks, blinks, a slight sway).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from .base import AudioRef, Backend, ImageRef, SpecBase, validate_email

TALK_FPS = 25
"""Frames per second of every talking video (the rate JoyVASA's motion is generated at)."""

ToonMode = Literal["none", "classic", "neural"]
"""How the face is turned into a toon before it talks: `none` (the image as given: a photo, or a toon made
elsewhere) or `classic` (the no-weights cartoon filter of `vision.toon`). The neural StyleGAN2 toonify
(`nets.toonify.toonify_photo`) becomes a third value `neural` where `engines.talk.toon_stage` says."""

Framing = Literal["face", "full"]


class TalkSpec(SpecBase):
    """Talking emoticon: `face` speaks `voice`.

    The face is found by its 68 landmarks (given in `landmarks`, else detected with dlib), FFHQ-aligned
    (`framing="face"`: an upright square around the head, the sticker framing) or kept whole
    (`framing="full"`), optionally toonified, then animated by the voice and encoded."""

    kind: Literal["talk"] = "talk"
    version: Literal[1] = 1
    face: ImageRef
    voice: AudioRef
    landmarks: list[tuple[float, float]] | None = Field(
        None,
        min_length=68,
        max_length=68,
        description="The face's 68 landmarks (x, y) in pixels of `face`, in the iBUG 300-W order. Give them "
        "for a toon whose face a detector cannot find (a toon made in the aligned frame of a photo has "
        "the photo's landmarks). Default: detected (dlib HOG, then CNN).",
    )
    backend: Backend = Field(
        "auto",
        description="neural: LivePortrait + JoyVASA (weights needed); classic: no weights, CPU; auto: neural "
        "when its weights are installed, else classic (the job says which ran and why).",
    )
    toon: ToonMode = Field(
        "classic",
        description="Make the face a toon before it talks: neural = the toon studio's StyleGAN2 toonify "
        "(`toon_style`, weights needed); classic = the cartoon filter (no weights); none = animate the image as "
        "given (a toon already, or a photo).",
    )
    toon_style: str = Field(
        "toonify", min_length=1, max_length=400,
        description="toon=neural: the toon generator (StyleGAN2 family: a cartoon fine-tune, a saved blend or "
        "one of your toon styles).",
    )  # fmt: skip
    toon_base: str | None = Field(
        "stylegan2-ffhq-config-f", max_length=400,
        description="toon=neural: the FFHQ generator the photo is inverted in (None: straight into the style).",
    )  # fmt: skip
    toon_encoder: str | None = Field(
        "e4e_ffhq_encode", max_length=400, description="toon=neural: pSp / e4e encoder for the inversion."
    )
    framing: Framing = Field(
        "face",
        description="face: the FFHQ-aligned square around the head (stickers); full: the whole image.",
    )
    size: int = Field(
        512,
        ge=128,
        le=1024,
        description="Output side in pixels (framing face) or long side (framing full); a multiple of 16.",
    )
    seed: int = Field(-1, ge=-1, le=2**32 - 1, description="Motion noise and blinks; -1 = random (reported).")
    email: str | None = Field(None, description="Optional address the MP4 is e-mailed to.")

    # --- neural ---
    liveportrait_model: str = Field(
        "liveportrait",
        min_length=1,
        max_length=400,
        description="LivePortrait renderer: a folder under <models>/LivePortrait/ with its five parts "
        "(appearance_feature_extractor, motion_extractor, warping_module, spade_generator, "
        "stitching_retargeting_module; .pth or .safetensors).",
    )
    joyvasa_model: str = Field(
        "motion_generator_hubert_chinese",
        min_length=1,
        max_length=400,
        description="JoyVASA motion generator in <models>/JoyVASA/ (.pt or .safetensors, with its "
        "motion_template.json / .pkl).",
    )
    hubert_model: str | None = Field(
        "chinese-hubert-base",
        max_length=400,
        description="HuBERT audio encoder folder in <models>/HuBERT/ (transformers); None = the weights inside "
        "the JoyVASA file.",
    )
    sampling_steps: int = Field(
        100,
        ge=1,
        le=500,
        description="JoyVASA denoising steps per 4 s window (the reference runs 500; each step is one "
        "transformer pass, the info reports the time they took).",
    )
    cfg_scale: float = Field(2.8, ge=0.0, le=10.0, description="JoyVASA audio guidance scale.")
    expression_scale: float = Field(
        1.0, ge=0.0, le=3.0, description="How strongly lips and expression follow the voice."
    )
    head_motion: float = Field(
        1.0,
        ge=0.0,
        le=3.0,
        description="Amount of head motion (neural: of the generated pose; classic: of the sway); 0 = still.",
    )
    head_smoothing: float = Field(
        0.8,
        ge=0.0,
        le=0.99,
        description="Smoothing of the generated head pose (exponential moving average; 0 = raw, 0.99 = "
        "the reference's nearly frozen head).",
    )
    still: bool = Field(False, description="Keep the head still (lips and expression only).")

    # --- classic ---
    mouth_open: float = Field(
        0.4, ge=0.05, le=1.0, description="Classic: widest mouth opening, as a share of the mouth width."
    )
    blink: bool = Field(True, description="Classic: blink every 2-6 s.")

    # --- outputs ---
    sticker_size: int = Field(
        512, ge=64, le=512, description="Long side of the WebP sticker (messenger stickers are 512)."
    )
    gif_size: int = Field(320, ge=64, le=512, description="Long side of the GIF (GIFs of 512 px get large).")
    sticker_fps: float = Field(10.0, ge=1.0, le=25.0, description="Frame rate of the stickers.")
    sticker_seconds: float = Field(
        4.0, ge=0.5, le=30.0, description="The stickers show the first seconds of the animation (looped)."
    )
    cutout: bool = Field(
        False,
        description="Transparent background in the stickers (GrabCut person mask); an RGBA face keeps its "
        "own transparency anyway.",
    )

    @field_validator("size")
    @classmethod
    def _size_multiple_of_16(cls, v: int) -> int:
        if v % 16:
            raise ValueError("must be a multiple of 16")
        return v

    @field_validator("landmarks")
    @classmethod
    def _finite_points(cls, v: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if v is not None and not all(math.isfinite(c) for p in v for c in p):
            raise ValueError("every landmark must be a finite (x, y) pair")
        return v

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        return validate_email(v)

    @field_validator("hubert_model")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v.strip() or None if v is not None else None
