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
