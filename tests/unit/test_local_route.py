"""The gateway's side of a router it hosts (`colocate_router`; the whole path runs in
tests/integration/test_hosted_router.py): `MeshClient.route` calls the router in place of the
NATS request and keeps that request's contract. An `Accepted` comes back as is, with the
request id in the headers the router passes on to the worker; an `ErrorReply` is the same
`ApiError` a remote one is; a router that does not answer within `router_timeout` is a 504;
the process is ready to route while its hosted router holds its NATS link. Only
`kvmesh serve gateway` can host a router: the gateway module alone refuses the setting.
Routing that ends undecided (a 504, or the handler cancelled) sends the request a cancel on a
real nats-server, in case a worker accepts it late; a refusal sends none."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from gateway import server
from gateway.errors import ApiError
from gateway.mesh_client import MeshClient, RequestStream
from kvmesh import wire
from kvmesh.cli import procs
from kvmesh.config import ConfigError, GatewayConfig
from kvmesh.wire import (
    REQUEST_ID_HEADER,
    Accepted,
    Cancel,
    EmbedRequest,
    ErrorReply,
    GenerateRequest,
    Message,
)


class Router:
    """A `LocalRouter` answering `reply` after `delay` seconds, recording what it was asked."""

    def __init__(self, reply: Message, delay: float = 0.0) -> None:
        self.reply, self.delay = reply, delay
        self.asked: list[tuple[str, dict[str, str] | None]] = []
        self.connected = True

    async def start(self) -> None:
        return None

    async def route(self, req: GenerateRequest | EmbedRequest,
                    headers: dict[str, str] | None) -> Message:
        self.asked.append((req.request_id, headers))
        await asyncio.sleep(self.delay)
        return self.reply

    async def drain(self) -> None:
        return None


def _request() -> GenerateRequest:
    return GenerateRequest(request_id="cmpl-1", model="m", reply_to="_INBOX.x", prompt="Hi")


async def test_accepted_comes_back_with_the_request_id_passed_on() -> None:
    router = Router(Accepted("cmpl-1", "w0", 3, prefix_overlap=2))
    accepted = await MeshClient(GatewayConfig(), router).route(_request())
    assert (accepted.worker_id, accepted.prompt_tokens, accepted.prefix_overlap) == ("w0", 3, 2)
    assert router.asked == [("cmpl-1", {REQUEST_ID_HEADER: "cmpl-1"})]


async def test_an_error_reply_is_the_api_error_a_remote_one_is() -> None:
    reply = ErrorReply(400, "invalid_request_error", "the prompt has 2000 tokens", "prompt",
                       "context_length_exceeded")
    with pytest.raises(ApiError) as got:
        await MeshClient(GatewayConfig(), Router(reply)).route(_request())
    assert got.value.body() == ApiError.from_reply(reply).body()
    assert got.value.status == 400


async def test_a_router_that_does_not_answer_in_time_is_a_504() -> None:
    mesh = MeshClient(GatewayConfig(router_timeout=0.2), Router(Accepted("cmpl-1", "w0", 1), 30))
    started = time.monotonic()
    with pytest.raises(ApiError) as got:
        await mesh.route(_request())
    assert (got.value.status, got.value.code) == (504, "router_timeout")
    assert time.monotonic() - started < 5


async def test_readiness_is_the_hosted_routers_own_link() -> None:
    router = Router(Accepted("cmpl-1", "w0", 1))
    mesh = MeshClient(GatewayConfig(), router)  # never connected: no router could answer it
    assert await mesh.router_ready()
    router.connected = False  # its own NATS link lost: this process cannot route
    assert not await mesh.router_ready()


def test_the_gateway_module_alone_refuses_to_host_a_router() -> None:
    with pytest.raises(ConfigError, match="colocate_router"):
        server.main(["--colocate-router", "1"])


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = procs.free_port()
    child = procs.start_nats(port)
    yield f"nats://127.0.0.1:{port}"
    child.stop()


@pytest.fixture
async def cancels(nats_url: str) -> AsyncIterator[asyncio.Queue[str]]:
    """Request ids of the cancels published on `wire.CANCEL`, in order."""
    import nats

    nc = await nats.connect(nats_url)
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def on_msg(msg: object) -> None:
        seen.put_nowait(wire.decode(msg.data, Cancel).request_id)  # type: ignore[attr-defined]

    await nc.subscribe(wire.CANCEL, cb=on_msg)
    await nc.flush()
    yield seen
    await nc.close()


async def _joined(nats_url: str, router: Router, timeout: float = 0.2) -> MeshClient:
    mesh = MeshClient(GatewayConfig(nats_url=nats_url, router_timeout=timeout), router)
    await mesh.start()
    return mesh


async def test_a_route_that_times_out_is_cancelled_at_the_workers(
        nats_url: str, cancels: asyncio.Queue[str]) -> None:
    mesh = await _joined(nats_url, Router(Accepted("cmpl-1", "w0", 1), delay=30))
    with pytest.raises(ApiError):
        await RequestStream(mesh, _request(), keep=False).route()
    assert await asyncio.wait_for(cancels.get(), 10) == "cmpl-1"
    assert "cmpl-1" not in mesh.streams
    await mesh.drain()


async def test_a_route_whose_handler_is_cancelled_is_cancelled_at_the_workers(
        nats_url: str, cancels: asyncio.Queue[str]) -> None:
    router = Router(Accepted("cmpl-1", "w0", 1), delay=30)
    mesh = await _joined(nats_url, router, timeout=60)
    routing = asyncio.ensure_future(RequestStream(mesh, _request(), keep=False).route())
    while not router.asked:  # the router has it
        await asyncio.sleep(0.01)
    routing.cancel()
    assert await asyncio.wait_for(cancels.get(), 10) == "cmpl-1"
    await mesh.drain()


async def test_a_refused_route_sends_no_cancel(nats_url: str,
                                                cancels: asyncio.Queue[str]) -> None:
    refusal = ErrorReply(503, "service_unavailable", "no live worker serves 'm'",
                         code="no_worker")
    mesh = await _joined(nats_url, Router(refusal))
    with pytest.raises(ApiError):
        await RequestStream(mesh, _request(), keep=False).route()
    await mesh.cancel("sentinel")  # published after any cancel of the refused request
    assert await asyncio.wait_for(cancels.get(), 10) == "sentinel"
    await mesh.drain()
