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
        POST /v1/embeddings        OpenAI's embeddings request -> Ollama's /api/embed -> OpenAI's list of embeddings,
                                   for models with `embedding`; the same keys, ownership, limits, events (embeddings.py)
        GET  /v1/models            the models the caller may chat with now (owned or free, installed)
        GET  /api/account/usage?days=30   tokens per model per day (chat_usage); the operator: &all=1
Events  consumes purchase.completed, purchase.revoked, purchase.suspended, purchase.restored,
                 purchase.transferred, in batches (who owns what: table chat_ownership)
        emits    chat.completed | chat.failed | chat.cancelled, one per answer: usage, never content
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
from pathlib import Path

from aiohttp import web

from events.catalog import (
    PurchaseCompleted,
    PurchaseRestored,
    PurchaseRevoked,
    PurchaseSuspended,
    PurchaseTransferred,
)
from events.delivery import Delivery
from functions.chat import completions, nodes, relay
from functions.chat.answer import Answer, UsageReports
from functions.chat.completions import CompletionWire, openai_errors, parse_completion
from functions.chat.conversation import Conversation, parse
from functions.chat.disconnects import Disconnects
from functions.chat.embeddings import embedding_list, parse_embedding
from functions.chat.entitlements import Ownership, usable_models
from functions.chat.known import KnownOwners
from functions.chat.limits import SharedLimits, usage_of
from studio import catalog
from studio.clients.cloud import CloudFallback
from studio.clients.fleet import Fleet
from studio.clients.ollama import OllamaError
from studio.runtime.errors import BadRequest, GatewayTimeout, StudioError, Unauthorized, json_body
from studio.runtime.function import Function, Key
from studio.runtime.identity import identity, require_visitor

function = Function("chat", migrations=Path(__file__).parent / "migrations")

CATALOG = Key[catalog.Catalog]("catalog")
FLEET = Key[Fleet]("fleet")
CLOUD = Key[CloudFallback]("cloud")
LIMITS = Key[SharedLimits]("limits")
DISCONNECTS = Key[Disconnects]("disconnects")
REPORTS = Key[UsageReports]("reports")
OWNERSHIP = Key[Ownership]("ownership")
KNOWN = Key[KnownOwners]("known_owners")


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
    fn[LIMITS] = SharedLimits(
        fn.db,
        concurrent=s.chat_concurrent_per_visitor,
        per_minute=s.chat_requests_per_minute,
        tokens_per_day=s.chat_tokens_per_day,
    )
    fn[DISCONNECTS] = disconnects = Disconnects()
    fn[REPORTS] = reports = UsageReports(fn.publish, fn.log)
    fn[OWNERSHIP] = Ownership(fn.db)
    fn[KNOWN] = KnownOwners()
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


@function.route("POST", "/api/chat")
async def chat(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    caller(request)
    conversation = parse(await json_body(request), function.settings)
    return await converse(request, conversation, relay.STUDIO_WIRE, started)


@function.route("POST", "/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    """The OpenAI-compatible API: the same answer as /api/chat, in OpenAI's shapes (completions.py)."""
    started = time.perf_counter()
    with openai_errors():
        caller(request)
        completion = parse_completion(await json_body(request), function.settings)
        wire = CompletionWire(completion.conversation.model, completion.include_usage)
        return await converse(request, completion.conversation, wire, started)


@function.route("POST", "/v1/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    """Vectors for text from an embedding model the caller may use; usage is reported like an answer's."""
    started = time.perf_counter()
    with openai_errors():
        who, user_id = identity(request), caller(request)
        wanted = parse_embedding(await json_body(request), function.settings)
        model = await function[KNOWN].model_for(function[CATALOG], function.bus, function[OWNERSHIP], who, wanted.model)
        if not model.can("embedding"):
            raise BadRequest(
                f"{model.name} does not make embeddings; pick a model with embedding, such as nomic-embed-text",
                code="model_has_no_embedding",
            )
        answer = Answer(model.id, user_id, started, key_id=who.key_id)
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
                function[REPORTS].report(answer)
                slot.model = answer.model
                slot.prompt_tokens, slot.completion_tokens = answer.usage()
        return web.json_response(embedding_list(wanted, model.id, result))


def _refused(exc: OllamaError) -> StudioError | None:
    """Ollama's 400 to an embedding request (dimensions beyond the model's, input longer than its context)."""
    if exc.status == 400:
        return BadRequest(f"the model refused the input: {exc.message}", code="invalid_embedding_request")
    return None


@function.route("GET", "/v1/models")
async def list_models(request: web.Request) -> web.Response:
    """The models the caller may chat with now: owned or free, and installed."""
    with openai_errors():
        who = identity(request)
        caller(request)
        try:
            installed = await nodes.installed_anywhere(function[FLEET])
        except OllamaError as exc:
            raise relay.ollama_failure(exc, "the model list") from None
        usable = await usable_models(function[CATALOG], function[OWNERSHIP], who)
        return web.json_response(completions.model_list([m for m in usable if m in installed]))


def caller(request: web.Request) -> str:
    """Whom the answer is for: a known visitor, an account (session or key), or the operator; else 401."""
    who = identity(request)
    if who.user_id:
        return who.user_id
    if who.admin:
        return "operator"
    return require_visitor(request)


async def converse(
    request: web.Request, conversation: Conversation, wire: relay.Wire, started: float
) -> web.StreamResponse:
    """One answer, whatever the API: entitlement, limits, Ollama, the relay, the usage event."""
    who = identity(request)
    user_id = caller(request)
    model = await function[KNOWN].model_for(
        function[CATALOG], function.bus, function[OWNERSHIP], who, conversation.model
    )
    conversation = conversation.for_model(model)  # images need vision; thinking on by default where it exists
    answer = Answer(model.id, user_id, started, key_id=who.key_id)
    response = web.StreamResponse(headers=wire.headers) if conversation.stream else None
    async with function[LIMITS].admit(user_id) as slot:
        with function[DISCONNECTS].watch(request) as watch:
            try:
                return await generate(request, conversation, answer, response, wire, model)
            except asyncio.CancelledError as exc:
                answer.cancel()  # the visitor left (or the studio is stopping): the Ollama request is closed
                if not watch.owns(exc):
                    raise
                return response if response is not None and response.prepared else web.Response(status=499)
            except Exception as exc:
                answer.fail(exc.code if isinstance(exc, StudioError) else "internal_error")
                raise
            finally:
                function[REPORTS].report(answer)
                slot.model = answer.model
                slot.prompt_tokens, slot.completion_tokens = answer.usage()


@function.route("GET", "/api/account/usage")
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
) -> web.StreamResponse:
    """Ask the best Ollama node, wait for its first line (within the first-token timeout; a node failing
    before it is skipped for the next one), then relay or collect.

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
                if response is not None:
                    return await relay.stream(request, response, opened.first, opened.lines, answer, wire)
                return await relay.collect(opened.first, opened.lines, answer, wire)
    except TimeoutError:
        raise GatewayTimeout(
            f"{answer.model} did not start answering within {wait:g} s; it may still be loading: try again in a moment",
            code="ollama_timeout",
        ) from None
    except OllamaError as exc:
        raise relay.ollama_failure(exc, answer.model) from None
