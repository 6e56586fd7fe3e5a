"""Anthropic's Messages API (/v1/messages) with the official `anthropic` Python client and a personal API key:
whole and streamed answers, count_tokens, a tools round trip with thinking, images, and errors as the
client's own exception classes; malformed requests get Anthropic's 4xx shape and change nothing."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from studio.catalog import DEFAULT_PATH
from tests.doubles.ollama import DEFAULT_REPLY, DEFAULT_THINKING, OllamaDouble
from tests.functions.accounts.conftest import FREE, OTHER_PAID, PAID
from tests.functions.accounts.test_openai_client import signed_up_with_key
from tests.support import eventually, imported_when_used, sdk_http

if TYPE_CHECKING:
    import anthropic
else:  # imported by the first test that uses it (tests/support.py)
    anthropic = imported_when_used("anthropic")


AGENT = "qwen3:8b"  # thinks and calls tools in one answer (what Claude Code asks of a model)
VISION, THINKER = "llava:7b", "deepseek-r1:7b"
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city now",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
AGENT_ENTRY = {
    "id": AGENT,
    "name": "Qwen3 8B",
    "family": "qwen3",
    "parameter_size": "8.2B",
    "description": "Thinks, then answers or calls tools: a model for coding agents.",
    "download_bytes": 5225374080,
    "ram_bytes": 8589934592,
    "license": "Apache 2.0",
    "price_cents": 899,
    "currency": "usd",
    "capabilities": ["completion", "tools", "thinking"],
    "context_length": 40960,
    "quantization": "Q4_K_M",
}


def catalog_with_agent(folder) -> Any:
    """The studio's catalog and a model that thinks and calls tools (the stand-in serves one)."""
    models = json.loads(DEFAULT_PATH.read_text())["models"] + [AGENT_ENTRY]
    path = folder / "catalog.json"
    path.write_text(json.dumps({"models": models}))
    return path


@pytest.fixture
async def double():
    async with OllamaDouble(installed=[FREE, PAID, OTHER_PAID, VISION, THINKER, AGENT]) as d:
        yield d


async def bought(studio, *models: str):
    browser, created, _ = await signed_up_with_key(studio)
    for model in models:  # test-mode payments: bought at once
        status, _, _ = await browser.request("POST", f"/api/models/purchase/{model}")
        assert status == 200
    return browser, created["key"]


@pytest.fixture
async def signed_up(make_studio, tmp_path):
    studio = await make_studio(first_user_is_operator=False, catalog_path=catalog_with_agent(tmp_path))
    browser, key = await bought(studio, AGENT, VISION, THINKER)
    client = anthropic.AsyncAnthropic(
        api_key=key, base_url=studio.url(""), max_retries=0, http_client=sdk_http(anthropic)
    )
    yield studio, browser, key, client
    await client.close()


async def post(studio, path: str, body: Any, key: str | None, **headers: str) -> tuple[int, Any, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", "anthropic-version": "2023-06-01", **headers}
    if key:
        sent["x-api-key"] = key
    async with aiohttp.ClientSession() as session, session.post(studio.url(path), data=raw, headers=sent) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if resp.content_type == "application/json" else text), resp.headers


def text_of(message: anthropic.types.Message) -> str:
    return "".join(b.text for b in message.content if isinstance(b, anthropic.types.TextBlock))


