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

Anything else is a 400 whose code is `invalid_<field>` and whose message names the field. Limits come
from the STUDIO_CHAT_* settings; `max_tokens` becomes Ollama's `num_predict`, never above
STUDIO_CHAT_MAX_TOKENS (which also applies when no `max_tokens` is given).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field, replace
from typing import Any

from studio.catalog import CatalogModel
from studio.clients.ollama import normalise
from studio.runtime.errors import BadRequest, PayloadTooLarge
from studio.runtime.settings import Settings

ROLES = ("system", "user", "assistant")
FIELDS = ("model", "message", "messages", "options", "stream", "think")
_DATA_URL = re.compile(r"data:image/[a-z0-9.+-]{1,40};base64,", re.IGNORECASE)
KEYS = frozenset({"role", "content", "images"})
PREPARED_KEYS = KEYS | {"tool_calls", "tool_name", "thinking"}
CARRIED = PREPARED_KEYS - {"role", "content"}  # what a prepared message brings to Ollama besides its words
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


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse(body: dict[str, Any], settings: Settings, *, prepared: bool = False) -> Conversation:
    """`prepared`: the messages come from the OpenAI API, images checked, tool messages and calls allowed."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise BadRequest(
            f"unknown field {unknown[0]!r}; a chat request has model, message or messages, options and stream",
            code="unknown_field",
        )
    return Conversation(
        model=model_name(body.get("model")),
        messages=_messages(body, settings, prepared),
        options=_options(body.get("options"), settings),
        stream=_stream(body.get("stream")),
        think=_think(body.get("think")),
    )


def model_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(
            "model is required: the id of a model from the marketplace, such as tinyllama:latest", code="invalid_model"
        )
    if len(value) > MAX_MODEL_NAME:
        raise BadRequest(f"model is longer than {MAX_MODEL_NAME} characters", code="invalid_model")
    return normalise(value)


def _messages(body: dict[str, Any], settings: Settings, prepared: bool = False) -> list[dict[str, Any]]:
    limit = settings.chat_max_message_chars
    if "message" in body and "messages" in body:
        raise BadRequest(
            "send either message (one question) or messages (a conversation), not both", code="invalid_messages"
        )
    if "message" in body:
        text = body["message"]
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("message must be a non-empty string", code="invalid_message")
        if len(text) > limit:
            raise BadRequest(f"message is {len(text)} characters long; the limit is {limit}", code="invalid_message")
        return [{"role": "user", "content": text}]
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise BadRequest(
            "messages is required: a non-empty list of {role, content} (or send message)", code="invalid_messages"
        )
    if len(raw) > settings.chat_max_messages:
        raise BadRequest(
            f"messages has {len(raw)} entries; the limit is {settings.chat_max_messages}", code="invalid_messages"
        )
    keys, roles = (PREPARED_KEYS, (*ROLES, "tool")) if prepared else (KEYS, ROLES)
    out = []
    for i, item in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object with role and content", code="invalid_messages")
        extra = sorted(set(item) - keys)
        if extra:
            raise BadRequest(
                f"{where}.{extra[0]} is not supported; a message has role, content and images",
                code="invalid_messages",
            )
        role, content = item.get("role"), item.get("content")
        if role not in roles:
            raise BadRequest(f"{where}.role must be one of {', '.join(roles)}", code="invalid_messages")
        if not isinstance(content, str):
            raise BadRequest(f"{where}.content must be a string", code="invalid_messages")
        if len(content) > limit:
            raise BadRequest(
                f"{where}.content is {len(content)} characters long; the limit is {limit}", code="invalid_messages"
            )
        message: dict[str, Any] = {"role": role, "content": content}
        if prepared:  # built by completions.py: images checked there, tool fields in Ollama's shape
            message.update((k, v) for k, v in item.items() if k in CARRIED and v)
        elif item.get("images") is not None:
            if role != "user":
                raise BadRequest(f"{where}.images: only a user message may carry images", code="invalid_images")
            images = _images(item["images"], where, settings)
            if images:
                message["images"] = images
        out.append(message)
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


def _think(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise BadRequest("think must be true or false", code="invalid_think")


def _options(raw: Any, settings: Settings) -> dict[str, Any]:
    cap = settings.chat_max_tokens
    if raw is None:
        return {"num_predict": cap}
    if not isinstance(raw, dict):
        raise BadRequest("options must be an object", code="invalid_options")
    out: dict[str, Any] = {}
    for name, value in raw.items():
        where = f"options.{name}"
        if name == "temperature":
            if not _number(value) or not 0 <= value <= 2:
                raise BadRequest(f"{where} must be a number from 0 to 2", code="invalid_options")
            out["temperature"] = value
        elif name == "top_p":
            if not _number(value) or not 0 <= value <= 1:
                raise BadRequest(f"{where} must be a number from 0 to 1", code="invalid_options")
            out["top_p"] = value
        elif name == "top_k":
            if not _integer(value) or not 1 <= value <= 1000:
                raise BadRequest(f"{where} must be a whole number from 1 to 1000", code="invalid_options")
            out["top_k"] = value
        elif name == "seed":
            if not _integer(value) or not -(2**63) <= value < 2**63:
                raise BadRequest(f"{where} must be a whole number", code="invalid_options")
            out["seed"] = value
        elif name in ("max_tokens", "num_predict"):  # num_predict: Ollama's own name for it
            if not _integer(value) or value < 1:
                raise BadRequest(f"{where} must be a whole number of at least 1", code="invalid_options")
            out["num_predict"] = min(value, cap)
        elif name == "stop":
            if (
                not isinstance(value, list)
                or len(value) > MAX_STOP_WORDS
                or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in value)
            ):
                raise BadRequest(
                    f"{where} must be a list of at most {MAX_STOP_WORDS} strings of 1 to {MAX_STOP_CHARS} characters",
                    code="invalid_options",
                )
            out["stop"] = list(value)
        else:
            raise BadRequest(
                f"{where} is not supported; options are temperature, top_p, top_k, seed, "
                "max_tokens (or num_predict) and stop",
                code="invalid_options",
            )
    out.setdefault("num_predict", cap)
    return out


def _stream(value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest("stream must be true or false", code="invalid_stream")
    return value
