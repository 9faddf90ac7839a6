"""The worker's Prometheus families: per-request and per-step measurements observed by
inference/telemetry.py, and the engine's live counters read at scrape time.

Contract:
- `worker(vllm_names)` returns the process's `WorkerMetrics`, made on the first call (which
  decides whether vLLM's names are exported too; `WorkerConfig.vllm_metrics`). Names start
  with `kvmesh_worker_`; label `model` (the served model name).
- Each measurement vLLM also exports is observed under vLLM's name too (`vllm:*`, label
  `model_name`; inference/vllm_names.py), at the same call; vLLM's request-level histograms
  (`RequestHistograms`) are observed once per finished request.
- `WorkerMetrics.watch_engine(model, stats)` registers an `EngineCollector`: running/waiting,
  KV usage, prefix-cache and grammar counters from the engine's latest `EngineStats`, read at
  scrape time (from the metrics thread, so `stats()` must only read).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from inference.vllm_names import VLLM_NAMES, Twin, vllm_labels
from telemetry.metrics import E2E_BUCKETS, ITL_BUCKETS, TTFT_BUCKETS, once

STEP_BUCKETS = (.001, .0025, .005, .01, .02, .03, .05, .075, .1, .2, .5, 1, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# vLLM's 1-2-5 series for token counts (it stops at max_model_len; this at 200k)
TOKEN_BUCKETS = tuple(m * 10 ** e for e in range(6) for m in (1, 2, 5))[:-1]
N_BUCKETS = (1, 2, 5, 10, 20)


class WorkerMetrics:
    """The worker's families; with `vllm_names` each measurement vLLM also exports is observed
    under vLLM's name too (inference/vllm_names.py), at the same call."""

    def __init__(self, vllm_names: bool = True) -> None:
        self.vllm_names = vllm_names
        p = "kvmesh_worker_"
        twin = self._twin
        self.requests = Counter(p + "requests", "Requests by outcome status (200 finished, 4xx "
                                "refused, 499 cancelled, 5xx failed)", ["model", "status"])
        self.finish = twin(Counter, "finish_reason", "Finished choices by finish reason",
                           ["model", "reason"])
        self.queue_time = twin(Histogram, "queue_time_seconds", "Admission to first scheduled "
                               "step", ["model"], buckets=TTFT_BUCKETS)
        self.ttft = twin(Histogram, "time_to_first_token_seconds", "Admission to first token",
                         ["model"], buckets=TTFT_BUCKETS)
        self.itl = twin(Histogram, "inter_token_latency_seconds", "Time between tokens of one "
                        "choice", ["model"], buckets=ITL_BUCKETS)
        self.e2e = twin(Histogram, "e2e_request_latency_seconds", "Admission to the last token",
                        ["model"], buckets=E2E_BUCKETS)
        self.prompt_tokens = twin(Counter, "prompt_tokens",
                                  "Prompt tokens of requests the engine started", ["model"])
        self.generation_tokens = twin(Counter, "generation_tokens", "Tokens generated",
                                      ["model"])
        self.per_request = RequestHistograms(twin)
        self.step_time = Histogram(p + "engine_step_seconds", "Engine step wall time",
                                   ["model"], buckets=STEP_BUCKETS)
        self.batch_size = Histogram(p + "engine_batch_size", "Sequences per engine step",
                                    ["model"], buckets=BATCH_BUCKETS)

    def _twin(self, kind: Any, name: str, doc: str, labels: list[str], **kw: Any) -> Twin:
        ours = kind("kvmesh_worker_" + name, doc, labels, **kw)
        theirs = kind(VLLM_NAMES[name], doc, vllm_labels(labels), **kw) \
            if self.vllm_names else None
        return Twin(ours, theirs)

    def watch_engine(self, model: str, stats: Callable[[], Any]) -> None:
        """Export the engine's live counters (`EngineStats`), read at scrape time."""
        REGISTRY.register(EngineCollector(model, stats, self.vllm_names))


