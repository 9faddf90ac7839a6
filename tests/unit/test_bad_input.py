"""Bad input gets a clear exception naming the problem; the engine keeps serving others."""

from __future__ import annotations

import pytest

from inference import LLM
from inference.engine.sampling_params import SamplingParams

from .engine_driver import greedy, tiny_engine


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -3}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 0}, "top_k"),
        ({"n": 0}, "n"),
        ({"logprobs": 50}, "logprobs"),
        ({"stop": [""]}, "stop"),
    ],
)
def test_bad_sampling_params_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        SamplingParams(**kwargs)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ([], "prompt: must not be empty"),
        (list(range(3, 3 + 600)), "context"),
        ([5, 9999], r"token ids must be in \[0, 512\)"),
    ],
)
def test_bad_prompts_are_refused_and_the_engine_keeps_serving(prompt, message):
    engine = tiny_engine()
    engine.add_request("good", list(range(3, 10)), greedy(5))
    engine.step()
    with pytest.raises(ValueError, match=message):
        engine.add_request("bad", prompt, greedy(5))
    outs = []
    while engine.has_unfinished():
        outs.extend(engine.step())
    assert outs[-1].request_id == "good" and outs[-1].finish_reason == "length"


def test_duplicate_request_id_is_refused():
    engine = tiny_engine()
    engine.add_request("x", [5, 6], greedy(3))
    with pytest.raises(ValueError, match="already running"):
        engine.add_request("x", [5, 6], greedy(3))


def test_missing_model_names_the_pull_command(tmp_path, monkeypatch):
    monkeypatch.setenv("KVMESH_MODEL_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="kvmesh models pull"):
        LLM()


def test_corrupt_model_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00garbage" * 10)
    with pytest.raises(ValueError, match=r"broken\.gguf"):
        LLM(str(bad))


def test_unknown_engine_option_is_refused():
    with pytest.raises(TypeError, match="unknown engine options"):
        LLM("dummy:tiny", block_sise=4)
