"""POST /v1/responses and /v1/completions through the gateway, embedded and distributed (the gateway's HTTP hop
streams the events as they come): the same usage facts as every answer, and refusals that change nothing."""

from __future__ import annotations

import pytest

from tests.doubles.ollama import DEFAULT_REPLY, tokenize
from tests.functions.chat.conftest import FREE, read_events
from tests.support import eventually

JSON = {"Content-Type": "application/json"}


async def test_a_streamed_response_is_relayed_and_counted_like_any_answer(studio, double) -> None:
    visitor = studio.visitor()

    resp = await studio.client.post(
        "/v1/responses", json={"model": FREE, "input": "Hello", "stream": True}, headers={**visitor.headers, **JSON}
    )
    events = await read_events(resp)

    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    assert [name for name, _ in events][:2] == ["response.created", "response.in_progress"]
    assert all(name == data["type"] for name, data in events)
    text = "".join(data["delta"] for name, data in events if name == "response.output_text.delta")
    assert text == DEFAULT_REPLY and events[-1][0] == "response.completed"
    usage = events[-1][1]["response"]["usage"]
    assert usage["output_tokens"] == len(tokenize(DEFAULT_REPLY))

    facts = await eventually(visitor.events, message="chat.completed")
    assert [e.type for e in facts] == ["chat.completed"]
    assert facts[0].data["completion_tokens"] == usage["output_tokens"]
    assert facts[0].data["prompt_tokens"] == usage["input_tokens"] > 0


async def test_a_whole_text_completion(studio, double) -> None:
    visitor = studio.visitor()

    resp = await studio.client.post(
        "/v1/completions", json={"model": FREE, "prompt": "Once"}, headers={**visitor.headers, **JSON}
    )
    body = await resp.json()

    assert resp.status == 200 and body["object"] == "text_completion", body
    assert body["choices"][0]["text"] == DEFAULT_REPLY
    await eventually(visitor.events, message="chat.completed")


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/v1/responses", b"{", "invalid_json"),
        ("/v1/responses", b"[]", "invalid_json"),
        ("/v1/responses", b'{"input": "Hi"}', "invalid_model"),
        ("/v1/responses", b'{"model": "tinyllama", "input": "Hi", "seed": 1}', "unknown_parameter"),
        ("/v1/responses", b'{"model": "tinyllama", "input": [' + b"[" * 5000 + b"]" * 5000 + b"]}", "invalid_input"),
        (
            "/v1/responses",
            b'{"model": "tinyllama", "input": "Hi", "client_metadata": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
            "invalid_json",  # nested too deep
        ),
        ("/v1/completions", b'{"model": "tinyllama", "prompt": ["a", "b"]}', "invalid_prompt"),
        ("/v1/completions", b'{"model": "tinyllama", "prompt": 7}', "invalid_prompt"),
    ],
)
async def test_malformed_bodies_are_openai_400s_that_change_nothing(studio, double, path, body, code) -> None:
    visitor = studio.visitor()

    resp = await studio.client.post(path, data=body, headers={**visitor.headers, **JSON})
    error = (await resp.json())["error"]

    assert resp.status == 400 and error["code"] == code and error["type"] == "invalid_request_error", error
    assert double.chat_requests == [] and visitor.events() == []
