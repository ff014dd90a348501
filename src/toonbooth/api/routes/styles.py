"""REST routes of personalization (issue 5): start a training job, training presets, my trained styles
(list, show, download their files, delete).

A training is an ordinary job of kind `train_lora`, `train_dreambooth` or `train_ti` (the JSON of
`TrainLoraSpec` / `TrainDreamBoothSpec` / `TrainTISpec`), so everything else goes through the job routes:

    POST   /v1/trainings                   start one (JSON spec, or multipart: `spec` + many `images` files)
    GET    /v1/jobs/{id}                    status (percent, stage = "training step 12/800 loss 0.1234 ...")
    GET    /v1/jobs/{id}/events             Server-Sent Events (progress with the loss, log lines, the end)
    DELETE /v1/jobs/{id}                    cancel
    GET    /v1/jobs?kind=train_lora         my trainings of one kind
    GET    /v1/trainings/presets            the presets with their defaults and image-count bounds
    GET    /v1/styles                       my styles;  GET /v1/styles/{name}  one of them
    GET    /v1/styles/{name}/files/{role}   a style's file: `model` (kohya LoRA / A1111 embedding, what
                                            AUTOMATIC1111 and ComfyUI load), `peft`, `stages`, `sample_0`, ...
    DELETE /v1/styles/{name}                delete it (files + registry entry)

`POST /v1/jobs` takes the same training specs (`images` as `blob:` refs, base64 or data URLs, or multipart
files named `images.0`, `images.1`, ...). Images are stored as the caller's uploads; many or large images
are best sent one by one to `POST /v1/uploads` first and named by their `blob:` refs, because one request
body is limited to about three images' worth of bytes. Styles belong to the user who trained them: another
user gets 404 for every style route, and never sees them in `/v1/models` or `/sdapi/v1/loras`.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from ...core.errors import InputError, NotFoundError
from ...core.specs import TrainDreamBoothSpec, TrainLoraSpec, TrainTISpec, parse_job_spec
from ...runtime.queue_base import JobRecord
from ...training.presets import PresetInfo, list_presets
from ...training.styles import StyleFields, StyleInfo, check_name_free, delete_style, get_style, list_styles
from ..auth import current_user
from ..deps import ApiState, api_state
from .jobs import check_spec_size, json_object

router = APIRouter()
TRAIN_KINDS = ("train_lora", "train_dreambooth", "train_ti")
FILE_LIST_FIELDS = ("images", "class_images")
MAX_TRAIN_FILES = 1200  # 200 training images + up to 1000 class images
MAX_NAME_CHARS = 120
_MEDIA_TYPES = {".png": "image/png", ".json": "application/json", ".safetensors": "application/octet-stream"}


class StyleOut(StyleFields):
    """One of my trained styles, as the API shows it (no server paths)."""

    files: dict[str, str] = Field(description="role -> download URL (`model` is the A1111 / ComfyUI file).")


def style_out(info: StyleInfo) -> StyleOut:
    data = info.model_dump(exclude={"files", "owner"})
    files = {role: f"/v1/styles/{info.name}/files/{role}" for role in info.files}
    return StyleOut(**data, files=files)


def _models_dir(state: ApiState) -> Path:
    return Path(state.service.models.registry.models_dirs[0])


# --------------------------------------------------------------------------------------------------
# starting a training
# --------------------------------------------------------------------------------------------------


async def _training_from_request(request: Request) -> dict[str, Any]:
    """The spec JSON; in multipart, files named `images` / `class_images` (repeatable) are appended to
    those lists in order (their file names become `image_names` when the spec gives no images itself)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form(max_files=MAX_TRAIN_FILES, max_fields=16)
        raw = form.get("spec")
        if raw is None:
            raise InputError(
                "spec", "multipart trainings need a `spec` field holding the training spec JSON", None
            )
        if not isinstance(raw, str):
            raw = (await raw.read()).decode("utf-8", "replace")
        data = json_object(raw, "spec", what="a training spec")
        for f in FILE_LIST_FIELDS:
            if f in data and not isinstance(data[f], list):
                raise InputError(f, f"must be a list of images, got {type(data[f]).__name__}", None)
        spec_has_images = bool(data.get("images"))
        names: list[str] = []
        for key, item in form.multi_items():
            if key == "spec":
                continue
            if key not in FILE_LIST_FIELDS or isinstance(item, str):
                raise InputError(
                    key, f"multipart trainings take image files named {' or '.join(FILE_LIST_FIELDS)}", key
                )
            content = await item.read()
            data.setdefault(key, []).append(base64.b64encode(content).decode("ascii"))
            if key == "images":
                names.append(str(item.filename or f"image {len(names) + 1}")[:MAX_NAME_CHARS])
        if names and not spec_has_images and not data.get("image_names"):
            data["image_names"] = names
        return data
    if ctype not in ("application/json", ""):
        raise InputError(
            "content-type", f"send application/json or multipart/form-data, got {ctype!r}", ctype
        )
    body = await request.body()
    return json_object(body.decode("utf-8", "replace"), "body", what="a training spec")


