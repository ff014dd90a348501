"""Textual-inversion embeddings in prompts (toonbooth.models.embeddings + models.prompts): A1111 files and
toonbooth's trained (multi-stage) styles, resolved per owner, substituted while encoding, swapped per stage."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from toonbooth.core.errors import UnsafeModelFormatError
from toonbooth.core.images import image_to_data_url, parse_a1111_parameters
from toonbooth.core.settings import Settings
from toonbooth.core.specs import GenerateSpec, parse_job_spec
from toonbooth.engines import generate
from toonbooth.models import sd
from toonbooth.models.embeddings import load_embedding, read_embedding, stage_of, stages_companion
from toonbooth.models.manager import ModelManager
from toonbooth.models.prompts import (
    CHUNK_LENGTH,
    encode_prompt_sd15,
    encode_prompt_sdxl,
    find_embedding_names,
    tokenize_prompt_chunks,
)
from toonbooth.models.tiny import build_tiny_sd15, build_tiny_sdxl, make_pipeline
from toonbooth.runtime.context import JobContext
from toonbooth.runtime.execute import execute
from toonbooth.runtime.storage_local import LocalStorage

SD15_EMB = "tiny-sd15-emb"
SDXL_EMB = "tiny-sdxl-emb"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sd15():
    return make_pipeline(build_tiny_sd15(), "sd15")


@pytest.fixture(scope="module")
def sdxl():
    return make_pipeline(build_tiny_sdxl(), "sdxl")


@pytest.fixture(scope="module")
def env(tiny_models_dir, tmp_path_factory):
    """User models in their own folder, the shared tiny set (with its two embeddings) as an extra folder."""
    home = tmp_path_factory.mktemp("emb-home")
    settings = Settings(
        home=home, models_dir=home / "models", extra_model_dirs=[tiny_models_dir],
        config_dir=tiny_models_dir / "configs", data_dir=home / "data", device="cpu", model_cache_items=4,
    )  # fmt: skip
    models = ModelManager(settings)
    return {"settings": settings, "models": models, "storage": LocalStorage(settings.resolved_data_dir),
            "shared": tiny_models_dir, "home": home}  # fmt: skip


def run_generate(env, owner: str | None, **kw):
    base = {"checkpoint": "tiny-sd15", "steps": 3, "width": 32, "height": 32, "seed": 3, "cfg_scale": 5.0,
            "sampler_name": "Euler"}  # fmt: skip
    base.update(kw)
    ctx = JobContext(env["settings"], env["models"], env["storage"], owner=owner)
    return generate.GenerateEngine().run(GenerateSpec(**base), ctx)


def px(result) -> np.ndarray:
    return np.asarray(result.images[0].image, dtype=np.int16)


def add_user_embedding(env, owner: str, name: str, tensors: dict, meta: dict | None = None) -> Path:
    src = env["home"] / "incoming" / f"{name}.safetensors"
    src.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(src), metadata=meta or {"format": "pt"})
    entry = env["models"].registry.add(src, kind="embedding", owner=owner, name=name)
    return Path(entry.path)


# --------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------


def test_sd15_vectors_equal_diffusers_load_textual_inversion(sd15, tiny_models_dir):
    path = tiny_models_dir / "embeddings" / f"{SD15_EMB}.safetensors"
    ti, _ = read_embedding(path)
    assert (ti.name, ti.layout, ti.num_vectors, ti.stages, ti.widths) == (SD15_EMB, "emb_params", 2, 1, (32,))
    prompt = f"a photo of {SD15_EMB}, red hair"
    ours = encode_prompt_sd15(
        sd15.tokenizer, sd15.text_encoder, prompt, "", embeddings={SD15_EMB: ti.mean_vectors()}
    )

    ref = make_pipeline(build_tiny_sd15(), "sd15")  # a separate copy: diffusers adds tokens and rows to it
    ref.load_textual_inversion(str(path), token=SD15_EMB)
    with torch.no_grad():
        expected, _ = ref.encode_prompt(prompt, "cpu", 1, False)
    torch.testing.assert_close(ours.prompt_embeds, expected, atol=1e-5, rtol=1e-5)

    # the shared pipeline was not changed, and a prompt without the name encodes exactly as before
    assert SD15_EMB not in sd15.tokenizer.get_vocab()
    plain = encode_prompt_sd15(sd15.tokenizer, sd15.text_encoder, "a photo, red hair", "bad")
    same = encode_prompt_sd15(
        sd15.tokenizer,
        sd15.text_encoder,
        "a photo, red hair",
        "bad",
        embeddings={SD15_EMB: ti.mean_vectors()},
    )
    assert torch.equal(plain.prompt_embeds, same.prompt_embeds)
    assert torch.equal(plain.negative_prompt_embeds, same.negative_prompt_embeds)
    as_text = encode_prompt_sd15(sd15.tokenizer, sd15.text_encoder, prompt, "")
    assert (as_text.prompt_embeds - ours.prompt_embeds).abs().max() > 1e-2
    # also in the negative prompt, with its emphasis weight
    neg = encode_prompt_sd15(sd15.tokenizer, sd15.text_encoder, "", f"({SD15_EMB}:1.3)",
                             embeddings={SD15_EMB: ti.mean_vectors()})  # fmt: skip
    neg_text = encode_prompt_sd15(sd15.tokenizer, sd15.text_encoder, "", f"({SD15_EMB}:1.3)")
    assert (neg.negative_prompt_embeds - neg_text.negative_prompt_embeds).abs().max() > 1e-2


def test_sdxl_clip_l_to_encoder_1_clip_g_to_encoder_2(sdxl, tiny_models_dir):
    path = tiny_models_dir / "embeddings" / f"{SDXL_EMB}.safetensors"
    ti, _ = read_embedding(path)
    assert ti.layout == "sdxl" and ti.widths == (32, 64)
    toks, encs = [sdxl.tokenizer, sdxl.tokenizer_2], [sdxl.text_encoder, sdxl.text_encoder_2]
    prompt = f"{SDXL_EMB} on a hill"
    ours = encode_prompt_sdxl(toks, encs, prompt, "", embeddings={SDXL_EMB: ti.mean_vectors()})

    ref = make_pipeline(build_tiny_sdxl(), "sdxl")
    raw = load_file(str(path))
    ref.load_textual_inversion(
        raw["clip_l"], token=SDXL_EMB, text_encoder=ref.text_encoder, tokenizer=ref.tokenizer
    )
    ref.load_textual_inversion(raw["clip_g"], token=SDXL_EMB, text_encoder=ref.text_encoder_2,
                               tokenizer=ref.tokenizer_2)  # fmt: skip
    with torch.no_grad():
        pe, _, pooled, _ = ref.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)
    torch.testing.assert_close(ours.prompt_embeds, pe, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.pooled_prompt_embeds, pooled, atol=1e-5, rtol=1e-5)

    # changing clip_g changes only encoder 2's features (the last 64)
    l_vec, g_vec = ti.mean_vectors()
    other_g = encode_prompt_sdxl(toks, encs, prompt, "", embeddings={SDXL_EMB: [l_vec, g_vec + 1.0]})
    assert torch.equal(other_g.prompt_embeds[..., :32], ours.prompt_embeds[..., :32])
    assert (other_g.prompt_embeds[..., 32:] - ours.prompt_embeds[..., 32:]).abs().max() > 1e-3
    other_l = encode_prompt_sdxl(toks, encs, prompt, "", embeddings={SDXL_EMB: [l_vec + 1.0, g_vec]})
    assert torch.equal(other_l.prompt_embeds[..., 32:], ours.prompt_embeds[..., 32:])
    assert (other_l.prompt_embeds[..., :32] - ours.prompt_embeds[..., :32]).abs().max() > 1e-3


def test_multi_vector_embedding_counts_against_the_chunk(sd15):
    tok = sd15.tokenizer
    words = " ".join(["x"] * 74)  # 74 tokens with the tiny byte-level vocabulary
    chunks = tokenize_prompt_chunks(tok, f"{words} two", embeddings={"two": 2})
    assert len(chunks) == 2  # 74 + 2 > 75: the two vectors start the next chunk, whole
    assert chunks[0].fixes == [] and chunks[1].fixes == [(1, "two", 0), (2, "two", 1)]
    one = tokenize_prompt_chunks(tok, f"{words} one", embeddings={"one": 1})
    assert len(one) == 1 and one[0].fixes == [(75, "one", 0)]
    assert all(len(c.tokens) == CHUNK_LENGTH + 2 for c in chunks)

    vec = torch.randn(2, 32, generator=torch.Generator().manual_seed(4))
    enc = encode_prompt_sd15(tok, sd15.text_encoder, f"{words} two", "", embeddings={"two": [vec]})
    brk = encode_prompt_sd15(tok, sd15.text_encoder, f"{words} BREAK two", "", embeddings={"two": [vec]})
    assert enc.prompt_embeds.shape == (1, 154, 32)
    torch.testing.assert_close(enc.prompt_embeds, brk.prompt_embeds)

    # whole words, case-insensitive, the longest name first; names inside other words stay text
    names = ["style", "style-two", "neg"]
    assert find_embedding_names("a (Style-Two:1.2) picture, stylex, NEG", names) == ["style-two", "neg"]
    assert find_embedding_names("mystyle and style_b", names) == []


def test_stage_of_matches_training_and_file_formats(tmp_path):
    from toonbooth.training.textual_inversion import stage_of as training_stage_of

    t = torch.arange(1000)
    for stages in (1, 2, 3, 4):
        assert torch.equal(stage_of(t, stages), training_stage_of(t, stages))

    vec = torch.randn(3, 32)
    save_file({"string_to_param.*": vec}, str(tmp_path / "a.safetensors"))
    save_file({"learned": vec[0]}, str(tmp_path / "b.safetensors"))
    a, _ = read_embedding(tmp_path / "a.safetensors")
    b, _ = read_embedding(tmp_path / "b.safetensors")
    assert a.layout == "string_to_param" and torch.equal(a.vectors[0][0], vec)
    assert b.layout == "single" and b.num_vectors == 1
    (tmp_path / "c.pt").write_bytes(b"not read")
    with pytest.raises(UnsafeModelFormatError):
        read_embedding(tmp_path / "c.pt")

    # a trained multi-stage style: the A1111 file (mean) + its stages in the style folder
    stages = torch.randn(2, 2, 32)
    meta = {"toonbooth.stages": "2", "toonbooth.trigger": "zz", "toonbooth.num_train_timesteps": "1000"}
    flat = tmp_path / "u" / "embeddings" / "ms.safetensors"
    flat.parent.mkdir(parents=True)
    save_file({"emb_params": stages.mean(0)}, str(flat), metadata=meta)
    ti, notes = load_embedding(flat)
    assert ti.stages == 1 and "mean" in notes[0]  # stages file missing: the mean, with a warning
    stages_companion(flat).parent.mkdir(parents=True)
    save_file({"emb_params": stages}, str(stages_companion(flat)), metadata=meta)
    ti, notes = load_embedding(flat)
    assert notes == [] and ti.stages == 2 and ti.trigger == "zz"
    assert torch.equal(ti.stage_vectors(1)[0], stages[1]) and ti.stage_at(999) == 1 and ti.stage_at(10) == 0
    save_file({"emb_params": stages + 1}, str(stages_companion(flat)), metadata=meta)
    ti, notes = load_embedding(flat)
    assert ti.stages == 1 and "another training run" in notes[0]


# --------------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------------


def test_generate_uses_shared_embedding_and_reports_ti_hash(env):
    prompt = f"a cat, {SD15_EMB}"
    r = run_generate(env, None, prompt=prompt)
    path = env["shared"] / "embeddings" / f"{SD15_EMB}.safetensors"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert r.embeddings == [
        {"name": SD15_EMB, "hash": digest, "vectors": 2, "stages": 1, "own": False}
    ]
    fields = parse_a1111_parameters(r.images[0].parameters)[2]
    assert fields["TI hashes"] == f"{SD15_EMB}: {digest}"
    plain = run_generate(env, None, prompt="a cat")
    assert (
        plain.embeddings == []
        and "TI hashes" not in parse_a1111_parameters(plain.images[0].parameters)[2]
    )

    # an SDXL embedding on an SD1.5 checkpoint is not applied (A1111 skips it): its name is plain words
    mixed = run_generate(env, None, prompt=f"a cat {SDXL_EMB}")
    assert mixed.embeddings == [] and any("is for sdxl" in w for w in mixed.warnings)
    xl = run_generate(env, None, checkpoint="tiny-sdxl", prompt=f"a cat {SDXL_EMB}", steps=2)
    assert [e["name"] for e in xl.embeddings] == [SDXL_EMB]


def test_own_embedding_applies_to_its_owner_only(env):
    gen = torch.Generator().manual_seed(9)
    add_user_embedding(env, "alice", "secretstyle", {"emb_params": torch.randn(3, 32, generator=gen)})
    prompt = "a house by secretstyle"
    alice = run_generate(env, "alice", prompt=prompt)
    bob = run_generate(env, "bob", prompt=prompt)
    nobody = run_generate(env, None, prompt=prompt)
    assert [(e["name"], e["own"], e["vectors"]) for e in alice.embeddings] == [
        ("secretstyle", True, 3)
    ]
    assert bob.embeddings == [] and not any("secretstyle" in w for w in bob.warnings)
    assert np.array_equal(px(bob), px(nobody))  # for bob the name is just text
    assert np.abs(px(alice) - px(bob)).mean() > 0.5


def test_multistage_style_swaps_embeddings_per_timestep_stage(env):
    from toonbooth.models.prompts import encode_prompt_sd15 as enc

    gen = torch.Generator().manual_seed(11)
    stages = torch.randn(2, 1, 32, generator=gen) * 2.0
    meta = {"toonbooth.stages": "2", "toonbooth.trigger": "mstyle", "toonbooth.num_train_timesteps": "1000"}
    flat = add_user_embedding(env, "carol", "mstyle", {"emb_params": stages.mean(0)}, meta)
    stages_companion(flat).parent.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": stages}, str(stages_companion(flat)), metadata=meta)

    base, _ = sd.base_pipeline(env["models"], "tiny-sd15", "sd15")
    seen: list[tuple[float, torch.Tensor]] = []

    def spy(_module, args, kwargs):
        seen.append((float(args[1]), kwargs["encoder_hidden_states"].detach().clone()))

    handle = base.unet.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        r = run_generate(env, "carol", prompt="a tree, mstyle", negative_prompt="blurry", steps=4)
    finally:
        handle.remove()
    assert r.embeddings[0]["stages"] == 2 and r.warnings == []
    per_stage = [
        enc(base.tokenizer, base.text_encoder, "a tree, mstyle", "blurry", embeddings={"mstyle": [stages[k]]})
        for k in range(2)
    ]
    used = set()
    for t, ehs in seen:
        k = int(stage_of(t, 2))
        used.add(k)
        e = per_stage[k]
        torch.testing.assert_close(ehs, torch.cat([e.negative_prompt_embeds, e.prompt_embeds]))
    assert used == {0, 1} and len(seen) == 4


def test_trained_textual_inversion_is_usable_by_its_owner(env):
    rng = np.random.default_rng(0)
    images = [
        image_to_data_url(Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)))
        for _ in range(3)
    ]
    raw = {"kind": "train_ti", "style_name": "dana-ink", "trigger": "danaink", "base": "tiny-sd15", "arch": "sd15",
           "resolution": 32, "images": images, "steps": 3, "learning_rate": 5e-2, "num_vectors": 2,
           "sample_steps": 1, "checkpoint_every": 0, "seed": 0}  # fmt: skip
    ctx = JobContext(env["settings"], env["models"], env["storage"], owner="dana")
    trained = execute(parse_job_spec(raw), ctx)
    assert trained.info["style"]["model_kind"] == "embedding"

    by_name = run_generate(env, "dana", prompt="a castle, dana-ink")
    by_trigger = run_generate(env, "dana", prompt="a castle, danaink")
    other = run_generate(env, "erin", prompt="a castle, dana-ink")
    assert [(e["name"], e["own"], e["vectors"]) for e in by_name.embeddings] == [
        ("dana-ink", True, 2)
    ]
    assert [e["name"] for e in by_trigger.embeddings] == ["dana-ink"]
    assert "dana-ink: " in parse_a1111_parameters(by_name.images[0].parameters)[2]["TI hashes"]
    assert other.embeddings == []
    assert np.abs(px(by_name) - px(other)).mean() > 0.5
