"""Regenerate `tests/pins.json`: the numeric pins of `tests/test_pins.py` (one per studio, on the tiny set).

Run it when a deliberate change moves the numbers (a new sampler default, another resize filter, a fixed
bug in the composite...): it builds the tiny model set the tests use, runs each pinned job once, prints
every pin that changed (old -> new) and writes the file. Review the printed changes, then commit
`tests/pins.json` with the change that moved them. An unexpected change is a bug, not a reason to run it.

    .venv/bin/python scripts/regen_pins.py                  # all studios, write tests/pins.json
    .venv/bin/python scripts/regen_pins.py anime_full       # only the named pins (the others are kept)
    .venv/bin/python scripts/regen_pins.py --check          # compare only; exit 1 when a pin moved
    .venv/bin/python scripts/regen_pins.py --check --twice  # also run each job twice in this process

The jobs themselves are in `tests/pin_jobs.py` (shared with the test). Runs on the CPU with one torch
thread and the hub offline, as the test suite does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def dump(pins: dict[str, dict]) -> str:
    """JSON with one line per field of each pin (diffs of the file show which numbers moved)."""
    blocks = []
    for name, pin in pins.items():
        fields = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in pin.items())
        blocks.append(f"  {json.dumps(name)}: {{\n{fields}\n  }}")
    return "{\n" + ",\n".join(blocks) + "\n}\n"


def main() -> int:
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    import pin_jobs
    from toonbooth.models.tiny import make_tiny_set

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "studios", nargs="*", help=f"pins to regenerate (default all): {', '.join(pin_jobs.STUDIOS)}"
    )
    parser.add_argument(
        "--check", action="store_true", help="compare only, write nothing; exit 1 on a change"
    )
    parser.add_argument("--twice", action="store_true", help="run each job twice; report if the runs differ")
    args = parser.parse_args()
    names = args.studios or list(pin_jobs.STUDIOS)
    unknown = sorted(set(names) - set(pin_jobs.STUDIOS))
    if unknown:
        parser.error(f"unknown pins {unknown}; there are {', '.join(pin_jobs.STUDIOS)}")

    old = json.loads(pin_jobs.PINS.read_text()) if pin_jobs.PINS.is_file() else {}
    new = {k: v for k, v in old.items() if k in pin_jobs.STUDIOS}
    changed, unstable = [], []
    with tempfile.TemporaryDirectory(prefix="toonbooth-pins-") as tmp:
        root = Path(tmp)
        make_tiny_set(root / "models")
        env = pin_jobs.make_env(root / "models", root / "home")
        for name in names:
            got = pin_jobs.JOBS[name](env)
            if args.twice:
                again = pin_jobs.JOBS[name](env)
                if again != got:
                    unstable.append(f"{name}: a second run in the same process gave {again} (first {got})")
            if name not in old:
                changed.append(f"{name}: new pin {got}")
            else:
                changed += pin_jobs.compare(name, got, old[name])
            new[name] = got
    for line in changed:
        print("changed  " + line)
    for line in unstable:
        print("UNSTABLE " + line)
    print(f"{len(names) - len({c.split(':')[0] for c in changed})} of {len(names)} pins unchanged")
    if args.check:
        return 1 if changed or unstable else 0
    pin_jobs.PINS.write_text(dump({k: new[k] for k in pin_jobs.STUDIOS if k in new}))
    print(f"wrote {pin_jobs.PINS.relative_to(ROOT)}")
    return 1 if unstable else 0


if __name__ == "__main__":
    sys.exit(main())
