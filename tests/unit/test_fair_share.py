"""Fair share in the engine's scheduler (scheduler.py): within a priority, groups (tenants)
take turns, so a request that arrives behind another group's many waiting sequences is
admitted at the next step, not after all of them; one group is served first come, first
served, as before. On the tiny engine, random weights, CPU."""

from __future__ import annotations

from inference.engine.embedding import PoolingParams

from .engine_driver import greedy, tiny_engine


def _admitted_step(engine, request_id: str, limit: int = 400) -> int:
    """Steps until `request_id` has a running sequence."""
    for step in range(limit):
        if any(s.request_id == request_id for s in engine.scheduler.running):
            return step
        engine.step()
    raise AssertionError(f"{request_id} was not admitted in {limit} steps")


def test_another_group_is_admitted_ahead_of_a_big_groups_queue() -> None:
    engine = tiny_engine(max_num_seqs=4)
    for i in range(40):  # one tenant's 40 requests wait, 4 run at a time
        engine.add_request(f"big{i}", [5, 6, 7, 8], greedy(8, share="tenant:big"))
    engine.step()
    engine.add_request("small", [9, 10, 11], greedy(2, share="tenant:small"))
    assert _admitted_step(engine, "small") <= 9  # as soon as one of the 4 slots frees
    assert len([s for s in engine.scheduler.waiting if s.request_id.startswith("big")]) >= 28


def test_one_group_is_first_come_first_served() -> None:
    engine = tiny_engine(max_num_seqs=2)
    for i in range(8):
        engine.add_request(f"r{i}", [5, 6, 7, 8 + i], greedy(4, share="tenant:one"))
    order: list[str] = []
    while engine.has_unfinished():
        for s in engine.scheduler.running:
            if s.request_id not in order:
                order.append(s.request_id)
        engine.step()
    assert order == [f"r{i}" for i in range(8)]


def test_an_embedding_batch_does_not_hold_back_another_tenants_chat() -> None:
    engine = tiny_engine(max_num_seqs=4)
    engine.add_embedding("batch", [[5, 6, 7, i] for i in range(200)],
                         PoolingParams(share="tenant:e"))
    engine.step()
    engine.add_request("chat", [9, 10], greedy(2, share="tenant:f"))
    assert _admitted_step(engine, "chat") <= 2  # without turns: after ~50 steps of batch
