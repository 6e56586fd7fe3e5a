"""OpenAI's request shapes turned into Ollama's (completions.py, tools.py, embeddings.py), without a server:
what reaches Ollama, and the 400 naming the field for what cannot."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from functions.chat.completions import CompletionWire, parse_completion
from functions.chat.conversation import parse
from functions.chat.embeddings import embedding_list, parse_embedding
from functions.chat.relay import parse_chunk
from studio.clients.ollama import Embeddings
from studio.runtime.errors import BadRequest, PayloadTooLarge
from studio.runtime.settings import Settings

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode()


def body(*messages: dict, **more) -> dict:
    return {"model": "qwen2.5:0.5b", "messages": list(messages), **more}


def user(*parts) -> dict:
    return {"role": "user", "content": list(parts)}


def picture(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url, "detail": "auto"}}


def test_developer_is_system_and_text_parts_are_joined(settings: Settings) -> None:
    c = parse_completion(
        body(
            {"role": "developer", "content": "Be brief."},
            user({"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}),
        ),
        settings,
    ).conversation
    assert c.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    assert "tools" not in c.ollama_body() and "format" not in c.ollama_body() and "think" not in c.ollama_body()


def test_image_limits_name_the_openai_field(settings: Settings) -> None:
    with pytest.raises(BadRequest) as many:
        parse_completion(body(user(*[picture("data:image/png;base64," + PNG)] * 5)), settings)
    assert many.value.code == "too_many_images" and "messages[0].content" in many.value.message
    small = settings.replace(chat_max_image_bytes=16)
    with pytest.raises(PayloadTooLarge) as large:
        parse_completion(body(user(picture("data:image/png;base64," + PNG))), small)
    assert "messages[0].content[0].image_url.url" in large.value.message
    with pytest.raises(BadRequest) as assistant:
        parse_completion(
            body(user(picture("data:image/png;base64," + PNG)), {"role": "assistant", "content": [picture("x")]}),
            settings,
        )
    assert assistant.value.code == "invalid_images"
    with pytest.raises(BadRequest) as audio:
        parse_completion(body(user({"type": "input_audio", "input_audio": {}})), settings)
    assert "messages[0].content[0]" in audio.value.message


def test_images_are_bounded_per_request_over_every_message(settings: Settings) -> None:
    """Each message within its 4, but a conversation resending its pictures cannot carry more than the
    request's bound (STUDIO_CHAT_MAX_REQUEST_IMAGES) to Ollama."""
    image = picture("data:image/png;base64," + PNG)
    turns = [user(image, image), {"role": "assistant", "content": "Seen."}] * 3
    few = settings.replace(chat_max_request_images=5)
    with pytest.raises(BadRequest) as many:
        parse_completion(body(*turns), few)
    assert many.value.code == "too_many_images"
    assert "6 images" in many.value.message and "at most 5" in many.value.message
    assert len(parse_completion(body(*turns[:4]), few).conversation.messages) == 4
    with pytest.raises(BadRequest) as native:
        parse({"model": "qwen2.5:0.5b", "messages": [{"role": "user", "content": "Hi", "images": [PNG] * 3}] * 2}, few)
    assert native.value.code == "too_many_images"


def test_tool_calls_with_arguments_that_are_not_a_json_object_are_refused(settings: Settings) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}
    with pytest.raises(BadRequest) as refused:
        parse_completion(body({"role": "user", "content": "Hi"}, {"role": "assistant", "tool_calls": [call]}), settings)
    assert "messages[1].tool_calls[0].function.arguments" in refused.value.message
    with pytest.raises(BadRequest) as from_user:
        parse_completion(body({"role": "user", "content": "Hi", "tool_calls": [call]}), settings)
    assert "only an assistant" in from_user.value.message


def test_a_tool_message_answering_an_unknown_call_goes_without_a_name(settings: Settings) -> None:
    c = parse_completion(
        body({"role": "user", "content": "Hi"}, {"role": "tool", "tool_call_id": "call_elsewhere", "content": "42"}),
        settings,
    ).conversation
    assert c.messages[1] == {"role": "tool", "content": "42"}


