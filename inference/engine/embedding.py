"""Embedding requests in the engine: each input is a prefill-only sequence whose final hidden
states (after the model's final norm) are pooled into one vector; it is never sampled.

Contract:
- Pooling is the engine's (`EngineConfig.pooling`, resolved by `resolve_pooling`): `last` (the
  last input token's hidden state, what decoder embedding models such as e5-mistral, gte-Qwen2
  and Qwen3-Embedding use) or `mean` (the average over every input position).
- A vector is pooled, cut to the request's `dimensions` (Matryoshka truncation), then, with
  `normalize` on, scaled to unit L2 norm; it leaves the engine as little-endian float32 bytes.
- Embedding sequences are scheduled with generation: the scheduler's token budget covers them,
  long inputs are prefilled in chunks, and preemption recomputes them. Mean pooling sums each
  chunk's rows as it is computed and starts over when a sequence restarts from position 0.
- Prefix cache: `last` pooling takes cached prefix blocks (the last token is always computed,
  and its hidden state depends only on the prefix's K/V); `mean` pooling needs every position's
  hidden state, so its sequences never take cached blocks (`Sequence.reuse_prefix`) and always
  recompute. Both store their full blocks for later requests.
- A request's outputs appear in `take_outputs()` as its inputs finish, in any order; the one
  that finishes the request carries its usage (prompt tokens of every input).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .config import ModelConfig
from .errors import InvalidParameter
from .outputs import Usage
from .prompt_check import PromptLimits, check_prompt
from .sampling_params import SamplingParams
from .scheduler import ScheduledBatch, Scheduler
from .sequence import Sequence, SequenceStatus
from .transfer import HostCopy

POOLINGS = ("last", "mean")
NewSeq = Callable[[str, int, list[int], SamplingParams], Sequence]


def resolve_pooling(setting: str, model: ModelConfig) -> str | None:
    """The pooling an engine serves embeddings with, or None for none. `setting`: `auto` (the
    model's declared pooling, else `last`), `last`, `mean`, or `none`."""
    if setting == "auto":
        return model.pooling or "last"
    if setting == "none":
        return None
    if setting not in POOLINGS:
        raise ValueError(f"pooling: unknown {setting!r}; use auto, last, mean or none")
    return setting


@dataclass
class PoolingParams:
    """Per-request embedding options. `dimensions`: keep the first this many values (None:
    all of them). `priority`, `cache_salt` and `share` as in `SamplingParams`."""

    dimensions: int | None = None
    priority: int = 0
    cache_salt: str = ""
    share: str = ""

    def sampling(self) -> SamplingParams:
        """The params an embedding sequence carries through the scheduler and the KV cache."""
        return SamplingParams(max_tokens=1, priority=self.priority, cache_salt=self.cache_salt,
                              share=self.share)


@dataclass
class EmbeddingOutput:
    """One input's vector: little-endian float32 bytes. `usage` is set on the output that
    finishes its request."""

    request_id: str
    index: int
    embedding: bytes
    usage: Usage | None = None

    def floats(self) -> list[float]:
        return np.frombuffer(self.embedding, dtype="<f4").tolist()


@dataclass
class _Request:
    params: PoolingParams
    seqs: list[Sequence]
    left: int
    sums: dict[int, torch.Tensor] = field(default_factory=dict)  # mean pooling, by index


class Embedder:
    """The engine's embedding requests (see the module contract)."""

    def __init__(self, pooling: str | None, normalize: bool, hidden_size: int) -> None:
        self.pooling = pooling
        self.normalize = normalize
        self.hidden_size = hidden_size
        self._requests: dict[str, _Request] = {}
        self._outputs: list[EmbeddingOutput] = []
        # vectors on their way to the host: (copy, the outputs it fills, each one's size)
        self._copies: list[tuple[HostCopy, list[EmbeddingOutput], list[int]]] = []

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._requests

    def __bool__(self) -> bool:
        return bool(self._requests or self._outputs)

    def add(self, request_id: str, prompts: list[list[int]], params: PoolingParams,
            limits: PromptLimits, new_seq: NewSeq, scheduler: Scheduler) -> None:
        """Check the request (`RequestRejected`: nothing is queued), then queue one sequence
        per prompt, made by the engine's `new_seq(request_id, index, ids, params)`."""
        self._check(prompts, params)
        for ids in prompts:
            check_prompt(ids, None, limits)
        seqs = [new_seq(request_id, i, list(ids), params.sampling())
                for i, ids in enumerate(prompts)]
        for seq in seqs:
            seq.pooled = True
            seq.reuse_prefix = self.pooling != "mean"
            scheduler.add(seq)
        self._requests[request_id] = _Request(params, seqs, len(seqs))

    def _check(self, prompts: list[list[int]], params: PoolingParams) -> None:
        if self.pooling is None:
            raise InvalidParameter("model", "this worker serves no embeddings (pooling none)")
        if not prompts:
            raise InvalidParameter("input", "must not be empty")
        d = params.dimensions
        if d is not None and not 1 <= d <= self.hidden_size:
            raise InvalidParameter("dimensions", f"must be in [1, {self.hidden_size}] (the "
                                   f"model's hidden size), got {d}")

    def abort(self, request_id: str, scheduler: Scheduler) -> bool:
        """Drop a request, its vectors not yet taken, and its sequences' blocks; False if it
        is not ours."""
        req = self._requests.pop(request_id, None)
        if req is None:
            return False
        self._outputs = [o for o in self._outputs if o.request_id != request_id]
        for seq in req.seqs:
            if seq.status is not SequenceStatus.FINISHED:
                scheduler.remove(seq)
        return True

    def request_ids(self) -> list[str]:
        return list(self._requests)

    def collect(self, batch: ScheduledBatch, hidden: torch.Tensor) -> list[Sequence]:
        """After a forward pass over `batch` (before its computed counts advance): pool the
        rows of its embedding sequences; returns those whose input is now fully computed (the
        engine removes them from the scheduler once their blocks are committed)."""
        if not self._requests:
            return []
        done: list[Sequence] = []
        vectors: list[torch.Tensor] = []
        row = 0
        for seq, n in zip(batch.seqs, batch.num_tokens, strict=True):
            if seq.pooled:
                vec = self._pool(seq, hidden[row : row + n])
                if vec is not None:
                    done.append(seq)
                    vectors.append(vec)
            row += n
        if done:
            self._finish(done, vectors)
        return done

    def _pool(self, seq: Sequence, rows: torch.Tensor) -> torch.Tensor | None:
        """Feed one sequence's rows of this step; its cut vector once its input is done."""
        req = self._requests[seq.request_id]
        start = seq.num_computed_tokens
        last = start + rows.shape[0] == seq.num_tokens
        if self.pooling == "mean":
            part = rows.float().sum(0)
            if start == 0:  # a fresh start (or a recompute after preemption)
                req.sums[seq.index] = part
            else:
                req.sums[seq.index] += part
            vec = req.sums.pop(seq.index) / seq.num_tokens if last else None
        else:
            vec = rows[-1].float() if last else None
        d = req.params.dimensions
        return vec if vec is None or d is None else vec[:d]

    def _finish(self, seqs: list[Sequence], vectors: list[torch.Tensor]) -> None:
        """Normalise, start one non-blocking copy to the host, and emit the outputs (their
        bytes land in `take_outputs`, so the step that finished them is not held up)."""
        if self.normalize:
            vectors = [torch.nn.functional.normalize(v, dim=0) for v in vectors]
        outs = []
        for seq in seqs:
            out = EmbeddingOutput(seq.request_id, seq.index, b"")
            req = self._requests[seq.request_id]
            req.left -= 1
            if req.left == 0:
                out.usage = Usage(sum(s.num_prompt_tokens for s in req.seqs), 0,
                                  sum(s.num_cached_tokens for s in req.seqs))
                del self._requests[seq.request_id]
            outs.append(out)
        self._outputs.extend(outs)
        self._copies.append((HostCopy([torch.cat(vectors).float()]), outs,
                             [v.shape[0] for v in vectors]))

    def take_outputs(self) -> list[EmbeddingOutput]:
        """Every finished input's output since the last call, its vector on the host."""
        for copy, outs, sizes in self._copies:
            (flat,) = copy.wait()
            values = flat.numpy().astype("<f4")
            at = 0
            for out, size in zip(outs, sizes, strict=True):
                out.embedding = values[at : at + size].tobytes()
                at += size
        self._copies = []
        out, self._outputs = self._outputs, []
        return out
