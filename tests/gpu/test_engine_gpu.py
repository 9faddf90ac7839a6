"""The engine on CUDA end to end: transformers parity, graph replay = eager, prefix-cache hits.

SmolLM2-135M's shapes with random weights. Parity and cache checks run in float32 (no TF32 in
cuBLAS by default; the Triton kernels use IEEE dots for float32), where greedy tokens must
match exactly; bfloat16 is checked for closeness of the hidden states.
"""

from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)
pytest.importorskip("triton")
transformers = pytest.importorskip("transformers")

from inference import LLM, SamplingParams  # noqa: E402
from inference.engine.attention import AttentionMetadata  # noqa: E402
from tests.unit.hf_reference import hf_greedy, hf_twin  # noqa: E402

MODEL = "dummy:smollm2-135m"
GREEDY = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)


def prompts(seed: int, lengths=(5, 37, 100)) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 49152, (n,), generator=gen).tolist() for n in lengths]


def make_llm(dtype: str = "float32", **kw) -> LLM:
    opts = dict(device="cuda", dtype=dtype, max_model_len=1024, num_kv_blocks=400,
                max_num_seqs=8, max_num_batched_tokens=512, seed=3)
    opts.update(kw)
    return LLM(MODEL, **opts)


def token_ids(outputs) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in outputs]


def test_greedy_output_equals_transformers_on_the_same_weights():
    llm = make_llm()
    ps = prompts(0)
    ours = token_ids(llm.generate(ps, GREEDY))
    hf = hf_twin(llm.engine.runner.model)
    for p, got in zip(ps, ours, strict=True):
        assert got == hf_greedy(hf, p, GREEDY.max_tokens)


def test_graph_replay_equals_eager():
    ps = prompts(1, lengths=(3, 17, 16, 33, 64))  # 5 sequences: replays the size-8 graph
    graphs = make_llm()
    assert graphs.engine.graph_decoder is not None and graphs.engine.graph_decoder.graphs
    eager = make_llm(enforce_eager=True)
    assert eager.engine.graph_decoder is None
    assert token_ids(graphs.generate(ps, GREEDY)) == token_ids(eager.generate(ps, GREEDY))


def test_decode_graphs_of_both_spans_replay_and_equal_eager():
    """A sequence whose context grows past the short span (`decode_splits.ONE_SPLIT_SPAN`)
    decodes first through the one-split graph, then through the full span's split graph,
    and its tokens are the eager engine's."""
    from inference.engine.decode_splits import ONE_SPLIT_SPAN

    ps = prompts(2, lengths=(ONE_SPLIT_SPAN - 12, 3))
    llm = make_llm()
    dec = llm.engine.graph_decoder
    assert dec.spans[2] == (ONE_SPLIT_SPAN, 1024)
    replayed: dict[int, int] = {}
    for shape, graph in dec.graphs.items():
        if shape.decode and shape.seqs == 2:
            def counted(replay=graph.replay, span=shape.span):
                replayed[span] = replayed.get(span, 0) + 1
                replay()
            graph.replay = counted
    got = token_ids(llm.generate(ps, GREEDY))
    assert replayed.get(ONE_SPLIT_SPAN, 0) >= 5 and replayed.get(1024, 0) >= 5
    assert got == token_ids(make_llm(enforce_eager=True).generate(ps, GREEDY))


def test_mixed_graph_replay_equals_eager():
    """Prefill chunks, prefix-cache hits and decode rows mixed into prompt steps, replayed
    from the mixed graphs (128-token budget: a 300-token prompt takes three chunks beside the
    others' decodes), give the tokens of the eager engine."""
    shared = prompts(7, lengths=(40,))[0]
    ps = [*prompts(6, lengths=(5, 300, 17)), [*shared, 5, 6], [*shared, 7, 8, 9]]
    opts = dict(max_num_batched_tokens=128)
    graphs = make_llm(**opts)
    assert graphs.engine.graph_decoder.buckets == [16, 32, 64, 128]
    got = token_ids(graphs.generate(ps, GREEDY))
    assert graphs.engine.graph_decoder.mixed_replays >= 3
    assert got == token_ids(make_llm(enforce_eager=True, **opts).generate(ps, GREEDY))
    no_mixed = make_llm(cuda_graph_max_tokens=0, **opts)
    assert no_mixed.engine.graph_decoder.buckets == []
    assert token_ids(no_mixed.generate(ps, GREEDY)) == got


