"""Tiny SD1.5 / SDXL builders and the single-file / LoRA / embedding writers, checked against diffusers' own
loaders (`from_single_file`, `load_lora_weights`, `load_textual_inversion`) on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

import diffusers
from diffusers.utils import logging as diffusers_logging
from safetensors import safe_open
from safetensors.torch import load_file

from toonbooth.core.errors import InputError
from toonbooth.models import convert, tiny

diffusers_logging.set_verbosity_error()

PROMPT = "a smiling cartoon face"


def _run(pipe, **kwargs) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    kwargs.setdefault("num_inference_steps", 2)
    return pipe(PROMPT, generator=torch.Generator().manual_seed(0), output_type="np", **kwargs).images


def _assert_same_weights(loaded, original, name: str) -> None:
    a, b = loaded.state_dict(), original.state_dict()
    # transformers >= 5.6 flattened CLIPTextModel; compare on keys without the `text_model.` level
    a = {k.removeprefix("text_model."): v for k, v in a.items() if not k.endswith("position_ids")}
    b = {k.removeprefix("text_model."): v for k, v in b.items() if not k.endswith("position_ids")}
    assert a.keys() == b.keys(), name
    bad = [k for k in b if not torch.equal(a[k], b[k])]
    assert not bad, f"{name}: {len(bad)} tensors differ, e.g. {bad[:3]}"


@pytest.fixture(scope="module")
def sdxl() -> dict:
    return tiny.build_tiny_sdxl(seed=0)


@pytest.fixture(scope="module")
def sd15() -> dict:
    return tiny.build_tiny_sd15(seed=0)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> dict[str, Path]:
    return tiny.make_tiny_set(tmp_path_factory.mktemp("models"), seed=0)


@pytest.fixture(scope="module")
def image64():
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))


# --- builders -------------------------------------------------------------------------------------------


def test_tiny_sdxl_config_follows_sdxl_rules(sdxl):
    unet, te1, te2 = sdxl["unet"].config, sdxl["text_encoder"].config, sdxl["text_encoder_2"].config
    assert unet.addition_embed_type == "text_time"
    assert unet.cross_attention_dim == te1.hidden_size + te2.hidden_size
    assert unet.projection_class_embeddings_input_dim == 6 * unet.addition_time_embed_dim + te2.projection_dim
    assert sdxl["vae"].config.scaling_factor == pytest.approx(0.13025)
    assert 2 ** (len(sdxl["vae"].config.block_out_channels) - 1) == 8
    assert sdxl["scheduler"].config.timestep_spacing == "leading"


def test_tiny_sdxl_img2img_and_controlnet_img2img(sdxl, image64):
    cn = tiny.build_tiny_controlnet(sdxl["unet"], seed=1)
    img2img = diffusers.StableDiffusionXLImg2ImgPipeline(**sdxl)
    square = image64.crop((0, 0, 64, 64))
    assert _run(img2img, image=square, strength=0.8).shape == (1, 64, 64, 3)
    assert _run(img2img, image=image64, strength=0.8).shape == (1, 64, 96, 3)

    pipe = diffusers.StableDiffusionXLControlNetImg2ImgPipeline(**sdxl, controlnet=cn)
    on = _run(pipe, image=image64, control_image=image64, strength=0.8)
    off = _run(pipe, image=image64, control_image=image64, strength=0.8, controlnet_conditioning_scale=0.0)
    assert on.shape == (1, 64, 96, 3)
    assert np.abs(on - off).max() > 1e-2  # the non-zero zero-convs make the hint matter


def test_tiny_sd15_pipelines(sd15, image64):
    assert _run(diffusers.StableDiffusionPipeline(**sd15)).shape == (1, 64, 64, 3)
    assert _run(diffusers.StableDiffusionImg2ImgPipeline(**sd15), image=image64).shape == (1, 64, 96, 3)
    cn = tiny.build_tiny_controlnet(sd15["unet"], seed=2)
    pipe = diffusers.StableDiffusionControlNetImg2ImgPipeline(**sd15, controlnet=cn)
    assert _run(pipe, image=image64, control_image=image64).shape == (1, 64, 96, 3)

    inpaint = tiny.build_tiny_sd15(seed=0, inpaint=True)
    assert inpaint["unet"].config.in_channels == 9
    from PIL import Image

    mask = Image.new("L", image64.size, 0)
    mask.paste(255, (16, 16, 48, 48))
    pipe = diffusers.StableDiffusionInpaintPipeline(**inpaint)
    out = _run(pipe, image=image64, mask_image=mask, height=64, width=96)
    assert out.shape == (1, 64, 96, 3)


def test_builders_are_deterministic(sd15):
    again = tiny.build_tiny_sd15(seed=0)
    for name in ("unet", "vae", "text_encoder"):
        _assert_same_weights(again[name], sd15[name], name)
    other = tiny.build_tiny_sd15(seed=1)
    assert not torch.equal(other["unet"].conv_in.weight, sd15["unet"].conv_in.weight)


# --- single-file checkpoints ----------------------------------------------------------------------------


def test_sdxl_single_file_round_trip(sdxl, tiny_set):
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    ckpt = load_file(str(tiny_set["sdxl"]))
    # original SGM key layout, recognised by diffusers' own probe as SDXL base
    assert "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight" in ckpt
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in ckpt
    assert ckpt["conditioner.embedders.1.model.text_projection"].shape == (64, 64)
    assert "model.diffusion_model.label_emb.0.0.weight" in ckpt
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in ckpt
    assert ckpt["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4
    assert infer_diffusers_model_type(ckpt) == "xl_base"

    loaded = diffusers.StableDiffusionXLPipeline.from_single_file(
        str(tiny_set["sdxl"]), config=str(tiny_set["config-sdxl"]), local_files_only=True
    )
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        _assert_same_weights(getattr(loaded, name), sdxl[name], name)
    base = _run(diffusers.StableDiffusionXLPipeline(**sdxl))
    assert np.allclose(_run(loaded), base, atol=1e-6)


@pytest.mark.parametrize("name,inpaint", [("sd15", False), ("sd15-inpainting", True)])
def test_sd15_single_file_round_trip(name, inpaint, tiny_set, sd15):
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    original = tiny.build_tiny_sd15(seed=0, inpaint=True) if inpaint else sd15
    ckpt = load_file(str(tiny_set[name]))
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in ckpt
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" in ckpt  # upsampler after a plain block
    assert infer_diffusers_model_type(ckpt) == ("inpainting" if inpaint else "v1")

    cls = diffusers.StableDiffusionInpaintPipeline if inpaint else diffusers.StableDiffusionPipeline
    loaded = cls.from_single_file(
        str(tiny_set[name]), config=str(tiny_set[f"config-{name}"]), local_files_only=True
    )
    for comp in ("unet", "vae", "text_encoder"):
        _assert_same_weights(getattr(loaded, comp), original[comp], comp)
    if not inpaint:
        assert np.allclose(_run(loaded), _run(cls(**original)), atol=1e-6)


def test_single_file_rejects_unknown_arch(sd15, tmp_path):
    with pytest.raises(InputError, match="arch"):
        convert.write_single_file(sd15, tmp_path / "x.safetensors", arch="sd3")
    with pytest.raises(InputError, match="text_encoder_2"):
        convert.write_single_file(sd15, tmp_path / "x.safetensors", arch="sdxl")


# --- ControlNet files -----------------------------------------------------------------------------------


def test_controlnet_single_files_load_back(sdxl, sd15, tiny_set):
    cn_sdxl = tiny.build_tiny_controlnet(sdxl["unet"], seed=10)
    cn_sd15 = tiny.build_tiny_controlnet(sd15["unet"], seed=11)

    with safe_open(str(tiny_set["controlnet-sd15-canny"]), "pt") as f:
        keys = set(f.keys())
    assert {
        "control_model.input_hint_block.0.weight",
        "control_model.input_hint_block.14.weight",
        "control_model.zero_convs.0.0.weight",
        "control_model.middle_block_out.0.weight",
    } <= keys

    # both layouts load through diffusers' single-file loader when given the config folder
    for key, ref in (("controlnet-sdxl-canny", cn_sdxl), ("controlnet-sd15-canny", cn_sd15)):
        cfg = tiny_set["config-" + key.removesuffix("-canny")]
        loaded = diffusers.ControlNetModel.from_single_file(
            str(tiny_set[key]), config=str(cfg), local_files_only=True
        )
        _assert_same_weights(loaded, ref, key)

    # diffusers layout: rebuild the config from the header shapes + the base UNet config
    with safe_open(str(tiny_set["controlnet-sdxl-canny"]), "pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    cfg = convert.controlnet_config_from_state_dict(shapes, dict(sdxl["unet"].config))
    rebuilt = diffusers.ControlNetModel(**cfg)
    rebuilt.load_state_dict(load_file(str(tiny_set["controlnet-sdxl-canny"])), strict=True)
    _assert_same_weights(rebuilt, cn_sdxl, "rebuilt")

    with pytest.raises(InputError, match="layout"):
        convert.write_controlnet_single_file(
            cn_sd15, tiny_set["sd15"].parent / "x.safetensors", layout="ckpt"
        )


# --- LoRA -----------------------------------------------------------------------------------------------


def test_sdxl_lora_peft_and_kohya_files(sdxl, tiny_set, tmp_path):
    with safe_open(str(tiny_set["lora-memoji"]), "pt") as f:
        kohya_keys = set(f.keys())
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in kohya_keys
    assert "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_out_0.alpha" in kohya_keys

    # same seed -> same weights in both layouts
    peft_path = tiny.write_tiny_lora(sdxl["unet"], tmp_path / "p.safetensors", layout="peft", seed=7)
    kohya_path = tiny.write_tiny_lora(sdxl["unet"], tmp_path / "k.safetensors", layout="kohya", seed=7)
    before = {k: v.clone() for k, v in sdxl["unet"].state_dict().items()}

    pipe = diffusers.StableDiffusionXLPipeline(**tiny.build_tiny_sdxl(seed=0))
    base = _run(pipe)
    pipe.load_lora_weights(str(peft_path), adapter_name="peft")
    pipe.load_lora_weights(str(kohya_path), adapter_name="kohya")
    pipe.set_adapters(["peft"], [0.0])
    assert np.allclose(_run(pipe), base, atol=1e-6)
    pipe.set_adapters(["peft"], [1.0])
    with_peft = _run(pipe)
    assert np.abs(with_peft - base).max() > 1e-2
    pipe.set_adapters(["kohya"], [1.0])
    assert np.allclose(_run(pipe), with_peft, atol=1e-5)
    # the given UNet was not touched
    assert sdxl["unet"].state_dict().keys() == before.keys()


def test_sd15_lora_with_text_encoder(sd15, tmp_path):
    tes = {"text_encoder": sd15["text_encoder"]}
    peft_path = tiny.write_tiny_lora(
        sd15["unet"], tmp_path / "p.safetensors", "peft", seed=3, text_encoders=tes
    )
    kohya_path = tiny.write_tiny_lora(
        sd15["unet"], tmp_path / "k.safetensors", "kohya", seed=3, text_encoders=tes
    )
    with safe_open(str(kohya_path), "pt") as f:
        keys = set(f.keys())
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight" in keys
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in keys

    pipe = diffusers.StableDiffusionPipeline(**tiny.build_tiny_sd15(seed=0))
    base = _run(pipe)
    emb0 = pipe.encode_prompt(PROMPT, "cpu", 1, False)[0]
    pipe.load_lora_weights(str(peft_path), adapter_name="peft")
    pipe.load_lora_weights(str(kohya_path), adapter_name="kohya")
    pipe.set_adapters(["peft"], [0.0])
    assert np.allclose(_run(pipe), base, atol=1e-6)
    pipe.set_adapters(["peft"], [1.0])
    emb_peft = pipe.encode_prompt(PROMPT, "cpu", 1, False)[0]
    assert (emb_peft - emb0).abs().max() > 1e-3  # the text-encoder part is live
    with_peft = _run(pipe)
    assert np.abs(with_peft - base).max() > 1e-2
    pipe.set_adapters(["kohya"], [1.0])
    assert torch.allclose(pipe.encode_prompt(PROMPT, "cpu", 1, False)[0], emb_peft, atol=1e-5)
    assert np.allclose(_run(pipe), with_peft, atol=1e-5)


def test_lora_writer_validates(sd15, tmp_path):
    with pytest.raises(InputError, match="layout"):
        tiny.write_tiny_lora(sd15["unet"], tmp_path / "x.safetensors", layout="lycoris")
    with pytest.raises(InputError, match="text_encoders"):
        tiny.write_tiny_lora(sd15["unet"], tmp_path / "x.safetensors", text_encoders={"text_encoder_2": None})


# --- textual inversion ----------------------------------------------------------------------------------


def test_textual_inversion_files_load(tiny_set):
    emb = load_file(str(tiny_set["embedding-sd15"]))
    assert set(emb) == {"emb_params"} and emb["emb_params"].shape == (2, 32)
    pipe = diffusers.StableDiffusionPipeline(**tiny.build_tiny_sd15(seed=0))
    pipe.load_textual_inversion(str(tiny_set["embedding-sd15"]), token="<tiny>")
    ids = pipe.tokenizer.convert_tokens_to_ids(["<tiny>", "<tiny>_1"])
    table = pipe.text_encoder.get_input_embeddings().weight
    assert torch.equal(table[ids[0]], emb["emb_params"][0]) and torch.equal(
        table[ids[1]], emb["emb_params"][1]
    )

    xl = load_file(str(tiny_set["embedding-sdxl"]))
    assert xl["clip_l"].shape == (2, 32) and xl["clip_g"].shape == (2, 64)
    px = diffusers.StableDiffusionXLPipeline(**tiny.build_tiny_sdxl(seed=0))
    px.load_textual_inversion(
        xl["clip_l"], token="<tx>", text_encoder=px.text_encoder, tokenizer=px.tokenizer
    )
    px.load_textual_inversion(
        xl["clip_g"], token="<tx>", text_encoder=px.text_encoder_2, tokenizer=px.tokenizer_2
    )
    gid = px.tokenizer_2.convert_tokens_to_ids("<tx>_1")
    assert torch.equal(px.text_encoder_2.get_input_embeddings().weight[gid], xl["clip_g"][1])


# --- the whole set --------------------------------------------------------------------------------------


def test_make_tiny_set_writes_every_file(tiny_set, sdxl):
    root = tiny_set["sdxl"].parents[1]
    expected = [
        "Stable-diffusion/tiny-sdxl.safetensors",
        "Stable-diffusion/tiny-sd15.safetensors",
        "Stable-diffusion/tiny-sd15-inpainting.safetensors",
        "ControlNet/tiny-sdxl-canny.safetensors",
        "ControlNet/tiny-sd15-canny.safetensors",
        "Lora/tiny-memoji.safetensors",
        "Lora/tiny-sdxl-style-peft.safetensors",
        "Lora/tiny-sd15-style.safetensors",
        "embeddings/tiny-sd15-emb.safetensors",
        "embeddings/tiny-sdxl-emb.safetensors",
    ]
    for rel in expected:
        path = root / rel
        assert path in tiny_set.values(), rel
        with safe_open(str(path), "pt") as f:  # a valid safetensors file with tensors in it
            assert len(list(f.keys())) > 0, rel
    for name in ("config-sdxl", "config-sd15", "config-sd15-inpainting"):
        folder = tiny_set[name]
        assert (folder / "model_index.json").is_file() and (folder / "unet" / "config.json").is_file()
        assert (folder / "scheduler" / "scheduler_config.json").is_file()
        assert not [p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin")], name
    assert json.loads((tiny_set["config-sdxl"] / "unet" / "config.json").read_text())[
        "addition_embed_type"
    ] == ("text_time")
    for name in ("config-controlnet-sdxl", "config-controlnet-sd15"):
        assert (tiny_set[name] / "config.json").is_file()

    folder = diffusers.StableDiffusionXLPipeline.from_pretrained(
        str(tiny_set["diffusers-sdxl"]), local_files_only=True
    )
    _assert_same_weights(folder.unet, sdxl["unet"], "unet")
