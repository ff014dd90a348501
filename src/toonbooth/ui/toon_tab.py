"""The web UI tab of the toon studio (seed 003, "Toon me"): upload a photo, pick a toon style and a blend, see
the aligned face, the toon, the sticker and the toon pasted back; compare several blends side by side and save
one as your style; train your own toon style from cartoon images with a sample grid, the losses and ADA's p.

No engine code here: every action is a `toon` / `train_toon` JobSpec handed to the runtime `Service`, followed
through its events (`ui.common.follow_job`); styles are listed from the service's model registry.
Mount it inside the app's `gr.Blocks`: `build_toon_tab(service, settings, owner_of)`.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from ..core.errors import ToonboothError
from ..core.fs import atomic_write_bytes
from ..core.settings import Settings
from ..core.specs import ToonSpec, TrainToonSpec
from .common import cancel_job, follow_job, markdown_text, progress_html

BLEND_CHOICES = ["4", "8", "16", "32", "64", "128", "256"]
INVERSIONS = ["auto", "encoder", "projector", "encoder+projector"]
_STEP_RE = re.compile(r"training step (\d+)/(\d+) loss \S+ d ([-+0-9.eEnaif]+) g ([-+0-9.eEnaif]+) p ([0-9.]+)")
YIELD_EVERY_S = 0.4
NONE = "(none)"


def _bar(percent: float, text: str, elem_id: str = "tb-toon-progress") -> str:
    return progress_html(percent, text, elem_id=elem_id)


def parse_train_stage(stage: str) -> tuple[int, float, float, float] | None:
    """(step, D loss, G loss, ADA p) from a `train_toon` progress stage; None for other stages."""
    m = _STEP_RE.search(stage or "")
    if not m:
        return None
    return int(m.group(1)), float(m.group(3)), float(m.group(4)), float(m.group(5))


def loss_frame(points: list[tuple[int, float, float, float]]) -> pd.DataFrame:
    rows = [(s, "D", d) for s, d, _g, _p in points] + [(s, "G", g) for s, _d, g, _p in points]
    return pd.DataFrame(rows, columns=["step", "loss", "value"])


def _name(value: str | None) -> str | None:
    v = (value or "").strip()
    return None if not v or v == NONE or v.lower() == "none" else v


class ToonTabActions:
    """What the tab's events do, as plain methods (testable without a browser)."""

    def __init__(self, service: Any, settings: Settings, owner_of: Callable[[gr.Request | None], str],
                 wait_s: float = 3600.0):  # fmt: skip
        self.service = service
        self.settings = settings
        self.owner_of = owner_of
        self.wait_s = wait_s
        self.out_dir = Path(tempfile.mkdtemp(prefix="toonbooth-toon-ui-"))

    def _owner(self, request: gr.Request | None) -> str:
        try:
            return self.owner_of(request)
        except ToonboothError as exc:
            raise gr.Error(str(exc)) from None

    def _file(self, job_id: str, name: str, owner: str) -> str:
        path = self.out_dir / f"{job_id}-{name}.png"
        if not path.exists():
            atomic_write_bytes(path, self.service.read_output(job_id, owner, name), fsync=False)
        return str(path)

    # --- choices ------------------------------------------------------------------------------
    def choices(self, request: gr.Request | None = None) -> tuple[Any, Any, Any, Any]:
        """StyleGAN2 models (yours first), encoders, and the preselected ones.
        -> (style, base, encoder, training base)."""
        owner = self._owner(request)
        reg = self.service.models.registry
        gens = [e for e in reg.list(kind="stylegan2", owner=owner) if e.usable]
        names = [e.name for e in sorted(gens, key=lambda e: (e.owner is None, e.name.lower()))]
        encoders = sorted({e.name for e in reg.list(kind="psp", owner=owner) if e.usable}, key=str.lower)
        default = ToonSpec.model_fields
        style = default["style"].default if default["style"].default in names else (names[0] if names else None)
        base_default = default["base_model"].default
        base = base_default if base_default in names else NONE
        enc = default["encoder"].default if default["encoder"].default in encoders else (encoders[0] if encoders else NONE)
        train_default = TrainToonSpec.model_fields["base"].default
        return (
            gr.update(choices=names, value=style),
            gr.update(choices=[NONE, *names], value=base),
            gr.update(choices=[NONE, *encoders], value=enc),
            gr.update(choices=names, value=train_default if train_default in names else (names[0] if names else None)),
        )

    # --- toon me ------------------------------------------------------------------------------
    def toon(
        self, photo: str | None, style: str | None, base: str | None, encoder: str | None, inversion: str,
        steps: float, blends: list[str] | None, blend_width: float, strength: float, truncation: float,
        backend: str, save_as: str, request: gr.Request | None = None,
    ) -> Iterator[tuple[Any, ...]]:  # fmt: skip
        """Queue a toon job and follow it. Yields (job id, bar, aligned, toon, sticker, pasted, blends gallery,
        downloads, status)."""
        owner = self._owner(request)
        empty = (None, None, None, None, [], None)
        if not photo:
            yield (None, _bar(0, "idle"), *empty, "Upload a photo with a face first.")
            return
        try:
            spec: dict[str, Any] = {
                "kind": "toon", "backend": backend, "inversion": inversion, "projector_steps": int(steps),
                "blend_resolutions": sorted(int(b) for b in blends or []), "strength": float(strength),
                "truncation": float(truncation), "base_model": _name(base), "encoder": _name(encoder),
            }  # fmt: skip
            if _name(style):
                spec["style"] = _name(style)
            if blend_width and float(blend_width) > 0:
                spec["blend_width"] = float(blend_width)
            if (save_as or "").strip():
                spec["save_blend_as"] = save_as.strip()
            spec["image"] = self.service.put_upload(Path(photo).read_bytes(), owner, field="image")
            record = self.service.submit(spec, owner)
        except ToonboothError as exc:
            yield (None, _bar(0, "not started"), *empty, f"**Error:** {markdown_text(str(exc))}")
            return
        yield (record.id, _bar(0, "queued"), *empty, f"Queued (job `{record.id}`)…")
        update = None
        for update in follow_job(self.service, record.id, owner, timeout=self.wait_s, every_s=YIELD_EVERY_S):
            if update.final:
                record = update.record
            elif update.due and update.event.type == "progress":
                skip = tuple(gr.skip() for _ in range(6))
                yield (record.id, _bar(update.percent, update.stage), *skip, gr.skip())
        percent = update.percent if update is not None else 0.0
        if record.state != "completed" or record.output is None:
            why = markdown_text(record.error or record.state)
            yield (record.id, _bar(percent, record.state), *empty, f"**{record.state}**: {why}")
            return
        out = {o.name: self._file(record.id, o.name, owner) for o in record.output.outputs}
        gallery = [(out[n], n) for n in record.output.info.get("blend_names", []) if n in out]
        if "compare" in out:
            gallery.append((out["compare"], "side by side"))
        info = record.output.info
        text = f"**Backend:** {record.output.backend} — {markdown_text(record.output.backend_reason)}"
        if info.get("inversion"):
            text += f"  \n**Inversion:** {info['inversion']} · detector {info.get('detector')}"
        if info.get("saved_style"):
            text += f"  \n**Saved** your style `{info['saved_style']['name']}`: pick it as the style next time."
        for w in record.output.warnings:
            text += f"  \nwarning: {markdown_text(w)}"
        text += f"  \n_{markdown_text(info.get('licence', ''))}_"
        yield (
            record.id, _bar(100, "done"), out.get("aligned"), out.get("toon"), out.get("sticker"), out.get("pasted"),
            gallery, list(out.values()), text,
        )  # fmt: skip

    def cancel(self, job_id: str | None, request: gr.Request | None = None) -> str:
        return cancel_job(self.service, job_id, self._owner(request))

    # --- train a toon style -------------------------------------------------------------------
    def train(
        self, files: list[str] | None, name: str, base: str | None, steps: float, freeze_d: float, align: bool,
        remove_background: bool, sample_every: float, request: gr.Request | None = None,
    ) -> Iterator[tuple[Any, str, Any, pd.DataFrame, str]]:  # fmt: skip
        """Store the images, queue `train_toon`, stream progress, the latest sample grid and the losses.
        Yields (job id, bar, sample grid, losses, status)."""
        owner = self._owner(request)
        empty = loss_frame([])
        if not files:
            yield None, _bar(0, "idle", "tb-toon-train-progress"), None, empty, "Upload your cartoon images first."
            return
        try:
            refs = [self.service.put_upload(Path(f).read_bytes(), owner, field=f"images[{i}]") for i, f in enumerate(files)]
            spec: dict[str, Any] = {
                "kind": "train_toon", "style_name": (name or "").strip(), "images": refs,
                "image_names": [Path(f).name[:120] for f in files], "steps": int(steps), "freeze_d": int(freeze_d),
                "align": bool(align), "remove_background": bool(remove_background), "sample_every": int(sample_every),
            }  # fmt: skip
            if _name(base):
                spec["base"] = _name(base)
            record = self.service.submit(spec, owner)
        except ToonboothError as exc:
            yield None, _bar(0, "not started", "tb-toon-train-progress"), None, empty, f"**Error:** {markdown_text(str(exc))}"
            return
        yield record.id, _bar(0, "queued", "tb-toon-train-progress"), None, empty, f"Queued (job `{record.id}`)…"
        points: list[tuple[int, float, float, float]] = []
        grid = None
        update = None
        for update in follow_job(self.service, record.id, owner, timeout=self.wait_s, every_s=YIELD_EVERY_S,
                                 min_percent=None):  # fmt: skip
            if update.final:
                record = update.record
                continue
            if update.event.type != "progress":
                continue
            parsed = parse_train_stage(update.stage)
            if parsed is not None:
                points.append(parsed)
            if update.event.preview_png:
                path = self.out_dir / f"{record.id}-preview-{update.step}.png"
                atomic_write_bytes(path, update.event.preview_png, fsync=False)
                grid = str(path)
            if update.due:
                p = f" · ADA p {points[-1][3]:.3f}" if points else ""
                yield (record.id, _bar(update.percent, update.stage, "tb-toon-train-progress"),
                       grid if grid else gr.skip(), loss_frame(points), f"Training…{p}")  # fmt: skip
        percent = update.percent if update is not None else 0.0
        if record.state != "completed" or record.output is None:
            why = markdown_text(record.error or record.state)
            yield record.id, _bar(percent, record.state, "tb-toon-train-progress"), grid, loss_frame(points), f"**{record.state}**: {why}"
            return
        info = record.output.info
        style = info.get("style", {})
        grid = self._file(record.id, "samples", owner)
        hist = info.get("history", {})
        stride = int(info.get("history_stride", 1))
        points = [(1 + i * stride, d, g, p) for i, (d, g, p) in
                  enumerate(zip(hist.get("d_loss", []), hist.get("g_loss", []), hist.get("augment_p", []), strict=False))]  # fmt: skip
        text = (
            f"**Done:** toon style `{style.get('name', '')}` ({style.get('arch')}, {info.get('steps')} steps, "
            f"ADA p {info.get('augment_p', 0):.3f}). Pick it as the style above (alone or blended)."
        )
        yield record.id, _bar(100, "done", "tb-toon-train-progress"), grid, loss_frame(points), text

    def styles(self, request: gr.Request | None = None) -> list[list[Any]]:
        """My toon styles (trained and saved blends)."""
        from ..training.styles import list_styles

        owner = self._owner(request)
        models_dir = Path(self.service.models.registry.models_dirs[0])
        return [
            [s.name, s.training_kind, s.arch, s.base_model, s.steps, s.image_count]
            for s in list_styles(models_dir, owner)
            if s.model_kind == "stylegan2"
        ]


