"""Turns the logits of the rows being sampled into next tokens (and logprobs).

Greedy rows take the argmax. Other rows apply temperature, then min-p, then top-k and top-p on
one sort, then draw by the exponential race (argmax of p / Exp(1)), which equals multinomial
sampling.
A row with its own generator (a seeded request) draws its noise from that generator alone, so
its tokens do not depend on what else is in the batch. Logprobs are of the model's
distribution (before temperature and truncation), as OpenAI reports them; a biased or
constrained row's logprobs are of its biased, masked distribution, where a forbidden token's
logprob is `LOGPROB_FLOOR` (-9999, what OpenAI and vLLM report for it: JSON has no -inf).

`sample` only queues device work and returns a `DeviceSample`: the engine copies it to the host
without blocking (`transfer.HostCopy`) so the next step can be launched first.

On CUDA, a batch whose rows all sample plainly (greedy, or temperature only: no top-k, no
top-p, no seed of their own) and whose logits have fewer than 2**31 entries draws in one
Triton kernel, `triton_kernels/gumbel_sample.py`: temperature, noise and argmax in one read of
the logits (Gumbel-max, the same distribution as the race), each row split over many
programs. An all-greedy batch of fewer rows than the GPU has SMs goes through it too:
torch's argmax reduces a row in one thread block, which at batch 1 takes 28 µs of a
128,256-token row on an H200; from a row per SM on, that fills the GPU, and argmax is one
launch with no temperatures to send (vLLM's all-greedy path), where the kernel's host side is
two Triton launches (an all-greedy batch's zero temperatures stay on the device). The seed
comes from the engine's generator, read and advanced on the host (only when some row
samples), so the draws are reproducible from the engine's seed and nothing waits for the GPU.

Penalised rows (presence, frequency, repetition: inference/engine/penalties.py) are penalised
first, then rows with a `logit_bias` get their biases added (inference/engine/logit_bias.py),
then rows with `allowed_token_ids` have every other token set to -inf (allowed_tokens.py), then
rows short of their `min_tokens` have their ending tokens set to -inf (min_tokens.py), then
grammar-constrained rows (`GrammarMask`) have the tokens their grammar forbids set to -inf, in
place and for those rows only; the other rows are untouched.
"""

from __future__ import annotations

from collections.abc import Sequence as PySequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from .allowed_tokens import keep_allowed
from .grammar import GrammarMask
from .logit_bias import apply_logit_bias
from .min_tokens import forbid_endings
from .outputs import TokenLogprob
from .penalties import Penalties
from .sampling_params import SamplingParams
from .transfer import to_device

LOGPROB_FLOOR = -9999.0  # the logprob reported for a token that cannot be drawn
_SHIFTS: dict[torch.device, torch.Tensor] = {}
_ZEROS: dict[torch.device, torch.Tensor] = {}


class Row(Protocol):
    """What sampling reads of a row: its params and its own generator (None: the engine's).
    An engine `Sequence` is one; `SampleRow` is one for callers that have none."""

    params: SamplingParams
    generator: torch.Generator | None


@dataclass
class SampleRow:
    params: SamplingParams
    generator: torch.Generator | None


@dataclass
class _Plan:
    """What a batch's rows ask of sampling, gathered in one pass over them (hot path: once
    per step over every sampled row)."""

    greedy: list[int]  # rows at temperature 0
    random: list[int]  # the others
    temps: list[float]  # every row's temperature
    plain: bool  # every row temperature-only: no top-k/p, no min-p, no generator of its own
    biased: bool  # some row has a logit_bias
    logprob_rows: list[int]  # rows that asked for logprobs
    penalized: list[int]  # rows with a presence, frequency or repetition penalty
    floored: list[int]  # rows with a `min_tokens`
    restricted: list[int]  # rows with `allowed_token_ids`

    @classmethod
    def of(cls, rows: PySequence[Row]) -> _Plan:
        plan = cls([], [], [], True, False, [], [], [], [])
        for i, row in enumerate(rows):
            p = row.params
            plan.temps.append(p.temperature)
            (plan.greedy if p.greedy else plan.random).append(i)
            if row.generator is not None or p.top_k != -1 or p.top_p != 1.0 or p.min_p:
                plan.plain = False
            if p.logit_bias:
                plan.biased = True
            if p.logprobs is not None:
                plan.logprob_rows.append(i)
            if p.presence_penalty or p.frequency_penalty or p.repetition_penalty != 1.0:
                plan.penalized.append(i)
            if p.min_tokens:
                plan.floored.append(i)
            if p.allowed_token_ids:
                plan.restricted.append(i)
        return plan


