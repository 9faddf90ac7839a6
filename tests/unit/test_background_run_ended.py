"""`BackgroundJobs.run` when its handler is cancelled (the client left) after the work ended
but before the handler woke: the work's answer stands (CI saw a whole failed stream counted
as a 499 in that window)."""

import asyncio

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.mesh_client import MeshClient
from gateway.responses_background import BackgroundJobs
from kvmesh.config import GatewayConfig


def _run(work_ends: bool) -> web.StreamResponse | str:
    async def main() -> web.StreamResponse | str:
        jobs = BackgroundJobs(MeshClient(GatewayConfig()), 1.0, 1.0)
        answer = web.Response(status=200)
        handler: asyncio.Task[web.StreamResponse] | None = None

        async def work() -> web.StreamResponse:
            assert handler is not None
            handler.cancel()  # the client leaves as the work ends (or while it runs)
            if not work_ends:
                await asyncio.sleep(30)
            return answer

        handler = asyncio.ensure_future(
            jobs.run(make_mocked_request("POST", "/v1/responses"), work()))
        try:
            result = await handler
        except asyncio.CancelledError:
            return "cancelled"
        assert result is answer
        return result
    return asyncio.run(main())


def test_work_that_ended_before_the_handler_woke_answers_as_it_ended() -> None:
    assert isinstance(_run(work_ends=True), web.Response)


def test_a_client_that_leaves_while_the_work_runs_cancels_it() -> None:
    assert _run(work_ends=False) == "cancelled"
