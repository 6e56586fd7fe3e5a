"""OpenAI's Responses API (`POST /v1/responses`): what Codex, the OpenAI Agents SDK and `responses.create` speak.

Stateless, as Ollama's own `/v1/responses`: every request carries the whole conversation in `input`, and
the studio keeps nothing of it. `previous_response_id`, `conversation` and `item_reference` items are a 400
that says so; `store: true` is accepted and answered `"store": false` (nothing was stored, and the
Response object says it). The request becomes the same `Conversation` as `/v1/chat/completions`
(`conversation()` below, the one place), so the same models, ownership, limits, quotas and usage apply.

    input         a string (one user message), or items:
                    {"type": "message", "role": "user"|"system"|"developer"|"assistant", "content": str | parts}
                      parts: input_text, input_image (a base64 data URL; never fetched), output_text, refusal
                    {"type": "function_call", "call_id", "name", "arguments"}     an earlier tool call
                    {"type": "function_call_output", "call_id", "output"}         its result
                    {"type": "reasoning", ...}                                    echoed back: left out
    instructions  the system message, first
    tools         {"type": "function", "name", "description", "parameters", "strict"}; other types (Codex's
                  web_search, namespace, local_shell, ...) are left out, never refused: Ollama runs no tools
    tool_choice   "auto", "none", {"type": "function", "name"}; "required" is a 400 (Ollama cannot force a call)
    parallel_tool_calls false, max_tool_calls: at most that many calls are returned
    reasoning     {"effort": "none"} turns a thinking model's thinking off; other efforts leave it on; a model
                  that cannot think ignores it. The thinking comes back as a `reasoning` item's summary.
    text.format   {"type": "text" | "json_object"} or {"type": "json_schema", "name", "schema"}: Ollama's format
    max_output_tokens, temperature, top_p   Ollama's num_predict (capped by STUDIO_CHAT_MAX_TOKENS), temperature, top_p
    accepted, change nothing: store, include, prompt_cache_key, prompt_cache_retention, metadata (echoed),
                  client_metadata, user, safety_identifier, service_tier, truncation, stream_options,
                  text.verbosity, reasoning.summary

Answers: a Response object (`ResponsesWire.whole`), or server-sent events with `event:` lines
(`ResponsesWire`): response.created, response.in_progress, then per output item
response.output_item.added ... response.output_item.done (reasoning summary parts and deltas, message
content parts and output_text deltas, function_call_arguments delta/done), then response.completed (or
response.incomplete when max_output_tokens cut it) with `usage`; an error after the first byte is
response.failed. Errors before it are OpenAI's JSON error shape, as on /v1/chat/completions.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any, Literal

import msgspec

from functions.chat.answer import Answer
from functions.chat.completions import EFFORTS, data_url_image
from functions.chat.conversation import Conversation, parse
from functions.chat.relay import SSE_HEADERS, Wire, unescape
from functions.chat.relay import text as json_text
from functions.chat.tools import TOOL_NAME, bounded, calls_from_ollama, parse_tools
from studio.runtime.bodies import convert
from studio.runtime.errors import OPENAI, BadRequest, StudioError
from studio.runtime.settings import Settings

# -- the request, as declared ------------------------------------------------------------------------


class Part(msgspec.Struct, tag_field="type"):
    pass


class InputText(Part, tag="input_text"):
    text: str


class OutputText(Part, tag="output_text"):  # an earlier answer, echoed back
    text: str


class Refusal(Part, tag="refusal"):
    refusal: str


class InputImage(Part, tag="input_image"):
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class InputFile(Part, tag="input_file"):
    file_id: str | None = None
    filename: str | None = None


Parts = list[InputText | OutputText | Refusal | InputImage | InputFile]


class Item(msgspec.Struct, tag_field="type"):
    pass


class Message(Item, tag="message"):
    role: Literal["user", "assistant", "system", "developer"]
    content: str | Parts


class FunctionCall(Item, tag="function_call"):
    call_id: str
    name: str
    arguments: str


class FunctionCallOutput(Item, tag="function_call_output"):
    call_id: str
    output: str | Parts


class Reasoning(Item, tag="reasoning"):  # an earlier answer's thinking, echoed back: not sent to Ollama
    pass


class ItemReference(Item, tag="item_reference"):
    id: str


Input = Message | FunctionCall | FunctionCallOutput | Reasoning | ItemReference


class ReasoningOptions(msgspec.Struct, forbid_unknown_fields=True):
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None  # the older name of `summary`


class TextOptions(msgspec.Struct, forbid_unknown_fields=True):
    format: dict[str, Any] | None = None
    verbosity: str | None = None


class ResponsesRequest(msgspec.Struct, forbid_unknown_fields=True):
    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = None
    reasoning: ReasoningOptions | None = None
    text: TextOptions | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    store: bool | None = None
    include: list[str] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    metadata: dict[str, str] | None = None
    client_metadata: dict[str, Any] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    service_tier: str | None = None
    truncation: str | None = None
    top_logprobs: int | None = None
    background: bool | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None


STATELESS = (
    "this studio keeps no responses (it is stateless, as Ollama's /v1/responses): send the whole conversation "
    "in `input` each time, with store false"
)


@dataclass(frozen=True)
class Responses:
    """A Responses request turned into the studio's conversation, and what the answer echoes of it."""

    conversation: Conversation
    max_calls: int | None  # parallel_tool_calls false: 1; max_tool_calls: that; else no limit
    echo: dict[str, Any]  # the request's settings, as the Response object repeats them


