"""Guidance hooks on diffusers SD pipelines, as AUTOMATIC1111 and sd-webui-controlnet apply them:
per-unit ControlNet control modes (soft injection, CFG injection) and the masked-content latent fill of
img2img inpainting ("latent noise" / "latent nothing")."""

from __future__ import annotations

from typing import Any

import numpy as np

SOFT_INJECTION_BASE = 0.825  # sd-webui-controlnet / ControlNet "soft injection" per-depth factor


class ControlModeHooks:
    """Per-unit control modes as forward hooks on the ControlNet models (removed by `close`).

    Soft injection multiplies residual j of n (the middle block last) by 0.825^(n-1-j); cfg injection zeroes
    the residuals of the unconditional half of the batch. A model used by several units is called once per
    unit per step, in unit order, so its hook walks through those units' modes in turn."""

    def __init__(self, pipe: Any, models: list[Any], modes: list[str]):
        self._handles = []
        by_model: dict[int, list[str]] = {}
        objects: dict[int, Any] = {}
        for model, mode in zip(models, modes, strict=True):
            by_model.setdefault(id(model), []).append(mode)
            objects[id(model)] = model
        for key, unit_modes in by_model.items():
            if all(m == "Balanced" for m in unit_modes):
                continue
            self._handles.append(objects[key].register_forward_hook(self._hook(pipe, unit_modes)))

    @staticmethod
    def _hook(pipe: Any, modes: list[str]):
        calls = [0]

        def hook(_module, _args, output):
            mode = modes[calls[0] % len(modes)]
            calls[0] += 1
            if mode == "Balanced":
                return output
            down, mid = output[0], output[1]
            n = len(down) + 1
            down = [d * SOFT_INJECTION_BASE ** (n - 1 - j) for j, d in enumerate(down)]
            if mode == "ControlNet is more important" and pipe.do_classifier_free_guidance:
                half = mid.shape[0] // 2
                keep = [0.0] * half + [1.0] * (mid.shape[0] - half)
                down = [d * d.new_tensor(keep).view(-1, 1, 1, 1) for d in down]
                mid = mid * mid.new_tensor(keep).view(-1, 1, 1, 1)
            return (down, mid, *output[2:])

        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def latent_fill_hook(pipe: Any, latmask: np.ndarray, fill: int, seeds_ref: dict[str, list[int]]) -> None:
    """Masked content 2 / 3: replace the init latents inside the latent mask by seeded noise / zeros
    (A1111 img2img `init`). Wraps the pipeline's VAE encoding of the init image (not of the masked image
    that inpainting UNets are conditioned on)."""
    import torch

    encode = pipe._encode_vae_image
    prepare_mask = pipe.prepare_mask_latents
    state = {"conditioning": False}

    def prepare_mask_latents(*args, **kwargs):
        state["conditioning"] = True
        try:
            return prepare_mask(*args, **kwargs)
        finally:
            state["conditioning"] = False

    def encode_init(image, generator=None):
        latents = encode(image=image, generator=generator)
        if state["conditioning"]:
            return latents
        m = torch.from_numpy(latmask).to(latents.device, latents.dtype)[None, None]
        if fill == 3:
            return latents * (1 - m)
        noise = torch.cat([
            torch.randn(latents.shape[1:], generator=torch.Generator("cpu").manual_seed(s))[None]
            for s in seeds_ref["seeds"]
        ]).to(latents.device, latents.dtype)  # fmt: skip
        return latents[:1] * (1 - m) + noise * m

    pipe._encode_vae_image = encode_init
    pipe.prepare_mask_latents = prepare_mask_latents
