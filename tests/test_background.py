"""The webtoon `background` job (seed 001) on the tiny model set: a Korean prompt translated by a tiny MarianMT
inside the job (the PNG parameters carry the original and the translation, A1111 syntax intact), styles combined
(two LoRAs at weights, a user's own LoRA with its trigger word, a user's multi-stage textual inversion; weight 0
gives the base image), presets and panel sizes, img2img at the photo's aspect, the classic filter's invariants
and its job, the plan's refusals (field names, 409 without weights), the service, the CLI and the UI tab."""

from __future__ import annotations

import io

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from toonbooth.core.errors import BackendUnavailableError, InputError
from toonbooth.core.images import parse_a1111_parameters, read_png_parameters
from toonbooth.core.settings import Settings
from toonbooth.core.specs import BACKGROUND_PRESETS, PANEL_SIZES, parse_job_spec
from toonbooth.engines.background import BackgroundEngine, make_plan, photo_size
from toonbooth.models.style_mix import join_prompt
from toonbooth.nets import prompt_translate as pt
from toonbooth.nets import translate as tr
from toonbooth.runtime.context import JobContext
from toonbooth.runtime.execute import execute
from toonbooth.runtime.families import model_manager
from toonbooth.runtime.storage_local import LocalStorage
from toonbooth.vision.webtoon_bg import webtoon_background

OWNER = "dana"
KOREAN = "<lora:tiny-sd15-style2:0.5> 비 오는 날의 골목, (벚꽃:1.2) BREAK masterpiece"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def extra_models(tmp_path_factory):
    """Next to the tiny set: the translator, a second shared SD1.5 LoRA, and dana's own styles (a LoRA that
    carries its trigger word, a three-stage textual inversion)."""
    from safetensors.torch import load_file, save_file

    from toonbooth.models.tiny import build_tiny_sd15, write_tiny_lora

    extra = tmp_path_factory.mktemp("webtoon-models")
    tr.save_tiny_marian(extra / "MarianMT" / "opus-mt-ko-en")
    unet = build_tiny_sd15(0)["unet"]
    write_tiny_lora(unet, extra / "Lora" / "tiny-sd15-style2.safetensors", layout="kohya", seed=31)
    own = write_tiny_lora(unet, extra / "users" / OWNER / "Lora" / "dana-ink.safetensors", layout="kohya", seed=32)
    tensors = load_file(str(own))
    save_file(tensors, str(own), metadata={"toonbooth.trigger": "dnkstyle", "ss_network_module": "networks.lora"})
    emb = extra / "users" / OWNER / "embeddings" / "dana-wash.safetensors"
    emb.parent.mkdir(parents=True)
    gen = torch.Generator().manual_seed(3)
    save_file({"emb_params": torch.randn(3, 2, 32, generator=gen) * 0.5}, str(emb),
              metadata={"toonbooth.stages": "3", "toonbooth.num_train_timesteps": "1000"})  # fmt: skip
    return extra


@pytest.fixture(scope="module")
def env(tiny_models_dir, extra_models, tmp_path_factory, sample_photo_path):
    home = tmp_path_factory.mktemp("bg-home")
    settings = Settings(home=home, models_dir=tiny_models_dir, extra_model_dirs=[extra_models],
                        data_dir=home / "data", device="cpu")  # fmt: skip
    storage = LocalStorage(settings.resolved_data_dir)
    photo = Image.open(sample_photo_path).convert("RGB")
    refs = {"photo": storage.put(_png(photo.resize((96, 64), Image.Resampling.LANCZOS)))}
    return {"settings": settings, "models": model_manager(settings), "storage": storage, **refs}


def spec(**kw):
    diffusion = {"checkpoint": "tiny-sd15", "steps": 3, "seed": 3, **kw.pop("diffusion", {})}
    return parse_job_spec({"kind": "background", "diffusion": diffusion, **kw})


