"""The `kvmesh` command: a small dispatcher, one function per subcommand.

Adding a subcommand: write `_cmd_<name>(args) -> int`, register its parser in `_build_parser`
with `set_defaults(func=...)`. Heavy imports (torch, engine modules) stay inside the command
functions so that `kvmesh --help` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_models_pull(args: argparse.Namespace) -> int:
    """Fetch the default model into the local cache (no-op when present)."""
    from inference.engine.model_store import pull_default_model

    try:
        pull_default_model()
    except RuntimeError as e:
        print(f"kvmesh: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_models_list(args: argparse.Namespace) -> int:
    """Print the cache directory and every model in it."""
    from inference.engine.model_store import list_models, model_dir

    models = list_models()
    print(f"model cache: {model_dir()}")
    if not models:
        print("  (empty; run `kvmesh models pull`)")
    for path in models:
        size = path.stat().st_size if path.is_file() else 0
        print(f"  {path.name}" + (f"  {size / 2**20:.0f} MiB" if size else "  (HF folder)"))
    return 0


def _cmd_trace(args: argparse.Namespace) -> int:
    """Find a trace in Jaeger by request id or trace id and print its span tree."""
    from telemetry.jaeger import main

    return main(args.id, args.jaeger_url)


def _cmd_top(args: argparse.Namespace) -> int:
    """Live view of a running mesh (telemetry/top.py)."""
    import asyncio

    from telemetry.top import run

    return asyncio.run(run(args))


def _add_top(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from kvmesh import local_urls

    top = sub.add_parser("top", help="live view of a running mesh (q quits)")
    top.add_argument("--nats-url", default=local_urls.nats_url(),
                     help="NATS, for heartbeats; default $KVMESH_NATS_URL, else kvmesh up's "
                          "(<state dir>/nats-ops.url), else nats://127.0.0.1:4222")
    top.add_argument("--metrics", action="append", default=[], metavar="URL",
                     help="a /metrics URL to scrape (repeat it); default: kvmesh up's ports")
    top.add_argument("--host", default="127.0.0.1", help="host of kvmesh up's services")
    top.add_argument("--port", type=int, default=8000, help="the gateway's port")
    top.add_argument("--metrics-ports", default="9101-9116", metavar="FIRST-LAST",
                     help="ports to scan for worker, auth, cache, gateway and router /metrics")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between redraws")
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    top.set_defaults(func=_cmd_top)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvmesh", description="kvmesh LLM serving mesh")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    models = sub.add_parser("models", help="manage the local model cache")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    pull = models_sub.add_parser("pull", help="fetch the default model (SmolLM2-135M-Instruct)")
    pull.set_defaults(func=_cmd_models_pull)
    ls = models_sub.add_parser("list", help="list cached models")
    ls.set_defaults(func=_cmd_models_list)
    models.set_defaults(func=lambda _args: _usage(models))

    from kvmesh.cli.launcher import add_commands  # `kvmesh up` and `kvmesh serve`

    add_commands(sub)

    from auth.cli import add_commands as add_key_commands  # `kvmesh keys`

    add_key_commands(sub)

    trace = sub.add_parser("trace", help="print a request's trace from Jaeger as a tree")
    trace.add_argument("id", help="a request id (chatcmpl-..., cmpl-...) or a 32-hex trace id")
    trace.add_argument("--jaeger-url", default=None,
                       help="Jaeger query URL; env KVMESH_JAEGER_URL (default "
                            "http://localhost:16686)")
    trace.set_defaults(func=_cmd_trace)

    _add_top(sub)
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `kvmesh` console script; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        return _usage(parser)
    return int(func(args))

