"""AUTOMATIC1111-compatible API (`/sdapi/v1/*`, sd-webui-controlnet's `/controlnet/*`).

Routes and response shapes follow stable-diffusion-webui's `modules/api/api.py` and `models.py` and
sd-webui-controlnet's `scripts/api.py`, so existing A1111 clients (the My Memoji React client among them)
work unchanged. The adapter only translates: each txt2img / img2img request becomes one `generate`
JobSpec, is queued like any other job, and the request waits for it without holding a thread. Unlike
A1111 every request is a real job with an id (`info.job_id`), so several clients can queue at once;
`/progress`, `/interrupt` and `/skip` act on the caller's own jobs; `/options` are per user.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import re
import time
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from ... import __version__
from ...core.errors import BackendUnavailableError, InputError, ModelError
from ...core.specs import CONTROLNET_MODULES, parse_job_spec
from ...core.specs.repose import POSE_MODULES
from ...engines.generate import GenerateFacts
from ...models.samplers import list_samplers, list_schedule_types
from ..a1111_schema import (
    A1111Base,
    A1111ImageResponse,
    A1111Img2ImgRequest,
    A1111Txt2ImgRequest,
    echo_parameters,
    translate,
)
from ..auth import current_user_a1111
from ..deps import ApiState, api_state, job_failure

router = APIRouter(tags=["AUTOMATIC1111 API"])
CONTROLNET_API_VERSION = 2

# spec field -> A1111 request field, for error messages
_FIELD_NAMES = {
    "checkpoint": "override_settings.sd_model_checkpoint",
    "clip_skip": "override_settings.CLIP_stop_at_last_layers",
    "controlnet_units": "alwayson_scripts.ControlNet.args",
    "scheduler": "scheduler",
    "hr_checkpoint": "hr_checkpoint_name",
    "vae": "override_settings.sd_vae",
}


def a1111_field(field: str) -> str:
    head, _, rest = field.partition(".")
    mapped = _FIELD_NAMES.get(head, head)
    return f"{mapped}.{rest}" if rest else mapped


def _renamed(exc: InputError) -> InputError:
    return exc.renamed(a1111_field(exc.field))


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def default_checkpoint(state: ApiState, user: str) -> str | None:
    entries = [e for e in state.service.models.registry.list("checkpoint", owner=user) if e.usable]
    return entries[0].title if entries else None


def _resolve(state: ApiState, name: str, kind: str, user: str, field: str):
    try:
        return state.service.models.registry.get(name, kind=kind, owner=user, allow_paths=False)
    except ModelError as exc:
        raise InputError(field, str(exc), name) from None


def processed_info(details: dict[str, Any]) -> dict[str, Any]:
    """A1111's `Processed.js()` (the `info` JSON of txt2img / img2img answers) from the generate job's
    typed output (`engines.generate.GenerateOutput`, stored as the job's info)."""
    out = GenerateFacts.model_validate({k: v for k, v in details.items() if k in GenerateFacts.model_fields})
    n = len(out.seeds)
    return {
        "prompt": out.prompt, "all_prompts": [out.prompt] * n,
        "negative_prompt": out.negative_prompt, "all_negative_prompts": [out.negative_prompt] * n,
        "seed": out.seeds[0] if out.seeds else -1, "all_seeds": out.seeds,
        "subseed": out.subseeds[0] if out.subseeds else -1, "all_subseeds": out.subseeds,
        "subseed_strength": out.subseed_strength, "width": out.width, "height": out.height,
        "sampler_name": out.sampler_name, "scheduler": out.scheduler, "cfg_scale": out.cfg_scale,
        "steps": out.steps, "batch_size": out.batch_size, "n_iter": out.n_iter, "restore_faces": False,
        "face_restoration_model": None, "sd_model_name": out.sd_model_name, "sd_model_hash": out.sd_model_hash,
        "sd_vae_name": out.sd_vae_name, "sd_vae_hash": out.sd_vae_hash, "seed_resize_from_w": out.seed_resize_from_w,
        "seed_resize_from_h": out.seed_resize_from_h, "denoising_strength": out.denoising_strength,
        "extra_generation_params": out.extra_generation_params, "index_of_first_image": 0,
        "infotexts": out.infotexts, "styles": out.styles, "job_timestamp": out.job_timestamp, "clip_skip": out.clip_skip,
        "is_using_inpainting_conditioning": out.is_using_inpainting_conditioning, "version": out.version,
        "pipeline": out.pipeline, "loras": out.loras, "embeddings": out.embeddings, "ignored": out.ignored,
        "interrupted": out.interrupted, "skipped": out.skipped, "hires_size": out.hires_size,
    }  # fmt: skip


async def _wait(state: ApiState, job_id: str, user: str):
    async for _seq, _event in state.service.aevents(job_id, user):
        pass
    record = await run_in_threadpool(state.service.get, job_id, user)
    if not record.done:  # the events ended early: the server is stopping; the job stays queued
        raise HTTPException(
            503,
            f"the server is shutting down; job {job_id} is kept in the queue and runs after the restart "
            f"(GET /v1/jobs/{job_id})",
            headers={"Retry-After": "10"},
        )
    return record


async def generate(state: ApiState, req: A1111Base, mode: str, user: str) -> A1111ImageResponse:
    # 1. Translate the request into a job spec (refusing bad fields by their A1111 names)
    options = await run_in_threadpool(state.options.get, user)
    checkpoint = await run_in_threadpool(default_checkpoint, state, user)
    tr = translate(req, mode, default_checkpoint=checkpoint, options=options)
    try:
        spec = parse_job_spec(tr.spec)
    except InputError as exc:
        raise _renamed(exc) from None
    # 2. Queue it (the engine refuses unknown models / samplers / LoRAs at submit; inline images are
    #    validated and stored as the caller's uploads) and wait
    try:
        record = await run_in_threadpool(state.service.submit, spec, user)
    except InputError as exc:
        raise _renamed(exc) from None
    record = await _wait(state, record.id, user)
    # 3. Answer in A1111's shape
    info: dict[str, Any] = {"job_id": record.id}
    images: list[str] = []
    if record.state == "failed":
        raise job_failure(record)
    if record.output is not None and record.state in ("completed", "canceled"):
        # canceled (/interrupt): A1111 answers with what was made so far, the engine's partial images
        info = {**processed_info(record.output.info), "job_id": record.id}
        if record.state == "canceled":
            info["interrupted"] = True
        names = sorted(
            (o.name for o in record.output.outputs if o.name.startswith("image-")),
            key=lambda n: int(n.split("-", 1)[1]) if n.split("-", 1)[1].isdigit() else 0,
        )
        if req.send_images:
            for name in names:
                data = await run_in_threadpool(state.service.read_output, record.id, user, name)
                images.append(base64.b64encode(data).decode("ascii"))
        engine_warnings = list(record.output.warnings)
    else:  # canceled before any image was under way: nothing to answer with
        info["interrupted"] = True
        engine_warnings = []
    info["ignored"] = sorted(set(info.get("ignored", [])) | set(tr.ignored))
    info["warnings"] = engine_warnings + tr.warnings
    return A1111ImageResponse(images=images, parameters=echo_parameters(req), info=json.dumps(info))


# --------------------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------------------


@router.post("/sdapi/v1/txt2img", response_model=A1111ImageResponse)
async def txt2img(
    req: A1111Txt2ImgRequest, state: ApiState = Depends(api_state), user: str = Depends(current_user_a1111)
) -> A1111ImageResponse:
    """Text to image; waits for the job and returns base64 PNGs, the request, and `info` (JSON string)."""
    return await generate(state, req, "txt2img", user)


@router.post("/sdapi/v1/img2img", response_model=A1111ImageResponse)
async def img2img(
    req: A1111Img2ImgRequest, state: ApiState = Depends(api_state), user: str = Depends(current_user_a1111)
) -> A1111ImageResponse:
    """Image to image and inpainting (`mask`), with ControlNet units in `alwayson_scripts.ControlNet.args`."""
    return await generate(state, req, "img2img", user)


# --------------------------------------------------------------------------------------------------
# progress and control
# --------------------------------------------------------------------------------------------------


@router.get("/sdapi/v1/progress")
def progress(
    skip_current_image: bool = False,
    state: ApiState = Depends(api_state),
    user: str = Depends(current_user_a1111),
) -> dict[str, Any]:
    """Progress 0..1 of the caller's running job, `eta_relative` (s), A1111's `state`, and the live
    preview (`current_image`, base64 PNG) unless `skip_current_image`."""
    service = state.service
    mine = [r for r in service.running() if r.owner == user]
    queued = service.queue.queued_count(user)
    job = mine[0] if mine else None
    out: dict[str, Any] = {
        "progress": 0.0,
        "eta_relative": 0.0,
        "state": {
            "skipped": False, "interrupted": False, "stopping_generation": False, "job": "",
            "job_count": len(mine) + queued, "job_timestamp": "0", "job_no": 0,
            "sampling_step": 0, "sampling_steps": 0,
        },
        "current_image": None,
        "textinfo": None,
        "current_task": None,
    }  # fmt: skip
    if job is None:
        return out
    fraction = max(0.0, min(1.0, job.percent / 100.0))
    elapsed = time.time() - (job.started_at or time.time())
    out["progress"] = fraction
    out["eta_relative"] = max(0.0, elapsed / fraction - elapsed) if fraction > 0 else 0.0
    started = datetime.datetime.fromtimestamp(job.started_at or time.time())
    out["state"].update(
        job=f"job({job.id})", job_timestamp=started.strftime("%Y%m%d%H%M%S"),
        interrupted=bool(job.cancel_requested), sampling_step=job.step, sampling_steps=job.total,
    )  # fmt: skip
    out["textinfo"] = job.stage or None
    out["current_task"] = job.id
    if not skip_current_image:
        preview = service.preview(job.id, user)
        if preview:
            out["current_image"] = base64.b64encode(preview).decode("ascii")
    return out


def _cancel_running(state: ApiState, user: str) -> list[str]:
    canceled = []
    for record in state.service.running():
        if record.owner == user:
            state.service.cancel(record.id, user)
            canceled.append(record.id)
    return canceled


@router.post("/sdapi/v1/interrupt")
def interrupt(
    state: ApiState = Depends(api_state), user: str = Depends(current_user_a1111)
) -> dict[str, Any]:
    """Stop the caller's running job(s) at the next step. As in A1111, their txt2img / img2img requests
    answer with what was made so far (the current latents decoded; `info.interrupted` is true); the job
    record is `canceled` and keeps those images as its outputs."""
    return {"canceled": _cancel_running(state, user)}


@router.post("/sdapi/v1/skip")
def skip(state: ApiState = Depends(api_state), user: str = Depends(current_user_a1111)) -> dict[str, Any]:
    """A1111's skip: the current image (batch of `batch_size`) of the caller's running generation ends
    with what it has and the job goes on with the next one (`info.skipped` lists the skipped batches)."""
    skipped = [r.id for r in state.service.running() if r.owner == user and state.service.skip(r.id, user)]
    return {"skipped": skipped}


# --------------------------------------------------------------------------------------------------
# options and lists
# --------------------------------------------------------------------------------------------------


@router.get("/sdapi/v1/options")
def get_options(
    state: ApiState = Depends(api_state), user: str = Depends(current_user_a1111)
) -> dict[str, Any]:
    """The caller's options (A1111 names); `sd_model_checkpoint` defaults to the first checkpoint."""
    options = state.options.get(user)
    if not options.get("sd_model_checkpoint"):
        options["sd_model_checkpoint"] = default_checkpoint(state, user)
    return options


@router.post("/sdapi/v1/options")
def set_options(
    changes: dict[str, Any] = Body(...),
    state: ApiState = Depends(api_state),
    user: str = Depends(current_user_a1111),
) -> dict[str, Any]:
    """Persist options (e.g. `sd_model_checkpoint`, `send_seed`, `CLIP_stop_at_last_layers`) for the caller."""

    def check(name: str) -> str:
        return _resolve(state, name, "checkpoint", user, "sd_model_checkpoint").title

    vae = changes.get("sd_vae") if isinstance(changes, dict) else None
    if isinstance(vae, str) and vae not in VAE_DEFAULT_NAMES:
        _resolve(state, vae, "vae", user, "sd_vae")
    return state.options.update(user, changes, check_checkpoint=check)


@router.get("/sdapi/v1/cmd-flags")
def cmd_flags(
    state: ApiState = Depends(api_state), _user: str = Depends(current_user_a1111)
) -> dict[str, Any]:
    """A1111's command-line flags, as far as they mean something here (no paths, never a secret)."""
    s = state.settings
    return {
        "api": True, "nowebui": False, "api_auth": None, "gradio_auth": None, "listen": None,
        "device_id": None, "precision": s.dtype, "no_half": s.dtype == "float32", "medvram": False,
        "lowvram": False, "xformers": False, "skip_torch_cuda_test": False, "ckpt_dir": None,
        "lora_dir": None, "data_dir": None, "disable_safe_unpickle": False, "toonbooth": __version__,
    }  # fmt: skip


@router.get("/sdapi/v1/sd-models")
def sd_models(
    state: ApiState = Depends(api_state), user: str = Depends(current_user_a1111)
) -> list[dict[str, Any]]:
    """Installed checkpoints: `title` (`name.safetensors [hash]`) is what `sd_model_checkpoint` takes."""
    out = []
    for e in state.service.models.registry.list("checkpoint", owner=user):
        out.append({
            "title": e.title, "model_name": e.name, "hash": e.short_hash, "sha256": e.sha256,
            "filename": e.relpath or e.name, "config": None, "arch": e.arch,
        })  # fmt: skip
    return out


@router.post("/sdapi/v1/refresh-checkpoints")
def refresh_checkpoints(
    state: ApiState = Depends(api_state), _user: str = Depends(current_user_a1111)
) -> None:
    state.service.models.registry.scan()


@router.post("/sdapi/v1/refresh-loras")
def refresh_loras(state: ApiState = Depends(api_state), _user: str = Depends(current_user_a1111)) -> None:
    state.service.models.registry.scan()


@router.get("/sdapi/v1/samplers")
def samplers(_user: str = Depends(current_user_a1111)) -> list[dict[str, Any]]:
    """Samplers this server can run (A1111 names, aliases, options)."""
    return [
        {"name": s.name, "aliases": s.aliases, "options": s.options} for s in list_samplers() if s.supported
    ]


@router.get("/sdapi/v1/schedulers")
def schedulers(_user: str = Depends(current_user_a1111)) -> list[dict[str, Any]]:
    return [
        {"name": s.name, "label": s.label, "aliases": s.aliases, "default_rho": s.default_rho,
         "need_inner_model": s.need_inner_model}
        for s in list_schedule_types() if s.supported
    ]  # fmt: skip


@router.get("/sdapi/v1/loras")
def loras(
    state: ApiState = Depends(api_state), user: str = Depends(current_user_a1111)
) -> list[dict[str, Any]]:
    """LoRAs usable as `<lora:name:weight>` in prompts."""
    return [
        {"name": e.name, "alias": lora_alias(e), "path": e.relpath or e.name,
         "metadata": {"arch": e.arch, "layout": e.layout}}
        for e in state.service.models.registry.list("lora", owner=user)
    ]  # fmt: skip


def lora_alias(entry: Any) -> str:
    """A1111's alias: the `ss_output_name` the trainer stored; else the catalog's name of a known file
    (memoji-07 -> memoji, what the seed's client sends); else the file name. Tags resolve by all three."""
    if entry.aliases:
        return entry.aliases[0]
    if entry.catalog_name and entry.catalog_name != entry.name:
        return entry.catalog_name
    return entry.name


@router.get("/sdapi/v1/embeddings")
def embeddings(
    state: ApiState = Depends(api_state), user: str = Depends(current_user_a1111)
) -> dict[str, Any]:
    loaded = {
        e.name: {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                 "shape": e.details.get("width"), "vectors": e.details.get("vectors"), "arch": e.arch}
        for e in state.service.models.registry.list("embedding", owner=user)
    }  # fmt: skip
    return {"loaded": loaded, "skipped": {}}


@router.get("/sdapi/v1/face-restorers")
def face_restorers(_user: str = Depends(current_user_a1111)) -> list[dict[str, Any]]:
    return []


@router.get("/sdapi/v1/hypernetworks")
def hypernetworks(_user: str = Depends(current_user_a1111)) -> list[dict[str, Any]]:
    return []


# --------------------------------------------------------------------------------------------------
# issue 15: scripts, upscalers, extras, png-info, VAEs, styles, memory, checkpoints, interrogate
# --------------------------------------------------------------------------------------------------

VAE_DEFAULT_NAMES = {"Automatic", "None", "auto", ""}


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")  # A1111 request models ignore unknown fields
MAX_CONTROLNET_UNITS = 4


def _controlnet_unit_default() -> dict[str, Any]:
    return {
        "enabled": False, "module": "none", "model": "None", "weight": 1.0, "image": None,
        "resize_mode": "Crop and Resize", "processor_res": -1, "threshold_a": -1, "threshold_b": -1,
        "guidance_start": 0.0, "guidance_end": 1.0, "pixel_perfect": False, "control_mode": "Balanced",
    }  # fmt: skip


# What sd-webui-controlnet registers: the always-on "ControlNet" (its units are `alwayson_scripts.ControlNet.
# args`) and the selectable "ControlNet M2M" (video frames; as a `script_name` it is reported as ignored).
# Clients such as webuiapi look for "controlnet m2m" to know the extension is there and then send an empty
# unit list to clear units from earlier calls.
SCRIPTS: dict[str, list[str]] = {"txt2img": ["controlnet m2m", "controlnet"], "img2img": ["controlnet m2m", "controlnet"]}


@router.get("/sdapi/v1/scripts")
def scripts(_user: str = Depends(current_user_a1111)) -> dict[str, list[str]]:
    """Script titles (lower case) per tab, as A1111 lists them: the ControlNet extension's scripts."""
    return {tab: list(names) for tab, names in SCRIPTS.items()}


@router.get("/sdapi/v1/script-info")
def script_info(_user: str = Depends(current_user_a1111)) -> list[dict[str, Any]]:
    """A1111's `ScriptInfo` list: name, whether always on, which tab, and the args a request may send."""
    out = []
    for is_img2img in (False, True):
        units = [
            {"label": f"ControlNet Unit {i}", "value": _controlnet_unit_default(), "minimum": None,
             "maximum": None, "step": None, "choices": None}
            for i in range(MAX_CONTROLNET_UNITS)
        ]  # fmt: skip
        out.append({"name": "controlnet", "is_alwayson": True, "is_img2img": is_img2img, "args": units})
        out.append({"name": "controlnet m2m", "is_alwayson": False, "is_img2img": is_img2img, "args": []})
    return out


def _upscaler_entries(state: ApiState, user: str) -> list[Any]:
    return [e for e in state.service.models.registry.list("upscaler", owner=user) if e.usable]


def _upscaler_name(entry: Any) -> str:
    """The name A1111 shows: its own name for the Real-ESRGAN files it knows, else the file stem."""
    return entry.aliases[0] if entry.aliases else entry.name


@router.get("/sdapi/v1/upscalers")
def upscalers(state: ApiState = Depends(api_state), user: str = Depends(current_user_a1111)) -> list[dict[str, Any]]:
    """A1111's built-in resizers (None, Lanczos, Nearest) and the installed ESRGAN-family networks
    (`models/ESRGAN`, `models/RealESRGAN`); `name` is what extras and `hr_upscaler` take (the file stem
    works too)."""
    out = [{"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
           for name in ("None", "Lanczos", "Nearest")]  # fmt: skip
    for e in _upscaler_entries(state, user):
        out.append({"name": _upscaler_name(e), "model_name": e.folder or "ESRGAN", "model_path": e.relpath,
                    "model_url": None, "scale": e.details.get("scale", 4)})  # fmt: skip
    return out


@router.get("/sdapi/v1/realesrgan-models")
def realesrgan_models(
    state: ApiState = Depends(api_state), user: str = Depends(current_user_a1111)
) -> list[dict[str, Any]]:
    """The installed networks of `models/RealESRGAN` (A1111's `RealesrganItem`: name, path, scale)."""
    return [
        {"name": _upscaler_name(e), "path": e.relpath, "scale": e.details.get("scale", 4)}
        for e in _upscaler_entries(state, user) if (e.folder or "").lower() == "realesrgan"
    ]  # fmt: skip


@router.get("/sdapi/v1/latent-upscale-modes")
def latent_upscale_modes(_user: str = Depends(current_user_a1111)) -> list[dict[str, str]]:
    """Hires fix's latent upscale modes (`hr_upscaler`)."""
    from ...nets.esrgan import LATENT_UPSCALE_MODES

    return [{"name": name} for name in LATENT_UPSCALE_MODES]


@router.get("/sdapi/v1/prompt-styles")
def prompt_styles(state: ApiState = Depends(api_state), _user: str = Depends(current_user_a1111)) -> list[dict[str, Any]]:
    """A1111 prompt styles from `styles.csv` in the models folder and the data folder (the `styles` field
    of txt2img / img2img applies them)."""
    from ...models.prompt_styles import load_styles, style_folders

    try:
        styles = load_styles(style_folders(state.settings))
    except ModelError as exc:
        raise HTTPException(500, str(exc)) from None
    return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt} for s in styles.values()]


