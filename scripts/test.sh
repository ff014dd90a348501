#!/usr/bin/env bash
# Run the whole test suite (sets everything up first). Extra args go to pytest.
#   scripts/test.sh            # everything: lint + all tests
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the browser tests drive Debian's chromium-headless-shell (a test tool's own browser download does not
# work offline): install it when it is missing and we can (root with apt), else say how
if [ ! -x /usr/bin/chromium-headless-shell ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        echo "[test] installing chromium-headless-shell (browser tests)"
        (apt-get install -y -qq --no-install-recommends chromium-headless-shell >/dev/null 2>&1 \
            || (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium-headless-shell)) \
            || echo "[test] could not install chromium-headless-shell; the browser tests will fail" >&2
    else
        echo "[test] /usr/bin/chromium-headless-shell is missing: run" \
            "'sudo apt-get install -y chromium-headless-shell' (the browser tests need it)" >&2
    fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
echo "[test] ruff"
.venv/bin/ruff check src tests bench
echo "[test] pytest"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "[test] ERROR: pytest collected no tests" >&2
    exit 1
fi
exit "$rc"
