"""Would one persistent launch make SmolLM2's one-row decode step fast enough (issue 16's
0.3 ms)? Grid barriers and a chain of one-row projections in one launch, against the same
chain launched one kernel a phase.

    python bench/persistent_probe.py [--layers 30] [--out DIR]

SmolLM2's step replays five kernels a layer at about 3.2 us each (156 launches, 0.49 ms on
an H100), where a layer's 7 MB of weights need ~2.4 us of memory time. A persistent kernel
(one program per SM, a grid barrier between phases) pays a barrier instead of a launch, and
can load the next phase's weights before it waits. Timed here, each in a CUDA graph
(`graph_timing.graph_us`), one row, bf16 weights of SmolLM2's shapes (QKV 576->960, O
576->576, gate-up 576->3072, down 1536->576) and attention between QKV and O (9 query heads
on 3 KV heads of 64, a 256-token context in a contiguous cache per layer, one program a
head or, with `_split<n>`, a chunk of one), `--layers` layers:

- `barriers`: the persistent kernel with every phase's work masked off: five barriers a layer;
- `persistent`: the projections in one launch, a barrier after each phase;
- `persistent_prefetch`: the same, each program loading its next phase's weights before it
  waits at the barrier;
- `launches`: the same phases, one launch each (no PDL);
- `only_<phase>`: the persistent kernel with one phase's work on (all barriers): what that
  phase adds over `barriers`, per layer, is `phase_us_over_barriers`;
- `..._split<n>`: attention spread over n chunks of each head's context (n x 9 programs),
  the chunks merged as the O phase loads its input (flash-decoding's merge, no extra
  barrier); without the suffix one program a head.

The whole chains' outputs (`persistent`, `persistent_prefetch`, `persistent_split<n>`,
`launches`) are checked against torch's; after every persistent variant the barrier
counter must equal programs x barriers (one arrival a program a barrier). Prints one JSON
line (and `persistent_probe.json` under --out).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.graph_timing import graph_us

HIDDEN, QKV, INTER = 576, 960, 1536
HEADS, KV_HEADS, HEAD_DIM, CONTEXT = 9, 3, 64, 256
PHASE_NAMES = ("qkv", "attend", "out", "gate_up", "down")
MAX_SPLIT = 8  # attention's chunks a head, at most (32 tokens each)
SPLITS = (4, 8)  # the chunk counts timed beside one program a head
# (N, K, BLOCK_N): one block of columns per program at 132 SMs, the whole K in one tile.
# `_persistent` spells the same shapes out as literals (its tiles' shapes must be constexpr).
PHASES = {"qkv": (QKV, HIDDEN, 8), "out": (HIDDEN, HIDDEN, 8),
          "gate_up": (2 * INTER, HIDDEN, 32), "down": (HIDDEN, INTER, 8)}


@triton.jit
def _grid_sync(counter, target):
    """Every program arrives, then waits until `target` arrivals: all writes before it, by
    any program, are visible after it. The counter starts each launch at zero, and every
    program of the grid must be resident at once (one program per SM)."""
    tl.debug_barrier()
    tl.atomic_add(counter, 1, sem="release", scope="gpu")
    seen = tl.atomic_add(counter, 0, sem="acquire", scope="gpu")
    while seen < target:
        seen = tl.atomic_add(counter, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


@triton.jit
def _tile(w, pid, N: tl.constexpr, K: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, ON):
    """This program's `[BN, BK]` block of a `[N, K]` weight (zero where out of range)."""
    cols = pid * BN + tl.arange(0, BN)
    ks = tl.arange(0, BK)
    mask = (cols[:, None] < N) & (ks[None, :] < K) & ON
    return tl.load(w + cols[:, None] * K + ks[None, :], mask=mask, other=0.0)


@triton.jit
def _apply(tile, x, y, res, pid, N: tl.constexpr, K: tl.constexpr, BN: tl.constexpr,
           BK: tl.constexpr, GLU: tl.constexpr, NORM: tl.constexpr, RES: tl.constexpr, ON,
           stats, SPLIT: tl.constexpr):
    """y[cols] = tile @ x (+ res[cols] with RES): x read whole, RMS-normed with NORM (no
    weight), or silu(x[:K]) * x[K:2K] with GLU, or (SPLIT > 0) attention's output merged
    from the partials `_attend` left in x and `stats`."""
    ks = tl.arange(0, BK)
    if SPLIT > 0:
        v = _merged(x, stats, ks, K, SPLIT)
    elif GLU:
        g = tl.load(x + ks, mask=ks < K, other=0.0)
        u = tl.load(x + K + ks, mask=ks < K, other=0.0)
        v = g / (1.0 + tl.exp(-g)) * u
    else:
        v = tl.load(x + ks, mask=ks < K, other=0.0)
    if NORM:
        v = v * tl.math.rsqrt(tl.sum(v * v, axis=0) / K + 1e-6)
    acc = tl.sum(tile.to(tl.float32) * v[None, :], axis=1)
    cols = pid * BN + tl.arange(0, BN)
    if RES:
        acc += tl.load(res + cols, mask=(cols < N) & ON, other=0.0)
    tl.store(y + cols, acc, mask=(cols < N) & ON)


