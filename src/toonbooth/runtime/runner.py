"""Runner: one thread per device that takes jobs from the queue in order and runs them through the
one execution path (`execute.execute`), with a JobContext whose events go to the durable log and the
live bus. Models stay loaded between jobs (one ModelManager per runner, reused). A job that raises
anything is recorded as failed with its message; the runner itself keeps going.

Event order of a job: queued -> started -> progress... -> completed | failed | canceled. Progress is
published live on every step and stored when it moved >= 1 % or 0.5 s passed (terminal events are
always stored, in the same transaction as the state change).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.artifacts import extension_for
from ..core.errors import JobCanceledError, ToonboothError
from ..core.events import JobEvent, LogEvent, ProgressEvent, StartedEvent
from ..core.results import JobOutput
from ..core.specs import SpecBase, parse_job_spec
from . import execute as execute_mod
from .context import JobContext
from .mail import MailError, send_result
from .queue_base import JobRecord, JobState

if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger(__name__)

STORE_EVERY_PERCENT = 1.0
STORE_EVERY_S = 0.5


@dataclass
class ActiveJob:
    """A job a runner of this process is running now."""

    job_id: str
    owner: str
    runner: str
    started: float = field(default_factory=time.monotonic)
    deadline: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    skip: threading.Event = field(default_factory=threading.Event)  # A1111 /skip: the current image
    timed_out: bool = False
    shutdown: bool = False
    last_seq: int = 0
    stored_percent: float = -1.0
    stored_at: float = 0.0
    stored_stage: str = ""
    percent: float = 0.0
    step: int = 0
    total: int = 0
    stage: str = ""
    preview_png: bytes | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def error_message(exc: BaseException) -> str:
    if isinstance(exc, ToonboothError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class Runner:
    def __init__(self, service: Service, index: int, models: Any):
        self.service = service
        self.index = index
        self.models = models
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{index}:{uuid.uuid4().hex[:8]}"
        self.thread = threading.Thread(target=self._loop, name=f"toonbooth-runner-{index}", daemon=True)
        self.current: ActiveJob | None = None

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        svc = self.service
        while not svc.stopping.is_set():
            try:
                record = svc.queue.claim(self.worker_id)
            except Exception:  # the database may be busy or gone for a moment: never die
                log.exception("runner %s could not claim a job", self.worker_id)
                svc.stopping.wait(1.0)
                continue
            if record is None:
                svc.wait_for_work(0.5)
                continue
            try:
                self.run_job(record)
            except Exception:  # bookkeeping failed (database error): log, keep serving
                log.exception("runner %s: job %s could not be recorded", self.worker_id, record.id)

    # --- one job ------------------------------------------------------------------------------
    def run_job(self, record: JobRecord) -> None:
        svc = self.service
        limit = svc.settings.job_time_limit_s
        active = ActiveJob(job_id=record.id, owner=record.owner, runner=self.worker_id)
        if limit > 0:
            active.deadline = active.started + limit
        if record.cancel_requested:
            active.cancel.set()
        self.current = active
        svc.register_active(active)
        try:
            # 1. Announce the start
            self.emit(active, StartedEvent(job_id=record.id))
            # 2. Parse the stored spec (it was valid when accepted; a newer schema may refuse it)
            spec = parse_job_spec(record.spec)
            if active.cancel.is_set():
                raise JobCanceledError(f"job {record.id} was canceled")
            # 3. Run the engine through the one execution path
            ctx = JobContext(
                svc.settings,
                self.models,
                svc.storage,
                job_id=record.id,
                owner=record.owner,
                on_event=lambda event: self.on_event(active, event),
                cancel_event=active.cancel,
                skip_event=active.skip,
                preview_every=svc.settings.preview_every,
                release_upload=lambda ref: svc.release_upload(ref, record.owner, record.id),
            )
            output = execute_mod.execute(spec, ctx, svc.engines)
            # 4. Results belong to the job's owner
            for out in output.outputs:
                svc.queue.add_blob(out.ref, record.owner, role="result", field=out.name)
            # 5. E-mail the result when asked (a failure is recorded, the result is kept)
            delivery = self.deliver(active, spec, record, output)
            self.finish(active, "completed", output=output, delivery=delivery)
        except JobCanceledError as exc:
            if active.shutdown:
                for seq, event in svc.queue.release(record.id, "the server stopped; the job was re-queued"):
                    svc.bus.publish(record.id, seq, event)
            elif active.timed_out:
                self.finish(
                    active, "failed", error=f"time limit of {limit:g} s exceeded", error_type="TimeLimit"
                )
            else:
                log.info("job %s canceled: %s", record.id, exc)
                self.finish(active, "canceled", output=self.store_partial(record, exc))
        except Exception as exc:
            log.warning(
                "job %s failed: %s",
                record.id,
                error_message(exc),
                exc_info=not isinstance(exc, ToonboothError),
            )
            if active.timed_out:
                message = f"time limit of {limit:g} s exceeded ({error_message(exc)})"
                self.finish(active, "failed", error=message, error_type="TimeLimit")
            else:
                self.finish(active, "failed", error=error_message(exc), error_type=type(exc).__name__)
        finally:
            svc.unregister_active(record.id)
            self.current = None

    def store_partial(self, record: JobRecord, exc: JobCanceledError) -> JobOutput | None:
        """What a canceled engine made so far (`exc.partial`, e.g. A1111's interrupt: the images decoded
        from the current latents), stored like a result; None when there is nothing."""
        if exc.partial is None:
            return None
        try:
            output = execute_mod.store_output(exc.partial, self.service.storage)
            for out in output.outputs:
                self.service.queue.add_blob(out.ref, record.owner, role="result", field=out.name)
        except Exception:  # the cancel stands even when the partial result cannot be stored
            log.exception("job %s: the partial result of the canceled job could not be stored", record.id)
            return None
        return output

    def finish(self, active: ActiveJob, state: JobState, **kwargs: Any) -> None:
        done = self.service.queue.finish(active.job_id, state, **kwargs)
        if done is not None:
            seq, event = done
            active.last_seq = seq
            self.service.bus.publish(active.job_id, seq, event)

    # --- events -------------------------------------------------------------------------------
    def emit(self, active: ActiveJob, event: JobEvent) -> None:
        seq = self.service.queue.append_event(active.job_id, event)
        active.last_seq = seq
        self.service.bus.publish(active.job_id, seq, event, True)

    def on_event(self, active: ActiveJob, event: JobEvent) -> None:
        """The JobContext's sink: progress is throttled for storage, everything is published live."""
        if not isinstance(event, ProgressEvent):
            self.emit(active, event)
            return
        now = time.monotonic()
        with active.lock:
            active.percent, active.step, active.total, active.stage = (
                event.percent,
                event.step,
                event.total,
                event.stage,
            )
            if event.preview_png is not None:
                active.preview_png = event.preview_png
            moved = event.percent - active.stored_percent
            store = (
                active.stored_percent < 0
                or moved >= STORE_EVERY_PERCENT
                or (event.percent >= 100.0 and moved > 0)
                or event.stage != active.stored_stage
                or (moved > 0 and now - active.stored_at >= STORE_EVERY_S)
            )
            if store:
                active.stored_percent, active.stored_at, active.stored_stage = event.percent, now, event.stage
        if store:
            self.emit(active, event)
        else:
            self.service.bus.publish(active.job_id, active.last_seq, event, False)

    # --- e-mail -------------------------------------------------------------------------------
    def deliver(self, active: ActiveJob, spec: SpecBase, record: JobRecord, output: JobOutput) -> dict | None:
        to = getattr(spec, "email", None)
        if not to or not output.outputs:
            return None
        svc = self.service
        first = output.primary()
        assert first is not None
        try:
            data = svc.storage.get(first.ref, field="output")
            send_result(
                svc.settings,
                to,
                subject=f"Your toonbooth {record.kind} is ready",
                body=(
                    f"Hello,\n\nyour {record.kind} result (job {record.id}) is attached.\n"
                    f"Backend: {output.backend}.\n\n-- toonbooth\n"
                ),
                attachment=data,
                media_type=first.media_type,
                filename=f"toonbooth-{record.kind}-{record.id[:8]}{extension_for(first.media_type)}",
            )
        except (MailError, ToonboothError, OSError) as exc:
            self.emit(active, LogEvent(job_id=record.id, level="warning", message=f"e-mail not sent: {exc}"))
            return {"status": "failed", "to": to, "error": str(exc), "at": time.time()}
        self.emit(active, LogEvent(job_id=record.id, message=f"result e-mailed to {to}"))
        return {"status": "sent", "to": to, "at": time.time()}