def _late_arrivals(llm: LLM, decoding: int = 70, late: tuple[tuple[int, ...], ...] = (
        (40,), (90,))) -> tuple[dict[str, list[int]], list[int]]:
    """`decoding` sequences decoding, then each group of `late` prompts arriving in one step,
    a step apart: the tokens of every request, and the mixed graphs each arrival's step
    replayed. The default's steps hold more sequences than a mixed graph, nearly all of them
    decodes."""
    eng, got, replays = llm.engine, {}, []
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    ps = prompts(11, lengths=(6,) * decoding + sum(late, ()))

    def step() -> None:
        for out in eng.step():
            got.setdefault(out.request_id, []).extend(out.token_ids)

    for i in range(decoding):
        eng.add_request(f"r{i}", ps[i], params)
    for _ in range(3):
        step()
    at = decoding
    for group in late:
        for _ in group:
            eng.add_request(f"late-{at}", ps[at], params)
            at += 1
        before = eng.graph_decoder.mixed_replays if eng.graph_decoder else 0
        step()
        replays.append((eng.graph_decoder.mixed_replays if eng.graph_decoder else 0) - before)
    while eng.has_unfinished():
        step()
    return got, replays


def test_split_replay_of_many_decodes_and_a_prompt_equals_eager():
    """A step of more sequences than a mixed graph holds replays a decode graph for its
    decode rows and a mixed graph for the prompt, and gives the eager engine's tokens."""
    opts = dict(max_num_seqs=80, num_kv_blocks=600)
    graphs = make_llm(**opts)
    dec = graphs.engine.graph_decoder
    assert dec.mixed_seqs == 64
    got, replays = _late_arrivals(graphs)
    assert dec.split_replays >= 2 and replays == [1, 1]
    assert len(got) == 72 and all(len(t) == 12 for t in got.values())
    assert got == _late_arrivals(make_llm(enforce_eager=True, **opts))[0]


def test_split_replay_packs_prompts_into_several_mixed_graphs():
    """Three prompts arriving together beside 8 decodes, more prompt tokens than the largest
    mixed graph (128) holds: the step replays the decode graph, then three mixed graphs, one
    prompt each, and gives the eager engine's tokens."""
    opts = dict(max_num_seqs=16, max_num_batched_tokens=512, cuda_graph_max_tokens=128)
    graphs = make_llm(**opts)
    assert graphs.engine.graph_decoder.buckets == [16, 32, 64, 128]
    got, replays = _late_arrivals(graphs, decoding=8, late=((100, 90, 110),))
    assert replays == [3] and graphs.engine.graph_decoder.split_replays >= 1
    assert len(got) == 11 and all(len(t) == 12 for t in got.values())
    eager = make_llm(enforce_eager=True, **opts)
    assert got == _late_arrivals(eager, decoding=8, late=((100, 90, 110),))[0]


