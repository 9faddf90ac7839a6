"""`min_tokens` (inference/engine/min_tokens.py): a choice draws no ending token before it has
that many, in both loops; no stop string is looked for in those tokens' text; on the real
SmolLM2 model a greedy answer equals transformers' `generate(min_new_tokens=...)`; values out of
bounds, or beside a grammar, are refused naming the field."""

from __future__ import annotations

import pytest
import torch

from inference import LLM, SamplingParams
from inference.engine.errors import InvalidParameter
from inference.engine.sampler import sample
from inference.engine.sequence import Sequence, SequenceStatus
from inference.engine.stop_strings import StopStringFilter

from .engine_driver import drain, tiny_engine
from .hf_reference import hf_twin

VOCAB = 12
EOS = 2  # the tiny preset's


def _seq(seq_id: int, generated: int, **params) -> Sequence:
    prompt = [5, 6]
    return Sequence(seq_id, f"r{seq_id}", 0, prompt + [7] * generated, len(prompt),
                    SamplingParams(temperature=0.0, max_tokens=8, **params), 0.0,
                    status=SequenceStatus.RUNNING)


def test_only_rows_short_of_min_tokens_lose_their_ending_tokens() -> None:
    rows = [_seq(0, 2, min_tokens=3, stop_token_ids=[9]),  # short: eos and 9 forbidden
            _seq(1, 3, min_tokens=3, stop_token_ids=[9]),  # has enough: untouched
            _seq(2, 0, min_tokens=1, ignore_eos=True, stop_token_ids=[4]),  # 4 only
            _seq(3, 0)]  # none asked
    logits = torch.zeros(4, VOCAB)
    logits[:, EOS] = 5.0  # every row would end now
    drawn = sample(logits, rows, torch.Generator(), eos_ids=frozenset({EOS}))
    inf = float("-inf")
    assert [t for t in range(VOCAB) if logits[0, t] == inf] == [EOS, 9]
    assert [t for t in range(VOCAB) if logits[2, t] == inf] == [4]
    assert not torch.isinf(logits[[1, 3]]).any()
    assert drawn.tokens.tolist()[1:] == [EOS, EOS, EOS] and drawn.tokens[0].item() != EOS


@pytest.mark.parametrize("async_scheduling", [False, True])
def test_an_answer_that_would_end_at_once_runs_to_min_tokens(async_scheduling: bool) -> None:
    """EOS (or a stop token) biased to win every draw: without `min_tokens` the answer is that
    one token; with it, exactly `min_tokens` others come first, then the ending token."""
    eos = {"logit_bias": {EOS: 100.0}}
    stop9 = {"logit_bias": {9: 100.0}, "stop_token_ids": [9], "ignore_eos": True}
    requests = {
        "plain": ([5, 6, 7], SamplingParams(temperature=0.0, max_tokens=20, **eos)),
        "eos": ([5, 6, 7], SamplingParams(temperature=0.0, max_tokens=20, min_tokens=5, **eos)),
        "stop": ([8, 9], SamplingParams(temperature=0.0, max_tokens=20, min_tokens=4, **stop9)),
        "n2": ([3, 4], SamplingParams(temperature=1.0, seed=1, n=2, max_tokens=20, min_tokens=3,
                                      **eos)),
        "short": ([5], SamplingParams(temperature=0.0, max_tokens=3, min_tokens=3, **eos)),
    }
    _, tokens, reasons = drain(tiny_engine(async_scheduling=async_scheduling), requests)
    assert tokens["plain"] == [EOS]
    assert len(tokens["eos"]) == 6 and tokens["eos"][-1] == EOS and EOS not in tokens["eos"][:5]
    assert len(tokens["stop"]) == 5 and tokens["stop"][-1] == 9 and 9 not in tokens["stop"][:4]
    # two choices, interleaved in the outputs: each drew 3 others, then EOS
    assert sorted(tokens["n2"]).count(EOS) == 2 and len(tokens["n2"]) == 8
    assert len(tokens["short"]) == 3 and EOS not in tokens["short"]
    assert reasons == {"plain": "stop", "eos": "stop", "stop": "stop", "n2": "stop",
                       "short": "length"}


