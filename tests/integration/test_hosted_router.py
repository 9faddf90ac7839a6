"""A gateway that hosts its router (`colocate_router`, `kvmesh up --hosted-router`): on the
session's mesh (real NATS, two real workers), a second gateway hosts a router of its own. Its
requests never cross `kvmesh.router.generate` (a plain subscriber there sees every request
that does: the session gateway's, and none of the hosted one's), they get the answers the
session's path gives, its router counts cached prefixes like any router, and the router's
refusals keep their status and field."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import nats
import pytest

from kvmesh import wire
from tests.integration.conftest import MAX_MODEL_LEN, MODEL, Mesh, start_gateway
from tests.integration.helpers import post

SYSTEM = "You are a careful archivist. " + " ".join(
    f"Rule {i}: file letter {i} under its sender, then its date." for i in range(20))


@pytest.fixture(scope="module")
def hosted(mesh: Mesh) -> Iterator[str]:
    """The URL of a gateway process that hosts a router (NATS and workers: the session's)."""
    child, url = start_gateway(mesh.nats_url, mesh.logs, "gateway-hosted",
                               colocate_router="1", worker_dead_after="2")
    try:
        deadline = time.monotonic() + 60
        while post(url + "/v1/completions", {"model": MODEL, "prompt": "Hi",
                                             "max_tokens": 1})[0] != 200:
            assert time.monotonic() < deadline, f"hosted gateway not serving; see {mesh.logs}"
            assert child.alive, f"hosted gateway exited; see {mesh.logs}"
            time.sleep(0.3)
        yield url
    finally:
        child.stop()


def chat(url: str, content: str, system: str = SYSTEM,
         **extra: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    return post(url + "/v1/chat/completions", {
        "model": MODEL, "max_tokens": 8, "temperature": 0,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": content}],
        **extra})


def routed_over_nats(nats_url: str, calls: list[tuple[str, str]]) -> list[str]:
    """Make each (gateway URL, question) chat call while a plain subscriber listens on
    `ROUTER_GENERATE`; the request ids of the generate requests it saw."""

    async def run() -> list[str]:
        nc = await nats.connect(nats_url)
        seen: list[str] = []

        async def on_msg(msg: Any) -> None:
            seen.append(wire.decode(msg.data, wire.GenerateRequest).request_id)

        await nc.subscribe(wire.ROUTER_GENERATE, cb=on_msg)
        await nc.flush()
        for url, question in calls:
            status, body, _ = await asyncio.to_thread(chat, url, question)
            assert status == 200, body
        await nc.flush()
        await nc.close()
        return seen

    return asyncio.run(run())


def test_hosted_router_answers_without_the_nats_hop(mesh: Mesh, hosted: str) -> None:
    seen = routed_over_nats(mesh.nats_url, [(hosted, "Where does letter 4 go?"),
                                            (mesh.base_url, "Where does letter 5 go?")])
    assert len(seen) == 1 and seen[0].startswith("chatcmpl-")  # the session gateway's only


def test_hosted_router_gives_the_session_paths_answer(mesh: Mesh, hosted: str) -> None:
    question = "Which rule covers letter 9? Answer briefly."
    status, via_hosted, headers = chat(hosted, question, temperature=0.7, seed=11)
    assert status == 200, via_hosted
    status, via_router, _ = chat(mesh.base_url, question, temperature=0.7, seed=11)
    assert status == 200, via_router
    assert via_hosted["choices"][0]["message"] == via_router["choices"][0]["message"]
    counts = ("prompt_tokens", "completion_tokens", "total_tokens")  # cached ones may differ
    assert [via_hosted["usage"][k] for k in counts] == [via_router["usage"][k] for k in counts]
    assert headers["x-kvmesh-worker"] in mesh.live_worker_ids()


def test_hosted_router_counts_the_prefix_it_sent(hosted: str) -> None:
    system = "You sort parcels by weight. " + " ".join(
        f"Parcel {i} weighs {3 * i} grams more than parcel {i - 1}." for i in range(20))
    first = chat(hosted, "Which parcel is lightest?", system, temperature=0.9)[2]
    second = chat(hosted, "Which parcel is heaviest?", system, temperature=0.9)[2]
    assert int(first["x-kvmesh-prefix-overlap"]) == 0
    assert second["x-kvmesh-worker"] == first["x-kvmesh-worker"]
    assert int(second["x-kvmesh-prefix-overlap"]) > 0


def test_hosted_router_refusals_keep_status_and_field(hosted: str) -> None:
    status, body, _ = chat(hosted, "letter " * MAX_MODEL_LEN)
    assert status == 400, body
    assert body["error"]["code"] == "context_length_exceeded"
    assert body["error"]["param"] == "messages"
    status, body, _ = post(hosted + "/v1/completions", {
        "model": MODEL, "prompt": "Hi", "max_tokens": MAX_MODEL_LEN})
    assert status == 400, body
    assert (body["error"]["code"], body["error"]["param"]) == ("context_length_exceeded",
                                                              "max_tokens")
