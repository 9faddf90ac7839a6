#!/usr/bin/env bash
# Prepare a container engine on a machine of this kind (Debian bookworm, root, no systemd, no
# Docker daemon): Debian's podman with runc, storage driver overlay (vfs where overlay cannot
# mount), cgroup manager cgroupfs, and no default ulimits. Idempotent: safe to run twice.
#
# Why these settings: crun and podman's default ulimits are refused by this kernel's sandbox;
# there is no systemd to manage cgroups (nor to run health checks: see docs/OPERATIONS.md).
# podman 4.3 (bookworm) has no `podman compose`, so podman-compose comes from PyPI.
set -euo pipefail
cd "$(dirname "$0")/../.."

# netavark (podman's network stack) needs iptables, which a minimal Debian lacks ("netavark:
# No such file or directory"); aardvark-dns resolves service names on compose networks.
missing=0
for cmd in podman runc debootstrap iptables; do command -v "$cmd" >/dev/null || missing=1; done
[ -x /usr/lib/podman/aardvark-dns ] || missing=1
if [ "$missing" = 1 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        podman runc debootstrap netavark aardvark-dns iptables ca-certificates >/dev/null
fi

# Our own files are rewritten on every run; a file someone else wrote is kept, with a note.
MARK="# Written by deploy/podman/engine.sh (kvmesh)."
ours() { [ ! -e "$1" ] || grep -qxF "$MARK" "$1"; }
mkdir -p /etc/containers
if ! ours /etc/containers/containers.conf; then
    echo "engine.sh: keeping /etc/containers/containers.conf (not ours); this machine needs" \
         "runtime runc, cgroup_manager cgroupfs, default_ulimits = []" >&2
else
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
fi
# Storage: overlay where this kernel mounts it (checked: a real overlay mount in a scratch
# folder), vfs otherwise; KVMESH_PODMAN_DRIVER=vfs|overlay forces one. vfs works everywhere
# but copies every layer in full, so builds, container starts and removals are many times
# slower. Each driver gets its own folder, so switching never meets a store of the other.
driver=${KVMESH_PODMAN_DRIVER:-}
if [ -z "$driver" ]; then
    probe=$(mktemp -d)
    mkdir -p "$probe"/{lower,upper,work,merged}
    if mount -t overlay overlay \
        -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" "$probe/merged" \
        2>/dev/null; then
        umount "$probe/merged"
        driver=overlay
    else
        driver=vfs
    fi
    rm -rf "$probe"
fi
if ! ours /etc/containers/storage.conf; then
    echo "engine.sh: keeping /etc/containers/storage.conf (not ours)" >&2
else
cat > /etc/containers/storage.conf <<CONF
# Written by deploy/podman/engine.sh (kvmesh).
[storage]
driver = "$driver"
runroot = "/run/containers/storage-$driver"
graphroot = "/var/lib/containers/storage-$driver"
CONF
fi

# podman-compose goes into the Python that runs the tests (default: the project's .venv).
PY=${KVMESH_PYTHON:-.venv/bin/python}
[ -x "$PY" ] || { bash scripts/setup.sh; PY=.venv/bin/python; }
"$PY" -m pip install -q "podman-compose>=1.3"
podman info --format '{{.Store.GraphDriverName}} {{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}}'