@router.get("/sdapi/v1/sd-vae")
def sd_vae(state: ApiState = Depends(api_state), user: str = Depends(current_user_a1111)) -> list[dict[str, Any]]:
    """VAE files (`models/VAE`): `model_name` is what the `sd_vae` option / override takes."""
    return [
        {"model_name": e.path.name if e.path is not None else e.name, "filename": e.relpath or e.name}
        for e in state.service.models.registry.list("vae", owner=user) if e.usable
    ]  # fmt: skip


@router.post("/sdapi/v1/refresh-vae")
def refresh_vae(state: ApiState = Depends(api_state), _user: str = Depends(current_user_a1111)) -> None:
    state.service.models.registry.scan()


@router.post("/sdapi/v1/refresh-embeddings")
def refresh_embeddings(state: ApiState = Depends(api_state), _user: str = Depends(current_user_a1111)) -> None:
    state.service.models.registry.scan()


def _managers(state: ApiState) -> list[Any]:
    managers = {id(state.service.models): state.service.models}
    for runner in getattr(state.service, "runners", []):
        managers.setdefault(id(runner.models), runner.models)
    return list(managers.values())


@router.post("/sdapi/v1/unload-checkpoint")
def unload_checkpoint(state: ApiState = Depends(api_state), _user: str = Depends(current_user_a1111)) -> dict[str, Any]:
    """Drop the loaded checkpoints (and their ControlNets / VAEs) from this server's model caches; the
    next job loads what it needs again. A running job keeps the models it holds until it ends."""
    kinds = {"checkpoint", "controlnet", "vae"}
    count = sum(m.cache.evict_where(lambda key: key[0] in kinds) for m in _managers(state))
    return {"unloaded": count}


