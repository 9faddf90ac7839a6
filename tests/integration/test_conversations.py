"""OpenAI's Conversations API through the official client, and `POST /v1/responses` with
`conversation`, on the session mesh's real workers.

The module adds to the session mesh an auth actor, a cache actor (the conversations store, on
the session's Redis; at most `MAX_ITEMS` items a conversation) and a gateway with auth on and
the result cache off, so two tenants with their own keys can call it and every answer is
generated. The last test breaks the store.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import redis
from openai import OpenAI
from openai.types.conversations import Message

from kvmesh.cli import procs
from tests.integration.conftest import MODEL, Mesh, start_gateway
from tests.integration.helpers import call, wait_until

ADMIN_KEY = "admin-" + uuid.uuid4().hex
MAX_ITEMS = 30
NO_SUCH = "conv_" + "0" * 32


@dataclass
class ConversationsMesh:
    mesh: Mesh
    redis_url: str
    logs: Path
    base: str = ""
    store: procs.Child | None = None
    keys: dict[str, str] = field(default_factory=dict)  # tenant -> key
    names: dict[str, str] = field(default_factory=dict)  # tenant -> its name
    children: list[procs.Child] = field(default_factory=list)

    def client(self, tenant: str = "a") -> OpenAI:
        return OpenAI(base_url=self.base + "/v1", api_key=self.keys[tenant], max_retries=0,
                      timeout=60)

    def start_store(self, redis_url: str, **env: str) -> None:
        self.store = procs.start("cache-conversations", procs.service_argv("cache"), env={
            "KVMESH_NATS_URL": self.mesh.nats_url, "KVMESH_CACHE_METRICS_PORT": "0",
            "KVMESH_CACHE_REDIS_URL": redis_url,
            "KVMESH_CACHE_CONVERSATIONS_MAX_ITEMS": str(MAX_ITEMS),
            **{f"KVMESH_CACHE_{k.upper()}": v for k, v in env.items()}},
            log=open(self.logs / "cache-conversations.log", "ab"))  # noqa: SIM115
        self.children.append(self.store)

    def restart_store(self, redis_url: str, **env: str) -> None:
        assert self.store is not None
        self.store.stop()
        self.children.remove(self.store)
        self.start_store(redis_url, **env)

    def tenant(self, tenant: str) -> None:
        name = self.names[tenant] = f"conv-{tenant}-{uuid.uuid4().hex[:6]}"
        assert call("POST", self.base + "/admin/tenants", {"name": name}, ADMIN_KEY)[0] == 200
        status, body, _ = call("POST", self.base + "/admin/keys", {"tenant": name}, ADMIN_KEY)
        assert status == 201, body
        self.keys[tenant] = body["key"]


@pytest.fixture(scope="module")
def cmesh(mesh: Mesh, redis_url: str, logs_dir: Path) -> Iterator[ConversationsMesh]:
    with conversations_mesh(mesh, redis_url, logs_dir) as cm:
        yield cm


@contextlib.contextmanager
def conversations_mesh(mesh: Mesh, redis_url: str, logs_dir: Path
                       ) -> Iterator[ConversationsMesh]:
    """The module's parts beside the session mesh, two tenants made (see the module doc)."""
    cm = ConversationsMesh(mesh, redis_url, logs_dir)
    cm.children.append(procs.start("auth-conversations", procs.service_argv("auth"), env={
        "KVMESH_NATS_URL": mesh.nats_url, "KVMESH_REDIS_URL": redis_url,
        "KVMESH_AUTH_METRICS_PORT": "0"}, log=open(logs_dir / "auth-conversations.log", "ab")))  # noqa: SIM115
    cm.start_store(redis_url)
    gateway, cm.base = start_gateway(mesh.nats_url, logs_dir, "gateway-conversations", auth="1",
                                     admin_key=ADMIN_KEY, result_cache="0")
    cm.children.append(gateway)
    try:
        wait_until(lambda: call("GET", cm.base + "/ready")[0] == 200, "gateway ready")
        wait_until(lambda: call("GET", cm.base + "/admin/tenants", key=ADMIN_KEY)[0] == 200,
                   "auth")
        for tenant in ("a", "b"):
            cm.tenant(tenant)
        wait_until(lambda: call("GET", f"{cm.base}/v1/conversations/{NO_SUCH}",
                                key=cm.keys["a"])[0] == 404, "the conversations store answers")
        yield cm
    finally:
        for child in cm.children:
            child.stop()


