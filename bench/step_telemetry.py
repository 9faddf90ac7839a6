"""The worker's telemetry per engine step, on this machine: `GenerationTelemetry.on_step` for
a step of N decoding requests (one token each), as the worker runs it for every step it gets
from its engine (the vLLM-named twins on, the default). Each step `--turnover` requests end
(their last token, with usage) and as many new ones are admitted and prefilled (their rows in
`EngineStep.prefills`), as at 256 streams of 128 tokens. `--tracing`: every request traced,
the finished spans encoded in batches as the OTLP/HTTP exporter sends them (protobuf), and
each round waits for that: the worker's exporter thread does this work on the worker's GIL.

    python bench/step_telemetry.py [--seqs 256] [--steps 2000] [--turnover 2] [--tracing]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from types import SimpleNamespace

from inference.engine.engine_stats import EngineStats
from inference.engine.outputs import StepOutput, Usage
from inference.engine_protocol import EngineStep
from inference.telemetry import GenerationTelemetry

PROMPT_TOKENS = 200


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqs", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--turnover", type=int, default=2)
    ap.add_argument("--tracing", action="store_true")
    args = ap.parse_args()
    flush = _trace_everything() if args.tracing else lambda: None
    stats = EngineStats(args.seqs, 0, 1000, 500, 500, 0, 0, 0, 0)
    gt = GenerationTelemetry("bench-model", "w0", lambda: stats)
    names = (f"cmpl-{i:032x}" for i in itertools.count())
    running = [next(names) for _ in range(args.seqs)]
    for rid in running:
        _admit(gt, rid)
    usage = Usage(PROMPT_TOKENS, 128)
    per_step = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            ending, running = running[:args.turnover], running[args.turnover:]
            starting = [next(names) for _ in range(args.turnover)]
            for rid in starting:
                _admit(gt, rid)
            rows = [StepOutput(rid, 0, [7], " x") for rid in running]
            rows += [StepOutput(rid, 0, [7], " x", None, "length", usage) for rid in ending]
            prefills = [(rid, PROMPT_TOKENS) for rid in starting]
            gt.on_step(EngineStep(rows, stats, prefills, time.time_ns(), 0.004,
                                  batch_size=args.seqs, batch_tokens=args.seqs + 199 * 2),
                       time.monotonic())
            running += starting
        flush()
        per_step.append((time.perf_counter() - t0) / args.steps * 1e6)
    print(f"on_step, {args.seqs} outputs, {args.turnover} in and out: "
          f"{statistics.median(per_step):.1f} us a step "
          f"(rounds: {', '.join(f'{x:.1f}' for x in per_step)})")


def _admit(gt: GenerationTelemetry, rid: str) -> None:
    req = SimpleNamespace(request_id=rid, model="bench-model",
                          prompt_token_ids=[1] * PROMPT_TOKENS, max_tokens=128, priority=0,
                          tenant="")
    gt.admitted(req, gt.start(req))


def _trace_everything() -> Callable[[], object]:
    """Trace every span, as the worker's SDK does; return what waits for their export."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Encode(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            encode_spans(spans).SerializePartialToString()
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Encode()))
    trace.set_tracer_provider(provider)
    return provider.force_flush


if __name__ == "__main__":
    main()
