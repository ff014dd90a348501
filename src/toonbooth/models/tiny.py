"""Tiny random-weight versions of the real model classes, built from configs (like diffusers'
`get_dummy_components()`), so every neural code path runs on CPU with no download.

These builders are part of the package (not only the tests): `toonbooth models make-tiny DIR` writes
a complete tiny model set in AUTOMATIC1111 folder layout.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_VOCAB_SIZE = 1000  # >= 256*2 byte tokens + specials; extra ids are unused


def byte_level_vocab() -> dict[str, int]:
    """CLIP byte-level vocabulary of the 256 byte characters and their `</w>` forms, plus specials."""
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def make_tiny_clip_tokenizer(save_dir: str | Path | None = None):
    """An offline CLIPTokenizer (no merges: one token per character), model_max_length=77."""
    import tempfile

    from transformers import CLIPTokenizer

    vocab = byte_level_vocab()
    with tempfile.TemporaryDirectory() as tmp:
        vf = Path(tmp) / "vocab.json"
        mf = Path(tmp) / "merges.txt"
        vf.write_text(json.dumps(vocab), encoding="utf-8")
        mf.write_text("#version: 0.2\n", encoding="utf-8")
        tok = CLIPTokenizer(str(vf), str(mf), model_max_length=77, pad_token="<|endoftext|>")
        if save_dir is not None:
            tok.save_pretrained(str(save_dir))
    return tok


def tiny_clip_text_config(hidden_size: int = 32, projection_dim: int = 32, vocab_size: int | None = None):
    from transformers import CLIPTextConfig

    vocab = byte_level_vocab()
    return CLIPTextConfig(
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        hidden_size=hidden_size,
        intermediate_size=37,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=vocab_size or TINY_VOCAB_SIZE,
        projection_dim=projection_dim,
        hidden_act="gelu",
        max_position_embeddings=77,
    )


def make_tiny_text_encoder(hidden_size: int = 32, with_projection: bool = False, seed: int = 0):
    """CLIPTextModel (SD1.5 / SDXL encoder 1) or CLIPTextModelWithProjection (SDXL encoder 2)."""
    import torch
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = tiny_clip_text_config(hidden_size=hidden_size, projection_dim=hidden_size)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(cfg).eval()