def run(env, s, owner=OWNER, events=None):
    ctx = JobContext(env["settings"], env["models"], env["storage"], owner=owner,
                     on_event=events.append if events is not None else None)  # fmt: skip
    return execute(s, ctx)


def picture(env, out) -> np.ndarray:
    return np.asarray(Image.open(env["storage"].local_path(out.output("background").ref)).convert("RGB"), np.int16)


def parameters(env, out):
    return parse_a1111_parameters(read_png_parameters(env["storage"].local_path(out.output("background").ref)))


# --- the neural job with a Korean prompt ---------------------------------------------------------


def test_korean_prompt_end_to_end_txt2img(env):
    events: list = []
    out = run(env, spec(prompt=KOREAN, width=64, height=96, styles=[{"name": "tiny-sd15-style", "weight": 0.8}]),
              events=events)  # fmt: skip
    assert out.backend == "neural" and out.info["route"] == "txt2img"
    assert (out.outputs[0].width, out.outputs[0].height) == (64, 96) and out.outputs[0].name == "background"
    prompt, negative, fields = parameters(env, out)
    # the translation is exactly the translator's (known by construction), spliced between styles and preset
    bundle = env["models"].load("translate", "opus-mt-ko-en")
    words = pt.protected_words(env["models"], OWNER, ["tiny-sd15-style"])
    want, _ = pt.translate_text(KOREAN, bundle, words)
    preset = BACKGROUND_PRESETS["clean-lineart"]
    assert prompt == join_prompt(want, preset["prompt"]) + " <lora:tiny-sd15-style:0.8>"
    assert not tr.has_hangul(prompt) and negative == preset["negative_prompt"]
    # A1111 syntax survived the translation byte for byte
    assert prompt.startswith("<lora:tiny-sd15-style2:0.5> ") and ":1.2) BREAK masterpiece, webtoon background" in prompt
    assert fields["Original prompt"] == KOREAN and fields["Prompt translation"] == "opus-mt-ko-en"
    assert "tiny-sd15-style2" in fields["Lora hashes"] and "tiny-sd15-style:" in fields["Lora hashes"]
    assert fields["Preset"] == "clean-lineart" and fields["Styles"] == "tiny-sd15-style:0.8"
    assert fields["Size"] == "64x96" and fields["Seed"] == "3" and fields["Background from"] == "prompt"
    # the typed output: translations and styles
    t = {x["field"]: x for x in out.info["translations"]}
    assert t["prompt"]["original"] == KOREAN and t["prompt"]["translated"] == want and t["prompt"]["source"] == "machine"
    assert t["negative_prompt"]["source"] == "unchanged"
    assert out.info["styles"] == [{"name": "tiny-sd15-style", "kind": "lora", "weight": 0.8, "arch": "sd15",
                                   "mine": False, "trigger": None, "prompt_words": ""}]  # fmt: skip
    stages = [e.stage for e in events if getattr(e, "type", "") == "progress"]
    assert stages[0] == "translate" and stages[-1] == "denoise"
    assert [e.percent for e in events if getattr(e, "type", "") == "progress"][-1] == 100.0


def test_edited_translation_and_translate_only_mode(env):
    preview = run(env, spec(mode="translate", prompt="비 오는 날의 골목"))
    assert preview.outputs == [] and preview.info["mode"] == "translate"
    english = preview.info["translations"][0]["translated"]
    assert english and not tr.has_hangul(english)
    out = run(env, spec(prompt="비 오는 날의 골목", translated_prompt="a rainy alley, neon signs", width=32, height=32))
    prompt, _, fields = parameters(env, out)
    assert prompt.startswith("a rainy alley, neon signs, webtoon background")
    assert fields["Original prompt"] == "비 오는 날의 골목" and fields["Prompt translation"] == "edited"
    with pytest.raises(InputError) as err:
        make_plan(spec(prompt="골목", translated_prompt="an 골목"), env["models"], OWNER)
    assert err.value.field == "translated_prompt"


# --- styles ----------------------------------------------------------------------------------------


