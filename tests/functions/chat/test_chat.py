"""POST /api/chat through the gateway, against the Ollama stand-in speaking the real /api/chat stream."""

from __future__ import annotations

import asyncio

import pytest

from tests.doubles.ollama import DEFAULT_CHAT_ERROR, DEFAULT_REPLY, tokenize
from tests.functions.chat.conftest import FREE, MODES, read_events
from tests.support import eventually

REPLY_TOKENS = tokenize(DEFAULT_REPLY)


async def error_of(resp) -> dict:
    return (await resp.json())["error"]


# -- the answer -------------------------------------------------------------------------------------


async def test_seed_contract_message_and_model_get_the_whole_answer(studio, double) -> None:
    visitor = studio.visitor()

    resp = await visitor.chat(message="Hello", model=FREE)
    body = await resp.json()

    assert resp.status == 200, body
    assert body["response"] == DEFAULT_REPLY and body["model"] == FREE
    assert body["done_reason"] == "stop" and body["completion_tokens"] == len(REPLY_TOKENS)
    assert body["prompt_tokens"] > 0 and body["tokens_per_s"] > 0 and body["time_to_first_token_ms"] > 0
    assert double.chat_requests[-1]["messages"] == [{"role": "user", "content": "Hello"}]

    events = await eventually(visitor.events, message="chat.completed")
    assert [e.type for e in events] == ["chat.completed"]
    data = events[0].data
    assert data["model"] == FREE and data["completion_tokens"] == len(REPLY_TOKENS) and data["prompt_tokens"] > 0
    raw = events[0].to_json().decode()
    assert "Hello" not in raw and DEFAULT_REPLY not in raw, "never the conversation in events"


async def test_multi_turn_conversation_and_options_reach_ollama(embedded, double) -> None:
    double.reply = lambda body: f"You said {body['messages'][-1]['content']!r} after {len(body['messages'])} messages."
    conversation = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3+3?"},
    ]
    options = {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "seed": 7, "max_tokens": 100_000, "stop": ["\n\n"]}

    resp = await embedded.visitor().chat(model=FREE, messages=conversation, options=options)

    assert resp.status == 200
    assert (await resp.json())["response"] == "You said 'And 3+3?' after 4 messages."
    sent = double.chat_requests[-1]
    assert sent["model"] == FREE and sent["messages"] == conversation and sent["stream"] is True
    assert sent["options"] == {
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "seed": 7,
        "num_predict": embedded.settings.chat_max_tokens,
        "stop": ["\n\n"],
    }


async def test_max_tokens_becomes_num_predict_and_the_operator_cap_applies_anyway(embedded, double) -> None:
    visitor = embedded.visitor()

    short = await (await visitor.chat(model=FREE, message="Hi", options={"max_tokens": 3})).json()
    await visitor.chat(model=FREE, message="Hi")

    assert short["completion_tokens"] == 3 and short["done_reason"] == "length"
    assert short["response"] == "".join(REPLY_TOKENS[:3])
    assert [r["options"]["num_predict"] for r in double.chat_requests] == [3, embedded.settings.chat_max_tokens]


async def test_streamed_answer_arrives_token_by_token_then_the_totals(studio, double) -> None:
    double.tokens_per_s = 200
    visitor = studio.visitor()

    resp = await visitor.chat(model=FREE, messages=[{"role": "user", "content": "Hello"}], stream=True)
    events = await read_events(resp)

    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache" and resp.headers["X-Accel-Buffering"] == "no"
    names = [name for name, _ in events]
    assert names == ["token"] * len(REPLY_TOKENS) + ["done"]
    assert [data["content"] for _, data in events[:-1]] == REPLY_TOKENS
    done = events[-1][1]
    assert set(done) == {
        "model",
        "done_reason",
        "prompt_tokens",
        "completion_tokens",
        "total_duration_ms",
        "load_duration_ms",
        "prompt_eval_duration_ms",
        "eval_duration_ms",
        "tokens_per_s",
        "time_to_first_token_ms",
        "thinking_tokens",
    }
    assert done["model"] == FREE and done["done_reason"] == "stop"
    assert done["completion_tokens"] == len(REPLY_TOKENS) and done["prompt_tokens"] > 0
    assert 0 < done["tokens_per_s"] <= 400 and done["eval_duration_ms"] > 0
    assert 0 < done["time_to_first_token_ms"] < done["total_duration_ms"] + 1000
    events = await eventually(visitor.events, message="chat.completed")
    assert events[0].type == "chat.completed" and events[0].data["completion_tokens"] == len(REPLY_TOKENS)


async def test_stream_tokens_are_not_buffered_on_the_way(studio, double) -> None:
    double.tokens_per_s = 2  # one token every 500 ms: the whole answer takes seconds
    visitor = studio.visitor()

    resp = await visitor.chat(model=FREE, message="Hello", stream=True)
    first = await read_events(resp, limit=1)
    (generating,) = double.active_streams(kind="chat")  # where the model is when the visitor has the first token
    sent = generating.tokens_sent
    double.tokens_per_s = 0  # seen: the rest at once
    rest = await read_events(resp)

    assert first[0] == ("token", {"content": REPLY_TOKENS[0]})
    assert rest[-1][0] == "done"
    assert sent < len(REPLY_TOKENS), f"the first token arrived after {sent} of {len(REPLY_TOKENS)} were generated"


# -- stopping --------------------------------------------------------------------------------------


