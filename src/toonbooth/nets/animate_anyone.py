"""AnimateAnyone single-image pose change on stock diffusers UNets: the model family of the three
Moore-AnimateAnyone files and the pose-to-image denoising loop.

Paper: Hu et al., "Animate Anyone" (CVPR 2024, https://arxiv.org/abs/2311.17117). Weights: the open
re-implementation Moore-AnimateAnyone (https://github.com/MooreThreads/Moore-AnimateAnyone, Apache-2.0;
hub `patrolli/AnimateAnyone`): `reference_unet.pth`, `denoising_unet.pth`, `pose_guider.pth` (stage 1; the
released files are the stage-1 results). `motion_module.pth` is never loaded: with one image it turns the
result into noise (Moore-AnimateAnyone issues #12, #59); the denoising UNet's key set is refused when it
holds motion-module keys (`nets.reference_attn`).

The loop follows Moore's `Pose2ImagePipeline` as used by `train_stage_1.log_validation`:
1. CLIP image embedding of the reference squashed to the encoder's size (224 for ViT-L/14), normalised with
   CLIP's mean/std; `image_embeds` (B, D) as one token; the unconditional branch gets zeros.
2. Reference latents: the reference at the result size, VAE posterior mean x scaling factor (0.18215).
3. The reference UNet runs once, at timestep 0, writing each `attn1` input into the bank (batch doubled for
   classifier-free guidance); the denoising UNet reads it in every step (`nets.reference_attn`).
4. The pose map in [0, 1] at the result size through the PoseGuider, added after the denoising UNet's
   `conv_in` by a forward hook (for both CFG halves).
5. DDIM with v-prediction, zero terminal SNR (rescaled betas) and trailing timesteps — the training
   scheduler (`beta_start` 0.00085, `beta_end` 0.012, scaled_linear, `steps_offset` 1, no clipping),
   20-30 steps, CFG 3.5.

Family `animate_anyone`: `<models>/AnimateAnyone/` (the three files directly there = entry `animate-anyone`,
or one set per sub-folder), each file identified by its keys (PoseGuider layout; a UNet without its output
head = reference; with it = denoising), `.pth` read with `torch.load(weights_only=True)` (memory-mapped) or
`.safetensors` after `toonbooth models convert`. The UNet config is the folder's `config.json` when there is
one, else SD1.5's `unet/config.json` from the `sd15` config folder (`toonbooth models pull sd15-config`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..core.errors import ModelError
from ..models.families import LoadEnv, ModelFamily
from ..models.registry import ModelEntry
from .pose_guider import PoseGuiderConfig, build_pose_guider, looks_like_pose_guider, read_state_dict
from .reference_attn import (
    REFERENCE_MISSING_KEYS,
    PoseFeatures,
    ReferenceBank,
    check_denoising_unet_keys,
    check_reference_unet_keys,
    install_pose_hook,
    install_reference_reader,
    install_reference_writer,
    is_motion_key,
    restore_processors,
)

AA_FOLDERS: tuple[str, ...] = ("AnimateAnyone", "animate_anyone")
AA_NAME = "animate-anyone"
AA_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
ROLES = ("reference_unet", "denoising_unet", "pose_guider")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_KEYS: dict[tuple[str, int, int], frozenset[str] | Exception] = {}


# ---------------------------------------------------------------------------------------------------
# Identifying the files
# ---------------------------------------------------------------------------------------------------


def weight_keys(path: Path) -> frozenset[str]:
    """The tensor names of a weights file: the safetensors header, or the state dict of a `.pth` / `.bin`
    through `torch.load(weights_only=True, mmap=True)` (the tensor data stays on disk). Cached per file
    version; ModelError when the file is neither."""
    from ..models.probe import read_header

    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _KEYS:
        if len(_KEYS) > 256:
            _KEYS.clear()
        try:
            if path.suffix.lower() == ".safetensors":
                _KEYS[key] = frozenset(read_header(path).shapes)
            else:
                _KEYS[key] = frozenset(read_state_dict(path))
        except ModelError as exc:
            _KEYS[key] = exc
    found = _KEYS[key]
    if isinstance(found, Exception):
        raise found
    return found


def aa_role(keys: frozenset[str]) -> str | None:
    """Which AnimateAnyone part a key set is: pose_guider, reference_unet (UNet keys without
    conv_norm_out / conv_out), denoising_unet (with them), motion_module (only motion keys), or None."""
    if looks_like_pose_guider(set(keys)):
        return "pose_guider"
    if keys and all(is_motion_key(k) for k in keys):
        return "motion_module"
    if "conv_in.weight" in keys and any(k.startswith("down_blocks.") for k in keys):
        return "denoising_unet" if "conv_out.weight" in keys else "reference_unet"
    return None


def aa_folder_entry(folder: Path, name: str, top_folder: str, relpath: str) -> ModelEntry | None:
    """An entry for a folder of AnimateAnyone weights: usable when the three parts are identified (a
    `.safetensors` wins over a `.pth` of the same part); refused naming what is missing or unreadable; None
    when the folder has no weights file."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AA_SUFFIXES)
    if not files:
        return None
    found: dict[str, Path] = {}
    problems: list[str] = []
    ignored: list[str] = []
    for f in files:
        try:
            role = aa_role(weight_keys(f))
        except ModelError as exc:
            problems.append(str(exc))
            continue
        if role == "motion_module":
            ignored.append(f"{f.name} (motion module: not used for single images)")
        elif role is None:
            ignored.append(f"{f.name} (not an AnimateAnyone part)")
        elif role not in found or (f.suffix.lower() == ".safetensors" and found[role].suffix.lower() != ".safetensors"):
            found[role] = f
    missing = [r for r in ROLES if r not in found]
    refused = None
    if missing:
        why = "; ".join(problems) if problems else ""
        refused = f"{folder}: AnimateAnyone needs {', '.join(missing)} (not found{': ' + why if why else ''})"
    details: dict[str, Any] = {role: f.name for role, f in found.items()}
    if ignored:
        details["ignored"] = ignored
    size = sum(f.stat().st_size for f in found.values())
    return ModelEntry(
        name=name, path=folder, kind="animate_anyone", arch="sd15", layout="animate-anyone", source="folder",
        folder=top_folder, relpath=relpath, size=size, refused=refused, details=details,
    )  # fmt: skip


