"""AUTOMATIC1111 prompt syntax: extra-network tags, emphasis weights, BREAK, 75-token chunks.

Follows the behaviour of stable-diffusion-webui (https://github.com/AUTOMATIC1111/stable-diffusion-webui):

* `modules/extra_networks.py` — `<lora:name:te[:unet]>` / `<lyco:...>` tags are cut out of the prompt text
  (only the tag itself; surrounding commas and spaces stay, as in A1111). Named `te=` / `unet=` parameters
  are accepted. `<hypernet:...>` and any other network kind are refused with an `InputError`.
* `modules/prompt_parser.py` `parse_prompt_attention` — `(x)` ×1.1, `[x]` ÷1.1, `(x:w)` explicit,
  nesting multiplies, `\\(` `\\)` `\\[` `\\]` `\\\\` escapes (a lone backslash is dropped, as in A1111),
  unmatched `)` / `]` are plain text, brackets left open apply to the rest of the prompt, adjacent runs of
  equal weight merge, and the word `BREAK` forces a new chunk.
  One deliberate difference: in A1111 a `BREAK` inside brackets gets its marker weight multiplied and is then
  encoded as the word "BREAK" with a negative weight; here `BREAK` is always a chunk break.
* `modules/sd_hijack_clip.py` — each emphasis fragment is tokenized without special tokens, tokens are
  packed into chunks of 75 (a new chunk at `BREAK` or when full; when a chunk fills up and a comma lies
  within the last `comma_padding_backtrack` = 20 tokens, the text after that comma moves to the next
  chunk), each chunk becomes `[BOS] + 75 tokens (EOS-padded) + [EOS]` (positions after the first EOS get the
  tokenizer's pad token when it differs from EOS, as for SDXL's second encoder), is encoded on its own,
  multiplied by its per-token weights, rescaled to its original mean (skipped for a chunk whose mean is
  ~0 relative to its magnitude, where the ratio is meaningless and would blow up; never the case for the
  real CLIP encoders), and the chunks are concatenated along the sequence axis.
* Positive and negative prompts are padded to the same number of chunks with empty chunks (the encoding
  of ""), as A1111 does with its "pad prompt/negative prompt to same length" option: diffusers pipelines
  batch the two, so they must have equal length. (A1111's default instead runs the UNet twice when the
  lengths differ.)
* SD1.x/2.x: `clip_skip` in A1111's sense — 1 = last layer (`last_hidden_state`, final layer norm
  included); n > 1 = `hidden_states[-n]` followed by the final layer norm. (diffusers' `clip_skip=1` is
  A1111's `clip_skip=2`.)
* SDXL: both encoders use the penultimate hidden state `hidden_states[-2]` without final norm (as A1111
  and diffusers do); the two are concatenated on the feature axis per chunk; the pooled embedding is
  encoder 2's `text_embeds` for the FIRST chunk, unweighted. The negative prompt is always encoded, also
  when empty (A1111 behaviour); diffusers instead uses zeros when `negative_prompt=None` and the model
  sets `force_zeros_for_empty_prompt`.

Textual-inversion embeddings (A1111 `modules/textual_inversion/textual_inversion.py` `EmbeddingDatabase` and
`sd_hijack_clip.py` `tokenize_line`): pass `embeddings` (name -> one (n, width) tensor per text encoder) and
every occurrence of a name in a prompt fragment — a whole word, case-insensitive, the longest name first —
takes n token positions in the chunk (moved whole to the next chunk when they do not fit, so they count
against the 75 tokens), with the fragment's emphasis weight. The text encoder is not changed and the tokenizer
gets no new tokens (pipelines are cached and shared): those positions hold a placeholder id, and while the
chunks are encoded a forward hook on the encoder's token-embedding layer (`get_input_embeddings()`; the
installed transformers' `CLIPTextModel.forward` takes no `inputs_embeds`) replaces the rows of exactly that
call's ids tensor by the embedding's vectors. Hooked encodes are serialised by a module lock; the hook only
touches the call whose ids tensor it was made for, so other users of the same encoder are unaffected.
A1111 matches the name's token sequence in the prompt's tokens; matching whole words of the text gives the
same result for real vocabularies. Tokens added to the tokenizer (diffusers `load_textual_inversion`) still
work as before.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from toonbooth.core.errors import InputError, ModelError

if TYPE_CHECKING:
    import torch

CHUNK_LENGTH = 75  # prompt tokens per chunk; +BOS +EOS = 77 = CLIP context
COMMA_PADDING_BACKTRACK = 20  # A1111 default of `comma_padding_backtrack`
BREAK_TEXT = "BREAK"
BREAK_WEIGHT = -1.0

# ---------------------------------------------------------------------------------------------------------
# Extra-network tags
# ---------------------------------------------------------------------------------------------------------

_EXTRA_NET_RE = re.compile(r"<(\w+):([^>]+)>")
_LORA_KINDS = ("lora", "lyco")


class LoraTag(BaseModel):
    """One `<lora:name:weight>` tag. `weight` is the text-encoder multiplier (and the one to use where a
    single weight per adapter is applied); `unet_weight` is the UNet multiplier (equal to `weight` unless
    the tag gives a second number or `unet=`)."""

    name: str = Field(description="LoRA name as written in the tag (file stem in the models folder)")
    weight: float = Field(default=1.0, description="text-encoder multiplier; first number of the tag")
    unet_weight: float = Field(default=1.0, description="UNet multiplier; second number, else `weight`")
    kind: Literal["lora", "lyco"] = Field(default="lora", description="tag keyword used")


def _tag_float(tag: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError("prompt", f"bad weight '{text}' in tag '{tag}': expected a number", tag) from None


def extract_lora_tags(prompt: str) -> tuple[str, list[LoraTag]]:
    """Remove `<lora:...>` / `<lyco:...>` tags from `prompt`; return the remaining text and the tags.

    `<lora:name>` → weight 1; `<lora:name:w>` → w for text encoder and UNet; `<lora:name:te:unet>` → both
    recorded; named `te=` / `unet=` also accepted. `<hypernet:...>` and other network kinds raise
    `InputError`, as does a malformed weight.
    """
    tags: list[LoraTag] = []

    def _take(m: re.Match[str]) -> str:
        kind, params = m.group(1), m.group(2)
        tag = m.group(0)
        if kind.lower() == "hypernet":
            raise InputError("prompt", f"hypernetworks are not supported: '{tag}'", tag)
        if kind.lower() not in _LORA_KINDS:
            raise InputError(
                "prompt", f"unsupported extra network '{tag}'; supported tags: <lora:...>, <lyco:...>", tag
            )
        parts = params.split(":")
        name = parts[0].strip()
        if not name:
            raise InputError("prompt", f"empty LoRA name in tag '{tag}'", tag)
        positional: list[str] = []
        named: dict[str, str] = {}
        for p in parts[1:]:
            if "=" in p:
                key, _, val = p.partition("=")
                named[key.strip().lower()] = val.strip()
            else:
                positional.append(p.strip())
        unknown = set(named) - {"te", "unet"}
        if unknown:
            raise InputError(
                "prompt", f"unsupported parameter(s) {sorted(unknown)} in tag '{tag}'; known: te, unet", tag
            )
        if len(positional) > 2:
            raise InputError("prompt", f"too many numbers in tag '{tag}': expected at most te:unet", tag)
        te = _tag_float(tag, positional[0]) if positional else 1.0
        te = _tag_float(tag, named["te"]) if "te" in named else te
        unet = _tag_float(tag, positional[1]) if len(positional) > 1 else te
        unet = _tag_float(tag, named["unet"]) if "unet" in named else unet
        tags.append(LoraTag(name=name, weight=te, unet_weight=unet, kind=kind.lower()))  # type: ignore[arg-type]
        return ""

    text = _EXTRA_NET_RE.sub(_take, prompt)
    return text, tags


def check_lora_names(tags: list[LoraTag], known: list[str]) -> None:
    """Raise `InputError(field="prompt")` for the first tag whose name is not in `known`."""
    known_set = set(known)
    for tag in tags:
        if tag.name not in known_set:
            listing = ", ".join(sorted(known)) if known else "(none)"
            raise InputError("prompt", f"unknown LoRA '{tag.name}'; known: {listing}", tag.name)


# ---------------------------------------------------------------------------------------------------------
# Emphasis parser
# ---------------------------------------------------------------------------------------------------------

_ATTENTION_TOKEN_RE = re.compile(
    r"""
    (?P<escape>\\[()\[\]\\])          # \( \) \[ \] \\  -> literal character
    | (?P<backslash>\\)               # any other backslash -> dropped (A1111)
    | (?P<open_round>\()
    | (?P<open_square>\[)
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)  # (text:1.3) closing with an explicit weight
    | (?P<close_round>\))
    | (?P<close_square>\])
    | (?P<text>[^\\()\[\]:]+)
    | (?P<colon>:)
    """,
    re.X,
)
_BREAK_RE = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split `text` into (fragment, weight) pairs by A1111's emphasis rules; a chunk break is
    `("BREAK", -1.0)`.

    >>> parse_prompt_attention("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    """
    # Each entry: [text, weight, is_break]; brackets record the entry index where they opened.
    items: list[list[Any]] = []
    open_round: list[int] = []
    open_square: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for item in items[start:]:
            if not item[2]:
                item[1] *= factor

    for m in _ATTENTION_TOKEN_RE.finditer(text):
        kind = m.lastgroup
        token = m.group(0)
        if kind == "escape":
            items.append([token[1], 1.0, False])
        elif kind == "backslash":
            continue
        elif kind == "open_round":
            open_round.append(len(items))
        elif kind == "open_square":
            open_square.append(len(items))
        elif kind == "weight" and open_round:
            raw = m.group("weight")
            try:
                factor = float(raw)
            except ValueError:
                raise InputError("prompt", f"bad emphasis weight '{raw}' in '{token}'", raw) from None
            scale_from(open_round.pop(), factor)
        elif kind == "close_round" and open_round:
            scale_from(open_round.pop(), 1.1)
        elif kind == "close_square" and open_square:
            scale_from(open_square.pop(), 1 / 1.1)
        else:  # plain text, ':' and unmatched closers
            for i, part in enumerate(_BREAK_RE.split(token)):
                if i > 0:
                    items.append([BREAK_TEXT, BREAK_WEIGHT, True])
                items.append([part, 1.0, False])

    # Brackets never closed apply to everything after them.
    for start in open_round:
        scale_from(start, 1.1)
    for start in open_square:
        scale_from(start, 1 / 1.1)

    if not items:
        items = [["", 1.0, False]]

    merged: list[list[Any]] = [items[0]]
    for item in items[1:]:
        last = merged[-1]
        if not item[2] and not last[2] and item[1] == last[1]:
            last[0] += item[0]
        else:
            merged.append(item)
    return [(str(t), float(w)) for t, w, _ in merged]