def user(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text, **extra}


def newest(client: OpenAI, cid: str) -> str:
    """The id of the conversation's last item."""
    return client.conversations.items.list(cid, limit=1).data[0].id


def _bad(do: Any) -> dict[str, Any]:
    """The error body of a call that must be a 400."""
    with pytest.raises(openai.BadRequestError) as err:
        do()
    return err.value.body  # type: ignore[no-any-return]


def test_create_retrieve_update_and_delete_a_conversation(cmesh: ConversationsMesh) -> None:
    client = cmesh.client()
    conv = client.conversations.create(items=[user("Hello.")], metadata={"topic": "demo"})
    assert conv.id.startswith("conv_") and conv.object == "conversation"
    assert conv.metadata == {"topic": "demo"} and conv.created_at > 0
    got = client.conversations.retrieve(conv.id)
    assert (got.id, got.created_at, got.metadata) == (conv.id, conv.created_at, conv.metadata)
    updated = client.conversations.update(conv.id, metadata={"topic": "other", "k": "v"})
    assert updated.metadata == {"topic": "other", "k": "v"}
    assert client.conversations.retrieve(conv.id).metadata == {"topic": "other", "k": "v"}
    assert [i.id for i in client.conversations.items.list(conv.id)]  # its first item
    deleted = client.conversations.delete(conv.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (conv.id, "conversation.deleted",
                                                             True)
    with pytest.raises(openai.NotFoundError) as err:
        client.conversations.retrieve(conv.id)
    assert err.value.body["code"] == "conversation_not_found"
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list(conv.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.delete(conv.id)


def test_items_are_added_listed_paged_retrieved_and_deleted(cmesh: ConversationsMesh) -> None:
    client = cmesh.client()
    conv = client.conversations.create()
    assert list(client.conversations.items.list(conv.id)) == []
    first = client.conversations.items.create(conv.id, items=[
        user(f"Message {i}.") for i in range(20)])
    assert first.object == "list" and len(first.data) == 20 and not first.has_more
    assert all(i.id.startswith("msg_") and i.status == "completed" for i in first.data)
    more = client.conversations.items.create(conv.id, items=[
        {"type": "message", "role": "assistant", "id": "given_1",
         "content": [{"type": "output_text", "text": "An answer."}]},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "42"},
        user("Last.", status="incomplete")])
    assert [i.type for i in more.data] == ["message", "function_call", "function_call_output",
                                           "message"]
    assert more.data[0].id == "given_1" and more.data[1].id.startswith("fc_")
    assert more.data[3].status == "incomplete"
    ids = [i.id for i in first.data] + [i.id for i in more.data]

    page = client.conversations.items.list(conv.id)  # desc, 20 by default
    assert [i.id for i in page.data] == ids[::-1][:20] and page.has_more
    assert page.first_id == ids[-1] and page.last_id == ids[4]
    assert [i.id for i in client.conversations.items.list(conv.id, limit=7, order="asc")] == ids
    after = client.conversations.items.list(conv.id, order="asc", after=ids[21], limit=100)
    assert [i.id for i in after.data] == ids[22:] and not after.has_more
    after = client.conversations.items.list(conv.id, order="desc", after=ids[2], limit=100)
    assert [i.id for i in after.data] == [ids[1], ids[0]]

    item = client.conversations.items.retrieve("given_1", conversation_id=conv.id)
    assert isinstance(item, Message) and item.content[0].text == "An answer."  # type: ignore[union-attr]
    left = client.conversations.items.delete("given_1", conversation_id=conv.id)
    assert left.id == conv.id and left.object == "conversation"
    with pytest.raises(openai.NotFoundError) as err:
        client.conversations.items.retrieve("given_1", conversation_id=conv.id)
    assert err.value.body["code"] == "item_not_found"
    assert len(list(client.conversations.items.list(conv.id, limit=100))) == 23


def test_limits_and_bad_inputs_are_400s_naming_the_field(cmesh: ConversationsMesh) -> None:
    client = cmesh.client()
    conv = client.conversations.create()
    items = client.conversations.items
    assert _bad(lambda: items.create(conv.id, items=[user("x")] * 21))["param"] == "items"
    assert _bad(lambda: items.create(conv.id, items=[]))["param"] == "items"
    assert _bad(lambda: items.create(conv.id, items=[
        user("ok"), {"role": "robot", "content": "x"}]))["param"] == "items[1].role"
    assert _bad(lambda: items.create(conv.id, items=[{"role": "user", "content": [
        {"type": "output_text", "text": "x"}]}]))["param"] == "items[0].content[0]"
    assert _bad(lambda: items.create(conv.id, items=[user("a", id="x"), user("b", id="x")])
                )["param"] == "items[1].id"
    assert _bad(lambda: client.conversations.create(
        metadata={f"k{i}": "v" for i in range(17)}))["param"] == "metadata"
    assert _bad(lambda: client.conversations.create(metadata={"k": "v" * 513}))["param"] \
        == "metadata"
    assert _bad(lambda: client.conversations.create(extra_body={"foo": 1}))["param"] == "foo"
    assert _bad(lambda: client.conversations.update(conv.id, metadata=None, extra_body={
        "metadata": 3}))["param"] == "metadata"
    assert _bad(lambda: items.list(conv.id, include=["message.output_text.logprobs"])
                )["param"] == "include"
    for query, param in (("order=up", "order"), ("limit=0", "limit"), ("limit=101", "limit"),
                         ("after=nope", "after"), ("colour=red", "colour"),
                         ("limit=%C2%B2", "limit"), ("limit=%D9%A3", "limit")):  # "²", "٣"
        status, body, _ = call("GET", f"{cmesh.base}/v1/conversations/{conv.id}/items?{query}",
                               key=cmesh.keys["a"])
        assert status == 400 and body["error"]["param"] == param, (query, body)

    items.create(conv.id, items=[user("x", id="taken")])
    err = _bad(lambda: items.create(conv.id, items=[user("y"), user("z", id="taken")]))
    assert err["param"] == "items[1].id"
    for _ in range(MAX_ITEMS // 10 - 1):
        items.create(conv.id, items=[user("fill")] * 10)  # 1 + 20 held: 9 more fit
    err = _bad(lambda: items.create(conv.id, items=[user("over")] * 10))
    assert err["code"] == "conversation_too_long"
    assert len(list(items.list(conv.id, limit=100))) == MAX_ITEMS - 9  # all or nothing


def test_another_tenants_conversation_is_404(cmesh: ConversationsMesh) -> None:
    a, b = cmesh.client("a"), cmesh.client("b")
    conv = a.conversations.create(items=[user("A secret of tenant a.", id="secret")])
    for do in (lambda: b.conversations.retrieve(conv.id),
               lambda: b.conversations.update(conv.id, metadata={"x": "y"}),
               lambda: b.conversations.items.list(conv.id),
               lambda: b.conversations.items.create(conv.id, items=[user("Hi.")]),
               lambda: b.conversations.items.retrieve("secret", conversation_id=conv.id),
               lambda: b.conversations.items.delete("secret", conversation_id=conv.id),
               lambda: b.conversations.delete(conv.id)):
        with pytest.raises(openai.NotFoundError):
            do()
    with pytest.raises(openai.NotFoundError) as err:
        b.responses.create(model=MODEL, input="Go on.", conversation=conv.id,
                           max_output_tokens=4)
    assert err.value.body["param"] == "conversation"
    assert a.conversations.items.retrieve("secret", conversation_id=conv.id).id == "secret"
    assert a.conversations.retrieve(conv.id).metadata == {}


def test_two_turns_through_responses_see_the_first(cmesh: ConversationsMesh) -> None:
    """The second turn's prompt holds the first turn: the same prompt (and, greedy, the same
    answer) as the `previous_response_id` continuation of the first."""
    client = cmesh.client()
    conv = client.conversations.create()
    first = client.responses.create(model=MODEL, input="My name is Ada. Remember it.",
                                    conversation=conv.id, temperature=0, max_output_tokens=12)
    assert first.conversation is not None and first.conversation.id == conv.id
    assert client.responses.retrieve(first.id).conversation.id == conv.id  # type: ignore[union-attr]
    turn = list(client.conversations.items.list(conv.id, order="asc"))
    assert [(i.type, i.role) for i in turn] == [("message", "user"),  # type: ignore[union-attr]
                                                ("message", "assistant")]
    assert turn[1].id == first.output[0].id
    assert turn[1].content[0].text == first.output_text  # type: ignore[union-attr]

    second = client.responses.create(model=MODEL, input="What is my name?",
                                     conversation={"id": conv.id}, temperature=0,
                                     max_output_tokens=12)
    chained = client.responses.create(model=MODEL, input="What is my name?",
                                      previous_response_id=first.id, temperature=0,
                                      max_output_tokens=12)
    assert second.usage is not None and first.usage is not None and chained.usage is not None
    assert second.usage.input_tokens == chained.usage.input_tokens
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert second.output_text == chained.output_text
    assert len(list(client.conversations.items.list(conv.id))) == 4


def test_streamed_background_and_unstored_turns_are_appended(cmesh: ConversationsMesh) -> None:
    client = cmesh.client()
    conv = client.conversations.create()
    events = list(client.responses.create(model=MODEL, input="Hi.", conversation=conv.id,
                                          stream=True, max_output_tokens=6))
    done = events[-1].response  # type: ignore[union-attr]
    assert done.conversation.id == conv.id and done.status in ("completed", "incomplete")
    assert newest(client, conv.id) == done.output[0].id

    started = client.responses.create(model=MODEL, input="Hello again.", conversation=conv.id,
                                      background=True, max_output_tokens=6)
    assert started.status in ("queued", "in_progress")
    wait_until(lambda: client.responses.retrieve(started.id).status in ("completed",
                                                                        "incomplete"),
               "the background response finished")
    finished = client.responses.retrieve(started.id)
    wait_until(lambda: len(list(client.conversations.items.list(conv.id))) == 4,
               "the background turn appended")
    assert newest(client, conv.id) == finished.output[0].id

    unstored = client.responses.create(model=MODEL, input="Once more.", conversation=conv.id,
                                       store=False, max_output_tokens=6)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    assert newest(client, conv.id) == unstored.output[0].id


def test_refused_requests_append_nothing_and_calls_pair_over_history(
        cmesh: ConversationsMesh) -> None:
    client = cmesh.client()
    conv = client.conversations.create(items=[
        user("What is 6 times 7?"),
        {"type": "function_call", "call_id": "call_9", "name": "mul", "arguments": "{}"}])
    first = client.responses.create(model=MODEL, input="Hi.", max_output_tokens=2)
    err = _bad(lambda: client.responses.create(model=MODEL, input="Hi.", conversation=conv.id,
                                               previous_response_id=first.id))
    assert err["param"] == "conversation"
    err = _bad(lambda: client.responses.create(model=MODEL, input="Hi.", conversation=conv.id))
    assert err["param"] == "input" and "call_9" in err["message"]  # the call needs its output
    err = _bad(lambda: client.responses.create(model=MODEL, conversation=conv.id, input=[
        {"type": "function_call_output", "call_id": "call_x", "output": "42"}]))
    assert err["param"] == "input"
    taken = client.conversations.items.list(conv.id).data[0].id
    err = _bad(lambda: client.responses.create(model=MODEL, conversation=conv.id, input=[
        {"type": "function_call_output", "call_id": "call_9", "output": "42", "id": taken}]))
    assert err["param"] == "input[0].id"
    err = _bad(lambda: client.responses.create(model=MODEL, input="Hi.", conversation=3))  # type: ignore[arg-type]
    assert err["param"] == "conversation"
    with pytest.raises(openai.NotFoundError) as nf:
        client.responses.create(model=MODEL, input="Hi.", conversation=NO_SUCH)
    assert nf.value.body["param"] == "conversation"
    assert len(list(client.conversations.items.list(conv.id))) == 2
    answered = client.responses.create(model=MODEL, conversation=conv.id, max_output_tokens=4,
                                       input=[{"type": "function_call_output",
                                               "call_id": "call_9", "output": "42"}])
    assert answered.status in ("completed", "incomplete")
    assert len(list(client.conversations.items.list(conv.id))) == 4


def test_deleting_a_tenant_purges_its_conversations(cmesh: ConversationsMesh,
                                                    redis_url: str) -> None:
    cmesh.tenant("gone")
    client = cmesh.client("gone")
    convs = [client.conversations.create(items=[user("Hi.")]) for _ in range(2)]
    kept = cmesh.client("b").conversations.create()
    name = cmesh.names["gone"]
    status, body, _ = call("DELETE", f"{cmesh.base}/admin/tenants/{name}", key=ADMIN_KEY)
    assert status == 200 and body["conversations_deleted"] == 2, body
    assert redis.Redis.from_url(redis_url).keys(f"kvmesh:conv:{{t:{name}}}:*") == []
    assert cmesh.client("b").conversations.retrieve(kept.id).id == kept.id
    assert call("POST", cmesh.base + "/admin/tenants", {"name": name}, ADMIN_KEY)[0] == 200
    new_key = call("POST", cmesh.base + "/admin/keys", {"tenant": name}, ADMIN_KEY)[1]["key"]
    assert call("GET", f"{cmesh.base}/v1/conversations/{convs[0].id}", key=new_key)[0] == 404


def test_a_conversation_and_a_tenant_are_bounded_in_bytes(cmesh: ConversationsMesh) -> None:
    """A store that keeps 2,000 bytes a conversation and 3,000 a tenant: an append past the
    first is 413, and a write past the second evicts the least recently changed
    conversation of that tenant."""
    cmesh.restart_store(cmesh.redis_url, conversations_max_bytes="2000",
                        conversations_tenant_bytes="3000")
    cmesh.tenant("cap")
    client = cmesh.client("cap")
    wait_until(lambda: call("GET", f"{cmesh.base}/v1/conversations/{NO_SUCH}",
                            key=cmesh.keys["cap"])[0] == 404, "the new store answers")
    big = user("word " * 200)  # about 1,050 bytes stored
    one = client.conversations.create(items=[big])
    with pytest.raises(openai.APIStatusError) as err:
        client.conversations.items.create(one.id, items=[big])
    assert err.value.status_code == 413 and err.value.body["code"] == "conversation_too_large"
    with pytest.raises(openai.APIStatusError) as err:  # metadata past the cap names metadata
        client.conversations.update(one.id, metadata={"a": "x" * 512, "b": "y" * 512})
    assert err.value.status_code == 413 and err.value.body["param"] == "metadata"
    two = client.conversations.create(items=[big])
    client.conversations.items.create(one.id, items=[user("Still here.")])  # one is newer now
    three = client.conversations.create(items=[big])
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(two.id)
    assert client.conversations.retrieve(one.id).id == one.id
    assert client.conversations.retrieve(three.id).id == three.id


def test_an_append_sent_again_as_it_was_adds_nothing(cmesh: ConversationsMesh) -> None:
    """A 503 leaves a change unconfirmed, not undone (a paused Redis runs it on resuming), so
    an append of items the conversation holds as sent is a retry: it adds nothing."""
    client = cmesh.client()
    conv = client.conversations.create()
    items = client.conversations.items
    batch = [user("one", id="r1"), user("two", id="r2")]
    first = items.create(conv.id, items=batch)
    again = items.create(conv.id, items=batch)
    assert [i.id for i in again.data] == [i.id for i in first.data] == ["r1", "r2"]
    assert len(items.list(conv.id).data) == 2
    assert _bad(lambda: items.create(conv.id, items=[user("one", id="r1"), user("3", id="r3")])
                )["param"] == "items[0].id"  # held in part: no retry
    assert _bad(lambda: items.create(conv.id, items=[user("changed", id="r1")]))["param"] \
        == "items[0].id"
    status, body, _ = call("POST", f"{cmesh.base}/v1/conversations/{conv.id}",
                           {"metadata": {"k": "v"}}, cmesh.keys["a"])
    assert status == 200 and body["metadata"] == {"k": "v"}


def test_a_turn_is_appended_through_a_short_store_outage(cmesh: ConversationsMesh) -> None:
    """The store stops while the answer streams (`store: false`: only the append needs it)
    and comes back while the gateway retries: the turn lands once, the response completes."""
    client = cmesh.client()
    conv = client.conversations.create()
    log = cmesh.logs / "gateway-conversations.log"
    retrying = f"appending a turn to {conv.id}: the store did not answer"
    restarted = threading.Event()

    def restart_when_retrying() -> None:
        wait_until(lambda: retrying in log.read_text(), "the gateway retries the append")
        cmesh.start_store(cmesh.redis_url)
        restarted.set()

    events = client.responses.create(model=MODEL, input="Tell me a story.", stream=True,
                                     conversation=conv.id, store=False, max_output_tokens=24)
    kinds = []
    for event in events:
        kinds.append(event.type)
        if event.type == "response.output_text.delta" and kinds.count(event.type) == 1:
            assert cmesh.store is not None
            cmesh.store.stop()
            cmesh.children.remove(cmesh.store)
            threading.Thread(target=restart_when_retrying, daemon=True).start()
    assert restarted.is_set() and kinds[-1] in ("response.completed", "response.incomplete")
    turn = client.conversations.items.list(conv.id, order="asc").data
    assert [i.role for i in turn] == ["user", "assistant"]  # type: ignore[union-attr]


def test_a_turn_the_store_refuses_fails_its_response_with_that_error(
        cmesh: ConversationsMesh) -> None:
    """A background JSON response whose conversation is deleted while it runs: stored
    `failed`, with the store's refusal as its error (not a bare "did not complete")."""
    client = cmesh.client()
    conv = client.conversations.create()
    resp = client.responses.create(model=MODEL, input="Tell a long story.", background=True,
                                   conversation=conv.id, max_output_tokens=200,
                                   extra_body={"temperature": 0})
    client.conversations.delete(conv.id)
    wait_until(lambda: client.responses.retrieve(resp.id).status != "in_progress",
               "the response ends")
    ended = client.responses.retrieve(resp.id)
    assert ended.status == "failed" and ended.error is not None
    assert "conversation_not_found" in ended.error.message, ended.error


def test_a_streamed_turn_the_store_refuses_closes_its_items_then_fails(
        cmesh: ConversationsMesh) -> None:
    """The conversation deleted while its turn streams: the answer's message is closed as
    OpenAI's order has it (`output_text.done`, `content_part.done`, `output_item.done`), then
    `error` naming `conversation` and `response.failed`, numbered without a gap."""
    client = cmesh.client()
    conv = client.conversations.create()
    events = []
    with client.responses.create(model=MODEL, input="Tell a long story.", stream=True,
                                 conversation=conv.id, max_output_tokens=60,
                                 extra_body={"temperature": 0}) as stream:
        for event in stream:
            events.append(event.model_dump())
            if event.type == "response.output_text.delta" and len(events) == 5:
                client.conversations.delete(conv.id)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    types = [e["type"] for e in events]
    assert types[-5:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "error", "response.failed"], types
    assert events[-2]["code"] == "conversation_not_found", events[-2]
    assert events[-2]["param"] == "conversation", events[-2]
    assert events[-3]["item"] == events[-1]["response"]["output"][0]


def test_a_chain_from_a_response_in_a_conversation_holds_the_conversation(
        cmesh: ConversationsMesh) -> None:
    """The stored response keeps the conversation's items it was made from (OpenAI prepends
    them to its input items), so `previous_response_id` naming it sees them: a call made
    in the conversation and answered there pairs up in the chain."""
    client = cmesh.client()
    tool = {"type": "function", "name": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    conv = client.conversations.create(items=[user("My name is Ada.")])
    asked = client.responses.create(model=MODEL, input="Weather in Oslo?", conversation=conv.id,
                                    tools=[tool], tool_choice="required", temperature=0,
                                    max_output_tokens=40)
    call_id = asked.output[0].call_id  # type: ignore[union-attr]
    answered = client.responses.create(model=MODEL, conversation=conv.id, tools=[tool],
                                       input=[{"type": "function_call_output",
                                               "call_id": call_id, "output": "sunny"}],
                                       temperature=0, max_output_tokens=8)
    listed = client.responses.input_items.list(answered.id, order="asc").data
    assert listed[0].content[0].text == "My name is Ada."  # type: ignore[union-attr]
    assert listed[-1].type == "function_call_output"
    chained = client.responses.create(model=MODEL, input="What is my name?", tools=[tool],
                                      previous_response_id=answered.id, temperature=0,
                                      max_output_tokens=4)
    inside = client.responses.create(model=MODEL, input="What is my name?", tools=[tool],
                                     conversation=conv.id, temperature=0, max_output_tokens=4)
    assert chained.usage is not None and inside.usage is not None
    assert chained.usage.input_tokens == inside.usage.input_tokens
    status, body, _ = call("GET", f"{cmesh.base}/v1/responses/{answered.id}/input_items"
                           "?limit=%C2%B2", key=cmesh.keys["a"])  # "²": no int() of it
    assert status == 400 and body["error"]["param"] == "limit"


def test_changes_count_against_rpm_and_reads_do_not(cmesh: ConversationsMesh) -> None:
    """A tenant with `rpm: 3` and one slot (the security audit's made 954 conversations of
    840 KB in 25 s): three changes, then 429 for a fourth and for a stored response's
    delete, while reads go on (polling never spends the budget)."""
    cmesh.tenant("limited")
    name = cmesh.names["limited"]
    assert call("POST", cmesh.base + "/admin/tenants", {"name": name, "rpm": 3,
                                                         "max_concurrency": 1},
                ADMIN_KEY)[0] == 200
    client = cmesh.client("limited")
    conv = client.conversations.create()
    client.conversations.items.create(conv.id, items=[user("a")])
    client.conversations.update(conv.id, metadata={"k": "v"})
    for change in (lambda: client.conversations.create(),
                   lambda: client.responses.delete("resp_" + "0" * 32)):
        with pytest.raises(openai.RateLimitError):
            change()
    for _ in range(3):
        assert client.conversations.retrieve(conv.id).metadata == {"k": "v"}
        assert len(client.conversations.items.list(conv.id).data) == 1


def test_store_down_is_503(cmesh: ConversationsMesh) -> None:
    """Last: it leaves the store without its Redis."""
    client = cmesh.client()
    conv = client.conversations.create()
    cmesh.restart_store(f"redis://127.0.0.1:{procs.free_port()}/0")

    def down() -> bool:
        status, body, _ = call("GET", f"{cmesh.base}/v1/conversations/{conv.id}",
                               key=cmesh.keys["a"])
        return status == 503 and "database" in body["error"]["message"]
    wait_until(down, "the store without redis answers")
    for do in (lambda: client.conversations.create(),
               lambda: client.conversations.items.list(conv.id),
               lambda: client.responses.create(model=MODEL, input="Hi.", conversation=conv.id,
                                               max_output_tokens=2)):
        with pytest.raises(openai.InternalServerError) as err:
            do()
        assert err.value.status_code == 503 and err.value.body["code"] == "store_unavailable"
        assert "127.0.0.1" not in err.value.body["message"]
