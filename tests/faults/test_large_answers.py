"""Result-cache answers over NATS's max payload (issue 13, item 6): such an answer is stored in
parts and served whole from the cache, and one that cannot be stored still releases its
single-flight lease at once, so an identical request never waits the lease out."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from tests.faults.fake_backend import BIG_CHUNKS, BIG_TEXT, FAKE_MODEL, HUGE_TEXT
from tests.faults.fake_mesh import FakeMesh
from tests.integration.helpers import post

CHAT = "/v1/chat/completions"


def cacheable(marker: str) -> dict[str, Any]:
    text = f"{marker} {uuid.uuid4().hex}"
    return {"model": FAKE_MODEL, "messages": [{"role": "user", "content": text}],
            "max_tokens": 4, "temperature": 0}


def _cache_header(headers: dict[str, str]) -> str:
    return {k.lower(): v for k, v in headers.items()}.get("x-kvmesh-cache", "")


def test_an_answer_over_the_nats_max_payload_is_cached_in_parts(fmesh: FakeMesh) -> None:
    body = cacheable("fake:big")
    status, first, headers = post(fmesh.open_url + CHAT, body)
    assert status == 200 and _cache_header(headers) == "miss"
    assert len(json.dumps(first)) > 1 << 20
    deadline = time.monotonic() + 10
    while True:  # stored just after the answer, part by part
        status, again, headers = post(fmesh.open_url + CHAT, body)
        assert status == 200
        if _cache_header(headers) == "hit":
            break
        assert time.monotonic() < deadline, "the large answer was never served from the cache"
    assert again["choices"][0]["message"]["content"] == BIG_TEXT * BIG_CHUNKS


def test_an_answer_that_cannot_be_cached_releases_its_lease_at_once(fmesh: FakeMesh) -> None:
    """The open gateway waits up to 1 s for a leader; a lease never released made every
    identical request wait that long (60 s in production) and then compute anyway."""
    body = cacheable("fake:huge-chunk")
    status, first, _ = post(fmesh.open_url + CHAT, body)
    assert status == 200 and first["choices"][0]["message"]["content"] == HUGE_TEXT
    log = fmesh.logs / "gateway-open.log"
    deadline = time.monotonic() + 10
    while b"over the NATS max payload: not cached" not in log.read_bytes():
        assert time.monotonic() < deadline, "no warning about the answer that was not cached"
        time.sleep(0.1)
    started = time.monotonic()
    status, _, headers = post(fmesh.open_url + CHAT, body)
    assert status == 200 and _cache_header(headers) == "miss"
    assert time.monotonic() - started < 0.9, "it waited for a lease nobody held any more"
