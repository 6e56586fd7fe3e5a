"""chat: conversations with the models a visitor owns (or free ones), streamed from Ollama as they are written.

HTTP    POST /api/chat  {"model", "message"}  or
          {"model", "messages": [{"role", "content", "images"}], "options", "stream", "think"}
          stream false -> 200 {"response", "model", "done_reason", "prompt_tokens", "completion_tokens",
                               "total_duration_ms", "tokens_per_s", "time_to_first_token_ms"}
          stream true  -> 200 text/event-stream: `token` events, then `done` with the totals, or `error`
                          (wire format in relay.py; errors before the first token are JSON errors instead)
          400 invalid_<field> / unknown_field / model_has_no_vision / not_a_chat_model    413 image_too_large
          401 no_session    403 not_owned    404 unknown_model
          409 not_installed    429 rate_limited / too_many_generations (Retry-After)    502 ollama_error
          503 ollama_unavailable / ollama_busy (Retry-After)    504 ollama_timeout (no first token in time)
        POST /v1/chat/completions  OpenAI's request -> OpenAI's chat.completion, or chat.completion.chunk SSE and
                                   [DONE]; the same answer, limits and events (completions.py)
        POST /v1/responses         OpenAI's Responses API, stateless -> a Response object, or its events (responses.py)
        POST /v1/embeddings        OpenAI's embeddings request -> Ollama's /api/embed -> OpenAI's list of embeddings,
                                   for models with `embedding`; the same keys, ownership, limits, events (embeddings.py)
        POST /v1/completions       OpenAI's legacy completions: a prompt in, text out, whole or streamed
        GET  /v1/models            the models the caller may chat with now (owned or free, installed; while
                                   Ollama is down, what the nodes last held)
        GET  /v1/models/{id}       one of them, from the catalog and ownership
        POST /v1/messages          Anthropic's Messages API (Claude Code, the anthropic SDK; `?beta=true` too) -> its
                                   Message, or its SSE events; the same answer, limits and events (messages.py)
        POST /v1/messages/count_tokens  {"input_tokens"}: an estimate (Ollama has no tokenizer endpoint)
        GET  /api/account/usage?days=30   tokens per model per day (chat_usage); the operator: &all=1
Events  consumes purchase.completed, purchase.revoked, purchase.suspended, purchase.restored,
                 purchase.transferred, in batches (who owns what: table chat_ownership)
        hears    purchase.revoked, purchase.suspended, purchase.restored live on every replica (what
                 each replica remembers it owns, entitlements.py)
        emits    chat.completed | chat.failed | chat.cancelled, one per answer: usage and which `api` (dialect),
                 never content; through the outbox, in the transaction that frees the answer's slot
Query   asks purchases.owns (the purchase function) whether a caller owns a paid model (entitlements.py)
        answers chat.nodes {} -> {"nodes": {url: {status, models, loaded, in_flight, answers}}, "fallbacks": n}

A visitor who stops (closes the connection) ends the Ollama request at once, so generation stops.
Nodes (STUDIO_OLLAMA_URLS): an answer goes to the best node and moves on to another one when a node fails
before the first token; a model's cloud fallback answers when every node is saturated (nodes.py).
Limits: STUDIO_CHAT_* (message size and count, max tokens, answers at once, requests a minute and tokens
a day per caller, shared by every replica through the database (limits.py), time to the first token and
between tokens).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from events.catalog import (
    PurchaseCompleted,
    PurchaseRestored,
    PurchaseRevoked,
    PurchaseSuspended,
    PurchaseTransferred,
)
from events.delivery import Delivery
from functions.chat import completions, messages, nodes, relay
from functions.chat.answer import Answer, UsageReports
from functions.chat.completions import (
    CompletionRequest,
    CompletionWire,
    TextCompletionRequest,
    TextCompletionWire,
    openai_errors,
    parse_completion,
    parse_text_completion,
)
from functions.chat.contract import (
    OPENAI_OBJECT,
    AnthropicError,
    ChatAnswer,
    EmbeddingList,
    ModelList,
    OpenAIError,
    Usage,
    UsageQuery,
)
from functions.chat.conversation import ChatRequest, Conversation, model_name, parse
from functions.chat.disconnects import Disconnects
from functions.chat.embeddings import EmbeddingBody, embedding_list, parse_embedding
from functions.chat.entitlements import Ownership, chattable_model, model_for, usable_models
from functions.chat.limits import SharedLimits, Slot, seconds_to_midnight, usage_of
from functions.chat.messages import CountTokensRequest, MessagesRequest, MessagesWire
from functions.chat.responses import ResponsesRequest, ResponsesWire, parse_responses
from studio import catalog
from studio.clients.cloud import CloudFallback
from studio.clients.fleet import Fleet
from studio.clients.ollama import OllamaError
from studio.runtime import bodies
from studio.runtime.errors import BadRequest, GatewayTimeout, StudioError, TooManyRequests, Unauthorized
from studio.runtime.function import Function, Key
from studio.runtime.identity import identity, require_visitor

if TYPE_CHECKING:
    from studio.runtime.settings import Settings

function = Function(
    "chat",
    migrations=Path(__file__).parent / "migrations",
    publishes=("chat.completed", "chat.failed", "chat.cancelled"),
    asks=("purchases.owns",),
)

CATALOG = Key[catalog.Catalog]("catalog")
FLEET = Key[Fleet]("fleet")
CLOUD = Key[CloudFallback]("cloud")
LIMITS = Key[SharedLimits]("limits")
DISCONNECTS = Key[Disconnects]("disconnects")
REPORTS = Key[UsageReports]("reports")
OWNERSHIP = Key[Ownership]("ownership")


@function.reports_load
def ollama_queue() -> dict[str, dict[str, int]]:
    """Answers open on each Ollama node (waiting or being written): the monitor's queue-depth signal."""
    return {"ollama_queue": {node.url: node.in_flight for node in function[FLEET].nodes}}


