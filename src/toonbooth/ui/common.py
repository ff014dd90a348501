"""Small helpers shared by the UI tabs."""

from __future__ import annotations

import io

from PIL import Image


def png_image(data: bytes) -> Image.Image:
    """A stored result (PNG bytes written by the runtime) as a loaded PIL image."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img