def test_stop_strings_are_not_looked_for_in_the_first_tokens_text() -> None:
    f = StopStringFilter(["ab"])
    assert f.feed("xab", look=False) == "xab" and not f.stopped  # ends in it: never found
    assert f.feed("b") == "b" and not f.stopped  # "ab" began in text already shown
    assert f.feed("ca") == "c" and f.feed("b") == "" and f.stopped


def test_a_stop_string_that_begins_in_the_first_tokens_and_ends_after_them_stops() -> None:
    """vLLM's check of the first token past `min_tokens` reaches back over the text before
    it (the audit's case: " Paris" within min_tokens 1, then ".", with stop "ris.")."""
    f = StopStringFilter(["ris."])
    assert f.feed(" Paris", look=False) == " Pa"  # "ris" held: it may begin the stop string
    assert f.feed(".") == "" and f.stopped
    g = StopStringFilter(["ris."])
    assert g.feed(" Paris", look=False) == " Pa"
    assert g.feed("h", look=False) == "rish"  # it did not grow into one: shown
    assert g.feed("", final=True, look=False) == "" and not g.stopped


@pytest.mark.parametrize(("params", "field"), [
    ({"min_tokens": 5, "max_tokens": 4}, "min_tokens"),
    ({"min_tokens": -1}, "min_tokens"),
    ({"min_tokens": 2, "grammar_kind": "regex", "grammar": "a+"}, "min_tokens"),
])
def test_bad_min_tokens_are_refused_naming_it(params: dict, field: str) -> None:
    with pytest.raises(InvalidParameter) as err:
        SamplingParams(**params)
    assert err.value.param == field


@pytest.fixture(scope="module")
def llm(smollm_gguf) -> LLM:
    return LLM(str(smollm_gguf), device="cpu", dtype="float32")


def _chat(llm: LLM, text: str) -> list[int]:
    tok = llm.tokenizer
    return tok.encode(tok.apply_chat_template([{"role": "user", "content": text}]))


@pytest.mark.slow
def test_greedy_min_tokens_matches_transformers(llm: LLM) -> None:
    prompt = _chat(llm, "Say hi.")
    short = llm.generate([prompt], SamplingParams(max_tokens=40, temperature=0.0))
    natural = list(short[0].outputs[0].token_ids)
    assert natural[-1] in llm.engine.eos_ids and len(natural) < 32  # it ends by itself early
    ours = llm.generate([prompt], SamplingParams(max_tokens=40, temperature=0.0,
                                                 min_tokens=32))[0].outputs[0]
    hf = hf_twin(llm.engine.runner.model)
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=40, min_new_tokens=32,
                          do_sample=False, eos_token_id=sorted(llm.engine.eos_ids),
                          pad_token_id=0)
    theirs = out[0, len(prompt):].tolist()
    theirs = theirs[:next(i + 1 for i, t in enumerate(theirs) if t in llm.engine.eos_ids)] \
        if any(t in llm.engine.eos_ids for t in theirs) else theirs
    assert list(ours.token_ids) == theirs and len(theirs) > 32
    assert ours.finish_reason in ("stop", "length")


@pytest.mark.slow
def test_a_stop_string_in_the_first_tokens_does_not_end_the_answer(llm: LLM) -> None:
    prompt = _chat(llm, "Say hi.")
    free = llm.generate([prompt], SamplingParams(max_tokens=6, temperature=0.0,
                                                 ignore_eos=True))[0].outputs[0]
    first_word = free.text.split()[0]  # in the answer's first tokens
    stopped = llm.generate([prompt], SamplingParams(max_tokens=6, temperature=0.0,
                                                    stop=[first_word]))[0].outputs[0]
    assert stopped.finish_reason == "stop" and first_word not in stopped.text
    kept = llm.generate([prompt], SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True,
                                                 stop=[first_word], min_tokens=6))[0].outputs[0]
    assert kept.text == free.text and kept.finish_reason == "length"
