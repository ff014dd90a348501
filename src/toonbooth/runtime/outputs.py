"""Engine artifacts -> stored bytes with a media type: PNG (with A1111 `parameters`), MP4 (H.264 + AAC),
GIF / animated WebP stickers, raw files. Existing PNG outputs are byte-for-byte what they were."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.artifacts import AnimationArtifact, Artifact, FileArtifact, ImageArtifact, VideoArtifact
from ..core.images import image_to_png_bytes


@dataclass
class Encoded:
    data: bytes
    media_type: str
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    duration_s: float | None = None


def encode_artifact(artifact: Artifact) -> Encoded:
    if isinstance(artifact, ImageArtifact):
        img = artifact.image
        return Encoded(image_to_png_bytes(img, parameters=artifact.parameters), "image/png", img.width, img.height)
    if isinstance(artifact, VideoArtifact):
        from .encoders import encode_mp4

        audio = (artifact.audio, artifact.sample_rate) if artifact.audio is not None else None
        data = encode_mp4(list(artifact.frames), artifact.fps, audio=audio)
        h, w = artifact.frames[0].shape[:2]
        n = len(artifact.frames)
        return Encoded(data, "video/mp4", w - w % 16 or w, h - h % 16 or h, n, n / artifact.fps)
    if isinstance(artifact, AnimationArtifact):
        from .encoders import encode_gif, encode_webp_animated

        frames = list(artifact.frames)
        if artifact.format == "gif":
            data = encode_gif(frames, artifact.fps, loop=artifact.loop, max_frames=artifact.max_frames,
                              max_side=artifact.max_side)  # fmt: skip
        else:
            data = encode_webp_animated(frames, artifact.fps, loop=artifact.loop, max_frames=artifact.max_frames,
                                        max_side=artifact.max_side)  # fmt: skip
        h, w = frames[0].shape[:2]
        if artifact.max_side and max(w, h) > artifact.max_side:  # the encoders scale down to max_side
            scale = artifact.max_side / max(w, h)
            w, h = max(1, round(w * scale)), max(1, round(h * scale))
        return Encoded(data, artifact.media_type, w, h, min(len(frames), artifact.max_frames), len(frames) / artifact.fps)
    if isinstance(artifact, FileArtifact):
        return Encoded(artifact.data, artifact.media_type)
    raise TypeError(f"not an artifact: {type(artifact).__name__}")
