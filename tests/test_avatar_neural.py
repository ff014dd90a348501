"""The neural memoji job end to end on tiny SDXL models (single file and diffusers folder)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from toonbooth.core.errors import BackendUnavailableError, JobCanceledError
from toonbooth.core.events import ProgressEvent
from toonbooth.core.images import read_png_parameters
from toonbooth.core.settings import Settings
from toonbooth.core.specs import AvatarSpec, LoraRef
from toonbooth.engines import avatar
from toonbooth.models.manager import ModelManager
from toonbooth.runtime.context import JobContext
from toonbooth.runtime.execute import execute
from toonbooth.runtime.storage_local import LocalStorage


@pytest.fixture(scope="module")
def env(tiny_models_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("avatar-home")
    settings = Settings(home=home, models_dir=tiny_models_dir, data_dir=home / "data", device="cpu", max_side=64)
    storage = LocalStorage(settings.resolved_data_dir)
    photo = Image.open("assets/sample_face.png").convert("RGB").resize((80, 64))
    import io

    buf = io.BytesIO()
    photo.save(buf, "PNG")
    return settings, ModelManager(settings), storage, storage.put(buf.getvalue())


def tiny_spec(ref: str, **kw) -> AvatarSpec:
    base = dict(
        image=ref, backend="neural", checkpoint="tiny-sdxl", controlnet="tiny-sdxl-canny",
        loras=[LoraRef(name="tiny-memoji", weight=1.0)], steps=4, max_side=64,
    )
    base.update(kw)
    return AvatarSpec(**base)


def run(env, spec, events=None, cancel=None):
    settings, models, storage, _ = env
    ctx = JobContext(settings, models, storage, on_event=(events.append if events is not None else None),
                     cancel_event=cancel)
    out = execute(spec, ctx)
    images = {o.name: Image.open(storage.local_path(o.ref)).convert("RGB") for o in out.outputs}
    return out, images


def pixels(img):
    return np.asarray(img, dtype=np.int16)


def test_single_file_job_sizes_and_metadata(env):
    settings, _, storage, ref = env
    events: list = []
    out, images = run(env, tiny_spec(ref), events)
    assert out.backend == "neural"
    # photo 80x64 capped to 64 on the long side -> 64x48 (multiples of 8); pass 2 at 1.5x -> 96x72
    assert images["pass1"].size == (64, 48)
    assert images["avatar"].size == (96, 72)
    params = read_png_parameters(storage.local_path(out.output("avatar").ref))
    assert params.startswith("emoji, unspecified, smiling <lora:tiny-memoji:1>")
    for key in ("Negative prompt: Pixelated design", "Steps: 4", "Sampler: DDIM", "CFG scale: 7",
                "Seed: 2968506678", "Size: 96x72", "Model hash: ", "Lora hashes: ", "Denoising strength: 0.75"):
        assert key in params, key
    p1 = read_png_parameters(storage.local_path(out.output("pass1").ref))
    assert "ControlNet 0: " in p1 and "Threshold A: 70" in p1 and "Threshold B: 230" in p1
    # progress: one stream over both passes, monotonic, 0 -> 100
    perc = [e.percent for e in events if isinstance(e, ProgressEvent)]
    assert perc[0] == 0.0 and perc[-1] == 100.0
    assert all(b >= a for a, b in zip(perc, perc[1:], strict=False))
    assert len(perc) == 1 + 3 + 3  # int(4*0.75)=3 steps per pass


def test_same_seed_same_pixels_other_seed_differs(env):
    ref = env[3]
    _, a = run(env, tiny_spec(ref, seed=1234))
    _, b = run(env, tiny_spec(ref, seed=1234))
    _, c = run(env, tiny_spec(ref, seed=1235))
    assert np.array_equal(pixels(a["avatar"]), pixels(b["avatar"]))
    assert not np.array_equal(pixels(a["avatar"]), pixels(c["avatar"]))


def test_lora_weight_zero_equals_no_lora_and_one_differs(env):
    ref = env[3]
    _, none = run(env, tiny_spec(ref, loras=[]))
    _, zero = run(env, tiny_spec(ref, loras=[LoraRef(name="tiny-memoji", weight=0.0)]))
    _, one = run(env, tiny_spec(ref))
    assert np.abs(pixels(none["avatar"]) - pixels(zero["avatar"])).max() <= 1
    assert np.abs(pixels(none["avatar"]) - pixels(one["avatar"])).mean() > 1.0


def test_emphasis_changes_the_result(env):
    ref = env[3]
    _, plain = run(env, tiny_spec(ref, prompt="emoji, smiling"))
    _, strong = run(env, tiny_spec(ref, prompt="(emoji:1.6), smiling"))
    assert not np.array_equal(pixels(plain["pass1"]), pixels(strong["pass1"]))


def test_diffusers_folder_matches_single_file(env, tiny_models_dir):
    ref = env[3]
    folder = tiny_models_dir / "diffusers" / "tiny-sdxl"
    _, from_file = run(env, tiny_spec(ref, second_pass=False))
    _, from_folder = run(env, tiny_spec(ref, checkpoint=str(folder), second_pass=False))
    assert from_folder["avatar"].size == from_file["avatar"].size
    assert np.abs(pixels(from_file["avatar"]) - pixels(from_folder["avatar"])).max() <= 2


def test_cancel_stops_between_steps(env):
    ref = env[3]
    cancel = threading.Event()
    events: list = []

    def on_event(e):
        events.append(e)
        if isinstance(e, ProgressEvent) and e.step == 2:
            cancel.set()

    settings, models, storage, _ = env
    ctx = JobContext(settings, models, storage, on_event=on_event, cancel_event=cancel)
    with pytest.raises(JobCanceledError):
        execute(tiny_spec(ref), ctx)
    steps = [e.step for e in events if isinstance(e, ProgressEvent)]
    assert max(steps) == 2  # nothing ran after the step that saw the cancel


def test_neural_without_weights_is_a_clear_error(tmp_path, env):
    settings = Settings(home=tmp_path, models_dir=tmp_path / "empty", device="cpu")
    ctx = JobContext(settings, ModelManager(settings), env[2])
    with pytest.raises(BackendUnavailableError, match="toonbooth models pull memoji"):
        avatar.AvatarEngine().run(AvatarSpec(image=env[3], backend="neural"), ctx)


def test_auto_falls_back_to_classic_and_says_why(tmp_path, env):
    settings = Settings(home=tmp_path, models_dir=tmp_path / "empty", device="cpu")
    ctx = JobContext(settings, ModelManager(settings), env[2])
    out = execute(AvatarSpec(image=env[3]), ctx)
    assert out.backend == "classic"
    assert "samaritan-3d-cartoon-sdxl" in out.backend_reason and "models pull memoji" in out.backend_reason


def test_working_size():
    assert avatar.working_size(512, 512, 1024) == (512, 512)
    assert avatar.working_size(4000, 3000, 1024) == (1024, 768)
    assert avatar.working_size(1001, 999, 2000) == (1000, 992)
