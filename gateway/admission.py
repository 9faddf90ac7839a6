"""A generation's claim on its tenant's limits, held for exactly as long as the request lives.

Contract (`Admission.hold(ticket)`, an async context manager the request handler enters):
- On entry it asks auth to admit the request (`AUTH_ADMIT`): one request from `rpm`, a
  reservation of `ticket.reserved` tokens (prompt estimate + `max_tokens`, see `reservation`)
  from `tpm`, a slot of `max_concurrency`. A refusal raises `ApiError` 429 and takes nothing;
  an admission's headroom goes to the response's `x-ratelimit-*` headers (rate_headers.py).
- While the block runs, the slot's lease is renewed (`AUTH_RENEW`) every third of it, so a
  request may run for as long as it needs while a lost one frees its slot within one lease.
- On exit, whatever happened (an error, the handler being cancelled), the claim is released
  (`AUTH_SETTLE`: the reservation given back, the usage the handler reported through
  `ticket.settle(tokens)` charged, the slot freed). The release is awaited up to `timeout`;
  one that fails (auth or Redis down) is retried in the background with backoff until it
  lands or the slot's lease has run out (Settle is idempotent, so a retry never charges
  twice).
- A request never answered admitted (auth or Redis did not answer: 503; or its client left
  while it waited) is withdrawn, in the background, without delaying its answer: it takes
  nothing, whether its admission lands before the withdrawal or after it (auth/ratelimit.py).
- A ticket never settled is charged its whole reservation (the safe side of the limit),
  unless its client left first (the block cancelled or its connection reset): the handler
  settles what a worker generated as soon as one took the request, so a ticket still
  unsettled then had nothing generated for it, and is charged nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from gateway import rate_headers
from gateway.errors import ApiError
from gateway.openai_request import ParsedRequest
from kvmesh import wire
from kvmesh.wire import Admit, AuthOk, Identity, Message, Renew, Settle

log = logging.getLogger("kvmesh.gateway.auth")
BYTES_PER_TOKEN = 3  # a low guess (English runs ~4), so the reservation errs on the high side
RETRY_FIRST_S = 0.25  # first pause between release attempts; doubles
WITHDRAW_S = 300.0  # how long a withdrawal is retried: an admission may come that late


@dataclass
class Ticket:
    """One request's claim: who, what it reserved, and (once known) what it used."""

    tenant: str = ""
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    rpm: int = 0
    tpm: int = 0
    max_concurrency: int = 0
    reserved: int = 0
    used: int | None = None

    @property
    def limited(self) -> bool:
        return bool(self.rpm or self.tpm or self.max_concurrency)

    def settle(self, tokens: int) -> None:
        """Report the request's real usage (prompt + completion tokens); charged at exit."""
        self.used = max(0, int(tokens))


def prompt_estimate(req: ParsedRequest, context_len: int = 0) -> int:
    """Tokens the prompt will take, from its size (the gateway does not tokenise), at most
    what `truncate_prompt_tokens` keeps of each prompt (-1: the `context_len`), and at most
    the `context_len` (when known) of each: a longer one is refused as too long, never
    generated."""
    if req.prompts:  # a completions batch: every prompt, measured where it stands
        size = sum(len(p) if isinstance(p, list) else len(p.encode()) // BYTES_PER_TOKEN + 1
                   for p in req.prompts)
    elif req.prompt_token_ids is not None:
        size = len(req.prompt_token_ids)
    else:
        size = len((req.prompt or "").encode())
        size += sum(len(m.content.encode()) + 4 * BYTES_PER_TOKEN for m in req.messages or [])
        size = size // BYTES_PER_TOKEN + 1
    keep = getattr(req, "truncate_prompt_tokens", None)
    kept = context_len if keep == -1 or not keep else keep
    if kept > 0:  # each prompt (each embedding input) keeps at most this many
        size = min(size, kept * len(req.prompts or [None]) * getattr(req, "size", 1))
    return size


def reservation(req: ParsedRequest, ident: Identity, context_len: int = 0) -> int:
    """Tokens to reserve from `tpm`: prompt estimate + every completion token the request may
    make (`n` choices of `max_tokens` for each prompt; with no `max_tokens`, the rest of the model's
    `context_len`), at most the whole budget (all of it when neither is known); 0 without a
    `tpm`."""
    if not ident.tpm:
        return 0
    prompt = prompt_estimate(req, context_len)
    if req.max_tokens is not None:
        completion = req.max_tokens
    elif context_len:
        completion = max(1, context_len - prompt)
    else:
        return ident.tpm
    return min(ident.tpm, prompt + len(req.prompts or [None]) * req.n * completion)


