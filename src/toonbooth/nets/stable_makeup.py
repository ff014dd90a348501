"""Stable-Makeup on an SD1.5 checkpoint: the model family of its three public files and the denoising loop.

Method: Y. Zhang et al., "Stable-Makeup: When Real-World Makeup Transfer Meets Diffusion Model" (arXiv:2403.07764);
the networks and the file layout are in `nets.makeup_encoder`. What runs (facts: shared/research/studios.md §C2):

- the makeup ("detail") encoder turns the reference face into tokens (CLIP ViT-L `hidden_states[2::2]`, 12 x 257
  = 3084 tokens, through the Resampler); they replace the text in every UNet cross-attention through the SSR
  processors (`to_k_SSR` / `to_v_SSR`); the negative is the same path on an all-zero normalised image;
- two ControlNets built `from_unet` (diffusers `MultiControlNetModel`): identity = the source face, structure =
  the 68-landmark drawing (`vision.face_structure`), both RGB in [0, 1]; they get the empty-prompt CLIP text
  embedding, computed once per job (the reference code re-encodes it at every step);
- DDIM, 30 steps, CFG 1.6-2 at 512 x 512, and — the seed project's speed-up — img2img from the source face:
  `int(steps * strength)` steps run from the source's latents noised to the first of them (diffusers'
  `get_timesteps` / `prepare_latents` recipe).

The family: `<models>/StableMakeup/<name>/` holding `pytorch_model.bin` (detail encoder), `pytorch_model_1.bin`
(identity ControlNet) and `pytorch_model_2.bin` (structure ControlNet), or `.safetensors` copies of them
(`toonbooth models convert <name>`); files directly in `<models>/StableMakeup/` form the set `stable-makeup`.
The detail encoder is told apart by its keys; the two ControlNets have the same keys and shapes, so their
*role* comes from the public file names (`_1` / `id` / `identity` = identity, `_2` / `pose` / `structure` =
structure) — weights cannot tell them apart. `.bin` files are only read with `torch.load(weights_only=True)`.

The SSR processors are not left in the checkpoint's UNet, which other studios share through the model cache:
`StableMakeup.attached(unet)` puts them in for one denoising loop and restores the UNet's own processors after
it (also on errors and cancel).
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..core.errors import InputError, ModelError
from ..models.families.base import LoadEnv, ModelFamily
from ..models.registry import ModelEntry
from .face_parsing import convert_to_safetensors, state_dict_keys
from .makeup_encoder import (
    DetailEncoder,
    clip_pixel_values,
    identify_stable_makeup_file,
    load_detail_encoder,
    load_makeup_controlnet,
    set_ssr_scale,
)

STABLE_MAKEUP_FOLDERS: tuple[str, ...] = ("StableMakeup", "stablemakeup", "stable-makeup")
SUFFIXES: tuple[str, ...] = (".safetensors", ".bin", ".pth", ".pt")
"""Preference order when one role has several files (safetensors first)."""
FLAT_SET_NAME = "stable-makeup"
ROLES = ("detail_encoder", "identity", "structure")
ROLE_FILES = {"detail_encoder": "pytorch_model.bin", "identity": "pytorch_model_1.bin",
              "structure": "pytorch_model_2.bin"}  # fmt: skip
_IDENTITY_NAME = re.compile(r"(?:^|[_.-])(1|id|identity)$", re.IGNORECASE)
_STRUCTURE_NAME = re.compile(r"(?:^|[_.-])(2|pose|structure)$", re.IGNORECASE)
ARCH = "sd15"


def controlnet_role(stem: str) -> str | None:
    """`identity` / `structure` from a Stable-Makeup ControlNet's file stem (`pytorch_model_1` / `_2`), else None."""
    if _IDENTITY_NAME.search(stem):
        return "identity"
    if _STRUCTURE_NAME.search(stem):
        return "structure"
    return None


# ---------------------------------------------------------------------------------------------------
# Scanning: one entry per set of three files
# ---------------------------------------------------------------------------------------------------


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES
                  and not p.name.startswith("."))  # fmt: skip