def _submit_training(state: ApiState, data: dict[str, Any], user: str) -> JobRecord:
    # 1. Only the training kinds, for the caller only
    kind = data.get("kind")
    if kind not in TRAIN_KINDS:
        raise InputError("kind", f"must be one of {', '.join(TRAIN_KINDS)}, got {kind!r}", kind)
    spec: TrainLoraSpec | TrainDreamBoothSpec | TrainTISpec = parse_job_spec(data)  # type: ignore[assignment]
    check_spec_size(spec)
    if spec.owner not in (None, user):
        raise InputError(
            "owner", f"styles can only be trained for yourself ({user!r}), got {spec.owner!r}", spec.owner
        )
    # 2. The name must be free now (checked again when the job runs)
    registry = state.service.models.registry
    check_name_free(registry, _models_dir(state), user, spec.style_name)
    # 3. Queue it (inline images are validated and stored as the caller's uploads)
    return state.service.submit(spec, user)


@router.post(
    "/v1/trainings",
    response_model=JobRecord,
    status_code=201,
    tags=["styles"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/TrainLoraSpec"},
                            {"$ref": "#/components/schemas/TrainDreamBoothSpec"},
                            {"$ref": "#/components/schemas/TrainTISpec"},
                        ]
                    }
                },
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["spec"],
                        "properties": {
                            "spec": {"type": "string", "description": "Training spec JSON (kind train_*)."},
                            "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                            "class_images": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                            },
                        },
                    }
                },
            },
        }
    },
)
async def start_training(
    request: Request, state: ApiState = Depends(api_state), user: str = Depends(current_user)
) -> JobRecord:
    """Start training a style (`kind`: train_lora | train_dreambooth | train_ti). Answers 201 with the job;
    follow it with `/v1/jobs/{id}/events`, cancel it with `DELETE /v1/jobs/{id}`."""
    data = await _training_from_request(request)
    return await run_in_threadpool(_submit_training, state, data, user)


@router.get("/v1/trainings/presets", response_model=list[PresetInfo], tags=["styles"])
def training_presets(_user: str = Depends(current_user)) -> list[PresetInfo]:
    """portrait-character, art-style, one-image-style: the kinds they apply to, their image-count bounds and
    the field values they set (explicit spec values win)."""
    return list_presets()


# --------------------------------------------------------------------------------------------------
# my styles
# --------------------------------------------------------------------------------------------------


@router.get("/v1/styles", response_model=list[StyleOut], tags=["styles"])
def my_styles(state: ApiState = Depends(api_state), user: str = Depends(current_user)) -> list[StyleOut]:
    """The styles I trained (only mine)."""
    return [style_out(info) for info in list_styles(_models_dir(state), user)]


@router.get("/v1/styles/{name}", response_model=StyleOut, tags=["styles"])
def one_style(name: str, state: ApiState = Depends(api_state), user: str = Depends(current_user)) -> StyleOut:
    return style_out(get_style(_models_dir(state), user, name))


@router.get(
    "/v1/styles/{name}/files/{role}",
    tags=["styles"],
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}, "image/png": {}, "application/json": {}}}},
)
def style_file(
    name: str, role: str, state: ApiState = Depends(api_state), user: str = Depends(current_user)
) -> FileResponse:
    """Download a file of my style: `model` is the kohya-format LoRA (or A1111 embedding) that
    AUTOMATIC1111 and ComfyUI load as is; `peft` the diffusers/PEFT LoRA; `sample_N` the sample images."""
    models_dir = _models_dir(state)
    info = get_style(models_dir, user, name)
    path_text = info.files.get(role)
    if path_text is None:
        raise NotFoundError(
            f"style {name!r} has no file {role[:40]!r}; it has: {', '.join(sorted(info.files))}"
        )
    path = Path(path_text).resolve()
    if not path.is_file() or not path.is_relative_to(models_dir.resolve()):
        raise NotFoundError(f"the {role} file of style {name!r} is no longer stored")
    return FileResponse(
        path, media_type=_MEDIA_TYPES.get(path.suffix, "application/octet-stream"), filename=path.name
    )


@router.delete("/v1/styles/{name}", response_model=StyleOut, tags=["styles"])
def remove_style(
    name: str, state: ApiState = Depends(api_state), user: str = Depends(current_user)
) -> StyleOut:
    """Delete my style: its model file, preview, samples and registry entry. Answers the deleted style."""
    info = delete_style(state.service.models.registry, _models_dir(state), user, name)
    return style_out(info)
