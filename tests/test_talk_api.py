"""The `talk` job through the REST API (in-process app, the service's runner): every class of bad recording
is a 4xx naming `voice` (or the upload's `file`) with nothing stored; a classic job's outputs download with
their media types and file extensions; the MP4 goes out as a mail attachment."""

from __future__ import annotations

import base64
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from toonbooth.api.app import create_app, make_service
from toonbooth.core.audio import encode_wav
from toonbooth.core.images import image_to_png_bytes
from toonbooth.core.settings import Settings
from toonbooth.runtime.encoders import encode_mp4

SR = 16000
BASE = "http://127.0.0.1:7860"


def wav(seconds: float, freq: float = 200.0) -> bytes:
    t = np.arange(round(seconds * SR)) / SR
    return encode_wav((0.4 * np.sin(2 * np.pi * freq * t) * (t > 0.2)).astype(np.float32), SR)


def data_url(data: bytes, media_type: str = "audio/wav") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    home = tmp_path_factory.mktemp("talk-api")
    (home / "models").mkdir()
    settings = Settings(home=home, models_dir=home / "models", data_dir=home / "data", device="cpu",
                        max_audio_seconds=1.5, smtp_from="toonbooth@example.org")  # fmt: skip
    service = make_service(settings, start_runners=True)
    try:
        app = create_app(settings, service, allow_anonymous=True, mount_ui=False)
        with TestClient(app, base_url=BASE) as client:
            yield client, service, settings
    finally:
        service.close()


def _blobs(settings: Settings) -> list:
    return [
        p
        for p in (settings.resolved_data_dir / "blobs").rglob("*")
        if p.is_file() and not p.name.startswith(".")
    ]


def _face_data_url(sample_photo_path) -> str:
    return data_url(sample_photo_path.read_bytes(), "image/png")


def test_bad_recordings_are_refused_naming_voice_and_nothing_is_stored(api, sample_photo_path):
    client, _service, settings = api
    face = _face_data_url(sample_photo_path)
    truncated = wav(1.0)[: 44 + 8000]  # the header declares 1 s, the data holds 0.25 s
    playlist = b"#EXTM3U\n#EXTINF:1,voice\nhttp://example.org/voice.wav\n"
    cases = {
        "an image": (data_url(image_to_png_bytes_of_noise()), 422),
        "over the duration limit": (data_url(wav(2.0)), 413),
        "truncated": (data_url(truncated), 422),
        "a playlist": (data_url(playlist, "audio/x-mpegurl"), 422),
        "not an audio data URL": (data_url(wav(0.5), "image/png"), 422),
    }
    for what, (value, status) in cases.items():
        res = client.post(
            "/v1/jobs", json={"kind": "talk", "face": face, "voice": value, "backend": "classic"}
        )
        assert res.status_code == status, (what, res.text)
        assert res.json()["field"] == "voice", (what, res.json())
    # an MP4 with a video track is not a recording (the upload route names its `file`)
    mp4 = encode_mp4([np.zeros((32, 32, 3), np.uint8)] * 3, 25, audio=(np.zeros(SR // 5, np.float32), SR))
    res = client.post("/v1/uploads?kind=audio", files={"file": ("voice.m4a", mp4, "audio/mp4")})
    assert res.status_code == 422 and res.json()["field"] == "file", res.text
    assert client.get("/v1/jobs").json()["jobs"] == []
    assert _blobs(settings) == []


def image_to_png_bytes_of_noise() -> bytes:
    from PIL import Image

    return image_to_png_bytes(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), np.uint8))
    )


def test_classic_job_outputs_download_with_their_types(api, sample_photo_path):
    client, service, settings = api
    face = client.post(
        "/v1/uploads", files={"file": ("face.png", sample_photo_path.read_bytes(), "image/png")}
    )
    voice = client.post("/v1/uploads?kind=audio", files={"file": ("voice.wav", wav(1.2), "audio/wav")})
    assert face.status_code == voice.status_code == 201, (face.text, voice.text)
    spec = {"kind": "talk", "face": face.json()["ref"], "voice": voice.json()["ref"], "backend": "auto",
            "size": 128, "seed": 1, "sticker_seconds": 0.5}  # fmt: skip
    job = client.post("/v1/jobs", json=spec)
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    deadline = time.monotonic() + 300
    while (rec := client.get(f"/v1/jobs/{job_id}").json())["state"] not in (
        "completed",
        "failed",
        "canceled",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert rec["state"] == "completed", rec.get("error")
    out = rec["output"]
    assert out["backend"] == "classic" and "models pull talk" in out["backend_reason"]
    assert out["info"]["frames"] == 30 and out["info"]["fps"] == 25.0
    want = {"video": ("video/mp4", ".mp4"), "sticker_webp": ("image/webp", ".webp"),
            "sticker_gif": ("image/gif", ".gif"), "still": ("image/png", ".png")}  # fmt: skip
    assert [o["name"] for o in out["outputs"]] == list(want)
    for name, (media_type, ext) in want.items():
        res = client.get(f"/v1/jobs/{job_id}/outputs/{name}")
        assert res.status_code == 200 and res.headers["content-type"] == media_type
        assert res.headers["content-disposition"].endswith(f'{ext}"')
        link = client.get(f"/v1/jobs/{job_id}/outputs/{name}/link").json()
        assert link["media_type"] == media_type and link["filename"].endswith(ext)
    # the MP4 as a mail attachment (what the runner sends when the spec has `email`)
    from toonbooth.runtime.mail import build_message

    video = client.get(f"/v1/jobs/{job_id}/outputs/video").content
    msg = build_message(settings, "me@example.org", "Your toonbooth talk is ready", "hi", video,
                        f"toonbooth-talk-{job_id[:8]}.mp4", "video/mp4")  # fmt: skip
    (part,) = list(msg.iter_attachments())
    assert part.get_content_type() == "video/mp4" and part.get_filename().endswith(".mp4")
    assert service.get(job_id, "local").output.outputs[0].primary


def test_ui_tab_actions_run_a_job_and_offer_the_downloads(api, sample_photo_path, tmp_path):
    """The "Talking emoticon" tab's generate handler (no browser): uploads, progress updates with the
    frame count, then the video, the sticker and the three downloads with their extensions."""
    from toonbooth.ui.talk_tab import TalkTabActions

    _client, service, settings = api
    voice = tmp_path / "voice.wav"
    voice.write_bytes(wav(0.6))
    actions = TalkTabActions(service, settings)
    updates = list(actions.generate(str(sample_photo_path), str(voice), "classic", "classic", "face", 1.0, 1.0,
                                    100, False, False, 2))  # fmt: skip
    job_id, bar, status, still, video, sticker, files = updates[-1]
    assert "Done: **classic**" in status and "15 frames" in status, status
    assert 'data-percent="100.0"' in bar
    assert video.endswith(".mp4") and sticker.endswith(".webp") and still.endswith(".png")
    assert [f.rsplit(".", 1)[1] for f in files] == ["mp4", "webp", "gif"]
    assert any("render" in u[1] for u in updates[1:-1])  # progress shown while it rendered
    refused = list(actions.generate(str(sample_photo_path), str(sample_photo_path), "classic", "classic", "face",
                                    1.0, 1.0, 100, False, False, 2))  # fmt: skip
    assert refused[-1][2].startswith("**Error:**") and "voice" in refused[-1][2]