def events(stream: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for chunk in stream.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


# -- whole and streamed -------------------------------------------------------------------------------------------


async def test_a_whole_message(signed_up, double) -> None:
    _, _, _, client = signed_up

    reply = await client.messages.create(
        model=FREE,
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello"}],
        stop_sequences=["\n\n"],
        metadata={"user_id": "someone"},
        extra_body={"temperature": 0.2, "top_p": 0.9, "top_k": 40},  # no longer parameters of this client
    )

    assert reply.type == "message" and reply.role == "assistant" and reply.model == FREE
    assert [b.type for b in reply.content] == ["text"] and text_of(reply) == DEFAULT_REPLY
    assert reply.stop_reason == "end_turn" and reply.usage.output_tokens > 0 and reply.usage.input_tokens > 0
    sent = double.chat_requests[-1]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    assert sent["options"] == {"num_predict": 100, "temperature": 0.2, "top_p": 0.9, "top_k": 40, "stop": ["\n\n"]}
    assert "think" not in sent and "tools" not in sent


async def test_an_answer_cut_at_max_tokens_says_so(signed_up) -> None:
    _, _, _, client = signed_up
    hello: Any = [{"role": "user", "content": "Hello"}]

    whole = await client.messages.create(model=FREE, max_tokens=3, messages=hello)
    async with client.messages.stream(model=FREE, max_tokens=3, messages=hello) as stream:
        streamed = await stream.get_final_message()

    assert whole.stop_reason == streamed.stop_reason == "max_tokens"
    assert whole.usage.output_tokens == streamed.usage.output_tokens == 3
    assert text_of(whole) == text_of(streamed) and DEFAULT_REPLY.startswith(text_of(whole))


async def test_a_streamed_message_with_the_sdk(signed_up) -> None:
    _, _, _, client = signed_up

    async with client.messages.stream(
        model=FREE, max_tokens=50, messages=[{"role": "user", "content": "Hello"}]
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()

    assert text == DEFAULT_REPLY and text_of(final) == DEFAULT_REPLY
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0 and final.usage.input_tokens > 0


async def test_the_stream_names_each_event_as_its_data_and_keeps_anthropics_order(signed_up) -> None:
    """What Claude Code reads: `event:` lines matching `data.type`, thinking then text blocks, then the end."""
    studio, _, key, _ = signed_up
    body = {
        "model": AGENT,
        "max_tokens": 200,
        "stream": True,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "Hello"}],
    }

    status, raw, headers = await post(studio, "/v1/messages?beta=true", body, key)

    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    seen = events(raw)
    assert all(name == data["type"] for name, data in seen)
    names = [name for name, _ in seen]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-2:] == ["message_delta", "message_stop"]
    blocks = [d["content_block"]["type"] for n, d in seen if n == "content_block_start"]
    assert blocks == ["thinking", "text"]
    deltas = [d["delta"]["type"] for n, d in seen if n == "content_block_delta"]
    assert set(deltas) == {"thinking_delta", "signature_delta", "text_delta"}
    assert deltas.index("signature_delta") < deltas.index("text_delta")  # the thinking block ends signed
    thought = "".join(d["delta"].get("thinking", "") for n, d in seen if n == "content_block_delta" and d["index"] == 0)
    assert thought == DEFAULT_THINKING
    said = "".join(d["delta"]["text"] for n, d in seen if n == "content_block_delta" and d["index"] == 1)
    assert said == DEFAULT_REPLY
    assert [d["index"] for n, d in seen if n == "content_block_stop"] == [0, 1]
    end = next(d for n, d in seen if n == "message_delta")
    assert end["delta"]["stop_reason"] == "end_turn" and end["usage"]["output_tokens"] > 0


async def test_the_key_works_as_a_bearer_token_too(signed_up) -> None:
    studio, _, key, _ = signed_up
    async with anthropic.AsyncAnthropic(
        auth_token=key, base_url=studio.url(""), max_retries=0, http_client=sdk_http(anthropic)
    ) as client:
        reply = await client.messages.create(model=FREE, max_tokens=20, messages=[{"role": "user", "content": "Hello"}])
    assert text_of(reply) == DEFAULT_REPLY


async def test_count_tokens_estimates_the_input(signed_up, double) -> None:
    _, _, _, client = signed_up
    asked = len(double.chat_requests)

    short = await client.messages.count_tokens(model=FREE, messages=[{"role": "user", "content": "Hello"}])
    long = await client.messages.count_tokens(
        model=AGENT, system="Be brief. " * 100, messages=[{"role": "user", "content": "Hello"}], tools=[WEATHER]
    )

    assert 0 < short.input_tokens < long.input_tokens
    assert len(double.chat_requests) == asked  # no model was run to count


# -- tools, thinking and images -----------------------------------------------------------------------------------


