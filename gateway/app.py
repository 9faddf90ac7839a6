"""The gateway's HTTP surface: OpenAI-compatible routes, health and readiness.

Contract:
- `POST /v1/chat/completions`, `POST /v1/completions`: validate (400 naming the field, 404 for a
  model no live worker serves, 503 with Retry-After when no worker serves anything, 413 for a
  body over `max_body_bytes` as sent or once decompressed; bodies may be gzip or deflate
  encoded, gateway/json_body.py), route through the mesh, answer as one JSON object or as SSE.
- `/v1/responses` (create, retrieve, delete, input_items) is gateway/responses_api.py: create
  runs this same generation path through its `Prepare`/`Respond` hooks. `/v1/conversations`
  is gateway/conversations_api.py.
- `POST /v1/embeddings`: validated the same way (gateway/embeddings_request.py), routed
  through the mesh like a generation, answered as one JSON list (gateway/embeddings_response.py);
  not result-cached.
- With no NATS connection, a generation is 503 `no_worker` with Retry-After at once.
- A stream starts (HTTP 200) only when the first chunk arrives, so an error before it keeps its
  own status. An error after it is one `data: {"error": ...}` event, then `data: [DONE]`.
- A request that does not complete at its worker (the client left, the worker erred, a 504)
  is cancelled there. A client that resets is a 499, never a 500.
- Every response of a generation names its gateway process (`x-kvmesh-gateway`); every
  response of any kind carries `x-request-id` (gateway/request_id.py).
- `GET /metrics` (when `metrics_port` is 0 and `metrics` on) needs the metrics key or an admin
  key (the configured one, or an admin tenant's) with auth on.
- `GET /v1/models` lists models with a live worker, `GET /v1/models/{id}` one of them (404
  otherwise); `POST /tokenize`, `/detokenize`: gateway/tokenize_routes.py; `GET /health` is
  200 while the process runs; `GET /ready` is 200 when NATS is connected, a router answers
  (in a process that hosts its router: that router holds its NATS link) and a worker is live;
  it needs no key and says how many models are served, never which.
- Every error, including unknown routes and unexpected failures, is in the OpenAI shape.
- Browser pages of other origins may call it only as `cors_origins` allows (gateway/cors.py).
- A completions batch (several prompts) runs each prompt as its own request, cached and
  cancelled like a single one, and answers as one response (gateway/prompt_batch.py).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from cache.client import ReplayStream, ResultCacheClient, route_headers
from cache.key import cache_key, cacheable
from gateway import cors, rate_headers, request_id
from gateway import telemetry as telemetry_http
from gateway.admin import add_admin_routes
from gateway.admission import Ticket
from gateway.auth_client import AUTH, Authenticator
from gateway.body_reads import BODIES, BodyReads
from gateway.cache_route import open_cached
from gateway.conversations_api import add_conversations_routes
from gateway.conversations_store_client import CONVERSATIONS, ConversationsStoreClient
from gateway.embeddings_request import EmbeddingsRequest, parse_embeddings
from gateway.embeddings_response import EmbeddingsGather
from gateway.errors import ApiError, check_query, model_not_found, no_worker
from gateway.mesh_client import MeshClient, RequestStream
from gateway.openai_request import ParsedRequest, parse_chat, parse_completion
from gateway.openai_response import Gather, StreamShape
from gateway.openapi import openapi_document
from gateway.prompt_batch import PromptBatch
from gateway.responses_api import add_responses_routes
from gateway.responses_store_client import STORE, ResponsesStoreClient
from gateway.sse import SseWriter
from gateway.token_ids import named_by_id
from gateway.tokenize_routes import add_tokenize_routes
from kvmesh.coalesce import coalesce, compact
from kvmesh.wire import Identity
from telemetry import tracing

log = logging.getLogger("kvmesh.gateway")
MESH = web.AppKey("mesh", MeshClient)
RESULT_CACHE = web.AppKey("result_cache", ResultCacheClient)
SESSION_HEADER = "x-kvmesh-session"  # session-affinity hint; overrides the body's `user`
ID_PREFIX = {"chat": "chatcmpl-", "completion": "cmpl-", "responses": "resp_"}
# Hooks of an endpoint built on the generation path (gateway/responses_api.py): `Prepare` runs
# once the caller is admitted, before the request is routed; `Respond` writes the answer.
Prepare = Callable[[web.Request, ParsedRequest, Identity | None], Awaitable[None]]
Respond = Callable[[web.Request, ParsedRequest, str, "RequestStream | ReplayStream",
                    dict[str, str]], Awaitable[web.StreamResponse]]


def build_app(mesh: MeshClient) -> web.Application:
    # auto_decompress off: gateway/json_body.py undoes a body's Content-Encoding itself, so a
    # corrupt or unsupported coding is a 400 in the OpenAI shape (aiohttp's own is a 500 or a
    # text/plain reply written before any middleware runs)
    app = web.Application(client_max_size=mesh.cfg.max_body_bytes,
                          middlewares=[request_id.middleware, rate_headers.middleware,
                                       telemetry_http.middleware, error_middleware],
                          handler_args={"auto_decompress": False})
    app.on_response_prepare.append(request_id.on_prepare)
    app.on_response_prepare.append(rate_headers.on_prepare)
    app[MESH] = mesh
    app[AUTH] = Authenticator(mesh)
    app[BODIES] = BodyReads(mesh.cfg)
    app.on_startup.append(app[AUTH].start)
    add_admin_routes(app)
    app[RESULT_CACHE] = ResultCacheClient(mesh, mesh.cfg.cache_lookup_timeout,
                                          mesh.cfg.cache_lead_wait, mesh.cfg.cache_lease_renew)
    app.on_cleanup.append(lambda app: app[RESULT_CACHE].close())
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app[STORE] = ResponsesStoreClient(mesh, mesh.cfg.store_timeout, mesh.cfg.retry_after)
    app[CONVERSATIONS] = ConversationsStoreClient(mesh, mesh.cfg.store_timeout,
                                                  mesh.cfg.retry_after)
    add_responses_routes(app, _serve_generation, mesh)
    add_conversations_routes(app)
    app.router.add_get("/v1/models/{model}", get_model)
    add_tokenize_routes(app, MESH)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    if mesh.cfg.metrics and not mesh.cfg.metrics_port:  # else server.py serves it (or none)
        app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi_document)
    cors.install(app, mesh.cfg.cors_origins)
    return app


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        return err.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except ConnectionResetError:
        raise  # the client left (even just after [DONE]): a 499 for the access log, not a 500
    except Exception as exc:
        log.exception("unhandled error on %s", request.path)
        return ApiError(500, f"internal error: {exc}", "internal_error").response()


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (no route, a method the route lacks) in OpenAI's shape: its
    words for an unknown URL, and the methods a path takes in `Allow`."""
    if exc.status == 404:
        return ApiError(404, f"Invalid URL ({request.method} {request.path})").response()
    if exc.status == 405:
        allow = exc.headers.get("Allow", "")
        out = ApiError(405, f"{request.method} is not allowed on {request.path}; it takes "
                       f"{allow.replace(',', ', ')}", code="method_not_allowed").response()
        out.headers["Allow"] = allow
        return out
    return ApiError(exc.status, exc.reason or "error", code=str(exc.status)).response()


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    mesh = request.app[MESH]
    # Counts, not names: the check needs no key, and a key learns nothing of the models
    # outside its scopes (`GET /v1/models` lists those it may use).
    checks = {"nats": mesh.connected, "router": mesh.connected and await mesh.router_ready(),
              "models": len(mesh.models())}
    ok = bool(checks["nats"] and checks["router"] and checks["models"])
    return web.json_response({"ready": ok, **checks}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    await request.app[AUTH].require_metrics_key(request)  # it lists tenant names
    return await telemetry_http.metrics_handler(request)


async def list_models(request: web.Request) -> web.Response:
    mesh = request.app[MESH]
    ident = await request.app[AUTH].identify(request)  # only the models it may use
    check_query(request)
    data = [_model_card(mesh, name, n) for name, n in sorted(mesh.models().items())
            if ident is None or "*" in ident.models or name in ident.models]
    return web.json_response({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    """One model in OpenAI's shape; 404 (OpenAI's shape) for a model the caller may not use
    or no live worker serves, so a key learns nothing of models outside its scopes."""
    ident = await request.app[AUTH].identify(request)
    check_query(request)
    name = request.match_info["model"]
    n = request.app[MESH].models().get(name)
    if n is None or (ident is not None and "*" not in ident.models and name not in ident.models):
        raise model_not_found(name)
    return web.json_response(_model_card(request.app[MESH], name, n))


def _model_card(mesh: MeshClient, name: str, max_model_len: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": mesh.workers.created(name),
            "owned_by": "kvmesh", "max_model_len": max_model_len}


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _serve_generation(request, parse_chat)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _serve_generation(request, parse_completion)


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await _serve_generation(request, parse_embeddings, run=_embed)


Run = Callable[[web.Request, Any, Ticket], Awaitable[web.StreamResponse]]


async def _serve_generation(request: web.Request, parse: Callable[[Any], Any],
                            prepare: Prepare | None = None, respond: Respond | None = None,
                            run: Run | None = None) -> web.StreamResponse:
    """The handler, top to bottom: who asks (401), what (400, 413; a query parameter is a
    400), the mesh is up (503), may they use the model and does it exist (404 alike), within
    their limits (429), the endpoint's own preparation, then generate (or `run` it:
    embeddings) and settle the tokens it used: none for a request refused before a worker took
    it (a router's or worker's 400, no worker, a timeout routing it; one whose client left
    before: gateway/admission.py)."""
    mesh, auth = request.app[MESH], request.app[AUTH]
    ident = await auth.identify(request)  # 401 before the body is read
    check_query(request)  # a query parameter is no field: 400, never ignored
    req = parse(await request.app[BODIES].json(request, "" if ident is None else ident.tenant))
    if not mesh.connected:  # at once, not after the router's timeout
        raise no_worker("the mesh is unreachable (no NATS connection)", mesh.cfg.retry_after)
    telemetry_http.identified(request, "" if ident is None else ident.tenant)
    admission = auth.admission(ident, req)  # 404 for a model outside the tenant's scopes
    _check_model(mesh, req.model)
    telemetry_http.served_model(request, req.model)
    async with admission as ticket:  # 429; released however it ends
        try:
            if prepare is not None:
                await prepare(request, req, ident)
            if run is not None:
                return await run(request, req, ticket)
            return await _generate(request, req, ticket, respond or _respond)
        except ApiError:
            if ticket.used is None:  # refused before a worker took it: nothing was generated
                ticket.settle(0)
            raise


def _check_model(mesh: MeshClient, model: str) -> None:
    """The model check, in one place: 404 for a model no live worker serves."""
    models = mesh.models()
    if model not in models:
        if not models:
            raise no_worker("no inference worker is running", mesh.cfg.retry_after)
        raise model_not_found(model)


Stream = RequestStream | ReplayStream | PromptBatch


@dataclass
class Source:
    """One request's answer in flight: a result-cache replay or a mesh stream, the result-cache
    key it must store as single-flight leader, and the headers saying which."""

    stream: RequestStream | ReplayStream
    lead_key: str | None
    headers: dict[str, str]


async def _generate(request: web.Request, req: ParsedRequest, ticket: Ticket,
                    respond: Respond) -> web.StreamResponse:
    mesh = request.app[MESH]
    rid = ID_PREFIX[req.kind] + uuid.uuid4().hex
    request_id.adopt(request, rid)
    rec = telemetry_http.record(request)  # span attributes and metrics of this request
    rec.set_request(rid, req.model, req.tenant)
    tracing.set_attributes(**req.trace_labels)  # user, safety_identifier, metadata
    req.session = request.headers.get(SESSION_HEADER, req.session)
    if req.prompts:
        return await _generate_batch(request, req, rid, ticket, rec)
    source = await _open(request, req, rid)
    headers = {**source.headers, "x-kvmesh-gateway": mesh.instance}  # which gateway answered
    try:
        return await respond(request, req, rid, source.stream, headers)
    finally:
        ticket.settle(_end(request, source))


async def _generate_batch(request: web.Request, req: ParsedRequest, rid: str, ticket: Ticket,
                          rec: telemetry_http.RequestRecord) -> web.StreamResponse:
    mesh = request.app[MESH]
    batch = PromptBatch(req.split(), rid, req.n, lambda sub, sub_id: _open(request, sub, sub_id),
                        lambda source: _end(request, source), mesh.cfg.prompt_batch_window)
    headers = {"x-kvmesh-gateway": mesh.instance}
    batch.start()
    try:
        if req.stream:
            return await _stream(request, req, rid, batch, headers)
        return await _gather(req, rid, batch, headers, rec)
    finally:
        await batch.aclose()
        ticket.settle(batch.used_tokens)


async def _open(request: web.Request, req: ParsedRequest, rid: str) -> Source:
    """Start one request: from the result cache, else through the mesh (the two overlapped,
    gateway/cache_route.py); 401 `key_revoked` when its key was revoked while it waited (a
    stream already open is ended by the revocation itself, `MeshClient.end_streams`)."""
    source = await _open_source(request, req, rid)
    try:
        request.app[AUTH].check_revoked(req.key_id)
    except ApiError:
        _end(request, source)
        raise
    return source


async def _open_source(request: web.Request, req: ParsedRequest, rid: str) -> Source:
    mesh = request.app[MESH]
    if not mesh.cfg.result_cache or not cacheable(req):  # never looked up (cache/key.py)
        return Source(await mesh.generate(req, rid), None, {})
    got = await open_cached(mesh, request.app[RESULT_CACHE], req, rid,
                            lambda: _cache_key(request, req), mesh.cfg.cache_route_overlap)
    if got.hit is not None:
        return Source(ReplayStream(got.hit, rid), None, {"x-kvmesh-cache": "hit"})
    assert got.stream is not None
    return Source(got.stream, got.key if got.lead else None, {"x-kvmesh-cache": "miss"})


def _end(request: web.Request, source: Source) -> int:
    """Finish one request however it went; returns the tokens it used."""
    stream = source.stream
    used = _used_tokens(stream)
    stream.close()
    if isinstance(stream, RequestStream) and not stream.completed:
        # an error, a timeout (504) or a client that left: the worker must stop too
        log.info("%s ended early; cancelling it at the worker", stream.request_id)
        request.app[MESH].cancel_soon(stream.request_id)
    if source.lead_key is not None:  # this request computed the key: store it, or let go
        _store_or_release(request, source.lead_key, stream)
    return used


async def _respond(request: web.Request, req: ParsedRequest, rid: str,
                   stream: RequestStream | ReplayStream,
                   headers: dict[str, str]) -> web.StreamResponse:
    """Chat and completions answers: SSE chunks, or one JSON object."""
    if req.stream:
        return await _stream(request, req, rid, stream, headers)
    return await _gather(req, rid, stream, headers, telemetry_http.record(request))


async def _embed(request: web.Request, req: EmbeddingsRequest, ticket: Ticket) -> web.Response:
    """One vector per input, gathered from the worker's chunks."""
    mesh = request.app[MESH]
    rid = "embd-" + uuid.uuid4().hex
    request_id.adopt(request, rid)
    rec = telemetry_http.record(request)
    rec.set_request(rid, req.model, req.tenant)
    req.session = request.headers.get(SESSION_HEADER, req.session)
    stream = await mesh.generate(req, rid)
    gather = EmbeddingsGather(req.encoding_format)
    try:
        while batch := await stream.batch():
            rec.on_chunks(batch)
            for chunk in batch:
                gather.add(chunk)
    finally:
        ticket.settle(_end(request, Source(stream, None, {})))
    return web.Response(body=gather.body(req.model), content_type="application/json",
                        headers={**route_headers(stream), "x-kvmesh-gateway": mesh.instance})


def _used_tokens(stream: RequestStream | ReplayStream) -> int:
    """Prompt + completion tokens generated for this request: its usage when it finished,
    else the prompt and every token delivered before it stopped; 0 for a result-cache
    answer (nothing was generated)."""
    if isinstance(stream, ReplayStream):
        return 0
    if stream.usage is not None:
        return stream.usage.prompt_tokens + stream.usage.completion_tokens
    return stream.accepted.prompt_tokens + stream.tokens


def _route_headers(stream: Stream) -> dict[str, str]:
    """Which worker answered: a batch's prompts each went their own way, so none is named."""
    return {} if isinstance(stream, PromptBatch) else route_headers(stream)


def _store_or_release(request: web.Request, key: str,
                      stream: RequestStream | ReplayStream | None) -> None:
    rc = request.app[RESULT_CACHE]
    if stream is not None and stream.completed and stream.chunks is not None:
        rc.store_soon(key, compact(stream.chunks))
    else:
        rc.release_soon(key)


def _cache_key(request: web.Request, req: ParsedRequest) -> str:
    """The result-cache key of a cacheable request (cache/key.py)."""
    return cache_key(req, req.scope or req.tenant, request.app[MESH].revision(req.model))


async def _gather(req: ParsedRequest, rid: str, stream: Stream, headers: dict[str, str],
                  rec: telemetry_http.RequestRecord) -> web.Response:
    gather = Gather(req.n, req.logprobs is not None, req.tool_names, req.parallel_tool_calls,
                    named_tool=req.tool_name)
    while batch := await stream.batch():
        rec.on_chunks(batch)
        for chunk in named_by_id(batch) if req.tokens_as_ids else batch:
            gather.add(chunk)
    created = int(time.time())
    body = gather.chat(rid, created, req.model) if req.kind == "chat" \
        else gather.completion(rid, created, req.model)
    if isinstance(stream, ReplayStream) and body.get("usage"):
        body["usage"]["kvmesh_cache"] = "hit"
    return web.json_response(body, headers={**_route_headers(stream), **headers})


async def _stream(request: web.Request, req: ParsedRequest, rid: str, stream: Stream,
                  headers: dict[str, str]) -> web.StreamResponse:
    """SSE from the first chunk on. What does not need it is made while it is awaited, and each
    batch is written before its telemetry (issue 12: the first token's path is short)."""
    shape = StreamShape(req.kind, rid, int(time.time()), req.model, req.include_usage,
                        req.tool_names, req.n, req.parallel_tool_calls, named_tool=req.tool_name)
    sse = SseWriter(request, request.app[MESH].cfg.stream_write_timeout)
    rec = telemetry_http.record(request)
    batch = await stream.batch()  # errors before the first chunk keep their HTTP status
    sse.response.headers.update({**_route_headers(stream), **headers})  # its worker now
    await sse.start()
    try:
        # A chat stream's role events lead its first batch's events (the first batch is never
        # empty): the headers, the roles and the first tokens go out in one write.
        lead = [shape.role(i) for i in range(req.n)] if req.kind == "chat" else []
        while batch:
            try:
                chunks = coalesce(named_by_id(batch) if req.tokens_as_ids else batch)
                await sse.send(*lead, *(p for c in chunks for p in shape.payloads(c)))
                lead = []
            finally:
                rec.on_chunks(batch)
            batch = await stream.batch()
        if req.include_usage:
            payload = shape.usage(stream.usage)
            if isinstance(stream, ReplayStream) and payload.get("usage"):
                payload["usage"]["kvmesh_cache"] = "hit"
            await sse.send(payload)
    except ApiError as err:
        log.warning("stream %s failed: %s", rid, err)
        rec.failed_in_stream(err.status, err.code or err.type, err.message)
        await sse.send(err.body())
    await sse.done()
    return sse.response
