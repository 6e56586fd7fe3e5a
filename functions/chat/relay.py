"""From Ollama's NDJSON lines to the visitor: server-sent events as they come, or one JSON answer.

Streaming wire format (`text/event-stream`, never buffered by nginx or the gateway):

    event: thinking data: {"content": "<chunk>"}                  a thinking model's reasoning, before the tokens
    event: token    data: {"content": "<chunk>"}                  one per chunk Ollama sends
    event: tool_calls data: {"tool_calls": [...]}                 a model's tool calls, as Ollama sends them
    event: done     data: {"model", "done_reason", "prompt_tokens", "completion_tokens",
                           "total_duration_ms", "load_duration_ms", "prompt_eval_duration_ms",
                           "eval_duration_ms", "tokens_per_s", "time_to_first_token_ms", "thinking_tokens"}
    event: error    data: {"error": {"code", "message"}}          Ollama failed after the first token

What one read from Ollama brought (a batch of lines, decoded in one call) is written in one write, and
producers yield to the event loop every few writes: aiohttp's `write()` does not, so a fast stream
would otherwise starve every other one (docs/performance.md). The response's headers go out with its
first event, and the last tokens, the `done` event and the end of the response in one write: a short
answer is one or two writes to the socket, not four (every write is a system call, which under a burst
of answers is what the relay costs; tests/bench/relay_bench.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiohttp import web

from functions.chat.answer import COMPLETED, Answer
from studio.clients.ollama import Lines, ModelNotFound, OllamaBusy, OllamaError, OllamaUnavailable
from studio.runtime.errors import BadGateway, Conflict, StudioError, UpstreamUnavailable

log = logging.getLogger("studio.functions.chat")

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
YIELD_EVERY = 16  # chunks written between two yields to the event loop
DRAIN_S = 1.0  # how long the end of Ollama's response may take to follow its `done` line


def text(value: str) -> bytes:
    """A JSON string, as json.dumps(value, ensure_ascii=False) writes it, several times faster."""
    try:
        return orjson.dumps(value)
    except TypeError:  # a lone surrogate (orjson refuses them)
        return json.dumps(value, ensure_ascii=False).encode()


def token_event(content: str) -> bytes:
    return b'event: token\ndata: {"content": ' + text(content) + b"}\n\n"


def unescape(escaped: bytes) -> str:
    """The text of a JSON string's body (Ollama's escapes, as `Lines.texts` gives them)."""
    try:
        return orjson.loads(b'"' + escaped + b'"')
    except orjson.JSONDecodeError:  # a lone surrogate (orjson refuses them)
        return json.loads(b'"' + escaped + b'"')


def joined(head: bytes, texts: list[bytes], tail: bytes) -> bytes:
    """`head + text + tail` for each text (a JSON string's body, written between quotes), in one join."""
    return head + b'"' + (b'"' + tail + head + b'"').join(texts) + b'"' + tail


_TOKEN_HEAD, _TOKEN_TAIL = b'event: token\ndata: {"content": ', b"}\n\n"


def thinking_event(thinking: str) -> bytes:
    return b'event: thinking\ndata: {"content": ' + text(thinking) + b"}\n\n"


def done_event(totals: dict[str, Any]) -> bytes:
    return b"event: done\ndata: " + json.dumps(totals).encode() + b"\n\n"


def error_event(error: StudioError) -> bytes:
    return (
        b"event: error\ndata: "
        + json.dumps({"error": {"code": error.code, "message": error.message}}).encode()
        + b"\n\n"
    )


class Wire:
    """How an answer is written to the client: the studio's own format (`/api/chat`). The OpenAI-compatible
    API (`functions/chat/completions.py`) subclasses it, so both go through this one relay."""

    headers = SSE_HEADERS
    api = "chat"  # which dialect, as the usage event names it (a dialect's wire sets its own)

    def token(self, content: str) -> bytes:
        return token_event(content)

    def tokens(self, texts: list[bytes]) -> bytes:
        """The events of several tokens at once, each given as Ollama escaped it (a JSON string's body,
        `Lines.texts`): written on as they are, nothing decoded or encoded. The hot path."""
        return joined(_TOKEN_HEAD, texts, _TOKEN_TAIL)

    def thinking(self, text: str) -> bytes:
        return thinking_event(text)

    def tool_calls(self, calls: list[Any]) -> bytes:
        return b"event: tool_calls\ndata: " + json.dumps({"tool_calls": calls}, ensure_ascii=False).encode() + b"\n\n"

    def done(self, answer: Answer) -> bytes:
        return done_event(answer.totals())

    def error(self, error: StudioError) -> bytes:
        return error_event(error)

    def whole(self, answer: Answer, text: str, thinking: str = "", calls: list[Any] | None = None) -> dict[str, Any]:
        t = answer.totals()
        return {
            **({"thinking": thinking} if thinking else {}),
            **({"tool_calls": calls} if calls else {}),
            "response": text,
            "model": answer.model,
            "done_reason": t["done_reason"],
            "prompt_tokens": t["prompt_tokens"],
            "completion_tokens": t["completion_tokens"],
            "total_duration_ms": t["total_duration_ms"],
            "tokens_per_s": t["tokens_per_s"],
            "time_to_first_token_ms": t["time_to_first_token_ms"],
            "thinking_tokens": t["thinking_tokens"],
        }


STUDIO_WIRE = Wire()


class EventStream(web.StreamResponse):
    """A streamed answer whose headers wait for its first bytes and leave with them, in one write (aiohttp's
    StreamResponse sends them alone at `prepare`; its Response buffers them this way)."""

    _send_headers_immediately = False


def event_stream(wire: Wire) -> web.StreamResponse:
    return EventStream(headers=wire.headers)


class Admission(Protocol):
    """An admission that may still be committing as the answer starts (functions/chat/limits.py's Slot)."""

    def refusal(self) -> BaseException | None: ...

    @property
    def known(self) -> bool: ...

    async def admitted(self) -> None: ...


def ollama_failure(exc: OllamaError, model: str) -> StudioError:
    """What the visitor is told when Ollama could not answer (the details go to the log)."""
    log.warning(
        "Ollama could not answer with %s: %s", model, exc.message, extra={"model": model, "ollama_status": exc.status}
    )
    if isinstance(exc, ModelNotFound):
        return Conflict(
            f"{model} is not installed on this server yet: install it (POST /api/models/install, or "
            "Install in the marketplace) and chat with it once the install has finished",
            code="not_installed",
        )
    if isinstance(exc, OllamaBusy):
        return UpstreamUnavailable(
            "Ollama is busy with other requests (its queue is full); try again in a few seconds",
            code="ollama_busy",
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, OllamaUnavailable):
        return UpstreamUnavailable(
            "Ollama, which runs the models, cannot be reached or stopped answering; try again shortly",
            code="ollama_unavailable",
            headers={"Retry-After": "10"},
        )
    return BadGateway(f"the model failed to answer: {exc.message}", code="ollama_error")


async def read_to_the_end(lines: AsyncIterator[Lines]) -> None:
    """After `done`, read Ollama's response to its end, so its connection goes back to the pool for the
    next answer (leaving at `done` would close it: a new TCP connection to Ollama for every answer)."""
    with contextlib.suppress(OllamaError, TimeoutError):
        async with asyncio.timeout(DRAIN_S):
            async for _ in lines:
                pass


@dataclass(frozen=True, slots=True)
class Chunk:
    """What one of Ollama's lines adds to the answer: text, a thinking model's reasoning, tool calls."""

    content: str = ""
    thinking: str = ""
    calls: list[Any] | None = None  # Ollama's `tool_calls`


_NOTHING = Chunk()


def parse_chunk(line: dict[str, Any]) -> Chunk:
    message = line.get("message")
    if not isinstance(message, dict):
        return _NOTHING
    content, thinking = message.get("content") or "", message.get("thinking") or ""
    calls = message.get("tool_calls")  # usually a line of its own; a model's own parser may add text beside
    if calls and isinstance(calls, list):
        return Chunk(content, thinking, calls)
    return Chunk(content, thinking) if content or thinking else _NOTHING


def _events(batch: Lines, answer: Answer, wire: Wire, out: list[bytes]) -> dict[str, Any] | None:
    """The wire's bytes for a batch of Ollama's lines, appended to `out`; Ollama's last line if it is there.
    The hot path, once per batch: plain token lines are written on as Ollama escaped them (`Lines.texts`);
    the lines after them are decoded, the wire's names bound once and their tokens counted once."""
    if texts := batch.texts:
        answer.tokens(len(texts))
        out.append(wire.tokens(texts))
    token, append, tokens = wire.token, out.append, 0
    try:
        for line in batch.rest:
            if line.get("done"):
                return line
            message = line.get("message")
            if not isinstance(message, dict):
                continue
            thinking, content, calls = message.get("thinking"), message.get("content"), message.get("tool_calls")
            if thinking:
                answer.thought()
                append(wire.thinking(thinking))
            if content:
                tokens += 1
                append(token(content))
            if calls and isinstance(calls, list):
                answer.called()
                append(wire.tool_calls(calls))
        return None
    finally:
        answer.tokens(tokens)


async def stream(
    request: web.Request,
    response: web.StreamResponse,
    first: Lines,
    lines: AsyncIterator[Lines],
    answer: Answer,
    wire: Wire = STUDIO_WIRE,
    admission: Admission | None = None,
) -> web.StreamResponse:
    """Relay the answer as server-sent events on `response`; a visitor who leaves ends it.

    What one read from Ollama brought is written in one write (whatever is ready in this turn of the
    loop), and the producer yields to the loop every `YIELD_EVERY` writes; the last batch's events, the
    `done` event and the response's end go in one write. An `admission` still being committed is checked
    as the answer goes and waited for before its end: refused, the answer ends with an `error` event."""
    try:
        await response.prepare(request)
        batch, writes = first, 0
        out: list[bytes] = []
        while True:
            final = _events(batch, answer, wire, out)
            if final is not None:
                break
            if out or not writes:  # (a first batch without events sends the headers alone: they wait for nothing)
                await response.write(out[0] if len(out) == 1 else b"".join(out))
                out.clear()
                writes += 1
                if writes % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            if admission is not None and (refused := admission.refusal()) is not None:
                raise refused
            batch = await anext(lines)
        if admission is not None and not (admission.known and admission.refusal() is None):
            if out:  # the last tokens do not wait for the admission, nor go unsent if it was refused
                await response.write(b"".join(out))
                out.clear()
            await admission.admitted()
        answer.complete(final)
        out.append(wire.done(answer))
        await response.write_eof(b"".join(out))
    except ConnectionResetError:  # the visitor stopped the answer or went away
        answer.cancel()
        return response
    except StopAsyncIteration:  # cannot happen: Ollama's client raises on a stream without its end
        answer.fail("ollama_error")
        return response
    except OllamaError as exc:
        error = ollama_failure(exc, answer.model)
        answer.fail(error.code)
        with contextlib.suppress(ConnectionResetError):
            await response.write(wire.error(error))
    except StudioError as refused:  # an early admission refused (another replica filled the caller's share)
        answer.fail(refused.code)
        with contextlib.suppress(ConnectionResetError):
            await response.write(wire.error(refused))
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    if answer.outcome == COMPLETED:
        await read_to_the_end(lines)
    return response


async def collect(first: Lines, lines: AsyncIterator[Lines], answer: Answer, wire: Wire = STUDIO_WIRE) -> web.Response:
    """The whole answer as one JSON object; Ollama failing on the way is a JSON error."""
    parts: list[str] = []
    thoughts: list[str] = []
    calls: list[Any] = []
    batch, batches = first, 0
    try:
        while True:
            final = None
            if texts := batch.texts:
                answer.tokens(len(texts))
                parts.append(unescape(b"".join(texts)))
            for line in batch.rest:
                if line.get("done"):
                    final = line
                    break
                chunk = parse_chunk(line)
                if chunk.thinking:
                    answer.thought()
                    thoughts.append(chunk.thinking)
                if chunk.content:
                    answer.token()
                    parts.append(chunk.content)
                if chunk.calls:
                    answer.called()
                    calls.extend(chunk.calls)
            if final is not None:
                break
            batches += 1
            if batches % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            batch = await anext(lines)
    except OllamaError as exc:
        error = ollama_failure(exc, answer.model)
        answer.fail(error.code)
        raise error from None
    answer.complete(final)
    await read_to_the_end(lines)
    return web.json_response(wire.whole(answer, "".join(parts), "".join(thoughts), calls))
