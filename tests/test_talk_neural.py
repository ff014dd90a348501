"""The neural `talk` path end to end on tiny weights in the public layouts (LivePortrait `.pth` tree,
JoyVASA `{'model', 'args'}` checkpoint + `motion_template.pkl`, a transformers HuBERT folder), found and
loaded through the `liveportrait` / `joyvasa` / `hubert` families: identification by tensor names, refused
sets, and a video with ceil(duration x 25) frames and the voice in sync."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from toonbooth.core.audio import encode_wav, resample
from toonbooth.core.errors import JobCanceledError
from toonbooth.core.events import ProgressEvent
from toonbooth.core.settings import Settings
from toonbooth.core.specs import TalkSpec
from toonbooth.engines.talk import OUTPUT_RATE, TalkEngine
from toonbooth.runtime.context import JobContext
from toonbooth.runtime.encoders import probe_video
from toonbooth.runtime.execute import store_output
from toonbooth.runtime.families import model_manager
from toonbooth.runtime.storage_local import LocalStorage

SR = 16000
SECONDS = 1.03  # ceil(25.75) = 26 frames; two tiny JoyVASA windows (20 frames each)


def voice(sr: int = SR) -> np.ndarray:
    t = np.arange(round(SECONDS * sr)) / sr
    env = np.clip(np.sin(np.pi * t / SECONDS) * 1.5, 0, 1)
    return (0.3 * env * np.sin(2 * np.pi * 170 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from toonbooth.nets.talk_tiny import write_tiny_talk_set

    root = tmp_path_factory.mktemp("talk-models")
    write_tiny_talk_set(root)
    return root


@pytest.fixture(scope="module")
def env(tiny, tmp_path_factory, sample_photo_path):
    home = tmp_path_factory.mktemp("talk-neural-home")
    settings = Settings(home=home, models_dir=tiny, data_dir=home / "data", device="cpu")
    storage = LocalStorage(settings.resolved_data_dir)
    refs = {
        "face": storage.put(sample_photo_path.read_bytes()),
        "voice": storage.put(encode_wav(voice(), SR), content_type="audio/wav"),
    }
    return settings, model_manager(settings), storage, refs


def test_families_find_the_public_layouts(env):
    _, models, _, _ = env
    entries = {
        e.kind: e
        for e in models.registry.list(include_refused=True)
        if e.kind in ("liveportrait", "joyvasa", "hubert")
    }
    lp, jv, hb = entries["liveportrait"], entries["joyvasa"], entries["hubert"]
    assert (lp.name, jv.name, hb.name) == (
        "liveportrait",
        "motion_generator_hubert_chinese",
        "chinese-hubert-base",
    )
    assert lp.refused is jv.refused is hb.refused is None
    assert lp.details["parts"] == {
        "appearance_feature_extractor": "base_models/appearance_feature_extractor.pth",
        "motion_extractor": "base_models/motion_extractor.pth",
        "spade_generator": "base_models/spade_generator.pth",
        "warping_module": "base_models/warping_module.pth",
        "stitching_retargeting_module": "retargeting_models/stitching_retargeting_module.pth",
    }
    assert lp.details["input_size"] == 32 and lp.catalog_name == "liveportrait"
    assert jv.details["template"] == "motion_template/motion_template.pkl" and not jv.details["has_hubert"]
    assert models.missing(TalkEngine().required_models(TalkSpec(face="x" * 8, voice="y" * 8))) == []


def test_parts_are_identified_by_their_tensors_not_their_names(env, tmp_path):
    """A flat safetensors folder with meaningless file names is one renderer; a set without its warping
    module is listed as refused, naming the part; a generator without a template is refused."""
    from toonbooth.nets.joyvasa import scan_joyvasa
    from toonbooth.nets.liveportrait import LivePortraitFiles, save_liveportrait, scan_liveportrait

    _, models, _, _ = env
    renderer = models.load("liveportrait", "liveportrait")
    top = tmp_path / "LivePortrait"
    names = LivePortraitFiles(*(top / "flat" / f"part{i}.safetensors" for i in range(5)))
    save_liveportrait(renderer, names)
    shutil.copytree(top / "flat", top / "broken")
    (top / "broken" / "part2.safetensors").unlink()  # the warping module
    found = {e.name: e for e in scan_liveportrait(top, "LivePortrait")}
    assert found["flat"].refused is None and found["flat"].layout == "safetensors"
    assert found["flat"].details["parts"]["warping_module"] == "part2.safetensors"
    assert "warping_module" in found["broken"].refused
    jv_top = tmp_path / "JoyVASA"
    jv_top.mkdir()
    shutil.copy(models.path("joyvasa", "motion_generator_hubert_chinese"), jv_top / "gen.pt")
    (entry,) = scan_joyvasa(jv_top, "JoyVASA")
    assert entry.refused and "motion template" in entry.refused


def test_neural_job_end_to_end(env):
    """voice -> HuBERT -> JoyVASA motion -> keypoints -> LivePortrait frames pasted into the toon -> MP4."""
    settings, models, storage, refs = env
    events: list = []
    ctx = JobContext(settings, models, storage, owner="alice", on_event=events.append)
    spec = TalkSpec(face=refs["face"], voice=refs["voice"], backend="auto", size=128, seed=5, sampling_steps=2,
                    sticker_seconds=0.5)  # fmt: skip
    out = TalkEngine().run(spec, ctx)
    n = math.ceil(SECONDS * 25)
    assert out.backend == "neural" and out.frames == len(out.video.frames) == n == 26
    assert out.info["backends"]["motion"] == "joyvasa" and out.info["backends"]["render"] == "liveportrait"
    s = out.info["sampling"]
    assert s["windows"] == 2 and s["steps_total"] == 4 and s["seconds"] > 0
    assert all(f.shape == (128, 128, 3) for f in out.video.frames)
    motion = [e for e in events if isinstance(e, ProgressEvent) and e.stage == "motion"]
    assert len(motion) == 1 + 4  # the stage start, then one step per denoising step
    stored = store_output(out, storage)
    probe = probe_video(storage.get(stored.output("video").ref), with_audio=True)
    assert probe.n_frames == n and probe.codecs == ("h264", "aac")
    want = resample(voice(), SR, OUTPUT_RATE)
    m = min(len(want), len(probe.audio))
    assert abs(len(probe.audio) - len(want)) <= OUTPUT_RATE // 100
    assert np.corrcoef(probe.audio[:m], want[:m])[0, 1] > 0.98


def test_neural_cancel_during_motion_sampling(env):
    settings, models, storage, refs = env
    import threading

    cancel = threading.Event()
    steps: list[int] = []

    def on_event(event):
        if isinstance(event, ProgressEvent) and event.stage == "motion":
            steps.append(event.step)
            if len(steps) == 2:
                cancel.set()

    ctx = JobContext(settings, models, storage, owner="alice", on_event=on_event, cancel_event=cancel)
    spec = TalkSpec(
        face=refs["face"], voice=refs["voice"], backend="neural", size=128, seed=5, sampling_steps=3
    )
    with pytest.raises(JobCanceledError):
        TalkEngine().run(spec, ctx)
    assert len(steps) == 2