def build_toon_tab(service: Any, settings: Settings, owner_of: Callable[[gr.Request | None], str]) -> gr.Tab:
    """Build the "Toon me" tab inside the current `gr.Blocks` context and return it."""
    actions = ToonTabActions(service, settings, owner_of)
    with gr.Tab("Toon me", id="toon") as tab:
        job_id = gr.State(None)
        gr.Markdown(
            "Your face as a cartoon character (StyleGAN2 Toonify): the photo is aligned the FFHQ way, inverted "
            "into the face generator and drawn again by the toon generator. Without its weights the classic "
            "toon look is used."
        )
        with gr.Row():
            with gr.Column(scale=2):
                photo = gr.Image(label="Photo", type="filepath", sources=["upload", "webcam"], elem_id="tb-toon-photo")
                style = gr.Dropdown([], label="Toon style", allow_custom_value=True)
                with gr.Row():
                    base = gr.Dropdown([NONE], value=NONE, label="Base (FFHQ) generator", allow_custom_value=True)
                    encoder = gr.Dropdown([NONE], value=NONE, label="Encoder (pSp / e4e)", allow_custom_value=True)
                blends = gr.CheckboxGroup(BLEND_CHOICES, label="Blend at resolution (several = compare side by side)")
                with gr.Accordion("More options", open=False):
                    inversion = gr.Radio(INVERSIONS, value="auto", label="Inversion")
                    steps = gr.Slider(1, 1000, value=ToonSpec.model_fields["projector_steps"].default, step=1,
                                      label="Projector steps")  # fmt: skip
                    blend_width = gr.Number(0, minimum=0, label="Blend width (0 = hard switch)")
                    strength = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="Strength (toward the toon)")
                    truncation = gr.Slider(0.1, 1.0, value=1.0, step=0.05, label="Truncation")
                    backend = gr.Radio(["auto", "neural", "classic"], value="auto", label="Backend")
                    save_as = gr.Textbox(label="Save the (one) blend as my style", placeholder="e.g. my-toon-32")
                with gr.Row():
                    go = gr.Button("Toon me", variant="primary", elem_id="tb-toon-go")
                    stop = gr.Button("Cancel")
            with gr.Column(scale=3):
                bar = gr.HTML(_bar(0, "idle"))
                with gr.Row():
                    aligned = gr.Image(label="Aligned face", type="filepath", interactive=False)
                    toon = gr.Image(label="Toon", type="filepath", interactive=False, elem_id="tb-toon-result")
                    sticker = gr.Image(label="Sticker", type="filepath", format="png", interactive=False)
                pasted = gr.Image(label="Back in the photo", type="filepath", interactive=False)
                gallery = gr.Gallery(label="Blends side by side", columns=4)
                downloads = gr.File(label="Downloads", file_count="multiple", interactive=False)
                status = gr.Markdown("")
        gr.Markdown("### Train my toon style")
        with gr.Row():
            with gr.Column(scale=2):
                files = gr.File(label="Cartoon face images (16 or more)", file_count="multiple", file_types=["image"],
                                type="filepath")  # fmt: skip
                name = gr.Textbox(label="Style name", placeholder="e.g. my-cartoons")
                train_base = gr.Dropdown([NONE], value=NONE, label="Start from (StyleGAN2 with D)", allow_custom_value=True)
                with gr.Row():
                    train_steps = gr.Number(2000, precision=0, minimum=1, label="Steps")
                    freeze_d = gr.Number(4, precision=0, minimum=0, label="FreezeD: frozen D blocks")
                    sample_every = gr.Number(100, precision=0, minimum=0, label="Sample grid every N steps")
                with gr.Row():
                    align = gr.Checkbox(False, label="FFHQ-align my images")
                    remove_bg = gr.Checkbox(False, label="Remove backgrounds")
                with gr.Row():
                    train_go = gr.Button("Start training", variant="primary")
                    train_stop = gr.Button("Cancel")
                train_job = gr.State(None)
            with gr.Column(scale=3):
                train_bar = gr.HTML(_bar(0, "idle", "tb-toon-train-progress"))
                grid = gr.Image(label="Samples (fixed latents)", type="filepath", interactive=False)
                losses = gr.LinePlot(loss_frame([]), x="step", y="value", color="loss", title="D / G loss", height=220)
                train_status = gr.Markdown("")
        table = gr.Dataframe(headers=["name", "made by", "arch", "base", "steps", "images"], interactive=False)

        tab.select(actions.choices, None, [style, base, encoder, train_base], api_visibility="private").then(
            actions.styles, None, [table], api_visibility="private"
        )
        go.click(
            actions.toon,
            [photo, style, base, encoder, inversion, steps, blends, blend_width, strength, truncation, backend, save_as],
            [job_id, bar, aligned, toon, sticker, pasted, gallery, downloads, status],
            api_visibility="private",
        ).then(actions.styles, None, [table], api_visibility="private")
        stop.click(actions.cancel, [job_id], [status], api_visibility="private")
        train_go.click(
            actions.train,
            [files, name, train_base, train_steps, freeze_d, align, remove_bg, sample_every],
            [train_job, train_bar, grid, losses, train_status],
            api_visibility="private",
        ).then(actions.styles, None, [table], api_visibility="private")
        train_stop.click(actions.cancel, [train_job], [train_status], api_visibility="private")
    return tab
