"""The public surface of the `webuiapi` PyPI client (mix1009/sdwebuiapi), call by call, against a running
server: each call is made as a user would make it and its answer checked for A1111's shapes and
semantics. Used by tests/test_a1111_webuiapi.py (everything must be right or the documented refusal) and
by bench/a1111_clients.py (counts before / after, against any server).

Outcomes: `right` (works, shapes and meaning as A1111), `documented` (the refusal docs/a1111.md names:
an A1111 extension toonbooth does not provide, interrogation), `wrong` (an answer with the wrong shape or
meaning, or a 5xx), `missing` (404 / 405 where A1111 answers).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

NOT_FOUND = {"detail": "Not Found"}
EXTENSION_MISSING = 404  # routes of A1111 extensions toonbooth does not provide: plain 404, as A1111 without them


class StatusError(Exception):
    def __init__(self, status: int, text: str = ""):
        super().__init__(f"HTTP {status}: {text[:300]}")
        self.status = status


@dataclass
class Env:
    """What the calls use: images and the model names of the server's tiny set."""

    photo: Image.Image
    sd15: str = "tiny-sd15"
    sdxl: str = "tiny-sdxl"
    cn_sd15: str = "tiny-sd15-canny"
    cn_sdxl: str = "tiny-sdxl-canny"
    network: str = "R-ESRGAN 4x+"  # an upscaler network installed on the server
    vae: str | None = None
    style: str | None = None
    steps: int = 3
    notes: dict[str, str] = field(default_factory=dict)


@dataclass
class Call:
    name: str
    run: Callable[[Any, Env], None]
    expect: int | None = None  # None: must work; else the documented refusal status


def _json(value: Any) -> Any:
    if value == NOT_FOUND or (isinstance(value, dict) and value.get("detail") == "Not Found"):
        raise StatusError(404, "Not Found")
    return value


def _unwrap(exc: RuntimeError) -> StatusError:
    args = exc.args
    if len(args) >= 2 and isinstance(args[0], int):
        return StatusError(args[0], str(args[1]))
    raise exc


def _mask(size: tuple[int, int]) -> Image.Image:
    m = Image.new("L", size, 0)
    m.paste(255, (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4))
    return m


def _gen(api: Any, env: Env, **kw: Any) -> Any:
    kw.setdefault("steps", env.steps)
    kw.setdefault("width", 64)
    kw.setdefault("height", 64)
    kw.setdefault("seed", 1)
    kw.setdefault("override_settings", {"sd_model_checkpoint": env.sd15})
    return kw


def _info(result: Any) -> dict[str, Any]:
    assert isinstance(result.info, dict), f"info is not JSON: {str(result.info)[:200]}"
    return result.info


# --- generation -------------------------------------------------------------------------------------


def txt2img(api, env):
    r = api.txt2img(**_gen(api, env, prompt="a cat"))
    assert r.image.size == (64, 64) and _info(r)["seed"] == 1 and r.info["infotexts"]


def txt2img_batch(api, env):
    r = api.txt2img(**_gen(api, env, prompt="a cat", batch_size=2, n_iter=1))
    assert len(r.images) == 2 and r.info["all_seeds"] == [1, 2]


def txt2img_hires_latent(api, env):
    r = api.txt2img(**_gen(api, env, prompt="a cat", enable_hr=True, hr_scale=2, denoising_strength=0.6))
    assert r.image.size == (128, 128), f"hires fix gave {r.image.size}"
    assert "Hires upscale: 2" in r.info["infotexts"][0] and "Hires upscaler: Latent" in r.info["infotexts"][0]


def txt2img_hires_pixel_resize(api, env):
    r = api.txt2img(**_gen(api, env, prompt="a cat", enable_hr=True, hr_upscaler="Lanczos", hr_resize_x=96,
                          hr_resize_y=80, hr_second_pass_steps=2, denoising_strength=0.5))  # fmt: skip
    assert r.image.size == (96, 80), f"hires fix gave {r.image.size}"
    assert "Hires resize: 96x80" in r.info["infotexts"][0] and "Hires steps: 2" in r.info["infotexts"][0]


