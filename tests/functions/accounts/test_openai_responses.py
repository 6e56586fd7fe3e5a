"""OpenAI's Responses API (`POST /v1/responses`) with the official `openai` client and a personal API key:
whole and streamed answers, tools round trips, images, reasoning, and the 400s that change nothing."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from pydantic import BaseModel

from functions.chat.answer import Answer
from functions.chat.responses import ResponsesWire
from tests.doubles.ollama import DEFAULT_REPLY, DEFAULT_THINKING, OllamaDouble, tokenize
from tests.functions.accounts.conftest import FREE, OTHER_PAID, PAID
from tests.functions.accounts.test_openai_capabilities import PNG, data_url
from tests.functions.accounts.test_openai_client import signed_up_with_key
from tests.support import eventually, imported_when_used

if TYPE_CHECKING:
    import openai
else:  # imported by the first test that uses it (tests/support.py)
    openai = imported_when_used("openai")


VISION, THINKER, TOOLER = "llava:7b", "deepseek-r1:7b", "qwen2.5:0.5b"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
# What Codex sends beside its function tools: OpenAI-hosted and client-side kinds Ollama cannot run
CODEX_EXTRAS = [
    {"type": "web_search", "external_web_access": False},
    {"type": "namespace", "name": "mcp__files", "tools": [{"type": "function", "name": "read"}]},
]
STREAM_TEXT = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * len(tokenize(DEFAULT_REPLY)),
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture
async def double():
    async with OllamaDouble(installed=[FREE, PAID, OTHER_PAID, VISION, THINKER, TOOLER]) as d:
        yield d


@pytest.fixture
async def signed_up(make_studio):
    studio = await make_studio(first_user_is_operator=False)
    browser, _, client = await signed_up_with_key(studio)
    for paid in (VISION, THINKER):  # test-mode payments: bought at once
        status, _, _ = await browser.request("POST", f"/api/models/purchase/{paid}")
        assert status == 200
    yield studio, browser, client
    await client.close()


async def test_a_whole_response(signed_up, double) -> None:
    _, _, client = signed_up

    reply = await client.responses.create(
        model=FREE,
        instructions="Be brief.",
        input="Hello",
        max_output_tokens=100,
        temperature=0.2,
        top_p=0.9,
        store=True,
        metadata={"ticket": "42"},
        prompt_cache_key="session-1",
        include=["reasoning.encrypted_content"],
        extra_body={"client_metadata": {"originator": "test"}},
    )

    assert reply.object == "response" and reply.status == "completed" and reply.model == FREE
    assert reply.output_text == DEFAULT_REPLY and reply.id.startswith("resp_")
    assert reply.store is False  # asked to store, but nothing is kept: the object says so
    assert reply.metadata == {"ticket": "42"} and reply.instructions == "Be brief."
    assert reply.usage.output_tokens == len(tokenize(DEFAULT_REPLY)) and reply.usage.input_tokens > 0
    assert reply.usage.total_tokens == reply.usage.input_tokens + reply.usage.output_tokens
    sent = double.chat_requests[-1]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    assert sent["options"] == {"temperature": 0.2, "top_p": 0.9, "num_predict": 100}


async def test_a_streamed_response_has_every_event_in_order(signed_up, double) -> None:
    _, _, client = signed_up

    stream = await client.responses.create(
        model=FREE, input=[{"role": "user", "content": [{"type": "input_text", "text": "Hello"}]}], stream=True
    )
    events = [event async for event in stream]

    assert [e.type for e in events] == STREAM_TEXT
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == DEFAULT_REPLY
    done = events[-1].response
    assert done.status == "completed" and done.output_text == DEFAULT_REPLY and done.usage.output_tokens == len(deltas)
    assert events[0].response.status == "in_progress" and events[0].response.id == done.id


async def test_the_stream_has_event_lines_naming_each_event(signed_up) -> None:
    studio, _, client = signed_up
    headers = {"Authorization": f"Bearer {client.api_key}", "Content-Type": "application/json"}
    body = {"model": FREE, "input": "Hello", "stream": True}
    async with studio.browser().session.post(studio.url("/v1/responses"), json=body, headers=headers) as resp:
        raw = (await resp.read()).decode()
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    blocks = [b for b in raw.split("\n\n") if b]
    for block in blocks:
        name, data = block.split("\n")
        assert name.startswith("event: ") and json.loads(data.removeprefix("data: "))["type"] == name[7:]


async def test_a_tool_round_trip_leaves_other_tool_kinds_out(signed_up, double) -> None:
    _, _, client = signed_up

    first = await client.responses.create(
        model=TOOLER, input="Weather in Paris?", tools=[WEATHER, *CODEX_EXTRAS], tool_choice="auto"
    )

    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].call_id
    assert isinstance(json.loads(calls[0].arguments), dict)
    assert [t["function"]["name"] for t in double.chat_requests[-1]["tools"]] == ["get_weather"]
    assert [t.type for t in first.tools] == ["function"]

    call_id = calls[0].call_id
    second = await client.responses.create(
        model=TOOLER,
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": call_id, "name": calls[0].name, "arguments": calls[0].arguments},
            {"type": "function_call_output", "call_id": call_id, "output": "18 C and sunny"},
        ],
        tools=[WEATHER],
    )

    assert second.output_text == DEFAULT_REPLY
    sent = double.chat_requests[-1]["messages"]
    assert sent[1]["role"] == "assistant" and sent[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[2] == {"role": "tool", "content": "18 C and sunny", "tool_name": "get_weather"}


async def test_a_streamed_tool_call(signed_up) -> None:
    _, _, client = signed_up

    stream = await client.responses.create(model=TOOLER, input="Weather in Paris?", tools=[WEATHER], stream=True)
    events = [event async for event in stream]

    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    call = events[-2].item
    assert call.type == "function_call" and call.name == "get_weather"
    assert events[3].delta == call.arguments == events[4].arguments
    assert [i.type for i in events[-1].response.output] == ["function_call"]


async def test_an_image_input_reaches_a_vision_model(signed_up, double) -> None:
    _, _, client = signed_up
    parts = [{"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": data_url(PNG)}]

    reply = await client.responses.create(model=VISION, input=[{"role": "user", "content": parts}])

    assert reply.output_text == DEFAULT_REPLY
    assert double.chat_requests[-1]["messages"][0]["images"] and "What is this?" in str(double.chat_requests[-1])


async def test_a_thinking_model_streams_a_reasoning_summary_first(signed_up, double) -> None:
    _, _, client = signed_up

    stream = await client.responses.create(model=THINKER, input="Why?", reasoning={"summary": "auto"}, stream=True)
    events = [event async for event in stream]

    types = [e.type for e in events]
    assert types[2:4] == ["response.output_item.added", "response.reasoning_summary_part.added"]
    summary = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert summary == DEFAULT_THINKING
    assert types.index("response.reasoning_summary_part.done") < types.index("response.output_text.delta")
    done = events[-1].response
    assert [i.type for i in done.output] == ["reasoning", "message"]
    assert done.output[0].summary[0].text == DEFAULT_THINKING and done.output_text == DEFAULT_REPLY
    assert done.usage.output_tokens_details.reasoning_tokens == len(tokenize(DEFAULT_THINKING))


async def test_reasoning_effort_none_turns_thinking_off_and_a_plain_model_ignores_it(signed_up, double) -> None:
    _, _, client = signed_up

    off = await client.responses.create(model=THINKER, input="Why?", reasoning={"effort": "none"})
    assert double.chat_requests[-1]["think"] is False and [i.type for i in off.output] == ["message"]

    plain = await client.responses.create(model=FREE, input="Why?", reasoning={"effort": "high", "summary": "auto"})
    assert plain.output_text == DEFAULT_REPLY and "think" not in double.chat_requests[-1]


async def test_a_json_schema_format_reaches_ollama(signed_up, double) -> None:
    _, _, client = signed_up
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}

    reply = await client.responses.create(
        model=FREE, input="Answer", text={"format": {"type": "json_schema", "name": "Answer", "schema": schema}}
    )

    assert double.chat_requests[-1]["format"] == schema and "answer" in json.loads(reply.output_text)


async def test_an_error_mid_stream_is_response_failed(signed_up, double) -> None:
    _, _, client = signed_up
    double.fail_next_chats(after_tokens=2)

    stream = await client.responses.create(model=FREE, input="Hello", stream=True)
    events = [event async for event in stream]

    assert events[-1].type == "response.failed"
    assert events[-1].response.status == "failed" and events[-1].response.error.code == "ollama_error"


async def test_max_output_tokens_makes_an_incomplete_response(signed_up) -> None:
    _, _, client = signed_up

    reply = await client.responses.create(model=FREE, input="Hello", max_output_tokens=3)

    assert reply.status == "incomplete" and reply.incomplete_details.reason == "max_output_tokens"
    assert reply.output_text == "".join(tokenize(DEFAULT_REPLY)[:3])


@pytest.mark.parametrize(
    ("changes", "code", "param"),
    [
        ({"previous_response_id": "resp_123"}, "stateless", "previous_response_id"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "stateless", "input[0]"),
        ({"max_output_tokens": "many"}, "invalid_max_output_tokens", "max_output_tokens"),
        ({"temperature": 3}, "invalid_temperature", "temperature"),
        ({"frequency_penalty": 1}, "unknown_parameter", "frequency_penalty"),
        ({"input": [{"type": "telepathy"}]}, "invalid_input", "input[0].type"),
        ({"input": [{"type": "function_call", "name": "f"}]}, "invalid_input", "input[0].call_id"),
        ({"input": [{"role": "robot", "content": "Hi"}]}, "invalid_input", "input[0].role"),
        ({"input": 7}, "invalid_input", "input"),
        ({"tool_choice": "required", "tools": [WEATHER]}, "invalid_tool_choice", "tool_choice"),
        ({"tool_choice": {"type": "web_search"}, "tools": [WEATHER]}, "invalid_tool_choice", "tool_choice"),
        ({"reasoning": {"effort": "enormous"}}, "invalid_reasoning", "reasoning.effort"),
        ({"text": {"format": {"type": "xml"}}}, "invalid_text", "text.format"),
        ({"top_logprobs": 5}, "unsupported_parameter", "top_logprobs"),
        ({"instructions": "x" * 200_001}, "invalid_instructions", "instructions"),  # over STUDIO_CHAT_MAX_MESSAGE_CHARS
        (
            {"input": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "x" * 200_001}]},
            "invalid_input",
            "input[1].content",
        ),
        ({"input": [{"role": "user", "content": "Hi"}] * 501}, "invalid_input", "input"),
    ],
)
async def test_malformed_requests_are_openai_400s_that_reach_no_model(signed_up, double, changes, code, param) -> None:
    _, _, client = signed_up
    body = {"model": FREE, "input": "Hello", **changes}

    with pytest.raises(openai.BadRequestError) as caught:
        await client.post("/responses", body=body, cast_to=object)

    assert caught.value.code == code and caught.value.param == param, caught.value.body
    assert caught.value.type == "invalid_request_error"
    assert double.chat_requests == []


async def test_huge_or_deep_tool_schemas_and_too_many_images_are_refused(signed_up, double) -> None:
    _, _, client = signed_up
    deep: dict = {"type": "object"}
    for _ in range(40):
        deep = {"type": "object", "properties": {"x": deep}}
    huge = {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 100} for i in range(800)}}
    image = {"type": "input_image", "image_url": data_url(PNG)}

    for tools, says in (([{**WEATHER, "parameters": deep}], "nested"), ([{**WEATHER, "parameters": huge}], "bytes")):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(model=TOOLER, input="Hi", tools=tools)
        assert caught.value.code == "invalid_tools" and says in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model=VISION, input=[{"role": "user", "content": [image] * 5}])
    assert caught.value.code == "too_many_images"
    assert double.chat_requests == []


async def test_ownership_and_unknown_models(signed_up, double) -> None:
    _, browser, client = signed_up

    with pytest.raises(openai.PermissionDeniedError) as denied:
        await client.responses.create(model=PAID, input="Hi")
    assert denied.value.code == "not_owned"
    with pytest.raises(openai.NotFoundError) as missing:
        await client.responses.create(model="no-such-model", input="Hi")
    assert missing.value.code == "unknown_model"

    status, _, _ = await browser.request("POST", f"/api/models/purchase/{PAID}")
    assert status == 200
    reply = await eventually(lambda: _answer(client, PAID), message="the purchase to reach chat")
    assert reply.output_text == DEFAULT_REPLY


async def _answer(client, model: str):
    try:
        return await client.responses.create(model=model, input="Hi")
    except openai.PermissionDeniedError:
        return None


def test_parallel_tool_calls_false_returns_one_call() -> None:
    wire = ResponsesWire(TOOLER, max_calls=1)
    answer = Answer(TOOLER, "someone")
    answer.complete({"done_reason": "stop", "prompt_eval_count": 3, "eval_count": 4})
    calls = [{"function": {"name": "a", "arguments": {}}}, {"function": {"name": "b", "arguments": {}}}]

    whole = wire.whole(answer, "", "", calls)

    assert [i["name"] for i in whole["output"] if i["type"] == "function_call"] == ["a"]


class Forecast(BaseModel):
    city: str
    celsius: int


async def test_responses_parse_gives_a_pydantic_object(signed_up, double) -> None:
    _, _, client = signed_up

    reply = await client.responses.parse(model=FREE, input="Weather in Paris?", text_format=Forecast)

    assert isinstance(reply.output_parsed, Forecast)
    assert double.chat_requests[-1]["format"]["properties"].keys() == {"city", "celsius"}
