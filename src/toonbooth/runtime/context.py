"""JobContext: the runtime's implementation of the engines' narrow context (`engines.base.EngineContext`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from PIL import Image

from ..core.errors import JobCanceledError
from ..core.events import LogEvent, ProgressEvent
from ..core.images import image_to_png_bytes, load_image
from ..core.settings import Settings

EventSink = Callable[[Any], None]


class JobContext:
    def __init__(
        self,
        settings: Settings,
        models: Any,
        storage: Any,
        *,
        job_id: str = "",
        owner: str | None = None,
        on_event: EventSink | None = None,
        cancel_event: threading.Event | None = None,
        skip_event: threading.Event | None = None,
        preview_every: int = 0,
        release_upload: Callable[[str], bool] | None = None,
    ):
        self.settings = settings
        self.models = models
        self.storage = storage
        self.job_id = job_id
        self.owner = owner
        self.on_event = on_event or (lambda _e: None)
        self.cancel_event = cancel_event or threading.Event()
        self.skip_event = skip_event or threading.Event()
        self.preview_every = preview_every
        self.logs: list[str] = []
        self._last_percent = 0.0
        self._release_upload = release_upload

    def load_image(self, ref: str, field: str) -> Image.Image:
        limits = {"max_bytes": self.settings.max_upload_bytes, "max_pixels": self.settings.max_pixels}
        if isinstance(ref, str) and ref.startswith("blob:"):
            return load_image(self.storage.get(ref, field=field), field=field, **limits)
        return load_image(ref, field=field, **limits)

    def load_audio(self, ref: str, field: str, sample_rate: int):
        """Resolve an AudioRef (stored blob / data URL / base64) through the safe audio decoder: float32
        mono at `sample_rate` (channel mean, then resampled)."""
        from ..core.audio import load_audio

        limits = {"max_bytes": self.settings.max_audio_bytes, "max_duration_s": self.settings.max_audio_seconds}
        source = self.storage.get(ref, field=field) if isinstance(ref, str) and ref.startswith("blob:") else ref
        return load_audio(source, field=field, target_rate=sample_rate, **limits).samples

    def release_upload(self, ref: str) -> bool:
        """Give up this job's owner's claim on an uploaded blob (e.g. training photos after training).

        With the service's callable the blob is deleted only when no other user owns it and no other
        unfinished job needs it (blobs are content-addressed: identical uploads share one). Without one
        (the CLI, no ownership records) the blob is deleted. True when the stored blob was deleted."""
        if self._release_upload is not None:
            return bool(self._release_upload(ref))
        return bool(self.storage.delete(ref))

    def wants_preview(self, step: int, steps: int) -> bool:
        """Whether the engine should render a live preview after denoising step `step` (1-based) of a
        loop of `steps`: every `preview_every` steps and at the loop's last step; never when 0 (the CLI
        and direct callers, which show no previews; the service's runner passes the setting)."""
        every = self.preview_every
        return every > 0 and step > 0 and (step % every == 0 or step == steps)

    def progress(self, step: int, total: int, *, stage: str = "", preview: Image.Image | None = None) -> None:
        percent = 100.0 if total <= 0 else max(0.0, min(100.0, 100.0 * step / total))
        percent = max(percent, self._last_percent)  # one monotonic stream over all passes
        self._last_percent = percent
        png = image_to_png_bytes(preview) if preview is not None else None
        self.on_event(ProgressEvent(job_id=self.job_id, percent=percent, step=step, total=total, stage=stage,
                                    preview_png=png))
        self.check_canceled()

    def step_callback(self, *, offset: int, total: int, stage: str, arch: str | None):
        """diffusers `callback_on_step_end` for one pipeline call: progress `offset + i + 1` of `total`
        (capped), a live latent preview when `wants_preview` says so (A1111 "Approx cheap" for `arch`;
        None: never), and cancel (`progress` raises JobCanceledError between two steps)."""

        def on_step_end(pipe, i, _t, kwargs):
            preview = None
            if arch is not None and self.wants_preview(i + 1, pipe.num_timesteps):
                from ..models.preview import latents_to_preview

                preview = latents_to_preview(kwargs["latents"], arch)
            self.progress(min(offset + i + 1, total), total, stage=stage, preview=preview)
            return kwargs

        return on_step_end

    def take_skip(self) -> bool:
        """Whether A1111's `/skip` asked to skip the current image (the request is consumed)."""
        if self.skip_event.is_set():
            self.skip_event.clear()
            return True
        return False

    def check_canceled(self) -> None:
        if self.cancel_event.is_set():
            raise JobCanceledError(f"job {self.job_id or ''} was canceled".replace("  ", " "))

    def log(self, message: str, *, warning: bool = False) -> None:
        self.logs.append(message)
        self.on_event(LogEvent(job_id=self.job_id, level="warning" if warning else "info", message=message))
