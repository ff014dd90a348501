"""Korean prompts in jobs: the one helper every studio that takes a prompt calls (background, generate and with
it the A1111 routes).

- `check_prompt_translation(models, prompts)` at submit (cheap, nothing loaded): a prompt with Hangul and no
  translator installed is refused with `TranslatorMissingError` (409) naming the prompt's field and the command
  that fetches the model (`toonbooth models pull opus-mt-ko-en`); a user-edited translation that still holds
  Hangul is refused (422) naming its field. Korean text never reaches CLIP untranslated while
  `Settings.translate_prompts` is `hangul` (the default).
- `translate_job_prompts(models, prompts, protected=...)` in the job: the translator is loaded through
  `ctx.models` (family `translate`, cached like every model), each Hangul prompt is translated with
  `nets.translate.translate_prompt` (A1111 syntax, LoRA tags and the protected words — embedding names, style
  trigger words — copied byte for byte), results are memoised per loaded model (the UI's "translate, edit,
  run" round trip translates once). A prompt the user translated by hand (`edited`) is used as given.
- `translation_params(...)`: the infotext fields that keep the original next to the translation
  (`Original prompt: "..."`), so the PNG `parameters` show both.

With `translate_prompts="off"` (an operator whose checkpoint reads Korean, say) Hangul prompts go to the text
encoder as written and every such job carries a warning saying so — a documented choice, never silent.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from ..core.errors import InputError
from ..models.refs import ModelRef
from .translate import (
    DEFAULT_MAX_NEW_TOKENS,
    TRANSLATE_KIND,
    has_hangul,
    split_prompt,
    translate_prompt,
)

if TYPE_CHECKING:
    from ..models.manager import ModelManager

PULL_COMMAND = "toonbooth models pull opus-mt-ko-en"
CACHE_ITEMS = 256
"""Translations remembered per loaded translator (prompt text + protected words -> result)."""
NUM_BEAMS = 4


class TranslatedSpan(BaseModel):
    """One plain-language piece of a prompt and what the model made of it."""

    source: str
    translation: str


class PromptTranslation(BaseModel):
    """How one prompt field of a job was turned into what the text encoder saw."""

    field: str = Field(description="The spec field of the prompt (prompt, negative_prompt).")
    original: str = Field(description="The prompt as the user wrote it.")
    translated: str = Field(description="What the text encoder got (English; equals `original` when unchanged).")
    source: Literal["machine", "edited", "unchanged", "off"] = Field(
        description="machine: translated by `model`; edited: the user's own translation; unchanged: no Hangul; "
        "off: Hangul passed untranslated because translate_prompts is off."
    )
    model: str | None = Field(None, description="The translator that ran (registry name).")
    spans: list[TranslatedSpan] = Field(default_factory=list, description="Machine-translated pieces.")

    @property
    def changed(self) -> bool:
        return self.translated != self.original


class TranslatorMissingError(InputError):
    """A Korean prompt arrived and no translator is installed: the server cannot run it as asked (409)."""

    http_status = 409


@dataclass(frozen=True)
class PromptText:
    """One prompt of a job: its spec field and text, and the user's own translation if they gave one."""

    field: str
    text: str
    edited: str | None = None
    edited_field: str | None = None


def translation_enabled(models: ModelManager) -> bool:
    return getattr(models.settings, "translate_prompts", "hangul") != "off"


def translator_name(models: ModelManager) -> str:
    return str(getattr(models.settings, "translate_model", None) or "opus-mt-ko-en")


def _needs_model(prompts: Iterable[PromptText]) -> list[PromptText]:
    return [p for p in prompts if p.edited is None and has_hangul(p.text)]


def check_prompt_translation(models: ModelManager, prompts: Sequence[PromptText]) -> None:
    """Refuse at submit what translation cannot serve (nothing is loaded): a user translation with Hangul left
    in it (InputError naming its field), a Korean prompt without an installed translator
    (TranslatorMissingError, 409, naming the prompt's field and what to fetch)."""
    if not translation_enabled(models):
        return
    for p in prompts:
        if p.edited is not None and has_hangul(p.edited):
            raise InputError(
                p.edited_field or p.field,
                "still contains Korean (Hangul): the edited translation goes to the text encoder as written; "
                "translate the rest, or leave it empty to have the prompt translated",
                p.edited,
            )
    needs = _needs_model(prompts)
    if not needs:
        return
    name = translator_name(models)
    missing = models.missing([ModelRef(TRANSLATE_KIND, name, needs[0].field)])
    if missing:
        raise TranslatorMissingError(
            needs[0].field,
            f"contains Korean (Hangul), which is translated to English before the text encoder sees it, but the "
            f"translator {name!r} is not installed ({'; '.join(missing)}): run `{PULL_COMMAND}` "
            f"(Helsinki-NLP/opus-mt-ko-en, about 312 MB), or write the prompt in English",
            needs[0].text[:200],
        )


# --- memo of translations per loaded model ---------------------------------------------------------

_MEMO: weakref.WeakKeyDictionary[Any, OrderedDict] = weakref.WeakKeyDictionary()
_MEMO_LOCK = threading.Lock()


