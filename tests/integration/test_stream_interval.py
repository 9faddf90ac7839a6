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


def _chat(client, stream: bool) -> tuple[list[str], list[list[str]], list[str | None], int]:
    """n=2 greedy chat with logprobs: each choice's text, its logprob tokens, its finish
    reason, and the completion tokens reported."""
    kw = {"stream_options": {"include_usage": True}} if stream else {}
    resp = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count to five."}], n=2,
        max_tokens=12, temperature=0, logprobs=True, top_logprobs=2, stream=stream, **kw)
    texts, tokens, finish, used = ["", ""], [[], []], [None, None], 0
    for event in (resp if stream else [resp]):
        for c in event.choices:
            texts[c.index] += (c.delta.content if stream else c.message.content) or ""
            tokens[c.index] += [lp.token for lp in (c.logprobs.content if c.logprobs else [])]
            finish[c.index] = c.finish_reason or finish[c.index]
        if event.usage is not None:
            used = event.usage.completion_tokens
    return texts, tokens, finish, used


@pytest.mark.parametrize("stream", [True, False])
def test_two_choices_with_logprobs_come_out_the_same_at_either_interval(
        interval_mesh: Mesh, client, stream: bool) -> None:
    from openai import OpenAI

    held = OpenAI(base_url=interval_mesh.base_url + "/v1", api_key="unused", max_retries=0,
                  timeout=60)
    every_token = _chat(client, stream)
    assert _chat(held, stream) == every_token
    texts, tokens, finish, used = every_token
    assert all(texts) and all(finish) and used == sum(map(len, tokens)) > 0
