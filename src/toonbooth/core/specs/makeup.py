"""Makeup job spec (seed 004, "Diffusion MakeUp"): copy the makeup of a reference photo onto a source face.

Backends: `neural` (Stable-Makeup on SD1.5: makeup encoder + identity and structure ControlNets, img2img from
the source face), `classic` (per-region Lab statistics transfer, no weights), `auto` (neural when its
weights are installed, else classic; the job reports which ran and why). Per-region intensity (lips, eyes,
brows, skin, blush; 0-1.5) applies to both; a finished neural job can be re-blended with new intensities
without running diffusion again (`reblend_from`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .base import Backend, ImageRef, SpecBase
from .diffusion import DiffusionParams

MAKEUP_CHECKPOINT = "stable-diffusion-v1-5"
MAKEUP_MODEL = "stable-makeup"
FACE_PARSER = "79999_iter"
MAX_INTENSITY = 1.5
MAKEUP_SIZE = 512

RegionSource = Literal["auto", "parsing", "landmarks"]


def _level(default: float, what: str):
    return Field(default, ge=0.0, le=MAX_INTENSITY, description=what)


class MakeupIntensity(SpecBase):
    """How strongly each region takes the reference's makeup: 0 = untouched, 1 = as the reference, above 1 =
    stronger. The classic transfer's blend strength; for the neural backend the weight of the neural result
    over the source in that region's feathered mask."""

    lips: float = _level(1.0, "Lipstick strength")
    eyes: float = _level(1.0, "Eye-shadow strength (the ring around the eyes; eyeballs never change)")
    brows: float = _level(0.7, "Brow strength")
    skin: float = _level(0.15, "Skin / base strength (small by default: the face keeps its complexion)")
    blush: float = _level(0.8, "Blush strength on the cheeks")

    def as_dict(self) -> dict[str, float]:
        return {"skin": self.skin, "blush": self.blush, "eyes": self.eyes, "brows": self.brows, "lips": self.lips}


def _default_diffusion() -> DiffusionParams:
    # Stable-Makeup's inference settings: DDIM, 30 steps, CFG 1.6 (`infer_kps.py`; 2 in its `generate`);
    # img2img from the source face (the seed's speed-up): int(30 * 0.6) = 18 steps run
    return DiffusionParams(checkpoint=MAKEUP_CHECKPOINT, sampler="DDIM", steps=30, cfg_scale=1.6, strength=0.6)


class MakeupSpec(SpecBase):
    """Makeup transfer: the reference photo's makeup on the source face, region by region."""

    kind: Literal["makeup"] = "makeup"
    version: Literal[1] = 1
    source: ImageRef
    reference: ImageRef | None = Field(
        None, description="Photo of a made-up face whose makeup is copied (required unless `reblend_from`)."
    )
    intensity: MakeupIntensity = Field(default_factory=MakeupIntensity, description="Per-region strength.")
    backend: Backend = Field(
        "auto", description="neural: Stable-Makeup (SD1.5); classic: Lab colour transfer, no weights; "
        "auto: neural when its weights are installed, else classic.",
    )  # fmt: skip
    regions: RegionSource = Field(
        "auto", description="Face regions from face parsing (BiSeNet) or from 68 landmarks; auto: parsing when "
        "its weights are installed.",
    )  # fmt: skip
    face_parser: str = Field(FACE_PARSER, min_length=1, max_length=400,
                             description="Face-parsing weights in <models>/FaceParsing/ (BiSeNet).")  # fmt: skip
    makeup_model: str = Field(
        MAKEUP_MODEL, min_length=1, max_length=400,
        description="Stable-Makeup weights: the folder <models>/StableMakeup/<name>/ with pytorch_model.bin, "
        "_1.bin and _2.bin (or their .safetensors).",
    )  # fmt: skip
    align_reference: bool = Field(
        False, description="Warp the reference onto the source's face position, size and tilt first."
    )
    size: int = Field(MAKEUP_SIZE, ge=64, le=1024, description="Side of the face crop the neural backend "
                      "works on (multiple of 64; Stable-Makeup was trained at 512).")  # fmt: skip
    makeup_scale: float = Field(1.0, ge=0.0, le=2.0, description="Weight of the makeup cross-attention "
                                "(Stable-Makeup's `scale`; 1 = as trained).")  # fmt: skip
    identity_weight: float = Field(1.0, ge=0.0, le=2.0, description="Identity ControlNet weight.")
    structure_weight: float = Field(1.0, ge=0.0, le=2.0, description="Structure (landmark) ControlNet weight.")
    diffusion: DiffusionParams = Field(default_factory=_default_diffusion,
                                       description="SD settings of the neural backend.")  # fmt: skip
    reblend_from: ImageRef | None = Field(
        None, description="The `neural_layer` output of an earlier neural makeup job of this source: re-blend "
        "it with these intensities, without running diffusion again.",
    )  # fmt: skip

    @field_validator("diffusion", mode="before")
    @classmethod
    def _over_makeup_defaults(cls, v: object) -> object:
        # a partial `diffusion` object overrides the makeup recipe's values, not DiffusionParams' generic ones
        if isinstance(v, dict):
            return {**_default_diffusion().model_dump(), **v}
        return v

    @field_validator("size")
    @classmethod
    def _multiple_of_64(cls, v: int) -> int:
        if v % 64:
            raise ValueError("must be a multiple of 64")
        return v
