#!/usr/bin/env bash
# Create .venv and install kvmesh with its test extras. Idempotent; safe to run twice.
# torch is pinned to the local 2.13.0 CPU wheel first so that the range in pyproject.toml
# is already satisfied and pip never pulls the multi-gigabyte CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
python -m pip install -q "torch==2.13.0" || python -m pip install -q "torch>=2.4" \
    --index-url https://download.pytorch.org/whl/cpu
python -m pip install -q -e ".[test]"