def test_styles_combine_weight_zero_is_base_and_own_styles_bring_their_words(env):
    base = picture(env, run(env, spec(prompt="a street", width=32, height=32)))
    off = picture(env, run(env, spec(prompt="a street", width=32, height=32,
                                     styles=[{"name": "tiny-sd15-style", "weight": 0}])))  # fmt: skip
    one = picture(env, run(env, spec(prompt="a street", width=32, height=32,
                                     styles=[{"name": "tiny-sd15-style", "weight": 0.8}])))  # fmt: skip
    two_out = run(env, spec(prompt="a street", width=32, height=32, styles=[
        {"name": "tiny-sd15-style", "weight": 0.8}, {"name": "tiny-sd15-style2", "weight": 1.5}]))  # fmt: skip
    two = picture(env, two_out)
    assert np.array_equal(off, base)  # weight 0: the base model, exactly
    assert np.abs(one - base).mean() > 1.0 and np.abs(two - one).mean() > 1.0
    assert [lo["name"] for lo in two_out.info["loras"]] == ["tiny-sd15-style", "tiny-sd15-style2"]
    assert [lo["weight"] for lo in two_out.info["loras"]] == [0.8, 1.5]
    # dana's own LoRA adds its trigger word; her three-stage textual inversion enters as (name:weight)
    mine = run(env, spec(prompt="a street", width=32, height=32, styles=[
        {"name": "dana-ink", "weight": 1.0}, {"name": "dana-wash", "weight": 0.5}]))  # fmt: skip
    prompt, _, fields = parameters(env, mine)
    assert prompt.startswith("dnkstyle, (dana-wash:0.5), a street, webtoon background")
    assert "dana-wash" in fields["TI hashes"] and "dana-ink" in fields["Lora hashes"]
    styles = {s["name"]: s for s in mine.info["styles"]}
    assert styles["dana-ink"]["mine"] and styles["dana-ink"]["trigger"] == "dnkstyle"
    assert styles["dana-wash"]["kind"] == "embedding"
    assert mine.info["embeddings"][0]["name"] == "dana-wash"
    # another user does not see dana's styles
    with pytest.raises(InputError) as err:
        make_plan(spec(prompt="x", styles=[{"name": "dana-ink"}]), env["models"], "erin")
    assert err.value.field == "styles.0.name" and "shared: " in str(err.value)


# --- presets, sizes, photos --------------------------------------------------------------------------


def test_presets_sizes_and_photo_aspect(env):
    s = spec(prompt="x")
    assert s.panel_size("sd15") == (800, 1280) and s.panel_size("sdxl") == (832, 1344)
    assert spec(prompt="x", size="wide").panel_size("sd15") == (1280, 720)
    assert spec(prompt="x", size="wide").panel_size("sdxl") == (1344, 768)
    assert spec(prompt="x", width=256, height=64).panel_size("sdxl") == (256, 64)
    for arch, sizes in PANEL_SIZES.items():
        for w, h in sizes.values():
            assert w % 8 == 0 and h % 8 == 0, arch
    assert sizes["tall"][1] > sizes["tall"][0] and sizes["wide"][0] > sizes["wide"][1]
    for name, preset in BACKGROUND_PRESETS.items():
        assert "people" in preset["negative_prompt"], name  # no people in any preset
    assert spec(prompt="x", preset="flat-color").negative() == BACKGROUND_PRESETS["flat-color"]["negative_prompt"]
    assert spec(prompt="x", negative_prompt="").negative() == ""
    assert photo_size(4032, 3024, 1280) == (1280, 960) and photo_size(96, 64, 48) == (48, 32)
    assert photo_size(100, 60, 1280) == (96, 56)

    out = run(env, spec(image=env["photo"], prompt="밤하늘의 별", preset="watercolor-ish", max_side=48,
                        diffusion={"steps": 4, "strength": 0.5}))  # fmt: skip
    assert out.info["route"] == "img2img" and (out.info["width"], out.info["height"]) == (48, 32)
    assert out.info["steps_run"] == 2  # int(4 * 0.5), as A1111
    prompt, _, fields = parameters(env, out)
    assert prompt.endswith(BACKGROUND_PRESETS["watercolor-ish"]["prompt"])
    assert fields["Denoising strength"] == "0.5" and fields["Background from"] == "photo"
    # the same job twice gives the same picture
    again = run(env, spec(image=env["photo"], prompt="밤하늘의 별", preset="watercolor-ish", max_side=48,
                          diffusion={"steps": 4, "strength": 0.5}))  # fmt: skip
    assert np.array_equal(picture(env, out), picture(env, again))


