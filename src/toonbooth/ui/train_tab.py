"""The web UI tab of personalization (issue 5; seed 001's style training, seed 002's DreamBooth character):
upload images, pick a preset and a kind (LoRA / DreamBooth-LoRA / textual inversion), name the style and its
trigger word, start; watch progress and the loss curve (read from the job's progress events, whose stage
text is `training step N/T loss L lr R eta E`), cancel; then my styles (delete) and a "try it" box that
runs a `generate` job with `<lora:NAME:weight>` on the style's own base checkpoint.

No engine code here: training and trying are JobSpecs handed to the runtime `Service`; the style list and
delete use `training.styles` over the service's model registry (the same calls as the REST routes).
Gradio Blocks docs: https://www.gradio.app/docs/gradio/blocks.

Mount it inside the app's `gr.Blocks`: `build_train_tab(service, settings, owner_of)`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from PIL import Image

from ..core.errors import ToonboothError
from ..core.settings import Settings
from ..core.specs import TRAIN_PRESETS
from ..training.styles import delete_style, list_styles
from .common import cancel_job, follow_job, markdown_text, png_image, progress_html

KINDS = [("LoRA", "train_lora"), ("DreamBooth (LoRA)", "train_dreambooth"), ("Textual inversion", "train_ti")]
NO_PRESET = "none"
PRESETS = [(p["label"], name) for name, p in TRAIN_PRESETS.items()] + [("custom (no preset)", NO_PRESET)]
PREFERRED_BASES = ("stable-diffusion-v1-5", "tiny-sd15")
STYLE_COLUMNS = ["name", "kind", "arch", "trigger", "steps", "images", "final loss", "use it as"]
_STEP_RE = re.compile(r"training step (\d+)/(\d+) loss ([-+0-9.eE]+|nan|inf)")
YIELD_EVERY_S = 0.4


def _bar(percent: float, text: str) -> str:
    return progress_html(percent, text, elem_id="tb-train-progress")


def loss_frame(points: list[tuple[int, float]]) -> pd.DataFrame:
    return pd.DataFrame({"step": [p[0] for p in points], "loss": [p[1] for p in points]})


def parse_step(stage: str) -> tuple[int, int, float] | None:
    """(step, total, loss) from a training progress stage text; None for other stages."""
    m = _STEP_RE.search(stage or "")
    return (int(m.group(1)), int(m.group(2)), float(m.group(3))) if m else None


def _code(value: str) -> str:
    """A Markdown code span (shown literally, so no HTML escaping inside)."""
    return "`" + value.replace("`", "'").replace("\n", " ") + "`"


class TrainTabActions:
    """What the tab's events do, as plain methods (testable without a browser)."""

    def __init__(
        self,
        service: Any,
        settings: Settings,
        owner_of: Callable[[gr.Request | None], str],
        wait_s: float = 3600.0,
    ):
        self.service = service
        self.settings = settings
        self.owner_of = owner_of
        self.wait_s = wait_s

    def _owner(self, request: gr.Request | None) -> str:
        try:
            return self.owner_of(request)
        except ToonboothError as exc:
            raise gr.Error(str(exc)) from None

    @property
    def _models_dir(self) -> Path:
        return Path(self.service.models.registry.models_dirs[0])

    # --- choices ------------------------------------------------------------------------------
    def base_choices(self, owner: str) -> tuple[list[str], str | None]:
        """Usable SD1.5 / SDXL checkpoints visible to `owner` and the one to preselect."""
        entries = [
            e
            for e in self.service.models.registry.list(kind="checkpoint", owner=owner)
            if e.usable and not e.inpainting and e.arch in ("sd15", "sdxl")
        ]
        names = sorted({e.name for e in entries}, key=str.lower)
        wanted = self.settings.ui_train_base
        for name in ([wanted] if wanted else []) + list(PREFERRED_BASES):
            if name in names:
                return names, name
        sd15 = [e.name for e in entries if e.arch == "sd15"]
        return names, (sorted(sd15, key=str.lower) or names or [None])[0]

    def refresh(self, request: gr.Request | None = None) -> tuple[Any, Any, Any]:
        """Tab opened: base choices, my styles table and the "try" choices."""
        owner = self._owner(request)
        names, value = self.base_choices(owner)
        rows, choices = self._styles(owner)
        return gr.update(choices=names, value=value), rows, choices

    def preset_changed(self, preset: str) -> tuple[Any, str]:
        """A preset sets the photo-deletion default and tells what it is for. -> (delete box, info)."""
        if preset == NO_PRESET or preset not in TRAIN_PRESETS:
            return gr.update(value=False), "No preset: the spec's own defaults (1000 steps, constant rate)."
        p = TRAIN_PRESETS[preset]
        kinds = ", ".join(label for label, kind in KINDS if kind in p["kinds"])
        info = f"{p['description']}  \n{p['min_images']}–{p['max_images']} images; kinds: {kinds}."
        return gr.update(value=bool(p["defaults"].get("delete_images_after", False))), info

    # --- training -----------------------------------------------------------------------------
    def start(
        self,
        files: list[str] | None,
        preset: str,
        kind: str,
        name: str,
        trigger: str,
        base: str | None,
        steps: float,
        resolution: float,
        learning_rate: float,
        delete_after: bool,
        request: gr.Request | None = None,
    ) -> Iterator[tuple[Any, str, pd.DataFrame, str]]:
        """Store the images, queue the training, stream its progress and loss.
        Yields (job id, progress bar, loss curve, status)."""
        owner = self._owner(request)
        empty = loss_frame([])
        if not files:
            yield None, _bar(0, "idle"), empty, "Upload the training images first."
            return
        # 1. Store the images as my uploads, then queue the job (the service validates everything)
        try:
            refs = [
                self.service.put_upload(Path(f).read_bytes(), owner, field=f"images[{i}]")
                for i, f in enumerate(files)
            ]
            spec: dict[str, Any] = {
                "kind": kind, "style_name": (name or "").strip(), "base": (base or "").strip(), "images": refs,
                "image_names": [Path(f).name[:120] for f in files], "delete_images_after": bool(delete_after),
            }  # fmt: skip
            if preset != NO_PRESET:
                spec["preset"] = preset
            if (trigger or "").strip():
                spec["trigger"] = trigger.strip()
            if steps and int(steps) > 0:
                spec["steps"] = int(steps)
            if resolution and int(resolution) > 0:
                spec["resolution"] = int(resolution)
            if learning_rate and float(learning_rate) > 0:
                spec["learning_rate"] = float(learning_rate)
            record = self.service.submit(spec, owner)
        except ToonboothError as exc:
            yield None, _bar(0, "not started"), empty, f"**Error:** {markdown_text(str(exc))}"
            return
        yield record.id, _bar(0, "queued"), empty, f"Queued (job `{record.id}`)…"
        # 2. Follow its events: the progress bar, the loss curve from the stage text
        points: list[tuple[int, float]] = []
        updates = follow_job(
            self.service, record.id, owner, timeout=self.wait_s, every_s=YIELD_EVERY_S, min_percent=None
        )
        for update in updates:
            if update.final:
                record = update.record
                continue
            if update.event.type != "progress":
                continue
            parsed = parse_step(update.stage)
            if parsed is not None:
                points.append((parsed[0], parsed[2]))
            if update.due:
                yield record.id, _bar(update.percent, update.stage), loss_frame(points), "Training…"
        # 3. The end: the style and how to use it, or why not
        if record.state != "completed" or record.output is None:
            why = markdown_text(record.error or record.state)
            yield (
                record.id,
                _bar(update.percent, record.state),
                loss_frame(points),
                f"**{record.state}**: {why}",
            )
            return
        info = record.output.info
        style = info.get("style", {})
        losses = info.get("loss_history") or []
        stride = int(info.get("loss_stride", 1))
        points = [(1 + i * stride, float(x)) for i, x in enumerate(losses)] or points
        text = (
            f"**Done:** style {_code(style.get('name', ''))} ({style.get('model_kind')}, {style.get('arch')}, "
            f"{info.get('steps')} steps). Use it as {_code(style.get('usage', ''))}."
        )
        if info.get("images_deleted"):
            text += f"  \n{info['images_deleted']} uploaded training image(s) deleted."
        yield record.id, _bar(100, "done"), loss_frame(points), text

    def cancel(self, job_id: str | None, request: gr.Request | None = None) -> str:
        """Cancel the running training. -> status text."""
        return cancel_job(self.service, job_id, self._owner(request))

    # --- my styles ----------------------------------------------------------------------------
    def _styles(self, owner: str) -> tuple[list[list[Any]], Any]:
        infos = list_styles(self._models_dir, owner)
        rows = [
            [s.name, s.training_kind.removeprefix("train_"), s.arch, s.trigger, s.steps, s.image_count,
             None if s.final_loss is None else round(s.final_loss, 4), s.usage]
            for s in infos
        ]  # fmt: skip
        names = [s.name for s in infos]
        return rows, gr.update(choices=names, value=names[0] if names else None)

    def styles(self, request: gr.Request | None = None) -> tuple[list[list[Any]], Any]:
        """My styles table and the style selector."""
        return self._styles(self._owner(request))

    def delete(self, name: str | None, request: gr.Request | None = None) -> tuple[list[list[Any]], Any, str]:
        owner = self._owner(request)
        if not name:
            rows, choices = self._styles(owner)
            return rows, choices, "Pick a style first."
        try:
            delete_style(self.service.models.registry, self._models_dir, owner, name)
            message = f"Deleted {_code(name)} (its files and its model entry)."
        except ToonboothError as exc:
            message = f"**Error:** {markdown_text(str(exc))}"
        rows, choices = self._styles(owner)
        return rows, choices, message

    def try_style(
        self,
        name: str | None,
        prompt: str,
        weight: float,
        steps: float,
        seed: float,
        request: gr.Request | None = None,
    ) -> tuple[Image.Image | None, str]:
        """Generate with the style on its own base: `prompt <lora:NAME:weight>` (LoRA styles). -> (image, text)."""
        owner = self._owner(request)
        infos = {s.name: s for s in list_styles(self._models_dir, owner)}
        if not name or name not in infos:
            return None, "Pick one of your styles first."
        style = infos[name]
        if style.model_kind == "stylegan2":  # toon studio styles (issue 12)
            return None, f"{_code(name)} is a toon style (StyleGAN2): use it in the Toon me tab."
        if style.model_kind != "lora":
            return None, (
                f"{_code(name)} is a textual-inversion style: generate jobs do not load embeddings yet; "
                "its sample images are in its files."
            )
        text = f"{(prompt or '').strip() or style.trigger} <lora:{name}:{float(weight):g}>"
        spec = {
            "kind": "generate", "mode": "txt2img", "prompt": text, "checkpoint": style.base_model,
            "width": style.resolution, "height": style.resolution, "steps": int(steps), "seed": int(seed),
        }  # fmt: skip
        try:
            record = self.service.submit(spec, owner)
            record = self.service.wait(record.id, owner, timeout=self.wait_s)
        except (ToonboothError, TimeoutError) as exc:
            return None, f"**Error:** {markdown_text(str(exc))}"
        if record.state != "completed" or record.output is None:
            return None, f"**{record.state}**: {markdown_text(record.error or '')}"
        out = record.output.outputs[0]
        image = png_image(self.service.read_output(record.id, owner, out.name))
        return image, f"{_code(text)} on {_code(style.base_model)}, seed {int(seed)}"