def _bad(message: str, param: str, code: str) -> BadRequest:
    return BadRequest(message, code=code, param=param)


def parse_responses(body: ResponsesRequest, settings: Settings) -> Responses:
    """The one place a Responses request becomes the studio's `Conversation` (then checked like any chat)."""
    _refuse_state(body)
    if body.top_logprobs:
        raise _bad(
            "top_logprobs is not supported: Ollama gives no log probabilities", "top_logprobs", "unsupported_parameter"
        )
    if body.temperature is not None and not 0 <= body.temperature <= 2:
        raise _bad("temperature must be a number from 0 to 2", "temperature", "invalid_temperature")
    if body.top_p is not None and not 0 <= body.top_p <= 1:
        raise _bad("top_p must be a number from 0 to 1", "top_p", "invalid_top_p")
    if body.max_output_tokens is not None and body.max_output_tokens < 1:
        raise _bad(
            "max_output_tokens must be a whole number of at least 1", "max_output_tokens", "invalid_max_output_tokens"
        )
    if body.max_tool_calls is not None and body.max_tool_calls < 1:
        raise _bad("max_tool_calls must be a whole number of at least 1", "max_tool_calls", "invalid_max_tool_calls")
    options: dict[str, Any] = {}
    if body.temperature is not None:
        options["temperature"] = body.temperature
    if body.top_p is not None:
        options["top_p"] = body.top_p
    if body.max_output_tokens is not None:
        options["max_tokens"] = body.max_output_tokens
    functions, sent_tools = _tools(body.tools)
    tools = parse_tools(functions, _tool_choice(body.tool_choice))
    conversation = parse(
        {
            "model": body.model,
            "messages": _messages(body.instructions, body.input, settings),
            "options": options,
            "stream": bool(body.stream),
            "think": _think(body.reasoning),
        },
        settings,
        prepared=True,
    )
    fmt = _format(body.text)
    if tools or fmt is not None:
        conversation = replace(conversation, tools=tools, format=fmt)
    most = 1 if body.parallel_tool_calls is False else None
    if body.max_tool_calls is not None:
        most = min(most or body.max_tool_calls, body.max_tool_calls)
    reasoning = body.reasoning or ReasoningOptions()
    echo = {
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "max_tool_calls": body.max_tool_calls,
        "metadata": body.metadata or {},
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": None,
        "reasoning": {"effort": reasoning.effort, "summary": reasoning.summary or reasoning.generate_summary},
        "store": False,  # whatever was asked: nothing is kept
        "temperature": body.temperature,
        "text": {"format": (body.text.format if body.text and body.text.format else {"type": "text"})},
        "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
        "tools": sent_tools,
        "top_p": body.top_p,
        "truncation": "disabled",
        "user": body.user,
        "background": False,
    }
    return Responses(conversation, most, echo)


