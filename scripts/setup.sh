#!/usr/bin/env bash
# Create .venv and install toonbooth with everything it needs, idempotently.
#
#   scripts/setup.sh            # runtime + server + test extras
#
# torch goes in FIRST: torch==2.13.0 (CPU) unless the venv already has a torch
# (a GPU user may `pip install torch` of their CUDA build into .venv before
# running this; that build is kept).  The installed torch version is then
# written to .venv/constraints.txt and held with PIP_CONSTRAINT for every later
# pip call, so no dependency can swap it for a multi-GB CUDA wheel.
# torchvision must never be installed (see docs/install.md): we fail if it is.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${TOONBOOTH_VENV:-.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtualenv $VENV"
    "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] installing torch==2.13.0 (CPU build); GPU users: install your CUDA torch into $VENV first"
    "$VPY" -m pip install -q "torch==2.13.0"
fi
TORCH_VERSION="$("$VPY" -c 'import importlib.metadata as m; print(m.version("torch"))')"
{
    echo "torch==${TORCH_VERSION}"
} > "$VENV/constraints.txt"
export PIP_CONSTRAINT="$PWD/$VENV/constraints.txt"

STAMP="$VENV/.toonbooth-installed"
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    echo "[setup] installing toonbooth and its dependencies (torch held at ${TORCH_VERSION})"
    "$VPY" -m pip install -q -e ".[server,test]"
    touch "$STAMP"
fi

if "$VPY" -c "import importlib.util,sys; sys.exit(0 if importlib.util.find_spec('torchvision') is None else 1)"; then
    :
else
    echo "[setup] ERROR: torchvision got installed into $VENV; it breaks diffusers/transformers here." >&2
    echo "[setup] remove it with: $VENV/bin/pip uninstall -y torchvision" >&2
    exit 1
fi
echo "[setup] ready: $VENV (torch ${TORCH_VERSION})"