def test_api_chat_still_takes_only_its_own_roles_and_fields(settings: Settings) -> None:
    with pytest.raises(BadRequest):
        parse(
            {"model": "m", "messages": [{"role": "user", "content": "Hi"}, {"role": "tool", "content": "x"}]}, settings
        )
    with pytest.raises(BadRequest):
        parse({"model": "m", "messages": [{"role": "user", "content": "Hi", "tool_name": "f"}]}, settings)


def test_thinking_switches(settings: Settings) -> None:
    hello = {"role": "user", "content": "Hi"}
    assert parse_completion(body(hello, reasoning_effort="none"), settings).conversation.think is False
    assert parse_completion(body(hello, think=False), settings).conversation.think is False
    assert parse_completion(body(hello, reasoning_effort="high"), settings).conversation.think is None
    with pytest.raises(BadRequest):
        parse_completion(body(hello, think="yes"), settings)


def test_parallel_tool_calls_false_returns_at_most_one_call(settings: Settings) -> None:
    hello = {"role": "user", "content": "Hi"}
    assert parse_completion(body(hello, parallel_tool_calls=True), settings).max_calls is None
    one = parse_completion(body(hello, parallel_tool_calls=False), settings)  # LangChain's structured output
    assert one.max_calls == 1
    with pytest.raises(BadRequest):
        parse_completion(body(hello, parallel_tool_calls="no"), settings)
    calls = [{"function": {"name": "a", "arguments": {}}}, {"function": {"name": "b", "arguments": {}}}]

    streamed = CompletionWire("qwen2.5:0.5b", max_calls=one.max_calls)
    delta = json.loads(streamed.tool_calls(calls)[len(b"data: ") :])["choices"][0]["delta"]
    assert [c["function"]["name"] for c in delta["tool_calls"]] == ["a"]
    assert streamed.tool_calls(calls[1:]) == b""  # a later chunk's call is past the one allowed


def test_streamed_tool_calls_are_indexed_across_chunks_and_finish_as_tool_calls() -> None:
    wire = CompletionWire("qwen2.5:0.5b")
    first = wire.tool_calls([{"function": {"name": "a", "arguments": {"x": 1}}}])
    second = wire.tool_calls([{"id": "call_given", "function": {"name": "b", "arguments": {}}}])
    one, two = (json.loads(chunk[len(b"data: ") :])["choices"][0]["delta"] for chunk in (first, second))
    assert one["role"] == "assistant" and "role" not in two
    assert [
        (c["index"], c["function"]["name"], c["function"]["arguments"]) for c in one["tool_calls"] + two["tool_calls"]
    ] == [
        (0, "a", '{"x": 1}'),
        (1, "b", "{}"),
    ]
    assert one["tool_calls"][0]["id"].startswith("call_") and two["tool_calls"][0]["id"] == "call_given"


@pytest.mark.parametrize(
    ("given", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["ok", 7]}, "input[1]"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x", "dimensions": True}, "dimensions"),
        ({"input": "x", "truncate": True}, "truncate"),
    ],
)
def test_embedding_requests_name_what_is_wrong(settings: Settings, given: dict, param: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_embedding({"model": "nomic-embed-text", **given}, settings)
    assert refused.value.details["param"] == param


def test_base64_embeddings_are_little_endian_float32(settings: Settings) -> None:
    wanted = parse_embedding({"model": "nomic-embed-text", "input": ["a", "b"], "encoding_format": "base64"}, settings)
    assert wanted.model == "nomic-embed-text:latest"
    out = embedding_list(wanted, wanted.model, Embeddings([[0.5, -0.25], [1.0, 0.0]], 6))
    decoded = [list(struct.unpack("<2f", base64.b64decode(d["embedding"]))) for d in out["data"]]
    assert decoded == [[0.5, -0.25], [1.0, 0.0]] and out["usage"] == {"prompt_tokens": 6, "total_tokens": 6}


def test_a_line_may_carry_text_and_tool_calls_together() -> None:
    call = {"function": {"name": "f", "arguments": {}}}
    both = parse_chunk({"message": {"role": "assistant", "content": "Let me look.", "tool_calls": [call]}})
    assert (both.content, both.thinking, both.calls) == ("Let me look.", "", [call])
    assert parse_chunk({"message": {"role": "assistant", "content": "", "tool_calls": []}}).calls is None
