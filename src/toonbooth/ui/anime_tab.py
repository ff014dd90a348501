"""The web UI tab of the anime-me studio (seed 002): click on the person in the photo (positive or
negative points, optional box), watch the mask overlay update, then generate and see the composite and
its layers (restored background, character RGBA, mask).

No engine code here: every action is an `anime` JobSpec handed to the runtime `Service` (the mask preview
is the same job kind with `mode="mask"`, which only segments — SAM's image embedding stays cached in the
worker, so each extra click is cheap). Gradio: `gr.Image.select` gives the clicked pixel (`SelectData.index`
= [x, y] in the image's own pixels).

Mount it inside the app's `gr.Blocks` (e.g. in a `gr.Tabs()`): `build_anime_tab(service, settings)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr
from PIL import Image

from ..core.errors import ToonboothError
from ..core.images import image_to_png_bytes
from ..core.settings import Settings
from ..core.specs import ANIME_NEGATIVE_PROMPT, ANIME_PROMPT
from .common import cancel_job, follow_job, markdown_text, png_image

DEFAULT_OWNER = "local"
SHOW_EVERY_S = 0.4
"""Progress is shown at most this often (and at each whole percent)."""


def default_owner(request: gr.Request | None) -> str:
    """The Gradio login name when the app has `auth`, else one local user."""
    name = getattr(request, "username", None) if request is not None else None
    return str(name) if name else DEFAULT_OWNER


def parse_box_text(text: str | None) -> list[int] | None:
    """'x0,y0,x1,y1' -> [x0, y0, x1, y1]; '' -> None. Bounds are checked by the job (field `box`)."""
    if not text or not text.strip():
        return None
    parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4:
        raise ToonboothError(f"`box`: must be x0,y0,x1,y1 in pixels, got {text!r}")
    return values


def _points_text(points: list[dict[str, Any]]) -> str:
    if not points:
        return (
            "No clicks yet: click on the person (without clicks, the person under the largest face is used)."
        )
    shown = ", ".join(f"({p['x']}, {p['y']}){'' if p['positive'] else ' not'}" for p in points)
    return f"Clicks: {shown}"


class AnimeTabActions:
    """What the tab's events do, as plain methods (testable without a browser). `wait_s`: how long a mask
    preview waits for its job, and how long a generate job may go without any event before the tab stops
    following it."""

    def __init__(
        self,
        service: Any,
        settings: Settings,
        owner_of: Callable[[gr.Request | None], str] | None = None,
        wait_s: float = 300.0,
    ):
        self.service = service
        self.settings = settings
        self.owner_of = owner_of or default_owner
        self.wait_s = wait_s

    # --- helpers ------------------------------------------------------------------------------
    def _owner(self, request: gr.Request | None) -> str:
        return self.owner_of(request)

    def _run_mask(
        self, ref: str, points: list[dict[str, Any]], box: list[int] | None, backend: str, owner: str
    ):
        spec = {
            "kind": "anime",
            "image": ref,
            "points": points,
            "box": box,
            "mode": "mask",
            "backend": backend,
        }
        record = self.service.submit(spec, owner)
        record = self.service.wait(record.id, owner, timeout=self.wait_s)
        if record.state != "completed":
            raise ToonboothError(record.error or f"the mask job ended {record.state}")
        overlay = png_image(self.service.read_output(record.id, owner, "overlay"))
        return overlay, record

    # --- events -------------------------------------------------------------------------------
    def upload(self, image: Image.Image | None, request: gr.Request | None = None):
        """New photo: store it as the user's upload; clicks start over. -> (ref, points, image, status)."""
        if image is None:
            return None, [], None, "Upload a photo with a person."
        owner = self._owner(request)
        try:
            ref = self.service.put_upload(image_to_png_bytes(image.convert("RGB")), owner, field="image")
        except ToonboothError as exc:
            return None, [], None, f"**Error:** {exc}"
        return ref, [], image, _points_text([])

    def click(
        self,
        ref: str | None,
        points: list[dict[str, Any]],
        polarity: str,
        box_text: str,
        backend: str,
        evt: gr.SelectData,
        request: gr.Request | None = None,
    ):
        """Add the clicked pixel as a point and refresh the mask overlay. -> (points, image, status)."""
        if ref is None:
            return points, gr.update(), "Upload a photo first."
        x, y = int(evt.index[0]), int(evt.index[1])
        points = [*points, {"x": x, "y": y, "positive": polarity != "not the person"}]
        return self._refresh(ref, points, box_text, backend, request)

    def undo(self, ref: str | None, points: list[dict[str, Any]], box_text: str, backend: str,
             request: gr.Request | None = None):  # fmt: skip
        return self._refresh(ref, points[:-1], box_text, backend, request)

    def clear(self, ref: str | None, request: gr.Request | None = None):
        """Forget the clicks; show the photo itself again. -> (points, image, status)."""
        if ref is None:
            return [], gr.update(), "Upload a photo first."
        photo = png_image(self.service.read_upload(ref, self._owner(request)))
        return [], photo, _points_text([])

    def preview(self, ref: str | None, points: list[dict[str, Any]], box_text: str, backend: str,
                request: gr.Request | None = None):  # fmt: skip
        return self._refresh(ref, points, box_text, backend, request)

    def _refresh(self, ref, points, box_text, backend, request):
        if ref is None:
            return points, gr.update(), "Upload a photo first."
        owner = self._owner(request)
        try:
            box = parse_box_text(box_text)
            if not points and box is None:
                photo = png_image(self.service.read_upload(ref, owner))
                return points, photo, _points_text(points)
            overlay, record = self._run_mask(ref, points, box, backend, owner)
        except (ToonboothError, TimeoutError) as exc:
            return points, gr.update(), f"{_points_text(points)}\n\n**Error:** {exc}"
        info = record.output.info if record.output else {}
        seg = (info.get("backends") or {}).get("segment", "?")
        score = info.get("score")
        extra = f", score {score:.2f}" if isinstance(score, float) else ""
        area = 100.0 * float(info.get("mask_area", 0.0))
        return points, overlay, f"{_points_text(points)}\n\nMask: {seg}{extra}, {area:.1f} % of the photo."

    def styles(self, request: gr.Request | None = None):
        """SD1.5 (or unknown-arch) LoRAs visible to this user, the user's trained styles included."""
        owner = self._owner(request)
        try:
            entries = self.service.models.registry.list(kind="lora", owner=owner)
        except ToonboothError:
            entries = []
        names = sorted({e.name for e in entries if e.arch in ("sd15", "unknown")}, key=str.lower)
        return gr.update(choices=["(none)", *names])

    def generate(
        self,
        ref: str | None,
        points: list[dict[str, Any]],
        box_text: str,
        backend: str,
        style: str | None,
        style_weight: float,
        trigger: str,
        prompt: str,
        negative_prompt: str,
        strength: float,
        steps: int,
        seed: int,
        harmonize: float,
        edge_line: int,
        request: gr.Request | None = None,
    ) -> Iterator[tuple[Any, ...]]:
        """Run the whole job, streaming its progress. Yields (job_id, status, composite, layers)."""
        if ref is None:
            yield None, "Upload a photo first.", None, []
            return
        owner = self._owner(request)
        try:
            spec: dict[str, Any] = {
                "kind": "anime", "image": ref, "points": points, "box": parse_box_text(box_text),
                "mode": "full", "backend": backend, "style": None if style in (None, "", "(none)") else style,
                "style_weight": float(style_weight), "trigger": trigger or None, "prompt": prompt,
                "negative_prompt": negative_prompt, "strength": float(strength), "steps": int(steps),
                "seed": int(seed), "harmonize": float(harmonize), "edge_line_px": int(edge_line),
            }  # fmt: skip
            record = self.service.submit(spec, owner)
        except ToonboothError as exc:
            yield None, f"**Error:** {exc}", None, []
            return
        for update in follow_job(self.service, record.id, owner, timeout=self.wait_s, every_s=SHOW_EVERY_S):
            if update.final:
                record = update.record
            elif update.due:
                yield record.id, update.status(), None, []
        if not record.done:
            yield record.id, f"still {record.state} after {self.wait_s:.0f} s without news", None, []
            return
        if record.state != "completed" or record.output is None:
            yield record.id, f"**{record.state}**: {markdown_text(record.error or '')}", None, []
            return
        out = record.output
        imgs = {o.name: png_image(self.service.read_output(record.id, owner, o.name)) for o in out.outputs}
        layers = [(imgs[n], n) for n in ("background", "character", "mask") if n in imgs]
        stages = ", ".join(f"{k}: {v}" for k, v in (out.info.get("backends") or {}).items())
        seed_text = f" — seed {out.info['seed']}" if "seed" in out.info else ""
        notes = "".join(f"\n\n- {w}" for w in out.warnings)
        yield record.id, f"Done ({out.backend}; {stages}){seed_text}{notes}", imgs.get("composite"), layers

    def cancel(self, job_id: str | None, request: gr.Request | None = None) -> str:
        """Cancel the running job. -> status text."""
        return cancel_job(self.service, job_id, self._owner(request))


