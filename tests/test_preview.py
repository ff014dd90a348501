"""Live previews during denoising (A1111 "Approx cheap"): the latent -> RGB map on hand-made latents, its
sizes; the generate and avatar engines on the tiny model set sending previews at the
`preview_every` cadence; a real Service serving the latest one while the job runs."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import torch
from PIL import Image

from toonbooth.core.errors import InputError, NotFoundError
from toonbooth.core.events import ProgressEvent
from toonbooth.core.settings import Settings
from toonbooth.core.specs import AvatarSpec, GenerateSpec, LoraRef
from toonbooth.models import preview as preview_mod
from toonbooth.models.manager import ModelManager
from toonbooth.models.preview import latents_to_preview, preview_size
from toonbooth.runtime.context import JobContext
from toonbooth.runtime.execute import execute
from toonbooth.runtime.runner import Runner
from toonbooth.runtime.service import Service
from toonbooth.runtime.storage_local import LocalStorage

# The published "Approx cheap" factors (A1111 modules/sd_vae_approx.py): rows = latent channels, cols = RGB.
SD1 = np.array(
    [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]]
)
SDXL = np.array(
    [
        [0.3448, 0.4168, 0.4395],
        [-0.1953, -0.0290, 0.0250],
        [0.1074, 0.0886, -0.0163],
        [-0.3730, -0.2499, -0.2088],
    ]
)


def expected_rgb(channels, factors: np.ndarray) -> np.ndarray:
    """A1111: rgb = latent @ factors, shown as x * 0.5 + 0.5 clamped to [0, 1], as 0..255."""
    return np.clip(0.5 + 0.5 * (np.asarray(channels, float) @ factors), 0, 1) * 255


def flat_latent(channels, h: int = 4, w: int = 4, batch: int | None = 1) -> torch.Tensor:
    x = torch.tensor(channels, dtype=torch.float32)[:, None, None].expand(4, h, w).clone()
    return x if batch is None else x[None].repeat(batch, 1, 1, 1)


def px(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


# --- the linear map -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "factors"), [("sd15", SD1), ("sd2", SD1), ("sdxl", SDXL), ("sdxl-refiner", SDXL)]
)
def test_each_channel_gives_its_factor_row_and_mixtures_add_up(arch, factors):
    for c in range(4):
        one_hot = [0.0] * 4
        one_hot[c] = 1.0
        img = latents_to_preview(flat_latent(one_hot), arch)
        assert img.mode == "RGB" and img.size == (32, 32)
        got = px(img)
        assert (got == got[0, 0]).all()  # a flat latent gives a flat picture
        assert np.abs(got[0, 0] - expected_rgb(one_hot, factors)).max() <= 1, (arch, c)
    mix = [1.0, -1.0, 0.5, 2.0]
    assert (
        np.abs(px(latents_to_preview(flat_latent(mix), arch))[0, 0] - expected_rgb(mix, factors)).max() <= 1
    )
    # zero latent -> mid grey; huge values clamp to black / white, not wrap around
    assert (px(latents_to_preview(flat_latent([0.0] * 4), arch)) == 128).all()
    assert (px(latents_to_preview(flat_latent([0, 0, 0, -40.0]), arch)) == 255).all()
    assert (px(latents_to_preview(flat_latent([0, 0, 0, 40.0]), arch)) == 0).all()


def test_sd1_and_sdxl_tables_differ_and_known_colours():
    minus_c4 = [0.0, 0.0, 0.0, -1.0]  # a bluish light grey for SD1, a reddish one for SDXL
    sd1 = px(latents_to_preview(flat_latent(minus_c4), "sd15"))[0, 0]
    sdxl = px(latents_to_preview(flat_latent(minus_c4), "sdxl"))[0, 0]
    # 0.5 + 0.5 * (0.184, 0.271, 0.473) and 0.5 + 0.5 * (0.3730, 0.2499, 0.2088), times 255
    assert np.abs(sd1 - [151, 162, 188]).max() <= 1
    assert np.abs(sdxl - [175, 159, 154]).max() <= 1


def test_layout_is_height_by_width_and_only_the_first_image_of_a_batch():
    lat = torch.zeros(2, 4, 6, 10)
    lat[0, 0, :, :5] = 2.0  # left half of image 0: channel 0
    lat[0, 3, :, 5:] = 2.0  # right half of image 0: channel 3
    lat[1] = -3.0  # image 1 is something else entirely
    img = latents_to_preview(lat, "sd15")
    assert img.size == (80, 48)  # (w, h) = 8x the (10, 6) latent
    got = px(img)
    left, right = expected_rgb([2, 0, 0, 0], SD1), expected_rgb([0, 0, 0, 2], SD1)
    for row in (0, 47):
        assert np.abs(got[row, 2] - left).max() <= 1
        assert np.abs(got[row, 77] - right).max() <= 1
    assert (px(latents_to_preview(lat[0], "sd15")) == got).all()  # (4, h, w) works too
    assert (px(latents_to_preview(lat[1:], "sd15")) != got).any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_any_dtype_gives_the_float32_picture(dtype):
    lat = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    ref = px(latents_to_preview(lat, "sdxl"))
    assert np.abs(px(latents_to_preview(lat.to(dtype), "sdxl")) - ref).max() <= 3
    assert lat.dtype == torch.float32  # the caller's tensor is untouched


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_half_latents_give_the_cpu_picture():
    lat = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    on_gpu = latents_to_preview(lat.to("cuda", torch.float16), "sd15")
    assert np.abs(px(on_gpu) - px(latents_to_preview(lat, "sd15"))).max() <= 3


def test_non_finite_values_do_not_break_the_preview():
    lat = flat_latent([float("nan"), float("inf"), 0.0, 0.0])
    img = latents_to_preview(lat, "sd15")
    assert img.size == (32, 32) and px(img).min() >= 0


@pytest.mark.parametrize(
    ("h", "w", "max_side", "size"),
    [
        (4, 4, 256, (32, 32)),
        (6, 8, 256, (64, 48)),
        (128, 128, 256, (256, 256)),
        (64, 128, 256, (256, 128)),
        (16, 16, 1024, (128, 128)),  # never more than 8x
        (128, 96, 64, (48, 64)),
        (1, 1, 256, (8, 8)),
        (3, 200, 100, (100, 2)),
    ],
)
def test_size_is_8x_capped_by_max_side(h, w, max_side, size):
    assert preview_size(w, h, max_side) == size
    assert latents_to_preview(torch.zeros(1, 4, h, w), "sd15", max_side=max_side).size == size


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"latents": torch.zeros(1, 4, 4, 4), "arch": "sd3"}, "arch"),
        ({"latents": torch.zeros(1, 16, 4, 4), "arch": "sdxl"}, "latents"),
        ({"latents": torch.zeros(4, 4), "arch": "sdxl"}, "latents"),
        ({"latents": torch.zeros(1, 4, 0, 4), "arch": "sdxl"}, "latents"),
        ({"latents": torch.zeros(1, 4, 4, 4), "arch": "sd15", "max_side": 0}, "max_side"),
        ({"latents": torch.zeros(1, 4, 4, 4), "arch": "sd15", "max_side": 2.5}, "max_side"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(InputError) as err:
        latents_to_preview(**kwargs)
    assert err.value.field == field


# --- the cadence ------------------------------------------------------------------------------------


def test_settings_and_context_cadence(tmp_path, monkeypatch):
    assert Settings(home=tmp_path).preview_every == 5
    monkeypatch.setenv("TOONBOOTH_PREVIEW_EVERY", "0")
    assert Settings(home=tmp_path).preview_every == 0
    with pytest.raises(ValueError, match="preview_every"):
        Settings(home=tmp_path, preview_every=101)
    settings = Settings(home=tmp_path)

    def wanted(every: int, steps: int) -> list[int]:
        ctx = JobContext(settings, None, None, preview_every=every)
        return [s for s in range(1, steps + 1) if ctx.wants_preview(s, steps)]

    assert wanted(5, 12) == [5, 10, 12]
    assert wanted(5, 10) == [5, 10]
    assert wanted(1, 3) == [1, 2, 3]
    assert wanted(0, 12) == []
    assert JobContext(settings, None, None).preview_every == 0  # direct callers (CLI) render none


# --- engines on the tiny model set --------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tiny_models_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("preview-home")
    settings = Settings(
        home=home, models_dir=tiny_models_dir, data_dir=home / "data", device="cpu", max_side=64
    )
    storage = LocalStorage(settings.resolved_data_dir)
    photo = Image.open("assets/sample_face.png").convert("RGB").resize((80, 64))
    buf = io.BytesIO()
    photo.save(buf, "PNG")
    return {
        "settings": settings,
        "models": ModelManager(settings),
        "storage": storage,
        "photo": buf.getvalue(),
    }


@pytest.fixture()
def recorded(monkeypatch):
    """Wrap latents_to_preview (the engines import it at run time) to see what the engines hand it."""
    calls: list[tuple[tuple[int, ...], str, Image.Image]] = []
    real = preview_mod.latents_to_preview

    def spy(latents, arch, max_side=256):
        img = real(latents, arch, max_side)
        calls.append((tuple(latents.shape), arch, img))
        return img

    monkeypatch.setattr(preview_mod, "latents_to_preview", spy)
    return calls


def run_job(env, spec, every: int) -> list[ProgressEvent]:
    events: list = []
    ctx = JobContext(
        env["settings"], env["models"], env["storage"], on_event=events.append, preview_every=every
    )
    execute(spec, ctx)
    return [e for e in events if isinstance(e, ProgressEvent)]


def with_previews(events: list[ProgressEvent]) -> list[tuple[int, str, Image.Image]]:
    return [(e.step, e.stage, Image.open(io.BytesIO(e.preview_png))) for e in events if e.preview_png]


def test_generate_sends_previews_every_n_steps_of_each_batch(env, recorded):
    spec = GenerateSpec(
        checkpoint="tiny-sd15", prompt="a house", steps=5, n_iter=2, width=32, height=32, seed=3,
        sampler_name="Euler",
    )  # fmt: skip
    shown = with_previews(run_job(env, spec, every=2))
    # 5 denoising steps per batch: local steps 2, 4 and the last (5), in each of the two batches
    assert [s for s, _, _ in shown] == [2, 4, 5, 7, 9, 10]
    assert all(img.format == "PNG" and img.mode == "RGB" and img.size == (32, 32) for _, _, img in shown)
    # what the engine sent is the cheap decode of the pipeline's own latents (1, 4, 32/8, 32/8)
    assert [(shape, arch) for shape, arch, _ in recorded] == [((1, 4, 4, 4), "sd15")] * 6
    for (_, _, img), (_, _, made) in zip(shown, recorded, strict=True):
        assert (px(img.convert("RGB")) == px(made)).all()
    assert len({img.tobytes() for _, _, img in shown}) > 1  # the latents move between steps

    recorded.clear()
    assert with_previews(run_job(env, spec, every=0)) == [] and recorded == []  # off: not even computed


def test_avatar_sends_previews_of_both_passes_at_their_sizes(env, recorded):
    ref = env["storage"].put(env["photo"])
    spec = AvatarSpec(
        image=ref, backend="neural", checkpoint="tiny-sdxl", controlnet="tiny-sdxl-canny",
        loras=[LoraRef(name="tiny-memoji", weight=1.0)], steps=4, max_side=64,
    )  # fmt: skip
    shown = with_previews(run_job(env, spec, every=2))
    # int(4 * 0.75) = 3 DDIM steps per pass: local 2 and 3 (the last) in pass 1 (64x48) and pass 2 (96x72)
    assert [(s, stage, img.size) for s, stage, img in shown] == [
        (2, "pass 1", (64, 48)), (3, "pass 1", (64, 48)), (5, "pass 2", (96, 72)), (6, "pass 2", (96, 72)),
    ]  # fmt: skip
    assert [(shape, arch) for shape, arch, _ in recorded] == [((1, 4, 6, 8), "sdxl")] * 2 + [
        ((1, 4, 9, 12), "sdxl")
    ] * 2


@pytest.fixture()
def vae_decodes(monkeypatch):
    """Count runs of the VAE's decoder network (every way to turn latents into pixels goes through it)."""
    from diffusers.models.autoencoders.vae import Decoder

    calls: list[tuple[int, ...]] = []
    real = Decoder.forward

    def forward(self, z, *args, **kwargs):
        calls.append(tuple(z.shape))
        return real(self, z, *args, **kwargs)

    monkeypatch.setattr(Decoder, "forward", forward)
    return calls


