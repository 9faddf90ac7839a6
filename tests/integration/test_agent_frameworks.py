"""LangChain (`langchain-openai`) and LiteLLM against a running mesh: tools and structured
output as those frameworks send them. Skipped when the frameworks are not installed."""

from __future__ import annotations

import json
import os

import pytest
from pydantic import BaseModel, Field

from tests.integration.conftest import MODEL

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                   "required": ["city"], "additionalProperties": False}}}


class Pet(BaseModel):
    """A pet."""

    name: str = Field(max_length=20)
    species: str = Field(max_length=20)
    age: int


@pytest.fixture(scope="module")
def chat_model(mesh):
    lc = pytest.importorskip("langchain_openai")
    return lc.ChatOpenAI(model=MODEL, base_url=mesh.base_url + "/v1", api_key="unused",
                         temperature=0, max_tokens=120, max_retries=0, timeout=120)


def test_langchain_bind_tools_gets_a_tool_call(chat_model) -> None:
    llm = chat_model.bind_tools([WEATHER], tool_choice="get_weather")
    msg = llm.invoke("What is the weather in Lisbon?")
    assert [c["name"] for c in msg.tool_calls] == ["get_weather"]
    assert isinstance(msg.tool_calls[0]["args"]["city"], str)


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_with_structured_output(chat_model, method) -> None:
    pet = chat_model.with_structured_output(Pet, method=method).invoke("Describe a pet.")
    assert isinstance(pet, Pet)


def test_litellm_completion_with_tools(mesh) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch from the internet
    litellm = pytest.importorskip("litellm")
    resp = litellm.completion(
        model=f"openai/{MODEL}", api_base=mesh.base_url + "/v1", api_key="unused",
        messages=[{"role": "user", "content": "What is the weather in Lima?"}],
        tools=[WEATHER], tool_choice="required", max_tokens=120, temperature=0)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)
