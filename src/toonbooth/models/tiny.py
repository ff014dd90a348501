"""Tiny random-weight versions of the real model classes, built from configs (like diffusers'
`get_dummy_components()`), so every neural code path runs on CPU with no download.

These builders are part of the package (not only the tests): `toonbooth models make-tiny DIR` writes
a complete tiny model set in AUTOMATIC1111 folder layout.

The tiny models keep the structural rules of the real ones (SD 1.5 model card / `v1-inference.yaml`;
SDXL base, Podell et al. 2023, arXiv:2307.01952): x8 VAE with 4 latent channels, SDXL's `text_time`
size/crop conditioning, two text encoders of different widths whose hidden states are concatenated,
ControlNet (Zhang et al. 2023, arXiv:2302.05543) built from the UNet's encoder half. LoRA files follow
PEFT / diffusers and kohya-ss naming; embeddings follow AUTOMATIC1111's textual-inversion safetensors.
"""

from __future__ import annotations

from pathlib import Path

TINY_VOCAB_SIZE = 1000  # >= 256*2 byte tokens + specials; extra ids are unused


def _byte_characters() -> list[str]:
    """The 256 printable stand-ins GPT-2/CLIP byte-level BPE uses for the byte values 0..255.

    Printable Latin-1 bytes stand for themselves; the other bytes are given the code points 256, 257, ...
    in byte order (the scheme of OpenAI's `bytes_to_unicode`, which transformers 5 no longer exports for
    CLIP). Listed like that function's dict values: the printable bytes first, then the stand-ins.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    others = [b for b in range(256) if b not in set(printable)]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def byte_level_vocab() -> dict[str, int]:
    """CLIP byte-level vocabulary of the 256 byte characters and their `</w>` forms, plus specials."""
    chars = _byte_characters()
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def make_tiny_clip_tokenizer(save_dir: str | Path | None = None):
    """An offline CLIPTokenizer (no merges: one token per character), model_max_length=77."""
    from transformers import CLIPTokenizer

    # transformers 5's CLIPTokenizer takes the vocabulary and merges themselves (not file paths)
    tok = CLIPTokenizer(vocab=byte_level_vocab(), merges=[], model_max_length=77, pad_token="<|endoftext|>")
    if save_dir is not None:
        tok.save_pretrained(str(save_dir))
    return tok


def tiny_clip_text_config(
    hidden_size: int = 32, projection_dim: int = 32, vocab_size: int | None = None, num_hidden_layers: int = 5
):
    from transformers import CLIPTextConfig

    vocab = byte_level_vocab()
    return CLIPTextConfig(
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        hidden_size=hidden_size,
        intermediate_size=37,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=num_hidden_layers,
        vocab_size=vocab_size or TINY_VOCAB_SIZE,
        projection_dim=projection_dim,
        hidden_act="gelu",
        max_position_embeddings=77,
    )


def make_tiny_text_encoder(
    hidden_size: int = 32, with_projection: bool = False, seed: int = 0, num_hidden_layers: int = 5
):
    """CLIPTextModel (SD1.5 / SDXL encoder 1) or CLIPTextModelWithProjection (SDXL encoder 2)."""
    import torch
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = tiny_clip_text_config(
        hidden_size=hidden_size, projection_dim=hidden_size, num_hidden_layers=num_hidden_layers
    )
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(cfg).eval()


# ---------------------------------------------------------------------------------------------------------
# Tiny Stable Diffusion 1.5 / SDXL component sets (diffusers `get_dummy_components()` style)
# ---------------------------------------------------------------------------------------------------------

SDXL_TE1_HIDDEN = 32  # CLIP ViT-L stand-in
SDXL_TE2_HIDDEN = 64  # OpenCLIP bigG stand-in; must differ from encoder 1 (see convert.py / report)
SDXL_TE2_LAYERS = (
    10  # >= 10 so `conditioner.embedders.1.model.transformer.resblocks.9` exists (SDXL probe key)
)
SDXL_TIME_EMBED_DIM = 8
SD15_TE_HIDDEN = 32
CONTROLNET_EMBED_CHANNELS = (8, 16, 32, 32)  # 4 entries: x8 hint encoder, like the real ones
SDXL_VAE_SCALING = 0.13025
SD15_VAE_SCALING = 0.18215


def _tiny_vae(scaling_factor: float, seed: int):
    """AutoencoderKL with 4 blocks (x8 down-scale like SD) and 4 latent channels."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=scaling_factor,
    ).eval()


