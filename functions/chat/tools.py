"""Tools and structured output for the OpenAI-compatible API: OpenAI's shapes checked and turned into
Ollama's, and Ollama's tool calls turned back into OpenAI's.

    OpenAI                                              Ollama
    tools [{"type": "function", "function": {...}}]     tools (the same shape; `strict` dropped)
    tool_choice "auto" | absent                         every tool
    tool_choice "none"                                  no tools sent
    tool_choice {"type": "function", "function": {"name"}}  only that tool (Ollama cannot force a call)
    response_format {"type": "json_object"}             format "json"
    response_format {"type": "json_schema", "json_schema": {"name", "schema"}}  format <schema>
    response_format {"type": "text"}                    nothing
    message.tool_calls [{"id", "type", "function": {"name", "arguments": "<JSON string>"}}]
                                                        message.tool_calls [{"function": {"name", "arguments": {...}}}]
    {"role": "tool", "tool_call_id", "content"}         {"role": "tool", "tool_name", "content"}

Everything wrong is a 400 whose message names the field (`tools[1].function.name ...`).
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from studio.runtime.errors import BadRequest

MAX_TOOLS = 128  # OpenAI's own limit
MAX_SCHEMA_BYTES = 64 * 1024  # one tool's (or one response format's) JSON schema, as JSON
MAX_SCHEMA_DEPTH = 32  # objects and lists nested in a schema (real ones rarely pass 10)
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
FUNCTION_KEYS = frozenset({"name", "description", "parameters", "strict"})


def _bad(message: str, param: str, code: str = "invalid_tools") -> BadRequest:
    return BadRequest(message, code=code, param=param)


def parse_tools(tools: Any, choice: Any) -> list[dict[str, Any]] | None:
    """The tools to send to Ollama for OpenAI's `tools` and `tool_choice` (None: send none)."""
    if tools is None or tools == []:
        if choice not in (None, "auto", "none"):
            raise _bad("tool_choice names a tool, but the request has no tools", "tool_choice", "invalid_tool_choice")
        return None
    if not isinstance(tools, list):
        raise _bad('tools must be a list of {"type": "function", "function": {"name", "parameters"}}', "tools")
    if len(tools) > MAX_TOOLS:
        raise _bad(f"tools has {len(tools)} entries; the limit is {MAX_TOOLS}", "tools")
    out: dict[str, dict[str, Any]] = {}
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function" or set(tool) - {"type", "function"}:
            raise _bad(f'{where} must be {{"type": "function", "function": {{...}}}}', where)
        name, function = _function(tool.get("function"), f"{where}.function")
        if name in out:
            raise _bad(f"{where}.function.name {name!r} is used by another tool too", f"{where}.function.name")
        out[name] = {"type": "function", "function": function}
    if choice is None or choice == "auto":
        return list(out.values())
    if choice == "none":
        return None
    if choice == "required":
        raise _bad(
            'tool_choice "required" is not supported: Ollama cannot force a tool call; use "auto" or name a function',
            "tool_choice",
            "invalid_tool_choice",
        )
    named = choice.get("function") if isinstance(choice, dict) and choice.get("type") == "function" else None
    chosen = named.get("name") if isinstance(named, dict) else None
    if not isinstance(chosen, str):
        raise _bad(
            'tool_choice must be "auto", "none" or {"type": "function", "function": {"name": ...}}',
            "tool_choice",
            "invalid_tool_choice",
        )
    if chosen not in out:
        raise _bad(f"tool_choice names {chosen!r}, which is not one of tools", "tool_choice", "invalid_tool_choice")
    return [out[chosen]]


