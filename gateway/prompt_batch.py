"""A completions request with a batch of prompts, read back as one stream of chunks.

Each prompt goes through the mesh as its own request (its own result-cache entry, worker and
cancel), opened and ended by the handler's own functions (gateway/app.py), so one prompt of a
batch travels exactly as a single-prompt request does.

Contract:
- At most `window` prompts are in flight at once (a worker answers a flood with 503s); the next
  starts when one ends. `batch()` returns the chunks that arrived since the last call (at
  least one), each prompt's in its order, with `index` = prompt_i * n + choice (OpenAI's
  numbering) and no `usage` except on the very last chunk, which carries the sum of every
  prompt's; then `[]`. Chunks are copies: a prompt's own chunks (kept for the result cache)
  are never changed.
- The first prompt that fails fails the whole request: `batch()` raises its `ApiError` (it
  names the prompt: `param` `prompt[i]` when the fault is the prompt's, else the message)
  and every other prompt is cancelled, at its worker too. `aclose()` (the handler's end, a
  client that left) cancels whatever still runs and waits for every prompt to end; it is
  idempotent.
- `used_tokens` is the prompt + completion tokens of every prompt started, for the tenant's
  token budget.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.errors import ApiError
from gateway.openai_request import ParsedRequest
from kvmesh.wire import Chunk, UsageInfo

Open = Callable[[ParsedRequest, str], Awaitable[Any]]  # (prompt's request, its id) -> source
End = Callable[[Any], int]  # source -> the tokens it used
Arrival = tuple[int, list[Chunk] | BaseException]  # (prompt index, its chunks or its error)


class PromptBatch:
    def __init__(self, prompts: list[ParsedRequest], request_id: str, n: int, open_: Open,
                 end: End, window: int) -> None:
        self.prompts = prompts
        self.request_id = request_id
        self.n = n
        self._open, self._end = open_, end
        self._window = asyncio.Semaphore(max(1, window))
        self._arrivals: asyncio.Queue[Arrival] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._finished = 0
        self.usage: UsageInfo | None = None
        self.used_tokens = 0
        self.done = self.completed = False

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._run(i, p)) for i, p in enumerate(self.prompts)]

    async def _run(self, i: int, req: ParsedRequest) -> None:
        async with self._window:
            source = None
            try:
                source = await self._open(req, f"{self.request_id}-{i}")
                while chunks := await source.stream.batch():
                    self._arrivals.put_nowait((i, chunks))
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # the reader raises it; nothing is lost
                self._arrivals.put_nowait((i, exc))
            finally:
                if source is not None:
                    self.used_tokens += self._end(source)

    async def batch(self) -> list[Chunk]:
        """Every chunk since the last call (at least one), or [] at the end."""
        if self.done:
            return []
        arrivals = [await self._arrivals.get()]
        while not self._arrivals.empty():
            arrivals.append(self._arrivals.get_nowait())
        out: list[Chunk] = []
        for i, got in arrivals:
            if isinstance(got, BaseException):
                self.close()
                raise _named(i, got)
            out.extend(self._renumber(i, c) for c in got)
        return out

    def _renumber(self, i: int, c: Chunk) -> Chunk:
        usage = None
        if c.usage is not None:
            self._add_usage(c.usage)
            self._finished += 1
            if self._finished == len(self.prompts):
                usage, self.done, self.completed = self.usage, True, True
        return dataclasses.replace(c, index=i * self.n + c.index, usage=usage)

    def _add_usage(self, u: UsageInfo) -> None:
        s = self.usage or UsageInfo(0, 0)
        self.usage = UsageInfo(s.prompt_tokens + u.prompt_tokens,
                               s.completion_tokens + u.completion_tokens,
                               s.cached_tokens + u.cached_tokens)

    def close(self) -> None:
        """Cancel every prompt still running (each ends at its worker too)."""
        self.done = True
        for task in self._tasks:
            task.cancel()

    async def aclose(self) -> None:
        """`close`, then wait until every prompt has ended, so `used_tokens` is whole."""
        self.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _named(i: int, exc: BaseException) -> BaseException:
    """A prompt's error, saying which prompt it was: `param` `prompt[i]` where the prompt
    itself is at fault (an id outside the vocabulary, too long), else a message starting
    `prompt i:`."""
    if not isinstance(exc, ApiError):
        return exc
    if exc.param == "prompt":
        why = exc.message.removeprefix("prompt: ")
        return dataclasses.replace(exc, param=f"prompt[{i}]", message=f"prompt[{i}]: {why}")
    return dataclasses.replace(exc, message=f"prompt {i}: {exc.message}")