async def test_a_tools_round_trip_while_thinking(signed_up, double) -> None:
    _, _, _, client = signed_up
    asked: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]

    first = await client.messages.create(
        model=AGENT, max_tokens=500, tools=[WEATHER], thinking={"type": "adaptive"}, messages=asked
    )

    assert first.stop_reason == "tool_use"
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    thinking, call = first.content
    assert isinstance(thinking, anthropic.types.ThinkingBlock) and isinstance(call, anthropic.types.ToolUseBlock)
    assert thinking.thinking == DEFAULT_THINKING and thinking.signature
    assert call.name == "get_weather" and call.input == {"city": "Weather in Paris?"}
    sent = double.chat_requests[-1]
    assert sent["think"] is True
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city now",
                "parameters": WEATHER["input_schema"],
            },
        }
    ]

    answered = [
        *asked,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 C, sunny"}]},
    ]
    second = await client.messages.create(
        model=AGENT, max_tokens=500, tools=[WEATHER], thinking={"type": "adaptive"}, messages=answered
    )

    assert second.stop_reason == "end_turn" and second.content[-1].type == "text"
    assert text_of(second) == DEFAULT_REPLY
    assert double.chat_requests[-1]["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Weather in Paris?"}}}],
            "thinking": DEFAULT_THINKING,  # given back: a model's template keeps it before its tool calls
        },
        {"role": "tool", "content": "18 C, sunny", "tool_name": "get_weather"},
    ]


async def test_a_streamed_tool_call_comes_whole_as_input_json(signed_up) -> None:
    _, _, _, client = signed_up

    async with client.messages.stream(
        model=AGENT,
        max_tokens=500,
        tools=[WEATHER, {**WEATHER, "name": "get_time"}],
        tool_choice={"type": "tool", "name": "get_time", "disable_parallel_tool_use": True},
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[{"role": "user", "content": "Time in Paris?"}],
    ) as stream:
        final = await stream.get_final_message()

    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["thinking", "tool_use"]
    call = final.content[1]
    assert isinstance(call, anthropic.types.ToolUseBlock)
    assert call.name == "get_time" and call.input == {"city": "Time in Paris?"}


async def test_a_tool_result_of_errors_images_and_tool_references_reaches_the_model(signed_up, double) -> None:
    """Claude Code's tool search answers with `tool_reference` blocks; a failed tool with `is_error`."""
    _, _, _, client = signed_up
    called: Any = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
    searched: Any = {"type": "tool_use", "id": "toolu_2", "name": "ToolSearch", "input": {"query": "weather"}}
    results: Any = [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "no network", "is_error": True},
        {
            "type": "tool_result",
            "tool_use_id": "toolu_2",
            "content": [{"type": "text", "text": "Found:"}, {"type": "tool_reference", "tool_name": "get_weather"}],
        },
        {"type": "text", "text": "Go on."},
    ]

    await client.messages.create(
        model=AGENT,
        max_tokens=50,
        tools=[WEATHER, {**WEATHER, "name": "ToolSearch"}],
        messages=[
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [called, searched]},
            {"role": "user", "content": results},
        ],
    )

    assert double.chat_requests[-1]["messages"][2:] == [
        {"role": "tool", "content": "Error: no network", "tool_name": "get_weather"},
        {"role": "tool", "content": "Found:\n\nThe tool get_weather is available.", "tool_name": "ToolSearch"},
        {"role": "user", "content": "Go on."},
    ]


async def test_thinking_is_ignored_for_a_model_that_cannot_think(signed_up, double) -> None:
    _, _, _, client = signed_up

    reply = await client.messages.create(
        model=FREE, max_tokens=50, thinking={"type": "adaptive"}, messages=[{"role": "user", "content": "Hi"}]
    )

    assert text_of(reply) == DEFAULT_REPLY
    assert "think" not in double.chat_requests[-1]


async def test_thinking_disabled_turns_a_thinking_model_off(signed_up, double) -> None:
    _, _, _, client = signed_up

    reply = await client.messages.create(
        model=THINKER, max_tokens=50, thinking={"type": "disabled"}, messages=[{"role": "user", "content": "Hi"}]
    )

    assert [b.type for b in reply.content] == ["text"]
    assert double.chat_requests[-1]["think"] is False


async def test_an_image_block_reaches_a_vision_model(signed_up, double) -> None:
    _, _, _, client = signed_up
    data = base64.b64encode(PNG).decode()

    reply = await client.messages.create(
        model=VISION,
        max_tokens=50,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
                    {"type": "text", "text": "What is this?", "cache_control": {"type": "ephemeral"}},
                ],
            }
        ],
    )

    assert text_of(reply) == DEFAULT_REPLY
    assert double.chat_requests[-1]["messages"] == [{"role": "user", "content": "What is this?", "images": [data]}]


