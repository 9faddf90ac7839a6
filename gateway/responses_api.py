"""OpenAI's Responses API on the generation path, with the durable store.

Routes:
- `POST /v1/responses`: validated by gateway/responses_request.py, admitted and generated
  like a chat request (gateway/app.py), answered as a Response object or as the Responses
  event stream (gateway/responses_shape.py). With `previous_response_id` the stored chain
  (every input and output before, oldest first; not their instructions) becomes the chat
  history; a response the tenant does not hold is 400 `previous_response_not_found`, and
  calls and outputs that do not pair up over history and input are 400 `input`
  (gateway/responses_calls.py).
- With `conversation` its items are the history, and a response that finished appends its
  input and output items to it before it is answered (gateway/responses_conversation.py).
- With `store` (the default) the response is stored before it is answered: `in_progress`
  once a worker accepted it, then finished (`completed`/`incomplete`) before the answer or
  the `response.completed` event goes out, so a client that has its answer can retrieve it.
  A store that cannot be reached is 503 `store_unavailable` (param `store`) before any of
  the answer is sent (the first write, `in_progress`, is in `_respond`: after a worker
  accepted the request, so generation may have begun); one lost mid-way fails the request
  the same way (JSON) or with an `error` event (stream). A response that did not finish is
  stored as `failed`, with the error its client was told (`responses_shape.response_error`:
  OpenAI's code, kvmesh's in the message); a stream's `response.failed` is stored before it
  is sent.
- With `background` (and `store`) the answer is the response `in_progress` once a worker
  accepted it (with `stream`, the events, as without `background`, but a client that leaves
  stops nothing); the generation runs on past the HTTP request (gateway/responses_background.py)
  and stores how it ended (that last put retried through a store outage for up to
  `FINAL_PUT_S`: it is all its client will see). `POST /v1/responses/{id}/cancel` stops it at
  whichever gateway process runs it and answers the response `cancelled` (or as it finished
  first); a response not made in the background is 400 there. A DELETE of one still running
  cancels it first. A background stream logs its events, and `GET /v1/responses/{id}
  ?stream=true&starting_after=N` streams them again from any gateway process, while it runs
  and after (gateway/responses_event_log.py).
- `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}` (`{"id", "object": "response",
  "deleted": true}`), `GET /v1/responses/{id}/input_items` (`order`, `limit`, `after`): the
  caller's tenant's responses only; another tenant's id is 404, like an unknown one. A
  delete of a response still being generated sticks: the store does not let its finished
  record back in (cache/responses_store.py). An `in_progress` record names the gateway
  process generating it; should that process crash (its beats stop, `MeshClient.gateway_gone`),
  the record is read, and stored again, as `failed`, not left in progress for good.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from cache.client import ReplayStream, route_headers
from gateway import telemetry as telemetry_http
from gateway.auth_client import AUTH
from gateway.errors import ApiError, bad_field, check_query, query_int
from gateway.mesh_client import MeshClient, RequestStream
from gateway.openai_request import ParsedRequest
from gateway.openai_response import Gather, StreamShape
from gateway.responses_background import JOBS, BackgroundJobs
from gateway.responses_calls import check_calls_answered
from gateway.responses_conversation import append_turn, load_history
from gateway.responses_event_log import EventLogWriter, resume, resume_query
from gateway.responses_input_tokens import add_input_tokens_route
from gateway.responses_request import ResponsesRequest, parse_responses, renamed
from gateway.responses_shape import (
    EventStream,
    ResponseFrame,
    as_message,
    response_error,
    status_of,
)
from gateway.responses_store_client import STORE, until_answered
from gateway.sse import SseWriter, typed_event
from kvmesh.coalesce import coalesce
from kvmesh.wire import ChatMessage, Identity, StoredResponse, ToolCall

log = logging.getLogger("kvmesh.gateway.responses")
_background: set[asyncio.Future[None]] = set()
FINAL_PUT_S = 300.0  # how long a background response's last state is retried (503s)


def add_responses_routes(app: web.Application, serve: Callable[..., Any],
                         mesh: MeshClient) -> None:
    """`serve` is the generation handler of gateway/app.py, which takes our hooks."""
    jobs = app[JOBS] = BackgroundJobs(mesh, mesh.cfg.store_timeout, mesh.cfg.retry_after)
    app.on_shutdown.append(lambda app: jobs.finish())

    async def create(request: web.Request) -> web.StreamResponse:
        try:
            return await jobs.run(request, serve(request, parse_responses, load_context, _respond))
        except ApiError as err:  # the router's and the tenant cap's errors name chat fields
            raise renamed(err) from None

    app.router.add_post("/v1/responses", create)
    app.router.add_get("/v1/responses/{id}", retrieve)
    app.router.add_delete("/v1/responses/{id}", delete)
    app.router.add_get("/v1/responses/{id}/input_items", input_items)
    app.router.add_post("/v1/responses/{id}/cancel", cancel)
    add_input_tokens_route(app, mesh, load_context)


# -- create --------------------------------------------------------------------------------


async def load_context(request: web.Request, req: ParsedRequest,
                       ident: Identity | None) -> None:
    """Once `req` is admitted: its store TTL, and its history (a conversation's items or
    `previous_response_id`'s chain) before its input; 400/404 naming the field that named it."""
    assert isinstance(req, ResponsesRequest)
    req.store_ttl = ident.responses_ttl if ident is not None else 0
    if req.conversation_id is not None:
        await load_history(request, req)
    if req.previous_response_id is None:
        return
    try:
        chain = await request.app[STORE].get(req.tenant, req.previous_response_id, chain=True)
        chain = [await request.app[STORE].settled(req.tenant, rec) for rec in chain]
    except ApiError as err:
        if err.status != 404:
            raise
        raise ApiError(400, f"previous_response_id: {err.message}",
                       param="previous_response_id", code="previous_response_not_found") from None
    for rec in chain:
        if rec.status not in ("completed", "incomplete"):
            raise bad_field("previous_response_id", f"{rec.id} is {rec.status}; only a "
                            "finished response can be continued")
    req.with_history([m for rec in chain for m in rec.messages])
    check_calls_answered(req.messages)  # the last response's calls need their outputs here


async def _respond(request: web.Request, req: ParsedRequest, rid: str,
                   stream: RequestStream | ReplayStream,
                   headers: dict[str, str]) -> web.StreamResponse:
    assert isinstance(req, ResponsesRequest)
    frame = ResponseFrame(rid, req)
    created = settled = False  # the store answered its record; holds its last state
    try:
        if req.store:
            await _store(request, frame, frame.body("in_progress", []), None)
            created = True
        if req.background:  # answered now (or streamed): the rest runs on, client or not
            at_once = None if req.stream else web.json_response(
                frame.body("in_progress", []), headers={**route_headers(stream), **headers})
            request.app[JOBS].detach(request, rid, req.tenant, at_once)
        if req.stream:
            answer, settled = await _stream(request, frame, stream, headers)
            return answer
        answer = await _gather(request, frame, stream, headers)
        settled = True
        return answer
    finally:
        if req.store and not settled:
            ending = _store_ended(request, frame)
            if req.background and created:  # a cancel waits for the job, and with it this
                await ending
            else:  # nobody waits for it; without `created`, an unanswered put may land late
                _soon(ending)


async def _store(request: web.Request, frame: ResponseFrame, body: dict[str, Any],
                 answer: ChatMessage | None, last_event: int = -1) -> None:
    """Store the response as `body` says it stands (`last_event`: a stream's last event's
    number, for one that ended)."""
    req = frame.req
    # a response made in a conversation keeps the items it was made from (OpenAI lists them
    # among its input items), so a chain from it holds the conversation
    turn = [*req.conversation_turns, *req.turn]
    messages = turn if answer is None else [*turn, answer]
    store = request.app[STORE]
    generator = store.generator if body["status"] == "in_progress" else ""
    record = StoredResponse(frame.rid, frame.created_at, body["status"], json.dumps(body),
                            json.dumps([*req.conversation_items, *req.input_items]), messages,
                            req.previous_response_id,
                            generator, logged=req.background and req.stream,
                            last_event=last_event)
    if req.background and record.status != "in_progress":
        # all its client will see: tried through a store outage (a put replaces a record)
        await until_answered(lambda: store.put(req.tenant, record, req.store_ttl),
                             FINAL_PUT_S, f"storing {record.id} {record.status}")
    else:
        await store.put(req.tenant, record, req.store_ttl)


async def _store_ended(request: web.Request, frame: ResponseFrame,
                       output: list[dict[str, Any]] | None = None, last_event: int = -1) -> None:
    """Store the response as it ended unfinished: `cancelled` (a background response's
    cancel), else `failed` with its `frame.error` or (the client went away) a server_error
    saying it did not complete. One too large to store with its `output` is stored without
    it."""
    if request.app[JOBS].was_cancelled(frame.rid):
        status, error = "cancelled", None
    else:
        status = "failed"
        error = frame.error or response_error(None, "the response did not complete")
    for kept in (output or [], []):
        try:
            await _store(request, frame, frame.body(status, kept, error=error), None, last_event)
            return
        except ApiError as err:
            if err.status != 413 or not kept:
                log.warning("could not store %s %s: %s", frame.rid, status, err)
                return


def _soon(work: Any) -> None:
    task = asyncio.ensure_future(work)
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _gather(request: web.Request, frame: ResponseFrame,
                  stream: RequestStream | ReplayStream, headers: dict[str, str]) -> web.Response:
    req = frame.req
    gather = Gather(1, req.logprobs is not None, req.tool_names, req.parallel_tool_calls,
                    named_tool=req.tool_name)
    rec = telemetry_http.record(request)
    try:
        while batch := await stream.batch():
            rec.on_chunks(batch)
            for chunk in batch:
                gather.add(chunk)
        choice = gather.chat(frame.rid, frame.created_at, req.model)["choices"][0]
        text = choice["message"]["content"] or ""
        calls = [ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"])
                 for c in choice["message"].get("tool_calls") or []]
        status = status_of(choice["finish_reason"])
        logprobs = (choice["logprobs"] or {}).get("content")
        body = frame.body(status, frame.output(text, calls, status, logprobs), gather.usage)
        if req.store:
            await _store(request, frame, body, as_message(text, calls))
        await append_turn(request, req, body["output"])
    except ApiError as err:  # the client hears it as an HTTP error, the store (`failed`) as this
        frame.error = response_error(err.code, err.message)
        raise
    return web.json_response(body, headers={**route_headers(stream), **headers})


async def _stream(request: web.Request, frame: ResponseFrame,
                  stream: RequestStream | ReplayStream,
                  headers: dict[str, str]) -> tuple[web.StreamResponse, bool]:
    """The event stream, and whether the store (if asked) holds its last state."""
    req = frame.req
    batch = await stream.batch()  # errors before the first chunk keep their HTTP status
    shape = StreamShape("chat", frame.rid, frame.created_at, req.model, False, req.tool_names,
                        parallel_tool_calls=req.parallel_tool_calls, named_tool=req.tool_name)
    events = EventStream(frame, shape)
    sse = SseWriter(request, request.app[AUTH].cfg.stream_write_timeout)
    sse.response.headers.update({**route_headers(stream), **headers})
    logged = EventLogWriter(request.app[STORE], req.tenant, frame.rid, req.store_ttl) \
        if req.background else None
    reader = _Reader(sse, req.background, logged)
    await reader.guard(sse.start)
    if req.background:
        BackgroundJobs.streaming(request, sse.response)
    rec = telemetry_http.record(request)
    closing: list[dict[str, Any]] = []  # the closing events: sent once the store has the end
    try:
        await reader.send(events.start())
        while batch:
            rec.on_chunks(batch)
            await reader.send([e for c in coalesce(batch) for e in events.feed(c)])
            batch = await stream.batch()
        closing = events.finish(stream.usage)
        if req.store:  # stored before the client hears it is complete
            await _store(request, frame, closing[-1]["response"],
                         as_message("".join(events.text), events.calls),
                         closing[-1]["sequence_number"])
        await append_turn(request, req, closing[-1]["response"]["output"])
        await reader.send(closing)
    except ApiError as err:
        log.warning("response stream %s failed: %s", frame.rid, err)
        rec.failed_in_stream(err.status, err.code or err.type, err.message)
        if closing:  # the store refused the end: the items are whole (their closing events
            await reader.send(closing[:-1])  # go out) and the response failed, in place of
            events.seq = closing[-1]["sequence_number"]  # its last event
        failed = events.failed(err.code, err.message, err.param)
        if req.store:  # stored first: a retrieve after response.failed reads the same error
            await _store_ended(request, frame, events.output, failed[-1]["sequence_number"])
        await reader.send(failed)
    except asyncio.CancelledError:  # a background response cancelled: its stream ends here
        if req.background:
            await reader.guard(sse.response.write_eof)
        raise
    await reader.guard(sse.response.write_eof)
    if logged is not None:
        await logged.close()
    return sse.response, True


class _Reader:
    """The client of an event stream. A background response goes on without it once it has
    left (the writes then do nothing, and the store gets its end as ever; its events are
    logged, so the client can come back to them); any other's leaving ends its request
    (`ConnectionResetError`, a 499)."""

    def __init__(self, sse: SseWriter, background: bool, logged: EventLogWriter | None) -> None:
        self.sse, self.background, self.logged, self.gone = sse, background, logged, False

    async def send(self, events: list[dict[str, Any]]) -> None:
        """Events as OpenAI frames them: an `event:` line naming the type, then the data."""
        if events:
            frames = [typed_event(e) for e in events]
            if self.logged is not None:
                self.logged.add(frames)
            data = b"".join(frames)
            await self.guard(lambda: self.sse.write(data))

    async def guard(self, write: Callable[[], Awaitable[Any]]) -> None:
        """Run `write` unless the client has left (see the class doc)."""
        if self.gone:
            return
        try:
            await write()
        except ConnectionResetError:
            if not self.background:
                raise
            self.gone = True
            log.info("a background response's stream lost its client; it goes on")


# -- retrieve, delete, input items ----------------------------------------------------------


async def _tenant(request: web.Request, allowed: tuple[str, ...] = ()) -> str:
    ident = await request.app[AUTH].identify(request)
    check_query(request, allowed)
    return ident.tenant if ident is not None else ""


async def _record(request: web.Request, allowed: tuple[str, ...] = ()) -> StoredResponse:
    tenant = await _tenant(request, allowed)
    (rec,) = await request.app[STORE].get(tenant, request.match_info["id"])
    return await request.app[STORE].settled(tenant, rec)


async def retrieve(request: web.Request) -> web.StreamResponse:
    """The stored response; with `stream=true` (and `starting_after`), its logged stream
    again (gateway/responses_event_log.py)."""
    tenant = await _tenant(request, ("stream", "starting_after", "include_obfuscation"))
    stream, after = resume_query(request)
    store = request.app[STORE]
    (rec,) = await store.get(tenant, request.match_info["id"])
    rec = await store.settled(tenant, rec)
    if stream:
        return await resume(request, store, tenant, rec, after,
                            request.app[AUTH].cfg.stream_write_timeout)
    return web.Response(text=rec.body, content_type="application/json")


async def delete(request: web.Request) -> web.Response:
    """Delete a stored response; one still generated in the background is cancelled first
    (its slot and its worker freed: a deleted response cannot be cancelled any more)."""
    ident = await request.app[AUTH].identify(request)
    check_query(request)
    tenant, response_id = ident.tenant if ident is not None else "", request.match_info["id"]
    async with request.app[AUTH].counted(ident, slot=False):  # a change: one from `rpm`
        await _stop_running(request, tenant, response_id)
        await request.app[STORE].delete(tenant, response_id)
    return web.json_response({"id": response_id, "object": "response", "deleted": True})


async def _stop_running(request: web.Request, tenant: str, response_id: str) -> None:
    try:
        (rec,) = await request.app[STORE].get(tenant, response_id)
    except ApiError as err:
        if err.status == 404:
            return  # the delete answers it
        raise
    if rec.status == "in_progress" and json.loads(rec.body).get("background"):
        try:
            await request.app[JOBS].cancel(tenant, rec.id, rec.gateway)
        except ApiError as err:  # deleted all the same: its finished state cannot come back
            log.warning("deleting %s: its generation could not be stopped: %s", rec.id, err)


async def cancel(request: web.Request) -> web.Response:
    """Stop a background response wherever it runs and answer it as it ended: `cancelled`,
    or as it finished first (a cancel of a finished one changes nothing, as OpenAI's). A
    response not made in the background is 400, an unknown one 404."""
    ident = await request.app[AUTH].identify(request)
    check_query(request)
    tenant = ident.tenant if ident is not None else ""
    store, response_id = request.app[STORE], request.match_info["id"]
    async with request.app[AUTH].counted(ident, slot=False):  # a change: one from `rpm`
        (rec,) = await store.get(tenant, response_id)
        rec = await store.settled(tenant, rec)
        if not json.loads(rec.body).get("background"):
            raise ApiError(400, "Only responses created with background=true can be "
                           "cancelled", code="invalid_value")
        if rec.status == "in_progress":
            await request.app[JOBS].cancel(tenant, rec.id, rec.gateway)
            (rec,) = await store.get(tenant, response_id)  # as it ended
    return web.Response(text=rec.body, content_type="application/json")


async def input_items(request: web.Request) -> web.Response:
    rec = await _record(request, ("order", "limit", "after"))
    items: list[dict[str, Any]] = json.loads(rec.input_items)
    order = request.query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_field("order", "must be asc or desc")
    if order == "desc":
        items.reverse()
    limit = query_int(request, "limit", 20, 1, 100)
    if (after := request.query.get("after")) is not None:
        ids = [i["id"] for i in items]
        if after not in ids:
            raise bad_field("after", f"no input item {after!r} in this response")
        items = items[ids.index(after) + 1:]
    page = items[:limit]
    return web.json_response({"object": "list", "data": page,
                              "first_id": page[0]["id"] if page else None,
                              "last_id": page[-1]["id"] if page else None,
                              "has_more": len(items) > len(page)})
