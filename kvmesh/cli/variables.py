"""Which `KVMESH_*` environment variables kvmesh knows, and a warning for any other one.

A misspelt variable (`KVMESH_WORKR_MAX_NUM_SEQS`, `KVMESH_WORKER_MAX_MODEL_LENGTH`) is read by
nothing, so it silently changes nothing. `kvmesh up` and `kvmesh serve` say so at start: one
line per unknown variable, naming it and the known name closest to it. A warning, never a
refusal (as vLLM's "Unknown vLLM environment variable detected").

Known names (`known()`): every variable a service's config reads, `kvmesh up`'s included
(`kvmesh.config.variable_names`: a field's own `KVMESH_<SERVICE>_<FIELD>` and its shared
`KVMESH_<FIELD>`), the NATS users' passwords (`KVMESH_NATS_<ROLE>_PASSWORD`), and `ELSEWHERE`:
names read outside the configs, or set for tools beside kvmesh. So a variable with a service's
prefix (`KVMESH_WORKER_`) is unknown when that service has no such field and nothing else reads
the name, and one with no service's prefix when no code reads it at all.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping
from functools import cache

# Names no service config holds. Keep each where its reader is named.
ELSEWHERE = frozenset({
    "KVMESH_MODEL_DIR",  # the model cache (inference/engine/model_store.py)
    "KVMESH_LOG_FORMAT",  # json or text log lines (telemetry/logs.py)
    "KVMESH_JAEGER_URL",  # `kvmesh trace` (telemetry/jaeger.py)
    "KVMESH_HEALTHCHECK_PID",  # the image's health check (kvmesh/cli/healthcheck.py)
    "KVMESH_REDIS_PASSWORD",  # compose's Redis password (compose.yaml)
    "KVMESH_KEY",  # the API key the README has users export for curl
    # compose's .env: compose.yaml interpolates them
    "KVMESH_IMAGE", "KVMESH_CUDA_IMAGE", "KVMESH_GATEWAY_PUBLISH_PORT",
    "KVMESH_WORKER_STOP_GRACE", "KVMESH_GRAFANA_PORT", "KVMESH_GRAFANA_ADMIN_PASSWORD",
    "KVMESH_JAEGER_UI_PORT", "KVMESH_OTLP_HTTP_PORT", "KVMESH_PROMETHEUS_PORT",
    "KVMESH_PROMETHEUS_RETENTION",
    # the podman deployment and its test (deploy/podman/*.sh, scripts/compose-test.sh)
    "KVMESH_COMPOSE_TEST", "KVMESH_PYTHON", "KVMESH_REBUILD", "KVMESH_DEBIAN_MIRROR",
    "KVMESH_INDEX_PORT", "KVMESH_PODMAN_DRIVER", "KVMESH_PODMAN_WORK", "KVMESH_TORCH_SPEC",
    # benchmarks and GPU tests (bench/hop_marks.py, bench/gpu_session.sh)
    "KVMESH_HOP_MARKS", "KVMESH_TOKENIZER_JSON",
})


@cache
def known() -> frozenset[str]:
    """Every `KVMESH_*` name kvmesh reads or its tools use."""
    from inference.worker_config import WorkerConfig
    from kvmesh.cli.nats_permissions import ROLES
    from kvmesh.config import (
        AuthConfig,
        CacheConfig,
        GatewayConfig,
        LaunchConfig,
        RouterConfig,
        variable_names,
    )

    names = set(ELSEWHERE) | {role.password_var for role in ROLES}
    for cls in (GatewayConfig, RouterConfig, CacheConfig, AuthConfig, WorkerConfig,
                LaunchConfig):
        names |= variable_names(cls)
    return frozenset(names)


def unknown(environ: Mapping[str, str]) -> list[str]:
    """The `KVMESH_*` names in `environ` that kvmesh does not know, sorted."""
    names = known()
    return sorted(n for n in environ if n.startswith("KVMESH_") and n not in names)


def warnings(environ: Mapping[str, str]) -> list[str]:
    """One line per unknown variable of `environ`: its name, that it changes nothing, and the
    known name it most resembles, if one is close."""
    lines = []
    for name in unknown(environ):
        close = difflib.get_close_matches(name, known(), n=1, cutoff=0.8)
        hint = f"; did you mean {close[0]}?" if close else ""
        lines.append(f"warning: unknown variable {name}: no kvmesh setting has that name, so "
                     f"it changes nothing{hint}")
    return lines


def warn_unknown(prog: str, environ: Mapping[str, str] | None = None) -> None:
    """Print `warnings` of `environ` (this process's environment when None) to stderr, each
    line led by `prog` (`kvmesh up`, `kvmesh serve worker`)."""
    for line in warnings(os.environ if environ is None else environ):
        print(f"{prog}: {line}", file=sys.stderr, flush=True)
