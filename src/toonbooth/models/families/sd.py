"""Stable Diffusion families (SD1.5 / SDXL): checkpoints, ControlNets, LoRAs, textual-inversion embeddings,
VAEs — the files of an AUTOMATIC1111 `models/` folder, told apart by their tensor names and shapes
(`models.probe.classify`), loaded with diffusers (single files with a local config folder, diffusers
folders, or hub ids already in the local cache)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...core.errors import ModelError
from .. import loader
from .base import LoadEnv, ModelFamily

if TYPE_CHECKING:
    from ..registry import ModelEntry

SD_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")


def load_checkpoint(entry: ModelEntry, env: LoadEnv) -> Any:
    """The checkpoint's img2img pipeline (its inpaint pipeline for 9-channel inpainting checkpoints):
    the base every SD pipeline of a job is composed from. Single files need `<config_dir>/<arch>` (or
    `<arch>-inpainting`)."""
    from diffusers import (
        StableDiffusionImg2ImgPipeline,
        StableDiffusionInpaintPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLInpaintPipeline,
    )

    if entry.arch not in ("sd15", "sdxl"):
        raise ModelError(f"checkpoint {entry.name!r} is {entry.arch}: only SD1.5 and SDXL pipelines load here")
    sdxl = entry.arch == "sdxl"
    if entry.inpainting:
        cls = StableDiffusionXLInpaintPipeline if sdxl else StableDiffusionInpaintPipeline
        config_name = f"{entry.arch}-inpainting"
    else:
        cls = StableDiffusionXLImg2ImgPipeline if sdxl else StableDiffusionImg2ImgPipeline
        config_name = entry.arch
    config = env.registry.config_folder(config_name) if entry.source == "folder" else None
    pipe = loader.load_pipeline(
        cls, source=entry.source, path=entry.location, config_folder=config, torch_dtype=env.dtype,
        offline=env.offline,
    )  # fmt: skip
    pipe.to(env.device)
    pipe.set_progress_bar_config(disable=True)
    pipe._toonbooth_scheduler_config = dict(pipe.scheduler.config)
    pipe._toonbooth_loras = {}
    return pipe


def load_controlnet(entry: ModelEntry, env: LoadEnv, *, unet_config: dict[str, Any] | None = None) -> Any:
    """A ControlNetModel. Diffusers-layout single files are built from `unet_config` (the base model's UNet
    config) plus what their keys say; original-layout files read `<config_dir>/controlnet-<arch>` when it
    exists, else the base architecture's config folder."""
    config = None
    subfolder: str | None = "unet"
    if entry.source == "folder" and entry.layout != "diffusers":
        own = env.registry.config_dir / f"controlnet-{entry.arch}"
        if (own / "config.json").is_file():
            config, subfolder = own, None
        else:
            config = env.registry.config_folder(entry.arch)
    model = loader.load_controlnet(
        source=entry.source, path=entry.location, layout=entry.layout, unet_config=unet_config,
        config_folder=config, torch_dtype=env.dtype, offline=env.offline, config_subfolder=subfolder,
    )  # fmt: skip
    return model.to(env.device)


def load_embedding_file(entry: ModelEntry, env: LoadEnv) -> Any:
    """A textual-inversion embedding (`models.embeddings.TextualInversion`) and its warnings."""
    from ..embeddings import load_embedding

    if entry.path is None:
        raise ModelError(f"embedding {entry.name!r} is not a local file")
    return load_embedding(entry.path, entry.name)


def load_vae(entry: ModelEntry, env: LoadEnv, *, arch: str = "sd15") -> Any:
    """A VAE (`AutoencoderKL`) for checkpoints of `arch` (also loaded on its own by studios that assemble their
    pipeline, e.g. AnimateAnyone with sd-vae-ft-mse) (SD1.5 and SDXL VAEs share one architecture; the
    architecture's config — scaling factor, upcast — comes from `<config_dir>/<arch>/vae`). Single files in
    the original (LDM) or diffusers key layout, `first_stage_model.`-prefixed or not, and diffusers folders."""
    import torch
    from diffusers import AutoencoderKL

    if entry.source in ("diffusers-folder", "hub"):  # a hub id only from the local hub cache (never downloads)
        try:
            vae = AutoencoderKL.from_pretrained(entry.location, torch_dtype=env.dtype, local_files_only=True)
        except Exception as exc:
            raise ModelError(f"cannot load VAE {entry.location}: {type(exc).__name__}: {exc}") from exc
        return vae.to(env.device).eval().requires_grad_(False)
    if entry.path is None:
        raise ModelError(f"VAE {entry.name!r} is not a local file")
    if entry.path.suffix.lower() not in (".safetensors", ".sft"):
        raise ModelError(f"VAE {entry.name!r}: only .safetensors VAE files are loaded (never pickles)")
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from safetensors.torch import load_file

    folder = env.registry.config_folder(arch) / "vae"
    config = AutoencoderKL.load_config(str(folder))
    state = load_file(str(entry.path))
    if any(k.startswith("first_stage_model.") for k in state):
        state = {k[len("first_stage_model."):]: v for k, v in state.items() if k.startswith("first_stage_model.")}
    if entry.layout != "diffusers":
        state = convert_ldm_vae_checkpoint({f"first_stage_model.{k}": v for k, v in state.items()}, config)
    vae = AutoencoderKL.from_config(config)
    missing, unexpected = vae.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(
            f"VAE {entry.name!r} does not fit the {arch} VAE config (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]})"
        )
    return vae.to(device=env.device, dtype=env.dtype if env.dtype is not None else torch.float32).eval().requires_grad_(False)


CHECKPOINT = ModelFamily(
    kind="checkpoint",
    description="Stable Diffusion 1.5 / SDXL checkpoint (UNet + VAE + text encoders)",
    folders=("Stable-diffusion",),
    suffixes=SD_SUFFIXES,
    load=load_checkpoint,
    approx_bytes=6_940_000_000,
)
CONTROLNET = ModelFamily(
    kind="controlnet",
    description="ControlNet (original or diffusers layout)",
    folders=("ControlNet", "controlnet"),
    suffixes=SD_SUFFIXES,
    load=load_controlnet,
    approx_bytes=2_500_000_000,
)
LORA = ModelFamily(
    kind="lora",
    description="LoRA / LyCORIS (kohya or PEFT layout); applied to a loaded pipeline as a named adapter",
    folders=("Lora", "LyCORIS"),
    suffixes=SD_SUFFIXES,
    approx_bytes=150_000_000,
)
EMBEDDING = ModelFamily(
    kind="embedding",
    description="Textual-inversion embedding (A1111 / diffusers layout, multi-stage styles)",
    folders=("embeddings",),
    suffixes=SD_SUFFIXES,
    load=load_embedding_file,
    approx_bytes=50_000,
)
VAE = ModelFamily(
    kind="vae",
    description="VAE (SD1.5 / SDXL AutoencoderKL; `sd_vae` / `vae` replaces the checkpoint's own)",
    folders=("VAE",),
    suffixes=SD_SUFFIXES,
    load=load_vae,
    cache_options=("arch",),
    approx_bytes=335_000_000,
)

SD_FAMILIES = (CHECKPOINT, LORA, CONTROLNET, EMBEDDING, VAE)
