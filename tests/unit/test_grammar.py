"""Grammar-constrained decoding in the engine, on the real SmolLM2 (llguidance masks)."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import torch

from inference.engine.grammar import GrammarMask
from inference.engine.sampler import apply_grammar
from inference.engine.sampling_params import SamplingParams

from .engine_driver import drain

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer"},
        "role": {"enum": ["admin", "user", "guest"]},
        "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24}},
                    "required": ["city"], "additionalProperties": False},
    },
    "required": ["name", "age", "role", "address"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def engine(smollm_gguf):
    from inference.engine.config import EngineConfig
    from inference.engine.engine import LLMEngine

    torch.set_num_threads(1)
    return LLMEngine.from_model(str(smollm_gguf), EngineConfig(
        device="cpu", num_kv_blocks=128, max_model_len=512))


def _prompt(engine, text: str) -> list[int]:
    tok = engine.tokenizer
    return tok.encode(tok.apply_chat_template([{"role": "user", "content": text}]))


def _schema_params(seed: int, schema=PERSON, **kw) -> SamplingParams:
    return SamplingParams(max_tokens=120, temperature=1.0, seed=seed,
                          grammar_kind="json_schema", grammar=json.dumps(schema), **kw)


def test_sampled_constrained_answers_validate_against_their_schema(engine) -> None:
    ids = _prompt(engine, "Describe a person as JSON.")
    texts, _, reasons = drain(engine, {f"r{i}": (ids, _schema_params(i)) for i in range(8)})
    for rid, text in texts.items():
        assert reasons[rid] == "stop", text
        jsonschema.validate(json.loads(text), PERSON)


def test_free_rows_get_the_same_tokens_beside_constrained_ones(engine) -> None:
    free = SamplingParams(max_tokens=16, temperature=0.8, seed=7)
    ids = _prompt(engine, "Write a haiku about the sea.")
    _, alone, _ = drain(engine, {"free": (ids, free)})
    mixed = {"free": (ids, free), "c0": (ids, _schema_params(1)), "c1": (ids, _schema_params(2))}
    _, together, _ = drain(engine, mixed)
    assert together["free"] == alone["free"]


def test_preempted_constrained_sequences_stay_valid(smollm_gguf) -> None:
    from inference.engine.config import EngineConfig
    from inference.engine.engine import LLMEngine

    # 8 blocks of 16 tokens: four 36-token prompts plus answers cannot all fit, so the
    # scheduler preempts and recomputes while the matchers keep their state.
    small = LLMEngine.from_model(str(smollm_gguf), EngineConfig(
        device="cpu", num_kv_blocks=8, max_model_len=512, enable_prefix_caching=False))
    ids = _prompt(small, "Describe a person as JSON.")
    texts, _, reasons = drain(small, {f"r{i}": (ids, _schema_params(i)) for i in range(4)})
    assert small.stats().preemptions > 0
    for rid, text in texts.items():
        if reasons[rid] == "stop":
            jsonschema.validate(json.loads(text), PERSON)
        else:  # cut by the pool, not by the grammar: still a prefix the grammar allows
            assert reasons[rid] == "length" and text.startswith("{")


def test_regex_and_choice_constrain_the_text(engine) -> None:
    ids = _prompt(engine, "What is your phone number?")
    regex = SamplingParams(max_tokens=30, temperature=1.0, seed=3, grammar_kind="regex",
                           grammar=r"\+1-[0-9]{3}-[0-9]{4}")
    choice = SamplingParams(max_tokens=30, temperature=1.0, seed=4, grammar_kind="choice",
                            grammar=json.dumps(["yes", "no", "maybe later"]))
    texts, _, reasons = drain(engine, {"regex": (ids, regex), "choice": (ids, choice)})
    assert re.fullmatch(r"\+1-[0-9]{3}-[0-9]{4}", texts["regex"])
    assert texts["choice"] in ("yes", "no", "maybe later")
    assert reasons == {"regex": "stop", "choice": "stop"}


def test_a_grammar_that_breaks_mid_answer_fails_its_request_alone(engine) -> None:
    """A Lark grammar of 5,000 alternatives compiles, then outgrows llguidance's parser limit
    (2,000 items a row) at its first token: the request fails naming `grammar`, and ends with
    "abort", never with a "stop" its grammar did not reach; a request beside it is whole."""
    ids = _prompt(engine, "Go.")
    huge = "start: " + " | ".join(f'"t{i}"' for i in range(5000))
    broken = SamplingParams(max_tokens=20, temperature=0, grammar_kind="lark", grammar=huge)
    free = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
    texts, _, reasons = drain(engine, {"broken": (ids, broken), "free": (ids, free)})
    assert reasons == {"broken": "abort", "free": "length"} and texts["broken"] == ""
    (failure,) = engine.take_failures()
    assert failure[0] == "broken" and failure[1].param == "grammar"
    assert "max is 2000" in str(failure[1]) and "\n" not in str(failure[1])
    assert engine.take_failures() == []


def test_compiled_grammars_are_cached_by_source(engine) -> None:
    before = engine.grammars.stats.compiles, engine.grammars.stats.cache_hits
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    ids = _prompt(engine, "Are you ok?")
    drain(engine, {f"r{i}": (ids, _schema_params(i, schema)) for i in range(3)})
    assert engine.grammars.stats.compiles == before[0] + 1
    assert engine.grammars.stats.cache_hits == before[1] + 2


def test_lanes_compile_one_pristine_each_and_mask_alike(engine) -> None:
    from inference.engine.grammar import Grammars

    grammars = Grammars(engine.tokenizer, engine.grammars.vocab_size, engine.eos_ids, lanes=3)
    params = SamplingParams(max_tokens=4, grammar_kind="choice", grammar='["yes", "no"]')
    matchers = [grammars.new_matcher(params) for _ in range(5)]  # (matcher, lane)
    assert (grammars.stats.compiles, grammars.stats.lane_compiles,
            grammars.stats.cache_hits) == (1, 2, 4)
    bits = grammars.fill([_Constrained(*m) for m in matchers])
    assert all(torch.equal(bits[0], row) for row in bits)  # every lane, one grammar


def test_spare_lanes_are_capped_across_the_cache_and_given_back_on_eviction(engine) -> None:
    from inference.engine.grammar import Grammars

    grammars = Grammars(engine.tokenizer, engine.grammars.vocab_size, engine.eos_ids,
                        cache_size=2, lanes=4, spare_lanes=5)

    def hand(choices: str, n: int) -> list[tuple]:
        params = SamplingParams(max_tokens=4, grammar_kind="choice", grammar=choices)
        return [grammars.new_matcher(params) for _ in range(n)]

    a = hand('["yes", "no"]', 8)  # lanes 1-3 compiled: 3 spares
    b = hand('["up", "down"]', 8)  # lanes 1-2, then the cap: 5 spares
    assert grammars.stats.lane_compiles == 5
    assert sorted({lane for _, lane in a}) == [0, 1, 2, 3]
    assert sorted({lane for _, lane in b}) == [0, 1, 2]  # round robin over what it has
    bits = grammars.fill([_Constrained(*m) for m in b])
    assert all(torch.equal(bits[0], row) for row in bits)
    hand('["left", "right"]', 1)  # a third grammar evicts the first and its 3 spares
    hand('["left", "right"]', 4)
    assert grammars.stats.lane_compiles == 8


@pytest.mark.parametrize(("kind", "source", "param"), [
    ("json_schema", '{"type": "nonsense"}', "grammar"),
    ("json_schema", "{not json", "grammar"),
    ("regex", "a(", "grammar"),
    ("choice", "[]", "grammar"),
    ("xml", "<a/>", "grammar"),
])
def test_a_bad_grammar_is_refused_naming_the_field(kind, source, param) -> None:
    with pytest.raises(ValueError, match=rf"^{param}: "):
        SamplingParams(grammar_kind=kind, grammar=source)


def test_a_grammar_with_ignore_eos_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^ignore_eos: "):
        SamplingParams(grammar_kind="regex", grammar="a+", ignore_eos=True)


def test_the_bitmask_masks_only_its_rows() -> None:
    logits = torch.zeros(3, 70)
    bits = torch.zeros(1, 3, dtype=torch.int32)
    bits[0, 1] = 1 << 5  # allow token 37 only
    apply_grammar(logits, GrammarMask(torch.tensor([1]), bits))
    assert torch.isinf(logits[1]).sum() == 69 and logits[1, 37] == 0
    assert not torch.isinf(logits[0]).any() and not torch.isinf(logits[2]).any()


def test_grammar_counters_reach_the_worker_metrics(engine) -> None:
    from inference.metrics import EngineCollector

    ids = _prompt(engine, "Yes or no?")
    drain(engine, {"r": (ids, SamplingParams(max_tokens=5, grammar_kind="choice",
                                            grammar='["yes", "no"]'))})
    stats = engine.stats()
    assert stats.grammar.compiles >= 1 and stats.grammar.constrained_tokens >= 1
    families = {f.name: f for f in EngineCollector("m", engine.stats).collect()}
    assert families["kvmesh_worker_grammar_compiles"].samples[0].value == stats.grammar.compiles
    assert families["kvmesh_worker_constrained_tokens"].samples[0].value \
        == stats.grammar.constrained_tokens
    assert stats.grammar.mask_seconds > 0
    assert families["kvmesh_worker_grammar_mask_seconds"].samples[0].value \
        == stats.grammar.mask_seconds


def test_warming_prepares_the_tokenizer_without_counting_or_caching_a_grammar(engine) -> None:
    from inference.engine.grammar import Grammars

    grammars = Grammars(engine.tokenizer, engine.grammars.vocab_size, engine.eos_ids)
    grammars.warm()
    assert grammars._lltok is not None and not grammars._cache
    assert grammars.stats == type(grammars.stats)()  # nothing compiled, masked or hit
    params = SamplingParams(max_tokens=4, grammar_kind="choice", grammar='["yes", "no"]')
    bits = grammars.fill([_Constrained(*grammars.new_matcher(params))])
    allowed = {engine.tokenizer.decode([i]) for i in range(grammars.vocab_size)
               if bits[0, i // 32] >> (i % 32) & 1}
    assert allowed and all(t and ("yes".startswith(t) or "no".startswith(t)) for t in allowed)


def test_warming_and_masking_never_import_llguidance_torch(smollm_gguf) -> None:
    """`llguidance.torch` TorchScript-compiles helpers at import, ~2 s holding the GIL: in the
    engine process's warm-up thread that stalled every step of a new worker (grammar.py)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from inference.engine.grammar import Grammars\n"
        "from inference.engine.loader import load_checkpoint\n"
        "from inference.engine.sampling_params import SamplingParams\n"
        f"tok = load_checkpoint({str(smollm_gguf)!r}, need_weights=False).tokenizer\n"
        "g = Grammars(tok, 49152, frozenset({2}))\n"
        "g.warm()\n"
        "m, lane = g.new_matcher(SamplingParams(grammar_kind='choice', grammar='[\"yes\"]'))\n"
        "class S: matcher, grammar_lane = m, lane\n"
        "assert g.fill([S()]).shape == (1, 1536)\n"
        "print('llguidance.torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_warming_without_a_tokenizer_does_nothing() -> None:
    from inference.engine.grammar import Grammars

    grammars = Grammars(None, 64, frozenset({0}))
    grammars.warm()
    assert grammars._lltok is None


class _Constrained:
    """What `Grammars.masks` reads of a sequence: its matcher and lane."""

    def __init__(self, matcher, lane: int = 0) -> None:
        self.matcher = matcher
        self.grammar_lane = lane


def test_both_bitmask_unpackers_agree() -> None:
    from inference.engine.sampler import forbidden_cpu, forbidden_on

    bits = torch.randint(-(2**31), 2**31 - 1, (5, 40), dtype=torch.int32)
    assert torch.equal(forbidden_cpu(bits, 1270), forbidden_on(bits, 1270))
    word, bit = divmod(1000, 32)
    assert bool(forbidden_cpu(bits, 1270)[0, 1000]) == (not (int(bits[0, word]) >> bit) & 1)
