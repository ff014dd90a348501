"""Training specs, presets, dataset checks (duplicates, sizes, faces, captions), buckets, batch order — no models."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from toonbooth.core.errors import InputError
from toonbooth.core.specs import TrainTISpec, parse_job_spec
from toonbooth.training.dataset import (
    BatchOrder,
    make_buckets,
    nearest_bucket,
    prepare_examples,
    read_image_folder,
)
from toonbooth.training.loop import lr_lambda, resolve_precision
from toonbooth.training.presets import list_presets, total_steps

REF = "blob:" + "0" * 64


def synth(i: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    rng = np.random.default_rng(i)
    w, h = size
    a = np.zeros((h, w, 3), np.uint8)
    a[:] = rng.integers(0, 255, 3)
    x, y = rng.integers(0, max(1, w - 24)), rng.integers(0, max(1, h - 24))
    a[y : y + 24, x : x + 24] = rng.integers(0, 255, 3)
    return Image.fromarray(np.clip(a.astype(int) + rng.integers(-20, 20, a.shape), 0, 255).astype(np.uint8))


def prep(images, captions=None, **kw):
    args = dict(
        resolution=32,
        buckets=False,
        face_crop=False,
        trigger="zq",
        class_word="person",
        template="{trigger}",
        prefix_trigger=True,
        require_trigger=False,
    )
    args.update(kw)
    names = [f"img{i}.png" for i in range(len(images))]
    return prepare_examples(images, names, captions or [], **args)


# --- specs and presets -------------------------------------------------------------------------------


def test_preset_fills_defaults_and_explicit_values_win():
    spec = parse_job_spec({"kind": "train_dreambooth", "preset": "portrait-character", "style_name": "me",
                           "images": [REF] * 8, "base": "sd15", "rank": 4})  # fmt: skip
    assert spec.face_crop and spec.delete_images_after and spec.steps == 800
    assert spec.rank == 4 and spec.caption_template == "a photo of {trigger} {class_word}"
    ti = parse_job_spec({"kind": "train_ti", "preset": "one-image-style", "style_name": "s", "images": [REF],
                         "base": "sd15"})  # fmt: skip
    assert isinstance(ti, TrainTISpec) and ti.stages == 6 and ti.num_vectors == 2 and ti.learning_rate == 5e-3
    by_epochs = parse_job_spec({"kind": "train_lora", "preset": "art-style", "style_name": "s", "images": [REF] * 5,
                                "base": "sd15", "epochs": 3})  # fmt: skip
    assert by_epochs.steps is None and by_epochs.epochs == 3
    assert {p.name for p in list_presets()} == {"portrait-character", "art-style", "one-image-style"}


@pytest.mark.parametrize(
    ("raw", "field", "text"),
    [
        (
            {"kind": "train_dreambooth", "preset": "portrait-character", "images": [REF] * 3},
            "images",
            "8-20 images, got 3",
        ),
        ({"kind": "train_ti", "preset": "portrait-character"}, "preset", "not train_ti"),
        ({"kind": "train_lora", "steps": 10, "epochs": 2}, "epochs", "not both"),
        (
            {"kind": "train_lora", "caption_template": "{trigger} {colour}"},
            "caption_template",
            "only {trigger}",
        ),
        (
            {"kind": "train_ti", "caption_template": "a painting"},
            "caption_template",
            "must contain {trigger}",
        ),
        ({"kind": "train_lora", "style_name": "../evil"}, "style_name", "pattern"),
        ({"kind": "train_lora", "rank": 0}, "rank", "greater than or equal to 1"),
        ({"kind": "train_lora", "captions": ["a", "b"]}, "captions", "one entry per image (1), got 2"),
        ({"kind": "train_lora", "resolution": 500}, "resolution", "multiple of 8"),
    ],
)
def test_bad_specs_name_the_field(raw, field, text):
    body = {"style_name": "s", "images": [REF], "base": "sd15", **raw}
    with pytest.raises(InputError) as err:
        parse_job_spec(body)
    assert err.value.field == field and text in str(err.value)


def test_steps_from_epochs_and_lr_curves():
    assert total_steps(None, 3, batches_per_epoch=5, grad_accum=2) == 9
    assert total_steps(40, None, 5, 1) == 40
    warm = lr_lambda("cosine", warmup=4, total=14)
    assert warm(0) == 0.0 and warm(2) == 0.5 and warm(4) == 1.0
    assert math.isclose(warm(9), 0.5, abs_tol=1e-9) and warm(14) == 0.0
    assert lr_lambda("linear", 0, 10)(5) == 0.5 and lr_lambda("constant", 0, 10)(9) == 1.0


def test_half_precision_is_refused_on_cpu():
    import torch

    with pytest.raises(InputError) as err:
        resolve_precision("fp16", torch.device("cpu"))
    assert err.value.field == "mixed_precision"
    assert resolve_precision("auto", torch.device("cpu")).label == "fp32"


# --- buckets and batch order -------------------------------------------------------------------------


def test_buckets_keep_area_step_and_aspect():
    sizes = make_buckets(512, True)
    assert (512, 512) in sizes and (384, 640) in sizes and (640, 384) in sizes
    for w, h in sizes:
        assert w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 and max(w, h) / min(w, h) <= 2.0
    assert nearest_bucket(1200, 800, sizes)[0] > nearest_bucket(1200, 800, sizes)[1]
    assert make_buckets(512, False) == [(512, 512)]


def test_batch_order_is_a_function_of_seed_and_step():
    buckets = [(32, 32)] * 3 + [(40, 24)] * 2
    a, b = BatchOrder(buckets, 2, seed=7), BatchOrder(buckets, 2, seed=7)
    assert a.batches_per_epoch == 3
    seq = [a.batch(k) for k in range(9)]
    assert seq == [b.batch(k) for k in range(9)]
    for e in range(3):
        epoch = seq[3 * e : 3 * e + 3]
        assert sorted(i for batch in epoch for i in batch) == list(range(5))
        assert all(len({buckets[i] for i in batch}) == 1 for batch in epoch)
    assert seq != [BatchOrder(buckets, 2, seed=8).batch(k) for k in range(9)]


# --- dataset checks ----------------------------------------------------------------------------------


def test_captions_template_prefix_and_ti_requirement():
    imgs = [synth(1), synth(2)]
    ex = prep(imgs, captions=["a red square", None])
    assert [e.caption for e in ex] == ["zq, a red square", "zq"]
    ex = prep(imgs, captions=["zq on a hill", None], template="art by {trigger}")
    assert [e.caption for e in ex] == ["zq on a hill", "art by zq"]
    with pytest.raises(InputError) as err:
        prep(imgs, captions=["a red square", None], prefix_trigger=False, require_trigger=True)
    assert err.value.field == "captions[0]" and "img0.png" in str(err.value)


def test_exact_and_near_duplicates_are_named(sample_photo_path):
    a = synth(3, (96, 96))
    with pytest.raises(InputError) as err:
        prep([a, synth(4), a.copy()])
    assert err.value.field == "images[2]" and "img2.png is the same image as img0.png" in str(err.value)
    photo = Image.open(sample_photo_path).convert("RGB")
    buf = io.BytesIO()
    photo.resize((300, 300)).save(buf, format="JPEG", quality=80)
    near = Image.open(buf).convert("RGB")
    with pytest.raises(InputError) as err:
        prep([photo, synth(5, (128, 128)), near])
    assert err.value.field == "images[2]" and "img2.png is a near duplicate of img0.png" in str(err.value)
    mirrored = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # a different picture: accepted
    assert len(prep([photo, mirrored])) == 2


def test_too_few_and_too_small_images():
    with pytest.raises(InputError) as err:
        prep([synth(6)], min_images=2)
    assert "needs 2-200 images, got 1" in str(err.value)
    with pytest.raises(InputError) as err:
        prep([synth(7), synth(8, (12, 12))])
    assert err.value.field == "images[1]" and "img1.png is too small" in str(err.value)


def test_face_crop_centres_the_face(sample_photo_path):
    photo = Image.open(sample_photo_path).convert("RGB")
    from toonbooth.vision.faces import largest_face

    face = largest_face(photo)
    ex = prep([photo], resolution=64, face_crop=True)[0]
    assert ex.image.size == (64, 64)
    top, left = ex.crop_top_left
    scale = 64 / (2.2 * max(face.width, face.height))
    assert abs((face.center[0] * scale - left) - 32) <= 3  # face horizontally centred in the crop
    with pytest.raises(InputError) as err:
        prep([synth(9, (128, 128))], face_crop=True)
    assert "no face found in img0.png" in str(err.value)


def test_buckets_follow_the_aspect_and_record_sdxl_sizes():
    ex = prep([synth(10, (96, 48)), synth(11, (48, 96))], resolution=32, buckets=True)
    assert ex[0].bucket[0] > ex[0].bucket[1] and ex[1].bucket[0] < ex[1].bucket[1]
    assert ex[0].original_size == (48, 96) and ex[0].image.size == ex[0].bucket


def test_image_folder_reads_captions_and_names_bad_files(tmp_path):
    synth(12).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("zq, a cat\n")
    synth(13).save(tmp_path / "b.jpg")
    found = read_image_folder(tmp_path, max_bytes=1 << 20, max_pixels=1 << 20)
    assert [(f.name, f.caption) for f in found] == [("a.png", "zq, a cat"), ("b.jpg", None)]
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(InputError) as err:
        read_image_folder(tmp_path, max_bytes=1 << 20, max_pixels=1 << 20)
    assert "c.png" in err.value.field
