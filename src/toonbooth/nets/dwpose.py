"""DWPose whole-body pose estimation (133 COCO-WholeBody keypoints) on onnxruntime, and OpenPose JSON.

Follows DWPose (Yang et al., "Effective Whole-body Pose Estimation with Two-stages Distillation", ICCV 2023
workshops, https://github.com/IDEA-Research/DWPose) as packaged for ControlNet: the public ONNX pair of
`yzd-v/DWPose` on the Hugging Face hub,
- `yolox_l.onnx`: YOLOX-L person detector (Ge et al., "YOLOX: Exceeding YOLO Series in 2021",
  https://github.com/Megvii-BaseDetection/YOLOX), input (1, 3, 640, 640), raw output (1, 8400, 85) =
  per anchor cx, cy, w, h (grid-relative), objectness and 80 class probabilities;
- `dw-ll_ucoco_384.onnx`: RTMPose-l whole-body with SimCC heads (Jiang et al., "RTMPose", 2023;
  Li et al., "SimCC", ECCV 2022), input (1, 3, 384, 288), outputs simcc_x (1, 133, 576) and
  simcc_y (1, 133, 768) (split ratio 2.0).

Pre/post-processing written for toonbooth from those papers and configs:
detector: letterbox (top-left, pad 114, no normalisation), grid decode over strides 8/16/32, score =
objectness x person probability, NMS (IoU 0.45), score > 0.3; pose: box centre, box size x 1.25 fixed to the
model aspect, affine crop, mean/std normalisation, SimCC argmax / 2.0, back to image pixels.
Tensor names and the input sizes are read from the ONNX sessions.

Channel order: the detector gets BGR (YOLOX is trained on OpenCV-loaded images), the pose model gets RGB
(the DWPose config converts BGR to RGB in its data preprocessor). Inputs to this module are RGB uint8.

The 133 → OpenPose conversion (neck = mean of the shoulders, COCO → OpenPose body order, 68 face points,
left hand = COCO-WholeBody 91–111, right hand = 112–132) gives `vision.pose_draw.PoseSkeleton`, which
serialises to the OpenPose JSON used by A1111's openpose editor and sd-webui-controlnet
(`{"people": [{"pose_keypoints_2d": [...], "face_keypoints_2d": [...], "hand_left_keypoints_2d": [...],
"hand_right_keypoints_2d": [...]}], "canvas_width": W, "canvas_height": H}`; spec of the keypoint arrays:
https://github.com/CMU-Perceptual-Computing-Lab/openpose/blob/master/doc/02_output.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from ..core.errors import InputError, ModelError, ModelNotFoundError
from ..models.families import ModelFamily
from ..vision.pose_draw import BODY_POINTS, FACE_POINTS, SCORE_THRESHOLD, PosePerson, PoseSkeleton

WHOLEBODY_POINTS = 133
YOLOX_STRIDES = (8, 16, 32)
LETTERBOX_PAD = 114
PERSON_CLASS = 0
DET_SCORE_THRESHOLD = 0.3
NMS_IOU = 0.45
BOX_PADDING = 1.25
SIMCC_SPLIT_RATIO = 2.0
POSE_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
POSE_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)

# OpenPose-18 body index -> COCO-17 index (the neck, OpenPose 1, is the mean of COCO 5 and 6)
OPENPOSE_FROM_COCO = (0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
FACE_SLICE = slice(23, 91)
LEFT_HAND_SLICE = slice(91, 112)
RIGHT_HAND_SLICE = slice(112, 133)
# BODY_25 (OpenPose's default model) -> OpenPose-18: drop MidHip (8) and the six foot points
BODY25_TO_BODY18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
MAX_CANVAS = 16384


# ---------------------------------------------------------------------------------------------------
# Result types
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WholeBodyPerson:
    """One detected person: `keypoints` (133, 3) = x, y in image pixels and the SimCC score."""

    keypoints: np.ndarray
    box: tuple[float, float, float, float]
    """Detector box x0, y0, x1, y1 in image pixels."""
    box_score: float

    @property
    def body_score(self) -> float:
        """Mean score of the 17 COCO body points (how Moore-AnimateAnyone picks its main person)."""
        return float(np.mean(self.keypoints[:17, 2]))


@dataclass(frozen=True)
class WholeBodyResult:
    """All people found in an image of `width` x `height` pixels, best detector score first."""

    people: tuple[WholeBodyPerson, ...]
    width: int
    height: int


# ---------------------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------------------


def _dims(shape: Sequence[Any]) -> list[int | None]:
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


def looks_like_yolox(session: Any) -> bool:
    """True when an onnxruntime session has YOLOX's raw signature: one (N,3,H,W) image input and a
    (N, anchors, 5 + classes) output (anchors = sum over strides 8/16/32 when H, W are fixed)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) < 1:
        return False
    ins, outs = _dims(inputs[0].shape), _dims(outputs[0].shape)
    if len(ins) != 4 or ins[1] != 3 or len(outs) != 3:
        return False
    if outs[2] is not None and outs[2] < 6:
        return False
    h, w = ins[2], ins[3]
    if h and w and outs[1] is not None:
        return outs[1] == sum((h // s) * (w // s) for s in YOLOX_STRIDES)
    return True


def looks_like_rtmpose_wholebody(session: Any) -> bool:
    """True when an onnxruntime session has RTMPose-SimCC's signature: one (N,3,H,W) input and two
    (N, 133, ·) outputs whose lengths are W·2 and H·2 (in some order)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 2:
        return False
    ins = _dims(inputs[0].shape)
    outs = [_dims(o.shape) for o in outputs]
    if len(ins) != 4 or ins[1] != 3 or any(len(o) != 3 for o in outs):
        return False
    if any(o[1] not in (None, WHOLEBODY_POINTS) for o in outs):
        return False
    h, w = ins[2], ins[3]
    if h and w and all(o[2] for o in outs):
        want = {round(w * SIMCC_SPLIT_RATIO), round(h * SIMCC_SPLIT_RATIO)}
        return {o[2] for o in outs} == want
    return True


@dataclass(frozen=True)
class DWPoseModels:
    """The two onnxruntime sessions of DWPose (make with `load_dwpose`)."""

    detector: Any
    pose: Any

    @property
    def detector_input_hw(self) -> tuple[int, int]:
        """(H, W) of the detector input, read from the model (640 x 640 for yolox_l; 640 x 640 when the
        export has dynamic sizes)."""
        return _input_hw(self.detector, (640, 640))

    @property
    def pose_input_hw(self) -> tuple[int, int]:
        """(H, W) of the pose input, read from the model (384 x 288 for dw-ll_ucoco_384; that size when the
        export has dynamic sizes)."""
        return _input_hw(self.pose, (384, 288))


def _input_hw(session: Any, default: tuple[int, int]) -> tuple[int, int]:
    dims = _dims(session.get_inputs()[0].shape)
    if dims[2] is None or dims[3] is None:
        return default
    return int(dims[2]), int(dims[3])


def _session(path: Path, providers: Sequence[str] | None, options: Any) -> Any:
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"DWPose ONNX file not found: {path}")
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=list(providers or ["CPUExecutionProvider"])
        )
    except Exception as e:
        raise ModelError(f"{path.name}: not a loadable ONNX model ({e})") from e


def load_dwpose(
    det_path: Path,
    pose_path: Path,
    providers: Sequence[str] | None = None,
    session_options: Any = None,
) -> DWPoseModels:
    """Open the detector and pose ONNX files and check that each has the expected signature."""
    det = _session(det_path, providers, session_options)
    pose = _session(pose_path, providers, session_options)
    if not looks_like_yolox(det):
        hint = " (the two files look swapped)" if looks_like_yolox(pose) else ""
        raise ModelError(
            f"{Path(det_path).name}: not a YOLOX detector (input {det.get_inputs()[0].shape}, "
            f"outputs {[o.shape for o in det.get_outputs()]}){hint}"
        )
    if not looks_like_rtmpose_wholebody(pose):
        raise ModelError(
            f"{Path(pose_path).name}: not an RTMPose SimCC whole-body model with 133 keypoints "
            f"(input {pose.get_inputs()[0].shape}, outputs {[o.shape for o in pose.get_outputs()]})"
        )
    return DWPoseModels(det, pose)


# ---------------------------------------------------------------------------------------------------
# Detector
# ---------------------------------------------------------------------------------------------------


def letterbox(image: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect into the top-left of an `input_hw` canvas filled with 114.
    Returns the (1, 3, H, W) float32 tensor (0–255, channel order as given) and the scale ratio."""
    ih, iw = input_hw
    h, w = image.shape[:2]
    ratio = min(ih / h, iw / w)
    nh, nw = int(h * ratio), int(w * ratio)
    canvas = np.full((ih, iw, 3), LETTERBOX_PAD, dtype=np.uint8)
    canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas.transpose(2, 0, 1)[None].astype(np.float32), ratio


def yolox_grids(
    input_hw: tuple[int, int], strides: Sequence[int] = YOLOX_STRIDES
) -> tuple[np.ndarray, np.ndarray]:
    """Anchor grid cells (A, 2) as (x, y) and their strides (A, 1), row-major per stride level."""
    grids, expanded = [], []
    h, w = input_hw
    for s in strides:
        gh, gw = h // s, w // s
        ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
        grids.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        expanded.append(np.full((gh * gw, 1), s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(expanded).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = NMS_IOU) -> list[int]:
    """Greedy non-maximum suppression over xyxy boxes; indices kept, best score first."""
    order = np.argsort(-scores, kind="stable")
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        x0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        y0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        x1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        y1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return keep


def decode_yolox(
    raw: np.ndarray,
    input_hw: tuple[int, int],
    ratio: float,
    *,
    score_threshold: float = DET_SCORE_THRESHOLD,
    iou_threshold: float = NMS_IOU,
) -> tuple[np.ndarray, np.ndarray]:
    """Person boxes (K, 4) xyxy in original-image pixels and their scores (K,) from YOLOX's raw output.

    `raw` is (1, A, 5 + C) or (A, 5 + C). Boxes with score ≤ `score_threshold` are dropped before NMS
    (which gives the same survivors as class-wise NMS at a lower threshold followed by this cut).
    """
    pred = np.asarray(raw, dtype=np.float32).reshape(-1, raw.shape[-1])
    grids, strides = yolox_grids(input_hw)
    if pred.shape[0] != grids.shape[0]:
        raise ModelError(
            f"YOLOX output has {pred.shape[0]} anchors, expected {grids.shape[0]} for input {input_hw}"
        )
    xy = (pred[:, :2] + grids) * strides
    wh = np.exp(np.minimum(pred[:, 2:4], 30.0)) * strides
    scores = pred[:, 4] * pred[:, 5 + PERSON_CLASS]
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1) / ratio
    mask = scores > score_threshold
    boxes, scores = boxes[mask], scores[mask]
    if not len(scores):
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    keep = nms(boxes, scores, iou_threshold)
    return boxes[keep], scores[keep]


def detect_people(
    models: DWPoseModels, image_rgb: np.ndarray, *, score_threshold: float = DET_SCORE_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """Run the detector on an RGB uint8 image: person boxes (K, 4) xyxy in pixels and scores (K,)."""
    input_hw = models.detector_input_hw
    tensor, ratio = letterbox(np.ascontiguousarray(image_rgb[..., ::-1]), input_hw)
    name = models.detector.get_inputs()[0].name
    raw = models.detector.run(None, {name: tensor})[0]
    boxes, scores = decode_yolox(raw, input_hw, ratio, score_threshold=score_threshold)
    h, w = image_rgb.shape[:2]
    boxes = boxes.copy()
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
    good = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
    return boxes[good], scores[good]


# ---------------------------------------------------------------------------------------------------
# Pose
# ---------------------------------------------------------------------------------------------------


def box_to_center_scale(
    box: Sequence[float], input_hw: tuple[int, int], padding: float = BOX_PADDING
) -> tuple[np.ndarray, np.ndarray]:
    """Centre (2,) and crop size (2,) = (w, h) of a box, enlarged by `padding` and widened or heightened
    to the model's aspect (input W / H)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    center = np.array([(x0 + x1) / 2, (y0 + y1) / 2], dtype=np.float64)
    w, h = (x1 - x0) * padding, (y1 - y0) * padding
    aspect = input_hw[1] / input_hw[0]
    if w > h * aspect:
        h = w / aspect
    else:
        w = h * aspect
    return center, np.array([w, h], dtype=np.float64)


def crop_matrix(center: np.ndarray, scale: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """2x3 affine matrix mapping image pixels to crop pixels (no rotation; uniform scale because the
    crop already has the model aspect)."""
    out_h, out_w = input_hw
    s = out_w / scale[0]
    return np.array(
        [[s, 0.0, out_w / 2 - s * center[0]], [0.0, s, out_h / 2 - s * center[1]]], dtype=np.float64
    )


def pose_input(
    image_rgb: np.ndarray, center: np.ndarray, scale: np.ndarray, input_hw: tuple[int, int]
) -> np.ndarray:
    """The (1, 3, H, W) float32 pose-model input: affine crop (bilinear), mean/std normalised, RGB."""
    out_h, out_w = input_hw
    crop = cv2.warpAffine(
        image_rgb, crop_matrix(center, scale, input_hw), (out_w, out_h), flags=cv2.INTER_LINEAR
    )
    norm = (crop.astype(np.float32) - POSE_MEAN) / POSE_STD
    return norm.transpose(2, 0, 1)[None].astype(np.float32)


def decode_simcc(
    simcc_x: np.ndarray,
    simcc_y: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    input_hw: tuple[int, int],
    split_ratio: float = SIMCC_SPLIT_RATIO,
) -> np.ndarray:
    """SimCC argmax decode to image pixels: (K, 3) = x, y, score for one person.

    score = min(max_x, max_y); points with score ≤ 0 get location -1 before the back-transform (and keep
    their non-positive score, so every threshold drops them)."""
    sx = np.asarray(simcc_x, dtype=np.float32).reshape(-1, simcc_x.shape[-1])
    sy = np.asarray(simcc_y, dtype=np.float32).reshape(-1, simcc_y.shape[-1])
    locs = np.stack([np.argmax(sx, axis=1), np.argmax(sy, axis=1)], axis=1).astype(np.float64)
    scores = np.minimum(sx.max(axis=1), sy.max(axis=1)).astype(np.float64)
    locs[scores <= 0] = -1
    crop_xy = locs / split_ratio
    size = np.array([input_hw[1], input_hw[0]], dtype=np.float64)
    xy = crop_xy / size * scale + center - scale / 2
    return np.concatenate([xy, scores[:, None]], axis=1)


def _split_simcc(outputs: Sequence[np.ndarray], input_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    a, b = outputs[0], outputs[1]
    len_x = round(input_hw[1] * SIMCC_SPLIT_RATIO)
    len_y = round(input_hw[0] * SIMCC_SPLIT_RATIO)
    if len_x != len_y and a.shape[-1] == len_y and b.shape[-1] == len_x:
        return b, a  # outputs listed y first: identify them by length, not by name
    return a, b


def estimate_pose(models: DWPoseModels, image_rgb: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """133 keypoints (133, 3) in image pixels for the person in `box` (xyxy pixels)."""
    input_hw = models.pose_input_hw
    center, scale = box_to_center_scale(box, input_hw)
    tensor = pose_input(image_rgb, center, scale, input_hw)
    name = models.pose.get_inputs()[0].name
    outputs = models.pose.run(None, {name: tensor})
    simcc_x, simcc_y = _split_simcc(outputs, input_hw)
    return decode_simcc(simcc_x[0], simcc_y[0], center, scale, input_hw)


def _check_image(image: Any, field: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 2 or arr.shape[1] < 2:
        raise InputError(
            field, f"expected an RGB image (H, W, 3), got an array of shape {arr.shape}", arr.shape
        )
    if arr.dtype != np.uint8:
        raise InputError(field, f"expected uint8 pixels, got {arr.dtype}", str(arr.dtype))
    return np.ascontiguousarray(arr[..., :3])


def estimate_wholebody(
    models: DWPoseModels,
    image_rgb: np.ndarray,
    *,
    det_score_threshold: float = DET_SCORE_THRESHOLD,
    min_body_score: float = SCORE_THRESHOLD,
    max_people: int | None = None,
    field: str = "pose_image",
) -> WholeBodyResult:
    """Detect people and estimate their 133 keypoints in an RGB uint8 image.

    Raises `InputError(field)` when the detector finds no person, or when no detected person has a body
    point scoring at least `min_body_score` (a cat, a landscape).
    """
    image = _check_image(image_rgb, field)
    h, w = image.shape[:2]
    boxes, scores = detect_people(models, image, score_threshold=det_score_threshold)
    if not len(boxes):
        raise InputError(
            field, f"no person found in the {w}x{h} image (detector score ≤ {det_score_threshold})"
        )
    people = []
    for box, score in zip(boxes[:max_people] if max_people else boxes, scores, strict=False):
        kps = estimate_pose(models, image, box)
        if np.max(kps[:17, 2]) >= min_body_score:
            people.append(WholeBodyPerson(kps, tuple(float(v) for v in box), float(score)))
    if not people:
        raise InputError(
            field, f"no person found in the {w}x{h} image (no body keypoint scored ≥ {min_body_score})"
        )
    return WholeBodyResult(tuple(people), w, h)


# ---------------------------------------------------------------------------------------------------
# OpenPose conversion and JSON
# ---------------------------------------------------------------------------------------------------


def _thresholded(points: np.ndarray, threshold: float) -> np.ndarray:
    out = points.astype(np.float64).copy()
    out[:, 2] = np.minimum(out[:, 2], 1.0)
    out[points[:, 2] < threshold] = 0.0
    return out


def wholebody_to_openpose(keypoints: np.ndarray, threshold: float = SCORE_THRESHOLD) -> PosePerson:
    """Convert 133 COCO-WholeBody keypoints (pixels) to an OpenPose person (18 body, 2 x 21 hands, 68 face).

    The neck is the mean of the shoulders with score min(s_left, s_right); the feet are dropped; points
    scoring below `threshold` become (0, 0, 0) and scores are capped at 1."""
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.shape != (WHOLEBODY_POINTS, 3):
        raise ValueError(f"expected (133, 3) keypoints, got {kp.shape}")
    body = np.zeros((BODY_POINTS, 3))
    for op_index, coco_index in enumerate(OPENPOSE_FROM_COCO):
        if coco_index >= 0:
            body[op_index] = kp[coco_index]
    body[1, :2] = (kp[5, :2] + kp[6, :2]) / 2
    body[1, 2] = min(kp[5, 2], kp[6, 2])
    return PosePerson(
        body=_thresholded(body, threshold),
        left_hand=_thresholded(kp[LEFT_HAND_SLICE], threshold),
        right_hand=_thresholded(kp[RIGHT_HAND_SLICE], threshold),
        face=_thresholded(kp[FACE_SLICE], threshold),
    )


def to_openpose(
    result: WholeBodyResult, threshold: float = SCORE_THRESHOLD, *, best_only: bool = False
) -> PoseSkeleton:
    """The OpenPose skeleton of a whole-body result. `best_only` keeps the person with the highest mean
    body score (Moore-AnimateAnyone's choice); otherwise everyone is kept (the ControlNet annotator's)."""
    people = list(result.people)
    if best_only and people:
        people = [max(people, key=lambda p: p.body_score)]
    return PoseSkeleton(
        tuple(wholebody_to_openpose(p.keypoints, threshold) for p in people), result.width, result.height
    )


def _flat(points: np.ndarray | None) -> list[float] | None:
    if points is None:
        return None
    return [round(float(v), 3) for v in points.reshape(-1)]


def openpose_to_json(skeleton: PoseSkeleton) -> dict:
    """The OpenPose JSON dict: pixel coordinates, score in [0, 1], (0, 0, 0) for a missing point."""
    return {
        "people": [
            {
                "pose_keypoints_2d": _flat(p.body),
                "face_keypoints_2d": _flat(p.face),
                "hand_left_keypoints_2d": _flat(p.left_hand),
                "hand_right_keypoints_2d": _flat(p.right_hand),
            }
            for p in skeleton.people
        ],
        "canvas_width": int(skeleton.width),
        "canvas_height": int(skeleton.height),
    }


def _canvas_size(data: dict, key: str, field: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(field, f"`{key}` must be a positive integer, got {value!r}", value)
    if value != int(value) or not 1 <= value <= MAX_CANVAS:
        raise InputError(field, f"`{key}` must be an integer in 1..{MAX_CANVAS}, got {value!r}", value)
    return int(value)


def _keypoint_array(value: Any, counts: Sequence[int], where: str, field: str) -> np.ndarray | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InputError(field, f"{where} must be a list of numbers, got {type(value).__name__}", value)
    if len(value) == 0:
        return None
    allowed = " or ".join(str(c * 3) for c in counts)
    if len(value) not in [c * 3 for c in counts]:
        raise InputError(
            field,
            f"{where} must hold {allowed} numbers (x, y, score per point), got {len(value)}",
            len(value),
        )
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(field, f"{where}[{i}] is not a number: {v!r}", v)
        if not math.isfinite(v):
            raise InputError(field, f"{where}[{i}] is not a finite number: {v!r}", v)
    return np.asarray(value, dtype=np.float64).reshape(-1, 3)


def parse_openpose_json(
    data: Any,
    field: str = "skeleton",
    *,
    coords: Literal["auto", "pixels", "normalized"] = "auto",
) -> PoseSkeleton:
    """Validate an OpenPose JSON object (already parsed) and return the skeleton in pixels.

    Accepts the 18-point body (COCO OpenPose, as ControlNet writes it) or BODY_25 (converted), 21-point
    hands and a 68- or 70-point face (the two pupils are dropped). Coordinates are pixels, or fractions of
    the canvas (what controlnet_aux writes): `coords="auto"` takes them as fractions when every present
    point lies in [0, 1]. Every problem raises `InputError(field, ...)` saying what and where.
    """
    if not isinstance(data, dict):
        raise InputError(field, f"expected a JSON object with `people`, got {type(data).__name__}", None)
    width = _canvas_size(data, "canvas_width", field)
    height = _canvas_size(data, "canvas_height", field)
    people_json = data.get("people")
    if not isinstance(people_json, list):
        raise InputError(field, f"`people` must be a list, got {type(people_json).__name__}", None)
    if not people_json:
        raise InputError(field, "`people` is empty: the skeleton has no person", 0)

    parsed: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]] = []
    for n, person in enumerate(people_json):
        where = f"people[{n}]"
        if not isinstance(person, dict):
            raise InputError(field, f"{where} must be an object, got {type(person).__name__}", None)
        body = _keypoint_array(person.get("pose_keypoints_2d"), (18, 25), f"{where}.pose_keypoints_2d", field)
        if body is None:
            raise InputError(field, f"{where}.pose_keypoints_2d is missing or empty", None)
        if len(body) == 25:
            body = body[list(BODY25_TO_BODY18)]
        face = _keypoint_array(person.get("face_keypoints_2d"), (68, 70), f"{where}.face_keypoints_2d", field)
        if face is not None:
            face = face[:FACE_POINTS]
        left = _keypoint_array(
            person.get("hand_left_keypoints_2d"), (21,), f"{where}.hand_left_keypoints_2d", field
        )
        right = _keypoint_array(
            person.get("hand_right_keypoints_2d"), (21,), f"{where}.hand_right_keypoints_2d", field
        )
        for part, name in ((body, "pose"), (face, "face"), (left, "hand_left"), (right, "hand_right")):
            if part is not None and np.any(part[:, 2] < 0):
                i = int(np.argmax(part[:, 2] < 0))
                raise InputError(
                    field, f"{where}.{name}_keypoints_2d point {i} has a negative score", part[i, 2]
                )
        parsed.append((body, face, left, right))

    present = [part[part[:, 2] > 0, :2] for parts in parsed for part in parts if part is not None]
    xy = np.concatenate(present) if present else np.zeros((0, 2))
    if not len(xy):
        raise InputError(field, "every keypoint has score 0: the skeleton has no visible point", None)
    normalized = coords == "normalized" or (coords == "auto" and bool(np.all((xy >= 0) & (xy <= 1))))
    sx, sy = (width, height) if normalized else (1.0, 1.0)
    limit_x, limit_y = (1.0, 1.0) if normalized else (float(width), float(height))
    # points may sit a little off-canvas (an editor lets you drag them there); far off is a broken file
    if np.any(np.abs(xy[:, 0] - limit_x / 2) > 1.5 * limit_x) or np.any(
        np.abs(xy[:, 1] - limit_y / 2) > 1.5 * limit_y
    ):
        worst = xy[np.argmax(np.abs(xy[:, 0] / limit_x - 0.5) + np.abs(xy[:, 1] / limit_y - 0.5))]
        raise InputError(
            field,
            f"keypoint ({worst[0]:g}, {worst[1]:g}) is far outside the {width}x{height} canvas",
            worst.tolist(),
        )

    def finish(part: np.ndarray | None) -> np.ndarray | None:
        if part is None:
            return None
        out = part.copy()
        out[:, 2] = np.minimum(out[:, 2], 1.0)
        out[:, 0] *= sx
        out[:, 1] *= sy
        out[out[:, 2] <= 0] = 0.0
        return out

    people = tuple(
        PosePerson(finish(body), finish(left), finish(right), finish(face))
        for body, face, left, right in parsed
    )
    return PoseSkeleton(people, width, height)


# ---------------------------------------------------------------------------------------------------
# The DWPose model family: the ONNX pair in `<models>/DWPose/` (or one pair per sub-folder)
# ---------------------------------------------------------------------------------------------------

DWPOSE_FOLDERS: tuple[str, ...] = ("DWPose", "dwpose")
DWPOSE_NAME = "dwpose"
PREFERRED_FILES = {"detector": "yolox_l.onnx", "pose": "dw-ll_ucoco_384.onnx"}
_SIGNATURES: dict[tuple[str, int, int], Any] = {}


def onnx_role(path: Path) -> str | None:
    """'detector' (YOLOX raw output), 'pose' (RTMPose SimCC, 133 points) or None, read from the file's graph
    inputs and outputs only (no session, no weights read); cached per file version."""
    from ..models.onnx_header import read_onnx_signature

    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _SIGNATURES:
        if len(_SIGNATURES) > 256:
            _SIGNATURES.clear()
        try:
            _SIGNATURES[key] = read_onnx_signature(path)
        except ModelError as exc:
            _SIGNATURES[key] = exc
    sig = _SIGNATURES[key]
    if isinstance(sig, Exception):
        return None
    if looks_like_rtmpose_wholebody(sig):
        return "pose"
    if looks_like_yolox(sig):
        return "detector"
    return None


def _pick(role: str, files: list[Path], folder: Path) -> tuple[Path | None, str | None]:
    if len(files) == 1:
        return files[0], None
    if not files:
        return None, None
    preferred = [f for f in files if f.name.lower() == PREFERRED_FILES[role]]
    if len(preferred) == 1:
        return preferred[0], None
    names = ", ".join(f.name for f in files)
    return None, f"{folder} holds several {role} models ({names}): keep one pair per folder"


def dwpose_folder_entry(folder: Path, name: str, top_folder: str, relpath: str) -> Any:
    """An entry for a folder holding `.onnx` files: usable when exactly one YOLOX detector and one RTMPose
    whole-body model are identified by their signatures; refused (saying what is missing) otherwise; None
    when the folder has no `.onnx` file."""
    from ..models.registry import ModelEntry

    onnx_files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".onnx")
    if not onnx_files:
        return None
    roles: dict[str, list[Path]] = {"detector": [], "pose": []}
    others = []
    for f in onnx_files:
        role = onnx_role(f)
        (roles[role] if role else others).append(f)
    det, det_problem = _pick("detector", roles["detector"], folder)
    pose, pose_problem = _pick("pose", roles["pose"], folder)
    refused = det_problem or pose_problem
    if refused is None and (det is None or pose is None):
        lacking = [what for what, f in (("YOLOX person detector (e.g. yolox_l.onnx)", det),
                                        ("RTMPose whole-body model (e.g. dw-ll_ucoco_384.onnx)", pose)) if f is None]  # fmt: skip
        unknown = f"; not recognised: {', '.join(f.name for f in others)}" if others else ""
        refused = f"{folder}: the DWPose pair is incomplete: no {' and no '.join(lacking)} found{unknown}"
    details: dict[str, Any] = {}
    if det is not None:
        details["detector"] = det.name
    if pose is not None:
        details["pose"] = pose.name
    size = sum(f.stat().st_size for f in (det, pose) if f is not None)
    return ModelEntry(
        name=name, path=folder, kind="dwpose", layout="onnx", source="folder", folder=top_folder,
        relpath=relpath, size=size, refused=refused, details=details,
    )  # fmt: skip


def scan_dwpose(top: Path, folder: str) -> list[Any]:
    """The pair directly in `<models>/DWPose/` (named `dwpose`) and one pair per sub-folder (named after it)."""
    out = []
    entry = dwpose_folder_entry(top, DWPOSE_NAME, folder, "")
    if entry is not None:
        out.append(entry)
    for sub in sorted(d for d in top.iterdir() if d.is_dir() and not d.name.startswith(".")):
        entry = dwpose_folder_entry(sub, sub.name, folder, sub.name)
        if entry is not None:
            out.append(entry)
    return out


def onnx_providers(device: Any) -> list[str]:
    """onnxruntime execution providers for a torch device: CUDA first when the device is CUDA and this
    onnxruntime build has it, always CPU as the fallback."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    want = ["CUDAExecutionProvider"] if str(device).startswith("cuda") else []
    return [p for p in want if p in available] + ["CPUExecutionProvider"]


def load_dwpose_entry(entry: Any, env: Any) -> DWPoseModels:
    folder = Path(entry.location)
    return load_dwpose(folder / entry.details["detector"], folder / entry.details["pose"],
                       providers=onnx_providers(env.device))  # fmt: skip


DWPOSE_FAMILY = ModelFamily(
    kind="dwpose",
    description="DWPose ONNX pair: YOLOX person detector + RTMPose whole-body (133 keypoints), onnxruntime",
    folders=DWPOSE_FOLDERS,
    suffixes=("/",),
    scan=scan_dwpose,
    load=load_dwpose_entry,
    approx_bytes=351_000_000,
    shared_only=True,
    licence_note="Apache-2.0 (DWPose, YOLOX)",
)