@pytest.mark.parametrize("kind", ["generate", "avatar"])
def test_previews_are_made_from_latents_without_a_vae_decode(env, recorded, vae_decodes, kind):
    if kind == "generate":
        spec = GenerateSpec(checkpoint="tiny-sd15", prompt="a house", steps=3, width=32, height=32, seed=3,
                            sampler_name="Euler")  # fmt: skip
    else:
        spec = AvatarSpec(image=env["storage"].put(env["photo"]), backend="neural", checkpoint="tiny-sdxl",
                          controlnet="tiny-sdxl-canny", loras=[LoraRef(name="tiny-memoji", weight=1.0)], steps=4,
                          max_side=64)  # fmt: skip
    shown = with_previews(run_job(env, spec, every=0))
    without = list(vae_decodes)
    assert shown == [] and recorded == [] and without  # the job's own decode(s) of its result
    vae_decodes.clear()
    shown = with_previews(run_job(env, spec, every=1))
    # a preview after every denoising step, and not one more VAE decode than the job without previews
    assert len(shown) == len(recorded) >= 3
    assert vae_decodes == without


# --- through the service: the latest preview while the job runs --------------------------------------


def test_service_serves_the_latest_preview_while_running(env, tmp_path, monkeypatch):
    settings = env["settings"].model_copy(update={"data_dir": tmp_path / "data", "preview_every": 3})
    published: list[bytes] = []
    latest_ok: list[bool] = []
    real_on_event = Runner.on_event

    def on_event(self, active, event):
        real_on_event(self, active, event)
        if isinstance(event, ProgressEvent) and event.preview_png is not None:
            published.append(event.preview_png)
            # right after the engine sent it, the service hands out exactly this one
            latest_ok.append(self.service.preview(active.job_id, active.owner) == event.preview_png)
            time.sleep(0.08)  # give the polling client time to see each preview

    monkeypatch.setattr(Runner, "on_event", on_event)
    spec = GenerateSpec(
        checkpoint="tiny-sd15", prompt="a tree", steps=12, width=32, height=32, seed=7, sampler_name="Euler"
    )
    seen: list[bytes] = []
    with Service(settings, models=env["models"]) as svc:
        job = svc.submit(spec, "alice")
        deadline = time.monotonic() + 30
        while not svc.get(job.id, "alice").done and time.monotonic() < deadline:
            png = svc.preview(job.id, "alice")
            if png is not None and (not seen or seen[-1] != png):
                seen.append(png)
            time.sleep(0.005)
        record = svc.wait(job.id, "alice", timeout=10)
        assert record.state == "completed"
        assert svc.preview(job.id, "alice") is None  # live only: gone once the job is done
        with pytest.raises(NotFoundError):
            svc.preview(job.id, "bob")  # another user's job is not found
    assert len(published) == 4  # steps 3, 6, 9, 12 of 12
    assert all(latest_ok)
    assert len(seen) >= 2 and all(png in published for png in seen)
    assert [published.index(p) for p in seen] == sorted(published.index(p) for p in seen)  # in order
    assert all(Image.open(io.BytesIO(p)).size == (32, 32) for p in seen)
