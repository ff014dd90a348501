"""The `talk` job, classic backend (no weights, CPU): frame count, the mouth moving only while the voice is
loud, the MP4's audio track equal to the voice, sticker caps / loop / transparency, landmarks given or
detected, cancel between frames, the backend choice."""

from __future__ import annotations

import io
import math
import threading

import numpy as np
import pytest
from PIL import Image, ImageSequence

from toonbooth.core.audio import encode_wav, resample
from toonbooth.core.errors import BackendUnavailableError, InputError, JobCanceledError
from toonbooth.core.events import ProgressEvent
from toonbooth.core.images import image_to_png_bytes
from toonbooth.core.settings import Settings
from toonbooth.core.specs import TalkSpec, parse_job_spec
from toonbooth.engines.talk import OUTPUT_RATE, TalkEngine, align_stage, find_landmarks
from toonbooth.runtime.context import JobContext
from toonbooth.runtime.encoders import probe_video
from toonbooth.runtime.execute import execute, store_output
from toonbooth.runtime.families import model_manager
from toonbooth.runtime.storage_local import LocalStorage

SR = 16000
SILENCE_S, LOUD_S = 0.4, 0.81  # 0.4 + 0.81 + 0.4 = 1.61 s -> ceil(40.25) = 41 frames


def tone_burst(sr: int = SR) -> np.ndarray:
    """Silence, a loud voiced tone (180 Hz with harmonics), silence."""
    t = np.arange(round(LOUD_S * sr)) / sr
    loud = sum(0.25 / k * np.sin(2 * np.pi * 180 * k * t) for k in (1, 2, 3, 4))
    quiet = np.zeros(round(SILENCE_S * sr))
    return np.concatenate([quiet, loud, quiet]).astype(np.float32)


@pytest.fixture(scope="module")
def env(tmp_path_factory, sample_photo_path):
    home = tmp_path_factory.mktemp("talk-home")
    (home / "models").mkdir()
    settings = Settings(home=home, models_dir=home / "models", data_dir=home / "data", device="cpu")
    storage = LocalStorage(settings.resolved_data_dir)
    refs = {
        "face": storage.put(sample_photo_path.read_bytes()),
        "voice": storage.put(encode_wav(tone_burst(), SR), content_type="audio/wav"),
    }
    return settings, model_manager(settings), storage, refs


def _ctx(env, **kw) -> JobContext:
    settings, models, storage, _ = env
    return JobContext(settings, models, storage, owner="alice", **kw)


def _spec(env, **kw) -> TalkSpec:
    refs = env[3]
    base = dict(face=refs["face"], voice=refs["voice"], backend="classic", size=128, seed=3, still=True,
                blink=False, sticker_fps=10.0, sticker_seconds=1.0)  # fmt: skip
    return TalkSpec(**{**base, **kw})


@pytest.fixture(scope="module")
def classic_run(env):
    """One classic job on the sample face: the engine's frames and the stored (encoded) outputs."""
    events: list = []
    ctx = _ctx(env, on_event=events.append, preview_every=5)
    spec = _spec(env)
    out = TalkEngine().run(spec, ctx)
    stored = store_output(out, env[2])
    return out, stored, events


def test_frame_count_is_ceil_duration_times_25(classic_run):
    out, stored, _ = classic_run
    n = math.ceil((2 * SILENCE_S + LOUD_S) * 25)
    assert out.frames == len(out.video.frames) == n == 41
    assert out.backend == "classic" and out.fps == 25.0
    assert [o.name for o in stored.outputs] == ["video", "sticker_webp", "sticker_gif", "still"]
    assert stored.outputs[0].primary and stored.outputs[0].media_type == "video/mp4"


def test_mouth_moves_only_in_the_loud_part(classic_run, env):
    """Still head, no blinks: silent frames are the toon itself, byte for byte; loud frames differ, and
    only around the mouth (between the nose and below the chin)."""
    out, _, _ = classic_run
    frames = np.stack(out.video.frames).astype(np.int16)
    rest = frames[0]
    changed = np.abs(frames - rest).max(axis=(1, 2, 3))
    loud = [i for i in range(len(frames)) if SILENCE_S * 25 + 1 <= i < (SILENCE_S + LOUD_S) * 25 - 1]
    quiet = [i for i in range(len(frames)) if i < SILENCE_S * 25 - 1 or i > (SILENCE_S + LOUD_S) * 25 + 1]
    assert all(changed[i] == 0 for i in quiet), changed
    assert all(changed[i] > 40 for i in loud), changed
    # where the loud frames differ: the mouth region of the aligned face
    face = align_stage(Image.open(env[2].local_path(env[3]["face"])), _spec(env))
    lmk = face.landmarks
    diff = np.abs(frames[loud] - rest).max(axis=(0, 3)) > 8
    ys, xs = np.nonzero(diff)
    assert ys.min() >= lmk[33, 1] - 2 and ys.max() <= lmk[8, 1] + 0.6 * np.ptp(lmk[48:55, 0])
    assert xs.min() >= lmk[3, 0] - 3 and xs.max() <= lmk[13, 0] + 3


