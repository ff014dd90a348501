"""The web UI: Gradio Blocks (https://www.gradio.app/docs/gradio/blocks), mounted by the API server at `/ui`.

Tabs: **Memoji** (the seed 000 "My Memoji" page: photo upload with preview, gender, expression, glasses,
optional e-mail, Generate, a progress bar that follows the job, the result with download, the backend
used and why), **My results** (a gallery of my finished jobs), **Models & status**. Handlers only call
the runtime `Service` (submit, events, outputs); no engine code lives here.
"""

from __future__ import annotations

import html
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from ..core.errors import ToonboothError
from ..core.fs import atomic_write_bytes
from ..core.settings import Settings
from .anime_tab import build_anime_tab
from .common import follow_job, progress_html
from .makeup_tab import build_makeup_tab  # issue 14: makeup tab
from .talk_tab import build_talk_tab  # issue 13: talking emoticon tab
from .toon_tab import build_toon_tab  # issue 12: toon studio tab
from .train_tab import build_train_tab  # issue 5: training tab
from .webtoon_tab import build_webtoon_tab  # issue 11: webtoon studio

GENDERS = ["unspecified", "male", "female"]
EXPRESSIONS = ["smiling", "crying", "neutral", "angry", "laughing", "sad"]


class MemojiUI:
    """The handlers, bound to one service; `user_for(username)` maps the signed-in name to the owner."""

    def __init__(self, service: Any, settings: Settings, user_for: Callable[[str | None], str]):
        self.service = service
        self.settings = settings
        self.user_for = user_for
        self.out_dir = Path(tempfile.mkdtemp(prefix="toonbooth-ui-"))

    def _user(self, request: gr.Request | None) -> str:
        try:
            return self.user_for(getattr(request, "username", None) if request is not None else None)
        except ToonboothError as exc:
            raise gr.Error(str(exc)) from None

    def _write(self, job_id: str, name: str, data: bytes) -> str:
        path = self.out_dir / f"{job_id}-{name}.png"
        if not path.exists():
            atomic_write_bytes(path, data, fsync=False)  # a cache Gradio serves from: complete, not durable
        return str(path)

    # --- Memoji ---------------------------------------------------------------------------------
    def generate(
        self,
        photo: str | None,
        gender: str,
        expression: str,
        glasses: bool,
        email: str,
        backend: str,
        checkpoint: str,
        controlnet: str,
        lora: str,
        steps: float,
        request: gr.Request,
    ) -> Iterator[tuple[Any, Any, Any, Any]]:
        user = self._user(request)
        if not photo:
            raise gr.Error("Upload a photo first.")
        # 1. Store the photo and queue the job (the service validates everything)
        spec: dict[str, Any] = {
            "kind": "avatar", "gender": gender, "expression": expression, "glasses": bool(glasses),
            "email": email.strip() or None, "backend": backend, "checkpoint": checkpoint.strip(),
            "controlnet": controlnet.strip(), "steps": int(steps),
            "loras": [{"name": lora.strip(), "weight": 1.0}] if lora.strip() else [],
        }  # fmt: skip
        if self.settings.ui_max_side:
            spec["max_side"] = self.settings.ui_max_side
        try:
            spec["image"] = self.service.put_upload(Path(photo).read_bytes(), user, field="photo")
            record = self.service.submit(spec, user)
        except ToonboothError as exc:
            raise gr.Error(str(exc)) from None
        yield progress_html(0, "queued"), None, None, "Queued…"
        # 2. Follow its events; the bar moves with each progress event (throttled)
        for update in follow_job(self.service, record.id, user, every_s=0.5, min_percent=1.0):
            if update.final:
                record = update.record
            elif update.due and update.event.type == "started":
                yield progress_html(0, "started"), gr.skip(), gr.skip(), f"Running (job `{record.id}`)…"
            elif update.due and update.event.type == "progress":
                text = f"{update.stage or 'working'} {update.step}/{update.total}"
                yield progress_html(update.percent, text), gr.skip(), gr.skip(), gr.skip()
        # 3. Show the result, its download, and which backend made it
        if record.state != "completed" or record.output is None:
            why = html.escape(record.error or record.state)
            yield progress_html(update.percent, record.state), None, None, f"**{record.state}**: {why}"
            return
        outs = record.output.outputs
        out = next((o for o in outs if o.name == record.kind), outs[0])  # avatar: the final image, not pass1
        path = self._write(record.id, out.name, self.service.read_output(record.id, user, out.name))
        note = f"**Backend:** {record.output.backend} — {html.escape(record.output.backend_reason)}"
        if record.delivery:
            note += f"  \n**E-mail:** {record.delivery.get('status')} {html.escape(str(record.delivery.get('error') or ''))}"
        if record.output.warnings:
            note += "  \n" + "  \n".join(f"warning: {html.escape(w)}" for w in record.output.warnings)
        yield progress_html(100, "done"), path, path, note

    # --- My results -------------------------------------------------------------------------------
    def gallery(self, request: gr.Request) -> list[tuple[str, str]]:
        user = self._user(request)
        items = []
        for record in self.service.list(user, limit=60):
            if record.state != "completed" or record.output is None:
                continue
            for out in record.output.outputs:
                try:
                    data = self.service.read_output(record.id, user, out.name)
                except ToonboothError:
                    continue
                caption = f"{record.kind} · {out.name} · {record.output.backend}"
                items.append((self._write(record.id, out.name, data), caption))
        return items

    # --- Models & status --------------------------------------------------------------------------
    def status(self, request: gr.Request) -> tuple[str, list[list[Any]]]:
        user = self._user(request)
        svc = self.service
        running = [r for r in svc.running() if r.owner == user]
        lines = [
            f"**Signed in as:** `{html.escape(user)}`",
            f"**Queue:** {svc.queued_count()} queued, {len(svc.running())} running "
            f"({len(running)} of them yours) on {len(getattr(svc, 'runners', []))} runner(s)",
            f"**Device:** `{html.escape(self.settings.device)}` · **storage:** `{self.settings.storage}`",
        ]
        rows = [
            [e.kind, e.name, e.arch, e.layout, "yes" if e.usable else f"no: {e.refused}"]
            for e in svc.models.registry.list(owner=user, include_refused=True)
        ]
        return "  \n".join(lines), rows

    def rescan(self, request: gr.Request) -> tuple[str, list[list[Any]]]:
        self._user(request)
        self.service.models.registry.scan()
        return self.status(request)


