"""Request bodies decoded and checked by their declared types (msgspec Structs), with 400s that say why.

A route declares its body type (`@function.route(..., body=InstallRequest)`); the runtime reads the
body, decodes it with `msgspec.json.decode(raw, type=...)` and hands the handler the typed value. The
same type gives the OpenAPI document its schema (gateway/openapi.py), so what is documented is what
is checked. Anything wrong is a `BadRequest` whose code and message come from one place, `refusal`:

- not JSON, empty, nested too deep, or not an object: `invalid_json`;
- a field the type does not know (on a type declared with `forbid_unknown_fields=True`): at the top
  `unknown_field` ("unknown field 'x'; a ... has a, b, c"), deeper `invalid_<field>` ("options.x is
  not supported");
- anything else wrong in field `f` (missing, wrong type, out of range): `invalid_<f>` by default, or
  the code the type names in its `codes` class variable (`codes: ClassVar[dict[str, str]] = {"new":
  "invalid_password"}`), with a message naming where (`messages[0].role`) and what it accepts (the
  field's `Meta(description=...)` when it has one).

The API a path speaks (`studio.runtime.errors.dialect`) words two things its own way: on OpenAI's (`/v1/`),
a field the type does not know is `unknown_parameter` at any depth ("unknown parameter 'x'"), and every
refusal about a field names it in `param` (`input[2].call_id`), as OpenAI's SDKs read it; Anthropic's
and the studio's are worded as above. The error's shape (OpenAI's `type`, Anthropic's envelope) is the
one renderer's (studio/runtime/errors.py). Handlers that read the body themselves (`decode=False`) call
`read`; a part decoded later (an item of a list whose kinds differ) is checked with `convert(...,
where="input[3]")`, so its refusal names the whole path.

Checks that depend on settings (a length limit an operator sets) stay in the handler, after decoding.
msgspec decodes straight into the type in one pass (tests/bench/body_bench.py has the figures against
`json.loads` and the hand-written checks it replaced).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from studio.runtime.errors import OPENAI, STUDIO, BadRequest, dialect

T = TypeVar("T")
_AT = re.compile(r"^(?P<reason>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.DOTALL)
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\[\"?([^\]\"]*)\"?\]")
_NOUNS = {
    "str": "a string",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "object": "an object",
    "array": "a list",
    "null": "null",
}


@lru_cache(maxsize=256)
def decoder(type_: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(type_)


def check_content_type(request: web.Request) -> None:
    content_type = request.content_type
    if content_type not in ("application/json", "") and not content_type.endswith("+json"):
        raise BadRequest("send the body as JSON (Content-Type: application/json)", code="unsupported_media_type")


async def read(request: web.Request, type_: type[T]) -> T:
    """The request's body as `type_`, or a 400 that says what is wrong with it (in its API's words)."""
    check_content_type(request)
    return decode(await request.read(), type_, api=dialect(request.path))


def decode(raw: bytes, type_: type[T], *, api: str = STUDIO) -> T:
    if not raw:
        raise BadRequest("the request body is empty; expected a JSON object", code="invalid_json")
    try:
        value: T = decoder(type_).decode(raw)  # type: ignore[arg-type]  # types are hashable
    except msgspec.ValidationError as exc:
        raise refusal(exc, type_, api=api) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:  # nested deeper than the decoder follows: no request needs that
        raise BadRequest("the body's JSON is nested too deep", code="invalid_json") from None
    return value


def convert(data: Any, type_: Any, *, where: str = "", api: str = STUDIO) -> Any:
    """`data` (already parsed JSON: built by another API's translation, or a part of a body at `where`)
    checked as `type_` (a Struct, or a union of them)."""
    try:
        value = msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        raise refusal(exc, type_, where=where, api=api) from None
    return value


def refusal(exc: msgspec.ValidationError, type_: Any, *, where: str = "", api: str = STUDIO) -> BadRequest:
    """The 400 for a body (or the part of one at `where`) that decoded as JSON but is not a `type_`: see the
    module docstring."""
    m = _AT.match(str(exc))
    reason, path = (m.group("reason"), m.group("path") or "$") if m else (str(exc), "$")
    steps = [s for s in _steps(path)]  # inside `type_`
    outer = _steps(where if where.startswith(("[", ".")) else f".{where}") if where else []  # where `type_` sits
    full = [*outer, *steps]
    at = _where(full)
    codes: dict[str, str] = getattr(type_, "codes", None) or {}
    missing = re.match(r"Object missing required field `([^`]+)`", reason)
    unknown = re.match(r"Object contains unknown field `([^`]+)`", reason)
    openai = api == OPENAI

    def refused(message: str, code: str, param: str) -> BadRequest:
        return BadRequest(message, code=code, param=param) if openai and param else BadRequest(message, code=code)

    if unknown and openai:
        param = f"{at}.{unknown.group(1)}" if at else unknown.group(1)
        return refused(f"unknown parameter {param!r}", "unknown_parameter", param)
    if not full:  # about the body itself
        if missing:
            field = missing.group(1)
            code = codes.get(field, f"invalid_{field}")
            return refused(f"{field} is required{_hint(type_, [field])}", code, field)
        if unknown:
            return refused(
                f"unknown field {unknown.group(1)!r}; {_has(type_)}", codes.get("unknown_field", "unknown_field"), ""
            )
        return refused("the body must be a JSON object", "invalid_json", "")
    code = _code(type_, steps, outer)
    if missing:
        param = f"{at}.{missing.group(1)}"
        return refused(f"{param} is required{_hint(type_, [*steps, missing.group(1)])}", code, param)
    if unknown:
        return refused(f"{at}.{unknown.group(1)} is not supported; {_has(_type_at(type_, steps))}", code, at)
    enum = re.match(r"Invalid enum value (.*)", reason)
    if enum:
        values = _literals(_type_at(type_, steps))
        accepted = f"one of {', '.join(map(str, values))}" if values else "one of the accepted values"
        return refused(f"{at} must be {accepted}, not {enum.group(1)}", code, at)
    expected = re.match(r"Expected `([^`]+)`(.*?)(?:, got `([^`]+)`)?$", reason)
    if expected:
        wanted = " or ".join(_NOUNS.get(t.strip(), t.strip()) for t in expected.group(1).split("|") if t.strip())
        got = expected.group(3)
        said = f"{at} must be {wanted}{expected.group(2)}" + (f", not {_NOUNS.get(got, got)}" if got else "")
        return refused(said + _hint(type_, steps), code, at)
    return refused(f"{at}: {reason[:1].lower()}{reason[1:]}{_hint(type_, steps)}", code, at)


def _code(type_: Any, steps: list[str | int], outer: Sequence[str | int] = ()) -> str:
    """`invalid_<top field>` (of the whole body), unless a type along the way names its field's code (`codes`);
    `invalid_json` when no field is named (a list item of the wrong kind at the top)."""
    top = next((s for s in [*outer, *steps] if isinstance(s, str)), None)
    if top is None:
        return "invalid_json"
    code = f"invalid_{top}"
    for i, step in enumerate(steps):
        if isinstance(step, str):
            owner = _unwrap(_type_at(type_, steps[:i]))
            if isinstance(owner, msgspec.inspect.StructType):
                code = (getattr(owner.cls, "codes", None) or {}).get(step, code)
    return code


def _steps(path: str) -> list[str | int]:
    out: list[str | int] = []
    for m in _STEP.finditer(path[1:] if path.startswith("$") else path):
        name, index, key = m.groups()
        out.append(name if name is not None else int(index) if index is not None else key)
    return out


def _where(steps: list[str | int]) -> str:
    out = ""
    for step in steps:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


def _unwrap(info: Any) -> Any:
    inspect = msgspec.inspect
    while True:
        if isinstance(info, inspect.Metadata):
            info = info.type
        elif isinstance(info, inspect.UnionType):
            kinds = [t for t in info.types if not isinstance(t, inspect.NoneType)]
            if len(kinds) != 1:
                return info
            info = kinds[0]
        else:
            return info


@lru_cache(maxsize=256)
def _type_info(type_: Any) -> Any:
    return msgspec.inspect.type_info(type_)  # walks the whole type: once per type, not per refusal


def _field_info(type_: Any, steps: list[str | int]) -> tuple[Any, Any]:
    """The msgspec type info at `steps` inside `type_`, and the field that holds it (or None)."""
    inspect = msgspec.inspect
    info: Any = _type_info(type_)
    field: Any = None
    for step in steps:
        info = _unwrap(info)
        if isinstance(step, int) and isinstance(info, inspect.ListType | inspect.SetType | inspect.VarTupleType):
            info, field = info.item_type, None
        elif isinstance(step, str) and isinstance(info, inspect.StructType):
            found = next((f for f in info.fields if f.encode_name == step), None)
            if found is None:
                return None, None
            info, field = found.type, found
        elif isinstance(step, str) and isinstance(info, inspect.DictType):
            info, field = info.value_type, None
        else:
            return None, None
    return info, field


def _type_at(type_: Any, steps: list[str | int]) -> Any:
    return _field_info(type_, steps)[0]


def _hint(type_: Any, steps: list[str | int]) -> str:
    """`: <the field's description>` when the field says what it accepts (`Meta(description=...)`)."""
    for layer in _layers(_field_info(type_, steps)[0]):
        if isinstance(layer, msgspec.inspect.Metadata):
            description = (layer.extra_json_schema or {}).get("description")
            if description:
                return f": {description}"
    return ""


def _layers(info: Any) -> list[Any]:
    if isinstance(info, msgspec.inspect.Metadata):
        return [info, *_layers(info.type)]
    if isinstance(info, msgspec.inspect.UnionType):
        return [layer for t in info.types for layer in _layers(t)]
    return [info]


def _literals(info: Any) -> tuple[Any, ...]:
    info = _unwrap(info)
    if isinstance(info, msgspec.inspect.LiteralType):
        return tuple(info.values)
    if isinstance(info, msgspec.inspect.EnumType):
        return tuple(m.value for m in info.cls)
    return ()


def _has(info: Any) -> str:
    """'a chat request has model, message, ...': what an object of this type may carry."""
    info = _unwrap(info if isinstance(info, msgspec.inspect.Type) else _type_info(info))
    if not isinstance(info, msgspec.inspect.StructType):
        return "that field is not part of this request"
    noun = getattr(info.cls, "noun", None) or "it"
    return f"{noun} has {', '.join(f.encode_name for f in info.fields)}"
