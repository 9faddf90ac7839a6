"""Property tests of the field registry (gateway/api_fields.py) through the real parsers and
the gateway's HTTP surface: every field documented as refused gets a 400 naming it, whatever
its value; a limited field outside its values gets a 400 naming it; every field of the wrong
JSON type gets a 400 naming it; an unknown field gets a 400 naming it."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.api_fields import CHAT_FIELDS, COMPLETION_FIELDS, LIMITED, REFUSED, Field
from gateway.app import build_app
from gateway.errors import ApiError
from gateway.mesh_client import MeshClient
from gateway.openai_request import parse_chat, parse_completion
from kvmesh.config import GatewayConfig

BASES = {"chat": ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, parse_chat,
                  CHAT_FIELDS),
         "completion": ({"model": "m", "prompt": "hi"}, parse_completion, COMPLETION_FIELDS)}
SCALARS = st.one_of(st.booleans(), st.integers(-(1 << 40), 1 << 40),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)
BY_TYPE = {"boolean": st.booleans(), "integer": st.integers(-(1 << 40), 1 << 40),
           "number": st.floats(allow_nan=False, allow_infinity=False),
           "string": st.text(max_size=12), "array": st.lists(VALUES, max_size=3),
           "object": st.dictionaries(st.text(max_size=6), VALUES, max_size=3)}
RUNS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _refused(kind: str) -> list[Field]:
    return [f for f in BASES[kind][2] if f.status == REFUSED]


def _limited(kind: str) -> list[Field]:
    return [f for f in BASES[kind][2] if f.status == LIMITED]


def _param_of(kind: str, name: str, value: Any) -> str | None:
    base, parse, _ = BASES[kind]
    try:
        parse({**base, name: value})
    except ApiError as err:
        assert err.status == 400 and err.body()["error"]["message"], err
        return err.param
    return None


@pytest.mark.parametrize("kind", sorted(BASES))
@RUNS
@given(data=st.data())
def test_every_refused_field_gets_a_400_naming_it(kind: str, data: st.DataObject) -> None:
    field = data.draw(st.sampled_from(_refused(kind)))
    value = data.draw(VALUES)
    assert _param_of(kind, field.name, value) == field.name


@pytest.mark.parametrize("kind", sorted(BASES))
@RUNS
@given(data=st.data())
def test_a_limited_field_outside_its_values_gets_a_400_naming_it(kind: str,
                                                                 data: st.DataObject) -> None:
    field = data.draw(st.sampled_from(_limited(kind)))
    value = data.draw(st.one_of(*(BY_TYPE[t] for t in field.types)))
    param = _param_of(kind, field.name, value)
    assert param is None or param == field.name
    assert (param is None) == (field.allowed(value, {field.name: value}) is None)


@pytest.mark.parametrize("kind", sorted(BASES))
@RUNS
@given(data=st.data())
def test_every_field_of_the_wrong_type_gets_a_400_naming_it(kind: str,
                                                            data: st.DataObject) -> None:
    field = data.draw(st.sampled_from(BASES[kind][2]))
    wrong = [s for t, s in BY_TYPE.items() if t not in field.types
             and not (t == "integer" and "number" in field.types)]
    value = data.draw(st.one_of(*wrong))
    assert _param_of(kind, field.name, value) == field.name


@pytest.mark.parametrize("kind", sorted(BASES))
@RUNS
@given(name=st.text(min_size=1, max_size=12), value=VALUES)
def test_an_unknown_field_gets_a_400_naming_it(kind: str, name: str, value: Any) -> None:
    if name in {f.name for f in BASES[kind][2]}:
        return
    assert _param_of(kind, name, value) == name


@pytest.mark.parametrize(("kind", "name", "value"), [
    ("chat", "tools", "notalist"), ("chat", "response_format", 42), ("chat", "stop", 5),
    ("chat", "n", "x"), ("chat", "logprobs", "yes"), ("chat", "metadata", 3),
    ("chat", "user", 7), ("completion", "logprobs", True), ("completion", "logit_bias", [1]),
    ("chat", "logit_bias", {"x": 1}), ("chat", "logit_bias", {"5": 101}),
    ("chat", "metadata", {"k": 1}),
])
def test_the_issues_malformed_values_get_a_400_naming_the_field(kind: str, name: str,
                                                                value: Any) -> None:
    got = _param_of(kind, name, value)
    assert got is not None and got.split(".")[0] == name


@pytest.mark.parametrize(("options", "param"), [
    ({"include_usage": True, "bogus": True}, "stream_options.bogus"),
    ({"include_usage": "yes"}, "stream_options.include_usage"),
])
def test_a_streamed_requests_bad_stream_options_are_400_naming_the_key(
        options: dict[str, Any], param: str) -> None:
    base, parse, _ = BASES["chat"]
    with pytest.raises(ApiError) as err:
        parse({**base, "stream": True, "stream_options": options})
    assert (err.value.status, err.value.param) == (400, param)


@pytest.fixture
async def gateway() -> Any:
    client = TestClient(TestServer(build_app(MeshClient(GatewayConfig(auth=False,
                                                                      result_cache=False)))))
    await client.start_server()
    yield client
    await client.close()


async def test_refused_fields_are_400_in_the_openai_shape_over_http(gateway: Any) -> None:
    for kind, path in (("chat", "/v1/chat/completions"), ("completion", "/v1/completions")):
        base = BASES[kind][0]
        for field in _refused(kind):
            resp = await gateway.post(path, json={**base, field.name: {"x": 1}})
            err = (await resp.json())["error"]
            assert resp.status == 400 and err["param"] == field.name, (path, field.name, err)
            assert err["code"] in ("unsupported_parameter", "invalid_type")
            assert resp.headers["x-request-id"]
