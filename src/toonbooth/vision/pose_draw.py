"""OpenPose skeleton types and the ControlNet-openpose drawing convention, with numpy + OpenCV only.

The drawing follows the pose maps ControlNet 1.1's openpose models were trained on, as produced by the
DWPose annotator (Yang et al., "Effective Whole-body Pose Estimation with Two-stages Distillation", ICCV 2023
workshops, https://github.com/IDEA-Research/DWPose, `ControlNet-v1-1-nightly/annotator/dwpose/util.py`;
the model is `lllyasviel/control_v11p_sd15_openpose`):

- black RGB canvas;
- body: 17 limbs, each a filled ellipse polygon along the limb (half-length x stick width 4, one-degree steps)
  in the limb's colour, then the whole canvas times 0.6, then the 18 joints as filled circles of radius 4
  in the joint's colour (18 fixed colours from red round the hue circle);
- hands: 20 bone lines of width 2 coloured by an HSV hue ramp (i/20), then the 21 joints as filled circles
  of radius 4 in (0, 0, 255);
- face: 68 filled white circles of radius 3.

Points below the score threshold are skipped; like the reference, hand and face points at pixel 0 are skipped.

The types here (`PosePerson`, `PoseSkeleton`) are the OpenPose-18 body + 2 x 21 hands + 68 face layout that
`nets.dwpose` converts its 133 whole-body keypoints into and parses OpenPose JSON into.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import cv2
import numpy as np

BODY_POINTS = 18
HAND_POINTS = 21
FACE_POINTS = 68
SCORE_THRESHOLD = 0.3
STICK_WIDTH = 4
BODY_ALPHA = 0.6
JOINT_RADIUS = 4
HAND_LINE_WIDTH = 2
FACE_RADIUS = 3
HAND_JOINT_COLOR = (0, 0, 255)
FACE_COLOR = (255, 255, 255)

OPENPOSE_BODY_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip

# the 17 drawn limbs as 0-based (from, to) joint pairs of the OpenPose-18 body
BODY_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip

BODY_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
"""RGB colour of limb i (i < 17) and of joint i (i < 18)."""

HAND_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
    (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)  # fmt: skip


def hand_edge_color(index: int) -> tuple[float, float, float]:
    """RGB colour (0–255 floats, as passed to OpenCV) of hand edge `index`: hue index/20, full S and V."""
    r, g, b = colorsys.hsv_to_rgb(index / len(HAND_EDGES), 1.0, 1.0)
    return (r * 255.0, g * 255.0, b * 255.0)


# ---------------------------------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------------------------------


def _points(value: np.ndarray | None, count: int, name: str) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (count, 3):
        raise ValueError(f"{name}: expected shape ({count}, 3) (x, y, score), got {arr.shape}")
    return arr


@dataclass(frozen=True)
class PosePerson:
    """One person in OpenPose layout. Each part is an (N, 3) float array of x, y in pixels and a score;
    a score of 0 marks a missing point. Hands and face may be None (not estimated)."""

    body: np.ndarray
    left_hand: np.ndarray | None = None
    right_hand: np.ndarray | None = None
    face: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "body", _points(self.body, BODY_POINTS, "body"))
        object.__setattr__(self, "left_hand", _points(self.left_hand, HAND_POINTS, "left_hand"))
        object.__setattr__(self, "right_hand", _points(self.right_hand, HAND_POINTS, "right_hand"))
        object.__setattr__(self, "face", _points(self.face, FACE_POINTS, "face"))

    def scaled(self, sx: float, sy: float) -> PosePerson:
        """The same person with x multiplied by `sx` and y by `sy` (scores unchanged)."""

        def scale(arr: np.ndarray | None) -> np.ndarray | None:
            if arr is None:
                return None
            out = arr.copy()
            out[:, 0] *= sx
            out[:, 1] *= sy
            return out

        return PosePerson(scale(self.body), scale(self.left_hand), scale(self.right_hand), scale(self.face))


@dataclass(frozen=True)
class PoseSkeleton:
    """People on a canvas of `width` x `height` pixels (the OpenPose JSON `canvas_width/height`)."""

    people: tuple[PosePerson, ...]
    width: int
    height: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "people", tuple(self.people))
        if int(self.width) < 1 or int(self.height) < 1:
            raise ValueError(f"canvas size must be positive, got {self.width}x{self.height}")

    @classmethod
    def from_normalized(cls, people: list[PosePerson], width: int, height: int) -> PoseSkeleton:
        """Build from people whose x, y are fractions of the canvas (0..1)."""
        return cls(tuple(p.scaled(width, height) for p in people), int(width), int(height))

    def normalized_people(self) -> tuple[PosePerson, ...]:
        """The people with x, y divided by the canvas size."""
        return tuple(p.scaled(1.0 / self.width, 1.0 / self.height) for p in self.people)


# ---------------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------------


def draw_body(canvas: np.ndarray, body: np.ndarray, score_threshold: float = SCORE_THRESHOLD) -> np.ndarray:
    """Draw one or more OpenPose-18 bodies in the ControlNet convention; returns the new canvas.

    `body` is (18, 3) or (P, 18, 3) in pixels. The 0.6 dimming applies to everything on the canvas before
    the joints are drawn, as in the reference (bodies of all people are drawn before it).
    """
    bodies = np.asarray(body, dtype=np.float64).reshape(-1, BODY_POINTS, 3)
    out = np.ascontiguousarray(canvas, dtype=np.uint8).copy()
    # limb-major, then person, as the reference (the overlap order decides which colour wins)
    for i, (a, b) in enumerate(BODY_LIMBS):
        for person in bodies:
            if person[a, 2] < score_threshold or person[b, 2] < score_threshold:
                continue
            (xa, ya), (xb, yb) = person[a, :2], person[b, :2]
            length = math.hypot(xa - xb, ya - yb)
            angle = math.degrees(math.atan2(ya - yb, xa - xb))
            center = (int((xa + xb) / 2.0), int((ya + yb) / 2.0))
            polygon = cv2.ellipse2Poly(center, (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(out, polygon, BODY_COLORS[i])
    out = (out * BODY_ALPHA).astype(np.uint8)
    for i in range(BODY_POINTS):
        for person in bodies:
            if person[i, 2] < score_threshold:
                continue
            x, y = int(person[i, 0]), int(person[i, 1])
            cv2.circle(out, (x, y), JOINT_RADIUS, BODY_COLORS[i], thickness=-1)
    return out


def draw_hand(canvas: np.ndarray, hand: np.ndarray, score_threshold: float = SCORE_THRESHOLD) -> np.ndarray:
    """Draw one 21-point hand (pixels) in place: HSV-ramp bones of width 2, then (0,0,255) joints."""
    pts = np.asarray(hand, dtype=np.float64).reshape(HAND_POINTS, 3)
    ok = [bool(p[2] >= score_threshold and int(p[0]) > 0 and int(p[1]) > 0) for p in pts]
    for i, (a, b) in enumerate(HAND_EDGES):
        if ok[a] and ok[b]:
            pa = (int(pts[a, 0]), int(pts[a, 1]))
            pb = (int(pts[b, 0]), int(pts[b, 1]))
            cv2.line(canvas, pa, pb, hand_edge_color(i), thickness=HAND_LINE_WIDTH)
    for p, good in zip(pts, ok, strict=True):
        if good:
            cv2.circle(canvas, (int(p[0]), int(p[1])), JOINT_RADIUS, HAND_JOINT_COLOR, thickness=-1)
    return canvas


def draw_face(canvas: np.ndarray, face: np.ndarray, score_threshold: float = SCORE_THRESHOLD) -> np.ndarray:
    """Draw 68 face points (pixels) in place as white dots of radius 3."""
    for p in np.asarray(face, dtype=np.float64).reshape(FACE_POINTS, 3):
        x, y = int(p[0]), int(p[1])
        if p[2] >= score_threshold and x > 0 and y > 0:
            cv2.circle(canvas, (x, y), FACE_RADIUS, FACE_COLOR, thickness=-1)
    return canvas


def draw_openpose(
    skeleton: PoseSkeleton,
    *,
    width: int | None = None,
    height: int | None = None,
    body: bool = True,
    hands: bool = True,
    face: bool = True,
    score_threshold: float = SCORE_THRESHOLD,
) -> np.ndarray:
    """Render a skeleton as a ControlNet-openpose control image: (H, W, 3) uint8 RGB on black.

    Drawn on the skeleton's canvas size unless `width`/`height` are given (coordinates are scaled; the
    stroke sizes stay those of the reference, which draws at detection resolution).
    """
    w = int(width or skeleton.width)
    h = int(height or skeleton.height)
    sx, sy = w / skeleton.width, h / skeleton.height
    people = [p.scaled(sx, sy) if (sx, sy) != (1.0, 1.0) else p for p in skeleton.people]
    canvas = np.zeros((h, w, 3), dtype=np.uint8)
    if body and people:
        canvas = draw_body(canvas, np.stack([p.body for p in people]), score_threshold)
    if hands:
        for p in people:
            for hand in (p.left_hand, p.right_hand):
                if hand is not None:
                    draw_hand(canvas, hand, score_threshold)
    if face:
        for p in people:
            if p.face is not None:
                draw_face(canvas, p.face, score_threshold)
    return canvas
