"""The OpenAI-compatible chat API: `/v1/chat/completions` requests in, OpenAI's shapes out.

A request becomes the same `Conversation` as `/api/chat` (so the same limits and validation apply),
and `CompletionWire` writes the answer in OpenAI's shapes through the one relay (`relay.py`):

    whole   {"id": "chatcmpl-...", "object": "chat.completion", "created", "model",
             "choices": [{"index": 0, "message": {"role": "assistant", "content"}, "finish_reason"}],
             "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}
    stream  data: {"object": "chat.completion.chunk", ..., "choices": [{"index": 0, "delta": {...}}]}  per token,
            a last chunk with `finish_reason`, with `stream_options.include_usage` a chunk with `usage`
            and no choices, then `data: [DONE]`

What a model can do, in OpenAI's words:

    images     user content parts {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},
               checked like /api/chat's images (conversation.py); http(s) URLs are refused (400
               `remote_image_refused`): the server fetches nothing on a caller's behalf
    reasoning  a thinking model's reasoning as `reasoning_content` (message or delta), counted in
               `usage.completion_tokens_details.reasoning_tokens`; `reasoning_effort: "none"` (or `think: false`)
               turns it off, any other effort leaves it on
    tools      `tools`, `tool_choice`, `tool_calls` and `tool` messages, `response_format` (tools.py);
               `parallel_tool_calls: false` returns at most one call

The body is declared as `CompletionRequest` (msgspec, studio/runtime/bodies.py: unknown fields and wrong
types refused in one pass). `/v1/completions` (OpenAI's legacy completions: `TextCompletionRequest`,
`TextCompletionWire`) is here too: its prompt becomes one user message, answered without thinking, as
`text_completion` or its chunks.

Errors are OpenAI's shape: `{"error": {"message", "type", "code"}}` (the studio's `code` and `message`
plus a `type`), with the same statuses as `/api/chat`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import msgspec

from functions.chat.answer import Answer
from functions.chat.conversation import Conversation, image, parse
from functions.chat.relay import Wire, joined, text, unescape
from functions.chat.tools import calls_from_ollama, calls_to_ollama, parse_response_format, parse_tools
from studio.runtime.bodies import convert
from studio.runtime.errors import OPENAI, BadRequest, StudioError
from studio.runtime.errors import openai_error_type as error_type
from studio.runtime.settings import Settings

# Fields OpenAI clients send that change nothing here when left at OpenAI's defaults.
NEUTRAL = {"n": 1, "frequency_penalty": 0, "presence_penalty": 0, "logprobs": False}
FINISH = {"stop": "stop", "length": "length"}
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")  # OpenAI's; all but "none" think
# OpenAI's message fields; those after `tool_call_id` are the client's echo of a reply, and change nothing
MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "tool_calls", "tool_call_id", "refusal", "function_call", "audio", "annotations"}
) | {"reasoning_content"}
_ID_PREFIX = secrets.token_hex(6)
_ids = itertools.count(1)
_DATA_URL = re.compile(r"data:([a-z0-9.+/-]{1,80})((?:;[^,;]{1,80})*),", re.IGNORECASE)


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
    max_calls: int | None = None  # parallel_tool_calls false: 1


def _content(content: Any, where: str, role: Any, settings: Settings) -> tuple[Any, list[str]]:
    """OpenAI's content (a string or a list of parts) as Ollama's: the text, and the images of a user message."""
    if content is None and role in ("assistant", "tool"):  # an assistant that only called tools
        return "", []
    if not isinstance(content, list):
        return content, []
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and role == "user":
            images.append(_image_part(part.get("image_url"), f"{at}.image_url", settings))
        elif kind == "image_url":
            raise BadRequest(f"{at}: only a user message may carry images", code="invalid_images", param=at)
        else:
            raise BadRequest(
                f"{at} must be a text part or (in a user message) an image_url part", code="invalid_messages", param=at
            )
    if len(images) > settings.chat_max_images:
        raise BadRequest(
            f"{where}.content has {len(images)} images; a message may carry at most {settings.chat_max_images}",
            code="too_many_images",
            param=f"{where}.content",
        )
    return "".join(texts), images


def _image_part(raw: Any, at: str, settings: Settings) -> str:
    url = raw.get("url") if isinstance(raw, dict) else None
    if not isinstance(url, str) or not url:
        raise BadRequest(f'{at} must be {{"url": "data:image/...;base64,..."}}', code="invalid_images", param=at)
    return data_url_image(url, f"{at}.url", settings)


def data_url_image(url: str, at: str, settings: Settings) -> str:
    """An image sent as a URL (OpenAI's chat and Responses APIs): a base64 data URL, checked; never fetched."""
    if url[:8].lower().startswith(("http://", "https://")):
        raise BadRequest(
            f"{at} is a web address: this server fetches nothing from the internet on a caller's behalf; "
            "send the image inline as a data URL (data:image/png;base64,...)",
            code="remote_image_refused",
            param=at,
        )
    head = _DATA_URL.match(url)
    if head is None or ";base64" not in head.group(2).lower():
        raise BadRequest(f"{at} must be a base64 data URL (data:image/png;base64,...)", code="invalid_images", param=at)
    return image(url[head.end() :], at, settings)


def _messages(raw: Any, settings: Settings) -> Any:
    """OpenAI's messages in Ollama's shape (anything that is not a list of objects is left for `parse` to refuse)."""
    if not isinstance(raw, list):
        return raw
    names: dict[str, str] = {}  # tool call id -> the function called, for the tool message answering it
    out: list[Any] = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            out.append(m)
            continue
        extra = sorted(set(m) - MESSAGE_KEYS)
        if extra:
            at = f"{where}.{extra[0]}"
            raise BadRequest(f"{at} is not supported", code="invalid_messages", param=at)
        role = "system" if m.get("role") == "developer" else m.get("role")  # OpenAI's newer name for system
        content, images = _content(m.get("content"), where, role, settings)
        message: dict[str, Any] = {"role": role, "content": content}
        if images:
            message["images"] = images
        if m.get("tool_calls") is not None:
            if role != "assistant":
                raise BadRequest(f"{where}.tool_calls: only an assistant message calls tools", code="invalid_messages")
            message["tool_calls"] = calls_to_ollama(m["tool_calls"], f"{where}.tool_calls", names)
        if role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise BadRequest(
                    f"{where}.tool_call_id is required: the id of the tool call this message answers",
                    code="invalid_messages",
                    param=f"{where}.tool_call_id",
                )
            if call_id in names:
                message["tool_name"] = names[call_id]
        out.append(message)
    return out


def _think(effort: Any, think: Any) -> bool | None:
    """`think: false` or `reasoning_effort: "none"` turn thinking off; other efforts leave the model's default."""
    if effort is not None and effort not in EFFORTS:
        raise BadRequest(
            f"reasoning_effort must be one of {', '.join(EFFORTS)}",
            code="invalid_reasoning_effort",
            param="reasoning_effort",
        )
    if think is not None and not isinstance(think, bool):
        raise BadRequest("think must be true or false", code="invalid_think", param="think")
    if effort == "none" or think is False:
        return False
    return think


class CompletionRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A /v1/chat/completions body: the fields it may have (any other is 400 `unknown_parameter`). The
    values are checked below and by `conversation.parse`, whose messages name each field."""

    model: Any = None
    messages: Any = None
    stream: Any = None
    stream_options: dict[str, Any] | None = None
    temperature: Any = None
    top_p: Any = None
    max_tokens: Any = None
    max_completion_tokens: Any = None
    stop: Any = None
    seed: Any = None
    tools: Any = None
    tool_choice: Any = None
    response_format: Any = None
    reasoning_effort: Any = None
    think: Any = None
    parallel_tool_calls: bool | None = None  # false: at most one tool call is returned
    # OpenAI's, taken at their defaults only (NEUTRAL)
    n: Any = None
    frequency_penalty: Any = None
    presence_penalty: Any = None
    logprobs: Any = None
    # about the caller, not the answer: accepted, change nothing
    user: Any = None
    metadata: Any = None
    store: Any = None
    service_tier: Any = None


def parse_completion(body: CompletionRequest | dict[str, Any], settings: Settings) -> Completion:
    if isinstance(body, dict):
        body = convert(body, CompletionRequest, api=OPENAI)
    assert isinstance(body, CompletionRequest)
    for name, neutral in NEUTRAL.items():
        value = getattr(body, name)
        if value not in (neutral, None):
            raise BadRequest(f"{name}={value!r} is not supported here", code="unsupported_parameter", param=name)
    messages = _messages(body.messages, settings)
    options: dict[str, Any] = {}
    for name in ("temperature", "top_p", "seed"):
        if getattr(body, name) is not None:
            options[name] = getattr(body, name)
    most = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if most is not None:
        options["max_tokens"] = most
    if body.stop is not None:
        options["stop"] = [body.stop] if isinstance(body.stop, str) else body.stop
    tools = parse_tools(body.tools, body.tool_choice)
    fmt = parse_response_format(body.response_format)
    think = _think(body.reasoning_effort, body.think)
    conversation = parse(
        {"model": body.model, "messages": messages, "options": options, "stream": body.stream, "think": think},
        settings,
        prepared=True,
    )
    if tools or fmt is not None:
        conversation = replace(conversation, tools=tools, format=fmt)
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    return Completion(conversation, include_usage, 1 if body.parallel_tool_calls is False else None)


def _usage(answer: Answer) -> dict[str, Any]:
    t = answer.totals()
    prompt, completion = int(t["prompt_tokens"] or 0), int(t["completion_tokens"] or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "completion_tokens_details": {"reasoning_tokens": int(t["thinking_tokens"] or 0)},  # part of completion
    }


class CompletionWire(Wire):
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

    def __init__(self, model: str, include_usage: bool = False, max_calls: int | None = None) -> None:
        self.id = f"chatcmpl-{_ID_PREFIX}{next(_ids):012x}"  # unique, not secret: no system call per answer
        self.max_calls = max_calls  # parallel_tool_calls false: the first call only
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        head = json.dumps({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": model})
        self._head = b"data: " + head[:-1].encode() + b', "choices": [{"index": 0, "delta": {'
        self._content = self._head + b'"content": '
        self._first = True
        self._calls = 0  # tool calls streamed so far (their `index`)

    def token(self, content: str) -> bytes:
        if self._first:
            return self._delta(b'"content": ', content)
        return self._content + text(content) + b'}, "finish_reason": null}]}\n\n'

    def tokens(self, texts: list[bytes]) -> bytes:
        if self._first:  # the first delta names the role
            return self.token(unescape(texts[0])) + (self.tokens(texts[1:]) if len(texts) > 1 else b"")
        return joined(self._content, texts, b'}, "finish_reason": null}]}\n\n')  # the hot path

    def thinking(self, text: str) -> bytes:
        """A reasoning model's thinking: `delta.reasoning_content` (DeepSeek's API, vLLM and LiteLLM)."""
        return self._delta(b'"reasoning_content": ', text)

    def tool_calls(self, calls: list[Any]) -> bytes:
        """Ollama sends a turn's parsed calls in one chunk: one delta with each call whole, by `index`."""
        calls = self._allowed(calls)
        if not calls:
            return b""
        shaped = calls_from_ollama(calls, self._calls)
        self._calls += len(shaped)
        return self._delta(b'"tool_calls": ', shaped)

    def _allowed(self, calls: list[Any]) -> list[Any]:
        return calls if self.max_calls is None else calls[: max(0, self.max_calls - self._calls)]

    def _finish(self, answer: Answer) -> str:
        return "tool_calls" if self._calls else FINISH.get(answer.totals()["done_reason"], "stop")

    def _delta(self, field: bytes, value: Any) -> bytes:
        role = b'"role": "assistant", ' if self._first else b""
        self._first = False
        encoded = text(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False).encode()
        return self._head + role + field + encoded + b'}, "finish_reason": null}]}\n\n'

    def _chunk(self, **fields: Any) -> bytes:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
        return b"data: " + json.dumps({**chunk, **fields}).encode() + b"\n\n"

    def done(self, answer: Answer) -> bytes:
        reason = self._finish(answer)
        delta = {"role": "assistant", "content": ""} if self._first else {}
        out = self._chunk(choices=[{"index": 0, "delta": delta, "finish_reason": reason}])
        if self.include_usage:
            out += self._chunk(choices=[], usage=_usage(answer))
        return out + b"data: [DONE]\n\n"

    def error(self, error: StudioError) -> bytes:
        body = {"error": {"message": error.message, "type": error_type(error.status), "code": error.code}}
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    def whole(self, answer: Answer, text: str, thinking: str = "", calls: list[Any] | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            message["reasoning_content"] = thinking
        calls = self._allowed(calls or [])
        if calls:
            shaped = calls_from_ollama(calls)
            self._calls = len(shaped)
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in shaped]
            message["content"] = text or None  # OpenAI's: no content beside the calls
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": self._finish(answer),
                }
            ],
            "usage": _usage(answer),
        }


