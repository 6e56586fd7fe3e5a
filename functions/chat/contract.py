"""chat's HTTP answers as types, for the API reference (the request bodies: conversation.py)."""

from __future__ import annotations

from typing import Any, Literal

from msgspec import Struct


class ChatAnswer(Struct):
    response: str
    model: str
    done_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_duration_ms: float | None = None
    tokens_per_s: float | None = None
    time_to_first_token_ms: float | None = None


class ModelList(Struct):
    """OpenAI's list shape."""

    object: str
    data: list[dict[str, Any]]


class EmbeddingList(Struct):
    """OpenAI's list of embeddings."""

    object: str
    data: list[dict[str, Any]]
    model: str
    usage: dict[str, Any]


class OpenAIErrorDetail(Struct):
    """OpenAI's fields; the gateway's own refusals (a bad token) carry the studio's code and message."""

    message: str = ""
    type: str = ""
    code: str | None = None
    param: str | None = None


class OpenAIError(Struct):
    """OpenAI's error shape."""

    error: OpenAIErrorDetail


class AnthropicErrorDetail(Struct):
    """Anthropic's fields (`authentication_error`, `invalid_request_error`, ...); the studio's `code` is kept."""

    type: str
    message: str
    code: str | None = None


class AnthropicError(Struct):
    """Anthropic's error shape, on /v1/messages: its 503s are Anthropic's 529 overloaded_error."""

    type: Literal["error"]
    error: AnthropicErrorDetail


class UsageQuery(Struct):
    days: int = 30
    all: Literal["1", "true"] | None = None


class Usage(Struct):
    days: int
    usage: list[dict[str, Any]]


OPENAI_OBJECT = dict[str, Any]
