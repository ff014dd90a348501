"""ControlNet preprocessing on its own (`control_detect`): what sd-webui-controlnet's `/controlnet/detect`
returns — the control map of each image for one module (canny, invert, none, and the pose modules
`openpose`, `openpose_full`, `dw_openpose_full`, all run by DWPose here) at the preprocessor resolution
(short side `processor_res`), and for the pose modules the OpenPose JSON of each image (A1111's openpose
editor format). The same preprocessing the generate job applies to a ControlNet unit
(`vision.control.control_map`, `nets.openpose_detect.preprocess_pose`)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np

from ..core.artifacts import FileArtifact, ImageArtifact
from ..core.errors import BackendUnavailableError
from ..core.specs import ControlDetectSpec, ControlNetUnit
from ..core.specs.repose import POSE_MODULES
from ..models.infotext import plain_infotext
from ..models.manager import ModelManager
from ..models.refs import ModelRef
from .base import Engine, EngineContext, EngineOutput, check_model_names


class ControlDetectOutput(EngineOutput):
    """One control map per image (image-0, ...) and, for the pose modules, one OpenPose JSON per image."""

    primary: ClassVar[str] = "images"
    item_names: ClassVar[dict[str, str]] = {"images": "image-{i}", "poses": "pose-{i}"}
    images: list[ImageArtifact]
    poses: list[FileArtifact] = []
    module: str = ""
    found: list[bool] = []


def as_unit(spec: ControlDetectSpec) -> ControlNetUnit:
    """The spec as a ControlNet unit (no model: preprocessing only), so the generate job's code runs."""
    return ControlNetUnit(
        module=spec.module, model="(preprocessor only)", processor_res=spec.processor_res,
        threshold_a=spec.threshold_a, threshold_b=spec.threshold_b, resize_mode="Just Resize",
    )  # fmt: skip


class ControlDetectEngine(Engine[ControlDetectSpec, ControlDetectOutput]):
    kind = "control_detect"
    Spec = ControlDetectSpec
    Output = ControlDetectOutput

    def required_models(self, spec: ControlDetectSpec) -> list[ModelRef]:
        return [ModelRef("dwpose", spec.pose_model, "pose_model")] if spec.module in POSE_MODULES else []

    def check_inputs(self, spec: ControlDetectSpec, models: ModelManager, owner: str | None) -> None:
        from ..vision.control import canny_thresholds

        check_model_names(self.required_models(spec), models)
        if spec.module == "canny":
            canny_thresholds(as_unit(spec), 0)
        missing = models.missing(self.required_models(spec), owner)
        if missing:
            raise BackendUnavailableError(
                f"`module` {spec.module} runs DWPose, whose ONNX pair is not installed ({'; '.join(missing)}): "
                "`toonbooth models pull dwpose`"
            )

    def run(self, spec: ControlDetectSpec, ctx: EngineContext) -> ControlDetectOutput:
        from ..nets.openpose_detect import preprocess_pose
        from ..vision.control import control_map

        self.check_inputs(spec, ctx.models, ctx.owner)
        unit = as_unit(spec)
        pose = spec.module in POSE_MODULES
        dw = ctx.models.load("dwpose", spec.pose_model, ctx.owner) if pose else None
        images: list[ImageArtifact] = []
        poses: list[FileArtifact] = []
        found: list[bool] = []
        warnings: list[str] = []
        for i, ref in enumerate(spec.images):
            ctx.progress(i, len(spec.images), stage="detect")
            source = ctx.load_image(ref, field=f"images.{i}")
            k = spec.processor_res / min(source.width, source.height)
            w, h = max(1, round(source.width * k)), max(1, round(source.height * k))
            settings: dict[str, Any] = {"Module": spec.module, "Processor Res": spec.processor_res}
            if pose:
                pm = preprocess_pose(dw, np.asarray(source.convert("RGB")), spec.module, spec.processor_res,
                                     field=f"images.{i}")  # fmt: skip
                mapped = control_map(source, unit, 0, pm.image.shape[1], pm.image.shape[0], precomputed=pm.image)
                poses.append(FileArtifact(json.dumps(pm.json).encode("utf-8"), "application/json", ".json"))
                found.append(pm.found)
                settings["People"] = len(pm.skeleton.people) if pm.skeleton is not None else 0
                if not pm.found:
                    warnings.append(f"images.{i}: no person found; the pose map is empty (black)")
            else:
                mapped = control_map(source, unit, 0, w, h)
                found.append(True)
            images.append(ImageArtifact(mapped, plain_infotext("", settings)))
        ctx.progress(len(spec.images), len(spec.images), stage="detect")
        for w_ in warnings:
            ctx.log(w_, warning=True)
        backend = "neural" if pose else "classic"
        reason = f"DWPose {spec.pose_model}" if pose else f"OpenCV {spec.module}"
        return ControlDetectOutput(images=images, poses=poses, module=spec.module, found=found, backend=backend,
                                   backend_reason=reason, warnings=warnings)  # fmt: skip
