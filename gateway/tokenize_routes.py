"""`POST /tokenize` and `POST /detokenize`, in vLLM's shapes, answered by a router over NATS
with the tokenizer generations use (router/tokenize.py).

Contract:
- `/tokenize` takes `model` and exactly one of `prompt` (text) or `messages` (chat, through the
  template; `tools` and the template fields of gateway/chat_template_fields.py: with a prompt,
  a 400 naming them), plus
  `add_special_tokens` and `return_token_strs`; it answers `{"count", "max_model_len",
  "tokens", "token_strs"}` (`token_strs` null unless asked).
- `/detokenize` takes `model` and `tokens` (ids inside the vocabulary, else 400 naming
  `tokens`) and answers `{"prompt"}`.
- Authenticated like generations: 401 without a valid key, 404 for a model outside the
  tenant's scopes as for one no live worker serves, 503 with no NATS, worker or router. One
  request is charged against the tenant's `rpm` and one of its `max_concurrency` slots is
  held while the router answers (429 as a generation's); no tokens against `tpm`: nothing is
  generated. Bodies are read as a generation's (size limit, Content-Encoding:
  gateway/json_body.py). Fields are gateway/api_fields.py's; an unknown
  one, a wrong type or any query parameter is a 400 naming it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import telemetry as telemetry_http
from gateway.api_fields import DETOKENIZE_FIELDS, TOKENIZE_FIELDS, check_fields
from gateway.auth_client import AUTH
from gateway.body_reads import BODIES
from gateway.chat_messages import parse_messages
from gateway.chat_template_fields import TEMPLATE_FIELDS, parse_template_options
from gateway.errors import bad_field, check_query, no_worker
from gateway.json_body import json_object
from gateway.mesh_client import MeshClient
from gateway.structured_request import parse_tools
from kvmesh import wire
from kvmesh.wire import Identity


def add_tokenize_routes(app: web.Application, mesh_key: web.AppKey[MeshClient]) -> None:
    async def tokenize(request: web.Request) -> web.Response:
        ident, body = await _body(request, request.app[mesh_key], TOKENIZE_FIELDS)
        msg = tokenize_request(body)
        async with request.app[AUTH].counted(ident):
            reply = await request.app[mesh_key].ask_router(wire.ROUTER_TOKENIZE, msg,
                                                           wire.TokenizeReply)
        return web.json_response({"count": len(reply.tokens), "max_model_len":
                                  reply.max_model_len, "tokens": reply.tokens,
                                  "token_strs": reply.token_strs})

    async def detokenize(request: web.Request) -> web.Response:
        ident, body = await _body(request, request.app[mesh_key], DETOKENIZE_FIELDS)
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or any(type(t) is not int or not 0 <= t < 1 << 63
                                               for t in tokens):
            raise bad_field("tokens", "required, an array of token ids")
        async with request.app[AUTH].counted(ident):
            reply = await request.app[mesh_key].ask_router(
                wire.ROUTER_DETOKENIZE, wire.DetokenizeRequest(body["model"], tokens),
                wire.DetokenizeReply)
        return web.json_response({"prompt": reply.prompt})

    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/detokenize", detokenize)


async def _body(request: web.Request, mesh: MeshClient,
                fields: tuple[Any, ...]) -> tuple[Identity | None, dict[str, Any]]:
    """The caller (None: auth off) and the body, in `read_body`'s order, its fields checked
    (400) before `admit_model`."""
    ident, raw = await read_body(request)
    body = json_object(raw)
    check_fields(body, fields)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise bad_field("model", "required, a non-empty string")
    admit_model(request, mesh, ident, body["model"])
    return ident, body


async def read_body(request: web.Request) -> tuple[Identity | None, Any]:
    """The caller (None: auth off) and the decoded body of a request to a route that asks the
    mesh without generating: 401, then any query parameter (400), then the body (413, 408, 429
    and 400 as a generation's: gateway/body_reads.py)."""
    ident = await request.app[AUTH].identify(request)
    check_query(request)
    return ident, await request.app[BODIES].json(request, "" if ident is None else ident.tenant)


def admit_model(request: web.Request, mesh: MeshClient, ident: Identity | None,
                model: str) -> None:
    """After the body's fields are checked: 503 without NATS, then 404 for a model outside
    the caller's scopes; labels the request's telemetry with its tenant and served model."""
    if not mesh.connected:
        raise no_worker("the mesh is unreachable (no NATS connection)", mesh.cfg.retry_after)
    telemetry_http.identified(request, "" if ident is None else ident.tenant)
    request.app[AUTH].require_model(ident, model)
    if model in mesh.models():  # a label holds only served names
        telemetry_http.served_model(request, model)


def tokenize_request(body: dict[str, Any]) -> wire.TokenizeRequest:
    """The wire request of a `/tokenize` body (types already checked); 400 naming a field."""
    has_prompt, has_messages = body.get("prompt") is not None, body.get("messages") is not None
    if has_prompt == has_messages:
        raise bad_field("prompt", "give exactly one of prompt and messages")
    msg = wire.TokenizeRequest(body["model"],
                               add_special_tokens=bool(body.get("add_special_tokens", False)),
                               return_token_strs=bool(body.get("return_token_strs")))
    if has_prompt:
        for name in ("tools", *TEMPLATE_FIELDS):  # only the chat template reads them
            if body.get(name) is not None:
                raise bad_field(name, "only with messages (a prompt is tokenised as it is)")
        msg.prompt = body["prompt"]
    else:
        msg.messages = parse_messages(body)
        msg.tools = parse_tools(body)[0]
        msg.template = parse_template_options(body, msg.messages)
    return msg
