"""Background Responses (`background: true`): answered `in_progress` at once (or streamed, a
client that leaves stopping nothing), generated on past the HTTP request and stored as they
end (through a store outage too); cancelled from any
gateway process, or deleted, which stops the generation at its worker; failed, not left in
progress, when their gateway shuts down; counted once, with the status they ended with."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import nats
import openai
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from kvmesh import wire
from kvmesh.cli import procs
from kvmesh.wire import (
    ResponseAck,
    ResponseEventsGet,
    ResponseEventsPut,
    ResponsePut,
    StoredResponse,
)
from tests.integration.conftest import MODEL, Mesh, start_gateway
from tests.integration.helpers import call, open_stream, sse_events, wait_until
from tests.integration.responses_gateway import NO_SUCH_RESPONSE
from tests.integration.test_cancel import serving_worker

# 300 numbers asked of the grammar, 900 tokens allowed: a generation of tens of seconds on
# the test workers, never over before the test cancels it
NUMBERS = {"type": "json_schema", "name": "numbers", "schema": {
    "type": "object", "required": ["n"], "properties": {
        "n": {"type": "array", "items": {"type": "integer"}, "minItems": 300}}}}
LONG = {"model": MODEL, "input": "List numbers.", "max_output_tokens": 900, "temperature": 0,
        "text": {"format": NUMBERS}, "background": True}
SHORT = {"model": MODEL, "input": "Name three colours.", "max_output_tokens": 12,
         "temperature": 0}


@dataclass
class Gateways:
    """Two gateway processes on one store (the cache actor `store`): a cancel sent to either
    reaches the job."""

    first: str
    second: str
    store: procs.Child
    log: Path  # the first gateway's


@pytest.fixture(scope="module")
def gateways(mesh: Mesh, redis_url: str, logs_dir: Path) -> Iterator[Gateways]:
    store = procs.start("cache-background", procs.service_argv("cache"), env={
        "KVMESH_NATS_URL": mesh.nats_url, "KVMESH_CACHE_METRICS_PORT": "0",
        "KVMESH_CACHE_REDIS_URL": redis_url},
        log=open(logs_dir / "cache-background.log", "ab"))  # noqa: SIM115 - the child owns it
    children = [store]
    try:
        urls = []
        for name in ("gateway-background-1", "gateway-background-2"):
            child, url = start_gateway(mesh.nats_url, logs_dir, name, result_cache="0")
            children.append(child)
            urls.append(url)
            wait_until(lambda url=url: call("GET", url + "/ready")[0] == 200,
                       "the gateway is ready")
        wait_until(lambda: call("GET", urls[0] + NO_SUCH_RESPONSE)[0] == 404,
                   "the responses store answers")
        yield Gateways(urls[0], urls[1], store, logs_dir / "gateway-background-1.log")
    finally:
        for child in reversed(children):
            child.stop()


@contextmanager
def _store_paused(store: procs.Child) -> Iterator[None]:
    os.kill(store.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(store.proc.pid, signal.SIGCONT)


def _client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60)


def _status(base: str, rid: str) -> str:
    status, body, _ = call("GET", f"{base}/v1/responses/{rid}")
    assert status == 200, body
    return str(body["status"])


def _counted(base: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples on the gateway's /metrics whose labels include `labels`."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and labels.items() <= s.labels.items())


def _requests(base: str, status: str) -> float:
    return _counted(base, "kvmesh_gateway_requests_total", route="/v1/responses",
                    status=status)


def _long_running(gw: Gateways, mesh: Mesh) -> tuple[str, str]:
    """A background response the worker is generating: (its id, that worker)."""
    status, made, _ = call("POST", gw.first + "/v1/responses", LONG)
    assert status == 200 and made["status"] == "in_progress", made
    return made["id"], serving_worker(mesh)


def test_a_background_response_is_answered_in_progress_and_stored_when_done(
        gateways: Gateways) -> None:
    first = gateways.first
    client = _client(first)
    tokens_before = _counted(first, "kvmesh_gateway_generation_tokens_total", model=MODEL)
    ok_before = _requests(first, "200")
    made = client.responses.create(**SHORT, background=True)
    assert made.status == "in_progress" and made.background is True and made.output == []
    wait_until(lambda: _status(first, made.id) != "in_progress", "the response finishes")
    done = client.responses.retrieve(made.id)
    alone = client.responses.create(**SHORT, store=False)
    assert done.status == alone.status and done.background is True
    assert done.output_text == alone.output_text and done.output_text
    assert done.usage is not None and done.usage.output_tokens == alone.usage.output_tokens
    # counted once each (the background one when it ended), with their tokens
    wait_until(lambda: _counted(first, "kvmesh_gateway_generation_tokens_total", model=MODEL)
               >= tokens_before + 2 * done.usage.output_tokens,
               "the background response's tokens are counted")
    assert _requests(first, "200") == ok_before + 2
    again = client.responses.cancel(made.id)  # a finished one: as it finished
    assert again.status == done.status and again.output_text == done.output_text


@pytest.mark.parametrize("where", ["its own gateway", "another gateway"])
def test_a_cancel_stops_the_generation_wherever_it_runs(mesh: Mesh, gateways: Gateways,
                                                         where: str) -> None:
    cancelled_before = _requests(gateways.first, "499")
    rid, worker = _long_running(gateways, mesh)
    via = gateways.first if where == "its own gateway" else gateways.second
    status, cancelled, _ = call("POST", f"{via}/v1/responses/{rid}/cancel", {})
    assert status == 200 and cancelled["status"] == "cancelled", cancelled
    assert cancelled["id"] == rid and cancelled["error"] is None
    assert _status(gateways.first, rid) == "cancelled"
    wait_until(lambda: mesh.stats(worker).running == 0, "the worker stops the generation")
    status, again, _ = call("POST", f"{gateways.second}/v1/responses/{rid}/cancel", {})
    assert status == 200 and again["status"] == "cancelled", again  # idempotent
    wait_until(lambda: _requests(gateways.first, "499") == cancelled_before + 1,
               "the cancelled response counts as a 499 where it ran")


def test_a_delete_of_a_running_background_response_stops_it(mesh: Mesh,
                                                              gateways: Gateways) -> None:
    rid, worker = _long_running(gateways, mesh)
    status, body, _ = call("DELETE", f"{gateways.second}/v1/responses/{rid}")
    assert status == 200 and body["deleted"] is True, body
    # well before its 900 tokens would end (tens of seconds on the test workers)
    wait_until(lambda: mesh.stats(worker).running == 0, "the worker stops the generation",
               timeout=10)
    assert call("GET", f"{gateways.first}/v1/responses/{rid}")[0] == 404


def test_its_last_state_is_stored_through_a_store_outage(mesh: Mesh,
                                                         gateways: Gateways) -> None:
    """The store stops answering while the response finishes: its final put is tried again
    until the store is back, never left `in_progress`."""
    # a second or more of generation: the store is paused before it ends
    status, made, _ = call("POST", gateways.first + "/v1/responses",
                           {**LONG, "max_output_tokens": 40})
    assert status == 200, made
    seen = gateways.log.read_text().count("the store did not answer; retrying")
    with _store_paused(gateways.store):
        wait_until(lambda: gateways.log.read_text().count("the store did not answer; "
                                                          "retrying") > seen,
                   "the final put is retried")
    wait_until(lambda: _status(gateways.first, made["id"]) != "in_progress",
               "the response is stored finished")
    assert _status(gateways.first, made["id"]) in ("completed", "incomplete")


def test_a_create_with_the_store_down_waits_once(gateways: Gateways) -> None:
    """503 after one `store_timeout` (2 s): no second put for a record never made."""
    with _store_paused(gateways.store):
        began = time.monotonic()
        status, body, _ = call("POST", gateways.first + "/v1/responses",
                               {**SHORT, "background": True})
        waited = time.monotonic() - began
    assert status == 503 and body["error"]["code"] == "store_unavailable", body
    assert waited < 3.5, waited


def test_a_background_response_fails_when_its_gateway_shuts_down(
        mesh: Mesh, gateways: Gateways, logs_dir: Path) -> None:
    child, base = start_gateway(mesh.nats_url, logs_dir, "gateway-background-3",
                                result_cache="0", grace_period="1")
    try:
        wait_until(lambda: call("GET", base + "/ready")[0] == 200, "the gateway is ready")
        status, made, _ = call("POST", base + "/v1/responses", LONG)
        assert status == 200 and made["status"] == "in_progress", made
        worker = serving_worker(mesh)
        assert child.stop(timeout=20) == 0
    finally:
        child.stop()
    status, ended, _ = call("GET", f"{gateways.first}/v1/responses/{made['id']}")
    assert status == 200 and ended["status"] == "failed", ended
    assert "shutting down" in ended["error"]["message"], ended
    wait_until(lambda: mesh.stats(worker).running == 0, "the worker stops the generation")


def test_a_streamed_background_response_streams_as_any_and_outlives_its_client(
        mesh: Mesh, gateways: Gateways) -> None:
    client = _client(gateways.first)
    events = list(client.responses.create(**SHORT, background=True, stream=True))
    assert events[0].type == "response.created" and events[0].response.background is True
    assert events[-1].type in ("response.completed", "response.incomplete")
    done = events[-1].response
    assert client.responses.retrieve(done.id).output_text == done.output_text
    # a client that leaves mid-way stops nothing: the response is stored finished
    with open_stream(gateways.first + "/v1/responses", LONG | {"max_output_tokens": 60}) as resp:
        rid = json.loads(next(sse_events(resp)))["response"]["id"]
    wait_until(lambda: _status(gateways.first, rid) != "in_progress", "it finishes")
    assert _status(gateways.first, rid) == "incomplete"  # cut at its 60 tokens, not failed


def test_a_streamed_background_response_cancelled_ends_its_stream(
        mesh: Mesh, gateways: Gateways) -> None:
    with open_stream(gateways.first + "/v1/responses", LONG) as resp:
        events = sse_events(resp)
        rid = json.loads(next(events))["response"]["id"]
        status, cancelled, _ = call("POST", f"{gateways.second}/v1/responses/{rid}/cancel", {})
        assert status == 200 and cancelled["status"] == "cancelled", cancelled
        rest = [json.loads(e)["type"] for e in events]  # the stream ends, cleanly
    assert "response.completed" not in rest and "response.failed" not in rest


@pytest.mark.parametrize(("extra", "param"), [
    ({"store": False}, "background"),
    ({"background": 1}, "background"),
])
def test_what_a_background_response_cannot_be_is_400_naming_it(
        gateways: Gateways, extra: dict[str, Any], param: str) -> None:
    status, body, _ = call("POST", gateways.first + "/v1/responses",
                           {**SHORT, "background": True, **extra})
    assert status == 400 and body["error"]["param"] == param, body


def _resumed(base: str, rid: str, after: int | None = None) -> list[dict[str, Any]]:
    """The events of `GET /v1/responses/{rid}?stream=true[&starting_after=after]`."""
    query = "?stream=true" + ("" if after is None else f"&starting_after={after}")
    with urllib.request.urlopen(f"{base}/v1/responses/{rid}{query}", timeout=60) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        return [json.loads(e) for e in sse_events(resp)]


def test_a_background_stream_resumes_from_any_gateway_while_it_runs_and_after(
        gateways: Gateways) -> None:
    with open_stream(gateways.first + "/v1/responses", LONG | {"max_output_tokens": 80,
                                                               "stream": True}) as resp:
        events = sse_events(resp)
        seen = [json.loads(next(events)) for _ in range(4)]  # then the client leaves
    rid, last = seen[0]["response"]["id"], seen[-1]["sequence_number"]
    assert [e["sequence_number"] for e in seen] == [0, 1, 2, 3]
    # the official client, at the other gateway, from where the first client left
    rest = [e.model_dump() for e in _client(gateways.second).responses.retrieve(
        rid, stream=True, starting_after=last)]
    assert [e["sequence_number"] for e in rest] == list(range(last + 1, last + 1 + len(rest)))
    assert rest[-1]["type"] == "response.incomplete", rest[-1]  # cut at its 80 tokens
    stored = _client(gateways.first).responses.retrieve(rid)
    assert rest[-1]["response"]["output"][0]["content"][0]["text"] == stored.output_text
    # after it ended, from the start: every event, the same as streamed
    whole = _resumed(gateways.first, rid)
    assert [e["sequence_number"] for e in whole] == list(range(len(whole)))
    assert whole[:4] == seen and len(whole) == last + 1 + len(rest)
    assert "".join(e["delta"] for e in whole if e["type"] == "response.output_text.delta") \
        == stored.output_text
    assert _resumed(gateways.second, rid, whole[-1]["sequence_number"]) == []  # has it all
    assert _resumed(gateways.second, rid, len(whole) - 3) == whole[-2:]


def test_a_resumed_stream_of_a_cancelled_response_ends_without_a_last_event(
        gateways: Gateways) -> None:
    with open_stream(gateways.first + "/v1/responses", LONG | {"stream": True}) as resp:
        rid = json.loads(next(sse_events(resp)))["response"]["id"]
    status, cancelled, _ = call("POST", f"{gateways.second}/v1/responses/{rid}/cancel", {})
    assert status == 200 and cancelled["status"] == "cancelled", cancelled
    events = _resumed(gateways.second, rid)
    assert events[0]["type"] == "response.created"
    assert not {e["type"] for e in events} & {"response.completed", "response.failed"}


def test_a_deleted_response_takes_its_event_log(gateways: Gateways, redis_url: str) -> None:
    events = list(_client(gateways.first).responses.create(**SHORT, background=True,
                                                           stream=True))
    rid = events[-1].response.id
    r = redis.Redis.from_url(redis_url)
    log_key, sizes = f"kvmesh:resp:{{t:}}:{rid}:events", "kvmesh:resp:{t:}:sizes"
    assert r.llen(log_key) == len(events) and r.hget(sizes, f"{rid}:events")
    bytes_before = int(r.get("kvmesh:resp:{t:}:bytes"))
    assert call("DELETE", f"{gateways.second}/v1/responses/{rid}")[0] == 200
    assert not r.exists(log_key) and r.hget(sizes, f"{rid}:events") is None
    assert int(r.get("kvmesh:resp:{t:}:bytes")) < bytes_before


@pytest.mark.parametrize(("query", "param"), [
    ("?stream=yes", "stream"),
    ("?starting_after=3", "starting_after"),
    ("?stream=true&starting_after=-1", "starting_after"),
    ("?stream=true&include_obfuscation=true", "include_obfuscation"),
    ("?stream=true&include=message.output_text.logprobs", "include"),
    ("?stream=true&starting_after=%C2%B2", "starting_after"),  # a digit to str.isdigit
    ("?stream=true&starting_after=18446744073709551616", "starting_after"),
    ("?stream=true&stream=false", "stream"),
])
def test_what_a_resume_cannot_be_is_400_naming_it(gateways: Gateways, query: str,
                                                  param: str) -> None:
    made = _client(gateways.first).responses.create(**SHORT, background=True)
    status, body, _ = call("GET", f"{gateways.first}/v1/responses/{made.id}{query}")
    assert status == 400 and body["error"]["param"] == param, body


@pytest.mark.parametrize("extra", [{"background": True}, {"stream": True}])
def test_only_a_background_stream_can_be_streamed_again(gateways: Gateways,
                                                        extra: dict[str, Any]) -> None:
    """A background response made without `stream`, or a streamed one made in the
    foreground, logged no events: 400 naming `stream`."""
    if extra.get("stream"):
        with open_stream(gateways.first + "/v1/responses", SHORT) as resp:
            rid = json.loads(next(sse_events(resp)))["response"]["id"]
            list(sse_events(resp))
    else:
        status, made, _ = call("POST", gateways.first + "/v1/responses", {**SHORT, **extra})
        assert status == 200, made
        rid = made["id"]
    wait_until(lambda: _status(gateways.first, rid) != "in_progress", "it finishes")
    status, body, _ = call("GET", f"{gateways.first}/v1/responses/{rid}?stream=true")
    assert status == 400 and body["error"]["param"] == "stream", body


def test_a_resumed_stream_whose_gateway_crashed_ends_with_response_failed(
        mesh: Mesh, gateways: Gateways, logs_dir: Path, redis_url: str) -> None:
    """The log of a gateway killed mid-stream has no last event: a reader (at another gateway)
    gets what was logged, then, once that gateway is known gone, `response.failed` from the
    record."""
    gw, url = start_gateway(mesh.nats_url, logs_dir, "gateway-background-doomed",
                            result_cache="0")
    try:
        wait_until(lambda: call("GET", url + "/ready")[0] == 200, "the gateway is ready")
        with open_stream(url + "/v1/responses", LONG | {"stream": True}) as resp:
            events = sse_events(resp)
            rid = json.loads(next(events))["response"]["id"]
            wait_until(lambda: len(_resumed_now(gateways.second, rid)) > 4, "events are logged")
            gw.stop(timeout=0, sig=signal.SIGKILL)
    finally:
        gw.stop(timeout=0, sig=signal.SIGKILL)
    events = _resumed(gateways.second, rid)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.failed", events[-1]
    assert "gateway" in events[-1]["response"]["error"]["message"]
    assert _status(gateways.first, rid) == "failed"
    # stored failed for the time it had left, not for a new store TTL
    left = redis.Redis.from_url(redis_url).pttl(f"kvmesh:resp:{{t:}}:{rid}")
    assert 0 < left < 30 * 86400 * 1000 - 5000, left


def _resumed_now(base: str, rid: str) -> list[str]:
    """The events logged so far, without waiting for the rest: the first page's lines."""
    with urllib.request.urlopen(f"{base}/v1/responses/{rid}?stream=true", timeout=60) as resp:
        seen = []
        for raw in resp:
            if raw.startswith(b"data: "):
                seen.append(raw.decode())
            if len(seen) > 4:
                break
        return seen


