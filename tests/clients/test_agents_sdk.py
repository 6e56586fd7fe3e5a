"""The OpenAI Agents SDK (`openai-agents`) in its default mode, the Responses API, with a function tool:
the agent calls the tool, runs it, and answers with its result, on a bought model."""

from __future__ import annotations

import openai
from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool

from tests.doubles.ollama import DEFAULT_REPLY


async def test_an_agent_calls_a_function_tool_and_answers(bought, double) -> None:
    studio, key, model = bought
    client = openai.AsyncOpenAI(api_key=key, base_url=studio.url("/v1"), max_retries=0)
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city now."""
        asked.append(city)
        return f"18 C and sunny in {city}"

    agent = Agent(
        name="Forecaster",
        instructions="Answer weather questions with the tool.",
        model=OpenAIResponsesModel(model=model, openai_client=client),
        tools=[get_weather],
    )
    try:
        result = await Runner.run(agent, "Weather in Paris?", run_config=RunConfig(tracing_disabled=True))
        streamed = Runner.run_streamed(agent, "Weather in Rome?", run_config=RunConfig(tracing_disabled=True))
        kinds = [event.type async for event in streamed.stream_events()]
    finally:
        await client.close()

    assert result.final_output == DEFAULT_REPLY and len(asked) == 2
    assert streamed.final_output == DEFAULT_REPLY and "raw_response_event" in kinds
    first, answer = double.chat_requests[0], double.chat_requests[1]
    assert first["messages"][0] == {"role": "system", "content": "Answer weather questions with the tool."}
    assert [t["function"]["name"] for t in first["tools"]] == ["get_weather"]
    assert answer["messages"][-1]["role"] == "tool" and answer["messages"][-1]["content"].startswith("18 C")
