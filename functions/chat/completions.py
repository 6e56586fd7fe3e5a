"""The OpenAI-compatible chat API: `/v1/chat/completions` requests in, OpenAI's shapes out.

A request becomes the same `Conversation` as `/api/chat` (so the same limits and validation apply),
and `CompletionWire` writes the answer in OpenAI's shapes through the one relay (`relay.py`):

    whole   {"id": "chatcmpl-...", "object": "chat.completion", "created", "model",
             "choices": [{"index": 0, "message": {"role": "assistant", "content"}, "finish_reason"}],
             "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}
    stream  data: {"object": "chat.completion.chunk", ..., "choices": [{"index": 0, "delta": {...}}]}  per token,
            a last chunk with `finish_reason`, with `stream_options.include_usage` a chunk with `usage`
            and no choices, then `data: [DONE]`

Errors are OpenAI's shape: `{"error": {"message", "type", "code"}}` (the studio's `code` and `message`
plus a `type`), with the same statuses as `/api/chat`.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from functions.chat.answer import Answer
from functions.chat.conversation import Conversation, parse
from functions.chat.relay import Wire
from studio.runtime.errors import BadRequest, StudioError
from studio.runtime.settings import Settings

# Fields OpenAI clients send that change nothing here when left at OpenAI's defaults.
NEUTRAL = {"n": 1, "frequency_penalty": 0, "presence_penalty": 0, "logprobs": False, "parallel_tool_calls": None}
IGNORED = ("user", "metadata", "store", "service_tier")  # about the caller, not the answer
FIELDS = (
    "model",
    "messages",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
)
FINISH = {"stop": "stop", "length": "length"}


def error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "api_error"
    return "invalid_request_error"


@contextlib.contextmanager
def openai_errors() -> Iterator[None]:
    """Errors raised inside are rendered in OpenAI's shape (a `type` beside the code and message)."""
    try:
        yield
    except StudioError as exc:
        exc.details.setdefault("type", error_type(exc.status))
        raise


@dataclass(frozen=True)
class Completion:
    conversation: Conversation
    include_usage: bool


def _text(content: Any, where: str) -> Any:
    """OpenAI's content may be a list of parts; text parts are joined, anything else is refused."""
    if not isinstance(content, list):
        return content
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise BadRequest(f"{where}.content may only hold text parts here", code="invalid_messages")
        texts.append(part["text"])
    return "".join(texts)


def parse_completion(body: dict[str, Any], settings: Settings) -> Completion:
    for name, neutral in NEUTRAL.items():
        if name in body and body[name] not in (neutral, None):
            raise BadRequest(f"{name}={body[name]!r} is not supported here", code="unsupported_parameter", param=name)
    unknown = sorted(set(body) - set(FIELDS) - set(NEUTRAL) - set(IGNORED))
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r}", code="unknown_parameter", param=unknown[0])
    messages = body.get("messages")
    if isinstance(messages, list):
        messages = [
            {"role": m.get("role"), "content": _text(m.get("content"), f"messages[{i}]")}
            if isinstance(m, dict) and set(m) <= {"role", "content", "name"}
            else m
            for i, m in enumerate(messages)
        ]
    options: dict[str, Any] = {}
    for name in ("temperature", "top_p", "seed"):
        if body.get(name) is not None:
            options[name] = body[name]
    most = body.get("max_completion_tokens", body.get("max_tokens"))
    if most is not None:
        options["max_tokens"] = most
    stop = body.get("stop")
    if stop is not None:
        options["stop"] = [stop] if isinstance(stop, str) else stop
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise BadRequest("stream_options must be an object", code="invalid_stream_options")
    conversation = parse(
        {"model": body.get("model"), "messages": messages, "options": options, "stream": body.get("stream", False)},
        settings,
    )
    return Completion(conversation, bool((stream_options or {}).get("include_usage")))


def _usage(answer: Answer) -> dict[str, int]:
    t = answer.totals()
    prompt, completion = int(t["prompt_tokens"] or 0), int(t["completion_tokens"] or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class CompletionWire(Wire):
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

    def __init__(self, model: str, include_usage: bool = False) -> None:
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        head = json.dumps({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": model})
        self._head = b"data: " + head[:-1].encode() + b', "choices": [{"index": 0, "delta": {'
        self._first = True

    def token(self, content: str) -> bytes:
        return self._delta(b'"content": ', content)

    def thinking(self, text: str) -> bytes:
        """A reasoning model's thinking: `delta.reasoning_content` (DeepSeek's API, vLLM and LiteLLM)."""
        return self._delta(b'"reasoning_content": ', text)

    def _delta(self, field: bytes, text: str) -> bytes:
        role = b'"role": "assistant", ' if self._first else b""
        self._first = False
        return (
            self._head
            + role
            + field
            + json.dumps(text, ensure_ascii=False).encode()
            + b'}, "finish_reason": null}]}\n\n'
        )

    def _chunk(self, **fields: Any) -> bytes:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
        return b"data: " + json.dumps({**chunk, **fields}).encode() + b"\n\n"

    def done(self, answer: Answer) -> bytes:
        reason = FINISH.get(answer.totals()["done_reason"], "stop")
        delta = {"role": "assistant", "content": ""} if self._first else {}
        out = self._chunk(choices=[{"index": 0, "delta": delta, "finish_reason": reason}])
        if self.include_usage:
            out += self._chunk(choices=[], usage=_usage(answer))
        return out + b"data: [DONE]\n\n"

    def error(self, error: StudioError) -> bytes:
        body = {"error": {"message": error.message, "type": error_type(error.status), "code": error.code}}
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    def whole(self, answer: Answer, text: str, thinking: str = "") -> dict[str, Any]:
        message = {"role": "assistant", "content": text, **({"reasoning_content": thinking} if thinking else {})}
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": FINISH.get(answer.totals()["done_reason"], "stop"),
                }
            ],
            "usage": _usage(answer),
        }


def model_list(models: list[str]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 0, "owned_by": "local-ai-studio"} for m in models],
    }
