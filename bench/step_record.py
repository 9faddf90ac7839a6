"""What a step's record for the worker costs to serialize, the engine's side and the worker's.

    python bench/step_record.py [--seqs 256] [--reps 2000]

256 decode outputs (a request id like the gateway's, one token, a short text; one in 32 with
a finish reason and usage), the engine's counters and one prompt row, as `EngineStep` holds
them: µs to pickle the record with its outputs pickled as they are (`plain`) and as the record
pickles now (`EngineStep.__getstate__`: the outputs as one msgpack body), and to unpickle each
(the worker's side). One process, warm caches: the engine process pays more
per step, but the ratio is the point.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
import uuid
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    from inference.engine.engine_stats import EngineStats
    from inference.engine.outputs import StepOutput, Usage
    from inference.engine_protocol import EngineStep

    ap = argparse.ArgumentParser()
    ap.add_argument("--seqs", type=int, default=256)
    ap.add_argument("--reps", type=int, default=2000)
    args = ap.parse_args()
    rows = [StepOutput("cmpl-" + uuid.uuid4().hex, 0, [1000 + i], " word", None,
                       "length" if i % 32 == 0 else None,
                       Usage(200, 128, 0) if i % 32 == 0 else None)
            for i in range(args.seqs)]
    stats = EngineStats(args.seqs, 3, 10000, 5000, 5000, 100, 5000, 100000, 0)
    step = EngineStep(rows, stats, [(rows[0].request_id, 200)], 1, 0.005, args.seqs, args.seqs)

    for _ in range(2):
        print("plain  ", _costs(lambda: _plain_dumps(step), pickle.loads, args.reps))
        print("msgpack", _costs(lambda: pickle.dumps(step, pickle.HIGHEST_PROTOCOL),
                                pickle.loads, args.reps))


def _plain_dumps(step: object) -> bytes:
    """What pickling `step` cost before its `__getstate__`: its fields as they are."""
    return pickle.dumps(step.__dict__, pickle.HIGHEST_PROTOCOL)


def _costs(dumps: Callable[[], bytes], loads: Callable[[bytes], object], reps: int) -> str:
    t = time.perf_counter()
    for _ in range(reps):
        body = dumps()
    dumped = (time.perf_counter() - t) / reps * 1e6
    t = time.perf_counter()
    for _ in range(reps):
        loads(body)
    loaded = (time.perf_counter() - t) / reps * 1e6
    return f"pickle {dumped:.0f} us, unpickle {loaded:.0f} us, {len(body)} bytes"


if __name__ == "__main__":
    main()
