"""A chat request, validated: which model, the messages, the sampling options, streamed or not.

Two shapes are accepted (the seed's and the multi-turn one):

    {"model": "tinyllama:latest", "message": "Hello"}
    {"model": "...", "messages": [{"role": "system"|"user"|"assistant", "content": "...", "images": [base64]}],
     "options": {"temperature", "top_p", "top_k", "seed", "max_tokens" (or "num_predict"), "stop"},
     "stream": true, "think": true | false}

Images (user messages only, base64 as Ollama takes them; a `data:image/...;base64,` prefix is dropped) are
PNG, JPEG, WebP or GIF by their bytes, at most STUDIO_CHAT_MAX_IMAGES a message and
STUDIO_CHAT_MAX_IMAGE_BYTES each (413 `image_too_large`). What the chosen model can do is checked by
`for_model`: images need `vision` (400 `model_has_no_vision`), `think` needs `thinking` and is on by
default for a thinking model; an embedding-only model cannot chat (400 `not_a_chat_model`).

The OpenAI-compatible API (`completions.py`) builds its messages in Ollama's shape and parses them with
`prepared=True`: its images are already checked (under OpenAI's field names), and it may add what only it
takes: `tool` messages (with `tool_name`), assistant messages carrying `tool_calls` (and the `thinking` that
came before them, which Ollama gives back to the model's template), and `tools` and `format`
(set on the conversation after parsing; `for_model` refuses tools to a model without `tools`, 400
`model_has_no_tools`).

The request's shape is its type (`ChatRequest`, decoded by the runtime: studio/runtime/bodies.py); what
depends on the settings or on other fields is checked here. Anything wrong is a 400 whose code is
`invalid_<field>` (`unknown_field` for a field a chat request does not have) and whose message names
the field. Limits come
from the STUDIO_CHAT_* settings; `max_tokens` becomes Ollama's `num_predict`, never above
STUDIO_CHAT_MAX_TOKENS (which also applies when no `max_tokens` is given).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import UNSET, UnsetType

from studio.catalog import CatalogModel
from studio.clients.ollama import normalise
from studio.runtime import bodies
from studio.runtime.errors import BadRequest, PayloadTooLarge
from studio.runtime.settings import Settings

ROLES = ("system", "user", "assistant")
_DATA_URL = re.compile(r"data:image/[a-z0-9.+-]{1,40};base64,", re.IGNORECASE)
MAX_MODEL_NAME = 200
MAX_STOP_WORDS, MAX_STOP_CHARS = 8, 100


@dataclass(frozen=True)
class Conversation:
    model: str  # normalised: lower case, with its tag
    messages: list[dict[str, str]]
    options: dict[str, Any] = field(default_factory=dict)  # in Ollama's names
    stream: bool = False
    think: bool | None = None  # None: the model's default (on for thinking models, see for_model)
    tools: list[dict[str, Any]] | None = None  # Ollama's `tools` (the OpenAI API only)
    format: str | dict[str, Any] | None = None  # Ollama's `format`: "json" or a JSON schema (the OpenAI API only)

    @property
    def images(self) -> int:
        return sum(len(m.get("images") or ()) for m in self.messages)

    def ollama_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": self.messages, "options": self.options}
        if self.think is not None:
            body["think"] = self.think
        if self.tools:
            body["tools"] = self.tools
        if self.format is not None:
            body["format"] = self.format
        return body

    def for_model(self, model: CatalogModel) -> Conversation:
        """This conversation checked against what `model` can do, with `think` resolved for it."""
        if not model.chat:
            raise BadRequest(
                f"{model.name} is an embedding model: it turns text into vectors (POST /v1/embeddings) and cannot chat",
                code="not_a_chat_model",
            )
        if self.images and not model.can("vision"):
            raise BadRequest(
                f"{model.name} cannot see images; send text only, or pick a model with vision such as llava:7b",
                code="model_has_no_vision",
            )
        if self.tools and not model.can("tools"):
            raise BadRequest(
                f"{model.name} cannot call tools; leave tools out, or pick a model with tools such as llama3.2:3b",
                code="model_has_no_tools",
            )
        if model.can("thinking"):
            return replace(self, think=self.think is not False)
        if self.think:
            raise BadRequest(f"{model.name} does not think before answering; leave think out", code="invalid_think")
        return replace(self, think=None)


class ChatMessage(msgspec.Struct, forbid_unknown_fields=True):
    noun: ClassVar[str] = "a message"
    codes: ClassVar[dict[str, str]] = {"images": "invalid_images"}
    role: Literal["system", "user", "assistant"]
    content: str
    images: Annotated[
        list[str] | None, msgspec.Meta(description="base64 PNG, JPEG, WebP or GIF images (user messages only)")
    ] = None


class PreparedMessage(msgspec.Struct, forbid_unknown_fields=True):
    """A message the OpenAI API built (completions.py): images checked there, tool fields in Ollama's shape."""

    noun: ClassVar[str] = "a message"
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str | None = None
    thinking: str | None = None