def stable_makeup_entry(folder: Path, top: Path, top_folder: str, name: str) -> ModelEntry | None:
    """The entry of the set of files directly in `folder` (None when it holds no weight file)."""
    files = _weight_files(folder)
    if not files:
        return None
    found: dict[str, list[Path]] = {r: [] for r in ROLES}
    notes: list[str] = []
    for f in files:
        try:
            what = identify_stable_makeup_file(set(state_dict_keys(f)))
        except ModelError as exc:
            notes.append(str(exc))
            continue
        if what == "detail_encoder":
            found["detail_encoder"].append(f)
        elif what == "controlnet":
            role = controlnet_role(f.stem)
            if role is None:
                notes.append(f"{f.name}: a ControlNet, but its name says neither identity (`_1`) nor structure (`_2`)")
            else:
                found[role].append(f)
        else:
            notes.append(f"{f.name}: not a Stable-Makeup file")
    chosen: dict[str, str] = {}
    for role, paths in found.items():
        if paths:
            paths.sort(key=lambda p: SUFFIXES.index(p.suffix.lower()))
            chosen[role] = str(paths[0])
    missing = [r for r in ROLES if r not in chosen]
    refused = None
    if missing:
        want = ", ".join(f"{r} ({ROLE_FILES[r]})" for r in missing)
        refused = f"Stable-Makeup set {name!r} in {folder} is incomplete: missing {want}"
        if notes:
            refused += "; " + "; ".join(notes[:3])
    used = [Path(p) for p in chosen.values()]
    layout = "safetensors" if used and all(p.suffix.lower() == ".safetensors" for p in used) else "torch-weights-only"
    return ModelEntry(
        name=name, path=folder, kind="stable_makeup", arch=ARCH, layout=layout, source="folder",
        folder=top_folder, relpath=folder.relative_to(top).as_posix() if folder != top else "",
        size=sum(p.stat().st_size for p in used), refused=refused,
        details={"files": chosen, **({"notes": notes} if notes else {})},
    )  # fmt: skip


def scan_stable_makeup(top: Path, folder: str) -> list[ModelEntry]:
    """Sets in `<models>/StableMakeup/`: the files directly in it (named `stable-makeup`) and each sub-folder."""
    out = []
    flat = stable_makeup_entry(top, top, folder, FLAT_SET_NAME)
    if flat is not None:
        out.append(flat)
    for sub in sorted(p for p in top.iterdir() if p.is_dir() and not p.name.startswith(".")):
        entry = stable_makeup_entry(sub, top, folder, sub.name)
        if entry is not None:
            out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------


@dataclass
class StableMakeup:
    """The loaded set: detail encoder (CLIP + Resampler + SSR processors) and the two ControlNets, for UNets with
    the attention layout `processor_names` (SD1.5's)."""

    detail_encoder: DetailEncoder
    identity: Any
    structure: Any
    processor_names: tuple[str, ...]
    files: dict[str, str] = field(default_factory=dict)

    @property
    def clip_size(self) -> int:
        return int(self.detail_encoder.image_encoder.config.image_size)

    def controlnets(self):
        from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

        return MultiControlNetModel([self.identity, self.structure])

    @contextlib.contextmanager
    def attached(self, unet: torch.nn.Module) -> Iterator[None]:
        """The SSR processors in `unet` for the duration of the block; the UNet's own processors after it."""
        original = dict(unet.attn_processors)
        if tuple(original) != self.processor_names:
            raise ModelError("this UNet's attention layers differ from the ones the Stable-Makeup files were loaded for")
        unet.set_attn_processor(dict(zip(self.processor_names, self.detail_encoder.SSR_layers, strict=True)))
        try:
            yield
        finally:
            unet.set_attn_processor(dict(original))  # (diffusers empties the dict it is given)


def load_stable_makeup(entry: ModelEntry, env: LoadEnv, *, unet: torch.nn.Module, unet_key: str = "") -> StableMakeup:
    """The three files of `entry` for `unet` (its layout and dtype; its weights are not touched). `unet_key`
    names the base checkpoint in the model cache's key; the loaded set only depends on the UNet's layout."""
    files = dict(entry.details.get("files") or {})
    if entry.refused or set(files) != set(ROLES):
        raise ModelError(entry.refused or f"Stable-Makeup set {entry.name!r} is incomplete")
    original = dict(unet.attn_processors)
    try:
        encoder = load_detail_encoder(files["detail_encoder"], unet)
    finally:  # the shared UNet keeps its own processors between jobs (diffusers empties the dict it is given)
        unet.set_attn_processor(dict(original))
    identity = load_makeup_controlnet(files["identity"], unet)
    structure = load_makeup_controlnet(files["structure"], unet)
    return StableMakeup(encoder.eval(), identity.eval(), structure.eval(), tuple(original), files)


def convert_stable_makeup(entry: ModelEntry) -> list[Path]:
    """`.safetensors` copies of the set's torch files, next to them (the scan then prefers them)."""
    return [convert_to_safetensors(Path(p)) for p in (entry.details.get("files") or {}).values()]


