"""Korean → English prompt translation on a tiny MarianMT built in the test run.

Two sentencepiece models (Korean source, English target) are trained here with `hard_vocab_limit=False`; the
merged `vocab.json` follows the opus-mt convention (`</s>` = 0, `<unk>` = 1, pieces, `<pad>` last), and the
tiny `MarianConfig` sets `scale_embedding=True` like the opus-mt configs. The weights are random, but the
output bias forbids source-only pieces (so the "translation" is made of English pieces) and EOS (so every
span yields exactly `max_new_tokens` tokens). Assertions are structural: syntax kept byte for byte, Hangul
spans replaced by what the model generates for them, English untouched, deterministic.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from toonbooth.core.errors import ModelError, ModelNotFoundError, UnsafeModelFormatError
from toonbooth.nets import translate as tr

KOREAN = [
    "고양이가 창가에 앉아 있다", "빨간 지붕의 집", "밤하늘의 별", "도시의 거리 풍경", "비 오는 날의 골목",
    "푸른 바다와 하얀 모래", "산 위의 작은 절", "학교 교실 안", "벚꽃이 핀 공원", "겨울 숲속의 오두막",
    "내스타일의 고양이", "오래된 카페 내부", "강가의 다리", "노을 지는 해변", "조용한 도서관",
]  # fmt: skip
ENGLISH = [
    "a cat sits by the window", "a house with a red roof", "stars in the night sky", "a city street view",
    "an alley on a rainy day", "blue sea and white sand", "a small temple on the mountain",
    "inside a school classroom", "a park with cherry blossoms", "a cabin in the winter forest",
    "an old cafe interior", "a bridge by the river", "a beach at sunset", "a quiet library",
]  # fmt: skip
MAX_NEW = 5


def _train_spm(lines: list[str]) -> bytes:
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines * 4),
        model_writer=buf,
        vocab_size=200,
        hard_vocab_limit=False,
        character_coverage=1.0,
        model_type="unigram",
        unk_id=0,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        minloglevel=2,
    )
    return buf.getvalue()


def _pieces(model: bytes) -> list[str]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model)
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory) -> Path:
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    folder = tmp_path_factory.mktemp("opus-mt-ko-en-tiny")
    src, tgt = _train_spm(KOREAN), _train_spm(ENGLISH)
    (folder / "source.spm").write_bytes(src)
    (folder / "target.spm").write_bytes(tgt)
    vocab = {"</s>": 0, "<unk>": 1}
    for piece in _pieces(src) + _pieces(tgt):
        vocab.setdefault(piece, len(vocab))
    vocab["<pad>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    pad = vocab["<pad>"]
    config = MarianConfig(
        vocab_size=len(vocab), decoder_vocab_size=len(vocab), d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_position_embeddings=64, pad_token_id=pad, decoder_start_token_id=pad, eos_token_id=0, bos_token_id=0,
        scale_embedding=True, activation_function="swish", share_encoder_decoder_embeddings=True, init_std=0.5,
        bad_words_ids=[[pad]],
    )  # fmt: skip
    torch.manual_seed(0)
    model = MarianMTModel(config).eval()
    # designed output space: only target-side pieces, never EOS (so each span gives MAX_NEW tokens)
    target_ids = {vocab[p] for p in _pieces(tgt)}
    with torch.no_grad():
        bias = torch.full_like(model.final_logits_bias, -1e4)
        bias[0, sorted(target_ids - {0, 1})] = 0.0
        model.final_logits_bias.copy_(bias)
    model.save_pretrained(folder)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*sacremoses.*")
        tokenizer = MarianTokenizer(
            str(folder / "source.spm"), str(folder / "target.spm"), str(folder / "vocab.json")
        )
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def marian(marian_dir):
    return tr.load_marian(marian_dir)


def _single(text: str, model, tokenizer) -> str:
    """The model's translation of one span on its own (no batching, no padding)."""
    with torch.inference_mode():
        ids = model.generate(
            **tokenizer([text], return_tensors="pt"), num_beams=4, do_sample=False, max_new_tokens=MAX_NEW
        )
    return tokenizer.batch_decode(ids, skip_special_tokens=True)[0]


