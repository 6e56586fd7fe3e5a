"""The Anthropic Messages API: `/v1/messages` requests in, Anthropic's shapes out (Claude Code, the anthropic SDK).

The request is declared once, as msgspec Structs (`MessagesRequest`, `CountTokensRequest`): decoding the
body checks its types, and a refusal names the field (`Expected `str`, got `int` - at `$.messages[0].role``).
`conversation` turns it into the same `Conversation` as `/api/chat` and `/v1/chat/completions` (so the same
limits, image checks, ownership and relay apply), and `MessagesWire` writes the answer in Anthropic's shapes:

    whole   {"id": "msg_...", "type": "message", "role": "assistant", "model", "content": [blocks],
             "stop_reason", "stop_sequence": null, "usage": {"input_tokens", "output_tokens", ...}}
    stream  `event:` lines named as `data.type`: message_start, ping, then per block content_block_start,
            content_block_delta (text_delta | thinking_delta + signature_delta | input_json_delta),
            content_block_stop; message_delta (stop_reason, usage), message_stop; `error` on a failure

In Anthropic's words, what a model can do here:

    system      a string or text blocks (joined by blank lines): the first system message; `system` messages
                inside `messages` (newer clients, Claude Code) stay where they are
    images      `image` blocks with a base64 source, checked like /api/chat's; a `url` source is refused
                (the server fetches nothing on a caller's behalf)
    tools       `tools` [{name, description, input_schema}] -> Ollama's function tools; server tools (a `type`
                such as web_search_20250305) are left out; `tool_use` / `tool_result` blocks <-> Ollama's
                tool_calls and `tool` messages; tool_choice auto | any | tool | none (Ollama cannot force a
                call: `any` and `tool` offer the tools, `tool` only the named one); disable_parallel_tool_use
                keeps the first call
    thinking    enabled | adaptive -> Ollama's `think` on a model that thinks, and ignored on one that cannot
                (Claude Code always asks); disabled or absent -> off; `budget_tokens` cannot be applied
                (Ollama has no thinking budget). An assistant's `thinking` blocks sent back go to Ollama as the
                message's `thinking` (a model's template keeps what it needs, e.g. before tool calls).

Fields that change nothing here are accepted: metadata, service_tier, context_management, output_config,
container, cache_control on any block; other fields a newer client adds are ignored, as Ollama does. What
cannot be told: `stop_sequence` (Ollama does not say which stop sequence ended an answer, so an answer cut
by one ends as `end_turn`). Errors are Anthropic's shape (studio/runtime/errors.py renders every error on
/v1/messages so, whoever raises it): `{"type": "error", "error": {"type", "message", "code"}}`.

`count_tokens` is an estimate (Ollama has no tokenizer endpoint): about four characters a token for text
and tool schemas, a fixed count per image and message (docs/api-clients.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from functions.chat.answer import Answer
from functions.chat.conversation import Conversation, image, parse
from functions.chat.relay import SSE_HEADERS, Wire, joined, unescape
from functions.chat.relay import text as json_text
from studio.runtime.errors import BadRequest, StudioError, anthropic_error_type
from studio.runtime.settings import Settings

MAX_TOOLS = 128
MAX_SCHEMA_BYTES = 64 * 1024  # one tool's input_schema, as JSON (Claude Code's largest is a few KB)
MAX_SCHEMA_DEPTH = 16  # objects and lists inside one input_schema
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
TOOL_NAME = msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,128}$")
# count_tokens' estimate (no tokenizer endpoint in Ollama): characters per token, and fixed costs
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_PER_IMAGE = 768


# -- the request, declared once ----------------------------------------------------------------------------------


class TextBlock(Struct, tag="text"):
    text: str
    cache_control: Any = None
    citations: Any = None


class Base64Source(Struct, tag="base64"):
    media_type: str
    data: str


class UrlSource(Struct, tag="url"):
    url: str


class ImageBlock(Struct, tag="image"):
    source: Base64Source | UrlSource
    cache_control: Any = None


class TextSource(Struct, tag="text"):
    data: str
    media_type: str = "text/plain"


class DocumentBlock(Struct, tag="document"):
    """A document: plain text is read as words; a PDF (base64) or a web address is refused (nothing here
    reads PDFs or fetches on a caller's behalf)."""

    source: TextSource | Base64Source | UrlSource
    title: str | None = None
    context: str | None = None
    cache_control: Any = None
    citations: Any = None


class ToolUseBlock(Struct, tag="tool_use"):
    id: str
    name: str
    input: dict[str, Any]
    cache_control: Any = None


class ToolReferenceBlock(Struct, tag="tool_reference"):
    """A tool search's result (Claude Code's deferred tools): every tool is sent to Ollama anyway."""

    tool_name: str
    cache_control: Any = None


class ToolResultBlock(Struct, tag="tool_result"):
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock | ToolReferenceBlock] = ""
    is_error: bool = False
    cache_control: Any = None


