"""Resumable training checkpoints without pickle: tensors in safetensors, the rest in JSON.

What accelerate's `save_state` keeps, in our own layout (`<work>/checkpoint-<step>/`):
`trainable.safetensors` (the trained tensors by name), `optimizer.safetensors` + the JSON part of the
optimizer state, the lr-scheduler and grad-scaler state, the RNG states (the training generator, torch's
CPU and CUDA generators) and the data position. `state.json` is written last and the folder is renamed
into place, so a half-written checkpoint is never picked up. Only the newest checkpoint is kept.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..core.fs import atomic_directory

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
FORMAT = "toonbooth-train-checkpoint-1"


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for idx, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, entries in info["plain"].items():
        state.setdefault(int(idx), {}).update(entries)
    return {"state": state, "param_groups": info["param_groups"]}


def save_checkpoint(
    work_dir: Path,
    step: int,
    *,
    trainables: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    scaler: Any | None,
    generator: torch.Generator,
    extra: dict[str, Any],
) -> Path:
    """Write `checkpoint-<step>` atomically and delete older ones."""
    work_dir.mkdir(parents=True, exist_ok=True)
    final = work_dir / f"checkpoint-{step}"
    with atomic_directory(final) as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in trainables.items()},
            str(tmp / "trainable.safetensors"),
        )
        opt_tensors, opt_info = _flatten_optimizer(optimizer.state_dict())
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        rng: dict[str, torch.Tensor] = {
            "generator": generator.get_state(),
            "torch_cpu": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"cuda.{i}"] = s
        save_file(rng, str(tmp / "rng.safetensors"))
        state = {
            "format": FORMAT,
            "step": step,
            "optimizer": opt_info,
            "lr_scheduler": lr_scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "extra": extra,
        }
        (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
    for old in work_dir.iterdir():
        m = CHECKPOINT_RE.match(old.name)
        # older checkpoints, and temporary folders a killed run left behind (`.checkpoint-<step>.<random>.tmp`)
        if (m and int(m.group(1)) != step) or old.name.startswith(".checkpoint-"):
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(work_dir: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    if not work_dir.is_dir():
        return None
    found = []
    for p in work_dir.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m and (p / "state.json").is_file():
            found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


def read_state(path: Path) -> dict[str, Any]:
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    if state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} checkpoint")
    return state


def load_checkpoint(
    path: Path,
    *,
    trainables: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    scaler: Any | None,
    generator: torch.Generator,
) -> dict[str, Any]:
    """Restore everything `save_checkpoint` wrote into live objects; returns the state (step, extra)."""
    state = read_state(path)
    saved = load_file(str(path / "trainable.safetensors"))
    if set(saved) != set(trainables):
        raise ValueError(
            f"{path}: trained tensors differ from this run's ({len(saved)} vs {len(trainables)})"
        )
    with torch.no_grad():
        for name, tensor in trainables.items():
            tensor.copy_(saved[name].to(tensor.device, tensor.dtype))
    opt_tensors = load_file(str(path / "optimizer.safetensors"))
    optimizer.load_state_dict(_unflatten_optimizer(opt_tensors, state["optimizer"]))
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    rng = load_file(str(path / "rng.safetensors"))
    generator.set_state(rng["generator"])
    torch.set_rng_state(rng["torch_cpu"])
    cuda = [rng[f"cuda.{i}"] for i in range(len([k for k in rng if k.startswith("cuda.")]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    return state


def clear_checkpoints(work_dir: Path) -> None:
    for p in work_dir.iterdir() if work_dir.is_dir() else []:
        if CHECKPOINT_RE.match(p.name) or p.name.startswith(".checkpoint-"):
            shutil.rmtree(p, ignore_errors=True)
