"""`ui.common`: following a job through the service's event stream (a real `Service`, SQLite queue and
runner, a classic avatar job) ends on the terminal event with the job's record; canceling a followed job
ends its stream with `canceled`; progress is throttled as configured (a scripted stream, so which updates
are shown is known by construction); an idle timeout ends the stream with the job still queued."""

from __future__ import annotations

import io
import math
import threading
from types import SimpleNamespace

import pytest
from PIL import Image

from toonbooth.core.events import CompletedEvent, LogEvent, ProgressEvent, QueuedEvent, StartedEvent
from toonbooth.core.settings import Settings
from toonbooth.ui.common import cancel_job, follow_job, progress_html

OWNER = "erin"


def photo_png(sample_photo_path, side: int = 128) -> bytes:
    img = Image.open(sample_photo_path).convert("RGB").resize((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def classic_avatar_spec(service, sample_photo_path) -> dict:
    ref = service.put_upload(photo_png(sample_photo_path), OWNER, field="photo")
    return {"kind": "avatar", "image": ref, "backend": "classic", "upscale": 1.0, "second_pass": False}


@pytest.fixture()
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home", data_dir=tmp_path / "data", device="cpu")


def test_follow_a_classic_job_to_its_end(settings, sample_photo_path):
    from toonbooth.runtime.service import Service

    with Service(settings) as service:
        record = service.submit(classic_avatar_spec(service, sample_photo_path), OWNER)
        updates = list(follow_job(service, record.id, OWNER, every_s=0.0))
    *events, final = updates
    # queued -> started -> progress 0 % and 100 % (the classic avatar's two steps) -> completed
    assert [u.event.type for u in events if u.event.type != "log"] == [
        "queued", "started", "progress", "progress", "completed",
    ]  # fmt: skip
    assert [u.percent for u in events if u.event.type == "progress"] == [0.0, 100.0]
    assert [u.state for u in events if u.event.type != "log"] == [
        "queued", "running", "running", "running", "completed",
    ]  # fmt: skip
    assert all(u.due for u in events if u.event.type != "log") and not any(u.final for u in events)
    # one final update, after the terminal event, with the finished record
    assert final.final and final.event is None and final.due
    assert final.record.id == record.id and final.record.state == "completed" and final.percent == 100.0
    assert [o.name for o in final.record.output.outputs] == ["avatar"]
    assert final.status() == "completed: classic 100 %"


def test_cancel_ends_the_followed_stream(settings, sample_photo_path):
    from toonbooth.runtime.service import Service

    # no runner: the job stays queued until it is canceled, whatever the machine's speed
    with Service(settings, start_runners=False) as service:
        record = service.submit(classic_avatar_spec(service, sample_photo_path), OWNER)
        seen, first = [], threading.Event()

        def follow() -> None:
            for update in follow_job(service, record.id, OWNER):
                seen.append(update)
                first.set()

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        assert first.wait(60), "the follower got no queued event"
        assert seen[0].event.type == "queued" and seen[0].state == "queued"
        assert cancel_job(service, record.id, "someone-else").startswith("**Error:** ")  # not theirs
        assert cancel_job(service, record.id, OWNER) == "Cancel requested (canceled)."
        follower.join(60)
        assert not follower.is_alive(), "the stream did not end on the canceled event"
    assert [u.event.type for u in seen[:-1]] == ["queued", "canceled"]
    assert seen[-1].final and seen[-1].record.state == "canceled" and seen[-1].state == "canceled"
    assert cancel_job(service, None, OWNER) == "Nothing is running."


def test_cancel_errors_are_markdown_safe(settings):
    from toonbooth.runtime.service import Service

    with Service(settings, start_runners=False) as service:
        text = cancel_job(service, "<b>nope</b>", OWNER)
    assert text.startswith("**Error:** ") and "&lt;b&gt;nope&lt;/b&gt;" in text and "<b>" not in text


def test_idle_timeout_ends_the_stream_with_the_job_still_queued(settings, sample_photo_path):
    from toonbooth.runtime.service import Service

    with Service(settings, start_runners=False) as service:
        record = service.submit(classic_avatar_spec(service, sample_photo_path), OWNER)
        updates = list(follow_job(service, record.id, OWNER, timeout=0.2))
    assert [u.event.type for u in updates[:-1]] == ["queued"]
    assert updates[-1].final and updates[-1].record.state == "queued" and not updates[-1].record.done


class ScriptedService:
    """A stand-in with the two calls `follow_job` makes: a fixed event stream, then the record."""

    def __init__(self, events):
        self._events = events

    def events(self, job_id, owner, timeout=None):
        yield from enumerate(self._events, start=1)

    def get(self, job_id, owner):
        return SimpleNamespace(id=job_id, state="completed", done=True)


def _progress(percent: float) -> ProgressEvent:
    return ProgressEvent(percent=percent, step=int(percent), total=100, stage="denoise")


def test_progress_is_throttled_by_percent_and_always_shows_the_end():
    stream = [QueuedEvent(), StartedEvent(), *map(_progress, [0.5, 1.0, 1.2, 2.5, 3.0, 100.0]),
              LogEvent(message="note"), CompletedEvent()]  # fmt: skip
    service = ScriptedService(stream)
    # time never makes an update due (every_s = inf): only a rise of >= 1 point since the last shown one
    updates = list(follow_job(service, "j", OWNER, every_s=math.inf, min_percent=1.0))
    shown = [u.percent for u in updates if u.event is not None and u.event.type == "progress" and u.due]
    assert shown == [0.5, 2.5, 100.0]
    by_type = {u.event.type: u.due for u in updates if u.event is not None}
    assert by_type == {"queued": True, "started": True, "progress": True, "log": False, "completed": True}
    # time only (min_percent None): with every_s = inf just the first and the 100 % update are shown
    updates = list(follow_job(service, "j", OWNER, every_s=math.inf, min_percent=None))
    assert [u.percent for u in updates if u.event is not None and u.event.type == "progress" and u.due] == [
        0.5, 100.0,
    ]  # fmt: skip
    assert updates[-1].final and updates[-1].record.state == "completed"


def test_progress_html_clamps_and_escapes():
    bar = progress_html(140, "<script>", elem_id="tb-x")
    assert 'id="tb-x"' in bar and 'data-percent="100.0"' in bar and "&lt;script&gt;" in bar
    assert 'data-percent="0.0"' in progress_html(-3, "idle")


def test_ui_defaults_come_from_the_one_settings_class(tmp_path, monkeypatch):
    """The tabs' preselected values are `Settings.ui_*`, read from the same env names as before."""
    import gradio as gr

    from toonbooth.runtime.service import Service
    from toonbooth.ui.app import build_ui

    env = {"TOONBOOTH_UI_CHECKPOINT": "tiny-sdxl", "TOONBOOTH_UI_STEPS": "40", "TOONBOOTH_UI_BACKEND": "neural",
           "TOONBOOTH_UI_MAX_SIDE": "64", "TOONBOOTH_UI_TRAIN_PRESET": "one-image-style"}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(home=tmp_path / "home", data_dir=tmp_path / "data", device="cpu")
    assert (settings.ui_checkpoint, settings.ui_steps, settings.ui_backend, settings.ui_max_side) == (
        "tiny-sdxl", 40, "neural", 64,
    )  # fmt: skip
    assert settings.ui_train_preset == "one-image-style" and settings.ui_lora == "memoji"
    with Service(settings, start_runners=False) as service:
        demo = build_ui(service, settings, user_for=lambda name: name or OWNER)
    values: dict[tuple[str, str | None], list] = {}  # (component type, label) -> values (labels repeat)
    for block in demo.blocks.values():
        values.setdefault((type(block).__name__, getattr(block, "label", None)), []).append(
            getattr(block, "value", None)
        )
    assert values[("Textbox", "Checkpoint (SDXL)")] == ["tiny-sdxl"]
    assert 40 in values[("Slider", "Steps")] and "neural" in values[("Radio", "Backend")]
    assert values[("Radio", "Preset")] == ["one-image-style"]
    monkeypatch.setenv("TOONBOOTH_UI_TRAIN_PRESET", "no-such-preset")
    with pytest.raises(ValueError, match="ui_train_preset"):
        Settings(home=tmp_path / "home")
    assert isinstance(demo, gr.Blocks)
