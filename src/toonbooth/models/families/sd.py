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


def load_vae(entry: ModelEntry, env: LoadEnv) -> Any:
    """An AutoencoderKL on its own (studios that assemble their own pipeline, e.g. AnimateAnyone with
    sd-vae-ft-mse): a diffusers folder or hub id, or a single file in the models folder (original layout
    with the SD1.5 config folder's `vae/`, or diffusers layout built from that config)."""
    from diffusers import AutoencoderKL

    try:
        if entry.source == "diffusers-folder":
            vae = AutoencoderKL.from_pretrained(entry.location, local_files_only=True, torch_dtype=env.dtype)
        elif entry.source == "hub":
            vae = AutoencoderKL.from_pretrained(entry.location, local_files_only=env.offline, torch_dtype=env.dtype)
        else:
            config = env.registry.config_folder("sdxl" if entry.arch == "sdxl" else "sd15")
            vae = AutoencoderKL.from_single_file(entry.location, config=str(config), subfolder="vae",
                                                 local_files_only=True, torch_dtype=env.dtype)  # fmt: skip
    except ModelError:
        raise
    except Exception as exc:  # diffusers raises OSError / ValueError / EnvironmentError
        raise ModelError(f"VAE {entry.name!r} ({entry.location}) does not load: {exc}") from exc
    return vae.to(env.device).eval().requires_grad_(False)


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
    description="VAE (loaded on its own by studios that assemble their pipeline; checkpoints bundle theirs)",
    folders=("VAE",),
    suffixes=SD_SUFFIXES,
    load=load_vae,
    approx_bytes=335_000_000,
)

SD_FAMILIES = (CHECKPOINT, LORA, CONTROLNET, EMBEDDING, VAE)
