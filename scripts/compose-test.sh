#!/usr/bin/env bash
# compose.yaml for real, in containers: set up (scripts/setup.sh), prepare podman
# (deploy/podman/engine.sh), build the images (deploy/podman/images.sh; kept when present,
# KVMESH_REBUILD=all rebuilds), then run tests/integration/test_compose_podman.py.
# Needs root. Takes minutes: the first image build most of all (docs/OPERATIONS.md, "Podman").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export KVMESH_PYTHON=${KVMESH_PYTHON:-$PWD/.venv/bin/python}
bash deploy/podman/engine.sh
bash deploy/podman/images.sh
KVMESH_COMPOSE_TEST=1 "$KVMESH_PYTHON" -m pytest -q -p no:cacheprovider -s \
    tests/integration/test_compose_podman.py "$@"