@torch.inference_mode()
@pytest.mark.parametrize("n", [1, 3])
def test_graph_replay_hidden_states_match_eager_in_bfloat16(n, monkeypatch):
    """A decode graph of `n` rows against the model run eagerly with its norm kernels: at one
    row on Hopper the graph runs `forward_summed` (the norms inside the projections)."""
    from inference.engine.model import DecoderLM

    llm = make_llm("bfloat16")
    llm.generate(prompts(2), GREEDY)  # fills some blocks with real K/V
    eng = llm.engine
    dec, runner = eng.graph_decoder, eng.runner
    dev = "cuda"
    tables = torch.arange(1, 1 + n * 8, dtype=torch.int32, device=dev).view(n, 8)
    lens = torch.tensor([5, 77, 128][-n:], dtype=torch.int32, device=dev)
    pos = (lens - 1).long()
    slots = (tables.gather(1, (pos // 16)[:, None])[:, 0].long() * 16 + pos % 16)
    meta = AttentionMetadata(slots, torch.arange(n + 1, dtype=torch.int32, device=dev), lens,
                             tables, 1, eng.max_model_len)
    ids = torch.randint(0, 49152, (n,), device=dev)
    hidden = torch.empty(n, 576, dtype=torch.bfloat16, device=dev)
    hopper = torch.cuda.get_device_capability()[0] >= 9
    assert runner.model.norms_in_projections(hidden) == (n == 1 and hopper)
    got = dec.run(ids, pos, meta).clone()
    monkeypatch.setattr(DecoderLM, "norms_in_projections", lambda self, x: False)
    runner.backend.begin_step(meta)
    ref = runner.model(ids, pos, runner.kv_cache, meta)
    err = (got.float() - ref.float()).norm() / ref.float().norm()
    assert err < 1e-2


def test_prefix_cache_hits_return_the_same_tokens_as_cold_runs():
    shared = prompts(4, lengths=(70,))[0]
    a = [*shared, 11, 12, 13]
    b = shared[:50] + prompts(5, lengths=(30,))[0]  # hit ends mid-prompt, block 3 of 4
    cold_a = token_ids(make_llm().generate([a], GREEDY))
    cold_b = token_ids(make_llm().generate([b], GREEDY))
    warm = make_llm()
    warm.generate([shared], GREEDY)
    hits_before = warm.engine.stats().prefix_hit_tokens
    assert token_ids(warm.generate([a], GREEDY)) == cold_a
    assert token_ids(warm.generate([b], GREEDY)) == cold_b
    assert token_ids(warm.generate([a, b], GREEDY)) == cold_a + cold_b
    assert warm.engine.stats().prefix_hit_tokens >= hits_before + 64 + 48


def _qwen_folder(model_type: str, folder) -> transformers.PreTrainedModel:
    """A random float32 Qwen2 or Qwen3 (SmolLM2-like head_dim 64, GQA 2:1) saved to `folder`,
    with its biases and norm weights made non-trivial; the transformers model, on CUDA."""
    shape = dict(vocab_size=1024, hidden_size=256, intermediate_size=512, num_hidden_layers=3,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                 initializer_range=0.1)
    if model_type == "qwen2":
        cfg, cls = transformers.Qwen2Config(**shape), transformers.Qwen2ForCausalLM
    else:
        cfg, cls = transformers.Qwen3Config(**shape, head_dim=64), transformers.Qwen3ForCausalLM
    torch.manual_seed(0)
    hf = cls(cfg).float().eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith(("bias", "norm.weight")):
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(folder, safe_serialization=True)
    return hf.cuda()


@pytest.mark.parametrize("model_type", ["qwen2", "qwen3"])
def test_qwen_greedy_output_equals_transformers_with_graphs_and_eager(model_type, tmp_path):
    hf = _qwen_folder(model_type, tmp_path)
    ps = [[3, 17, 99, 42, 5, 200, 7], list(range(40, 113))]
    opts = dict(device="cuda", dtype="float32", max_model_len=512, num_kv_blocks=64,
                max_num_seqs=4)
    for eager in (False, True):
        ours = token_ids(LLM(str(tmp_path), enforce_eager=eager, **opts).generate(ps, GREEDY))
        for p, got in zip(ps, ours, strict=True):
            assert got == hf_greedy(hf, p, GREEDY.max_tokens), (model_type, eager)
