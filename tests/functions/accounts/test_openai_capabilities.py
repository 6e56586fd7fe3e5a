"""What each model is sold for, through `/v1` with the official `openai` client and a personal API key:
images, reasoning, tools (a round trip, whole and streamed), structured output, embeddings, and the 400s
in OpenAI's shape when a request asks a model for what it cannot do."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from tests.doubles.ollama import DEFAULT_REPLY, DEFAULT_THINKING, OllamaDouble, tokenize
from tests.functions.accounts.conftest import FREE, OPERATOR_TOKEN, OTHER_PAID, PAID
from tests.functions.accounts.test_openai_client import signed_up_with_key
from tests.support import eventually, imported_when_used

if TYPE_CHECKING:
    import openai
else:  # imported by the first test that uses it (tests/support.py)
    openai = imported_when_used("openai")


VISION, THINKER, EMBEDDER, TOOLER = "llava:7b", "deepseek-r1:7b", "nomic-embed-text:latest", "qwen2.5:0.5b"
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}},
}


@pytest.fixture
async def double():
    async with OllamaDouble(installed=[FREE, PAID, OTHER_PAID, VISION, THINKER, EMBEDDER, TOOLER]) as d:
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


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def looking(url: str, text: str = "What is this?") -> list[dict]:
    return [
        {"role": "user", "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]}
    ]


# -- images ------------------------------------------------------------------------------------------------


async def test_an_image_content_part_reaches_a_vision_model(signed_up, double) -> None:
    _, _, client = signed_up

    reply = await client.chat.completions.create(model=VISION, messages=looking(data_url(PNG)))

    assert reply.choices[0].message.content == DEFAULT_REPLY
    sent = double.chat_requests[-1]["messages"]
    assert sent == [{"role": "user", "content": "What is this?", "images": [base64.b64encode(PNG).decode()]}]


@pytest.mark.parametrize(
    ("model", "messages", "code", "says"),
    [
        (FREE, looking(data_url(PNG)), "model_has_no_vision", "cannot see images"),
        (VISION, looking("https://example.com/cat.png"), "remote_image_refused", "fetches nothing"),
        (VISION, looking(data_url(b"%PDF-1.7", "image/png")), "unsupported_image", "content[1].image_url.url"),
        (VISION, looking("data:image/png,notbase64"), "invalid_images", "base64 data URL"),
    ],
)
async def test_images_a_model_cannot_take_are_a_bad_request(signed_up, double, model, messages, code, says) -> None:
    _, _, client = signed_up

    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model=model, messages=messages)

    assert refused.value.code == code and says in refused.value.message
    assert refused.value.type == "invalid_request_error"
    assert double.chat_requests == []


# -- reasoning ---------------------------------------------------------------------------------------------


async def test_reasoning_content_whole_and_streamed_and_turned_off(signed_up, double) -> None:
    studio, _, client = signed_up
    hello = [{"role": "user", "content": "Hello"}]

    whole = await client.chat.completions.create(model=THINKER, messages=hello)
    message = whole.choices[0].message
    assert message.content == DEFAULT_REPLY and message.model_extra["reasoning_content"] == DEFAULT_THINKING
    assert whole.usage.completion_tokens_details.reasoning_tokens == len(tokenize(DEFAULT_THINKING))
    assert double.chat_requests[-1]["think"] is True

    stream = await client.chat.completions.create(model=THINKER, messages=hello, stream=True, reasoning_effort="low")
    deltas = [c.choices[0].delta for c in [chunk async for chunk in stream] if c.choices]
    reasoning = [d.model_extra.get("reasoning_content") for d in deltas if d.model_extra.get("reasoning_content")]
    content = [d.content for d in deltas if d.content]
    assert "".join(reasoning) == DEFAULT_THINKING and "".join(content) == DEFAULT_REPLY
    first_content = next(i for i, d in enumerate(deltas) if d.content)
    assert all(not d.model_extra.get("reasoning_content") for d in deltas[first_content:]), "thinking comes first"

    off = await client.chat.completions.create(model=THINKER, messages=hello, reasoning_effort="none")
    assert (
        off.choices[0].message.content == DEFAULT_REPLY
        and "reasoning_content" not in off.choices[0].message.model_extra
    )
    assert off.usage.completion_tokens_details.reasoning_tokens == 0
    assert double.chat_requests[-1]["think"] is False

    async def thinking_tokens():
        resp = await studio.client.get("/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
        for family in text_string_to_metric_families(await resp.text()):
            for s in family.samples:
                if s.name == "studio_chat_tokens_total" and s.labels == {"model": THINKER, "kind": "thinking"}:
                    return s.value if s.value == 2 * len(tokenize(DEFAULT_THINKING)) else None
        return None

    await eventually(thinking_tokens, message="thinking tokens counted apart in /metrics")


# -- tools -------------------------------------------------------------------------------------------------


async def test_a_tool_call_round_trip_whole(signed_up, double) -> None:
    _, _, client = signed_up
    messages: list = [{"role": "user", "content": "Weather in Oslo?"}]

    called = await client.chat.completions.create(model=TOOLER, messages=messages, tools=[WEATHER])

    choice = called.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Weather in Oslo?"}
    assert double.chat_requests[-1]["tools"] == [WEATHER]

    messages.append(choice.message)  # the client's own message object, as its docs show
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 21}'})
    answered = await client.chat.completions.create(model=TOOLER, messages=messages, tools=[WEATHER])

    assert answered.choices[0].finish_reason == "stop" and answered.choices[0].message.content == DEFAULT_REPLY
    assert answered.choices[0].message.tool_calls is None
    sent = double.chat_requests[-1]["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Weather in Oslo?"}}}],
    }
    assert sent[2] == {"role": "tool", "content": '{"celsius": 21}', "tool_name": "get_weather"}


async def test_a_tool_call_round_trip_streamed(signed_up, double) -> None:
    _, _, client = signed_up
    messages: list = [{"role": "user", "content": "Weather in Oslo?"}]

    stream = await client.chat.completions.create(model=TOOLER, messages=messages, tools=[WEATHER], stream=True)
    chunks = [c async for c in stream]

    calls = [t for c in chunks for t in (c.choices[0].delta.tool_calls or [])]
    assert [(t.index, t.type, t.function.name) for t in calls] == [(0, "function", "get_weather")]
    assert json.loads(calls[0].function.arguments) == {"city": "Weather in Oslo?"} and calls[0].id.startswith("call_")
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["tool_calls"]

    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": calls[0].id, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"})
    stream = await client.chat.completions.create(model=TOOLER, messages=messages, tools=[WEATHER], stream=True)
    chunks = [c async for c in stream]

    assert "".join(c.choices[0].delta.content or "" for c in chunks) == DEFAULT_REPLY
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["stop"]
    assert double.chat_requests[-1]["messages"][2] == {"role": "tool", "content": "sunny", "tool_name": "get_weather"}


async def test_tool_choice_none_sends_no_tools_and_a_named_one_sends_only_it(signed_up, double) -> None:
    _, _, client = signed_up
    ask = [{"role": "user", "content": "What time is it?"}]

    reply = await client.chat.completions.create(model=TOOLER, messages=ask, tools=[WEATHER, TIME], tool_choice="none")
    assert reply.choices[0].message.content == DEFAULT_REPLY and "tools" not in double.chat_requests[-1]

    named = {"type": "function", "function": {"name": "get_time"}}
    reply = await client.chat.completions.create(model=TOOLER, messages=ask, tools=[WEATHER, TIME], tool_choice=named)
    assert double.chat_requests[-1]["tools"] == [TIME]
    assert reply.choices[0].message.tool_calls[0].function.name == "get_time"


# -- structured output -------------------------------------------------------------------------------------


class City(BaseModel):
    name: str
    population: int


async def test_json_schema_and_json_object(signed_up, double) -> None:
    _, _, client = signed_up
    ask = [{"role": "user", "content": "The largest city of Norway?"}]

    parsed = await client.chat.completions.parse(model=FREE, messages=ask, response_format=City)
    city = parsed.choices[0].message.parsed
    assert isinstance(city, City) and city.population == 42
    schema = double.chat_requests[-1]["format"]
    assert schema["properties"].keys() == {"name", "population"} and schema["additionalProperties"] is False

    reply = await client.chat.completions.create(model=FREE, messages=ask, response_format={"type": "json_object"})
    assert isinstance(json.loads(reply.choices[0].message.content), dict)
    assert double.chat_requests[-1]["format"] == "json"

    await client.chat.completions.create(model=FREE, messages=ask, response_format={"type": "text"})
    assert "format" not in double.chat_requests[-1]


# -- embeddings --------------------------------------------------------------------------------------------


async def test_embeddings_of_a_string_and_a_list_in_both_encodings(signed_up, double) -> None:
    _, browser, client = signed_up

    default = await client.embeddings.create(model=EMBEDDER, input="hello world")  # the client asks for base64
    assert double.embed_requests[-1] == {"model": EMBEDDER, "input": ["hello world"]}
    floats = await client.embeddings.create(model=EMBEDDER, input="hello world", encoding_format="float")
    assert default.object == "list" and default.model == EMBEDDER and len(default.data) == 1
    assert len(floats.data[0].embedding) == 768
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, rel=1e-6)
    assert default.usage.prompt_tokens > 0 and default.usage.total_tokens == default.usage.prompt_tokens

    many = await client.embeddings.create(model=EMBEDDER, input=["a cat", "a dog", "a cat"], dimensions=256)
    assert [d.index for d in many.data] == [0, 1, 2] and all(len(d.embedding) == 256 for d in many.data)
    assert many.data[0].embedding == many.data[2].embedding != many.data[1].embedding
    assert double.embed_requests[-1]["dimensions"] == 256

    async def counted():
        status, body, _ = await browser.request("GET", "/api/account/usage?days=1")
        assert status == 200
        rows = [r for r in body["usage"] if r["model"] == EMBEDDER]
        return rows if rows and rows[0]["answers"] == 3 else None

    [row] = await eventually(counted, message="embedding requests counted in the account's usage")
    assert row["prompt_tokens"] == 2 * default.usage.prompt_tokens + many.usage.prompt_tokens
    assert row["completion_tokens"] == 0


async def test_embeddings_refused(signed_up, double) -> None:
    _, _, client = signed_up

    with pytest.raises(openai.BadRequestError) as no_vectors:
        await client.embeddings.create(model=FREE, input="hello")
    assert no_vectors.value.code == "model_has_no_embedding"
    with pytest.raises(openai.PermissionDeniedError) as unowned:
        await client.embeddings.create(model=PAID, input="hello")
    assert unowned.value.code == "not_owned"
    with pytest.raises(openai.BadRequestError) as too_wide:
        await client.embeddings.create(model=EMBEDDER, input="hello", dimensions=4096)
    assert too_wide.value.code == "invalid_embedding_request" and "dimensions" in too_wide.value.message
    with pytest.raises(openai.BadRequestError) as tokens:  # token ids are taken, but only cl100k_base's
        await client.embeddings.create(model=EMBEDDER, input=[[1, 2, 10**7]])
    assert tokens.value.code == "invalid_input" and "input[0]" in tokens.value.message


# -- what a model cannot do, and requests that are wrong ---------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "code", "says"),
    [
        ({"tools": [WEATHER]}, "model_has_no_tools", "cannot call tools"),
        ({"response_format": {"type": "xml"}}, "invalid_response_format", "response_format"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "invalid_response_format",
            "schema",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "invalid_tools",
            "tools[0].function.name",
        ),
        ({"tools": [{"type": "retrieval"}]}, "invalid_tools", "tools[0]"),
        ({"tools": [WEATHER], "tool_choice": "required"}, "invalid_tool_choice", "cannot force"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "invalid_tool_choice",
            "nope",
        ),
        ({"reasoning_effort": "extreme"}, "invalid_reasoning_effort", "reasoning_effort"),
    ],
)
async def test_bad_requests_are_openai_bad_request_errors(signed_up, double, extra, code, says) -> None:
    _, _, client = signed_up

    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model=FREE, messages=[{"role": "user", "content": "Hi"}], **extra)

    assert refused.value.code == code and says in refused.value.message
    assert double.chat_requests == []


async def test_a_tool_message_must_name_its_call(signed_up, double) -> None:
    _, _, client = signed_up
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(
            model=TOOLER,
            messages=[{"role": "user", "content": "Hi"}, {"role": "tool", "content": "sunny"}],
            tools=[WEATHER],
        )
    assert refused.value.code == "invalid_messages" and "messages[1].tool_call_id" in refused.value.message
