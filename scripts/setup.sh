#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment in .venv with the package and its test tools.
# torch is pinned first so pip takes the local CPU wheel instead of pulling CUDA packages.
#   DEGAS_EXTRAS   extras to install (default "test"; CI uses "test,space,zarr,lora,onnx" so every optional path is tested)
#   DEGAS_BROWSER  1: also install Debian's chromium (as root) for the Space's headless-browser test
# Without an optional piece, its tests are skipped with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
[ -d .venv ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[${DEGAS_EXTRAS:-test}]"
if [ "${DEGAS_BROWSER:-0}" = "1" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "chromium could not be installed: the Space browser test will be skipped"
  else
    echo "not root: chromium not installed, the Space browser test will be skipped"
  fi
fi
