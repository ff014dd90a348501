"""SQLite job queue: durability settings, schema version, claim order, atomic limits, events, stale
recovery, blob ownership and retention; and restart safety for real — a service process killed with
SIGKILL while a job runs, then started again over the same data folder."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fakes import fake_engines
from toonbooth.core.errors import LimitError
from toonbooth.core.events import LogEvent, ProgressEvent
from toonbooth.core.results import JobOutput, OutputRef
from toonbooth.core.settings import Settings
from toonbooth.core.specs import AvatarSpec
from toonbooth.runtime.queue_sqlite import DatabaseError, SqliteQueue
from toonbooth.runtime.service import Service

REF = "blob:" + "ab" * 32

CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from fakes import fake_engines
    from toonbooth.core.settings import Settings
    from toonbooth.runtime.service import Service
    svc = Service(Settings(home=sys.argv[1], data_dir=sys.argv[1] + "/data", device="cpu"), engines=fake_engines())
    print("READY", flush=True)
    while True:
        time.sleep(1)
    """
)


def test_wal_full_sync_and_schema_version(tmp_path):
    q = SqliteQueue(tmp_path / "jobs.db")
    conn = q._db.get()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("SELECT value FROM meta WHERE key = 'jobs_schema'").fetchone()[0] == "1"
    q.close()
    raw = sqlite3.connect(tmp_path / "jobs.db")
    raw.execute("UPDATE meta SET value = '99' WHERE key = 'jobs_schema'")
    raw.commit()
    raw.close()
    with pytest.raises(DatabaseError, match="newer toonbooth"):
        SqliteQueue(tmp_path / "jobs.db")


def test_enqueue_claim_progress_finish(tmp_path):
    q = SqliteQueue(tmp_path / "jobs.db")
    spec = {"kind": "avatar", "image": REF}
    queued = [q.enqueue(f"job{i}", "alice", "avatar", spec) for i in range(3)]
    assert [ev.position for _, _, ev in queued] == [0, 1, 2]
    assert [seq for _, seq, _ in queued] == [1, 1, 1]
    assert q.queue_position("job2") == 2 and q.queued_count() == 3 and q.queued_count("bob") == 0
    # a second connection (another "process") sees the accepted job at once
    other = SqliteQueue(tmp_path / "jobs.db")
    assert other.get("job0").state == "queued" and other.get("job0").spec == spec
    first = q.claim("w1")
    assert (first.id, first.state, first.attempts, first.worker) == ("job0", "running", 1, "w1")
    assert q.claim("w2").id == "job1" and q.queue_position("job2") == 0
    seq = q.append_event(
        "job0",
        ProgressEvent(job_id="job0", percent=40, step=2, total=5, stage="x", preview_png=b"\x89PNG fake"),
    )
    assert seq == 2
    rec = q.get("job0")
    assert (rec.percent, rec.step, rec.total, rec.stage) == (40, 2, 5, "x")
    assert q.events_after("job0", 1)[0][1].preview_png is None  # previews are live-only
    out = JobOutput(outputs=[OutputRef(name="avatar", ref=REF)], backend="classic")
    seq, event = q.finish("job0", "completed", output=out)
    assert seq == 3 and event.type == "completed" and event.outputs == [REF]
    assert q.finish("job0", "failed", error="late") is None  # only a running job can finish
    rec = q.get("job0")
    assert rec.state == "completed" and rec.output == out and rec.percent == 100 and rec.error is None
    assert [e.type for _, e in q.events_after("job0")] == ["queued", "progress", "completed"]
    assert [r.id for r in q.list("alice")] == ["job2", "job1", "job0"]
    assert [r.id for r in q.list("alice", offset=1, limit=1)] == ["job1"]
    assert [r.id for r in q.running()] == ["job1"]
    q.close()
    other.close()


def test_queued_limit_is_atomic(tmp_path):
    q = SqliteQueue(tmp_path / "jobs.db")
    q.enqueue("a", "alice", "avatar", {}, max_queued=2)
    q.enqueue("b", "alice", "avatar", {}, max_queued=2)
    with pytest.raises(LimitError, match="2 queued jobs"):
        q.enqueue("c", "alice", "avatar", {}, max_queued=2)
    assert q.get("c") is None and q.events_after("c") == []
    q.claim("w")  # a running job is no longer queued
    q.enqueue("c", "alice", "avatar", {}, max_queued=2)
    q.close()


def test_requeue_stale_once_then_fail(tmp_path):
    q = SqliteQueue(tmp_path / "jobs.db")
    q.enqueue("a", "alice", "avatar", {})
    q.claim("dead-worker")
    assert q.requeue_stale(live_workers={"other"}, max_attempts=2) == [("a", "queued")]
    assert q.requeue_stale(live_workers=(), max_attempts=2) == []  # nothing running now
    rec = q.claim("w2")
    assert rec.attempts == 2
    assert q.requeue_stale(live_workers={"w2"}) == []  # a live worker keeps its job
    assert q.requeue_stale(max_attempts=2) == [("a", "failed")]
    rec = q.get("a")
    assert rec.state == "failed" and rec.error == "the worker died while running this job (2 attempts)"
    types = [e.type for _, e in q.events_after("a")]
    assert types == ["queued", "log", "queued", "failed"]
    q.close()


