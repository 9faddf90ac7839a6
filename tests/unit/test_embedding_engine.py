"""Embedding requests in the engine: pooled vectors equal transformers' final hidden states,
whatever runs beside them (generation, chunked prefill, preemption, the prefix cache), and
the generation running beside them is not disturbed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.engine.embedding import PoolingParams
from inference.engine.errors import InvalidParameter
from inference.engine.presets import preset_config

from .engine_driver import greedy, run, tiny_engine
from .hf_reference import hf_twin

PROMPTS = [list(range(5, 5 + k)) for k in (3, 9, 17, 30)]  # 30 tokens: 8 blocks of 4


def embed_all(engine, prompts, params=None, rid="e", steps_before=0):
    """Add an embedding request (after `steps_before` steps of whatever runs), step to the end;
    (vectors by index, usage, generation tokens by request id)."""
    gen: dict[str, list[int]] = {}
    vectors: dict[int, np.ndarray] = {}
    usage = None
    step = 0
    added = False
    while not added or engine.has_unfinished():
        if step == steps_before:
            engine.add_embedding(rid, prompts, params or PoolingParams())
            added = True
        for out in engine.step():
            gen.setdefault(out.request_id, []).extend(out.token_ids)
        for out in engine.embedder.take_outputs():
            assert out.request_id == rid
            vectors[out.index] = np.frombuffer(out.embedding, dtype="<f4")
            usage = out.usage or usage
        step += 1
    return [vectors[i] for i in range(len(prompts))], usage, gen


def hf_hidden(engine, ids: list[int]) -> torch.Tensor:
    hf = hf_twin(engine.runner.model)
    with torch.no_grad():
        return hf.model(torch.tensor([ids])).last_hidden_state[0].float()


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_pooled_vectors_equal_transformers_hidden_states(pooling):
    engine = tiny_engine(pooling=pooling)
    got, usage, _ = embed_all(engine, PROMPTS)
    for ids, vec in zip(PROMPTS, got, strict=True):
        h = hf_hidden(engine, ids)
        want = h[-1] if pooling == "last" else h.mean(0)
        want = torch.nn.functional.normalize(want, dim=0).numpy()
        assert np.abs(vec - want).max() < 1e-5
        assert abs(np.linalg.norm(vec) - 1.0) < 1e-5
    assert usage.prompt_tokens == sum(map(len, PROMPTS)) and usage.completion_tokens == 0
    assert engine.stats().free_blocks == engine.stats().num_blocks


@pytest.mark.parametrize(
    "overrides",
    [{}, {"max_num_batched_tokens": 7}, {"num_kv_blocks": 10}, {"max_num_seqs": 2}],
    ids=["continuous", "chunked-prefill", "preemption", "few-seqs"],
)
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_embeddings_batched_with_generation_equal_alone(overrides, pooling):
    alone, _, _ = embed_all(tiny_engine(pooling=pooling, enable_prefix_caching=False), PROMPTS)
    gen_prompts = [list(range(40, 52)), list(range(60, 67))]
    gen_alone = run(tiny_engine(enable_prefix_caching=False),
                    [(0, p, greedy(14)) for p in gen_prompts])
    engine = tiny_engine(pooling=pooling, **overrides)
    for i, p in enumerate(gen_prompts):
        engine.add_request(f"r{i}", p, greedy(14))
    got, _, gen = embed_all(engine, PROMPTS, steps_before=2)
    for a, b in zip(alone, got, strict=True):
        assert np.abs(a - b).max() < 1e-5
    assert gen == {rid: toks[0] for rid, toks in gen_alone.items()}
    if "num_kv_blocks" in overrides:
        assert engine.stats().preemptions > 0, "the small pool should have forced preemption"
    engine.kv.check_invariants()
    assert engine.stats().free_blocks == engine.stats().num_blocks


def test_last_pooling_reuses_cached_prefix_and_mean_recomputes():
    long = list(range(100, 130))
    for pooling, hits in (("last", True), ("mean", False)):
        engine = tiny_engine(pooling=pooling)
        run(engine, [(0, [*long, 1, 2], greedy(2))])  # leaves long's blocks in the cache
        before = engine.stats().prefix_hit_tokens
        (vec,), usage, _ = embed_all(engine, [long])
        assert (engine.stats().prefix_hit_tokens > before) is hits
        assert (usage.cached_tokens > 0) is hits
        (cold,), _, _ = embed_all(tiny_engine(pooling=pooling, enable_prefix_caching=False),
                                  [long])
        assert np.abs(vec - cold).max() < 1e-5


def test_dimensions_truncate_then_renormalise():
    engine = tiny_engine(pooling="last")
    (full,), _, _ = embed_all(engine, [PROMPTS[1]])
    (cut,), _, _ = embed_all(engine, [PROMPTS[1]], PoolingParams(dimensions=10), rid="e2")
    assert cut.shape == (10,)
    assert np.allclose(cut, full[:10] / np.linalg.norm(full[:10]), atol=1e-6)
    hidden = preset_config("tiny").hidden_size
    with pytest.raises(InvalidParameter, match="dimensions"):
        engine.add_embedding("e3", [[1, 2]], PoolingParams(dimensions=hidden + 1))


def test_unnormalised_vectors_keep_their_norm():
    engine = tiny_engine(pooling="last", normalize_embeddings=False)
    (vec,), _, _ = embed_all(engine, [PROMPTS[2]])
    want = hf_hidden(engine, PROMPTS[2])[-1].numpy()
    assert np.abs(vec - want).max() < 1e-4


def test_refusals_queue_nothing():
    engine = tiny_engine(pooling="none")
    with pytest.raises(InvalidParameter, match="model"):
        engine.add_embedding("e", [[1, 2]], PoolingParams())
    engine = tiny_engine(pooling="last")
    with pytest.raises(InvalidParameter, match="prompt"):
        engine.add_embedding("e", [[1, 2], []], PoolingParams())
    assert not engine.has_unfinished()


def test_abort_frees_every_input():
    engine = tiny_engine(pooling="mean", max_num_batched_tokens=8)
    engine.add_embedding("e", PROMPTS, PoolingParams())
    engine.step()
    engine.abort("e")
    assert not engine.has_unfinished()
    assert engine.stats().free_blocks == engine.stats().num_blocks
    engine.kv.check_invariants()
