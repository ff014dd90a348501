"""The web UI tab of the makeup studio (seed 004): your photo and the reference side by side, one slider per
region (lips, eye shadow, brows, skin / base, blush), a before / after slider on the result, the regions that
changed, and warnings about the reference before anything heavy runs.

No engine code here: every action is a `makeup` JobSpec handed to the runtime `Service`.
- A new photo or a slider change runs a preview: the classic backend (a fraction of a second) — or, once a
  neural result exists for this pair of photos, a re-blend of its neural layer with the new intensities
  (`reblend_from`: no diffusion, so "lips only" or "eyes at half" shows at once). The preview also brings
  the reference's quality warnings.
- **Apply makeup** runs the chosen backend (auto / neural / classic) with progress and cancel.

The before / after slider is plain HTML in a `gr.HTML` (two stacked images, the upper one clipped to the
slider's position by a small `js_on_load` handler; https://www.gradio.app/docs/gradio/html).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr
from PIL import Image

from ..core.errors import ToonboothError
from ..core.images import image_to_png_bytes
from ..core.settings import Settings
from ..core.specs import MakeupIntensity
from .common import cancel_job, follow_job, markdown_text, png_image

DEFAULT_OWNER = "local"
REGIONS = ("lips", "eyes", "brows", "skin", "blush")
LABELS = {"lips": "Lips", "eyes": "Eye shadow", "brows": "Brows", "skin": "Skin / base", "blush": "Blush"}
SHOW_MAX_SIDE = 640
"""Long side of the images inside the before / after slider (the full-size result is downloadable)."""
SLIDER_JS = """
element.addEventListener('input', function (e) {
  var t = e.target;
  if (!t || !t.classList || !t.classList.contains('tb-ba-range')) return;
  var box = t.closest('.tb-ba');
  var top = box ? box.querySelector('.tb-ba-after') : null;
  if (top) top.style.clipPath = 'inset(0 ' + (100 - Number(t.value)) + '% 0 0)';
});
"""


def default_owner(request: gr.Request | None) -> str:
    name = getattr(request, "username", None) if request is not None else None
    return str(name) if name else DEFAULT_OWNER


def _data_url(img: Image.Image) -> str:
    img = img.convert("RGB")
    scale = min(1.0, SHOW_MAX_SIDE / max(img.size))
    if scale < 1.0:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def before_after_html(before: Image.Image | None, after: Image.Image | None, note: str = "") -> str:
    """The before / after slider: the made-up result over the photo, shown left of the handle."""
    if before is None or after is None:
        return f'<div class="tb-ba-empty" style="color:#6b7280">{html.escape(note or "No result yet.")}</div>'
    return (
        '<div class="tb-ba" style="max-width:100%">'
        '<div style="position:relative;display:inline-block;max-width:100%">'
        f'<img class="tb-ba-before" alt="before" src="{_data_url(before)}" style="display:block;max-width:100%">'
        f'<img class="tb-ba-after" alt="after" src="{_data_url(after)}" style="position:absolute;top:0;left:0;'
        'width:100%;height:100%;clip-path:inset(0 50% 0 0)"></div>'
        '<input class="tb-ba-range" type="range" min="0" max="100" value="50" style="width:100%" '
        'aria-label="after / before">'
        '<div style="display:flex;justify-content:space-between;font-size:0.85em;color:#6b7280">'
        "<span>◀ after</span><span>before ▶</span></div></div>"
    )


def changes_markdown(info: dict[str, Any], warnings: list[str]) -> str:
    """The job's backend, which regions changed (mean colour change per region) and the warnings."""
    lines = []
    backends = info.get("backends") or {}
    if backends:
        lines.append("**Ran:** " + ", ".join(f"{k}: {markdown_text(str(v))}" for k, v in backends.items()))
    changes = info.get("changes") or {}
    changed = info.get("changed") or []
    if changes:
        parts = [f"{LABELS.get(k, k)} ΔE {float(v.get('delta_e', 0.0)):.1f}" for k, v in changes.items() if k in changed]
        lines.append("**Changed:** " + (", ".join(parts) if parts else "nothing visible"))
    for w in warnings:
        lines.append(f"⚠ {markdown_text(w)}")
    return "  \n".join(lines)