async def test_a_plain_text_document_is_read_as_words(signed_up, double) -> None:
    _, _, _, client = signed_up
    document: Any = {"type": "document", "title": "notes.txt", "source": {"type": "text", "data": "Buy milk."}}

    await client.messages.create(
        model=FREE,
        max_tokens=20,
        messages=[{"role": "user", "content": [document, {"type": "text", "text": "Summarise."}]}],
    )

    assert double.chat_requests[-1]["messages"] == [{"role": "user", "content": "notes.txt\n\nBuy milk.\n\nSummarise."}]


# -- errors, as the client's exception classes ----------------------------------------------------------------------


async def test_errors_are_the_clients_exception_classes(signed_up) -> None:
    studio, _, _, client = signed_up
    hello: Any = [{"role": "user", "content": "Hello"}]

    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        await client.messages.create(model=OTHER_PAID, max_tokens=10, messages=hello)
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.create(model="nope:1b", max_tokens=10, messages=hello)
    with pytest.raises(anthropic.BadRequestError) as bad:
        await client.messages.create(model=FREE, max_tokens=10, messages=[{"role": "user", "content": 5}])
    async with anthropic.AsyncAnthropic(
        api_key="sk-studio-nope", base_url=studio.url(""), max_retries=0, http_client=sdk_http(anthropic)
    ) as stranger:
        with pytest.raises(anthropic.AuthenticationError) as unknown:
            await stranger.messages.create(model=FREE, max_tokens=10, messages=hello)

    assert denied.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
    assert bad.value.body["type"] == "error" and bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    said = bad.value.body["error"]  # type: ignore[index]
    assert said["code"] == "invalid_messages" and said["message"].startswith("messages[0].content must be a string")
    assert unknown.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


async def test_a_busy_ollama_is_anthropics_overloaded_error(signed_up, double) -> None:
    _, _, _, client = signed_up
    double.busy_next_chats(1)

    with pytest.raises(anthropic.OverloadedError) as busy:
        await client.messages.create(model=FREE, max_tokens=10, messages=[{"role": "user", "content": "Hello"}])

    assert busy.value.status_code == 529 and busy.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


async def test_the_rate_limit_is_anthropics_rate_limit_error(make_studio) -> None:
    studio = await make_studio(first_user_is_operator=False, chat_requests_per_minute=1)
    _, key = await bought(studio)
    hello: Any = [{"role": "user", "content": "Hello"}]
    async with anthropic.AsyncAnthropic(
        api_key=key, base_url=studio.url(""), max_retries=0, http_client=sdk_http(anthropic)
    ) as client:
        await client.messages.create(model=FREE, max_tokens=10, messages=hello)
        with pytest.raises(anthropic.RateLimitError) as limited:
            await client.messages.create(model=FREE, max_tokens=10, messages=hello)

    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert limited.value.response.headers.get("Retry-After")


async def test_ollama_failing_mid_stream_is_an_error_event(signed_up, double) -> None:
    studio, _, key, _ = signed_up
    double.fail_next_chats(1, after_tokens=2)
    body = {"model": FREE, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "Hello"}]}

    status, raw, _ = await post(studio, "/v1/messages", body, key)

    assert status == 200
    name, data = events(raw)[-1]
    assert name == "error" and data["type"] == "error" and data["error"]["type"] == "api_error"


# -- malformed requests: Anthropic's 4xx shape, nothing changes ------------------------------------------------------

HELLO = [{"role": "user", "content": "Hello"}]
DEEP: dict[str, Any] = {"type": "object"}
for _ in range(40):
    DEEP = {"type": "object", "properties": {"x": DEEP}}