class ThinkingBlock(Struct, tag="thinking"):
    thinking: str
    signature: str = ""


class RedactedThinkingBlock(Struct, tag="redacted_thinking"):
    data: str


Block = TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock


class MessageParam(Struct):
    role: Literal["user", "assistant", "system"]  # system: text only, as the top-level `system`
    content: str | list[Block]


class Tool(Struct):
    name: Annotated[str, TOOL_NAME]
    input_schema: dict[str, Any] | None = None
    description: str | None = None
    type: str | None = None  # absent or "custom": a client's tool; anything else is a server tool, left out
    cache_control: Any = None


class ToolChoiceAuto(Struct, tag="auto"):
    disable_parallel_tool_use: bool = False


class ToolChoiceAny(Struct, tag="any"):
    disable_parallel_tool_use: bool = False


class ToolChoiceTool(Struct, tag="tool"):
    name: str
    disable_parallel_tool_use: bool = False


class ToolChoiceNone(Struct, tag="none"):
    pass


ToolChoice = ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone


class ThinkingEnabled(Struct, tag="enabled"):
    budget_tokens: Annotated[int, Meta(ge=0)] = 0


class ThinkingAdaptive(Struct, tag="adaptive"):
    pass


class ThinkingDisabled(Struct, tag="disabled"):
    pass


Thinking = ThinkingEnabled | ThinkingAdaptive | ThinkingDisabled
Unit = Annotated[float, Meta(ge=0, le=1)]


class CountTokensRequest(Struct, kw_only=True):
    model: str
    messages: list[MessageParam]
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None


class MessagesRequest(CountTokensRequest, kw_only=True):
    max_tokens: Annotated[int, Meta(ge=1)]
    stream: bool = False
    temperature: Unit | None = None
    top_p: Unit | None = None
    top_k: Annotated[int, Meta(ge=1, le=1000)] | None = None
    stop_sequences: list[str] | None = None
    # accepted, and change nothing here
    metadata: Any = None
    service_tier: Any = None
    context_management: Any = None
    output_config: Any = None
    container: Any = None


# -- the request as the studio's Conversation --------------------------------------------------------------------


@dataclass(frozen=True)
class Messages:
    conversation: Conversation
    one_call: bool  # disable_parallel_tool_use: at most one tool call in the answer


def conversation(request: CountTokensRequest, settings: Settings) -> Messages:
    """The one place an Anthropic request becomes the studio's `Conversation`."""
    messages: list[dict[str, Any]] = []
    system = _system(request.system)
    if system:
        messages.append({"role": "system", "content": system})
    names: dict[str, str] = {}  # tool_use id -> the tool's name, for the tool_result answering it
    for i, m in enumerate(request.messages):
        messages.extend(_message(m, f"messages[{i}]", names, settings))
    options: dict[str, Any] = {}
    if isinstance(request, MessagesRequest):
        options["max_tokens"] = request.max_tokens
        for name in ("temperature", "top_p", "top_k"):
            if getattr(request, name) is not None:
                options[name] = getattr(request, name)
        if request.stop_sequences:
            options["stop"] = request.stop_sequences
    think = None if isinstance(request.thinking, ThinkingEnabled | ThinkingAdaptive) else False
    stream = request.stream if isinstance(request, MessagesRequest) else False
    parsed = parse(
        {"model": request.model, "messages": messages, "options": options, "stream": stream, "think": think},
        settings,
        prepared=True,
    )
    tools, one_call = _tools(request.tools, request.tool_choice)
    return Messages(replace(parsed, tools=tools) if tools else parsed, one_call)


def _system(system: str | list[TextBlock] | None) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    return "\n\n".join(block.text for block in system)


