"""The web UI tab of the webtoon studio (seed 001, "Oh My Assistant"): **Backgrounds** — a photo or a prompt
(Korean welcome) becomes a background in the artist's styles — and, next to it, the **Pose** section that the
pose studio adds (`ui/webtoon_pose.py` `build_pose_section`, see `POSE_HOOK` below).

Backgrounds: photo (optional) or prompt; "Translate" shows the English the text encoder will get in an editable
box (a `background` job with `mode="translate"`: only the small MarianMT runs); editing that box and pressing
Generate sends the edit as `translated_prompt`, so the user's wording is what is drawn (the original stays in
the PNG's parameters as `Original prompt`). Styles: up to three pickers (the user's own trained styles and the
shared LoRAs / embeddings, each with a strength), a preset (its negative prompt fills the editable box), a
panel size, strength and steps, a results gallery of the user's background jobs.

No engine code here: every action is a `background` JobSpec handed to the runtime `Service`.
Gradio Blocks: https://www.gradio.app/docs/gradio/blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import gradio as gr
from PIL import Image

from ..core.errors import ToonboothError
from ..core.images import image_to_png_bytes
from ..core.settings import Settings
from ..core.specs import BACKGROUND_PRESETS, PANEL_SIZES
from .common import cancel_job, follow_job, markdown_text, png_image
from .webtoon_pose import build_pose_section

DEFAULT_OWNER = "local"
STYLE_SLOTS = 3
NO_STYLE = "(none)"
SHOW_EVERY_S = 0.4
PRESETS = [(v["label"], k) for k, v in BACKGROUND_PRESETS.items()]
SIZES = [
    (f"tall 5:8 ({PANEL_SIZES['sd15']['tall'][0]}x{PANEL_SIZES['sd15']['tall'][1]} SD1.5)", "tall"),
    (f"wide 16:9 ({PANEL_SIZES['sd15']['wide'][0]}x{PANEL_SIZES['sd15']['wide'][1]} SD1.5)", "wide"),
    (f"square ({PANEL_SIZES['sd15']['square'][0]}x{PANEL_SIZES['sd15']['square'][1]} SD1.5)", "square"),
]
DEFAULT_CHECKPOINT = "stable-diffusion-v1-5"
POSE_HOOK = "build_pose_section"
"""Name of the function `ui/webtoon_pose.py` provides; `build_webtoon_tab` marks where its call goes."""


def default_owner(request: gr.Request | None) -> str:
    """The Gradio login name when the app has `auth`, else one local user."""
    name = getattr(request, "username", None) if request is not None else None
    return str(name) if name else DEFAULT_OWNER


def style_list(names: list[str | None], weights: list[float]) -> list[dict[str, Any]]:
    """The picked styles as the spec's `styles` (empty pickers left out)."""
    return [
        {"name": n, "weight": float(w)}
        for n, w in zip(names, weights, strict=True)
        if n and n != NO_STYLE
    ]


