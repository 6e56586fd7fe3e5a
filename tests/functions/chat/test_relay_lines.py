"""The relay's hot path (studio/clients/ollama.py `Lines`, functions/chat/relay.py `_events`): plain token
lines are written on as Ollama escaped them, never decoded. Every dialect's stream must be the same answer
whichever path a batch takes: the events decoded from both are compared, for texts that need escaping."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from functions.chat.answer import Answer
from functions.chat.completions import CompletionWire, TextCompletionWire
from functions.chat.messages import MessagesWire
from functions.chat.relay import STUDIO_WIRE, Wire, _events, collect, unescape
from functions.chat.responses import ResponsesWire
from studio.clients.ollama import Lines
from tests.doubles.ollama import go_json

# Texts a model writes that JSON escapes (Go's way: `<>&` and U+2028 as \u escapes), non-ASCII kept as
# UTF-8, and a lone surrogate (which orjson refuses).
TEXTS = ["Hello", ' "quoted"', " back\\slash", "\nnew line\t", " <b>&</b>", " né 日本 🦊", "\u2028", "\x01", "end."]


def line(text: str, **message: Any) -> bytes:
    out = {"model": "llama3.2:1b", "created_at": "2026-12-06T21:00:00.123456789Z"}
    return go_json({**out, "message": {"role": "assistant", "content": text, **message}, "done": False}) + b"\n"


LAST = (
    go_json(
        {
            "model": "llama3.2:1b",
            "created_at": "2026-12-06T21:00:01Z",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "eval_count": len(TEXTS),
        }
    )
    + b"\n"
)


def test_plain_token_lines_give_their_texts_as_ollama_escaped_them() -> None:
    raw = b"".join(line(t) for t in TEXTS)
    batch = Lines(raw)
    assert [unescape(t) for t in batch.texts] == TEXTS and batch.rest == []
    assert batch.texts[4] == rb" \u003cb\u003e\u0026\u003c/b\u003e"  # written on as they came
    assert batch.decoded == [json.loads(x) for x in raw.splitlines()]


ERROR = b'{"error":"out of memory"}\n'


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        (line("Hi") + line("there") + LAST, 2),  # the end, after the last tokens
        (line("Hi") + ERROR, 1),
        (line("Hi") + b"\n", 1),  # a blank line
        (LAST, 0),
        (line("") + line("Hi"), 0),  # an empty line of text
        (line("", thinking="hmm") + line("Hi"), 0),  # a thinking model
        (line("Hi", thinking="hmm"), 0),
        (line("Hi") + line("", tool_calls=[{"function": {"name": "f", "arguments": {"content": "x"}}}]) + LAST, 0),
        (line("Hi").replace(b'"done":false', b'"done":false,"logprobs":[]'), 0),  # a field we do not know
        (b'{"created_at":"x","model":"m","message":{"role":"assistant","content":"Hi"},"done":false}\n', 0),
        (b'junk{"model":"m","created_at":"x","message":{"role":"assistant","content":"Hi"},"done":false}\n', 0),
        (line("Hi").replace(b"Hi", b"H\\qi"), 0),  # not a JSON escape
        (line("Hi").replace(b"Hi", b"H\\u12i"), 0),
        (line("Hi").replace(b"Hi", b"H\ti"), 0),  # a raw control character
        (line("Hi").replace(b"Hi", b"H\xffi"), 0),  # not UTF-8
        (line("Hi").replace(b'"assistant"', b'"tool"'), 0),
    ],
)
def test_the_lines_after_the_plain_ones_are_decoded(raw: bytes, plain: int) -> None:
    assert len(Lines(raw).texts) == plain


def test_the_lines_before_an_error_are_the_answers() -> None:
    batch = Lines(line("Hi") + line("there") + ERROR)
    assert [unescape(t) for t in batch.texts] == ["Hi", "there"] and batch.rest == [{"error": "out of memory"}]
    before = batch.cut(0)
    assert [unescape(t) for t in before.texts] == ["Hi", "there"] and before.rest == []
    assert [x["message"]["content"] for x in before.decoded] == ["Hi", "there"]
    thinking = Lines(line("", thinking="hmm") + ERROR)
    assert thinking.cut(1).decoded == thinking.rest[:1] == [json.loads(line("", thinking="hmm"))]
    assert Lines(decoded=[{"done": False}, {"error": "x"}]).cut(1).decoded == [{"done": False}]


def test_the_end_after_plain_lines_is_the_one_line_decoded() -> None:
    batch = Lines(line("Hi") + line("there") + LAST)
    assert [unescape(t) for t in batch.texts] == ["Hi", "there"]
    assert batch.rest == [json.loads(LAST)]


WIRES: dict[str, Callable[[], Wire]] = {
    "/api/chat": lambda: STUDIO_WIRE,
    "/v1/chat/completions": lambda: CompletionWire("llama3.2:1b", include_usage=True),
    "/v1/completions": lambda: TextCompletionWire("llama3.2:1b", include_usage=True),
    "/v1/messages": lambda: MessagesWire("llama3.2:1b"),
    "/v1/responses": lambda: ResponsesWire("llama3.2:1b"),
}


def relayed(wire: Wire, batches: list[Lines]) -> tuple[list[Any], Answer]:
    """The events the relay writes for these batches, each decoded, ids and times left out."""
    answer, out = Answer("llama3.2:1b", "usr_1", started=0.0), list[bytes]()
    for batch in batches:
        final = _events(batch, answer, wire, out)
    assert final is not None
    answer.complete(final)
    out.append(wire.done(answer))
    events = []
    for event in b"".join(out).decode().split("\n\n"):
        for field in event.split("\n"):
            if field.startswith("data: ") and field != "data: [DONE]":
                events.append(without_ids(json.loads(field[6:])))
    return events, answer


VARYING = ("id", "item_id", "created", "created_at", "time_to_first_token_ms")  # per answer, or a time


def without_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_ids(v) for k, v in value.items() if k not in VARYING}
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    return value


@pytest.mark.parametrize("dialect", list(WIRES))
def test_every_dialect_writes_the_same_answer_from_undecoded_lines(dialect: str) -> None:
    lines = [line(t) for t in TEXTS]
    fast = [Lines(b"".join(lines[:1])), Lines(b"".join(lines[1:5])), Lines(b"".join(lines[5:]) + LAST)]
    assert [len(batch.texts) for batch in fast] == [1, 4, len(TEXTS) - 5]
    slow = [Lines(decoded=[json.loads(x) for x in batch.raw.splitlines()]) for batch in fast]
    assert not any(batch.texts for batch in slow)
    fast_events, fast_answer = relayed(WIRES[dialect](), fast)
    slow_events, slow_answer = relayed(WIRES[dialect](), slow)
    assert fast_events == slow_events
    assert fast_answer.totals()["completion_tokens"] == slow_answer.totals()["completion_tokens"] == len(TEXTS)
    assert set(TEXTS) <= set(strings(fast_events))  # each token, as the visitor reads it


def strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("dialect", list(WIRES))
async def test_a_whole_answer_is_the_same_from_undecoded_lines(dialect: str) -> None:
    lines = [line(t) for t in TEXTS]
    fast = [Lines(b"".join(lines[:4])), Lines(b"".join(lines[4:])), Lines(LAST)]
    assert [len(batch.texts) for batch in fast] == [4, len(TEXTS) - 4, 0]
    slow = [Lines(decoded=[json.loads(x) for x in batch.raw.splitlines()]) for batch in fast]

    async def whole(batches: list[Lines]) -> Any:
        async def rest() -> AsyncIterator[Lines]:
            for batch in batches[1:]:
                yield batch

        response = await collect(batches[0], rest(), Answer("llama3.2:1b", "usr_1", started=0.0), WIRES[dialect]())
        assert response.body is not None
        return without_ids(json.loads(response.body))  # type: ignore[arg-type]

    answer = await whole(fast)
    assert answer == await whole(slow)
    assert "".join(TEXTS) in strings(answer)