# ---------------------------------------------------------------------------------------------------


def test_folder_is_the_public_layout_and_loads(marian_dir, marian):
    names = {p.name for p in marian_dir.iterdir()}
    assert {"config.json", "model.safetensors", "source.spm", "target.spm", "vocab.json"} <= names
    config = json.loads((marian_dir / "config.json").read_text())
    assert tr.looks_like_marian(config) and config["scale_embedding"] is True
    model, tokenizer = marian
    assert type(model).__name__ == "MarianMTModel" and not model.training
    assert type(tokenizer).__name__ == "MarianTokenizer"


def test_looks_like_marian():
    assert tr.looks_like_marian({"model_type": "marian", "vocab_size": 65001, "d_model": 512})
    assert tr.looks_like_marian({"architectures": ["MarianMTModel"], "vocab_size": 10, "d_model": 8})
    assert not tr.looks_like_marian({"model_type": "bert", "vocab_size": 10, "d_model": 8})
    assert not tr.looks_like_marian({"model_type": "marian"})
    assert not tr.looks_like_marian(["marian"])  # type: ignore[arg-type]


def test_has_hangul():
    assert tr.has_hangul("빨간 house")
    assert tr.has_hangul("ㅋㅋ")  # compatibility jamo
    assert not tr.has_hangul("a red house, (cat:1.2) <lora:x:0.8>")
    assert not tr.has_hangul("猫 ねこ")


def test_split_prompt_keeps_every_byte_and_classifies_syntax():
    prompt = "<lora:웹툰:0.8> 빨간 지붕, (고양이:1.2) [밤|낮] \\(역\\) sks BREAK 별 AND 달"
    segs = tr.split_prompt(prompt, {"sks"})
    assert "".join(s.text for s in segs) == prompt
    syntax = [s.text for s in segs if s.kind == "syntax"]
    assert syntax[:1] == ["<lora:웹툰:0.8>"]  # Hangul inside a tag is syntax
    for piece in ("(", ":", ")", "[", "|", "]", "\\(", "\\)", "BREAK", "AND", ","):
        assert piece in syntax
    assert [s.text for s in segs if s.kind == "protected"] == ["sks"]
    texts = [s.text.strip() for s in segs if s.kind == "text" and s.text.strip()]
    assert texts == ["빨간 지붕", "고양이", "1.2", "밤", "낮", "역", "별", "달"]
    # protected words match whole ASCII words only; Hangul ones match inside words (particles attach)
    assert [s.kind for s in tr.split_prompt("tasks", {"sks"})] == ["text"]
    segs = tr.split_prompt("내스타일의 고양이", {"내스타일"})
    assert [(s.kind, s.text) for s in segs] == [("protected", "내스타일"), ("text", "의 고양이")]
    # BREAK / AND only as whole upper-case words
    assert all(s.kind == "text" for s in tr.split_prompt("BREAKING android and"))


def test_clean_translation_cannot_inject_syntax():
    assert tr.clean_translation(" a (cat):  BREAK  <x>.", "고양이") == "a cat break x"
    assert tr.clean_translation("It rains.", "비가 온다.") == "It rains."
    assert tr.clean_translation("cats AND dogs", "고양이") == "cats and dogs"


