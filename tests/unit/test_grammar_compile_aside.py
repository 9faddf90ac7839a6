"""A served engine compiles a new grammar off its thread (`LLMEngine.compile_aside`, as the
worker's engine loop sets it): the other requests keep stepping while it compiles, the
constrained request starts once it is ready, an abort meanwhile ends it at once, and a grammar
whose parser breaks leaves the cache (an audit grew an engine by ~150 MB per such grammar)."""

from __future__ import annotations

import json

import pytest
import torch

from inference.engine.errors import InvalidParameter
from inference.engine.sampling_params import SamplingParams

from .test_grammar import _prompt

# ~0.3 s to compile on this machine (its size, not its lexer), then an ordinary grammar
WIDE = {"type": "object", "additionalProperties": False,
        "properties": {f"p{i}": {"type": "string", "pattern": "^[a-z]{1,20}$"}
                       for i in range(1000)},
        "required": ["p0"]}


@pytest.fixture(scope="module")
def engine(smollm_gguf):
    from inference.engine.config import EngineConfig
    from inference.engine.engine import LLMEngine

    torch.set_num_threads(1)
    eng = LLMEngine.from_model(str(smollm_gguf), EngineConfig(
        device="cpu", num_kv_blocks=160, max_model_len=512, enable_prefix_caching=False))
    eng.compile_aside = True
    return eng


def _wide(**kw) -> SamplingParams:
    return SamplingParams(grammar_kind="json_schema", grammar=json.dumps(WIDE),
                          **{"max_tokens": 12, "temperature": 0.0, **kw})


def _drain(engine) -> dict[str, list]:
    outs: dict[str, list] = {}
    while engine.has_unfinished():
        for out in engine.step():
            outs.setdefault(out.request_id, []).append(out)
    return outs


def test_others_step_while_a_grammar_compiles(engine) -> None:
    ids = _prompt(engine, "Describe a person as JSON.")
    engine.add_request("free", ids, SamplingParams(max_tokens=400, temperature=0.0,
                                                   ignore_eos=True))
    while not any(o.token_ids for o in engine.step()):  # decoding
        pass
    engine.add_request("wide", ids, _wide(seed=1))
    stepped, wide = 0, []
    while "wide" in engine._compiling:  # held back until its grammar is compiled
        outs = engine.step()
        stepped += any(o.request_id == "free" and o.token_ids for o in outs)
        wide += [o for o in outs if o.request_id == "wide"]
    assert stepped >= 1  # compiled inline, no step of "free" could run meanwhile
    engine.abort("free")
    text = "".join(o.text for o in wide + _drain(engine)["wide"])
    assert text.startswith('{"p0":"'), text  # constrained from its first token
    assert not engine.take_failures()


def test_an_abort_while_it_compiles_ends_the_request_and_drops_the_compile(engine) -> None:
    ids = _prompt(engine, "Describe a person as JSON.")
    params = _wide(seed=2, n=2, max_tokens=5)
    params.grammar = json.dumps({**WIDE, "required": ["p1"]})  # not cached: compiles anew
    engine.add_request("gone", ids, params)
    assert "gone" in engine._compiling
    engine.abort("gone")
    outs = _drain(engine)["gone"]
    assert [(o.index, o.finish_reason, o.token_ids) for o in outs] == [
        (0, "abort", []), (1, "abort", [])]
    assert outs[-1].usage.prompt_tokens == len(ids)
    assert not engine.grammars._compiling and not engine.has_unfinished()


def test_a_grammar_whose_parser_breaks_fails_its_request_and_leaves_the_cache(engine) -> None:
    ids = _prompt(engine, "Write the letter a.")
    params = SamplingParams(grammar_kind="regex", grammar="(a{1013}){1000}", max_tokens=5,
                            temperature=0.0)
    engine.add_request("broken", ids, params)
    _drain(engine)
    (failed,) = engine.take_failures()
    assert failed[0] == "broken" and isinstance(failed[1], InvalidParameter)
    assert failed[1].param == "grammar"
    assert engine.grammars.ready(params) is False  # not cached: asked again, it recompiles
    engine.grammars.abandon(params)
