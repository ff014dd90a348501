"""The anime-me job (issue 6) end to end: tiny neural models (a SAM with designed weights from a saved
folder, LaMa from a safetensors file in the models folder, SD1.5 + ControlNet canny + style LoRA) and the
classic backends, on the shared face photo with a click on the face; bad clicks, mask-only mode, backend
choice, cancel."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from PIL import Image

from toonbooth.core.errors import BackendUnavailableError, InputError, JobCanceledError
from toonbooth.core.events import ProgressEvent
from toonbooth.core.images import read_png_parameters
from toonbooth.core.settings import Settings
from toonbooth.core.specs import AnimeSpec, parse_job_spec
from toonbooth.engines import anime
from toonbooth.models.cache import ModelCache
from toonbooth.runtime.context import JobContext
from toonbooth.runtime.execute import execute
from toonbooth.runtime.families import model_manager
from toonbooth.runtime.storage_local import LocalStorage

CLICK = {"x": 225, "y": 115}  # on the face of assets/sample_face.png (512 x 512)
# The designed SAM's mask: a head-and-shoulders silhouette on an 8 x 8 grid of 64 px cells of the photo
SILHOUETTE = (
    "..XXX...",
    "..XXX...",
    "..XXX...",
    ".XXXXX..",
    ".XXXXX..",
    ".XXXXX..",
    ".XXXXX..",
    ".XXXXX..",
)
SAM_SCORES = (0.25, 0.5, 0.875, 0.75)  # designed IoU predictions: single-mask token, then the 3 candidates
NEURAL = dict(
    backend="neural", sam_model="tiny-sam", lama_model="tiny-lama", checkpoint="tiny-sd15",
    controlnet="tiny-sd15-canny", style="tiny-sd15-style", steps=4, gen_size=64, seed=7,
)  # fmt: skip


def designed_sam(rows: tuple[str, ...] = SILHOUETTE, scores: tuple[float, ...] = SAM_SCORES):
    """A tiny transformers `SamModel` whose mask is designed, not found: for any photo and any prompt it
    predicts the silhouette `rows` ("X" = person) drawn on a grid of cells, one cell per image-embedding
    position (16 px of the model's input square; 512 / 8 = 64 px of the shared 512 x 512 photo).

    The weights of `build_tiny_sam` are overwritten (hidden size C = 32, grid g = len(rows)):

    - Vision encoder: the patch projection is zero, so the hidden state is the absolute position
      embedding, set to s = +1 / -1 (cell inside / outside) in channel 0 and -s in channel 1. Each ViT
      layer's attention projection and second MLP linear are zero: both residual branches add nothing.
      The neck's 1x1 conv is the identity and its 3x3 conv the identity at the centre tap, so its two
      LayerNorms (weight 1, bias 0) see (s, -s, 0, ...): mean 0, std sqrt(2 / C) -> embedding (4s, -4s, 0...).
    - Prompt encoder: `no_mask_embed` is zero, so the dense prompt adds nothing to the embedding.
    - Two-way transformer: every image-to-token attention projects to zero, so the image stream only
      passes the LayerNorms (already normalised: unchanged). Points and boxes reach the tokens only, and
      the tokens reach nothing below, so the prompt cannot move the mask.
    - Upscaling: conv-transpose 1 copies channels 0 and 1 into each 2x2 block; its LayerNorm over C/4 = 8
      channels gives (2s, -2s); GELU; conv-transpose 2 writes GELU(2s) - GELU(-2s) + 2 = 2s + 2 (GELU(x) -
      GELU(-x) = x) into channel 0 and -2s + 2 into channel 1; GELU maps {4, 0} to {3.9999, 0}.
    - Every hypernetwork MLP outputs its bias (0.5, -0.5, 0, 0), so each mask logit is 0.5 (u0 - u1) =
      +2 inside and -2 outside, piecewise constant on 4 x 4 blocks of the (4g x 4g) low-res mask; the IoU
      head outputs its bias `scores` (index 0: the single-mask output, 1-3: the multimask candidates).

    `SamProcessor.post_process_masks` upscales the logits bilinearly to the photo and thresholds at 0: by
    symmetry (+2 / -2) the edges stay on the cell borders; only at the corners of the shape the bilinear
    blend cuts across, by less than one low-res pixel (512 / 32 = 16 px of the photo).
    """
    import torch

    from toonbooth.vision.segment import build_tiny_sam

    cells = np.array([[c == "X" for c in row] for row in rows])
    grid = cells.shape[0]
    model, processor = build_tiny_sam(seed=0, image_size=16 * grid)
    s = torch.tensor(np.where(cells, 1.0, -1.0), dtype=torch.float32)
    vision, decoder = model.vision_encoder, model.mask_decoder
    with torch.no_grad():
        for p in model.parameters():  # nothing random is left to matter below: start from zero
            p.zero_()
        vision.pos_embed[0, :, :, 0] = s
        vision.pos_embed[0, :, :, 1] = -s
        eye = torch.eye(vision.neck.conv1.weight.shape[0])
        vision.neck.conv1.weight.copy_(eye[:, :, None, None])
        vision.neck.conv2.weight[:, :, 1, 1] = eye
        norms = [vision.neck.layer_norm1, vision.neck.layer_norm2, decoder.upscale_layer_norm]
        norms += [layer.layer_norm4 for layer in decoder.transformer.layers]
        for norm in norms:
            norm.weight.fill_(1.0)
        decoder.upscale_conv1.weight[0, 0] = 1.0
        decoder.upscale_conv1.weight[1, 1] = 1.0
        up2 = decoder.upscale_conv2
        up2.weight[0, 0], up2.weight[1, 0], up2.weight[0, 1], up2.weight[1, 1] = 1.0, -1.0, -1.0, 1.0
        up2.bias[:2] = 2.0
        for mlp in decoder.output_hypernetworks_mlps:
            mlp.proj_out.bias.copy_(torch.tensor([0.5, -0.5, 0.0, 0.0]))
        decoder.iou_prediction_head.proj_out.bias.copy_(torch.tensor(scores))
    return model, processor


def designed_mask(shape: tuple[int, int], rows: tuple[str, ...] = SILHOUETTE) -> np.ndarray:
    """The silhouette of `designed_sam` at the size of a square photo: each cell a block of pixels."""
    cells = np.array([[c == "X" for c in row] for row in rows])
    side = shape[0] // cells.shape[0]
    assert shape[0] == shape[1] == side * cells.shape[0]
    return np.kron(cells, np.ones((side, side), bool))


def assert_designed(mask: np.ndarray, corner_px: int = 16) -> None:
    """`mask` is the designed silhouette, exact along its straight edges; only within `corner_px` of a
    corner of the shape (a cell vertex whose four cells are not split by a straight line) it may differ."""
    want = designed_mask(mask.shape)
    cells = np.pad(np.array([[c == "X" for c in row] for row in SILHOUETTE]), 1, mode="edge")
    side = mask.shape[0] // (cells.shape[0] - 2)
    near_corner = np.zeros_like(want)
    for i in range(cells.shape[0] - 1):
        for j in range(cells.shape[1] - 1):
            quad = cells[i : i + 2, j : j + 2]
            straight = quad[0, 0] == quad[0, 1] and quad[1, 0] == quad[1, 1]  # a horizontal edge or none
            straight |= quad[0, 0] == quad[1, 0] and quad[0, 1] == quad[1, 1]  # a vertical edge or none
            if not straight:
                y0, x0 = max(0, i * side - corner_px), max(0, j * side - corner_px)
                near_corner[y0 : i * side + corner_px, x0 : j * side + corner_px] = True
    differ = mask != want
    assert not (differ & ~near_corner).any(), np.argwhere(differ & ~near_corner)[:5]
    assert differ.sum() < 0.01 * mask.size


@pytest.fixture(scope="module")
def env(tiny_models_dir, tmp_path_factory, sample_photo_path):
    from safetensors.torch import save_file

    from toonbooth.nets.lama import LamaConfig, build_lama

    home = tmp_path_factory.mktemp("anime-home")
    extra = home / "extra-models"  # SAM/ and LaMa/ next to the shared tiny set (extra_model_dirs)
    sam, processor = designed_sam()
    sam.save_pretrained(extra / "SAM" / "tiny-sam")
    processor.save_pretrained(extra / "SAM" / "tiny-sam")
    lama = build_lama(LamaConfig.tiny(), seed=0)
    (extra / "LaMa").mkdir(parents=True)
    sd = {f"generator.{k}": v.contiguous() for k, v in lama.generator.state_dict().items()}
    save_file(sd, str(extra / "LaMa" / "tiny-lama.safetensors"))
    settings = Settings(
        home=home, models_dir=tiny_models_dir, extra_model_dirs=[extra], data_dir=home / "data", device="cpu"
    )
    storage = LocalStorage(settings.resolved_data_dir)
    models = model_manager(settings, cache=ModelCache(max_items=6))
    ref = storage.put(sample_photo_path.read_bytes())
    photo = np.asarray(Image.open(sample_photo_path).convert("RGB"))
    return settings, models, storage, ref, photo


def run(env, spec, events=None, cancel=None):
    settings, models, storage, *_ = env
    ctx = JobContext(settings, models, storage, on_event=events.append if events is not None else None,
                     cancel_event=cancel)  # fmt: skip
    out = execute(spec, ctx)
    images = {o.name: Image.open(storage.local_path(o.ref)) for o in out.outputs}
    return out, images


def check_full_outputs(out, images, photo):
    """Sizes, non-empty mask, composite changed inside the mask and byte-identical far outside it."""
    h, w = photo.shape[:2]
    assert set(images) == {"composite", "background", "character", "mask"}
    assert all(im.size == (w, h) for im in images.values())
    assert images["character"].mode == "RGBA" and images["mask"].mode == "L"
    mask = np.asarray(images["mask"]) > 127
    assert 0 < mask.mean() < 0.9
    comp = np.asarray(images["composite"].convert("RGB")).astype(np.int16)
    inside = np.abs(comp - photo)[mask].mean()
    assert inside > 5, inside
    dist = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    far = dist > out.info["dilate_px"] + 12  # beyond the inpainted hole and the feathered edge
    assert far.mean() > 0.05
    assert np.array_equal(comp[far], photo[far])
    bg = np.asarray(images["background"].convert("RGB")).astype(np.int16)
    assert np.array_equal(bg[far], photo[far]) and np.abs(bg - photo)[mask].mean() > 5
    alpha = np.asarray(images["character"])[:, :, 3]
    assert alpha[mask].min() > 0 and alpha[far].max() == 0
    return mask


def test_neural_job_end_to_end_and_mask_mode(env):
    _, models, storage, ref, photo = env
    events: list = []
    spec = AnimeSpec(image=ref, points=[CLICK], **NEURAL)
    out, images = run(env, spec, events)
    assert out.backend == "neural"
    assert out.info["backends"] == {"segment": "sam", "inpaint": "lama", "character": "sd15"}
    mask = check_full_outputs(out, images, photo)
    assert_designed(mask)  # the designed SAM's silhouette, through clean_mask (one component, no holes)
    assert mask[CLICK["y"], CLICK["x"]]
    # one click: the three multimask candidates; the designed IoU head makes the second one the best
    assert out.info["score"] == SAM_SCORES[2] and out.info["all_scores"] == list(SAM_SCORES[1:])
    # crop long side -> gen_size, multiples of 8; tiny LoRA active; seed as asked
    assert max(out.info["gen_size"]) == 64 and all(v % 8 == 0 for v in out.info["gen_size"])
    assert out.info["seed"] == 7 and out.info["loras"][0]["name"] == "tiny-sd15-style"
    params = read_png_parameters(storage.local_path(out.output("composite").ref))
    assert params.startswith("anime style, cel shading") and "<lora:tiny-sd15-style:1>" in params
    for key in ("Negative prompt: photo, realistic", "Steps: 4", "Sampler: DPM++ 2M Karras", "Seed: 7",
                "Denoising strength: 0.6", "ControlNet 0: ", "Model: tiny-sd15",
                "Inpaint: LaMa tiny-lama", "Lora hashes: ", 'Segment: "SAM tiny-sam, score 0.875'):  # fmt: skip
        assert key in params, key
    assert "Inpaint: LaMa tiny-lama" in read_png_parameters(storage.local_path(out.output("background").ref))
    # one monotonic progress stream 0 -> 100 over the stages; int(4 * 0.6) = 2 denoising steps
    prog = [e for e in events if isinstance(e, ProgressEvent)]
    perc = [e.percent for e in prog]
    assert perc[0] == 0.0 and perc[-1] == 100.0 and bool(np.all(np.diff(perc) >= 0))
    assert [e.stage for e in prog if e.stage == "generate"] and prog[-1].total == 2 + 2 + 1
    # mask mode: segmentation only (SAM and its image embedding cached), the same mask, an overlay
    hits = models.cache.hits
    out_m, images_m = run(env, spec.model_copy(update={"mode": "mask"}))
    assert set(images_m) == {"mask", "overlay"} and out_m.backend == "neural"
    assert np.array_equal(np.asarray(images_m["mask"]) > 127, mask)
    assert images_m["overlay"].size == (photo.shape[1], photo.shape[0])
    assert models.cache.hits > hits  # SAM came from the cache


def test_classic_job_end_to_end(env):
    _, _, storage, ref, photo = env
    events: list = []
    out, images = run(env, AnimeSpec(image=ref, points=[CLICK], backend="classic", edge_line_px=2), events)
    assert out.backend == "classic"
    assert out.info["backends"] == {"segment": "grabcut", "inpaint": "telea", "character": "toon"}
    assert out.info["score"] is None
    mask = check_full_outputs(out, images, photo)
    assert mask[CLICK["y"], CLICK["x"]]
    params = read_png_parameters(storage.local_path(out.output("character").ref))
    assert "classic toon" in params and "Segment: GrabCut" in params and "Inpaint: Telea" in params
    assert [e.percent for e in events if isinstance(e, ProgressEvent)] == [0.0, 25.0, 50.0, 75.0, 100.0]
    out_m, images_m = run(env, AnimeSpec(image=ref, points=[CLICK], backend="classic", mode="mask"))
    assert set(images_m) == {"mask", "overlay"} and out_m.info["backends"] == {"segment": "grabcut"}


def test_auto_picks_per_stage_and_neural_without_weights_refuses(env):
    settings, models, storage, ref, _ = env
    # SAM only on the (offline) hub, LaMa not in the folder, SD1.5 present -> grabcut, telea, sd15
    spec = AnimeSpec(image=ref, points=[CLICK], lama_model="no-such-lama", checkpoint="tiny-sd15",
                     controlnet="tiny-sd15-canny")  # fmt: skip
    plan = anime.choose_backends(spec, models, None)
    assert (plan.segment, plan.inpaint, plan.character) == ("grabcut", "telea", "sd15")
    assert "facebook/sam-vit-base" in plan.reasons["segment"] and "no-such-lama" in plan.reasons["inpaint"]
    full = anime.choose_backends(
        spec.model_copy(update={"sam_model": "tiny-sam", "lama_model": "tiny-lama"}), models, None
    )
    assert (full.segment, full.inpaint, full.character) == ("sam", "lama", "sd15")
    with pytest.raises(BackendUnavailableError, match="inpaint: lama 'no-such-lama' not found"):
        anime.choose_backends(
            spec.model_copy(update={"backend": "neural", "sam_model": "tiny-sam"}), models, None
        )
    # API managers take names only: a path is refused, naming the field
    api_models = model_manager(settings, registry=models.registry, allow_paths=False)
    with pytest.raises(InputError) as err:
        anime.AnimeEngine().check_inputs(spec.model_copy(update={"sam_model": "../../etc"}), api_models, None)
    assert err.value.field == "sam_model"


@pytest.mark.parametrize(
    ("points", "box", "field", "text"),
    [
        ([{"x": 600, "y": 10}], None, "points[0]", "outside the 512x512 image"),
        ([CLICK, {"x": -1, "y": 5, "positive": False}], None, "points[1]", "outside"),
        ([{"x": 10, "y": 10, "positive": False}], None, "points", "at least one positive point"),
        ([], (10, 10, 600, 200), "box", "not inside"),
    ],
)
def test_bad_clicks_name_the_field(env, points, box, field, text):
    ref = env[3]
    with pytest.raises(InputError) as err:
        run(env, AnimeSpec(image=ref, points=points, box=box, backend="classic"))
    assert err.value.field == field and text in str(err.value)


def test_spec_errors_and_unknown_style(env):
    ref = env[3]
    with pytest.raises(InputError) as err:
        parse_job_spec({"kind": "anime", "image": ref, "points": [CLICK], "gen_size": 500})
    assert err.value.field == "gen_size"
    with pytest.raises(InputError) as err:
        run(env, AnimeSpec(image=ref, points=[CLICK], **{**NEURAL, "style": "nobody-style"}))
    assert err.value.field == "style" and "tiny-sd15-style" in str(err.value)
    with pytest.raises(InputError) as err:
        run(env, AnimeSpec(image=ref, points=[CLICK], **{**NEURAL, "style": "tiny-memoji"}))  # an SDXL LoRA
    assert err.value.field == "style" and "sdxl" in str(err.value)


def test_cancel_between_stages(env):
    ref = env[3]
    cancel = threading.Event()
    stages: list[str] = []

    def on_event(event):
        if isinstance(event, ProgressEvent):
            stages.append(event.stage)
            if event.stage == "inpaint":
                cancel.set()

    settings, models, storage, *_ = env
    ctx = JobContext(settings, models, storage, on_event=on_event, cancel_event=cancel)
    with pytest.raises(JobCanceledError):
        execute(AnimeSpec(image=ref, points=[CLICK], backend="classic"), ctx)
    assert stages == ["segment", "inpaint"]


def small_photo(sample_photo_path, side: int = 160) -> Image.Image:
    return Image.open(sample_photo_path).convert("RGB").resize((side, side), Image.Resampling.LANCZOS)


def test_cli_anime_mask_only_and_bad_point(tmp_path, sample_photo_path):
    from typer.testing import CliRunner

    from toonbooth.cli.main import app

    photo = tmp_path / "me.png"
    small_photo(sample_photo_path).save(photo)
    env = {"TOONBOOTH_HOME": str(tmp_path / "home")}
    args = ["anime", str(photo), "--point", "70,36", "--point", "5,150:neg", "--mask-only", "--quiet"]
    res = CliRunner().invoke(app, [*args, "--out-dir", str(tmp_path / "out")], env=env)
    assert res.exit_code == 0, res.output
    assert "segment: grabcut" in res.output
    mask = np.asarray(Image.open(tmp_path / "out" / "me-anime-mask.png")) > 127
    assert mask.shape == (160, 160) and mask[36, 70] and not mask[150, 5]
    assert (tmp_path / "out" / "me-anime-overlay.png").is_file()
    res = CliRunner().invoke(app, ["anime", str(photo), "--point", "170,36", "--quiet"], env=env)
    assert res.exit_code == 2 and "`points[0]`" in res.output and "outside the 160x160 image" in res.output


def test_ui_tab_click_preview_and_generate(tmp_path, sample_photo_path):
    import gradio as gr

    from toonbooth.runtime.service import Service
    from toonbooth.ui.anime_tab import AnimeTabActions, build_anime_tab

    settings = Settings(home=tmp_path / "home", data_dir=tmp_path / "data", device="cpu")
    with Service(settings) as service:
        with gr.Blocks():
            assert isinstance(build_anime_tab(service, settings), gr.Tab)
        ui = AnimeTabActions(service, settings, wait_s=120)
        ref, points, shown, _ = ui.upload(small_photo(sample_photo_path))
        assert ref.startswith("blob:") and points == []
        click = gr.SelectData(None, {"index": [70, 36], "value": None, "selected": True})
        points, overlay, status = ui.click(ref, points, "the person", "", "classic", click)
        assert points == [{"x": 70, "y": 36, "positive": True}] and "Mask: grabcut" in status
        assert overlay.size == (160, 160) and overlay.tobytes() != shown.tobytes()
        outside = gr.SelectData(None, {"index": [5, 150], "value": None, "selected": True})
        points, _, status = ui.click(ref, points, "not the person", "", "classic", outside)
        assert points[-1] == {"x": 5, "y": 150, "positive": False}
        *_, (job, text, composite, layers) = ui.generate(
            ref, points, "", "classic", "(none)", 1.0, "", "anime", "", 0.6, 4, 1, 0.5, 1
        )
        assert text.startswith("Done (classic"), text
        assert composite.size == (160, 160) and [n for _, n in layers] == ["background", "character", "mask"]
        assert "Nothing is running" in ui.cancel(None)
        _, _, status = ui.click(ref, [], "not the person", "", "classic", outside)
        assert "at least one positive point" in status
