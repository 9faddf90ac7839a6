"""The fp8 KV pool (`kv_cache_dtype="fp8"`): kernels against a float32 reference whose K/V are
the same fp8-rounded values, and the engine end to end with an fp8 pool.

The reference reads the fp8 pool upcast to float32, so the only error left is the query's dtype
(bf16 dots accumulate in float32): the tolerances are the bf16-pool ones. Against the unrounded
K/V the error is e4m3's rounding (3 mantissa bits, about 4 % per value): checked loosely.
"""

from __future__ import annotations

import gc

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs CUDA (float8 kernels are not run in the interpreter)",
                allow_module_level=True)
pytest.importorskip("triton")

from inference import LLM, SamplingParams
from inference.engine.attention import AttentionMetadata
from inference.engine.triton_attention import TritonAttentionBackend
from inference.engine.triton_kernels.decode_attention import decode_attention
from inference.engine.triton_kernels.kv_write import reshape_and_cache
from inference.engine.triton_kernels.prefill_attention import prefill_attention
from tests.gpu.test_triton_kernels import PAGE, TOL, make_paged, ref_attention, rel_err

FP8 = torch.float8_e4m3fn
QDTYPES = [torch.float32, torch.bfloat16]
FP8_VS_EXACT = 0.1  # output error from rounding K/V to e4m3 (measured about 0.02-0.04)


def fp8_pool(seq_lens, kv_heads, head_dim, gen):
    """A float32 pool, its fp8 rounding, and a block table: (exact, fp8, tables)."""
    exact, tables = make_paged(seq_lens, kv_heads, head_dim, torch.float32, "cuda", gen)
    exact = exact * 2  # spread over more of e4m3's exponents
    return exact, exact.to(FP8), tables


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kv_write_rounds_to_fp8_saturates_and_skips_padding(dtype):
    gen = torch.Generator().manual_seed(11)
    kv_heads, head_dim, blocks, t = 8, 128, 9, 20
    pool = torch.randn(2, blocks, PAGE, kv_heads, head_dim, generator=gen).to(FP8).cuda()
    before = pool.clone()
    slots = torch.randperm(blocks * PAGE, generator=gen)[:t]
    slots[[3, 11]] = -1
    qkv = (8 * torch.randn(t, 2 * kv_heads + 4, head_dim, generator=gen)).to(dtype).cuda()
    qkv[0, 4, :4] = torch.tensor([1000.0, -1000.0, 448.0, 3e4])  # out of e4m3's range
    k, v = qkv[:, 4:4 + kv_heads], qkv[:, 4 + kv_heads:]
    reshape_and_cache(k, v, pool, slots.cuda())
    expect = before.view(torch.uint8).clone().view(2, blocks * PAGE, kv_heads, head_dim)
    keep = slots >= 0
    rounded = lambda x: x.float().clamp(-448, 448).to(FP8).view(torch.uint8)  # noqa: E731
    expect[0, slots[keep].cuda()] = rounded(k[keep.cuda()])
    expect[1, slots[keep].cuda()] = rounded(v[keep.cuda()])
    got = pool.view(torch.uint8).view_as(expect)
    assert torch.equal(got, expect), f"{(got != expect).float().mean().item():.2%} differ"
    assert pool.float().isfinite().all()
    assert pool[0].float().view(-1, kv_heads, head_dim)[slots[0], 0, :4].tolist() == \
        [448.0, -448.0, 448.0, 448.0]


@pytest.mark.parametrize("dtype", QDTYPES)
@pytest.mark.parametrize("group", [1, 4, 8])
@pytest.mark.parametrize("splits", [1, 5])
def test_decode_attention_reads_fp8_pool(dtype, group, splits):
    gen = torch.Generator().manual_seed(group * 10 + splits)
    kv_heads, head_dim = 2, 128 if group == 4 else 64
    for batch in (1, 6):
        seq_lens = torch.randint(1, 400, (batch,), generator=gen).tolist()
        seq_lens[0] = 16 * 7 + 9  # ends mid-block
        exact, pool, tables = fp8_pool(seq_lens, kv_heads, head_dim, gen)
        q = torch.randn(batch, kv_heads * group, head_dim, generator=gen).to(dtype).cuda()
        out = torch.full_like(q, float("nan"))
        lens = torch.tensor(seq_lens, dtype=torch.int32, device="cuda")
        decode_attention(q, pool, tables, lens, head_dim**-0.5, splits, out=out)
        ref = ref_attention(q, pool.float(), tables, seq_lens, [1] * batch, head_dim**-0.5)
        assert rel_err(out, ref) < TOL[dtype]
        ref_exact = ref_attention(q, exact, tables, seq_lens, [1] * batch, head_dim**-0.5)
        assert rel_err(out, ref_exact) < FP8_VS_EXACT


