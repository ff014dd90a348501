"""The web UI tab of the talking emoticon (seed 003, part 2): pick or upload a face (a photo or a toon),
record the voice with the microphone or upload a recording (Gradio's audio player plays it back before
sending), generate with a live progress bar and frame previews, watch the video in the page, download the
MP4 and the WebP / GIF stickers.

No engine code here: the face and the voice are stored as the user's uploads (`Service.put_upload`, the
voice with `kind="audio"`, so a bad recording is refused before any job exists), then a `talk` JobSpec goes
to the runtime `Service`; the tab follows its events (`ui.common.follow_job`) and cancels it
(`cancel_job`). Gradio: https://www.gradio.app/docs/gradio/audio (microphone source), .../video.

Mount it inside the app's `gr.Blocks`: `build_talk_tab(service, settings, owner_of)`.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from ..core.artifacts import extension_for
from ..core.errors import ToonboothError
from ..core.fs import atomic_write_bytes
from ..core.settings import Settings
from .common import cancel_job, follow_job, markdown_text, progress_html

DEFAULT_OWNER = "local"
SHOW_EVERY_S = 0.4
BAR_ID = "tb-talk-progress"
DOWNLOADS = ("video", "sticker_webp", "sticker_gif")


def default_owner(request: gr.Request | None) -> str:
    name = getattr(request, "username", None) if request is not None else None
    return str(name) if name else DEFAULT_OWNER


def _bar(percent: float, text: str) -> str:
    return progress_html(percent, text, elem_id=BAR_ID)


class TalkTabActions:
    """What the tab's events do, as plain methods (testable without a browser). `wait_s`: how long the tab
    follows a job that sends no event before it stops following it."""

    def __init__(
        self,
        service: Any,
        settings: Settings,
        owner_of: Callable[[gr.Request | None], str] | None = None,
        wait_s: float = 600.0,
    ):
        self.service = service
        self.settings = settings
        self.owner_of = owner_of or default_owner
        self.wait_s = wait_s
        self.out_dir = Path(tempfile.mkdtemp(prefix="toonbooth-talk-ui-"))

    def _write(self, job_id: str, name: str, media_type: str, data: bytes) -> str:
        path = self.out_dir / f"{job_id}-{name}{extension_for(media_type)}"
        if not path.exists():
            atomic_write_bytes(path, data, fsync=False)  # a cache Gradio serves from: complete, not durable
        return str(path)

    def _preview(self, update: Any, owner: str) -> Image.Image | None:
        png = getattr(update.event, "preview_png", None)
        if png is None:
            try:
                png = self.service.preview(update.job_id, owner)
            except ToonboothError:
                png = None
        if not png:
            return None
        img = Image.open(io.BytesIO(png))
        img.load()
        return img

    def generate(
        self,
        face: str | None,
        voice: str | None,
        backend: str,
        toon: str,
        framing: str,
        expression: float,
        head_motion: float,
        steps: float,
        still: bool,
        cutout: bool,
        seed: float,
        request: gr.Request | None = None,
    ) -> Iterator[tuple[Any, ...]]:
        """Store the face and the voice, run the job, stream its progress. Yields (job_id, bar, status,
        preview, video, sticker, downloads)."""
        skip = gr.skip()
        if not face or not voice:
            yield (
                None,
                _bar(0, "idle"),
                "Pick a face and record or upload your voice first.",
                skip,
                skip,
                skip,
                skip,
            )
            return
        owner = self.owner_of(request)
        try:
            face_ref = self.service.put_upload(Path(face).read_bytes(), owner, field="face")
            voice_ref = self.service.put_upload(Path(voice).read_bytes(), owner, field="voice", kind="audio")
            spec: dict[str, Any] = {
                "kind": "talk", "face": face_ref, "voice": voice_ref, "backend": backend, "toon": toon,
                "framing": framing, "expression_scale": float(expression), "head_motion": float(head_motion),
                "sampling_steps": int(steps), "still": bool(still), "cutout": bool(cutout), "seed": int(seed),
            }  # fmt: skip
            record = self.service.submit(spec, owner)
        except (ToonboothError, OSError) as exc:
            yield None, _bar(0, "refused"), f"**Error:** {markdown_text(str(exc))}", skip, skip, skip, skip
            return
        yield record.id, _bar(0, "queued"), f"Queued (job `{record.id}`)…", None, None, None, None
        percent = 0.0
        for update in follow_job(self.service, record.id, owner, timeout=self.wait_s, every_s=SHOW_EVERY_S):
            if update.final:
                record = update.record
            elif update.due:
                percent = update.percent
                text = (
                    f"{update.stage or 'waiting'} {update.step}/{update.total}"
                    if update.total
                    else update.state
                )
                preview = self._preview(update, owner) if update.event.type == "progress" else None
                yield record.id, _bar(percent, text), update.status(), preview or skip, skip, skip, skip
        if not record.done:
            yield (
                record.id,
                _bar(percent, record.state),
                f"still {record.state} after {self.wait_s:.0f} s without news",
                skip,
                skip,
                skip,
                skip,
            )
            return
        if record.state != "completed" or record.output is None:
            why = markdown_text(record.error or record.state)
            yield record.id, _bar(percent, record.state), f"**{record.state}**: {why}", skip, skip, skip, skip
            return
        out = record.output
        paths = {
            o.name: self._write(
                record.id, o.name, o.media_type, self.service.read_output(record.id, owner, o.name)
            )
            for o in out.outputs
        }
        info = out.info
        timing = ""
        if isinstance(info.get("sampling"), dict):
            s = info["sampling"]
            timing = f" Motion: {s['steps']} steps × {s['windows']} window(s) in {s['seconds']:.1f} s."
        text = (
            f"Done: **{out.backend}** — {markdown_text(out.backend_reason)}  \n"
            f"{info.get('frames')} frames at {info.get('fps', 25):g} fps, rendered at "
            f"{info.get('render_fps', 0):.1f} frames/s.{timing} Seed {info.get('seed')}."
        )
        text += "".join(f"  \nwarning: {markdown_text(w)}" for w in out.warnings)
        files = [paths[n] for n in DOWNLOADS if n in paths]
        yield (record.id, _bar(100, "done"), text, paths.get("still"), paths.get("video"),
               paths.get("sticker_webp"), files)  # fmt: skip

    def cancel(self, job_id: str | None, request: gr.Request | None = None) -> str:
        return cancel_job(self.service, job_id, self.owner_of(request))


def build_talk_tab(
    service: Any,
    settings: Settings,
    owner_of: Callable[[gr.Request | None], str] | None = None,
) -> gr.Tab:
    """Build the "Talking emoticon" tab inside the current `gr.Blocks` context and return it."""
    actions = TalkTabActions(service, settings, owner_of)
    with gr.Tab("Talking emoticon", id="talk") as tab:
        job_id = gr.State(None)
        gr.Markdown(
            "Pick a face (a photo or your toon), record your voice with the microphone or upload a recording "
            "(play it back before sending), then **Generate**: the face speaks with your voice."
        )
        with gr.Row():
            with gr.Column():
                face = gr.Image(label="Face (photo or toon)", type="filepath", image_mode=None, format="png",
                                sources=["upload", "webcam", "clipboard"], elem_id="tb-talk-face")  # fmt: skip
                voice = gr.Audio(label="Your voice (record or upload; max "
                                 f"{settings.max_audio_seconds:g} s)", sources=["microphone", "upload"],
                                 type="filepath", format=None, elem_id="tb-talk-voice")  # fmt: skip
                backend = gr.Radio(["auto", "neural", "classic"], value="auto", label="Backend",
                                   info="auto: LivePortrait + JoyVASA when installed, else classic (no weights).")  # fmt: skip
                toon = gr.Radio(["classic", "none"], value="classic", label="Toon",
                                info="classic: cartoon filter first; none: animate the face as given.")  # fmt: skip
                framing = gr.Radio(["face", "full"], value="face", label="Framing")
                with gr.Accordion("More options", open=False):
                    expression = gr.Slider(0.0, 3.0, value=1.0, step=0.1, label="Expression")
                    head_motion = gr.Slider(0.0, 3.0, value=1.0, step=0.1, label="Head motion")
                    steps = gr.Slider(1, 500, value=100, step=1, label="Motion sampling steps (neural)")
                    still = gr.Checkbox(False, label="Still head")
                    cutout = gr.Checkbox(False, label="Transparent sticker background")
                    seed = gr.Number(-1, precision=0, label="Seed (-1 = random)")
                with gr.Row():
                    gen_btn = gr.Button("Generate", variant="primary", elem_id="tb-talk-generate")
                    cancel_btn = gr.Button("Cancel", elem_id="tb-talk-cancel")
            with gr.Column():
                bar = gr.HTML(_bar(0, "idle"))
                status = gr.Markdown("", elem_id="tb-talk-status")
                preview = gr.Image(label="Preview / still", type="filepath", interactive=False)
                video = gr.Video(label="Talking video", interactive=False, elem_id="tb-talk-video")
                sticker = gr.Image(label="Sticker (WebP)", type="filepath", interactive=False)
                downloads = gr.File(label="Download MP4 / WebP / GIF", file_count="multiple", interactive=False,
                                    elem_id="tb-talk-downloads")  # fmt: skip
        gen_btn.click(
            actions.generate,
            [face, voice, backend, toon, framing, expression, head_motion, steps, still, cutout, seed],
            [job_id, bar, status, preview, video, sticker, downloads],
            show_progress="hidden",
            api_visibility="private",
        )
        cancel_btn.click(actions.cancel, [job_id], [status], api_visibility="private")
    return tab
