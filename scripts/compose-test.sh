#!/usr/bin/env bash
# compose.yaml for real, in containers: set up (scripts/setup.sh, unless KVMESH_PYTHON names
# a Python that has kvmesh's test extras), prepare podman (deploy/podman/engine.sh), build the
# images (deploy/podman/images.sh; kept when present, KVMESH_REBUILD=all rebuilds), then run
# tests/integration/test_compose_podman.py. Needs root. About 10 minutes on a fresh machine of
# this project's kind, 2 once the images exist (docs/OPERATIONS.md, "The compose test").
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${KVMESH_PYTHON:-}" ]; then
    bash scripts/setup.sh
    export KVMESH_PYTHON=$PWD/.venv/bin/python
fi
bash deploy/podman/engine.sh
bash deploy/podman/images.sh
KVMESH_COMPOSE_TEST=1 "$KVMESH_PYTHON" -m pytest -q -p no:cacheprovider -s \
    tests/integration/test_compose_podman.py "$@"
