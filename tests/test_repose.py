"""The pose-change studio (`repose`) on tiny models built in the run, through the one execution path
(`runtime.execute`) and the `Service`: the model families (ONNX signatures, AnimateAnyone key layouts),
the DWPose pair through the real pre/post-processing (designed keypoints come back in the skeleton JSON and
the drawing), AnimateAnyone and the light ControlNet + IP-Adapter path end to end, the classic backend,
bad input (skeleton JSON, no person, a cat, wrong ONNX files, missing weights), cancel, and the UI section."""

from __future__ import annotations

import io
import json
import shutil
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import pose_models as pm
import test_dwpose as tdw
from toonbooth.core.errors import BackendUnavailableError, InputError, JobCanceledError, ModelError
from toonbooth.core.events import ProgressEvent
from toonbooth.core.settings import Settings
from toonbooth.core.specs import parse_job_spec
from toonbooth.nets import dwpose
from toonbooth.runtime.context import JobContext
from toonbooth.runtime.execute import execute
from toonbooth.runtime.families import model_manager
from toonbooth.runtime.storage_local import LocalStorage
from toonbooth.vision.pose_draw import BODY_COLORS, draw_openpose

AA = {"image_encoder": "tiny-image-encoder", "vae": "tiny-vae"}
LIGHT = {"controlnet": "tiny-sd15-openpose", "ip_adapter": "tiny-ip-adapter"}


def png(arr_or_img) -> bytes:
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def diffusion(**kw) -> dict:
    return {"checkpoint": "tiny-sd15", "sampler": "DDIM", "steps": 2, "cfg_scale": 3.5, "seed": 3, **kw}


class Env:
    def __init__(self, models_dir, home):
        self.settings = Settings(home=home, models_dir=models_dir, data_dir=home / "data", device="cpu")
        self.models = model_manager(self.settings)
        self.storage = LocalStorage(self.settings.resolved_data_dir)

    def put(self, data: bytes) -> str:
        return self.storage.put(data)

    def run(self, raw: dict, **ctx_kw):
        ctx = JobContext(self.settings, self.models, self.storage, **ctx_kw)
        return execute(parse_job_spec(raw), ctx)

    def image(self, out, name: str) -> Image.Image:
        return Image.open(io.BytesIO(self.storage.get(out.output(name).ref)))

    def json(self, out, name: str = "skeleton") -> dict:
        return json.loads(self.storage.get(out.output(name).ref))


