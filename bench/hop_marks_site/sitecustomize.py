"""Hop marks for `bench/hop_marks.py`, installed in every mesh process it starts (this folder
is put first on their PYTHONPATH, so Python imports this file at start-up).

With `KVMESH_HOP_MARKS=<dir>` set, each process appends `<mark> <time.time_ns()>` lines to
`<dir>/<pid>.marks` as a request passes the points in `POINTS`: each is a function, wrapped when
its module is first imported, marked on entry (or on return, where `POINTS` says so). Without the
variable nothing is installed. Wrapping costs each marked call a function call and a `write`
(a few µs), which is why this lives in a bench and not in the services.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import inspect
import os
import sys
import time
from collections.abc import Callable
from typing import Any

# module -> [(qualified name, mark, "entry" or "return", only when cond(args, result))]
Cond = Callable[[tuple[Any, ...], Any], bool]
Point = tuple[str, str, str, Cond | None]


def _gateway_inbox(args: tuple[Any, ...], _result: Any) -> bool:
    return args[1].startswith("_INBOX.")  # a worker's deltas, not its heartbeats


def _asks_worker(args: tuple[Any, ...], _result: Any) -> bool:
    return ".worker." in args[1]


def _step_has_tokens(args: tuple[Any, ...], _result: Any) -> bool:
    return bool(args[1].outputs)


def _made_tokens(_args: tuple[Any, ...], result: Any) -> bool:
    return bool(result.outputs)


def _launched_prompt(_args: tuple[Any, ...], result: Any) -> bool:
    return bool(result.prefills) and not result.outputs  # the overlapped loop's prompt call


POINTS: dict[str, list[Point]] = {
    "gateway.app": [("_serve_generation", "gateway_handler", "entry", None),
                    ("_open", "gateway_opens", "entry", None)],
    "gateway.mesh_client": [("MeshClient.route", "gateway_routes", "entry", None),
                            ("MeshClient._on_deltas", "gateway_deltas", "entry", None)],
    "gateway.sse": [("SseWriter.send", "gateway_writes", "entry", None)],
    "router.service": [("Router._generate", "router_handler", "entry", None),
                       ("Router.request", "router_asks_worker", "entry", _asks_worker)],
    "inference.worker": [("Worker._generate", "worker_handler", "entry", None),
                         ("Worker._generate", "worker_sent_to_engine", "return", None),
                         ("Worker._on_step", "worker_step", "entry", _step_has_tokens),
                         ("Worker.publish", "worker_publishes", "entry", _gateway_inbox)],
    "inference.engine_loop": [("EngineLoop._add", "engine_has_it", "entry", None),
                              ("EngineLoop._step", "engine_prompt_launched", "return",
                               _launched_prompt),
                              ("EngineLoop._step", "engine_token_out", "return", _made_tokens)],
}

_fd: int | None = None


def mark(name: str) -> None:
    global _fd
    if _fd is None:
        path = os.path.join(os.environ["KVMESH_HOP_MARKS"], f"{os.getpid()}.marks")
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.write(_fd, f"{name} {time.time_ns()}\n".encode())


def _wrap(fn: Callable[..., Any], name: str, when: str, cond: Cond | None) -> Callable[..., Any]:
    def passes(at: str, args: tuple[Any, ...], result: Any = None) -> None:
        if when == at and (cond is None or cond(args, result)):
            mark(name)

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def acall(*args: Any, **kwargs: Any) -> Any:
            passes("entry", args)
            result = await fn(*args, **kwargs)
            passes("return", args, result)
            return result
        return acall

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        passes("entry", args)
        result = fn(*args, **kwargs)
        passes("return", args, result)
        return result
    return call


def _patch(module: Any, points: list[Point]) -> None:
    for qualname, name, when, cond in points:
        owner = module
        *path, attr = qualname.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, attr, _wrap(getattr(owner, attr), name, when, cond))


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the modules of `POINTS` as Python would, and patches each once it has run."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in POINTS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            _patch(module, POINTS[fullname])

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if os.environ.get("KVMESH_HOP_MARKS"):
    sys.meta_path.insert(0, _Finder())
