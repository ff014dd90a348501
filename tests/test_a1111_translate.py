"""A1111 request models -> GenerateSpec translation, auth policy and origin guard, without a server."""

from __future__ import annotations

import base64

import pytest

from toonbooth.api.a1111_options import OptionsStore
from toonbooth.api.a1111_schema import A1111Img2ImgRequest, A1111Txt2ImgRequest, echo_parameters, translate
from toonbooth.api.auth import LOCAL_USER, AuthPolicy, is_loopback_host
from toonbooth.api.middleware import OriginGuardMiddleware
from toonbooth.api.routes.a1111 import a1111_field
from toonbooth.core.errors import AuthError, InputError
from toonbooth.core.specs import GenerateSpec, parse_job_spec

SEED_UNIT = {
    "enabled": "True", "module": "canny", "model": "diffusers_xl_canny_full [2b69fca4]", "weight": 1,
    "threshold_a": 70, "threshold_b": 230, "pixel_perfect": "True",
}  # fmt: skip


def test_seed_client_request_translates_to_generate_spec():
    req = A1111Img2ImgRequest.model_validate({
        "init_images": ["aGVsbG8="], "prompt": "emoji, male, smiling <lora:memoji:1>", "negative_prompt": "bad",
        "seed": 2968506678, "sampler_name": "DDIM", "steps": 50, "cfg_scale": 7, "width": 512, "height": 768,
        "strength": 0.3, "alwayson_scripts": {"ControlNet": {"args": [SEED_UNIT]}},
    })  # fmt: skip
    tr = translate(req, "img2img", default_checkpoint="samaritan [abc]", options={})
    spec = parse_job_spec(tr.spec)
    assert isinstance(spec, GenerateSpec)
    assert spec.mode == "img2img" and spec.checkpoint == "samaritan [abc]" and spec.steps == 50
    assert spec.used_strength() == 0.75  # `strength` is not an A1111 field: A1111 used its default
    unit = spec.controlnet_units[0]
    assert unit.enabled is True and unit.pixel_perfect is True and unit.module == "canny"
    assert (unit.threshold_a, unit.threshold_b) == (
        70,
        230,
    ) and unit.model == "diffusers_xl_canny_full [2b69fca4]"
    assert unit.image is None  # defaults to the init image in the engine
    assert tr.ignored == ["strength"] and "strength" in tr.warnings[0]
    params = echo_parameters(req)
    assert params["init_images"] is None and params["strength"] == 0.3


def test_overrides_options_and_fallbacks():
    req = A1111Txt2ImgRequest.model_validate({
        "prompt": "x", "sampler_index": "Euler a", "override_settings": {"CLIP_stop_at_last_layers": 2, "sd_vae": "x.vae",
        "bogus_setting": 1, "samples_format": "jpg"}, "alwayson_scripts": {"ADetailer": {"args": []},
        "controlnet": {"args": [{**SEED_UNIT, "enabled": "False"}]}}, "enable_hr": "true", "eta": 0.5,
    })  # fmt: skip
    tr = translate(req, "txt2img", default_checkpoint="default", options={"sd_model_checkpoint": "mine"})
    spec = parse_job_spec(tr.spec)
    assert spec.checkpoint == "mine" and spec.sampler_name == "Euler a" and spec.clip_skip == 2
    assert spec.controlnet_units == []  # the disabled unit ("False" as a string) is dropped
    assert set(tr.ignored) == {"alwayson_scripts.ADetailer", "eta", "override_settings.bogus_setting"}
    # hires fix, the VAE override and A1111's lenient names are honoured now (issue 15)
    assert spec.enable_hr and spec.hr_upscaler == "Latent" and spec.hr_scale == 2.0 and spec.vae == "x.vae"
    assert spec.unknown_names == "warn" and spec.tiling is False
    assert translate(A1111Txt2ImgRequest(), "txt2img", default_checkpoint="d").spec["sampler_name"] == "Euler"
    with pytest.raises(InputError) as exc:
        translate(A1111Txt2ImgRequest(), "txt2img", default_checkpoint=None)
    assert exc.value.field == "override_settings.sd_model_checkpoint"


def test_inpaint_fields_and_unit_errors():
    req = A1111Img2ImgRequest.model_validate(
        {"init_images": ["aQ=="], "mask": "bQ==", "mask_blur_x": 3, "mask_blur_y": 5, "inpainting_mask_invert": 1,
         "inpaint_full_res": "false", "inpainting_fill": 2}
    )  # fmt: skip
    tr = translate(req, "img2img", default_checkpoint="c")
    spec = parse_job_spec(tr.spec)
    assert spec.mask == "bQ==" and spec.mask_blur == 3 and spec.inpainting_mask_invert is True
    assert spec.inpaint_full_res is False and spec.inpainting_fill == 2 and tr.ignored == ["mask_blur_y"]
    bad = A1111Img2ImgRequest.model_validate(
        {"alwayson_scripts": {"ControlNet": {"args": [{"enabled": True}]}}}
    )
    with pytest.raises(InputError) as exc:
        translate(bad, "img2img", default_checkpoint="c")
    assert exc.value.field == "alwayson_scripts.ControlNet.args.0.model"
    positional = A1111Img2ImgRequest.model_validate(
        {"alwayson_scripts": {"ControlNet": {"args": [True, "canny"]}}}
    )
    with pytest.raises(InputError, match="JSON object"):
        translate(positional, "img2img", default_checkpoint="c")
    assert a1111_field("controlnet_units.0.model") == "alwayson_scripts.ControlNet.args.0.model"
    assert a1111_field("checkpoint") == "override_settings.sd_model_checkpoint"


