"""LLMEngine: requests in, per-step outputs out. The streaming interface the worker drives.

One thread owns an engine; nothing here is thread-safe. `step()` schedules one batch, runs it
and returns a `StepOutput` for every choice that produced a token (or was aborted). A request
with `n > 1` is prefilled once; its choices are forked from the prompt's blocks when the
prefill completes and diverge by copy-on-write. An `echo` request reports its prompt (and
prompt logprobs) when its prefill completes (prompt_logprobs.py); with `max_tokens` 0 it then
ends, every choice empty, with "length". Embedding requests (`add_embedding`) run in the same
steps as prefill-only sequences; their vectors come out of `embedder.take_outputs()`.
A request whose grammar breaks while it decodes (llguidance stops a parser that outgrows its
limits) is aborted, and `take_failures()` says why (`InvalidParameter` naming `grammar`): its
choices end with "abort", never with a "stop" the grammar did not reach.

`compile_aside` (off unless set, as the worker's engine loop does): a constrained request
whose grammar is not compiled yet waits while it compiles on the grammar thread (grammar.py
`Grammars.ready`) and is queued at the first step after; one whose grammar does not compile
then fails through `take_failures()` (no output), not from `add_request`. Off, `add_request`
compiles it (and raises) in place, as `LLM.generate` wants.

`detokenize` (True unless set otherwise before requests are added) makes each output's text;
off, the outputs of a request without stop strings carry token ids and no text, for a caller
that makes the text elsewhere (the worker: inference/output_text.py). A request with stop
strings always gets its text here: the engine must read it to stop there.
"""

from __future__ import annotations

import itertools
import time

import torch

from .config import EngineConfig, ModelConfig
from .embedding import Embedder, PoolingParams, resolve_pooling
from .engine_setup import LoadWeights, build_runtime, open_model
from .engine_stats import EngineStats
from .errors import DuplicateRequest, InvalidParameter, RequestRejected
from .grammar import Grammars
from .grammar_fill import MaskFill
from .inflight import InFlight, Launched, Received
from .outputs import StepOutput, Usage
from .penalties import Penalties
from .prompt_check import PromptLimits, check_prompt, check_token_ids
from .prompt_logprobs import PromptReports
from .request_state import RequestState
from .sampler import sample
from .sampling_params import SamplingParams
from .scheduler import ScheduledBatch, Scheduler
from .sequence import Sequence, SequenceStatus
from .tokenizer import Tokenizer
from .transfer import to_device

COMPILE_POLL_S = 0.005  # an engine with nothing but compiles to wait for waits this long a step


