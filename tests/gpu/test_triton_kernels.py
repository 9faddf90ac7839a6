"""Each Triton kernel against a float32 PyTorch reference on fresh random inputs.

Covers batch sizes, context lengths that end mid-block, GQA ratios 1/3/4/8, shuffled and padded
block tables, and outputs poisoned with NaN before every run (an unwritten element fails).
"""

from __future__ import annotations

import os

import pytest
import torch

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if not torch.cuda.is_available() and not INTERPRET:
    pytest.skip("needs CUDA (or TRITON_INTERPRET=1)", allow_module_level=True)
pytest.importorskip("triton")

from inference.engine.attention import AttentionMetadata  # noqa: E402
from inference.engine.triton_attention import TritonAttentionBackend  # noqa: E402
from inference.engine.triton_kernels.activation import silu_and_mul  # noqa: E402
from inference.engine.triton_kernels.decode_attention import decode_attention  # noqa: E402
from inference.engine.triton_kernels.kv_write import reshape_and_cache  # noqa: E402
from inference.engine.triton_kernels.norm import fused_add_rms_norm, rms_norm  # noqa: E402
from inference.engine.triton_kernels.prefill_attention import prefill_attention  # noqa: E402
from inference.engine.triton_kernels.qkv_rope_cache import qkv_rope_cache  # noqa: E402
from inference.engine.triton_kernels.rope import apply_rope  # noqa: E402
from inference.engine.triton_kernels.rope_cache import rope_and_cache  # noqa: E402
from inference.engine.triton_kernels.skinny_linear import (  # noqa: E402
    RowNorm,
    Tile,
    skinny_linear,
    skinny_linear_add,
)