@triton.jit
def _attend(q, kc, vc, part, stats, pid, ON, SPLIT: tl.constexpr):
    """Program `pid` < 9 x SPLIT: query head `pid // SPLIT` over chunk `pid % SPLIT` of its
    KV head's 256 cached keys and values (`[3, 256, 64]` each), in float32: the chunk's
    un-normalised output into `part[pid]` (64), its score max and exp-sum into `stats[pid]`."""
    on = ON & (pid < 9 * SPLIT)
    head, chunk = pid // SPLIT, pid % SPLIT
    d = tl.arange(0, 64)
    t = chunk * (256 // SPLIT) + tl.arange(0, 256 // SPLIT)
    kv = (head // 3) * 256 * 64
    qh = tl.load(q + head * 64 + d, mask=on, other=0.0)
    k = tl.load(kc + kv + t[:, None] * 64 + d[None, :], mask=on, other=0.0).to(tl.float32)
    s = tl.sum(k * qh[None, :], axis=1) * 0.125
    m = tl.max(s, axis=0)
    p = tl.exp(s - m)
    v = tl.load(vc + kv + t[:, None] * 64 + d[None, :], mask=on, other=0.0).to(tl.float32)
    tl.store(part + pid * 64 + d, tl.sum(p[:, None] * v, axis=0), mask=on & (d < 64))
    tl.store(stats + pid * 2, m, mask=on)
    tl.store(stats + pid * 2 + 1, tl.sum(p, axis=0), mask=on)


@triton.jit
def _merged(part, stats, ks, K: tl.constexpr, SPLIT: tl.constexpr):
    """Attention's output at columns `ks` (< K = 9 heads x 64): each head's SPLIT chunks
    merged by their score maxima."""
    ok = ks < K
    first = (ks // 64) * SPLIT  # the head's first chunk
    top = tl.full(ks.shape, -float("inf"), tl.float32)
    for c in tl.static_range(SPLIT):
        top = tl.maximum(top, tl.load(stats + (first + c) * 2, mask=ok, other=0.0))
    num = tl.zeros(ks.shape, tl.float32)
    den = tl.zeros(ks.shape, tl.float32)
    for c in tl.static_range(SPLIT):
        w = tl.exp(tl.load(stats + (first + c) * 2, mask=ok, other=0.0) - top)
        num += w * tl.load(part + (first + c) * 64 + ks % 64, mask=ok, other=0.0)
        den += w * tl.load(stats + (first + c) * 2 + 1, mask=ok, other=1.0)
    return tl.where(ok, num / den, 0.0)


@triton.jit
def _persistent(wq, wo, wg, wd, kc, vc, x, q, part, stats, o, g, counter, layers,
                P: tl.constexpr, QKV: tl.constexpr, ATTEND: tl.constexpr, OUT: tl.constexpr,
                GATE_UP: tl.constexpr, DOWN: tl.constexpr, PREFETCH: tl.constexpr,
                SPLIT: tl.constexpr):
    """The chain, each phase's work on where its flag says (its barrier always); attention
    in SPLIT chunks a head, merged by the O phase."""
    pid = tl.program_id(0)
    tq = _tile(wq, pid, 960, 576, 8, 1024, QKV)
    for layer in range(layers):
        wq_l = wq + layer * 960 * 576
        wo_l = wo + layer * 576 * 576
        wg_l = wg + layer * 3072 * 576
        wd_l = wd + layer * 576 * 1536
        if not PREFETCH:
            tq = _tile(wq_l, pid, 960, 576, 8, 1024, QKV)
        _apply(tq, x, q, x, pid, 960, 576, 8, 1024, False, True, False, QKV, stats, 0)
        if PREFETCH:
            to = _tile(wo_l, pid, 576, 576, 8, 1024, OUT)
        _grid_sync(counter, (layer * 5 + 1) * P)
        _attend(q, kc + layer * 3 * 256 * 64, vc + layer * 3 * 256 * 64, part, stats, pid,
                ATTEND, SPLIT)
        _grid_sync(counter, (layer * 5 + 2) * P)
        if not PREFETCH:
            to = _tile(wo_l, pid, 576, 576, 8, 1024, OUT)
        _apply(to, part, o, x, pid, 576, 576, 8, 1024, False, False, True, OUT, stats, SPLIT)
        if PREFETCH:
            tg = _tile(wg_l, pid, 3072, 576, 32, 1024, GATE_UP)
        _grid_sync(counter, (layer * 5 + 3) * P)
        if not PREFETCH:
            tg = _tile(wg_l, pid, 3072, 576, 32, 1024, GATE_UP)
        _apply(tg, o, g, o, pid, 3072, 576, 32, 1024, False, True, False, GATE_UP, stats,
               0)
        if PREFETCH:
            td = _tile(wd_l, pid, 576, 1536, 8, 2048, DOWN)
        _grid_sync(counter, (layer * 5 + 4) * P)
        if not PREFETCH:
            td = _tile(wd_l, pid, 576, 1536, 8, 2048, DOWN)
        _apply(td, g, x, o, pid, 576, 1536, 8, 2048, True, False, True, DOWN, stats, 0)
        if PREFETCH:
            tq = _tile(wq_l + 960 * 576, pid, 960, 576, 8, 1024, QKV & (layer + 1 < layers))
        _grid_sync(counter, (layer * 5 + 5) * P)


@triton.jit
def _attention_launch(q, kc, vc, part, stats, SPLIT: tl.constexpr):
    _attend(q, kc, vc, part, stats, tl.program_id(0), True, SPLIT)


@triton.jit
def _one_phase(w, x, y, res, stats, N: tl.constexpr, K: tl.constexpr, BN: tl.constexpr,
               BK: tl.constexpr, GLU: tl.constexpr, NORM: tl.constexpr, RES: tl.constexpr,
               SPLIT: tl.constexpr):
    pid = tl.program_id(0)
    _apply(_tile(w, pid, N, K, BN, BK, True), x, y, res, pid, N, K, BN, BK, GLU, NORM, RES,
           True, stats, SPLIT)


class Chain:
    """The probe's weights, caches and activations: x (576) -> q (960) -> attention's
    partials (up to `MAX_SPLIT` chunks a head) -> o = x + O(merged) (576) -> g (3072) -> x =
    o + down(g), through `layers` layers, float32 activations; the QKV and gate-up
    projections RMS-norm their input (no norm weight)."""

    def __init__(self, layers: int, device: torch.device) -> None:
        gen = torch.Generator(device=device).manual_seed(0)

        def weight(n: int, k: int) -> torch.Tensor:
            return (torch.randn(layers, n, k, device=device, generator=gen) / k**0.5).to(
                torch.bfloat16)

        self.layers = layers
        self.wq, self.wo = weight(QKV, HIDDEN), weight(HIDDEN, HIDDEN)
        self.wg, self.wd = weight(2 * INTER, HIDDEN), weight(HIDDEN, INTER)
        cache = (layers, KV_HEADS, CONTEXT, HEAD_DIM)
        self.kc = torch.randn(cache, device=device, generator=gen).to(torch.bfloat16)
        self.vc = torch.randn(cache, device=device, generator=gen).to(torch.bfloat16)
        self.x0 = torch.randn(HIDDEN, device=device, generator=gen)
        self.x = self.x0.clone()
        self.q = torch.zeros(QKV, device=device)
        self.part = torch.zeros(HEADS * MAX_SPLIT, HEAD_DIM, device=device)
        self.stats = torch.zeros(HEADS * MAX_SPLIT, 2, device=device)
        self.o = torch.zeros(HIDDEN, device=device)
        self.g = torch.zeros(2 * INTER, device=device)
        self.counter = torch.zeros(1, dtype=torch.int32, device=device)

    def reference(self) -> torch.Tensor:
        x = self.x0.clone()
        for i in range(self.layers):
            q = (self.wq[i].float() @ _rms(x))[:HIDDEN].view(HEADS, 1, HEAD_DIM)
            kv = torch.arange(HEADS, device=x.device) // (HEADS // KV_HEADS)
            k, v = self.kc[i].float()[kv], self.vc[i].float()[kv]
            p = torch.softmax((q @ k.transpose(1, 2)) * HEAD_DIM**-0.5, dim=-1)
            o = x + self.wo[i].float() @ (p @ v).reshape(HIDDEN)
            g = self.wg[i].float() @ _rms(o)
            x = o + self.wd[i].float() @ (torch.nn.functional.silu(g[:INTER]) * g[INTER:])
        return x

    def persistent(self, programs: int, work: tuple[str, ...], prefetch: bool,
                   split: int = 1) -> None:
        """One launch of the chain; `work`: the phases (of `PHASE_NAMES`) that do theirs;
        attention in `split` chunks a head."""
        self.x.copy_(self.x0)
        self.counter.zero_()
        on = {name.upper(): name in work for name in PHASE_NAMES}
        _persistent[(programs,)](self.wq, self.wo, self.wg, self.wd, self.kc, self.vc, self.x,
                                 self.q, self.part, self.stats, self.o, self.g, self.counter,
                                 self.layers, P=programs, PREFETCH=prefetch, SPLIT=split,
                                 num_warps=8, **on)

    def launches(self, split: int = 1) -> None:
        self.x.copy_(self.x0)
        for i in range(self.layers):
            self._phase(self.wq[i], self.x, self.q, None, PHASES["qkv"], norm=True)
            _attention_launch[(HEADS * split,)](self.q, self.kc[i], self.vc[i], self.part,
                                                self.stats, SPLIT=split, num_warps=8)
            self._phase(self.wo[i], self.part, self.o, self.x, PHASES["out"], split=split)
            self._phase(self.wg[i], self.o, self.g, None, PHASES["gate_up"], norm=True)
            self._phase(self.wd[i], self.g, self.x, self.o, PHASES["down"], glu=True)

    def _phase(self, w: torch.Tensor, src: torch.Tensor, dst: torch.Tensor,
               res: torch.Tensor | None, shape: tuple[int, int, int], glu: bool = False,
               norm: bool = False, split: int = 0) -> None:
        """One phase's launch; `split` > 0: `src` holds attention's partials in that many
        chunks a head, merged as they load."""
        n, k, bn = shape
        _one_phase[(triton.cdiv(n, bn),)](w, src, dst, dst if res is None else res,
                                          self.stats, N=n, K=k, BN=bn,
                                          BK=triton.next_power_of_2(k), GLU=glu, NORM=norm,
                                          RES=res is not None, SPLIT=split, num_warps=8)


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean() + 1e-6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = torch.device("cuda")
    programs = torch.cuda.get_device_properties(device).multi_processor_count
    chain = Chain(args.layers, device)
    want = chain.reference()
    barriers = 5 * args.layers
    result = {"gpu": torch.cuda.get_device_name(device), "programs": programs,
              "layers": args.layers, "barriers": barriers, "us": {}, "rel_err": {}}
    variants = {
        "barriers": lambda: chain.persistent(programs, (), False),
        "persistent": lambda: chain.persistent(programs, PHASE_NAMES, False),
        "persistent_prefetch": lambda: chain.persistent(programs, PHASE_NAMES, True),
        "launches": chain.launches,
        **{f"only_{p}": functools.partial(chain.persistent, programs, (p,), False)
           for p in PHASE_NAMES},
        **{f"persistent_split{n}": functools.partial(chain.persistent, programs, PHASE_NAMES,
                                                     False, n) for n in SPLITS},
        **{f"only_attend_split{n}": functools.partial(chain.persistent, programs, ("attend",),
                                                      False, n) for n in SPLITS},
        **{f"only_out_split{n}": functools.partial(chain.persistent, programs, ("out",),
                                                   False, n) for n in SPLITS},
    }
    for name, call in variants.items():
        call()
        torch.cuda.synchronize()
        if name != "launches":
            arrived = int(chain.counter.item())
            assert arrived == programs * barriers, f"{name}: {arrived} arrivals"
        if name != "barriers" and not name.startswith("only_"):
            err = ((chain.x - want).norm() / want.norm()).item()
            result["rel_err"][name] = err
            assert err < 2e-2, f"{name}: relative error {err}"
        result["us"][name] = round(graph_us(call, reps=5), 1)
    us = result["us"]
    result["us_per_barrier"] = round(us["barriers"] / barriers, 3)
    result["us_per_layer"] = {k: round(v / args.layers, 2) for k, v in us.items()}
    only = [k.removeprefix("only_") for k in us if k.startswith("only_")]
    result["phase_us_over_barriers"] = {
        p: round((us[f"only_{p}"] - us["barriers"]) / args.layers, 2) for p in only}
    line = json.dumps(result)
    print(line)
    if args.out:
        with open(os.path.join(args.out, "persistent_probe.json"), "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
