"""From a photo to a ControlNet-openpose map: DWPose keypoints (`nets.dwpose`) drawn in the ControlNet
convention (`vision.pose_draw`), the way sd-webui-controlnet's `openpose`, `openpose_full` and
`dw_openpose_full` preprocessors do it (https://github.com/Mikubill/sd-webui-controlnet): the image scaled
so its short side is the preprocessor resolution, the people found, their skeletons drawn at that size
(body only for `openpose`; body, hands and face for the two full modules — all three run DWPose here), and
the OpenPose JSON of what was drawn. Also the geometry the pose-change job needs (fit a skeleton into the
result's canvas).

Engines reach this through `ctx.models.load("dwpose", ...)` and these functions; `vision.control` takes the
drawn map, so the layer below never imports the networks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

from ..core.errors import InputError
from ..vision.pose_draw import PosePerson, PoseSkeleton, draw_openpose
from .dwpose import DWPoseModels, estimate_wholebody, openpose_to_json, to_openpose

POSE_MODULE_PARTS: dict[str, tuple[bool, bool]] = {
    # module -> (hands, face)
    "openpose": (False, False),
    "openpose_full": (True, True),
    "dw_openpose_full": (True, True),
}


@dataclass(frozen=True)
class PoseMap:
    """A drawn pose: `image` (H, W, 3) uint8 on black, the skeleton it shows (canvas = the image size),
    its OpenPose JSON, and whether anybody was found."""

    image: np.ndarray
    skeleton: PoseSkeleton | None
    json: dict[str, Any]
    found: bool


def detect_skeleton(
    models: DWPoseModels, image_rgb: np.ndarray, *, people: Literal["best", "all"] = "all", field: str = "pose_image"
) -> PoseSkeleton:
    """The OpenPose skeleton of the people DWPose finds in an RGB uint8 image (canvas = the image size).
    InputError(field) when there is nobody (a landscape, a cat)."""
    result = estimate_wholebody(models, image_rgb, field=field)
    return to_openpose(result, best_only=people == "best")


def _scaled_to_short_side(image_rgb: np.ndarray, short_side: int) -> np.ndarray:
    h, w = image_rgb.shape[:2]
    k = short_side / min(h, w)
    nw, nh = max(1, int(round(w * k))), max(1, int(round(h * k)))
    if (nw, nh) == (w, h):
        return image_rgb
    return cv2.resize(image_rgb, (nw, nh), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)


def preprocess_pose(
    models: DWPoseModels, image_rgb: np.ndarray, module: str, resolution: int, *, field: str = "image"
) -> PoseMap:
    """sd-webui-controlnet's pose preprocessing: the map drawn at the image scaled to short side
    `resolution`. Nobody found gives a black map and `found=False` (as the extension does), not an error."""
    if module not in POSE_MODULE_PARTS:
        raise InputError("module", f"not a pose module: {module!r}; pose modules: {', '.join(POSE_MODULE_PARTS)}", module)
    hands, face = POSE_MODULE_PARTS[module]
    work = _scaled_to_short_side(np.ascontiguousarray(image_rgb[..., :3]), resolution)
    h, w = work.shape[:2]
    try:
        skeleton = detect_skeleton(models, work, people="all", field=field)
    except InputError:
        empty = {"people": [], "canvas_width": w, "canvas_height": h}
        return PoseMap(np.zeros((h, w, 3), np.uint8), None, empty, False)
    skeleton = as_in_json(without_parts(skeleton, hands=hands, face=face))
    drawing = draw_openpose(skeleton, hands=hands, face=face)
    return PoseMap(drawing, skeleton, openpose_to_json(skeleton), True)


def fit_skeleton(skeleton: PoseSkeleton, width: int, height: int) -> PoseSkeleton:
    """The skeleton placed on a `width` x `height` canvas: scaled uniformly to fit (aspect kept) and centred,
    so a pose from a landscape photo is not squashed onto a portrait character."""
    k = min(width / skeleton.width, height / skeleton.height)
    dx = (width - skeleton.width * k) / 2
    dy = (height - skeleton.height * k) / 2

    def move(arr: np.ndarray | None) -> np.ndarray | None:
        if arr is None:
            return None
        out = arr.copy()
        present = out[:, 2] > 0
        out[present, 0] = out[present, 0] * k + dx
        out[present, 1] = out[present, 1] * k + dy
        return out

    people = tuple(PosePerson(move(p.body), move(p.left_hand), move(p.right_hand), move(p.face)) for p in skeleton.people)
    return PoseSkeleton(people, int(width), int(height))


def select_people(skeleton: PoseSkeleton, people: Literal["best", "all"]) -> PoseSkeleton:
    """All people, or the one with the most confident body (mean score of the 18 body points)."""
    if people == "all" or len(skeleton.people) <= 1:
        return skeleton
    best = max(skeleton.people, key=lambda p: float(np.mean(p.body[:, 2])))
    return PoseSkeleton((best,), skeleton.width, skeleton.height)


def without_parts(skeleton: PoseSkeleton, *, hands: bool, face: bool) -> PoseSkeleton:
    """The skeleton with the hands and / or face points left out."""
    if hands and face:
        return skeleton
    return PoseSkeleton(
        tuple(PosePerson(p.body, p.left_hand if hands else None, p.right_hand if hands else None, p.face if face else None)
              for p in skeleton.people),
        skeleton.width, skeleton.height,
    )  # fmt: skip


def skeleton_points(skeleton: PoseSkeleton, threshold: float = 0.3) -> np.ndarray:
    """(N, 2) pixel positions of every body / hand point scoring at least `threshold` (for clicks, boxes)."""
    parts = [a for p in skeleton.people for a in (p.body, p.left_hand, p.right_hand) if a is not None]
    pts = np.concatenate([a[a[:, 2] >= threshold, :2] for a in parts]) if parts else np.zeros((0, 2))
    return pts


def unit_pose_map(models: Any, owner: str | None, source: Any, unit: Any, index: int, width: int, height: int,
                  pose_model: str = "dwpose") -> PoseMap:  # fmt: skip
    """The pose map of a ControlNet unit (`openpose`, `openpose_full`, `dw_openpose_full`): DWPose through
    the model manager, run at the unit's preprocessor resolution (processor_res, or pixel perfect), drawn
    there; `vision.control.control_map` then fits it to the generation size by the unit's resize mode."""
    from ..vision.control import preprocessor_resolution

    dw = models.load("dwpose", pose_model, owner)
    res = preprocessor_resolution(source.width, source.height, unit, width, height)
    rgb = np.asarray(source.convert("RGB"))
    return preprocess_pose(dw, rgb, unit.module, res, field=f"controlnet_units.{index}.image")


def as_in_json(skeleton: PoseSkeleton) -> PoseSkeleton:
    """The skeleton with its numbers exactly as `openpose_to_json` writes them (3 decimals), so the drawing
    made from it is the drawing of the JSON output (a JSON sent back draws the same pixels)."""

    def rounded(arr: np.ndarray | None) -> np.ndarray | None:
        if arr is None:
            return None
        return np.asarray([round(float(v), 3) for v in arr.reshape(-1)], dtype=np.float64).reshape(arr.shape)

    people = tuple(PosePerson(rounded(p.body), rounded(p.left_hand), rounded(p.right_hand), rounded(p.face))
                   for p in skeleton.people)  # fmt: skip
    return PoseSkeleton(people, skeleton.width, skeleton.height)
