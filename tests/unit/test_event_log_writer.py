"""`EventLogWriter`: one append in flight at a time, what queued meanwhile in the next,
numbered without a gap; an append the store did not answer is tried again; a refused one
stops the log for good."""

import asyncio

from gateway.errors import ApiError
from gateway.responses_event_log import EventLogWriter


class _Store:
    """The store's side of appends: each waits for the test to let it through."""

    def __init__(self, refuse_at: int = -1, status: int = 409) -> None:
        self.appends: list[tuple[int, list[bytes]]] = []
        self.gate = asyncio.Event()
        self.in_flight = 0
        self.refuse_at, self.status = refuse_at, status

    async def append_events(self, tenant: str, response_id: str, first: int,
                            events: list[bytes], ttl: float) -> None:
        self.in_flight += 1
        assert self.in_flight == 1, "two appends in flight"
        await self.gate.wait()
        self.in_flight -= 1
        if first == self.refuse_at:
            self.refuse_at = -1 if self.status == 503 else first  # a 503 once; a 409 for good
            raise ApiError(self.status, "refused")
        self.appends.append((first, events))


async def _written(refuse_at: int = -1, status: int = 409) -> _Store:
    store = _Store(refuse_at, status)
    writer = EventLogWriter(store, "t", "resp_x", 0)  # type: ignore[arg-type]
    writer.add([b"0"])
    await asyncio.sleep(0)  # the first append is in flight
    writer.add([b"1", b"2"])
    writer.add([b"3"])
    store.gate.set()
    await writer.close()
    writer.add([b"4"])
    await writer.close()
    return store


def test_batches_coalesce_while_one_append_is_in_flight() -> None:
    store = asyncio.run(_written())
    assert store.appends == [(0, [b"0"]), (1, [b"1", b"2", b"3"]), (4, [b"4"])]


def test_a_refused_append_stops_the_log() -> None:
    store = asyncio.run(_written(refuse_at=1))
    assert store.appends == [(0, [b"0"])]  # nothing after the refusal, not even event 4


def test_an_append_the_store_did_not_answer_is_tried_again_with_what_came_since() -> None:
    store = asyncio.run(_written(refuse_at=1, status=503))
    assert store.appends == [(0, [b"0"]), (1, [b"1", b"2", b"3"]), (4, [b"4"])]