async def test_stopping_mid_stream_closes_the_ollama_request(studio, double) -> None:
    double.tokens_per_s = 20
    double.reply = "word " * 400  # 20 s of answer unless stopped
    visitor = studio.visitor()

    resp = await visitor.chat(model=FREE, message="Tell me a long story", stream=True)
    assert [name for name, _ in await read_events(resp, limit=3)] == ["token"] * 3
    resp.close()

    record = await double.wait_for_disconnect(kind="chat")
    assert record.tokens_sent < 100, "generation stopped soon after the visitor left"
    events = await eventually(visitor.events, message="chat.cancelled")
    assert events[0].type == "chat.cancelled"
    assert events[0].data["completion_tokens"] >= 3 and events[0].data["time_to_first_token_ms"] > 0


async def test_leaving_before_the_first_token_closes_the_ollama_request(embedded, double) -> None:
    double.load_delay = 30  # the model is "loading"
    visitor = embedded.visitor()

    request = asyncio.create_task(visitor.chat(model=FREE, message="Hello", stream=True))
    await double.wait_for_stream(kind="chat")
    request.cancel()  # the browser tab is closed

    await double.wait_for_disconnect(kind="chat")
    events = await eventually(visitor.events, message="chat.cancelled")
    assert events[0].type == "chat.cancelled" and events[0].data["time_to_first_token_ms"] is None


async def test_leaving_while_a_non_streamed_answer_is_collected_stops_it(embedded, double) -> None:
    double.tokens_per_s = 20
    double.reply = "word " * 400
    visitor = embedded.visitor()

    request = asyncio.create_task(visitor.chat(model=FREE, message="Hello"))
    await double.wait_for_stream(kind="chat", tokens=3)
    request.cancel()

    record = await double.wait_for_disconnect(kind="chat")
    assert record.tokens_sent < 100
    await eventually(lambda: [e for e in visitor.events() if e.type == "chat.cancelled"], message="chat.cancelled")


@pytest.mark.parametrize("mode", MODES)
async def test_first_token_timeout_is_a_504_and_closes_the_ollama_request(mode, make_studio, double) -> None:
    double.load_delay = 30
    studio = await make_studio(mode, chat_first_token_timeout_s=0.3)
    visitor = studio.visitor()

    resp = await visitor.chat(model=FREE, message="Hello", stream=True)

    assert resp.status == 504
    error = await error_of(resp)
    assert error["code"] == "ollama_timeout" and "0.3 s" in error["message"]
    await double.wait_for_disconnect(kind="chat")
    events = await eventually(visitor.events, message="chat.failed")
    assert events[0].type == "chat.failed" and events[0].data["reason"] == "ollama_timeout"


# -- Ollama failing ----------------------------------------------------------------------------------


async def test_an_error_line_mid_stream_ends_the_stream_with_an_error_event(studio, double) -> None:
    double.fail_next_chats(after_tokens=3)
    visitor = studio.visitor()

    resp = await visitor.chat(model=FREE, message="Hello", stream=True)
    events = await read_events(resp)

    assert resp.status == 200
    assert [name for name, _ in events] == ["token", "token", "token", "error"]
    error = events[-1][1]["error"]
    assert error["code"] == "ollama_error" and DEFAULT_CHAT_ERROR in error["message"]
    failed = await eventually(visitor.events, message="chat.failed")
    assert failed[0].type == "chat.failed" and failed[0].data["reason"] == "ollama_error"
    assert failed[0].data["completion_tokens"] == 3


async def test_an_error_before_any_token_or_while_collecting_is_a_json_error(embedded, double) -> None:
    visitor = embedded.visitor()
    double.fail_next_chats(after_tokens=0)  # a 500 before the first byte
    early = await visitor.chat(model=FREE, message="Hello", stream=True)
    double.fail_next_chats(after_tokens=3)  # mid-stream, but the visitor asked for one JSON answer
    late = await visitor.chat(model=FREE, message="Hello")

    for resp in (early, late):
        assert resp.status == 502 and resp.headers["Content-Type"].startswith("application/json")
        error = await error_of(resp)
        assert error["code"] == "ollama_error" and DEFAULT_CHAT_ERROR in error["message"]


async def test_ollama_down_is_a_503_that_says_so(studio, double) -> None:
    visitor = studio.visitor()

    async with double.down():
        resp = await visitor.chat(model=FREE, message="Hello", stream=True)

    assert resp.status == 503
    error = await error_of(resp)
    assert error["code"] == "ollama_unavailable" and "Ollama" in error["message"]
    failed = await eventually(visitor.events, message="chat.failed")
    assert failed[0].data["reason"] == "ollama_unavailable"


async def test_ollama_queue_full_is_a_503_with_retry_after(embedded, double) -> None:
    double.busy_next_chats()

    resp = await embedded.visitor().chat(model=FREE, message="Hello")

    assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    assert (await error_of(resp))["code"] == "ollama_busy"


async def test_ollama_dying_mid_stream_ends_the_stream_with_an_error_event(embedded, double) -> None:
    double.tokens_per_s = 20
    double.reply = "word " * 400
    resp = await embedded.visitor().chat(model=FREE, message="Hello", stream=True)
    await read_events(resp, limit=2)

    await double.go_down()
    events = await read_events(resp)

    assert events[-1][0] == "error" and events[-1][1]["error"]["code"] == "ollama_unavailable"