@function.resource
async def dependencies(fn: Function) -> AsyncIterator[None]:
    s = fn.settings
    fn[CATALOG] = catalog.cached(s.catalog_path)
    fn[FLEET] = fleet = Fleet(s.ollama_nodes)
    fleet.start()
    fn[CLOUD] = cloud = CloudFallback(s.fallback_api_key.get() if s.fallback_api_key else "")
    fn[REPORTS] = reports = UsageReports(fn.bus.publish, fn.log)
    fn[LIMITS] = SharedLimits(
        fn.db,
        concurrent=s.chat_concurrent_per_visitor,
        per_minute=s.chat_requests_per_minute,
        tokens_per_day=s.chat_tokens_per_day,
        unrecorded=reports.send,
    )
    fn[DISCONNECTS] = disconnects = Disconnects()
    fn[OWNERSHIP] = Ownership(fn.db)
    yield
    await disconnects.close()
    await reports.drain()
    await fleet.close()
    await cloud.close()


@function.answer("chat.nodes")
async def node_report(query: dict[str, object]) -> dict[str, object]:
    """What this replica knows of each Ollama node (for /health), and how often the fallback answered."""
    return {"nodes": function[FLEET].report(), "fallbacks": function[REPORTS].fallbacks}


@function.subscribe(
    PurchaseCompleted, PurchaseRevoked, PurchaseSuspended, PurchaseRestored, PurchaseTransferred, batch=True
)
async def track_ownership(deliveries: list[Delivery]) -> None:
    await function[OWNERSHIP].apply([(d.data, d.event.time) for d in deliveries])


@function.listen(PurchaseRevoked, PurchaseSuspended, PurchaseRestored)
async def hear_access_change(change: PurchaseRevoked | PurchaseSuspended | PurchaseRestored) -> None:
    """Every replica, as soon as it is published: a refund or dispute ends what this replica remembers."""
    if isinstance(change, PurchaseRestored):
        function[OWNERSHIP].restored(change.user_id, change.model)
    else:
        function[OWNERSHIP].forget(change.user_id, change.model)