class ChatOptions(msgspec.Struct, forbid_unknown_fields=True):
    noun: ClassVar[str] = "options"
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    top_k: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    seed: Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    num_predict: Annotated[int, msgspec.Meta(ge=1, description="Ollama's own name for max_tokens")] | None = None
    stop: (
        Annotated[
            list[Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STOP_CHARS)]],
            msgspec.Meta(max_length=MAX_STOP_WORDS),
        ]
        | None
    ) = None


ModelName = Annotated[
    str,
    msgspec.Meta(
        max_length=MAX_MODEL_NAME,
        description="the id of a model from the marketplace, such as tinyllama:latest",
    ),
]


class ChatRequest(msgspec.Struct, forbid_unknown_fields=True):
    """POST /api/chat: `message` (one question) or `messages` (a conversation)."""

    noun: ClassVar[str] = "a chat request"
    model: ModelName
    message: Annotated[str, msgspec.Meta(description="one question (or send messages)")] | UnsetType = UNSET
    messages: (
        Annotated[list[ChatMessage], msgspec.Meta(description="a non-empty list of {role, content} (or send message)")]
        | UnsetType
    ) = UNSET
    options: ChatOptions | None = None
    stream: Annotated[bool, msgspec.Meta(description="true: text/event-stream")] | None = None
    think: bool | None = None


class PreparedChatRequest(msgspec.Struct, forbid_unknown_fields=True):
    noun: ClassVar[str] = "a chat request"
    model: ModelName
    messages: list[PreparedMessage] | UnsetType = UNSET
    message: str | UnsetType = UNSET
    options: ChatOptions | None = None
    stream: bool | None = None
    think: bool | None = None


def parse(
    body: dict[str, Any] | ChatRequest | PreparedChatRequest, settings: Settings, *, prepared: bool = False
) -> Conversation:
    """A conversation from a decoded request (or a dict, checked as one: `prepared` for the OpenAI API's,
    whose messages may carry tool calls and tool results)."""
    request: ChatRequest | PreparedChatRequest
    if isinstance(body, dict):
        request = bodies.convert(body, PreparedChatRequest) if prepared else bodies.convert(body, ChatRequest)
    else:
        request = body
    return Conversation(
        model=model_name(request.model),
        messages=_messages(request, settings),
        options=_options(request.options, settings),
        stream=bool(request.stream),
        think=request.think,
    )


def model_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(
            "model is required: the id of a model from the marketplace, such as tinyllama:latest", code="invalid_model"
        )
    if len(value) > MAX_MODEL_NAME:
        raise BadRequest(f"model is longer than {MAX_MODEL_NAME} characters", code="invalid_model")
    return normalise(value)


