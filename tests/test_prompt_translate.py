"""Korean prompts everywhere: the MarianMT model family (`<models>/MarianMT/<name>/`), the catalog entry and the
`webtoon` recipe, the job helper (`nets.prompt_translate`), and translation in the `generate` job and the
A1111 routes behind `Settings.translate_prompts` — on a tiny MarianMT built in the test run (sentencepiece
models trained here, `scale_embedding=True`) and the tiny SD1.5.

Decided behaviour, checked here: `hangul` (default) translates any prompt with Hangul before CLIP and refuses at
submit (409 naming `prompt` and `toonbooth models pull opus-mt-ko-en`) when no translator is installed; `off`
passes Hangul to the text encoder as written and the job carries a warning saying so."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from toonbooth.core.errors import InputError, ModelError
from toonbooth.core.images import parse_a1111_parameters, read_png_parameters
from toonbooth.core.settings import Settings
from toonbooth.core.specs import GenerateSpec
from toonbooth.models import catalog
from toonbooth.models.refs import ModelRef
from toonbooth.nets import prompt_translate as pt
from toonbooth.nets import translate as tr
from toonbooth.runtime.context import JobContext
from toonbooth.runtime.execute import execute
from toonbooth.runtime.families import model_manager
from toonbooth.runtime.storage_local import LocalStorage

KOREAN = "<lora:tiny-sd15-style:0.5> 비 오는 날의 골목, (벚꽃:1.2) BREAK masterpiece"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def marian_models(tmp_path_factory):
    """An extra models folder holding only the tiny translator, as `models pull opus-mt-ko-en` lays it out."""
    extra = tmp_path_factory.mktemp("marian-models")
    tr.save_tiny_marian(extra / "MarianMT" / "opus-mt-ko-en")
    return extra


def make_settings(tiny_models_dir, home, extra=None, **kw) -> Settings:
    return Settings(home=home, models_dir=tiny_models_dir, extra_model_dirs=[extra] if extra else [],
                    data_dir=home / "data", device="cpu", **kw)  # fmt: skip


@pytest.fixture(scope="module")
def env(tiny_models_dir, marian_models, tmp_path_factory):
    settings = make_settings(tiny_models_dir, tmp_path_factory.mktemp("tr-home"), marian_models)
    return settings, model_manager(settings), LocalStorage(settings.resolved_data_dir)


def run(env, spec):
    settings, models, storage = env
    return execute(spec, JobContext(settings, models, storage))


# --- the family and the catalog ------------------------------------------------------------------


def test_marian_family_finds_the_folder_by_its_names_and_loads_it_once(env, marian_models, tmp_path):
    _, models, _ = env
    entry = models.entry("opus-mt-ko-en", "translate")
    assert entry.kind == "translate" and entry.layout == "marian" and entry.refused is None
    assert entry.catalog_name == "opus-mt-ko-en" and entry.details["weights"] == "model.safetensors"
    for alias in ("Helsinki-NLP/opus-mt-ko-en", "ko-en", "korean"):
        assert models.entry(alias, "translate").path == entry.path
    assert models.missing([ModelRef("translate", "opus-mt-ko-en", "prompt")]) == []
    bundle = models.load("translate", "opus-mt-ko-en")
    assert type(bundle.model).__name__ == "MarianMTModel" and bundle.model.config.scale_embedding is True
    assert models.load("translate", "ko-en") is bundle  # cached: one copy per entry

    # a tensors-only pytorch_model.bin (the hub's default branch) is fine; a non-Marian config is refused
    extra = tmp_path / "more"
    shutil.copytree(entry.path, extra / "MarianMT" / "bin-only")
    (extra / "MarianMT" / "bin-only" / "model.safetensors").unlink()
    torch.save(bundle.model.state_dict(), extra / "MarianMT" / "bin-only" / "pytorch_model.bin")
    (extra / "MarianMT" / "bert").mkdir()
    (extra / "MarianMT" / "bert" / "config.json").write_text('{"model_type": "bert", "vocab_size": 5, "d_model": 4}')
    settings = make_settings(env[0].models_dir, tmp_path / "h", extra)
    other = model_manager(settings)
    assert other.entry("bin-only", "translate").details["weights"] == "pytorch_model.bin"
    loaded = other.load("translate", "bin-only")
    assert torch.equal(loaded.model.final_logits_bias, bundle.model.final_logits_bias)
    refused = [e for e in other.registry.list("translate", include_refused=True) if e.name == "bert"]
    assert refused and "not a MarianMT model" in refused[0].refused
    with pytest.raises(ModelError, match="not a MarianMT"):
        other.entry("bert", "translate")


def test_catalog_entry_and_webtoon_recipe():
    entry = catalog.get_entry("opus-mt-ko-en")
    assert entry.kind == "translate" and entry.repo_id == "Helsinki-NLP/opus-mt-ko-en"
    assert entry.licence.startswith("Apache-2.0") and entry.a1111_folder == "MarianMT"
    names = {f.filename for f in entry.files}
    assert {"config.json", "source.spm", "target.spm", "vocab.json", "pytorch_model.bin"} <= names
    assert entry.install_dir(Path("/m")) == Path("/m/MarianMT/opus-mt-ko-en")
    assert catalog.find_entry("Helsinki-NLP/opus-mt-ko-en") is entry
    assert "opus-mt-ko-en" in catalog.recipes()["webtoon"]


# --- the helper ----------------------------------------------------------------------------------


def test_helper_translates_keeps_syntax_memoises_and_reports(env, monkeypatch):
    _, models, _ = env
    bundle = models.load("translate", "opus-mt-ko-en")
    prompts = [pt.PromptText("prompt", KOREAN), pt.PromptText("negative_prompt", "blurry, 사람")]
    out, warnings = pt.translate_job_prompts(models, prompts, protected={"masterpiece"})
    assert warnings == []
    p, n = out["prompt"], out["negative_prompt"]
    assert p.source == n.source == "machine" and p.model == "opus-mt-ko-en"
    assert not tr.has_hangul(p.translated) and not tr.has_hangul(n.translated)
    # known by construction: exactly what translate_prompt gives with the helper's decoding cap
    cap = pt.token_cap(KOREAN, bundle.tokenizer, ["masterpiece"])
    assert 8 < cap <= tr.DEFAULT_MAX_NEW_TOKENS
    want = tr.translate_prompt(KOREAN, bundle.model, bundle.tokenizer, protected={"masterpiece"}, max_new_tokens=cap)
    assert p.translated == want.translated
    assert p.translated.startswith("<lora:tiny-sd15-style:0.5> ") and p.translated.endswith(":1.2) BREAK masterpiece")
    assert [s.source for s in p.spans] == ["비 오는 날의 골목", "벚꽃"]
    assert n.translated.startswith("blurry, ")
    # memoised per loaded model: the second call does not run the model
    calls = []
    real = tr.translate_prompt
    monkeypatch.setattr(pt, "translate_prompt", lambda *a, **k: calls.append(1) or real(*a, **k))
    again, _ = pt.translate_job_prompts(models, prompts[:1], protected={"masterpiece"})
    assert calls == [] and again["prompt"] == p
    params = pt.translation_params(out)
    assert params == {"Original prompt": KOREAN, "Original negative prompt": "blurry, 사람",
                      "Prompt translation": "opus-mt-ko-en"}  # fmt: skip
    # English prompts never load anything and are reported unchanged; edited ones are used as given
    eng, _ = pt.translate_job_prompts(models, [pt.PromptText("prompt", "a quiet alley")])
    assert eng["prompt"].source == "unchanged" and pt.translation_params(eng) == {}
    ed, _ = pt.translate_job_prompts(models, [pt.PromptText("prompt", KOREAN, "a rainy alley", "translated_prompt")])
    assert ed["prompt"].source == "edited" and ed["prompt"].translated == "a rainy alley"
    assert pt.translation_params(ed)["Prompt translation"] == "edited"
    with pytest.raises(InputError) as err:
        pt.check_prompt_translation(models, [pt.PromptText("prompt", KOREAN, "a 골목", "translated_prompt")])
    assert err.value.field == "translated_prompt"


def test_submit_check_without_translator_names_the_field_and_the_pull(tiny_models_dir, tmp_path):
    settings = make_settings(tiny_models_dir, tmp_path / "h")
    models = model_manager(settings)
    pt.check_prompt_translation(models, [pt.PromptText("prompt", "a quiet alley")])  # English: fine
    with pytest.raises(pt.TranslatorMissingError) as err:
        pt.check_prompt_translation(models, [pt.PromptText("prompt", "ok"), pt.PromptText("negative_prompt", "사람")])
    assert err.value.http_status == 409 and err.value.field == "negative_prompt"
    assert "toonbooth models pull opus-mt-ko-en" in str(err.value) and "opus-mt-ko-en" in str(err.value)
    # a user's own translation needs no translator
    pt.check_prompt_translation(models, [pt.PromptText("prompt", "골목", "an alley", "translated_prompt")])
    # translation off: nothing is required
    off = model_manager(make_settings(tiny_models_dir, tmp_path / "h2", translate_prompts="off"))
    pt.check_prompt_translation(off, [pt.PromptText("prompt", "골목")])


# --- generate and the A1111 routes ---------------------------------------------------------------


def _generate(prompt: str, **kw) -> GenerateSpec:
    return GenerateSpec(checkpoint="tiny-sd15", prompt=prompt, negative_prompt=kw.pop("negative_prompt", "흐림"),
                        steps=2, width=32, height=32, seed=4, sampler_name="Euler a", **kw)  # fmt: skip


def test_generate_translates_korean_and_keeps_the_original(env):
    _, models, storage = env
    out = run(env, _generate(KOREAN))
    params = read_png_parameters(storage.local_path(out.outputs[0].ref))
    prompt, negative, fields = parse_a1111_parameters(params)
    assert not tr.has_hangul(prompt) and not tr.has_hangul(negative)
    assert prompt.startswith("<lora:tiny-sd15-style:0.5> ") and ":1.2) BREAK masterpiece" in prompt
    assert fields["Original prompt"] == KOREAN and fields["Original negative prompt"] == "흐림"
    assert fields["Prompt translation"] == "opus-mt-ko-en" and "tiny-sd15-style" in fields["Lora hashes"]
    assert out.info["prompt"] == prompt and out.info["negative_prompt"] == negative
    assert {t["field"] for t in out.info["translations"]} == {"prompt", "negative_prompt"}
    assert out.info["extra_generation_params"]["Original prompt"] == KOREAN
    from toonbooth.api.routes.a1111 import processed_info

    assert processed_info(out.info)["prompt"] == prompt  # what an A1111 client reads back
    # an English prompt is untouched and carries no translation fields
    plain = run(env, _generate("a quiet alley", negative_prompt="blurry"))
    _, _, fields = parse_a1111_parameters(read_png_parameters(storage.local_path(plain.outputs[0].ref)))
    assert "Original prompt" not in fields and plain.info["translations"] == []


def test_translation_off_passes_hangul_with_a_warning(tiny_models_dir, tmp_path):
    settings = make_settings(tiny_models_dir, tmp_path / "h", translate_prompts="off")
    models, storage = model_manager(settings), LocalStorage(settings.resolved_data_dir)
    out = execute(_generate("비 오는 골목", negative_prompt="blurry"), JobContext(settings, models, storage))
    prompt, _, fields = parse_a1111_parameters(read_png_parameters(storage.local_path(out.outputs[0].ref)))
    assert prompt == "비 오는 골목" and "Original prompt" not in fields
    assert any("translation is off" in w for w in out.warnings)
    assert out.info["translations"][0]["source"] == "off"


def test_rest_and_a1111_refuse_korean_without_translator_409(tiny_models_dir, tmp_path):
    from toonbooth.api.app import create_app, make_service

    settings = make_settings(tiny_models_dir, tmp_path / "h")
    service = make_service(settings, start_runners=False)
    try:
        app = create_app(settings, service, allow_anonymous=True, mount_ui=False)
        with TestClient(app, base_url="http://127.0.0.1:7860") as client:
            spec = {"kind": "generate", "prompt": "비 오는 골목", "checkpoint": "tiny-sd15", "width": 32,
                    "height": 32, "steps": 2}  # fmt: skip
            res = client.post("/v1/jobs", json=spec)
            assert res.status_code == 409, res.text
            assert res.json()["field"] == "prompt" and "models pull opus-mt-ko-en" in res.json()["detail"]
            res = client.post("/sdapi/v1/txt2img", json={"prompt": "골목", "steps": 2, "width": 32, "height": 32})
            assert res.status_code == 409 and res.json()["field"] == "prompt", res.text
            res = client.post("/v1/jobs", json={"kind": "background", "prompt": "골목", "width": 64, "height": 64,
                                                "diffusion": {"checkpoint": "tiny-sd15"}})  # fmt: skip
            assert res.status_code == 409 and res.json()["field"] == "prompt", res.text
            assert service.list("local") == []  # nothing was queued
    finally:
        service.close()


def test_anime_prompt_is_translated_too(env, sample_photo_path):
    """anime-me's character stage (tiny SD1.5 + canny; classic segment / inpaint: no SAM / LaMa here)."""
    from PIL import Image

    from toonbooth.core.images import image_to_png_bytes
    from toonbooth.core.specs import AnimeSpec

    settings, models, storage = env
    photo = Image.open(sample_photo_path).convert("RGB").resize((128, 128))
    ref = storage.put(image_to_png_bytes(photo))
    spec = AnimeSpec(image=ref, points=[{"x": 56, "y": 30}], checkpoint="tiny-sd15", controlnet="tiny-sd15-canny",
                     trigger="sks", prompt="애니메이션 스타일, 밝은 색", negative_prompt="흐림", steps=2, gen_size=64,
                     seed=2)  # fmt: skip
    out = run(env, spec)
    assert out.info["backends"]["character"] == "sd15"
    prompt, negative, fields = parse_a1111_parameters(read_png_parameters(storage.local_path(out.output("character").ref)))
    assert prompt.startswith("sks, ") and not tr.has_hangul(prompt) and not tr.has_hangul(negative)
    assert fields["Original prompt"] == "sks, 애니메이션 스타일, 밝은 색" and fields["Original negative prompt"] == "흐림"
    assert {t["field"] for t in out.info["translations"]} == {"prompt", "negative_prompt"}
    # without a translator the character stage's Korean prompt is refused at submit (409, `prompt`)
    from toonbooth.engines.anime import AnimeEngine

    bare = model_manager(make_settings(settings.models_dir, settings.home / "bare"))
    with pytest.raises(pt.TranslatorMissingError) as err:
        AnimeEngine().check_inputs(spec, bare, None)
    assert err.value.field == "prompt"