def model_list(models: list[str]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 0, "owned_by": "local-ai-studio"} for m in models],
    }


# -- /v1/completions: a prompt in, text out (OpenAI's legacy completions, as Ollama serves them) ---------------


class TextCompletionRequest(msgspec.Struct, forbid_unknown_fields=True):
    model: str
    prompt: str | list[str]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    suffix: str | None = None
    echo: bool | None = None
    n: int | None = None
    best_of: int | None = None
    logprobs: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None


def parse_text_completion(body: TextCompletionRequest, settings: Settings) -> Completion:
    """A prompt becomes one user message, answered without thinking: what Ollama's /v1/completions gives
    an instruction-tuned model (its chat template applied), through the same conversation checks."""
    neutral = {"n": 1, "best_of": 1, "echo": False, "frequency_penalty": 0, "presence_penalty": 0}
    for name, value in neutral.items():
        if getattr(body, name) not in (value, None):
            raise BadRequest(
                f"{name}={getattr(body, name)!r} is not supported here", code="unsupported_parameter", param=name
            )
    for name in ("suffix", "logprobs", "logit_bias"):
        if getattr(body, name):
            raise BadRequest(f"{name} is not supported here", code="unsupported_parameter", param=name)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise BadRequest(
            "prompt must be one string (a list of several prompts is not supported)",
            code="invalid_prompt",
            param="prompt",
        )
    options: dict[str, Any] = {}
    if body.temperature is not None:
        options["temperature"] = body.temperature
    if body.top_p is not None:
        options["top_p"] = body.top_p
    if body.seed is not None:
        options["seed"] = body.seed
    if body.max_tokens is not None:
        options["max_tokens"] = body.max_tokens
    if body.stop is not None:
        options["stop"] = [body.stop] if isinstance(body.stop, str) else body.stop
    conversation = parse(
        {
            "model": body.model,
            "messages": [{"role": "user", "content": prompts[0]}],
            "options": options,
            "stream": bool(body.stream),
            "think": False,
        },
        settings,
        prepared=True,
    )
    return Completion(conversation, bool((body.stream_options or {}).get("include_usage")))


