"""The one settings class (pydantic-settings, env prefix TOONBOOTH_). Build it once at the entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path.home() / ".toonbooth"


class Settings(BaseSettings):
    """All knobs of toonbooth. Every field can be set as an environment variable `TOONBOOTH_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="TOONBOOTH_", env_file=None, extra="ignore")

    home: Path = Field(default_factory=_default_home, description="Base folder for data and models.")
    data_dir: Path | None = Field(None, description="Uploads, results, job database. Default: <home>/data.")
    models_dir: Path | None = Field(
        None,
        description="Models folder in AUTOMATIC1111 layout (Stable-diffusion/, Lora/, ControlNet/, "
        "embeddings/). Point it at `stable-diffusion-webui/models` to reuse an A1111 install. "
        "Default: <home>/models.",
    )
    extra_model_dirs: list[Path] = Field(
        default_factory=list, description="More folders scanned like models_dir (e.g. sd-webui-controlnet/models)."
    )
    config_dir: Path | None = Field(
        None,
        description="Local diffusers config folders used by single-file loading "
        "(<config_dir>/sdxl, <config_dir>/sd15). Default: <models_dir>/configs.",
    )
    device: str = Field("auto", description="torch device: auto | cpu | cuda | cuda:N | mps.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weights dtype; auto = fp16 on CUDA, fp32 on CPU."
    )
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1024, description="Largest accepted image file.")
    max_pixels: int = Field(40_000_000, ge=4096, description="Largest accepted image (width*height).")
    max_side: int = Field(1024, ge=64, le=4096, description="Long-side cap of the working size of a photo.")
    model_cache_items: int = Field(2, ge=1, le=16, description="Pipelines kept loaded between jobs.")
    offline: bool = Field(False, description="Never contact a model hub (also implied by HF_HUB_OFFLINE=1).")

    @property
    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir) if self.data_dir else self.home / "data"

    @property
    def resolved_models_dir(self) -> Path:
        return Path(self.models_dir) if self.models_dir else self.home / "models"

    @property
    def resolved_config_dir(self) -> Path:
        return Path(self.config_dir) if self.config_dir else self.resolved_models_dir / "configs"
