#!/usr/bin/env bash
# Create .venv and install kvmesh with its test extras; print one line when done.
# Idempotent: a second run skips the install when pyproject.toml and this script are unchanged
# since the last good one (.venv/.kvmesh-setup holds their hash) and kvmesh still imports.
# torch is pinned to the local 2.13.0 CPU wheel first so that the range in pyproject.toml
# is already satisfied and pip never pulls the multi-gigabyte CUDA build.
# pip runs quietly; its whole output goes to .venv/setup.log and is shown only on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
start=$SECONDS
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
stamp=.venv/.kvmesh-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)

pip_quiet() {  # pip with its output in .venv/setup.log, shown only if it fails
    if ! python -m pip --disable-pip-version-check "$@" >>.venv/setup.log 2>&1; then
        echo "setup: pip $* failed; its output (.venv/setup.log):" >&2
        tail -n 40 .venv/setup.log >&2
        return 1
    fi
}

if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && python -c "import kvmesh" 2>/dev/null; then
    installed=skipped
else
    : >.venv/setup.log
    echo "setup: installing kvmesh and its test extras into .venv (a few minutes the first time)"
    pip_quiet install -q --upgrade pip
    python -m pip install -q "torch==2.13.0" >>.venv/setup.log 2>&1 \
        || pip_quiet install -q "torch>=2.4" --index-url https://download.pytorch.org/whl/cpu
    pip_quiet install -q -e ".[test]"
    echo "$want" >"$stamp"
    installed=installed
fi
# promtool, which runs the alert rules' unit tests (tests/unit/test_alert_rules.py): the binary
# from Debian's `prometheus` package, unpacked into .venv/bin (nothing installed system-wide,
# no service started; about 2 s). Elsewhere, put any Prometheus release's promtool on PATH.
if ! command -v promtool >/dev/null && command -v apt-get >/dev/null; then
    bin="$PWD/.venv/bin" tmp=$(mktemp -d)
    (cd "$tmp" && { apt-get download -qq prometheus || { apt-get update -qq \
        && apt-get download -qq prometheus; }; } >/dev/null 2>&1 \
        && dpkg-deb -x prometheus_*.deb x && cp x/usr/bin/promtool "$bin/") \
        || echo "setup: could not fetch promtool (Debian package prometheus)" >&2
    rm -rf "$tmp"
fi
versions=$(python -c "import sys; from importlib.metadata import version as v
print(f'kvmesh {v(\"kvmesh\")}, torch {v(\"torch\")}, Python {sys.version.split()[0]}')")
echo "setup: .venv ready ($versions; install $installed) in $((SECONDS - start)) s"
