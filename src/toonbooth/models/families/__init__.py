"""Model families (see `base.py`). The SD families live here; families whose loaders need toonbooth's own
networks or perception wrappers are defined next to them (`vision.segment.SAM_FAMILY`,
`nets.lama.LAMA_FAMILY`, ...) and put together with these in `runtime.families.default_families`."""

from .base import FamilySet, LoadEnv, ModelFamily
from .sd import CHECKPOINT, CONTROLNET, EMBEDDING, LORA, SD_FAMILIES, VAE

__all__ = [
    "CHECKPOINT",
    "CONTROLNET",
    "EMBEDDING",
    "LORA",
    "SD_FAMILIES",
    "VAE",
    "FamilySet",
    "LoadEnv",
    "ModelFamily",
]