def scan_animate_anyone(top: Path, folder: str) -> list[ModelEntry]:
    out = []
    entry = aa_folder_entry(top, AA_NAME, folder, "")
    if entry is not None:
        out.append(entry)
    for sub in sorted(d for d in top.iterdir() if d.is_dir() and not d.name.startswith(".")):
        entry = aa_folder_entry(sub, sub.name, folder, sub.name)
        if entry is not None:
            out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------


@dataclass
class AnimateAnyoneParts:
    """The loaded parts (stock `UNet2DConditionModel`s and the PoseGuider) and where they came from."""

    reference_unet: Any
    denoising_unet: Any
    pose_guider: Any
    files: dict[str, str] = field(default_factory=dict)


def unet_config_for(folder: Path, registry: Any) -> dict[str, Any]:
    """The UNet config: `<folder>/config.json` (a UNet config) or SD1.5's from the `sd15` config folder."""
    own = folder / "config.json"
    if own.is_file():
        cfg = json.loads(own.read_text())
        if cfg.get("_class_name", "UNet2DConditionModel") == "UNet2DConditionModel" and "block_out_channels" in cfg:
            return cfg
    sd15 = Path(registry.config_folder("sd15")) / "unet" / "config.json"
    if not sd15.is_file():
        raise ModelError(f"no UNet config for AnimateAnyone: {sd15} is missing (`toonbooth models pull sd15-config`)")
    return json.loads(sd15.read_text())


def _empty_unet(config: dict[str, Any]) -> Any:
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        return UNet2DConditionModel.from_config(config)