class BackgroundActions:
    """What the Backgrounds section's events do, as plain methods (testable without a browser)."""

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

    def _owner(self, request: gr.Request | None) -> str:
        return self.owner_of(request)

    # --- pickers ------------------------------------------------------------------------------
    def style_choices(self, request: gr.Request | None = None) -> list[tuple[str, str]]:
        """(label, name) of the LoRAs and embeddings this user may use: their own styles first."""
        owner = self._owner(request)
        registry = self.service.models.registry
        mine: list[tuple[str, str]] = []
        shared: list[tuple[str, str]] = []
        for kind, label in (("lora", "LoRA"), ("embedding", "TI")):
            for e in registry.list(kind=kind, owner=owner):
                if e.arch not in ("sd15", "sdxl", "unknown"):
                    continue
                text = f"{e.name} — {label}, {e.arch}"
                (mine if e.owner == owner else shared).append((f"{text}, yours" if e.owner else text, e.name))
        seen: set[str] = set()
        out = [(NO_STYLE, NO_STYLE)]
        for label, name in sorted(mine, key=lambda t: t[0].lower()) + sorted(shared, key=lambda t: t[0].lower()):
            if name not in seen:
                seen.add(name)
                out.append((label, name))
        return out

    def refresh_styles(self, request: gr.Request | None = None) -> tuple[Any, ...]:
        choices = self.style_choices(request)
        return tuple(gr.update(choices=choices) for _ in range(STYLE_SLOTS))

    def checkpoints(self, request: gr.Request | None = None) -> Any:
        """The SD1.5 / SDXL checkpoints this user may use (no inpainting ones); the spec's default first."""
        owner = self._owner(request)
        names = sorted(
            {e.name for e in self.service.models.registry.list(kind="checkpoint", owner=owner)
             if e.arch in ("sd15", "sdxl") and not e.inpainting},
            key=str.lower,
        )  # fmt: skip
        preferred = DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT in names else (names[0] if names else DEFAULT_CHECKPOINT)
        return gr.update(choices=names or [DEFAULT_CHECKPOINT], value=preferred)

    @staticmethod
    def preset_negative(preset: str) -> str:
        """The negative prompt of a preset (fills the editable box when the preset changes)."""
        return BACKGROUND_PRESETS.get(preset, BACKGROUND_PRESETS["none"])["negative_prompt"]

    # --- translation --------------------------------------------------------------------------
    def translate(
        self, prompt: str, negative: str, request: gr.Request | None = None
    ) -> tuple[str, dict[str, str], str]:
        """Translate the prompts only (a `mode="translate"` job).
        -> (editable English, the translation's state {prompt, english}, status)."""
        owner = self._owner(request)
        if not (prompt or "").strip():
            return "", {}, "Write a prompt first."
        try:
            record = self.service.submit(
                {"kind": "background", "mode": "translate", "prompt": prompt, "negative_prompt": negative}, owner
            )
            record = self.service.wait(record.id, owner, timeout=self.wait_s)
        except (ToonboothError, TimeoutError) as exc:
            return "", {}, f"**Error:** {markdown_text(str(exc))}"
        if record.state != "completed" or record.output is None:
            return "", {}, f"**{record.state}**: {markdown_text(record.error or '')}"
        english, note = _prompt_translation(record.output.info)
        return english, {"prompt": prompt, "english": english}, note

    # --- the job ------------------------------------------------------------------------------
    def generate(
        self,
        photo: Image.Image | None,
        prompt: str,
        english: str,
        translation: dict[str, str] | None,
        negative: str,
        s1: str | None, w1: float, s2: str | None, w2: float, s3: str | None, w3: float,
        preset: str,
        size: str,
        strength: float,
        steps: int,
        seed: int,
        backend: str,
        checkpoint: str | None = None,
        request: gr.Request | None = None,
    ) -> Iterator[tuple[Any, ...]]:  # fmt: skip
        """Run a background job, streaming its progress.
        `translation` is what the English box last showed from the machine ({prompt, english}); the box's text
        is sent as `translated_prompt` when the user edited it (or typed it by hand) and the prompt it
        belongs to is unchanged. Yields (job_id, status, image, english, translation, gallery-or-skip)."""
        owner = self._owner(request)
        spec: dict[str, Any] = {
            "kind": "background", "prompt": prompt or "", "negative_prompt": negative, "preset": preset,
            "size": size, "backend": backend, "styles": style_list([s1, s2, s3], [w1, w2, w3]),
            "diffusion": {"strength": float(strength), "steps": int(steps), "seed": int(seed),
                          "checkpoint": (checkpoint or DEFAULT_CHECKPOINT).strip()},
        }  # fmt: skip
        # the user's edit of the translation counts while the prompt it was made from is unchanged
        edited = (english or "").strip()
        shown = translation or {}
        if edited and shown.get("prompt", prompt) == prompt and edited != shown.get("english", "").strip():
            spec["translated_prompt"] = edited
        try:
            if photo is not None:
                spec["image"] = self.service.put_upload(image_to_png_bytes(photo.convert("RGB")), owner, field="image")
            record = self.service.submit(spec, owner)
        except ToonboothError as exc:
            yield None, f"**Error:** {markdown_text(str(exc))}", None, gr.skip(), gr.skip(), gr.skip()
            return
        for update in follow_job(self.service, record.id, owner, timeout=self.wait_s, every_s=SHOW_EVERY_S):
            if update.final:
                record = update.record
            elif update.due:
                yield record.id, update.status(), None, gr.skip(), gr.skip(), gr.skip()
        if not record.done:
            yield record.id, f"still {record.state} after {self.wait_s:.0f} s without news", None, gr.skip(), \
                gr.skip(), gr.skip()  # fmt: skip
            return
        if record.state != "completed" or record.output is None:
            yield record.id, f"**{record.state}**: {markdown_text(record.error or '')}", None, gr.skip(), \
                gr.skip(), gr.skip()  # fmt: skip
            return
        out = record.output
        image = png_image(self.service.read_output(record.id, owner, "background"))
        english_now, note = _prompt_translation(out.info)
        parts = [f"Done ({out.backend}: {markdown_text(out.backend_reason)})"]
        if out.info.get("seed") is not None:
            parts.append(f"seed {out.info['seed']}, {image.width}x{image.height}")
        parts += [note] if note else []
        parts += [f"- {markdown_text(w)}" for w in out.warnings]
        machine = next((t["translated"] for t in out.info.get("translations") or []
                        if t.get("field") == "prompt" and t.get("source") == "machine"), "")  # fmt: skip
        state = {"prompt": prompt, "english": machine} if english_now else {}
        yield record.id, "\n\n".join(parts), image, english_now, state, self.gallery(request)

    def gallery(self, request: gr.Request | None = None) -> list[tuple[Image.Image, str]]:
        """The user's finished backgrounds, newest first."""
        owner = self._owner(request)
        items: list[tuple[Image.Image, str]] = []
        for record in self.service.list(owner, limit=100):
            if record.kind != "background" or record.state != "completed" or record.output is None:
                continue
            if not any(o.name == "background" for o in record.output.outputs):
                continue
            try:
                image = png_image(self.service.read_output(record.id, owner, "background"))
            except ToonboothError:
                continue
            info = record.output.info
            caption = f"{info.get('route', '?')} · {info.get('preset', '')} · {record.output.backend}"
            items.append((image, caption))
        return items

    def cancel(self, job_id: str | None, request: gr.Request | None = None) -> str:
        return cancel_job(self.service, job_id, self._owner(request))