def test_a_store_outage_mid_stream_leaves_the_log_whole(gateways: Gateways) -> None:
    """The store paused for 3 s (longer than `store_timeout`) while a background stream runs:
    its appends are tried again, and the log ends as the live stream did."""
    with open_stream(gateways.first + "/v1/responses", LONG | {"max_output_tokens": 60,
                                                               "stream": True}) as resp:
        events = sse_events(resp)
        live = [json.loads(next(events)) for _ in range(5)]
        with _store_paused(gateways.store):
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                live.append(json.loads(next(events)))
        live += [json.loads(e) for e in events]
    assert live[-1]["type"] == "response.incomplete", live[-1]
    assert _resumed(gateways.second, live[0]["response"]["id"]) == live


def test_a_resumed_stream_reads_the_log_when_the_store_tells_of_events(
        mesh: Mesh, gateways: Gateways) -> None:
    """A reader waits on the store's notices (`responses_events_added`) and reads at least
    every `POLL_S` (0.5 s), where it used to read every 50 ms: over 2 s of a log with nothing
    new it reads a handful of times, and an event logged then reaches it."""
    asyncio.run(_notices_scenario(mesh.nats_url, gateways.second))


def _frame(kind: str, seq: int) -> bytes:
    return f'event: {kind}\ndata: {{"type": "{kind}", "sequence_number": {seq}}}\n\n'.encode()


