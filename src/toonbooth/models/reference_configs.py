"""The real SD 1.5 and SDXL architectures as configs, for benchmarks with random weights.

Numbers from the public model cards / config.json files of stable-diffusion-v1-5 and
stable-diffusion-xl-base-1.0 (UNet, VAE, CLIP ViT-L/14, OpenCLIP ViT-bigG/14). Building these needs
~10 GB (SDXL, fp32) of memory: meant for a GPU machine (`bench/ --size full`), not for tests.
"""

from __future__ import annotations

from typing import Any

SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
}
SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 768,
    "norm_num_groups": 32,
}
VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "norm_num_groups": 32,
}
CLIP_L = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}
CLIP_BIGG = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "projection_dim": 1280,
    "hidden_act": "gelu",
}


def _text_config(spec: dict[str, Any]):
    from transformers import CLIPTextConfig

    from .tiny import byte_level_vocab

    vocab = byte_level_vocab()
    return CLIPTextConfig(
        vocab_size=49408,
        max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        **spec,
    )


def build_full_size(arch: str, seed: int = 0, dtype=None) -> dict[str, Any]:
    """Pipeline components with the real architecture and random weights (tokenizers: the offline
    byte-level tokenizer — token ids differ from CLIP's, which does not matter for speed)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from .tiny import make_tiny_clip_tokenizer

    torch.manual_seed(seed)
    dtype = dtype or torch.float32
    sched = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
    )
    if arch == "sdxl":
        return {
            "unet": UNet2DConditionModel(**SDXL_UNET).to(dtype),
            "vae": AutoencoderKL(**VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True).to(
                dtype
            ),
            "text_encoder": CLIPTextModel(_text_config(CLIP_L)).to(dtype),
            "text_encoder_2": CLIPTextModelWithProjection(_text_config(CLIP_BIGG)).to(dtype),
            "tokenizer": make_tiny_clip_tokenizer(),
            "tokenizer_2": make_tiny_clip_tokenizer(),
            "scheduler": sched,
        }
    if arch == "sd15":
        return {
            "unet": UNet2DConditionModel(**SD15_UNET).to(dtype),
            "vae": AutoencoderKL(**VAE, sample_size=512, scaling_factor=0.18215).to(dtype),
            "text_encoder": CLIPTextModel(_text_config(CLIP_L)).to(dtype),
            "tokenizer": make_tiny_clip_tokenizer(),
            "scheduler": sched,
            "safety_checker": None,
            "feature_extractor": None,
            "requires_safety_checker": False,
        }
    raise ValueError(f"arch must be 'sdxl' or 'sd15', got {arch!r}")


def make_full_size_sdxl_set(models_dir, seed: int = 0, dtype=None) -> dict[str, Any]:
    """A models folder with a full-size random SDXL (diffusers folder), a full ControlNet (diffusers-layout
    single file) and a rank-32 LoRA, named full-sdxl / full-sdxl-canny / full-memoji."""
    from pathlib import Path

    from .convert import write_controlnet_single_file
    from .tiny import build_tiny_controlnet, save_diffusers_folder, write_tiny_lora

    root = Path(models_dir)
    comps = build_full_size("sdxl", seed, dtype)
    out = {"checkpoint": save_diffusers_folder(comps, root / "diffusers" / "full-sdxl", "sdxl")}
    cn = build_tiny_controlnet(comps["unet"], seed=seed + 1, scale=0.01, embed_channels=(16, 32, 96, 256))
    out["controlnet"] = write_controlnet_single_file(cn, root / "ControlNet" / "full-sdxl-canny.safetensors")
    out["lora"] = write_tiny_lora(
        comps["unet"],
        root / "Lora" / "full-memoji.safetensors",
        layout="kohya",
        rank=32,
        seed=seed + 2,
        scale=0.01,
    )
    return out