Ask = Callable[[str, Message], Awaitable[Message]]


class Admission:
    """Admits, renews and releases tickets over `ask(subject, message)`, which answers
    `AuthOk` within `timeout` or raises `ApiError` (an error reply, auth unreachable)."""

    def __init__(self, ask: Ask, timeout: float) -> None:
        self.ask = ask
        self.timeout = timeout
        self._background: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def hold(self, ticket: Ticket) -> AsyncIterator[Ticket]:
        if not ticket.limited:
            yield ticket
            return
        admit = asyncio.ensure_future(self.ask(wire.AUTH_ADMIT, Admit(
            ticket.tenant, ticket.request_id, ticket.rpm, ticket.tpm, ticket.max_concurrency,
            ticket.reserved)))
        renewer: asyncio.Task[None] | None = None
        lease, entered = 0.0, False
        try:
            ok = await asyncio.shield(admit)  # a cancel here withdraws it (finally)
            assert isinstance(ok, AuthOk)
            rate_headers.note(ok, ticket.rpm, ticket.tpm)
            lease = ok.lease
            if lease > 0:
                renewer = asyncio.ensure_future(self._renew(ticket, lease))
            entered = True
            try:
                yield ticket
            except (asyncio.CancelledError, ConnectionResetError):
                if ticket.used is None:  # its client left before a worker took it (it waited
                    ticket.settle(0)  # on a cached answer's leader, or for a route)
                raise
        finally:
            if renewer is not None:
                renewer.cancel()
            await self._release(ticket, admit, lease, entered)

    async def _renew(self, ticket: Ticket, lease: float) -> None:
        while True:
            await asyncio.sleep(lease / 3)
            try:
                await self.ask(wire.AUTH_RENEW, Renew(ticket.tenant, ticket.request_id))
            except Exception as exc:  # the next renewal may land; the lease covers two misses
                log.warning("renewing %s's slot failed: %s", ticket.tenant, exc)

    async def _release(self, ticket: Ticket, admit: asyncio.Future[Message], lease: float,
                       entered: bool) -> None:
        error = admit.exception() if admit.done() and not admit.cancelled() else None
        if isinstance(error, ApiError) and error.status == 429:
            return  # refused: nothing was taken
        if not entered:  # never answered admitted, or its client left first: it takes nothing
            admit.add_done_callback(_heard)
            self._send(Settle(ticket.tenant, ticket.request_id, 0, ticket.tpm,
                              ticket.max_concurrency, ticket.rpm, withdraw=True), WITHDRAW_S)
            return
        used = ticket.reserved if ticket.used is None else ticket.used
        task = self._send(Settle(ticket.tenant, ticket.request_id, used, ticket.tpm,
                                 ticket.max_concurrency, ticket.rpm), lease or 30.0)
        with contextlib.suppress(BaseException):  # still running: it goes on in the background
            await asyncio.wait_for(asyncio.shield(task), self.timeout)

    def _send(self, msg: Settle, give_up_s: float) -> asyncio.Task[None]:
        task = asyncio.ensure_future(self._settle(msg, give_up_s))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _settle(self, msg: Settle, give_up_s: float) -> None:
        """Send `msg` until it lands, for up to `give_up_s` (a settle: the slot's lease, after
        which it has expired anyway, or 30 s when it holds none: then only the token charge is
        at stake, and it errs on the safe side)."""
        give_up = time.monotonic() + give_up_s
        pause = RETRY_FIRST_S
        while True:
            try:
                await self.ask(wire.AUTH_SETTLE, msg)
                return
            except Exception as exc:  # ApiError from auth, or the mesh itself going away
                if time.monotonic() + pause > give_up:
                    log.warning("releasing %s's request %s failed (%s); its slot frees when "
                                "the lease runs out", msg.tenant, msg.request_id, exc)
                    return
                log.warning("releasing %s's request %s failed (%s); retrying in %.2gs",
                            msg.tenant, msg.request_id, exc, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)


def _heard(admit: asyncio.Future[Message]) -> None:
    """An admission nobody waits for any more: its error is read, so none goes unretrieved."""
    if not admit.cancelled():
        admit.exception()
