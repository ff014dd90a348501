"""AUTOMATIC1111 "Extras" (the `extras` job kind): upscaling by a factor or to a size with one or two
upscalers, as `scripts/postprocessing_upscale.py` does it.

Per picture: `upscaler_1` (None = no upscaling at all) upscales by `upscaling_resize` (resize_mode 0) or
by max(target_w / w, target_h / h) (resize_mode 1, then centred on a target-size canvas when
`upscaling_crop`); `upscaler_2` upscales the original the same way and is blended over the first result at
`extras_upscaler_2_visibility`. A1111's upscaler semantics (`nets.esrgan.Upscaler.upscale`): the result
of a factor s is `int(w*s)//8*8` x `int(h*s)//8*8`. The pictures keep their own A1111 `parameters`
text; the postprocessing settings (A1111's `postprocessing` text) are in the job's `infotexts`. Face
restoration (GFPGAN / CodeFormer visibility) is not available and is reported as ignored.
"""

from __future__ import annotations

from typing import Any, ClassVar

from PIL import Image

from ..core.artifacts import ImageArtifact
from ..core.images import format_a1111_parameters
from ..core.specs import ExtrasSpec
from ..models.manager import ModelManager
from .base import Engine, EngineContext, EngineOutput


class ExtrasOutput(EngineOutput):
    """The processed pictures (image-0, image-1, ...) and A1111's postprocessing text of each."""

    primary: ClassVar[str] = "images"
    item_names: ClassVar[dict[str, str]] = {"images": "image-{i}"}

    images: list[ImageArtifact]
    infotexts: list[str]
    names: list[str]
    ignored: list[str]


def postprocess_text(info: dict[str, Any]) -> str:
    """A1111's `postprocessing` text: `Key: value, ...` (values quoted where needed)."""
    return format_a1111_parameters("", "", info).strip()


class ExtrasEngine(Engine[ExtrasSpec, ExtrasOutput]):
    kind = "extras"
    Spec = ExtrasSpec
    Output = ExtrasOutput

    def check_inputs(self, spec: ExtrasSpec, models: ModelManager, owner: str | None) -> None:
        from ..nets.esrgan import check_upscaler_name

        check_upscaler_name(models, spec.upscaler_1, owner, field="upscaler_1")
        if spec.extras_upscaler_2_visibility > 0:
            check_upscaler_name(models, spec.upscaler_2, owner, field="upscaler_2")

    def run(self, spec: ExtrasSpec, ctx: EngineContext) -> ExtrasOutput:
        from ..core.images import read_png_parameters
        from ..nets.esrgan import resolve_upscaler

        # 1. Check inputs, load the pictures and the upscalers (cached)
        self.check_inputs(spec, ctx.models, ctx.owner)
        pictures = [ctx.load_image(ref, field=f"images.{i}") for i, ref in enumerate(spec.images)]
        originals = [self._parameters(ctx, ref, read_png_parameters) for ref in spec.images]
        up1 = resolve_upscaler(ctx.models, spec.upscaler_1, ctx.owner, field="upscaler_1")
        up2 = None
        if spec.extras_upscaler_2_visibility > 0 and spec.upscaler_2.strip().lower() != "none":
            up2 = resolve_upscaler(ctx.models, spec.upscaler_2, ctx.owner, field="upscaler_2")
        ignored: list[str] = []
        warnings: list[str] = []
        for name in ("gfpgan_visibility", "codeformer_visibility"):
            if getattr(spec, name) > 0:
                ignored.append(name)
                warnings.append(f"`{name}` not honoured: no face restoration model is available")

        # 2. Upscale each picture (progress per picture; cancel between tiles)
        out_images: list[ImageArtifact] = []
        infotexts: list[str] = []
        n = len(pictures)
        ctx.progress(0, n, stage="upscale")
        for i, picture in enumerate(pictures):
            info: dict[str, Any] = {}
            image = picture
            if up1.name != "None":
                image = self._upscale(picture, spec, up1, info, ctx)
                info["Postprocess upscaler"] = up1.name
                if up2 is not None:
                    second = self._upscale(picture, spec, up2, info, ctx)
                    if second.mode != image.mode:
                        second = second.convert(image.mode)
                    image = Image.blend(image, second, spec.extras_upscaler_2_visibility)
                    info["Postprocess upscaler 2"] = up2.name
            out_images.append(ImageArtifact(image, originals[i]))
            infotexts.append(postprocess_text(info))
            ctx.progress(i + 1, n, stage="upscale")
        for msg in warnings:
            ctx.log(msg, warning=True)
        names = [spec.names[i] if i < len(spec.names) else f"image-{i}" for i in range(n)]
        backend = "neural" if any(u is not None and u.network is not None for u in (up1, up2)) else "classic"
        reason = ", ".join(u.name for u in (up1, up2) if u is not None) or "no upscaling"
        return ExtrasOutput(
            images=out_images, infotexts=infotexts, names=names, ignored=ignored, backend=backend,
            backend_reason=f"upscaler: {reason}", warnings=warnings,
        )  # fmt: skip

    @staticmethod
    def _parameters(ctx: EngineContext, ref: str, read: Any) -> str | None:
        """The picture's own A1111 `parameters` text (kept on the result, as A1111 keeps its PNG info)."""
        import base64

        try:
            if isinstance(ref, str) and ref.startswith("blob:"):
                data = ctx.storage.get(ref, field="images")
            else:
                text = ref.split(",", 1)[1] if ref.startswith("data:") else ref
                data = base64.b64decode(text, validate=False)
            return read(data) if data[:8] == b"\x89PNG\r\n\x1a\n" else None
        except Exception:  # a picture without readable text chunks simply has none
            return None

    @staticmethod
    def _upscale(image: Image.Image, spec: ExtrasSpec, upscaler: Any, info: dict[str, Any], ctx: EngineContext) -> Image.Image:
        if spec.resize_mode == 1:
            tw, th = spec.upscaling_resize_w, spec.upscaling_resize_h
            scale = max(tw / image.width, th / image.height)
            info["Postprocess upscale to"] = f"{tw}x{th}"
        else:
            scale = spec.upscaling_resize
            info["Postprocess upscale by"] = scale
        result = upscaler.upscale(image, scale, check=ctx.check_canceled)
        if spec.resize_mode == 1 and spec.upscaling_crop:
            canvas = Image.new("RGB", (tw, th))
            canvas.paste(result, box=(tw // 2 - result.width // 2, th // 2 - result.height // 2))
            result = canvas
            info["Postprocess crop to"] = f"{result.width}x{result.height}"
        return result


__all__ = ["ExtrasEngine", "ExtrasOutput", "postprocess_text"]