@dataclass
class DeviceSample:
    """A step's draws, still on the logits' device: nothing here has waited for the GPU.

    `tokens[i]` is row i's token. Rows in `logprob_rows` asked for logprobs: `chosen[j]` is the
    logprob of row `logprob_rows[j]`'s token, `top_values[j]`/`top_ids[j]` its `max(k)` best
    (each row keeps its own `k`, `logprob_ks[j]`). `transfer.HostCopy` brings `tensors()`
    back; `read` turns the host copies into tokens and logprobs.
    """

    tokens: torch.Tensor
    logprob_rows: list[int] = field(default_factory=list)
    logprob_ks: list[int] = field(default_factory=list)
    chosen: torch.Tensor | None = None
    top_values: torch.Tensor | None = None
    top_ids: torch.Tensor | None = None

    def tensors(self) -> list[torch.Tensor | None]:
        """What `read` needs, in its order: copy these to the host."""
        return [self.tokens, self.chosen, self.top_values, self.top_ids]

    def read(self, host: list[torch.Tensor | None]
             ) -> tuple[list[int], list[TokenLogprob | None]]:
        """Per row, its token and `TokenLogprob` (None when it asked for none), from host
        copies of `tensors()`."""
        tokens_t, chosen_t, values_t, ids_t = host
        tokens: list[int] = tokens_t.tolist()
        out: list[TokenLogprob | None] = [None] * len(tokens)
        if chosen_t is None:
            return tokens, out
        chosen, top_values, top_ids = chosen_t.tolist(), values_t.tolist(), ids_t.tolist()
        for j, (i, k) in enumerate(zip(self.logprob_rows, self.logprob_ks, strict=True)):
            top = list(zip(top_ids[j][:k], top_values[j][:k], strict=True))
            out[i] = TokenLogprob(tokens[i], chosen[j], top)
        return tokens, out


def sample(
    logits: torch.Tensor,
    rows: PySequence[Row],
    default_generator: torch.Generator,
    grammar: GrammarMask | None = None,
    penalties: Penalties | None = None,
    eos_ids: frozenset[int] = frozenset(),
) -> DeviceSample:
    """`logits`: [N, vocab] float32, one row per entry of `rows`; `grammar` masks some rows;
    `penalties` holds the penalised rows' counts (needed when a row has a penalty: such rows
    are engine sequences, see penalties.py), and counts the tokens drawn for them. A row with
    `min_tokens` must be an engine sequence too (it reads its generated count); `eos_ids` are
    the model's end-of-sequence ids, which such a row cannot draw until it has enough.
    Hot path: queues device work only; no host value is read back (see `transfer.py`)."""
    plan = _Plan.of(rows)
    applied = None
    if plan.penalized:
        if penalties is None:
            raise ValueError("penalised rows need the engine's Penalties")
        applied = penalties.apply(logits, [rows[i] for i in plan.penalized],
                                  plan.penalized)
    if plan.biased:
        apply_logit_bias(logits, [r.params for r in rows])
    if plan.restricted:
        keep_allowed(logits, [rows[i].params for i in plan.restricted], plan.restricted)
    if plan.floored:
        forbid_endings(logits, [rows[i] for i in plan.floored], plan.floored, eos_ids)
    if grammar is not None:
        apply_grammar(logits, grammar)
    greedy, random = plan.greedy, plan.random
    device = logits.device
    fused = device.type == "cuda" and logits.numel() < 2**31 and plan.plain
    if fused:
        from .triton_kernels.gumbel_sample import gumbel_sample, num_sms

        fused = bool(random) or len(rows) < num_sms(device)
    if fused:
        if random:
            temps = to_device(plan.temps, torch.float32, device)
            seed = _next_seed(default_generator)
        else:  # greedy rows draw no noise, and their temperatures need no upload
            temps, seed = _zeros(len(rows), device), 0
        tokens = gumbel_sample(logits, temps, seed)
    elif not random:  # all greedy: no row gather, no scatter (a [N, vocab] copy each)
        tokens = logits.argmax(dim=-1)
    else:
        tokens = torch.empty(len(rows), dtype=torch.long, device=device)
        if greedy:
            idx = to_device(greedy, torch.long, device)
            tokens[idx] = logits[idx].argmax(dim=-1)
        idx = to_device(random, torch.long, device)
        probs = _truncated_probs(logits[idx], [rows[i].params for i in random])
        tokens[idx] = _race(probs, [rows[i].generator for i in random], default_generator)
    if applied is not None:
        penalties.count(applied, tokens)
    return _with_logprobs(DeviceSample(tokens), logits, rows, plan.logprob_rows)


def _zeros(rows: int, device: torch.device) -> torch.Tensor:
    """`rows` float32 zeros on `device`, a view of one buffer kept per device (nothing writes
    it): an all-greedy batch's temperatures without a host-to-device copy each step."""
    buf = _ZEROS.get(device)
    if buf is None or buf.shape[0] < rows:
        buf = _ZEROS[device] = torch.zeros(max(rows, 256), dtype=torch.float32, device=device)
    return buf[:rows]


