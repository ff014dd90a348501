"""The memoji recipe on REAL weights: runs only where `TOONBOOTH_REAL_WEIGHTS` names a models folder
(A1111 layout) holding the recipe's files (`toonbooth models pull memoji` + the memoji LoRA), e.g.

    TOONBOOTH_REAL_WEIGHTS=~/stable-diffusion-webui/models .venv/bin/python -m pytest -m realweights

It takes the same code path as every user: registry scan, single-file loading with the local config
folder, LoRA by name, the two passes. No machine of this project's CI has the weights, so it is skipped
there (and says so)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.realweights
REAL = os.environ.get("TOONBOOTH_REAL_WEIGHTS")


@pytest.mark.skipif(not REAL, reason="TOONBOOTH_REAL_WEIGHTS is not set (no real model weights on this machine)")
def test_memoji_recipe_on_real_weights(tmp_path, sample_photo_path):
    from toonbooth.core.images import read_png_parameters
    from toonbooth.core.settings import Settings
    from toonbooth.core.specs import AvatarSpec
    from toonbooth.models.manager import ModelManager
    from toonbooth.runtime.context import JobContext
    from toonbooth.runtime.execute import execute
    from toonbooth.runtime.storage_local import LocalStorage

    settings = Settings(home=tmp_path, models_dir=Path(REAL).expanduser(), data_dir=tmp_path / "data")
    storage = LocalStorage(settings.resolved_data_dir)
    buf = io.BytesIO()
    Image.open(sample_photo_path).convert("RGB").save(buf, "PNG")
    spec = AvatarSpec(image=storage.put(buf.getvalue()), backend="neural",
                      steps=int(os.environ.get("TOONBOOTH_REAL_STEPS", "50")))
    out = execute(spec, JobContext(settings, ModelManager(settings), storage))
    assert out.backend == "neural"
    final = out.output("avatar")
    assert (final.width, final.height) == (768, 768)  # the 512x512 sample at 1.5x
    params = read_png_parameters(storage.local_path(final.ref))
    assert params.startswith("emoji, unspecified, smiling <lora:")
    assert "Sampler: DDIM" in params and "Seed: 2968506678" in params and "Model hash: " in params