def _messages(request: ChatRequest | PreparedChatRequest, settings: Settings) -> list[dict[str, Any]]:
    limit = settings.chat_max_message_chars
    if request.message is not UNSET and request.messages is not UNSET:
        raise BadRequest(
            "send either message (one question) or messages (a conversation), not both", code="invalid_messages"
        )
    if request.message is not UNSET:
        text = request.message
        if not text.strip():
            raise BadRequest("message must be a non-empty string", code="invalid_message")
        if len(text) > limit:
            raise BadRequest(f"message is {len(text)} characters long; the limit is {limit}", code="invalid_message")
        return [{"role": "user", "content": text}]
    raw = request.messages
    if raw is UNSET or not raw:
        raise BadRequest(
            "messages is required: a non-empty list of {role, content} (or send message)", code="invalid_messages"
        )
    if len(raw) > settings.chat_max_messages:
        raise BadRequest(
            f"messages has {len(raw)} entries; the limit is {settings.chat_max_messages}", code="invalid_messages"
        )
    out = []
    items: Sequence[ChatMessage | PreparedMessage] = raw
    for i, item in enumerate(items):
        where = f"messages[{i}]"
        role, content = item.role, item.content
        if len(content) > limit:
            raise BadRequest(
                f"{where}.content is {len(content)} characters long; the limit is {limit}", code="invalid_messages"
            )
        message: dict[str, Any] = {"role": role, "content": content}
        if isinstance(item, PreparedMessage):  # built by completions.py: images checked there
            if item.images:
                message["images"] = item.images
            if item.tool_calls:
                message["tool_calls"] = item.tool_calls
            if item.tool_name:
                message["tool_name"] = item.tool_name
            if item.thinking:  # an earlier answer's thinking, given back (Anthropic's thinking blocks)
                message["thinking"] = item.thinking
        elif item.images is not None:
            if role != "user":
                raise BadRequest(f"{where}.images: only a user message may carry images", code="invalid_images")
            images = _images(item.images, where, settings)
            if images:
                message["images"] = images
        out.append(message)
    carried = sum(len(m.get("images", ())) for m in out)
    if carried > settings.chat_max_request_images:
        raise BadRequest(
            f"messages carry {carried} images; a request may carry at most {settings.chat_max_request_images}",
            code="too_many_images",
        )
    if not any(m["role"] == "user" and (m["content"].strip() or m.get("images")) for m in out):
        raise BadRequest("messages has no user message with content to answer", code="invalid_messages")
    return out


# the first bytes of each image format we take (checked on the decoded image, never trusted from a name)
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)


def image_format(data: bytes) -> str | None:
    """PNG, JPEG, WebP or GIF by the image's own bytes; None for anything else."""
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def _images(raw: Any, where: str, settings: Settings) -> list[str]:
    most = settings.chat_max_images
    if not isinstance(raw, list):
        raise BadRequest(f"{where}.images must be a list of base64-encoded images", code="invalid_images")
    if len(raw) > most:
        raise BadRequest(
            f"{where}.images has {len(raw)} images; a message may carry at most {most}", code="too_many_images"
        )
    return [image(item, f"{where}.images[{n}]", settings) for n, item in enumerate(raw)]


def image(item: Any, at: str, settings: Settings) -> str:
    """One base64 image (a `data:image/...;base64,` prefix dropped) checked: its size, its base64, its format."""
    limit = settings.chat_max_image_bytes
    if not isinstance(item, str) or not item:
        raise BadRequest(f"{at} must be a base64-encoded image", code="invalid_images")
    prefix = _DATA_URL.match(item)
    text = item[prefix.end() :] if prefix else item
    if len(text) > (-(-limit // 3)) * 4 + 4:  # refused before decoding: the base64 of `limit` bytes is this long
        raise PayloadTooLarge(f"{at} is larger than {_mb(limit)}, the limit for one image", code="image_too_large")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{at} is not valid base64", code="invalid_images") from None
    if len(data) > limit:
        raise PayloadTooLarge(f"{at} is larger than {_mb(limit)}, the limit for one image", code="image_too_large")
    if image_format(data) is None:
        raise BadRequest(f"{at} is not a PNG, JPEG, WebP or GIF image", code="unsupported_image")
    return text


def _mb(n: int) -> str:
    return f"{n / 1_048_576:g} MB" if n >= 1_048_576 else f"{n} bytes"


def _options(options: ChatOptions | None, settings: Settings) -> dict[str, Any]:
    """The options in Ollama's names; `max_tokens` (or `num_predict`) never above STUDIO_CHAT_MAX_TOKENS."""
    cap = settings.chat_max_tokens
    out: dict[str, Any] = {}
    if options is not None:
        for name in ("temperature", "top_p", "top_k", "seed"):
            value = getattr(options, name)
            if value is not None:
                out[name] = value
        most = options.max_tokens if options.max_tokens is not None else options.num_predict
        if most is not None:
            out["num_predict"] = min(most, cap)
        if options.stop is not None:
            out["stop"] = list(options.stop)
    out.setdefault("num_predict", cap)
    return out
