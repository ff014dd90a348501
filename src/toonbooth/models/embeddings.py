"""Textual-inversion embeddings: read the files, find them in prompts by name for a job's owner, and encode
prompts with them, per timestep stage for multi-stage embeddings.

Textual inversion: Gal et al. 2022, arXiv:2208.01618. Multi-stage textual inversion: DreamStyler, Ahn et al.
2024, arXiv:2309.06933 (the denoising timesteps split into `stages` equal ranges, each with its own embedding).

File formats (safetensors only — pickled `.pt` / `.bin` embeddings are never loaded):
* AUTOMATIC1111 SD1.x / SD2.x: `emb_params` (n, 768 | 1024) or `string_to_param.*`; like A1111, a file with
  any one 1-D / 2-D tensor (e.g. diffusers' `learned_embeds.safetensors`) is read as the embedding too.
* AUTOMATIC1111 SDXL: `clip_l` (n, 768) for text encoder 1 and `clip_g` (n, 1280) for text encoder 2.
* toonbooth multi-stage (`training/export.py` `save_ti_stages`): the same keys holding (stages, n, width)
  tensors; header keys `toonbooth.stages`, `toonbooth.num_train_timesteps`, `toonbooth.trigger`. A trained
  style's A1111 file `<base>/embeddings/<name>.safetensors` holds the mean over stages and carries
  `toonbooth.stages` in its header; its stages live in `<base>/styles/<name>/stages.safetensors`
  (`training/styles.py`). Reading the A1111 file finds and checks that companion (its stage mean must equal
  the A1111 vectors); a stages file put straight into `embeddings/` works as well.

Use in prompts, as AUTOMATIC1111's `EmbeddingDatabase`: the embeddings a job can use are the registry's
`embedding` entries visible to the job's owner (shared files plus the owner's own trained styles; another
user's never), named by file stem (a toonbooth style also answers to its trigger word). An embedding is used
where its name occurs in the positive or negative prompt as a whole word (case-insensitive, longest name
first) and its widths fit the checkpoint's text encoders; other names stay plain words (A1111 skips
embeddings of another model family the same way), with a warning. The vectors are put in by
`models.prompts` without touching the shared tokenizer or text encoder. The used files are reported as
A1111 >= 1.6 does: `TI hashes: "name: <first 12 hex of the file's sha256>"`.

Stages at inference: the prompt is encoded once per combination of stages that occurs, and the pipeline's
`callback_on_step_end` puts the embeddings of the next timestep's stage into `prompt_embeds` (and SDXL's
pooled `add_text_embeds`) whenever that stage changes — the stage of a timestep t being
`t * stages // num_train_timesteps`, as in training (`stage_of`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from ..core.errors import ModelError, UnsafeModelFormatError

if TYPE_CHECKING:
    import torch

    from .prompts import PromptEmbeds

SDXL_KEYS = ("clip_l", "clip_g")
STAGES_FOLDER = "styles"  # training/styles.py: <base>/styles/<name>/stages.safetensors
STAGES_FILE = "stages.safetensors"
_WIDTH_ARCH = {768: "sd15", 1024: "sd2"}


def stage_of(
    timesteps: torch.Tensor | float | int, stages: int, num_train_timesteps: int = 1000
) -> torch.Tensor:
    """Stage index of each timestep: stage k covers [k*T/S, (k+1)*T/S) of the T training timesteps."""
    import torch

    t = torch.as_tensor(timesteps).long()
    return torch.clamp(t * stages // num_train_timesteps, 0, stages - 1)


@dataclass(frozen=True)
class TextualInversion:
    """One embedding: per text encoder a (stages, n, width) float32 CPU tensor (stages = 1 for a plain one)."""

    name: str
    arch: str  # "sd15" | "sd2" | "sdxl" | "unknown" (an unusual width)
    layout: str  # "emb_params" | "string_to_param" | "single" | "sdxl"
    vectors: tuple[torch.Tensor, ...]
    num_train_timesteps: int = 1000
    trigger: str | None = None
    path: Path | None = None
    stages_path: Path | None = None

    @property
    def stages(self) -> int:
        return int(self.vectors[0].shape[0])

    @property
    def num_vectors(self) -> int:
        return int(self.vectors[0].shape[1])

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(int(v.shape[-1]) for v in self.vectors)

    def stage_vectors(self, stage: int) -> list[torch.Tensor]:
        """(n, width) per text encoder for one stage."""
        return [v[stage] for v in self.vectors]

    def mean_vectors(self) -> list[torch.Tensor]:
        """(n, width) per text encoder, averaged over stages (what the stage-less A1111 file holds)."""
        return [v.mean(0) for v in self.vectors]

    def stage_at(self, timestep: Any) -> int:
        return int(stage_of(timestep, self.stages, self.num_train_timesteps)) if self.stages > 1 else 0


def _as_stages(t: torch.Tensor, key: str, path: Path) -> torch.Tensor:
    if t.dim() == 1:
        t = t[None, None]
    elif t.dim() == 2:
        t = t[None]
    elif t.dim() != 3:
        raise ModelError(f"{path.name}: tensor {key!r} has shape {tuple(t.shape)}; expected (n, width)")
    if t.shape[1] < 1 or t.shape[2] < 1:
        raise ModelError(f"{path.name}: tensor {key!r} is empty ({tuple(t.shape)})")
    return t.detach().float().cpu().contiguous()


def read_embedding(path: str | Path, name: str | None = None) -> tuple[TextualInversion, dict[str, str]]:
    """Read one embedding file (any of the layouts above) and its safetensors header."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix.lower() not in (".safetensors", ".sft"):
        raise UnsafeModelFormatError(
            f"{path.name}: only safetensors embeddings are loaded (pickled .pt / .bin files run code when read)"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{path.name}: cannot read this safetensors file: {exc}") from exc
    stp = sorted(k for k in tensors if k.startswith("string_to_param."))
    if all(k in tensors for k in SDXL_KEYS):
        layout, keys = "sdxl", list(SDXL_KEYS)
    elif "emb_params" in tensors:
        layout, keys = "emb_params", ["emb_params"]
    elif stp:
        layout, keys = "string_to_param", stp[:1]
    elif len(tensors) == 1:
        layout, keys = "single", list(tensors)
    else:
        raise ModelError(f"{path.name}: not a textual-inversion embedding (tensors {sorted(tensors)[:6]})")
    vectors = tuple(_as_stages(tensors[k], k, path) for k in keys)
    if len({(int(v.shape[0]), int(v.shape[1])) for v in vectors}) != 1:
        raise ModelError(
            f"{path.name}: clip_l and clip_g differ in stages / vector count "
            f"({[tuple(v.shape) for v in vectors]})"
        )
    if layout == "sdxl":
        arch = "sdxl"
    else:
        arch = _WIDTH_ARCH.get(int(vectors[0].shape[-1]), "unknown")
    try:
        steps = int(meta.get("toonbooth.num_train_timesteps", "1000"))
    except ValueError:
        steps = 1000
    ti = TextualInversion(
        name=name or path.stem, arch=arch, layout=layout, vectors=vectors, num_train_timesteps=max(1, steps),
        trigger=meta.get("toonbooth.trigger") or None, path=path,
    )  # fmt: skip
    return ti, meta


def stages_companion(path: Path) -> Path:
    """Where a trained style keeps the stages of `<base>/embeddings/<name>.safetensors`."""
    return path.parent.parent / STAGES_FOLDER / path.stem / STAGES_FILE


def load_embedding(path: str | Path, name: str | None = None) -> tuple[TextualInversion, list[str]]:
    """Read an embedding; for a stage-less file of a multi-stage style, its stages from the style folder.

    Returns the embedding and warnings (a multi-stage style whose stages cannot be used runs on the mean)."""
    import torch

    ti, meta = read_embedding(path, name)
    try:
        wanted = int(meta.get("toonbooth.stages", "1"))
    except ValueError:
        wanted = 1
    if ti.stages > 1 or wanted <= 1:
        return ti, []
    companion = stages_companion(Path(path))
    problem = None
    if not companion.is_file():
        problem = f"its {wanted} stages file is missing ({companion.parent.name}/{companion.name})"
    else:
        try:
            staged, _ = read_embedding(companion, ti.name)
        except ModelError as exc:
            problem = f"its stages file cannot be read ({exc})"
        else:
            same_shape = staged.widths == ti.widths and staged.num_vectors == ti.num_vectors
            if not same_shape or staged.stages != wanted:
                problem = (
                    f"its stages file does not match it ({staged.stages} stages, widths {staged.widths})"
                )
            elif not all(
                torch.allclose(m, f[0], atol=1e-5, rtol=1e-4)
                for m, f in zip(staged.mean_vectors(), ti.vectors, strict=True)
            ):
                problem = "its stages file belongs to another training run (the stage mean differs)"
            else:
                return TextualInversion(
                    name=ti.name, arch=ti.arch, layout=ti.layout, vectors=staged.vectors,
                    num_train_timesteps=staged.num_train_timesteps, trigger=ti.trigger, path=ti.path,
                    stages_path=companion,
                ), []  # fmt: skip
    return ti, [
        f"embedding {ti.name!r} was trained with {wanted} stages but {problem}: its mean vectors were used"
    ]


# --------------------------------------------------------------------------------------------------
# The embeddings of a prompt
# --------------------------------------------------------------------------------------------------


class EmbeddingUse(BaseModel):
    """An embedding a job used (goes into the job's `info`)."""

    name: str = Field(description="Embedding name (file stem), as in A1111's `TI hashes`.")
    hash: str | None = Field(None, description="A1111 short hash: first 12 hex of the file's sha256.")
    vectors: int = Field(description="Token positions it takes in the prompt per occurrence.")
    stages: int = Field(1, description="Timestep stages applied (1 = a plain embedding).")
    own: bool = Field(False, description="One of the job owner's own styles (not a shared file).")


@dataclass
class PromptEmbeddings:
    """The embeddings a job's prompts use (in order of first appearance) and the prompt words naming them."""

    items: list[TextualInversion] = field(default_factory=list)
    uses: list[EmbeddingUse] = field(default_factory=list)
    words: dict[str, int] = field(default_factory=dict)  # word as matched -> index into items
    warnings: list[str] = field(default_factory=list)

    @property
    def multi_stage(self) -> bool:
        return any(ti.stages > 1 for ti in self.items)

    def key_at(self, timestep: Any) -> tuple[int, ...]:
        """The stage of every embedding at this timestep."""
        return tuple(ti.stage_at(timestep) for ti in self.items)

    def vectors(self, key: tuple[int, ...] | None = None) -> dict[str, list[torch.Tensor]]:
        """word -> (n, width) per text encoder at the stages `key` (default: stage 0 of each), the
        `embeddings=` argument of `prompts.encode_prompt_sd15` / `encode_prompt_sdxl`."""
        key = key or (0,) * len(self.items)
        return {w: self.items[i].stage_vectors(key[i]) for w, i in self.words.items()}

    def ti_hashes(self) -> str | None:
        """A1111's `TI hashes` infotext value, e.g. `style: 0123456789ab, neg: ba9876543210`."""
        if not self.uses:
            return None
        return ", ".join(f"{u.name.replace(':', '').replace(',', '')}: {u.hash or 'none'}" for u in self.uses)

    def info(self) -> list[dict[str, Any]]:
        return [u.model_dump() for u in self.uses]


def _candidates(models: Any, owner: str | None) -> dict[str, list[Any]]:
    """lower-case name -> the embedding entries of that name visible to `owner`, in order of preference: the
    owner's own first, then single files by shortest relative path (the registry's own order)."""
    entries = models.registry.list(kind="embedding", owner=owner, include_refused=True)
    entries = sorted(
        entries,
        key=lambda e: (
            owner is None or e.owner != owner, e.source != "folder", len(e.relpath or ""), str(e.path),
        ),
    )  # fmt: skip
    out: dict[str, list[Any]] = {}
    for e in entries:
        if e.path is not None:
            out.setdefault(e.name.lower(), []).append(e)
    return out


def resolve_prompt_embeddings(
    models: Any, texts: Sequence[str], widths: Sequence[int], owner: str | None = None
) -> PromptEmbeddings:
    """The embeddings named in `texts` (prompt, negative prompt, ...) that fit text encoders of `widths`.

    `models` is the job's `ModelManager` (its registry, and `load_embedding` for cached files). Of several
    files of one name the first that fits is used (A1111 loads only the embeddings that fit the model). A name
    that is visible but unusable here (another model family, an unreadable or pickled file) stays plain words
    and gets a warning."""
    from .prompts import find_embedding_names

    out = PromptEmbeddings()
    # lower-case word -> (entry, embedding, its warnings, the word as written)
    fitting: dict[str, tuple[Any, TextualInversion, list[str], str]] = {}
    unusable: dict[str, str] = {}  # name -> why
    for key, entries in _candidates(models, owner).items():
        reasons: list[str] = []
        for entry in entries:
            if entry.refused:
                reasons.append(f"was not loaded ({entry.refused})")
                continue
            try:
                ti, notes = models.load_embedding(entry)
            except ModelError as exc:
                reasons.append(f"was not loaded ({exc})")
                continue
            if ti.widths != tuple(widths):
                family = (
                    ti.arch
                    if ti.arch != "unknown"
                    else "text encoders of width " + "/".join(map(str, ti.widths))
                )
                reasons.append(f"is for {family}, not this checkpoint")
                continue
            fitting[key] = (entry, ti, notes, entry.name)
            break
        else:
            unusable[entries[0].name] = reasons[0]
    # a style's trigger word names it too, unless it is the name of another file
    for entry, ti, notes, _ in list(fitting.values()):
        alias = (ti.trigger or "").strip()
        if alias and alias.lower() not in fitting and alias.lower() not in {n.lower() for n in unusable}:
            fitting.setdefault(alias.lower(), (entry, ti, notes, alias))

    words = [w for *_, w in fitting.values()]
    index: dict[str, int] = {}
    for text in texts:
        for word in find_embedding_names(text, words):
            entry, ti, notes, _ = fitting[word.lower()]
            where = str(entry.path)
            if where not in index:
                index[where] = len(out.items)
                out.items.append(ti)
                out.warnings.extend(notes)
                try:
                    digest: str | None = models.registry.sha256(entry)[:12]
                except ModelError:
                    digest = None
                out.uses.append(
                    EmbeddingUse(
                        name=entry.name,
                        hash=digest,
                        vectors=ti.num_vectors,
                        stages=ti.stages,
                        own=owner is not None and entry.owner == owner,
                    )  # fmt: skip
                )
            out.words[word] = index[where]

    # names that look meant but cannot be used here
    mentioned: list[str] = []
    for text in texts:
        mentioned += [n for n in find_embedding_names(text, list(unusable)) if n not in mentioned]
    out.warnings += [f"embedding {n!r} {unusable[n]}: its name was read as plain words" for n in mentioned]
    return out


# --------------------------------------------------------------------------------------------------
# Prompt embeddings per stage, and the step callback that swaps them
# --------------------------------------------------------------------------------------------------


def loop_timesteps(scheduler: Any, steps: int, strength: float | None = None) -> list[float]:
    """The timesteps a diffusers pipeline's denoising loop walks (img2img skips the first ones, as
    `get_timesteps` does), from a fresh copy of `scheduler`."""
    sched = type(scheduler).from_config(scheduler.config)
    sched.set_timesteps(steps, device="cpu")
    full = [float(t) for t in sched.timesteps]
    if strength is not None:
        t_start = max(steps - min(int(steps * strength), steps), 0)
        full = full[t_start * getattr(sched, "order", 1) :] or full[-1:]
    return full


class StagedPromptEmbeds:
    """A job's prompt embeddings (`models.prompts` A1111 encoding with the prompt's embeddings), one set per
    combination of embedding stages, encoded when first needed."""

    def __init__(
        self, encode: Callable[[dict[str, list[torch.Tensor]]], PromptEmbeds], embeddings: PromptEmbeddings,
        dtype: torch.dtype | None = None,
    ):  # fmt: skip
        self._encode = encode
        self.embeddings = embeddings
        self.dtype = dtype
        self._cache: dict[tuple[int, ...], PromptEmbeds] = {}
        self.embeds()  # encode now: bad prompts / settings fail before denoising

    @property
    def multi_stage(self) -> bool:
        return self.embeddings.multi_stage

    def embeds(self, key: tuple[int, ...] | None = None) -> PromptEmbeds:
        key = key if key is not None else (0,) * len(self.embeddings.items)
        if key not in self._cache:
            self._cache[key] = self._encode(self.embeddings.vectors(key))
        return self._cache[key]

    def kwargs(self, key: tuple[int, ...] | None = None) -> dict[str, torch.Tensor]:
        """`prompt_embeds=` etc. for a pipeline call, in the job's dtype."""
        out = self.embeds(key).as_pipeline_kwargs()
        return {k: v.to(self.dtype) if self.dtype is not None else v for k, v in out.items()}

    def first_kwargs(
        self, scheduler: Any, steps: int, strength: float | None = None
    ) -> dict[str, torch.Tensor]:
        """The keyword arguments for a call whose loop starts at the first timestep of this schedule."""
        if not self.multi_stage:
            return self.kwargs()
        return self.kwargs(self.embeddings.key_at(loop_timesteps(scheduler, steps, strength)[0]))

    def tensor_inputs(self, pipe: Any) -> list[str]:
        """`callback_on_step_end_tensor_inputs` the swapping callback needs from `pipe`."""
        if not self.multi_stage:
            return ["latents"]
        allowed = set(getattr(pipe, "_callback_tensor_inputs", []))
        return ["latents", "prompt_embeds"] + (["add_text_embeds"] if "add_text_embeds" in allowed else [])

    def callback(self, inner: Callable[..., dict[str, Any]] | None = None) -> Callable[..., dict[str, Any]]:
        """A `callback_on_step_end` that runs `inner` and then, for multi-stage embeddings, puts the next
        step's stage embeddings into the pipeline when its stage differs from this step's."""

        def on_step_end(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            if inner is not None:
                kwargs = inner(pipe, i, t, kwargs)
            if not self.multi_stage:
                return kwargs
            full = pipe.scheduler.timesteps
            n = int(getattr(pipe, "_num_timesteps", 0) or len(full))
            nxt = len(full) - n + i + 1
            if 0 <= nxt < len(full):
                now_key, next_key = self.embeddings.key_at(t), self.embeddings.key_at(full[nxt])
                if next_key != now_key:
                    self._swap(pipe, kwargs, next_key)
            return kwargs

        return on_step_end

    def _swap(self, pipe: Any, kwargs: dict[str, Any], key: tuple[int, ...]) -> None:
        import torch

        if "prompt_embeds" not in kwargs:
            raise ModelError(
                "multi-stage embeddings need `prompt_embeds` in callback_on_step_end_tensor_inputs"
            )
        e = self.embeds(key)
        cur = kwargs["prompt_embeds"]
        cfg = bool(getattr(pipe, "do_classifier_free_guidance", False))
        batch = cur.shape[0] // (2 if cfg else 1)

        def layout(pos: torch.Tensor, neg: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
            x = pos.expand(batch, *pos.shape[1:])
            if cfg and neg is not None:
                x = torch.cat([neg.expand(batch, *neg.shape[1:]), x])
            return x.to(like.device, like.dtype)

        kwargs["prompt_embeds"] = layout(e.prompt_embeds, e.negative_prompt_embeds, cur)
        pooled = kwargs.get("add_text_embeds")
        if pooled is not None and e.pooled_prompt_embeds is not None:
            # in place as well: SDXL ControlNet-inpaint does not read `add_text_embeds` back from the callback
            pooled.copy_(layout(e.pooled_prompt_embeds, e.negative_pooled_prompt_embeds, pooled))
            kwargs["add_text_embeds"] = pooled


def text_encoder_widths(pipe: Any, arch: str) -> list[int]:
    from .prompts import embedding_width

    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if arch == "sdxl" else [])
    return [embedding_width(te) for te in encoders]


def encode_job_prompts(
    pipe: Any, arch: str, prompt: str, negative_prompt: str, embeddings: PromptEmbeddings, *,
    device: Any = None, dtype: torch.dtype | None = None, clip_skip: int = 1,
) -> StagedPromptEmbeds:  # fmt: skip
    """A1111-syntax encoding of a job's prompts with its embeddings (`prompts.encode_prompt_sd15` /
    `encode_prompt_sdxl` on `pipe`'s tokenizers and encoders), per stage where needed."""
    from .prompts import encode_prompt_sd15, encode_prompt_sdxl

    def encode(vectors: dict[str, list[torch.Tensor]]) -> PromptEmbeds:
        if arch == "sdxl":
            return encode_prompt_sdxl(
                [pipe.tokenizer, pipe.tokenizer_2], [pipe.text_encoder, pipe.text_encoder_2], prompt,
                negative_prompt, device, embeddings=vectors,
            )  # fmt: skip
        return encode_prompt_sd15(
            pipe.tokenizer, pipe.text_encoder, prompt, negative_prompt, device, clip_skip=clip_skip,
            embeddings=vectors,
        )  # fmt: skip

    return StagedPromptEmbeds(encode, embeddings, dtype)


__all__ = [
    "EmbeddingUse",
    "PromptEmbeddings",
    "StagedPromptEmbeds",
    "TextualInversion",
    "encode_job_prompts",
    "load_embedding",
    "loop_timesteps",
    "read_embedding",
    "resolve_prompt_embeddings",
    "stage_of",
    "stages_companion",
    "text_encoder_widths",
]