@router.post("/sdapi/v1/reload-checkpoint")
def reload_checkpoint(_user: str = Depends(current_user_a1111)) -> dict[str, Any]:
    """A1111 moves the checkpoint back onto the GPU; here models load on demand, so the next job loads
    its checkpoint (nothing to do now)."""
    return {"reloaded": False, "note": "checkpoints load on demand: the next job loads its checkpoint"}


@router.get("/sdapi/v1/memory")
def memory(_user: str = Depends(current_user_a1111)) -> dict[str, Any]:
    """A1111's `MemoryResponse`: system RAM, and CUDA memory of this process when there is a GPU."""
    ram: dict[str, Any]
    try:
        info = {}
        for line in open("/proc/meminfo", encoding="ascii"):  # noqa: SIM115 - tiny file
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0]) * 1024
        total, free = info["MemTotal"], info.get("MemAvailable", info.get("MemFree", 0))
        ram = {"free": free, "used": total - free, "total": total}
    except (OSError, KeyError, ValueError) as exc:
        ram = {"error": f"unavailable ({exc})"}
    cuda: dict[str, Any]
    try:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device")
        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()

        def pair(name: str) -> dict[str, int]:
            return {"current": stats.get(f"{name}.all.current", 0), "peak": stats.get(f"{name}.all.peak", 0)}

        cuda = {
            "system": {"free": free, "used": total - free, "total": total},
            "active": pair("active_bytes"), "allocated": pair("allocated_bytes"),
            "reserved": pair("reserved_bytes"), "inactive": pair("inactive_split_bytes"),
            "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
        }  # fmt: skip
    except Exception as exc:  # A1111 answers {"error": ...} without CUDA
        cuda = {"error": str(exc)}
    return {"ram": ram, "cuda": cuda}