def chat_body_limit(settings: Settings) -> int:
    """A request that may carry images (/api/chat, chat completions, responses, messages): their room and the text's."""
    return settings.chat_max_body_bytes


def text_body_limit(settings: Settings) -> int:
    """A request whose shape carries text only (a prompt, texts to embed): a megabyte or two, not the images' 58."""
    return settings.chat_max_text_body_bytes


# What every /v1 dialect's answering route shares: chat's time to the first answer, chat's body limit
# (images), personal keys welcome and no visitor minted, one stream per request, and its body read by the
# handler (studio/runtime/bodies.py: errors in the words of the API its path speaks); the declared body
# type documents it. A dialect whose requests carry no images takes TEXT_ANSWER's smaller limit.
DIALECT_ANSWER: dict[str, Any] = {
    "timeout": 150,
    "max_body": chat_body_limit,
    "visitor": False,
    "keys": True,
    "stream": True,
    "decode": False,
}
TEXT_ANSWER: dict[str, Any] = DIALECT_ANSWER | {"max_body": text_body_limit}


@function.route(
    "POST",
    "/api/chat",
    summary="Chat with an owned (or free) installed model",
    body=ChatRequest,
    response=ChatAnswer,
    errors=(401, 403, 404, 409, 429, 502, 503, 504),
    timeout=150,
    max_body=chat_body_limit,
    visitor=False,
    keys=True,
    stream=True,
)
async def chat(request: web.Request, body: ChatRequest) -> web.StreamResponse:
    started = time.perf_counter()
    caller(request)
    conversation = parse(body, function.settings)
    return await converse(request, conversation, relay.STUDIO_WIRE, started)


@function.route(
    "POST",
    "/v1/chat/completions",
    summary="OpenAI-compatible chat completions, whole or streamed (chat.completion.chunk, [DONE])",
    body=CompletionRequest,
    response=OPENAI_OBJECT,
    error=OpenAIError,
    **DIALECT_ANSWER,
)
async def chat_completions(request: web.Request) -> web.StreamResponse:
    """The OpenAI-compatible API: the same answer as /api/chat, in OpenAI's shapes (completions.py)."""
    started = time.perf_counter()
    with openai_errors():
        caller(request)
        completion = parse_completion(await bodies.read(request, CompletionRequest), function.settings)
        wire = CompletionWire(completion.conversation.model, completion.include_usage, completion.max_calls)
        return await converse(request, completion.conversation, wire, started)


@function.route(
    "POST",
    "/v1/completions",
    summary="OpenAI-compatible legacy completions: a prompt in, text out, whole or streamed",
    body=TextCompletionRequest,
    response=OPENAI_OBJECT,
    error=OpenAIError,
    **TEXT_ANSWER,
)
async def text_completions(request: web.Request) -> web.StreamResponse:
    """OpenAI's legacy completions (a prompt in, text out), as Ollama's compatibility layer serves them."""
    started = time.perf_counter()
    with openai_errors():
        caller(request)
        completion = parse_text_completion(await bodies.read(request, TextCompletionRequest), function.settings)
        wire = TextCompletionWire(completion.conversation.model, completion.include_usage)
        return await converse(request, completion.conversation, wire, started)


@function.route(
    "POST",
    "/v1/responses",
    summary="OpenAI's Responses API, stateless (as Ollama's): a Response object, or its events "
    "(`event:` lines, response.created ... response.completed)",
    body=ResponsesRequest,
    response=OPENAI_OBJECT,
    error=OpenAIError,
    **DIALECT_ANSWER,
)
async def create_response(request: web.Request) -> web.StreamResponse:
    """OpenAI's Responses API (Codex, the Agents SDK), stateless: the same answer in its shapes (responses.py)."""
    started = time.perf_counter()
    with openai_errors():
        caller(request)
        asked = parse_responses(await bodies.read(request, ResponsesRequest), function.settings)
        wire = ResponsesWire(asked.conversation.model, asked.echo, asked.max_calls)
        return await converse(request, asked.conversation, wire, started)


