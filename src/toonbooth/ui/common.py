"""What the UI tabs share: following a job, canceling it, the progress bar, reading result PNGs.

A tab follows a job through the runtime's durable event stream (`Service.events`: the stored events, then
live ones, until the terminal event), never by polling the job row with sleeps. `follow_job` turns that
stream into `JobUpdate`s for Gradio generator handlers (each `yield` of a handler updates the page:
https://www.gradio.app/guides/streaming-outputs), with progress throttled so a fast job does not flood
the browser, and always ends with one final update that carries the job's record.
"""

from __future__ import annotations

import html
import io
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..core.errors import ToonboothError
from ..runtime.queue_base import TERMINAL_STATES, JobRecord


def png_image(data: bytes) -> Image.Image:
    """A stored result (PNG bytes written by the runtime) as a loaded PIL image."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def markdown_text(value: str) -> str:
    """Free text for a Markdown component: no HTML gets through (entities render as the characters)."""
    return html.escape(value, quote=False)


def progress_html(percent: float, text: str, elem_id: str = "tb-progress") -> str:
    """A progress bar; its `data-percent` is what the browser test reads."""
    pct = max(0.0, min(100.0, float(percent)))
    return (
        f'<div id="{html.escape(elem_id)}" data-percent="{pct:.1f}" style="width:100%">'
        f'<div style="background:#e5e7eb;border-radius:6px;height:18px;overflow:hidden">'
        f'<div class="tb-progress-fill" style="background:#6366f1;height:18px;width:{pct:.1f}%"></div></div>'
        f'<div class="tb-progress-text" style="font-size:0.9em;margin-top:4px">{pct:.0f}% — '
        f"{html.escape(text)}</div></div>"
    )


@dataclass(frozen=True)
class JobUpdate:
    """Where a followed job stands after one of its events (or, on the final update, at its end)."""

    job_id: str
    state: str
    """queued | running | completed | failed | canceled, as the events tell it."""
    percent: float
    """0-100 over the whole job: the latest progress event's."""
    step: int
    total: int
    stage: str
    event: Any | None
    """The event this update comes from (a `core.events` model); None on the final update."""
    due: bool
    """Worth showing now: False for log events and for progress that the throttle holds back."""
    record: JobRecord | None = None
    """Only on the final update: the job's record (done, unless the stream ended early: idle timeout or
    the service stopping)."""

    @property
    def final(self) -> bool:
        return self.record is not None

    def status(self) -> str:
        """One line for a status text, e.g. `running: denoise 3/10 30 %`."""
        return f"{self.state}: {self.stage or 'waiting'} {self.percent:.0f} %"


def follow_job(
    service: Any,
    job_id: str,
    owner: str,
    *,
    timeout: float | None = None,
    every_s: float = 0.5,
    min_percent: float | None = 1.0,
) -> Iterator[JobUpdate]:
    """Follow `job_id` (of `owner`) from its first event to its end: one update per event, then a final one
    with the job's record.

    A progress update is `due` when `every_s` seconds passed since the last due one, or the percentage
    rose by `min_percent` (None: time only), or it reached 100; queued / started / terminal events are
    always due, log events never. With `timeout`, the stream also ends after that many seconds without
    any event (the final record then says the job is still queued or running)."""
    state, percent, step, total, stage = "queued", 0.0, 0, 0, ""
    shown_at, shown_percent = -math.inf, -math.inf
    for _seq, event in service.events(job_id, owner, timeout=timeout):
        due = True
        if event.type == "progress":
            state, percent, stage = "running", event.percent, event.stage
            step, total = event.step, event.total
            now = time.monotonic()
            rose = min_percent is not None and percent - shown_percent >= min_percent
            due = rose or now - shown_at >= every_s or percent >= 100.0
            if due:
                shown_at, shown_percent = now, percent
        elif event.type == "log":
            due = False
        elif event.type in TERMINAL_STATES:
            state = event.type
        else:  # queued, started
            state = "queued" if event.type == "queued" else "running"
        yield JobUpdate(job_id, state, percent, step, total, stage, event, due)
    record = service.get(job_id, owner)
    if record.done:
        percent = 100.0 if record.state == "completed" else percent
    yield JobUpdate(job_id, record.state, percent, step, total, stage, None, True, record)


def cancel_job(service: Any, job_id: str | None, owner: str) -> str:
    """Ask the service to cancel a job; the Markdown answer for the tab's status text. A queued job is
    canceled at once, a running one at its next step (its followers then get the `canceled` event)."""
    if not job_id:
        return "Nothing is running."
    try:
        record = service.cancel(job_id, owner)
    except ToonboothError as exc:
        return f"**Error:** {markdown_text(str(exc))}"
    return f"Cancel requested ({record.state})."
