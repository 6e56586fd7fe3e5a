"""Request bodies of the OpenAI-compatible API, declared as msgspec Structs and decoded in one place.

`decode` turns the body's bytes into the declared shape in one pass (types, required fields, unknown
fields), and every way that can fail becomes one 400 in OpenAI's error shape, naming the field:

    malformed JSON, a body that is not an object      400 invalid_json
    a field no request of this kind has               400 unknown_parameter   (param: the field)
    a field of the wrong type or value                400 invalid_<field>     (param: its path, e.g. input[2].call_id)
    a value in a list too long, or nested too deep    the same, from msgspec's own checks

What a shape cannot say (ranges that depend on settings, what a model can do) is checked after decoding,
by the module that owns the request (responses.py, completions.py, embeddings.py).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from studio.runtime.errors import BadRequest

T = TypeVar("T")

_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>[^`]+)`")


async def read_json(request: web.Request, shape: type[T]) -> T:
    """The request's body decoded as `shape`, or the 400 saying what is wrong with it."""
    if request.content_type not in ("application/json", "") and not request.content_type.endswith("+json"):
        raise BadRequest("send the body as JSON (Content-Type: application/json)", code="unsupported_media_type")
    raw = await request.read()
    if not raw:
        raise BadRequest("the request body is empty; expected a JSON object", code="invalid_json")
    return decode(raw, shape)


def decode(raw: bytes, shape: type[T]) -> T:
    try:
        return msgspec.json.decode(raw, type=shape)
    except msgspec.ValidationError as exc:
        raise invalid(exc) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:  # nested deeper than the decoder follows: no request needs that
        raise BadRequest("the body's JSON is nested too deep", code="invalid_json") from None


def convert(value: Any, shape: Any, where: str) -> Any:
    """A part of a body already decoded (an item of a list whose kinds differ) checked as `shape`."""
    try:
        return msgspec.convert(value, type=shape)
    except msgspec.ValidationError as exc:
        raise invalid(exc, where) from None


def invalid(exc: msgspec.ValidationError, where: str = "") -> BadRequest:
    """msgspec's account of a mismatch as OpenAI's 400: the field's path as `param`, a code naming the field."""
    text = str(exc)
    found = _AT.search(text)
    path = where + (found.group("path") if found else "")
    path = path.lstrip(".")
    what = text[: found.start()] if found else text
    unknown = _UNKNOWN.match(what)
    if unknown:
        param = f"{path}.{unknown.group('name')}" if path else unknown.group("name")
        return BadRequest(f"unknown parameter {param!r}", code="unknown_parameter", param=param)
    if not path:
        if what.startswith("Expected `object`"):
            return BadRequest("the body must be a JSON object", code="invalid_json")
        missing = re.match(r"Object missing required field `([^`]+)`", what)
        if missing:
            name = missing.group(1)
            return BadRequest(f"{name} is required", code=f"invalid_{name}", param=name)
        return BadRequest(what, code="invalid_request")
    field = re.match(r"[A-Za-z_]+", path)
    code = f"invalid_{field.group(0)}" if field else "invalid_request"
    missing = re.match(r"Object missing required field `([^`]+)`", what)
    if missing:
        return BadRequest(f"{path}.{missing.group(1)} is required", code=code, param=f"{path}.{missing.group(1)}")
    return BadRequest(f"{path}: {_plain(what)}", code=code, param=path)


def _plain(what: str) -> str:
    """msgspec's wording with its backticks dropped: `Expected `int`, got `str`` -> expected int, got str."""
    text = what.replace("`", "")
    return text[:1].lower() + text[1:]
