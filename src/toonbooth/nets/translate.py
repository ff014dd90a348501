"""Korean → English prompt translation with MarianMT, keeping A1111 prompt syntax untouched.

Model: `Helsinki-NLP/opus-mt-ko-en` (OPUS-MT, Tiedemann & Thottingal, "OPUS-MT — Building open translation
services for the World", EAMT 2020; model card https://huggingface.co/Helsinki-NLP/opus-mt-ko-en), run through
transformers' `MarianMTModel` + `MarianTokenizer` (https://huggingface.co/docs/transformers/model_doc/marian).
The folder layout is the public one: `config.json`, `source.spm`, `target.spm`, `vocab.json`
(+ `tokenizer_config.json`, `generation_config.json`) and `model.safetensors` or `pytorch_model.bin`.

Only the plain-language parts of a prompt are translated. A prompt is split into
- syntax that is copied byte for byte: `<lora:name:0.8>` / `<hypernet:...>` / any `<...>` tag, the emphasis and
  prompt-editing brackets `( ) [ ] { }`, the `:` of weights and schedules, `|`, commas, line breaks, `\\`-escapes,
  the keywords `BREAK` and `AND`, and the caller's protected words (embedding names, LoRA trigger words);
- text spans between them. A span that contains Hangul is translated (batched, beam search, no sampling);
  any other span (English, numbers such as the `1.2` of `(word:1.2)`) is left alone.
Leading/trailing whitespace of a span is kept, so `(고양이:1.2)` becomes `(a cat:1.2)`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch

from ..core.errors import ModelError, ModelNotFoundError, UnsafeModelFormatError

TOKENIZER_FILES = ("source.spm", "target.spm", "vocab.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
DEFAULT_MAX_NEW_TOKENS = 128
"""Cap on generated tokens per span; a prompt span is a phrase, real translations stop far earlier."""

_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7af\ud7b0-\ud7ff]")
_ASCII_WORD = re.compile(r"\w+", re.ASCII)
# characters the translation must not introduce: they would change how A1111 parses the prompt
_SYNTAX_CHARS = re.compile(r"[()\[\]{}<>|:\\]")
_KEYWORDS = re.compile(r"(?<![A-Za-z0-9_])(BREAK|AND)(?![A-Za-z0-9_])")

SegmentKind = Literal["syntax", "protected", "text"]


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------


class MarianBundle(NamedTuple):
    """A loaded translator: unpack as `model, tokenizer = load_marian(...)`."""

    model: Any
    """`transformers.MarianMTModel`, in eval mode."""
    tokenizer: Any
    """`transformers.MarianTokenizer`."""


def looks_like_marian(config_json: dict) -> bool:
    """True when a parsed `config.json` describes a MarianMT seq2seq model (opus-mt layout)."""
    if not isinstance(config_json, dict):
        return False
    archs = config_json.get("architectures") or []
    is_marian = config_json.get("model_type") == "marian" or (
        isinstance(archs, list) and "MarianMTModel" in archs
    )
    sizes_ok = all(isinstance(config_json.get(k), int) for k in ("vocab_size", "d_model"))
    return bool(is_marian and sizes_ok)


def load_marian(
    folder: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> MarianBundle:
    """Load a MarianMT model and its tokenizer from a local folder in the public HF layout.

    Weights: `model.safetensors` when present, else `pytorch_model.bin` through `torch.load(weights_only=True)`
    (the public opus-mt `.bin` only holds tensors, so it passes). Nothing is downloaded.
    """
    import json

    from transformers import MarianMTModel, MarianTokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise ModelNotFoundError(f"MarianMT folder not found: {folder}")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelError(f"{folder}: no config.json, not a transformers MarianMT folder")
    try:
        config_json = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{config_path}: unreadable config.json ({e})") from e
    if not looks_like_marian(config_json):
        raise ModelError(
            f"{folder}: config.json is not a MarianMT model (model_type={config_json.get('model_type')!r})"
        )
    missing = [name for name in TOKENIZER_FILES if not (folder / name).is_file()]
    if missing:
        raise ModelError(f"{folder}: MarianMT tokenizer files missing: {', '.join(missing)}")
    weights = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if weights is None:
        raise ModelError(f"{folder}: no weights ({' or '.join(WEIGHT_FILES)})")

    try:
        model = MarianMTModel.from_pretrained(
            str(folder),
            local_files_only=True,
            use_safetensors=weights.suffix == ".safetensors",
            weights_only=True,
            dtype=dtype,
        )
    except Exception as e:
        text = str(e)
        # torch's weights-only unpickler names the class it refused ("Unsupported global: ...")
        if "unsupported global" in text.lower():
            raise UnsafeModelFormatError(
                f"{weights.name}: refused, it needs full unpickling (not only tensors); convert it to "
                "model.safetensors on a trusted machine"
            ) from e
        raise ModelError(f"{folder}: cannot load MarianMT weights from {weights.name}: {e}") from e
    with warnings.catch_warnings():
        # MarianTokenizer recommends `sacremoses`, used only for an optional punctuation normaliser
        warnings.filterwarnings("ignore", message=".*sacremoses.*")
        tokenizer = MarianTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = model.to(device).eval()
    return MarianBundle(model, tokenizer)


# ---------------------------------------------------------------------------------------------------
# Prompt splitting
# ---------------------------------------------------------------------------------------------------


def has_hangul(text: str) -> bool:
    """True when `text` contains a Hangul syllable or jamo."""
    return bool(_HANGUL.search(text))


@dataclass(frozen=True)
class PromptSegment:
    """One piece of a prompt. `translation` is set only for translated text spans (whitespace kept)."""

    text: str
    kind: SegmentKind
    translation: str | None = None

    @property
    def output(self) -> str:
        """The text this segment contributes to the translated prompt."""
        return self.text if self.translation is None else self.translation


@dataclass(frozen=True)
class TranslatedPrompt:
    """Result of `translate_prompt`: both prompts and how they were assembled."""

    original: str
    translated: str
    segments: tuple[PromptSegment, ...]

    @property
    def changed(self) -> bool:
        """True when at least one span was translated."""
        return any(s.translation is not None for s in self.segments)


def _protected_pattern(word: str) -> str:
    escaped = re.escape(word)
    # ASCII words match as whole words (`sks` must not match inside `tasks`); words with Hangul match
    # literally, because Korean particles attach directly (`내스타일의`)
    if _ASCII_WORD.fullmatch(word[:1] or " "):
        escaped = r"(?<![A-Za-z0-9_])" + escaped
    if _ASCII_WORD.fullmatch(word[-1:] or " "):
        escaped = escaped + r"(?![A-Za-z0-9_])"
    return escaped


def _splitter(protected: Iterable[str]) -> re.Pattern[str]:
    words = sorted({w for w in protected if w and w.strip()}, key=len, reverse=True)
    parts = [
        r"(?P<escape>\\.)",
        r"(?P<tag><[^<>\n]*>)",
    ]
    if words:
        parts.append("(?P<protected>" + "|".join(_protected_pattern(w) for w in words) + ")")
    parts.append(r"(?P<keyword>(?<![A-Za-z0-9_])(?:BREAK|AND)(?![A-Za-z0-9_]))")
    parts.append(r"(?P<char>[()\[\]{}:|,\n\r])")
    return re.compile("|".join(parts))


def split_prompt(text: str, protected: Iterable[str] = ()) -> list[PromptSegment]:
    """Split an A1111 prompt into syntax, protected words and plain text spans (no translation).

    Concatenating the `text` of the segments gives back `text` exactly.
    """
    pattern = _splitter(protected)
    segments: list[PromptSegment] = []
    pos = 0
    for match in pattern.finditer(text):
        if match.start() > pos:
            segments.append(PromptSegment(text[pos : match.start()], "text"))
        kind: SegmentKind = "protected" if match.lastgroup == "protected" else "syntax"
        segments.append(PromptSegment(match.group(0), kind))
        pos = match.end()
    if pos < len(text):
        segments.append(PromptSegment(text[pos:], "text"))
    return segments


# ---------------------------------------------------------------------------------------------------
# Translation
# ---------------------------------------------------------------------------------------------------


def clean_translation(translated: str, source: str) -> str:
    """Make a model translation safe to splice into a prompt.

    Collapses whitespace; removes characters A1111 would parse as syntax (`( ) [ ] { } < > | : \\`);
    lower-cases stray `BREAK` / `AND` keywords; drops the sentence-final period the model adds when the
    source phrase had none.
    """
    out = _SYNTAX_CHARS.sub(" ", translated)
    out = _KEYWORDS.sub(lambda m: m.group(0).lower(), out)
    out = " ".join(out.split())
    if out.endswith(".") and not source.rstrip().endswith((".", "!", "?", "。")):
        out = out[:-1].rstrip()
    return out


def translate_texts(
    texts: Sequence[str],
    model: Any,
    tokenizer: Any,
    *,
    num_beams: int = 4,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 16,
) -> list[str]:
    """Raw model translations of `texts` (batched beam search, deterministic); no prompt handling."""
    if num_beams < 1 or max_new_tokens < 1 or batch_size < 1:
        raise ValueError("num_beams, max_new_tokens and batch_size must be >= 1")
    limit = int(getattr(model.config, "max_position_embeddings", 512) or 512)
    results: list[str] = []
    device = next(model.parameters()).device
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        batch = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=limit)
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.inference_mode():
            generated = model.generate(
                **batch,
                num_beams=num_beams,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                num_return_sequences=1,
            )
        results.extend(tokenizer.batch_decode(generated, skip_special_tokens=True))
    return results


def translate_prompt(
    text: str,
    model: Any,
    tokenizer: Any,
    *,
    protected: Iterable[str] = frozenset(),
    num_beams: int = 4,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 16,
) -> TranslatedPrompt:
    """Translate the Hangul parts of an A1111 prompt to English, keeping every piece of syntax as is.

    `protected` holds words copied verbatim (textual-inversion embedding names, LoRA trigger words).
    A prompt without Hangul is returned unchanged without running the model (`model`/`tokenizer` may then
    be None); a prompt with Hangul and no model raises ModelNotFoundError. Identical spans are translated once.
    """
    segments = split_prompt(text, protected)
    cores: dict[str, str] = {}
    for seg in segments:
        core = seg.text.strip()
        if seg.kind == "text" and core and has_hangul(core):
            cores.setdefault(core, "")
    if not cores:
        return TranslatedPrompt(text, text, tuple(segments))
    if model is None or tokenizer is None:
        raise ModelNotFoundError(
            "the prompt contains Korean (Hangul) and needs the MarianMT ko→en translation model "
            "(Helsinki-NLP/opus-mt-ko-en), which is not loaded; Korean text is never passed to CLIP untranslated"
        )
    sources = list(cores)
    raw = translate_texts(
        sources, model, tokenizer, num_beams=num_beams, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    for source, out in zip(sources, raw, strict=True):
        cores[source] = clean_translation(out, source)

    done: list[PromptSegment] = []
    for seg in segments:
        core = seg.text.strip()
        if seg.kind == "text" and core in cores:
            lead = seg.text[: len(seg.text) - len(seg.text.lstrip())]
            trail = seg.text[len(seg.text.rstrip()) :]
            done.append(PromptSegment(seg.text, "text", lead + cores[core] + trail))
        else:
            done.append(seg)
    return TranslatedPrompt(text, "".join(s.output for s in done), tuple(done))


# ---------------------------------------------------------------------------------------------------
# The MarianMT model family: `<models>/MarianMT/<name>/` (or `MarianMT/<org>/<name>/`) transformers folders
# ---------------------------------------------------------------------------------------------------

MARIAN_FOLDERS: tuple[str, ...] = ("MarianMT", "marian")
"""Where translators live in a models folder (a toonbooth folder: A1111 has none for translation)."""
TRANSLATE_KIND = "translate"


def marian_folder_entry(folder: Path, name: str | None = None, top_folder: str = "MarianMT"):
    """A registry entry for a MarianMT folder (config.json with model_type marian, the three tokenizer files,
    `model.safetensors` or `pytorch_model.bin`); None when `folder` has no config.json. Only JSON is read;
    the `.bin` of the public opus-mt repos holds only tensors and is read with `weights_only=True` at load
    time (refused then if it needs more). Aliases: the folder's own name and, when it is a catalog model, the
    catalog name and hub id (so `opus-mt-ko-en` and `Helsinki-NLP/opus-mt-ko-en` both find it)."""
    from ..models import catalog
    from ..models.registry import ModelEntry, read_json

    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        return None
    name = name or folder.name
    cfg = read_json(cfg_path) or {}
    refused: str | None = None
    weights = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if not looks_like_marian(cfg):
        refused = f"{folder}: config.json has model_type {cfg.get('model_type')!r}, not a MarianMT model ('marian')"
    elif missing := [n for n in TOKENIZER_FILES if not (folder / n).is_file()]:
        refused = f"{folder}: MarianMT tokenizer files missing: {', '.join(missing)}"
    elif weights is None:
        refused = f"{folder}: no weights ({' or '.join(WEIGHT_FILES)})"
    aliases = {folder.name}
    cat = catalog.find_entry(folder.name)
    if cat is not None and cat.kind == TRANSLATE_KIND:
        aliases |= {cat.name, *cat.aliases, *([cat.repo_id] if cat.repo_id else [])}
    details = {k: cfg[k] for k in ("d_model", "encoder_layers", "decoder_layers", "vocab_size") if k in cfg}
    if weights is not None:
        details["weights"] = weights.name
    return ModelEntry(
        name=name, path=folder, kind=TRANSLATE_KIND, layout="marian", source="folder", folder=top_folder,
        relpath=name, refused=refused, details=details, aliases=sorted(aliases - {name}),
        size=weights.stat().st_size if weights is not None else None,
    )  # fmt: skip


def scan_marian(top: Path, folder: str) -> list:
    """MarianMT folders under `top`: `<name>/` or `<org>/<name>/` holding a config.json."""
    out = []
    for child in sorted(d for d in top.iterdir() if d.is_dir() and not d.name.startswith(".")):
        subs = [child] if (child / "config.json").is_file() else sorted(
            d for d in child.iterdir() if d.is_dir() and not d.name.startswith(".")
        )  # fmt: skip
        for d in subs:
            entry = marian_folder_entry(d, d.relative_to(top).as_posix(), folder)
            if entry is not None:
                out.append(entry)
    return out


def load_marian_entry(entry: Any, env: Any) -> MarianBundle:
    """The translator of a registry entry, in float32 on the manager's device (78 M parameters: half
    precision saves nothing worth its risk). A hub id loads only from the local hub cache."""
    if entry.source == "hub":
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(entry.location, local_files_only=True))
        except Exception as exc:  # not in the local cache: user requests never download
            raise ModelNotFoundError(
                f"translate model {entry.location!r} is not in the local hub cache; run "
                "`toonbooth models pull opus-mt-ko-en` (it goes to <models>/MarianMT/opus-mt-ko-en/)"
            ) from exc
    else:
        folder = Path(entry.location)
    return load_marian(folder, device=env.device, dtype=torch.float32)


def _marian_family():
    from ..models.families import ModelFamily

    return ModelFamily(
        kind=TRANSLATE_KIND,
        description="MarianMT prompt translator (transformers folder: config.json, source/target.spm, vocab.json, "
        "model.safetensors or a tensors-only pytorch_model.bin)",
        folders=MARIAN_FOLDERS,
        suffixes=("/",),
        scan=scan_marian,
        load=load_marian_entry,
        approx_bytes=312_000_000,
        shared_only=True,
        licence_note="Helsinki-NLP/opus-mt-ko-en: Apache-2.0 (model card)",
    )


MARIAN_FAMILY = _marian_family()


# ---------------------------------------------------------------------------------------------------
# A tiny random-weight MarianMT in the public folder layout (tests, benchmarks, `models make-tiny`)
# ---------------------------------------------------------------------------------------------------

TINY_KOREAN = (
    "고양이가 창가에 앉아 있다", "빨간 지붕의 집", "밤하늘의 별", "도시의 거리 풍경", "비 오는 날의 골목",
    "푸른 바다와 하얀 모래", "산 위의 작은 절", "학교 교실 안", "벚꽃이 핀 공원", "겨울 숲속의 오두막",
    "오래된 카페 내부", "강가의 다리", "노을 지는 해변", "조용한 도서관", "사람 없는 지하철역",
)  # fmt: skip
TINY_ENGLISH = (
    "a cat sits by the window", "a house with a red roof", "stars in the night sky", "a city street view",
    "an alley on a rainy day", "blue sea and white sand", "a small temple on the mountain",
    "inside a school classroom", "a park with cherry blossoms", "a cabin in the winter forest",
    "an old cafe interior", "a bridge by the river", "a beach at sunset", "a quiet library",
    "an empty subway station",
)  # fmt: skip


def _train_sentencepiece(lines: Sequence[str]) -> bytes:
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(lines) * 4), model_writer=buf, vocab_size=200, hard_vocab_limit=False,
        character_coverage=1.0, model_type="unigram", unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
        minloglevel=2, num_threads=1,
    )  # fmt: skip
    return buf.getvalue()


def save_tiny_marian(folder: Path, seed: int = 0) -> Path:
    """Write a tiny MarianMT (d_model 32, 1+1 layers, random weights) with two sentencepiece models trained
    here (`hard_vocab_limit=False`) and one merged `vocab.json` (`</s>` = 0, `<unk>` = 1, pieces, `<pad>`
    last), `scale_embedding=True` like the opus-mt configs. Its output bias allows only target-side pieces
    and never EOS, so each span yields exactly the decoding cap of English pieces (deterministic noise).
    For tests and benchmarks only."""
    import json

    import sentencepiece as spm
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    src, tgt = _train_sentencepiece(TINY_KOREAN), _train_sentencepiece(TINY_ENGLISH)
    (folder / "source.spm").write_bytes(src)
    (folder / "target.spm").write_bytes(tgt)

    def pieces(proto: bytes) -> list[str]:
        sp = spm.SentencePieceProcessor(model_proto=proto)
        return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]

    vocab = {"</s>": 0, "<unk>": 1}
    for piece in pieces(src) + pieces(tgt):
        vocab.setdefault(piece, len(vocab))
    vocab["<pad>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    pad = vocab["<pad>"]
    config = MarianConfig(
        vocab_size=len(vocab), decoder_vocab_size=len(vocab), d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_position_embeddings=256, pad_token_id=pad, decoder_start_token_id=pad, eos_token_id=0,
        bos_token_id=0, scale_embedding=True, activation_function="swish", share_encoder_decoder_embeddings=True,
        init_std=0.5, bad_words_ids=[[pad]],
    )  # fmt: skip
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        model = MarianMTModel(config).eval()
    allowed = sorted({vocab[p] for p in pieces(tgt)} - {0, 1})
    with torch.no_grad():
        bias = torch.full_like(model.final_logits_bias, -1e4)
        bias[0, allowed] = 0.0
        model.final_logits_bias.copy_(bias)
    model.save_pretrained(folder)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*sacremoses.*")
        tokenizer = MarianTokenizer(str(folder / "source.spm"), str(folder / "target.spm"), str(folder / "vocab.json"))
    tokenizer.save_pretrained(folder)
    return folder
