"""The one settings class (pydantic-settings, env prefix TOONBOOTH_). Build it once at the entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .specs.avatar import AvatarSpec
from .specs.base import Backend
from .specs.training import TrainPresetName

_AVATAR = AvatarSpec.model_fields


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
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$", description="torch device: auto | cpu | cuda | cuda:N | mps."
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weights dtype; auto = fp16 on CUDA, fp32 on CPU."
    )
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1024, description="Largest accepted image file.")
    max_request_bytes: int | None = Field(
        None,
        ge=1024,
        description="Largest HTTP request body. Default: three images of max_upload_bytes as base64 + 1 MiB "
        "(send more or larger images through /v1/uploads first).",
    )
    request_header_timeout_s: float = Field(
        10.0, gt=0.0, le=300.0, description="A connection must send a request's headers within this (slowloris)."
    )
    request_body_timeout_s: float = Field(
        30.0, gt=0.0, le=3600.0, description="Longest wait for the next chunk of a request body before a 408."
    )
    max_concurrent_uploads: int = Field(
        4, ge=1, le=1000, description="Request bodies over 1 MiB read at the same time; more get a 429."
    )
    max_connections: int = Field(
        1000, ge=1, le=100_000, description="Concurrent connections the server takes; more get a 503."
    )
    max_pixels: int = Field(40_000_000, ge=4096, le=200_000_000, description="Largest accepted image (width*height).")
    max_audio_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="Largest accepted recording file.")
    max_audio_seconds: float = Field(
        30.0, gt=0.0, le=600.0, description="Longest accepted recording (voice for the talking emoticon)."
    )
    max_side: int = Field(1024, ge=64, le=4096, description="Long-side cap of the working size of a photo.")
    model_cache_items: int = Field(
        8, ge=1, le=64, description="At most this many models (pipelines, ControlNets, SAM, ...) kept loaded."
    )
    model_cache_ram_gib: float = Field(
        0.0, ge=0.0, description="Host-memory budget of loaded models in GiB, least recently used evicted; 0 = half the RAM."
    )
    model_cache_vram_gib: float = Field(
        0.0, ge=0.0, description="Device-memory budget of loaded models in GiB; 0 = 64 GiB (no practical cap)."
    )
    offline: bool = Field(False, description="Never contact a model hub (also implied by HF_HUB_OFFLINE=1).")
    translate_prompts: Literal["hangul", "off"] = Field(
        "hangul",
        description="Prompts containing Korean (Hangul) are translated to English before CLIP sees them, in every "
        "studio (generate and the A1111 routes included); off = passed as written, with a warning.",
    )
    translate_model: str = Field(
        "opus-mt-ko-en", min_length=1, max_length=400, description="MarianMT translator (kind translate) used."
    )

    # --- what one job may cost (checked at submit; 0 = no limit) ---
    max_job_pixels: int = Field(4_194_304, ge=0, description="Largest image a job may make (width*height); 2048x2048.")
    max_job_images: int = Field(16, ge=0, description="Images one job may make (batch_size * n_iter, ...).")
    max_job_pixel_steps: int = Field(
        1024 * 1024 * 50 * 8, ge=0,
        description="Sum over a job's denoising steps of the pixels denoised (cost budget; 8 x 1024² x 50 steps).",
    )
    max_job_frames: int = Field(25 * 60, ge=0, description="Video / sticker frames one job may make (60 s at 25 fps).")
    max_train_pixel_steps: int = Field(
        1024 * 1024 * 4000, ge=0, description="Training steps x resolution² one training job may run."
    )
    unlimited_users: list[str] = Field(
        default_factory=list, description="Users (operators) the per-job limits above do not apply to."
    )

    # --- jobs (runtime) ---
    runners: int = Field(1, ge=1, le=64, description="Runner threads (one per device; cuda -> cuda:0..N-1).")
    max_queued_jobs_per_user: int = Field(20, ge=1, le=100_000, description="Queued jobs one user may have.")
    job_time_limit_s: float = Field(
        1800.0, ge=0.0, description="A running job is stopped (failed) after this many seconds; 0 = no limit."
    )
    job_max_attempts: int = Field(
        2, ge=1, le=10, description="Starts a job gets when its worker dies mid-run, before it is failed."
    )
    retention_days: float = Field(
        30.0, ge=0.0, description="Finished jobs, their uploads and results are deleted after this; 0 = keep."
    )
    preview_every: int = Field(
        5,
        ge=0,
        le=100,
        description="Live preview (A1111 'Approx cheap' latent -> RGB) every N denoising steps and at the last "
        "step of each pass, served as `current_image`; 0 = off.",
    )

    ticket_secret: SecretStr | None = Field(
        None, description="Key that signs WebSocket tickets; set the same value on every API process behind one "
        "address (default: random per process)."
    )

    # --- storage ---
    storage: Literal["local", "s3"] = Field("local", description="Where uploads and results go.")
    s3_endpoint_url: str | None = Field(None, description="S3 API endpoint (MinIO, R2, ...); None = AWS.")
    s3_bucket: str | None = Field(None, description="Bucket for uploads and results (storage=s3).")
    s3_region: str | None = Field(None, description="S3 region, e.g. us-east-1.")
    s3_access_key_id: str | None = Field(None, description="S3 key id; None = boto3's own credential chain.")
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret key (never logged).")
    s3_prefix: str = Field("toonbooth/blobs/", description="Key prefix; objects are <prefix><sha256>.")
    s3_create_bucket: bool = Field(False, description="Create the bucket at start when it does not exist.")

    # --- e-mail ---
    smtp_host: str | None = Field(None, description="SMTP server; None = e-mail delivery is off.")
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_security: Literal["starttls", "ssl", "none"] = Field(
        "starttls",
        description="starttls (port 587), ssl (implicit TLS, port 465) or none (local relays only).",
    )
    smtp_user: str | None = Field(None, description="SMTP login; None = no AUTH.")
    smtp_password: SecretStr | None = Field(None, description="SMTP password (never logged).")
    smtp_from: str | None = Field(None, description="Sender address of result mails (plain address).")
    smtp_timeout_s: float = Field(20.0, gt=0.0, le=300.0, description="SMTP connect / command timeout.")

    # --- web UI: what the tabs preselect (env TOONBOOTH_UI_<NAME> / TOONBOOTH_UI_TRAIN_<NAME>, as before) ---
    ui_checkpoint: str = Field(_AVATAR["checkpoint"].default, description="Memoji tab: SDXL checkpoint.")
    ui_controlnet: str = Field(
        _AVATAR["controlnet"].default, description="Memoji tab: SDXL canny ControlNet."
    )
    ui_lora: str = Field("memoji", description="Memoji tab: LoRA applied at weight 1 (empty = none).")
    ui_steps: int = Field(_AVATAR["steps"].default, ge=1, le=150, description="Memoji tab: sampling steps.")
    ui_max_side: int | None = Field(
        None, ge=64, le=4096, description="Memoji tab: long-side cap of pass 1 of its jobs (None: max_side)."
    )
    ui_backend: Backend = Field("auto", description="Memoji tab: auto | neural | classic preselected.")
    ui_train_base: str | None = Field(
        None,
        description="Train tab: base checkpoint preselected; default stable-diffusion-v1-5, else the first "
        "SD1.5 checkpoint.",
    )
    ui_train_preset: TrainPresetName | Literal["none"] = Field(
        "art-style", description="Train tab: preset preselected (none = custom, no preset)."
    )

    @property
    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir) if self.data_dir else self.home / "data"

    @property
    def resolved_models_dir(self) -> Path:
        return Path(self.models_dir) if self.models_dir else self.home / "models"

    @property
    def resolved_config_dir(self) -> Path:
        return Path(self.config_dir) if self.config_dir else self.resolved_models_dir / "configs"
