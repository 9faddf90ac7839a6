"""The skinny projections compiled for Hopper (sm_90a) ahead of time, no GPU needed: where the
weights' loads fall against the PDL wait, and that no tile spills registers.

`skinny_linear.stream` fetches weights before `begin`'s `griddepcontrol.wait` (`pdl.py`'s
contract allows only them there): a one-tile K loads the whole weight tile first, a streamed
K prefetches its first tile's lines into L2 and loads nothing before the wait. Each shape is
compiled plain and in its role in `DecoderLayer.forward_summed` (the residual added in the
epilogue, or the norm applied as x loads): neither may move a load across the wait. Compiled with
the JIT's alignment hints (16-byte pointers, strides and K), with the `ptxas` that Triton
carries; skipped where Triton or its NVIDIA backend is missing (CI's CPU machine).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
try:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError:
    pytest.skip("this Triton has no ahead-of-time compile API", allow_module_level=True)
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
if not CUOBJDUMP.exists():
    pytest.skip("Triton's NVIDIA tools are missing", allow_module_level=True)

from inference.engine.triton_kernels.qkv_rope_cache import _qkv_rope_cache_kernel  # noqa: E402
from inference.engine.triton_kernels.skinny_linear import (  # noqa: E402
    MAX_ROWS,
    _skinny_linear_kernel,
    tile_for,
)

ALIGNED = ("X", "W", "Bias", "Y", "Q", "Cache", "K", "stride_x", "stride_w", "stride_y",
           "stride_q", "cache_kv_stride", "cache_slot_stride", "cache_head_stride")
POINTERS = {"X": "*bf16", "W": "*bf16", "Bias": "*bf16", "Y": "*bf16", "Q": "*bf16",
            "Cache": "*bf16", "Pos": "*i64", "Cos": "*fp32", "Sin": "*fp32", "Slots": "*i64",
            "Res": "*bf16", "SumsqOut": "*fp32", "NormSumsq": "*fp32", "NormW": "*bf16",
            "eps": "fp32"}


class Compiled:
    """One kernel's PTX and resource use on sm_90a."""

    def __init__(self, kernel, constexprs: dict, warps: int, stages: int, tmp: Path):
        names = kernel.arg_names
        signature = {a: "constexpr" if a in constexprs else POINTERS.get(a, "i32")
                     for a in names}
        src = ASTSource(kernel, signature,
                        constexprs={(names.index(a),): v for a, v in constexprs.items()},
                        attrs={(names.index(a),): [["tt.divisibility", 16]]
                               for a in ALIGNED if a in names})
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                                  options={"num_warps": warps, "num_stages": stages})
        self.ptx: str = compiled.asm["ptx"]
        cubin = tmp / f"{kernel.__name__}.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = subprocess.run([str(CUOBJDUMP), "--dump-resource-usage", str(cubin)],
                               capture_output=True, text=True, check=True).stdout
        self.registers = int(re.search(r"REG:(\d+)", usage).group(1))
        self.local_bytes = int(re.search(r"LOCAL:(\d+)", usage).group(1))  # spills
        before, wait, _ = self.ptx.partition("griddepcontrol.wait")
        assert wait, "no PDL wait compiled"
        self.loads_before_wait = len(re.findall(r"\bld\.global", before))
        self.prefetches_before_wait = len(re.findall(r"prefetch\.global\.L2", before))


def _skinny(m: int, n: int, k: int, silu_mul: bool, role: str, tmp: Path
            ) -> tuple[Compiled, object]:
    """`role`: "plain", "add" (`skinny_linear_add`) or "norm" (a `RowNorm` over the sums of
    128 programs, as the 8B's O and down projections leave them)."""
    t = tile_for(m, n, k)
    constexprs = dict(SILU_MUL=silu_mul, HAS_BIAS=False, ADD=role == "add",
                      NORM=role == "norm", BLOCK_M=t.block_m, BLOCK_N=t.block_n,
                      BLOCK_K=t.block_k, PRO_M=1 if m == 1 else t.block_m, BLOCK_P=128,
                      WHOLE=k <= t.block_k, PDL=True)
    return Compiled(_skinny_linear_kernel, constexprs, t.warps, t.stages, tmp), t


def _tile_vectors(block_n: int, block_k: int, warps: int) -> int:
    """16-byte loads a thread issues for a `block_n x block_k` bf16 tile."""
    return block_n * block_k * 2 // 16 // (32 * warps)


# (n, k, silu_mul, role in the decoder's forward_summed): SmolLM2-135M's QKV, O, gate-up,
# down; Llama-3.1-8B's; each compiled plain too
SMOL_ONE_TILE = [(960, 576, False, "norm"), (576, 576, False, "add"),
                 (3072, 576, False, "norm")]
STREAMED = [(576, 1536, True, "add"), (6144, 4096, False, "norm"), (4096, 4096, False, "add"),
            (28672, 4096, False, "norm"), (4096, 14336, True, "add")]


@pytest.mark.parametrize("summed", [False, True])
@pytest.mark.parametrize("rows", [1, 8])
@pytest.mark.parametrize("n,k,silu_mul,role", SMOL_ONE_TILE)
def test_one_tile_weights_load_before_the_wait(rows, n, k, silu_mul, role, summed, tmp_path):
    c, t = _skinny(rows, n, k, silu_mul, role if summed else "plain", tmp_path)
    assert t.block_k >= k
    assert c.loads_before_wait == _tile_vectors(t.block_n, t.block_k, t.warps)
    assert c.prefetches_before_wait == 0
    assert c.local_bytes == 0, f"{c.registers} registers, {c.local_bytes} B spilled"


@pytest.mark.parametrize("summed", [False, True])
@pytest.mark.parametrize("n,k,silu_mul,role", STREAMED)
def test_streamed_weights_prefetch_before_the_wait(n, k, silu_mul, role, summed, tmp_path):
    rows = 1 if silu_mul else MAX_ROWS
    c, t = _skinny(rows, n, k, silu_mul, role if summed else "plain", tmp_path)
    assert t.block_k < k
    assert c.loads_before_wait == 0
    # the first tile's 128-byte lines, spread over the threads (each thread at least one)
    assert c.prefetches_before_wait == max(1, t.block_n * t.block_k // 64 // (32 * t.warps))
    assert c.local_bytes == 0, f"{c.registers} registers, {c.local_bytes} B spilled"


@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("heads,kv_heads,head_dim,k", [(9, 3, 64, 576), (32, 8, 128, 4096)])
def test_qkv_rope_cache_fetches_weights_before_the_wait(heads, kv_heads, head_dim, k, norm,
                                                        tmp_path):
    n = (heads + 2 * kv_heads) * head_dim
    t = tile_for(1, n, k)
    block_n = min(t.block_n, head_dim)
    whole = k <= t.block_k
    constexprs = dict(Q_HEADS=heads, KV_HEADS=kv_heads, HALF=head_dim // 2, HAS_BIAS=False,
                      NORM=norm, BLOCK_M=t.block_m, BLOCK_N=block_n, BLOCK_K=t.block_k,
                      PRO_M=1 if norm else t.block_m, BLOCK_P=128, WHOLE=whole, FP8_MAX=0.0,
                      PDL=True)
    c = Compiled(_qkv_rope_cache_kernel, constexprs, t.warps, t.stages, tmp_path)
    if whole:
        assert c.loads_before_wait == _tile_vectors(block_n, t.block_k, t.warps)
    else:
        assert c.loads_before_wait == 0 and c.prefetches_before_wait > 0
    assert c.local_bytes == 0, f"{c.registers} registers, {c.local_bytes} B spilled"
