"""OpenAI's Responses API through the official client, on the session mesh's real workers.

The module adds to the session mesh a cache actor (the responses store, on the session's
Redis), an auth actor and a gateway with auth on, so two tenants with their own keys can
call it. The gateway's result cache is off, so a streamed answer is generated again, not
replayed. Tests that restart or break a part restore it, or run last.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import redis
from openai import OpenAI
from pydantic import BaseModel

from kvmesh.cli import procs
from tests.integration.conftest import MODEL, Mesh, start_gateway
from tests.integration.helpers import call, open_stream, sse_events, wait_until

ADMIN_KEY = "admin-" + uuid.uuid4().hex
ORDER = ["response.created", "response.in_progress", "response.output_item.added",
         "response.content_part.added"]
CLOSING = ["response.output_text.done", "response.content_part.done",
           "response.output_item.done"]


@dataclass
class ResponsesMesh:
    mesh: Mesh
    redis_url: str
    logs: Path
    base: str = ""
    gateway: procs.Child | None = None
    store: procs.Child | None = None
    keys: dict[str, str] = field(default_factory=dict)  # tenant -> key
    children: list[procs.Child] = field(default_factory=list)

    def client(self, tenant: str = "a") -> OpenAI:
        return OpenAI(base_url=self.base + "/v1", api_key=self.keys[tenant], max_retries=0,
                      timeout=60)

    def start_gateway(self) -> None:
        self.gateway, self.base = start_gateway(
            self.mesh.nats_url, self.logs, "gateway-responses", auth="1", admin_key=ADMIN_KEY,
            result_cache="0")
        wait_until(lambda: call("GET", self.base + "/ready")[0] == 200, "gateway ready")

    def restart_gateway(self) -> None:
        assert self.gateway is not None
        self.gateway.stop()
        self.start_gateway()

    def start_store(self, redis_url: str | None = None, **env: str) -> None:
        self.store = procs.start("cache-responses", procs.service_argv("cache"), env={
            "KVMESH_NATS_URL": self.mesh.nats_url, "KVMESH_CACHE_METRICS_PORT": "0",
            "KVMESH_CACHE_REDIS_URL": redis_url or self.redis_url,
            **{f"KVMESH_CACHE_{k.upper()}": v for k, v in env.items()}},
            log=open(self.logs / "cache-responses.log", "ab"))  # noqa: SIM115
        self.children.append(self.store)



@pytest.fixture(scope="module")
def rmesh(mesh: Mesh, redis_url: str, logs_dir: Path) -> Iterator[ResponsesMesh]:
    rm = ResponsesMesh(mesh, redis_url, logs_dir)
    rm.children.append(procs.start("auth-responses", procs.service_argv("auth"), env={
        "KVMESH_NATS_URL": mesh.nats_url, "KVMESH_REDIS_URL": redis_url,
        "KVMESH_AUTH_METRICS_PORT": "0"}, log=open(logs_dir / "auth-responses.log", "ab")))  # noqa: SIM115
    rm.start_store()
    rm.start_gateway()
    try:
        wait_until(lambda: call("GET", rm.base + "/admin/tenants", key=ADMIN_KEY)[0] == 200, "auth")
        for tenant in ("a", "b"):
            name = f"resp-{tenant}-{uuid.uuid4().hex[:6]}"
            assert call("POST", rm.base + "/admin/tenants", {"name": name}, ADMIN_KEY)[0] == 200
            status, body, _ = call("POST", rm.base + "/admin/keys", {"tenant": name}, ADMIN_KEY)
            assert status == 201, body
            rm.keys[tenant] = body["key"]
        yield rm
    finally:
        for child in [*rm.children, rm.gateway]:
            if child is not None:
                child.stop()


def create(client: OpenAI, text: str, **extra: Any) -> Any:
    return client.responses.create(model=MODEL, input=text, temperature=0,
                                   **{"max_output_tokens": 16, **extra})


def test_create_retrieve_and_list_input_items(rmesh: ResponsesMesh) -> None:
    client = rmesh.client()
    resp = create(client, "Name a colour.", instructions="Answer in one word.",
                  metadata={"run": "1"})
    assert resp.id.startswith("resp_") and resp.object == "response"
    assert resp.status in ("completed", "incomplete") and resp.output_text
    assert resp.output[0].type == "message" and resp.output[0].content[0].type == "output_text"
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens > 0
    assert resp.store and resp.metadata == {"run": "1"} and resp.instructions
    got = client.responses.retrieve(resp.id)
    assert got.id == resp.id and got.output_text == resp.output_text and got.status == resp.status
    items = client.responses.input_items.list(resp.id)
    assert [(i.role, i.content[0].text) for i in items.data] == [("user", "Name a colour.")]


def test_streamed_events_come_in_order_and_match_the_plain_answer(rmesh: ResponsesMesh) -> None:
    client = rmesh.client()
    plain = create(client, "Count to five.", store=False)
    events = list(create(client, "Count to five.", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ORDER and kinds[-4:-1] == CLOSING, kinds
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert set(kinds[4:-4]) == {"response.output_text.delta"} and len(kinds) > 8
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == plain.output_text == events[-1].response.output_text
    assert events[-1].response.usage.output_tokens == plain.usage.output_tokens
    assert client.responses.retrieve(events[0].response.id).output_text == text
    # the client's stream helper wants `response.completed`: an answer that ends by itself
    # (a schema's grammar ends it), parsed into the schema's model
    with client.responses.stream(model=MODEL, input="A pet?", temperature=0, text_format=Pet,
                                 max_output_tokens=64, store=False) as stream:
        final = stream.get_final_response()
    assert final.status == "completed" and isinstance(final.output_parsed, Pet)


def test_previous_response_id_continues_across_a_gateway_restart(
        rmesh: ResponsesMesh) -> None:
    first = create(rmesh.client(), "My name is Ada. Remember it.")
    rmesh.restart_gateway()
    client = rmesh.client()  # the new gateway, at a new address
    alone = create(client, "What is my name?", store=False)
    again = create(client, "What is my name?", previous_response_id=first.id)
    assert again.previous_response_id == first.id
    # the stored turn (its input and output) is in the prompt: exactly as long as asking
    # with that history written out by hand
    by_hand = client.responses.create(model=MODEL, temperature=0, max_output_tokens=16,
                                      store=False, input=[
        {"role": "user", "content": "My name is Ada. Remember it."},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "What is my name?"}])
    assert again.usage.input_tokens == by_hand.usage.input_tokens > alone.usage.input_tokens
    assert again.output_text == by_hand.output_text
    third = create(client, "And again?", previous_response_id=again.id)
    assert third.usage.input_tokens > again.usage.input_tokens + again.usage.output_tokens
    assert client.responses.retrieve(first.id).output_text == first.output_text


def test_the_echoed_max_output_tokens_is_the_limit_applied(rmesh: ResponsesMesh) -> None:
    """A tenant's `max_tokens` cap given to a request without `max_output_tokens`, or lowered
    onto one over it (`clamp_max_tokens`), is what the answer echoes beside the reason
    `max_output_tokens` that cut it."""
    for clamp, extra in ((False, {}), (True, {"max_output_tokens": 50})):
        name = f"resp-cap-{uuid.uuid4().hex[:6]}"
        assert call("POST", rmesh.base + "/admin/tenants", {
            "name": name, "max_tokens": 6, "clamp_max_tokens": clamp}, ADMIN_KEY)[0] == 200
        status, body, _ = call("POST", rmesh.base + "/admin/keys", {"tenant": name}, ADMIN_KEY)
        assert status == 201, body
        capped = OpenAI(base_url=rmesh.base + "/v1", api_key=body["key"], max_retries=0)
        resp = capped.responses.create(model=MODEL, input="Tell a long story.", **extra)
        assert resp.status == "incomplete" and resp.usage.output_tokens == 6, resp
        assert resp.max_output_tokens == 6, resp.max_output_tokens


def test_tenants_cannot_read_each_others_responses(rmesh: ResponsesMesh) -> None:
    a, b = rmesh.client("a"), rmesh.client("b")
    resp = create(a, "A secret of tenant a.")
    with pytest.raises(openai.NotFoundError):
        b.responses.retrieve(resp.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.input_items.list(resp.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.delete(resp.id)
    with pytest.raises(openai.BadRequestError) as err:
        create(b, "Go on.", previous_response_id=resp.id)
    assert err.value.body["param"] == "previous_response_id"
    assert a.responses.retrieve(resp.id).output_text == resp.output_text


def test_store_false_is_not_retrievable_and_delete_removes(rmesh: ResponsesMesh) -> None:
    client = rmesh.client()
    unstored = create(client, "Hello.", store=False)
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    stored = create(client, "Hello.")
    client.responses.delete(stored.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(stored.id)
    status, body, _ = call("DELETE", f"{rmesh.base}/v1/responses/{stored.id}",
                           key=rmesh.keys["a"])
    assert status == 404 and body["error"]["code"] == "response_not_found"


@pytest.mark.parametrize(("extra", "param"), [
    ({"background": True, "store": False}, "background"),
    ({"include": ["reasoning.encrypted_content"]}, "include[0]"),
    ({"top_logprobs": 2}, "top_logprobs"),  # without include, it would change nothing
    ({"include": ["message.output_text.logprobs"], "top_logprobs": 21}, "top_logprobs"),
    ({"include": ["message.output_text.logprobs"],
      "tools": [{"type": "function", "name": "f"}]}, "include"),
    ({"reasoning": {"effort": "low"}}, "reasoning"),
    ({"truncation": "middle"}, "truncation"),
    ({"no_such_field": 1}, "no_such_field"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "nope"}}}},
     "text.format.schema"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"max_output_tokens": 10**8}, "max_output_tokens"),  # the router's context check
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input[0].content[0]"),
    ({"previous_response_id": "resp_" + "0" * 32}, "previous_response_id"),
    ({"store": "yes"}, "store"),
])
def test_unsupported_or_bad_fields_are_400_naming_them(rmesh: ResponsesMesh,
                                                       extra: dict[str, Any],
                                                       param: str) -> None:
    body = {"model": MODEL, "input": "Hi", **extra}
    status, got, _ = call("POST", rmesh.base + "/v1/responses", body, rmesh.keys["a"])
    assert status == 400 and got["error"]["param"] == param, got


def test_function_tools_answer_function_call_items(rmesh: ResponsesMesh) -> None:
    client = rmesh.client()
    tools = [{"type": "function", "name": "get_weather", "description": "Weather of a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                             "required": ["city"]}}]
    resp = client.responses.create(model=MODEL, input="Weather in Paris?", tools=tools,
                                   tool_choice={"type": "function", "name": "get_weather"},
                                   temperature=0, max_output_tokens=64)
    (fc,) = [o for o in resp.output if o.type == "function_call"]
    assert fc.name == "get_weather" and "city" in json.loads(fc.arguments)
    follow = client.responses.create(model=MODEL, previous_response_id=resp.id, tools=tools,
                                     temperature=0, max_output_tokens=16, input=[
        {"type": "function_call_output", "call_id": fc.call_id, "output": "sunny, 21 C"}])
    assert follow.status in ("completed", "incomplete")
    assert follow.usage.input_tokens > resp.usage.input_tokens


def test_logprobs_come_with_the_text_streamed_and_stored(rmesh: ResponsesMesh) -> None:
    client = rmesh.client()
    asked = {"include": ["message.output_text.logprobs"], "top_logprobs": 3}
    resp = create(client, "Name a fruit.", **asked)
    part = resp.output[0].content[0]
    assert "".join(lp.token for lp in part.logprobs) == part.text  # one per token, in order
    assert len(part.logprobs) == resp.usage.output_tokens
    assert b"".join(bytes(lp.bytes) for lp in part.logprobs).decode() == part.text
    for lp in part.logprobs:
        assert lp.logprob <= 0 and len(lp.top_logprobs) == 3
        assert lp.top_logprobs[0].logprob >= lp.logprob  # greedy: the best one was taken
    assert resp.top_logprobs == 3
    assert client.responses.retrieve(resp.id).output[0].content[0].logprobs == part.logprobs
    events = list(create(client, "Name a fruit.", stream=True, **asked))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert [lp.token for e in deltas for lp in e.logprobs] == [lp.token for lp in part.logprobs]
    assert all("".join(lp.token for lp in e.logprobs) == e.delta for e in deltas)
    (done,) = [e for e in events if e.type == "response.output_text.done"]
    assert [lp.logprob for lp in done.logprobs] == pytest.approx(
        [lp.logprob for lp in part.logprobs], abs=1e-4)
    final = events[-1].response.output[0].content[0].logprobs
    assert [(lp.token, lp.logprob) for lp in final] == [
        (lp.token, lp.logprob) for lp in done.logprobs]
    assert create(client, "Name a fruit.").output[0].content[0].logprobs == []  # not asked


def test_truncation_auto_drops_the_oldest_turns_to_fit(rmesh: ResponsesMesh) -> None:
    client = rmesh.client()
    history = []
    for i in range(6):  # ~1,500 tokens: over the test workers' 1,024
        history += [{"role": "user", "content": f"Tell me about topic {i}. " + "word " * 200},
                    {"role": "assistant", "content": f"Topic {i} is fine."}]
    turn = [*history, {"role": "user", "content": "Say hi."}]
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input=turn, max_output_tokens=8, store=False)
    assert err.value.body["code"] == "context_length_exceeded"
    resp = client.responses.create(model=MODEL, input=turn, max_output_tokens=8,
                                   instructions="Be brief.", truncation="auto")
    assert resp.truncation == "auto" and resp.status in ("completed", "incomplete")
    assert 200 < resp.usage.input_tokens <= 1024 - 8  # some turns kept, the rest dropped
    assert len(client.responses.input_items.list(resp.id).data) == len(turn)  # stored whole


class Pet(BaseModel):
    name: str
    age: int


def test_text_format_gives_structured_output(rmesh: ResponsesMesh) -> None:
    parsed = rmesh.client().responses.parse(model=MODEL, input="A pet?", text_format=Pet,
                                            temperature=0, max_output_tokens=48)
    assert isinstance(parsed.output_parsed, Pet)


def test_deleting_a_tenant_revokes_its_keys_and_deletes_its_responses(
        rmesh: ResponsesMesh, redis_url: str) -> None:
    name = "resp-del-" + uuid.uuid4().hex[:6]
    assert call("POST", rmesh.base + "/admin/tenants", {"name": name}, ADMIN_KEY)[0] == 200
    keys = [call("POST", rmesh.base + "/admin/keys", {"tenant": name}, ADMIN_KEY)[1]["key"]
            for _ in range(2)]
    client = OpenAI(base_url=rmesh.base + "/v1", api_key=keys[0], max_retries=0, timeout=60)
    first = create(client, "Hi.")
    create(client, "Bye.", previous_response_id=first.id)
    logged = list(create(client, "Go.", background=True, stream=True))  # it logs its events
    assert logged[-1].type in ("response.completed", "response.incomplete")
    kept = create(rmesh.client("b"), "Keep me.")
    status, body, _ = call("DELETE", f"{rmesh.base}/admin/tenants/{name}", key=rmesh.keys["a"])
    assert status == 403  # an admin route

    status, body, _ = call("DELETE", f"{rmesh.base}/admin/tenants/{name}", key=ADMIN_KEY)
    assert status == 200 and body == {"name": name, "deleted": True, "keys_revoked": 2,
                                      "responses_deleted": 3, "conversations_deleted": 0}
    for key in keys:
        wait_until(lambda k=key: call("GET", rmesh.base + "/v1/models", key=k)[0] == 401,
                   "the deleted tenant's keys refused", timeout=5)
    assert redis.Redis.from_url(redis_url).keys(f"kvmesh:resp:{{t:{name}}}:*") == []
    assert rmesh.client("b").responses.retrieve(kept.id).id == kept.id  # another tenant's stay
    # the name taken again is a new tenant: nothing of the old one is reachable
    assert call("POST", rmesh.base + "/admin/tenants", {"name": name}, ADMIN_KEY)[0] == 200
    new_key = call("POST", rmesh.base + "/admin/keys", {"tenant": name}, ADMIN_KEY)[1]["key"]
    assert call("GET", f"{rmesh.base}/v1/responses/{first.id}", key=new_key)[0] == 404
    assert call("DELETE", f"{rmesh.base}/admin/tenants/{name}", key=ADMIN_KEY)[1][
        "keys_revoked"] == 1
    status, body, _ = call("DELETE", f"{rmesh.base}/admin/tenants/{name}", key=ADMIN_KEY)
    assert status == 404 and body["error"]["code"] == "tenant_not_found"


def test_tenant_ttl_expires_and_tenant_cap_evicts_the_oldest(rmesh: ResponsesMesh) -> None:
    """A store whose tenants may keep 6 KB each, and a tenant whose responses live 3 s."""
    assert rmesh.store is not None
    rmesh.store.stop()
    rmesh.children.remove(rmesh.store)
    rmesh.start_store(responses_tenant_bytes="6000")
    name = "resp-ttl-" + uuid.uuid4().hex[:6]
    assert call("POST", rmesh.base + "/admin/tenants", {"name": name, "responses_ttl": 3},
                ADMIN_KEY)[0] == 200
    rmesh.keys["ttl"] = call("POST", rmesh.base + "/admin/keys", {"tenant": name},
                             ADMIN_KEY)[1]["key"]
    client = rmesh.client("ttl")
    wait_until(lambda: call("GET", rmesh.base + "/v1/responses/resp_" + "0" * 32,
                       key=rmesh.keys["ttl"])[0] == 404, "the new store answers")
    short = create(client, "Hi.")
    assert client.responses.retrieve(short.id).id == short.id

    def gone() -> bool:
        try:
            client.responses.retrieve(short.id)
            return False
        except openai.NotFoundError:
            return True
    wait_until(gone, "the tenant's 3 s TTL")

    a = rmesh.client("a")
    pad = "word " * 300  # each stored response holds its input twice: about 3.5 KB
    first = list(create(a, pad + "One.", background=True, stream=True))[-1].response

    def logged() -> list[Any]:  # its stream's event log
        return redis.Redis.from_url(rmesh.redis_url).keys(f"kvmesh:resp:*:{first.id}:events")
    assert logged()
    second = create(a, pad + "Two.")
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(first.id)  # evicted to make room: the oldest goes first
    assert not logged()  # and its log with it
    assert a.responses.retrieve(second.id).id == second.id


def test_a_stream_too_large_to_store_is_failed_not_in_progress(rmesh: ResponsesMesh) -> None:
    """A store that keeps 8 KB a response, an answer of 120 tokens with their logprobs: the
    stream ends with `error` and `response.failed`, its numbers without a gap; the record
    reads `failed` (without its output), not `in_progress` for good; a background stream's
    resume ends with that same last event, numbered as it was streamed."""
    assert rmesh.store is not None
    rmesh.store.stop()
    rmesh.children.remove(rmesh.store)
    rmesh.start_store(responses_max_bytes="8000")
    key = rmesh.keys["a"]
    wait_until(lambda: call("GET", rmesh.base + "/v1/responses/resp_" + "0" * 32,
                            key=key)[0] == 404, "the new store answers")
    body = {"model": MODEL, "input": "Count from 1 to 200.", "max_output_tokens": 120,
            "temperature": 0, "top_logprobs": 5, "include": ["message.output_text.logprobs"]}
    for background in (False, True):
        with open_stream(rmesh.base + "/v1/responses", {**body, "background": background},
                         key=key) as resp:
            events = [json.loads(e) for e in sse_events(resp)]
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        assert [e["type"] for e in events[-2:]] == ["error", "response.failed"], events[-2:]
        rid = events[0]["response"]["id"]
        status, stored, _ = call("GET", f"{rmesh.base}/v1/responses/{rid}", key=key)
        assert status == 200 and stored["status"] == "failed" and stored["output"] == []
    resumed = _resumed(rmesh.base, rid, key)
    assert resumed[-1]["type"] == "response.failed"
    assert resumed[-1]["sequence_number"] == events[-1]["sequence_number"]
    assert resumed[:-1] == events[:len(resumed) - 1]  # the log stopped at its own cap
    assert _resumed(rmesh.base, rid, key, events[-1]["sequence_number"]) == []


def _resumed(base: str, rid: str, key: str, after: int | None = None) -> list[dict[str, Any]]:
    query = "?stream=true" + ("" if after is None else f"&starting_after={after}")
    req = urllib.request.Request(f"{base}/v1/responses/{rid}{query}",
                                 headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return [json.loads(e) for e in sse_events(resp)]


def test_store_unreachable_is_503_naming_the_store(rmesh: ResponsesMesh) -> None:
    """Last: it leaves the store broken. No store actor, then one whose Redis is gone: both
    refuse `store: true` at once with 503; `store: false` is served."""
    assert rmesh.store is not None
    rmesh.store.stop()
    rmesh.children.remove(rmesh.store)
    dead_redis = f"redis://127.0.0.1:{procs.free_port()}/0"
    for phase in ("no store", "no redis"):
        if phase == "no redis":
            rmesh.start_store(dead_redis)
            wait_until(lambda: call("GET", rmesh.base + "/v1/responses/resp_" + "0" * 32,
                               key=rmesh.keys["a"])[1]["error"]["message"].find("database")
                       > 0, "the store without redis answers")
        started = time.monotonic()
        status, body, headers = call("POST", rmesh.base + "/v1/responses",
                                     {"model": MODEL, "input": "Hi", "max_output_tokens": 4},
                                     rmesh.keys["a"])
        assert status == 503 and body["error"]["code"] == "store_unavailable", (phase, body)
        assert body["error"]["param"] == "store" and "Retry-After" in headers
        assert "127.0.0.1" not in body["error"]["message"]  # Redis's address stays inside
        assert time.monotonic() - started < 10
        resp = create(rmesh.client(), "Hi", store=False)
        assert resp.output_text
