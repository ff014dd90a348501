"""The engines of this program, put together once (the composition root of `engines/` and `training/`).

The CLI, the server and the workers build one registry here and hand it to the runtime; tests build
their own (e.g. with a fake engine in place of a studio). A new studio is added to this list."""

from __future__ import annotations

from ..core.specs import TrainDreamBoothSpec, TrainLoraSpec, TrainTISpec
from ..engines.anime import AnimeEngine
from ..engines.avatar import AvatarEngine
from ..engines.background import BackgroundEngine
from ..engines.base import EngineRegistry
from ..engines.control_detect import ControlDetectEngine
from ..engines.extras import ExtrasEngine
from ..engines.generate import GenerateEngine
from ..engines.makeup import MakeupEngine
from ..engines.repose import ReposeEngine
from ..engines.talk import TalkEngine
from ..engines.toon import ToonEngine
from ..training.job import TrainEngine
from ..training.toon_job import TrainToonEngine


def default_engines() -> EngineRegistry:
    return EngineRegistry([
        AvatarEngine(),
        GenerateEngine(),
        AnimeEngine(),
        TalkEngine(),
        MakeupEngine(),
        TrainEngine(TrainLoraSpec),
        TrainEngine(TrainDreamBoothSpec),
        TrainEngine(TrainTISpec),
        ReposeEngine(),
        ControlDetectEngine(),
        ToonEngine(),
        TrainToonEngine(),
        BackgroundEngine(),  # webtoon backgrounds
        ExtrasEngine(),
    ])  # fmt: skip