def build_ui(service: Any, settings: Settings, *, user_for: Callable[[str | None], str]) -> gr.Blocks:
    """The Blocks app; the server mounts it with `gr.mount_gradio_app`."""
    ui = MemojiUI(service, settings, user_for)
    with gr.Blocks(title="toonbooth", analytics_enabled=False) as demo:
        gr.Markdown("# toonbooth\nYour photo, as your own character.")
        with gr.Tab("Memoji", id="memoji"):
            with gr.Row():
                with gr.Column():
                    photo = gr.Image(
                        label="Photo", type="filepath", sources=["upload", "webcam"], elem_id="tb-photo"
                    )
                    gender = gr.Radio(GENDERS, value="unspecified", label="Gender", elem_id="tb-gender")
                    expression = gr.Dropdown(
                        EXPRESSIONS, value="smiling", label="Expression", elem_id="tb-expression"
                    )
                    glasses = gr.Checkbox(False, label="Glasses", elem_id="tb-glasses")
                    email = gr.Textbox(
                        label="E-mail (optional: the result is sent there)", elem_id="tb-email"
                    )
                    with gr.Accordion("Advanced", open=False):
                        backend = gr.Radio(
                            ["auto", "neural", "classic"], value=settings.ui_backend, label="Backend"
                        )
                        checkpoint = gr.Textbox(settings.ui_checkpoint, label="Checkpoint (SDXL)")
                        controlnet = gr.Textbox(settings.ui_controlnet, label="ControlNet (canny, SDXL)")
                        lora = gr.Textbox(settings.ui_lora, label="LoRA (weight 1; empty = none)")
                        steps = gr.Slider(1, 150, value=settings.ui_steps, step=1, label="Steps")
                    run = gr.Button("Generate", variant="primary", elem_id="tb-generate")
                with gr.Column():
                    bar = gr.HTML(progress_html(0, "idle"), elem_id="tb-progress-box")
                    result = gr.Image(label="Avatar", type="filepath", interactive=False, elem_id="tb-result",
                                      buttons=["download"])  # fmt: skip
                    download = gr.File(label="Download PNG", interactive=False, elem_id="tb-download")
                    info = gr.Markdown(elem_id="tb-info")
            run.click(
                ui.generate,
                inputs=[
                    photo,
                    gender,
                    expression,
                    glasses,
                    email,
                    backend,
                    checkpoint,
                    controlnet,
                    lora,
                    steps,
                ],
                outputs=[bar, result, download, info],
                show_progress="hidden",
                api_visibility="private",
            )
        build_anime_tab(service, settings, owner_of=ui._user)
        build_talk_tab(service, settings, owner_of=ui._user)  # issue 13: talking emoticon tab
        build_makeup_tab(service, settings, owner_of=ui._user)  # issue 14: makeup tab
        build_train_tab(service, settings, owner_of=ui._user)  # issue 5: training tab
        build_toon_tab(service, settings, owner_of=ui._user)  # issue 12: toon studio tab
        build_webtoon_tab(service, settings, owner_of=ui._user)  # issue 11: webtoon studio
        with gr.Tab("My results", id="gallery") as gallery_tab:
            refresh = gr.Button("Refresh")
            gallery = gr.Gallery(label="My results", columns=4, elem_id="tb-gallery")
            refresh.click(ui.gallery, outputs=gallery, api_visibility="private")
            gallery_tab.select(ui.gallery, outputs=gallery, api_visibility="private")
        with gr.Tab("Models & status", id="status") as status_tab:
            status_md = gr.Markdown(elem_id="tb-status")
            models_table = gr.Dataframe(
                headers=["kind", "name", "arch", "layout", "usable"], interactive=False
            )
            rescan = gr.Button("Rescan models folder")
            rescan.click(ui.rescan, outputs=[status_md, models_table], api_visibility="private")
            status_tab.select(ui.status, outputs=[status_md, models_table], api_visibility="private")
    return demo