STABLE_MAKEUP_FAMILY = ModelFamily(
    kind="stable_makeup",
    description="Stable-Makeup for SD1.5: makeup encoder + identity and structure ControlNets (three files)",
    folders=STABLE_MAKEUP_FOLDERS,
    suffixes=SUFFIXES,
    scan=scan_stable_makeup,
    load=load_stable_makeup,
    cache_options=("unet_key",),
    approx_bytes=4_270_000_000,
    shared_only=True,
    licence_note="no licence stated by the authors (Xiaojiu-z/Stable-Makeup has no LICENSE file): ask before "
    "commercial use; the encoder holds CLIP ViT-L/14 (OpenAI, MIT)",
    extra={"convert": convert_stable_makeup},
)


# ---------------------------------------------------------------------------------------------------
# The denoising loop
# ---------------------------------------------------------------------------------------------------


def image_tensor(image: Image.Image, device: Any, dtype: Any) -> torch.Tensor:
    """(1, 3, H, W) RGB in [0, 1] (the ControlNets' input range: `VaeImageProcessor(do_normalize=False)`)."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())[None].to(device=device, dtype=dtype)


@torch.no_grad()
def empty_prompt_embedding(tokenizer: Any, text_encoder: Any, device: Any) -> torch.Tensor:
    """The CLIP text embedding of "" (1, 77, width): what both ControlNets see as their text."""
    ids = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids  # fmt: skip
    return text_encoder(ids.to(device))[0]


def img2img_timesteps(scheduler: Any, steps: int, strength: float, device: Any) -> torch.Tensor:
    """The scheduler's timesteps for `steps`, minus the first `steps - int(steps * strength)` (diffusers'
    `get_timesteps`); sets the scheduler's begin index where it has one."""
    scheduler.set_timesteps(steps, device=device)
    keep = min(int(steps * strength), steps)
    t_start = max(steps - keep, 0)
    order = getattr(scheduler, "order", 1)
    timesteps = scheduler.timesteps[t_start * order :]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * order)
    if len(timesteps) == 0:
        raise InputError("diffusion.strength", f"steps * strength must give at least one step, got {steps} * "
                         f"{strength:g}", strength)  # fmt: skip
    return timesteps


def _step_kwargs(scheduler: Any, generator: torch.Generator | None) -> dict[str, Any]:
    accepted = set(inspect.signature(scheduler.step).parameters)
    out: dict[str, Any] = {}
    if "eta" in accepted:
        out["eta"] = 0.0
    if "generator" in accepted:
        out["generator"] = generator
    return out


@dataclass
class MakeupRun:
    """What one call of `run_stable_makeup` did."""

    image: Image.Image
    steps_run: int
    latents: torch.Tensor


StepCallback = Callable[[int, Any, torch.Tensor, int], None]


