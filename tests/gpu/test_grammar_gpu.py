"""Grammar-constrained decoding on CUDA (CUDA graphs on): the bitmask is applied on the GPU,
constrained answers validate, free rows beside them are unchanged.

The model is the SmolLM2 GGUF when it is cached; else SmolLM2 shapes with dummy weights and
the tokenizer.json named by `KVMESH_TOKENIZER_JSON` (written by
`python -m bench.structured --export-tokenizer tokenizer.json` where the GGUF is). The schema
is bounded (enums, closed objects) so even random weights finish it.
"""

from __future__ import annotations

import json
import os

import jsonschema
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)

from inference.engine.grammar import GrammarMask
from inference.engine.sampler import apply_grammar
from inference.engine.sampling_params import SamplingParams
from tests.unit.engine_driver import drain

SCHEMA = {"type": "object", "properties": {
    "role": {"enum": ["admin", "user", "guest"]}, "ok": {"type": "boolean"},
    "level": {"enum": [1, 2, 3]}}, "required": ["role", "ok", "level"]}


def test_the_bitmask_applies_on_the_gpu() -> None:
    logits = torch.zeros(4, 49152, device="cuda")
    bits = torch.zeros(2, 1536, dtype=torch.int32)
    bits[:, 3] = 1  # token 96 only
    apply_grammar(logits, GrammarMask(torch.tensor([0, 2]), bits))
    assert logits[[0, 2]].argmax(dim=-1).tolist() == [96, 96]
    assert torch.isinf(logits[[0, 2]]).sum() == 2 * 49151
    assert not torch.isinf(logits[[1, 3]]).any()


@pytest.fixture(scope="module")
def engine():
    from bench.structured import build_engine
    from inference.engine.model_store import ModelNotFoundError, resolve_model

    try:
        model, tok = str(resolve_model(None)), None
    except ModelNotFoundError:
        tok = os.environ.get("KVMESH_TOKENIZER_JSON")
        if not tok:
            pytest.skip("no SmolLM2 GGUF and no KVMESH_TOKENIZER_JSON")
        model = "dummy:smollm2-135m"
    return build_engine(model, "cuda", tok, 32)


def _run(engine, reqs, ids):
    texts, tokens, reasons = drain(engine, {rid: (ids, p) for rid, p in reqs.items()})
    return tokens, texts, reasons


def test_constrained_and_free_rows_share_a_cuda_batch(engine) -> None:
    ids = engine.tokenizer.encode("A user record, as JSON: ")
    free = SamplingParams(max_tokens=32, temperature=0.8, seed=5)
    alone, _, _ = _run(engine, {"free": free}, ids)
    constrained = {f"c{i}": SamplingParams(max_tokens=64, temperature=1.0, seed=i,
                                           grammar_kind="json_schema", grammar=json.dumps(SCHEMA))
                   for i in range(16)}
    mixed, texts, reasons = _run(engine, {"free": free, **constrained}, ids)
    assert mixed["free"] == alone["free"]
    for rid in constrained:
        assert reasons[rid] == "stop", texts[rid]
        jsonschema.validate(json.loads(texts[rid]), SCHEMA)


def test_masks_filled_into_pinned_memory_give_the_same_tokens(engine) -> None:
    """On CUDA the background fill writes into one pinned buffer that every step reuses
    (grammar_fill.py); a pageable fill per step must give exactly the same tokens."""
    from inference.engine.grammar_fill import MaskFill

    ids = engine.tokenizer.encode("A user record, as JSON: ")
    reqs = {f"c{i}": SamplingParams(max_tokens=48, temperature=1.0, seed=40 + i,
                                    grammar_kind="json_schema", grammar=json.dumps(SCHEMA))
            for i in range(24)}
    assert engine.fill._pinned
    pinned, _, _ = _run(engine, reqs, ids)
    engine.fill = MaskFill(engine.grammars, pinned=False)
    try:
        pageable, _, _ = _run(engine, reqs, ids)
    finally:
        engine.fill = MaskFill(engine.grammars, pinned=True)
    assert pinned == pageable
