"""Extras job spec: AUTOMATIC1111's "Extras" tab / `/sdapi/v1/extra-single-image` and `extra-batch-images`
(upscaling by a factor or to a size with one or two upscalers)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import ImageRef, SpecBase


class ExtrasSpec(SpecBase):
    """Upscale images as A1111's extras do: `upscaler_1` by `upscaling_resize` (resize_mode 0) or to
    `upscaling_resize_w` x `upscaling_resize_h` (resize_mode 1, optionally cropped to exactly that size);
    `upscaler_2` blended over it at `extras_upscaler_2_visibility`. Sizes follow A1111: an upscale by s
    gives `int(w*s)//8*8` x `int(h*s)//8*8`. Face restoration is not available (reported when asked)."""

    kind: Literal["extras"] = "extras"
    version: Literal[1] = 1
    images: list[ImageRef] = Field(min_length=1, max_length=16, description="The pictures to process.")
    names: list[str] = Field(
        default_factory=list, max_length=16, description="Optional names of the pictures (A1111 batch `name`)."
    )
    resize_mode: Literal[0, 1] = Field(0, description="0: scale by `upscaling_resize`; 1: to the given size.")
    upscaling_resize: float = Field(2.0, ge=1.0, le=8.0, description="Factor for resize_mode 0.")
    upscaling_resize_w: int = Field(512, ge=8, le=8192, description="Target width for resize_mode 1.")
    upscaling_resize_h: int = Field(512, ge=8, le=8192, description="Target height for resize_mode 1.")
    upscaling_crop: bool = Field(True, description="resize_mode 1: centre the result on a canvas of exactly that size.")
    upscaler_1: str = Field("None", min_length=1, max_length=200, description="None (no upscaling), Lanczos, Nearest or an ESRGAN-family upscaler.")
    upscaler_2: str = Field("None", min_length=1, max_length=200, description="Second upscaler, blended over the first.")
    extras_upscaler_2_visibility: float = Field(0.0, ge=0.0, le=1.0, description="Blend weight of upscaler_2.")
    gfpgan_visibility: float = Field(0.0, ge=0.0, le=1.0, description="Face restoration: not available (reported).")
    codeformer_visibility: float = Field(0.0, ge=0.0, le=1.0, description="Face restoration: not available (reported).")
    codeformer_weight: float = Field(0.0, ge=0.0, le=1.0, description="Face restoration: not available.")
    upscale_first: bool = Field(False, description="Order of upscaling and face restoration (no effect here).")
