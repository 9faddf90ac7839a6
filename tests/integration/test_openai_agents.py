"""The OpenAI Agents SDK (`openai-agents`) against a mesh, on both of its models: the
Responses model (its default) and the Chat Completions one. An agent with an output type and
no tools (the SDK sends `tools: []`) ends with that type; an agent made to call its function
tool gets the call run and its result back. Skipped when the SDK is not installed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from tests.integration.conftest import MODEL, Mesh
from tests.integration.responses_gateway import responses_gateway

agents = pytest.importorskip("agents")


class City(BaseModel):
    name: str = Field(max_length=20)
    country: str = Field(max_length=20)


@pytest.fixture(scope="module")
def base(mesh: Mesh, redis_url: str, logs_dir: Path) -> Iterator[str]:
    with responses_gateway(mesh, redis_url, logs_dir, "agents") as url:
        yield url


def _model(base: str, kind: str) -> Any:
    from openai import AsyncOpenAI

    agents.set_tracing_disabled(True)  # no export to OpenAI's tracing service
    client = AsyncOpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
    if kind == "responses":
        return agents.OpenAIResponsesModel(model=MODEL, openai_client=client)
    return agents.OpenAIChatCompletionsModel(model=MODEL, openai_client=client)


@pytest.mark.parametrize("kind", ["responses", "chat"])
def test_an_agent_with_an_output_type_ends_with_it(base: str, kind: str) -> None:
    agent = agents.Agent(name="geo", instructions="Name a city.", output_type=City,
                         model=_model(base, kind),
                         model_settings=agents.ModelSettings(temperature=0, max_tokens=60))
    result = asyncio.run(agents.Runner.run(agent, "A city in France?", max_turns=1))
    assert isinstance(result.final_output, City)


@pytest.mark.parametrize("kind", ["responses", "chat"])
def test_an_agent_runs_the_tool_it_calls(base: str, kind: str) -> None:
    asked: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"22C in {city}"

    agent = agents.Agent(
        name="weather", instructions="Use get_weather.", tools=[get_weather],
        model=_model(base, kind), tool_use_behavior="stop_on_first_tool",
        model_settings=agents.ModelSettings(temperature=0, max_tokens=60,
                                            tool_choice="required"))
    result = asyncio.run(agents.Runner.run(agent, "Weather in Paris?", max_turns=2))
    assert len(asked) == 1 and result.final_output == f"22C in {asked[0]}"
