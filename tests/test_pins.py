"""Numeric pins, one per studio on the tiny model set (diffusers-style `expected_slice`): a change that
stays deterministic but changes what a job computes is seen here, even when every shape, invariant and
same-seed-same-pixels test still passes.

The jobs and the tolerances (±1 on the uint8 pixels of the PNG outputs, 1e-4 on the float32 LoRA
weights; why: `tests/pin_jobs.py`) are shared with `scripts/regen_pins.py`, which wrote the expected
numbers into `tests/pins.json`. When a deliberate change moves them, run that script, review what it
prints, and commit the new `tests/pins.json` with the change.
"""

from __future__ import annotations

import json

import pytest

from pin_jobs import JOBS, PINS, STUDIOS, compare, make_env

REGEN = (
    "If this change of the numbers is deliberate, run `.venv/bin/python scripts/regen_pins.py {name}`, "
    "review what it prints and commit tests/pins.json with the change."
)


@pytest.fixture(scope="module")
def pins() -> dict:
    return json.loads(PINS.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pin_env(tiny_models_dir, tmp_path_factory):
    return make_env(tiny_models_dir, tmp_path_factory.mktemp("pins-home"))


def test_every_studio_has_a_pin(pins):
    assert list(pins) == list(STUDIOS), REGEN.format(name="")


@pytest.mark.parametrize("name", STUDIOS)
def test_pinned_numbers(pin_env, pins, name):
    got = JOBS[name](pin_env)
    diffs = compare(name, got, pins[name])
    assert not diffs, "\n".join([*diffs, REGEN.format(name=name)])
