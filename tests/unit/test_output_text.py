"""The worker makes the text of outputs without stop strings (inference/output_text.py): the
same text, row by row, that the engine makes when it detokenizes itself."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import pytest

from inference.engine.config import EngineConfig
from inference.engine.engine import LLMEngine
from inference.engine.outputs import StepOutput
from inference.engine.request_state import RequestState
from inference.engine.sampling_params import SamplingParams
from inference.engine.sequence import Sequence
from inference.engine.tokenizer import Tokenizer
from inference.output_text import ChoiceTexts

HOSTILE = ["héllo wörld", "日本語のテキスト", "emoji 🙂🚀 mixed", "tab\there\nnewline  two",
           "<|im_start|>special<|im_end|> after", "ﬁ ligature and ẞ", "🏳️‍🌈 zwj"]


@pytest.fixture(scope="module")
def tok(shaped: Path) -> Tokenizer:
    return Tokenizer.from_hf_folder(shaped)


def _engine_rows(tok: Tokenizer, ids: list[int], params: SamplingParams, finish_at: str
                 ) -> list[StepOutput]:
    """The rows the engine's own detokenizing choice makes for `ids` (the last one ends the
    choice as `finish_at` says: "eos", "stop_token" or "length")."""
    max_len = 3 + len(ids) if finish_at == "length" else 10_000  # the last token reaches it
    seq = Sequence(0, "r", 0, [1, 2, 3], 3, params, 0.0, max_len=max_len)
    state = RequestState("r", params, 3)
    choice = state.new_choice(seq, tok, frozenset(tok.eos_token_ids))
    rows = []
    for t in ids:
        seq.token_ids.append(t)
        rows.append(choice.on_token(t, None))
    return rows


@pytest.mark.parametrize("skip_special_tokens", [True, False])
@pytest.mark.parametrize("finish_at", ["eos", "stop_token", "length"])
def test_rows_carry_the_engines_text(tok: Tokenizer, finish_at: str,
                                     skip_special_tokens: bool) -> None:
    rng = random.Random(7)
    stop_token = tok.encode(" the")[0]
    for text in HOSTILE + [" ".join(rng.sample(HOSTILE, 3)) for _ in range(20)]:
        ids = [t for t in tok.encode(text) if t not in (stop_token, *tok.eos_token_ids)]
        # cut anywhere, even inside a character's bytes, then end the choice
        ids = ids[: rng.randrange(1, len(ids) + 1)]
        if finish_at == "eos":
            ids.append(tok.eos_token_ids[0])
        elif finish_at == "stop_token":
            ids.append(stop_token)
        params = SamplingParams(max_tokens=1000, stop_token_ids=[stop_token],
                                skip_special_tokens=skip_special_tokens)
        want = _engine_rows(tok, ids, params, finish_at)
        texts = ChoiceTexts(tok, params, frozenset(tok.eos_token_ids))
        got = [texts.text(0, r.token_ids, r.finish_reason) for r in want]
        assert got == [r.text for r in want]
        assert want[-1].finish_reason == ("length" if finish_at == "length" else "stop")
        shown = "".join(got)  # the ending token shows no text either way
        specials = "<|im_start|>" in tok.decode(ids, skip_special_tokens=False)
        assert ("<|im_start|>" in shown) == (specials and not skip_special_tokens)


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_include_stop_str_in_output_shows_the_token_that_stopped(
        tok: Tokenizer, skip_special_tokens: bool) -> None:
    """vLLM's: the stop token's text ends the answer (an end of sequence's only where special
    tokens show), in the engine's text and the worker's alike."""
    stop_token, eos = tok.encode(" the")[0], tok.eos_token_ids[0]
    ids = tok.encode("a cat sat on")
    eos_text = "" if skip_special_tokens else tok.decode([eos], skip_special_tokens=False)
    for end, end_text in ((stop_token, " the"), (eos, eos_text)):
        params = SamplingParams(max_tokens=1000, stop_token_ids=[stop_token],
                                include_stop_str_in_output=True,
                                skip_special_tokens=skip_special_tokens)
        want = _engine_rows(tok, [*ids, end], params, "stop_token")
        texts = ChoiceTexts(tok, params, frozenset(tok.eos_token_ids))
        got = [texts.text(0, r.token_ids, r.finish_reason) for r in want]
        assert got == [r.text for r in want] and want[-1].finish_reason == "stop"
        assert "".join(got) == "a cat sat on" + end_text


def test_an_eos_token_is_shown_with_ignore_eos(tok: Tokenizer) -> None:
    eos = tok.eos_token_ids[0]
    params = SamplingParams(max_tokens=2, ignore_eos=True)
    texts = ChoiceTexts(tok, params, frozenset([eos]))
    shown = texts.text(0, [tok.encode("hi")[0]], None) + texts.text(0, [eos], "length")
    assert shown == tok.decode([tok.encode("hi")[0], eos])


def test_the_tokenizer_travels_pickled(tok: Tokenizer) -> None:
    again = pickle.loads(pickle.dumps(tok))
    for text in HOSTILE:
        assert again.encode(text) == tok.encode(text)
    assert again.decode(tok.encode(HOSTILE[2])) == HOSTILE[2]
    assert (again.eos_token_ids, again.bos_token_id, again.chat_template) == \
        (tok.eos_token_ids, tok.bos_token_id, tok.chat_template)


def _run(engine: LLMEngine, requests: list[tuple[str, list[int], SamplingParams]]
         ) -> list[StepOutput]:
    for rid, ids, params in requests:
        engine.add_request(rid, ids, params)
    rows = []
    while engine.has_unfinished():
        rows += engine.step()
    return rows


def test_an_engine_that_leaves_the_text_to_its_worker(shaped: Path, tok: Tokenizer) -> None:
    """Two engines, one detokenizing and one as the engine process runs it, on the same
    requests (greedy and seeded, n = 2, a stop token, stop strings): the same tokens; rows of
    requests with stop strings carry the engine's text, the others none, and `ChoiceTexts`
    over those rows gives the first engine's text, row by row."""
    greedy = SamplingParams(max_tokens=24, temperature=0)
    probe = LLMEngine.from_model(str(shaped), EngineConfig(load_format="dummy", seed=3))
    first = [r.token_ids[0] for r in _run(probe, [("p", tok.encode("Hello there"), greedy)])]
    stop_token = first[5]  # generated greedily: ends that request early
    full = tok.decode(first)
    at = next(k for k in range(3, len(full) - 3) if full.find(full[k:k + 3]) == k)
    stop = full[at:at + 3]  # first found after some text
    requests = [
        ("greedy", tok.encode("Hello there"), greedy),
        ("stop_token", tok.encode("Hello there"),
         SamplingParams(max_tokens=24, temperature=0, stop_token_ids=[stop_token])),
        ("seeded_n2", tok.encode("日本語 🙂"),
         SamplingParams(max_tokens=30, temperature=1.0, seed=5, n=2)),
        ("stop_string", tok.encode("Hello there"),
         SamplingParams(max_tokens=24, temperature=0, stop=[stop])),
    ]
    whole = _run(LLMEngine.from_model(str(shaped), EngineConfig(load_format="dummy", seed=3)),
                 requests)
    split_engine = LLMEngine.from_model(str(shaped), EngineConfig(load_format="dummy", seed=3))
    split_engine.detokenize = False
    split = _run(split_engine, requests)
    assert [(r.request_id, r.index, r.token_ids, r.finish_reason) for r in split] == \
        [(r.request_id, r.index, r.token_ids, r.finish_reason) for r in whole]
    texts = {rid: ChoiceTexts(tok, params, split_engine.eos_ids)
             for rid, _, params in requests if not params.stop}
    for a, b in zip(whole, split, strict=True):
        if a.request_id in texts:
            assert b.text == ""
            assert texts[a.request_id].text(b.index, b.token_ids, b.finish_reason) == a.text
        else:
            assert b.text == a.text
    assert any(r.text for r in whole if r.request_id == "stop_string")
    assert next(r for r in whole if r.request_id == "stop_token"
                and r.finish_reason).finish_reason == "stop"