def _function(raw: Any, where: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise _bad(f"{where} must be an object with name, description and parameters", where)
    extra = sorted(set(raw) - FUNCTION_KEYS)
    if extra:
        raise _bad(f"{where}.{extra[0]} is not supported; a function has name, description and parameters", where)
    name = raw.get("name")
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise _bad(f"{where}.name must be 1 to 64 letters, digits, _ or -", f"{where}.name")
    function: dict[str, Any] = {"name": name}
    description = raw.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise _bad(f"{where}.description must be a string", f"{where}.description")
        function["description"] = description
    parameters = raw.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
        raise _bad(f'{where}.parameters must be a JSON schema of {{"type": "object", ...}}', f"{where}.parameters")
    if "properties" in parameters and not isinstance(parameters["properties"], dict):
        raise _bad(f"{where}.parameters.properties must be an object", f"{where}.parameters.properties")
    bounded(parameters, f"{where}.parameters")
    if raw.get("strict") is not None and not isinstance(raw["strict"], bool):
        raise _bad(f"{where}.strict must be true or false", f"{where}.strict")
    function["parameters"] = parameters
    return name, function


def bounded(schema: dict[str, Any], where: str, code: str = "invalid_tools") -> None:
    """A schema Ollama is sent must stay small and shallow: 400 past MAX_SCHEMA_BYTES or MAX_SCHEMA_DEPTH."""
    if _depth(schema, MAX_SCHEMA_DEPTH + 1) > MAX_SCHEMA_DEPTH:
        raise _bad(f"{where} is nested more than {MAX_SCHEMA_DEPTH} levels deep", where, code)
    size = len(json.dumps(schema, ensure_ascii=False).encode())
    if size > MAX_SCHEMA_BYTES:
        raise _bad(f"{where} is {size} bytes of JSON; a schema may be at most {MAX_SCHEMA_BYTES}", where, code)


def _depth(value: Any, stop: int) -> int:
    """How deep objects and lists nest in `value` (counting stops at `stop`: no recursion past it)."""
    deepest, level = 0, [value]
    while level and deepest < stop:
        children = [c for v in level for c in (v.values() if isinstance(v, dict) else v if isinstance(v, list) else ())]
        level = [c for c in children if isinstance(c, dict | list)]
        deepest += 1
    return deepest


def parse_response_format(raw: Any) -> str | dict[str, Any] | None:
    """Ollama's `format` for OpenAI's `response_format`."""
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = raw.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise BadRequest(
                'response_format.json_schema must be {"name": ..., "schema": {a JSON schema object}}',
                code="invalid_response_format",
                param="response_format.json_schema",
            )
        bounded(schema, "response_format.json_schema.schema", "invalid_response_format")
        if "name" in spec and not (isinstance(spec["name"], str) and TOOL_NAME.fullmatch(spec["name"])):
            raise BadRequest(
                "response_format.json_schema.name must be 1 to 64 letters, digits, _ or -",
                code="invalid_response_format",
                param="response_format.json_schema.name",
            )
        return schema
    raise BadRequest(
        'response_format must be {"type": "text"}, {"type": "json_object"} or '
        '{"type": "json_schema", "json_schema": {"name", "schema"}}',
        code="invalid_response_format",
        param="response_format",
    )


def calls_to_ollama(raw: Any, where: str, names: dict[str, str]) -> list[dict[str, Any]]:
    """An assistant message's OpenAI `tool_calls` in Ollama's shape; remembers each call's name by its id,
    so the `tool` message answering it can say which tool spoke (`tool_name`)."""
    if not isinstance(raw, list):
        raise _bad(f"{where} must be a list of tool calls", where, "invalid_messages")
    out = []
    for n, call in enumerate(raw):
        at = f"{where}[{n}]"
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            shape = '{"id", "type": "function", "function": {"name", "arguments"}}'
            raise _bad(f"{at} must be {shape}", at, "invalid_messages")
        arguments = function.get("arguments") if isinstance(function, dict) else None
        try:
            args = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            args = None
        if not isinstance(args, dict):
            raise _bad(f"{at}.function.arguments must be a JSON object in a string", at, "invalid_messages")
        if isinstance(call.get("id"), str):
            names[call["id"]] = name
        out.append({"function": {"name": name, "arguments": args}})
    return out


def calls_from_ollama(calls: list[Any], first: int = 0) -> list[dict[str, Any]]:
    """Ollama's tool calls in OpenAI's shape, each with its `index` (counted from `first`) and an id."""
    out = []
    for n, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        function = function if isinstance(function, dict) else {}
        arguments = function.get("arguments")
        given = call.get("id") if isinstance(call, dict) else None
        out.append(
            {
                "index": first + n,
                "id": given if isinstance(given, str) and given else "call_" + secrets.token_hex(12),
                "type": "function",
                "function": {
                    "name": str(function.get("name") or ""),
                    "arguments": arguments
                    if isinstance(arguments, str)
                    else json.dumps(arguments if arguments is not None else {}, ensure_ascii=False),
                },
            }
        )
    return out