@pytest.fixture(scope="module")
def env(tiny_models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("pose-models")
    pm.make_pose_models(root / "models", tiny_models_dir)
    return Env(root / "models", root / "home")


@pytest.fixture(scope="module")
def refs(env, sample_photo_path):
    face = Image.open(sample_photo_path).convert("RGB")
    return {
        "photo": env.put(png(pm.pose_photo())),
        "character": env.put(png(face.resize((64, 96)))),
        "character2": env.put(png(face.resize((64, 96)).transpose(Image.Transpose.FLIP_LEFT_RIGHT))),
        "background": env.put(png(face.resize((80, 80)))),
    }


def designed_skeleton_json(width: int = 64, height: int = 96) -> dict:
    """A plausible standing figure (OpenPose-18 body only) on a width x height canvas, in pixels."""
    pts = [(32, 14), (32, 26), (22, 27), (18, 42), (16, 56), (42, 27), (46, 42), (48, 56), (26, 56), (25, 72),
           (24, 88), (38, 56), (39, 72), (40, 88), (29, 12), (35, 12), (26, 14), (38, 14)]  # fmt: skip
    body = [v for x, y in pts for v in (x * width / 64, y * height / 96, 1.0)]
    return {"people": [{"pose_keypoints_2d": body}], "canvas_width": width, "canvas_height": height}


# ---------------------------------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------------------------------


def test_families_identify_the_pose_models_by_content(env):
    entries = {(e.kind, e.name): e for e in env.models.registry.list(include_refused=True)}
    dw = entries[("dwpose", "dwpose")]
    assert dw.refused is None and dw.details == {"detector": "yolox_l.onnx", "pose": "dw-ll_ucoco_384.onnx"}
    assert dw.catalog_name == "dwpose"
    aa = entries[("animate_anyone", "animate-anyone")]
    assert aa.refused is None and aa.arch == "sd15"
    assert aa.details == {"reference_unet": "reference_unet.pth", "denoising_unet": "denoising_unet.pth",
                          "pose_guider": "pose_guider.pth"}  # fmt: skip
    assert entries[("clip_vision", "tiny-image-encoder")].details["projection_dim"] == 32
    assert entries[("ip_adapter", "tiny-ip-adapter")].details["image_encoder"] == "models/image_encoder"
    assert entries[("vae", "tiny-vae")].refused is None


def test_onnx_signature_read_without_a_session(env):
    import onnxruntime as ort

    from toonbooth.models.onnx_header import read_onnx_signature

    for name in ("yolox_l.onnx", "dw-ll_ucoco_384.onnx"):
        path = env.settings.resolved_models_dir / "DWPose" / name
        sig = read_onnx_signature(path)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [(v.name, list(v.shape)) for v in sig.inputs] == [(i.name, i.shape) for i in sess.get_inputs()]
        assert [(v.name, list(v.shape)) for v in sig.outputs] == [(o.name, o.shape) for o in sess.get_outputs()]


def test_wrong_onnx_files_and_incomplete_sets_are_refused_with_the_reason(tmp_path, tiny_models_dir):
    from toonbooth.models.onnx_header import read_onnx_signature
    from toonbooth.nets.animate_anyone import scan_animate_anyone

    top = tmp_path / "DWPose"
    for sub in ("only-pose", "two", "junk"):
        (top / sub).mkdir(parents=True)
    tdw.make_pose(top / "only-pose" / "dw.onnx")  # the detector is missing
    tdw.make_detector(top / "two" / "a.onnx", tdw.DET_ROWS)
    tdw.make_detector(top / "two" / "b.onnx", tdw.DET_ROWS)
    tdw.make_pose(top / "two" / "p.onnx")
    (top / "junk" / "model.onnx").write_bytes(b"this is not a protobuf" * 40)
    found = {e.name: e for e in dwpose.scan_dwpose(top, "DWPose")}
    assert "no YOLOX person detector" in found["only-pose"].refused
    assert "several detector models (a.onnx, b.onnx)" in found["two"].refused
    assert "incomplete" in found["junk"].refused and "model.onnx" in found["junk"].refused
    with pytest.raises(ModelError, match="model.onnx"):
        read_onnx_signature(top / "junk" / "model.onnx")

    aa = tmp_path / "AnimateAnyone"
    pm.add_animate_anyone(tmp_path, tiny_models_dir)
    (aa / "pose_guider.pth").unlink()
    torch.save({"down_blocks.0.motion_modules.0.temporal_transformer.norm.weight": torch.ones(4)},
               aa / "motion_module.pth")  # fmt: skip
    (entry,) = scan_animate_anyone(aa, "AnimateAnyone")
    assert "needs pose_guider" in entry.refused
    assert any("motion module" in x for x in entry.details["ignored"])


def test_denoising_unet_with_motion_modules_is_refused(tmp_path, tiny_models_dir):
    from toonbooth.nets.animate_anyone import load_animate_anyone, scan_animate_anyone

    pm.add_animate_anyone(tmp_path, tiny_models_dir)
    aa = tmp_path / "AnimateAnyone"
    state = torch.load(aa / "denoising_unet.pth", weights_only=True)
    state["down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight"] = torch.zeros(2, 2)
    torch.save(state, aa / "denoising_unet.pth")
    (entry,) = scan_animate_anyone(aa, "AnimateAnyone")
    manager = model_manager(Settings(home=tmp_path / "h", models_dir=tiny_models_dir, device="cpu"))
    with pytest.raises(ModelError, match="motion-module keys"):
        load_animate_anyone(entry, manager.load_env())


def test_convert_to_safetensors_is_preferred_and_loads_the_same(tmp_path, tiny_models_dir):
    from typer.testing import CliRunner

    from toonbooth.cli.main import app
    from toonbooth.nets.animate_anyone import load_animate_anyone, scan_animate_anyone

    pm.add_animate_anyone(tmp_path, tiny_models_dir)
    folder = tmp_path / "AnimateAnyone"
    manager = model_manager(Settings(home=tmp_path / "h", models_dir=tiny_models_dir, device="cpu"))
    (before,) = scan_animate_anyone(folder, "AnimateAnyone")
    parts_pth = load_animate_anyone(before, manager.load_env())
    res = CliRunner().invoke(app, ["models", "convert", str(folder)], env={"TOONBOOTH_HOME": str(tmp_path / "h")})
    assert res.exit_code == 0, res.output
    assert res.output.count("wrote ") == 3
    (after,) = scan_animate_anyone(folder, "AnimateAnyone")
    assert after.details["denoising_unet"] == "denoising_unet.safetensors"
    parts_st = load_animate_anyone(after, manager.load_env())
    for a, b in ((parts_pth.reference_unet, parts_st.reference_unet), (parts_pth.pose_guider, parts_st.pose_guider)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # a file whose tensors do not fit the UNet is refused with the key report
    state = torch.load(folder / "reference_unet.pth", weights_only=True)
    state["conv_in.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(state, folder / "reference_unet.pth")
    (folder / "reference_unet.safetensors").unlink()
    (broken,) = scan_animate_anyone(folder, "AnimateAnyone")
    with pytest.raises(ModelError, match="wrong shape"):
        load_animate_anyone(broken, manager.load_env())


# ---------------------------------------------------------------------------------------------------
# Pose: DWPose through the job, the drawing, the JSON
# ---------------------------------------------------------------------------------------------------


def test_skeleton_preview_gives_the_designed_keypoints(env, refs):
    out = env.run({"kind": "repose", "mode": "skeleton", "pose_image": refs["photo"], "size": 480, "people": "all"})
    assert out.backend == "neural" and out.info["method"] == "skeleton"
    assert [o.name for o in out.outputs] == ["skeleton_image", "skeleton"]
    assert out.output("skeleton_image").primary and out.output("skeleton").media_type == "application/json"
    data = env.json(out)
    assert (data["canvas_width"], data["canvas_height"]) == (pm.POSE_W, pm.POSE_H)
    assert len(data["people"]) == 2  # the detector's two people (the duplicate box is suppressed)
    want = dwpose.wholebody_to_openpose(pm.designed_keypoints())
    got = dwpose.parse_openpose_json(data).people[0]
    for part in ("body", "left_hand", "right_hand", "face"):
        a, b = getattr(got, part), getattr(want, part)
        assert np.array_equal(a[:, 2] > 0, b[:, 2] > 0), part
        assert np.abs(a[:, :2] - b[:, :2]).max() < 1.0, part
    # the drawing is the ControlNet-openpose drawing of exactly that JSON
    drawing = np.asarray(env.image(out, "skeleton_image").convert("RGB"))
    assert np.array_equal(drawing, draw_openpose(dwpose.parse_openpose_json(data)))
    # ...and the nose joint (drawn first of the joints, here alone) sits at its designed pixel in red
    nose = want.body[0]
    x, y = int(data["people"][0]["pose_keypoints_2d"][0]), int(data["people"][0]["pose_keypoints_2d"][1])
    assert abs(x - nose[0]) < 1 and tuple(drawing[y, x]) == BODY_COLORS[0]


def test_classic_backend_from_json_draws_and_overlays_without_rendering(env, refs):
    skel = designed_skeleton_json()
    out = env.run({"kind": "repose", "character": refs["character"], "skeleton": json.dumps(skel),
                   "backend": "classic", "size": 96})  # fmt: skip
    assert out.backend == "classic" and "no re-rendering" in out.backend_reason
    names = [o.name for o in out.outputs]
    assert names == ["skeleton_image", "skeleton", "overlay"] and out.output("skeleton_image").primary
    assert env.json(out) == json.loads(json.dumps(env.json(out)))
    drawing = np.asarray(env.image(out, "skeleton_image").convert("RGB"))
    assert drawing.shape == (96, 64, 3)
    assert tuple(drawing[88, 24]) == BODY_COLORS[10]  # the right ankle joint where the JSON put it
    overlay = np.asarray(env.image(out, "overlay").convert("RGB"))
    lit = drawing.max(axis=2) > 0
    assert np.array_equal(overlay[lit], drawing[lit]) and (overlay[~lit] > 0).all()


def test_auto_without_rendering_weights_is_classic_and_says_why(tmp_path, tiny_models_dir, sample_photo_path):
    bare = Env(pm.make_pose_models(tmp_path / "m", tiny_models_dir, animate_anyone=False, light=False), tmp_path)
    char = bare.put(png(Image.open(sample_photo_path).convert("RGB").resize((64, 64))))
    out = bare.run({"kind": "repose", "character": char, "skeleton": designed_skeleton_json(), "size": 64})
    assert out.backend == "classic" and out.output("skeleton_image").primary
    assert "animate_anyone:" in out.backend_reason and "controlnet:" in out.backend_reason
    assert "models pull" in out.backend_reason
    with pytest.raises(BackendUnavailableError, match="re-rendering needs weights"):
        bare.run({"kind": "repose", "character": char, "skeleton": designed_skeleton_json(), "backend": "neural"})
    # a pose photo needs the ONNX pair even for the classic backend
    shutil.rmtree(tmp_path / "m" / "DWPose")
    bare.models.registry.scan()
    with pytest.raises(BackendUnavailableError, match="DWPose ONNX pair") as err:
        bare.run({"kind": "repose", "character": char, "pose_image": char, "backend": "classic"})
    assert "`skeleton`" in str(err.value)


# ---------------------------------------------------------------------------------------------------
# Re-rendering
# ---------------------------------------------------------------------------------------------------


def test_animate_anyone_end_to_end(env, refs):
    events: list = []
    raw = {"kind": "repose", "character": refs["character"], "pose_image": refs["photo"], "method": "animate_anyone",
           "size": 96, "diffusion": diffusion(), "background": "remove", "background_image": refs["background"], **AA}  # fmt: skip
    out = env.run(raw, on_event=events.append)
    assert out.backend == "neural" and out.info["method"] == "animate_anyone"
    assert [o.name for o in out.outputs] == ["image", "skeleton_image", "skeleton", "mask", "layer", "composite"]
    image = env.image(out, "image")
    assert image.size == (64, 96) and out.output("image").primary
    params = image.info["parameters"]
    assert "AnimateAnyone" in params and "zero terminal SNR" in params and "Seed: 3" in params
    assert env.image(out, "layer").mode == "RGBA" and env.image(out, "mask").mode == "L"
    assert env.image(out, "composite").size == (64, 96)
    steps = [e for e in events if isinstance(e, ProgressEvent) and e.stage == "denoise"]
    assert [e.step for e in steps] == [2, 3] and events[-1].percent == 100.0
    # same seed -> same pixels; another character -> another picture (the reference attention reads it)
    again = env.run(raw)
    assert np.array_equal(np.asarray(env.image(again, "image")), np.asarray(image))
    other = env.run({**raw, "character": refs["character2"], "background": "keep", "background_image": None})
    assert not np.array_equal(np.asarray(env.image(other, "image")), np.asarray(image))
    # another pose -> another picture (the PoseGuider features enter after conv_in)
    posed = env.run({**raw, "pose_image": None, "skeleton": designed_skeleton_json(), "background": "keep",
                     "background_image": None})  # fmt: skip
    assert not np.array_equal(np.asarray(env.image(posed, "image")), np.asarray(image))


def test_light_path_controlnet_ip_adapter_and_style(env, refs):
    raw = {"kind": "repose", "character": refs["character"], "skeleton": designed_skeleton_json(),
           "method": "controlnet", "size": 96, "diffusion": diffusion(loras=[{"name": "tiny-sd15-style"}]), **LIGHT}  # fmt: skip
    out = env.run(raw)
    assert out.info["method"] == "controlnet" and out.info["ip_adapter"] == "tiny-ip-adapter"
    params = env.image(out, "image").info["parameters"]
    assert "IP-Adapter: tiny-ip-adapter" in params and "Lora hashes" in params and "tiny-sd15-openpose" in params
    # the adapter was taken off the shared UNet again
    base, _ = __import__("toonbooth.models.sd", fromlist=["x"]).base_pipeline(env.models, "tiny-sd15", "sd15")
    assert base.unet.encoder_hid_proj is None
    assert not any("IPAdapter" in type(p).__name__ for p in base.unet.attn_processors.values())
    # the IP-Adapter carries the character: another character, another picture
    other = env.run({**raw, "character": refs["character2"]})
    assert not np.array_equal(np.asarray(env.image(other, "image")), np.asarray(env.image(out, "image")))
    without = env.run({**raw, "ip_adapter": None})
    assert without.info["ip_adapter"] is None


def test_cancel_between_denoising_steps(env, refs):
    cancel = threading.Event()

    def on_event(e):
        if isinstance(e, ProgressEvent) and e.stage == "denoise":
            cancel.set()

    raw = {"kind": "repose", "character": refs["character"], "skeleton": designed_skeleton_json(),
           "method": "animate_anyone", "size": 64, "diffusion": diffusion(steps=4), **AA}  # fmt: skip
    with pytest.raises(JobCanceledError):
        env.run(raw, on_event=on_event, cancel_event=cancel)


# ---------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("skeleton", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "got list"),
        ({"people": [], "canvas_width": 64, "canvas_height": 64}, "no person"),
        ({"people": [{"pose_keypoints_2d": [1.0] * 53}], "canvas_width": 64, "canvas_height": 64}, "54 or 75"),
        ({"people": [{"pose_keypoints_2d": [0.0] * 54}], "canvas_width": 64, "canvas_height": 64}, "no visible"),
        ({"people": [{"pose_keypoints_2d": [1.0] * 54}], "canvas_height": 64}, "canvas_width"),
    ],
)
def test_bad_skeleton_json_names_the_field(env, refs, skeleton, match):
    with pytest.raises(InputError, match=match) as err:
        env.run({"kind": "repose", "character": refs["character"], "skeleton": skeleton})
    assert err.value.field == "skeleton"


def test_pose_source_and_character_are_required_once(refs):
    with pytest.raises(InputError) as err:
        parse_job_spec({"kind": "repose", "character": refs["character"]})
    assert err.value.field == "skeleton"
    with pytest.raises(InputError, match="not both"):
        parse_job_spec({"kind": "repose", "character": refs["character"], "pose_image": refs["photo"],
                        "skeleton": designed_skeleton_json()})  # fmt: skip
    with pytest.raises(InputError) as err:
        parse_job_spec({"kind": "repose", "skeleton": designed_skeleton_json()})
    assert err.value.field == "character"
    with pytest.raises(InputError) as err:
        parse_job_spec({"kind": "repose", "mode": "skeleton", "skeleton": {}, "size": 100})
    assert err.value.field == "size"


def test_no_person_and_a_cat_are_input_errors(env, refs):
    root = env.settings.resolved_models_dir / "DWPose"
    (root / "empty").mkdir()
    (root / "cat").mkdir()
    tdw.make_detector(root / "empty" / "det.onnx", [])
    tdw.make_pose(root / "empty" / "pose.onnx")
    tdw.make_detector(root / "cat" / "det.onnx", tdw.DET_ROWS)  # a box, but no body keypoint scores 0.3
    tdw.make_pose(root / "cat" / "pose.onnx", scores=np.full(133, 0.2, np.float32))
    env.models.registry.scan()
    for model in ("empty", "cat"):
        with pytest.raises(InputError, match="no person found") as err:
            env.run({"kind": "repose", "mode": "skeleton", "pose_image": refs["photo"], "pose_model": model})
        assert err.value.field == "pose_image"


def test_service_refuses_bad_specs_at_submit(env, refs):
    from toonbooth.runtime.service import Service

    with Service(env.settings, models=env.models) as service:
        with pytest.raises(InputError) as err:
            service.submit({"kind": "repose", "character": refs["character"], "skeleton": "{"}, "anyone")
        assert err.value.field == "skeleton"
        with pytest.raises(InputError) as err:
            service.submit({"kind": "repose", "character": refs["character"], "skeleton": designed_skeleton_json(),
                            "method": "controlnet", "controlnet": "tiny-sd15-openpose",
                            "diffusion": diffusion(sampler="Bogus")}, "anyone")  # fmt: skip
        assert err.value.field == "diffusion.sampler"


# ---------------------------------------------------------------------------------------------------
# The UI section (actions through a real Service)
# ---------------------------------------------------------------------------------------------------


def test_ui_pose_section_preview_then_render(env, refs):
    import gradio as gr

    from toonbooth.runtime.service import Service
    from toonbooth.ui.webtoon_pose import PoseSectionActions, build_pose_section

    with Service(env.settings, models=env.models) as service:
        with gr.Blocks():
            build_pose_section(service, env.settings, owner_of=lambda _r: "dana")
        ui = PoseSectionActions(service, env.settings, owner_of=lambda _r: "dana", wait_s=120)
        char, _ = ui.store_character(Image.open(io.BytesIO(env.storage.get(refs["character"]))))
        pose, _ = ui.store_pose(Image.fromarray(pm.pose_photo()))
        drawing, text, status = ui.detect(char, pose, "", 96, True, True, "best")
        assert drawing.size == (64, 96) and "1 person(s)" in status, status
        edited = json.loads(text)
        assert len(edited["people"]) == 1 and edited["canvas_width"] == 64
        *_, (job, status, image, layers, json_file) = ui.render(
            char, pose, text, 96, True, True, "best", "auto", "classic", 2, 3.5, 1, None, 1.0, "", "", False, None,
            "tiny-sd15",
        )  # fmt: skip
        assert image is None and "classic" in status and [n for _, n in layers] == ["skeleton image", "overlay"]
        with open(json_file, encoding="utf-8") as f:
            assert json.load(f) == edited
        _, _, err = ui.detect(char, None, "{oops", 96, True, True, "best")
        assert "**Error:**" in err and "skeleton" in err
