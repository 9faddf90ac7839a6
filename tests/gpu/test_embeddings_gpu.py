"""Embeddings on CUDA: Triton prefill, chunked prefill and CUDA-graph decode steps (a 1-token
input rides in a decode batch) pool the same vectors as transformers on the same weights, and
the generation running beside them keeps its greedy tokens. SmolLM2-135M's shapes, random
weights, float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)
pytest.importorskip("triton")
pytest.importorskip("transformers")

from inference import LLM, SamplingParams
from inference.engine.embedding import PoolingParams
from tests.unit.hf_reference import hf_twin

GREEDY = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)


def inputs(seed: int, lengths=(1, 7, 64, 300)) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 49152, (n,), generator=gen).tolist() for n in lengths]


def make_llm(pooling: str) -> LLM:
    return LLM("dummy:smollm2-135m", device="cuda", dtype="float32", max_model_len=1024,
               num_kv_blocks=400, max_num_seqs=8, max_num_batched_tokens=128, seed=3,
               pooling=pooling)


def embed_beside_generation(llm: LLM, ids: list[list[int]], prompts: list[list[int]]):
    """Start generations; two steps later, while they decode, add the 1-token input alone (that
    step is all single tokens: a CUDA-graph replay), a step after that the other inputs
    (Triton prefill, in chunks); run everything to the end."""
    engine = llm.engine
    for i, p in enumerate(prompts):
        engine.add_request(f"g{i}", p, GREEDY)
    tokens: dict[str, list[int]] = {}
    vectors: dict[int, np.ndarray] = {}
    step = 0
    while step < 4 or engine.has_unfinished():
        if step == 2:
            engine.add_embedding("e-one", ids[:1], PoolingParams())
        if step == 3:
            engine.add_embedding("e-rest", ids[1:], PoolingParams())
        for out in engine.step():
            tokens.setdefault(out.request_id, []).extend(out.token_ids)
        for out in engine.embedder.take_outputs():
            vectors[out.index + (out.request_id == "e-rest")] = np.frombuffer(
                out.embedding, dtype="<f4")
        step += 1
    return [vectors[i] for i in range(len(ids))], tokens


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_vectors_beside_generation_equal_transformers_and_alone(pooling):
    llm = make_llm(pooling)
    ids, prompts = inputs(0), inputs(1, lengths=(5, 40))
    alone = llm.embed(ids)
    gen_alone = [o.outputs[0].token_ids for o in llm.generate(prompts, GREEDY)]
    got, tokens = embed_beside_generation(llm, ids, prompts)
    assert [tokens[f"g{i}"] for i in range(len(prompts))] == gen_alone
    hf = hf_twin(llm.engine.runner.model)
    for x, vec, single in zip(ids, got, alone, strict=True):
        with torch.no_grad():
            h = hf.model(torch.tensor([x], device="cuda")).last_hidden_state[0]
        want = h[-1] if pooling == "last" else h.mean(0)
        want = torch.nn.functional.normalize(want, dim=0).cpu().numpy()
        assert np.abs(vec - want).max() < 1e-4
        assert np.abs(vec - np.asarray(single)).max() < 1e-4