class A1111InterrogateRequest(_Body):
    image: str = ""
    model: str = "clip"


@router.post("/sdapi/v1/interrogate")
def interrogate(req: A1111InterrogateRequest, _user: str = Depends(current_user_a1111)) -> dict[str, Any]:
    """Not available: refused with 409 naming what A1111 uses (no captioning model family exists here)."""
    if not req.image:
        raise InputError("image", "an image (base64) is required", None)
    if req.model not in ("clip", "deepdanbooru"):
        raise InputError("model", f"must be 'clip' or 'deepdanbooru', got {req.model!r}", req.model)
    needs = {
        "clip": "A1111's CLIP interrogator runs a BLIP captioning model plus CLIP ViT-L/14 over its word lists",
        "deepdanbooru": "DeepDanbooru is a TensorFlow/PyTorch ResNet tagger",
    }[req.model]
    raise BackendUnavailableError(
        f"interrogation ({req.model}) is not available on toonbooth: {needs}, and toonbooth has no model "
        "family that loads it — there is nothing to install that enables this route. Write the prompt yourself "
        "or use an A1111 server for captions."
    )


class A1111PngInfoRequest(_Body):
    image: str = ""


_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")


def parse_infotext(text: str) -> dict[str, Any]:
    """A1111 `parse_generation_parameters`: Prompt, Negative prompt and the `Key: value` pairs, sizes split
    into `-1` / `-2` (Size-1, Size-2, Hires resize-1, ...)."""
    from ...core.images import parse_a1111_parameters

    prompt, negative, settings = parse_a1111_parameters(text)
    out: dict[str, Any] = {"Prompt": prompt, "Negative prompt": negative}
    for key, value in settings.items():
        m = _SIZE_RE.match(value) if isinstance(value, str) else None
        if m:
            out[f"{key}-1"], out[f"{key}-2"] = m.group(1), m.group(2)
        else:
            out[key] = value
    out.setdefault("Clip skip", "1")
    return out


