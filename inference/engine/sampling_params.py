"""Per-request sampling parameters, checked for range where they are made.

A value out of range raises `InvalidParameter` (a ValueError) naming the field: when the
params are made and again when `LLMEngine.add_request` takes them (a dataclass can be changed
in between). The worker makes them from the wire's fields, whose types the codec has already
checked, so a bad value becomes a 400 with `param` set before the request reaches the engine
process. Types are not checked here beyond that: a caller outside the mesh (`inference.LLM`)
passes Python values as it likes. Token ids in `logit_bias`, `stop_token_ids` and
`allowed_token_ids` are checked against the vocabulary apart (`prompt_check.check_token_ids`),
since only the model knows its size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import InvalidParameter

GREEDY_BELOW = 1e-5  # a temperature below this samples greedily
MIN_REPETITION_PENALTY = 0.01  # a logit divided by less could overflow float32


@dataclass
class SamplingParams:
    """How to sample one request. `temperature == 0` means greedy (below `GREEDY_BELOW` it is
    made 0). `min_p` (vLLM's; 0 is off)
    drops every token whose probability, after temperature, is below `min_p` times the most
    likely token's, before top-k and top-p.

    `n` choices share the prompt's KV blocks (forked, copy-on-write). `seed` gives the request
    noise of its own, whatever else is in the batch; choice i uses seed + i. Its tokens repeat
    exactly when its logits do (alone, or in a batch of the same shapes); a batch of other
    shapes may round the logits differently, in bfloat16 above all, and so flip a close draw
    (vLLM promises no more). `priority`: a higher value is admitted first and preempted last.
    `share`: the fair-share group (a served worker's tenant): within a priority, waiting
    sequences of different groups take turns (scheduler.py), so one group's many sequences
    never hold back another's. `grammar_kind`/`grammar` constrain decoding (kvmesh/grammar.py
    says what each kind's source is); they are plain strings so the params pickle across
    processes, and the engine compiles them. `cache_salt` roots the request's prefix-cache
    chain (kvmesh/block_hash.py): only requests with the same salt share cached blocks. `echo`:
    the request's first output reports its prompt (ids and text), and then `max_tokens` may be
    0 (prefill only, finishing with "length"). `prompt_logprobs`: with echo, the logprob of
    every prompt token after the first, with this many top alternatives (prompt_logprobs.py);
    such a request computes its whole prompt, skipping the prefix cache. `logit_bias` maps
    token ids to a bias in [-100, 100] added to their logits before sampling (and before
    logprobs, which are of the biased distribution); ids are checked against the vocabulary
    where it is known (`prompt_check.check_token_ids`). `presence_penalty` and
    `frequency_penalty` (OpenAI's, in [-2, 2]) lower the logits of tokens the choice has
    generated, once and per use; `repetition_penalty` (vLLM's, in [0.01, 2], 1 is off) scales
    those of every token seen, prompt included (penalties.py says how). `min_tokens` (vLLM's):
    each choice generates at least this many tokens before an end-of-sequence or stop token can
    be drawn or a stop string can end it (min_tokens.py); at most `max_tokens`.
    `include_stop_str_in_output` (vLLM's): the stop string or stop token (a `stop_token_ids`
    one, the end of sequence) that ended a choice ends its text too (dropped by default; a
    special token's text only with `skip_special_tokens` False). `skip_special_tokens` (vLLM's,
    default True): special tokens show no text; False shows theirs (the token that ends a
    choice still shows none, unless `include_stop_str_in_output`).
    `allowed_token_ids` (vLLM's): when set, only these tokens can be drawn (allowed_tokens.py);
    not with a grammar, whose mask could leave none.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    seed: int | None = None
    n: int = 1
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None
    priority: int = 0
    grammar_kind: str = ""  # "" (free), or one of kvmesh.grammar.KINDS
    grammar: str = ""  # the grammar's source (a JSON schema, a regex, ...)
    cache_salt: str = ""
    share: str = ""
    echo: bool = False
    prompt_logprobs: int | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    allowed_token_ids: list[int] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if isinstance(self.temperature, int | float) and 0 < self.temperature < GREEDY_BELOW:
            self.temperature = 0.0  # dividing logits by it would overflow them (vLLM's rule)
        self.validate()

    def validate(self) -> None:
        def bad(param: str, why: str) -> InvalidParameter:
            return InvalidParameter(param, why)

        least = 0 if self.echo else 1  # 0 with echo: score the prompt, generate nothing
        if not isinstance(self.max_tokens, int) or self.max_tokens < least:
            raise bad("max_tokens", f"must be an integer >= {least}, got {self.max_tokens!r}")
        if not isinstance(self.min_tokens, int) or not 0 <= self.min_tokens <= self.max_tokens:
            raise bad("min_tokens", f"must be an integer in [0, max_tokens={self.max_tokens}], "
                      f"got {self.min_tokens!r}")
        if not 0.0 <= float(self.temperature) <= 100.0:
            raise bad("temperature", f"must be in [0, 100], got {self.temperature!r}")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise bad("top_p", f"must be in (0, 1], got {self.top_p!r}")
        if not 0.0 <= float(self.min_p) <= 1.0:
            raise bad("min_p", f"must be in [0, 1], got {self.min_p!r}")
        if not isinstance(self.top_k, int) or (self.top_k < 1 and self.top_k != -1):
            raise bad("top_k", f"must be -1 (off) or a positive integer, got {self.top_k!r}")
        if not isinstance(self.n, int) or not 1 <= self.n <= 128:
            raise bad("n", f"must be an integer in [1, 128], got {self.n!r}")
        if self.seed is not None and not isinstance(self.seed, int):
            raise bad("seed", f"must be an integer, got {self.seed!r}")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise bad("logprobs", f"must be in [0, 20], got {self.logprobs!r}")
        if self.prompt_logprobs is not None and (
                not self.echo or not 0 <= self.prompt_logprobs <= 20):
            raise bad("prompt_logprobs", f"must be in [0, 20] with echo, got "
                      f"{self.prompt_logprobs!r}")
        if any(not isinstance(s, str) or not s for s in self.stop) or len(self.stop) > 16:
            raise bad("stop", "must be at most 16 non-empty strings")
        for name in ("cache_salt", "share"):
            if not isinstance(getattr(self, name), str):
                raise bad(name, f"must be a string, got {getattr(self, name)!r}")
        if any(not isinstance(t, int) or t < 0 for t in self.stop_token_ids):
            raise bad("stop_token_ids", "must be non-negative integers")
        if self.allowed_token_ids is not None and (not self.allowed_token_ids or any(
                not isinstance(t, int) or t < 0 for t in self.allowed_token_ids)):
            raise bad("allowed_token_ids", "must be a non-empty list of token ids")
        if self.allowed_token_ids and self.min_tokens:  # their masks could leave no token
            raise bad("min_tokens", "cannot be combined with allowed_token_ids")
        if any(not isinstance(t, int) or t < 0 or not -100.0 <= float(b) <= 100.0
               for t, b in self.logit_bias.items()):
            raise bad("logit_bias", "must map token ids to biases in [-100, 100]")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= float(getattr(self, name)) <= 2.0:
                raise bad(name, f"must be in [-2, 2], got {getattr(self, name)!r}")
        if not MIN_REPETITION_PENALTY <= float(self.repetition_penalty) <= 2.0:
            raise bad("repetition_penalty", f"must be in [{MIN_REPETITION_PENALTY}, 2], got "
                      f"{self.repetition_penalty!r}")
        if self.grammar_kind or self.grammar:
            self._validate_grammar()

    def _validate_grammar(self) -> None:
        from kvmesh.grammar import grammar_error

        for name in ("ignore_eos", "min_tokens", "allowed_token_ids"):
            if getattr(self, name):
                raise InvalidParameter(name, "cannot be combined with a grammar (its end ends "
                                       "the answer)")
        try:
            err = grammar_error(self.grammar_kind, self.grammar)
        except ImportError:
            raise InvalidParameter("grammar", "constrained decoding needs the llguidance "
                                   "package, which this worker lacks") from None
        if err:
            raise InvalidParameter("grammar", err)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
