"""The pose-change studio on REAL weights: runs only where `TOONBOOTH_REAL_WEIGHTS` names a models folder
holding the `webtoon` recipe (`toonbooth models pull webtoon`), e.g.

    TOONBOOTH_REAL_WEIGHTS=~/.toonbooth/models .venv/bin/python -m pytest -m realweights tests/test_real_weights_pose.py

It settles what the tiny stand-ins cannot: the channel order the real DWPose pair expects (the detector gets
BGR, the pose model RGB: on the sample portrait the nose must land inside the face box), and that the
AnimateAnyone files load into the stock UNets (key checks) and re-pose the sample. Skipped (and says so)
on machines without the weights."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.realweights
REAL = os.environ.get("TOONBOOTH_REAL_WEIGHTS")
SKIP = pytest.mark.skipif(not REAL, reason="TOONBOOTH_REAL_WEIGHTS is not set (no real model weights on this machine)")


def _env(tmp_path):
    from toonbooth.core.settings import Settings
    from toonbooth.runtime.families import model_manager
    from toonbooth.runtime.storage_local import LocalStorage

    settings = Settings(home=tmp_path, models_dir=Path(REAL).expanduser(), data_dir=tmp_path / "data")
    return settings, model_manager(settings), LocalStorage(settings.resolved_data_dir)


@SKIP
def test_dwpose_finds_the_nose_in_the_face(tmp_path, sample_photo_path):
    from toonbooth.nets.dwpose import estimate_wholebody
    from toonbooth.vision.faces import largest_face

    _, models, _ = _env(tmp_path)
    photo = Image.open(sample_photo_path).convert("RGB")
    result = estimate_wholebody(models.load("dwpose", "dwpose"), np.asarray(photo))
    face = largest_face(photo)
    assert face is not None
    nose = max(result.people, key=lambda p: p.body_score).keypoints[0]
    assert nose[2] > 0.3 and face.x0 <= nose[0] <= face.x1 and face.y0 <= nose[1] <= face.y1


@SKIP
def test_animate_anyone_repose_on_real_weights(tmp_path, sample_photo_path):
    from toonbooth.core.specs import parse_job_spec
    from toonbooth.runtime.context import JobContext
    from toonbooth.runtime.execute import execute

    settings, models, storage = _env(tmp_path)
    buf = io.BytesIO()
    Image.open(sample_photo_path).convert("RGB").save(buf, "PNG")
    ref = storage.put(buf.getvalue())
    spec = parse_job_spec({"kind": "repose", "character": ref, "pose_image": ref, "method": "animate_anyone",
                           "backend": "neural", "size": 512, "diffusion": {"steps": 20, "seed": 1}})  # fmt: skip
    out = execute(spec, JobContext(settings, models, storage))
    assert out.backend == "neural" and out.info["method"] == "animate_anyone"
    image = np.asarray(Image.open(storage.local_path(out.output("image").ref)).convert("RGB"), np.float32)
    assert image.shape == (512, 512, 3) and image.std() > 10  # a picture, not a flat field