BIG = {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 100} for i in range(1000)}}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"model": FREE, "messages": HELLO}, "max_tokens"),
        ({"model": FREE, "max_tokens": "ten", "messages": HELLO}, "max_tokens"),
        ({"model": FREE, "max_tokens": 0, "messages": HELLO}, "max_tokens"),
        ({"model": FREE, "max_tokens": 10, "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": FREE, "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]}, "no user message"),
        (
            {"model": FREE, "max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "messages[0].content[0]",
        ),
        ({"model": FREE, "max_tokens": 10, "messages": HELLO, "temperature": 3}, "temperature"),
        ({"model": FREE, "max_tokens": 10, "messages": HELLO, "tool_choice": {"type": "maybe"}}, "tool_choice"),
        ({"model": FREE, "max_tokens": 10, "messages": HELLO, "thinking": {"type": "sometimes"}}, "thinking"),
        (
            {"model": AGENT, "max_tokens": 10, "messages": HELLO, "tools": [{"name": "t", "input_schema": DEEP}]},
            "nested deeper",
        ),
        (
            {"model": AGENT, "max_tokens": 10, "messages": HELLO, "tools": [{"name": "t", "input_schema": BIG}]},
            "bytes as JSON",
        ),
        (
            {"model": AGENT, "max_tokens": 10, "messages": HELLO, "tools": [{"name": "bad name!", "input_schema": {}}]},
            "tools[0].name",
        ),
        (
            {"model": AGENT, "max_tokens": 10, "messages": HELLO, "tool_choice": {"type": "tool", "name": "x"}},
            "no tools",
        ),
        (
            {
                "model": VISION,
                "max_tokens": 10,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}],
                    }
                ],
            },
            "fetches nothing",
        ),
        (
            {
                "model": VISION,
                "max_tokens": 10,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": base64.b64encode(PNG).decode(),
                                },
                            }
                        ]
                        * 5,
                    }
                ],
            },
            "at most 4",
        ),
        ({"model": FREE, "max_tokens": 10, "messages": []}, "messages"),
        (
            {
                "model": FREE,
                "max_tokens": 10,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "document",
                                "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
                            }
                        ],
                    }
                ],
            },
            "plain-text documents",
        ),
        (b'{"model": ', "not valid JSON"),
        (b'{"model": "tinyllama", "metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deep"),
    ],
)
async def test_a_malformed_request_is_anthropics_400_and_changes_nothing(signed_up, double, body, says) -> None:
    studio, browser, key, _ = signed_up
    asked = len(double.chat_requests)
    _, before, _ = await browser.request("GET", "/api/account/usage")

    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        if path.endswith("count_tokens") and says in ("max_tokens", "temperature"):
            continue  # count_tokens takes neither
        status, error, _ = await post(studio, path, body, key)
        assert status == 400, (path, error)
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        assert says in error["error"]["message"], error

    assert len(double.chat_requests) == asked
    _, after, _ = await browser.request("GET", "/api/account/usage")
    assert after == before


async def test_head_of_the_root_answers_with_or_without_a_key(signed_up) -> None:
    """Claude Code probes `HEAD /` before anything else."""
    studio, _, key, _ = signed_up
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"x-api-key": key}, {"Authorization": f"Bearer {key}"}):
            async with session.head(studio.url("/"), headers=headers) as resp:
                assert 200 <= resp.status < 300, headers


async def test_without_credentials_or_on_a_path_that_does_not_exist_the_errors_are_anthropics(signed_up) -> None:
    studio, _, key, _ = signed_up
    body = {"model": FREE, "max_tokens": 10, "messages": HELLO}

    status, nobody, _ = await post(studio, "/v1/messages", body, None)
    missing_status, missing, _ = await post(studio, "/v1/messages/batches", body, key)

    assert status == 401 and nobody["type"] == "error" and nobody["error"]["type"] == "authentication_error"
    assert missing_status == 404 and missing["error"]["type"] == "not_found_error"


async def test_count_tokens_checks_the_model_like_an_answer(signed_up) -> None:
    _, _, _, client = signed_up

    with pytest.raises(anthropic.PermissionDeniedError):
        await client.messages.count_tokens(model=OTHER_PAID, messages=[{"role": "user", "content": "Hello"}])
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.count_tokens(model="nope:1b", messages=[{"role": "user", "content": "Hello"}])


async def test_an_answer_counts_in_the_accounts_usage_like_any_other(signed_up) -> None:
    _, browser, _, client = signed_up

    reply = await client.messages.create(model=FREE, max_tokens=50, messages=[{"role": "user", "content": "Hi"}])

    async def counted():
        _, usage, _ = await browser.request("GET", "/api/account/usage")
        rows = [r for r in usage["usage"] if r["model"] == FREE]
        return rows or None

    (row,) = await eventually(counted, message="the usage of the answer to be recorded")
    assert row["prompt_tokens"] == reply.usage.input_tokens
    assert row["completion_tokens"] == reply.usage.output_tokens


async def test_a_key_refused_outside_the_api_is_still_refused(signed_up) -> None:
    studio, _, key, _ = signed_up
    async with (
        aiohttp.ClientSession() as session,
        session.get(studio.url("/api/account"), headers={"x-api-key": key}) as resp,
    ):
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "key_not_allowed"