def _message(m: MessageParam, where: str, names: dict[str, str], settings: Settings) -> list[dict[str, Any]]:
    """One Anthropic message as Ollama's: tool results become `tool` messages ahead of the user's words."""
    if isinstance(m.content, str):
        return [{"role": m.role, "content": m.content}]
    _count_images(m.content, where, settings)  # before any image is decoded
    texts: list[str] = []
    images: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    thoughts: list[str] = []  # an assistant's thinking: back to Ollama, whose template keeps what the model needs
    for j, block in enumerate(m.content):
        at = f"{where}.content[{j}]"
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ImageBlock):
            if m.role != "user":
                raise BadRequest(f"{at}: only a user message may carry images", code="invalid_images")
            images.append(_image(block, at, settings))
        elif isinstance(block, DocumentBlock):
            texts.append(_document(block, at))
        elif isinstance(block, ToolUseBlock):
            if m.role != "assistant":
                raise BadRequest(f"{at}: only an assistant message calls tools (tool_use)", code="invalid_request")
            names[block.id] = block.name
            calls.append({"function": {"name": block.name, "arguments": block.input}})
        elif isinstance(block, ToolResultBlock):
            if m.role != "user":
                raise BadRequest(f"{at}: tool_result blocks belong in a user message", code="invalid_request")
            results.append(_tool_result(block, at, names, settings))
        elif isinstance(block, ThinkingBlock) and m.role == "assistant":
            thoughts.append(block.thinking)
        # redacted_thinking: accepted, and nothing to give back (its text is not there)
    out = list(results)
    if texts or images or calls or thoughts or not results:
        message: dict[str, Any] = {"role": m.role, "content": "\n\n".join(texts)}
        if images:
            message["images"] = images
        if calls:
            message["tool_calls"] = calls
        if thoughts:
            message["thinking"] = "\n\n".join(thoughts)
        out.append(message)
    return out


def _document(block: DocumentBlock, at: str) -> str:
    if not isinstance(block.source, TextSource):
        raise BadRequest(
            f'{at}: only plain-text documents are read here ({{"type": "text", "data": ...}}); '
            "send a PDF's text instead of the PDF",
            code="unsupported_document",
        )
    parts = [p for p in (block.title, block.context, block.source.data) if p]
    return "\n\n".join(parts)


def _tool_result(block: ToolResultBlock, at: str, names: dict[str, str], settings: Settings) -> dict[str, Any]:
    if isinstance(block.content, str):
        text, images = block.content, []
    else:
        text = "\n\n".join(
            b.text if isinstance(b, TextBlock) else f"The tool {b.tool_name} is available."
            for b in block.content
            if isinstance(b, TextBlock | ToolReferenceBlock)
        )
        images = [
            _image(b, f"{at}.content[{k}]", settings) for k, b in enumerate(block.content) if isinstance(b, ImageBlock)
        ]
    message: dict[str, Any] = {"role": "tool", "content": f"Error: {text}" if block.is_error else text}
    if block.tool_use_id in names:
        message["tool_name"] = names[block.tool_use_id]
    if images:
        message["images"] = images
    return message


def _count_images(blocks: list[Block], where: str, settings: Settings) -> None:
    """A message's images, its tool results' included, at most STUDIO_CHAT_MAX_IMAGES."""
    n = sum(isinstance(b, ImageBlock) for b in blocks) + sum(
        isinstance(part, ImageBlock)
        for b in blocks
        if isinstance(b, ToolResultBlock) and isinstance(b.content, list)
        for part in b.content
    )
    if n > settings.chat_max_images:
        raise BadRequest(
            f"{where}.content has {n} images; a message may carry at most {settings.chat_max_images}",
            code="too_many_images",
        )


def _image(block: ImageBlock, at: str, settings: Settings) -> str:
    source = block.source
    if isinstance(source, UrlSource):
        raise BadRequest(
            f"{at}.source is a web address: this server fetches nothing from the internet on a caller's behalf; "
            'send the image inline ({"type": "base64", "media_type": "image/png", "data": "..."})',
            code="remote_image_refused",
        )
    if source.media_type not in IMAGE_MEDIA_TYPES:
        raise BadRequest(
            f"{at}.source.media_type must be one of {', '.join(IMAGE_MEDIA_TYPES)}", code="unsupported_image"
        )
    return image(source.data, f"{at}.source.data", settings)


