"""The text of a request's choices, made in the worker from the token ids its engine sends.

Why here: at 256 streams the engine process is bound by its host work per step, and making
each choice's text (incremental detokenising) is per-sequence Python it can leave to the
worker, which runs in another process beside it (as vLLM's front end detokenises for its
engine core). The engine process sets `LLMEngine.detokenize` off (inference/engine_loop.py):
its outputs then carry token ids and no text, except for requests with stop strings, whose
text the engine must make to find them (and stop the sequence at once).

Contract: for a request without stop strings, `ChoiceTexts.text(index, token_ids, finish)`
over a choice's rows, in order, gives the text the engine itself would have put in those rows
(`ChoiceState.on_token`): a token that ends its choice with "stop" because it is one of its
`hidden_ids` (an end of sequence unless `ignore_eos`, a stop token id) shows no text (unless
`include_stop_str_in_output`), and the
row that finishes a choice carries the rest of its text (`IncrementalDetokenizer.flush`).
"""

from __future__ import annotations

from inference.engine.detokenizer import IncrementalDetokenizer
from inference.engine.request_state import hidden_ids
from inference.engine.sampling_params import SamplingParams
from inference.engine.tokenizer import Tokenizer


class ChoiceTexts:
    """One request's text state, a detokenizer per choice (made when its first row comes)."""

    def __init__(self, tokenizer: Tokenizer, params: SamplingParams,
                 eos_ids: frozenset[int]) -> None:
        self._tok = tokenizer
        self._detoks: dict[int, IncrementalDetokenizer] = {}
        self._hidden = hidden_ids(params, eos_ids)
        self._skip = params.skip_special_tokens
        self._show_stop = params.include_stop_str_in_output

    def text(self, index: int, token_ids: list[int], finish: str | None) -> str:
        """Hot path (a row per choice per step): the new text of choice `index`'s row."""
        detok = self._detoks.get(index)
        if detok is None:
            detok = self._detoks[index] = IncrementalDetokenizer(self._tok, self._skip)
        if finish is None:
            return detok.push_one(token_ids[0]) if len(token_ids) == 1 else detok.push(token_ids)
        if not token_ids:  # aborted, or ended before sampling: the engine adds no text
            return ""
        if finish == "stop" and token_ids[-1] in self._hidden and not self._show_stop:
            token_ids = token_ids[:-1]
        return (detok.push(token_ids) if token_ids else "") + detok.flush()