@router.post("/sdapi/v1/png-info")
def png_info(req: A1111PngInfoRequest, state: ApiState = Depends(api_state),
             _user: str = Depends(current_user_a1111)) -> dict[str, Any]:  # fmt: skip
    """The generation parameters of a PNG (A1111's `parameters` text chunk, also toonbooth's own results):
    `info` (the text), `items` (the other text chunks), `parameters` (parsed, A1111's keys)."""
    import io

    from PIL import Image

    from ...core.images import read_image_bytes

    if not req.image:
        raise InputError("image", "an image (base64) is required", None)
    data = read_image_bytes(req.image, field="image", max_bytes=state.settings.max_upload_bytes)
    try:
        with Image.open(io.BytesIO(data)) as img:
            chunks = {str(k): v for k, v in getattr(img, "text", {}).items() if isinstance(v, str)}
    except Exception as exc:
        raise InputError("image", f"not a readable image ({type(exc).__name__})", None) from None
    text = chunks.pop("parameters", "")
    return {"info": text, "items": chunks, "parameters": parse_infotext(text) if text else {}}


class A1111ExtrasRequest(_Body):
    """A1111 `ExtrasBaseRequest` (+ `image` or `imageList`)."""

    resize_mode: int = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = 0
    codeformer_visibility: float = 0
    codeformer_weight: float = 0
    upscaling_resize: float = 2
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str | None = "None"
    upscaler_2: str | None = "None"
    extras_upscaler_2_visibility: float = 0
    upscale_first: bool = False