class LLMEngine:
    def __init__(
        self,
        model_config: ModelConfig,
        config: EngineConfig,
        tokenizer: Tokenizer | None,
        load_weights: LoadWeights,
    ):
        """`load_weights(model)` fills the freshly built model's parameters."""
        self.model_config = model_config
        self.config = config
        self.tokenizer = tokenizer
        rt = build_runtime(model_config, config, load_weights)
        self.device, self.dtype, self.kv_dtype = rt.device, rt.dtype, rt.kv_dtype
        self.dtype_reason = rt.dtype_reason
        self.max_model_len, self.kv, self.runner = rt.max_model_len, rt.kv, rt.runner
        self.graph_decoder, self.kv_plan = rt.graph_decoder, rt.kv_plan
        self.scheduler = Scheduler(config, self.kv)
        eos = set(model_config.eos_token_ids)
        if tokenizer is not None:
            eos |= set(tokenizer.eos_token_ids)
        self.eos_ids = frozenset(eos)
        self.grammars = Grammars(tokenizer, model_config.vocab_size, self.eos_ids)
        self.fill = MaskFill(self.grammars, pinned=self.device.type == "cuda")  # beside `_emit`
        self.prompts = PromptReports(tokenizer)
        self.penalties = Penalties(model_config.vocab_size, self.device, config.max_num_seqs)
        self._requests: dict[str, RequestState] = {}
        # Requests with n > 1 whose other choices are not forked yet (their prompt is still
        # running): while there are none, a step makes no pass over its rows for forks.
        self._to_fork: set[str] = set()
        self._seq_ids = itertools.count()
        self._generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self._pending: list[StepOutput] = []
        self._failures: list[tuple[str, RequestRejected]] = []
        self._inflight: InFlight | None = None  # the launched step whose tokens are coming
        self._held: ScheduledBatch | None = None  # scheduled, launched on the next call
        self._unsampled: Launched | None = None  # its sampling left to the next call (`step`)
        self.overlap = (config.async_scheduling if config.async_scheduling is not None
                        else self.device.type == "cuda")
        self.last_batch: ScheduledBatch | None = None
        self.embedder = Embedder(resolve_pooling(config.pooling, model_config),
                                 config.normalize_embeddings, model_config.hidden_size)
        self.detokenize = True  # see the module doc
        # Compile a new grammar off this thread, its request held back meanwhile (the module
        # doc); a served engine's loop turns it on (engine_loop.py)
        self.compile_aside = False
        self._compiling: dict[str, tuple[list[int], SamplingParams]] = {}

    @classmethod
    def from_model(cls, spec: str | None = None, config: EngineConfig | None = None) -> LLMEngine:
        """`spec`: None (the default model), an HF folder, a GGUF file, or `dummy:<preset>`;
        `config.load_format == "dummy"` keeps the checkpoint's shape and tokenizer and draws
        random weights. With `config.tensor_parallel_size > 1` this process becomes rank 0
        and starts the other ranks first (tp_launch.py); each loads only its own slices."""
        config = config or EngineConfig()
        mcfg, tokenizer, load = open_model(spec, config)
        from .tp_launch import tensor_parallel

        with tensor_parallel(spec, config, mcfg):  # a no-op at TP=1
            return cls(mcfg, config, tokenizer, load)

    # ---- the streaming interface ---------------------------------------------------------

    def add_request(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> None:
        """Queue a request. Raises a typed `RequestRejected` (a ValueError naming the field)
        for a request it cannot serve."""
        self._check_new(request_id)
        if not self.model_config.generates:
            raise InvalidParameter("model", "an embedding model: it serves embeddings only")
        check_prompt(prompt_token_ids, None, self.limits)
        params.validate()
        if params.prompt_logprobs is not None and self.config.tensor_parallel_size > 1:
            # the vocabulary-parallel head is a collective that only the runner's step joins
            raise InvalidParameter("logprobs", "prompt logprobs (echo with logprobs) are not "
                                   "served by a tensor-parallel worker")
        check_token_ids(params, self.limits)
        if self.compile_aside and not self.grammars.ready(params):
            self._compiling[request_id] = (list(prompt_token_ids), params)
            return
        self._queue(request_id, list(prompt_token_ids), params)

    def _queue(self, request_id: str, prompt_token_ids: list[int],
               params: SamplingParams) -> None:
        seq = self._new_seq(request_id, 0, prompt_token_ids, params)  # compiles a grammar
        state = RequestState(request_id, params, len(prompt_token_ids))
        self._requests[request_id] = state
        state.new_choice(seq, self._text_tokenizer(params), self.eos_ids)
        if params.n > 1:
            self._to_fork.add(request_id)
        self.prompts.add(request_id, seq.token_ids, params)
        self.scheduler.add(seq)

    def add_embedding(
        self, request_id: str, prompts: list[list[int]], params: PoolingParams
    ) -> None:
        """Queue one prefill-only sequence per prompt, each pooled into a vector (embedding.py;
        they come out of `embedder.take_outputs()`). Raises `RequestRejected` as `add_request`."""
        self._check_new(request_id)
        self.embedder.add(request_id, prompts, params, self.limits, self._new_seq, self.scheduler)

    def _text_tokenizer(self, params: SamplingParams) -> Tokenizer | None:
        """The tokenizer a request's choices make their text with here; None: no text."""
        return self.tokenizer if self.detokenize or params.stop else None

    def _admit_compiled(self) -> None:
        """Queue the requests whose grammar is now compiled (`compile_aside`); one whose
        grammar did not compile fails (`take_failures`) without an output. With nothing else
        to run, wait a moment for a compile rather than spin."""
        if not self.has_work():
            self.grammars.wait_compiling(COMPILE_POLL_S)
        for rid, (ids, params) in list(self._compiling.items()):
            if self.grammars.ready(params):
                del self._compiling[rid]
                try:
                    self._queue(rid, ids, params)
                except RequestRejected as exc:
                    self._failures.append((rid, exc))

    def _check_new(self, request_id: str) -> None:
        if request_id in self._requests or request_id in self.embedder \
                or request_id in self._compiling:
            raise DuplicateRequest("request_id", f"{request_id!r} is already running")

    @property
    def limits(self) -> PromptLimits:
        return PromptLimits(self.max_model_len, self.model_config.vocab_size)

    def _new_seq(
        self, request_id: str, index: int, ids: list[int], params: SamplingParams
    ) -> Sequence:
        gen = None
        if params.seed is not None:
            gen = torch.Generator(device=self.device).manual_seed(params.seed + index)
        matcher, lane = self.grammars.new_matcher(params)
        return Sequence(
            seq_id=next(self._seq_ids),
            request_id=request_id,
            index=index,
            token_ids=ids,
            num_prompt_tokens=len(ids),
            params=params,
            arrival=time.monotonic(),
            generator=gen,
            matcher=matcher,
            grammar_lane=lane,
            reuse_prefix=params.prompt_logprobs is None,  # it scores every prompt position
            max_len=self.max_model_len,
        )

    def abort(self, request_id: str) -> None:
        """Stop a request now and free its blocks; its last output says `abort` (an embedding
        request just ends)."""
        if self.embedder.abort(request_id, self.scheduler):
            return
        if (waiting := self._compiling.pop(request_id, None)) is not None:
            self._abort_compiling(request_id, *waiting)
            return
        state = self._requests.pop(request_id, None)
        if state is None:
            return
        self._to_fork.discard(request_id)
        self.prompts.drop(request_id)
        outs = []
        for choice in state.choices:
            if choice.finish_reason is None:
                self.scheduler.remove(choice.seq)
                self.penalties.release(choice.seq.seq_id)
                choice.finish_reason = "abort"
                outs.append(StepOutput(request_id, choice.seq.index, [], "", finish_reason="abort"))
        if outs:
            outs[-1].usage = state.usage()
        self._pending.extend(outs)

    def _abort_compiling(self, request_id: str, ids: list[int], params: SamplingParams) -> None:
        """A request aborted while its grammar compiled: never started, each choice ends
        with no token; the compile is dropped unless another request waits for it."""
        if not any(p.grammar == params.grammar and p.grammar_kind == params.grammar_kind
                   for _, p in self._compiling.values()):
            self.grammars.abandon(params)
        outs = [StepOutput(request_id, i, [], "", finish_reason="abort") for i in range(params.n)]
        outs[-1].usage = Usage(len(ids), 0)
        self._pending.extend(outs)

    def take_failures(self) -> list[tuple[str, RequestRejected]]:
        """(request id, why) of each request that failed since the last call: one that ran
        was aborted (its outputs end with "abort"); one whose grammar did not compile
        (`compile_aside`) never started, and has no output."""
        out, self._failures = self._failures, []
        return out

    def abort_all(self) -> None:
        """Abort every request (after a failed step: nothing running can be trusted)."""
        self._inflight = self._held = self._unsampled = None
        for request_id in [*self._requests, *self.embedder.request_ids(), *self._compiling]:
            self.abort(request_id)

    def has_unfinished(self) -> bool:
        return self.has_work() or bool(self._compiling)

    def has_work(self) -> bool:
        """Anything to schedule, run or hand out now (requests waiting on their grammar's
        compile are not: `_admit_compiled`)."""
        return (bool(self._requests) or bool(self._pending) or self._inflight is not None
                or self._unsampled is not None or bool(self.embedder))

    def step(self) -> list[StepOutput]:
        """Schedule and launch one step, and return the outputs of the step whose tokens came
        back: this one, or with `async_scheduling` the one before it, finished while this one
        runs on the device (inflight.py). A step that computes prompt tokens and that no CUDA
        graph fits runs eagerly, a long launch on the host: with a step in flight, that step's
        tokens are handed out first and the new one is launched on the next call, so no token
        (a first one above all) waits behind another prompt's launch. When the tokens in
        flight are back before the launch (the host is the slower side), they are received
        first, so the grammar masks of the new step fill beside its launch as well.

        A call that hands out some sequence's first token leaves the sampling of the step it
        launched to the start of the next call, so that token does not wait for that host
        work (inflight.py); the device, still computing the step's forward pass, has the
        sampling queued long before it gets there.
        """
        if self._compiling:
            self._admit_compiled()
        outputs, self._pending = self._pending, []
        self._draw_unsampled()
        batch = self._take_held() or self.scheduler.schedule()
        if self._inflight is not None and batch and self._launches_eagerly(batch):
            outputs.extend(self._finish(self._inflight, self._inflight.seqs))
            self._inflight, self._held = None, batch
            self.last_batch = ScheduledBatch()  # this call ran nothing
            return outputs
        self.last_batch = batch  # what this step ran, for step stats (engine_loop.py)
        ends, rows = self._ends(batch)
        early = self._inflight is not None and bool(batch) and self._inflight.ready()
        if early:  # launched's sampled rows: masks filled beside the launch and the outputs
            got = self._receive(self._inflight, [batch.seqs[i] for i in rows])
        launched = self._launch(batch, ends, rows) if batch else None
        previous, self._inflight = self._inflight, None
        if previous is not None:
            if not early:  # masks filled beside the outputs
                got = self._receive(previous, launched.sampled if launched else [])
            outputs.extend(self._emit(got))
        if launched is not None:
            # after `_receive`: placeholders are filled
            self.kv.commit_running(batch.seqs, batch.num_tokens)
            for seq in launched.pooled:  # embedded: its blocks (now keyed) go free
                self.scheduler.remove(seq)
            if self.prompts.reports:
                outputs.extend(self._report_prompts(launched.ends))
            if not self.overlap:
                if (current := self._sample(launched)) is not None:
                    # the plain loop: the next step's masks are foreseen
                    outputs.extend(self._finish(current, current.seqs))
            elif previous is not None and previous.firsts and launched.sampled:
                # first tokens among the outputs: they leave before this host work
                self._unsampled = launched
            else:
                self._inflight = self._sample(launched)
        elif previous is None:
            outputs.extend(self._fail_unschedulable())
        return outputs

    def _draw_unsampled(self) -> None:
        """Queue the sampling the last call left (see `step`): its tokens go in flight."""
        if self._unsampled is not None:
            self._inflight = self._sample(self._unsampled)
            self._unsampled = None

    def _launches_eagerly(self, batch: ScheduledBatch) -> bool:
        """A step that computes prompt tokens and that no CUDA graph fits."""
        if max(batch.num_tokens) == 1:
            return False
        graphs = self.graph_decoder
        return graphs is None or not graphs.fits(batch.num_tokens, batch.leading_decodes())

    def _take_held(self) -> ScheduledBatch | None:
        """The batch held back by the last call, less the sequences that ended since (their
        tokens came back finished, or they were aborted); None when nothing of it is left."""
        held, self._held = self._held, None
        if held is None:
            return None
        kept = ScheduledBatch()
        for seq, n in zip(held.seqs, held.num_tokens, strict=True):
            if seq.status is SequenceStatus.RUNNING:
                kept.add(seq, n)
        return kept or None

    @staticmethod
    def _ends(batch: ScheduledBatch) -> tuple[list[int], list[int]]:
        """The batch's rows whose known tokens are all computed after it (`ends`), and those of
        them that are sampled (not `max_tokens` 0, not embedding inputs)."""
        ends: list[int] = []
        rows: list[int] = []
        for i, (s, n) in enumerate(zip(batch.seqs, batch.num_tokens, strict=True)):
            if s.num_computed_tokens + n == len(s.token_ids):  # `num_tokens`, inlined
                ends.append(i)
                if s.params.max_tokens and not s.pooled:
                    rows.append(i)
        return ends, rows

    def _launch(self, batch: ScheduledBatch, ends: list[int], rows: list[int]) -> Launched:
        """Queue the batch's forward pass (see `Launched`); `ends` and `rows` from `_ends`."""
        self.runner.copy_blocks(self.kv.take_copies())
        in_flight = self._inflight.tokens if self._inflight is not None else None
        logits = self.runner.execute(batch, rows, in_flight)
        if self.prompts.reports:  # reads each chunk's start: before it is counted computed
            self.prompts.score(self.runner.model, self.runner.last_hidden, batch)
        pooled = self.embedder.collect(batch, self.runner.last_hidden)
        prefills = batch.prefills
        for seq, n in zip(batch.seqs, batch.num_tokens, strict=True):
            if seq.num_computed_tokens < seq.num_prompt_tokens:  # computes part of its prompt
                prefills.append((seq.request_id, n))
            seq.num_computed_tokens += n
        sampled = [batch.seqs[i] for i in rows]
        # A sampled row that computed prompt tokens finished its prompt: it draws its first.
        firsts = bool(prefills) and any(
            s.num_computed_tokens - batch.num_tokens[i] < s.num_prompt_tokens
            for i, s in zip(rows, sampled, strict=True))
        return Launched([batch.seqs[i] for i in ends], sampled, logits, pooled, firsts)

    def _sample(self, launched: Launched) -> InFlight | None:
        """Queue sampling for the launched step's sequences still running (one that finished
        or was aborted since its launch is dropped) and start bringing the tokens back."""
        seqs, logits = launched.sampled, launched.logits
        keep = [i for i, s in enumerate(seqs) if s.status is SequenceStatus.RUNNING]
        if len(keep) < len(seqs):
            seqs = [seqs[i] for i in keep]
            logits = logits[to_device(keep, torch.long, logits.device)]
        if not seqs:
            return None
        seqs, logits = self._fork_new_choices(seqs, logits)
        drawn = sample(logits, seqs, self._generator, self.fill.masks(seqs), self.penalties,
                       self.eos_ids)
        return InFlight.launch(seqs, drawn, launched.firsts)

    def _finish(self, inflight: InFlight, upcoming: list[Sequence]) -> list[StepOutput]:
        """`_receive`, then `_emit`: the outputs are built while the masks fill."""
        return self._emit(self._receive(inflight, upcoming))

    def _receive(self, inflight: InFlight, upcoming: list[Sequence]) -> Received:
        """Wait for a launched step's tokens, write them over their placeholders, advance the
        grammars and start filling the masks of `upcoming` (those expected to be sampled
        next, grammar_fill.py)."""
        tokens, logprobs = inflight.wait()
        seqs = inflight.seqs
        # One aborted while its step was in flight gets no token and no output.
        if any(s.status is SequenceStatus.FINISHED for s in seqs):
            live = [i for i, s in enumerate(seqs) if s.status is not SequenceStatus.FINISHED]
            seqs = [seqs[i] for i in live]
            tokens, logprobs = [tokens[i] for i in live], [logprobs[i] for i in live]
        got = Received(seqs, tokens, logprobs)
        for seq, token in zip(seqs, tokens, strict=True):
            seq.token_ids[-1] = token
        got.grammar_done = self.fill.advance(seqs, got.tokens)
        self.fill.start(upcoming)
        return got

    def _emit(self, got: Received) -> list[StepOutput]:
        """The received tokens as outputs (detokenised, stop strings checked); a choice that
        finishes leaves the scheduler, and the last of its request carries the usage."""
        requests, outs, broken = self._requests, [], set()
        for seq, token, logprob, grammar_done in zip(got.seqs, got.tokens, got.logprobs,
                                                     got.grammar_done, strict=True):
            if grammar_done and seq.grammar_error:
                broken.add(seq.request_id)
                continue
            state = requests[seq.request_id]  # hot path: no call a row but `on_token`
            out = state.choices[seq.index].on_token(token, logprob, grammar_done)
            if out.finish_reason is not None:
                self._finished(seq, state, out)
            outs.append(out)
        return self._fail_broken(broken, outs) if broken else outs

    def _fail_broken(self, broken: set[str], outs: list[StepOutput]) -> list[StepOutput]:
        """Abort each request of `broken` (a choice's grammar broke) and record why; `outs`
        without theirs."""
        for rid in broken:
            why = next(c.seq.grammar_error for c in self._requests[rid].choices
                       if c.seq.grammar_error)
            self._failures.append((rid, InvalidParameter("grammar", why)))
            self.abort(rid)
        return [o for o in outs if o.request_id not in broken]

    def _finished(self, seq: Sequence, state: RequestState, out: StepOutput) -> None:
        """`seq`'s choice just finished with `out`: free it; after a request's last, `out`
        carries its usage and the request is gone."""
        self.scheduler.remove(seq)
        self.penalties.release(seq.seq_id)
        if state.finished:
            out.usage = state.usage()
            del self._requests[seq.request_id]

    def _report_prompts(self, done: list[Sequence]) -> list[StepOutput]:
        """Each echo request whose prompt just completed: its prompt report, and for one with
        `max_tokens` 0 its end (every choice empty: nothing is sampled for it)."""
        outs = []
        for seq in done:
            if (report := self.prompts.take(seq.request_id)) is not None:
                outs.append(report)
                if seq.params.max_tokens == 0:
                    self.scheduler.remove(seq)
                    self._to_fork.discard(seq.request_id)
                    outs.extend(self._requests.pop(seq.request_id).end_unsampled("length"))
        return outs

    def _fork_new_choices(
        self, seqs: list[Sequence], logits: torch.Tensor
    ) -> tuple[list[Sequence], torch.Tensor]:
        """A request with n > 1 whose prompt just finished: fork its other choices, which
        sample their first token from the same logits row."""
        if not self._to_fork:  # hot path: no pass over the rows
            return seqs, logits
        extra_rows: list[int] = []
        out = list(seqs)
        for row, seq in enumerate(seqs):
            if seq.request_id not in self._to_fork:
                continue
            self._to_fork.discard(seq.request_id)
            state = self._requests[seq.request_id]
            # Forked as its prompt ends: the child's tokens are that prompt, so `_new_seq`
            # counts its prompt and its `stop_len` as the parent's.
            assert len(seq.token_ids) == seq.num_prompt_tokens, "forked after its prompt"
            for index in range(1, state.params.n):
                child = self._new_seq(seq.request_id, index, list(seq.token_ids), state.params)
                self.kv.fork(seq, child)
                self.scheduler.add_running(child)
                state.new_choice(child, self._text_tokenizer(state.params), self.eos_ids)
                out.append(child)
                extra_rows.append(row)
        if extra_rows:
            logits = torch.cat([logits, logits[to_device(extra_rows, torch.long, logits.device)]])
        return out, logits

    def _fail_unschedulable(self) -> list[StepOutput]:
        """Nothing could run: the head of the queue does not fit even in an empty pool (it
        grew past the pool while decoding). End it with `length` rather than spin."""
        if self.scheduler.running or not self.scheduler.waiting:
            return []
        head = self.scheduler.waiting[0]
        state = self._requests[head.request_id]
        state.choices[head.index].finish_reason = "length"
        out = StepOutput(head.request_id, head.index, [], "", finish_reason="length")
        self._finished(head, state, out)
        return [out]

    def stats(self) -> EngineStats:
        return EngineStats.of(self.kv, self.scheduler, self.grammars.stats)

    def take_kv_events(self) -> tuple[list[int], list[int]]:
        return self.kv.take_events()
