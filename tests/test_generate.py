"""The generic `generate` job (A1111 txt2img / img2img / inpaint / ControlNet / LoRA) on the tiny model set."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from toonbooth.api.routes.a1111 import processed_info
from toonbooth.core.errors import InputError, JobCanceledError
from toonbooth.core.events import ProgressEvent
from toonbooth.core.images import parse_a1111_parameters, read_png_parameters
from toonbooth.core.settings import Settings
from toonbooth.core.specs import GenerateSpec, parse_job_spec
from toonbooth.engines import generate
from toonbooth.models.manager import ModelManager
from toonbooth.runtime.context import JobContext
from toonbooth.runtime.execute import execute
from toonbooth.runtime.storage_local import LocalStorage
from toonbooth.vision import a1111_image, control

W, H = 64, 48
A1111_INFO_KEYS = (
    "prompt", "negative_prompt", "seed", "all_seeds", "subseed", "all_subseeds", "width", "height", "sampler_name",
    "cfg_scale", "steps", "batch_size", "restore_faces", "sd_model_name", "sd_model_hash", "denoising_strength",
    "infotexts", "job_timestamp", "styles", "clip_skip", "is_using_inpainting_conditioning", "ignored",
)  # fmt: skip


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy shared CPU they make torch crawl."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def env(tiny_models_dir, tmp_path_factory, sample_photo_path):
    home = tmp_path_factory.mktemp("generate-home")
    settings = Settings(
        home=home, models_dir=tiny_models_dir, data_dir=home / "data", device="cpu", model_cache_items=6
    )
    storage = LocalStorage(settings.resolved_data_dir)
    photo = Image.open(sample_photo_path).convert("RGB").resize((W, H))
    mask = np.zeros((H, W), np.uint8)
    mask[12:36, 20:44] = 255
    refs = {"photo": storage.put(_png(photo)), "mask": storage.put(_png(Image.fromarray(mask)))}
    return {"settings": settings, "models": ModelManager(settings), "storage": storage, "photo_img": photo,
            "mask_arr": mask, **refs}  # fmt: skip


def spec(env, **kw) -> GenerateSpec:
    base = {
        "checkpoint": "tiny-sdxl",
        "steps": 3,
        "width": W,
        "height": H,
        "seed": 5,
        "sampler_name": "Euler a",
    }
    if kw.get("mode") == "img2img":
        base["init_images"] = [env["photo"]]
    base.update(kw)
    return GenerateSpec(**base)


def run(env, s: GenerateSpec, events: list | None = None, cancel=None):
    ctx = JobContext(env["settings"], env["models"], env["storage"],
                     on_event=events.append if events is not None else None, cancel_event=cancel)  # fmt: skip
    return generate.GenerateEngine().run(s, ctx)


def px(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def percents(events) -> list[float]:
    return [e.percent for e in events if isinstance(e, ProgressEvent)]


# --- txt2img, seeds, batches -------------------------------------------------------------------------


def test_txt2img_sdxl_and_sd15_sizes_info_and_png_parameters(env):
    events: list = []
    ctx = JobContext(env["settings"], env["models"], env["storage"], on_event=events.append)
    out = execute(spec(env, prompt="a (red:1.2) house", negative_prompt="blurry"), ctx)
    assert [(o.width, o.height) for o in out.outputs] == [(W, H)]
    info = processed_info(out.info)
    for key in A1111_INFO_KEYS:
        assert key in info, key
    assert info["seed"] == 5 and info["all_seeds"] == [5] and info["sd_model_name"] == "tiny-sdxl"
    assert info["sampler_name"] == "Euler a" and info["restore_faces"] is False and info["ignored"] == []
    assert len(info["sd_model_hash"]) == 10 and info["pipeline"] == "StableDiffusionXLPipeline"
    params = read_png_parameters(env["storage"].local_path(out.outputs[0].ref))
    prompt, negative, settings = parse_a1111_parameters(params)
    assert (prompt, negative) == ("a (red:1.2) house", "blurry")
    assert settings["Seed"] == "5" and settings["Size"] == f"{W}x{H}" and settings["Steps"] == "3"
    assert settings["Model"] == "tiny-sdxl" and settings["Sampler"] == "Euler a"
    assert params == info["infotexts"][0]
    perc = percents(events)
    assert perc[0] == 0.0 and perc[-1] == 100.0 and all(b >= a for a, b in zip(perc, perc[1:], strict=False))
    assert len(perc) >= 1 + 3

    sd15 = run(env, spec(env, checkpoint="tiny-sd15", width=32, height=40, clip_skip=2))
    assert sd15.images[0].image.size == (32, 40)
    assert sd15.pipeline == "StableDiffusionPipeline" and "Clip skip: 2" in sd15.infotexts[0]


def test_batch_size_and_n_iter_give_consecutive_seeds(env):
    events: list = []
    res = run(env, spec(env, checkpoint="tiny-sd15", seed=100, batch_size=2, n_iter=2), events)
    assert len(res.images) == 4
    assert res.seeds == [100, 101, 102, 103]
    assert [parse_a1111_parameters(t)[2]["Seed"] for t in res.infotexts] == [
        "100",
        "101",
        "102",
        "103",
    ]
    arrays = [px(x.image) for x in res.images]
    assert all(not np.array_equal(arrays[i], arrays[j]) for i in range(4) for j in range(i + 1, 4))
    # each image depends on its own seed only, not on its place in the batch
    alone = run(env, spec(env, checkpoint="tiny-sd15", seed=102))
    assert np.abs(px(alone.images[0].image) - arrays[2]).max() <= 2
    # one 0..100 stream over both batches: 3 steps each
    perc = percents(events)
    assert perc[-1] == 100.0 and all(b >= a for a, b in zip(perc, perc[1:], strict=False))
    assert any(40 <= p <= 60 for p in perc)


def test_random_seed_is_reported_and_variation_seed(env):
    res = run(env, spec(env, checkpoint="tiny-sd15", seed=-1))
    seed = res.seeds[0]
    assert 0 <= seed < 2**32 and f"Seed: {seed}" in res.infotexts[0]
    plain = run(env, spec(env, checkpoint="tiny-sd15", seed=7, subseed=9))
    var_a = run(env, spec(env, checkpoint="tiny-sd15", seed=7, subseed=9, subseed_strength=0.5))
    var_b = run(env, spec(env, checkpoint="tiny-sd15", seed=7, subseed=9, subseed_strength=0.5))
    assert np.array_equal(px(var_a.images[0].image), px(var_b.images[0].image))
    assert not np.array_equal(px(plain.images[0].image), px(var_a.images[0].image))
    assert "Variation seed: 9" in var_a.infotexts[0] and var_a.ignored == []


# --- img2img ----------------------------------------------------------------------------------------


def test_img2img_same_seed_same_pixels_and_reports_ignored(env):
    a = run(env, spec(env, mode="img2img", denoising_strength=0.6))
    b = run(env, spec(env, mode="img2img", denoising_strength=0.6))
    c = run(env, spec(env, mode="img2img", denoising_strength=0.6, seed=6))
    assert a.images[0].image.size == (W, H) and a.pipeline == "StableDiffusionXLImg2ImgPipeline"
    assert np.array_equal(px(a.images[0].image), px(b.images[0].image))
    assert not np.array_equal(px(a.images[0].image), px(c.images[0].image))
    assert a.denoising_strength == 0.6 and "Denoising strength: 0.6" in a.infotexts[0]
    odd = run(env, spec(env, mode="img2img", resize_mode=3, subseed_strength=0.3, width=32, height=32))
    assert odd.images[0].image.size == (32, 32)
    assert odd.ignored == ["resize_mode", "subseed_strength"]
    assert any("latent upscale" in w for w in odd.warnings)


# --- inpainting ----------------------------------------------------------------------------------------


def _far_from_mask(mask: np.ndarray, margin: int) -> np.ndarray:
    import cv2

    grown = cv2.dilate(mask, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8))
    return grown == 0


def test_inpaint_whole_picture_keeps_outside_and_repaints_inside(env):
    res = run(env, spec(env, checkpoint="tiny-sd15", mode="img2img", mask=env["mask"], mask_blur=2,
                        inpaint_full_res=False, inpainting_fill=1, denoising_strength=1.0))  # fmt: skip
    out, init = px(res.images[0].image), px(env["photo_img"])
    assert res.pipeline == "StableDiffusionInpaintPipeline"
    far = _far_from_mask(env["mask_arr"], margin=6)  # blur 2 -> kernel 11, radius 5
    assert np.array_equal(out[far], init[far])
    assert np.abs(out[16:32, 24:40] - init[16:32, 24:40]).mean() > 10
    assert (
        "Mask blur: 2" in res.infotexts[0] and "Masked content: original" in res.infotexts[0]
    )

    # masked content 0 / 2 / 3 change only the inside, each differently
    inside = {}
    for fill in (0, 2, 3):
        r = run(env, spec(env, checkpoint="tiny-sd15", mode="img2img", mask=env["mask"], mask_blur=2,
                          inpaint_full_res=False, inpainting_fill=fill, denoising_strength=0.5))  # fmt: skip
        o = px(r.images[0].image)
        assert np.array_equal(o[far], init[far]), fill
        inside[fill] = o[16:32, 24:40]
    assert not np.array_equal(inside[0], inside[2]) and not np.array_equal(inside[2], inside[3])


def test_inpaint_only_masked_pastes_into_full_size_and_inverts(env):
    res = run(env, spec(env, mode="img2img", mask=env["mask"], mask_blur=0, inpaint_full_res=True,
                        inpaint_full_res_padding=4, width=32, height=32, inpainting_fill=1))  # fmt: skip
    out, init = px(res.images[0].image), px(env["photo_img"])
    assert out.shape == init.shape  # the full picture comes back, not the 32x32 crop
    outside = env["mask_arr"] == 0
    assert np.array_equal(out[outside], init[outside])
    assert not np.array_equal(out[~outside], init[~outside])
    assert "Inpaint area: Only masked" in res.infotexts[0]

    inv = run(env, spec(env, mode="img2img", mask=env["mask"], mask_blur=0, inpaint_full_res=False,
                        inpainting_mask_invert=True, inpainting_fill=1))  # fmt: skip
    kept = px(inv.images[0].image)
    assert np.array_equal(kept[14:34, 22:42], init[14:34, 22:42])  # the white area is kept now


def test_inpainting_checkpoint_uses_its_conditioning(env):
    res = run(env, spec(env, checkpoint="tiny-sd15-inpainting", mode="img2img", mask=env["mask"], mask_blur=2,
                        inpaint_full_res=False, inpainting_fill=2, denoising_strength=0.8))  # fmt: skip
    assert res.is_using_inpainting_conditioning is True
    out, init = px(res.images[0].image), px(env["photo_img"])
    far = _far_from_mask(env["mask_arr"], margin=6)
    assert np.array_equal(out[far], init[far])
    t2i = run(env, spec(env, checkpoint="tiny-sd15-inpainting"))  # txt2img with a full mask, as A1111
    assert t2i.images[0].image.size == (W, H) and t2i.pipeline == "StableDiffusionInpaintPipeline"


# --- ControlNet ------------------------------------------------------------------------------------------


def _canny_unit(env, **kw):
    title = env["models"].entry("tiny-sdxl-canny", "controlnet").title
    unit = {"enabled": "True", "module": "canny", "model": title, "weight": 1, "threshold_a": 70,
            "threshold_b": 230, "pixel_perfect": "True", "resize_mode": "Crop and Resize"}  # fmt: skip
    unit.update(kw)
    return unit


def test_seed_client_controlnet_canny_img2img_sdxl(env):
    # the seed's React client, call 1: img2img + one canny unit sent with string booleans and a titled model
    raw = {"kind": "generate", "mode": "img2img", "checkpoint": "tiny-sdxl", "init_images": [env["photo"]],
           "steps": 4, "cfg_scale": 7, "sampler_name": "DDIM", "seed": 2968506678, "width": W, "height": H,
           "prompt": "emoji, male, smiling <lora:tiny-memoji:1>", "controlnet_units": [_canny_unit(env)]}  # fmt: skip
    with_unit = run(env, parse_job_spec(raw))
    assert with_unit.pipeline == "StableDiffusionXLControlNetImg2ImgPipeline"
    cn_text = parse_a1111_parameters(with_unit.infotexts[0])[2]["ControlNet 0"]
    assert "Module: canny" in cn_text and "Threshold A: 70" in cn_text and "Threshold B: 230" in cn_text
    assert "tiny-sdxl-canny [" in cn_text and "Pixel Perfect: True" in cn_text
    assert with_unit.loras[0]["name"] == "tiny-memoji"
    disabled = run(env, parse_job_spec({**raw, "controlnet_units": [_canny_unit(env, enabled="False")]}))
    none = run(env, parse_job_spec({**raw, "controlnet_units": []}))
    assert np.array_equal(px(disabled.images[0].image), px(none.images[0].image))
    assert np.abs(px(with_unit.images[0].image) - px(none.images[0].image)).mean() > 0.5


def test_two_units_and_control_modes(env):
    base = {"mode": "img2img", "steps": 3, "cfg_scale": 5}
    one = run(env, spec(env, **base, controlnet_units=[_canny_unit(env)]))
    two = run(env, spec(env, **base, controlnet_units=[
        _canny_unit(env), _canny_unit(env, module="invert", weight=0.8, guidance_end=0.5),
    ]))  # fmt: skip
    assert "ControlNet 1" in two.extra_generation_params
    assert not np.array_equal(px(one.images[0].image), px(two.images[0].image))
    modes = {}
    for mode in (1, 2):
        r = run(env, spec(env, **base, controlnet_units=[_canny_unit(env, control_mode=mode)]))
        modes[mode] = px(r.images[0].image)
    assert not np.array_equal(modes[1], px(one.images[0].image))
    assert not np.array_equal(modes[1], modes[2])
    # the hooks are gone after the job: Balanced again gives the first result
    again = run(env, spec(env, **base, controlnet_units=[_canny_unit(env)]))
    assert np.array_equal(px(again.images[0].image), px(one.images[0].image))


def test_sd15_original_layout_controlnet_txt2img(env):
    r = run(env, spec(env, checkpoint="tiny-sd15",
                      controlnet_units=[{"module": "none", "model": "tiny-sd15-canny", "image": env["photo"]}]))  # fmt: skip
    assert r.pipeline == "StableDiffusionControlNetPipeline" and r.images[0].image.size == (W, H)


# --- LoRA tags and errors ---------------------------------------------------------------------------------


def test_lora_tag_changes_output_unknown_and_wrong_family_refused(env):
    plain = run(env, spec(env, checkpoint="tiny-sd15", prompt="a cat"))
    styled = run(env, spec(env, checkpoint="tiny-sd15", prompt="a cat <lora:tiny-sd15-style:1>"))
    assert np.abs(px(plain.images[0].image) - px(styled.images[0].image)).mean() > 0.5
    assert parse_a1111_parameters(styled.infotexts[0])[2]["Lora hashes"].startswith(
        "tiny-sd15-style: "
    )
    assert styled.prompt == "a cat <lora:tiny-sd15-style:1>"
    again = run(env, spec(env, checkpoint="tiny-sd15", prompt="a cat"))  # LoRA switched off again
    assert np.array_equal(px(plain.images[0].image), px(again.images[0].image))
    with pytest.raises(InputError, match="tiny-sd15-style") as err:
        run(env, spec(env, checkpoint="tiny-sd15", prompt="a cat <lora:nope:1>"))
    assert err.value.field == "prompt" and "nope" in str(err.value)
    with pytest.raises(InputError, match="sdxl") as err:
        run(env, spec(env, checkpoint="tiny-sd15", prompt="<lora:tiny-memoji:1>"))
    assert err.value.field == "prompt"


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"sampler_name": "Warp Drive"}, "sampler_name"),
        ({"sampler_name": "DDIM", "scheduler": "Karras"}, "scheduler"),
        ({"checkpoint": "no-such-model"}, "checkpoint"),
        (
            {"controlnet_units": [{"module": "canny", "model": "nope", "image": "x"}]},
            "controlnet_units.0.model",
        ),
        (
            {"controlnet_units": [{"module": "canny", "model": "tiny-sd15-canny", "image": "x"}]},
            "controlnet_units.0.model",
        ),  # an SD1.5 ControlNet on an SDXL checkpoint
        (
            {
                "controlnet_units": [
                    {
                        "module": "canny",
                        "model": "tiny-sdxl-canny",
                        "image": "x",
                        "threshold_a": 200,
                        "threshold_b": 100,
                    }
                ]
            },
            "controlnet_units.0.threshold_a",
        ),
        (
            {"mode": "img2img", "init_images": ["x"], "steps": 2, "denoising_strength": 0.2},
            "denoising_strength",
        ),
    ],
)
def test_bad_inputs_are_refused_before_loading_and_name_the_field(env, kw, field):
    with pytest.raises(InputError) as err:
        generate.check_generate(spec(env, **kw), env["models"])
    assert err.value.field == field


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (
            {
                "controlnet_units": [{"module": "depth_leres", "model": "m"}],
                "mode": "img2img",
                "init_images": ["x"],
            },
            "controlnet_units.0.module",
        ),
        ({"mode": "img2img"}, "init_images"),
        ({"init_images": ["x"]}, "init_images"),
        ({"mask": "x"}, "mask"),
        ({"width": 33}, "width"),
        ({"controlnet_units": [{"module": "canny", "model": "m"}]}, "controlnet_units"),  # txt2img: no image
        ({"batch_size": 8, "n_iter": 20}, "n_iter"),
    ],
)
def test_spec_refuses_bad_requests(raw, field):
    with pytest.raises(InputError) as err:
        parse_job_spec({"kind": "generate", "checkpoint": "c", **raw})
    assert err.value.field == field
    if field.endswith("module"):
        assert "canny" in str(err.value) and "none" in str(err.value)


def test_cancel_stops_between_steps(env):
    cancel = threading.Event()
    events: list = []

    def on_event(e):
        events.append(e)
        if isinstance(e, ProgressEvent) and e.step == 2:
            cancel.set()

    ctx = JobContext(env["settings"], env["models"], env["storage"], on_event=on_event, cancel_event=cancel)
    with pytest.raises(JobCanceledError):
        generate.GenerateEngine().run(spec(env, checkpoint="tiny-sd15", steps=4, n_iter=2), ctx)
    assert max(e.step for e in events if isinstance(e, ProgressEvent)) == 2


# --- helpers (no models) -----------------------------------------------------------------------------------


def test_resize_modes_and_crop_region():
    im = Image.new("RGB", (40, 20), (200, 10, 10))
    for mode in (0, 1, 2):
        assert a1111_image.resize_image(mode, im, 32, 32).size == (32, 32)
    filled = np.asarray(a1111_image.resize_image(2, im, 32, 32))
    assert (filled[0, 16] == filled[16, 16]).all()  # the borders are the stretched edge rows, not black
    mask = Image.new("L", (100, 60), 0)
    mask.paste(255, (40, 20, 50, 30))
    region = a1111_image.crop_region(mask, 4)
    assert region == (36, 16, 54, 34)
    x1, y1, x2, y2 = a1111_image.expand_crop_region(region, 64, 32, 100, 60)
    assert (x2 - x1) == 2 * (y2 - y1) and x1 <= 36 and x2 >= 54
    assert a1111_image.crop_region(Image.new("L", (8, 8), 0), 4) is None


def test_fill_and_canny_map_helpers():
    im = Image.new("RGB", (32, 32), (10, 200, 30))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    im.paste((250, 250, 250), (8, 8, 24, 24))  # what the mask hides
    filled = np.asarray(a1111_image.fill_masked(im, mask), dtype=np.int16)
    assert np.abs(filled - np.array([10, 200, 30])).max() <= 8  # the hole takes the surrounding colour
    assert (filled[:8] == np.array([10, 200, 30])).all()  # unmasked pixels are untouched
    photo = np.zeros((40, 60, 3), np.uint8)
    photo[10:30, 20:40] = 255
    assert control.pixel_perfect_resolution(60, 40, 48, 32, "Crop and Resize") == 32
    from toonbooth.core.specs import ControlNetUnit

    unit = ControlNetUnit(module="canny", model="m", pixel_perfect=True, threshold_a=70, threshold_b=230)
    cmap = np.asarray(control.control_map(Image.fromarray(photo), unit, 0, 48, 32))
    assert cmap.shape == (32, 48, 3) and set(np.unique(cmap)) <= {0, 255} and cmap.max() == 255
    for mode in ("Just Resize", "Crop and Resize", "Resize and Fill"):
        assert control.fit_map(photo, 16, 24, mode, binary=True).shape == (24, 16, 3)