def build_anime_tab(
    service: Any,
    settings: Settings,
    owner_of: Callable[[gr.Request | None], str] | None = None,
) -> gr.Tab:
    """Build the "Anime-me" tab inside the current `gr.Blocks` context and return it.

    `owner_of(request)` names the user a request acts for (default: the Gradio login, else "local")."""
    actions = AnimeTabActions(service, settings, owner_of)
    with gr.Tab("Anime-me") as tab:
        ref = gr.State(None)
        points = gr.State([])
        job_id = gr.State(None)
        gr.Markdown(
            "Click on the person to add points (choose *not the person* to remove a part), watch the mask, "
            "then **Generate**: the person is erased from the photo, redrawn as an anime character and put back."
        )
        with gr.Row():
            with gr.Column(scale=3):
                photo = gr.Image(
                    label="Photo — click on the person", type="pil", sources=["upload", "clipboard"],
                    format="png", interactive=True,
                )  # fmt: skip
                with gr.Row():
                    polarity = gr.Radio(
                        ["the person", "not the person"], value="the person", label="A click marks"
                    )
                    box = gr.Textbox(label="Box (optional) x0,y0,x1,y1", placeholder="e.g. 40,10,380,512")
                with gr.Row():
                    undo_btn = gr.Button("Undo click")
                    clear_btn = gr.Button("Clear clicks")
                    preview_btn = gr.Button("Preview mask")
                status = gr.Markdown(_points_text([]))
            with gr.Column(scale=2):
                backend = gr.Radio(
                    ["auto", "neural", "classic"], value="auto", label="Backend",
                    info="auto: SAM / LaMa / SD1.5 where their weights are installed, else GrabCut / Telea / toon.",
                )  # fmt: skip
                style = gr.Dropdown(["(none)"], value="(none)", label="Style (LoRA, your trained styles too)")
                style_weight = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Style weight")
                trigger = gr.Textbox(label="Trigger word", placeholder="the style's token, e.g. sks")
                prompt = gr.Textbox(ANIME_PROMPT, label="Prompt", lines=2)
                with gr.Accordion("More options", open=False):
                    negative = gr.Textbox(ANIME_NEGATIVE_PROMPT, label="Negative prompt", lines=2)
                    strength = gr.Slider(0.05, 1.0, value=0.6, step=0.05, label="Strength")
                    steps = gr.Slider(1, 60, value=25, step=1, label="Steps")
                    seed = gr.Number(-1, precision=0, label="Seed (-1 = random)")
                    harmonize = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Colour harmony")
                    edge_line = gr.Slider(0, 8, value=0, step=1, label="Outline (px)")
                with gr.Row():
                    gen_btn = gr.Button("Generate", variant="primary")
                    cancel_btn = gr.Button("Cancel")
                job_status = gr.Markdown("")
        with gr.Row():
            composite = gr.Image(label="Composite", type="pil", format="png", interactive=False)
            layers = gr.Gallery(label="Layers: background, character, mask", columns=3, format="png")

        view = [points, photo, status]
        photo.upload(actions.upload, [photo], [ref, points, photo, status])
        photo.clear(lambda: (None, [], _points_text([])), None, [ref, points, status])
        photo.select(actions.click, [ref, points, polarity, box, backend], view)
        undo_btn.click(actions.undo, [ref, points, box, backend], view)
        clear_btn.click(actions.clear, [ref], view)
        preview_btn.click(actions.preview, [ref, points, box, backend], view)
        tab.select(actions.styles, None, [style])
        gen_btn.click(
            actions.generate,
            [ref, points, box, backend, style, style_weight, trigger, prompt, negative, strength, steps, seed,
             harmonize, edge_line],
            [job_id, job_status, composite, layers],
        )  # fmt: skip
        cancel_btn.click(actions.cancel, [job_id], [job_status])
    return tab