@torch.no_grad()
def run_stable_makeup(
    bundle: StableMakeup,
    *,
    unet: Any,
    vae: Any,
    text_encoder: Any,
    tokenizer: Any,
    scheduler: Any,
    source: Image.Image,
    structure: Image.Image,
    reference: Image.Image,
    steps: int,
    strength: float,
    cfg_scale: float,
    generator: torch.Generator,
    makeup_scale: float = 1.0,
    controlnet_scales: tuple[float, float] = (1.0, 1.0),
    on_step: StepCallback | None = None,
) -> MakeupRun:
    """The made-up face: img2img from `source` (the aligned source face, also the identity ControlNet's input)
    with `structure` (the landmark drawing) and the makeup of `reference` (the aligned reference face), all
    square and of the same size. `on_step(i, t, latents, n)` runs after each of the `n` denoising steps (the
    job's progress, previews and cancel)."""
    device = unet.device
    dtype = unet.dtype
    size = source.size
    if structure.size != size or source.width != source.height:
        raise InputError("size", f"source {source.size} and structure {structure.size} must be the same square", None)
    do_cfg = cfg_scale > 1.0

    # 1. Conditions: makeup tokens (negative: zero image), the empty-prompt text for the ControlNets, images
    set_ssr_scale(bundle.detail_encoder.SSR_layers, makeup_scale)
    pixels = clip_pixel_values(reference, size=bundle.clip_size).to(device=device, dtype=dtype)
    makeup, negative = bundle.detail_encoder.encode(pixels)
    context = torch.cat([negative, makeup]) if do_cfg else makeup
    text = empty_prompt_embedding(tokenizer, text_encoder, device).to(dtype)
    batch = 2 if do_cfg else 1
    text = text.repeat(batch, 1, 1)
    src = image_tensor(source, device, dtype)
    conds = [src.repeat(batch, 1, 1, 1), image_tensor(structure, device, dtype).repeat(batch, 1, 1, 1)]
    controlnets = bundle.controlnets()

    # 2. img2img start: the source's latents noised to the first kept timestep
    timesteps = img2img_timesteps(scheduler, steps, strength, device)
    init = vae.encode(src * 2.0 - 1.0).latent_dist.sample(generator) * vae.config.scaling_factor
    from diffusers.utils.torch_utils import randn_tensor

    noise = randn_tensor(init.shape, generator=generator, device=device, dtype=dtype)
    latents = scheduler.add_noise(init, noise, timesteps[:1])
    extra = _step_kwargs(scheduler, generator)

    # 3. Denoise (SSR processors in the UNet for this loop only)
    n = len(timesteps)
    with bundle.attached(unet):
        for i, t in enumerate(timesteps):
            x = torch.cat([latents] * 2) if do_cfg else latents
            x = scheduler.scale_model_input(x, t)
            down, mid = controlnets(x, t, encoder_hidden_states=text, controlnet_cond=conds,
                                    conditioning_scale=list(controlnet_scales), guess_mode=False,
                                    return_dict=False)  # fmt: skip
            eps = unet(x, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                       mid_block_additional_residual=mid, return_dict=False)[0]  # fmt: skip
            if do_cfg:
                uncond, cond = eps.chunk(2)
                eps = uncond + cfg_scale * (cond - uncond)
            latents = scheduler.step(eps, t, latents, **extra, return_dict=False)[0]
            if on_step is not None:
                on_step(i, t, latents, n)

    # 4. Decode
    image = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
    image = (image / 2.0 + 0.5).clamp(0.0, 1.0)
    arr = (image[0].float().permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
    return MakeupRun(Image.fromarray(arr), n, latents)


# ---------------------------------------------------------------------------------------------------
# Tiny set (tests, `bench/`)
# ---------------------------------------------------------------------------------------------------


def write_tiny_stable_makeup(folder: Path, seed: int = 0, *, fmt: str = "bin") -> dict[str, Path]:
    """The three Stable-Makeup files for the tiny SD1.5 UNet of `models.tiny` (same layout as `make_tiny_set`'s
    `tiny-sd15`), random weights, in the public key layouts: `pytorch_model.bin` (tiny CLIP vision 32 wide +
    tiny Resampler + SSR layers at the index rule), `pytorch_model_1.bin` / `_2.bin` (`ControlNetModel.from_unet`
    with the default hint encoder, non-zero zero-convs so they change the output). `fmt="safetensors"` writes
    `.safetensors` files instead."""
    from ..models.tiny import build_tiny_controlnet, build_tiny_sd15
    from .makeup_encoder import ResamplerConfig, build_detail_encoder, tiny_clip_vision_config

    folder.mkdir(parents=True, exist_ok=True)
    unet = build_tiny_sd15(seed)["unet"]
    # ControlNets first: once the SSR processors are installed the UNet's state dict holds their weights
    nets = {
        "identity": build_tiny_controlnet(unet, seed=seed + 31, embed_channels=(16, 32, 96, 256)),
        "structure": build_tiny_controlnet(unet, seed=seed + 32, embed_channels=(16, 32, 96, 256)),
    }
    # head counts are not in the weights: the loader assumes CLIP width / 64 heads and 64-wide resampler heads
    # (the public file's); the tiny set keeps those rules (1 CLIP head of 32, one resampler head of 64)
    clip_config = tiny_clip_vision_config()
    clip_config.num_attention_heads = 1
    torch.manual_seed(seed + 33)
    encoder = build_detail_encoder(unet, clip_config, ResamplerConfig(query_dim=clip_config.hidden_size, heads=1,
                                                                      dim_head=64))
    states = {"detail_encoder": encoder.public_state_dict(), **{k: v.state_dict() for k, v in nets.items()}}
    out = {}
    for role, sd in states.items():
        sd = {k: v.detach().contiguous() for k, v in sd.items()}
        name = Path(ROLE_FILES[role])
        if fmt == "safetensors":
            from safetensors.torch import save_file

            path = folder / name.with_suffix(".safetensors").name
            save_file(sd, str(path))
        else:
            path = folder / name.name
            torch.save(sd, str(path))
        out[role] = path
    return out
