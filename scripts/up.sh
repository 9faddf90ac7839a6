#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole mesh on this machine with the default model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec kvmesh up "$@"