async def _notices_scenario(nats_url: str, base: str) -> None:
    rid = "resp_" + uuid.uuid4().hex
    nc = await nats.connect(nats_url)
    reads: list[float] = []

    async def on_read(msg: nats.aio.msg.Msg) -> None:  # a copy of each read; the store answers
        if wire.decode(msg.data, ResponseEventsGet).id == rid:
            reads.append(time.monotonic())

    async def append(first: int, frame: bytes) -> None:
        put = ResponseEventsPut("", rid, first, [frame])
        wire.decode((await nc.request(wire.RESPONSES_EVENTS_PUT, wire.encode(put), 10)).data,
                    ResponseAck)

    told: list[bytes] = []

    async def on_told(msg: nats.aio.msg.Msg) -> None:
        told.append(msg.data)

    try:
        await nc.subscribe(wire.RESPONSES_EVENTS_GET, cb=on_read)
        await nc.subscribe(wire.responses_events_added(rid), cb=on_told)
        record = StoredResponse(rid, int(time.time()), "in_progress", "{}", "[]", [],
                                logged=True)  # no gateway named: never taken for orphaned
        await nc.request(wire.RESPONSES_PUT, wire.encode(ResponsePut("", record)), 10)
        await append(0, _frame("response.created", 0))
        async with aiohttp.ClientSession() as http, \
                http.get(f"{base}/v1/responses/{rid}?stream=true") as resp:
            lines = resp.content
            assert b"response.created" in await asyncio.wait_for(lines.readline(), 30)
            while not reads:  # the reader's first read is under way
                await asyncio.sleep(0.01)
            await asyncio.sleep(2)
            idle = len(reads)
            assert idle <= 8, f"{idle} reads in 2 s of a log with nothing new"
            await append(1, _frame("response.completed", 1))
            rest = await asyncio.wait_for(resp.read(), 30)
        assert b"response.completed" in rest
        assert len(told) == 2  # each append landed was told
    finally:
        await nc.close()


def test_a_resumed_stream_reads_through_a_short_store_outage(gateways: Gateways) -> None:
    """The store paused for 3 s (its reads answer 503 after `store_timeout`) while a reader
    follows a running background stream: the reader reads on once it is back, and gets every
    event and the last, no `error` (it used to end at the first 503)."""
    with open_stream(gateways.first + "/v1/responses", LONG | {"max_output_tokens": 200,
                                                               "stream": True}) as resp:
        rid = json.loads(next(sse_events(resp)))["response"]["id"]  # then the client leaves
    events: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: events.extend(_resumed(gateways.second, rid)))
    reader.start()
    wait_until(lambda: len(_resumed_now(gateways.first, rid)) > 4, "events are logged")
    with _store_paused(gateways.store):
        time.sleep(3)
    reader.join(120)
    assert not reader.is_alive()
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "error" not in {e["type"] for e in events}
    assert events[-1]["type"] in ("response.completed", "response.incomplete"), events[-1]
