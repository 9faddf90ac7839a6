"""Presence, frequency and repetition penalties (inference/engine/penalties.py): the formulas
on every penalised row of a batch and no other, counts kept on the device across steps and
slots reused clean; on the real SmolLM2 model, greedy answers equal transformers' (its own
`repetition_penalty`; OpenAI's two written out here from their documented formula)."""

from __future__ import annotations

import pytest
import torch

from inference import LLM, SamplingParams
from inference.engine.errors import InvalidParameter
from inference.engine.penalties import Penalties
from inference.engine.sampler import SampleRow, sample
from inference.engine.sequence import Sequence, SequenceStatus

from .engine_driver import arrivals, greedy, run, tiny_engine
from .hf_reference import hf_logits, hf_twin

CPU = torch.device("cpu")
VOCAB = 12


def _seq(seq_id: int, prompt: list[int], **params: float) -> Sequence:
    return Sequence(seq_id, f"r{seq_id}", 0, list(prompt), len(prompt),
                    SamplingParams(temperature=0.0, **params), 0.0,
                    status=SequenceStatus.RUNNING)


def _want(logits: torch.Tensor, seq: Sequence, generated: list[int]) -> torch.Tensor:
    """The penalties of `seq.params` on one row, token by token, as documented."""
    p, out = seq.params, logits.clone()
    seen = set(seq.token_ids[:seq.num_prompt_tokens]) | set(generated)
    for t in range(VOCAB):
        if t in seen and p.repetition_penalty != 1.0:
            out[t] = out[t] / p.repetition_penalty if out[t] > 0 else out[t] * p.repetition_penalty
        c = generated.count(t)
        out[t] -= p.frequency_penalty * c + p.presence_penalty * (c > 0)
    return out


def test_each_row_gets_its_own_penalties_step_after_step() -> None:
    rows = [_seq(0, [1, 2], frequency_penalty=0.5, presence_penalty=0.25),
            _seq(1, [3], repetition_penalty=1.5),
            _seq(2, [4])]  # no penalty: untouched
    penalties = Penalties(VOCAB, CPU, cap=64)
    gen = torch.Generator().manual_seed(0)
    generated: list[list[int]] = [[], [], []]
    for step in range(6):
        logits = torch.randn(3, VOCAB, generator=gen)
        raw = logits.clone()
        drawn = sample(logits, rows, torch.Generator(), penalties=penalties)
        for i, seq in enumerate(rows):
            assert torch.allclose(logits[i], _want(raw[i], seq, generated[i])), (step, i)
            assert drawn.tokens[i].item() == logits[i].argmax().item()
            generated[i].append(drawn.tokens[i].item())
    assert set(penalties.slots) == {0, 1}


def test_a_released_slot_is_reused_clean() -> None:
    penalties = Penalties(VOCAB, CPU, cap=64)
    first = _seq(0, [5, 5, 6], repetition_penalty=2.0, frequency_penalty=1.0)
    sample(torch.ones(1, VOCAB), [first], torch.Generator(), penalties=penalties)
    penalties.release(0)
    second = _seq(1, [7], repetition_penalty=2.0, frequency_penalty=1.0)
    logits = torch.ones(1, VOCAB)
    sample(logits, [second], torch.Generator(), penalties=penalties)
    assert penalties.slots == {1: (0, second)}  # the same slot, none of `first`'s tokens
    assert torch.equal(logits[0], _want(torch.ones(VOCAB), second, []))


def test_slots_grow_past_the_first_ones_keeping_their_counts() -> None:
    penalties = Penalties(VOCAB, CPU, cap=64)
    seqs = [_seq(i, [i % VOCAB], frequency_penalty=1.0) for i in range(20)]
    for seq in seqs:  # one at a time: the slots double twice while others hold theirs
        sample(torch.zeros(1, VOCAB), [seq], torch.Generator(), penalties=penalties)
    logits = torch.zeros(20, VOCAB)
    sample(logits, seqs, torch.Generator(), penalties=penalties)
    assert (logits.min(dim=1).values == -1.0).all()  # each row's first token counted once
    assert len(set(penalties.slots.values())) == 20


def test_at_the_cap_preempted_sequences_give_their_slots_back_and_rebuild_them() -> None:
    """Slots stay within the cap while preempted sequences hold some; one that comes back
    has its counts rebuilt from its tokens (all real once it was recomputed)."""
    penalties = Penalties(VOCAB, CPU, cap=4)
    seqs = [_seq(i, [i], frequency_penalty=1.0) for i in range(4)]
    for _ in range(2):  # two tokens each
        drawn = sample(torch.zeros(4, VOCAB), seqs, torch.Generator(), penalties=penalties)
        for seq, token in zip(seqs, drawn.tokens.tolist(), strict=True):
            seq.token_ids.append(token)
    seqs[1].status = seqs[2].status = SequenceStatus.WAITING  # preempted
    newcomer = _seq(9, [9], frequency_penalty=1.0)
    sample(torch.zeros(1, VOCAB), [newcomer], torch.Generator(), penalties=penalties)
    assert penalties.counts.shape[0] == 4 and set(penalties.slots) == {0, 3, 9}
    seqs[1].status = SequenceStatus.RUNNING  # recomputed
    logits = torch.zeros(1, VOCAB)
    sample(logits, [seqs[1]], torch.Generator(), penalties=penalties)
    assert torch.equal(logits[0], _want(torch.zeros(VOCAB), seqs[1], seqs[1].token_ids[1:]))
    everyone = [seqs[0], seqs[1], seqs[3], newcomer, _seq(10, [1], frequency_penalty=1.0)]
    sample(torch.zeros(5, VOCAB), everyone, torch.Generator(), penalties=penalties)
    assert penalties.counts.shape[0] == 8  # all of them run: past the cap