class A1111ExtrasSingleRequest(A1111ExtrasRequest):
    image: str = ""


class A1111ExtrasBatchRequest(A1111ExtrasRequest):
    imageList: list[dict[str, Any]] = []  # noqa: N815 - A1111's field name


_EXTRAS_FIELDS = ("resize_mode", "gfpgan_visibility", "codeformer_visibility", "codeformer_weight",
                  "upscaling_resize", "upscaling_resize_w", "upscaling_resize_h", "upscaling_crop",
                  "extras_upscaler_2_visibility", "upscale_first")  # fmt: skip


async def _run_extras(state: ApiState, req: A1111ExtrasRequest, images: list[str], names: list[str], user: str):
    spec_data: dict[str, Any] = {"kind": "extras", "images": images, "names": names}
    spec_data.update({k: getattr(req, k) for k in _EXTRAS_FIELDS})
    spec_data["upscaler_1"] = req.upscaler_1 or "None"
    spec_data["upscaler_2"] = req.upscaler_2 or "None"
    spec = parse_job_spec(spec_data)
    record = await run_in_threadpool(state.service.submit, spec, user)
    record = await _wait(state, record.id, user)
    if record.state == "failed":
        raise job_failure(record)
    if record.output is None:
        raise HTTPException(409, f"extras job {record.id} was {record.state}")
    out = []
    for o in sorted(record.output.outputs, key=lambda o: int(o.name.split("-", 1)[1])):
        data = await run_in_threadpool(state.service.read_output, record.id, user, o.name)
        out.append(base64.b64encode(data).decode("ascii"))
    infotexts = record.output.info.get("infotexts") or [""]
    html_info = f'<div class="infotext">\n<p>\n{html.escape(infotexts[-1])}\n</p>\n</div>\n'
    return out, html_info, record


