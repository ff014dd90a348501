"""A fake studio for runtime tests: the `avatar` kind's spec, a controllable run.

Its speed and fate are picked through spec fields: `steps` progress steps, prompt "fail" -> RuntimeError,
prompt "zero" -> ZeroDivisionError; TB_TEST_STEP_DELAY (env) = seconds per step. The output is an 8x8
image whose red channel = steps done and green = the input photo's width. Built into a registry with
`fake_engines()` and handed to the Service (or a worker process) like the real engines."""

from __future__ import annotations

import os
import time

from PIL import Image

from toonbooth.core.artifacts import ImageArtifact
from toonbooth.core.specs import AvatarSpec
from toonbooth.engines.avatar import AvatarOutput
from toonbooth.engines.base import Engine, EngineContext, EngineRegistry


class FakeEngine(Engine[AvatarSpec, AvatarOutput]):
    kind = "avatar"
    Spec = AvatarSpec
    Output = AvatarOutput

    def __init__(self) -> None:
        self.runs = 0

    def run(self, spec: AvatarSpec, ctx: EngineContext) -> AvatarOutput:
        self.runs += 1
        photo = ctx.load_image(spec.image, field="image")
        delay = float(os.environ.get("TB_TEST_STEP_DELAY", "0.01"))
        if spec.prompt == "fail":
            raise RuntimeError("the test engine failed on purpose")
        if spec.prompt == "zero":
            1 / 0  # noqa: B018
        done = 0
        for i in range(spec.steps):
            time.sleep(delay)
            ctx.progress(i + 1, spec.steps, stage="test")
            done = i + 1
        img = Image.new("RGB", (8, 8), (done % 256, photo.width % 256, 7))
        return AvatarOutput(
            avatar=ImageArtifact(img), backend="classic",
            info={"models_id": id(ctx.models), "steps_done": done, "pid": os.getpid()},
        )  # fmt: skip


def fake_engines() -> EngineRegistry:
    """This program's engines with the fake in place of the avatar studio."""
    from toonbooth.runtime.engines import default_engines

    return default_engines().replace(FakeEngine())