def _next_seed(gen: torch.Generator) -> int:
    """A fresh seed below 2**31 for one fused draw. A CUDA generator keeps its Philox offset
    on the host: reading and advancing it costs no device sync."""
    offset = gen.get_offset()
    gen.set_offset(offset + 4)
    return (gen.initial_seed() * 1_000_003 + offset // 4) % (2**31 - 1)


@torch.inference_mode()  # the runner's logits are inference tensors: written in place here
def apply_grammar(logits: torch.Tensor, mask: GrammarMask) -> None:
    """Set the tokens each constrained row's bitmask forbids to -inf, in place."""
    vocab = logits.shape[1]
    if logits.device.type == "cpu":
        forbidden = forbidden_cpu(mask.bits, vocab)
    else:
        forbidden = forbidden_on(to_device(mask.bits, torch.int32, logits.device), vocab)
    if len(mask.rows) == logits.shape[0]:  # every row constrained: no gather and scatter
        logits.masked_fill_(forbidden, float("-inf"))
        return
    idx = to_device(mask.rows, torch.long, logits.device)
    logits[idx] = logits[idx].masked_fill(forbidden, float("-inf"))


def forbidden_cpu(bits: torch.Tensor, vocab: int) -> torch.Tensor:
    """[rows, vocab] bool, True where the bitmask forbids the token. numpy's unpackbits is one
    C pass (the shifts of `forbidden_on` are ~15x slower on a CPU); little-endian int32 words
    read as bytes keep token 32*w + j at bit j of word w."""
    unpacked = np.unpackbits(bits.numpy().view(np.uint8), axis=1, bitorder="little")
    return torch.from_numpy(unpacked[:, :vocab]) == 0


def forbidden_on(bits: torch.Tensor, vocab: int) -> torch.Tensor:
    """As `forbidden_cpu`, on `bits`' device: one shift-and-and over [rows, words, 32]."""
    shifts = _SHIFTS.get(bits.device)
    if shifts is None:
        shifts = _SHIFTS[bits.device] = torch.arange(32, dtype=torch.int32, device=bits.device)
    return ((bits.unsqueeze(-1) >> shifts) & 1).flatten(1)[:, :vocab] == 0


def _truncated_probs(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    temps = to_device([p.temperature for p in params], torch.float32, logits.device)
    logits = logits / temps[:, None]
    if any(p.min_p for p in params):  # vLLM's order: min-p on the whole distribution first
        probs = logits.softmax(dim=-1)
        min_p = to_device([p.min_p for p in params], torch.float32, logits.device)
        floor = min_p[:, None] * probs.max(dim=-1, keepdim=True).values
        logits = logits.masked_fill(probs < floor, float("-inf"))
    if all(p.top_k == -1 and p.top_p == 1.0 for p in params):
        return logits.softmax(dim=-1)
    vocab = logits.shape[-1]
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    ks = to_device([p.top_k if p.top_k > 0 else vocab for p in params], torch.long,
                   logits.device)
    ranks = torch.arange(vocab, device=logits.device)
    drop = ranks[None, :] >= ks[:, None]
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    probs = sorted_logits.softmax(dim=-1)
    top_ps = to_device([p.top_p for p in params], torch.float32, logits.device)
    # Keep the smallest prefix whose mass reaches top_p: drop a token when the mass before
    # it already does. The first token is always kept.
    drop = (probs.cumsum(dim=-1) - probs) >= top_ps[:, None]
    probs = probs.masked_fill(drop, 0.0)
    probs = probs / probs.sum(dim=-1, keepdim=True)
    return torch.zeros_like(probs).scatter_(-1, order, probs)


def _race(
    probs: torch.Tensor, generators: list[torch.Generator | None], default: torch.Generator
) -> torch.Tensor:
    noise = torch.empty_like(probs)
    unseeded = [i for i, g in enumerate(generators) if g is None]
    if len(unseeded) == len(generators):
        noise.exponential_(generator=default)
    elif unseeded:
        noise[to_device(unseeded, torch.long, probs.device)] = torch.empty(
            len(unseeded), probs.shape[1], device=probs.device
        ).exponential_(generator=default)
    for i, g in enumerate(generators):
        if g is not None:
            noise[i].exponential_(generator=g)
    # Exp(1) can return 0; the clamp keeps p/noise finite without changing the winner.
    return (probs / noise.clamp_min_(1e-30)).argmax(dim=-1)


def _with_logprobs(out: DeviceSample, logits: torch.Tensor, rows: PySequence[Row],
                   wanted: list[int]) -> DeviceSample:
    if not wanted:
        return out
    idx = to_device(wanted, torch.long, logits.device)
    lp = logits[idx].log_softmax(dim=-1).clamp_(min=LOGPROB_FLOOR)
    out.logprob_rows = wanted
    out.logprob_ks = [rows[i].params.logprobs or 0 for i in wanted]
    out.top_values, out.top_ids = lp.topk(max(max(out.logprob_ks), 1), dim=-1)
    out.chosen = lp.gather(1, out.tokens[idx][:, None])[:, 0]
    return out
