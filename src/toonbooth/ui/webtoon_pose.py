"""The pose part of the web UI's Webtoon tab: a character, a pose photo or an OpenPose skeleton, the
detected skeleton shown (and editable as JSON) before anything is rendered, then the re-posed character
with its layers (skeleton drawing, mask, RGBA layer, composite over a background).

No engine code here: the preview is a `repose` JobSpec with `mode="skeleton"` (DWPose on the photo, or the
JSON drawn), the render the same kind with `mode="full"`; both go to the runtime `Service` and are followed
through its event stream (`ui.common.follow_job`). The Webtoon tab adds this section with one call:
`build_pose_section(service, settings, owner_of=...)` inside its `gr.Blocks` context.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr
from PIL import Image

from ..core.errors import ToonboothError
from ..core.images import image_to_png_bytes
from ..core.settings import Settings
from ..core.specs.repose import REPOSE_NEGATIVE_PROMPT, REPOSE_PROMPT
from .common import cancel_job, follow_job, markdown_text, png_image

DEFAULT_OWNER = "local"
SHOW_EVERY_S = 0.4
LAYER_NAMES = ("skeleton_image", "overlay", "mask", "layer", "composite")


def default_owner(request: gr.Request | None) -> str:
    name = getattr(request, "username", None) if request is not None else None
    return str(name) if name else DEFAULT_OWNER


class PoseSectionActions:
    """What the section's events do, as plain methods (testable without a browser)."""

    def __init__(self, service: Any, settings: Settings, owner_of: Callable[[gr.Request | None], str] | None = None,
                 wait_s: float = 300.0):  # fmt: skip
        self.service = service
        self.settings = settings
        self.owner_of = owner_of or default_owner
        self.wait_s = wait_s

    # --- helpers --------------------------------------------------------------------------------
    def _upload(self, image: Image.Image | None, owner: str, field: str) -> str | None:
        if image is None:
            return None
        return self.service.put_upload(image_to_png_bytes(image.convert("RGB")), owner, field=field)

    @staticmethod
    def _pose_source(pose_ref: str | None, skeleton_text: str | None) -> dict[str, Any]:
        text = (skeleton_text or "").strip()
        if text:
            try:
                return {"skeleton": json.loads(text)}
            except json.JSONDecodeError as exc:
                raise ToonboothError(f"`skeleton`: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if pose_ref is None:
            raise ToonboothError("Give a pose: upload a pose photo, or an OpenPose JSON skeleton.")
        return {"pose_image": pose_ref}

    def _size(self, size: Any) -> dict[str, Any]:
        return {"size": int(size)} if size else {}

    # --- events ---------------------------------------------------------------------------------
    def store(self, image: Image.Image | None, field: str, request: gr.Request | None = None) -> tuple[str | None, str]:
        """Store a picture as the user's upload. -> (ref, status)."""
        try:
            return self._upload(image, self.owner_of(request), field), ""
        except ToonboothError as exc:
            return None, f"**Error:** {markdown_text(str(exc))}"

    def store_character(self, image: Image.Image | None, request: gr.Request | None = None) -> tuple[str | None, str]:
        return self.store(image, "character", request)

    def store_pose(self, image: Image.Image | None, request: gr.Request | None = None) -> tuple[str | None, str]:
        return self.store(image, "pose_image", request)

    def store_background(self, image: Image.Image | None, request: gr.Request | None = None) -> tuple[str | None, str]:
        return self.store(image, "background_image", request)

    def load_json(self, file: Any) -> str:
        """An uploaded OpenPose JSON file -> its text, for the editable skeleton box."""
        if file is None:
            return ""
        path = file if isinstance(file, str) else getattr(file, "name", None)
        try:
            with open(path, encoding="utf-8") as f:  # a file Gradio saved for this upload
                return json.dumps(json.load(f), indent=1)
        except (OSError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return f"// not an OpenPose JSON file: {exc}"

    def detect(self, character_ref: str | None, pose_ref: str | None, skeleton_text: str, size: Any, hands: bool,
               face: bool, people: str, request: gr.Request | None = None):  # fmt: skip
        """The skeleton preview (nothing rendered): DWPose on the pose photo, or the JSON drawn, on the
        canvas the render will use. -> (skeleton image, skeleton JSON text, status)."""
        owner = self.owner_of(request)
        try:
            spec: dict[str, Any] = {
                "kind": "repose", "mode": "skeleton", "character": character_ref, "hands": bool(hands),
                "face": bool(face), "people": people, **self._pose_source(pose_ref, skeleton_text), **self._size(size),
            }  # fmt: skip
            record = self.service.submit(spec, owner)
            record = self.service.wait(record.id, owner, timeout=self.wait_s)
        except (ToonboothError, TimeoutError) as exc:
            return None, gr.update(), f"**Error:** {markdown_text(str(exc))}"
        if record.state != "completed" or record.output is None:
            return None, gr.update(), f"**{record.state}**: {markdown_text(record.error or '')}"
        drawing = png_image(self.service.read_output(record.id, owner, "skeleton_image"))
        pose = json.loads(self.service.read_output(record.id, owner, "skeleton"))
        info = record.output.info
        text = (f"Skeleton: {info.get('people', len(pose['people']))} person(s) from {info.get('pose_source', '?')}, "
                f"canvas {info.get('width')}x{info.get('height')}. Edit the JSON and preview again, or re-pose.")  # fmt: skip
        return drawing, json.dumps(pose, indent=1), markdown_text(text)

    def styles(self, request: gr.Request | None = None):
        """SD1.5 LoRAs this user may use (their trained styles too), for the light path."""
        try:
            entries = self.service.models.registry.list(kind="lora", owner=self.owner_of(request))
        except ToonboothError:
            entries = []
        names = sorted({e.name for e in entries if e.arch in ("sd15", "unknown")}, key=str.lower)
        return gr.update(choices=["(none)", *names])

    def render(self, character_ref: str | None, pose_ref: str | None, skeleton_text: str, size: Any, hands: bool,
               face: bool, people: str, method: str, backend: str, steps: int, cfg: float, seed: int, style: str | None,
               style_weight: float, prompt: str, negative: str, remove_bg: bool, background_ref: str | None,
               checkpoint: str = "stable-diffusion-v1-5", request: gr.Request | None = None) -> Iterator[tuple[Any, ...]]:  # fmt: skip
        """Re-pose the character, streaming progress. Yields (job_id, status, image, layers, json file)."""
        owner = self.owner_of(request)
        if character_ref is None:
            yield None, "Upload the character first.", None, [], None
            return
        try:
            loras = [] if style in (None, "", "(none)") else [{"name": style, "weight": float(style_weight)}]
            spec: dict[str, Any] = {
                "kind": "repose", "character": character_ref, "hands": bool(hands), "face": bool(face),
                "people": people, "method": method, "backend": backend, "prompt": prompt, "negative_prompt": negative,
                "background": "remove" if remove_bg else "keep", "background_image": background_ref,
                "diffusion": {"checkpoint": checkpoint or "stable-diffusion-v1-5", "sampler": "DDIM", "steps": int(steps),
                              "cfg_scale": float(cfg), "seed": int(seed), "strength": 1.0, "loras": loras},
                **self._pose_source(pose_ref, skeleton_text), **self._size(size),
            }  # fmt: skip
            record = self.service.submit(spec, owner)
        except ToonboothError as exc:
            yield None, f"**Error:** {markdown_text(str(exc))}", None, [], None
            return
        for update in follow_job(self.service, record.id, owner, timeout=self.wait_s, every_s=SHOW_EVERY_S):
            if update.final:
                record = update.record
            elif update.due:
                yield record.id, update.status(), None, [], None
        if not record.done:
            yield record.id, f"still {record.state} after {self.wait_s:.0f} s without news", None, [], None
            return
        if record.state != "completed" or record.output is None:
            yield record.id, f"**{record.state}**: {markdown_text(record.error or '')}", None, [], None
            return
        out = record.output
        names = {o.name for o in out.outputs}
        imgs = {n: png_image(self.service.read_output(record.id, owner, n)) for n in ("image", *LAYER_NAMES) if n in names}
        layers = [(imgs[n], n.replace("_", " ")) for n in LAYER_NAMES if n in imgs]
        json_path = None
        if "skeleton" in names:
            import tempfile

            with tempfile.NamedTemporaryFile("wb", suffix=".json", prefix="skeleton-", delete=False) as f:
                f.write(self.service.read_output(record.id, owner, "skeleton"))
                json_path = f.name
        seed_text = f" — seed {out.info['seed']}" if out.info.get("seed") is not None else ""
        notes = "".join(f"\n\n- {markdown_text(w)}" for w in out.warnings)
        status = f"Done ({out.backend}, {out.info.get('method', '?')}): {markdown_text(out.backend_reason)}{seed_text}{notes}"
        yield record.id, status, imgs.get("image"), layers, json_path

    def cancel(self, job_id: str | None, request: gr.Request | None = None) -> str:
        return cancel_job(self.service, job_id, self.owner_of(request))


def build_pose_section(
    service: Any, settings: Settings, owner_of: Callable[[gr.Request | None], str] | None = None
) -> gr.Column:
    """Build the pose section inside the current Gradio context (a tab or a column) and return it."""
    actions = PoseSectionActions(service, settings, owner_of)
    with gr.Column() as section:
        character_ref, pose_ref, background_ref, job_id = gr.State(None), gr.State(None), gr.State(None), gr.State(None)
        gr.Markdown(
            "### Pose change\nUpload the character and a pose — a photo (DWPose finds the person) or an OpenPose "
            "JSON skeleton. **Detect skeleton** shows the pose first (edit its JSON if you like); **Re-pose** draws "
            "the character in it."
        )
        with gr.Row():
            character = gr.Image(label="Character", type="pil", sources=["upload", "clipboard"], format="png")
            pose_photo = gr.Image(label="Pose photo", type="pil", sources=["upload", "clipboard"], format="png")
            skeleton_view = gr.Image(label="Detected skeleton (preview)", type="pil", format="png", interactive=False)
        with gr.Row():
            with gr.Column(scale=2):
                skeleton_file = gr.File(label="…or an OpenPose JSON file", file_types=[".json"], type="filepath")
                skeleton_text = gr.Code(label="Skeleton (OpenPose JSON, editable)", language="json", lines=8)
                with gr.Row():
                    hands = gr.Checkbox(True, label="Hands")
                    face = gr.Checkbox(True, label="Face")
                    people = gr.Radio(["best", "all"], value="best", label="People")
                detect_btn = gr.Button("Detect skeleton")
                pose_status = gr.Markdown("")
            with gr.Column(scale=2):
                method = gr.Radio(["auto", "animate_anyone", "controlnet"], value="auto", label="Method",
                                  info="AnimateAnyone, or SD1.5 + ControlNet openpose + IP-Adapter + your style")  # fmt: skip
                backend = gr.Radio(["auto", "neural", "classic"], value="auto", label="Backend",
                                   info="classic: the skeleton only (no re-rendering)")  # fmt: skip
                size = gr.Slider(256, 1024, value=512, step=8, label="Long side (px)")
                with gr.Accordion("More options", open=False):
                    steps = gr.Slider(1, 60, value=20, step=1, label="Steps (20-30)")
                    cfg = gr.Slider(1.0, 12.0, value=3.5, step=0.5, label="CFG scale (3.5 for AnimateAnyone)")
                    seed = gr.Number(-1, precision=0, label="Seed (-1 = random)")
                    style = gr.Dropdown(["(none)"], value="(none)", label="Style LoRA (controlnet method)")
                    style_weight = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Style weight")
                    prompt = gr.Textbox(REPOSE_PROMPT, label="Prompt (controlnet method)", lines=2)
                    negative = gr.Textbox(REPOSE_NEGATIVE_PROMPT, label="Negative prompt", lines=2)
                    checkpoint = gr.Textbox("stable-diffusion-v1-5", label="SD1.5 checkpoint (controlnet method)")
                remove_bg = gr.Checkbox(False, label="Remove the background (mask + RGBA layer)")
                background = gr.Image(label="Background to composite onto (optional)", type="pil", format="png")
                with gr.Row():
                    render_btn = gr.Button("Re-pose", variant="primary")
                    cancel_btn = gr.Button("Cancel")
                job_status = gr.Markdown("")
        with gr.Row():
            result = gr.Image(label="Re-posed character", type="pil", format="png", interactive=False)
            layers = gr.Gallery(label="Layers: skeleton, overlay, mask, layer, composite", columns=3, format="png")
            skeleton_out = gr.File(label="Skeleton JSON")

        character.change(actions.store_character, [character], [character_ref, job_status])
        pose_photo.change(actions.store_pose, [pose_photo], [pose_ref, pose_status])
        background.change(actions.store_background, [background], [background_ref, job_status])
        skeleton_file.change(actions.load_json, [skeleton_file], [skeleton_text])
        pose_inputs = [character_ref, pose_ref, skeleton_text, size, hands, face, people]
        detect_btn.click(actions.detect, pose_inputs, [skeleton_view, skeleton_text, pose_status])
        render_btn.click(
            actions.render,
            [*pose_inputs, method, backend, steps, cfg, seed, style, style_weight, prompt, negative, remove_bg,
             background_ref, checkpoint],
            [job_id, job_status, result, layers, skeleton_out],
        )  # fmt: skip
        cancel_btn.click(actions.cancel, [job_id], [job_status])
        style.focus(actions.styles, None, [style])
    return section