@router.post("/sdapi/v1/extra-single-image")
async def extra_single_image(
    req: A1111ExtrasSingleRequest, state: ApiState = Depends(api_state), user: str = Depends(current_user_a1111)
) -> dict[str, Any]:
    """A1111 extras on one picture (an `extras` job): upscale by `upscaling_resize` or to
    `upscaling_resize_w` x `_h` with `upscaler_1` (None: unchanged), `upscaler_2` blended in."""
    if not req.image:
        raise InputError("image", "an image (base64) is required", None)
    try:
        images, html_info, record = await _run_extras(state, req, [req.image], [], user)
    except InputError as exc:
        raise (exc.renamed("image") if exc.field.startswith("images") else exc) from None
    return {"html_info": html_info, "image": images[0], "job_id": record.id}


@router.post("/sdapi/v1/extra-batch-images")
async def extra_batch_images(
    req: A1111ExtrasBatchRequest, state: ApiState = Depends(api_state), user: str = Depends(current_user_a1111)
) -> dict[str, Any]:
    """A1111 extras on several pictures (`imageList`: [{data, name}]), one `extras` job."""
    if not req.imageList:
        raise InputError("imageList", "at least one image is required", None)
    data, names = [], []
    for i, item in enumerate(req.imageList):
        if not isinstance(item, dict) or not isinstance(item.get("data"), str) or not item["data"]:
            raise InputError(f"imageList.{i}.data", "must be a base64 image", None)
        data.append(item["data"])
        names.append(str(item.get("name") or f"image{i + 1:05}")[:200])
    try:
        images, html_info, record = await _run_extras(state, req, data, names, user)
    except InputError as exc:
        m = re.match(r"^images\.(\d+)(.*)$", exc.field)
        raise (exc.renamed(f"imageList.{m.group(1)}.data{m.group(2)}") if m else exc) from None
    return {"html_info": html_info, "images": images, "job_id": record.id}


# --------------------------------------------------------------------------------------------------
# sd-webui-controlnet
# --------------------------------------------------------------------------------------------------

_MODULE_SLIDERS: dict[str, list[dict[str, Any]]] = {
    "none": [],
    "invert": [{"name": "Preprocessor Resolution", "value": 512, "min": 64, "max": 2048}],
    "canny": [
        {"name": "Preprocessor Resolution", "value": 512, "min": 64, "max": 2048},
        {"name": "Canny Low Threshold", "value": 100, "min": 1, "max": 255},
        {"name": "Canny High Threshold", "value": 200, "min": 1, "max": 255},
    ],
    **{m: [{"name": "Preprocessor Resolution", "value": 512, "min": 64, "max": 2048}] for m in POSE_MODULES},
}


@router.get("/controlnet/model_list")
def controlnet_model_list(
    update: bool = True, state: ApiState = Depends(api_state), user: str = Depends(current_user_a1111)
) -> dict[str, list[str]]:
    """ControlNet models as `name [hash]` (what a unit's `model` takes; the plain name works too)."""
    return {"model_list": [e.title for e in state.service.models.registry.list("controlnet", owner=user)]}


@router.get("/controlnet/module_list")
def controlnet_module_list(
    alias_names: bool = False, _user: str = Depends(current_user_a1111)
) -> dict[str, Any]:
    modules = list(CONTROLNET_MODULES)
    return {
        "module_list": modules,
        "module_detail": {m: {"model_free": False, "sliders": _MODULE_SLIDERS.get(m, [])} for m in modules},
    }


_DETECT_FIELDS = {
    "module": "controlnet_module", "images": "controlnet_input_images", "processor_res": "controlnet_processor_res",
    "threshold_a": "controlnet_threshold_a", "threshold_b": "controlnet_threshold_b",
}  # fmt: skip


def _detect_field(exc: InputError) -> InputError:
    head, _, rest = exc.field.partition(".")
    return exc.renamed(_DETECT_FIELDS.get(head, head) + (f".{rest}" if rest else ""))


@router.post("/controlnet/detect")
async def controlnet_detect(
    controlnet_module: str = Body("none"),
    controlnet_input_images: list[str] = Body(default_factory=list),
    controlnet_processor_res: int = Body(512),
    controlnet_threshold_a: float = Body(-1),
    controlnet_threshold_b: float = Body(-1),
    low_vram: bool = Body(False),
    state: ApiState = Depends(api_state),
    user: str = Depends(current_user_a1111),
) -> dict[str, Any]:
    """sd-webui-controlnet's preprocessor route: the control map of each input image (base64 PNGs in
    `images`) for `controlnet_module` (canny, invert, none, openpose, openpose_full, dw_openpose_full — the
    pose modules run DWPose) and, for the pose modules, the OpenPose JSON of each image in `poses`.
    Thresholds -1 take the module's defaults (canny 100 / 200). Runs as a `control_detect` job."""
    raw = {
        "kind": "control_detect", "module": controlnet_module, "images": controlnet_input_images,
        "processor_res": controlnet_processor_res, "threshold_a": controlnet_threshold_a,
        "threshold_b": controlnet_threshold_b,
    }  # fmt: skip
    try:
        spec = parse_job_spec(raw)
        record = await run_in_threadpool(state.service.submit, spec, user)
    except InputError as exc:
        raise _detect_field(exc) from None
    record = await _wait(state, record.id, user)
    if record.state == "failed":
        raise job_failure(record)
    if record.state != "completed" or record.output is None:
        return {"info": "Interrupted", "images": [], "job_id": record.id}
    outputs = record.output.outputs

    def ordered(prefix: str) -> list[str]:
        names = [o.name for o in outputs if o.name.startswith(prefix)]
        return sorted(names, key=lambda n: int(n.rsplit("-", 1)[1]))

    images = [base64.b64encode(await run_in_threadpool(state.service.read_output, record.id, user, n)).decode("ascii")
              for n in ordered("image-")]  # fmt: skip
    answer: dict[str, Any] = {"info": "Success", "images": images, "job_id": record.id}
    if controlnet_module.strip().lower() in POSE_MODULES:
        answer["poses"] = [json.loads(await run_in_threadpool(state.service.read_output, record.id, user, n))
                           for n in ordered("pose-")]  # fmt: skip
    if record.output.warnings:
        answer["warnings"] = list(record.output.warnings)
    return answer


@router.get("/controlnet/version")
def controlnet_version() -> dict[str, int]:
    return {"version": CONTROLNET_API_VERSION}
