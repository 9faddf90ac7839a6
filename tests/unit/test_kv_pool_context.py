"""A KV pool smaller than the model's context lowers the context the engine serves, so the
one context check (prompt_check.py) refuses a request the pool could not finish, naming its
field, instead of the engine cutting the answer short with `length` (RELIABILITY round ten,
row 17)."""

from __future__ import annotations

import logging

import pytest

from inference.engine.errors import ContextLengthExceeded
from inference.engine.prompt_check import check_prompt
from tests.unit.engine_driver import tiny_engine


def test_a_pool_smaller_than_the_context_lowers_the_context(caplog) -> None:
    with caplog.at_level(logging.WARNING, "inference.engine.engine_setup"):
        engine = tiny_engine(num_kv_blocks=8, max_model_len=64)  # 8 blocks of 4: 32 tokens
    assert engine.limits.max_model_len == 32
    assert "serving a context of 32" in caplog.text
    check_prompt(list(range(3, 13)), 22, engine.limits)  # 10 + 22 fits
    with pytest.raises(ContextLengthExceeded) as refused:
        check_prompt(list(range(3, 13)), 23, engine.limits)
    assert refused.value.param == "max_tokens"
    with pytest.raises(ContextLengthExceeded) as refused:
        check_prompt(list(range(3, 35)), None, engine.limits)
    assert refused.value.param == "messages"


def test_a_pool_larger_than_the_context_leaves_it(caplog) -> None:
    with caplog.at_level(logging.WARNING, "inference.engine.engine_setup"):
        engine = tiny_engine(num_kv_blocks=16, max_model_len=64)  # exactly 64 tokens
    assert engine.limits.max_model_len == 64
    assert "serving a context" not in caplog.text
