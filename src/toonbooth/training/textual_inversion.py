"""Textual inversion (Gal et al. 2022, arXiv:2208.01618) and its multi-stage variant after DreamStyler
(Ahn et al. 2024, arXiv:2309.06933, "multi-stage TI"): the denoising timesteps are split into `stages`
equal ranges and each range has its own embedding of the new token(s).

Training: the token-embedding layer of each text encoder is wrapped so that the placeholder ids are
replaced by a trainable (stages, vectors, width) tensor, indexed per sample by the stage of that sample's
timestep; the frozen vocabulary is never touched (diffusers' script instead trains the whole matrix and
restores the other rows after each step — the same result for the placeholder rows). Multi-vector tokens
are named `tok`, `tok_1`, ... and expanded in prompts the way diffusers' `load_textual_inversion`
expands them; vectors start from the initializer word's embeddings the way AUTOMATIC1111 does
(`vec[i] = emb[i * len(emb) // n]`).

Inference with a multi-stage embedding (`StagedEmbedding`): the prompt is encoded once per stage, and a
`callback_on_step_end` swaps `prompt_embeds` (and SDXL's pooled `add_text_embeds`) when the next timestep
enters another stage. The stage-less A1111 file holds the mean over stages.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import InputError, ModelError
from ..models.embeddings import stage_of  # one definition shared with inference (re-exported here)
from .loop import encode_text

ENCODER_KEYS = {"sd15": ["emb_params"], "sdxl": ["clip_l", "clip_g"]}


def placeholder_tokens(trigger: str, num_vectors: int) -> list[str]:
    return [trigger] + [f"{trigger}_{i}" for i in range(1, num_vectors)]


def expand_trigger(text: str, trigger: str, num_vectors: int) -> str:
    """`trigger` -> `trigger trigger_1 ...` (whole words only), as diffusers' `maybe_convert_prompt`."""
    if num_vectors == 1:
        return text
    return re.sub(
        rf"(?<![\w<>]){re.escape(trigger)}(?![\w<>])",
        " ".join(placeholder_tokens(trigger, num_vectors)),
        text,
    )


class StagedTokenEmbedding(nn.Module):
    """A frozen token embedding whose placeholder ids read from a trainable (stages, n, width) tensor."""

    def __init__(self, base: nn.Embedding, token_ids: list[int], init: torch.Tensor, stages: int):
        super().__init__()
        self.base = base
        self.register_buffer("token_ids", torch.tensor(token_ids, dtype=torch.long), persistent=False)
        self.vectors = nn.Parameter(init.detach().float().unsqueeze(0).repeat(stages, 1, 1).clone())
        self.stage: torch.Tensor | int = 0

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.base(input_ids)
        stage = torch.as_tensor(self.stage, device=input_ids.device).long()
        if stage.dim() == 0:
            stage = stage.expand(input_ids.shape[0])
        for j in range(self.token_ids.shape[0]):
            mask = input_ids == self.token_ids[j]
            vec = self.vectors[stage, j].to(out.dtype)  # (B, width)
            out = torch.where(mask[..., None], vec[:, None, :], out)
        return out


def _add_tokens(tokenizer: Any, text_encoder: Any, tokens: list[str], field: str = "trigger") -> list[int]:
    vocab = tokenizer.get_vocab()
    known = [t for t in tokens if t in vocab or len(tokenizer(t, add_special_tokens=False).input_ids) == 1]
    if known or tokenizer.add_tokens(tokens) != len(tokens):
        raise InputError(
            field,
            f"{tokens[0]!r} is already a token of the base model's tokenizer: choose a new word",
            tokens[0],
        )
    ids = tokenizer.convert_tokens_to_ids(tokens)
    emb = text_encoder.get_input_embeddings()
    if max(ids) >= emb.num_embeddings:
        text_encoder.resize_token_embeddings(len(tokenizer))
    return list(ids)