def _memo_get(model: Any, key: tuple) -> Any:
    with _MEMO_LOCK:
        table = _MEMO.get(model)
        if table is None or key not in table:
            return None
        table.move_to_end(key)
        return table[key]


def _memo_put(model: Any, key: tuple, value: Any) -> None:
    with _MEMO_LOCK:
        table = _MEMO.setdefault(model, OrderedDict())
        table[key] = value
        while len(table) > CACHE_ITEMS:
            table.popitem(last=False)


def token_cap(text: str, tokenizer: Any, protected: Iterable[str] = ()) -> int:
    """Decoding cap for the Hangul spans of `text`: twice the longest span's source tokens + 8, at most
    `DEFAULT_MAX_NEW_TOKENS` (a phrase's English is rarely longer; the cap stops runaway repetition)."""
    longest = 0
    for seg in split_prompt(text, protected):
        core = seg.text.strip()
        if seg.kind == "text" and core and has_hangul(core):
            longest = max(longest, len(tokenizer(core)["input_ids"]))
    return min(DEFAULT_MAX_NEW_TOKENS, 2 * longest + 8)


def translate_text(text: str, bundle: Any, protected: Iterable[str] = ()) -> tuple[str, list[TranslatedSpan]]:
    """(translated prompt, spans) of one A1111 prompt with the loaded translator `bundle` (memoised)."""
    model, tokenizer = bundle
    words = tuple(sorted({w for w in protected if w and w.strip()}))
    key = (text, words, NUM_BEAMS)
    hit = _memo_get(model, key)
    if hit is not None:
        return hit
    cap = token_cap(text, tokenizer, words)
    result = translate_prompt(text, model, tokenizer, protected=frozenset(words), num_beams=NUM_BEAMS,
                              max_new_tokens=cap)  # fmt: skip
    spans = [TranslatedSpan(source=s.text.strip(), translation=s.translation.strip())
             for s in result.segments if s.translation is not None]  # fmt: skip
    value = (result.translated, spans)
    _memo_put(model, key, value)
    return value


def translate_job_prompts(
    models: ModelManager, prompts: Sequence[PromptText], *, protected: Iterable[str] = ()
) -> tuple[dict[str, PromptTranslation], list[str]]:
    """Each prompt as the text encoder should see it, by field, and warnings. Loads the translator through
    `models` only when a prompt needs it; raises what `check_prompt_translation` raises when it cannot run."""
    out: dict[str, PromptTranslation] = {}
    warnings: list[str] = []
    if not translation_enabled(models):
        for p in prompts:
            if has_hangul(p.text):
                warnings.append(
                    f"`{p.field}` contains Korean and prompt translation is off (translate_prompts=off): "
                    "it went to the text encoder untranslated"
                )
                out[p.field] = PromptTranslation(field=p.field, original=p.text, translated=p.text, source="off")
            else:
                out[p.field] = PromptTranslation(field=p.field, original=p.text, translated=p.text, source="unchanged")
        return out, warnings
    check_prompt_translation(models, prompts)
    name = translator_name(models)
    bundle = models.load(TRANSLATE_KIND, name) if _needs_model(prompts) else None
    words = list(protected)
    for p in prompts:
        if p.edited is not None:
            out[p.field] = PromptTranslation(field=p.field, original=p.text, translated=p.edited, source="edited")
        elif has_hangul(p.text):
            text, spans = translate_text(p.text, bundle, words)
            out[p.field] = PromptTranslation(field=p.field, original=p.text, translated=text, source="machine",
                                             model=name, spans=spans)  # fmt: skip
        else:
            out[p.field] = PromptTranslation(field=p.field, original=p.text, translated=p.text, source="unchanged")
    return out, warnings


_PARAM_NAMES = {"prompt": "Original prompt", "negative_prompt": "Original negative prompt"}


def translation_params(translations: Mapping[str, PromptTranslation]) -> dict[str, str]:
    """Infotext fields that keep the originals of translated prompts: `Original prompt`, `Original negative
    prompt` and `Prompt translation` (the translator's name, or `edited`); empty when nothing was translated."""
    params: dict[str, str] = {}
    used: list[str] = []
    for field, t in translations.items():
        if t.source in ("machine", "edited") and t.changed:
            params[_PARAM_NAMES.get(field, f"Original {field.replace('_', ' ')}")] = t.original
            label = t.model if t.source == "machine" and t.model else "edited"
            if label not in used:
                used.append(label)
    if used:
        params["Prompt translation"] = ", ".join(used)
    return params


def protected_words(models: ModelManager, owner: str | None, extra: Iterable[str] = ()) -> set[str]:
    """Words a translation must copy as they are: the embedding names visible to `owner` (a textual inversion is
    called by its name) and `extra` (style trigger words)."""
    words = {w for w in extra if w and w.strip()}
    return words | set(models.registry.names("embedding", owner))


__all__ = [
    "PULL_COMMAND",
    "PromptText",
    "PromptTranslation",
    "TranslatedSpan",
    "TranslatorMissingError",
    "check_prompt_translation",
    "protected_words",
    "translate_job_prompts",
    "translate_text",
    "translation_enabled",
    "translation_params",
]