# --- the classic filter -------------------------------------------------------------------------------


def _scene(w: int = 160, h: int = 120) -> Image.Image:
    """A synthetic place: sky gradient, a house (dark rectangle with a lit window), noisy ground."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float32)
    img[...] = np.stack([90 + 60 * yy / h, 150 + 40 * yy / h, 230 - 20 * xx / w], -1)
    img[h * 2 // 3 :] = [70, 140, 60]
    img[40:90, 50:110] = [120, 60, 50]
    img[55:70, 70:90] = [250, 230, 120]
    img += rng.normal(0, 6, img.shape)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def test_classic_filter_invariants():
    scene = _scene()
    out = webtoon_background(scene, colors=6, line_width=2, line_detail=0.5, smooth=2, line_tone=0.0)
    assert out.size == scene.size and out.mode == "RGB"
    arr = np.asarray(out)
    colours = np.unique(arr.reshape(-1, 3), axis=0)
    assert len(colours) <= 6 + 1  # the palette + one ink
    # ink lines trace the house: the darkest colour lies along its outline, not in the flat sky
    ink = colours[np.argmin(colours.sum(axis=1))]
    is_ink = (arr == ink).all(axis=-1)
    sides = [is_ink[37:43, 55:105].any(axis=0), is_ink[87:93, 55:105].any(axis=0),
             is_ink[45:85, 47:53].any(axis=1), is_ink[45:85, 107:113].any(axis=1)]  # fmt: skip
    assert all(side.mean() > 0.9 for side in sides)  # a closed outline around the house
    assert is_ink[5:30, 5:150].mean() < 0.02  # the sky stays clean
    # deterministic; no lines without line width; the palette bound holds without lines
    assert np.array_equal(arr, np.asarray(webtoon_background(scene, colors=6, line_width=2, line_detail=0.5,
                                                              smooth=2, line_tone=0.0)))  # fmt: skip
    flat = np.asarray(webtoon_background(scene, colors=4, line_width=0))
    assert len(np.unique(flat.reshape(-1, 3), axis=0)) <= 4
    # the long side is capped, the aspect kept
    assert webtoon_background(scene, max_side=80).size == (80, 60)
    for kw, field in (({"colors": 1}, "classic.colors"), ({"line_width": 9}, "classic.line_width"),
                      ({"line_detail": 2.0}, "classic.line_detail"), ({"smooth": -1}, "classic.smooth")):  # fmt: skip
        with pytest.raises(InputError) as err:
            webtoon_background(scene, **kw)
        assert err.value.field == field
    with pytest.raises(InputError, match="at least 8x8"):
        webtoon_background(Image.new("RGB", (4, 4)))


def test_classic_job_and_the_plans_choices(env):
    out = run(env, spec(image=env["photo"], backend="classic", prompt="골목", styles=[{"name": "x"}],
                        classic={"colors": 5}))  # fmt: skip
    assert out.backend == "classic" and out.info["route"] == "classic"
    assert (out.outputs[0].width, out.outputs[0].height) == (96, 64)  # the photo's own size
    prompt, _, fields = parameters(env, out)
    assert prompt == "webtoon background (classic filter)" and fields["Colors"] == "5"
    assert any("prompt is not used" in w for w in out.warnings) and any("styles are not used" in w for w in out.warnings)
    assert out.info["classic_settings"]["colors"] == 5 and out.info["classic_settings"]["line_width"] == 2
    # auto without weights: classic for a photo (with the reason), 409 for a prompt
    plan = make_plan(spec(image=env["photo"], diffusion={"checkpoint": "not-installed"}), env["models"], OWNER)
    assert plan.backend == "classic" and "toonbooth models pull webtoon" in plan.reason
    with pytest.raises(BackendUnavailableError, match="models pull webtoon"):
        make_plan(spec(prompt="a street", diffusion={"checkpoint": "not-installed"}), env["models"], OWNER)
    with pytest.raises(BackendUnavailableError):
        make_plan(spec(image=env["photo"], backend="neural", diffusion={"checkpoint": "not-installed"}),
                  env["models"], OWNER)  # fmt: skip
    with pytest.raises(InputError) as err:
        make_plan(spec(prompt="x", backend="classic"), env["models"], OWNER)
    assert err.value.field == "image"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x", "styles": [{"name": "nope"}]}, "styles.0.name"),
        ({"prompt": "x", "styles": [{"name": "tiny-sdxl-style-peft"}]}, "styles.0.name"),
        ({"prompt": "x", "styles": [{"name": "tiny-sd15-style"}, {"name": "tiny-sd15-style"}]}, "styles.1.name"),
        ({"prompt": "<lora:nope:1> x"}, "prompt"),
        ({"prompt": "<lora:tiny-sd15-style:1> x", "styles": [{"name": "tiny-sd15-style"}]}, "prompt"),
        ({"prompt": "x", "diffusion": {"sampler": "Nope"}}, "diffusion.sampler"),
        ({"prompt": "x", "diffusion": {"checkpoint": "tiny-sd15-inpainting"}}, "diffusion.checkpoint"),
        ({"prompt": "x", "image": "PHOTO", "diffusion": {"strength": 0.1, "steps": 3}}, "diffusion.strength"),
        ({"prompt": "x", "diffusion": {"controlnet_units": [{"model": "tiny-sd15-canny", "image": "PHOTO"}]}},
         "diffusion.controlnet_units"),
    ],
)  # fmt: skip
def test_bad_inputs_name_their_field(env, raw, field):
    raw = {k: (env["photo"] if v == "PHOTO" else v) for k, v in raw.items()}
    for unit in raw.get("diffusion", {}).get("controlnet_units", []):
        unit["image"] = env["photo"]
    with pytest.raises(InputError) as err:
        BackgroundEngine().check_inputs(spec(**raw), env["models"], OWNER)
    assert err.value.field == field, err.value


@pytest.mark.parametrize(
    ("raw", "field"),
    [({"width": 64}, "height"), ({"width": 60, "height": 64}, "width"), ({"preset": "anime"}, "preset"),
     ({"styles": [{"name": "a", "weight": 3}]}, "styles.0.weight"), ({"size": "huge"}, "size"),
     ({"classic": {"colors": 99}}, "classic.colors")],
)  # fmt: skip
def test_spec_refuses_bad_fields(raw, field):
    with pytest.raises(InputError) as err:
        parse_job_spec({"kind": "background", "prompt": "x", **raw})
    assert err.value.field == field


# --- service, CLI, UI ---------------------------------------------------------------------------------


def test_service_cli_and_ui(env, tmp_path, sample_photo_path):
    from toonbooth.cli.main import app
    from toonbooth.runtime.service import Service
    from toonbooth.ui.webtoon_tab import BackgroundActions, build_webtoon_tab

    settings = env["settings"]
    with Service(settings, models=env["models"]) as service:  # the module's loaded models (cached pipelines)
        # the service: a Korean prompt queued, run and stored like any job
        record = service.submit({"kind": "background", "prompt": "노을 지는 해변", "width": 32, "height": 32,
                                 "diffusion": {"checkpoint": "tiny-sd15", "steps": 2, "seed": 1}}, OWNER)  # fmt: skip
        record = service.wait(record.id, OWNER, timeout=300)
        assert record.state == "completed", record.error
        assert record.output.info["translations"][0]["original"] == "노을 지는 해변"
        # the UI: tab builds; styles list dana's own first; translate; generate with the edited English
        with gr.Blocks():
            assert isinstance(build_webtoon_tab(service, settings, owner_of=lambda _r: OWNER), gr.Tab)
        ui = BackgroundActions(service, settings, owner_of=lambda _r: OWNER, wait_s=300)
        picker = ui.checkpoints()
        assert "tiny-sd15" in picker["choices"] and "tiny-sd15-inpainting" not in picker["choices"]
        labels = [label for label, _ in ui.style_choices()]
        assert labels[0] == "(none)" and labels[1].startswith("dana-ink") and labels[1].endswith("yours")
        english, source, note = ui.translate("노을 지는 해변", "")
        assert english and not tr.has_hangul(english) and "opus-mt-ko-en" in note
        assert source == {"prompt": "노을 지는 해변", "english": english}
        small = _scene(64, 48)  # a photo keeps its size (a prompt alone would draw a 768 px square panel)
        outs = list(ui.generate(small, "노을 지는 해변", "a beach at sunset", source, "", "dana-ink", 1.0, None,
                                0.8, "(none)", 0.8, "flat-color", "square", 0.6, 2, 5, "auto", "tiny-sd15"))  # fmt: skip
        job_id, status, image, english_now, source_now, gallery = outs[-1]
        assert image is not None and image.size == (64, 48) and status.startswith("Done (neural"), status
        assert english_now == "a beach at sunset" and "edited translation" in status
        assert len(gallery) == 2 and source_now == {"prompt": "노을 지는 해변", "english": ""}
        # the machine's translation left as it was: the job translates (memoised), nothing counts as edited
        *_, (job2, status2, _, english2, state2, _) = ui.generate(
            small, "노을 지는 해변", english, source, "", None, 0, None, 0, None, 0, "none", "tall", 0.6, 2, 5,
            "auto", "tiny-sd15")  # fmt: skip
        assert "Translated by" in status2 and english2 == english and state2 == source
        assert service.get(job2, OWNER).output.info["translations"][0]["source"] == "machine"
        stored = service.get(job_id, OWNER).output.info
        assert stored["prompt"].startswith("dnkstyle, a beach at sunset, webtoon background, flat colors")
        assert stored["styles"][0]["name"] == "dana-ink"
        assert list(ui.generate(None, "", "", "", "", None, 0, None, 0, None, 0, "none", "tall", 0.6, 2, -1,
                                "classic"))[-1][1].startswith("**Error:**")  # fmt: skip

    # the CLI: classic from a photo (no weights needed), and --translate-only
    runner = CliRunner()
    envvars = {"TOONBOOTH_HOME": str(tmp_path / "cli"), "TOONBOOTH_MODELS_DIR": str(settings.models_dir),
               "TOONBOOTH_EXTRA_MODEL_DIRS": f'["{settings.extra_model_dirs[0]}"]'}  # fmt: skip
    photo = tmp_path / "street.png"
    _scene().save(photo)
    res = runner.invoke(app, ["background", str(photo), "--backend", "classic", "--preset", "flat-color",
                              "--out-dir", str(tmp_path / "out"), "--quiet"], env=envvars)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "backend: classic" in res.output and (tmp_path / "out" / "street-background.png").is_file()
    res = runner.invoke(app, ["background", "--prompt", "비 오는 날의 골목", "--translate-only", "--quiet"],
                        env=envvars)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "prompt (as written):  비 오는 날의 골목" in res.output and "prompt (machine): " in res.output
    res = runner.invoke(app, ["background", "--prompt", "x", "--style", "nope:0.5", "--size", "64x64",
                              "--checkpoint", "tiny-sd15", "--quiet"], env=envvars)  # fmt: skip
    assert res.exit_code == 2 and "styles.0.name" in res.output
