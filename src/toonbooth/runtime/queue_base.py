"""Job queue base: the durable job store and work queue behind the service (DESIGN.md habit 7).

`queue_sqlite.SqliteQueue` is the embedded default; a Celery/Redis broker + PostgreSQL store
implements the same methods later without touching engines or routes. A queue keeps, per job, the
row (`JobRecord`) and its ordered event log (`seq` 1, 2, ...); state changes and the event that
announces them are written in one transaction, so the log and the row never disagree.
"""

from __future__ import annotations

import abc
from collections.abc import Collection
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..core.events import JobEvent
from ..core.results import JobOutput

JobState = Literal["queued", "running", "completed", "failed", "canceled"]
TERMINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "canceled"})
TERMINAL_EVENTS: frozenset[str] = TERMINAL_STATES


class JobRecord(BaseModel):
    """One job as stored and as returned by the API."""

    id: str
    owner: str
    kind: str
    spec: dict[str, Any] = Field(description="The JobSpec as JSON (the queue row).")
    state: JobState
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    percent: float = Field(0.0, ge=0.0, le=100.0)
    step: int = 0
    total: int = 0
    stage: str = ""
    error: str | None = None
    error_type: str | None = None
    output: JobOutput | None = None
    attempts: int = Field(0, description="How many times a runner started this job.")
    delivery: dict[str, Any] | None = Field(
        None, description="E-mail delivery: status sent|failed, to, error."
    )
    cancel_requested: bool = False
    worker: str | None = Field(None, description="Runner that holds (or last held) the job.")

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES


class JobQueue(abc.ABC):
    """Durable job store + work queue. Every method is safe to call from any thread."""

    # --- jobs ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def enqueue(
        self, job_id: str, owner: str, kind: str, spec: dict[str, Any], *, max_queued: int | None = None
    ) -> tuple[JobRecord, int, JobEvent]:
        """Store a new queued job and its `queued` event, durably, in one transaction. When the owner
        already has `max_queued` queued jobs nothing is written and LimitError is raised.
        Returns (record, seq of the queued event, the event)."""

    @abc.abstractmethod
    def claim(self, worker_id: str) -> JobRecord | None:
        """Atomically take the oldest queued job: state running, attempts + 1. None when idle."""

    @abc.abstractmethod
    def update_progress(self, job_id: str, percent: float, step: int, total: int, stage: str) -> None: ...

    @abc.abstractmethod
    def finish(
        self,
        job_id: str,
        state: JobState,
        *,
        output: JobOutput | None = None,
        error: str | None = None,
        error_type: str | None = None,
        delivery: dict[str, Any] | None = None,
    ) -> tuple[int, JobEvent] | None:
        """Move a running job to a terminal state and append its terminal event (one transaction).
        Returns (seq, event), or None when the job was not running (nothing written)."""

    @abc.abstractmethod
    def release(self, job_id: str, reason: str) -> list[tuple[int, JobEvent]]:
        """Give a running job back to the queue without counting the attempt (clean shutdown)."""

    @abc.abstractmethod
    def requeue_stale(
        self, live_workers: Collection[str] = (), max_attempts: int = 2
    ) -> list[tuple[str, JobState]]:
        """Jobs left `running` by workers not in `live_workers` (dead processes): re-queued while
        attempts < max_attempts, else failed with the reason. Returns (job id, new state) pairs."""

    @abc.abstractmethod
    def request_cancel(self, job_id: str) -> tuple[JobRecord, list[tuple[int, JobEvent]]]:
        """A queued job becomes canceled at once (its event appended); a running one gets its
        `cancel_requested` flag for its runner. Returns the record and any events written."""

    @abc.abstractmethod
    def cancel_requested(self, job_id: str) -> bool: ...

    @abc.abstractmethod
    def set_delivery(self, job_id: str, delivery: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def get(self, job_id: str) -> JobRecord | None: ...

    @abc.abstractmethod
    def list(self, owner: str, offset: int = 0, limit: int = 20, kind: str | None = None) -> list[JobRecord]:
        """The owner's jobs, newest first."""

    @abc.abstractmethod
    def running(self) -> list[JobRecord]: ...

    @abc.abstractmethod
    def queued_count(self, owner: str | None = None) -> int: ...

    @abc.abstractmethod
    def queue_position(self, job_id: str) -> int:
        """Queued jobs ahead of this one (0 = next); -1 when it is not queued."""

    # --- events -------------------------------------------------------------------------------
    @abc.abstractmethod
    def append_event(self, job_id: str, event: JobEvent) -> int:
        """Store an event (preview images are not stored) and return its seq (1, 2, ...). A progress
        event also updates the job row's percent / step / total / stage."""

    @abc.abstractmethod
    def events_after(self, job_id: str, seq: int = 0) -> list[tuple[int, JobEvent]]: ...

    @abc.abstractmethod
    def last_seq(self, job_id: str) -> int: ...

    # --- uploads (blob ownership) ------------------------------------------------------------
    @abc.abstractmethod
    def add_blob(self, ref: str, owner: str, *, role: str = "upload", field: str = "", size: int = 0) -> None:
        """Record that `owner` owns blob `ref` (an upload or a result)."""

    @abc.abstractmethod
    def owns_blob(self, ref: str, owner: str) -> bool: ...

    @abc.abstractmethod
    def drop_blob(self, ref: str, owner: str) -> bool:
        """Forget that `owner` owns `ref`; True when nobody owns it and no job names it any more."""

    @abc.abstractmethod
    def release_blob(self, ref: str, owner: str, job_id: str | None = None) -> bool:
        """A job gives up `owner`'s upload `ref` (training photos after training). The ownership stays
        while another unfinished job of `owner` (not `job_id`) names the blob, or one of `owner`'s job
        results is this blob; else it is dropped. True when the blob is then owned by nobody and no
        unfinished job other than `job_id` names it: the caller deletes it from storage (finished jobs
        that named it keep only the reference)."""

    @abc.abstractmethod
    def purge(self, before: float, owner: str | None = None) -> list[str]:
        """Delete finished jobs (and their events) finished before `before` and blob ownerships
        created before it (all of `owner`'s when given, `before` then ignored for them). Returns the
        refs no longer owned by anyone (the caller deletes them from storage)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
