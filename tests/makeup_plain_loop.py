"""The Stable-Makeup img2img loop written out with plain diffusers / transformers calls, independently of
`nets.stable_makeup.run_stable_makeup`: the reference the makeup tests compare pixels with and `bench/makeup.py`
compares speed with (the SSR processors are put into the UNet with diffusers' own `set_attn_processor`).

Steps (shared/research/studios.md §C2): CLIP `hidden_states[2::2]` of the reference and of an all-zero image ->
Resampler (negative, positive); "" through the text encoder for both ControlNets; `int(steps * strength)` steps
from the source's latents noised to the first kept timestep; per step the two ControlNets' residuals summed,
the UNet on the makeup tokens, CFG, the scheduler step; then the VAE decoder.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())[None]


@torch.no_grad()
def plain_makeup_loop(*, unet, vae, text_encoder, tokenizer, scheduler, identity_cn, structure_cn, image_encoder,
                      resampler, ssr_processors: dict, source: Image.Image, structure: Image.Image,
                      reference_pixels: torch.Tensor, steps: int, strength: float, cfg: float, seed: int):  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    original = dict(unet.attn_processors)
    unet.set_attn_processor(dict(ssr_processors))
    try:
        pos = resampler(torch.cat(image_encoder(reference_pixels, output_hidden_states=True).hidden_states[2::2], 1))
        zeros = torch.zeros_like(reference_pixels)
        neg = resampler(torch.cat(image_encoder(zeros, output_hidden_states=True).hidden_states[2::2], 1))
        context = torch.cat([neg, pos])
        ids = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids  # fmt: skip
        text = text_encoder(ids)[0].repeat(2, 1, 1)
        src, struct = to_tensor(source), to_tensor(structure)
        scheduler.set_timesteps(steps)
        t_start = steps - min(int(steps * strength), steps)
        timesteps = scheduler.timesteps[t_start * scheduler.order :]
        latents = vae.encode(src * 2 - 1).latent_dist.sample(g) * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=g)
        latents = scheduler.add_noise(latents, noise, timesteps[:1])
        for t in timesteps:
            x = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            d1, m1 = identity_cn(x, t, encoder_hidden_states=text, controlnet_cond=src.repeat(2, 1, 1, 1),
                                 return_dict=False)  # fmt: skip
            d2, m2 = structure_cn(x, t, encoder_hidden_states=text, controlnet_cond=struct.repeat(2, 1, 1, 1),
                                  return_dict=False)  # fmt: skip
            down = [a + b for a, b in zip(d1, d2, strict=True)]
            eps = unet(x, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                       mid_block_additional_residual=m1 + m2).sample  # fmt: skip
            uncond, cond = eps.chunk(2)
            latents = scheduler.step(uncond + cfg * (cond - uncond), t, latents, eta=0.0, generator=g).prev_sample
        image = (vae.decode(latents / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    finally:
        unet.set_attn_processor(dict(original))
    return Image.fromarray((image[0].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)), len(timesteps)
