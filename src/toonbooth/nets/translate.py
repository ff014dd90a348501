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
