"""Training jobs end to end on tiny SD1.5 / SDXL (CPU): the loss goes down, the LoRA changes generation and
weight 0 restores the base, the kohya export equals the PEFT file in diffusers, the TI files load in diffusers,
multi-stage TI swaps embeddings per stage, a crashed job resumes to the uninterrupted result, styles are
private to their owner, the CLI runs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from toonbooth.core.errors import InputError, ModelNotFoundError, NotFoundError
from toonbooth.core.images import image_to_data_url
from toonbooth.core.settings import Settings
from toonbooth.core.specs import parse_job_spec
from toonbooth.models import sd


def synth(i: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    rng = np.random.default_rng(100 + i)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.integers(0, 255, 3)[None, None, :] * (0.5 + 0.5 * np.sin(xx / (3 + i) + yy / 7.0))[..., None]
    a = base.astype(np.uint8)
    x, y = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
    a[y : y + 20, x : x + 20] = rng.integers(0, 255, 3)
    return Image.fromarray(a)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    from toonbooth.models.tiny import build_tiny_sd15, build_tiny_sdxl, save_diffusers_folder

    root = tmp_path_factory.mktemp("train-bases")
    save_diffusers_folder(build_tiny_sd15(), root / "diffusers" / "tiny-sd15", "sd15")
    save_diffusers_folder(build_tiny_sdxl(), root / "diffusers" / "tiny-sdxl", "sdxl")
    return root


def make_settings(tmp, bases) -> Settings:
    return Settings(home=tmp / "home", models_dir=tmp / "models", extra_model_dirs=[bases], data_dir=tmp / "data",
                    device="cpu")  # fmt: skip


def run_job(settings, raw, owner="alice", job_id="", on_event=None, manager=None):
    from toonbooth.core.events import LogEvent
    from toonbooth.models.manager import ModelManager
    from toonbooth.runtime.context import JobContext
    from toonbooth.runtime.execute import execute
    from toonbooth.runtime.storage_local import LocalStorage

    manager = manager or ModelManager(settings)
    storage = LocalStorage(settings.resolved_data_dir)
    logs: list[str] = []

    def sink(event):
        if isinstance(event, LogEvent):
            logs.append(event.message)
        if on_event is not None:
            on_event(event)

    ctx = JobContext(settings, manager, storage, owner=owner, job_id=job_id, on_event=sink)
    spec = parse_job_spec(raw)
    out = execute(spec, ctx)
    return out, logs, manager, storage


def spec(kind: str, arch: str, name: str, n_images: int = 3, **kw) -> dict:
    raw = {
        "kind": kind, "style_name": name, "base": f"tiny-{arch}", "arch": arch, "resolution": 32,
        "images": [image_to_data_url(synth(i)) for i in range(n_images)], "sample_steps": 1, "checkpoint_every": 0,
        "seed": 0,
    }  # fmt: skip
    raw.update(kw)
    return raw


def assert_loss_decreases(out, k: int = 8, margin: float = 1.0):
    """Training loss: mean of the last k steps below the first k (times `margin`); and the loss of the training
    images at fixed timesteps and fixed noise (no sampling noise at all) lower after training than before."""
    losses = out.info["loss_history"]
    first, last = float(np.mean(losses[:k])), float(np.mean(losses[-k:]))
    assert last < margin * first, (
        f"loss did not go down: first {k} {first:.4f}, last {k} {last:.4f} ({losses})"
    )
    ev = out.info["eval_loss"]
    assert ev["after"] < ev["before"], f"loss on fixed noise did not go down: {ev}"


def sd_pipe(bases, arch):
    import diffusers

    if arch == "sdxl":
        pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(str(bases / "diffusers" / "tiny-sdxl"))
    else:
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(
            str(bases / "diffusers" / "tiny-sd15"), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, prompt: str) -> np.ndarray:
    gen = torch.Generator().manual_seed(1)
    return pipe(prompt, num_inference_steps=2, guidance_scale=5.0, height=32, width=32, generator=gen,
                output_type="np").images[0]  # fmt: skip


# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd15_lora(tmp_path_factory, bases):
    tmp = tmp_path_factory.mktemp("sd15-lora")
    settings = make_settings(tmp, bases)
    raw = spec(
        "train_lora", "sd15", "mystyle", steps=40, learning_rate=1e-2, rank=4, alpha=8.0, snr_gamma=5.0
    )
    events: list = []
    out, logs, manager, _ = run_job(settings, raw, on_event=events.append)
    return settings, out, logs + [e.stage for e in events if e.type == "progress"], manager


def test_lora_sd15_learns_changes_generation_and_kohya_matches(sd15_lora, bases):
    settings, out, logs, _ = sd15_lora
    assert_loss_decreases(out, margin=0.9)
    assert any("using torch AdamW" in line for line in logs)  # 8-bit Adam asked for, no bitsandbytes here
    assert any(re.fullmatch(r"training step 40/40 loss \d\.\d{4} lr 1\.00e-02 eta 0m00s", x) for x in logs)
    files = out.info["style"]["files"]
    meta = safe_open(files["model"], "pt").metadata()
    assert (
        meta["ss_network_dim"] == "4"
        and meta["ss_network_alpha"] == "8"
        and meta["ss_output_name"] == "mystyle"
    )
    assert meta["toonbooth.base_model"] == "tiny-sd15" and meta["toonbooth.trigger"] == "mystyle"
    assert meta["toonbooth.steps"] == "40" and meta["toonbooth.image_count"] == "3"
    assert meta["toonbooth.resolution"] == "32" and "ss_sd_model_hash" in meta
    assert all(k.startswith("lora_unet_") for k in load_file(files["model"]))
    assert out.outputs and out.outputs[0].name == "sample_0"

    pipe = sd_pipe(bases, "sd15")
    base = generate(pipe, "mystyle")
    pipe.load_lora_weights(files["peft"], adapter_name="peft")
    pipe.set_adapters(["peft"], adapter_weights=[1.0])
    styled = generate(pipe, "mystyle")
    assert np.abs(styled - base).max() > 1e-3
    pipe.set_adapters(["peft"], adapter_weights=[0.0])
    np.testing.assert_allclose(generate(pipe, "mystyle"), base, atol=1e-6)
    pipe.load_lora_weights(files["model"], adapter_name="kohya")  # diffusers' own kohya-format loader
    pipe.set_adapters(["kohya"], adapter_weights=[1.0])
    np.testing.assert_allclose(generate(pipe, "mystyle"), styled, atol=1e-5)


def test_style_is_usable_by_name_and_private_to_its_owner(sd15_lora, bases):
    from toonbooth.models.manager import ModelManager
    from toonbooth.models.prompts import extract_lora_tags
    from toonbooth.training.styles import delete_style, list_styles

    settings, out, _, _ = sd15_lora
    manager = ModelManager(settings)
    models_dir = settings.resolved_models_dir
    # <lora:mystyle:0.8> resolves for alice and loads on a pipeline
    _, tags = extract_lora_tags("a cat <lora:mystyle:0.8>")
    pipe, _ = sd.base_pipeline(manager, str(bases / "diffusers" / "tiny-sd15"), "sd15")
    loaded = sd.apply_loras(manager, pipe, [(t.name, t.weight) for t in tags], owner="alice")
    assert loaded[0].name == "mystyle" and loaded[0].weight == 0.8
    assert [s.name for s in list_styles(models_dir, "alice")] == ["mystyle"]
    # bob can neither list, load nor delete it
    assert list_styles(models_dir, "bob") == []
    assert "mystyle" not in manager.registry.names("lora", owner="bob")
    with pytest.raises(ModelNotFoundError):
        sd.apply_loras(manager, pipe, [("mystyle", 0.8)], owner="bob")
    with pytest.raises(NotFoundError):
        delete_style(manager.registry, models_dir, "bob", "mystyle")
    model_file = out.info["style"]["files"]["model"]
    assert Path(model_file).is_file()
    # the name is taken for alice
    with pytest.raises(InputError) as err:
        run_job(settings, spec("train_lora", "sd15", "mystyle", steps=1), manager=manager)
    assert err.value.field == "style_name"
    # alice deletes it: files and registry entry are gone
    delete_style(manager.registry, models_dir, "alice", "mystyle")
    assert not Path(model_file).exists() and not Path(out.info["style"]["files"]["peft"]).exists()
    assert list_styles(models_dir, "alice") == []
    with pytest.raises(ModelNotFoundError):
        manager.entry("mystyle", "lora", "alice")


def test_lora_sdxl_with_text_encoders_learns_and_kohya_matches(tmp_path, bases):
    settings = make_settings(tmp_path, bases)
    raw = spec("train_lora", "sdxl", "xlstyle", steps=40, learning_rate=1e-2, rank=4, train_text_encoder=True,
               owner="carol")  # fmt: skip
    out, _, _, _ = run_job(settings, raw, owner=None)
    assert_loss_decreases(out)
    files = out.info["style"]["files"]
    keys = set(load_file(files["model"]))
    assert any(k.startswith("lora_te1_") for k in keys) and any(k.startswith("lora_te2_") for k in keys)
    assert "/users/carol/Lora/" in files["model"]
    pipe = sd_pipe(bases, "sdxl")
    base = generate(pipe, "xlstyle")
    pipe.load_lora_weights(files["peft"], adapter_name="peft")
    styled = generate(pipe, "xlstyle")
    assert np.abs(styled - base).max() > 1e-3
    pipe.load_lora_weights(files["model"], adapter_name="kohya")
    pipe.set_adapters(["kohya"], adapter_weights=[1.0])
    np.testing.assert_allclose(generate(pipe, "xlstyle"), styled, atol=1e-5)


def test_dreambooth_with_prior_preservation_caches_class_images(tmp_path, bases):
    settings = make_settings(tmp_path, bases)
    raw = spec("train_dreambooth", "sd15", "dbme", steps=40, learning_rate=1e-2, rank=4, num_class_images=2,
               class_image_steps=1, class_word="dog")  # fmt: skip
    out, logs, manager, _ = run_job(settings, raw)
    assert_loss_decreases(out)
    assert any("0 reused from the cache, 2 generated ('a photo of dog')" in line for line in logs)
    cached = list((settings.resolved_data_dir / "cache" / "class-images").glob("*/*.png"))
    assert len(cached) == 2
    assert out.info["style"]["training_kind"] == "train_dreambooth"
    again = spec("train_dreambooth", "sd15", "dbme2", steps=1, rank=4, num_class_images=2, class_image_steps=1,
                 class_word="dog")  # fmt: skip
    _, logs2, _, _ = run_job(settings, again, manager=manager)
    assert any("2 reused from the cache, 0 generated" in line for line in logs2)


def test_dreambooth_sdxl_with_given_class_images(tmp_path, bases):
    settings = make_settings(tmp_path, bases)
    class_images = [image_to_data_url(synth(10 + i, (48, 48))) for i in range(2)]
    raw = spec(
        "train_dreambooth", "sdxl", "dbxl", steps=40, learning_rate=1e-2, rank=4, class_images=class_images
    )
    out, logs, _, _ = run_job(settings, raw)
    assert_loss_decreases(out)
    assert not (settings.resolved_data_dir / "cache" / "class-images").exists()  # own class images: none made
    meta = safe_open(out.info["style"]["files"]["model"], "pt").metadata()
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0" and meta["ss_prior_loss_weight"] == "1.0"


def test_textual_inversion_sd15_loads_in_diffusers_and_images_are_deleted(tmp_path, bases):
    from toonbooth.runtime.storage_local import LocalStorage

    settings = make_settings(tmp_path, bases)
    storage = LocalStorage(settings.resolved_data_dir)
    refs = [storage.put(_png(synth(i))) for i in range(3)]
    raw = spec("train_ti", "sd15", "tistyle", steps=40, learning_rate=5e-2, num_vectors=2,
               delete_images_after=True, initializer_token="art")  # fmt: skip
    raw["images"] = refs
    out, logs, _, _ = run_job(settings, raw)
    assert_loss_decreases(out)
    assert not any(storage.exists(r) for r in refs) and out.info["images_deleted"] == 3
    path = out.info["style"]["files"]["model"]
    tensors = load_file(path)
    assert set(tensors) == {"emb_params"} and tuple(tensors["emb_params"].shape) == (2, 32)
    assert safe_open(path, "pt").metadata()["toonbooth.trigger"] == "tistyle"

    pipe = sd_pipe(bases, "sd15")
    before = pipe.encode_prompt("a painting of tistyle", "cpu", 1, False)[0]
    pipe.load_textual_inversion(path, token="tistyle")
    ids = pipe.tokenizer.convert_tokens_to_ids(["tistyle", "tistyle_1"])
    np.testing.assert_allclose(
        pipe.text_encoder.get_input_embeddings().weight[ids].detach(), tensors["emb_params"]
    )
    after = pipe.encode_prompt("a painting of tistyle", "cpu", 1, False)[0]
    assert (after - before).abs().max() > 1e-3


def test_multistage_textual_inversion_sdxl(tmp_path, bases):
    from toonbooth.training.textual_inversion import StagedEmbedding

    settings = make_settings(tmp_path, bases)
    raw = spec("train_ti", "sdxl", "dstyle", steps=40, learning_rate=5e-2, stages=2, sample_steps=2)
    out, _, _, _ = run_job(settings, raw)
    assert_loss_decreases(out)
    files = out.info["style"]["files"]
    flat = load_file(files["model"])
    assert tuple(flat["clip_l"].shape) == (1, 32) and tuple(flat["clip_g"].shape) == (1, 64)
    stages = load_file(files["stages"])
    assert tuple(stages["clip_l"].shape) == (2, 1, 32) and tuple(stages["clip_g"].shape) == (2, 1, 64)
    assert (stages["clip_l"][0] - stages["clip_l"][1]).abs().max() > 1e-4  # each stage learned its own vector
    np.testing.assert_allclose(flat["clip_l"], stages["clip_l"].mean(0), atol=1e-6)

    pipe = sd_pipe(bases, "sdxl")  # diffusers' loader takes the A1111 SDXL layout encoder by encoder
    pipe.load_textual_inversion(
        flat["clip_l"], token="dstyle", text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
    )
    pipe.load_textual_inversion(flat["clip_g"], token="dstyle", text_encoder=pipe.text_encoder_2,
                                tokenizer=pipe.tokenizer_2)  # fmt: skip
    assert "dstyle" in pipe.tokenizer.get_vocab() and "dstyle" in pipe.tokenizer_2.get_vocab()

    fresh = sd_pipe(bases, "sdxl")
    staged = StagedEmbedding.from_file(files["stages"])
    assert staged.stages == 2 and staged.trigger == "dstyle"
    staged.install(fresh)
    per_stage = staged.encode(fresh, "a picture of dstyle", None, 5.0)
    assert (per_stage[0]["prompt_embeds"] - per_stage[1]["prompt_embeds"]).abs().max() > 1e-4
    gen = torch.Generator().manual_seed(0)
    swapped = staged.generate(fresh, "a picture of dstyle", num_inference_steps=4, guidance_scale=5.0,
                              generator=gen, height=32, width=32).images[0]  # fmt: skip
    one = StagedEmbedding({k: v[:1] for k, v in stages.items()}, "dstyle")
    one.set_stage(fresh, 0)
    gen = torch.Generator().manual_seed(0)
    fixed = one.generate(fresh, "a picture of dstyle", num_inference_steps=4, guidance_scale=5.0, generator=gen,
                         height=32, width=32).images[0]  # fmt: skip
    assert np.abs(np.asarray(swapped, np.int16) - np.asarray(fixed, np.int16)).max() > 0


def test_crashed_job_resumes_to_the_uninterrupted_result(tmp_path, bases):
    from toonbooth.core.events import ProgressEvent

    settings = make_settings(tmp_path, bases)
    images = [image_to_data_url(synth(i, (48, 32) if i % 2 else (32, 48))) for i in range(4)]
    common = dict(steps=6, checkpoint_every=3, learning_rate=5e-3, rank=4, batch_size=2,
                  gradient_accumulation_steps=2, buckets=True, snr_gamma=5.0, noise_offset=0.05,
                  lr_scheduler="cosine", lr_warmup_steps=2, images=images, trigger="zq")  # fmt: skip
    full, _, manager, _ = run_job(settings, spec("train_lora", "sd15", "full", **common), job_id="job-a")

    class CrashError(RuntimeError):
        pass

    def crash_at_step_5(event):
        if isinstance(event, ProgressEvent) and event.stage.startswith("training step 5/"):
            raise CrashError("worker died")

    resumed_spec = spec("train_lora", "sd15", "resumed", **common)
    with pytest.raises(CrashError):
        run_job(settings, resumed_spec, job_id="job-b", on_event=crash_at_step_5, manager=manager)
    assert (settings.resolved_data_dir / "training" / "job-b" / "checkpoint-3" / "state.json").is_file()
    resumed, logs, _, _ = run_job(settings, resumed_spec, job_id="job-b", manager=manager)
    assert "resumed from the checkpoint at step 3" in logs
    np.testing.assert_allclose(resumed.info["loss_history"], full.info["loss_history"], rtol=1e-5)
    a = load_file(full.info["style"]["files"]["peft"])
    b = load_file(resumed.info["style"]["files"]["peft"])
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-7)
    assert not (settings.resolved_data_dir / "training" / "job-b").exists()  # checkpoints cleaned up


def test_bad_training_inputs_get_clear_errors(tmp_path, bases):
    settings = make_settings(tmp_path, bases)
    dup = spec("train_lora", "sd15", "d", steps=1)
    dup["images"][2] = dup["images"][0]
    dup["image_names"] = ["a.png", "b.png", "c.png"]
    with pytest.raises(InputError) as err:
        run_job(settings, dup)
    assert err.value.field == "images[2]" and "c.png is the same image as a.png" in str(err.value)
    broken = spec("train_lora", "sd15", "b", steps=1)
    broken["images"][1] = "data:image/png;base64,iVBORw0KGgo="
    with pytest.raises(InputError) as err:
        run_job(settings, broken)
    assert err.value.field == "images[1]"
    with pytest.raises(InputError) as err:
        run_job(settings, spec("train_lora", "sd15", "o", steps=1, owner="mallory"), owner="alice")
    assert err.value.field == "owner"
    with pytest.raises(ModelNotFoundError):
        run_job(settings, spec("train_lora", "sd15", "m", steps=1, base="no-such-model"))
    with pytest.raises(InputError) as err:
        run_job(
            settings, spec("train_ti", "sd15", "t", steps=1, trigger="a")
        )  # a known token of the tokenizer
    assert err.value.field == "trigger"


def test_cli_trains_lists_and_deletes(tmp_path, bases):
    from typer.testing import CliRunner

    from toonbooth.cli.main import app

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        synth(i).save(folder / f"p{i}.png")
    (folder / "p0.txt").write_text("clistyle, a square")
    base = str(bases / "diffusers" / "tiny-sd15")
    opts = ["--models-dir", str(tmp_path / "models"), "--data-dir", str(tmp_path / "data"), "--device", "cpu"]
    runner = CliRunner()
    res = runner.invoke(app, [*opts, "train", "ti", "--images", str(folder), "--base", base, "--name", "clistyle",
                              "--arch", "sd15", "--steps", "2", "--resolution", "32", "--sample-steps", "1",
                              "--out-dir", str(tmp_path / "out"), "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "use it as: clistyle" in res.output and (tmp_path / "out" / "clistyle-sample_0.png").is_file()
    listed = runner.invoke(app, [*opts, "train", "list"])
    assert "clistyle" in listed.output and "embedding" in listed.output
    gone = runner.invoke(app, [*opts, "train", "delete", "clistyle"])
    assert gone.exit_code == 0 and "deleted style 'clistyle'" in gone.output
    assert "(no trained styles)" in runner.invoke(app, [*opts, "train", "list"]).output
    bad = runner.invoke(app, [*opts, "train", "lora", "--images", str(tmp_path / "nope"), "--base", base,
                              "--name", "x"])  # fmt: skip
    assert bad.exit_code == 2 and "not a folder" in bad.output


def _png(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
