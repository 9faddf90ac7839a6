"""`POST /v1/responses/input_tokens`: how many input tokens a Responses request would take,
as the openai client's `responses.input_tokens.count(...)` asks.

Contract:
- The body takes OpenAI's fields of this route (`FIELDS`); any other is a 400
  `unknown_parameter` naming it, and `personality`, which this server does not implement,
  a 400 `unsupported_parameter` unless null. The rest are validated as `POST /v1/responses`
  validates them (the same 400s, `model` and `input` required), and the history is read as
  there (`previous_response_id`'s chain, or a `conversation`'s items: their 400 and 404).
- The count is the prompt's tokens as a generation would have them: instructions, history,
  `input` and `tools` through the model's chat template (router/tokenize.py), so it equals the
  `usage.input_tokens` of the response the same fields would make. With `truncation: auto`
  it is the prompt after the oldest turns were dropped to fit the context with room for one
  token (router/truncation.py); with `disabled` a prompt over the context is counted, not
  refused (the count is how a client learns it would not fit).
- Answered `{"object": "response.input_tokens", "input_tokens": N}`. Authenticated and
  limited as `/tokenize` (gateway/tokenize_routes.py): one request from the tenant's `rpm`
  and one of its `max_concurrency` slots while it is counted, nothing from `tpm`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.auth_client import AUTH
from gateway.errors import ApiError
from gateway.json_body import json_object
from gateway.mesh_client import MeshClient
from gateway.openai_request import ParsedRequest
from gateway.responses_request import ResponsesRequest, parse_responses, renamed
from gateway.tokenize_routes import admit_model, read_body
from kvmesh import wire
from kvmesh.wire import Identity

FIELDS = frozenset({"model", "input", "instructions", "previous_response_id", "conversation",
                    "text", "tools", "tool_choice", "parallel_tool_calls", "truncation",
                    "reasoning", "personality"})
LoadContext = Callable[[web.Request, ParsedRequest, Identity | None], Awaitable[None]]


def add_input_tokens_route(app: web.Application, mesh: MeshClient,
                           load_context: LoadContext) -> None:
    """`load_context` reads a request's history as `POST /v1/responses` does
    (gateway/responses_api.py)."""

    async def count(request: web.Request) -> web.Response:
        ident, body = await read_body(request)
        req = parse_input_tokens(body)
        admit_model(request, mesh, ident, req.model)
        req.tenant = "" if ident is None else ident.tenant
        async with request.app[AUTH].counted(ident):
            await load_context(request, req, ident)
            msg = wire.TokenizeRequest(req.model, messages=req.messages, tools=req.tools,
                                       template=req.template, truncate=req.truncate)
            try:
                reply = await mesh.ask_router(wire.ROUTER_TOKENIZE, msg, wire.TokenizeReply)
            except ApiError as err:  # the router names the chat field (`messages`)
                raise renamed(err) from None
        return web.json_response({"object": "response.input_tokens",
                                  "input_tokens": len(reply.tokens)})

    app.router.add_post("/v1/responses/input_tokens", count)


def parse_input_tokens(body: Any) -> ResponsesRequest:
    """The Responses request an input-token count's body describes (see the contract)."""
    body = json_object(body)
    for name, value in body.items():
        if name not in FIELDS:
            raise ApiError(400, f"{name}: unknown parameter", param=name,
                           code="unknown_parameter")
        if name == "personality" and value is not None:
            raise ApiError(400, "personality: not supported by this server", param=name,
                           code="unsupported_parameter")
    return parse_responses({k: v for k, v in body.items() if k != "personality"})
