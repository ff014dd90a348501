"""Classic (no-weights) memoji avatar: wall time of `toonbooth.vision.toon.classic_avatar`.

The photos are the shared sample portrait enlarged (Lanczos) to 1 MP (1155x866) and 12 MP (4000x3000),
top-anchored so the face stays in frame, with a little fixed-seed sensor noise so the filters see
texture rather than an interpolated-smooth image. One warm-up call (it also loads the Haar cascades),
then `--runs` timed calls. Prints one JSON object per photo. The stock counterpart for comparison is
OpenCV's own `cv2.stylization` on the same head-and-shoulders crop (`stock_stylization_median_s`).

    .venv/bin/python bench/classic_avatar.py --runs 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from toonbooth.vision.faces import head_and_shoulders_box, largest_face
from toonbooth.vision.toon import classic_avatar

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "assets" / "sample_face.png"
PHOTOS = {"1MP": (1155, 866), "12MP": (4000, 3000)}


def make_photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    w, h = size
    base = Image.open(SAMPLE).convert("RGB").resize((w, w), Image.Resampling.LANCZOS).crop((0, 0, w, h))
    arr = np.asarray(base).astype(np.float32)
    arr += np.random.default_rng(seed).normal(0.0, 3.0, arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def p95(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(np.ceil(0.95 * len(s))) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--upscale", type=float, default=1.5)
    ap.add_argument("--photos", nargs="+", choices=sorted(PHOTOS), default=["1MP", "12MP"])
    args = ap.parse_args()

    for name in args.photos:
        photo = make_photo(PHOTOS[name])
        times = timed(lambda photo=photo: classic_avatar(photo, upscale=args.upscale), args.runs)
        avatar, face, warnings = classic_avatar(photo, upscale=args.upscale)
        detect = timed(lambda photo=photo: largest_face(photo), args.runs)
        stock = None
        if face is not None:  # OpenCV's stock stylization on the same crop, for scale
            crop = np.asarray(photo.crop(head_and_shoulders_box(face, photo.size).as_tuple()))
            stock = statistics.median(timed(lambda crop=crop: cv2.stylization(crop), max(3, args.runs // 3)))
        print(
            json.dumps(
                {
                    "photo": name,
                    "width": photo.width,
                    "height": photo.height,
                    "median_s": round(statistics.median(times), 4),
                    "p95_s": round(p95(times), 4),
                    "min_s": round(min(times), 4),
                    "runs": args.runs,
                    "cpu_count": os.cpu_count(),
                    "face_detect_median_s": round(statistics.median(detect), 4),
                    "stock_stylization_median_s": None if stock is None else round(stock, 4),
                    "face_box": None if face is None else list(face.as_tuple()),
                    "avatar_size": list(avatar.size),
                    "warnings": warnings,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
