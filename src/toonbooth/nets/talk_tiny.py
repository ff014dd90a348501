"""A tiny random-weight talking-head model set in the public layouts, so the neural `talk` path runs end to
end without real weights (tests, `toonbooth models make-tiny`, the README's smoke run).

Written like the released files, into an A1111-style models folder:

- `LivePortrait/liveportrait/base_models/{appearance_feature_extractor,motion_extractor,warping_module,
  spade_generator}.pth` and `retargeting_models/stitching_retargeting_module.pth` (tensors only, the
  retargeting file nested with DDP `module.` prefixes), plus `renderer.json` (`input_size` 32: the tiny
  renderer works on 32 px crops instead of 256);
- `JoyVASA/motion_generator/motion_generator_hubert_chinese.pt` (`{'model': state_dict, 'args': Namespace}`,
  without HuBERT weights) and `JoyVASA/motion_template/motion_template.pkl` (a dict of numpy arrays);
- `HuBERT/chinese-hubert-base/` (a transformers `save_pretrained` folder of a 2-layer HuBERT).

The motion template is chosen so the random generator's output stays small: expression std 0.01, pose
ranges of a few degrees, scale near 1 — the frames are noise inside the face crop, but every shape, count,
file layout and loader is the real one.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
import torch

from .joyvasa import JoyVASAConfig, build_hubert, build_joyvasa, save_joyvasa, tiny_hubert_config
from .liveportrait import (
    RENDERER_SETTINGS_FILE,
    LivePortraitConfig,
    LivePortraitFiles,
    build_liveportrait,
    save_liveportrait,
)

TINY_INPUT_SIZE = 32
LIVEPORTRAIT_NAME = "liveportrait"
JOYVASA_NAME = "motion_generator_hubert_chinese"
HUBERT_NAME = "chinese-hubert-base"


def tiny_motion_template(num_kp: int = 21) -> dict[str, np.ndarray]:
    """Template stats (the reference's pickle keys) that keep a random generator's motion small."""
    f = np.float32
    return {
        "mean_exp": np.zeros(3 * num_kp, f),
        "std_exp": np.full(3 * num_kp, 0.01, f),
        "min_scale": np.array([0.95], f), "max_scale": np.array([1.05], f),
        "min_t": np.array([-0.02, -0.02, 0.0], f), "max_t": np.array([0.02, 0.02, 0.0], f),
        "min_pitch": np.array([-5.0], f), "max_pitch": np.array([5.0], f),
        "min_yaw": np.array([-5.0], f), "max_yaw": np.array([5.0], f),
        "min_roll": np.array([-3.0], f), "max_roll": np.array([3.0], f),
    }  # fmt: skip


def write_tiny_talk_set(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write the tiny LivePortrait / JoyVASA / HuBERT set under the models folder `root`; returns what was
    written (name -> path)."""
    root = Path(root)
    lp_root = root / "LivePortrait" / LIVEPORTRAIT_NAME
    renderer = build_liveportrait(LivePortraitConfig.tiny(), seed=seed)
    save_liveportrait(renderer, LivePortraitFiles.public_layout(lp_root, ".pth"))
    (lp_root / RENDERER_SETTINGS_FILE).write_text(f'{{"input_size": {TINY_INPUT_SIZE}}}\n', encoding="utf-8")

    hubert_dir = root / "HuBERT" / HUBERT_NAME
    hubert = build_hubert(tiny_hubert_config(), seed=seed)
    hubert.save_pretrained(str(hubert_dir))

    jv_root = root / "JoyVASA"
    generator = build_joyvasa(JoyVASAConfig.tiny(), None, seed=seed)
    gen_path = jv_root / "motion_generator" / f"{JOYVASA_NAME}.pt"
    save_joyvasa(generator, gen_path)
    template_path = jv_root / "motion_template" / "motion_template.pkl"
    template_path.parent.mkdir(parents=True, exist_ok=True)
    with open(template_path, "wb") as fh:
        pickle.dump(tiny_motion_template(), fh)
    # a reference-style checkpoint's `args` is an argparse.Namespace: check it reads back weights_only
    with torch.serialization.safe_globals([argparse.Namespace]):
        torch.load(str(gen_path), map_location="cpu", weights_only=True)
    return {
        "liveportrait": lp_root,
        "joyvasa": gen_path,
        "motion_template": template_path,
        "hubert": hubert_dir,
    }