def txt2img_hires_network(api, env):
    r = api.txt2img(**_gen(api, env, prompt="a cat", enable_hr=True, hr_upscaler=env.network, hr_scale=1.5,
                          denoising_strength=0.5, hr_sampler_name="DDIM"))  # fmt: skip
    assert r.image.size == (96, 96), f"hires fix gave {r.image.size}"
    assert f"Hires upscaler: {env.network}" in r.info["infotexts"][0] and "Hires sampler: DDIM" in r.info["infotexts"][0]


def txt2img_tiling(api, env):
    r = api.txt2img(**_gen(api, env, prompt="a pattern", tiling=True))
    assert "Tiling: True" in r.info["infotexts"][0] and "tiling" not in r.info.get("ignored", [])


def txt2img_styles(api, env):
    assert env.style, "the server lists no prompt style"
    r = api.txt2img(**_gen(api, env, prompt="a cat", styles=[env.style]))
    assert r.info["prompt"] != "a cat" and "styles" not in r.info.get("ignored", []), r.info["prompt"]
    assert r.info["styles"] == [env.style]


def txt2img_sd_vae(api, env):
    assert env.vae, "the server lists no VAE"
    r = api.txt2img(**_gen(api, env, prompt="a cat", override_settings={"sd_model_checkpoint": env.sdxl,
                                                                        "sd_vae": env.vae}))  # fmt: skip
    assert r.info["sd_vae_name"] == env.vae and f"VAE: {env.vae}" in r.info["infotexts"][0]


def txt2img_controlnet(api, env):
    from webuiapi import ControlNetUnit

    unit = ControlNetUnit(image=env.photo, module="canny", model=env.cn_sd15, threshold_a=80, threshold_b=200)
    r = api.txt2img(**_gen(api, env, prompt="a face", controlnet_units=[unit]))
    assert "ControlNet 0" in r.info["extra_generation_params"]
    # webuiapi keeps units in a mutable default; it clears them only when /scripts lists ControlNet
    plain = api.txt2img(**_gen(api, env, prompt="a face"))
    assert "ControlNet 0" not in plain.info["extra_generation_params"], "a stale ControlNet unit was reused"


def img2img(api, env):
    r = api.img2img(**_gen(api, env, images=[env.photo], prompt="a face", denoising_strength=0.5))
    assert r.image.size == (64, 64) and r.info["denoising_strength"] == 0.5


def img2img_inpaint(api, env):
    r = api.img2img(**_gen(api, env, images=[env.photo], mask_image=_mask(env.photo.size), prompt="a face",
                          inpaint_full_res=False))  # fmt: skip
    assert r.image.size == (64, 64) and "Mask blur" in r.info["extra_generation_params"]


def img2img_controlnet_then_plain(api, env):
    from webuiapi import ControlNetUnit

    unit = ControlNetUnit(module="canny", model=env.cn_sdxl, threshold_a=70, threshold_b=230)
    sdxl = {"sd_model_checkpoint": env.sdxl}
    r = api.img2img(**_gen(api, env, images=[env.photo], prompt="a face", controlnet_units=[unit], override_settings=sdxl))
    assert "ControlNet 0" in r.info["extra_generation_params"]
    plain = api.img2img(**_gen(api, env, images=[env.photo], prompt="a face"))  # SD1.5: an SDXL unit would 422
    assert "ControlNet 0" not in plain.info["extra_generation_params"], "a stale ControlNet unit was reused"


