"""Grammar-constrained decoding on CUDA (CUDA graphs on): the bitmask is applied on the GPU,
constrained answers validate, free rows beside them are unchanged. The real SmolLM2."""

from __future__ import annotations

import json

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)

from inference.engine.grammar import GrammarMask
from inference.engine.sampler import apply_grammar
from inference.engine.sampling_params import SamplingParams

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 30}, "age": {"type": "integer"},
    "role": {"enum": ["admin", "user"]}}, "required": ["name", "age", "role"]}


def test_the_bitmask_applies_on_the_gpu() -> None:
    logits = torch.zeros(4, 49152, device="cuda")
    bits = torch.zeros(2, 1536, dtype=torch.int32)
    bits[:, 3] = 1  # token 96 only
    apply_grammar(logits, GrammarMask(torch.tensor([0, 2]), bits))
    assert logits[[0, 2]].argmax(dim=-1).tolist() == [96, 96]
    assert torch.isinf(logits[[0, 2]]).sum() == 2 * 49151
    assert not torch.isinf(logits[[1, 3]]).any()


def test_constrained_and_free_rows_share_a_cuda_batch(smollm_gguf) -> None:
    from inference.engine.config import EngineConfig
    from inference.engine.engine import LLMEngine

    engine = LLMEngine.from_model(str(smollm_gguf), EngineConfig(
        device="cuda", max_model_len=1024, max_num_seqs=32, num_kv_blocks=512))
    tok = engine.tokenizer
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": "A person, as JSON"}]))
    free = SamplingParams(max_tokens=32, temperature=0.8, seed=5)

    def run(reqs):
        for rid, p in reqs.items():
            engine.add_request(rid, ids, p)
        out = {rid: ([], "") for rid in reqs}
        reasons = {}
        while engine.has_unfinished():
            for o in engine.step():
                toks, text = out[o.request_id]
                out[o.request_id] = (toks + o.token_ids, text + o.text)
                if o.finish_reason:
                    reasons[o.request_id] = o.finish_reason
        return out, reasons

    alone, _ = run({"free": free})
    constrained = {f"c{i}": SamplingParams(max_tokens=120, temperature=1.0, seed=i,
                                           grammar_kind="json_schema", grammar=json.dumps(SCHEMA))
                   for i in range(16)}
    mixed, reasons = run({"free": free, **constrained})
    assert mixed["free"][0] == alone["free"][0]
    import jsonschema

    for rid in constrained:
        assert reasons[rid] == "stop", mixed[rid][1]
        jsonschema.validate(json.loads(mixed[rid][1]), SCHEMA)
