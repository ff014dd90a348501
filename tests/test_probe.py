"""probe.py: identify model files by tensor names and shapes (never by file name); A1111 hashes."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from toonbooth.core.errors import ModelError, UnsafeModelFormatError
from toonbooth.models.probe import (
    HashCache,
    a1111_legacy_hash,
    a1111_short_hash,
    addnet_hash,
    probe_file,
    read_header,
    sha256_file,
    sha256_short,
)

# ----------------------------------------------------------------------------------------------
# Builders: a handful of each family's characteristic keys, with the shapes that matter
# ----------------------------------------------------------------------------------------------

UNET = "model.diffusion_model."


def write(path: Path, spec: dict[str, tuple[int, ...]], metadata: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: np.zeros(shape, dtype=np.float16) for k, shape in spec.items()}, str(path), metadata=metadata
    )
    return path


def sd15_checkpoint(in_ch: int = 4) -> dict[str, tuple[int, ...]]:
    return {
        UNET + "input_blocks.0.0.weight": (8, in_ch, 3, 3),
        UNET + "input_blocks.1.1.proj_in.weight": (8, 8, 1, 1),
        UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (8, 768),
        UNET + "middle_block.1.transformer_blocks.0.attn2.to_k.weight": (8, 768),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (10, 8),
        "first_stage_model.encoder.conv_in.weight": (8, 3, 3, 3),
    }


def sd2_checkpoint() -> dict[str, tuple[int, ...]]:
    return {
        UNET + "input_blocks.0.0.weight": (8, 4, 3, 3),
        UNET + "input_blocks.1.1.proj_in.weight": (8, 8),
        UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (8, 1024),
        "cond_stage_model.model.token_embedding.weight": (10, 8),
    }


def sdxl_checkpoint() -> dict[str, tuple[int, ...]]:
    return {
        UNET + "input_blocks.0.0.weight": (8, 4, 3, 3),
        UNET + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (8, 2048),
        UNET + "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight": (8, 2048),
        UNET + "label_emb.0.0.weight": (8, 2816),
        "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": (10, 8),
        "conditioner.embedders.1.model.token_embedding.weight": (10, 8),
        "conditioner.embedders.1.model.transformer.resblocks.9.attn.in_proj_weight": (24, 8),
        "first_stage_model.decoder.conv_in.weight": (8, 4, 3, 3),
    }


def sdxl_refiner_checkpoint() -> dict[str, tuple[int, ...]]:
    return {
        UNET + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (8, 1280),
        UNET + "label_emb.0.0.weight": (8, 2560),
        "conditioner.embedders.0.model.token_embedding.weight": (10, 8),
    }


def controlnet_original(prefix: str = "control_model.", ctx: int = 768) -> dict[str, tuple[int, ...]]:
    return {
        prefix + "input_hint_block.0.weight": (16, 3, 3, 3),
        prefix + "input_hint_block.14.weight": (8, 16, 3, 3),
        prefix + "zero_convs.0.0.weight": (8, 8, 1, 1),
        prefix + "middle_block_out.0.weight": (8, 8, 1, 1),
        prefix + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (8, ctx),
    }


def controlnet_diffusers_sdxl() -> dict[str, tuple[int, ...]]:
    return {
        "conv_in.weight": (8, 4, 3, 3),
        "time_embedding.linear_1.weight": (8, 8),
        "add_embedding.linear_1.weight": (8, 2816),
        "controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
        "controlnet_down_blocks.0.weight": (8, 8, 1, 1),
        "controlnet_mid_block.weight": (8, 8, 1, 1),
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (8, 2048),
    }


def controlnet_diffusers_sd15() -> dict[str, tuple[int, ...]]:
    return {
        "conv_in.weight": (8, 4, 3, 3),
        "controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
        "controlnet_down_blocks.0.weight": (8, 8, 1, 1),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": (8, 768),
    }


def lora_kohya_sd15() -> dict[str, tuple[int, ...]]:
    k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    t = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    return {
        f"{k}.lora_down.weight": (4, 768),
        f"{k}.lora_up.weight": (8, 4),
        f"{k}.alpha": (),
        f"{t}.lora_down.weight": (4, 768),
        f"{t}.lora_up.weight": (768, 4),
        f"{t}.alpha": (),
    }


def lora_kohya_sdxl() -> dict[str, tuple[int, ...]]:
    k = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"
    return {
        f"{k}.lora_down.weight": (8, 2048),
        f"{k}.lora_up.weight": (8, 8),
        f"{k}.alpha": (),
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (8, 768),
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (8, 1280),
    }


def lora_peft_sdxl() -> dict[str, tuple[int, ...]]:
    k = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    return {f"{k}.lora_A.weight": (4, 2048), f"{k}.lora_B.weight": (8, 4)}


def lora_diffusers_old_sd15() -> dict[str, tuple[int, ...]]:
    k = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora"
    return {f"{k}.down.weight": (4, 768), f"{k}.up.weight": (8, 4)}


def lora_loha_sd15() -> dict[str, tuple[int, ...]]:
    k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    return {
        f"{k}.hada_w1_a": (8, 4),
        f"{k}.hada_w1_b": (4, 768),
        f"{k}.hada_w2_a": (8, 4),
        f"{k}.hada_w2_b": (4, 768),
    }


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "arch", "inpainting"),
    [
        (sd15_checkpoint(), "sd15", False),
        (sd15_checkpoint(in_ch=9), "sd15", True),
        (sd2_checkpoint(), "sd2", False),
        (sdxl_checkpoint(), "sdxl", False),
        (sdxl_refiner_checkpoint(), "sdxl-refiner", False),
    ],
    ids=["sd15", "sd15-inpainting", "sd2", "sdxl", "sdxl-refiner"],
)
def test_checkpoints_original_layout(tmp_path: Path, spec, arch: str, inpainting: bool) -> None:
    r = probe_file(write(tmp_path / "x.safetensors", spec))
    assert (r.kind, r.arch, r.layout, r.inpainting) == ("checkpoint", arch, "original", inpainting)
    assert r.tensor_count == len(spec)
    assert r.details["arch_basis"] == "context width"


def test_sdxl_checkpoint_details(tmp_path: Path) -> None:
    r = probe_file(write(tmp_path / "x.safetensors", sdxl_checkpoint(), metadata={"modelspec.title": "t"}))
    assert r.details["context_dim"] == 2048
    assert r.details["adm_in_channels"] == 2816
    assert r.details["text_encoders"] == "clip-l+openclip-bigg"
    assert r.metadata == {"modelspec.title": "t"}
    assert r.size == (tmp_path / "x.safetensors").stat().st_size


def test_nonstandard_widths_fall_back_on_structure(tmp_path: Path) -> None:
    """A fine-tune with unusual widths (or a tiny test model): text encoders / block layout decide."""
    spec = {
        UNET + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (8, 96),
        UNET + "label_emb.0.0.weight": (8, 112),
        "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": (10, 32),
        "conditioner.embedders.1.model.token_embedding.weight": (10, 64),
    }
    r = probe_file(write(tmp_path / "a.safetensors", spec))
    assert (r.arch, r.details["arch_basis"]) == ("sdxl", "text encoders")
    unet_only = {UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (8, 32),
                 UNET + "input_blocks.1.1.proj_in.weight": (8, 8, 1, 1)}  # fmt: skip
    r = probe_file(write(tmp_path / "b.safetensors", unet_only))
    assert (r.kind, r.arch) == ("checkpoint", "sd15")
    assert r.details["arch_basis"].startswith("block structure")


def test_diffusers_layout_unet(tmp_path: Path) -> None:
    spec = {
        "conv_in.weight": (8, 9, 3, 3),
        "time_embedding.linear_1.weight": (8, 8),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": (8, 768),
    }
    r = probe_file(write(tmp_path / "unet.safetensors", spec))
    assert (r.kind, r.arch, r.layout, r.inpainting) == ("checkpoint", "sd15", "diffusers", True)


# ----------------------------------------------------------------------------------------------
# ControlNet, LoRA, embeddings, VAE
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "arch", "layout"),
    [
        (controlnet_original(), "sd15", "original"),
        (controlnet_original(prefix=""), "sd15", "original"),
        (controlnet_original(ctx=1024), "sd2", "original"),
        (controlnet_diffusers_sdxl(), "sdxl", "diffusers"),
        (controlnet_diffusers_sd15(), "sd15", "diffusers"),
    ],
    ids=["original-prefixed", "original-bare", "original-sd2", "diffusers-sdxl", "diffusers-sd15"],
)
def test_controlnets(tmp_path: Path, spec, arch: str, layout: str) -> None:
    r = probe_file(write(tmp_path / "cn.safetensors", spec))
    assert (r.kind, r.arch, r.layout) == ("controlnet", arch, layout)
    assert r.details["hint_channels"] == 3


@pytest.mark.parametrize(
    ("spec", "arch", "layout"),
    [
        (lora_kohya_sd15(), "sd15", "kohya"),
        (lora_kohya_sdxl(), "sdxl", "kohya"),
        (lora_peft_sdxl(), "sdxl", "peft"),
        (lora_diffusers_old_sd15(), "sd15", "diffusers-old"),
        (lora_loha_sd15(), "sd15", "lycoris"),
    ],
    ids=["kohya-sd15", "kohya-sdxl", "peft-sdxl", "diffusers-old", "loha"],
)
def test_loras(tmp_path: Path, spec, arch: str, layout: str) -> None:
    r = probe_file(write(tmp_path / "l.safetensors", spec))
    assert (r.kind, r.arch, r.layout) == ("lora", arch, layout)
    assert r.details["unet"] is True


def test_lora_text_encoder_only_uses_encoders(tmp_path: Path) -> None:
    te_only = {"lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 1280),
               "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 768)}  # fmt: skip
    r = probe_file(write(tmp_path / "te.safetensors", te_only))
    assert (r.kind, r.arch, r.details["arch_basis"]) == ("lora", "sdxl", "second text encoder")
    sd15_te = {"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 768)}
    assert probe_file(write(tmp_path / "te1.safetensors", sd15_te)).arch == "sd15"
    assert probe_file(write(tmp_path / "rank.safetensors", lora_kohya_sdxl())).details["rank"] == 8


@pytest.mark.parametrize(
    ("spec", "arch", "layout"),
    [
        ({"emb_params": (2, 768)}, "sd15", "a1111-sd15"),
        ({"emb_params": (3, 1024)}, "sd2", "a1111-sd15"),
        ({"string_to_param.*": (1, 768)}, "sd15", "a1111-sd15"),
        ({"clip_l": (2, 768), "clip_g": (2, 1280)}, "sdxl", "a1111-sdxl"),
        ({"<cat-toy>": (768,)}, "sd15", "diffusers"),
    ],
    ids=["sd15", "sd2", "string_to_param", "sdxl", "diffusers-token"],
)
def test_embeddings(tmp_path: Path, spec, arch: str, layout: str) -> None:
    r = probe_file(write(tmp_path / "e.safetensors", spec))
    assert (r.kind, r.arch, r.layout) == ("embedding", arch, layout)


def test_vae_and_unknown(tmp_path: Path) -> None:
    vae = {
        "encoder.conv_in.weight": (8, 3, 3, 3),
        "encoder.down.0.block.0.conv1.weight": (8, 8, 3, 3),
        "decoder.conv_in.weight": (8, 4, 3, 3),
        "quant_conv.weight": (8, 8, 1, 1),
    }
    r = probe_file(write(tmp_path / "vae.safetensors", vae))
    assert (r.kind, r.arch, r.layout) == ("vae", "unknown", "original")
    assert r.details["latent_channels"] == 4
    diff_vae = {"encoder.conv_in.weight": (8, 3, 3, 3), "encoder.down_blocks.0.resnets.0.conv1.weight": (8, 8, 3, 3),
                "decoder.conv_in.weight": (8, 4, 3, 3)}  # fmt: skip
    assert probe_file(write(tmp_path / "dvae.safetensors", diff_vae)).layout == "diffusers"
    r = probe_file(write(tmp_path / "odd.safetensors", {"foo.bar": (2,), "baz": (3, 3)}))
    assert (r.kind, r.arch, r.layout) == ("unknown", "unknown", "unknown")


def test_renamed_file_is_identified_by_keys(tmp_path: Path) -> None:
    """A LoRA called `model.safetensors` in Stable-diffusion/ is still a LoRA; a checkpoint named like a LoRA is not."""
    lora = probe_file(write(tmp_path / "Stable-diffusion" / "model.safetensors", lora_kohya_sdxl()))
    assert (lora.kind, lora.arch) == ("lora", "sdxl")
    ckpt = probe_file(write(tmp_path / "Lora" / "lora_unet_memoji.safetensors", sd15_checkpoint()))
    assert (ckpt.kind, ckpt.arch) == ("checkpoint", "sd15")


# ----------------------------------------------------------------------------------------------
# Refusals: pickle and corrupt files
# ----------------------------------------------------------------------------------------------


def test_pickle_suffixes_are_refused_without_reading(tmp_path: Path) -> None:
    for suffix in (".ckpt", ".pt", ".pth", ".bin"):
        p = tmp_path / f"model{suffix}"
        p.write_bytes(b"\x80\x02}q\x00.")
        with pytest.raises(UnsafeModelFormatError) as exc:
            probe_file(p)
        msg = str(exc.value)
        assert "never unpickles" in msg and "safetensors" in msg and "weights_only=True" in msg
        assert p.name in msg


def test_pickle_content_with_safetensors_suffix_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "renamed.safetensors"
    p.write_bytes(pickle.dumps({"state_dict": {"a": 1}}, protocol=2))
    with pytest.raises(UnsafeModelFormatError, match="pickle stream"):
        probe_file(p)
    z = tmp_path / "zipped.safetensors"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(UnsafeModelFormatError, match="zip archive"):
        probe_file(z)


def _raw(path: Path, header: bytes, data: bytes = b"", length: int | None = None) -> Path:
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + data)
    return path


def test_corrupt_headers_are_model_errors_naming_the_file(tmp_path: Path) -> None:
    good = json.dumps({"w": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]}}).encode()
    cases = {
        "short.safetensors": b"\x01\x02\x03",
        "huge.safetensors": struct.pack("<Q", 10**12) + b"{}",
        "past_end.safetensors": struct.pack("<Q", 500) + b"{}",
        "notjson.safetensors": struct.pack("<Q", 8) + b"not json",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    _raw(tmp_path / "truncated.safetensors", good, data=b"\x00" * 4)
    bad_shape = json.dumps({"w": {"dtype": "F16", "shape": [3, 3], "data_offsets": [0, 8]}}).encode()
    _raw(tmp_path / "badshape.safetensors", bad_shape, data=b"\x00" * 8)
    bad_entry = json.dumps({"w": {"dtype": "F16", "shape": "x", "data_offsets": [0, 8]}}).encode()
    _raw(tmp_path / "badentry.safetensors", bad_entry, data=b"\x00" * 8)
    _raw(tmp_path / "list.safetensors", b"[1, 2]")
    for p in sorted(tmp_path.iterdir()):
        with pytest.raises(ModelError) as exc:
            probe_file(p)
        assert not isinstance(exc.value, UnsafeModelFormatError), p.name
        assert p.name in str(exc.value)
    ok = _raw(tmp_path / "ok.safetensors", good, data=b"\x00" * 8)
    assert read_header(ok).shapes == {"w": (2, 2)}


def test_header_limit_is_enforced(tmp_path: Path) -> None:
    p = write(tmp_path / "x.safetensors", {"emb_params": (1, 768)})
    with pytest.raises(ModelError, match="limit"):
        read_header(p, max_header_bytes=16)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a file"):
        probe_file(tmp_path / "nope.safetensors")


# ----------------------------------------------------------------------------------------------
# Hashes
# ----------------------------------------------------------------------------------------------


def test_a1111_hashes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    p = tmp_path / "big.bin.safetensors"
    save_file({"w": rng.standard_normal((300_000,), dtype=np.float32)}, str(p))  # 1.2 MB > 0x110000
    data = p.read_bytes()
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()
    assert a1111_short_hash(p) == hashlib.sha256(data).hexdigest()[:10]
    assert a1111_legacy_hash(p) == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    (n,) = struct.unpack("<Q", data[:8])
    assert addnet_hash(p) == hashlib.sha256(data[8 + n :]).hexdigest()


def test_addnet_hash_ignores_metadata(tmp_path: Path) -> None:
    t = {"lora_unet_x_attn2_to_k.lora_down.weight": np.arange(8, dtype=np.float16).reshape(2, 4)}
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file(t, str(a), metadata={"ss_output_name": "one"})
    save_file(t, str(b), metadata={"ss_output_name": "two, longer"})
    assert sha256_file(a) != sha256_file(b)
    assert addnet_hash(a) == addnet_hash(b)


def test_hash_cache_sidecar_and_invalidation(tmp_path: Path) -> None:
    p = write(tmp_path / "m.safetensors", {"emb_params": (1, 768)})
    cache_dir = tmp_path / "cache"
    cache = HashCache(cache_dir)
    assert cache.cached(p) is None
    full = cache.get(p, "sha256")
    assert full == sha256_file(p)
    sidecar = cache_dir / "hashes.json"
    stored = json.loads(sidecar.read_text())["files"][str(p.resolve())]
    assert stored["sha256"] == full and stored["size"] == p.stat().st_size
    # a new cache object reads the sidecar instead of hashing
    assert HashCache(cache_dir).cached(p) == full
    assert sha256_short(p, cache_file=sidecar) == full[:10]
    # a changed file is re-hashed
    write(p, {"emb_params": (2, 768)})
    os.utime(p, ns=(1, 1))
    assert HashCache(cache_dir).cached(p) is None
    assert HashCache(cache_dir).get(p) == sha256_file(p) != full
    # a broken sidecar is only a cache miss
    sidecar.write_text("{broken")
    assert HashCache(cache_dir).get(p, "legacy") == a1111_legacy_hash(p)
