"""The "Train a style" web UI tab, its actions driven through a real `Service` (runner thread, SQLite queue,
tiny SD1.5 base): the tab builds, the base defaults to the tiny checkpoint, a training streams its progress
and loss curve to the end, the style is listed, tried with `<lora:NAME:w>` (the strength changes the image,
0 gives the base image), canceled runs end `canceled`, bad input shows the service's error, delete removes
the style (for its owner only) and the training photos were released."""

from __future__ import annotations

import io
import shutil

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from toonbooth.core.settings import Settings

COLOURS = [(230, 50, 40), (40, 190, 70), (60, 60, 220)]


def write_images(folder, size: int = 48) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    paths = []
    for i, colour in enumerate(COLOURS):
        ramp = 0.6 + 0.4 * (xx * (i + 1) % size + yy)[..., None] / (2 * size)
        arr = (np.array(colour, dtype=np.float32)[None, None, :] * ramp).clip(0, 255).astype(np.uint8)
        path = folder / f"colour{i}.png"
        Image.fromarray(arr).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture()
def service_and_settings(tiny_models_dir, tmp_path):
    from toonbooth.models.manager import ModelManager
    from toonbooth.runtime.service import Service

    models = tmp_path / "models"  # own copy: trained styles are written under <models>/users/
    shutil.copytree(tiny_models_dir, models)
    settings = Settings(home=tmp_path / "home", models_dir=models, data_dir=tmp_path / "data", device="cpu")
    with Service(settings, models=ModelManager(settings, allow_paths=False)) as service:
        yield service, settings


def test_train_tab_start_watch_try_cancel_delete(service_and_settings, tmp_path):
    from toonbooth.ui.train_tab import TrainTabActions, build_train_tab, parse_step

    service, settings = service_and_settings
    with gr.Blocks():
        assert isinstance(build_train_tab(service, settings, owner_of=lambda _r: "carol"), gr.Tab)
    ui = TrainTabActions(service, settings, owner_of=lambda _r: "carol", wait_s=120)
    files = write_images(tmp_path / "photos")

    # 1. Opening the tab: the tiny SD1.5 base is preselected, no styles yet; presets set the photo deletion
    base, rows, choices = ui.refresh()
    assert base["value"] == "tiny-sd15" and "tiny-sdxl" in base["choices"]
    assert "tiny-sd15-inpainting" not in base["choices"]
    assert rows == [] and choices["choices"] == []
    delete_box, info = ui.preset_changed("portrait-character")
    assert delete_box["value"] is True and "8–20 images" in info
    assert ui.preset_changed("art-style")[0]["value"] is False
    assert parse_step("training step 3/8 loss 0.1234 lr 1.00e-02 eta 0m01s") == (3, 8, 0.1234)

    # 2. Bad input: the service's message is shown, nothing runs
    *_, (job, _, _, text) = ui.start(None, "none", "train_lora", "x", "", "tiny-sd15", 0, 0, 0, False)
    assert job is None and "Upload" in text
    *_, (job, _, _, text) = ui.start(files, "portrait-character", "train_lora", "face", "", "tiny-sd15", 4, 32,
                                     1e-2, True)  # fmt: skip
    assert job is None and "**Error:**" in text and "8-20 images" in text

    # 3. Train: the stream goes queued -> progress with the loss curve -> done
    outs = list(ui.start(files, "none", "train_lora", "uistyle", "zq", "tiny-sd15", 6, 32, 1e-2, True))
    job, bar, loss, text = outs[-1]
    assert outs[0][3].startswith("Queued") and text.startswith("**Done:**"), text
    assert "`<lora:uistyle:0.8> zq`" in text and "3 uploaded training image(s) deleted" in text
    assert 'data-percent="100.0"' in bar and list(loss["step"]) == [1, 2, 3, 4, 5, 6]
    assert np.isfinite(loss["loss"]).all()
    record = service.get(job, "carol")
    assert not any(service.storage.exists(ref) for ref in record.spec["images"])

    # 4. My styles, and trying one: the strength slider changes the picture, 0 gives the base back
    rows, choices = ui.styles()
    assert [r[0] for r in rows] == ["uistyle"] and rows[0][1] == "lora" and choices["value"] == "uistyle"
    strong, note = ui.try_style("uistyle", "a red picture", 1.0, 2, 5)
    assert strong is not None and strong.size == (32, 32) and "<lora:uistyle:1>" in note, note
    zero, _ = ui.try_style("uistyle", "a red picture", 0.0, 2, 5)
    base_job = service.submit(
        {"kind": "generate", "prompt": "a red picture", "checkpoint": "tiny-sd15", "width": 32, "height": 32,
         "steps": 2, "seed": 5}, "carol",
    )  # fmt: skip
    base_job = service.wait(base_job.id, "carol", timeout=60)
    png = service.read_output(base_job.id, "carol", base_job.output.outputs[0].name)
    base_img = Image.open(io.BytesIO(png))
    as_array = lambda im: np.asarray(im.convert("RGB"), dtype=np.int16)  # noqa: E731
    assert np.array_equal(as_array(zero), as_array(base_img))
    assert np.abs(as_array(strong) - as_array(base_img)).max() > 0

    # 5. Another user sees none of it and cannot delete it
    other = TrainTabActions(service, settings, owner_of=lambda _r: "dave", wait_s=60)
    assert other.styles()[0] == []
    assert "Pick one of your styles" in other.try_style("uistyle", "x", 1.0, 2, 1)[1]
    _, _, message = other.delete("uistyle")
    assert "**Error:**" in message and "no style called 'uistyle'" in message

    # 6. Cancel a long run as soon as it is queued
    stream = ui.start(files, "none", "train_lora", "longstyle", "", "tiny-sd15", 5000, 32, 1e-2, False)
    job, _, _, text = next(stream)
    assert text.startswith("Queued") and "Cancel requested" in ui.cancel(job)
    *_, (_, _, _, text) = stream
    assert text.startswith("**canceled**"), text
    assert "Nothing is running" in ui.cancel(None)

    # 7. Delete: gone from the table and from the models the generate job can use
    rows, choices, message = ui.delete("uistyle")
    assert rows == [] and choices["choices"] == [] and message.startswith("Deleted")
    assert "uistyle" not in service.models.registry.names("lora", "carol")
