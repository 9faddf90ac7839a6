"""vLLM's request-level histograms on the worker, observed once per finished request: prompt
and generated tokens, the longest choice, what it asked for (`max_tokens`, `n`), and its time
after it was scheduled split at its first token (prefill, decode, inference = both). Each is
observed under kvmesh's name and vLLM's, with the same values; an embedding request counts
only its prompt."""

from __future__ import annotations

from types import SimpleNamespace

from opentelemetry import trace
from prometheus_client import REGISTRY

from inference.engine.embedding import EmbeddingOutput
from inference.engine.engine_stats import EngineStats
from inference.engine.outputs import StepOutput, Usage
from inference.engine_protocol import EngineStep
from inference.telemetry import GenerationTelemetry

MODEL = "request-histograms-test"
IDLE = EngineStats(0, 0, 64, 64, 0, 0, 0, 0, 0)


def _sum_count(name: str) -> tuple[float, float]:
    ours = [REGISTRY.get_sample_value(f"kvmesh_worker_{name}_{s}", {"model": MODEL}) or 0.0
            for s in ("sum", "count")]
    theirs = [REGISTRY.get_sample_value(f"vllm:{name}_{s}", {"model_name": MODEL}) or 0.0
              for s in ("sum", "count")]
    assert ours == theirs, name
    return ours[0], ours[1]


def _step(tel: GenerationTelemetry, at: float, outputs: list[StepOutput],
          prefills: list[tuple[str, int]] | None = None) -> None:
    """A 1 ms step arriving `at` seconds after the request's admission."""
    tel.on_step(EngineStep(outputs=outputs, stats=IDLE, prefills=prefills or [],
                           seconds=0.001, batch_size=2, batch_tokens=2),
                tel.requests["r1"].admitted + at)


NAMES = ("request_prompt_tokens", "request_generation_tokens",
         "request_max_num_generation_tokens", "request_params_max_tokens", "request_params_n",
         "request_prefill_time_seconds", "request_decode_time_seconds",
         "request_inference_time_seconds")


def test_a_finished_request_is_observed_once_under_both_names() -> None:
    tel = GenerationTelemetry(MODEL, "w0", lambda: IDLE)
    before = {name: _sum_count(name) for name in NAMES}
    req = SimpleNamespace(request_id="r1", prompt_token_ids=[1, 2, 3, 4, 5], max_tokens=8, n=2)
    tel.admitted(req, trace.INVALID_SPAN)
    # scheduled 0.010 s after admission (the step's start: its arrival less its 1 ms)
    _step(tel, 0.011, [StepOutput("r1", 0, [7], "a"), StepOutput("r1", 1, [8], "b")],
          prefills=[("r1", 5)])
    _step(tel, 0.051, [StepOutput("r1", 0, [9, 10], "cd"),
                       StepOutput("r1", 1, [11], "e", finish_reason="stop")])
    _step(tel, 0.111, [StepOutput("r1", 0, [12], "f", finish_reason="length",
                                  usage=Usage(5, 5, 0))])
    moved = {name: tuple(a - b for a, b in zip(_sum_count(name), before[name], strict=True))
             for name in NAMES}
    assert moved["request_prompt_tokens"] == (5, 1)
    assert moved["request_generation_tokens"] == (5, 1)
    assert moved["request_max_num_generation_tokens"] == (4, 1)  # choice 0: 1 + 2 + 1
    assert moved["request_params_max_tokens"] == (8, 1)
    assert moved["request_params_n"] == (2, 1)
    prefill, decode, inference = (moved[f"request_{k}_time_seconds"][0]
                                  for k in ("prefill", "decode", "inference"))
    assert abs(prefill - 0.001) < 1e-6  # scheduled at 0.010, first token at 0.011
    assert abs(decode - 0.100) < 1e-6  # first token at 0.011, last at 0.111
    assert abs(inference - (prefill + decode)) < 1e-9


def test_an_embedding_request_counts_only_its_prompt() -> None:
    tel = GenerationTelemetry(MODEL, "w0", lambda: IDLE)
    before = {name: _sum_count(name) for name in NAMES}
    req = SimpleNamespace(request_id="e1", inputs=[[1, 2], [3, 4, 5]])
    tel.admitted(req, trace.INVALID_SPAN)
    t0 = tel.requests["e1"].admitted
    tel.on_step(EngineStep(outputs=[], stats=IDLE, prefills=[("e1", 5)], seconds=0.001,
                           batch_size=2, batch_tokens=5,
                           embeddings=[EmbeddingOutput("e1", 0, b"", None),
                                       EmbeddingOutput("e1", 1, b"", Usage(5, 0, 0))]),
                t0 + 0.01)
    assert "e1" not in tel.requests
    after = {name: _sum_count(name) for name in NAMES}
    assert after["request_prompt_tokens"] == (before["request_prompt_tokens"][0] + 5,
                                              before["request_prompt_tokens"][1] + 1)
    assert all(after[n] == before[n] for n in NAMES if n != "request_prompt_tokens")