def _load_unet(config: dict[str, Any], path: Path, role: str, device: Any, dtype: Any) -> Any:
    unet = _empty_unet(config)
    state = read_state_dict(path)
    report = (check_reference_unet_keys if role == "reference_unet" else check_denoising_unet_keys)(state, unet)
    if not report.ok:
        raise ModelError(f"{path.name} does not fit the SD1.5 UNet as the {role.replace('_', ' ')}: {report.describe()}")
    if role == "reference_unet":
        # Moore's reference UNet has no output head; its output is never used, so a neutral head is enough
        stock = unet.state_dict()
        for key in REFERENCE_MISSING_KEYS:
            if key not in state:
                fill = torch.ones if key == "conv_norm_out.weight" else torch.zeros
                state[key] = fill(stock[key].shape, dtype=torch.float32)
    unet.load_state_dict(state, strict=True, assign=True)
    return unet.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_animate_anyone(entry: ModelEntry, env: LoadEnv) -> AnimateAnyoneParts:
    """Both UNets (built empty from the config, filled from the files after the key checks) and the
    PoseGuider (config read off its weights), on the manager's device and dtype."""
    folder = Path(entry.location)
    config = unet_config_for(folder, env.registry)
    files = {role: folder / entry.details[role] for role in ROLES}
    reference = _load_unet(config, files["reference_unet"], "reference_unet", env.device, env.dtype)
    denoising = _load_unet(config, files["denoising_unet"], "denoising_unet", env.device, env.dtype)
    state = read_state_dict(files["pose_guider"])
    guider = build_pose_guider(PoseGuiderConfig.from_state_dict(state))
    try:
        guider.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"{files['pose_guider'].name}: PoseGuider weights do not fit: {e}") from e
    guider = guider.to(device=env.device, dtype=env.dtype).eval().requires_grad_(False)
    width = int(config["block_out_channels"][0])
    if guider.conv_out.out_channels != width:
        raise ModelError(
            f"{files['pose_guider'].name} gives {guider.conv_out.out_channels} channels, the UNet's conv_in gives {width}"
        )
    return AnimateAnyoneParts(reference, denoising, guider, {r: str(p) for r, p in files.items()})


ANIMATE_ANYONE_FAMILY = ModelFamily(
    kind="animate_anyone",
    description="AnimateAnyone (Moore) reference UNet + denoising UNet + PoseGuider, single image (no motion module)",
    folders=AA_FOLDERS,
    suffixes=("/",),
    scan=scan_animate_anyone,
    load=load_animate_anyone,
    approx_bytes=6_885_000_000,
    shared_only=True,
    licence_note="Apache-2.0 (Moore-AnimateAnyone)",
)


# ---------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------