class MakeupTabActions:
    """What the tab's events do, as plain methods (testable without a browser)."""

    def __init__(self, service: Any, settings: Settings, owner_of: Callable[[gr.Request | None], str] | None = None,
                 wait_s: float = 300.0):  # fmt: skip
        self.service = service
        self.settings = settings
        self.owner_of = owner_of or default_owner
        self.wait_s = wait_s

    # --- helpers ------------------------------------------------------------------------------
    def _owner(self, request: gr.Request | None) -> str:
        return self.owner_of(request)

    @staticmethod
    def _levels(values: tuple[float, ...]) -> dict[str, float]:
        return {name: float(v) for name, v in zip(REGIONS, values, strict=True)}

    def _store(self, image: Image.Image | None, owner: str, field: str) -> str | None:
        if image is None:
            return None
        return self.service.put_upload(image_to_png_bytes(image.convert("RGB")), owner, field=field)

    def _show(self, record: Any, owner: str, src_ref: str) -> tuple[str, Image.Image | None, str]:
        out = record.output
        before = png_image(self.service.read_upload(src_ref, owner))
        after = png_image(self.service.read_output(record.id, owner, "result"))
        overlay = png_image(self.service.read_output(record.id, owner, "overlay"))
        return before_after_html(before, after), overlay, changes_markdown(out.info, out.warnings)

    # --- events -------------------------------------------------------------------------------
    def upload(self, image: Image.Image | None, field: str, request: gr.Request | None = None):
        """Store a new source / reference photo. -> (ref, layer state reset, status)."""
        if image is None:
            return None, None, ""
        try:
            return self._store(image, self._owner(request), field), None, ""
        except ToonboothError as exc:
            return None, None, f"**Error:** {markdown_text(str(exc))}"

    def upload_source(self, image: Image.Image | None, request: gr.Request | None = None):
        return self.upload(image, "source", request)

    def upload_reference(self, image: Image.Image | None, request: gr.Request | None = None):
        return self.upload(image, "reference", request)

    def preview(self, src_ref: str | None, ref_ref: str | None, layer: dict[str, str] | None, *values: Any,
                request: gr.Request | None = None):  # fmt: skip
        """Classic preview, or a re-blend of the neural layer when there is one for these photos.
        -> (before/after html, overlay, status)."""
        if not src_ref or not ref_ref:
            return before_after_html(None, None, "Add your photo and a reference photo."), None, ""
        owner = self._owner(request)
        spec: dict[str, Any] = {"kind": "makeup", "source": src_ref, "intensity": self._levels(values)}
        reblend = bool(layer and layer.get("source") == src_ref and layer.get("reference") == ref_ref)
        if reblend:
            spec.update(reblend_from=layer["layer"], backend="auto")  # type: ignore[index]
        else:
            spec.update(reference=ref_ref, backend="classic")
        try:
            record = self.service.submit(spec, owner)
            record = self.service.wait(record.id, owner, timeout=self.wait_s)
        except (ToonboothError, TimeoutError) as exc:
            return gr.skip(), gr.skip(), f"**Error:** {markdown_text(str(exc))}"
        if record.state != "completed" or record.output is None:
            return gr.skip(), gr.skip(), f"**{record.state}**: {markdown_text(record.error or '')}"
        page, overlay, text = self._show(record, owner, src_ref)
        kind = "re-blend of the neural result" if reblend else "classic preview"
        return page, overlay, f"*{kind}*  \n{text}"

    def apply(self, src_ref: str | None, ref_ref: str | None, backend: str, align: bool, strength: float,
              steps: float, seed: float, checkpoint: str, *values: Any,
              request: gr.Request | None = None) -> Iterator[tuple[Any, ...]]:  # fmt: skip
        """The full job with progress. Yields (job_id, status, before/after html, overlay, layer state)."""
        if not src_ref or not ref_ref:
            yield None, "Add your photo and a reference photo.", gr.skip(), gr.skip(), gr.skip()
            return
        owner = self._owner(request)
        spec: dict[str, Any] = {
            "kind": "makeup", "source": src_ref, "reference": ref_ref, "backend": backend,
            "align_reference": bool(align), "intensity": self._levels(values),
        }  # fmt: skip
        diffusion = {"strength": float(strength), "steps": int(steps), "seed": int(seed)}
        if checkpoint and checkpoint.strip():
            diffusion["checkpoint"] = checkpoint.strip()
        spec["diffusion"] = diffusion  # over the makeup recipe's defaults
        try:
            record = self.service.submit(spec, owner)
        except ToonboothError as exc:
            yield None, f"**Error:** {markdown_text(str(exc))}", gr.skip(), gr.skip(), gr.skip()
            return
        for update in follow_job(self.service, record.id, owner, timeout=self.wait_s, every_s=0.4):
            if update.final:
                record = update.record
            elif update.due:
                yield record.id, update.status(), gr.skip(), gr.skip(), gr.skip()
        if not record.done:
            yield record.id, f"still {record.state} after {self.wait_s:.0f} s without news", gr.skip(), gr.skip(), gr.skip()
            return
        if record.state != "completed" or record.output is None:
            yield record.id, f"**{record.state}**: {markdown_text(record.error or '')}", gr.skip(), gr.skip(), gr.skip()
            return
        page, overlay, text = self._show(record, owner, src_ref)
        layer = next((o.ref for o in record.output.outputs if o.name == "neural_layer"), None)
        state = {"source": src_ref, "reference": ref_ref, "layer": layer} if layer else None
        note = " Sliders now re-blend this result without diffusion." if layer else ""
        status = f"Done ({markdown_text(record.output.backend_reason)}).{note}  \n{text}"
        yield record.id, status, page, overlay, state

    def cancel(self, job_id: str | None, request: gr.Request | None = None) -> str:
        return cancel_job(self.service, job_id, self._owner(request))