def test_cancel_flags_and_delivery(tmp_path):
    q = SqliteQueue(tmp_path / "jobs.db")
    q.enqueue("a", "alice", "avatar", {})
    q.enqueue("b", "alice", "avatar", {})
    q.claim("w")
    rec, written = q.request_cancel("a")
    assert rec.state == "running" and rec.cancel_requested and written == [] and q.cancel_requested("a")
    rec, written = q.request_cancel("b")
    assert rec.state == "canceled" and [e.type for _, e in written] == ["canceled"]
    assert q.claim("w") is None
    q.set_delivery("a", {"status": "sent", "to": "a@example.com"})
    assert q.get("a").delivery == {"status": "sent", "to": "a@example.com"}
    q.close()


def test_blob_ownership_and_retention(tmp_path):
    q = SqliteQueue(tmp_path / "jobs.db")
    r1, r2, r3 = ("blob:" + c * 64 for c in "123")
    q.add_blob(r1, "alice")
    q.add_blob(r2, "alice")
    q.add_blob(r2, "bob")
    q.add_blob(r3, "alice", role="result")
    assert q.owns_blob(r1, "alice") and not q.owns_blob(r1, "bob")
    q.enqueue("old", "alice", "avatar", {"image": r1})
    q.claim("w")
    q.finish(
        "old", "completed", output=JobOutput(outputs=[OutputRef(name="avatar", ref=r3)], backend="classic")
    )
    q.enqueue("pending", "alice", "avatar", {"image": r2})
    orphans = q.purge(before=time.time() + 1)
    # the finished job goes with its input and result; r2 is named by a queued job and stays
    assert sorted(orphans) == sorted([r1, r3])
    assert q.get("old") is None and q.events_after("old") == [] and q.get("pending") is not None
    assert q.owns_blob(r2, "alice") and q.owns_blob(r2, "bob")
    q.close()


# --- restart safety, for real ---------------------------------------------------------------------
@pytest.fixture()
def restart_env(tmp_path):
    """A data folder shared by this process and the child servers; the children run `tests/fakes.py`'s
    FakeEngine as the avatar studio (the folder holding it goes on the child's sys.path)."""
    home = tmp_path / "home"
    settings = Settings(home=home, data_dir=home / "data", device="cpu")
    return settings, home, Path(__file__).parent


def start_child(home: Path, engines: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "TB_TEST_STEP_DELAY": str(delay)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home), str(engines)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def kill_when_running(proc: subprocess.Popen, svc: Service, job_id: str, attempts: int) -> None:
    assert proc.stdout.readline().strip() == "READY"
    deadline = time.monotonic() + 30
    while True:
        rec = svc.get(job_id, "alice")
        if rec.state == "running" and rec.attempts == attempts and rec.step >= 2:
            break
        assert time.monotonic() < deadline, rec
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL


def test_killed_process_requeues_the_running_job_and_keeps_the_queue(restart_env, monkeypatch):
    settings, home, engines = restart_env
    front = Service(settings, start_runners=False, engines=fake_engines())  # accepts jobs; runs none
    ref = front.put_upload(_png(), "alice")
    slow = front.submit(AvatarSpec(image=ref, backend="classic", steps=150), "alice")
    rest = [front.submit(AvatarSpec(image=ref, backend="classic", steps=3), "alice") for _ in range(2)]
    child = start_child(home, engines, delay=0.05)
    kill_when_running(child, front, slow.id, attempts=1)
    assert front.get(slow.id, "alice").state == "running"  # the dead process left it so
    assert [front.get(r.id, "alice").state for r in rest] == ["queued", "queued"]
    monkeypatch.setenv("TB_TEST_STEP_DELAY", "0")
    front.start()  # this process now runs the jobs
    rec = front.wait(slow.id, "alice", timeout=30)
    assert rec.state == "completed" and rec.attempts == 2 and rec.output.info["pid"] == os.getpid()
    for r in rest:
        done = front.wait(r.id, "alice", timeout=30)
        assert done.state == "completed" and done.attempts == 1
    types = [e.type for _, e in front.events(slow.id, "alice")]
    first_start, restart = types.index("started"), types.index("started", types.index("started") + 1)
    assert types[0] == "queued" and "progress" in types[first_start:restart]
    assert types[restart - 2 : restart] == ["log", "queued"] and types[-1] == "completed"
    front.close()


def test_second_death_fails_the_job_with_the_reason(restart_env):
    settings, home, engines = restart_env
    front = Service(settings, start_runners=False, engines=fake_engines())
    ref = front.put_upload(_png(), "alice")
    slow = front.submit(AvatarSpec(image=ref, backend="classic", steps=150), "alice")
    other = front.submit(AvatarSpec(image=ref, backend="classic", steps=2), "alice")
    kill_when_running(start_child(home, engines, 0.05), front, slow.id, attempts=1)
    kill_when_running(start_child(home, engines, 0.05), front, slow.id, attempts=2)
    front.start()
    rec = front.wait(slow.id, "alice", timeout=30)
    assert rec.state == "failed" and rec.error == "the worker died while running this job (2 attempts)"
    assert rec.output is None and rec.attempts == 2
    assert front.wait(other.id, "alice", timeout=30).state == "completed"
    events = list(front.events(slow.id, "alice"))
    assert [e.type for _, e in events].count("started") == 2 and events[-1][1].type == "failed"
    assert any(isinstance(e, LogEvent) and "re-queued" in e.message for _, e in events)
    front.close()


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(buf, "PNG")
    return buf.getvalue()