def _refuse_state(body: ResponsesRequest) -> None:
    if body.previous_response_id is not None:
        raise _bad(f"previous_response_id cannot be followed: {STATELESS}", "previous_response_id", "stateless")
    if body.conversation is not None:
        raise _bad(f"conversation cannot be followed: {STATELESS}", "conversation", "stateless")
    if body.background:
        raise _bad(
            "background responses are not supported: ask with stream true instead",
            "background",
            "unsupported_parameter",
        )
    if body.prompt is not None:
        raise _bad("stored prompts are not supported: send instructions and input", "prompt", "unsupported_parameter")


def _messages(instructions: str | None, raw: str | list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    """Ollama's messages for the instructions and the input items; images checked, calls named."""
    out: list[dict[str, Any]] = []
    if instructions:
        _within(instructions, "instructions", settings)
        out.append({"role": "system", "content": instructions})
    if isinstance(raw, str):
        _within(raw, "input", settings)
        out.append({"role": "user", "content": raw})
        return out
    names: dict[str, str] = {}  # call_id -> the function called, for the output answering it
    images = 0
    for i, entry in enumerate(raw):
        where = f"input[{i}]"
        if "type" not in entry and "role" in entry:  # the short form {"role", "content"} is a message
            entry = {**entry, "type": "message"}
        item: Input = convert(entry, Input, where=where, api=OPENAI)
        if isinstance(item, Message):
            role = "system" if item.role == "developer" else item.role
            text, pictures = _content(item.content, f"{where}.content", role, settings)
            _within(text, f"{where}.content", settings)
            images += len(pictures)
            message: dict[str, Any] = {"role": role, "content": text}
            if pictures:
                message["images"] = pictures
            out.append(message)
        elif isinstance(item, FunctionCall):
            try:
                arguments = json.loads(item.arguments)
            except ValueError:
                arguments = None
            if not isinstance(arguments, dict):
                raise _bad(
                    f"{where}.arguments must be a JSON object in a string", f"{where}.arguments", "invalid_input"
                )
            names[item.call_id] = item.name
            call = {"function": {"name": item.name, "arguments": arguments}}
            if out and out[-1]["role"] == "assistant":  # calls made in one turn: one assistant message
                out[-1].setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutput):
            text, pictures = _content(item.output, f"{where}.output", "tool", settings)
            _within(text, f"{where}.output", settings)
            message = {"role": "tool", "content": text}
            if item.call_id in names:
                message["tool_name"] = names[item.call_id]
            out.append(message)
        elif isinstance(item, ItemReference):
            raise _bad(f"{where}: an item_reference cannot be followed: {STATELESS}", where, "stateless")
        # Reasoning: an earlier answer's thinking, which Ollama does not take back
    if len(out) > settings.chat_max_messages:
        raise _bad(
            f"instructions and input make {len(out)} messages; the limit is {settings.chat_max_messages} "
            "(the operator's STUDIO_CHAT_MAX_MESSAGES; every function call and its output count)",
            "input",
            "invalid_input",
        )
    if images > settings.chat_max_images:
        raise _bad(
            f"input carries {images} images; a request may carry at most {settings.chat_max_images}",
            "input",
            "too_many_images",
        )
    return out


def _within(text: str, where: str, settings: Settings) -> None:
    limit = settings.chat_max_message_chars
    if len(text) > limit:
        code = "invalid_instructions" if where == "instructions" else "invalid_input"
        raise _bad(
            f"{where} is {len(text)} characters long; the limit is {limit} "
            "(the operator's STUDIO_CHAT_MAX_MESSAGE_CHARS, for each message)",
            where,
            code,
        )