def test_avatar_prompt_override_is_translated_too(env, sample_photo_path):
    """The memoji recipe's `prompt` / `negative_prompt` overrides (tiny SDXL, one pass)."""
    from PIL import Image

    from toonbooth.core.images import image_to_png_bytes
    from toonbooth.core.specs import AvatarSpec
    from toonbooth.engines.avatar import AvatarEngine

    settings, models, storage = env
    ref = storage.put(image_to_png_bytes(Image.open(sample_photo_path).convert("RGB").resize((64, 64))))
    spec = AvatarSpec(image=ref, backend="neural", checkpoint="tiny-sdxl", controlnet="tiny-sdxl-canny",
                      loras=[], prompt="emoji, 웃는 얼굴", negative_prompt="흐림", steps=2, max_side=64,
                      second_pass=False, seed=1)  # fmt: skip
    out = run(env, spec)
    prompt, _, fields = parse_a1111_parameters(read_png_parameters(storage.local_path(out.output("avatar").ref)))
    assert prompt.startswith("emoji, ") and not tr.has_hangul(prompt)
    assert fields["Original prompt"] == "emoji, 웃는 얼굴" and fields["Original negative prompt"] == "흐림"
    bare = model_manager(make_settings(settings.models_dir, settings.home / "bare-avatar"))
    with pytest.raises(pt.TranslatorMissingError):
        AvatarEngine().check_inputs(spec, bare, None)
    AvatarEngine().check_inputs(spec.model_copy(update={"backend": "classic"}), bare, None)  # classic: no prompt
