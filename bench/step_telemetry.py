"""The worker's telemetry per engine step, on this machine: `GenerationTelemetry.on_step` for
a step of N decoding requests (one token each), as the worker runs it for every step it gets
from its engine (the vLLM-named twins on, the default). `--tracing`: every request traced,
through the SDK's batch processor to an exporter that drops the spans (the export's own cost,
on its thread, is not counted).

    python bench/step_telemetry.py [--seqs 256] [--steps 2000] [--tracing]
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

from inference.engine.engine_stats import EngineStats
from inference.engine_protocol import EngineStep
from inference.telemetry import GenerationTelemetry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqs", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tracing", action="store_true")
    args = ap.parse_args()
    if args.tracing:
        _trace_everything()
    stats = EngineStats(args.seqs, 0, 1000, 500, 500, 0, 0, 0, 0)
    gt = GenerationTelemetry("bench-model", "w0", lambda: stats)
    rids = [f"cmpl-{i:032x}" for i in range(args.seqs)]
    for rid in rids:
        req = SimpleNamespace(request_id=rid, model="bench-model", prompt_token_ids=[1] * 200,
                              max_tokens=128, priority=0, tenant="")
        gt.admitted(req, gt.start(req))
    rows = [(rid, 0, [7], " x", None, None, None) for rid in rids]
    # The engine lists a decode's row only for a traced request (engine_protocol.EngineStep).
    scheduled = [(rid, 1, False) for rid in rids] if args.tracing else []
    per_step = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            gt.on_step(EngineStep(rows, stats, scheduled, time.time_ns(), 0.004,
                                  batch_size=args.seqs, batch_tokens=args.seqs),
                       time.monotonic())
        per_step.append((time.perf_counter() - t0) / args.steps * 1e6)
    print(f"on_step, {args.seqs} outputs: {statistics.median(per_step):.1f} us a step "
          f"(rounds: {', '.join(f'{x:.1f}' for x in per_step)})")


def _trace_everything() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)


if __name__ == "__main__":
    main()
