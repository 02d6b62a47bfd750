#!/usr/bin/env bash
# SkyPilot in its own environment (.venv-sky): it pins click<8.2, which the training environment's
# huggingface-hub cannot use. The launcher drives it through MUDPUPPY_SKYPILOT_PYTHON (tests: .venv-sky/bin/python).
# Every dependency pinned by constraints/lock-skypilot.txt (scripts/lock.py).
# Idempotent: does nothing when the pinned version is already installed.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${SKY_VENV:-.venv-sky}
VERSION=${SKYPILOT_VERSION:-0.14.1}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('skypilot') != '$VERSION')" 2>/dev/null; then
    exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -c "$(dirname "$0")/../../constraints/lock-skypilot.txt" "skypilot==$VERSION"
