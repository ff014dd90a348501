"""Write `assets/sample_makeup_reference.png`: the bundled sample photo, mirrored, with makeup painted in —
purple lipstick, blue eye shadow, pink blush — through the landmark regions (`vision.face_regions`). The makeup
studio's README examples and `bench/makeup.py` use it as the reference whose makeup is copied.

    .venv/bin/python scripts/make_sample_makeup_reference.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from toonbooth.vision.face_regions import regions_from_landmarks
from toonbooth.vision.makeup_faces import packaged_landmarker

ROOT = Path(__file__).resolve().parents[1]
MAKEUP = (("lips", (150, 20, 90), 0.75), ("eye_shadow", (40, 60, 200), 0.5), ("blush", (240, 90, 120), 0.3))
"""(region, RGB colour, opacity at the region's centre)."""


def made_up(photo: Image.Image) -> Image.Image:
    face = packaged_landmarker().main_face(photo)
    if face is None:
        raise SystemExit("no face found in the sample photo")
    regions = regions_from_landmarks(face, (photo.height, photo.width))
    out = np.asarray(photo.convert("RGB")).astype(np.float32)
    for name, colour, opacity in MAKEUP:
        m = regions.soft(name)[:, :, None] * opacity
        out = out * (1 - m) + np.array(colour, np.float32) * m
    return Image.fromarray(np.ascontiguousarray(np.clip(np.rint(out), 0, 255).astype(np.uint8)[:, ::-1]))


if __name__ == "__main__":
    target = ROOT / "assets" / "sample_makeup_reference.png"
    made_up(Image.open(ROOT / "assets" / "sample_face.png")).save(target, optimize=True)
    print(f"wrote {target}")