def test_a_penalised_row_without_the_engine_state_is_refused() -> None:
    with pytest.raises(ValueError, match="Penalties"):
        sample(torch.zeros(1, VOCAB), [SampleRow(SamplingParams(presence_penalty=1.0), None)],
               torch.Generator())


@pytest.mark.parametrize(("field", "value"), [
    ("presence_penalty", 2.5), ("frequency_penalty", -2.1), ("repetition_penalty", 0.0),
    ("repetition_penalty", 1e-38), ("repetition_penalty", 2.5)])
def test_values_out_of_range_are_refused_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(InvalidParameter) as err:
        SamplingParams(**{field: value})
    assert err.value.param == field


@pytest.mark.parametrize("async_scheduling", [False, True])
def test_preemption_and_a_small_cap_leave_penalised_answers_unchanged(async_scheduling) -> None:
    """Greedy penalised answers with a roomy engine equal those of an engine whose tiny KV
    pool preempts them (later requests of a higher priority take the room, and are sampled
    while the preempted wait) and whose cap of 3 sequences a step makes the waiting give
    their slots back and rebuild them: the counts come back exactly."""
    reqs = [(at + 6 * (i >= 4), prompt, greedy(24, priority=5 * (i >= 4), frequency_penalty=0.9,
                                                presence_penalty=0.3, repetition_penalty=1.3))
            for i, (at, prompt) in enumerate(arrivals(7, 8))]
    roomy = run(tiny_engine(async_scheduling=async_scheduling), reqs)
    cramped = tiny_engine(async_scheduling=async_scheduling, num_kv_blocks=17, max_num_seqs=3)
    gave_back = []
    spy = cramped.penalties._give_back_waiting
    cramped.penalties._give_back_waiting = lambda: gave_back.append(spy()) or gave_back[-1]
    assert run(cramped, reqs) == roomy
    assert cramped.stats().preemptions > 0 and any(gave_back)
    assert not cramped.penalties.slots and cramped.penalties.counts.shape[0] == 3


# ---- the real model, float32, against transformers ----------------------------------------

PROMPT = "Repeat after me: the cat sat on the mat. The cat sat on the mat. The cat"
N = 16


@pytest.fixture(scope="module")
def llm(smollm_gguf) -> LLM:
    return LLM(str(smollm_gguf), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def hf(llm: LLM):
    return hf_twin(llm.engine.runner.model)


def _ours(llm: LLM, prompt: list[int], **penalties: float) -> list[int]:
    params = SamplingParams(max_tokens=N, temperature=0.0, ignore_eos=True, **penalties)
    return list(llm.generate([prompt], params)[0].outputs[0].token_ids)


@pytest.mark.slow
def test_repetition_penalty_matches_transformers(llm: LLM, hf) -> None:
    prompt = llm.tokenizer.encode(PROMPT)
    out = hf.generate(torch.tensor([prompt]), max_new_tokens=N, min_new_tokens=N,
                      do_sample=False, repetition_penalty=1.3)
    theirs = out[0, len(prompt):].tolist()
    assert _ours(llm, prompt, repetition_penalty=1.3) == theirs
    assert theirs != _ours(llm, prompt)  # the penalty changed the answer


@pytest.mark.slow
def test_openai_penalties_match_the_formula_on_transformers_logits(llm: LLM, hf) -> None:
    prompt = llm.tokenizer.encode(PROMPT)
    ids, generated = list(prompt), []
    for _ in range(N):
        logits = hf_logits(hf, ids)[-1]
        for t in set(generated):
            logits[t] -= 0.8 * generated.count(t) + 0.6
        generated.append(int(logits.argmax()))
        ids.append(generated[-1])
    ours = _ours(llm, prompt, frequency_penalty=0.8, presence_penalty=0.6)
    assert ours == generated and generated != _ours(llm, prompt)


@pytest.mark.slow
def test_penalised_and_plain_requests_in_one_batch_keep_their_own_answers(llm: LLM) -> None:
    prompt = llm.tokenizer.encode(PROMPT)
    plain = SamplingParams(max_tokens=N, temperature=0.0, ignore_eos=True)
    penalised = SamplingParams(max_tokens=N, temperature=0.0, ignore_eos=True, n=2,
                               frequency_penalty=1.5)
    outs = llm.generate([prompt, prompt], [plain, penalised])
    assert list(outs[0].outputs[0].token_ids) == _ours(llm, prompt)
    alone = _ours(llm, prompt, frequency_penalty=1.5)
    assert [list(c.token_ids) for c in outs[1].outputs] == [alone, alone]
    assert not llm.engine.penalties.slots  # every finished choice gave its slot back
