"""LLMEngine: requests in, per-step outputs out. The streaming interface the worker drives.

One thread owns an engine; nothing here is thread-safe. `step()` schedules one batch, runs it
and returns a `StepOutput` for every choice that produced a token (or was aborted). A request
with `n > 1` is prefilled once; its choices are forked from the prompt's blocks when the
prefill completes and diverge by copy-on-write.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field, replace

import torch

from .config import EngineConfig, ModelConfig
from .distributed import all_reduce_min
from .errors import DuplicateRequest
from .grammar import Grammars, GrammarStats
from .kv_cache import KVCacheManager
from .model import LlamaForCausalLM
from .outputs import StepOutput
from .placement import make_backend, pick_device, pick_kv_dtype, quantize
from .prompt_check import PromptLimits, check_prompt
from .request_state import RequestState
from .runner import kv_bytes_per_block
from .sampler import SampleRow, sample
from .sampling_params import SamplingParams
from .scheduler import ScheduledBatch, Scheduler
from .sequence import Sequence
from .tokenizer import Tokenizer
from .tp_runner import make_runner


@dataclass
class EngineStats:
    running: int
    waiting: int
    num_blocks: int
    free_blocks: int
    used_blocks: int
    cached_blocks: int
    prefix_hit_tokens: int
    prompt_tokens: int
    preemptions: int
    grammar: GrammarStats = field(default_factory=GrammarStats)  # compiles, hits, tokens

    @property
    def kv_usage(self) -> float:
        return self.used_blocks / self.num_blocks


class LLMEngine:
    def __init__(
        self,
        model_config: ModelConfig,
        config: EngineConfig,
        tokenizer: Tokenizer | None,
        load_weights,
    ):
        """`load_weights(model)` fills the freshly built model's parameters."""
        self.model_config = model_config
        self.config = config
        self.tokenizer = tokenizer
        self.device, self.dtype = pick_device(config)
        self.kv_dtype = pick_kv_dtype(config, self.device, self.dtype)
        self.max_model_len = min(model_config.max_position, config.max_model_len or 1 << 62)
        backend = make_backend(self.device, config.block_size)
        with torch.device(self.device):
            model = LlamaForCausalLM(model_config, backend, self.max_model_len)
        model.to(self.dtype)
        load_weights(model)
        model.eval()
        quantize(model, config.quantization, self.device)
        num_blocks = all_reduce_min(self._num_blocks(model), self.device)  # TP: ranks agree
        self.kv = KVCacheManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(config, self.kv)
        self.runner = make_runner(  # rank 0 of a TP group sends each step's plan
            model, backend, num_blocks, config.block_size, self.device, self.kv_dtype
        )
        self.graph_decoder = None
        if self.device.type == "cuda" and not config.enforce_eager:
            from .cuda_graphs import CudaGraphDecoder

            self.graph_decoder = CudaGraphDecoder(
                model,
                backend,
                self.runner.kv_cache,
                config.max_num_seqs,
                self.max_model_len,
                config.block_size,
            )
            self.graph_decoder.capture()
            self.runner.decode_hook = self.graph_decoder.run
        eos = set(model_config.eos_token_ids)
        if tokenizer is not None:
            eos |= set(tokenizer.eos_token_ids)
        self.eos_ids = frozenset(eos)
        self.grammars = Grammars(tokenizer, model_config.vocab_size, self.eos_ids)
        self._requests: dict[str, RequestState] = {}
        self._seq_ids = itertools.count()
        self._generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self._pending: list[StepOutput] = []
        self.last_batch: ScheduledBatch | None = None

    @classmethod
    def from_model(cls, spec: str | None = None, config: EngineConfig | None = None) -> LLMEngine:
        """`spec`: None (the default model), an HF folder, a GGUF file, or `dummy:<preset>`;
        `config.load_format == "dummy"` keeps the checkpoint's shape and tokenizer and draws
        random weights. With `config.tensor_parallel_size > 1` this process becomes rank 0
        and starts the other ranks first (tp_launch.py); each loads only its own slices."""
        config = config or EngineConfig()
        if spec is not None and spec.startswith("dummy:"):
            from .presets import preset_config

            mcfg, tokenizer = preset_config(spec.removeprefix("dummy:")), None
            load = lambda m: m.init_dummy(config.seed)  # noqa: E731
        else:
            from .loader import load_checkpoint
            from .model_store import resolve_model

            if config.load_format not in ("auto", "dummy"):
                raise ValueError(
                    f"load_format: unknown {config.load_format!r}; use auto or dummy"
                )
            dummy = config.load_format == "dummy"
            ckpt = load_checkpoint(resolve_model(spec), need_weights=not dummy)
            mcfg, tokenizer = ckpt.config, ckpt.tokenizer  # dummy: the shape, random weights
            load = (lambda m: m.init_dummy(config.seed)) if dummy else (
                lambda m: m.load_weights(ckpt.weights(m.shard_slice)))
        from .tp_launch import tensor_parallel

        with tensor_parallel(spec, config, mcfg):  # a no-op at TP=1
            return cls(mcfg, config, tokenizer, load)

    def _num_blocks(self, model: LlamaForCausalLM) -> int:
        if self.config.num_kv_blocks is not None:
            return self.config.num_kv_blocks
        per_block = kv_bytes_per_block(self.model_config, self.config.block_size, self.kv_dtype,
                                       model.kv_heads)
        if self.device.type == "cuda":
            from .memory import profile_num_blocks

            return profile_num_blocks(model, self.config, per_block, self.kv_dtype)
        return max(1, self.config.kv_cache_memory // per_block)

    # ---- the streaming interface ---------------------------------------------------------

    def add_request(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> None:
        """Queue a request. Raises a typed `RequestRejected` (a ValueError naming the field)
        for a request it cannot serve."""
        if request_id in self._requests:
            raise DuplicateRequest("request_id", f"{request_id!r} is already running")
        check_prompt(prompt_token_ids, None, self.limits)
        params.validate()
        seq = self._new_seq(request_id, 0, list(prompt_token_ids), params)  # compiles a grammar
        state = RequestState(request_id, params, len(prompt_token_ids))
        self._requests[request_id] = state
        state.new_choice(seq, self.tokenizer)
        self.scheduler.add(seq)

    @property
    def limits(self) -> PromptLimits:
        return PromptLimits(self.max_model_len, self.kv.num_blocks * self.config.block_size,
                            self.model_config.vocab_size)

    def _new_seq(
        self, request_id: str, index: int, ids: list[int], params: SamplingParams
    ) -> Sequence:
        gen = None
        if params.seed is not None:
            gen = torch.Generator(device=self.device).manual_seed(params.seed + index)
        return Sequence(
            seq_id=next(self._seq_ids),
            request_id=request_id,
            index=index,
            token_ids=ids,
            num_prompt_tokens=len(ids),
            params=params,
            arrival=time.monotonic(),
            generator=gen,
            matcher=self.grammars.new_matcher(params),
        )

    def abort(self, request_id: str) -> None:
        """Stop a request now and free its blocks; its last output says `abort`."""
        state = self._requests.pop(request_id, None)
        if state is None:
            return
        outs = []
        for choice in state.choices:
            if choice.finish_reason is None:
                self.scheduler.remove(choice.seq)
                choice.finish_reason = "abort"
                outs.append(StepOutput(request_id, choice.seq.index, [], "", finish_reason="abort"))
        if outs:
            outs[-1].usage = state.usage()
        self._pending.extend(outs)

    def abort_all(self) -> None:
        """Abort every request (after a failed step: nothing running can be trusted)."""
        for request_id in list(self._requests):
            self.abort(request_id)

    def has_unfinished(self) -> bool:
        return bool(self._requests) or bool(self._pending)

    def step(self) -> list[StepOutput]:
        outputs, self._pending = self._pending, []
        batch = self.scheduler.schedule()
        self.last_batch = batch  # what this step ran, for step stats (engine_loop.py)
        if not batch:
            outputs.extend(self._fail_unschedulable())
            return outputs
        sampled = [
            i
            for i, (s, n) in enumerate(zip(batch.seqs, batch.num_tokens, strict=True))
            if s.num_computed_tokens + n == s.num_tokens
        ]
        self.runner.copy_blocks(self.kv.take_copies())
        logits = self.runner.execute(batch, sampled)
        for seq, n in zip(batch.seqs, batch.num_tokens, strict=True):
            seq.num_computed_tokens += n
            self.kv.commit(seq)
        seqs = [batch.seqs[i] for i in sampled]
        seqs, logits = self._fork_new_choices(seqs, logits)
        rows = [SampleRow(s.params, s.generator) for s in seqs]
        # Built after the forward pass is launched: on CUDA the CPU mask overlaps the GPU.
        tokens, logprobs = sample(logits, rows, self._generator, self.grammars.masks(seqs))
        for seq, token, lp in zip(seqs, tokens, logprobs, strict=True):
            outputs.append(self._on_token(seq, token, lp))
        return outputs

    def _fork_new_choices(
        self, seqs: list[Sequence], logits: torch.Tensor
    ) -> tuple[list[Sequence], torch.Tensor]:
        """A request with n > 1 whose prompt just finished: fork its other choices, which
        sample their first token from the same logits row."""
        extra_rows: list[int] = []
        out = list(seqs)
        for row, seq in enumerate(seqs):
            state = self._requests[seq.request_id]
            if state.params.n == 1 or state.forked:
                continue
            state.forked = True
            for index in range(1, state.params.n):
                child = self._new_seq(seq.request_id, index, list(seq.token_ids), state.params)
                child.num_prompt_tokens = seq.num_prompt_tokens
                self.kv.fork(seq, child)
                self.scheduler.add_running(child)
                state.new_choice(child, self.tokenizer)
                out.append(child)
                extra_rows.append(row)
        if extra_rows:
            logits = torch.cat([logits, logits[extra_rows]])
        return out, logits

    def _on_token(self, seq: Sequence, token: int, logprob) -> StepOutput:
        state = self._requests[seq.request_id]
        choice = state.choices[seq.index]
        done = self.grammars.advance(seq, token)
        out = choice.on_token(token, logprob, self.eos_ids, self.max_model_len, done)
        if out.finish_reason is not None:
            self.scheduler.remove(seq)
            if state.finished:
                out.usage = state.usage()
                del self._requests[seq.request_id]
        return out

    def _fail_unschedulable(self) -> list[StepOutput]:
        """Nothing could run: the head of the queue does not fit even in an empty pool (it
        grew past the pool while decoding). End it with `length` rather than spin."""
        if self.scheduler.running or not self.scheduler.waiting:
            return []
        head = self.scheduler.waiting[0]
        state = self._requests[head.request_id]
        self.scheduler.remove(head)
        choice = state.choices[head.index]
        choice.finish_reason = "length"
        out = StepOutput(head.request_id, head.index, [], "", finish_reason="length")
        if state.finished:
            out.usage = state.usage()
            del self._requests[head.request_id]
        return [out]

    def stats(self) -> EngineStats:
        kv = self.kv.stats()
        return EngineStats(
            running=len(self.scheduler.running),
            waiting=len(self.scheduler.waiting),
            num_blocks=kv.num_blocks,
            free_blocks=kv.free_blocks,
            used_blocks=kv.used_blocks,
            cached_blocks=kv.cached_blocks,
            prefix_hit_tokens=kv.prefix_hit_tokens,
            prompt_tokens=kv.prefix_query_tokens,
            preemptions=self.scheduler.num_preemptions,
            grammar=replace(self.grammars.stats),
        )

    def take_kv_events(self) -> tuple[list[int], list[int]]:
        return self.kv.take_events()
