"""A request's `stop_token_ids` outside the vocabulary is refused naming the field, as its
`logit_bias` ids are, by the engine (and by the worker with the same check)."""

from __future__ import annotations

import pytest

from inference.engine.errors import InvalidParameter
from inference.engine.sampling_params import SamplingParams

from .engine_driver import tiny_engine


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"stop_token_ids": [3, 1_000_000_000]}, "stop_token_ids"),
    ({"logit_bias": {1_000_000_000: 1.0}}, "logit_bias"),
])
def test_token_ids_outside_the_vocabulary_name_their_field(kwargs: dict, param: str) -> None:
    engine = tiny_engine()
    with pytest.raises(InvalidParameter, match=f"^{param}: token id 1000000000 is outside"):
        engine.add_request("r", [5, 6], SamplingParams(max_tokens=2, **kwargs))
    engine.add_request("ok", [5, 6], SamplingParams(max_tokens=2, stop_token_ids=[3]))
