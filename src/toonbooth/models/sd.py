"""Stable Diffusion plumbing shared by the SD studios (memoji, anime-me, generate, and the next ones):
the cached base pipeline of a checkpoint, ControlNets, pipelines of other classes composed over the same
modules, A1111 samplers, LoRAs switched per job, and A1111-syntax prompt embeddings — all through the
model manager (`ctx.models`), so engines never find or load SD files themselves."""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
from dataclasses import dataclass
from typing import Any

from ..core.errors import InputError, ModelError
from .manager import ModelManager


@dataclass
class LoadedLora:
    name: str
    adapter: str
    weight: float
    short_hash: str | None


def _adapter_name(name: str, location: str) -> str:
    """A stable PEFT adapter name: readable stem + a short digest of where the file lives."""
    digest = hashlib.sha1(location.encode("utf-8")).hexdigest()[:8]
    return "tb_" + re.sub(r"[^0-9A-Za-z_]", "_", name)[:40] + "_" + digest


def base_pipeline(models: ModelManager, checkpoint: str, arch: str, owner: str | None = None):
    """(pipeline, entry): the checkpoint's cached base pipeline (img2img; inpaint for inpainting checkpoints).
    Other pipelines of the job are composed from its modules (`compose`)."""
    entry = models.entry(checkpoint, "checkpoint", owner)
    if entry.arch not in (arch, "unknown"):
        raise ModelError(f"checkpoint {checkpoint!r} is {entry.arch}, this job needs {arch}")
    if entry.arch == "unknown":
        entry = entry.model_copy(update={"arch": arch})
    return models.load_entry(entry), entry


def controlnet(models: ModelManager, name: str, base_pipe: Any, arch: str, owner: str | None = None):
    """(ControlNetModel, entry), cached; diffusers-layout single files take the base UNet's config."""
    from . import loader

    entry = models.entry(name, "controlnet", owner)
    if entry.arch not in (arch, "unknown"):
        raise ModelError(f"ControlNet {name!r} is {entry.arch}, the checkpoint is {arch}")
    if entry.arch == "unknown":
        entry = entry.model_copy(update={"arch": arch})
    return models.load_entry(entry, unet_config=loader.read_unet_config(None, base_pipe)), entry