def _tools(tools: list[Tool] | None, choice: ToolChoice | None) -> tuple[list[dict[str, Any]] | None, bool]:
    """Ollama's tools for Anthropic's `tools` and `tool_choice`, and whether one call at most is wanted."""
    one_call = bool(getattr(choice, "disable_parallel_tool_use", False))
    if not tools:
        if isinstance(choice, ToolChoiceTool | ToolChoiceAny):
            raise BadRequest("tool_choice asks for a tool, but the request has no tools", code="invalid_tool_choice")
        return None, one_call
    if len(tools) > MAX_TOOLS:
        raise BadRequest(f"tools has {len(tools)} entries; the limit is {MAX_TOOLS}", code="invalid_tools")
    out: dict[str, dict[str, Any]] = {}
    for i, tool in enumerate(tools):
        if tool.type not in (None, "custom"):
            continue  # a server tool (web search, code execution...): nothing here runs it
        where = f"tools[{i}]"
        if tool.name in out:
            raise BadRequest(f"{where}.name {tool.name!r} is used by another tool too", code="invalid_tools")
        out[tool.name] = {
            "type": "function",
            "function": {
                "name": tool.name,
                **({"description": tool.description} if tool.description is not None else {}),
                "parameters": _schema(tool.input_schema, f"{where}.input_schema"),
            },
        }
    if isinstance(choice, ToolChoiceNone):
        return None, one_call
    if isinstance(choice, ToolChoiceTool):
        if choice.name not in out:
            raise BadRequest(
                f"tool_choice names {choice.name!r}, which is not one of tools", code="invalid_tool_choice"
            )
        return [out[choice.name]], one_call
    return list(out.values()) or None, one_call