@pytest.mark.parametrize("dtype", QDTYPES)
@pytest.mark.parametrize("group", [1, 4])
def test_prefill_over_cached_prefix_reads_fp8_pool(dtype, group):
    gen = torch.Generator().manual_seed(50 + group)
    kv_heads, head_dim = 2, 128
    cases = [(0, 37), (32, 70), (45, 1), (100, 16), (7, 130)]
    seq_lens = [c + n for c, n in cases]
    q_lens = [n for _, n in cases]
    exact, pool, tables = fp8_pool(seq_lens, kv_heads, head_dim, gen)
    q = torch.randn(sum(q_lens), kv_heads * group, head_dim, generator=gen).to(dtype).cuda()
    qsl = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32)
    out = torch.full_like(q, float("nan"))
    prefill_attention(q, pool, tables, torch.tensor(seq_lens, dtype=torch.int32, device="cuda"),
                      qsl.cuda(), max(q_lens), head_dim**-0.5, out=out)
    ref = ref_attention(q, pool.float(), tables, seq_lens, q_lens, head_dim**-0.5)
    assert rel_err(out, ref) < TOL[dtype]
    assert rel_err(out, ref_attention(q, exact, tables, seq_lens, q_lens,
                                      head_dim**-0.5)) < FP8_VS_EXACT


@pytest.mark.parametrize("dtype", QDTYPES)
def test_backend_writes_fp8_then_attends_for_prefill_and_decode(dtype):
    gen = torch.Generator().manual_seed(13)
    heads, kv_heads, head_dim = 8, 2, 64
    backend = TritonAttentionBackend(PAGE, num_sms=8)
    prompt = [21, 50, 3]
    _, pool, tables = fp8_pool([n + 4 for n in prompt], kv_heads, head_dim, gen)
    pool.view(torch.uint8).fill_(0x7F)  # NaN in e4m3fn: the backend must only read what it wrote
    slot_of = lambda b, p: tables[b, p // PAGE].item() * PAGE + p % PAGE  # noqa: E731
    lens, q_lens, start = list(prompt), list(prompt), [0] * 3
    for step in range(3):
        t = sum(q_lens)
        q, k, v = (torch.randn(t, n, head_dim, generator=gen).to(dtype).cuda()
                   for n in (heads, kv_heads, kv_heads))
        slots = [slot_of(b, start[b] + i) for b in range(3) for i in range(q_lens[b])]
        qsl = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32)
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.int64, device="cuda"),
            query_start_loc=qsl.cuda(),
            seq_lens=torch.tensor(lens, dtype=torch.int32, device="cuda"),
            block_tables=tables, max_query_len=max(q_lens), max_seq_len=max(lens))
        backend.begin_step(meta)
        out = backend.forward(q, k, v, pool, meta, head_dim**-0.5)
        ref = ref_attention(q, pool.float(), tables, lens, q_lens, head_dim**-0.5)
        assert rel_err(out, ref) < TOL[dtype], f"step {step}"
        start, lens, q_lens = list(lens), [n + 1 for n in lens], [1, 1, 1]


def fp8_llm(**kw) -> LLM:
    opts = dict(device="cuda", dtype="float32", max_model_len=1024, num_kv_blocks=400,
                max_num_seqs=8, max_num_batched_tokens=512, seed=3, kv_cache_dtype="fp8")
    opts.update(kw)
    return LLM("dummy:smollm2-135m", **opts)


def test_fp8_pool_graph_replay_equals_eager_and_forks_copy_blocks():
    gen = torch.Generator().manual_seed(1)
    ps = [torch.randint(0, 49152, (n,), generator=gen).tolist() for n in (3, 17, 33, 64)]
    greedy = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    graphs = fp8_llm()
    assert graphs.engine.runner.kv_cache.dtype == FP8
    assert graphs.engine.graph_decoder is not None and graphs.engine.graph_decoder.graphs
    eager = fp8_llm(enforce_eager=True)
    ours = [o.outputs[0].token_ids for o in graphs.generate(ps, greedy)]
    assert ours == [o.outputs[0].token_ids for o in eager.generate(ps, greedy)]
    forked = graphs.generate([ps[1]], SamplingParams(n=3, temperature=1.0, max_tokens=8,
                                                     ignore_eos=True, seed=5))
    assert [len(c.token_ids) for c in forked[0].outputs] == [8, 8, 8]


def test_fp8_pool_sized_from_memory_has_about_twice_the_blocks():
    sizes = {}
    for kv in ("auto", "fp8"):
        llm = LLM("dummy:smollm2-135m", device="cuda", dtype="bfloat16", max_model_len=1024,
                  max_num_seqs=8, max_num_batched_tokens=512, gpu_memory_utilization=0.3,
                  enforce_eager=True, kv_cache_dtype=kv)
        sizes[kv] = (llm.engine.kv.num_blocks, llm.engine.runner.kv_cache.nbytes)
        del llm
        gc.collect()
        torch.cuda.empty_cache()
    ratio = sizes["fp8"][0] / sizes["auto"][0]
    assert 1.8 < ratio < 2.2, sizes
    assert abs(sizes["fp8"][1] / sizes["auto"][1] - 1) < 0.1, sizes
