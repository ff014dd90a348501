"""Service facade: submit -> queue -> runner -> result; events, cancel, time limit, failures,
ownership and limits. Real SQLite, real storage, the real classic avatar engine, and a small test
engine (`tests/fakes.py`, handed to the Service in its engine registry) for slow / failing / cancelled jobs."""

from __future__ import annotations

import asyncio
import base64
import io
import random
import threading
import time

import pytest
from PIL import Image

from fakes import fake_engines
from toonbooth.core.errors import InputError, InputTooLargeError, LimitError, NotFoundError
from toonbooth.core.settings import Settings
from toonbooth.core.specs import AvatarSpec
from toonbooth.runtime.service import Service


def png_bytes(size: int = 32, color=(200, 120, 90)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home", data_dir=tmp_path / "data", device="cpu")


@pytest.fixture()
def test_engine(monkeypatch):
    """The engines with `tests.fakes.FakeEngine` as the avatar studio (see there for its controls)."""
    monkeypatch.setenv("TB_TEST_STEP_DELAY", "0.005")
    return fake_engines()


def make_service(settings: Settings, **kw) -> Service:
    return Service(settings, **kw)


def spec_for(ref: str, **kw) -> AvatarSpec:
    return AvatarSpec(image=ref, backend="classic", **kw)


def blob_files(settings: Settings) -> list:
    return [p for p in (settings.resolved_data_dir / "blobs").rglob("*") if p.is_file()]


def test_classic_avatar_job_end_to_end(settings, sample_photo_path):
    photo = Image.open(sample_photo_path).convert("RGB").resize((96, 96))
    buf = io.BytesIO()
    photo.save(buf, "PNG")
    with make_service(settings) as svc:
        ref = svc.put_upload(buf.getvalue(), "alice")
        assert ref.startswith("blob:")
        job = svc.submit(spec_for(ref), "alice")
        assert job.state == "queued" and job.owner == "alice" and job.kind == "avatar"
        events = list(svc.events(job.id, "alice", timeout=30))
        types = [e.type for _, e in events]
        assert types[0] == "queued" and types[1] == "started" and types[-1] == "completed"
        assert "progress" in types and types.index("progress") > 1
        seqs = [s for s, _ in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        record = svc.wait(job.id, "alice", timeout=30)
        assert record.state == "completed" and record.attempts == 1 and record.percent == 100
        assert record.started_at is not None and record.finished_at >= record.started_at >= record.created_at
        out = record.output.output("avatar")
        result = Image.open(io.BytesIO(svc.read_output(job.id, "alice", "avatar")))
        assert result.size == (out.width, out.height) == (512, 512)  # classic: at least 512 px to share
        assert record.output.backend == "classic"
        # replay after a seq gives only the later events; the result is the user's blob now
        tail = list(svc.events(job.id, "alice", after=seqs[-2]))
        assert [e.type for _, e in tail] == ["completed"]
        assert svc.read_upload(out.ref, "alice")[:8] == b"\x89PNG\r\n\x1a\n"
        assert [r.id for r in svc.list("alice")] == [job.id]
        assert svc.list("alice", kind="makeup") == []
        with pytest.raises(NotFoundError, match="no output"):
            svc.read_output(job.id, "alice", "nope")


def test_ownership_isolates_users(settings, test_engine):
    with make_service(settings, engines=test_engine) as svc:
        ref = svc.put_upload(png_bytes(), "alice")
        job = svc.submit(spec_for(ref, steps=2), "alice")
        svc.wait(job.id, "alice", timeout=20)
        for call in (
            lambda: svc.get(job.id, "bob"),
            lambda: svc.cancel(job.id, "bob"),
            lambda: svc.wait(job.id, "bob", timeout=1),
            lambda: list(svc.events(job.id, "bob")),
            lambda: svc.read_output(job.id, "bob", "avatar"),
            lambda: svc.read_upload(ref, "bob"),
            lambda: svc.get("no-such-job", "alice"),
        ):
            with pytest.raises(NotFoundError):
                call()
        with pytest.raises(NotFoundError, match="`image`"):
            svc.submit(spec_for(ref), "bob")  # alice's upload is not bob's
        assert svc.list("bob") == []
        # the same bytes uploaded by bob are then bob's too
        assert svc.put_upload(png_bytes(), "bob") == ref
        assert svc.wait(svc.submit(spec_for(ref, steps=1), "bob").id, "bob", timeout=20).state == "completed"
        assert len(svc.list("alice")) == 1 and len(svc.list("bob")) == 1


def test_inline_images_become_uploads_and_bad_input_stores_nothing(settings, test_engine):
    tiny = Settings(**{**settings.model_dump(), "max_upload_bytes": 4096})
    with make_service(tiny, engines=test_engine) as svc:
        data_url = "data:image/png;base64," + base64.b64encode(png_bytes(24)).decode()
        job = svc.submit(spec_for(data_url, steps=1), "alice")
        assert job.spec["image"].startswith("blob:")  # the queue row names the stored upload
        assert svc.read_upload(job.spec["image"], "alice") == png_bytes(24)
        assert svc.wait(job.id, "alice", timeout=20).output.info["steps_done"] == 1
        before = (len(blob_files(tiny)), len(svc.list("alice")))
        with pytest.raises(InputError, match="`image`"):
            svc.submit(spec_for("not base64 at all!"), "alice")
        with pytest.raises(InputTooLargeError):
            svc.put_upload(png_bytes(64, color=None) + b"\0" * 5000, "alice")
        noise = Image.frombytes("RGB", (64, 64), random.Random(0).randbytes(64 * 64 * 3))
        buf = io.BytesIO()
        noise.save(buf, "PNG")
        with pytest.raises(InputTooLargeError):
            svc.submit(spec_for(base64.b64encode(buf.getvalue()).decode()), "alice")
        with pytest.raises(InputError, match="`image`"):
            svc.put_upload(b"GIF89a not really", "alice")
        with pytest.raises(InputError, match="`image`"):
            svc.submit(spec_for("blob:1234"), "alice")
        with pytest.raises(InputError, match="`email`"):  # no SMTP configured here
            svc.submit(spec_for(job.spec["image"], email="a@example.com"), "alice")
        assert (len(blob_files(tiny)), len(svc.list("alice"))) == before


def test_per_user_queue_limit(settings, test_engine):
    limited = Settings(**{**settings.model_dump(), "max_queued_jobs_per_user": 2})
    svc = make_service(limited, start_runners=False, engines=test_engine)
    try:
        ref = svc.put_upload(png_bytes(), "alice")
        svc.put_upload(png_bytes(), "bob")
        a1 = svc.submit(spec_for(ref, steps=1), "alice")
        svc.submit(spec_for(ref, steps=1), "alice")
        blobs = len(blob_files(limited))
        inline = "data:image/png;base64," + base64.b64encode(png_bytes(20, (1, 2, 3))).decode()
        with pytest.raises(LimitError, match="limit 2"):
            svc.submit(spec_for(inline), "alice")
        assert len(blob_files(limited)) == blobs and len(svc.list("alice")) == 2  # nothing stored or queued
        assert svc.submit(spec_for(ref, steps=1), "bob").state == "queued"  # other users are not affected
        assert svc.queued_count() == 3
        svc.cancel(a1.id, "alice")
        assert svc.submit(spec_for(ref, steps=1), "alice").state == "queued"
        svc.start()
        for record in svc.list("alice") + svc.list("bob"):
            assert svc.wait(record.id, record.owner, timeout=20).state in ("completed", "canceled")
    finally:
        svc.close()


def test_failures_are_recorded_and_runner_survives(settings, test_engine):
    with make_service(settings, engines=test_engine) as svc:
        ref = svc.put_upload(png_bytes(), "alice")
        bad = svc.submit(spec_for(ref, prompt="fail"), "alice")
        zero = svc.submit(spec_for(ref, prompt="zero"), "alice")
        good = svc.submit(spec_for(ref, steps=3), "alice")
        failed = svc.wait(bad.id, "alice", timeout=20)
        assert failed.state == "failed" and failed.error == "RuntimeError: the test engine failed on purpose"
        assert failed.output is None
        zero_rec = svc.wait(zero.id, "alice", timeout=20)
        assert zero_rec.error_type == "ZeroDivisionError" and "division by zero" in zero_rec.error
        events = list(svc.events(bad.id, "alice"))
        assert events[-1][1].type == "failed" and "on purpose" in events[-1][1].message
        assert svc.wait(good.id, "alice", timeout=20).state == "completed"
        with pytest.raises(NotFoundError, match="no results"):
            svc.read_output(bad.id, "alice", "avatar")


def test_models_stay_loaded_between_jobs(settings, test_engine):
    with make_service(settings, engines=test_engine) as svc:
        ref = svc.put_upload(png_bytes(), "alice")
        ids = {
            svc.wait(svc.submit(spec_for(ref, steps=1), "alice").id, "alice", 20).output.info["models_id"]
            for _ in range(3)
        }
        assert ids == {id(svc.models)}


def test_cancel_queued_and_running(settings, test_engine, monkeypatch):
    from toonbooth.runtime.context import JobContext

    monkeypatch.setenv("TB_TEST_STEP_DELAY", "0.02")
    made: dict[str, list[int]] = {}  # the steps each job's engine reported, in order
    real_progress = JobContext.progress

    def progress(self, step, total, **kw):
        made.setdefault(self.job_id, []).append(step)
        return real_progress(self, step, total, **kw)

    monkeypatch.setattr(JobContext, "progress", progress)
    with make_service(settings, engines=test_engine) as svc:
        ref = svc.put_upload(png_bytes(), "alice")
        running = svc.submit(spec_for(ref, steps=150), "alice")
        queued = svc.submit(spec_for(ref, steps=1), "alice")
        # the queued one is canceled at once
        rec = svc.cancel(queued.id, "alice")
        assert rec.state == "canceled" and rec.finished_at is not None
        assert [e.type for _, e in svc.events(queued.id, "alice")] == ["queued", "canceled"]
        # the running one stops at its next step
        deadline = time.monotonic() + 20
        while svc.get(running.id, "alice").step < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert svc.cancel(running.id, "alice").cancel_requested
        before = len(made[running.id])  # steps reported by the time cancel returned
        final = svc.wait(running.id, "alice", timeout=20)
        # the step counter stopped: at most the one step under way when cancel came was reported after it
        steps = made[running.id]
        assert final.state == "canceled" and 3 <= before <= len(steps) <= before + 1
        assert steps == list(range(1, len(steps) + 1)) and final.step <= len(steps)
        assert final.step < 150 and final.output is None
        types = [e.type for _, e in svc.events(running.id, "alice")]
        assert types[:2] == ["queued", "started"] and types[-1] == "canceled" and "completed" not in types
        assert svc.cancel(running.id, "alice").state == "canceled"  # canceling again changes nothing


def test_time_limit_fails_the_job(settings, test_engine, monkeypatch):
    monkeypatch.setenv("TB_TEST_STEP_DELAY", "0.02")
    limited = Settings(**{**settings.model_dump(), "job_time_limit_s": 0.3})
    with make_service(limited, engines=test_engine) as svc:
        ref = svc.put_upload(png_bytes(), "alice")
        slow = svc.submit(spec_for(ref, steps=150), "alice")
        after = svc.submit(spec_for(ref, steps=2), "alice")
        rec = svc.wait(slow.id, "alice", timeout=20)
        assert (
            rec.state == "failed"
            and rec.error == "time limit of 0.3 s exceeded"
            and rec.error_type == "TimeLimit"
        )
        assert rec.step < 150  # stopped by the limit, not finished
        assert svc.wait(after.id, "alice", timeout=20).state == "completed"


def test_progress_is_live_and_throttled_in_storage(settings, test_engine, monkeypatch):
    monkeypatch.setenv("TB_TEST_STEP_DELAY", "0")
    svc = make_service(settings, start_runners=False, engines=test_engine)
    try:
        ref = svc.put_upload(png_bytes(), "alice")
        job = svc.submit(spec_for(ref, steps=150), "alice")
        live: list = []
        reader = threading.Thread(target=lambda: live.extend(svc.events(job.id, "alice", timeout=30)))
        reader.start()
        while svc.bus.subscribers(job.id) == 0:
            time.sleep(0.01)
        svc.start()
        reader.join(30)
        stored = list(svc.events(job.id, "alice"))
        live_progress = [e for _, e in live if e.type == "progress"]
        stored_progress = [e for _, e in stored if e.type == "progress"]
        assert len(live_progress) == 150  # every step reaches a live subscriber
        assert [e.step for e in live_progress] == list(range(1, 151))
        assert 2 <= len(stored_progress) < 150 and stored_progress[-1].percent == 100
        assert [e.type for _, e in live][-1] == "completed" and [e.type for _, e in live][:2] == [
            "queued",
            "started",
        ]
        # live-only events carry the seq of the stored event before them: seqs never go back
        assert all(a <= b for (a, _), (b, _) in zip(live, live[1:], strict=False))
    finally:
        svc.close()


def test_async_events_follow_a_job(settings, test_engine):
    with make_service(settings, engines=test_engine) as svc:
        ref = svc.put_upload(png_bytes(), "alice")
        job = svc.submit(spec_for(ref, steps=5), "alice")

        async def collect():
            ticks = 0

            async def ticker():  # the loop stays free while we wait for events
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.005)

            task = asyncio.create_task(ticker())
            out = [pair async for pair in svc.aevents(job.id, "alice")]
            task.cancel()
            return out, ticks

        events, ticks = asyncio.run(collect())
        types = [e.type for _, e in events]
        assert types[:2] == ["queued", "started"] and types[-1] == "completed"
        assert [e.step for _, e in events if e.type == "progress"][-1] == 5
        assert ticks > 1


def test_stop_requeues_the_running_job_without_counting_it(settings, test_engine, monkeypatch):
    monkeypatch.setenv("TB_TEST_STEP_DELAY", "0.02")
    svc = make_service(settings, engines=test_engine)
    ref = svc.put_upload(png_bytes(), "alice")
    job = svc.submit(spec_for(ref, steps=100), "alice")
    while svc.get(job.id, "alice").step < 2:
        time.sleep(0.02)
    svc.stop(timeout=10)
    rec = svc.get(job.id, "alice")
    assert rec.state == "queued" and rec.attempts == 0
    monkeypatch.setenv("TB_TEST_STEP_DELAY", "0")
    svc.start()
    rec = svc.wait(job.id, "alice", timeout=20)
    assert rec.state == "completed" and rec.attempts == 1 and rec.output.info["steps_done"] == 100
    svc.close()


def test_one_runner_process_per_data_dir(settings):
    with make_service(settings):
        with pytest.raises(Exception, match="already running jobs"):
            Service(settings)
        Service(settings, start_runners=False).queue.close()  # readers are fine


def test_delete_my_data_and_retention(settings, test_engine):
    with make_service(settings, engines=test_engine) as svc:
        shared = svc.put_upload(png_bytes(), "alice")
        assert svc.put_upload(png_bytes(), "bob") == shared
        mine = svc.put_upload(png_bytes(color=(1, 1, 1)), "alice")
        a = svc.wait(svc.submit(spec_for(mine, steps=1), "alice").id, "alice", 20)
        b = svc.wait(svc.submit(spec_for(shared, steps=2), "bob").id, "bob", 20)
        a_result, b_result = a.output.outputs[0].ref, b.output.outputs[0].ref
        assert svc.delete_user_data("alice") == 2  # her own upload and her result
        assert svc.list("alice") == [] and not svc.storage.exists(mine) and not svc.storage.exists(a_result)
        with pytest.raises(NotFoundError):
            svc.read_upload(shared, "alice")
        assert svc.read_upload(shared, "bob") == png_bytes()  # bob's copy of the same bytes stays
        assert svc.read_output(b.id, "bob", "avatar")[:4] == b"\x89PNG"
        assert svc.purge_expired(now=time.time() + 29 * 86400) == 0  # inside the 30-day retention
        assert svc.purge_expired(now=time.time() + 31 * 86400) == 2
        assert svc.list("bob") == [] and not svc.storage.exists(shared) and not svc.storage.exists(b_result)


def test_watchdog_runs_the_retention_purge(tmp_path, test_engine):
    # a first service makes a job and its files; a second one, with a retention shorter than their age,
    # purges them by itself on start (the watchdog's first round), no call needed
    first = Settings(home=tmp_path / "home", data_dir=tmp_path / "data", device="cpu")
    with make_service(first, engines=test_engine) as svc:
        ref = svc.put_upload(png_bytes(), "alice")
        job = svc.wait(svc.submit(spec_for(ref, steps=1), "alice").id, "alice", 20)
        assert job.state == "completed" and blob_files(first)
    time.sleep(0.2)
    short = first.model_copy(update={"retention_days": 0.1 / 86400})  # 0.1 s
    with make_service(short, engines=test_engine) as svc:
        deadline = time.monotonic() + 10
        while blob_files(short) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert blob_files(short) == []
        assert svc.list("alice") == []