def aa_scheduler() -> Any:
    """DDIM as Moore-AnimateAnyone trained: v-prediction, zero terminal SNR, trailing timesteps."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        steps_offset=1, clip_sample=False, set_alpha_to_one=False, rescale_betas_zero_snr=True,
        timestep_spacing="trailing", prediction_type="v_prediction",
    )  # fmt: skip


def clip_pixels(image: Image.Image, size: int, device: Any, dtype: Any) -> torch.Tensor:
    """The reference as CLIP vision input: squashed to `size` x `size` (bicubic), CLIP mean/std."""
    arr = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    arr = (arr - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1)[None].to(device=device, dtype=dtype)


def image_embeddings(encoder: Any, image: Image.Image, device: Any, dtype: Any) -> torch.Tensor:
    """(1, 1, D) CLIP image embedding (`image_embeds` of a CLIPVisionModelWithProjection) as one token."""
    size = int(encoder.config.image_size)
    with torch.no_grad():
        out = encoder(clip_pixels(image, size, device, dtype))
    return out.image_embeds[:, None, :]


def vae_pixels(image: Image.Image, width: int, height: int, device: Any, dtype: Any) -> torch.Tensor:
    """An RGB image at width x height (Lanczos) in [-1, 1], (1, 3, H, W)."""
    arr = np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32)
    return (torch.from_numpy(arr / 127.5 - 1.0).permute(2, 0, 1)[None]).to(device=device, dtype=dtype)


def latents_to_image(vae: Any, latents: torch.Tensor) -> Image.Image:
    with torch.no_grad():
        decoded = vae.decode(latents / vae.config.scaling_factor).sample
    arr = ((decoded[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr)


def pose2img(
    parts: AnimateAnyoneParts,
    vae: Any,
    image_encoder: Any,
    reference: Image.Image,
    pose_map: np.ndarray,
    *,
    steps: int = 20,
    guidance_scale: float = 3.5,
    generator: torch.Generator | None = None,
    on_step: Callable[[int, Any, torch.Tensor], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> Image.Image:
    """The reference character re-drawn in the pose of `pose_map` (H, W, 3 uint8, ControlNet-openpose
    drawing; H and W multiples of 8 give the result size). `on_step(i, t, latents)` after each denoising
    step (progress, previews, cancel); `on_stage(name)` before the encode / reference / decode stages."""
    from .pose_guider import pose_image_tensor

    device = parts.denoising_unet.device
    dtype = parts.denoising_unet.dtype
    height, width = pose_map.shape[:2]
    if height % 8 or width % 8:
        raise ModelError(f"the pose map must have sides that are multiples of 8, got {width}x{height}")
    cfg = guidance_scale > 1.0
    stage = on_stage or (lambda _name: None)

    # 1. Conditions: CLIP image token (zeros uncond), reference latents, pose features
    stage("encode")
    cond = image_embeddings(image_encoder, reference, device, dtype)
    tokens = torch.cat([torch.zeros_like(cond), cond]) if cfg else cond
    with torch.no_grad():
        ref = vae.encode(vae_pixels(reference, width, height, vae.device, vae.dtype)).latent_dist.mean
        ref_latents = (ref * vae.config.scaling_factor).to(device=device, dtype=dtype)
        pose_features = parts.pose_guider(pose_image_tensor(np.ascontiguousarray(pose_map), device, dtype))
    scheduler = aa_scheduler()
    scheduler.set_timesteps(steps, device=device)
    shape = (1, parts.denoising_unet.config.in_channels, height // 8, width // 8)
    latents = torch.randn(shape, generator=generator, device="cpu", dtype=torch.float32)
    latents = (latents * scheduler.init_noise_sigma).to(device=device, dtype=dtype)

    # 2. Reference pass (once, timestep 0) writing the bank; reader + pose hook on the denoiser
    bank = ReferenceBank(do_classifier_free_guidance=cfg)
    writers = install_reference_writer(parts.reference_unet, bank)
    readers = install_reference_reader(parts.denoising_unet, bank)
    hook = install_pose_hook(parts.denoising_unet, PoseFeatures(pose_features))
    try:
        stage("reference")
        with torch.no_grad():
            ref_in = ref_latents.repeat(2 if cfg else 1, 1, 1, 1)
            parts.reference_unet(ref_in, torch.zeros((), device=device), encoder_hidden_states=tokens, return_dict=False)

        # 3. Denoise
        for i, t in enumerate(scheduler.timesteps):
            model_in = torch.cat([latents] * 2) if cfg else latents
            model_in = scheduler.scale_model_input(model_in, t)
            with torch.no_grad():
                pred = parts.denoising_unet(model_in, t, encoder_hidden_states=tokens, return_dict=False)[0]
            if cfg:
                uncond, cond_pred = pred.chunk(2)
                pred = uncond + guidance_scale * (cond_pred - uncond)
            latents = scheduler.step(pred, t, latents, eta=0.0, generator=generator, return_dict=False)[0]
            if on_step is not None:
                on_step(i, t, latents)
    finally:
        hook.remove()
        restore_processors(parts.reference_unet, writers)
        restore_processors(parts.denoising_unet, readers)
        bank.clear()

    # 4. Decode
    stage("decode")
    return latents_to_image(vae, latents.to(vae.dtype))