def test_mp4_is_h264_aac_with_the_voice_in_sync(classic_run, env):
    _, stored, _ = classic_run
    data = env[2].get(stored.output("video").ref)
    probe = probe_video(data, with_audio=True)
    assert probe.codecs == ("h264", "aac")
    assert probe.n_frames == 41 and probe.fps == pytest.approx(25.0)
    assert probe.width % 16 == 0 and probe.height % 16 == 0 and probe.width == 128
    want = resample(tone_burst(), SR, OUTPUT_RATE)
    got = probe.audio
    assert probe.audio_rate == OUTPUT_RATE
    assert abs(len(got) - len(want)) <= OUTPUT_RATE // 100  # same length within 10 ms
    n = min(len(got), len(want))
    assert np.corrcoef(got[:n], want[:n])[0, 1] > 0.98  # the same samples at the same times (no offset)
    # the track's loud part starts where the voice's does (sync within one frame)
    onset = int(np.argmax(np.abs(got) > 0.1))
    assert abs(onset / OUTPUT_RATE - SILENCE_S) < 1 / 25


def test_stickers_are_capped_and_loop(classic_run, env):
    _, stored, _ = classic_run
    for name, fmt in (("sticker_webp", "WEBP"), ("sticker_gif", "GIF")):
        ref = stored.output(name)
        img = Image.open(io.BytesIO(env[2].get(ref.ref)))
        assert img.format == fmt and img.info.get("loop") == 0
        # 1 s at 10 fps (of 41 frames at 25 fps); the codecs merge identical neighbours (the silent start),
        # so count the duration, not the frames
        durations = []
        for k in range(img.n_frames):
            img.seek(k)
            img.convert("RGBA")
            durations.append(img.info["duration"])
        assert ref.frames == 10 and sum(durations) == 1000 and 2 <= len(durations) <= 10
        assert max(img.size) <= 512
    still = Image.open(io.BytesIO(env[2].get(stored.output("still").ref)))
    assert "talking emoticon" in still.info.get("parameters", "") and "Seed: 3" in still.info["parameters"]


def test_transparent_face_gives_transparent_stickers(env, sample_photo_path):
    """An RGBA toon keeps its transparency: the stickers are transparent where it is (the MP4 shows it over
    white)."""
    rgb = Image.open(sample_photo_path).convert("RGB")
    w, h = rgb.size
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = (((xx - 220) / 70.0) ** 2 + ((yy - 125) / 85.0) ** 2 <= 1.0).astype(np.uint8) * 255
    rgba = Image.fromarray(np.dstack([np.asarray(rgb), alpha]), "RGBA")
    ref = env[2].put(image_to_png_bytes(rgba))
    out = TalkEngine().run(_spec(env, face=ref, toon="none"), _ctx(env))
    assert out.video.frames[0].shape == (128, 128, 4) and out.info["transparent"]
    stored = store_output(out, env[2])
    webp = Image.open(io.BytesIO(env[2].get(stored.output("sticker_webp").ref)))
    first = np.asarray(next(iter(ImageSequence.Iterator(webp))).convert("RGBA"))
    assert first[0, 0, 3] == 0 and first[64, 64, 3] == 255
    gif = Image.open(io.BytesIO(env[2].get(stored.output("sticker_gif").ref)))
    assert "transparency" in gif.info
    assert np.asarray(gif.convert("RGBA"))[0, 0, 3] == 0


def test_given_landmarks_skip_detection(env):
    """A face no detector finds talks when its landmarks are given; without them the job names `face`."""
    settings, _, storage, refs = env
    face = Image.open(storage.local_path(refs["face"]))
    pts, how = find_landmarks(np.asarray(face.convert("RGB")), _spec(env))
    assert how.startswith("dlib") and pts.shape == (68, 2)
    flat = Image.new("RGB", face.size, (200, 180, 160))  # no face to detect
    flat_ref = storage.put(image_to_png_bytes(flat))
    with pytest.raises(InputError) as err:
        TalkEngine().run(_spec(env, face=flat_ref, toon="none"), _ctx(env))
    assert err.value.field == "face" and "landmarks" in str(err.value)
    out = TalkEngine().run(_spec(env, face=flat_ref, toon="none", landmarks=pts.tolist()), _ctx(env))
    assert out.info["backends"]["landmarks"] == "given" and out.frames == 41
    with pytest.raises(InputError) as err:
        parse_job_spec({"kind": "talk", "face": "x" * 8, "voice": "y" * 8, "landmarks": [[0, 0]] * 67})
    assert err.value.field == "landmarks"


