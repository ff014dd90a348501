"""The narrow context an engine gets, and what it returns (InvokeAI's invocation-context habit)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image

from ..core.settings import Settings

if TYPE_CHECKING:
    from ..models.manager import ModelManager


class EngineContext(Protocol):
    """What an engine may touch. Implemented by the runtime (CLI, server and workers alike)."""

    settings: Settings
    models: ModelManager

    def load_image(self, ref: str, field: str) -> Image.Image:
        """Resolve an ImageRef (stored blob / data URL / base64) through the safe decoder."""
        ...

    def progress(self, step: int, total: int, *, stage: str = "", preview: Image.Image | None = None) -> None:
        """Report progress over the whole job; also the place where cancel is noticed."""
        ...

    def wants_preview(self, step: int, steps: int) -> bool:
        """Whether to pass a live preview to `progress` after denoising step `step` (1-based) of `steps`."""
        ...

    def check_canceled(self) -> None:
        """Raise JobCanceledError if the job was canceled."""
        ...

    def log(self, message: str, *, warning: bool = False) -> None: ...


@dataclass
class NamedImage:
    name: str
    image: Image.Image
    parameters: str | None = None  # A1111-style `parameters` text for the PNG


@dataclass
class EngineResult:
    images: list[NamedImage]
    backend: str  # "neural" | "classic"
    backend_reason: str = ""
    warnings: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