class TextCompletionWire(CompletionWire):
    """OpenAI's `text_completion` (whole) and its chunks (streamed, then `[DONE]`)."""

    api = "completions"  # as the usage event and metrics name the dialect

    def __init__(self, model: str, include_usage: bool = False) -> None:
        super().__init__(model, include_usage)
        self.id = "cmpl-" + secrets.token_hex(12)
        head = json.dumps({"id": self.id, "object": "text_completion", "created": self.created, "model": model})
        self._head = b"data: " + head[:-1].encode() + b', "choices": [{"index": 0, "text": '

    def token(self, content: str) -> bytes:
        return self._head + text(content) + b', "logprobs": null, "finish_reason": null}]}\n\n'

    def tokens(self, texts: list[bytes]) -> bytes:
        return joined(self._head, texts, b', "logprobs": null, "finish_reason": null}]}\n\n')

    def thinking(self, text: str) -> bytes:
        return b""  # never asked for (think false); a model thinking anyway is not shown as text

    def tool_calls(self, calls: list[Any]) -> bytes:
        return b""  # no tools are sent

    def _chunk(self, **fields: Any) -> bytes:
        chunk = {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model}
        return b"data: " + json.dumps({**chunk, **fields}).encode() + b"\n\n"

    def done(self, answer: Answer) -> bytes:
        reason = self._finish(answer)
        out = self._chunk(choices=[{"index": 0, "text": "", "logprobs": None, "finish_reason": reason}])
        if self.include_usage:
            out += self._chunk(choices=[], usage=_usage(answer))
        return out + b"data: [DONE]\n\n"

    def whole(self, answer: Answer, text: str, thinking: str = "", calls: list[Any] | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": self._finish(answer)}],
            "usage": _usage(answer),
        }