def _ddim_scheduler():
    """DDIM with the values of SD 1.5's / SDXL's `scheduler_config.json`."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )


def build_tiny_sdxl(seed: int = 0) -> dict:
    """Components of a tiny SDXL base model (UNet with `text_time` size/crop conditioning, two encoders)."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        transformer_layers_per_block=1,
        addition_embed_type="text_time",
        addition_time_embed_dim=SDXL_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=6 * SDXL_TIME_EMBED_DIM + SDXL_TE2_HIDDEN,
        cross_attention_dim=SDXL_TE1_HIDDEN + SDXL_TE2_HIDDEN,
        norm_num_groups=32,
    ).eval()
    return {
        "unet": unet,
        "vae": _tiny_vae(SDXL_VAE_SCALING, seed + 1),
        "text_encoder": make_tiny_text_encoder(SDXL_TE1_HIDDEN, with_projection=False, seed=seed + 2),
        "text_encoder_2": make_tiny_text_encoder(
            SDXL_TE2_HIDDEN, with_projection=True, seed=seed + 3, num_hidden_layers=SDXL_TE2_LAYERS
        ),
        "tokenizer": make_tiny_clip_tokenizer(),
        "tokenizer_2": make_tiny_clip_tokenizer(),
        "scheduler": _ddim_scheduler(),
    }