@function.route(
    "POST",
    "/v1/messages",
    summary="Anthropic's Messages API (Claude Code, the anthropic SDK; `?beta=true` too): a Message, or its "
    "events (message_start ... message_stop); the key as `x-api-key` or `Authorization: Bearer`",
    body=MessagesRequest,
    response=OPENAI_OBJECT,
    error=AnthropicError,
    errors=(529,),
    **DIALECT_ANSWER,
)
async def anthropic_messages(request: web.Request) -> web.StreamResponse:
    """Anthropic's Messages API: the same answer as /api/chat, in Anthropic's shapes (messages.py); errors
    in its shape come from the one renderer (studio/runtime/errors.py)."""
    started = time.perf_counter()
    caller(request)
    wanted = messages.conversation(await bodies.read(request, MessagesRequest), function.settings)
    wire = MessagesWire(wanted.conversation.model, wanted.one_call)
    return await converse(request, wanted.conversation, wire, started)


@function.route(
    "POST",
    "/v1/messages/count_tokens",
    summary="How many input tokens a Messages request is, estimated (Ollama has no tokenizer endpoint: "
    "about four characters a token)",
    body=CountTokensRequest,
    response=OPENAI_OBJECT,
    error=AnthropicError,
    timeout=30,
    max_body=chat_body_limit,
    visitor=False,
    keys=True,
    decode=False,
)
async def count_message_tokens(request: web.Request) -> web.Response:
    """How many input tokens a Messages request would be, estimated, for a model the caller may use."""
    who = identity(request)
    caller(request)
    wanted = messages.conversation(await bodies.read(request, CountTokensRequest), function.settings)
    model = await chattable_model(function[CATALOG], function.bus, function[OWNERSHIP], who, wanted.conversation.model)
    return web.json_response({"input_tokens": messages.estimate_tokens(wanted.conversation.for_model(model))})


@function.route(
    "POST",
    "/v1/embeddings",
    summary="OpenAI-compatible embeddings (models with `embedding`)",
    body=EmbeddingBody,
    response=EmbeddingList,
    error=OpenAIError,
    timeout=150,
    max_body=text_body_limit,
    visitor=False,
    keys=True,
    decode=False,
)
async def embeddings(request: web.Request) -> web.Response:
    """Vectors for text from an embedding model the caller may use; usage is reported like an answer's."""
    started = time.perf_counter()
    with openai_errors():
        who, user_id = identity(request), caller(request)
        wanted = parse_embedding(await bodies.read(request, EmbeddingBody), function.settings)
        model = await model_for(function[CATALOG], function.bus, function[OWNERSHIP], who, wanted.model)
        if not model.can("embedding"):
            raise BadRequest(
                f"{model.name} does not make embeddings; pick a model with embedding, such as nomic-embed-text",
                code="model_has_no_embedding",
            )
        answer = Answer(model.id, user_id, started, key_id=who.key_id, api="embeddings")
        async with function[LIMITS].admit(user_id) as slot:
            try:
                node, result = await nodes.embed(
                    function[FLEET],
                    model.id,
                    wanted.inputs,
                    dimensions=wanted.dimensions,
                    timeout=function.settings.chat_first_token_timeout_s,
                )
                answer.served_by(node)
                answer.complete({"prompt_eval_count": result.prompt_tokens, "eval_count": 0, "done_reason": "embedded"})
            except OllamaError as exc:
                error = _refused(exc) or relay.ollama_failure(exc, model.id)
                answer.fail(error.code)
                raise error from None
            except asyncio.CancelledError:
                answer.cancel()
                raise
            finally:
                settle(slot, answer)
        return web.json_response(embedding_list(wanted, model.id, result))


def _refused(exc: OllamaError) -> StudioError | None:
    """Ollama's 400 to an embedding request (dimensions beyond the model's, input longer than its context)."""
    if exc.status == 400:
        return BadRequest(f"the model refused the input: {exc.message}", code="invalid_embedding_request")
    return None