def _initial_vectors(tokenizer: Any, embedding: nn.Embedding, word: str, n: int) -> torch.Tensor:
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if not ids:
        raise InputError("initializer_token", f"tokenizes to nothing, got {word!r}", word)
    with torch.no_grad():
        rows = embedding.weight[torch.tensor(ids, device=embedding.weight.device)].float().cpu()
    return torch.stack([rows[i * len(ids) // n] for i in range(n)])


class TextualInversionMethod:
    """New token vectors (per stage) on every text encoder of the base model."""

    def __init__(
        self,
        arch: str,
        text_encoders: list[Any],
        tokenizers: list[Any],
        *,
        trigger: str,
        num_vectors: int,
        stages: int,
        initializer_token: str,
        learning_rate: float,
        device: torch.device,
        num_train_timesteps: int,
    ):
        self.arch = arch
        self.text_encoders = text_encoders
        self.tokenizers = tokenizers
        self.trigger = trigger
        self.num_vectors = num_vectors
        self.stages = stages
        self.device = device
        self.learning_rate = learning_rate
        self.num_train_timesteps = num_train_timesteps
        self.tokens = placeholder_tokens(trigger, num_vectors)
        self.wrappers: list[StagedTokenEmbedding] = []
        for tok, te in zip(tokenizers, text_encoders, strict=True):
            te.requires_grad_(False)
            ids = _add_tokens(tok, te, self.tokens)
            base = te.get_input_embeddings()
            init = _initial_vectors(tok, base, initializer_token, num_vectors)
            wrapper = StagedTokenEmbedding(base, ids, init, stages).to(device)
            wrapper.vectors.requires_grad_(True)
            te.set_input_embeddings(wrapper)
            self.wrappers.append(wrapper)

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [w.vectors for w in self.wrappers], "lr": self.learning_rate}]

    def trainables(self) -> dict[str, torch.Tensor]:
        names = ["text_encoder", "text_encoder_2"]
        return {f"{names[i]}.vectors": w.vectors for i, w in enumerate(self.wrappers)}

    def encode(
        self, captions: list[str], timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        stage = stage_of(timesteps, self.stages, self.num_train_timesteps).to(self.device)
        for w in self.wrappers:
            w.stage = stage
        texts = [expand_trigger(c, self.trigger, self.num_vectors) for c in captions]
        return encode_text(self.arch, self.tokenizers, self.text_encoders, texts, self.device)

    def stage_vectors(self) -> dict[str, torch.Tensor]:
        """(stages, n, width) per A1111 key: `emb_params` (SD1.5) or `clip_l` / `clip_g` (SDXL)."""
        keys = ENCODER_KEYS[self.arch]
        return {k: w.vectors.detach().float().cpu().clone() for k, w in zip(keys, self.wrappers, strict=True)}

    def unwrap(self) -> None:
        """Put the original embedding layers back (their placeholder rows are set by `StagedEmbedding`)."""
        for te, w in zip(self.text_encoders, self.wrappers, strict=True):
            te.set_input_embeddings(w.base)


# --------------------------------------------------------------------------------------------------
# Inference: stage-aware prompt encoding
# --------------------------------------------------------------------------------------------------


class StagedEmbedding:
    """A (multi-stage) textual inversion ready to be put into a diffusers SD1.5 / SDXL pipeline."""

    def __init__(self, vectors: dict[str, torch.Tensor], trigger: str, num_train_timesteps: int = 1000):
        self.vectors = {k: v if v.dim() == 3 else v[None] for k, v in vectors.items()}
        self.trigger = trigger
        self.num_train_timesteps = num_train_timesteps
        first = next(iter(self.vectors.values()))
        self.stages, self.num_vectors = int(first.shape[0]), int(first.shape[1])
        self.arch = "sdxl" if "clip_l" in self.vectors else "sd15"

    @classmethod
    def from_file(cls, path: Path | str, trigger: str | None = None) -> StagedEmbedding:
        """Read a stages file (`export.save_ti_stages`) or a plain A1111 embedding (one stage)."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        if "string_to_param.*" in tensors:
            tensors = {"emb_params": tensors.pop("string_to_param.*")}
        if not (set(tensors) == {"emb_params"} or set(tensors) == {"clip_l", "clip_g"}):
            raise ModelError(f"{path}: not a textual-inversion file (keys {sorted(tensors)})")
        word = trigger or meta.get("toonbooth.trigger") or Path(path).name.split(".")[0]
        return cls(tensors, word, int(meta.get("toonbooth.num_train_timesteps", "1000")))

    def _pairs(self, pipe: Any) -> list[tuple[Any, Any, torch.Tensor]]:
        keys = ENCODER_KEYS[self.arch]
        encs = [pipe.text_encoder] + ([pipe.text_encoder_2] if self.arch == "sdxl" else [])
        toks = [pipe.tokenizer] + ([pipe.tokenizer_2] if self.arch == "sdxl" else [])
        return [(t, e, self.vectors[k]) for t, e, k in zip(toks, encs, keys, strict=True)]

    def install(self, pipe: Any) -> None:
        """Add the tokens to the pipeline's tokenizers (once) and write stage 0."""
        tokens = placeholder_tokens(self.trigger, self.num_vectors)
        for tok, enc, _ in self._pairs(pipe):
            if tokens[0] not in tok.get_vocab():
                _add_tokens(tok, enc, tokens)
        self.set_stage(pipe, 0)

    def set_stage(self, pipe: Any, stage: int) -> None:
        tokens = placeholder_tokens(self.trigger, self.num_vectors)
        for tok, enc, vec in self._pairs(pipe):
            ids = tok.convert_tokens_to_ids(tokens)
            weight = enc.get_input_embeddings().weight
            with torch.no_grad():
                weight[torch.tensor(ids, device=weight.device)] = vec[stage].to(weight.device, weight.dtype)

    def encode(
        self, pipe: Any, prompt: str, negative_prompt: str | None, guidance: float
    ) -> list[dict[str, Any]]:
        """Per stage: the keyword arguments (`prompt_embeds`, ...) a pipeline call takes."""
        device = pipe._execution_device
        cfg = guidance > 1.0
        out = []
        for k in range(self.stages):
            self.set_stage(pipe, k)
            text = expand_trigger(prompt, self.trigger, self.num_vectors)
            if self.arch == "sdxl":
                pe, npe, pp, npp = pipe.encode_prompt(
                    text, device=device, num_images_per_prompt=1, do_classifier_free_guidance=cfg,
                    negative_prompt=negative_prompt,
                )  # fmt: skip
                kw = {"prompt_embeds": pe, "pooled_prompt_embeds": pp}
                if cfg:
                    kw.update(negative_prompt_embeds=npe, negative_pooled_prompt_embeds=npp)
            else:
                pe, npe = pipe.encode_prompt(text, device, 1, cfg, negative_prompt=negative_prompt)
                kw = {"prompt_embeds": pe}
                if cfg:
                    kw["negative_prompt_embeds"] = npe
            out.append(kw)
        self.set_stage(pipe, 0)
        return out

    def generate(
        self, pipe: Any, prompt: str, *, negative_prompt: str | None = None, num_inference_steps: int = 25,
        guidance_scale: float = 7.0, generator: torch.Generator | None = None, height: int | None = None,
        width: int | None = None,
    ) -> Any:  # fmt: skip
        """Run a txt2img pipeline with the embedding of the stage of each denoising step."""
        per_stage = self.encode(pipe, prompt, negative_prompt, guidance_scale)
        pipe.scheduler.set_timesteps(num_inference_steps)
        timesteps = [int(t) for t in pipe.scheduler.timesteps]
        stages = [int(stage_of(t, self.stages, self.num_train_timesteps)) for t in timesteps]
        cfg = guidance_scale > 1.0

        def swap(_pipe: Any, i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            if i + 1 < len(stages) and stages[i + 1] != stages[i]:
                kw = per_stage[stages[i + 1]]
                pe = kw["prompt_embeds"]
                kwargs["prompt_embeds"] = torch.cat([kw["negative_prompt_embeds"], pe]) if cfg else pe
                if self.arch == "sdxl":
                    pp = kw["pooled_prompt_embeds"]
                    kwargs["add_text_embeds"] = (
                        torch.cat([kw["negative_pooled_prompt_embeds"], pp]) if cfg else pp
                    )
            return kwargs

        inputs = ["prompt_embeds"] + (["add_text_embeds"] if self.arch == "sdxl" else [])
        return pipe(
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, generator=generator,
            height=height, width=width, callback_on_step_end=swap if self.stages > 1 else None,
            callback_on_step_end_tensor_inputs=inputs, **per_stage[stages[0]],
        )  # fmt: skip
