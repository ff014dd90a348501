"""Canny edge maps as ControlNet conditioning images.

Follows the `canny` preprocessor of lllyasviel's ControlNet annotators as used by the A1111
sd-webui-controlnet extension: `cv2.Canny(image, low, high)` runs directly on the 8-bit RGB array
(OpenCV takes the strongest gradient over the three channels, no blur or grayscale step first), and the
one-channel 0/255 map is repeated into three channels, white edges on black. J. Canny, "A Computational
Approach to Edge Detection", IEEE TPAMI 8(6), 1986.

Unlike the extension this does not resize to a "processor resolution": the map has the input's size;
callers resize the photo first to the size the pipeline runs at.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from toonbooth.core.errors import InputError
from toonbooth.core.images import from_array, to_rgb_array

DEFAULT_CANNY_LOW = 70
DEFAULT_CANNY_HIGH = 230


def check_canny_thresholds(low: int, high: int) -> None:
    """Refuse thresholds outside 0..255 or out of order; errors name the JobSpec fields."""
    for name, value in (("canny_low", low), ("canny_high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InputError(name, f"must be an integer in [0, 255], got {value!r}", value)
        if not 0 <= int(value) <= 255:
            raise InputError(name, f"must be in [0, 255], got {value!r}", value)
    if int(low) > int(high):
        raise InputError("canny_low", f"must be <= canny_high ({high}), got {low}", low)


def canny_edges(img: Image.Image, low: int = DEFAULT_CANNY_LOW, high: int = DEFAULT_CANNY_HIGH) -> np.ndarray:
    """HxW uint8 edge map (0 or 255) of `img`'s RGB pixels."""
    check_canny_thresholds(low, high)
    rgb = to_rgb_array(img)
    return cv2.Canny(rgb, int(low), int(high))


def canny_control_image(
    img: Image.Image, low: int = DEFAULT_CANNY_LOW, high: int = DEFAULT_CANNY_HIGH
) -> Image.Image:
    """RGB image of the same size as `img`: white (255) edges on black (0), as ControlNet canny expects."""
    edges = canny_edges(img, low, high)
    return from_array(edges)
