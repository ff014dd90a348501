"""The jobs whose numbers are pinned: one per studio on the tiny model set, shared by `tests/test_pins.py`
(which compares) and `scripts/regen_pins.py` (which writes `tests/pins.json`).

Like diffusers' `expected_slice` tests, each job's output is reduced to a few numbers:

- images: the RGB values (uint8, as stored in the PNG output) of a few fixed pixels. Tolerance ±1:
  the PNG is what the user gets, and a 1-ulp float difference before the final rounding (another CPU
  kernel, another summation order) may flip one rounding; any change in what the job computes moves
  some of the pinned pixels by more than that (a change of the sampler, of the seed handling, of a
  prompt, of the ControlNet map, of a resize filter, of the composite).
- training: a slice of one trained LoRA weight (float32). Tolerance 1e-4 absolute: after a few AdamW
  steps at learning rate 1e-2 the values are ~1e-2, float noise is ~1e-7.

The jobs run through the one execution path (`runtime.execute.execute` with a `JobContext`), exactly as
the service runs them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from toonbooth.core.settings import Settings
from toonbooth.core.specs import AnimeSpec, AvatarSpec, GenerateSpec, LoraRef, parse_job_spec
from toonbooth.models.manager import ModelManager
from toonbooth.runtime.context import JobContext
from toonbooth.runtime.execute import execute
from toonbooth.runtime.families import model_manager
from toonbooth.runtime.storage_local import LocalStorage

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "assets" / "sample_face.png"
PINS = Path(__file__).resolve().parent / "pins.json"
PIXEL_TOL = 1  # uint8
WEIGHT_TOL = 1e-4  # float32 LoRA weights

STUDIOS = (
    "avatar_neural",
    "avatar_classic",
    "generate_txt2img",
    "generate_img2img",
    "anime_full",
    "train_lora",
    "talk_classic",
    "repose_animate_anyone",
    "makeup_neural",
    "toon_neural",
    "background_neural",
    "background_classic",
    "generate_hires",
    "extras_upscale",
)


@dataclass
class PinEnv:
    settings: Settings
    models: ModelManager
    storage: LocalStorage
    refs: dict[str, str]


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def make_env(models_dir: Path, home: Path) -> PinEnv:
    """Settings on the tiny model set in `models_dir` (plus the anime SAM / LaMa written under `home`)."""
    from safetensors.torch import save_file

    from test_anime_engine import designed_sam
    from toonbooth.nets.lama import LamaConfig, build_lama

    extra = home / "extra-models"
    sam, processor = designed_sam()
    sam.save_pretrained(extra / "SAM" / "tiny-sam")
    processor.save_pretrained(extra / "SAM" / "tiny-sam")
    lama = build_lama(LamaConfig.tiny(), seed=0)
    (extra / "LaMa").mkdir(parents=True)
    weights = {f"generator.{k}": v.contiguous() for k, v in lama.generator.state_dict().items()}
    save_file(weights, str(extra / "LaMa" / "tiny-lama.safetensors"))
    # the pose studio's tiny AnimateAnyone parts, CLIP image encoder and VAE (tests/pose_models.py)
    from pose_models import add_animate_anyone, add_image_encoder, add_vae, tiny_unet_config

    add_animate_anyone(extra, models_dir)
    add_image_encoder(extra / "clip_vision" / "tiny-image-encoder", tiny_unet_config(models_dir)["cross_attention_dim"], seed=3)
    add_vae(extra)
    from toonbooth.nets.face_parsing import write_tiny_face_parser
    from toonbooth.nets.stable_makeup import write_tiny_stable_makeup

    write_tiny_stable_makeup(extra / "StableMakeup" / "tiny-stable-makeup")
    write_tiny_face_parser(extra / "FaceParsing" / "tiny-face-parser.pth")
    from toonbooth.nets.toon_models import write_tiny_toon_set

    write_tiny_toon_set(extra, size=32)  # the toon studio's tiny StyleGAN2 / e4e / VGG16 / LPIPS
    from toonbooth.nets.translate import save_tiny_marian

    save_tiny_marian(extra / "MarianMT" / "opus-mt-ko-en")  # the webtoon studio's Korean prompts
    from toonbooth.nets.esrgan import tiny_rrdb, write_upscaler

    write_upscaler(tiny_rrdb(scale=4, num_block=2, seed=13), extra / "ESRGAN" / "4x-PinTiny.safetensors", "esrgan-old")
    settings = Settings(home=home, models_dir=models_dir, extra_model_dirs=[extra], data_dir=home / "data",
                        device="cpu", max_side=64)  # fmt: skip
    storage = LocalStorage(settings.resolved_data_dir)
    photo = Image.open(PHOTO).convert("RGB")
    refs = {
        "photo_80x64": storage.put(_png(photo.resize((80, 64)))),
        "photo_64x48": storage.put(_png(photo.resize((64, 48)))),
        "photo_256": storage.put(_png(photo.resize((256, 256), Image.Resampling.LANCZOS))),
        "photo_256_mirrored": storage.put(_png(photo.resize((256, 256), Image.Resampling.LANCZOS).transpose(
            Image.Transpose.FLIP_LEFT_RIGHT))),
        "photo_512": storage.put(PHOTO.read_bytes()),
    }
    return PinEnv(settings, model_manager(settings), storage, refs)


def _run(env: PinEnv, spec: Any) -> Any:
    ctx = JobContext(env.settings, env.models, env.storage, owner="pins")
    return execute(spec, ctx)


def _pixels(env: PinEnv, out: Any, name: str, points: list[tuple[int, int]]) -> dict[str, Any]:
    img = Image.open(env.storage.local_path(out.output(name).ref)).convert("RGB")
    arr = np.asarray(img)
    return {
        "output": name,
        "size": list(img.size),
        "points": [list(p) for p in points],
        "values": [arr[y, x].tolist() for x, y in points],
    }


def _grid(w: int, h: int) -> list[tuple[int, int]]:
    """Nine pixels: the corners, edge midpoints and centre of the inner half of a w x h image."""
    return [(int(w * fx), int(h * fy)) for fy in (0.25, 0.5, 0.75) for fx in (0.25, 0.5, 0.75)]


def avatar_neural(env: PinEnv) -> dict[str, Any]:
    """Memoji recipe on tiny SDXL + canny ControlNet + LoRA: both passes, 80x64 photo -> 96x72 avatar."""
    spec = AvatarSpec(image=env.refs["photo_80x64"], backend="neural", checkpoint="tiny-sdxl",
                      controlnet="tiny-sdxl-canny", loras=[LoraRef(name="tiny-memoji", weight=1.0)], steps=4,
                      max_side=64, seed=11)  # fmt: skip
    return _pixels(env, _run(env, spec), "avatar", _grid(96, 72))


def avatar_classic(env: PinEnv) -> dict[str, Any]:
    """The classic (OpenCV) avatar of the 80x64 photo."""
    out = _run(env, AvatarSpec(image=env.refs["photo_80x64"], backend="classic"))
    img = Image.open(env.storage.local_path(out.output("avatar").ref))
    return _pixels(env, out, "avatar", _grid(*img.size))


def generate_txt2img(env: PinEnv) -> dict[str, Any]:
    """A1111 txt2img on tiny SD1.5, 64x48, Euler a, 3 steps, a fixed seed."""
    spec = GenerateSpec(checkpoint="tiny-sd15", prompt="a red house, (garden:1.2)", negative_prompt="blurry",
                        steps=3, width=64, height=48, seed=5, sampler_name="Euler a")  # fmt: skip
    out = _run(env, spec)
    return _pixels(env, out, out.outputs[0].name, _grid(64, 48))


def generate_img2img(env: PinEnv) -> dict[str, Any]:
    """A1111 img2img on tiny SD1.5 from the 64x48 photo, denoising strength 0.6, DPM++ 2M Karras."""
    spec = GenerateSpec(checkpoint="tiny-sd15", mode="img2img", init_images=[env.refs["photo_64x48"]],
                        prompt="a portrait", steps=4, width=64, height=48, seed=9, denoising_strength=0.6,
                        sampler_name="DPM++ 2M Karras")  # fmt: skip
    out = _run(env, spec)
    return _pixels(env, out, out.outputs[0].name, _grid(64, 48))


# inside the designed SAM's silhouette (the restyled person), in the inpainted ring around it, and outside
ANIME_POINTS = [(112, 40), (80, 150), (150, 200), (163, 40), (28, 150), (10, 10), (240, 40)]


def anime_full(env: PinEnv) -> dict[str, Any]:
    """Anime-me, neural: the designed tiny SAM, tiny LaMa, tiny SD1.5 + canny ControlNet + style LoRA, on a
    256 x 256 photo with a click on the face; the composite."""
    spec = AnimeSpec(image=env.refs["photo_256"], points=[{"x": 112, "y": 58}], backend="neural",
                     sam_model="tiny-sam", lama_model="tiny-lama", checkpoint="tiny-sd15",
                     controlnet="tiny-sd15-canny", style="tiny-sd15-style", steps=4, gen_size=64,
                     seed=7)  # fmt: skip
    return _pixels(env, _run(env, spec), "composite", ANIME_POINTS)


def train_lora(env: PinEnv) -> dict[str, Any]:
    """Four steps of LoRA training on tiny SD1.5 (32 px, three synthetic images); a slice of one weight."""
    from safetensors.torch import load_file

    from toonbooth.core.images import image_to_data_url
    from toonbooth.training.styles import delete_style

    images = []
    for i in range(3):
        rng = np.random.default_rng(100 + i)
        yy, xx = np.mgrid[0:32, 0:32]
        wave = 0.5 + 0.5 * np.sin(xx / (3 + i) + yy / 7.0)
        images.append(
            Image.fromarray((rng.integers(0, 255, 3)[None, None, :] * wave[..., None]).astype(np.uint8))
        )
    raw = {"kind": "train_lora", "style_name": "pinstyle", "base": "tiny-sd15", "arch": "sd15",
           "resolution": 32, "images": [image_to_data_url(im) for im in images], "sample_steps": 1,
           "checkpoint_every": 0, "seed": 0, "steps": 4, "learning_rate": 1e-2, "rank": 4, "alpha": 8.0}  # fmt: skip
    out = _run(env, parse_job_spec(raw))
    weights = load_file(out.info["style"]["files"]["model"])
    key = sorted(k for k in weights if k.endswith("lora_down.weight"))[0]
    down = weights[key].flatten()[:6].tolist()
    up = weights[key.replace("lora_down", "lora_up")].flatten()[:6].tolist()
    # free the name again (a second run in the same process trains from scratch under the same name)
    delete_style(env.models.registry, env.settings.resolved_models_dir, "pins", "pinstyle")
    return {"key": key, "down": down, "up": up}


def talk_classic(env: PinEnv) -> dict[str, Any]:
    """Talking emoticon, classic: the sample photo (detected landmarks, FFHQ-aligned at 128 px, classic toon)
    speaking a tone burst (0.3 s silence, 0.6 s of 180 Hz with harmonics, 0.3 s silence), seed 3 (blinks
    and sway); the still frame (the loudest moment)."""
    from toonbooth.core.audio import encode_wav
    from toonbooth.core.specs import TalkSpec

    t = np.arange(9600) / 16000
    loud = sum(0.25 / k * np.sin(2 * np.pi * 180 * k * t) for k in (1, 2, 3, 4))
    voice = np.concatenate([np.zeros(4800), loud, np.zeros(4800)]).astype(np.float32)
    spec = TalkSpec(face=env.storage.put(PHOTO.read_bytes()),
                    voice=env.storage.put(encode_wav(voice, 16000), content_type="audio/wav"),
                    backend="classic", size=128, seed=3, sticker_seconds=0.5)  # fmt: skip
    return _pixels(env, _run(env, spec), "still", _grid(128, 128))
# a standing figure (OpenPose-18 body) on the 64 x 48 result canvas
REPOSE_BODY = [(32, 6), (32, 13), (27, 13), (25, 21), (24, 28), (37, 13), (39, 21), (40, 28), (29, 28), (28, 36),
               (28, 44), (35, 28), (36, 36), (36, 44), (31, 5), (33, 5), (29, 6), (35, 6)]  # fmt: skip


def repose_animate_anyone(env: PinEnv) -> dict[str, Any]:
    """Pose change, AnimateAnyone on the tiny parts (reference + denoising UNet, PoseGuider, CLIP image
    encoder, VAE): the 64x48 photo re-posed to a JSON skeleton, 3 DDIM v-prediction steps, CFG 3.5."""
    skeleton = {"people": [{"pose_keypoints_2d": [v for x, y in REPOSE_BODY for v in (x, y, 1.0)]}],
                "canvas_width": 64, "canvas_height": 48}  # fmt: skip
    raw = {"kind": "repose", "character": env.refs["photo_64x48"], "skeleton": skeleton, "method": "animate_anyone",
           "backend": "neural", "image_encoder": "tiny-image-encoder", "vae": "tiny-vae", "size": 64,
           "diffusion": {"checkpoint": "tiny-sd15", "sampler": "DDIM", "steps": 3, "cfg_scale": 3.5, "seed": 13}}  # fmt: skip
    return _pixels(env, _run(env, parse_job_spec(raw)), "image", _grid(64, 48))
# on the lips, the cheeks, the eye-shadow ring and the brows of the 256 px photo's face, and in the background
MAKEUP_POINTS = [(112, 96), (96, 82), (130, 82), (97, 60), (110, 52), (122, 108), (20, 20), (230, 200)]


def makeup_neural(env: PinEnv) -> dict[str, Any]:
    """Makeup, neural: tiny Stable-Makeup (makeup encoder + identity / structure ControlNets) on tiny SD1.5,
    img2img DDIM 10 steps at strength 0.5, face crop 64 px, tiny BiSeNet regions; the mirrored photo as the
    reference; the blended result."""
    spec = parse_job_spec({
        "kind": "makeup", "source": env.refs["photo_256"], "reference": env.refs["photo_256_mirrored"],
        "backend": "neural", "makeup_model": "tiny-stable-makeup", "face_parser": "tiny-face-parser", "size": 64,
        "intensity": {"lips": 1.0, "eyes": 1.0, "brows": 0.7, "skin": 0.5, "blush": 0.8},
        "diffusion": {"checkpoint": "tiny-sd15", "sampler": "DDIM", "steps": 10, "strength": 0.5, "cfg_scale": 1.6,
                      "seed": 21},
    })  # fmt: skip
    return _pixels(env, _run(env, spec), "result", MAKEUP_POINTS)
def toon_neural(env: PinEnv) -> dict[str, Any]:
    """Toon me, neural, on the tiny 32 px StyleGAN2 pair: dlib landmarks + FFHQ alignment of the 512 px photo, e4e
    inversion refined by 2 projector steps (MSE, seed 0), a hard blend at 16 px, strength 0.9, truncation 0.8;
    the toon face."""
    raw = {"kind": "toon", "image": env.refs["photo_512"], "backend": "neural", "style": "tiny-toonify",
           "base_model": "tiny-ffhq", "encoder": "tiny-e4e", "inversion": "encoder+projector", "projector_steps": 2,
           "perceptual": "mse", "blend_resolutions": [16], "strength": 0.9, "truncation": 0.8, "seed": 0}  # fmt: skip
    return _pixels(env, _run(env, parse_job_spec(raw)), "toon", _grid(32, 32))
def background_neural(env: PinEnv) -> dict[str, Any]:
    """Webtoon background from a Korean prompt: tiny MarianMT translation, tiny SD1.5 txt2img at 64x96 with a
    style LoRA at 0.8 and the clean-lineart preset, DPM++ 2M Karras, 3 steps."""
    spec = parse_job_spec({"kind": "background", "prompt": "비 오는 날의 골목, (벚꽃:1.2)", "width": 64, "height": 96,
                           "styles": [{"name": "tiny-sd15-style", "weight": 0.8}],
                           "diffusion": {"checkpoint": "tiny-sd15", "steps": 3, "seed": 21}})  # fmt: skip
    return _pixels(env, _run(env, spec), "background", _grid(64, 96))


def background_classic(env: PinEnv) -> dict[str, Any]:
    """The classic webtoon-background filter (flat-color preset) on the 256 x 256 photo."""
    spec = parse_job_spec({"kind": "background", "image": env.refs["photo_256"], "backend": "classic",
                           "preset": "flat-color"})  # fmt: skip
    return _pixels(env, _run(env, spec), "background", _grid(256, 256))
def generate_hires(env: PinEnv) -> dict[str, Any]:
    """A1111 txt2img with hires fix on tiny SD1.5: 64x48 first pass, Latent x2, 2 second-pass steps."""
    spec = GenerateSpec(checkpoint="tiny-sd15", prompt="a red house", steps=3, width=64, height=48, seed=5,
                        sampler_name="Euler a", enable_hr=True, hr_second_pass_steps=2, denoising_strength=0.6)  # fmt: skip
    out = _run(env, spec)
    return _pixels(env, out, out.outputs[0].name, _grid(128, 96))


def extras_upscale(env: PinEnv) -> dict[str, Any]:
    """A1111 extras: the 64x48 photo x2 with a tiny ESRGAN (original key layout), Lanczos blended at 0.3."""
    spec = parse_job_spec({"kind": "extras", "images": [env.refs["photo_64x48"]], "upscaling_resize": 2,
                           "upscaler_1": "4x-PinTiny", "upscaler_2": "Lanczos", "extras_upscaler_2_visibility": 0.3})  # fmt: skip
    out = _run(env, spec)
    return _pixels(env, out, "image-0", _grid(128, 96))


JOBS = {name: globals()[name] for name in STUDIOS}


def compare(name: str, got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """What differs between a measured pin and the stored one (empty: within tolerance)."""
    diffs = []
    for field in ("output", "size", "points", "key"):
        if got.get(field) != want.get(field):
            diffs.append(f"{name}: {field} {want.get(field)!r} -> {got.get(field)!r}")
    if diffs:
        return diffs
    if "values" in want:
        a, b = np.asarray(got["values"], np.int16), np.asarray(want["values"], np.int16)
        if np.abs(a - b).max() > PIXEL_TOL:
            diffs.append(f"{name}: pixels {want['values']} -> {got['values']} (tolerance ±{PIXEL_TOL})")
    for field in ("down", "up"):
        if field in want:
            a, b = np.asarray(got[field]), np.asarray(want[field])
            if np.abs(a - b).max() > WEIGHT_TOL:
                diffs.append(f"{name}: {field} {want[field]} -> {got[field]} (tolerance {WEIGHT_TOL})")
    return diffs