def compose(pipeline_cls: Any, base_pipe: Any, **extra: Any) -> Any:
    """A pipeline of another class over the same (cached) modules; cheap, no copies."""
    expected, optional = pipeline_cls._get_signature_keys(pipeline_cls)
    accepted = set(expected) | set(optional)
    parts = {k: v for k, v in base_pipe.components.items() if k in accepted}
    parts.update(extra)
    pipe = pipeline_cls(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def set_sampler(pipe: Any, base_pipe: Any, sampler: str, schedule_type: str | None = None, *,
                field: str = "sampler", schedule_field: str = "schedule_type") -> None:
    """Give `pipe` the scheduler of A1111 sampler `sampler` (+ A1111 >= 1.9 `schedule_type`); errors name
    the spec's fields (`field` for the sampler, `schedule_field` for the schedule type)."""
    from .samplers import make_scheduler

    try:
        pipe.scheduler = make_scheduler(sampler, base_pipe._toonbooth_scheduler_config, schedule_type)
    except InputError as exc:
        raise exc.renamed(schedule_field if exc.field == "schedule_type" else field) from None


def apply_loras(models: ModelManager, base_pipe: Any, loras: list[tuple[str, float]],
                owner: str | None = None) -> list[LoadedLora]:
    """Activate exactly these LoRAs (name, weight) on the pipeline's modules; others are switched off.
    Files stay loaded as adapters between jobs so switching is cheap."""
    loaded: dict[str, str] = base_pipe._toonbooth_loras
    out: list[LoadedLora] = []
    with models._lock:
        for name, weight in loras:
            entry = models.entry(name, "lora", owner)
            adapter = _adapter_name(entry.name, entry.location)
            if adapter not in loaded:
                try:
                    base_pipe.load_lora_weights(entry.location, adapter_name=adapter)
                except Exception as exc:
                    raise ModelError(f"cannot load LoRA {name!r} ({entry.location}): {exc}") from exc
                loaded[adapter] = entry.location
            out.append(LoadedLora(entry.name, adapter, float(weight), models.short_hash(entry)))
        # switching adapters costs tens of ms per job on small models: skip it when nothing changed
        wanted = tuple((x.adapter, x.weight) for x in out)
        if getattr(base_pipe, "_toonbooth_active", None) != wanted:
            if out:
                base_pipe.enable_lora()
                base_pipe.set_adapters([x.adapter for x in out], adapter_weights=[x.weight for x in out])
            elif loaded:
                base_pipe.disable_lora()
            base_pipe._toonbooth_active = wanted
    return out


def prompt_embeddings(models: ModelManager, texts: list[str], pipe: Any, arch: str, owner: str | None = None):
    """The textual-inversion embeddings named in `texts` that fit `pipe`'s text encoders, resolved for
    `owner` (shared files and the owner's own styles): a `models.embeddings.PromptEmbeddings`."""
    from .embeddings import resolve_prompt_embeddings, text_encoder_widths

    return resolve_prompt_embeddings(models, texts, text_encoder_widths(pipe, arch), owner)


def job_prompts(models: ModelManager, pipe: Any, arch: str, prompt: str, negative_prompt: str,
                owner: str | None = None, clip_skip: int = 1):
    """(embeddings, staged prompts): the prompt and negative prompt of a job encoded with A1111 syntax
    (emphasis, BREAK, textual inversions incl. multi-stage ones) for `pipe`'s text encoders."""
    from .embeddings import encode_job_prompts

    tis = prompt_embeddings(models, [prompt, negative_prompt], pipe, arch, owner)
    staged = encode_job_prompts(
        pipe, arch, prompt, negative_prompt, tis, device=models.device, dtype=models.dtype, clip_skip=clip_skip
    )
    return tis, staged


def count_steps(scheduler: Any, steps: int, strength: float | None) -> int:
    """Denoising-loop iterations of one pipeline call (what `callback_on_step_end` counts): the scheduler's
    timesteps, minus those img2img skips (diffusers `get_timesteps`)."""
    sched = type(scheduler).from_config(scheduler.config)
    sched.set_timesteps(steps, device="cpu")
    n = len(sched.timesteps)
    if strength is not None:
        t_start = max(steps - min(int(steps * strength), steps), 0)
        n -= t_start * getattr(sched, "order", 1)
    return max(n, 1)


def call_kwargs(pipe: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keep the keyword arguments this pipeline's `__call__` takes (img2img ones have no height/width:
    their size is the init image's)."""
    accepted = set(inspect.signature(pipe.__call__).parameters)
    return {k: v for k, v in kwargs.items() if k in accepted}


def lora_info(loras: list[LoadedLora]) -> list[dict[str, Any]]:
    return [{"name": x.name, "weight": x.weight, "hash": x.short_hash} for x in loras]


def prompt_with_loras(prompt: str, loras: list[LoadedLora]) -> str:
    """The prompt as A1111 shows it, with the job's LoRAs as `<lora:name:weight>` tags."""
    return prompt + "".join(f" <lora:{x.name}:{x.weight:g}>" for x in loras)


def check_diffusion(params: Any, models: ModelManager, owner: str | None, arch: str, *, field: str = "diffusion",
                    img2img: bool = True) -> Any:  # fmt: skip
    """Refuse a studio's `DiffusionParams` without loading anything: unknown checkpoint / LoRA / ControlNet
    names, a model of another architecture, an unknown sampler, an img2img strength that runs no step.
    Errors name the nested field (`diffusion.loras.0.name`). Returns the checkpoint's registry entry."""
    from ..core.errors import ModelNotFoundError
    from .samplers import resolve_sampler

    def entry(kind: str, name: str, where: str):
        try:
            found = models.entry(name, kind, owner)
        except ModelNotFoundError as exc:
            raise InputError(where, str(exc), name) from None
        if found.arch not in (arch, "unknown"):
            raise InputError(where, f"{kind} {name!r} is {found.arch}, this studio runs {arch}", name)
        return found

    try:
        resolve_sampler(params.sampler, params.schedule_type)
    except InputError as exc:
        raise exc.renamed(f"{field}.schedule_type" if exc.field == "schedule_type" else f"{field}.sampler") from None
    if img2img and params.steps_run() < 1:
        raise InputError(
            f"{field}.strength", f"steps * strength must give at least one step, got {params.steps} * {params.strength:g}",
            params.strength,
        )  # fmt: skip
    ckpt = entry("checkpoint", params.checkpoint, f"{field}.checkpoint")
    for i, lora in enumerate(params.loras):
        entry("lora", lora.name, f"{field}.loras.{i}.name")
    for i, unit in enumerate(params.controlnet_units):
        if unit.enabled:
            entry("controlnet", unit.model, f"{field}.controlnet_units.{i}.model")
    return ckpt


# --------------------------------------------------------------------------------------------------
# Tiling, partial results (A1111 `tiling`, `/interrupt`, `/skip`)
# --------------------------------------------------------------------------------------------------


class circular_padding:  # noqa: N801 - used as a context manager, like contextlib's helpers
    """A1111 `tiling`: every Conv2d of `modules` (the UNet and the VAE of the job) pads circularly while the
    block runs, so the picture tiles seamlessly; the previous padding modes are restored afterwards."""

    def __init__(self, *modules: Any, enable: bool = True):
        self.modules = [m for m in modules if m is not None]
        self.enable = enable
        self._saved: list[tuple[Any, str]] = []

    def __enter__(self) -> circular_padding:
        if not self.enable:
            return self
        import torch

        for module in self.modules:
            for layer in module.modules():
                if isinstance(layer, torch.nn.Conv2d):
                    self._saved.append((layer, layer.padding_mode))
                    layer.padding_mode = "circular"
        return self

    def __exit__(self, *exc: object) -> None:
        for layer, mode in self._saved:
            layer.padding_mode = mode
        self._saved.clear()


def decode_latents(pipe: Any, latents: Any) -> list[Any]:
    """PIL images of `latents` (as a pipeline's denoising loop holds them) through `pipe`'s VAE, upcast
    to float32 where the VAE asks for it (SDXL's `force_upcast`), as the pipelines decode."""
    import torch

    vae = pipe.vae
    dtype = next(vae.parameters()).dtype
    upcast = dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    work = torch.float32 if upcast else dtype
    with torch.no_grad():
        lat = latents.to(device=next(vae.parameters()).device, dtype=work)
        mean = getattr(vae.config, "latents_mean", None)
        std = getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            m = torch.tensor(mean).view(1, -1, 1, 1).to(lat)
            s = torch.tensor(std).view(1, -1, 1, 1).to(lat)
            lat = lat * s / vae.config.scaling_factor + m
        else:
            lat = lat / vae.config.scaling_factor
        if upcast:
            vae.to(torch.float32)
        try:
            image = vae.decode(lat, return_dict=False)[0]
        finally:
            if upcast:
                vae.to(dtype)
    return pipe.image_processor.postprocess(image.float(), output_type="pil")


class DenoisedTracker:
    """Keeps the latest denoised estimate of a pipeline's loop, for what A1111 returns when a job is
    interrupted or an image skipped (its sampler's last `denoised`): the scheduler's `pred_original_sample`
    where its step reports one (DDIM, Euler, LMS, Heun, ...), the multistep solvers' converted model output
    (DPM++ / UniPC keep the x0 prediction), else the current latents. Wraps the job's own scheduler
    instance (`pipe.scheduler`, made per job by `set_sampler`)."""

    def __init__(self, pipe: Any):
        self.latest: Any = None
        self.scheduler = pipe.scheduler
        original = self.scheduler.step

        # the pipelines read `step`'s signature to decide whether to pass `generator` / `eta`: keep it
        @functools.wraps(original)
        def step(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            pred = None
            if isinstance(out, tuple):
                pred = out[1] if len(out) > 1 else None
            else:
                pred = getattr(out, "pred_original_sample", None)
            if pred is None:
                config = getattr(self.scheduler, "config", None)
                outputs = getattr(self.scheduler, "model_outputs", None)
                x0_kind = str(getattr(config, "algorithm_type", "")).endswith("dpmsolver++") or bool(
                    getattr(config, "predict_x0", False)
                )
                if x0_kind and outputs and outputs[-1] is not None:
                    pred = outputs[-1]
            self._pred = pred
            return out

        self._pred: Any = None
        self.scheduler.step = step

    def on_step(self, latents: Any) -> None:
        """Record the loop's latents after a step (called from `callback_on_step_end`)."""
        self.latest = (self._pred if self._pred is not None and self._pred.shape == latents.shape else latents).detach()
        self._pred = None

    def reset(self) -> None:
        self.latest = None
        self._pred = None
