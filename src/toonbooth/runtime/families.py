"""The model families of this program, put together once (the composition root of `models/families`).

Families whose loaders need toonbooth's own networks or perception wrappers live next to those
(`vision.segment.SAM_FAMILY`, `nets.lama.LAMA_FAMILY`); the SD families live in `models.families`.
A new family: define it in its module, add it here, add its catalog entries."""

from __future__ import annotations

from ..core.settings import Settings
from ..models.families import SD_FAMILIES, FamilySet
from ..models.manager import ModelManager
from ..nets.esrgan import UPSCALER_FAMILY
from ..nets.lama import LAMA_FAMILY
from ..vision.segment import SAM_FAMILY


def default_families() -> FamilySet:
    return FamilySet([*SD_FAMILIES, SAM_FAMILY, LAMA_FAMILY, UPSCALER_FAMILY])


def model_manager(settings: Settings, *, allow_paths: bool = True, **kwargs) -> ModelManager:
    """A ModelManager over every family of this program."""
    return ModelManager(settings, families=default_families(), allow_paths=allow_paths, **kwargs)
