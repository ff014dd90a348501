"""Typed engine outputs before they are stored: an image, a video, an animated image, a file.

Engines return artifacts; the runtime encodes them (PNG with A1111 `parameters`, MP4 H.264/AAC, GIF or
animated WebP, raw bytes), stores the bytes with their media type and hands out references. Frames are
HxWx3 (or HxWx4 for transparent stickers) uint8 arrays; audio is float32 mono in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
from PIL import Image


@dataclass
class ImageArtifact:
    """A picture, stored as PNG; `parameters` is the A1111-style infotext written into the PNG."""

    image: Image.Image
    parameters: str | None = None
    media_type: ClassVar[str] = "image/png"
    suffix: ClassVar[str] = ".png"

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


@dataclass
class VideoArtifact:
    """Frames at `fps` with an optional audio track (float32 mono at `sample_rate`), stored as MP4."""

    frames: Sequence[np.ndarray]
    fps: float
    audio: np.ndarray | None = None
    sample_rate: int = 0
    media_type: ClassVar[str] = "video/mp4"
    suffix: ClassVar[str] = ".mp4"

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.frames[0].shape[:2]
        return w, h


@dataclass
class AnimationArtifact:
    """A looping animated image (a sticker): GIF or animated WebP; RGBA frames keep transparency."""

    frames: Sequence[np.ndarray]
    fps: float
    format: Literal["gif", "webp"] = "webp"
    loop: int = 0
    max_frames: int = 100
    max_side: int = 512

    @property
    def media_type(self) -> str:  # type: ignore[override]
        return f"image/{self.format}"

    @property
    def suffix(self) -> str:  # type: ignore[override]
        return f".{self.format}"

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.frames[0].shape[:2]
        return w, h


@dataclass
class FileArtifact:
    """Bytes stored as they are (a trained `.safetensors`, a JSON skeleton, a WAV)."""

    data: bytes
    media_type: str = "application/octet-stream"
    suffix: str = ""
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def size(self) -> None:
        return None


Artifact = ImageArtifact | VideoArtifact | AnimationArtifact | FileArtifact
ARTIFACT_TYPES = (ImageArtifact, VideoArtifact, AnimationArtifact, FileArtifact)

# media type -> file extension, for downloads, the CLI and mail attachments
EXTENSIONS = {
    "image/png": ".png",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/jpeg": ".jpg",
    "video/mp4": ".mp4",
    "audio/wav": ".wav",
    "application/json": ".json",
    "application/octet-stream": ".bin",
}


def extension_for(media_type: str) -> str:
    return EXTENSIONS.get(media_type, ".bin")