@function.route(
    "GET",
    "/v1/models",
    summary="OpenAI-compatible: the models the caller may chat with now (owned or free, installed)",
    response=ModelList,
    error=OpenAIError,
    errors=(401, 502, 503),
    timeout=10,
    visitor=False,
    keys=True,
)
async def list_models(request: web.Request) -> web.Response:
    """The models the caller may chat with now: owned or free, and installed. While no Ollama node answers,
    what the nodes last said they hold (or, never reached, every usable model): a client's start-up check
    must not fail because Ollama is down for a moment."""
    with openai_errors():
        who = identity(request)
        caller(request)
        usable = await usable_models(function[CATALOG], function[OWNERSHIP], who)
        fleet = function[FLEET]
        try:
            installed = await nodes.installed_anywhere(fleet)
        except OllamaError as exc:
            function.log.warning("the model list is answered without Ollama: %s", exc.message)
            installed = set().union(*(n.models for n in fleet.nodes)) or set(usable)
        return web.json_response(completions.model_list([m for m in usable if m in installed]))


@function.route(
    "GET",
    "/v1/models/{model}",
    summary="OpenAI-compatible: one model the caller may use (free or owned), from the catalog",
    response=OPENAI_OBJECT,
    error=OpenAIError,
    errors=(401, 403, 404),
    timeout=10,
    visitor=False,
    keys=True,
)
async def retrieve_model(request: web.Request) -> web.Response:
    """One model the caller may use (free or owned), from the catalog: 404 unknown, 403 not owned."""
    with openai_errors():
        who = identity(request)
        caller(request)
        wanted = model_name(request.match_info["model"])
        model = await chattable_model(function[CATALOG], function.bus, function[OWNERSHIP], who, wanted)
        return web.json_response(completions.model_list([model.id])["data"][0])


def caller(request: web.Request) -> str:
    """Whom the answer is for: a known visitor, an account (session or key), or the operator; else 401."""
    who = identity(request)
    if who.user_id:
        return who.user_id
    if who.admin:
        return "operator"
    return require_visitor(request)


async def converse(
    request: web.Request,
    conversation: Conversation,
    wire: relay.Wire,
    started: float,
    *,
    api: str | None = None,
) -> web.StreamResponse:
    """One answer, whatever the API: entitlement, limits, Ollama, the relay, the usage event.

    `api` names the dialect in the usage event and metrics (chat, responses, messages, completions);
    by default the wire's own `api`. Every dialect shares one count of requests, answers at once and
    tokens per caller (limits.py)."""
    who = identity(request)
    user_id = caller(request)
    model = await model_for(function[CATALOG], function.bus, function[OWNERSHIP], who, conversation.model)
    conversation = conversation.for_model(model)  # images need vision; thinking on by default where it exists
    answer = Answer(model.id, user_id, started, key_id=who.key_id, api=api or wire.api)
    response = relay.event_stream(wire) if conversation.stream else None
    async with function[LIMITS].admit(user_id, early=True) as slot:
        conversation = within_daily_tokens(conversation, slot.remaining)  # a refusal records nothing
        with function[DISCONNECTS].watch(request) as watch:
            try:
                return await generate(request, conversation, answer, response, wire, model, slot)
            except asyncio.CancelledError as exc:
                answer.cancel()  # the visitor left (or the studio is stopping): the Ollama request is closed
                if not watch.owns(exc):
                    raise
                return response if response is not None and response.prepared else web.Response(status=499)
            except Exception as exc:
                answer.fail(exc.code if isinstance(exc, StudioError) else "internal_error")
                raise
            finally:
                settle(slot, answer)


def settle(slot: Slot, answer: Answer) -> None:
    """What the answer used and its outcome event, recorded as its slot is freed (one transaction, limits.py)."""
    function[REPORTS].count(answer)
    slot.model = answer.model
    slot.prompt_tokens, slot.completion_tokens = answer.usage()
    data = answer.event()
    slot.event = function.event(data) if data is not None else None  # built here: it carries this request's id