def build_tiny_sd15(seed: int = 0, inpaint: bool = False) -> dict:
    """Components of a tiny SD 1.5 model; `inpaint=True` gives the 9-channel inpainting UNet."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=9 if inpaint else 4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(2, 4),
        cross_attention_dim=SD15_TE_HIDDEN,
        norm_num_groups=32,
    ).eval()
    return {
        "unet": unet,
        "vae": _tiny_vae(SD15_VAE_SCALING, seed + 1),
        "text_encoder": make_tiny_text_encoder(SD15_TE_HIDDEN, with_projection=False, seed=seed + 2),
        "tokenizer": make_tiny_clip_tokenizer(),
        "scheduler": _ddim_scheduler(),
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def build_tiny_controlnet(unet, seed: int = 0, scale: float = 0.1, embed_channels: tuple | None = None):
    """`ControlNetModel.from_unet` with random (non-zero) zero-convs, so the hint visibly changes the output.

    A freshly made ControlNet adds exactly nothing (its zero convolutions and hint `conv_out` are zero); a
    test fixture must. The filled layers are `controlnet_down_blocks`, `controlnet_mid_block` and
    `controlnet_cond_embedding.conv_out`, drawn N(0, scale^2) from `seed`.
    """
    import torch
    from diffusers import ControlNetModel

    channels = embed_channels or CONTROLNET_EMBED_CHANNELS
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels)
    gen = torch.Generator().manual_seed(seed)
    modules = [*cn.controlnet_down_blocks, cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out]
    with torch.no_grad():
        for mod in modules:
            for p in (mod.weight, mod.bias):
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return cn.eval()


ARCH_PIPELINES = {"sdxl": "StableDiffusionXLPipeline", "sd15": "StableDiffusionPipeline"}


def _check_arch(arch: str) -> None:
    from toonbooth.core.errors import InputError

    if arch not in ARCH_PIPELINES:
        raise InputError("arch", f"must be one of {sorted(ARCH_PIPELINES)}, got {arch!r}", arch)


def make_pipeline(components: dict, arch: str):
    """The txt2img pipeline (`StableDiffusionXLPipeline` / `StableDiffusionPipeline`) over `components`."""
    import diffusers

    _check_arch(arch)
    return getattr(diffusers, ARCH_PIPELINES[arch])(**components)


def save_diffusers_folder(components: dict, directory: str | Path, arch: str = "sdxl") -> Path:
    """A complete diffusers folder (model_index.json, configs, tokenizers, safetensors weights)."""
    directory = Path(directory)
    make_pipeline(components, arch).save_pretrained(str(directory), safe_serialization=True)
    return directory


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".h5", ".onnx")


def save_config_folder(components: dict, directory: str | Path, arch: str = "sdxl") -> Path:
    """The same folder as `save_diffusers_folder` but without weights: what `from_single_file(config=dir)`
    reads offline (model_index.json, each component's config, scheduler config, tokenizer files)."""
    import shutil
    import tempfile

    directory = Path(directory)
    with tempfile.TemporaryDirectory() as tmp:
        save_diffusers_folder(components, tmp, arch)
        for src in sorted(Path(tmp).rglob("*")):
            if src.is_dir() or src.name.endswith(_WEIGHT_SUFFIXES) or src.name.endswith(".index.json"):
                continue
            dst = directory / src.relative_to(tmp)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    return directory


def save_controlnet_config_folder(controlnet, directory: str | Path) -> Path:
    """`config.json` of a ControlNet: `ControlNetModel.from_single_file(path, config=dir)` offline."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    controlnet.save_config(str(directory))
    return directory


# ---------------------------------------------------------------------------------------------------------
# LoRA and textual-inversion fixtures
# ---------------------------------------------------------------------------------------------------------

LORA_UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
LORA_TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def write_tiny_lora(
    unet,
    path: str | Path,
    layout: str = "peft",
    rank: int = 4,
    seed: int = 0,
    text_encoders: dict | None = None,
    arch: str | None = None,
    alpha: float | None = None,
    scale: float = 0.2,
) -> Path:
    """A LoRA with non-zero weights for `unet` (and optionally text encoders) as one `.safetensors` file.

    "peft": what `<Pipeline>.save_lora_weights` writes (`unet.<module>.lora_A.weight`, with the adapter
    config in the metadata); "kohya": the same weights under kohya-ss / A1111 names (see
    `convert.peft_lora_to_kohya`). The same arguments give the same weights in both layouts. `text_encoders`
    maps "text_encoder" / "text_encoder_2" to models that get a LoRA on their attention projections too.
    `arch` defaults from the UNet (`text_time` addition embedding = SDXL). `alpha` defaults to 2*rank, so the
    alpha/rank scale is exercised. The given models are not modified (the LoRA is added to deep copies).
    """
    import copy

    import torch
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    from toonbooth.core.errors import InputError
    from toonbooth.models.convert import peft_lora_to_kohya

    if layout not in ("peft", "kohya"):
        raise InputError("layout", f"must be 'peft' or 'kohya', got {layout!r}", layout)
    if rank < 1:
        raise InputError("rank", f"must be >= 1, got {rank}", rank)
    arch = arch or ("sdxl" if unet.config.addition_embed_type == "text_time" else "sd15")
    _check_arch(arch)
    alpha = float(2 * rank if alpha is None else alpha)
    gen = torch.Generator().manual_seed(seed)

    def lora_state(model, targets) -> tuple[dict, dict]:
        model = copy.deepcopy(model)
        cfg = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(targets))
        # peft's own injection: transformers' `add_adapter` refuses peft < its MIN_PEFT_VERSION
        inject_adapter_in_model(cfg, model)
        with torch.no_grad():
            for name, p in sorted(model.named_parameters()):
                if "lora_A" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) / rank)
                elif "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * scale)
        sd = get_peft_model_state_dict(model, adapter_name="default")
        meta = cfg.to_dict()
        return {k: v.detach().clone() for k, v in sd.items()}, meta

    layers: dict[str, dict] = {}
    metas: dict[str, dict] = {}
    layers["unet"], metas["unet"] = lora_state(unet, LORA_UNET_TARGETS)
    allowed = ("text_encoder", "text_encoder_2") if arch == "sdxl" else ("text_encoder",)
    for name, te in sorted((text_encoders or {}).items()):
        if name not in allowed:
            raise InputError("text_encoders", f"keys must be among {list(allowed)}, got {name!r}", name)
        layers[name], metas[name] = lora_state(te, LORA_TE_TARGETS)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "peft":
        import diffusers

        pipe_cls = getattr(diffusers, ARCH_PIPELINES[arch])
        kwargs = {"unet_lora_layers": layers["unet"], "unet_lora_adapter_metadata": metas["unet"]}
        for name in ("text_encoder", "text_encoder_2"):
            if name in layers:
                kwargs[f"{name}_lora_layers"] = layers[name]
                kwargs[f"{name}_lora_adapter_metadata"] = metas[name]
        pipe_cls.save_lora_weights(str(path.parent), weight_name=path.name, **kwargs)
    else:
        from safetensors.torch import save_file

        flat = {f"{comp}.{k}": v for comp, sd in layers.items() for k, v in sd.items()}
        kohya = peft_lora_to_kohya(flat, unet.config, arch, alphas=alpha)
        meta = {
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(rank),
            "ss_network_alpha": str(alpha),
        }
        save_file(kohya, str(path), metadata=meta)
    return path


def write_tiny_embedding(
    path: str | Path,
    arch: str,
    token_count: int = 2,
    hidden_size: int | None = None,
    hidden_size_2: int | None = None,
    seed: int = 0,
) -> Path:
    """A textual-inversion embedding in AUTOMATIC1111's safetensors layouts.

    SD 1.5: one tensor `emb_params` (token_count x hidden). SDXL: `clip_l` (encoder 1) and `clip_g`
    (encoder 2). Hidden sizes default to the tiny models'.
    """
    import torch
    from safetensors.torch import save_file

    from toonbooth.core.errors import InputError

    _check_arch(arch)
    if token_count < 1:
        raise InputError("token_count", f"must be >= 1, got {token_count}", token_count)
    gen = torch.Generator().manual_seed(seed)
    if arch == "sd15":
        tensors = {"emb_params": torch.randn(token_count, hidden_size or SD15_TE_HIDDEN, generator=gen) * 0.5}
    else:
        tensors = {
            "clip_l": torch.randn(token_count, hidden_size or SDXL_TE1_HIDDEN, generator=gen) * 0.5,
            "clip_g": torch.randn(token_count, hidden_size_2 or SDXL_TE2_HIDDEN, generator=gen) * 0.5,
        }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


# ---------------------------------------------------------------------------------------------------------
# A whole tiny model set in AUTOMATIC1111 folder layout
# ---------------------------------------------------------------------------------------------------------


# The seed's own file names (My Memoji README and client) -> the tiny file standing in for each
SEED_NAMES: dict[str, tuple[str, str]] = {
    "seed-checkpoint": ("Stable-diffusion/tiny-sdxl.safetensors", "Stable-diffusion/samaritan3dCartoon_v40SDXL.safetensors"),
    "seed-controlnet": ("ControlNet/tiny-sdxl-canny.safetensors", "ControlNet/diffusers_xl_canny_full.safetensors"),
    "seed-lora": ("Lora/tiny-memoji.safetensors", "Lora/memoji-07.safetensors"),
}


def write_seed_names(models_dir: str | Path) -> dict[str, Path]:
    """Give the tiny SDXL checkpoint, canny ControlNet and memoji LoRA the seed's own file names too
    (hard links where the file system allows, else copies), so the seed's client — which asks for
    `samaritan3dCartoon_v40SDXL.safetensors`, `diffusers_xl_canny_full` and `<lora:memoji:1>` — runs on them."""
    import os
    import shutil

    from toonbooth.core.fs import atomic_path

    root = Path(models_dir)
    out: dict[str, Path] = {}
    for key, (src_rel, dest_rel) in SEED_NAMES.items():
        src, dest = root / src_rel, root / dest_rel
        if not src.is_file():
            raise FileNotFoundError(f"{src} is missing: write the tiny set first")
        if not dest.exists():
            try:
                os.link(src, dest)
            except OSError:
                with atomic_path(dest) as tmp:
                    shutil.copyfile(src, tmp)
        out[key] = dest
    return out


def make_tiny_set(models_dir: str | Path, seed: int = 0, seed_names: bool = False) -> dict[str, Path]:
    """Write a complete tiny model set under `models_dir` (A1111 `models/` layout) and return name -> path.

    Checkpoints are single files in the original layouts; `configs/*` are the weight-less diffusers folders
    that `from_single_file(..., config=...)` needs offline; `diffusers/tiny-sdxl` is a full diffusers folder.
    `seed_names` also writes the seed's own file names (`write_seed_names`).
    """
    from toonbooth.models.convert import write_controlnet_single_file, write_single_file

    root = Path(models_dir)
    sdxl = build_tiny_sdxl(seed)
    sd15 = build_tiny_sd15(seed)
    sd15_inpaint = build_tiny_sd15(seed, inpaint=True)
    cn_sdxl = build_tiny_controlnet(sdxl["unet"], seed=seed + 10)
    cn_sd15 = build_tiny_controlnet(sd15["unet"], seed=seed + 11)

    out: dict[str, Path] = {}
    sd_dir = root / "Stable-diffusion"
    out["sdxl"] = write_single_file(sdxl, sd_dir / "tiny-sdxl.safetensors", "sdxl")
    out["sd15"] = write_single_file(sd15, sd_dir / "tiny-sd15.safetensors", "sd15")
    out["sd15-inpainting"] = write_single_file(
        sd15_inpaint, sd_dir / "tiny-sd15-inpainting.safetensors", "sd15"
    )
    out["controlnet-sdxl-canny"] = write_controlnet_single_file(
        cn_sdxl, root / "ControlNet" / "tiny-sdxl-canny.safetensors", layout="diffusers"
    )
    out["controlnet-sd15-canny"] = write_controlnet_single_file(
        cn_sd15, root / "ControlNet" / "tiny-sd15-canny.safetensors", layout="original"
    )
    out["lora-memoji"] = write_tiny_lora(
        sdxl["unet"], root / "Lora" / "tiny-memoji.safetensors", layout="kohya", seed=seed + 20
    )
    out["lora-sdxl-style-peft"] = write_tiny_lora(
        sdxl["unet"], root / "Lora" / "tiny-sdxl-style-peft.safetensors", layout="peft", seed=seed + 21
    )
    out["lora-sd15-style"] = write_tiny_lora(
        sd15["unet"], root / "Lora" / "tiny-sd15-style.safetensors", layout="kohya", seed=seed + 22
    )
    out["embedding-sd15"] = write_tiny_embedding(
        root / "embeddings" / "tiny-sd15-emb.safetensors", "sd15", seed=seed
    )
    out["embedding-sdxl"] = write_tiny_embedding(
        root / "embeddings" / "tiny-sdxl-emb.safetensors", "sdxl", seed=seed
    )
    out["config-sdxl"] = save_config_folder(sdxl, root / "configs" / "sdxl", "sdxl")
    out["config-sd15"] = save_config_folder(sd15, root / "configs" / "sd15", "sd15")
    out["config-sd15-inpainting"] = save_config_folder(
        sd15_inpaint, root / "configs" / "sd15-inpainting", "sd15"
    )
    out["config-controlnet-sdxl"] = save_controlnet_config_folder(
        cn_sdxl, root / "configs" / "controlnet-sdxl"
    )
    out["config-controlnet-sd15"] = save_controlnet_config_folder(
        cn_sd15, root / "configs" / "controlnet-sd15"
    )
    out["diffusers-sdxl"] = save_diffusers_folder(sdxl, root / "diffusers" / "tiny-sdxl", "sdxl")
    if seed_names:
        out.update(write_seed_names(root))
    return out
