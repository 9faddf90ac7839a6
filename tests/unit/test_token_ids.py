"""gateway/token_ids.py: `return_tokens_as_token_ids` renames copies, never the chunks given
(the result cache may hold them and serve them to a request without the field)."""

from __future__ import annotations

import copy

from gateway.token_ids import named_by_id
from kvmesh.wire import Chunk, Logprob, PromptEcho, TopLogprob


def test_entries_are_renamed_on_copies_and_the_rest_kept() -> None:
    echo = PromptEcho("ab", ["a", "b"], [Logprob(2, "b", -1.0, [TopLogprob(9, "z", -0.5)])],
                      [1, 2])
    chunks = [Chunk("r", 0, 0, "", [], prompt=echo),
              Chunk("r", 1, 0, "\ufffd", [7], [Logprob(7, "\ufffd", -0.1,
                                                       [TopLogprob(8, "x", -2.0, b"\xf0")],
                                                       b"\xf0\x9f")]),
              Chunk("r", 2, 0, "", [], finish_reason="stop")]
    before = copy.deepcopy(chunks)
    out = named_by_id(chunks)
    assert chunks == before
    assert out[0].prompt.tokens == ["token_id:1", "token_id:2"] and out[0].prompt.text == "ab"
    assert out[0].prompt.logprobs[0].top[0].token == "token_id:9"
    lp = out[1].logprobs[0]
    assert (lp.token, lp.token_bytes, lp.logprob) == ("token_id:7", None, -0.1)
    assert (lp.top[0].token, lp.top[0].token_bytes) == ("token_id:8", None)
    assert out[1].text == "\ufffd" and out[1].token_ids == [7] and out[2] is chunks[2]
