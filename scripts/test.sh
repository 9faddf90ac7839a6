#!/usr/bin/env bash
# Set up (scripts/setup.sh), fetch the default model, lint, and run every CPU test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
kvmesh models pull
ruff check .
python -m pytest -q -p no:cacheprovider tests "$@"
