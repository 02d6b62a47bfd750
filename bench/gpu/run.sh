#!/usr/bin/env bash
# Issue 20's GPU checks in one command (under 10 minutes on one GPU): bench/gpu/run.sh [--dry] [--out DIR]
#
# Writes DIR/results.json and DIR/results.md (default bench/gpu/out) and exits 1 if a check fails.
# --dry runs every step's CPU-safe part (CI runs this; no GPU needed).
# Needs: python with this repo installed (pip install -e '.[runtime,deepspeed]'); bitsandbytes and flash-attn
# are used when present (steps say which kernel/weights they ran with). PYTHON picks the interpreter.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd -P)"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then py="$repo/.venv/bin/python"; else py=python3; fi
fi
cd "$repo"
link=""
where="$("$py" -c 'import mudpuppy, os; print(os.path.realpath(os.path.dirname(mudpuppy.__file__)))' 2>/dev/null || true)"
if [ "$where" != "$repo" ]; then
  # not installed, or installed from another checkout: this repo folder is the package, link it under its name
  link="$(mktemp -d)"
  ln -s "$repo" "$link/mudpuppy"
  export PYTHONPATH="$link${PYTHONPATH:+:$PYTHONPATH}"
fi
cleanup() { if [ -n "$link" ]; then rm -rf "$link"; fi; }
trap cleanup EXIT
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore
timeout 590 "$py" "$here/checks.py" "$@"
