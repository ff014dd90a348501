"""Talking emoticon: frames per second of the classic renderer and of the neural renderer (LivePortrait warp +
decode, with the JoyVASA sampling time per denoising step), against LivePortrait's published speed.

- classic: `vision.talk_classic.iter_talk_frames` on the sample face (FFHQ-aligned, classic toon, 512 px)
  speaking `assets/sample_voice.wav` (4.1 s, 104 frames), warm-up then `--runs` timed passes; the real-time
  factor is (frames / fps) / wall time.
- neural, CPU, tiny: the tiny LivePortrait / JoyVASA / HuBERT set (`nets.talk_tiny`, input 32 px) loaded
  through the families, frames/s of `LivePortrait.animate` + paste-back, ms per JoyVASA denoising step.
- neural, full-size random weights (`--full-size`, slow): the released network sizes (130.1 M parameters)
  with random weights at 256 px input, seconds per frame on this device — the number that matters for a
  real run, without the real weights.
- published: 14.8 ms/frame for LivePortrait on an RTX 4090 with torch.compile (KwaiVGI/LivePortrait
  `assets/docs/speed.md`, studios.md B7). Not measured on a GPU here unless `--device cuda` is given on a
  machine that has one.

Prints one JSON object.

    .venv/bin/python bench/talk.py --runs 3
    .venv/bin/python bench/talk.py --full-size --device cuda   # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT / "assets" / "sample_face.png"
VOICE = ROOT / "assets" / "sample_voice.wav"
PUBLISHED_MS_PER_FRAME = 14.8
SR = 16000


def load_voice() -> np.ndarray:
    from toonbooth.core.audio import load_audio

    return load_audio(VOICE, field="voice", target_rate=SR, max_bytes=20 << 20, max_duration_s=30).samples


def work_face(size: int = 512):
    from toonbooth.core.specs import TalkSpec
    from toonbooth.engines.talk import align_stage, toon_stage

    spec = TalkSpec(face="x" * 8, voice="y" * 8, size=size)
    face = align_stage(Image.open(FACE), spec)
    face, _ = toon_stage(spec, face)
    return face


def bench_classic(runs: int) -> dict:
    from toonbooth.vision.talk_classic import ClassicTalkSettings, iter_talk_frames, plan_talk

    face, voice = work_face(), load_voice()
    s = ClassicTalkSettings()
    plan = plan_talk(voice, SR, face.landmarks, s)
    list(iter_talk_frames(face.rgb, face.landmarks, voice, SR, s, plan))  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        n = sum(1 for _ in iter_talk_frames(face.rgb, face.landmarks, voice, SR, s, plan))
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"frames": n, "size": 512, "median_s": round(med, 3), "fps": round(n / med, 1),
            "realtime_factor": round(n / 25 / med, 2), "runs": runs}  # fmt: skip


def _render_fps(renderer, face, voice_kp: int, device: str, input_size: int, frames: int) -> dict:
    import cv2
    import torch

    from toonbooth.nets.liveportrait import (
        crop_matrix_from_landmarks68,
        image_to_tensor,
        paste_back,
        transform_keypoint,
    )

    m = crop_matrix_from_landmarks68(face.landmarks, dsize=2 * input_size)
    crop = cv2.warpAffine(face.rgb, m, (2 * input_size, 2 * input_size), flags=cv2.INTER_AREA)
    x = image_to_tensor(crop, input_size).to(device)
    f_s = renderer.extract_feature_3d(x)
    info = renderer.get_kp_info(x)
    x_s = transform_keypoint(info)
    x_d = x_s + 0.01 * torch.randn((frames, *x_s.shape[1:]), generator=torch.Generator().manual_seed(0)).to(
        device
    )

    def run(n: int) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for out in renderer.animate(f_s, x_s, x_d[:n], batch_size=4):
            paste_back(out, crop_matrix_from_landmarks68(face.landmarks, dsize=out.shape[0]), face.rgb)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    run(min(4, frames))  # warm-up
    dt = run(frames)
    return {
        "frames": frames,
        "input": input_size,
        "s_per_frame": round(dt / frames, 4),
        "fps": round(frames / dt, 2),
    }


def bench_tiny(device: str, frames: int) -> dict:
    from toonbooth.core.settings import Settings
    from toonbooth.nets.joyvasa import generate_motion
    from toonbooth.nets.talk_tiny import write_tiny_talk_set
    from toonbooth.runtime.families import model_manager

    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_talk_set(tmp)
        models = model_manager(Settings(home=tmp, models_dir=tmp, device=device))
        renderer = models.load("liveportrait", "liveportrait")
        joy = models.load("joyvasa", "motion_generator_hubert_chinese",
                          hubert_path=str(models.path("hubert", "chinese-hubert-base")))  # fmt: skip
        face, voice = work_face(), load_voice()
        steps = 0

        def tick(_d, _t):
            nonlocal steps
            steps += 1

        t0 = time.perf_counter()
        motion = generate_motion(joy.model, voice, SR, joy.template, steps=5, seed=0, on_step=tick)
        dt = time.perf_counter() - t0
        out = _render_fps(renderer, face, 0, device, int(renderer.input_size), frames)
        out["joyvasa"] = {
            "frames": motion.n_frames,
            "steps_total": steps,
            "ms_per_step": round(1000 * dt / steps, 1),
        }
        return out


def bench_full_size(device: str, frames: int) -> dict:
    import torch

    from toonbooth.nets.liveportrait import build_liveportrait

    renderer = build_liveportrait(seed=0).to(device)
    n_params = sum(p.numel() for p in renderer.parameters())
    with torch.inference_mode():
        out = _render_fps(renderer, work_face(), 0, device, 256, frames)
    out["parameters_m"] = round(n_params / 1e6, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tiny-frames", type=int, default=16)
    ap.add_argument("--full-size", action="store_true", help="also time the full-size renderer (slow on CPU)")
    ap.add_argument("--full-frames", type=int, default=2)
    ap.add_argument(
        "--threads", type=int, default=1,
        help="torch / OpenCV threads (1: on a CPU shared with other processes more threads spin and run slower)",
    )  # fmt: skip
    args = ap.parse_args()
    import cv2
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    result = {
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),  # other processes sharing the CPU
        "classic": bench_classic(args.runs),
        "neural_tiny": bench_tiny(args.device, args.tiny_frames),
    }
    if args.full_size:
        result["neural_full_size_random"] = bench_full_size(args.device, args.full_frames)
    measured_gpu = args.device.startswith("cuda") and "neural_full_size_random" in result
    result["published"] = {
        "liveportrait_ms_per_frame": PUBLISHED_MS_PER_FRAME,
        "where": "RTX 4090, torch.compile (KwaiVGI/LivePortrait assets/docs/speed.md)",
        "ours_on_gpu": (
            round(1000 * result["neural_full_size_random"]["s_per_frame"], 2) if measured_gpu
            else "not measured on GPU here"
        ),
    }  # fmt: skip
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
