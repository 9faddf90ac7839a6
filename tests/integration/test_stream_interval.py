"""`stream_interval` end to end: a worker started with `KVMESH_WORKER_STREAM_INTERVAL=4` streams
the same greedy answer as the session mesh's workers (interval 1), in a quarter of the events,
through the official `openai` client. Runs on a private mesh of one worker."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import MODEL, Mesh
from tests.integration.private_mesh import private_mesh

REQUEST = {"model": MODEL, "prompt": "The three primary colours are", "max_tokens": 24,
           "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
           "extra_body": {"ignore_eos": True}}


@pytest.fixture(scope="module")
def interval_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    logs: Path = tmp_path_factory.mktemp("interval-mesh")
    with private_mesh(logs, workers=("si",), worker_env={
            "KVMESH_WORKER_STREAM_INTERVAL": "4", "KVMESH_WORKER_DTYPE": "float32"}) as (m, _):
        yield m


def _stream(client) -> tuple[list[str], int]:  # client: openai.OpenAI
    """The streamed text deltas (events with text) and the completion tokens reported."""
    texts, tokens = [], 0
    for event in client.completions.create(**REQUEST):
        if event.choices and event.choices[0].text:
            texts.append(event.choices[0].text)
        if event.usage is not None:
            tokens = event.usage.completion_tokens
    return texts, tokens


def test_an_interval_worker_streams_the_same_answer_in_fewer_events(
        interval_mesh: Mesh, client) -> None:
    from openai import OpenAI

    every_token, n = _stream(client)
    held, n_held = _stream(OpenAI(base_url=interval_mesh.base_url + "/v1", api_key="unused",
                                  max_retries=0, timeout=60))
    assert n == n_held == 24
    assert "".join(held) == "".join(every_token)
    assert len(every_token) >= 20  # one event a token, bar a few empty deltas
    assert len(held) <= 1 + math.ceil((n - 1) / 4)  # the first token, then every 4
