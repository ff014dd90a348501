"""Embedded job queue on SQLite (https://www.sqlite.org/wal.html, https://www.sqlite.org/pragma.html).

WAL journal with `synchronous=FULL`: a job is on disk before `enqueue` returns, so an accepted job
survives a crash or power loss. One connection per thread; every write is a `BEGIN IMMEDIATE`
transaction (the write lock is taken up front, so two writers never deadlock on an upgrade). Tables:
`meta` (schema versions), `jobs`, `events` (per-job ordered log), `blobs` (who owns which upload or
result). `users.py` keeps its tables in the same file.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from ..core.errors import LimitError, ToonboothError
from ..core.events import (
    CanceledEvent,
    CompletedEvent,
    FailedEvent,
    JobEvent,
    LogEvent,
    ProgressEvent,
    QueuedEvent,
)
from ..core.results import JobOutput
from .queue_base import TERMINAL_STATES, JobQueue, JobRecord, JobState

SCHEMA_VERSION = 1
_EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(JobEvent)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    percent REAL NOT NULL DEFAULT 0,
    step INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    stage TEXT NOT NULL DEFAULT '',
    error TEXT,
    error_type TEXT,
    output TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    delivery TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    at REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs (
    ref TEXT NOT NULL,
    owner TEXT NOT NULL,
    role TEXT NOT NULL,
    field TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    PRIMARY KEY (ref, owner)
) WITHOUT ROWID;
"""


class DatabaseError(ToonboothError):
    http_status = 500


def connect(path: Path) -> sqlite3.Connection:
    """A connection with the project's pragmas (WAL, synchronous=FULL, foreign keys, busy timeout)."""
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def ensure_schema(conn: sqlite3.Connection, key: str, version: int, ddl: str) -> None:
    """Create tables for `key` at `version` (recorded in `meta`); refuse a database from a newer release."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        found = int(row["value"]) if row else 0
        if found > version:
            raise DatabaseError(
                f"the job database was written by a newer toonbooth ({key} version {found}, this release "
                f"knows {version}); upgrade toonbooth or use another data_dir"
            )
        for statement in ddl.strip().split(";"):
            if statement.strip():
                conn.execute(statement)
        # (migrations from `found` to `version` go here when the schema changes)
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(version)))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class ThreadConnections:
    """One SQLite connection per thread, all closed by `close()`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        conn = self.get()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()


def _event_json(event: JobEvent) -> str:
    if isinstance(event, ProgressEvent) and event.preview_png is not None:
        event = event.model_copy(update={"preview_png": None})  # previews are live-only
    return event.model_dump_json()


