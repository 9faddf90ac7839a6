"""`stop_token_ids` outside the vocabulary is a 400 naming it, through the real router and
workers, as `logit_bias` with the same id is."""

from __future__ import annotations

import pytest

from tests.integration.conftest import MODEL, Mesh
from tests.integration.helpers import post


@pytest.mark.parametrize(("field", "value"), [("stop_token_ids", [1_000_000_000]),
                                              ("logit_bias", {"1000000000": 1})])
def test_token_ids_outside_the_vocabulary_are_400s_naming_the_field(mesh: Mesh, field: str,
                                                                      value: object) -> None:
    status, body, _ = post(mesh.base_url + "/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
        field: value})
    assert status == 400, body
    assert body["error"]["param"] == field and "outside the vocabulary" in body["error"]["message"]
