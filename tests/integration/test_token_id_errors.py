"""Token ids outside the vocabulary, through the real router and workers: an embedding's are
a 400 naming `input` (the field they came in, not the engine's `prompt`), and /detokenize's
carry a code like every other 400."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import MODEL
from tests.integration.helpers import post

VOCAB = 49152  # SmolLM2-135M's


@pytest.mark.parametrize("ids", [[100_000_000], [[1, 2], [3, VOCAB]]])
def test_an_embeddings_token_id_outside_the_vocabulary_names_input(mesh: Any,
                                                                    ids: list[Any]) -> None:
    status, got, _ = post(mesh.base_url + "/v1/embeddings", {"model": MODEL, "input": ids})
    assert status == 400, got
    err = got["error"]
    assert (err["param"], err["code"]) == ("input", "invalid_value"), err
    assert err["message"] == f"input: token ids must be in [0, {VOCAB})"


def test_detokenize_outside_the_vocabulary_has_a_code(mesh: Any) -> None:
    status, got, _ = post(mesh.base_url + "/detokenize", {"model": MODEL, "tokens": [10 ** 9]})
    assert status == 400, got
    assert (got["error"]["param"], got["error"]["code"]) == ("tokens", "invalid_value"), got
