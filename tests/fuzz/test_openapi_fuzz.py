"""schemathesis against a live gateway, driven by the gateway's own `/openapi.json`: bodies
valid by the document and bodies that break it, on every operation. No answer is a 5xx, every
refusal is in the OpenAI error shape, no call hangs, and valid bodies (with a served model)
are served. The backend is the scripted router/worker of tests/faults (instant answers), so
this fuzzes the gateway itself; the real services sit behind it in tests/faults/test_mesh_faults.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from tests.faults.fake_backend import FAKE_MODEL  # noqa: E402
from tests.faults.fake_mesh import FakeMesh, fake_mesh  # noqa: E402

EXAMPLES = 300  # per generation operation and mode: about 40 s of fuzzing on two busy cores
SIDE_EXAMPLES = 60  # per other operation (models, tokenize): the same validators, less to find
CALL_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def fmesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeMesh]:
    with fake_mesh(tmp_path_factory.mktemp("fuzz-mesh")) as m:
        yield m


def _check(case: Any, resp: Any) -> None:
    where = f"{case.method} {case.path} {case.body!r:.300}"
    assert resp.status_code < 500, (where, resp.status_code, resp.text[:300])
    if resp.status_code >= 400:
        err = resp.json()["error"]
        assert set(err) >= {"message", "type", "param", "code"} and err["message"], where


def test_gateway_survives_schemathesis(fmesh: FakeMesh) -> None:
    url = fmesh.open_url
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    started = time.monotonic()
    served = 0
    statuses: Counter[tuple[str, int]] = Counter()
    for result in schema.get_all_operations():
        op = result.ok()
        examples = EXAMPLES if "completions" in op.path else SIDE_EXAMPLES
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=examples, deadline=None, database=None,
                      phases=[Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                nonlocal served
                if isinstance(case.body, dict) and "model" in case.body and case.body.get(
                        "messages", case.body.get("prompt", case.body.get("input"))) is not None:
                    case.body["model"] = FAKE_MODEL  # valid bodies reach the backend
                t0 = time.monotonic()
                resp = case.call(base_url=url, timeout=CALL_TIMEOUT_S)
                assert time.monotonic() - t0 < CALL_TIMEOUT_S
                _check(case, resp)
                statuses[(f"{case.method} {case.path}", resp.status_code)] += 1
                served += resp.status_code == 200 and case.method == "POST"

            try:
                run()
            except Unsatisfiable:  # nothing to break in an operation without inputs
                assert op.method.upper() == "GET" and mode is GenerationMode.NEGATIVE
    print(sorted(statuses.items()))
    assert served, "no generated body was ever served: the document is stricter than the code"
    assert time.monotonic() - started < 240