def _schema(schema: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """A tool's input_schema: a JSON schema of an object, bounded in size and depth."""
    if schema is None:
        raise BadRequest(f"{where} is required: the JSON schema of the tool's input", code="invalid_tools")
    if schema.get("type") != "object":
        raise BadRequest(f'{where} must be a JSON schema of {{"type": "object", ...}}', code="invalid_tools")
    size = len(msgspec.json.encode(schema))
    if size > MAX_SCHEMA_BYTES:
        raise BadRequest(
            f"{where} is {size} bytes as JSON; a tool's schema may have at most {MAX_SCHEMA_BYTES}",
            code="invalid_tools",
        )
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        raise BadRequest(f"{where} is nested deeper than {MAX_SCHEMA_DEPTH} levels", code="invalid_tools")
    return schema


def _depth(value: Any) -> int:
    """How deep objects and lists nest in `value` (without recursion: the depth is what is being checked)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_SCHEMA_DEPTH:
                stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


# -- count_tokens ------------------------------------------------------------------------------------------------


def estimate_tokens(conversation: Conversation) -> int:
    """Input tokens, estimated (Ollama has no tokenizer endpoint): about four characters a token for text,
    tool calls and tool schemas, plus a fixed cost per message and per image."""
    chars = 0
    tokens = 0
    for m in conversation.messages:
        chars += len(m.get("content") or "")
        if m.get("tool_calls"):
            chars += len(json.dumps(m["tool_calls"], ensure_ascii=False))
        tokens += TOKENS_PER_MESSAGE + TOKENS_PER_IMAGE * len(m.get("images") or ())
    if conversation.tools:
        chars += len(json.dumps(conversation.tools, ensure_ascii=False))
    return tokens + math.ceil(chars / CHARS_PER_TOKEN)


# -- the answer, in Anthropic's shapes ---------------------------------------------------------------------------


def _stop_reason(answer: Answer, calls: int) -> str:
    if calls:
        return "tool_use"
    return "max_tokens" if answer.totals()["done_reason"] == "length" else "end_turn"


def _usage(answer: Answer) -> dict[str, int]:
    t = answer.totals()
    return {
        "input_tokens": int(t["prompt_tokens"] or 0),
        "output_tokens": int(t["completion_tokens"] or 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


def _signature(digest: Any) -> str:
    """A thinking block's `signature`: a digest of its text. Nothing checks it when a client sends it back."""
    return base64.b64encode(digest.digest()).decode()


class MessagesWire(Wire):
    """Anthropic's stream: a state machine over content blocks (thinking, then text, then tool_use blocks)."""

    api = "messages"  # as the usage event and metrics name the dialect

    headers = SSE_HEADERS

    def __init__(self, model: str, one_call: bool = False) -> None:
        self.id = "msg_" + secrets.token_hex(12)
        self.model = model
        self.one_call = one_call
        self._started = False  # message_start sent
        self._open: str | None = None  # the kind of the content block being written
        self._index = -1
        self._thought = hashlib.sha256()
        self._calls = 0
        self._text_head = b""  # the open text block's content_block_delta up to its text
        self._delta = {
            kind: b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": %d, "delta": {"type": "'
            + kind.encode()
            + b'", "'
            + field.encode()
            + b'": '
            for kind, field in (("text_delta", "text"), ("thinking_delta", "thinking"))
        }

    def _message(self, content: list[dict[str, Any]], stop_reason: str | None, usage: dict[str, int]) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        empty = {"input_tokens": 0, "output_tokens": 0}
        return _event("message_start", {"type": "message_start", "message": self._message([], None, empty)}) + _event(
            "ping", {"type": "ping"}
        )

    def _close(self) -> bytes:
        """End the open block; a thinking block ends with its signature."""
        if self._open is None:
            return b""
        out = b""
        if self._open == "thinking":
            delta = {"type": "signature_delta", "signature": _signature(self._thought)}
            out = _event("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})
        self._open = None
        return out + _event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _switch(self, kind: str, block: dict[str, Any]) -> bytes:
        """Open a block of `kind` unless one is open already (after message_start, closing another)."""
        if self._open == kind:
            return b""
        out = self._start() + self._close()
        self._index += 1
        self._open = kind
        return out + _event(
            "content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block}
        )

    def _block_start(self, block: dict[str, Any]) -> bytes:
        return _event(
            "content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block}
        )

    def token(self, content: str) -> bytes:
        if self._open == "text":  # the hot path, one per token: the open block's head is made once per block
            return self._text_head + json_text(content) + b"}}\n\n"
        head = self._switch("text", {"type": "text", "text": ""})
        self._text_head = self._delta["text_delta"] % self._index
        return head + self._text_head + json_text(content) + b"}}\n\n"

    def tokens(self, texts: list[bytes]) -> bytes:
        if self._open != "text":  # the text block opens with the first
            return self.token(unescape(texts[0])) + (self.tokens(texts[1:]) if len(texts) > 1 else b"")
        return joined(self._text_head, texts, b"}}\n\n")  # the hot path

    def thinking(self, text: str) -> bytes:
        head = self._switch("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        self._thought.update(text.encode())
        return head + self._text(self._delta["thinking_delta"], text)

    def _text(self, prefix: bytes, text: str) -> bytes:
        return prefix % self._index + json_text(text) + b"}}\n\n"

    def tool_calls(self, calls: list[Any]) -> bytes:
        """Each call is a tool_use block whose input comes whole in one input_json_delta."""
        out = self._start() + self._close()
        for call in self._shaped(calls):
            self._index += 1
            start = {**call, "input": {}}
            out += _event(
                "content_block_start", {"type": "content_block_start", "index": self._index, "content_block": start}
            )
            delta = {"type": "input_json_delta", "partial_json": json.dumps(call["input"], ensure_ascii=False)}
            out += _event("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})
            out += _event("content_block_stop", {"type": "content_block_stop", "index": self._index})
        return out

    def _shaped(self, calls: list[Any]) -> list[dict[str, Any]]:
        """Ollama's calls as tool_use blocks (only the first of the answer when one call is wanted)."""
        out = []
        for call in calls:
            if self.one_call and self._calls:
                break
            function = call.get("function") if isinstance(call, dict) else None
            function = function if isinstance(function, dict) else {}
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments)
                except ValueError:
                    arguments = {"arguments": arguments}
            given = call.get("id") if isinstance(call, dict) else None
            self._calls += 1
            out.append(
                {
                    "type": "tool_use",
                    "id": given if isinstance(given, str) and given else "toolu_" + secrets.token_hex(12),
                    "name": str(function.get("name") or ""),
                    "input": arguments if isinstance(arguments, dict) else {},
                }
            )
        return out

    def done(self, answer: Answer) -> bytes:
        delta = {"stop_reason": _stop_reason(answer, self._calls), "stop_sequence": None}
        return (
            self._start()
            + self._close()
            + _event("message_delta", {"type": "message_delta", "delta": delta, "usage": _usage(answer)})
            + _event("message_stop", {"type": "message_stop"})
        )

    def error(self, error: StudioError) -> bytes:
        kind = anthropic_error_type(error.status)[1]
        return _event("error", {"type": "error", "error": {"type": kind, "message": error.message, "code": error.code}})

    def whole(self, answer: Answer, text: str, thinking: str = "", calls: list[Any] | None = None) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if thinking:
            self._thought.update(thinking.encode())
            content.append({"type": "thinking", "thinking": thinking, "signature": _signature(self._thought)})
        if text:
            content.append({"type": "text", "text": text})
        content.extend(self._shaped(calls or []))
        return self._message(content, _stop_reason(answer, self._calls), _usage(answer))