# ---------------------------------------------------------------------------------------------------------
# Chunking
# ---------------------------------------------------------------------------------------------------------


@dataclass
class PromptChunk:
    """77 token ids ([BOS] + 75 + [EOS]) and one weight per id; `fixes`: (position, embedding name, vector
    index) of each position that takes a textual-inversion vector instead of its token's embedding."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[tuple[int, str, int]] = field(default_factory=list)


def _special_ids(tokenizer: Any) -> tuple[int, int, int]:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if bos is None or eos is None:
        raise InputError("tokenizer", "tokenizer has no BOS/EOS token; a CLIP tokenizer is required", None)
    return bos, eos, pad


def _finish_chunk(
    body: list[int], weights: list[float], tokenizer: Any, slots: list[tuple[str, int] | None] | None = None
) -> PromptChunk:
    bos, eos, pad = _special_ids(tokenizer)
    fill = CHUNK_LENGTH - len(body)
    tokens = [bos] + body + [eos] * fill + [eos]
    mults = [1.0] + weights + [1.0] * fill + [1.0]
    if pad != eos:
        first_eos = tokens.index(eos)
        tokens = tokens[: first_eos + 1] + [pad] * (len(tokens) - first_eos - 1)
    fixes = [(1 + i, s[0], s[1]) for i, s in enumerate(slots or []) if s is not None]
    return PromptChunk(tokens=tokens, multipliers=mults, fixes=fixes)


def empty_chunk(tokenizer: Any) -> PromptChunk:
    """The chunk of the empty prompt: [BOS] [EOS] then EOS (or the pad token) up to 77."""
    return _finish_chunk([], [], tokenizer)


def embedding_pattern(names: Sequence[str]) -> re.Pattern[str] | None:
    """The regex that finds embedding names in prompt text: whole words (no letter, digit or `_` on either
    side), case-insensitive, the longest name first (A1111 tries the longest match at each position)."""
    unique = sorted({n for n in names if n and n.strip()}, key=lambda n: (-len(n), n))
    if not unique:
        return None
    alternatives = "|".join(re.escape(n) for n in unique)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _canonical_names(names: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in names:
        out.setdefault(n.lower(), n)
    return out


def find_embedding_names(prompt: str, names: Sequence[str], emphasis: bool = True) -> list[str]:
    """Names of `names` that occur in `prompt` as `tokenize_prompt_chunks` substitutes them (per emphasis
    fragment, whole words, longest first), in order of first occurrence, each once."""
    pattern = embedding_pattern(names)
    if pattern is None:
        return []
    canonical = _canonical_names(names)
    parsed = parse_prompt_attention(prompt) if emphasis else [(prompt, 1.0)]
    found: list[str] = []
    for text, weight in parsed:
        if text == BREAK_TEXT and weight == BREAK_WEIGHT:
            continue
        for m in pattern.finditer(text):
            name = canonical[m.group(0).lower()]
            if name not in found:
                found.append(name)
    return found


def _split_fragment(
    text: str, pattern: re.Pattern[str] | None, canonical: dict[str, str]
) -> list[tuple[bool, str]]:
    """(is_embedding, text or name) pieces of one emphasis fragment."""
    if pattern is None:
        return [(False, text)]
    pieces: list[tuple[bool, str]] = []
    pos = 0
    for m in pattern.finditer(text):
        if m.start() > pos:
            pieces.append((False, text[pos : m.start()]))
        pieces.append((True, canonical[m.group(0).lower()]))
        pos = m.end()
    if pos < len(text) or not pieces:
        pieces.append((False, text[pos:]))
    return pieces


def tokenize_prompt_chunks(
    tokenizer: Any,
    prompt: str,
    comma_padding_backtrack: int = COMMA_PADDING_BACKTRACK,
    emphasis: bool = True,
    embeddings: Mapping[str, int] | None = None,
) -> list[PromptChunk]:
    """A1111 `tokenize_line`: parse emphasis, tokenize each fragment without specials, pack into chunks
    of 75 tokens (BREAK / full chunk / comma backtrack), wrap each to 77 with BOS/EOS/padding.

    `embeddings`: textual-inversion name -> vector count. Each occurrence of a name takes that many positions
    (recorded in the chunk's `fixes`), placed whole: when they do not fit the current chunk they start the
    next one, as in A1111."""
    parsed = parse_prompt_attention(prompt) if emphasis else [(prompt, 1.0)]
    counts = dict(embeddings or {})
    for name, n in counts.items():
        if not 1 <= int(n) <= CHUNK_LENGTH:
            raise InputError(
                "prompt", f"embedding {name!r} has {n} vectors; one chunk holds 1 to {CHUNK_LENGTH}", name
            )
    pattern = embedding_pattern(list(counts))
    canonical = _canonical_names(list(counts))
    # units: (token id | embedding name | None for BREAK, weight)
    pieces: list[tuple[list[tuple[bool, str]], float]] = []
    texts: list[str] = []
    for text, weight in parsed:
        if text == BREAK_TEXT and weight == BREAK_WEIGHT:
            pieces.append(([], weight))
            continue
        split = _split_fragment(text, pattern, canonical)
        pieces.append((split, weight))
        texts.extend(t for is_emb, t in split if not is_emb)
    token_lists = (
        tokenizer(texts, truncation=False, add_special_tokens=False, verbose=False)["input_ids"]
        if texts
        else []
    )
    units: list[tuple[int | str | None, float]] = []
    k = 0
    for split, weight in pieces:
        if not split:
            units.append((None, weight))
            continue
        for is_emb, t in split:
            if is_emb:
                units.append((t, weight))
            else:
                units.extend((tok, weight) for tok in token_lists[k])
                k += 1
    comma_id = tokenizer.get_vocab().get(",</w>")
    placeholder = _special_ids(tokenizer)[0]

    chunks: list[PromptChunk] = []
    body: list[int] = []
    weights: list[float] = []
    slots: list[tuple[str, int] | None] = []
    last_comma = -1

    def flush() -> None:
        nonlocal body, weights, slots, last_comma
        chunks.append(_finish_chunk(body, weights, tokenizer, slots))
        body, weights, slots, last_comma = [], [], [], -1

    for unit, weight in units:
        if unit is None:  # BREAK
            flush()
            continue
        if comma_id is not None and unit == comma_id:
            last_comma = len(body)
        elif (
            comma_padding_backtrack != 0
            and len(body) == CHUNK_LENGTH
            and last_comma != -1
            and len(body) - last_comma <= comma_padding_backtrack
        ):
            cut = last_comma + 1
            moved = body[cut:], weights[cut:], slots[cut:]
            body, weights, slots = body[:cut], weights[:cut], slots[:cut]
            flush()
            body, weights, slots = list(moved[0]), list(moved[1]), list(moved[2])
        if len(body) == CHUNK_LENGTH:
            flush()
        if isinstance(unit, str):
            n = int(counts[unit])
            if len(body) + n > CHUNK_LENGTH:
                flush()
            body.extend([placeholder] * n)
            weights.extend([weight] * n)
            slots.extend((unit, j) for j in range(n))
        else:
            body.append(unit)
            weights.append(weight)
            slots.append(None)

    if body or not chunks:
        flush()
    return chunks


# ---------------------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------------------


@dataclass
class PromptEmbeds:
    """Tensors for a diffusers pipeline call (`prompt_embeds=` etc.); pooled ones only for SDXL."""

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor | None = None
    negative_pooled_prompt_embeds: torch.Tensor | None = None

    def as_pipeline_kwargs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for `pipe(...)`, leaving out the pooled ones when absent."""
        out = {"prompt_embeds": self.prompt_embeds, "negative_prompt_embeds": self.negative_prompt_embeds}
        if self.pooled_prompt_embeds is not None:
            out["pooled_prompt_embeds"] = self.pooled_prompt_embeds
        if self.negative_pooled_prompt_embeds is not None:
            out["negative_pooled_prompt_embeds"] = self.negative_pooled_prompt_embeds
        return out


def _pad_chunks(chunks: list[PromptChunk], count: int, tokenizer: Any) -> list[PromptChunk]:
    return chunks + [empty_chunk(tokenizer) for _ in range(count - len(chunks))]


_SUBSTITUTION_LOCK = threading.Lock()


def embedding_width(text_encoder: Any) -> int:
    """Width of the encoder's token embeddings (what a textual-inversion vector for it must have)."""
    return int(text_encoder.get_input_embeddings().weight.shape[-1])


@contextmanager
def _substitute_vectors(
    text_encoder: Any, ids: torch.Tensor, chunks: list[PromptChunk], vectors: Mapping[str, torch.Tensor]
) -> Iterator[None]:
    """While active, the token-embedding layer's output for exactly `ids` has the chunks' `fixes` positions
    replaced by the embeddings' vectors (a forward hook; removed on exit)."""
    import torch

    fixes = [(row, pos, name, j) for row, c in enumerate(chunks) for pos, name, j in c.fixes]
    if not fixes:
        yield
        return
    layer = text_encoder.get_input_embeddings()
    width = embedding_width(text_encoder)
    mask = torch.zeros(ids.shape, dtype=torch.bool)
    rows = torch.zeros((*ids.shape, width), dtype=torch.float32)
    for row, pos, name, j in fixes:
        if name not in vectors:
            raise ModelError(f"embedding {name!r} has no vectors for this text encoder")
        vec = vectors[name]
        if vec.dim() != 2 or vec.shape[-1] != width:
            raise ModelError(
                f"embedding {name!r} has vectors of shape {tuple(vec.shape)}; this text encoder needs (n, {width})"
            )
        mask[row, pos] = True
        rows[row, pos] = vec[j].detach().float().cpu()
    target = ids.data_ptr()

    def hook(_module: Any, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
        called = args[0] if args else None
        if not isinstance(called, torch.Tensor) or called.data_ptr() != target or called.shape != ids.shape:
            return None  # someone else's call: leave it alone
        m = mask.to(output.device)[..., None]
        return torch.where(m, rows.to(output.device, output.dtype), output)

    with _SUBSTITUTION_LOCK:
        handle = layer.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()


def _encode_chunks(
    text_encoder: Any,
    chunks: list[PromptChunk],
    layer: Literal["last", "penultimate"] | int,
    want_pooled: bool = False,
    vectors: Mapping[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encode chunks in one batch; weight each, restore each chunk's mean; return [1, 77*n, d] and the
    first chunk's pooled `text_embeds` when asked. `vectors`: embedding name -> (n, width) for this encoder,
    put at the chunks' `fixes` positions."""
    import torch

    enc_device = text_encoder.device
    ids = torch.tensor([c.tokens for c in chunks], dtype=torch.long, device=enc_device)
    with torch.no_grad(), _substitute_vectors(text_encoder, ids, chunks, vectors or {}):
        out = text_encoder(ids, output_hidden_states=True)
        if layer == "last":
            z = out.last_hidden_state
        elif layer == "penultimate":
            z = out.hidden_states[-2]
        else:  # A1111 clip skip n > 1: hidden_states[-n] + final layer norm
            # transformers >= 5 dropped the `text_model` level of CLIPTextModel
            final_norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
            z = final_norm(out.hidden_states[-layer])
        mults = torch.tensor([c.multipliers for c in chunks], dtype=z.dtype, device=z.device).unsqueeze(-1)
        original_mean = z.mean(dim=(1, 2), keepdim=True)
        z = z * mults
        new_mean = z.mean(dim=(1, 2), keepdim=True)
        # A1111 rescales to the original mean. For an encoder whose output mean is ~0 (e.g. a random final
        # layer norm with zero bias) that ratio is noise over noise and blows up, so it is skipped there.
        scale_ref = z.abs().mean(dim=(1, 2), keepdim=True) * 1e-4
        usable = (new_mean.abs() > scale_ref) & (original_mean.abs() > scale_ref)
        z = z * torch.where(usable, original_mean / new_mean, torch.ones_like(new_mean))
        pooled = None
        if want_pooled:
            if getattr(out, "text_embeds", None) is None:
                raise ModelError(
                    f"SDXL text encoder 2 must return `text_embeds` (CLIPTextModelWithProjection), "
                    f"got {type(text_encoder).__name__}"
                )
            pooled = out.text_embeds[:1]
    return z.reshape(1, -1, z.shape[-1]), pooled


def _vector_counts(embeddings: Mapping[str, Sequence[torch.Tensor]] | None) -> dict[str, int]:
    return {name: int(vecs[0].shape[0]) for name, vecs in (embeddings or {}).items()}


def _per_encoder(
    embeddings: Mapping[str, Sequence[torch.Tensor]] | None, n_encoders: int
) -> list[dict[str, torch.Tensor]]:
    """name -> [vectors per encoder] as one {name: vectors} per encoder, after checking the counts."""
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(n_encoders)]
    for name, vecs in (embeddings or {}).items():
        if len(vecs) != n_encoders:
            raise ModelError(
                f"embedding {name!r} has vectors for {len(vecs)} text encoder(s); this model has {n_encoders}"
            )
        if len({int(v.shape[0]) for v in vecs}) != 1:
            raise ModelError(f"embedding {name!r} has a different vector count per text encoder")
        for i, v in enumerate(vecs):
            out[i][name] = v
    return out


def encode_prompt_sd15(
    tokenizer: Any,
    text_encoder: Any,
    prompt: str,
    negative_prompt: str = "",
    device: torch.device | str | None = None,
    clip_skip: int = 1,
    embeddings: Mapping[str, Sequence[torch.Tensor]] | None = None,
) -> PromptEmbeds:
    """Encode a prompt pair for SD1.x/2.x pipelines the A1111 way (emphasis, BREAK, unlimited length).

    Call `extract_lora_tags` first; tags left in the text are encoded as text. `clip_skip` counts as in
    A1111 (1 = last layer). `embeddings`: textual-inversion name -> [(n, width) vectors] (one tensor, for the
    one encoder); their names in either prompt are replaced by the vectors.
    """
    n_layers = int(text_encoder.config.num_hidden_layers)
    if not 1 <= clip_skip <= n_layers:
        raise InputError("clip_skip", f"must be in [1, {n_layers}], got {clip_skip}", clip_skip)
    per_encoder = _per_encoder(embeddings, 1)
    counts = _vector_counts(embeddings)
    pos = tokenize_prompt_chunks(tokenizer, prompt, embeddings=counts)
    neg = tokenize_prompt_chunks(tokenizer, negative_prompt, embeddings=counts)
    count = max(len(pos), len(neg))
    layer: Literal["last"] | int = "last" if clip_skip == 1 else clip_skip
    pe, _ = _encode_chunks(text_encoder, _pad_chunks(pos, count, tokenizer), layer, vectors=per_encoder[0])
    ne, _ = _encode_chunks(text_encoder, _pad_chunks(neg, count, tokenizer), layer, vectors=per_encoder[0])
    target = device if device is not None else pe.device
    return PromptEmbeds(prompt_embeds=pe.to(target), negative_prompt_embeds=ne.to(target))


def encode_prompt_sdxl(
    tokenizers: tuple[Any, Any] | list[Any],
    text_encoders: tuple[Any, Any] | list[Any],
    prompt: str,
    negative_prompt: str = "",
    device: torch.device | str | None = None,
    prompt_2: str | None = None,
    negative_prompt_2: str | None = None,
    embeddings: Mapping[str, Sequence[torch.Tensor]] | None = None,
) -> PromptEmbeds:
    """Encode a prompt pair for SDXL pipelines the A1111 way: per-encoder chunks (penultimate layer),
    features concatenated per chunk, pooled = encoder 2's `text_embeds` of the first chunk.

    `prompt_2` / `negative_prompt_2` go to encoder 2 (default: the same text). Every chunk list is padded
    with empty chunks to the longest, so all four sequences have equal length. `embeddings`: textual-inversion
    name -> [clip_l vectors (encoder 1), clip_g vectors (encoder 2)].
    """
    import torch

    if len(tokenizers) != 2 or len(text_encoders) != 2:
        raise InputError("text_encoders", f"SDXL needs 2 tokenizers and 2 encoders, got {len(text_encoders)}")
    tok1, tok2 = tokenizers
    enc1, enc2 = text_encoders
    v1, v2 = _per_encoder(embeddings, 2)
    counts = _vector_counts(embeddings)
    lists = [
        tokenize_prompt_chunks(tok1, prompt, embeddings=counts),
        tokenize_prompt_chunks(tok2, prompt if prompt_2 is None else prompt_2, embeddings=counts),
        tokenize_prompt_chunks(tok1, negative_prompt, embeddings=counts),
        tokenize_prompt_chunks(
            tok2, negative_prompt if negative_prompt_2 is None else negative_prompt_2, embeddings=counts
        ),
    ]
    count = max(len(c) for c in lists)
    p1, _ = _encode_chunks(enc1, _pad_chunks(lists[0], count, tok1), "penultimate", vectors=v1)
    p2, pooled = _encode_chunks(
        enc2, _pad_chunks(lists[1], count, tok2), "penultimate", want_pooled=True, vectors=v2
    )
    n1, _ = _encode_chunks(enc1, _pad_chunks(lists[2], count, tok1), "penultimate", vectors=v1)
    n2, npooled = _encode_chunks(
        enc2, _pad_chunks(lists[3], count, tok2), "penultimate", want_pooled=True, vectors=v2
    )
    target = device if device is not None else p1.device
    if pooled is None or npooled is None:  # _encode_chunks raises before this; keeps the types exact
        raise ModelError("SDXL text encoder 2 returned no pooled embedding")
    return PromptEmbeds(
        prompt_embeds=torch.cat([p1, p2.to(p1.device)], dim=-1).to(target),
        negative_prompt_embeds=torch.cat([n1, n2.to(n1.device)], dim=-1).to(target),
        pooled_prompt_embeds=pooled.to(target),
        negative_pooled_prompt_embeds=npooled.to(target),
    )
