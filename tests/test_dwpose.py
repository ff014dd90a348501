"""DWPose on onnxruntime with tiny ONNX stand-ins that have the real signatures and designed outputs.

The detector graph outputs a constant raw YOLOX tensor (1, 8400, 85) with hand-placed anchors; the pose graph
outputs one-hot SimCC vectors whose argmax positions are chosen, so every decoded coordinate is known.
Both ignore the image (output + 0 * mean(input)); the image-dependent steps (letterbox, crop) are checked
on their own with designed images.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from toonbooth.core.errors import InputError, ModelError  # noqa: E402
from toonbooth.nets import dwpose  # noqa: E402
from toonbooth.vision.pose_draw import PosePerson, PoseSkeleton  # noqa: E402

IMG_W, IMG_H = 320, 480
# the person box in image pixels; letterbox ratio for 320x480 into 640x640 is 640/480 = 4/3
BOX = (100.0, 80.0, 196.0, 336.0)
RATIO = 4.0 / 3.0
# pose crop for BOX: centre (148, 208), size 96x256 * 1.25 = 120x320, widened to the 288:384 aspect → 240x320,
# so crop pixel c maps to image pixel c * 240/288 + (148 - 120, 208 - 160) = c * 5/6 + (28, 48); a SimCC index
# is 2 crop pixels, so index i ↔ image 28 + i * 5/12 (x) and 48 + i * 5/12 (y)
OFFSET = np.array([28.0, 48.0])


def _yolox_row(
    box_img: tuple[float, float, float, float],
    cell: tuple[int, int],
    stride: int,
    obj: float,
    cls: dict[int, float],
) -> np.ndarray:
    x0, y0, x1, y1 = (v * RATIO for v in box_img)
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    row = np.zeros(85, np.float32)
    row[:4] = [cx / stride - cell[0], cy / stride - cell[1], math.log(w / stride), math.log(h / stride)]
    row[4] = obj
    for c, p in cls.items():
        row[5 + c] = p
    return row


def _anchor_index(cell: tuple[int, int], stride: int) -> int:
    start = {8: 0, 16: 80 * 80, 32: 80 * 80 + 40 * 40}[stride]
    return start + cell[1] * (640 // stride) + cell[0]


DET_ROWS = [
    # the person (score 0.9 * 0.95)
    (_anchor_index((6, 8), 32), _yolox_row(BOX, (6, 8), 32, 0.9, {0: 0.95})),
    # a near-duplicate with a lower score: suppressed by NMS
    (_anchor_index((12, 17), 16), _yolox_row((102, 84, 198, 330), (12, 17), 16, 0.8, {0: 0.9})),
    # a confident non-person (class 16, dog) with a low person probability: dropped
    (_anchor_index((30, 10), 8), _yolox_row((20, 20, 60, 50), (30, 10), 8, 0.95, {0: 0.05, 16: 0.9})),
    # a second, separate person with score 0.5
    (_anchor_index((3, 3), 16), _yolox_row((10, 10, 60, 150), (3, 3), 16, 0.5, {0: 1.0})),
]

# designed SimCC argmax positions: keypoint k sits on the 5-px lattice of the crop mapping
M = np.array([(k * 7) % 48 for k in range(133)])
N = np.array([(k * 11) % 64 for k in range(133)])
SCORES = np.full(133, 0.9, np.float32)
SCORES[20] = 0.1  # a foot point below the 0.3 threshold
SCORES[100] = 0.0  # a hand point with no response at all


def _graph_io(name: str, shape: list[int]):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _model(nodes, inits, inputs, outputs, name):
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def make_detector(path: Path, rows, in_name="images", out_name="output") -> Path:
    """Raw YOLOX output = scatter of designed rows into zeros, + 0 * mean(image)."""
    idx = np.array([[0, r] for r, _ in rows], dtype=np.int64).reshape(-1, 2)
    upd = np.stack([v for _, v in rows]).astype(np.float32) if rows else np.zeros((0, 85), np.float32)
    zero_value = helper.make_tensor("value", TensorProto.FLOAT, [1], [0.0])
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["zeros"], value=zero_value),
        helper.make_node("ScatterND", ["zeros", "idx", "upd"], ["raw"]),
        helper.make_node("ReduceMean", [in_name], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["raw", "nothing"], [out_name]),
    ]
    inits = [
        numpy_helper.from_array(np.array([1, 8400, 85], np.int64), "shape"),
        numpy_helper.from_array(idx, "idx"),
        numpy_helper.from_array(upd, "upd"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    model = _model(
        nodes, inits, [_graph_io(in_name, [1, 3, 640, 640])], [_graph_io(out_name, [1, 8400, 85])], "det"
    )
    path.write_bytes(model.SerializeToString())
    return path


def make_pose(
    path: Path, scores=SCORES, in_name="input", names=("simcc_x", "simcc_y"), y_first=False
) -> Path:
    """SimCC outputs = one-hot(designed index) * score per keypoint, + 0 * mean(image)."""
    outs = {
        names[0]: (np.array(M * 12, np.int64), 576),
        names[1]: (np.array(N * 12, np.int64), 768),
    }
    order = [names[1], names[0]] if y_first else [names[0], names[1]]
    nodes = [
        helper.make_node("ReduceMean", [in_name], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "onoff"),
        numpy_helper.from_array(np.asarray(scores, np.float32).reshape(1, 133, 1), "scores"),
    ]
    outputs = []
    for name in order:
        index, depth = outs[name]
        inits += [
            numpy_helper.from_array(index.reshape(1, 133), f"{name}_idx"),
            numpy_helper.from_array(np.array(depth, np.int64), f"{name}_depth"),
        ]
        nodes += [
            helper.make_node("OneHot", [f"{name}_idx", f"{name}_depth", "onoff"], [f"{name}_hot"], axis=-1),
            helper.make_node("Mul", [f"{name}_hot", "scores"], [f"{name}_scored"]),
            helper.make_node("Add", [f"{name}_scored", "nothing"], [name]),
        ]
        outputs.append(_graph_io(name, [1, 133, depth]))
    model = _model(nodes, inits, [_graph_io(in_name, [1, 3, 384, 288])], outputs, "pose")
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dwpose")
    make_detector(root / "yolox_l.onnx", DET_ROWS)
    make_pose(root / "dw-ll_ucoco_384.onnx")
    return root


@pytest.fixture(scope="module")
def models(onnx_dir):
    return dwpose.load_dwpose(onnx_dir / "yolox_l.onnx", onnx_dir / "dw-ll_ucoco_384.onnx")


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (IMG_H, IMG_W, 3), dtype=np.uint8)


def _expected_keypoints() -> np.ndarray:
    return OFFSET + np.stack([M, N], axis=1) * 5.0


# ---------------------------------------------------------------------------------------------------


def test_sessions_are_recognised_and_sizes_read_from_them(models, onnx_dir):
    assert dwpose.looks_like_yolox(models.detector)
    assert dwpose.looks_like_rtmpose_wholebody(models.pose)
    assert not dwpose.looks_like_yolox(models.pose)
    assert not dwpose.looks_like_rtmpose_wholebody(models.detector)
    assert models.detector_input_hw == (640, 640)
    assert models.pose_input_hw == (384, 288)
    with pytest.raises(ModelError, match="swapped"):
        dwpose.load_dwpose(onnx_dir / "dw-ll_ucoco_384.onnx", onnx_dir / "yolox_l.onnx")
    with pytest.raises(ModelError, match="not found"):
        dwpose.load_dwpose(onnx_dir / "nope.onnx", onnx_dir / "yolox_l.onnx")


def test_letterbox_pads_with_114_at_the_top_left():
    img = np.full((IMG_H, IMG_W, 3), 7, np.uint8)
    tensor, ratio = dwpose.letterbox(img, (640, 640))
    assert tensor.shape == (1, 3, 640, 640) and tensor.dtype == np.float32
    assert ratio == pytest.approx(RATIO)
    assert np.all(tensor[0, :, :, :426] == 7)  # int(320 * 4/3) = 426 columns of image
    assert np.all(tensor[0, :, :, 427:] == 114)


def test_yolox_decode_grid_nms_and_class_filter():
    raw = np.zeros((1, 8400, 85), np.float32)
    for r, v in DET_ROWS:
        raw[0, r] = v
    boxes, scores = dwpose.decode_yolox(raw, (640, 640), RATIO)
    assert len(boxes) == 2  # duplicate suppressed, dog dropped
    assert boxes[0] == pytest.approx(np.array(BOX), abs=1e-3)
    assert scores[0] == pytest.approx(0.9 * 0.95)
    assert boxes[1] == pytest.approx(np.array([10, 10, 60, 150]), abs=1e-3)
    assert scores[1] == pytest.approx(0.5)


def test_crop_maps_box_centre_to_crop_centre():
    img = np.zeros((IMG_H, IMG_W, 3), np.uint8)
    img[208, 148] = (255, 128, 0)
    img[48 + 5 * 10, 28 + 5 * 6] = (255, 255, 255)  # image (58, 98) ↔ crop (36, 60)
    center, scale = dwpose.box_to_center_scale(BOX, (384, 288))
    assert center == pytest.approx([148, 208]) and scale == pytest.approx([240, 320])
    tensor = dwpose.pose_input(img, center, scale, (384, 288))
    assert tensor.shape == (1, 3, 384, 288)
    expected = (np.array([255, 128, 0]) - dwpose.POSE_MEAN) / dwpose.POSE_STD
    assert tensor[0, :, 192, 144] == pytest.approx(expected, abs=1e-5)
    white = (255 - dwpose.POSE_MEAN) / dwpose.POSE_STD
    assert tensor[0, :, 60, 36] == pytest.approx(white, abs=1e-5)
    black = -dwpose.POSE_MEAN / dwpose.POSE_STD
    assert tensor[0, :, 10, 10] == pytest.approx(black, abs=1e-5)


def test_end_to_end_keypoints_equal_the_designed_ones(models):
    result = dwpose.estimate_wholebody(models, _image())
    assert (result.width, result.height) == (IMG_W, IMG_H)
    assert len(result.people) == 2
    person = result.people[0]
    assert person.box == pytest.approx(BOX, abs=1e-3)
    kp = person.keypoints
    assert kp.shape == (133, 3)
    visible = SCORES > 0
    assert np.max(np.abs(kp[visible, :2] - _expected_keypoints()[visible])) < 1.0
    assert kp[:, 2] == pytest.approx(SCORES)
    assert kp[100, 2] <= 0  # no response: not a point


def test_tensor_names_and_output_order_come_from_the_model(tmp_path):
    det = make_detector(tmp_path / "d.onnx", DET_ROWS, in_name="pixels", out_name="raw_boxes")
    pose = make_pose(tmp_path / "p.onnx", in_name="crop", names=("hx", "hy"), y_first=True)
    models = dwpose.load_dwpose(det, pose)
    kp = dwpose.estimate_wholebody(models, _image()).people[0].keypoints
    assert np.max(np.abs(kp[:17, :2] - _expected_keypoints()[:17])) < 1.0


def test_no_person_is_an_input_error(tmp_path):
    empty = make_detector(tmp_path / "d.onnx", [])
    pose = make_pose(tmp_path / "p.onnx")
    with pytest.raises(InputError) as err:
        dwpose.estimate_wholebody(dwpose.load_dwpose(empty, pose), _image())
    assert err.value.field == "pose_image" and "no person" in str(err.value)


def test_a_box_without_body_keypoints_is_no_person(tmp_path):
    # a "cat": the detector fires but no body point scores 0.3
    det = make_detector(tmp_path / "d.onnx", DET_ROWS)
    weak = make_pose(tmp_path / "p.onnx", scores=np.full(133, 0.2, np.float32))
    with pytest.raises(InputError) as err:
        dwpose.estimate_wholebody(dwpose.load_dwpose(det, weak), _image())
    assert err.value.field == "pose_image"


def test_bad_image_is_an_input_error(models):
    with pytest.raises(InputError, match="RGB image"):
        dwpose.estimate_wholebody(models, np.zeros((10, 10, 5), np.uint8))


# ---------------------------------------------------------------------------------------------------
# OpenPose conversion and JSON
# ---------------------------------------------------------------------------------------------------

COCO_BODY = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee",
    "left_ankle", "right_ankle",
]  # fmt: skip
OPENPOSE_BODY = [
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye", "left_eye",
    "right_ear", "left_ear",
]  # fmt: skip


def _distinct_wholebody() -> np.ndarray:
    kp = np.zeros((133, 3))
    kp[:, 0] = np.arange(133) * 2.0 + 1
    kp[:, 1] = np.arange(133) * 3.0 + 2
    kp[:, 2] = 0.9
    return kp


def test_openpose_conversion_neck_and_order():
    kp = _distinct_wholebody()
    kp[5, 2], kp[6, 2] = 0.8, 0.6
    person = dwpose.wholebody_to_openpose(kp)
    for op_index, name in enumerate(OPENPOSE_BODY):
        if name == "neck":
            assert person.body[op_index, :2] == pytest.approx((kp[5, :2] + kp[6, :2]) / 2)
            assert person.body[op_index, 2] == pytest.approx(0.6)
        else:
            assert person.body[op_index] == pytest.approx(kp[COCO_BODY.index(name)])
    assert person.face == pytest.approx(kp[23:91])
    assert person.left_hand == pytest.approx(kp[91:112])
    assert person.right_hand == pytest.approx(kp[112:133])


def test_openpose_conversion_thresholds_and_caps_scores():
    kp = _distinct_wholebody()
    kp[0, 2] = 0.2  # nose below 0.3
    kp[6, 2] = 0.1  # right shoulder below: neck too
    kp[95, 2] = 3.5  # SimCC maxima can exceed 1
    person = dwpose.wholebody_to_openpose(kp)
    assert np.all(person.body[0] == 0) and np.all(person.body[1] == 0) and np.all(person.body[2] == 0)
    assert person.left_hand[4, 2] == 1.0


def test_json_round_trip(models):
    skeleton = dwpose.to_openpose(dwpose.estimate_wholebody(models, _image()))
    data = json.loads(json.dumps(dwpose.openpose_to_json(skeleton)))
    assert set(data) == {"people", "canvas_width", "canvas_height"}
    person = data["people"][0]
    assert len(person["pose_keypoints_2d"]) == 54 and len(person["face_keypoints_2d"]) == 204
    assert len(person["hand_left_keypoints_2d"]) == 63 == len(person["hand_right_keypoints_2d"])
    back = dwpose.parse_openpose_json(data)
    assert (back.width, back.height) == (IMG_W, IMG_H) and len(back.people) == 2
    for a, b in zip(skeleton.people, back.people, strict=True):
        for part in ("body", "left_hand", "right_hand", "face"):
            assert getattr(b, part) == pytest.approx(getattr(a, part), abs=1e-3)


def test_json_normalised_coordinates_and_body25():
    body = np.zeros((18, 3))
    body[1] = (0.5, 0.25, 1.0)
    body[2] = (0.25, 0.5, 1.0)
    data = {
        "people": [{"pose_keypoints_2d": body.reshape(-1).tolist()}],
        "canvas_width": 200,
        "canvas_height": 400,
    }
    skel = dwpose.parse_openpose_json(data)
    assert skel.people[0].body[1] == pytest.approx([100, 100, 1])
    assert skel.people[0].left_hand is None
    body25 = np.zeros((25, 3))
    body25[8] = (50, 50, 1.0)  # MidHip: dropped
    body25[9] = (60, 70, 1.0)  # RHip → OpenPose-18 index 8
    body25[18] = (5, 6, 0.7)  # LEar → 17
    data = {
        "people": [{"pose_keypoints_2d": body25.reshape(-1).tolist(), "face_keypoints_2d": [0.0] * 210}],
        "canvas_width": 100,
        "canvas_height": 100,
    }
    skel = dwpose.parse_openpose_json(data)
    assert skel.people[0].body[8] == pytest.approx([60, 70, 1])
    assert skel.people[0].body[17] == pytest.approx([5, 6, 0.7])
    assert skel.people[0].face.shape == (68, 3)


def _valid() -> dict:
    body = np.zeros((18, 3))
    body[1] = (50, 60, 1.0)
    return {
        "people": [{"pose_keypoints_2d": body.reshape(-1).tolist()}],
        "canvas_width": 100,
        "canvas_height": 120,
    }


def _with(**changes) -> dict:
    data = _valid()
    data.update(changes)
    return data


def _with_pose(values) -> dict:
    data = _valid()
    data["people"][0]["pose_keypoints_2d"] = values
    return data


BAD_JSON = [
    ([_valid()], "got list"),
    ("people", "got str"),
    (_with(canvas_width=None), "canvas_width"),
    (_with(canvas_height=0), "canvas_height"),
    (_with(canvas_width=1e9), "canvas_width"),
    (_with(people=None), "`people` must be a list"),
    (_with(people=[]), "no person"),
    (_with(people=[3]), r"people\[0\] must be an object"),
    (_with(people=[{}]), "pose_keypoints_2d is missing"),
    (_with_pose([1.0] * 53), "54 or 75 numbers"),
    (_with_pose("1 2 3"), "must be a list"),
    (_with_pose([1.0] * 53 + ["x"]), r"pose_keypoints_2d\[53\] is not a number"),
    (_with_pose([1.0] * 53 + [True]), "is not a number"),
    (_with_pose([1.0] * 53 + [float("nan")]), "not a finite number"),
    (_with_pose([1.0] * 53 + [float("inf")]), "not a finite number"),
    (_with_pose([50.0, 60.0, 1.0] + [1e7, 1e7, 1.0] + [0.0] * 48), "far outside"),
    (_with_pose([50.0, 60.0, -1.0] + [0.0] * 51), "negative score"),
    (_with_pose([0.0] * 54), "no visible point"),
]


@pytest.mark.parametrize(("data", "message"), BAD_JSON)
def test_bad_json_is_an_input_error_naming_the_field(data, message):
    with pytest.raises(InputError, match=message) as err:
        dwpose.parse_openpose_json(data)
    assert err.value.field == "skeleton"
    with pytest.raises(InputError) as err:
        dwpose.parse_openpose_json(data, field="controlnet_units[0].json")
    assert err.value.field == "controlnet_units[0].json"


def test_bad_hand_and_face_lengths():
    data = _valid()
    data["people"][0]["hand_left_keypoints_2d"] = [1.0] * 60
    with pytest.raises(InputError, match="hand_left_keypoints_2d must hold 63"):
        dwpose.parse_openpose_json(data)
    data = _valid()
    data["people"][0]["face_keypoints_2d"] = [1.0] * 66
    with pytest.raises(InputError, match="face_keypoints_2d must hold 204 or 210"):
        dwpose.parse_openpose_json(data)


def test_parsed_skeleton_is_a_drawable_pose_skeleton():
    skel = dwpose.parse_openpose_json(_valid())
    assert isinstance(skel, PoseSkeleton) and isinstance(skel.people[0], PosePerson)
