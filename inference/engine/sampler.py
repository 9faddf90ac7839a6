"""Turns the logits of the rows being sampled into next tokens (and logprobs).

Greedy rows take the argmax. Other rows apply temperature, then top-k and top-p on one sort,
then draw by the exponential race (argmax of p / Exp(1)), which equals multinomial sampling.
A row with its own generator (a seeded request) draws its noise from that generator alone, so
its tokens do not depend on what else is in the batch. Logprobs are of the model's
distribution (before temperature and truncation), as OpenAI reports them; a biased or
constrained row's logprobs are of its biased, masked distribution (forbidden tokens are -inf).

Rows with a `logit_bias` get their biases added first (inference/engine/logit_bias.py), then
grammar-constrained rows (`GrammarMask`) have the tokens their grammar forbids set to -inf,
in place and for those rows only; the other rows are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .grammar import GrammarMask
from .logit_bias import apply_logit_bias
from .outputs import TokenLogprob
from .sampling_params import SamplingParams

_SHIFTS: dict[torch.device, torch.Tensor] = {}


@dataclass
class SampleRow:
    params: SamplingParams
    generator: torch.Generator | None


def sample(
    logits: torch.Tensor,
    rows: list[SampleRow],
    default_generator: torch.Generator,
    grammar: GrammarMask | None = None,
) -> tuple[list[int], list[TokenLogprob | None]]:
    """`logits`: [N, vocab] float32, one row per entry of `rows`; `grammar` masks some rows."""
    apply_logit_bias(logits, [r.params for r in rows])
    if grammar is not None:
        apply_grammar(logits, grammar)
    greedy = [i for i, r in enumerate(rows) if r.params.greedy]
    random = [i for i, r in enumerate(rows) if not r.params.greedy]
    if not random:  # all greedy: no row gather, no scatter (a [N, vocab] copy each)
        token_list = logits.argmax(dim=-1).tolist()
        return token_list, _logprobs(logits, rows, token_list)
    tokens = torch.empty(len(rows), dtype=torch.long, device=logits.device)
    if greedy:
        idx = torch.tensor(greedy, device=logits.device)
        tokens[idx] = logits[idx].argmax(dim=-1)
    if random:
        idx = torch.tensor(random, device=logits.device)
        probs = _truncated_probs(logits[idx], [rows[i].params for i in random])
        tokens[idx] = _race(probs, [rows[i].generator for i in random], default_generator)
    token_list = tokens.tolist()
    return token_list, _logprobs(logits, rows, token_list)


@torch.inference_mode()  # the runner's logits are inference tensors: written in place here
def apply_grammar(logits: torch.Tensor, mask: GrammarMask) -> None:
    """Set the tokens each constrained row's bitmask forbids to -inf, in place."""
    vocab = logits.shape[1]
    if logits.device.type == "cpu":
        forbidden = forbidden_cpu(mask.bits, vocab)
    else:
        forbidden = forbidden_on(mask.bits.to(logits.device, non_blocking=True), vocab)
    if len(mask.rows) == logits.shape[0]:  # every row constrained: no gather and scatter
        logits.masked_fill_(forbidden, float("-inf"))
        return
    idx = mask.rows.to(logits.device, non_blocking=True)
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
    temps = torch.tensor([p.temperature for p in params], device=logits.device)
    logits = logits / temps[:, None]
    if all(p.top_k == -1 and p.top_p == 1.0 for p in params):
        return logits.softmax(dim=-1)
    vocab = logits.shape[-1]
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    ks = torch.tensor([p.top_k if p.top_k > 0 else vocab for p in params], device=logits.device)
    ranks = torch.arange(vocab, device=logits.device)
    drop = ranks[None, :] >= ks[:, None]
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    probs = sorted_logits.softmax(dim=-1)
    top_ps = torch.tensor([p.top_p for p in params], device=logits.device)
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
    if unseeded:
        noise[unseeded] = torch.empty(
            len(unseeded), probs.shape[1], device=probs.device
        ).exponential_(generator=default)
    for i, g in enumerate(generators):
        if g is not None:
            noise[i].exponential_(generator=g)
    # Exp(1) can return 0; the clamp keeps p/noise finite without changing the winner.
    return (probs / noise.clamp_min_(1e-30)).argmax(dim=-1)


def _logprobs(
    logits: torch.Tensor, rows: list[SampleRow], tokens: list[int]
) -> list[TokenLogprob | None]:
    wanted = [i for i, r in enumerate(rows) if r.params.logprobs is not None]
    out: list[TokenLogprob | None] = [None] * len(rows)
    if not wanted:
        return out
    idx = torch.tensor(wanted, device=logits.device)
    lp = logits[idx].log_softmax(dim=-1)
    k = max(rows[i].params.logprobs or 0 for i in wanted)
    top_v, top_i = lp.topk(max(k, 1), dim=-1)
    chosen = lp.gather(1, torch.tensor([[tokens[i]] for i in wanted], device=lp.device))
    chosen_l, top_vl, top_il = chosen[:, 0].tolist(), top_v.tolist(), top_i.tolist()
    for j, i in enumerate(wanted):
        n = rows[i].params.logprobs or 0
        top = list(zip(top_il[j][:n], top_vl[j][:n], strict=True))
        out[i] = TokenLogprob(tokens[i], chosen_l[j], top)
    return out
