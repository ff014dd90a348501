"""The service facade: JobSpec -> durable queue -> runner threads -> stored result. The REST routes,
the AUTOMATIC1111 adapter and the web UI all go through `Service`; there is no other way a job runs.

Embedded defaults: SQLite queue + users in `<data_dir>/toonbooth.db`, blobs in `<data_dir>/blobs`
(or S3 with `storage=s3`), `settings.runners` runner threads in this process. Only one process may run
runners over a data folder (an exclusive `flock` on `<data_dir>/runners.lock`), which is what makes
"every job left `running` at start belonged to a dead process" true: those are re-queued once, then
failed with the reason. Every upload, job and result belongs to one user; others get NotFoundError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ..core.audio import AUDIO_MEDIA_TYPES, decode_audio_bytes
from ..core.errors import InputError, LimitError, ModelError, NotFoundError, ToonboothError
from ..core.events import JobEvent
from ..core.images import load_image, read_image_bytes
from ..core.media import MediaKind, media_fields, read_media_bytes
from ..core.results import OutputRef
from ..core.settings import Settings
from ..core.specs import SpecBase, parse_job_spec
from ..engines.base import EngineRegistry, check_job_limits, check_model_names
from .events_bus import BusItem, EventBus
from .mail import mail_configured
from .queue_base import TERMINAL_EVENTS, JobQueue, JobRecord
from .runner import ActiveJob, Runner
from .storage_base import Storage, is_ref, parse_ref
from .users import Users

log = logging.getLogger(__name__)

Path_ = tuple[str | int, ...]


def make_storage(settings: Settings) -> Storage:
    if settings.storage == "s3":
        from .storage_s3 import S3Storage

        return S3Storage(settings)
    from .storage_local import LocalStorage

    return LocalStorage(settings.resolved_data_dir)


def _all_strings(value: Any, prefix: Path_ = ()) -> Iterator[tuple[Path_, str]]:
    if isinstance(value, str):
        yield prefix, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _all_strings(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _all_strings(v, (*prefix, i))


def _field_name(path: Path_) -> str:
    return ".".join(str(p) for p in path)


def _set_path(data: Any, path: Path_, value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


# --- following a job's events --------------------------------------------------------------------
RETENTION_EVERY_S = 3600.0  # how often finished jobs, uploads and results past retention are purged

class _Follower:
    """Merges the durable event log and live bus items into one ordered stream without duplicates."""

    def __init__(self, after: int):
        self.cursor = int(after)
        self.ended = False

    def take_stored(self, rows: list[tuple[int, JobEvent]]) -> list[tuple[int, JobEvent]]:
        out: list[tuple[int, JobEvent]] = []
        for seq, event in rows:
            if self.ended or seq <= self.cursor:
                continue
            out.append((seq, event))
            self.cursor = seq
            if event.type in TERMINAL_EVENTS:
                self.ended = True
        return out

    def take_live(self, item: BusItem) -> list[tuple[int, JobEvent]] | None:
        """Events to yield for a live item; None when stored events are missing (read the log)."""
        if self.ended:
            return []
        if item.stored:
            if item.seq <= self.cursor:
                return []
            if item.seq > self.cursor + 1:
                return None
            return self.take_stored([(item.seq, item.event)])
        return [] if item.seq < self.cursor else [(item.seq, item.event)]


class Service:
    def __init__(
        self,
        settings: Settings,
        *,
        storage: Storage | None = None,
        queue: JobQueue | None = None,
        models: Any | None = None,
        users: Users | None = None,
        engines: EngineRegistry | None = None,
        start_runners: bool = True,
    ):
        self.settings = settings
        data_dir = settings.resolved_data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.storage: Storage = storage if storage is not None else make_storage(settings)
        if queue is None:
            from .queue_sqlite import SqliteQueue

            queue = SqliteQueue(data_dir / "toonbooth.db")
        self.queue: JobQueue = queue
        self.users = users if users is not None else Users(data_dir / "toonbooth.db")
        if engines is None:
            from .engines import default_engines

            engines = default_engines()
        self.engines = engines
        if models is None:
            from .families import model_manager

            models = model_manager(settings)
        self.models = models
        self.bus = EventBus()
        self.stopping = threading.Event()
        self.runners: list[Runner] = []
        self._active: dict[str, ActiveJob] = {}
        self._active_lock = threading.Lock()
        self._work = threading.Condition()
        self._watchdog: threading.Thread | None = None
        self._lock_file: Any = None
        self._started = False
        if start_runners:
            self.start()

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Recover jobs of a dead process, then start the runner threads (idempotent)."""
        if self._started:
            return
        self._take_runner_lock()
        self.stopping.clear()
        for job_id, state in self.queue.requeue_stale((), self.settings.job_max_attempts):
            log.warning("job %s was running when the previous process died: now %s", job_id, state)
        for i in range(self.settings.runners):
            self.runners.append(Runner(self, i, self._models_for_runner(i)))
        for runner in self.runners:
            runner.start()
        self._watchdog = threading.Thread(target=self._watch, name="toonbooth-watchdog", daemon=True)
        self._watchdog.start()
        self._started = True

    def _models_for_runner(self, index: int) -> Any:
        if index == 0:
            return self.models
        from .families import model_manager

        device = self.settings.device
        settings = self.settings
        if device == "cuda":
            settings = self.settings.model_copy(update={"device": f"cuda:{index}"})
        return model_manager(settings, allow_paths=self.models.allow_paths, families=self.models.families)

    def _take_runner_lock(self) -> None:
        path = self.settings.resolved_data_dir / "runners.lock"
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: single-process use is the operator's duty
            return
        fh = open(path, "a+")  # noqa: SIM115 - held for the life of the runners
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise ToonboothError(
                f"another toonbooth process is already running jobs over {self.settings.resolved_data_dir}; "
                "stop it or use another data_dir"
            ) from None
        self._lock_file = fh

    def begin_stop(self) -> None:
        """Start stopping without waiting: runners take no new job, a running job is interrupted at its
        next step and put back in the queue, and event streams (`events`, `aevents`) end, so a server
        shutting down is not held open by SSE clients or waiting A1111 requests. `stop` finishes it."""
        if not self._started:
            return
        self.stopping.set()
        with self._active_lock:
            for active in self._active.values():
                active.shutdown = True
                active.cancel.set()
        with self._work:
            self._work.notify_all()

    def stop(self, timeout: float = 10) -> None:
        """Stop the runners: a running job is interrupted at its next step and put back in the queue
        (without counting the attempt), so the next start runs it again."""
        if not self._started:
            return
        self.begin_stop()
        deadline = time.monotonic() + timeout
        for runner in self.runners:
            runner.thread.join(max(0.0, deadline - time.monotonic()))
            if runner.thread.is_alive():
                log.warning("runner %s did not stop within %s s", runner.worker_id, timeout)
        if self._watchdog is not None:
            self._watchdog.join(max(0.0, deadline - time.monotonic()))
        self.runners = []
        self._started = False
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    def close(self) -> None:
        self.stop()
        self.queue.close()
        self.users.close()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- runner plumbing ----------------------------------------------------------------------
    def wait_for_work(self, timeout: float) -> None:
        with self._work:
            if not self.stopping.is_set():
                self._work.wait(timeout)

    def register_active(self, active: ActiveJob) -> None:
        with self._active_lock:
            self._active[active.job_id] = active

    def unregister_active(self, job_id: str) -> None:
        with self._active_lock:
            self._active.pop(job_id, None)

    def _watch(self) -> None:
        """Time limits, cancels asked for by another process (the queue's cancel flag), and the
        retention purge (at start, then every `RETENTION_EVERY_S`)."""
        last_poll = 0.0
        last_purge = -RETENTION_EVERY_S
        while not self.stopping.wait(0.1):
            now = time.monotonic()
            if now - last_purge >= RETENTION_EVERY_S:
                last_purge = now
                try:
                    removed = self.purge_expired()
                    if removed:
                        log.info("retention: deleted %d stored files older than %s days", removed,
                                 self.settings.retention_days)
                except Exception:  # the purge must never stop the watchdog
                    log.exception("retention purge failed")
            with self._active_lock:
                actives = list(self._active.values())
            poll = now - last_poll >= 0.5
            if poll:
                last_poll = now
            for active in actives:
                if active.cancel.is_set():
                    continue
                if active.deadline is not None and now > active.deadline:
                    active.timed_out = True
                    active.cancel.set()
                elif poll:
                    with contextlib.suppress(Exception):
                        if self.queue.cancel_requested(active.job_id):
                            active.cancel.set()

    # --- uploads ------------------------------------------------------------------------------
    def _limits(self) -> dict[str, int]:
        return {"max_bytes": self.settings.max_upload_bytes, "max_pixels": self.settings.max_pixels}

    def validate_media(self, source: bytes | str, kind: MediaKind, field: str) -> tuple[bytes, str]:
        """(bytes, media type) of an upload that its decoder accepts (format, bytes, pixels / duration
        limits); InputError naming `field` otherwise. Nothing is stored."""
        s = self.settings
        if kind == "audio":
            raw = read_media_bytes(source, field=field, max_bytes=s.max_audio_bytes, kind="audio")
            decoded = decode_audio_bytes(raw, field=field, max_duration_s=s.max_audio_seconds, target_rate=None)
            return raw, AUDIO_MEDIA_TYPES.get(decoded.source_format, "application/octet-stream")
        if kind == "video":
            raise InputError(field, "video inputs are not taken by any studio yet", None)
        raw = read_image_bytes(source, field=field, max_bytes=s.max_upload_bytes)
        img = load_image(raw, field=field, **self._limits())
        return raw, f"image/{(img.format or 'png').lower()}"

    def put_upload(self, data: bytes | str, owner: str, field: str = "image", kind: MediaKind = "image") -> str:
        """Validate an upload (an image, or a recording with `kind="audio"`), store it with its media type,
        record that `owner` owns it."""
        raw, media_type = self.validate_media(data, kind, field)
        ref = self.storage.put(raw, content_type=media_type)
        self.queue.add_blob(ref, owner, role="upload", field=field, size=len(raw))
        return ref

    def read_upload(self, ref: str, owner: str) -> bytes:
        parse_ref(ref, "ref")
        if not self.queue.owns_blob(ref, owner):
            raise NotFoundError(f"no upload {ref}")
        return self._blob(ref)

    def release_upload(self, ref: str, owner: str, job_id: str | None = None) -> bool:
        """`owner` gives up an upload (a training job's photos after training, through its JobContext):
        the ownership is dropped (unless another unfinished job of theirs or one of their results needs
        the blob) and the blob is deleted when nobody owns it any more. True when it was deleted."""
        parse_ref(ref, "ref")
        if not self.queue.release_blob(ref, owner, job_id):
            return False
        return bool(self.storage.delete(ref))

    def _blob(self, ref: str) -> bytes:
        try:
            return self.storage.get(ref)
        except InputError:
            raise NotFoundError(f"the blob {ref} is no longer stored") from None

    # --- jobs ---------------------------------------------------------------------------------
    def submit(self, spec: SpecBase | dict[str, Any], owner: str) -> JobRecord:
        """Accept a job for `owner`: durable (on disk) before this returns.

        Every `blob:` reference must be one of the owner's uploads or results (else NotFoundError
        naming the field); inline images (data URL / base64) are validated and stored as the
        owner's uploads; over the per-user queued limit -> LimitError, and nothing is stored."""
        # 1. Check the spec, its kind, and what its engine can refuse without heavy work (model, sampler
        #    and LoRA names, option combinations: 4xx now, not a failed job later)
        if isinstance(spec, dict):
            spec = parse_job_spec(spec)
        kind = str(spec.kind)  # type: ignore[attr-defined]
        self.check_inputs(spec, owner)
        data = spec.model_dump(mode="json")
        email = getattr(spec, "email", None)
        if email and not mail_configured(self.settings):
            raise InputError(
                "email", "this server has no e-mail configured (TOONBOOTH_SMTP_HOST / _FROM)", email
            )
        # 2. Every stored reference must be the owner's
        for path, value in _all_strings(data):
            if is_ref(value) and not self.queue.owns_blob(value, owner):
                raise NotFoundError(f"`{_field_name(path)}`: no upload {value}")
        # 3. Inline media (images, recordings): validate now (before anything is stored)
        inline: list[tuple[Path_, bytes, str]] = []
        for path, kind_, value in media_fields(type(spec), data):
            name = _field_name(path)
            if value.startswith("blob:"):
                parse_ref(value, name)
                continue
            raw, media_type = self.validate_media(value, kind_, name)
            inline.append((path, raw, media_type))
        # 4. Per-user limit, checked before storing (and again atomically when enqueuing)
        limit = self.settings.max_queued_jobs_per_user
        queued = self.queue.queued_count(owner)
        if queued >= limit:
            raise LimitError(f"you already have {queued} queued jobs (limit {limit}); wait or cancel one")
        # 5. Store inline images as uploads, the spec names them by reference
        new_refs: list[str] = []
        for path, raw, media_type in inline:
            ref = self.storage.put(raw, content_type=media_type)
            if not self.queue.owns_blob(ref, owner):
                new_refs.append(ref)
                self.queue.add_blob(ref, owner, role="upload", field=_field_name(path), size=len(raw))
            _set_path(data, path, ref)
        if inline:
            spec = parse_job_spec(data)
            data = spec.model_dump(mode="json")
        # 6. Enqueue durably
        job_id = uuid.uuid4().hex
        try:
            record, seq, event = self.queue.enqueue(job_id, owner, kind, data, max_queued=limit)
        except LimitError:
            self._forget(new_refs, owner)
            raise
        self.bus.publish(job_id, seq, event)
        with self._work:
            self._work.notify()
        return record

    def check_inputs(self, spec: SpecBase, owner: str) -> None:
        """The engine's `check_inputs` for `owner`. A refusal triggers one registry rescan and a second
        check first: a style trained a moment ago, or a file just copied in, must not be refused."""
        engine = self.engines.engine(spec.kind)  # type: ignore[attr-defined]
        check_model_names(engine.required_models(spec), self.models)
        check_job_limits(engine.cost(spec, self.settings), self.settings, owner)
        try:
            engine.check_inputs(spec, self.models, owner)
        except (InputError, ModelError):
            self.models.registry.scan()
            engine.check_inputs(spec, self.models, owner)

    def _forget(self, refs: list[str], owner: str) -> None:
        """Undo the uploads of a refused submit (only blobs this submit stored for `owner`)."""
        for ref in refs:
            try:
                if self.queue.drop_blob(ref, owner):
                    self.storage.delete(ref)
            except Exception:  # the refusal itself must reach the caller; a leftover blob is only logged
                log.warning("could not remove upload %s of a refused job", ref, exc_info=True)

    def get(self, job_id: str, owner: str) -> JobRecord:
        record = self.queue.get(job_id) if isinstance(job_id, str) else None
        if record is None or record.owner != owner:
            raise NotFoundError(f"no job {str(job_id)[:80]!r}")
        return self._with_live(record)

    def _with_live(self, record: JobRecord) -> JobRecord:
        with self._active_lock:
            active = self._active.get(record.id)
        if active is None or record.state != "running":
            return record
        with active.lock:
            update = {
                "percent": active.percent,
                "step": active.step,
                "total": active.total,
                "stage": active.stage,
            }
        return record.model_copy(update=update)

    def list(self, owner: str, offset: int = 0, limit: int = 20, kind: str | None = None) -> list[JobRecord]:
        if not 1 <= limit <= 200:
            raise InputError("limit", f"must be in [1, 200], got {limit}", limit)
        if offset < 0:
            raise InputError("offset", f"must be >= 0, got {offset}", offset)
        return [self._with_live(r) for r in self.queue.list(owner, offset=offset, limit=limit, kind=kind)]

    def cancel(self, job_id: str, owner: str) -> JobRecord:
        """A queued job is canceled at once; a running one stops at its next step (its record turns
        `canceled` when the runner notices; `cancel_requested` is set meanwhile)."""
        self.get(job_id, owner)
        record, written = self.queue.request_cancel(job_id)
        for seq, event in written:
            self.bus.publish(job_id, seq, event)
        if record.state == "running":
            with self._active_lock:
                active = self._active.get(job_id)
            if active is not None:
                active.cancel.set()
        return self._with_live(record)

    def skip(self, job_id: str, owner: str) -> bool:
        """A1111 `/skip`: the running job ends its current image (what it made so far is kept) and goes on
        with the next one. True when the job runs in this process and was told; engines that make one
        image at a time ignore it."""
        self.get(job_id, owner)
        with self._active_lock:
            active = self._active.get(job_id)
        if active is None:
            return False
        active.skip.set()
        return True

    def wait(self, job_id: str, owner: str, timeout: float | None = None) -> JobRecord:
        """Block until the job is completed, failed or canceled; TimeoutError after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.bus.subscribe(job_id) as sub:
            while True:
                record = self.get(job_id, owner)
                if record.done:
                    return record
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"job {job_id} is still {record.state} after {timeout} s")
                sub.get(0.5 if left is None else min(0.5, left))

    def output_ref(self, job_id: str, owner: str, name: str) -> OutputRef:
        record = self.get(job_id, owner)
        if record.output is None:
            raise NotFoundError(f"job {job_id} has no results (it is {record.state})")
        try:
            return record.output.output(name)
        except KeyError:
            names = ", ".join(o.name for o in record.output.outputs)
            raise NotFoundError(f"job {job_id} has no output {name[:80]!r}; it has: {names}") from None

    def read_output(self, job_id: str, owner: str, name: str) -> bytes:
        return self._blob(self.output_ref(job_id, owner, name).ref)

    def read_output_with_type(self, job_id: str, owner: str, name: str) -> tuple[OutputRef, bytes]:
        out = self.output_ref(job_id, owner, name)
        return out, self._blob(out.ref)

    def preview(self, job_id: str, owner: str) -> bytes | None:
        """The latest live preview PNG of a running job (A1111 `current_image`), if its engine sends any."""
        self.get(job_id, owner)
        with self._active_lock:
            active = self._active.get(job_id)
        return active.preview_png if active is not None else None

    def running(self) -> list[JobRecord]:
        return [self._with_live(r) for r in self.queue.running()]

    def queued_count(self) -> int:
        return self.queue.queued_count()

    # --- events -------------------------------------------------------------------------------
    def events(
        self, job_id: str, owner: str, after: int = 0, timeout: float | None = None
    ) -> Iterator[tuple[int, JobEvent]]:
        """Stored events with seq > `after`, then live ones, until the terminal event. With `timeout`,
        the stream also ends when no event came for that many seconds; it also ends when the service
        stops (the job goes on after a restart: resume with `after` = the last seq received)."""
        self.get(job_id, owner)
        follower = _Follower(after)
        with self.bus.subscribe(job_id) as sub:
            yield from follower.take_stored(self.queue.events_after(job_id, follower.cursor))
            last = time.monotonic()
            while not follower.ended and not self.stopping.is_set():
                item = sub.get(0.5)
                out = follower.take_live(item) if item is not None and not sub.overflowed else None
                if out is None:
                    out = self._catch_up(job_id, follower, sub, idle=item is None)
                    if out is None:
                        return
                yield from out
                now = time.monotonic()
                if out:
                    last = now
                elif timeout is not None and now - last >= timeout:
                    return

    async def aevents(
        self, job_id: str, owner: str, after: int = 0, timeout: float | None = None
    ) -> AsyncIterator[tuple[int, JobEvent]]:
        """`events` for async routes (SSE / WebSocket): waits without blocking the event loop."""
        await asyncio.to_thread(self.get, job_id, owner)
        follower = _Follower(after)
        with self.bus.subscribe(job_id) as sub:
            rows = await asyncio.to_thread(self.queue.events_after, job_id, follower.cursor)
            for pair in follower.take_stored(rows):
                yield pair
            last = time.monotonic()
            while not follower.ended and not self.stopping.is_set():
                item = await sub.aget(0.5)
                out = follower.take_live(item) if item is not None and not sub.overflowed else None
                if out is None:
                    out = await asyncio.to_thread(self._catch_up, job_id, follower, sub, item is None)
                    if out is None:
                        return
                for pair in out:
                    yield pair
                now = time.monotonic()
                if out:
                    last = now
                elif timeout is not None and now - last >= timeout:
                    return

    def _catch_up(
        self, job_id: str, follower: _Follower, sub: Any, idle: bool
    ) -> list[tuple[int, JobEvent]] | None:
        """Read the durable log after the cursor (idle, overflow or a gap). None: the job is over (or
        gone) and nothing is left to send."""
        sub.overflowed = False
        out = follower.take_stored(self.queue.events_after(job_id, follower.cursor))
        if not out and idle:
            record = self.queue.get(job_id)
            if record is None or record.done:
                return None
        return out

    # --- retention ----------------------------------------------------------------------------
    def purge_expired(self, now: float | None = None) -> int:
        """Delete finished jobs, uploads and results older than `retention_days`. Returns blobs deleted."""
        if self.settings.retention_days <= 0:
            return 0
        cutoff = (now if now is not None else time.time()) - self.settings.retention_days * 86400
        return self._delete_blobs(self.queue.purge(cutoff))

    def delete_user_data(self, owner: str) -> int:
        """Delete-my-data: cancel the owner's unfinished jobs, then remove their jobs, uploads and
        results (blobs another user also owns stay). Returns blobs deleted."""
        for record in self.queue.list(owner, 0, 100_000):
            if not record.done:
                self.cancel(record.id, owner)
                with contextlib.suppress(TimeoutError):
                    self.wait(record.id, owner, timeout=30)
        return self._delete_blobs(self.queue.purge(time.time(), owner=owner))

    def _delete_blobs(self, refs: list[str]) -> int:
        n = 0
        for ref in refs:
            try:
                n += bool(self.storage.delete(ref))
            except Exception:  # one unreadable blob must not stop a purge / delete-my-data
                log.warning("could not delete stored blob %s", ref, exc_info=True)
        return n
