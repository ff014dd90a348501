"""The model families of this program, put together once (the composition root of `models/families`).

Families whose loaders need toonbooth's own networks or perception wrappers live next to those
(`vision.segment.SAM_FAMILY`, `nets.lama.LAMA_FAMILY`); the SD families live in `models.families`.
A new family: define it in its module, add it here, add its catalog entries."""

from __future__ import annotations

from ..core.settings import Settings
from ..models.families import SD_FAMILIES, FamilySet
from ..models.manager import ModelManager
from ..nets.animate_anyone import ANIMATE_ANYONE_FAMILY
from ..nets.clip_vision import CLIP_VISION_FAMILY
from ..nets.dwpose import DWPOSE_FAMILY
from ..nets.esrgan import UPSCALER_FAMILY
from ..nets.face_parsing import FACE_PARSING_FAMILY
from ..nets.ip_adapter import IP_ADAPTER_FAMILY
from ..nets.joyvasa import HUBERT_FAMILY, JOYVASA_FAMILY
from ..nets.lama import LAMA_FAMILY
from ..nets.liveportrait import LIVEPORTRAIT_FAMILY
from ..nets.stable_makeup import STABLE_MAKEUP_FAMILY
from ..nets.toon_models import FAMILIES as TOON_FAMILIES
from ..nets.translate import MARIAN_FAMILY
from ..vision.segment import SAM_FAMILY

# one group per studio; a new studio adds its group (and nothing else) here
ANIME_FAMILIES = (SAM_FAMILY, LAMA_FAMILY)
TALK_FAMILIES = (LIVEPORTRAIT_FAMILY, JOYVASA_FAMILY, HUBERT_FAMILY)
POSE_FAMILIES = (DWPOSE_FAMILY, ANIMATE_ANYONE_FAMILY, CLIP_VISION_FAMILY, IP_ADAPTER_FAMILY)
MAKEUP_FAMILIES = (FACE_PARSING_FAMILY, STABLE_MAKEUP_FAMILY)


def default_families() -> FamilySet:
    return FamilySet([
        *SD_FAMILIES,
        *ANIME_FAMILIES,
        *TALK_FAMILIES,
        *POSE_FAMILIES,
        *MAKEUP_FAMILIES,
        *TOON_FAMILIES,
        MARIAN_FAMILY,  # webtoon: Korean prompts
        UPSCALER_FAMILY,  # ESRGAN-family upscalers (extras, hires fix, memoji second pass)
    ])  # fmt: skip


def model_manager(settings: Settings, *, allow_paths: bool = True, **kwargs) -> ModelManager:
    """A ModelManager over every family of this program."""
    return ModelManager(settings, families=default_families(), allow_paths=allow_paths, **kwargs)