DTYPES = [torch.float32, torch.float16] + ([] if INTERPRET else [torch.bfloat16])
TOL = {torch.float32: 2e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}
PAGE = 16


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert not torch.isnan(out).any(), "unwritten (NaN-poisoned) or NaN output"
    return ((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


def make_paged(seq_lens, kv_heads, head_dim, dtype, device, gen, spare_blocks=3):
    """A random pool and a shuffled block table with padding columns pointing at block 0."""
    need = [(n + PAGE - 1) // PAGE for n in seq_lens]
    num_blocks = sum(need) + spare_blocks + 1
    pool = torch.randn(2, num_blocks, PAGE, kv_heads, head_dim, generator=gen).to(dtype)
    perm = torch.randperm(num_blocks - 1, generator=gen) + 1  # block 0 is never owned
    width = max(need) + 2
    tables = torch.zeros(len(seq_lens), width, dtype=torch.int32)
    i = 0
    for b, n in enumerate(need):
        tables[b, :n] = perm[i:i + n].to(torch.int32)
        i += n
    return pool.to(device), tables.to(device)


def gather_kv(pool, table, n):
    """Keys and values of positions 0..n-1 of one sequence, float32: [n, kv_heads, D]."""
    pos = torch.arange(n, device=pool.device)
    blocks = table.long()[pos // PAGE]
    return pool[0, blocks, pos % PAGE].float(), pool[1, blocks, pos % PAGE].float()


def ref_attention(q, pool, tables, seq_lens, q_lens, scale):
    """Float32 causal attention of each sequence's new rows over its paged context."""
    heads = q.shape[1]
    outs, row = [], 0
    for b, (n, ql) in enumerate(zip(seq_lens, q_lens, strict=False)):
        k, v = gather_kv(pool, tables[b], n)
        group = heads // k.shape[1]
        k = k.repeat_interleave(group, 1)
        v = v.repeat_interleave(group, 1)
        qb = q[row:row + ql].float()
        s = torch.einsum("qhd,khd->hqk", qb, k) * scale
        pos_q = torch.arange(n - ql, n, device=q.device)[:, None]
        s = s.masked_fill(torch.arange(n, device=q.device)[None, :] > pos_q, float("-inf"))
        outs.append(torch.einsum("hqk,khd->qhd", s.softmax(-1), v))
        row += ql
    return torch.cat(outs)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kv_write_puts_each_token_at_its_slot_and_skips_padding(dtype, device):
    gen = torch.Generator().manual_seed(1)
    kv_heads, head_dim, blocks, t = 3, 64, 9, 20
    pool = torch.randn(2, blocks, PAGE, kv_heads, head_dim, generator=gen).to(dtype).to(device)
    before = pool.clone()
    slots = torch.randperm(blocks * PAGE, generator=gen)[:t]
    slots[[3, 11]] = -1
    qkv = torch.randn(t, 2 * kv_heads + 4, head_dim, generator=gen).to(dtype).to(device)
    k, v = qkv[:, 4:4 + kv_heads], qkv[:, 4 + kv_heads:]  # strided views, as the model has
    reshape_and_cache(k, v, pool, slots.to(device))
    expect = before.clone().view(2, blocks * PAGE, kv_heads, head_dim)
    keep = slots >= 0
    expect[0, slots[keep]] = k[keep.to(device)]
    expect[1, slots[keep]] = v[keep.to(device)]
    assert torch.equal(pool.view_as(expect), expect)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("group", [1, 3, 4, 8])
@pytest.mark.parametrize("splits", [1, 4, 13])
def test_decode_attention_matches_reference(dtype, group, splits, device):
    gen = torch.Generator().manual_seed(group * 100 + splits)
    kv_heads, head_dim = (2, 64) if group != 3 else (3, 64)
    for batch in ([1, 3, 8] if not INTERPRET else [1, 5]):
        seq_lens = torch.randint(1, 300, (batch,), generator=gen).tolist()
        seq_lens[0] = 16 * 5 + 7  # ends mid-block
        pool, tables = make_paged(seq_lens, kv_heads, head_dim, dtype, device, gen)
        q = torch.randn(batch, kv_heads * group, head_dim, generator=gen).to(dtype).to(device)
        out = torch.full_like(q, float("nan"))
        lens = torch.tensor(seq_lens, dtype=torch.int32, device=device)
        decode_attention(q, pool, tables, lens, head_dim**-0.5, splits, out=out)
        ref = ref_attention(q, pool, tables, seq_lens, [1] * batch, head_dim**-0.5)
        assert rel_err(out, ref) < TOL[dtype]


def test_decode_attention_zero_length_rows_give_zeros(device):
    gen = torch.Generator().manual_seed(7)
    pool, tables = make_paged([40, 1], 2, 64, torch.float32, device, gen)
    q = torch.randn(3, 8, 64, generator=gen).to(device)
    tables = torch.cat([tables, tables[:1]])
    lens = torch.tensor([40, 1, 0], dtype=torch.int32, device=device)
    for splits in (1, 4):
        out = torch.full_like(q, float("nan"))
        decode_attention(q, pool, tables, lens, 0.125, splits, out=out)
        assert torch.equal(out[2], torch.zeros_like(out[2]))
        ref = ref_attention(q[:2], pool, tables, [40, 1], [1, 1], 0.125)
        assert rel_err(out[:2], ref) < TOL[torch.float32]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("group", [1, 3, 4, 8])
def test_prefill_over_cached_prefix_matches_reference(dtype, group, device):
    gen = torch.Generator().manual_seed(group)
    kv_heads = 3 if group == 3 else 2
    head_dim = 64 if group != 8 else 128
    # (cached prefix, new tokens): cold prompts, prefix hits ending mid-block, decode rows
    cases = [(0, 37), (32, 70), (45, 1), (0, 1), (100, 16), (7, 130)]
    if INTERPRET:
        cases = [(0, 37), (45, 1), (19, 20)]
    seq_lens = [c + n for c, n in cases]
    q_lens = [n for _, n in cases]
    pool, tables = make_paged(seq_lens, kv_heads, head_dim, dtype, device, gen)
    q = torch.randn(sum(q_lens), kv_heads * group, head_dim, generator=gen).to(dtype).to(device)
    qsl = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32)
    out = torch.full_like(q, float("nan"))
    prefill_attention(q, pool, tables, torch.tensor(seq_lens, dtype=torch.int32, device=device),
                      qsl.to(device), max(q_lens), head_dim**-0.5, out=out)
    ref = ref_attention(q, pool, tables, seq_lens, q_lens, head_dim**-0.5)
    assert rel_err(out, ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_backend_writes_then_attends_for_prefill_and_decode(dtype, device):
    gen = torch.Generator().manual_seed(3)
    heads, kv_heads, head_dim = 8, 2, 64
    backend = TritonAttentionBackend(PAGE, num_sms=8)
    prompt = [21, 50, 3]
    pool, tables = make_paged([n + 4 for n in prompt], kv_heads, head_dim, dtype, device, gen)
    pool.fill_(float("nan"))  # the backend must only read what it wrote
    slot_of = lambda b, p: tables[b, p // PAGE].item() * PAGE + p % PAGE  # noqa: E731
    lens = list(prompt)
    q_lens = list(prompt)
    start = [0] * 3
    for step in range(3):
        t = sum(q_lens)
        q = torch.randn(t, heads, head_dim, generator=gen).to(dtype).to(device)
        k = torch.randn(t, kv_heads, head_dim, generator=gen).to(dtype).to(device)
        v = torch.randn(t, kv_heads, head_dim, generator=gen).to(dtype).to(device)
        slots = [slot_of(b, start[b] + i) for b in range(3) for i in range(q_lens[b])]
        qsl = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32)
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
            query_start_loc=qsl.to(device),
            seq_lens=torch.tensor(lens, dtype=torch.int32, device=device),
            block_tables=tables, max_query_len=max(q_lens), max_seq_len=max(lens))
        backend.begin_step(meta)
        out = backend.forward(q, k, v, pool, meta, head_dim**-0.5)
        ref = ref_attention(q, pool, tables, lens, q_lens, head_dim**-0.5)
        assert rel_err(out, ref) < TOL[dtype], f"step {step}"
        start = list(lens)
        lens = [n + 1 for n in lens]
        q_lens = [1, 1, 1]


def hf_rms_norm(x, w, eps):
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return w * y.to(x.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [576, 1024])
def test_rms_norm_and_fused_residual_match_transformers_rounding(dtype, hidden, device):
    gen = torch.Generator().manual_seed(hidden)
    x = torch.randn(7, hidden, generator=gen).to(dtype).to(device)
    r = torch.randn(7, hidden, generator=gen).to(dtype).to(device)
    w = (1 + 0.1 * torch.randn(hidden, generator=gen)).to(dtype).to(device)
    ref = hf_rms_norm(x, w, 1e-5)
    torch.testing.assert_close(rms_norm(x, w, 1e-5), ref, atol=0, rtol=TOL[dtype])
    out, res = fused_add_rms_norm(x, r, w, 1e-5)
    torch.testing.assert_close(res, x + r, atol=0, rtol=0)
    torch.testing.assert_close(out, hf_rms_norm(x + r, w, 1e-5), atol=0, rtol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_and_mul_matches_torch(dtype, device):
    gen = torch.Generator().manual_seed(5)
    x = (3 * torch.randn(5, 2 * 1536, generator=gen)).to(dtype).to(device)
    ref = torch.nn.functional.silu(x[:, :1536]) * x[:, 1536:]
    torch.testing.assert_close(silu_and_mul(x), ref, atol=1e-6, rtol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads,kv_heads,head_dim", [(9, 3, 64), (32, 8, 128)])
def test_rope_matches_transformers_rotate_half(dtype, heads, kv_heads, head_dim, device):
    gen = torch.Generator().manual_seed(heads)
    t, max_pos = 11, 4096
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    freqs = torch.outer(torch.arange(max_pos).float(), inv_freq)
    cos, sin = freqs.cos().to(device), freqs.sin().to(device)
    qkv = torch.randn(t, heads + 2 * kv_heads, head_dim, generator=gen).to(dtype).to(device)
    pos = torch.randint(0, max_pos, (t,), generator=gen).to(device)
    q, k = qkv[:, :heads], qkv[:, heads:heads + kv_heads]

    def ref(x):
        c = torch.cat([cos[pos], cos[pos]], -1)[:, None].to(dtype)
        s = torch.cat([sin[pos], sin[pos]], -1)[:, None].to(dtype)
        x1, x2 = x[..., : head_dim // 2], x[..., head_dim // 2:]
        return x * c + torch.cat([-x2, x1], -1) * s

    q_ref, k_ref, v_before = ref(q), ref(k), qkv[:, heads + kv_heads:].clone()
    apply_rope(q, k, pos, cos, sin)
    # Per-op rounding as transformers; the GPU may still differ by an ulp here and there.
    assert rel_err(q, q_ref) < TOL[dtype] / 4
    assert rel_err(k, k_ref) < TOL[dtype] / 4
    assert torch.equal(qkv[:, heads + kv_heads:], v_before)


POOL_DTYPES = [None] + ([] if INTERPRET else [torch.float8_e4m3fn])  # None: the activations'


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pool_dtype", POOL_DTYPES)
@pytest.mark.parametrize("heads,kv_heads,head_dim", [(9, 3, 64), (32, 8, 128)])
def test_rope_and_cache_equals_rope_then_kv_write(dtype, pool_dtype, heads, kv_heads,
                                                  head_dim, device):
    """The fused kernel gives exactly the two kernels' queries and pool, padding skipped."""
    gen = torch.Generator().manual_seed(heads + head_dim)
    t, max_pos, blocks = 23, 4096, 6
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    freqs = torch.outer(torch.arange(max_pos).float(), inv_freq)
    cos, sin = freqs.cos().to(device), freqs.sin().to(device)
    qkv = (4 * torch.randn(t, heads + 2 * kv_heads, head_dim, generator=gen)).to(dtype)
    pos = torch.randint(0, max_pos, (t,), generator=gen).to(device)
    slots = torch.randperm(blocks * PAGE, generator=gen)[:t]
    slots[[0, 7, 22]] = -1
    pool = torch.randn(2, blocks, PAGE, kv_heads, head_dim, generator=gen).to(
        pool_dtype or dtype).to(device)
    got_qkv, want_qkv = qkv.to(device), qkv.clone().to(device)
    got_pool, want_pool = pool.clone(), pool.clone()

    def views(x):  # strided views of one fused QKV output, as the model has
        return x[:, :heads], x[:, heads:heads + kv_heads], x[:, heads + kv_heads:]

    q, k, v = views(want_qkv)
    apply_rope(q, k, pos, cos, sin)
    reshape_and_cache(k, v, want_pool, slots.to(device))
    q, k, v = views(got_qkv)
    rope_and_cache(q, k, v, got_pool, slots.to(device), pos, cos, sin)
    assert torch.equal(got_qkv[:, :heads], want_qkv[:, :heads])
    assert torch.equal(got_pool.view(torch.uint8), want_pool.view(torch.uint8))
    assert not torch.equal(got_pool.view(torch.uint8), pool.view(torch.uint8))


HALF = [torch.float16] + ([] if INTERPRET else [torch.bfloat16])


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("silu_mul", [False, True])
@pytest.mark.parametrize("rows,block_m", [(1, 16), (3, 16), (16, 16), (1, 4), (3, 4)])
@pytest.mark.parametrize("block_k", [64, 512])
def test_skinny_linear_equals_linear(dtype, silu_mul, rows, block_m, block_k, device):
    """Plain and with SiLU·mul in front (at 1 row its one-row path), at 1, 3 and 16 rows, on
    the dot's tile and on the FMA tile, K streamed and K in one tile, N and K that are no
    multiple of the tile, a bias: equal to the float32 product of the separate kernel's
    input."""
    gen = torch.Generator().manual_seed(rows + 7 * silu_mul)
    n, k = 200, 328
    x = (2 * torch.randn(rows, 2 * k if silu_mul else k, generator=gen)).to(dtype).to(device)
    w = (0.05 * torch.randn(n, k, generator=gen)).to(dtype).to(device)
    bias = torch.randn(n, generator=gen).to(dtype).to(device)
    y = skinny_linear(x, w, bias, silu_mul, tile=Tile(block_m, 16, block_k, 4, 2))
    want_x = silu_and_mul(x) if silu_mul else x
    ref = want_x.float() @ w.float().T + bias.float()
    assert y.shape == (rows, n)
    assert rel_err(y, ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("rows,block_m", [(1, 16), (3, 16), (16, 16), (3, 4)])
@pytest.mark.parametrize("block_k", [64, 512])
def test_the_residual_added_in_the_epilogue_and_the_norm_in_the_prologue(dtype, rows, block_m,
                                                                          block_k, device):
    """`skinny_linear_add` is the projection rounded, plus the residual rounded (bit for bit
    what the projection and `fused_add_rms_norm` give), with each program's sums of squares;
    a projection given those sums (`RowNorm`) equals the same projection of `rms_norm`'s
    output, K streamed and in one tile. Sums that miss some programs' columns fail."""
    gen = torch.Generator().manual_seed(rows * block_k)
    n, k, n2 = 200, 328, 72
    tile = Tile(block_m, 16, block_k, 4, 2)
    x = (2 * torch.randn(rows, k, generator=gen)).to(dtype).to(device)
    w = (0.05 * torch.randn(n, k, generator=gen)).to(dtype).to(device)
    r = torch.randn(rows, n, generator=gen).to(dtype).to(device)
    nw = (1 + 0.1 * torch.randn(n, generator=gen)).to(dtype).to(device)
    w2 = (0.05 * torch.randn(n2, n, generator=gen)).to(dtype).to(device)
    got = skinny_linear_add(x, w, r, tile=tile)
    want = fused_add_rms_norm(skinny_linear(x, w, tile=tile), r, nw, 1e-5)
    assert torch.equal(got.stream, want[1])
    assert got.sumsq.shape == (rows, 13)  # cdiv(200, 16) programs
    sq = got.stream.float().pow(2).sum(1)
    assert torch.allclose(got.sumsq.sum(1), sq, rtol=1e-5)
    normed = skinny_linear(got.stream, w2, tile=tile, norm=RowNorm(got.sumsq, nw, 1e-5))
    ref = skinny_linear(want[0], w2, tile=tile)
    assert rel_err(normed, ref) < TOL[dtype] / 10
    short = RowNorm(got.sumsq[:, :7].contiguous(), nw, 1e-5)  # six programs' sums missing
    assert rel_err(skinny_linear(got.stream, w2, tile=tile, norm=short), ref) > TOL[dtype]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("heads,kv_heads,head_dim", [(9, 3, 64), (4, 2, 128)])
@pytest.mark.parametrize("rows", [1, 5, 16])
def test_qkv_rope_cache_equals_the_projection_then_rope_and_cache(dtype, heads, kv_heads,
                                                                   head_dim, rows, device):
    """One launch gives the separate kernels' queries and pool (a bias, padding slots
    skipped, rows at their own positions, untouched slots unchanged), within an ulp here and
    there: the same tile's dot may be compiled to other MMA instructions for the interleaved
    columns."""
    gen = torch.Generator().manual_seed(rows * heads)
    k, max_pos, blocks = 96, 512, 4
    n = (heads + 2 * kv_heads) * head_dim
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    freqs = torch.outer(torch.arange(max_pos).float(), inv_freq)
    cos, sin = freqs.cos().to(device), freqs.sin().to(device)
    x = (2 * torch.randn(rows, k, generator=gen)).to(dtype).to(device)
    w = (0.1 * torch.randn(n, k, generator=gen)).to(dtype).to(device)
    bias = torch.randn(n, generator=gen).to(dtype).to(device)
    pos = torch.randint(0, max_pos, (rows,), generator=gen).to(device)
    slots = torch.randperm(blocks * PAGE, generator=gen)[:rows]
    slots[rows - 1] = -1 if rows > 1 else slots[0]  # graph padding writes nothing
    slots = slots.to(device)
    pool = torch.randn(2, blocks, PAGE, kv_heads, head_dim, generator=gen).to(dtype).to(device)
    got_pool, want_pool = pool.clone(), pool.clone()

    qkv = skinny_linear(x, w, bias).view(rows, heads + 2 * kv_heads, head_dim)
    want_q, kk, vv = qkv[:, :heads], qkv[:, heads:heads + kv_heads], qkv[:, heads + kv_heads:]
    rope_and_cache(want_q, kk, vv, want_pool, slots, pos, cos, sin)
    q = qkv_rope_cache(x, w, bias, heads, got_pool, slots, pos, cos, sin)
    tol = TOL[dtype] / 4
    print(f"q {rel_err(q, want_q):.2e} pool {rel_err(got_pool, want_pool):.2e}")
    assert rel_err(q, want_q) < tol and rel_err(got_pool, want_pool) < tol
    # x as a residual stream with its sums of squares: normed as it loads, as rms_norm would
    nw = (1 + 0.1 * torch.randn(k, generator=gen)).to(dtype).to(device)
    normed_pool = pool.clone()
    q_normed = qkv_rope_cache(rms_norm(x, nw, 1e-5), w, bias, heads, normed_pool, slots, pos,
                              cos, sin)
    sums = RowNorm(x.float().pow(2).view(rows, 3, -1).sum(2), nw, 1e-5)  # three "programs"
    norm_pool = pool.clone()
    q_norm = qkv_rope_cache(x, w, bias, heads, norm_pool, slots, pos, cos, sin, sums)
    assert rel_err(q_norm, q_normed) < tol and rel_err(norm_pool, normed_pool) < tol
    assert rel_err(q_norm, q) > 10 * tol  # the norm did something
    untouched = torch.ones(blocks * PAGE, dtype=torch.bool)
    untouched[slots[slots >= 0].cpu()] = False
    assert torch.equal(got_pool.flatten(1, 2)[:, untouched.to(device)],
                       pool.flatten(1, 2)[:, untouched.to(device)])


@pytest.mark.parametrize("bias", [False, True])
def test_the_models_attention_with_rope_in_the_projection_equals_the_separate_kernels(
        bias, monkeypatch, device):
    """The decoder's attention block, decode step of three sequences whose last token ends
    mid-block: with the QKV kernel rotating and writing the pool (`attend` after it), the
    output and the pool are the separate kernels' (projection, RoPE + KV write, attention)
    within the dot's rounding. Wiring the queries to the wrong heads fails by far."""
    from inference.engine import model
    from inference.engine.config import ModelConfig
    from inference.engine.rotary import RotaryEmbedding

    torch.manual_seed(bias)
    cfg = ModelConfig(vocab_size=64, hidden_size=96, intermediate_size=128, num_layers=1,
                      num_heads=6, num_kv_heads=2, head_dim=32, max_position=256,
                      attention_bias=bias)
    backend = TritonAttentionBackend(block_size=PAGE, num_sms=4)
    attn = model.Attention(cfg, 0, backend, RotaryEmbedding(cfg, 256)).half().to(device)
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.2)
    ctx = torch.tensor([5, 17, 30], device=device)  # tokens in the pool; each step adds one
    tables = torch.arange(6, dtype=torch.int32, device=device).view(3, 2)
    slots = tables.long().gather(1, (ctx // PAGE)[:, None])[:, 0] * PAGE + ctx % PAGE
    meta = AttentionMetadata(slot_mapping=slots, query_start_loc=torch.arange(
        4, dtype=torch.int32, device=device), seq_lens=(ctx + 1).int(), block_tables=tables,
        max_query_len=1, max_seq_len=64, num_decodes=3)
    pool = torch.randn(1, 2, 8, PAGE, 2, 32, device=device).half()
    x = torch.randn(3, 96, device=device).half()

    def run(fused: bool) -> tuple[torch.Tensor, torch.Tensor]:
        monkeypatch.setattr(model.Attention, "_rope_in_projection", lambda self, x: fused)
        kv = pool.clone()
        backend.begin_step(meta)
        with torch.no_grad():
            return attn(ctx, x, kv, meta), kv

    (want, want_pool), (got, got_pool) = run(False), run(True)
    assert rel_err(got, want) < TOL[torch.float16] and rel_err(got_pool, want_pool) < 1e-3
    project = model._fused.qkv_rope_cache
    monkeypatch.setattr(model._fused, "qkv_rope_cache",
                        lambda *args: project(*args).flip(1))  # query heads reversed
    assert rel_err(run(True)[0], want) > 0.1


def test_the_decoder_with_norms_in_its_projections_equals_the_norm_kernels(monkeypatch,
                                                                           device):
    """Two decoder layers and the final norm over a one-row decode step: the layers'
    `forward_summed` (no norm kernel) gives the hidden states `forward` gives with its norm
    kernels, within the dot's rounding; a wrong norm weight fails by far."""
    from inference.engine import model
    from inference.engine.config import ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, hidden_size=96, intermediate_size=160, num_layers=2,
                      num_heads=6, num_kv_heads=2, head_dim=32, max_position=256)
    backend = TritonAttentionBackend(block_size=PAGE, num_sms=4)
    lm = model.DecoderLM(cfg, backend, 256).half().to(device)
    with torch.no_grad():
        for name, p in lm.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name else 0.2 * torch.randn_like(p))
    ctx = torch.tensor([17], device=device)  # the sequence's last token ends mid-block
    tables = torch.tensor([[3, 1]], dtype=torch.int32, device=device)
    slots = tables.long()[0, ctx // PAGE] * PAGE + ctx % PAGE
    meta = AttentionMetadata(slot_mapping=slots, query_start_loc=torch.tensor(
        [0, 1], dtype=torch.int32, device=device), seq_lens=(ctx + 1).int(),
        block_tables=tables, max_query_len=1, max_seq_len=64, num_decodes=1)
    pool = torch.randn(2, 2, 8, PAGE, 2, 32, device=device).half()
    ids = torch.tensor([11], device=device)

    def run(summed: bool) -> torch.Tensor:
        monkeypatch.setattr(model.DecoderLM, "norms_in_projections", lambda self, x: summed)
        backend.begin_step(meta)
        with torch.no_grad():
            return lm(ids, ctx, pool.clone(), meta)

    want, got = run(False), run(True)
    assert rel_err(got, want) < TOL[torch.float16]
    with torch.no_grad():
        lm.layers[1].post_attention_layernorm.weight.mul_(-1)
    assert rel_err(run(True), want) > 0.1


@pytest.mark.skipif(INTERPRET or torch.cuda.get_device_capability()[0] < 9,
                    reason="programmatic dependent launch needs a Hopper GPU")
def test_norms_go_into_the_projections_only_where_they_were_measured_faster():
    """One row of a hidden size loaded as one tile (SmolLM2's 576) with PDL: yes; eight rows,
    or the 8B's 4096, or without PDL: the norm kernels stay (`takes_norm`)."""
    from inference.engine.triton_kernels import pdl
    from inference.engine.triton_kernels.skinny_linear import takes_norm

    one, eight = torch.empty(1, 576, device="cuda"), torch.empty(8, 576, device="cuda")
    assert takes_norm(one, 576)
    assert not takes_norm(eight, 576) and not takes_norm(one, 4096)
    assert not takes_norm(one.cpu(), 576) and pdl.enabled(one)


@pytest.mark.skipif(INTERPRET or torch.cuda.get_device_capability()[0] < 9,
                    reason="programmatic dependent launch needs a Hopper GPU")
def test_a_pdl_chain_in_a_graph_equals_the_same_chain_launched_plainly(monkeypatch):
    """Forty norm -> skinny projection -> SiLU·mul -> skinny projection links, each reading
    the one before and the residual two launches back, replayed from a CUDA graph with PDL
    on: bit-equal to the chain with every launch plain. A kernel that read before its
    predecessor finished would differ; and PDL must actually be on here."""
    from inference.engine.triton_kernels import pdl

    assert pdl.enabled(torch.empty(1, device="cuda"))
    gen = torch.Generator(device="cuda").manual_seed(0)
    k, inter = 1024, 2048
    x0 = torch.randn(1, k, device="cuda", dtype=torch.bfloat16, generator=gen)
    nw = torch.ones(k, device="cuda", dtype=torch.bfloat16)
    up = torch.randn(2 * inter, k, device="cuda", dtype=torch.bfloat16, generator=gen) / 32
    down = torch.randn(k, inter, device="cuda", dtype=torch.bfloat16, generator=gen) / 45

    def chain():
        x, res = x0, torch.zeros_like(x0)
        for _ in range(40):
            h, res = fused_add_rms_norm(x, res, nw, 1e-5)
            x = skinny_linear(silu_and_mul(skinny_linear(h, up)), down)
        return x

    graph = torch.cuda.CUDAGraph()
    chain()
    with torch.cuda.graph(graph):
        got = chain()
    graph.replay()
    monkeypatch.setattr(pdl, "enabled", lambda x: False)
    want = chain()
    torch.cuda.synchronize()
    assert torch.isfinite(want).all()
    assert torch.equal(got, want)