def _content(content: str | Parts, where: str, role: str, settings: Settings) -> tuple[str, list[str]]:
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        if isinstance(part, InputText | OutputText):
            texts.append(part.text)
        elif isinstance(part, Refusal):
            texts.append(part.refusal)
        elif isinstance(part, InputImage):
            if role != "user":
                raise _bad(f"{at}: only a user message may carry images", at, "invalid_images")
            if part.image_url is None:
                raise _bad(
                    f"{at}.image_url is required: this studio has no files API, send the image inline as a data URL",
                    f"{at}.image_url",
                    "invalid_images",
                )
            images.append(data_url_image(part.image_url, f"{at}.image_url", settings))
        else:
            raise _bad(f"{at}: files are not supported here; send text, or images as input_image", at, "invalid_input")
    return "".join(texts), images


def _tools(raw: list[dict[str, Any]] | None) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """The function tools in the chat API's shape (for `parse_tools`), and as the Response echoes them.

    Tools of other types (web_search, namespace, file_search, local_shell, custom, mcp...) are hosted by
    OpenAI or run by the client's own conventions: Ollama cannot call them, so they are left out."""
    if raw is None:
        return None, []
    functions: list[dict[str, Any]] = []
    echoed: list[dict[str, Any]] = []
    for i, tool in enumerate(raw):
        if tool.get("type") != "function":
            if not isinstance(tool.get("type"), str):
                raise _bad(f'tools[{i}].type is required, such as "function"', f"tools[{i}].type", "invalid_tools")
            continue
        spec = {k: v for k, v in tool.items() if k in ("name", "description", "parameters", "strict")}
        extra = sorted(set(tool) - {"type", "name", "description", "parameters", "strict", "defer_loading"})
        if extra:
            raise _bad(f"tools[{i}].{extra[0]} is not supported", f"tools[{i}].{extra[0]}", "invalid_tools")
        functions.append({"type": "function", "function": spec})
        echoed.append({"type": "function", "description": None, "parameters": None, "strict": None, **spec})
    return functions, echoed


def _tool_choice(raw: str | dict[str, Any] | None) -> Any:
    """The chat API's `tool_choice` for the Responses API's."""
    if raw is None or isinstance(raw, str):
        return raw
    if raw.get("type") == "function" and isinstance(raw.get("name"), str):
        return {"type": "function", "function": {"name": raw["name"]}}
    raise _bad(
        'tool_choice must be "auto", "none" or {"type": "function", "name": ...}: Ollama runs no hosted tools',
        "tool_choice",
        "invalid_tool_choice",
    )


def _think(reasoning: ReasoningOptions | None) -> bool | None:
    if reasoning is None or reasoning.effort is None:
        return None
    if reasoning.effort not in EFFORTS:
        raise _bad(f"reasoning.effort must be one of {', '.join(EFFORTS)}", "reasoning.effort", "invalid_reasoning")
    return False if reasoning.effort == "none" else None


def _format(text: TextOptions | None) -> str | dict[str, Any] | None:
    fmt = text.format if text else None
    if fmt is None or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return "json"
    if fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise _bad("text.format.schema must be a JSON schema object", "text.format.schema", "invalid_text")
        name = fmt.get("name")
        if name is not None and not (isinstance(name, str) and TOOL_NAME.fullmatch(name)):
            raise _bad("text.format.name must be 1 to 64 letters, digits, _ or -", "text.format.name", "invalid_text")
        bounded(schema, "text.format.schema", "invalid_text")
        return schema
    raise _bad(
        'text.format must be {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "name", "schema"}',
        "text.format",
        "invalid_text",
    )


# -- the answer ---------------------------------------------------------------------------------------


def _usage(answer: Answer) -> dict[str, Any]:
    t = answer.totals()
    prompt, completion = int(t["prompt_tokens"] or 0), int(t["completion_tokens"] or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(t["thinking_tokens"] or 0)},  # part of output_tokens
        "total_tokens": prompt + completion,
    }


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