def within_daily_tokens(conversation: Conversation, remaining: int | None) -> Conversation:
    """The answer cut at the tokens left today (the prompt counts too: estimated at 4 characters a token
    until Ollama counts it), or 429 when the prompt alone needs more than is left."""
    if remaining is None:
        return conversation
    prompt = estimated_tokens(conversation)
    room = remaining - prompt
    if room < 1:
        raise TooManyRequests(
            f"this prompt (about {prompt} tokens) needs more than the {remaining} tokens you have left today; "
            "send a shorter one, or wait for midnight UTC",
            code="daily_tokens_exhausted",
            headers={"Retry-After": str(seconds_to_midnight(time.time()))},
        )
    options = conversation.options
    if options.get("num_predict", room + 1) <= room:
        return conversation
    return replace(conversation, options={**options, "num_predict": room})


def estimated_tokens(conversation: Conversation) -> int:
    chars = sum(len(m.get("content") or "") for m in conversation.messages)
    return chars // 4 + 4 * len(conversation.messages)  # a few tokens of each message's template


@function.route(
    "GET",
    "/api/account/usage",
    summary="Tokens per model per day (the operator: `all=1`, everyone's)",
    query=UsageQuery,
    response=Usage,
    errors=(400, 401),
    timeout=10,
    visitor=False,
)
async def account_usage(request: web.Request) -> web.Response:
    """Tokens per model per day over `days` (1-366, default 30); the operator may ask for everyone's (`all=1`)."""
    who = identity(request)
    raw = request.query.get("days", "30")
    if not raw.isdigit() or not 1 <= int(raw) <= 366:
        raise BadRequest("days must be a whole number from 1 to 366", code="invalid_days")
    everyone = who.admin and request.query.get("all") in ("1", "true")
    if not everyone and not who.account_id:
        raise Unauthorized("sign in to see your usage", code="not_signed_in")
    rows = await usage_of(function.db, None if everyone else who.user_id, int(raw), time.time())
    return web.json_response({"days": int(raw), "usage": rows})


async def generate(
    request: web.Request,
    conversation: Conversation,
    answer: Answer,
    response: web.StreamResponse | None,
    wire: relay.Wire = relay.STUDIO_WIRE,
    model: catalog.CatalogModel | None = None,
    slot: Slot | None = None,
) -> web.StreamResponse:
    """Ask the best Ollama node, wait for its first line (within the first-token timeout; a node failing
    before it is skipped for the next one), then relay or collect. An early admission (limits.py) refused
    by then is a 429 and the Ollama request ends unanswered; one still being committed is left to the relay.

    Leaving the `first_line` block, however that happens, closes the request to Ollama: generation stops.
    """
    s = function.settings
    wait = s.chat_first_token_timeout_s
    model = model or function[CATALOG].get(answer.model)
    assert model is not None  # chattable_model found it
    try:
        async with asyncio.timeout(wait) as first_token:
            async with nodes.first_line(
                function[FLEET],
                model,
                conversation.ollama_body(),
                first_token_timeout=wait,
                idle_timeout=s.chat_token_timeout_s,
                queue_max=s.ollama_queue_max,
                cloud=function[CLOUD],
            ) as opened:
                first_token.reschedule(None)
                answer.served_by(opened.node)
                if slot is not None and (response is None or slot.known):
                    await slot.admitted()  # refused: a 429, and the Ollama request ends unanswered
                if response is not None:
                    return await relay.stream(request, response, opened.first, opened.lines, answer, wire, slot)
                return await relay.collect(opened.first, opened.lines, answer, wire)
    except TimeoutError:
        raise GatewayTimeout(
            f"{answer.model} did not start answering within {wait:g} s; it may still be loading: try again in a moment",
            code="ollama_timeout",
        ) from None
    except OllamaError as exc:
        raise relay.ollama_failure(exc, answer.model) from None
