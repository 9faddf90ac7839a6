#!/usr/bin/env bash
# Prepare a container engine on a machine of this kind (Debian bookworm, root, no systemd, no
# Docker daemon): Debian's podman with runc, storage driver vfs, cgroup manager cgroupfs, and
# no default ulimits. Idempotent: safe to run twice.
#
# Why these settings: crun and podman's default ulimits are refused by this kernel's sandbox;
# overlay storage is not available inside it; there is no systemd to manage cgroups. podman
# 4.3 (bookworm) has no `podman compose`, so podman-compose comes from PyPI (into .venv).
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
for cmd in podman runc debootstrap; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        podman runc debootstrap netavark aardvark-dns iptables uidmap ca-certificates >/dev/null
fi

mkdir -p /etc/containers
cat > /etc/containers/containers.conf <<'CONF'
# Written by deploy/podman/engine.sh (kvmesh).
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[network]
network_backend = "netavark"
CONF
if ! grep -qs 'driver = "vfs"' /etc/containers/storage.conf; then
    if podman images -q 2>/dev/null | grep -q .; then
        echo "engine.sh: podman already has images under another storage driver;" \
             "not switching to vfs" >&2
    else
        cat > /etc/containers/storage.conf <<'CONF'
# Written by deploy/podman/engine.sh (kvmesh).
[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
CONF
    fi
fi

# podman-compose goes into the Python that runs the tests (default: the project's .venv).
PY=${KVMESH_PYTHON:-.venv/bin/python}
[ -x "$PY" ] || { bash scripts/setup.sh; PY=.venv/bin/python; }
"$PY" -m pip install -q "podman-compose>=1.3"
podman info --format '{{.Store.GraphDriverName}} {{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}}'