def _background(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = call()
        except Exception as exc:  # surfaced by the caller
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def _wait_running(api, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = api.get_progress()
        if p.get("progress", 0) > 0 and p["state"]["sampling_step"] >= 1:
            return
        time.sleep(0.05)
    raise AssertionError("the job never started")


def interrupt(api, env):
    t, box = _background(lambda: api.txt2img(**_gen(api, env, prompt="a cat", steps=150)))
    _wait_running(api)
    api.interrupt()
    t.join(180)
    if "error" in box:
        raise box["error"]
    r = box["result"]
    assert r.image.size == (64, 64), "interrupt returned no image"
    assert r.info["interrupted"] is True


def skip(api, env):
    t, box = _background(lambda: api.txt2img(**_gen(api, env, prompt="a cat", steps=60, n_iter=2)))
    _wait_running(api)
    api.skip()
    t.join(180)
    if "error" in box:
        raise box["error"]
    r = box["result"]
    assert len(r.images) == 2, f"skip: {len(r.images)} images (the next image must still be made)"
    assert r.info.get("skipped") == [0] and not r.info.get("interrupted")


def extra_single_image(api, env):
    r = api.extra_single_image(env.photo, upscaler_1="Lanczos", upscaling_resize=2)
    assert r.image.size == (128, 128) and "Postprocess upscale by: 2" in r.info


def extra_batch_images(api, env):
    r = api.extra_batch_images([env.photo, env.photo.resize((48, 48))], resize_mode=1, upscaling_resize_w=100,
                               upscaling_resize_h=80, upscaler_1=env.network, upscaler_2="Nearest",
                               extras_upscaler_2_visibility=0.5)  # fmt: skip
    assert [im.size for im in r.images] == [(100, 80), (100, 80)]


def png_info(api, env):
    made = api.txt2img(**_gen(api, env, prompt="png info test")).image
    r = api.png_info(made)
    assert isinstance(r.info, str) and r.info.startswith("png info test")
    assert r.json["parameters"]["Steps"] == str(env.steps) and r.json["parameters"]["Size-1"] == "64"


def interrogate(api, env):
    try:
        api.interrogate(env.photo)
    except RuntimeError as exc:
        raise _unwrap(exc) from None
    raise AssertionError("interrogate answered")


# --- options, lists, utilities ------------------------------------------------------------------------


def options(api, env):
    o = _json(api.get_options())
    assert "sd_model_checkpoint" in o and "sd_vae" in o


def set_options(api, env):
    before = _json(api.get_options())["send_seed"]
    api.set_options({"send_seed": not before})
    assert _json(api.get_options())["send_seed"] is (not before)
    api.set_options({"send_seed": before})


def _list_of(value: Any, *keys: str) -> list[dict[str, Any]]:
    value = _json(value)
    assert isinstance(value, list), f"expected a list, got {str(value)[:200]}"
    for item in value:
        missing = set(keys) - set(item)
        assert not missing, f"{item} lacks {missing}"
    return value


def cmd_flags(api, env):
    assert isinstance(_json(api.get_cmd_flags()), dict)


def progress(api, env):
    p = _json(api.get_progress())
    assert {"progress", "eta_relative", "state", "current_image"} <= set(p)


def samplers(api, env):
    assert "Euler a" in {s["name"] for s in _list_of(api.get_samplers(), "name", "aliases", "options")}


def schedulers(api, env):
    _list_of(api.get_schedulers(), "name", "label")


def sd_vae(api, env):
    names = [v["model_name"] for v in _list_of(api.get_sd_vae(), "model_name", "filename")]
    assert names, "no VAE listed"
    env.vae = env.vae or names[0]


def upscalers(api, env):
    names = {u["name"] for u in _list_of(api.get_upscalers(), "name", "model_name", "model_path", "scale")}
    assert {"None", "Lanczos", "Nearest", env.network} <= names, names


def latent_upscale_modes(api, env):
    assert {"Latent", "Latent (nearest-exact)"} <= {m["name"] for m in _list_of(api.get_latent_upscale_modes(), "name")}


def loras(api, env):
    items = _list_of(api.get_loras(), "name", "alias", "path")
    assert items


def sd_models(api, env):
    _list_of(api.get_sd_models(), "title", "model_name", "hash", "filename")


def hypernetworks(api, env):
    assert _list_of(api.get_hypernetworks()) == []


def face_restorers(api, env):
    _list_of(api.get_face_restorers())


def realesrgan_models(api, env):
    assert _list_of(api.get_realesrgan_models(), "name", "path", "scale"), "no Real-ESRGAN model listed"


def prompt_styles(api, env):
    styles = _list_of(api.get_prompt_styles(), "name", "prompt", "negative_prompt")
    assert styles, "no prompt style listed"
    env.style = env.style or styles[0]["name"]


def artist_categories(api, env):  # removed from A1111 (1.0); 404 there too
    _json(api.get_artist_categories())
    raise AssertionError("answered a route A1111 removed")


def artists(api, env):
    _json(api.get_artists())
    raise AssertionError("answered a route A1111 removed")


def refresh_checkpoints(api, env):
    assert api.refresh_checkpoints() is None


def scripts(api, env):
    s = _json(api.get_scripts())
    assert "controlnet m2m" in s["txt2img"] and "controlnet" in s["img2img"]


def embeddings(api, env):
    loaded = _json(api.get_embeddings())["loaded"]
    assert loaded and all(isinstance(e["shape"], int) and e["shape"] > 0 for e in loaded.values()), loaded


def memory(api, env):
    m = _json(api.get_memory())
    assert {"ram", "cuda"} <= set(m) and m["ram"]["total"] > 0


def custom_get(api, env):
    assert isinstance(_json(api.custom_get("sdapi/v1/sd-models")), list)


def custom_post(api, env):
    r = api.custom_post("sdapi/v1/txt2img", payload=_gen(api, env, prompt="x"))
    assert r.image.size == (64, 64)


def controlnet_version(api, env):
    assert api.controlnet_version() >= 2


def controlnet_model_list(api, env):
    assert env.cn_sdxl in {m.split(" [")[0] for m in api.controlnet_model_list()}


def controlnet_module_list(api, env):
    assert "canny" in api.controlnet_module_list()


def controlnet_detect(api, env):
    try:
        r = api.controlnet_detect([env.photo], module="canny", threshold_a=100, threshold_b=200)
    except RuntimeError as exc:
        raise _unwrap(exc) from None
    assert r.images and r.images[0].size[0] > 0


def util_names(api, env):
    assert api.util_get_model_names() and "Euler a" in api.util_get_sampler_names() and api.util_get_scheduler_names()


def util_set_model(api, env):
    title = next(t for t in api.util_get_model_names() if t.startswith(env.sd15 + "."))
    api.util_set_model(title, find_closest=False)
    assert api.util_get_current_model() == title


def util_wait_for_ready(api, env):
    api.util_wait_for_ready(check_interval=0.1)


# --- extension interfaces (their routes exist only with those A1111 extensions) -------------------------


def _ext_post(call: Callable[[], Any]) -> None:
    try:
        call()
    except RuntimeError as exc:
        raise _unwrap(exc) from None
    except KeyError:  # interfaces that read the JSON body directly: the 404 body has none of their keys
        raise StatusError(404) from None
    raise AssertionError("an extension route answered")


def _ext_get(call: Callable[[], Any]) -> None:
    try:
        _json(call())
    except KeyError:
        raise StatusError(404) from None
    raise AssertionError("an extension route answered")


def controlnet_interface_model_list(api, env):
    import webuiapi as w

    assert env.cn_sdxl in {m.split(" [")[0] for m in w.ControlNetInterface(api, False).model_list()}


def extensions() -> list[Call]:
    import webuiapi as w

    def sam(api):
        return w.SegmentAnythingInterface(api)

    return [
        Call("ext.promptgen.list_models", lambda api, env: _ext_get(api.list_prompt_gen_models), EXTENSION_MISSING),
        Call("ext.promptgen.generate", lambda api, env: _ext_get(lambda: api.prompt_gen(text="a")), EXTENSION_MISSING),
        Call("ext.model_keyword", lambda api, env: _ext_get(w.ModelKeywordInterface(api).get_keywords), EXTENSION_MISSING),
        Call("ext.instruct_pix2pix", lambda api, env: _ext_post(lambda: w.InstructPix2PixInterface(api).img2img([env.photo])), EXTENSION_MISSING),
        Call("ext.rembg", lambda api, env: _ext_post(lambda: w.RemBGInterface(api).rembg(env.photo)), EXTENSION_MISSING),
        Call("ext.controlnet_txt2img_deprecated", lambda api, env: _ext_post(lambda: w.ControlNetInterface(api, False).txt2img()), EXTENSION_MISSING),
        Call("ext.controlnet_img2img_deprecated", lambda api, env: _ext_post(lambda: w.ControlNetInterface(api, False).img2img([env.photo])), EXTENSION_MISSING),
        Call("ext.controlnet_interface_model_list", controlnet_interface_model_list),
        Call("ext.sam.heartbeat", lambda api, env: _ext_get(sam(api).heartbeat), EXTENSION_MISSING),
        Call("ext.sam.models", lambda api, env: _ext_get(sam(api).get_sam_models), EXTENSION_MISSING),
        Call("ext.sam.predict", lambda api, env: _ext_post(lambda: sam(api).sam_predict(env.photo)), EXTENSION_MISSING),
        Call("ext.sam.dino_predict", lambda api, env: _ext_post(lambda: sam(api).dino_predict(env.photo, "face")), EXTENSION_MISSING),
        Call("ext.sam.dilate_mask", lambda api, env: _ext_post(lambda: sam(api).dilate_mask(env.photo, env.photo)), EXTENSION_MISSING),
        Call("ext.tagger.interrogate", lambda api, env: _ext_post(lambda: w.TaggerInterface(api).tagger_interrogate(env.photo)), EXTENSION_MISSING),
        Call("ext.tagger.interrogators", lambda api, env: _ext_get(w.TaggerInterface(api).tagger_interrogators), EXTENSION_MISSING),
    ]  # fmt: skip


LISTS: list[Call] = [
    Call("get_options", options), Call("set_options", set_options), Call("get_cmd_flags", cmd_flags),
    Call("get_progress", progress), Call("get_samplers", samplers), Call("get_schedulers", schedulers),
    Call("get_sd_vae", sd_vae), Call("get_upscalers", upscalers), Call("get_latent_upscale_modes", latent_upscale_modes),
    Call("get_loras", loras), Call("get_sd_models", sd_models), Call("get_hypernetworks", hypernetworks),
    Call("get_face_restorers", face_restorers), Call("get_realesrgan_models", realesrgan_models),
    Call("get_prompt_styles", prompt_styles), Call("get_artist_categories", artist_categories, 404),
    Call("get_artists", artists, 404), Call("refresh_checkpoints", refresh_checkpoints),
    Call("get_scripts", scripts), Call("get_embeddings", embeddings), Call("get_memory", memory),
    Call("custom_get", custom_get), Call("controlnet_version", controlnet_version),
    Call("controlnet_model_list", controlnet_model_list), Call("controlnet_module_list", controlnet_module_list),
    Call("util_get_*_names", util_names), Call("util_set_model+util_get_current_model", util_set_model),
    Call("util_wait_for_ready", util_wait_for_ready),
]  # fmt: skip

GENERATION: list[Call] = [
    Call("txt2img", txt2img), Call("txt2img batch", txt2img_batch), Call("txt2img hires (latent)", txt2img_hires_latent),
    Call("txt2img hires (Lanczos, resize, steps)", txt2img_hires_pixel_resize),
    Call("txt2img hires (network, sampler)", txt2img_hires_network), Call("txt2img tiling", txt2img_tiling),
    Call("txt2img styles", txt2img_styles), Call("txt2img sd_vae", txt2img_sd_vae),
    Call("txt2img controlnet + stale unit", txt2img_controlnet), Call("img2img", img2img),
    Call("img2img inpaint", img2img_inpaint), Call("img2img controlnet + stale unit", img2img_controlnet_then_plain),
    Call("custom_post", custom_post), Call("extra_single_image", extra_single_image),
    Call("extra_batch_images", extra_batch_images), Call("png_info", png_info), Call("interrogate", interrogate, 409),
    Call("interrupt", interrupt), Call("skip", skip),
]  # fmt: skip

# /controlnet/detect comes with the webtoon studio's branch (DWPose + canny): until it is merged a 404 here
DETECT = Call("controlnet_detect", controlnet_detect)


def all_calls() -> list[Call]:
    return [*LISTS, *GENERATION, DETECT, *extensions()]


def classify(call: Call, api: Any, env: Env) -> tuple[str, str]:
    """(outcome, detail) of one call."""
    try:
        call.run(api, env)
    except StatusError as exc:
        if call.expect is not None and exc.status == call.expect:
            return "documented", str(exc)
        if exc.status in (404, 405):
            return "missing", str(exc)
        return "wrong", str(exc)
    except RuntimeError as exc:
        try:
            status = _unwrap(exc)
        except RuntimeError:
            return "wrong", f"{type(exc).__name__}: {exc}"[:300]
        if call.expect is not None and status.status == call.expect:
            return "documented", str(status)
        return ("missing" if status.status in (404, 405) else "wrong"), str(status)
    except Exception as exc:  # AssertionError, KeyError, IndexError (result.image of no image), ...
        return "wrong", f"{type(exc).__name__}: {exc}"[:300]
    if call.expect is not None:
        return "right", "answered where a refusal was documented"
    return "right", ""


def survey(api: Any, env: Env, calls: list[Call] | None = None) -> dict[str, tuple[str, str]]:
    return {call.name: classify(call, api, env) for call in (calls if calls is not None else all_calls())}


STYLES_CSV = 'name,prompt,negative_prompt\ncute,"{prompt}, cute, big eyes",ugly\nsparkles,sparkles,\n'
VAE_FILE = "tiny-sdxl-vae.safetensors"


def prepare_models(tiny_dir: Path, models: Path) -> Path:
    """The server's models folder: the tiny set (hard links), the seed's own file names, ESRGAN-family
    upscalers in three public layouts, a VAE file (the tiny SDXL's, original layout) and a styles.csv."""
    import os
    import shutil

    from safetensors.torch import load_file, save_file

    from toonbooth.models.tiny import write_seed_names
    from toonbooth.nets.esrgan import tiny_rrdb, tiny_srvgg, write_upscaler

    shutil.copytree(tiny_dir, models, copy_function=os.link)
    write_seed_names(models)
    write_upscaler(tiny_rrdb(scale=4, seed=1), models / "RealESRGAN" / "RealESRGAN_x4plus.pth", "basicsr")
    write_upscaler(tiny_srvgg(scale=4, seed=2), models / "RealESRGAN" / "realesr-general-x4v3.safetensors", "srvgg")
    write_upscaler(tiny_rrdb(scale=4, seed=3), models / "ESRGAN" / "4x-TinySharp.pth", "esrgan-old")
    (models / "VAE").mkdir(exist_ok=True)
    state = load_file(str(models / "Stable-diffusion" / "tiny-sdxl.safetensors"))
    prefix = "first_stage_model."
    vae = {k[len(prefix) :]: v.contiguous() for k, v in state.items() if k.startswith(prefix)}
    save_file(vae, str(models / "VAE" / VAE_FILE))
    (models / "styles.csv").write_text(STYLES_CSV, encoding="utf-8")
    return models


def counts(results: dict[str, tuple[str, str]]) -> dict[str, int]:
    out = {"right": 0, "documented": 0, "wrong": 0, "missing": 0}
    for outcome, _ in results.values():
        out[outcome] += 1
    return out