def build_train_tab(service: Any, settings: Settings, owner_of: Callable[[gr.Request | None], str]) -> gr.Tab:
    """Build the "Train a style" tab inside the current `gr.Blocks` context and return it.
    `owner_of(request)` names the user a request acts for."""
    actions = TrainTabActions(service, settings, owner_of)
    preset_value = settings.ui_train_preset  # a TRAIN_PRESETS name or NO_PRESET ("none"), checked by Settings
    with gr.Tab("Train a style", id="train") as tab:
        job_id = gr.State(None)
        gr.Markdown(
            "Teach toonbooth a style or a character from your images, then use it everywhere as "
            "`<lora:NAME:0.8>`. Only you can see and use your styles."
        )
        with gr.Row():
            with gr.Column(scale=3):
                files = gr.File(
                    label="Training images", file_count="multiple", file_types=["image"], type="filepath",
                    elem_id="tb-train-images",
                )  # fmt: skip
                preset = gr.Radio(PRESETS, value=preset_value, label="Preset")
                preset_info = gr.Markdown(actions.preset_changed(preset_value)[1])
                kind = gr.Radio(KINDS, value="train_lora", label="Kind")
                with gr.Row():
                    name = gr.Textbox(
                        label="Style name", placeholder="e.g. my-ink-style", elem_id="tb-train-name"
                    )
                    trigger = gr.Textbox(label="Trigger word (default: the name)", placeholder="e.g. sks")
                base = gr.Dropdown([], label="Base checkpoint", allow_custom_value=True)
                with gr.Accordion("More options", open=False):
                    steps = gr.Number(0, precision=0, minimum=0, label="Steps (0 = the preset's)")
                    resolution = gr.Number(
                        0, precision=0, minimum=0, step=64, label="Resolution (0 = 512 / 1024)"
                    )
                    learning_rate = gr.Number(0, minimum=0, label="Learning rate (0 = the preset's)")
                    delete_after = gr.Checkbox(
                        bool(
                            TRAIN_PRESETS.get(preset_value, {}).get("defaults", {}).get("delete_images_after")
                        ),
                        label="Delete my uploaded images after training",
                    )
                with gr.Row():
                    start_btn = gr.Button("Start training", variant="primary", elem_id="tb-train-start")
                    cancel_btn = gr.Button("Cancel")
            with gr.Column(scale=2):
                bar = gr.HTML(_bar(0, "idle"))
                loss = gr.LinePlot(loss_frame([]), x="step", y="loss", title="Training loss", height=240)
                status = gr.Markdown("")
        gr.Markdown("### My styles")
        table = gr.Dataframe(headers=STYLE_COLUMNS, interactive=False)
        with gr.Row():
            chosen = gr.Dropdown([], label="Style")
            refresh_btn = gr.Button("Refresh")
            delete_btn = gr.Button("Delete style", variant="stop")
        style_msg = gr.Markdown("")
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(label="Try it: prompt", placeholder="a castle on a hill")
                weight = gr.Slider(0.0, 2.0, value=0.8, step=0.05, label="Strength")
                try_steps = gr.Slider(1, 60, value=20, step=1, label="Steps")
                seed = gr.Number(1, precision=0, label="Seed")
                try_btn = gr.Button("Generate")
            with gr.Column():
                tried = gr.Image(label="Result", type="pil", format="png", interactive=False)
                tried_text = gr.Markdown("")

        preset.change(actions.preset_changed, [preset], [delete_after, preset_info], api_visibility="private")
        tab.select(actions.refresh, None, [base, table, chosen], api_visibility="private")
        start_btn.click(
            actions.start,
            [files, preset, kind, name, trigger, base, steps, resolution, learning_rate, delete_after],
            [job_id, bar, loss, status],
            api_visibility="private",
        ).then(actions.styles, None, [table, chosen], api_visibility="private")
        cancel_btn.click(actions.cancel, [job_id], [status], api_visibility="private")
        refresh_btn.click(actions.styles, None, [table, chosen], api_visibility="private")
        delete_btn.click(actions.delete, [chosen], [table, chosen, style_msg], api_visibility="private")
        try_btn.click(
            actions.try_style,
            [chosen, prompt, weight, try_steps, seed],
            [tried, tried_text],
            api_visibility="private",
        )
    return tab
