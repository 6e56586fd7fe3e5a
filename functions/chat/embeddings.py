"""The OpenAI-compatible embeddings API: `/v1/embeddings` requests in, Ollama's `/api/embed`, OpenAI's shape out.

    {"model": "nomic-embed-text", "input": "text" | ["text", ...], "encoding_format": "float" | "base64",
     "dimensions": 256, "user": ...}
      -> {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [...] | "<base64>"}],
          "model", "usage": {"prompt_tokens", "total_tokens"}}

`base64` is what the official `openai` client asks for unless told otherwise: the vector's little-endian
float32 bytes, base64-encoded (the client decodes them back to floats). Inputs are text only (OpenAI's
token-id arrays are refused), at most MAX_INPUTS, each at most STUDIO_CHAT_MAX_MESSAGE_CHARS long.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any

from functions.chat.conversation import model_name
from studio.clients.ollama import Embeddings
from studio.runtime.errors import BadRequest
from studio.runtime.settings import Settings

FIELDS = ("model", "input", "encoding_format", "dimensions", "user")
MAX_INPUTS = 2048  # OpenAI's own limit on inputs a request
MAX_DIMENSIONS = 65536
FORMATS = ("float", "base64")


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str  # normalised
    inputs: list[str]
    encoding: str  # float | base64
    dimensions: int | None


def _bad(message: str, param: str, code: str) -> BadRequest:
    return BadRequest(message, code=code, param=param)


def parse_embedding(body: dict[str, Any], settings: Settings) -> EmbeddingRequest:
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise _bad(f"unknown parameter {unknown[0]!r}", unknown[0], "unknown_parameter")
    return EmbeddingRequest(
        model=model_name(body.get("model")),
        inputs=_inputs(body.get("input"), settings.chat_max_message_chars),
        encoding=_encoding(body.get("encoding_format")),
        dimensions=_dimensions(body.get("dimensions")),
    )


def _inputs(raw: Any, limit: int) -> list[str]:
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts:
        raise _bad("input is required: a string, or a list of strings", "input", "invalid_input")
    if len(texts) > MAX_INPUTS:
        raise _bad(f"input has {len(texts)} entries; the limit is {MAX_INPUTS}", "input", "invalid_input")
    for i, text in enumerate(texts):
        where = "input" if isinstance(raw, str) else f"input[{i}]"
        if not isinstance(text, str):
            raise _bad(f"{where} must be a string (token ids are not taken here; send text)", where, "invalid_input")
        if not text:
            raise _bad(f"{where} is empty; send the text to embed", where, "invalid_input")
        if len(text) > limit:
            raise _bad(f"{where} is {len(text)} characters long; the limit is {limit}", where, "invalid_input")
    return texts


def _encoding(raw: Any) -> str:
    if raw is None:
        return "float"
    if raw not in FORMATS:
        raise _bad('encoding_format must be "float" or "base64"', "encoding_format", "invalid_encoding_format")
    return str(raw)


def _dimensions(raw: Any) -> int | None:
    if raw is None:
        return None
    if not isinstance(raw, int) or isinstance(raw, bool) or not 1 <= raw <= MAX_DIMENSIONS:
        raise _bad("dimensions must be a whole number of at least 1", "dimensions", "invalid_dimensions")
    return raw


def _packed(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def embedding_list(request: EmbeddingRequest, model: str, result: Embeddings) -> dict[str, Any]:
    """OpenAI's `list` of `embedding` objects for what Ollama answered."""
    encode = _packed if request.encoding == "base64" else None
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(v) if encode else v}
            for i, v in enumerate(result.vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }
