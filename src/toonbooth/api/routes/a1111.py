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
import json
import time
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException
from starlette.concurrency import run_in_threadpool

from ... import __version__
from ...core.errors import InputError, ModelError
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
        "sd_vae_name": None, "sd_vae_hash": None, "seed_resize_from_w": out.seed_resize_from_w,
        "seed_resize_from_h": out.seed_resize_from_h, "denoising_strength": out.denoising_strength,
        "extra_generation_params": out.extra_generation_params, "index_of_first_image": 0,
        "infotexts": out.infotexts, "styles": [], "job_timestamp": out.job_timestamp, "clip_skip": out.clip_skip,
        "is_using_inpainting_conditioning": out.is_using_inpainting_conditioning, "version": out.version,
        "pipeline": out.pipeline, "loras": out.loras, "embeddings": out.embeddings, "ignored": out.ignored,
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
    if record.state == "completed" and record.output is not None:
        info = {**processed_info(record.output.info), "job_id": record.id}
        names = sorted(
            (o.name for o in record.output.outputs if o.name.startswith("image-")),
            key=lambda n: int(n.split("-", 1)[1]) if n.split("-", 1)[1].isdigit() else 0,
        )
        if req.send_images:
            for name in names:
                data = await run_in_threadpool(state.service.read_output, record.id, user, name)
                images.append(base64.b64encode(data).decode("ascii"))
        engine_warnings = list(record.output.warnings)
    else:  # canceled (/interrupt): A1111 answers with what it has, here nothing
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
    """Stop the caller's running job(s) at the next step; their txt2img/img2img requests answer with no images."""
    return {"canceled": _cancel_running(state, user)}


@router.post("/sdapi/v1/skip")
def skip(state: ApiState = Depends(api_state), user: str = Depends(current_user_a1111)) -> dict[str, Any]:
    """A1111 skips the current image of a batch; jobs here stop as a whole, so this stops the caller's
    running job(s) like /interrupt."""
    return {"canceled": _cancel_running(state, user)}


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
        {"name": e.name, "alias": e.aliases[0] if e.aliases else e.name, "path": e.relpath or e.name,
         "metadata": {"arch": e.arch, "layout": e.layout}}
        for e in state.service.models.registry.list("lora", owner=user)
    ]  # fmt: skip


@router.get("/sdapi/v1/embeddings")
def embeddings(
    state: ApiState = Depends(api_state), user: str = Depends(current_user_a1111)
) -> dict[str, Any]:
    loaded = {
        e.name: {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                 "shape": e.details.get("shape"), "vectors": e.details.get("vectors"), "arch": e.arch}
        for e in state.service.models.registry.list("embedding", owner=user)
    }  # fmt: skip
    return {"loaded": loaded, "skipped": {}}


@router.get("/sdapi/v1/upscalers")
def upscalers(_user: str = Depends(current_user_a1111)) -> list[dict[str, Any]]:
    """No upscaler models (hires fix and extras are not supported): only A1111's `None`."""
    return [{"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 4}]


@router.get("/sdapi/v1/prompt-styles")
def prompt_styles(_user: str = Depends(current_user_a1111)) -> list[dict[str, Any]]:
    return []


@router.get("/sdapi/v1/face-restorers")
def face_restorers(_user: str = Depends(current_user_a1111)) -> list[dict[str, Any]]:
    return []


@router.get("/sdapi/v1/realesrgan-models")
def realesrgan_models(_user: str = Depends(current_user_a1111)) -> list[dict[str, Any]]:
    return []


@router.get("/sdapi/v1/hypernetworks")
def hypernetworks(_user: str = Depends(current_user_a1111)) -> list[dict[str, Any]]:
    return []


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