def _row_to_record(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        owner=row["owner"],
        kind=row["kind"],
        spec=json.loads(row["spec"]),
        state=row["state"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        percent=row["percent"],
        step=row["step"],
        total=row["total"],
        stage=row["stage"],
        error=row["error"],
        error_type=row["error_type"],
        output=JobOutput.model_validate_json(row["output"]) if row["output"] else None,
        attempts=row["attempts"],
        delivery=json.loads(row["delivery"]) if row["delivery"] else None,
        cancel_requested=bool(row["cancel_requested"]),
        worker=row["worker"],
    )


class SqliteQueue(JobQueue):
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = ThreadConnections(self.path)
        ensure_schema(self._db.get(), "jobs_schema", SCHEMA_VERSION, _SCHEMA)

    # --- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _append(conn: sqlite3.Connection, job_id: str, event: JobEvent) -> int:
        row = conn.execute(
            "SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM events WHERE job_id = ?", (job_id,)
        ).fetchone()
        seq = int(row["n"])
        conn.execute(
            "INSERT INTO events (job_id, seq, type, at, data) VALUES (?, ?, ?, ?, ?)",
            (job_id, seq, event.type, event.at, _event_json(event)),
        )
        return seq

    @staticmethod
    def _position(conn: sqlite3.Connection, job_id: str) -> int:
        row = conn.execute("SELECT seq, state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or row["state"] != "queued":
            return -1
        ahead = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND seq < ?", (row["seq"],))
        return int(ahead.fetchone()[0])

    def _get(self, conn: sqlite3.Connection, job_id: str) -> JobRecord | None:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _row_to_record(row) if row else None

    # --- jobs ---------------------------------------------------------------------------------
    def enqueue(
        self, job_id: str, owner: str, kind: str, spec: dict[str, Any], *, max_queued: int | None = None
    ) -> tuple[JobRecord, int, JobEvent]:
        now = time.time()
        with self._db.write() as conn:
            if max_queued is not None:
                n = conn.execute(
                    "SELECT COUNT(*) FROM jobs WHERE owner = ? AND state = 'queued'", (owner,)
                ).fetchone()[0]
                if n >= max_queued:
                    raise LimitError(
                        f"you already have {n} queued jobs (limit {max_queued}); wait for some to finish "
                        "or cancel one"
                    )
            conn.execute(
                "INSERT INTO jobs (id, owner, kind, spec, state, created_at) VALUES (?, ?, ?, ?, 'queued', ?)",
                (job_id, owner, kind, json.dumps(spec, separators=(",", ":")), now),
            )
            event = QueuedEvent(job_id=job_id, position=self._position(conn, job_id), at=now)
            seq = self._append(conn, job_id, event)
            record = self._get(conn, job_id)
        assert record is not None
        return record, seq, event

    def claim(self, worker_id: str) -> JobRecord | None:
        with self._db.write() as conn:
            row = conn.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1").fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET state = 'running', started_at = ?, worker = ?, attempts = attempts + 1, "
                "percent = 0, step = 0, total = 0, stage = '' WHERE id = ?",
                (time.time(), worker_id, row["id"]),
            )
            return self._get(conn, row["id"])

    def update_progress(self, job_id: str, percent: float, step: int, total: int, stage: str) -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE jobs SET percent = ?, step = ?, total = ?, stage = ? WHERE id = ? AND state = 'running'",
                (percent, step, total, stage, job_id),
            )

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
        if state not in TERMINAL_STATES:
            raise ValueError(f"finish needs a terminal state, got {state!r}")
        now = time.time()
        event: JobEvent
        if state == "completed":
            event = CompletedEvent(
                job_id=job_id, outputs=[o.ref for o in output.outputs] if output else [], at=now
            )
        elif state == "failed":
            event = FailedEvent(job_id=job_id, message=error or "failed", error_type=error_type or "", at=now)
        else:
            event = CanceledEvent(job_id=job_id, at=now)
        with self._db.write() as conn:
            cur = conn.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, output = ?, error = ?, error_type = ?, delivery = ?, "
                "percent = CASE WHEN ? = 'completed' THEN 100 ELSE percent END "
                "WHERE id = ? AND state = 'running'",
                (
                    state,
                    now,
                    output.model_dump_json() if output else None,
                    error,
                    error_type,
                    json.dumps(delivery) if delivery else None,
                    state,
                    job_id,
                ),
            )
            if cur.rowcount == 0:
                return None
            seq = self._append(conn, job_id, event)
        return seq, event

    def release(self, job_id: str, reason: str) -> list[tuple[int, JobEvent]]:
        written: list[tuple[int, JobEvent]] = []
        with self._db.write() as conn:
            cur = conn.execute(
                "UPDATE jobs SET state = 'queued', attempts = MAX(attempts - 1, 0), started_at = NULL, worker = NULL "
                "WHERE id = ? AND state = 'running'",
                (job_id,),
            )
            if cur.rowcount:
                for event in (
                    LogEvent(job_id=job_id, level="warning", message=reason),
                    QueuedEvent(job_id=job_id, position=self._position(conn, job_id)),
                ):
                    written.append((self._append(conn, job_id, event), event))
        return written

    def requeue_stale(
        self, live_workers: Collection[str] = (), max_attempts: int = 2
    ) -> list[tuple[str, JobState]]:
        changed: list[tuple[str, JobState]] = []
        live = set(live_workers)
        with self._db.write() as conn:
            rows = conn.execute(
                "SELECT id, attempts, worker FROM jobs WHERE state = 'running' ORDER BY seq"
            ).fetchall()
            for row in rows:
                if row["worker"] in live:
                    continue
                job_id, attempts = row["id"], int(row["attempts"])
                if attempts < max_attempts:
                    conn.execute(
                        "UPDATE jobs SET state = 'queued', worker = NULL, cancel_requested = 0 WHERE id = ?",
                        (job_id,),
                    )
                    self._append(
                        conn,
                        job_id,
                        LogEvent(
                            job_id=job_id,
                            level="warning",
                            message=f"the worker died while running this job (attempt {attempts} of "
                            f"{max_attempts}); re-queued",
                        ),
                    )
                    self._append(
                        conn, job_id, QueuedEvent(job_id=job_id, position=self._position(conn, job_id))
                    )
                    changed.append((job_id, "queued"))
                else:
                    message = f"the worker died while running this job ({attempts} attempts)"
                    conn.execute(
                        "UPDATE jobs SET state = 'failed', finished_at = ?, error = ?, error_type = 'WorkerLost' "
                        "WHERE id = ?",
                        (time.time(), message, job_id),
                    )
                    self._append(
                        conn, job_id, FailedEvent(job_id=job_id, message=message, error_type="WorkerLost")
                    )
                    changed.append((job_id, "failed"))
        return changed

    def request_cancel(self, job_id: str) -> tuple[JobRecord, list[tuple[int, JobEvent]]]:
        written: list[tuple[int, JobEvent]] = []
        with self._db.write() as conn:
            record = self._get(conn, job_id)
            if record is None:
                raise KeyError(job_id)
            if record.state == "queued":
                now = time.time()
                conn.execute(
                    "UPDATE jobs SET state = 'canceled', finished_at = ?, cancel_requested = 1 WHERE id = ?",
                    (now, job_id),
                )
                event = CanceledEvent(job_id=job_id, at=now)
                written.append((self._append(conn, job_id, event), event))
            elif record.state == "running":
                conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            record = self._get(conn, job_id)
        assert record is not None
        return record, written

    def cancel_requested(self, job_id: str) -> bool:
        row = self._db.get().execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def set_delivery(self, job_id: str, delivery: dict[str, Any]) -> None:
        with self._db.write() as conn:
            conn.execute("UPDATE jobs SET delivery = ? WHERE id = ?", (json.dumps(delivery), job_id))

    def get(self, job_id: str) -> JobRecord | None:
        return self._get(self._db.get(), job_id)

    def list(self, owner: str, offset: int = 0, limit: int = 20, kind: str | None = None) -> list[JobRecord]:
        sql = "SELECT * FROM jobs WHERE owner = ?"
        args: list[Any] = [owner]
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        sql += " ORDER BY seq DESC LIMIT ? OFFSET ?"
        args += [max(0, int(limit)), max(0, int(offset))]
        return [_row_to_record(r) for r in self._db.get().execute(sql, args).fetchall()]

    def running(self) -> list[JobRecord]:
        rows = self._db.get().execute("SELECT * FROM jobs WHERE state = 'running' ORDER BY seq").fetchall()
        return [_row_to_record(r) for r in rows]

    def queued_count(self, owner: str | None = None) -> int:
        if owner is None:
            row = self._db.get().execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()
        else:
            row = (
                self._db.get()
                .execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND owner = ?", (owner,))
                .fetchone()
            )
        return int(row[0])

    def queue_position(self, job_id: str) -> int:
        return self._position(self._db.get(), job_id)

    # --- events -------------------------------------------------------------------------------
    def append_event(self, job_id: str, event: JobEvent) -> int:
        with self._db.write() as conn:
            if isinstance(event, ProgressEvent):
                conn.execute(
                    "UPDATE jobs SET percent = ?, step = ?, total = ?, stage = ? WHERE id = ? AND state = 'running'",
                    (event.percent, event.step, event.total, event.stage, job_id),
                )
            return self._append(conn, job_id, event)

    def events_after(self, job_id: str, seq: int = 0) -> list[tuple[int, JobEvent]]:
        rows = (
            self._db.get()
            .execute(
                "SELECT seq, data FROM events WHERE job_id = ? AND seq > ? ORDER BY seq", (job_id, int(seq))
            )
            .fetchall()
        )
        return [(int(r["seq"]), _EVENT_ADAPTER.validate_json(r["data"])) for r in rows]

    def last_seq(self, job_id: str) -> int:
        row = (
            self._db.get()
            .execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id = ?", (job_id,))
            .fetchone()
        )
        return int(row[0])

    # --- blobs --------------------------------------------------------------------------------
    def add_blob(self, ref: str, owner: str, *, role: str = "upload", field: str = "", size: int = 0) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO blobs (ref, owner, role, field, size, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (ref, owner, role, field, size, time.time()),
            )

    def owns_blob(self, ref: str, owner: str) -> bool:
        row = (
            self._db.get().execute("SELECT 1 FROM blobs WHERE ref = ? AND owner = ?", (ref, owner)).fetchone()
        )
        return row is not None

    def drop_blob(self, ref: str, owner: str) -> bool:
        with self._db.write() as conn:
            conn.execute("DELETE FROM blobs WHERE ref = ? AND owner = ?", (ref, owner))
            owned = conn.execute("SELECT 1 FROM blobs WHERE ref = ?", (ref,)).fetchone()
            used = conn.execute(
                "SELECT 1 FROM jobs WHERE instr(spec, ?) > 0 OR instr(COALESCE(output, ''), ?) > 0 LIMIT 1",
                (ref, ref),
            ).fetchone()
        return owned is None and used is None

    def release_blob(self, ref: str, owner: str, job_id: str | None = None) -> bool:
        other = "id != ?" if job_id else "1"
        args: tuple[Any, ...] = (job_id,) if job_id else ()
        with self._db.write() as conn:
            needed = conn.execute(
                f"SELECT 1 FROM jobs WHERE owner = ? AND {other} AND (("
                "state IN ('queued', 'running') AND instr(spec, ?) > 0) OR instr(COALESCE(output, ''), ?) > 0) "
                "LIMIT 1",
                (owner, *args, ref, ref),
            ).fetchone()
            if needed is not None:
                return False
            conn.execute("DELETE FROM blobs WHERE ref = ? AND owner = ?", (ref, owner))
            owned = conn.execute("SELECT 1 FROM blobs WHERE ref = ?", (ref,)).fetchone()
            used = conn.execute(
                f"SELECT 1 FROM jobs WHERE {other} AND state IN ('queued', 'running') AND instr(spec, ?) > 0 "
                "LIMIT 1",
                (*args, ref),
            ).fetchone()
        return owned is None and used is None

    def purge(self, before: float, owner: str | None = None) -> list[str]:
        with self._db.write() as conn:
            if owner is not None:
                jobs = conn.execute(
                    "SELECT id FROM jobs WHERE owner = ? AND state NOT IN ('queued', 'running')", (owner,)
                ).fetchall()
                candidates = conn.execute("SELECT ref FROM blobs WHERE owner = ?", (owner,)).fetchall()
            else:
                jobs = conn.execute(
                    "SELECT id FROM jobs WHERE state NOT IN ('queued', 'running') AND finished_at < ?",
                    (before,),
                ).fetchall()
                candidates = conn.execute("SELECT ref FROM blobs WHERE created_at < ?", (before,)).fetchall()
            for row in jobs:
                conn.execute("DELETE FROM events WHERE job_id = ?", (row["id"],))
                conn.execute("DELETE FROM jobs WHERE id = ?", (row["id"],))
            orphans: list[str] = []
            uses = "(instr(spec, ?) > 0 OR instr(COALESCE(output, ''), ?) > 0)"
            for ref in sorted({r["ref"] for r in candidates}):
                # a blob still named by a kept job (input of an unfinished job, a recent result) stays
                if owner is not None:
                    mine = conn.execute(
                        f"SELECT 1 FROM jobs WHERE owner = ? AND {uses} LIMIT 1", (owner, ref, ref)
                    )
                    if mine.fetchone():
                        continue
                    conn.execute("DELETE FROM blobs WHERE ref = ? AND owner = ?", (ref, owner))
                else:
                    if conn.execute(f"SELECT 1 FROM jobs WHERE {uses} LIMIT 1", (ref, ref)).fetchone():
                        continue
                    conn.execute("DELETE FROM blobs WHERE ref = ? AND created_at < ?", (ref, before))
                owned = conn.execute("SELECT 1 FROM blobs WHERE ref = ?", (ref,)).fetchone()
                used = conn.execute(f"SELECT 1 FROM jobs WHERE {uses} LIMIT 1", (ref, ref)).fetchone()
                if owned is None and used is None:
                    orphans.append(ref)
        return orphans

    def close(self) -> None:
        self._db.close()