class RequestHistograms:
    """vLLM's request-level histograms, each observed once when a request finishes (label
    `model`): its sizes, what it asked for, and where its time went after it was scheduled
    (prefill: to its first token; decode: from there to its last; inference: both)."""

    def __init__(self, twin: Callable[..., Twin]) -> None:
        def tokens(name: str, doc: str) -> Twin:
            return twin(Histogram, name, doc, ["model"], buckets=TOKEN_BUCKETS)

        def seconds(name: str, doc: str) -> Twin:
            return twin(Histogram, name, doc, ["model"], buckets=E2E_BUCKETS)

        self.prompt_tokens = tokens("request_prompt_tokens", "Prompt tokens of a request")
        self.generation_tokens = tokens("request_generation_tokens",
                                        "Tokens a request generated (every choice)")
        self.max_generation_tokens = tokens("request_max_num_generation_tokens",
                                            "Tokens of a request's longest choice")
        self.max_tokens = tokens("request_params_max_tokens", "A request's max_tokens")
        self.n = twin(Histogram, "request_params_n", "A request's n", ["model"],
                      buckets=N_BUCKETS)
        self.prefill = seconds("request_prefill_time_seconds",
                               "A request's first scheduled step to its first token")
        self.decode = seconds("request_decode_time_seconds",
                              "A request's first token to its last")
        self.inference = seconds("request_inference_time_seconds",
                                 "A request's first scheduled step to its last token")


class EngineCollector(Collector):
    """Running/waiting, KV usage and prefix-cache counters from the engine's last stats; each
    family that vLLM also exports is yielded under vLLM's name too when `vllm_names`."""

    def __init__(self, model: str, stats: Callable[[], Any], vllm_names: bool = True) -> None:
        self.model = model
        self.stats = stats
        self.vllm_names = vllm_names

    def _family(self, kind: Any, name: str, doc: str, value: float) -> Iterable[Any]:
        names = [("kvmesh_worker_" + name, "model")]
        if self.vllm_names and name in VLLM_NAMES:
            names.append((VLLM_NAMES[name], "model_name"))
        for full, label in names:
            f = kind(full, doc, labels=[label])
            f.add_metric([self.model], value)
            yield f

    def collect(self) -> Iterable[Any]:
        s = self.stats()
        g, c = GaugeMetricFamily, CounterMetricFamily
        for kind, name, doc, value in (
            (g, "num_requests_running", "Sequences running in the engine", s.running),
            (g, "num_requests_waiting", "Sequences waiting for the engine", s.waiting),
            (g, "kv_cache_usage_ratio", "Used KV blocks / all KV blocks (a fraction in [0, 1])",
             s.used_blocks / max(1, s.num_blocks)),
            (g, "kv_cache_blocks", "KV blocks in the pool", s.num_blocks),
            (g, "kv_cache_free_blocks", "Free KV blocks", s.free_blocks),
            (g, "kv_cache_cached_blocks", "Blocks holding a reusable prefix", s.cached_blocks),
            (g, "prefix_cache_hit_ratio", "Prompt tokens served from cached KV blocks / prompt "
             "tokens looked up, since start",
             s.prefix_hit_tokens / s.prompt_tokens if s.prompt_tokens else 0.0),
            (c, "prefix_cache_hit_tokens", "Prompt tokens found in the prefix cache",
             s.prefix_hit_tokens),
            (c, "prefix_cache_query_tokens", "Prompt tokens looked up in the prefix cache",
             s.prompt_tokens),
            (c, "preemptions", "Sequences preempted for KV space", s.preemptions),
        ):
            yield from self._family(kind, name, doc, value)
        gs = getattr(s, "grammar", None)  # constrained decoding (inference/engine/grammar.py)
        if gs is not None:
            for name, doc, value in (
                ("grammar_compiles", "Grammars compiled (cache misses)", gs.compiles),
                ("grammar_cache_hits", "Constrained sequences served a cached compiled grammar",
                 gs.cache_hits),
                ("grammar_compile_seconds", "Time spent compiling grammars", gs.compile_seconds),
                ("grammar_mask_seconds", "Host time building constrained rows' token bitmasks",
                 gs.mask_seconds),
                ("constrained_tokens", "Tokens sampled under a grammar mask",
                 gs.constrained_tokens),
            ):
                yield from self._family(c, name, doc, value)


def worker(vllm_names: bool = True) -> WorkerMetrics:
    """The worker's metrics; the first call decides whether vLLM's names are exported too."""
    return once("worker", lambda: WorkerMetrics(vllm_names))
