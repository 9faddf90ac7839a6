"""Background Responses (`background: true`): a generation that outlives its HTTP request.

Contract:
- `run(request, work)` runs the create handler's `work` as a task of its own and answers with
  what the work answers (a refusal, or a response not made in the background), unless the
  work first calls `detach(request, rid, tenant, answer)`: then `answer` goes out at once
  (or, None, the work streams its own answer and `run` waits for it), and the work goes on
  alone, holding its admission slot, its worker's stream and its store
  writes, until it ends, is cancelled, or the gateway shuts down (its stream then fails with
  503 `gateway_shutdown`, and the work stores that). A client that leaves before the detach
  cancels the work, as for any request; after it, nothing the client does stops the work.
  Work that ended before its handler woke answers as it ended, though the client (having
  read it all) left meanwhile: it counts with its own status, not as a 499.
- A detached job is known by its response id in the process that runs it (the inbox its
  `in_progress` record names). `cancel(tenant, rid, gateway)` stops it wherever it runs: here
  directly, elsewhere through `wire.RESPONSES_CANCEL`, which every gateway process hears and
  only the named one answers. Either way it returns once the job has ended, its last state
  stored; a job not running there (it finished meanwhile) is nothing to stop. A cancel
  reaches only a job of the tenant that asks. The job reads `was_cancelled(rid)` to store
  itself `cancelled` rather than `failed`.
- The gateway's shutdown (`finish`) waits for the jobs (their streams end at the latest with
  the grace period), then cancels those left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway import telemetry as telemetry_http
from gateway.errors import ApiError
from gateway.mesh_client import MeshClient
from kvmesh import wire
from kvmesh.actor import MeshError, RemoteError
from kvmesh.wire import Message, ResponseAck, ResponseCancel

log = logging.getLogger("kvmesh.gateway.responses")
FINISH_WAIT_S = 5.0  # at shutdown, how long jobs whose streams have ended get to store it
_DETACHED = web.RequestKey("kvmesh.detached", asyncio.Future)  # the answer sent at once
_STREAM = web.RequestKey("kvmesh.detached_stream", web.StreamResponse)  # or the one it streams


@dataclass
class Job:
    task: asyncio.Task[Any]
    tenant: str
    record: telemetry_http.RequestRecord
    cancelled: bool = False


class BackgroundJobs:
    """This gateway process's background responses (see the module contract)."""

    def __init__(self, mesh: MeshClient, timeout: float, retry_after: float) -> None:
        self.mesh = mesh
        self.timeout = timeout  # a cancel's wait for the job's end, here or at its gateway
        self.retry_after = retry_after
        self.jobs: dict[str, Job] = {}
        mesh.on_join.append(self._listen)

    async def _listen(self) -> None:
        await self.mesh.serve(wire.RESPONSES_CANCEL, (ResponseCancel,), self._on_cancel,
                              through_drain=True)

    async def run(self, request: web.Request,
                  work: Awaitable[web.StreamResponse]) -> web.StreamResponse:
        detached: asyncio.Future[web.StreamResponse | None] = \
            asyncio.get_running_loop().create_future()
        request[_DETACHED] = detached
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait((task, detached), return_when=asyncio.FIRST_COMPLETED)
            if not detached.done():
                detached.cancel()
                return task.result()  # its answer, or its error
            answer = detached.result()
            # a stream is the work's own to write: wait for it, but a client that leaves
            # (this handler cancelled) no longer cancels the work
            return answer if answer is not None else await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done() and not task.cancelled():  # it ended before this handler woke:
                return task.result()  # the client had it all, then left (not a 499)
            if not detached.done():  # the client left first: the request ends, as any
                task.cancel()
            elif task.cancelled() and _STREAM in request and not _cancelling():
                return request[_STREAM]  # the work was cancelled: its stream has ended
            raise

    @staticmethod
    def streaming(request: web.Request, response: web.StreamResponse) -> None:
        """The work of a detached request streams its answer in `response` (prepared)."""
        request[_STREAM] = response

    def detach(self, request: web.Request, rid: str, tenant: str,
               answer: web.StreamResponse | None) -> None:
        """Called by the work, in its task: `answer` goes out now (None: the work streams
        its own, `run` waits for it) and the work carries on, its chunks on a telemetry
        record of its own (the request counted, with its tokens and the status it ended
        with, when it ends)."""
        task = asyncio.current_task()
        assert task is not None
        self.jobs[rid] = Job(task, tenant, telemetry_http.carry_on(request))
        task.add_done_callback(lambda t: self._ended(rid, t))
        request[_DETACHED].set_result(answer)

    def _ended(self, rid: str, task: asyncio.Task[Any]) -> None:
        job = self.jobs.pop(rid)
        job.record.finish_detached(_status(job, task))
        if not task.cancelled() and isinstance(task.exception(), ApiError):
            log.info("background response %s failed: %s", rid, task.exception())
        elif not task.cancelled() and task.exception() is not None:
            log.error("background response %s failed", rid, exc_info=task.exception())

    def was_cancelled(self, rid: str) -> bool:
        job = self.jobs.get(rid)
        return job is not None and job.cancelled

    async def cancel(self, tenant: str, rid: str, gateway: str) -> None:
        """Stop `tenant`'s job `rid` at the gateway process reading `gateway`; return once it
        has ended. 503 when that process does not answer within the timeout."""
        if gateway == self.mesh.inbox:
            await self._stop(tenant, rid)
            return
        try:
            # that process waits up to `timeout` for the job: ask it for longer
            await self.mesh.request(wire.RESPONSES_CANCEL, ResponseCancel(tenant, rid, gateway),
                                    2 * self.timeout, ResponseAck)
        except RemoteError as exc:
            raise ApiError.from_reply(exc.reply) from None
        except MeshError as exc:
            log.warning("cancel of %s: its gateway did not answer: %s", rid, exc)
            raise ApiError(503, "the gateway running this response did not answer; retry",
                           "service_unavailable", code="gateway_unavailable",
                           retry_after=self.retry_after) from None

    async def _on_cancel(self, msg: Message, raw: object) -> Message | None:
        assert isinstance(msg, ResponseCancel)
        if msg.gateway != self.mesh.inbox:
            return None  # another process runs it
        await self._stop(msg.tenant, msg.id)
        return ResponseAck(msg.id)

    async def _stop(self, tenant: str, rid: str) -> None:
        job = self.jobs.get(rid)
        if job is None or job.tenant != tenant:
            return
        job.cancelled = True
        job.task.cancel()
        await asyncio.wait((job.task,), timeout=self.timeout)

    async def finish(self) -> None:
        """At shutdown, after the streams were given their grace: wait a little for the jobs
        to store how they ended, then cancel the rest."""
        tasks = [job.task for job in self.jobs.values()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=FINISH_WAIT_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=FINISH_WAIT_S)


def _cancelling() -> bool:
    """Whether the running task (a handler) is being cancelled: its client left."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _status(job: Job, task: asyncio.Task[Any]) -> int:
    """What a finished job counts as: 200, its error's status, 499 cancelled by a client,
    503 cancelled by the gateway's shutdown."""
    if task.cancelled():
        return 499 if job.cancelled else 503
    err = task.exception()
    if err is None:
        return 200
    return err.status if isinstance(err, ApiError) else 500


JOBS = web.AppKey("background_jobs", BackgroundJobs)
