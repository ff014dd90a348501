"""The `train_toon` job (issue 12) through `execute` on a tiny StyleGAN2 saved as a rosinality training `.pt`:
FreezeD + ADA fine-tuning end to end, a crashed job resumes to the same weights as an uninterrupted one,
sample grids, the style registered under its owner and usable by a `toon` job; bad training sets are refused
naming the count or the file; optional alignment and background removal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from toonbooth.core.errors import InputError
from toonbooth.core.events import ProgressEvent
from toonbooth.core.images import image_to_data_url
from toonbooth.core.settings import Settings
from toonbooth.core.specs import TOON_MIN_IMAGES, parse_job_spec
from toonbooth.nets.toon_models import write_tiny_toon_set
from toonbooth.runtime.context import JobContext
from toonbooth.runtime.execute import execute
from toonbooth.runtime.families import model_manager
from toonbooth.runtime.storage_local import LocalStorage

SIZE = 32


def cartoon(i: int, size: int = 48) -> Image.Image:
    """A distinct flat-colour cartoon face: background, head disc, two eyes, a smile."""
    rng = np.random.default_rng(1000 + i)
    img = Image.new("RGB", (size, size), tuple(int(x) for x in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(img)
    r = size * (0.28 + 0.1 * rng.random())
    cx, cy = size / 2 + rng.integers(-4, 5), size / 2 + rng.integers(-4, 5)
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(x) for x in rng.integers(120, 255, 3)))
    e = size * 0.07
    for sx in (-1, 1):
        d.ellipse((cx + sx * r * 0.4 - e, cy - r * 0.2 - e, cx + sx * r * 0.4 + e, cy - r * 0.2 + e), fill=(0, 0, 0))
    d.arc((cx - r * 0.5, cy, cx + r * 0.5, cy + r * 0.6), 20, 160, fill=(200, 0, 0), width=2)
    return img


class Env:
    def __init__(self, root):
        write_tiny_toon_set(root / "models", size=SIZE)
        self.settings = Settings(home=root / "home", models_dir=root / "models", data_dir=root / "data", device="cpu")
        self.models = model_manager(self.settings)
        self.storage = LocalStorage(self.settings.resolved_data_dir)
        self.images = [image_to_data_url(cartoon(i)) for i in range(TOON_MIN_IMAGES)]

    def run(self, kind: str, raw: dict, owner: str | None = "erin", job_id: str = "", on_event=None):
        events: list = []

        def sink(e):
            events.append(e)
            if on_event is not None:
                on_event(e)

        ctx = JobContext(self.settings, self.models, self.storage, owner=owner, job_id=job_id, on_event=sink)
        return execute(parse_job_spec({"kind": kind, **raw}), ctx), events


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return Env(tmp_path_factory.mktemp("train-toon"))


COMMON = {"base": "tiny-ffhq", "steps": 4, "batch_size": 2, "freeze_d": 2, "checkpoint_every": 2, "sample_every": 2,
          "n_samples": 4, "augment_p": 0.05, "seed": 3}  # fmt: skip


def test_train_toon_resumes_to_the_same_weights_and_the_style_is_usable(env, sample_photo_path):
    full, events = env.run("train_toon", {**COMMON, "style_name": "toon-full", "images": env.images}, job_id="job-a")
    names = [o.name for o in full.outputs]
    assert names == ["samples", "base_samples", "progress-0"] and full.outputs[0].primary
    assert full.info["steps"] == 4 and full.info["frozen_d_blocks"] == 2 and len(full.info["history"]["d_loss"]) == 4
    stages = [e.stage for e in events if isinstance(e, ProgressEvent)]
    assert any(s.startswith("training step 4/4 loss") and " p " in s for s in stages)
    assert any(e.preview_png for e in events if isinstance(e, ProgressEvent))  # the sample grid at step 2
    grid = Image.open(env.storage.local_path(full.output("samples").ref))
    base = Image.open(env.storage.local_path(full.output("base_samples").ref))
    assert grid.size == base.size == (4 * SIZE, SIZE)
    assert not np.array_equal(np.asarray(grid), np.asarray(base))  # training changed G
    style = full.info["style"]
    assert style["model_kind"] == "stylegan2" and "users/erin/StyleGAN2/toon-full.safetensors" in style["files"]["model"]

    # FreezeD: the first two D blocks are the base's, the rest moved
    trained = load_file(style["files"]["model"])
    raw = torch.load(env.settings.models_dir / "StyleGAN2" / "tiny-ffhq.pt", weights_only=False)
    assert torch.equal(trained["d.convs.0.0.weight"], raw["d"]["convs.0.0.weight"])
    assert torch.equal(trained["d.convs.1.conv1.0.weight"], raw["d"]["convs.1.conv1.0.weight"])
    assert not torch.equal(trained["d.final_linear.1.weight"], raw["d"]["final_linear.1.weight"])
    assert not torch.equal(trained["g.convs.0.conv.weight"], raw["g"]["convs.0.conv.weight"])

    # a worker dies after step 3 (checkpoint at step 2): the same job resumes to the same weights
    class CrashError(RuntimeError):
        pass

    def crash(event):
        if isinstance(event, ProgressEvent) and event.stage.startswith("training step 3/"):
            raise CrashError("worker died")

    spec = {**COMMON, "style_name": "toon-resumed", "images": env.images}
    with pytest.raises(CrashError):
        env.run("train_toon", spec, job_id="job-b", on_event=crash)
    work = env.settings.resolved_data_dir / "training" / "job-b" / "checkpoint"
    assert (work / "toon_gan.safetensors").is_file() and (work / "job_state.json").is_file()
    resumed, events = env.run("train_toon", spec, job_id="job-b")
    assert any(getattr(e, "message", "") == "resumed from the checkpoint at step 2" for e in events)
    a, b = trained, load_file(resumed.info["style"]["files"]["model"])
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed.info["history"] == full.info["history"]
    assert not (env.settings.resolved_data_dir / "training" / "job-b").exists()  # cleaned up

    # registered: listed as erin's style and usable by a toon job (alone or blended with the base)
    from toonbooth.training.styles import list_styles

    assert {s.name for s in list_styles(env.settings.models_dir, "erin")} == {"toon-full", "toon-resumed"}
    photo = env.storage.put(sample_photo_path.read_bytes())
    out, _ = env.run("toon", {"image": photo, "style": "toon-full", "base_model": "tiny-ffhq", "encoder": "tiny-e4e",
                              "blend_resolutions": [16], "backend": "neural"})  # fmt: skip
    assert out.backend == "neural" and out.info["style"] == "toon-full"


def test_bad_training_sets_name_the_count_or_the_file(env):
    few = env.images[: TOON_MIN_IMAGES - 1]
    with pytest.raises(InputError) as err:
        env.run("train_toon", {**COMMON, "style_name": "few", "images": few})
    assert err.value.field == "images" and f"got {TOON_MIN_IMAGES - 1}" in str(err.value)
    dup = list(env.images)
    dup[5] = dup[2]
    names = [f"toon{i:02d}.png" for i in range(len(dup))]
    with pytest.raises(InputError) as err:
        env.run("train_toon", {**COMMON, "style_name": "dup", "images": dup, "image_names": names})
    assert err.value.field == "images[5]" and "toon05.png" in str(err.value) and "toon02.png" in str(err.value)
    small = list(env.images)
    small[7] = image_to_data_url(cartoon(99, size=12))
    with pytest.raises(InputError) as err:
        env.run("train_toon", {**COMMON, "style_name": "small", "images": small, "image_names": names})
    assert err.value.field == "images[7]" and "toon07.png" in str(err.value)
    with pytest.raises(InputError) as err:
        env.run("train_toon", {**COMMON, "style_name": "frozen", "images": env.images, "freeze_d": 4})
    assert err.value.field == "freeze_d"
    with pytest.raises(InputError) as err:
        env.run("train_toon", {**COMMON, "style_name": "tiny-toonify", "images": env.images}, owner=None)
    assert err.value.field == "style_name"  # a shared StyleGAN2 model of that name exists


def test_alignment_background_removal_and_required_faces(env, sample_photo_path):
    photo = Image.open(sample_photo_path).convert("RGB")
    rng = np.random.default_rng(5)
    faces = []
    for _i in range(TOON_MIN_IMAGES):  # crops around the face with shifted colours: distinct images, one face each
        dx, dy = int(rng.integers(-30, 30)), int(rng.integers(-20, 20))
        crop = photo.crop((130 + dx, 40 + dy, 310 + dx, 220 + dy))
        tint = np.asarray(crop, np.float32) * (0.7 + 0.6 * rng.random(3))[None, None, :]
        faces.append(Image.fromarray(np.clip(tint, 0, 255).astype(np.uint8)))
    refs = [image_to_data_url(f) for f in faces]
    out, _ = env.run("train_toon", {**COMMON, "steps": 1, "style_name": "aligned-toon", "images": refs, "align": True,
                                    "remove_background": True, "sample_every": 0})  # fmt: skip
    assert out.info["prepare"] == {"aligned": TOON_MIN_IMAGES, "no_face": [], "background_removed": TOON_MIN_IMAGES}
    refs[1] = env.images[1]  # a cartoon dlib finds no face in
    names = [f"face{i:02d}.png" for i in range(len(refs))]
    with pytest.raises(InputError) as err:
        env.run("train_toon", {**COMMON, "steps": 1, "style_name": "strict", "images": refs, "image_names": names,
                               "require_faces": True})  # fmt: skip
    assert err.value.field == "images[1]" and "face01.png" in str(err.value)