class ResponsesWire(Wire):
    """The answer as a Response object, or as the Responses API's events, through the one relay.

    While streaming it keeps the output items finished so far (for response.completed) and the one
    being written: a `reasoning` item while the model thinks, then a `message` while it writes; each
    tool call is an item of its own, written whole (Ollama sends a call whole)."""

    api = "responses"  # as the usage event and metrics name the dialect

    headers = SSE_HEADERS

    def __init__(self, model: str, echo: dict[str, Any] | None = None, max_calls: int | None = None) -> None:
        self.id = "resp_" + secrets.token_hex(16)
        self.created = int(time.time())
        self.model = model
        self.echo = echo or {}
        self.max_calls = max_calls
        self.sequence = 0
        self.output: list[dict[str, Any]] = []  # items finished
        self.open: dict[str, Any] | None = None  # the reasoning or message item being written
        self.text: list[str | bytes] = []  # the open item's text so far (bytes: as Ollama escaped it)
        self.calls = 0
        self.started = False
        self._delta = b""  # the open item's delta event, up to the delta itself
        self._kind = ""  # the open item's type ("" none): its deltas skip the checks of _write

    # -- shapes --

    def response(self, status: str, output: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "model": self.model,
            "output": output,
            "usage": None,
            **self.echo,
            **more,
        }

    def _finished(self, answer: Answer, output: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        if answer.totals()["done_reason"] == "length" and not self.calls:
            return "incomplete", self.response(
                "incomplete", output, incomplete_details={"reason": "max_output_tokens"}, usage=_usage(answer)
            )
        return "completed", self.response("completed", output, usage=_usage(answer))

    @staticmethod
    def _message(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": [part]}

    @staticmethod
    def _reasoning(item_id: str, text: str) -> dict[str, Any]:
        summary = [{"type": "summary_text", "text": text}] if text else []
        return {"type": "reasoning", "id": item_id, "summary": summary, "encrypted_content": None}

    def _function_calls(self, calls: list[Any]) -> list[dict[str, Any]]:
        if self.max_calls is not None:
            calls = calls[: max(0, self.max_calls - self.calls)]
        shaped = calls_from_ollama(calls, self.calls)
        self.calls += len(shaped)
        return [
            {
                "type": "function_call",
                "id": "fc_" + secrets.token_hex(12),
                "call_id": c["id"],
                "name": c["function"]["name"],
                "arguments": c["function"]["arguments"],
                "status": "completed",
            }
            for c in shaped
        ]

    # -- a whole answer --

    def whole(self, answer: Answer, text: str, thinking: str = "", calls: list[Any] | None = None) -> dict[str, Any]:
        output: list[dict[str, Any]] = []
        if thinking:
            output.append(self._reasoning("rs_" + secrets.token_hex(12), thinking))
        if text or not calls:
            output.append(self._message("msg_" + secrets.token_hex(12), text))
        output.extend(self._function_calls(calls or []))
        return self._finished(answer, output)[1]

    # -- a stream of events --

    def event(self, kind: str, **fields: Any) -> bytes:
        self.sequence += 1
        data = {"type": kind, "sequence_number": self.sequence - 1, **fields}
        return b"event: " + kind.encode() + b"\ndata: " + _dumps(data) + b"\n\n"

    def _begin(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        opening = self.response("in_progress", [])
        return self.event("response.created", response=opening) + self.event("response.in_progress", response=opening)

    def _switch(self, kind: str) -> bytes:
        """Events that leave the open item for one of `kind` (None: for none)."""
        if self.open is not None and self.open["type"] == kind:
            return b""
        out = self._close()
        if kind == "message":
            self.open = self._message("msg_" + secrets.token_hex(12), "", "in_progress")
            self.open["content"] = []
            out += self._added(self.open)
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += self.event("response.content_part.added", **self._where(), content_index=0, part=part)
            prefix = {"type": "response.output_text.delta", **self._where(), "content_index": 0, "logprobs": []}
        elif kind == "reasoning":
            self.open = self._reasoning("rs_" + secrets.token_hex(12), "")
            out += self._added(self.open)
            part = {"type": "summary_text", "text": ""}
            out += self.event("response.reasoning_summary_part.added", **self._where(), summary_index=0, part=part)
            prefix = {"type": "response.reasoning_summary_text.delta", **self._where(), "summary_index": 0}
        else:
            return out
        head = _dumps(prefix)[:-1]
        self._delta = b"event: " + prefix["type"].encode() + b"\ndata: " + head + b', "delta": '
        return out

    def _where(self) -> dict[str, Any]:
        assert self.open is not None
        return {"item_id": self.open["id"], "output_index": len(self.output)}

    def _added(self, item: dict[str, Any]) -> bytes:
        return self.event("response.output_item.added", output_index=len(self.output), item=item)

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        item, text = self.open, "".join(p if isinstance(p, str) else unescape(p) for p in self.text)
        where = self._where()
        if item["type"] == "message":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            out = self.event("response.output_text.done", **where, content_index=0, text=text, logprobs=[])
            out += self.event("response.content_part.done", **where, content_index=0, part=part)
            done = self._message(item["id"], text)
        else:
            part = {"type": "summary_text", "text": text}
            out = self.event("response.reasoning_summary_text.done", **where, summary_index=0, text=text)
            out += self.event("response.reasoning_summary_part.done", **where, summary_index=0, part=part)
            done = self._reasoning(item["id"], text)
        out += self.event("response.output_item.done", output_index=len(self.output), item=done)
        self.output.append(done)
        self.open, self.text, self._kind = None, [], ""
        return out

    def _write(self, kind: str, text: str) -> bytes:
        out = self._begin() + self._switch(kind)
        self._kind = kind
        return out + self._more(text)

    def _more(self, text: str) -> bytes:
        """One delta of the open item: the hot path, one per token (tests/bench/chat_bench.py)."""
        self.text.append(text)
        self.sequence += 1
        return b'%s%s, "sequence_number": %d}\n\n' % (self._delta, json_text(text), self.sequence - 1)

    def token(self, content: str) -> bytes:
        if self._kind != "message":
            return self._write("message", content)
        self.text.append(content)  # `_more`, inlined: the hot path, one per token
        self.sequence += 1
        return b'%s%s, "sequence_number": %d}\n\n' % (self._delta, json_text(content), self.sequence - 1)

    def tokens(self, texts: list[bytes]) -> bytes:
        if self._kind != "message":  # the message item opens with the first
            return self.token(unescape(texts[0])) + (self.tokens(texts[1:]) if len(texts) > 1 else b"")
        self.text.append(b"".join(texts))  # (escaped pieces joined: the escaped whole)
        start, delta = self.sequence, self._delta
        self.sequence += len(texts)
        return b"".join([b'%s"%s", "sequence_number": %d}\n\n' % (delta, t, n) for n, t in enumerate(texts, start)])

    def thinking(self, text: str) -> bytes:
        return self._more(text) if self._kind == "reasoning" else self._write("reasoning", text)

    def tool_calls(self, calls: list[Any]) -> bytes:
        out = self._begin() + self._close()
        for item in self._function_calls(calls):
            index = len(self.output)
            out += self._added({**item, "arguments": "", "status": "in_progress"})
            where = {"item_id": item["id"], "output_index": index}
            out += self.event("response.function_call_arguments.delta", **where, delta=item["arguments"])
            out += self.event(
                "response.function_call_arguments.done", **where, name=item["name"], arguments=item["arguments"]
            )
            out += self.event("response.output_item.done", output_index=index, item=item)
            self.output.append(item)
        return out

    def done(self, answer: Answer) -> bytes:
        out = self._begin()
        if not self.output and self.open is None:  # nothing was said: an empty message, as OpenAI's
            out += self._switch("message")
        out += self._close()
        status, response = self._finished(answer, self.output)
        return out + self.event(f"response.{status}", response=response)

    def error(self, error: StudioError) -> bytes:
        failed = self.response("failed", self.output, error={"code": error.code, "message": error.message})
        return self._begin() + self.event("response.failed", response=failed)