def build_makeup_tab(service: Any, settings: Settings, owner_of: Callable[[gr.Request | None], str] | None = None) -> gr.Tab:
    """Build the "Makeup" tab inside the current `gr.Blocks` context and return it."""
    actions = MakeupTabActions(service, settings, owner_of)
    defaults = MakeupIntensity()
    with gr.Tab("Makeup", id="makeup") as tab:
        src_ref, ref_ref, layer, job_id = gr.State(None), gr.State(None), gr.State(None), gr.State(None)
        gr.Markdown(
            "Copy the makeup of a reference photo onto your face. Move a slider to change one region only; "
            "after **Apply makeup** with the neural backend, the sliders re-blend that result instantly."
        )
        with gr.Row():
            source = gr.Image(label="Your photo", type="pil", sources=["upload", "webcam", "clipboard"],
                              format="png", elem_id="tb-makeup-source")  # fmt: skip
            reference = gr.Image(label="Reference makeup", type="pil", sources=["upload", "clipboard"],
                                 format="png", elem_id="tb-makeup-reference")  # fmt: skip
        with gr.Row():
            sliders = [
                gr.Slider(0.0, 1.5, value=getattr(defaults, name), step=0.05, label=LABELS[name],
                          elem_id=f"tb-makeup-{name}")  # fmt: skip
                for name in REGIONS
            ]
        with gr.Row():
            with gr.Column(scale=2):
                with gr.Accordion("Options", open=False):
                    backend = gr.Radio(["auto", "neural", "classic"], value="auto", label="Backend",
                                       info="auto: Stable-Makeup when its weights are installed, else classic.")  # fmt: skip
                    align = gr.Checkbox(False, label="Align the reference to my face first")
                    strength = gr.Slider(0.05, 1.0, value=0.6, step=0.05, label="Strength (neural, img2img)")
                    steps = gr.Slider(1, 60, value=30, step=1, label="Steps (neural)")
                    seed = gr.Number(-1, precision=0, label="Seed (-1 = random)")
                    checkpoint = gr.Textbox("", label="SD1.5 checkpoint (empty = default)")
                with gr.Row():
                    apply_btn = gr.Button("Apply makeup", variant="primary", elem_id="tb-makeup-apply")
                    cancel_btn = gr.Button("Cancel")
                status = gr.Markdown("", elem_id="tb-makeup-status")
            with gr.Column(scale=3):
                compare = gr.HTML(before_after_html(None, None), js_on_load=SLIDER_JS, elem_id="tb-makeup-compare")
                overlay = gr.Image(label="Changed regions", type="pil", format="png", interactive=False)

        preview_inputs = [src_ref, ref_ref, layer, *sliders]
        preview_outputs = [compare, overlay, status]
        source.upload(actions.upload_source, [source], [src_ref, layer, status]).then(
            actions.preview, preview_inputs, preview_outputs)  # fmt: skip
        reference.upload(actions.upload_reference, [reference], [ref_ref, layer, status]).then(
            actions.preview, preview_inputs, preview_outputs)  # fmt: skip
        source.clear(lambda: (None, None), None, [src_ref, layer])
        reference.clear(lambda: (None, None), None, [ref_ref, layer])
        for slider in sliders:
            slider.release(actions.preview, preview_inputs, preview_outputs)
        apply_btn.click(
            actions.apply, [src_ref, ref_ref, backend, align, strength, steps, seed, checkpoint, *sliders],
            [job_id, status, compare, overlay, layer],
        )  # fmt: skip
        cancel_btn.click(actions.cancel, [job_id], [status])
    return tab
