"""The router drops what it keeps of a worker once its registry has forgotten it (silent for
4 × `worker_dead_after`): its KV index, circuit and resync stamp. An audit fed a router 50
short-lived worker ids (compose names a worker afresh at each start): 100,000 keys stayed."""

from __future__ import annotations

from unittest import mock

from kvmesh.config import RouterConfig
from kvmesh.wire import Heartbeat, KVEvent
from router.service import PRUNE_EVERY_S, Router
from router.tokenize import PromptTokenizer


async def test_a_worker_gone_for_good_leaves_nothing_behind() -> None:
    async def publish(*args: object, **kwargs: object) -> None:
        pass

    clock = [1000.0]
    with mock.patch("time.monotonic", lambda: clock[0]):
        router = Router(RouterConfig(worker_dead_after=5.0), PromptTokenizer(None))
        router.publish = publish  # type: ignore[method-assign]
        for n in range(5):  # each lives a moment, caches blocks, fails once, and is gone
            wid = f"w-{n}"
            await router._on_heartbeat(Heartbeat(wid, "m", 0, 0, 0.1, 4096, 4000,
                                                 max_model_len=64), None)
            await router._on_kv_event(KVEvent(wid, list(range(n * 100, n * 100 + 50)), [],
                                              full=True, seq=1), None)
            router.breakers.failure(wid)
            clock[0] += max(PRUNE_EVERY_S, 4 * 5.0) + 1  # gone: 4 x dead_after and more
        await router._on_heartbeat(Heartbeat("w-last", "m", 0, 0, 0.1, 4096, 4000,
                                             max_model_len=64), None)
        assert set(router.kv_index.worker_ids()) <= {"w-last"}
        assert router.breakers.worker_ids() == []
        assert set(router._resync_asked) <= {"w-last"}
        # a worker that beats but did not answer is forgotten by the registry (until its
        # next beat), never by the pruning: its circuit must outlast that
        router.breakers.failure("w-last")
        router.workers.forget("w-last")
        clock[0] += PRUNE_EVERY_S + 1  # within 4 x dead_after of its last beat
        await router._on_heartbeat(Heartbeat("w-other", "m", 0, 0, 0.1, 4096, 4000,
                                             max_model_len=64), None)
        assert router.breakers.worker_ids() == ["w-last"]
