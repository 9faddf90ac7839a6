"""Prompt reports for `echo`: a request's prompt (ids and text) and its prompt logprobs.

Contract:
- `add(request_id, prompt_ids, params)` opens a report for a request with `params.echo`;
  `drop(request_id)` forgets it (an abort). `reports` is empty unless echo requests are open,
  so the engine's per-step checks cost one dict truth test.
- `score(model, hidden, batch)` runs after each forward pass and before the step's tokens are
  committed (so `seq.num_computed_tokens` is where the step's chunk starts). For a request with
  `prompt_logprobs`, every row of its chunk that predicts a prompt token (position p predicts
  token p + 1, for p + 1 < the prompt's length) goes through the LM head with those of every
  other such request: one row gather, log-softmax, target gather and top-k for the whole step,
  in slices of `SLICE_ROWS` rows (bounding the [rows, vocab] logits' memory), never a Python
  loop over tokens. Results land by position, so a chunk computed again (a preempted sequence
  recomputes) overwrites itself, and chunked prefill fills a report chunk by chunk.
- `take(request_id)` returns the report once, as a `StepOutput` (index 0, no tokens, `prompt`
  set), when the request's prompt is fully computed; None for a request without one.
- A request with `prompt_logprobs` takes no block from the prefix cache
  (`Sequence.reuse_prefix`): the logits of a cached block's positions were never kept, so the
  whole prompt is computed. Its blocks are still cached for others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .outputs import PromptOutput, StepOutput, TokenLogprob
from .sampling_params import SamplingParams
from .scheduler import ScheduledBatch
from .tokenizer import Tokenizer
from .transfer import to_device

SLICE_ROWS = 512  # rows per LM-head pass: 512 x 49152 float32 logits is ~100 MB


@dataclass
class _Report:
    """One request's prompt; with `k` set, its logprobs by target position (token p + 1 at
    row p): the chosen token's, and the top `k` ids and values."""

    token_ids: list[int]
    k: int | None
    chosen: np.ndarray | None = None  # [P - 1] float32
    top_ids: np.ndarray | None = None  # [P - 1, k] int64
    top_vals: np.ndarray | None = None  # [P - 1, k] float32

    def logprobs(self) -> list[TokenLogprob] | None:
        if self.k is None:
            return None
        assert self.chosen is not None and self.top_ids is not None and self.top_vals is not None
        ids, vals = self.top_ids.tolist(), self.top_vals.tolist()
        return [TokenLogprob(t, c, list(zip(i, v, strict=True)))
                for t, c, i, v in zip(self.token_ids[1:], self.chosen.tolist(), ids, vals,
                                      strict=True)]


class PromptReports:
    def __init__(self, tokenizer: Tokenizer | None) -> None:
        self.tokenizer = tokenizer
        self.reports: dict[str, _Report] = {}

    def add(self, request_id: str, prompt_ids: list[int], params: SamplingParams) -> None:
        if not params.echo:
            return
        k, n = params.prompt_logprobs, len(prompt_ids) - 1
        report = _Report(list(prompt_ids), k)
        if k is not None:
            report.chosen = np.zeros(n, np.float32)
            report.top_ids = np.zeros((n, k), np.int64)
            report.top_vals = np.zeros((n, k), np.float32)
        self.reports[request_id] = report

    def drop(self, request_id: str) -> None:
        self.reports.pop(request_id, None)

    def take(self, request_id: str) -> StepOutput | None:
        report = self.reports.pop(request_id, None)
        if report is None:
            return None
        tok = self.tokenizer
        # the prompt as it was given: its special tokens are part of it
        text = tok.decode(report.token_ids, skip_special_tokens=False) if tok is not None else ""
        prompt = PromptOutput(report.token_ids, text, report.logprobs())
        return StepOutput(request_id, 0, [], "", prompt=prompt)

    @torch.inference_mode()
    def score(self, model: torch.nn.Module, hidden: torch.Tensor, batch: ScheduledBatch) -> None:
        """Fill the reports of this step's prompt chunks from `hidden` ([tokens, hidden], the
        batch's rows in order); see the module contract."""
        rows: list[np.ndarray] = []
        targets: list[int] = []
        spans: list[tuple[_Report, int, int]] = []
        offset = 0
        for seq, n in zip(batch.seqs, batch.num_tokens, strict=True):
            report = self.reports.get(seq.request_id)
            if report is not None and report.k is not None:
                start = seq.num_computed_tokens
                end = min(start + n, len(report.token_ids) - 1)
                if end > start:
                    rows.append(np.arange(offset, offset + end - start))
                    targets.extend(report.token_ids[start + 1 : end + 1])
                    spans.append((report, start, end))
            offset += n
        if not spans:
            return
        chosen, top_ids, top_vals = _score_rows(
            model, hidden, np.concatenate(rows), targets, max(1, *(r.k or 0 for r, _, _ in spans)))
        at = 0
        for report, start, end in spans:
            assert report.chosen is not None and report.top_ids is not None
            assert report.top_vals is not None and report.k is not None
            m, k = end - start, report.k
            report.chosen[start:end] = chosen[at : at + m]
            report.top_ids[start:end] = top_ids[at : at + m, :k]
            report.top_vals[start:end] = top_vals[at : at + m, :k]
            at += m


def _score_rows(model: torch.nn.Module, hidden: torch.Tensor, rows: np.ndarray,
                targets: list[int], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log_softmax(LM head(hidden[rows])): each row's value at its target, and its top `k`."""
    device = hidden.device
    idx = to_device(rows, torch.long, device)
    tgt = to_device(targets, torch.long, device)
    chosen, top_v, top_i = [], [], []
    for s in range(0, len(rows), SLICE_ROWS):
        lp = model.compute_logits(hidden[idx[s : s + SLICE_ROWS]]).float().log_softmax(dim=-1)
        chosen.append(lp.gather(1, tgt[s : s + SLICE_ROWS, None])[:, 0])
        v, i = lp.topk(k, dim=-1)
        top_v.append(v)
        top_i.append(i)
    return (torch.cat(chosen).cpu().numpy(), torch.cat(top_i).cpu().numpy(),
            torch.cat(top_v).cpu().numpy())
