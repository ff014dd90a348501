"""Test-wide setup: offline hub, deterministic CPU threads, shared paths."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# tiny models are dominated by per-op overhead: one intra-op thread is faster on 2 cores and keeps the
# server subprocesses of the API tests from fighting the test process for the CPU
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest
import torch

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_PHOTO = REPO_ROOT / "assets" / "sample_face.png"


@pytest.fixture(scope="session")
def sample_photo_path() -> Path:
    return SAMPLE_PHOTO


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    """A complete tiny model set in A1111 layout, written once per test run."""
    from toonbooth.models.tiny import make_tiny_set

    root = tmp_path_factory.mktemp("tiny-models")
    make_tiny_set(root)
    return root


@pytest.fixture()
def tiny_settings(tiny_models_dir, tmp_path):
    from toonbooth.core.settings import Settings

    return Settings(home=tmp_path / "home", models_dir=tiny_models_dir, data_dir=tmp_path / "data", device="cpu")