def _prompt_translation(info: dict[str, Any]) -> tuple[str, str]:
    """(the English of the prompt when it was translated or edited, else ''; a Markdown note)."""
    for t in info.get("translations") or []:
        if t.get("field") != "prompt":
            continue
        if t.get("source") == "machine":
            return t["translated"], f"Translated by `{t.get('model')}` — edit the English above and generate again."
        if t.get("source") == "edited":
            return t["translated"], "Your edited translation was used."
        if t.get("source") == "off":
            return "", "Prompt translation is off on this server: the Korean went to the text encoder as written."
        return "", "The prompt is English: nothing to translate."
    return "", ""


class BackgroundSection(NamedTuple):
    """What `build_background_section` made: its actions and the components the tab refreshes on select."""

    actions: BackgroundActions
    pickers: list[Any]
    gallery: Any
    checkpoint: Any


def build_background_section(
    service: Any, settings: Settings, owner_of: Callable[[gr.Request | None], str] | None = None
) -> BackgroundSection:
    """The Backgrounds section, built inside the current Blocks context (a Tab or a Column)."""
    actions = BackgroundActions(service, settings, owner_of)
    job_id = gr.State(None)
    translation = gr.State({})
    gr.Markdown(
        "Turn a **photo** of a place into a webtoon background, or draw one from a **prompt** — in Korean or "
        "English. Pick your trained styles (and shared ones) with a strength each."
    )
    with gr.Row():
        with gr.Column(scale=3):
            photo = gr.Image(label="Photo (optional — leave empty to draw from the prompt)", type="pil",
                             sources=["upload", "clipboard"], format="png")  # fmt: skip
            prompt = gr.Textbox(label="Prompt (한국어 OK)", lines=2, placeholder="예: 비 오는 날의 골목, 네온 간판")
            with gr.Row():
                translate_btn = gr.Button("Translate")
            english = gr.Textbox(
                label="English the model gets (edit it, then Generate)", lines=2, interactive=True,
                placeholder="filled in by Translate or after a Korean prompt ran",
            )  # fmt: skip
            negative = gr.Textbox(actions.preset_negative("clean-lineart"), label="Negative prompt", lines=2)
        with gr.Column(scale=2):
            sliders: list[Any] = []
            for i in range(STYLE_SLOTS):
                with gr.Row():
                    pick = gr.Dropdown([(NO_STYLE, NO_STYLE)], value=NO_STYLE, label=f"Style {i + 1}", scale=3)
                    weight = gr.Slider(0.0, 2.0, value=0.8, step=0.05, label="Strength", scale=2)
                sliders += [pick, weight]
            preset = gr.Dropdown(PRESETS, value="clean-lineart", label="Preset")
            size = gr.Radio(SIZES, value="tall", label="Panel size (prompt only; a photo keeps its shape)")
            with gr.Accordion("More options", open=False):
                strength = gr.Slider(0.05, 1.0, value=0.6, step=0.05, label="Strength from the photo")
                steps = gr.Slider(1, 60, value=25, step=1, label="Steps")
                seed = gr.Number(-1, precision=0, label="Seed (-1 = random)")
                backend = gr.Radio(["auto", "neural", "classic"], value="auto", label="Backend",
                                   info="classic: a no-weights filter for photos")  # fmt: skip
                checkpoint = gr.Dropdown([DEFAULT_CHECKPOINT], value=DEFAULT_CHECKPOINT, label="Checkpoint",
                                         info="SD1.5 or SDXL; the panel sizes follow it", allow_custom_value=True)
            with gr.Row():
                gen_btn = gr.Button("Generate", variant="primary")
                cancel_btn = gr.Button("Cancel")
                refresh_btn = gr.Button("Refresh styles")
            status = gr.Markdown("")
    with gr.Row():
        result = gr.Image(label="Background", type="pil", format="png", interactive=False)
        gallery = gr.Gallery(label="My backgrounds", columns=4, format="png")

    pickers = sliders[0::2]
    preset.change(actions.preset_negative, [preset], [negative])
    translate_btn.click(actions.translate, [prompt, negative], [english, translation, status])
    refresh_btn.click(actions.refresh_styles, None, pickers)
    gen_btn.click(
        actions.generate,
        [photo, prompt, english, translation, negative, *sliders, preset, size, strength, steps, seed, backend,
         checkpoint],
        [job_id, status, result, english, translation, gallery],
    )
    cancel_btn.click(actions.cancel, [job_id], [status])
    return BackgroundSection(actions, pickers, gallery, checkpoint)


def build_webtoon_tab(
    service: Any, settings: Settings, owner_of: Callable[[gr.Request | None], str] | None = None
) -> gr.Tab:
    """Build the "Webtoon" tab inside the current `gr.Blocks` and return it: Backgrounds, then Pose."""
    with gr.Tab("Webtoon", id="webtoon") as tab:  # noqa: SIM117 - the Tabs hold two sections
        with gr.Tabs():
            with gr.Tab("Backgrounds", id="webtoon-backgrounds"):
                section = build_background_section(service, settings, owner_of)
            with gr.Tab("Pose", id="webtoon-pose"):
                build_pose_section(service, settings, owner_of=owner_of)
    tab.select(section.actions.refresh_styles, None, section.pickers)
    tab.select(section.actions.gallery, None, section.gallery)
    tab.select(section.actions.checkpoints, None, section.checkpoint)
    return tab
