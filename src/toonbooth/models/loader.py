"""Load diffusers pipelines and models from hub ids, local diffusers folders or single files.

Single files (AUTOMATIC1111 / SGM layouts) go through diffusers' `from_single_file` with
`config=<local diffusers config folder>` and `local_files_only=True`, so loading never reaches out
to a hub (see diffusers `loaders/single_file_utils.py`). ControlNets saved as one file in diffusers
key layout (e.g. lllyasviel's `diffusers_xl_canny_full.safetensors`) are built from the base UNet's
config plus what the keys say, and loaded with `load_state_dict`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core.errors import BackendUnavailableError, ModelError, OfflineError
from ..core.settings import Settings


def resolve_device(settings: Settings):
    import torch

    if settings.device != "auto":
        device = torch.device(settings.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"`device`: {settings.device!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU; "
                "install a CUDA build of torch into .venv, or use --device cpu / auto"
            )
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise BackendUnavailableError(
                f"`device`: {settings.device!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise BackendUnavailableError(f"`device`: {settings.device!r} asked for, but MPS is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(settings: Settings, device):
    import torch

    if settings.dtype != "auto":
        return getattr(torch, settings.dtype)
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def is_offline(settings: Settings) -> bool:
    import os

    return settings.offline or os.environ.get("HF_HUB_OFFLINE", "0") in ("1", "true", "True", "YES")


def _wrap_load_error(exc: Exception, what: str, offline: bool) -> Exception:
    text = str(exc)
    if offline or "offline" in text.lower() or "connection" in text.lower() or "resolve" in text.lower():
        return OfflineError(
            f"cannot load {what}: it is not on this machine and the model hub is not reachable "
            f"({type(exc).__name__}: {text[:300]}). Fetch it with `toonbooth models pull`, or put the files "
            "in the models folder."
        )
    return ModelError(f"cannot load {what}: {type(exc).__name__}: {text[:500]}")


def load_pipeline(
    pipeline_cls: Any,
    *,
    source: str,
    path: str,
    config_folder: Path | None,
    torch_dtype: Any,
    offline: bool,
) -> Any:
    """Load `pipeline_cls` from a single file, a local diffusers folder or a hub repo id.

    `source` is the registry entry's source: "folder" (a single file in the models folder),
    "diffusers-folder" or "hub".
    """
    common: dict[str, Any] = {"torch_dtype": torch_dtype}
    if _is_sd_pipeline(pipeline_cls):
        common.update(safety_checker=None, requires_safety_checker=False, feature_extractor=None)
    try:
        if source == "folder":
            if config_folder is None:
                raise ModelError(f"single-file checkpoint {path} needs a local config folder")
            return pipeline_cls.from_single_file(
                str(path), config=str(config_folder), local_files_only=True, **common
            )
        if source == "diffusers-folder":
            return pipeline_cls.from_pretrained(str(path), local_files_only=True, **common)
        if source == "hub":
            return pipeline_cls.from_pretrained(path, local_files_only=offline, **common)
    except (ModelError, OfflineError):
        raise
    except Exception as exc:  # diffusers raises many types (OSError, ValueError, EnvironmentError)
        raise _wrap_load_error(exc, f"{pipeline_cls.__name__} from {path}", offline) from exc
    raise ModelError(f"unknown model source {source!r} for {path}")


def _is_sd_pipeline(cls: Any) -> bool:
    name = cls.__name__
    return name.startswith("StableDiffusion") and "XL" not in name


def load_controlnet(*, source: str, path: str, layout: str, unet_config: dict[str, Any] | None,
                    config_folder: Path | None, torch_dtype: Any, offline: bool,
                    config_subfolder: str | None = "unet") -> Any:
    """Load a ControlNetModel from a single file (diffusers or original layout), a folder or a hub id.

    Original-layout files read their config from `config_folder` / `config_subfolder` (a pipeline folder's
    `unet`, or with `config_subfolder=None` a ControlNet's own config folder)."""
    from diffusers import ControlNetModel

    try:
        if source == "diffusers-folder":
            return ControlNetModel.from_pretrained(str(path), local_files_only=True, torch_dtype=torch_dtype)
        if source == "hub":
            return ControlNetModel.from_pretrained(path, local_files_only=offline, torch_dtype=torch_dtype)
        if layout == "diffusers":
            return _load_diffusers_layout_controlnet(Path(path), unet_config, torch_dtype)
        kwargs: dict[str, Any] = {"torch_dtype": torch_dtype, "local_files_only": True}
        if config_folder is not None:
            kwargs["config"] = str(config_folder)
            if config_subfolder:
                kwargs["subfolder"] = config_subfolder
        return ControlNetModel.from_single_file(str(path), **kwargs)
    except (ModelError, OfflineError):
        raise
    except Exception as exc:
        raise _wrap_load_error(exc, f"ControlNet from {path}", offline) from exc


def _load_diffusers_layout_controlnet(path: Path, unet_config: dict[str, Any] | None, torch_dtype: Any):
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel
    from safetensors import safe_open

    if unet_config is None:
        raise ModelError(f"ControlNet {path.name} is a diffusers-layout single file: a base model config is needed")
    from .convert import controlnet_config_from_state_dict

    with safe_open(str(path), framework="pt") as f:
        shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    config = controlnet_config_from_state_dict(shapes, unet_config)
    with init_empty_weights():
        model = ControlNetModel.from_config(config)
    from safetensors.torch import load_file

    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ModelError(
            f"ControlNet {path.name} does not match its inferred config: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    return model.to(dtype=torch_dtype).eval()


def read_unet_config(config_folder: Path | None, pipe: Any = None) -> dict[str, Any] | None:
    if pipe is not None and getattr(pipe, "unet", None) is not None:
        return dict(pipe.unet.config)
    if config_folder is not None and (config_folder / "unet" / "config.json").is_file():
        return json.loads((config_folder / "unet" / "config.json").read_text())
    return None
