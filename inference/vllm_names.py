"""vLLM's metric names for what a kvmesh worker measures, so that tools built for vLLM (Grafana
dashboards, KEDA or HPA autoscalers on custom metrics, llm-d's endpoint picker) read kvmesh
workers unchanged.

Contract:
- `VLLM_NAMES` maps each kvmesh worker family (its name after `kvmesh_worker_`) to the vLLM
  family that carries the same measurement; `EXPOSED` is every vLLM name as it appears in a
  scrape (counters with `_total`). Docs and tests check against these two, nothing else.
- vLLM's label `model_name` stands where kvmesh has `model`, `finished_reason` where it has
  `reason`; the values are the same (the served model name).
- `Twin(ours, theirs)` is one measurement under two names: `labels(*values)` returns a child
  whose `observe`/`inc` feed both (the same label values, in the same order). With `theirs`
  None (vLLM names off) the child is kvmesh's own. Children are cached per label tuple, so the
  hot path costs one dict lookup more than a plain family, not a second `labels()` call.
- Units follow vLLM: `vllm:kv_cache_usage_perc` is a fraction in [0, 1] (as vLLM exports it,
  despite the name); token counters count tokens; latencies are seconds.
- kvmesh counts `vllm:request_success_total` per finished choice (vLLM: per request; they
  differ only for `n > 1`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from telemetry.metrics import observe_many

# kvmesh worker family -> vLLM family (prometheus_client adds `_total` to counters).
VLLM_NAMES: dict[str, str] = {
    # engine state, read from the engine's stats at scrape time
    "num_requests_running": "vllm:num_requests_running",
    "num_requests_waiting": "vllm:num_requests_waiting",
    "kv_cache_usage_ratio": "vllm:kv_cache_usage_perc",
    "prefix_cache_query_tokens": "vllm:prefix_cache_queries",
    "prefix_cache_hit_tokens": "vllm:prefix_cache_hits",
    "preemptions": "vllm:num_preemptions",
    # observed per request / per token by the worker's telemetry
    "time_to_first_token_seconds": "vllm:time_to_first_token_seconds",
    "inter_token_latency_seconds": "vllm:inter_token_latency_seconds",
    "e2e_request_latency_seconds": "vllm:e2e_request_latency_seconds",
    "queue_time_seconds": "vllm:request_queue_time_seconds",
    "prompt_tokens": "vllm:prompt_tokens",
    "generation_tokens": "vllm:generation_tokens",
    "finish_reason": "vllm:request_success",
    # observed once per finished request (vLLM's request-level histograms)
    "request_prompt_tokens": "vllm:request_prompt_tokens",
    "request_generation_tokens": "vllm:request_generation_tokens",
    "request_max_num_generation_tokens": "vllm:request_max_num_generation_tokens",
    "request_params_max_tokens": "vllm:request_params_max_tokens",
    "request_params_n": "vllm:request_params_n",
    "request_prefill_time_seconds": "vllm:request_prefill_time_seconds",
    "request_decode_time_seconds": "vllm:request_decode_time_seconds",
    "request_inference_time_seconds": "vllm:request_inference_time_seconds",
}
COUNTERS = frozenset({"prefix_cache_query_tokens", "prefix_cache_hit_tokens", "preemptions",
                      "prompt_tokens", "generation_tokens", "finish_reason"})
EXPOSED: frozenset[str] = frozenset(
    v + "_total" if k in COUNTERS else v for k, v in VLLM_NAMES.items())
LABELS = {"model": "model_name", "reason": "finished_reason"}


def vllm_labels(labels: list[str]) -> list[str]:
    """vLLM's names for kvmesh's labels, in the same order."""
    return [LABELS.get(label, label) for label in labels]


class _Both:
    """A child of a `Twin`: one observation, two families."""

    __slots__ = ("a", "b")

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b

    def observe(self, value: float) -> None:
        self.a.observe(value)
        self.b.observe(value)

    def observe_many(self, values: Sequence[float]) -> None:
        observe_many(self.a, values)
        observe_many(self.b, values)

    def inc(self, amount: float = 1) -> None:
        self.a.inc(amount)
        self.b.inc(amount)


class Twin:
    """A kvmesh family and, optionally, its vLLM twin (see the module contract)."""

    def __init__(self, ours: Any, theirs: Any | None) -> None:
        self.ours, self.theirs = ours, theirs
        self._children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            mine = self.ours.labels(*values)
            child = mine if self.theirs is None else _Both(mine, self.theirs.labels(*values))
            self._children[values] = child
        return child
