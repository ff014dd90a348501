"""The studio platform (issue 9): engine contract and registry, typed outputs and artifacts, model families
and the one door (`ctx.models.load`), the byte-budgeted cache, media references found by their marker,
media types through storage / downloads / mail, and submit-time checks for every kind."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from toonbooth.core.artifacts import AnimationArtifact, FileArtifact, ImageArtifact, VideoArtifact
from toonbooth.core.audio import encode_wav
from toonbooth.core.errors import BackendUnavailableError, InputError, InputTooLargeError
from toonbooth.core.media import MediaRef, media_fields
from toonbooth.core.settings import Settings
from toonbooth.core.specs import AnimeSpec, AudioRef, AvatarSpec, ImageRef, SpecBase
from toonbooth.engines.base import Engine, EngineOutput, EngineRegistry
from toonbooth.models.cache import ModelCache, measure_bytes
from toonbooth.models.families import FamilySet, ModelFamily
from toonbooth.models.manager import ModelManager
from toonbooth.models.registry import ModelEntry
from toonbooth.runtime.context import JobContext
from toonbooth.runtime.execute import execute, store_output
from toonbooth.runtime.families import default_families
from toonbooth.runtime.service import Service
from toonbooth.runtime.storage_local import LocalStorage


def png_bytes(size: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (10, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------


def test_input_error_keeps_message_apart_and_can_be_renamed():
    exc = InputTooLargeError("voice", "the file is 9 bytes, over the limit of 1 bytes", 9)
    assert exc.field == "voice" and exc.message.startswith("the file is") and exc.value == 9
    moved = exc.renamed("alwayson_scripts.voice")
    assert type(moved) is InputTooLargeError and moved.http_status == 413
    assert str(moved) == "`alwayson_scripts.voice`: the file is 9 bytes, over the limit of 1 bytes"
    assert moved.message == exc.message and moved.value == 9


# --------------------------------------------------------------------------------------------------
# typed outputs
# --------------------------------------------------------------------------------------------------


class _StickerOutput(EngineOutput):
    primary: ClassVar[str] = "video"
    item_names: ClassVar[dict[str, str]] = {"frames": "frame_{i}"}
    still: ImageArtifact
    video: VideoArtifact | None = None
    frames: list[ImageArtifact] = []
    fps: float = 25.0


def _img(color: int) -> ImageArtifact:
    return ImageArtifact(Image.new("RGB", (16, 16), (color, 0, 0)), parameters=f"c {color}")


def test_output_artifacts_primary_first_item_names_and_details():
    frames = [np.full((32, 48, 3), 40 * i, np.uint8) for i in range(5)]
    out = _StickerOutput(
        still=_img(1), video=VideoArtifact(frames, fps=25.0), frames=[_img(2), _img(3)], backend="classic",
        info={"note": "x"}, fps=12.5,
    )  # fmt: skip
    names = [(n, primary) for n, _, primary in out.artifacts()]
    assert names == [("video", True), ("still", False), ("frame_0", False), ("frame_1", False)]
    assert out.details() == {"note": "x", "fps": 12.5}  # typed non-artifact fields are stored with info
    # the declared primary missing (a mode without it): the next result present is primary
    no_video = _StickerOutput(still=_img(1), backend="classic")
    assert [(n, p) for n, _, p in no_video.artifacts()] == [("still", True)]


def test_store_output_encodes_each_medium_with_its_type(tmp_path):
    storage = LocalStorage(tmp_path)
    frames = [np.full((30, 50, 3), 20 * i, np.uint8) for i in range(10)]
    rgba = [np.dstack([f, np.full((30, 50), 255, np.uint8)]) for f in frames]
    tone = (0.3 * np.sin(np.linspace(0, 2 * np.pi * 440 * 0.4, 6400))).astype(np.float32)

    class Out(EngineOutput):
        primary: ClassVar[str] = "video"
        video: VideoArtifact
        sticker: AnimationArtifact
        still: ImageArtifact
        skeleton: FileArtifact

    out = Out(
        video=VideoArtifact(frames, fps=25, audio=tone, sample_rate=16000),
        sticker=AnimationArtifact(rgba, fps=25, format="webp", max_frames=4), still=_img(5),
        skeleton=FileArtifact(b'{"people": []}', "application/json", ".json"), backend="classic",
    )  # fmt: skip
    job = store_output(out, storage)
    by_name = {o.name: o for o in job.outputs}
    assert [o.name for o in job.outputs][0] == "video" and by_name["video"].primary
    assert by_name["video"].media_type == "video/mp4" and by_name["video"].frames == 10
    assert by_name["sticker"].media_type == "image/webp" and by_name["sticker"].frames == 4
    assert by_name["still"].media_type == "image/png" and by_name["skeleton"].media_type == "application/json"
    for o in job.outputs:  # storage records each blob's media type
        assert storage.content_type(o.ref) == o.media_type
    mp4 = storage.get(by_name["video"].ref)
    assert mp4[4:8] == b"ftyp"
    from toonbooth.runtime.encoders import probe_video

    probe = probe_video(mp4, with_audio=True)
    assert probe.n_frames == 10 and (probe.width, probe.height) == (64, 32)  # padded to multiples of 16
    assert probe.audio_rate and probe.audio_samples
    webp = Image.open(io.BytesIO(storage.get(by_name["sticker"].ref)))
    assert webp.format == "WEBP" and webp.n_frames == 4
    # the PNG keeps its A1111 parameters, byte-identical to the plain encoder
    from toonbooth.core.images import image_to_png_bytes

    assert storage.get(by_name["still"].ref) == image_to_png_bytes(out.still.image, out.still.parameters)


# --------------------------------------------------------------------------------------------------
# the engine registry and submit-time checks
# --------------------------------------------------------------------------------------------------


def test_registry_names_the_kind_and_refuses_duplicates():
    from fakes import FakeEngine

    reg = EngineRegistry([FakeEngine()])
    with pytest.raises(InputError) as err:
        reg.engine("makeup")
    assert err.value.field == "kind" and "avatar" in err.value.message
    with pytest.raises(ValueError, match="two engines"):
        EngineRegistry([FakeEngine(), FakeEngine()])
    assert isinstance(reg.replace(FakeEngine())["avatar"], FakeEngine)


def test_execute_checks_inputs_before_running(tmp_path):
    """The CLI path (`execute`) refuses a bad sampler before any model is loaded or anything run."""
    settings = Settings(home=tmp_path, device="cpu")

    class Counting(Engine[AvatarSpec, EngineOutput]):
        kind, Spec, Output = "avatar", AvatarSpec, EngineOutput
        runs = 0

        def check_inputs(self, spec, models, owner):
            if spec.sampler == "nope":
                raise InputError("sampler", "unknown sampler 'nope'", spec.sampler)

        def run(self, spec, ctx):  # pragma: no cover - must not run
            Counting.runs += 1
            raise AssertionError("ran")

    ctx = JobContext(settings, ModelManager(settings), LocalStorage(tmp_path / "data"))
    with pytest.raises(InputError, match="sampler"):
        execute(AvatarSpec(image="x" * 8, sampler="nope"), ctx, EngineRegistry([Counting()]))
    assert Counting.runs == 0


def test_submit_checks_every_kind_and_stores_nothing(tmp_path):
    settings = Settings(home=tmp_path / "home", data_dir=tmp_path / "data", device="cpu")
    from toonbooth.runtime.families import model_manager

    with Service(settings, models=model_manager(settings, allow_paths=False), start_runners=False) as svc:
        photo = "data:image/png;base64," + __import__("base64").b64encode(png_bytes()).decode()
        # anime: a model name that is a path is a 422 at submit, naming the field (not a failed job later)
        with pytest.raises(InputError) as err:
            svc.submit(AnimeSpec(image=photo, lama_model="../../etc/passwd"), "alice")
        assert err.value.field == "lama_model"
        # generate: an unknown checkpoint is a 422 naming the field
        from toonbooth.core.specs import GenerateSpec

        with pytest.raises(InputError) as err:
            svc.submit(GenerateSpec(prompt="a cat", checkpoint="no-such-model"), "alice")
        assert err.value.field == "checkpoint"
        # anime asked for neural without SAM: 409 at submit, naming the stage and what to fetch
        with pytest.raises(BackendUnavailableError, match="segment: sam 'facebook/sam-vit-base' not found"):
            svc.submit(AnimeSpec(image=photo, backend="neural"), "alice")
        # avatar asked for neural without weights: 409 at submit, saying what to fetch
        with pytest.raises(BackendUnavailableError, match="toonbooth models pull memoji"):
            svc.submit(AvatarSpec(image=photo, backend="neural"), "alice")
        assert svc.list("alice") == []
        assert not [p for p in (settings.resolved_data_dir / "blobs").rglob("*") if p.is_file()]


# --------------------------------------------------------------------------------------------------
# media references
# --------------------------------------------------------------------------------------------------


class _Voice(SpecBase):
    photo: ImageRef
    voice: AudioRef
    extra: list[ImageRef] = []
    described: str = "An input image: `blob:<sha256>` ..."  # same words as ImageRef, no marker: not media


class _Holder(SpecBase):
    parts: list[_Voice]
    one: _Voice | None = None


def test_media_fields_are_found_by_their_marker_not_their_description():
    data = {
        "parts": [{"photo": "p0", "voice": "v0", "extra": ["e0", "e1"], "described": "d"}],
        "one": {"photo": "p1", "voice": "v1"},
    }
    found = list(media_fields(_Holder, data))
    assert found == [
        (("parts", 0, "photo"), "image", "p0"), (("parts", 0, "voice"), "audio", "v0"),
        (("parts", 0, "extra", 0), "image", "e0"), (("parts", 0, "extra", 1), "image", "e1"),
        (("one", "photo"), "image", "p1"), (("one", "voice"), "audio", "v1"),
    ]  # fmt: skip
    schema = _Voice.model_json_schema()
    assert schema["properties"]["voice"]["x-toonbooth-media"] == "audio"
    assert MediaRef("image") in _Voice.model_fields["photo"].metadata


def test_audio_uploads_are_validated_stored_typed_and_loaded(tmp_path):
    settings = Settings(home=tmp_path / "home", data_dir=tmp_path / "data", device="cpu", max_audio_seconds=1.0)
    tone = (0.5 * np.sin(np.arange(8000) * 2 * np.pi * 300 / 16000)).astype(np.float32)
    wav = encode_wav(tone, 16000)
    with Service(settings, start_runners=False) as svc:
        ref = svc.put_upload(wav, "alice", field="voice", kind="audio")
        assert svc.storage.content_type(ref) == "audio/wav"
        ctx = JobContext(settings, svc.models, svc.storage, owner="alice")
        samples = ctx.load_audio(ref, field="voice", sample_rate=8000)
        assert samples.dtype == np.float32 and len(samples) == 4000  # 0.5 s resampled to 8 kHz
        too_long = encode_wav(np.zeros(16000 * 2, np.float32), 16000)
        with pytest.raises(InputTooLargeError) as err:
            svc.put_upload(too_long, "alice", field="voice", kind="audio")
        assert err.value.field == "voice"
        with pytest.raises(InputError, match="voice"):
            svc.put_upload(png_bytes(), "alice", field="voice", kind="audio")  # an image is not a recording
        assert len([p for p in (settings.resolved_data_dir / "blobs").rglob("*") if p.is_file() and
                    not p.name.startswith(".")]) == 1  # fmt: skip


# --------------------------------------------------------------------------------------------------
# the model cache
# --------------------------------------------------------------------------------------------------


def _linear(n: int) -> torch.nn.Module:
    return torch.nn.Linear(n, n, bias=False)  # n*n float32 = 4*n*n bytes


def test_cache_is_budgeted_in_bytes_lru_and_counted():
    kib = 4 * 32 * 32  # one 32x32 float32 Linear = 4 KiB
    assert measure_bytes(_linear(32)) == (kib, 0)
    cache = ModelCache(ram_budget=2 * kib + 10, vram_budget=0)
    a = cache.get_or_load(("a",), lambda: _linear(32))
    cache.get_or_load(("b",), lambda: _linear(32))
    assert cache.get_or_load(("a",), lambda: pytest.fail("reloaded")) is a  # hit, and now most recent
    cache.get_or_load(("c",), lambda: _linear(32))  # 3 x 4 KiB > budget: evicts b, the least recently used
    assert cache.keys() == [("a",), ("c",)]
    stats = cache.stats()
    assert (stats.loads, stats.hits, stats.evictions, stats.ram_bytes) == (3, 1, 1, 2 * kib)
    # one model larger than the whole budget still loads (alone)
    cache.get_or_load(("big",), lambda: _linear(128))
    assert cache.keys() == [("big",)]


def test_cache_loads_a_key_once_under_concurrency():
    cache = ModelCache()
    calls = []
    gate = threading.Event()

    def slow():
        calls.append(1)
        gate.wait(5)
        return _linear(8)

    threads = [threading.Thread(target=cache.get_or_load, args=(("k",), slow)) for _ in range(4)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1 and cache.stats().hits == 3


# --------------------------------------------------------------------------------------------------
# families: a new kind is one module (here: one object) — found, identified, loaded, cached
# --------------------------------------------------------------------------------------------------


def _scan_blobnet(top: Path, folder: str) -> list[ModelEntry]:
    """Identify by content: a `.safetensors` holding `blob.weight` of shape (n, n)."""
    from safetensors import safe_open

    out = []
    for f in sorted(top.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            keys = set(h.keys())
        refused = None if keys == {"blob.weight"} else f"{f.name}: not a blobnet ({sorted(keys)[:3]})"
        out.append(ModelEntry(name=f.stem, path=f, kind="blobnet", source="folder", folder=folder,
                              relpath=f.name, layout="safetensors", refused=refused))  # fmt: skip
    return out


def _load_blobnet(entry: ModelEntry, env, *, scale: float = 1.0):
    from safetensors.torch import load_file

    w = load_file(str(entry.path))["blob.weight"]
    module = torch.nn.Linear(w.shape[0], w.shape[0], bias=False)
    module.weight.data.copy_(w * scale)
    return module.to(env.device)


BLOBNET = ModelFamily(kind="blobnet", description="a test family", folders=("BlobNet",), suffixes=(".safetensors",),
                      scan=_scan_blobnet, load=_load_blobnet, cache_options=("scale",))  # fmt: skip


def test_a_new_family_is_found_and_loaded_through_the_one_door(tmp_path):
    from safetensors.torch import save_file

    models = tmp_path / "models"
    (models / "BlobNet").mkdir(parents=True)
    save_file({"blob.weight": torch.eye(4)}, str(models / "BlobNet" / "eye.safetensors"))
    save_file({"other": torch.zeros(2)}, str(models / "BlobNet" / "wrong.safetensors"))
    settings = Settings(home=tmp_path, models_dir=models, device="cpu")
    manager = ModelManager(settings, families=FamilySet([*default_families(), BLOBNET]))
    assert "blobnet" in manager.families.kinds()
    net = manager.load("blobnet", "eye")
    assert torch.equal(net.weight, torch.eye(4))
    assert manager.load("blobnet", "eye") is net  # cached, keyed by the resolved entry
    assert manager.load("blobnet", "eye", scale=2.0) is not net  # a load option that changes the model
    assert manager.path("blobnet", "eye") == models / "BlobNet" / "eye.safetensors"
    refused = {e.name: e for e in manager.registry.list("blobnet", include_refused=True)}
    assert "not a blobnet" in (refused["wrong"].refused or "")
    from toonbooth.models.refs import ModelRef

    assert manager.missing([ModelRef("blobnet", "eye", "net")]) == []
    assert "not found" in manager.missing([ModelRef("blobnet", "nope", "net")])[0]
    stats = manager.cache.stats()
    assert stats.loads == 2 and stats.hits == 1