def test_cancel_mid_render_stops_between_frames(env):
    cancel = threading.Event()
    render_steps: list[int] = []

    def on_event(event):
        if isinstance(event, ProgressEvent) and event.stage == "render":
            render_steps.append(event.step)
            if len(render_steps) == 5:
                cancel.set()

    ctx = _ctx(env, on_event=on_event, cancel_event=cancel)
    with pytest.raises(JobCanceledError):
        execute(_spec(env), ctx)
    assert len(render_steps) == 5  # the counter stops at the frame where cancel was noticed
    assert render_steps == sorted(render_steps) and render_steps[-1] < render_steps[0] + 5


def test_progress_stages_and_previews(classic_run):
    _, _, events = classic_run
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    stages = list(dict.fromkeys(e.stage for e in progress))
    assert stages == ["align", "toonify", "audio features", "motion", "render", "encode"]
    renders = [e for e in progress if e.stage == "render"]
    assert len(renders) == 41
    with_preview = [e.step for e in renders if e.preview_png]
    assert len(with_preview) == 5  # frames 10, 20, 30, 40 and the last
    assert max(e.percent for e in progress) < 100.0  # the runtime encodes after `run`


def test_backend_choice(env):
    """auto without weights runs classic and says what to fetch; neural without weights is a 409 at submit."""
    settings, models, _, _ = env
    engine = TalkEngine()
    with pytest.raises(BackendUnavailableError, match="toonbooth models pull talk"):
        engine.check_inputs(_spec(env, backend="neural"), models, "alice")
    out = engine.run(_spec(env, backend="auto", sticker_seconds=0.5), _ctx(env))
    assert (
        out.backend == "classic"
        and "not found" in out.backend_reason
        and "models pull talk" in out.backend_reason
    )
    assert [r.field for r in engine.required_models(_spec(env, hubert_model=None))] == [
        "liveportrait_model", "joyvasa_model"]  # fmt: skip


def test_readme_command_classic_without_weights(tmp_path, sample_photo_path):
    """The README's `toonbooth talk assets/sample_face.png --voice assets/sample_voice.wav` (output folder
    and progress bar aside): classic, four files with the extensions of their media types."""
    from typer.testing import CliRunner

    from toonbooth.cli.main import app

    voice = sample_photo_path.parent / "sample_voice.wav"
    args = [
        "talk",
        str(sample_photo_path),
        "--voice",
        str(voice),
        "--out-dir",
        str(tmp_path / "out"),
        "--quiet",
    ]
    res = CliRunner().invoke(app, args, env={"TOONBOOTH_HOME": str(tmp_path / "home")})
    assert res.exit_code == 0, res.output
    assert "backend: classic" in res.output and "toonbooth models pull talk" in res.output
    assert "frames: 104 at 25 fps" in res.output
    for name, size in (
        ("video.mp4", 512),
        ("sticker_webp.webp", 512),
        ("sticker_gif.gif", 320),
        ("still.png", 512),
    ):
        path = tmp_path / "out" / f"sample_face-talk-{name}"
        assert f"wrote {path} ({size}x{size})" in res.output
    bad = CliRunner().invoke(app, ["talk", str(sample_photo_path), "--voice", str(sample_photo_path), "--quiet"],
                             env={"TOONBOOTH_HOME": str(tmp_path / "home")})  # fmt: skip
    assert bad.exit_code == 2 and "`voice`" in bad.output


def test_neural_toon_then_classic_talk_in_the_same_frame(env, tmp_path):
    """toon="neural": the toon studio's StyleGAN2 toonify (tiny weights in their public layouts) makes the face
    a toon in the photo's own frame (pasted back with the alignment's transform), then it talks; without those
    weights the request is refused at submit (409) naming what to fetch."""
    from toonbooth.core.errors import BackendUnavailableError
    from toonbooth.engines.talk import TalkEngine as Engine
    from toonbooth.nets.toon_models import write_tiny_toon_set
    from toonbooth.runtime.execute import execute

    settings, models, storage, refs = env
    spec = _spec(env, toon="neural", toon_style="tiny-toonify", toon_base="tiny-ffhq", toon_encoder="tiny-e4e")
    with pytest.raises(BackendUnavailableError, match="toon=neural needs"):
        Engine().check_inputs(spec, models, "alice")
    write_tiny_toon_set(settings.resolved_models_dir, size=32)
    models.registry.scan()
    plain = execute(spec.model_copy(update={"toon": "none"}), _ctx(env))
    toon = execute(spec, _ctx(env))
    assert toon.info["reasons"]["toon"] == "neural toonify (tiny-toonify)"
    still_plain = np.asarray(Image.open(io.BytesIO(storage.get(plain.output("still").ref))).convert("RGB"))
    still_toon = np.asarray(Image.open(io.BytesIO(storage.get(toon.output("still").ref))).convert("RGB"))
    assert still_plain.shape == still_toon.shape
    diff = np.abs(still_plain.astype(int) - still_toon.astype(int)).sum(axis=2) > 30
    h, w = diff.shape
    assert diff[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3].mean() > 0.5  # the face was redrawn by the toon G