class _Users:
    def __init__(self, tokens: dict[str, str]):
        self.tokens = tokens

    def has_users(self) -> bool:
        return bool(self.tokens)

    def authenticate(self, token):
        return self.tokens.get(token)

    def authenticate_basic(self, user, password):
        found = self.tokens.get(password)
        return found if found == user else None


def test_auth_policy():
    assert (
        is_loopback_host("127.0.0.1:7860") and is_loopback_host("localhost") and is_loopback_host("[::1]:80")
    )
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("evil.example:7860")
    local = AuthPolicy(_Users({}), allow_anonymous=True)
    assert local.resolve(None, "127.0.0.1:7860", allow_basic=False) == LOCAL_USER
    with pytest.raises(AuthError, match="loopback"):
        local.resolve(None, "rebound.example:7860", allow_basic=False)  # DNS rebinding
    users = _Users({"tok": "alice"})
    policy = AuthPolicy(users, allow_anonymous=True)  # a user exists: local mode is off
    with pytest.raises(AuthError):
        policy.resolve(None, "127.0.0.1", allow_basic=True)
    assert policy.resolve("Bearer tok", None, allow_basic=False) == "alice"
    basic = "Basic " + base64.b64encode(b"alice:tok").decode()
    assert policy.resolve(basic, None, allow_basic=True) == "alice"
    for header, allow_basic in (
        (basic, False),
        ("Bearer nope", True),
        ("Basic !!", True),
        ("Digest x", True),
    ):
        with pytest.raises(AuthError):
            policy.resolve(header, None, allow_basic=allow_basic)


def _scope(headers: dict[str, str], kind: str = "http", method: str = "GET") -> dict:
    return {"type": kind, "method": method, "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}


def test_origin_guard():
    guard = OriginGuardMiddleware(app=None, allowed_origins=["https://app.example"])
    host = {"host": "127.0.0.1:7860"}
    assert guard.refusal(_scope(host)) is None
    assert guard.refusal(_scope({**host, "origin": "http://127.0.0.1:7860"})) is None
    assert guard.refusal(_scope({**host, "origin": "https://app.example"})) is None
    assert "null" in guard.refusal(_scope({**host, "origin": "null"}))
    assert guard.refusal(_scope({**host, "origin": "http://evil.example"}))
    assert guard.refusal(_scope({**host, "origin": "http://evil.example"}, kind="websocket"))
    assert guard.refusal(_scope({**host, "sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"}))
    assert (
        guard.refusal(_scope({**host, "sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"})) is None
    )


def test_options_store(tmp_path):
    store = OptionsStore(tmp_path / "opts.json")
    assert store.get("a")["send_seed"] is True
    store.update("a", {"send_seed": False, "sd_model_checkpoint": "m"}, check_checkpoint=lambda n: n + " [h]")
    assert store.get("a")["sd_model_checkpoint"] == "m [h]" and store.get("b")["send_seed"] is True
    assert OptionsStore(tmp_path / "opts.json").get("a")["send_seed"] is False  # persisted
    for bad in ({"CLIP_stop_at_last_layers": 40}, {"send_seed": 1}, {"x" * 200: 1}):
        with pytest.raises(InputError):
            store.update("a", bad)


def test_request_body_limit_setting():
    from toonbooth.api.app import max_body_bytes
    from toonbooth.core.settings import Settings

    derived = Settings(max_upload_bytes=3 * 1024 * 1024)
    assert max_body_bytes(derived) == 3 * (3 * 1024 * 1024 * 4 // 3 + 4) + 1024 * 1024
    assert max_body_bytes(Settings(max_request_bytes=50_000)) == 50_000


def test_hires_fields_forge_units_and_vae_option():
    req = A1111Txt2ImgRequest.model_validate({
        "prompt": "x", "enable_hr": True, "hr_resize_x": 1024, "hr_resize_y": 0, "hr_upscaler": "R-ESRGAN 4x+",
        "hr_second_pass_steps": 7, "denoising_strength": 0.4, "hr_checkpoint_name": "Use same checkpoint",
        "hr_sampler_name": "DDIM", "hr_prompt": "y", "styles": ["s"], "tiling": True, "firstphase_width": 512,
        "alwayson_scripts": {"ControlNet": {"args": [
            {"module": "None", "model": "None", "image": {"image": None, "mask": None}},  # a Forge slot: unused
            {"module": "canny", "model": "cn", "image": {"image": "aQ==", "mask": None}, "input_mode": "simple"},
        ]}},
    })  # fmt: skip
    tr = translate(req, "txt2img", default_checkpoint="c", options={"sd_vae": "fix.safetensors"})
    spec = parse_job_spec(tr.spec)
    assert (spec.hr_resize_x, spec.hr_resize_y, spec.hr_upscaler, spec.hr_second_pass_steps) == (1024, 0, "R-ESRGAN 4x+", 7)
    assert spec.hr_checkpoint is None and spec.hr_sampler_name == "DDIM" and spec.hr_prompt == "y"
    assert spec.denoising_strength == 0.4 and spec.styles == ["s"] and spec.tiling and spec.vae == "fix.safetensors"
    assert len(spec.controlnet_units) == 1 and spec.controlnet_units[0].model == "cn"
    assert tr.ignored == ["firstphase_width"]  # Forge's `input_mode` does not change the image
    with pytest.raises(InputError) as exc:  # an explicitly enabled unit still needs a model
        translate(A1111Txt2ImgRequest.model_validate(
            {"alwayson_scripts": {"ControlNet": {"args": [{"enabled": True, "model": "None"}]}}}), "txt2img",
            default_checkpoint="c")  # fmt: skip
    assert exc.value.field == "alwayson_scripts.ControlNet.args.0.model"
