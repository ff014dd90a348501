"""ControlNet-openpose drawing: colours, sizes and skipping rules checked at known pixels."""

from __future__ import annotations

import numpy as np
import pytest

from toonbooth.vision.pose_draw import (
    BODY_COLORS,
    PosePerson,
    PoseSkeleton,
    draw_openpose,
    hand_edge_color,
)

W = H = 64


def _body(points: dict[int, tuple[float, float, float]]) -> np.ndarray:
    body = np.zeros((18, 3))
    for i, p in points.items():
        body[i] = p
    return body


def _px(img: np.ndarray, x: int, y: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in img[y, x])


def test_body_limb_and_joints_colours():
    # neck (1) and right shoulder (2): limb 0 is neck→right shoulder, drawn red, dimmed to 0.6
    body = _body({1: (20, 32, 1.0), 2: (44, 32, 1.0)})
    img = draw_openpose(PoseSkeleton((PosePerson(body),), W, H))
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    assert BODY_COLORS[0] == (255, 0, 0)
    assert _px(img, 32, 32) == (153, 0, 0)  # limb midpoint: 255 * 0.6
    assert _px(img, 32, 35) == (153, 0, 0)  # inside the stick width of 4
    assert _px(img, 32, 38) == (0, 0, 0)  # outside it
    # joints are drawn after the dimming, in full colour, radius 4
    assert _px(img, 20, 32) == BODY_COLORS[1]
    assert _px(img, 44, 32) == BODY_COLORS[2]
    assert _px(img, 44, 36) == BODY_COLORS[2]
    assert _px(img, 20, 10) == (0, 0, 0)


def test_low_score_points_and_their_limbs_are_skipped():
    body = _body({1: (20, 32, 1.0), 2: (44, 32, 0.1)})
    img = draw_openpose(PoseSkeleton((PosePerson(body),), W, H))
    assert _px(img, 20, 32) == BODY_COLORS[1]
    assert _px(img, 44, 32) == (0, 0, 0)
    assert _px(img, 32, 32) == (0, 0, 0)
    assert img[:, 26:].sum() == 0


def test_a_limb_of_another_pair_has_its_own_colour():
    # limb 12 is neck → nose (colour index 12, blue)
    body = _body({1: (32, 50, 1.0), 0: (32, 14, 1.0)})
    img = draw_openpose(PoseSkeleton((PosePerson(body),), W, H))
    assert _px(img, 32, 32) == tuple(int(c * 0.6) for c in BODY_COLORS[12])
    assert _px(img, 32, 14) == BODY_COLORS[0]


def test_hand_edges_hsv_ramp_and_blue_joints():
    hand = np.zeros((21, 3))
    hand[0] = (10, 10, 1.0)
    hand[1] = (30, 10, 1.0)
    hand[5] = (10, 40, 1.0)
    hand[6] = (40, 40, 1.0)
    img = draw_openpose(PoseSkeleton((PosePerson(np.zeros((18, 3)), left_hand=hand),), W, H))
    assert _px(img, 20, 10) == (255, 0, 0)  # edge 0: hue 0
    # edge 5 (points 5→6): hue 5/20 → (127.5, 255, 0)
    r, g, b = _px(img, 25, 40)
    assert abs(r - 127.5) <= 0.5 and (g, b) == (255, 0)
    assert hand_edge_color(5) == pytest.approx((127.5, 255.0, 0.0))
    # edge 4 (0→5) is drawn too, edges to missing points are not
    assert _px(img, 10, 25) == tuple(int(round(c)) for c in hand_edge_color(4))
    assert _px(img, 10, 10) == (0, 0, 255)
    assert _px(img, 40, 43) == (0, 0, 255)  # joint radius 4
    assert _px(img, 40, 46) == (0, 0, 0)


def test_hand_point_at_pixel_zero_is_skipped_like_the_reference():
    hand = np.zeros((21, 3))
    hand[0] = (0, 10, 1.0)
    hand[1] = (30, 10, 1.0)
    img = draw_openpose(PoseSkeleton((PosePerson(np.zeros((18, 3)), right_hand=hand),), W, H))
    assert _px(img, 15, 10) == (0, 0, 0)  # no bone: one end is at x = 0
    assert _px(img, 30, 10) == (0, 0, 255)


def test_face_white_dots_radius_3():
    face = np.zeros((68, 3))
    face[7] = (40, 40, 1.0)
    img = draw_openpose(PoseSkeleton((PosePerson(np.zeros((18, 3)), face=face),), W, H))
    assert _px(img, 40, 40) == (255, 255, 255)
    assert _px(img, 43, 40) == (255, 255, 255)
    assert _px(img, 45, 40) == (0, 0, 0)
    assert (
        img.sum()
        == draw_openpose(PoseSkeleton((PosePerson(np.zeros((18, 3)), face=face),), W, H), hands=False).sum()
    )
    assert (
        draw_openpose(PoseSkeleton((PosePerson(np.zeros((18, 3)), face=face),), W, H), face=False).sum() == 0
    )


def test_normalised_and_pixel_coordinates_draw_the_same():
    body = _body({1: (20, 32, 1.0), 2: (44, 32, 1.0), 5: (8, 40, 0.9)})
    pixel = PoseSkeleton((PosePerson(body),), W, H)
    norm_body = body.copy()
    norm_body[:, 0] /= W
    norm_body[:, 1] /= H
    normalized = PoseSkeleton.from_normalized([PosePerson(norm_body)], W, H)
    assert np.array_equal(draw_openpose(pixel), draw_openpose(normalized))
    # drawing at twice the size moves the joints to twice the coordinates
    big = draw_openpose(pixel, width=2 * W, height=2 * H)
    assert big.shape == (2 * H, 2 * W, 3)
    assert _px(big, 40, 64) == BODY_COLORS[1]


def test_part_shapes_are_validated():
    with pytest.raises(ValueError, match="body"):
        PosePerson(np.zeros((17, 3)))
    with pytest.raises(ValueError, match="face"):
        PosePerson(np.zeros((18, 3)), face=np.zeros((70, 3)))