def test_translate_prompt_end_to_end(marian):
    model, tokenizer = marian
    prompt = (
        "<lora:x:0.8> 빨간 지붕의 집, (고양이:1.2), masterpiece BREAK 밤하늘의 별,\nsks 스타일 [산:바다:0.5]"
    )
    result = tr.translate_prompt(prompt, model, tokenizer, protected={"sks"}, max_new_tokens=MAX_NEW)
    assert result.original == prompt and result.changed
    out = result.translated
    assert not tr.has_hangul(out)
    # syntax and English, byte for byte and in order
    kept = [s.text for s in result.segments if s.translation is None]
    pos = 0
    for piece in kept:
        found = out.find(piece, pos)
        assert found >= 0, piece
        pos = found + len(piece)
    assert out.startswith("<lora:x:0.8> ")
    assert re.search(r", \((?:[^():]+):1\.2\), masterpiece BREAK ", out)
    assert ",\nsks " in out and out.endswith(":0.5]")
    # each Hangul span is replaced by what the model says for it alone (batching changes nothing)
    translated = [s for s in result.segments if s.translation is not None]
    assert [s.text.strip() for s in translated] == [
        "빨간 지붕의 집",
        "고양이",
        "밤하늘의 별",
        "스타일",
        "산",
        "바다",
    ]
    for seg in translated:
        expected = tr.clean_translation(_single(seg.text.strip(), model, tokenizer), seg.text.strip())
        assert expected and seg.translation.strip() == expected
        assert seg.translation.startswith(" ") == seg.text.startswith(" ")
    assert "".join(s.output for s in result.segments) == out
    # deterministic
    again = tr.translate_prompt(prompt, model, tokenizer, protected={"sks"}, max_new_tokens=MAX_NEW)
    assert again == result


def test_english_prompt_never_touches_the_model():
    prompt = "masterpiece, (city street:1.1) <lora:toon:0.7> BREAK night"
    result = tr.translate_prompt(prompt, None, None)
    assert result.translated == prompt and not result.changed
    with pytest.raises(ModelNotFoundError, match="opus-mt-ko-en"):
        tr.translate_prompt(prompt + ", 고양이", None, None)


def test_identical_spans_are_translated_once(marian, monkeypatch):
    model, tokenizer = marian
    calls: list[list[str]] = []
    real = tr.translate_texts

    def spy(texts, *args, **kwargs):
        calls.append(list(texts))
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(tr, "translate_texts", spy)
    result = tr.translate_prompt("별, (별:1.3), 달", model, tokenizer, max_new_tokens=MAX_NEW)
    assert calls == [["별", "달"]]
    spans = [s.translation for s in result.segments if s.translation is not None]
    assert spans[0].strip() == spans[1].strip()


def test_bin_weights_load_with_weights_only(marian_dir, marian, tmp_path):
    folder = tmp_path / "bin"
    shutil.copytree(marian_dir, folder)
    model, tokenizer = marian
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    bin_model, _ = tr.load_marian(folder)
    assert _single("빨간 지붕의 집", bin_model, tokenizer) == _single("빨간 지붕의 집", model, tokenizer)
    assert torch.equal(bin_model.final_logits_bias, model.final_logits_bias)


class _NotATensor:
    pass


def test_pickled_objects_are_refused(marian_dir, tmp_path):
    folder = tmp_path / "evil"
    shutil.copytree(marian_dir, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"model.shared.weight": _NotATensor()}, folder / "pytorch_model.bin")
    with pytest.raises(UnsafeModelFormatError, match="unpickling"):
        tr.load_marian(folder)
    (folder / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot load") as err:
        tr.load_marian(folder)
    assert not isinstance(err.value, UnsafeModelFormatError)


def test_load_errors_name_what_is_wrong(marian_dir, tmp_path):
    with pytest.raises(ModelNotFoundError):
        tr.load_marian(tmp_path / "absent")
    folder = tmp_path / "no-tok"
    shutil.copytree(marian_dir, folder)
    (folder / "target.spm").unlink()
    with pytest.raises(ModelError, match="target.spm"):
        tr.load_marian(folder)
    folder = tmp_path / "not-marian"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 5, "d_model": 4}))
    with pytest.raises(ModelError, match="not a MarianMT"):
        tr.load_marian(folder)
    folder = tmp_path / "no-weights"
    shutil.copytree(marian_dir, folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no weights"):
        tr.load_marian(folder)
