"""chat: conversations with the models a visitor owns (or free ones), streamed from Ollama as they are written.

HTTP    POST /api/chat  {"model", "message"}  or  {"model", "messages": [{"role", "content"}], "options", "stream"}
          stream false -> 200 {"response", "model", "done_reason", "prompt_tokens", "completion_tokens",
                               "total_duration_ms", "tokens_per_s", "time_to_first_token_ms"}
          stream true  -> 200 text/event-stream: `token` events, then `done` with the totals, or `error`
                          (wire format in relay.py; errors before the first token are JSON errors instead)
          400 invalid_<field> / unknown_field    401 no_session    403 not_owned    404 unknown_model
          409 not_installed    429 rate_limited / too_many_generations (Retry-After)    502 ollama_error
          503 ollama_unavailable / ollama_busy (Retry-After)    504 ollama_timeout (no first token in time)
Events  consumes purchase.completed, purchase.revoked, purchase.suspended, purchase.restored
                 (who owns which model: table chat_ownership)
        emits    chat.completed | chat.failed | chat.cancelled, one per answer: usage, never content

A visitor who stops (closes the connection) ends the Ollama request at once, so generation stops.
Limits: STUDIO_CHAT_* (message size and count, max tokens, answers at once and requests a minute per
visitor, time to the first token and between tokens).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from events.catalog import PurchaseCompleted, PurchaseRestored, PurchaseRevoked, PurchaseSuspended
from events.delivery import Delivery
from functions.chat import relay
from functions.chat.answer import Answer, UsageReports
from functions.chat.conversation import Conversation, parse
from functions.chat.disconnects import Disconnects
from functions.chat.entitlements import chattable_model, record_purchase, restore_purchase, revoke_purchase
from functions.chat.limits import VisitorLimits
from studio import catalog
from studio.clients.ollama import OllamaClient, OllamaError
from studio.runtime.errors import GatewayTimeout, StudioError, json_body
from studio.runtime.function import Function, Key
from studio.runtime.identity import identity, require_visitor

function = Function("chat", migrations=Path(__file__).parent / "migrations")

CATALOG = Key[catalog.Catalog]("catalog")
OLLAMA = Key[OllamaClient]("ollama")
LIMITS = Key[VisitorLimits]("limits")
DISCONNECTS = Key[Disconnects]("disconnects")
REPORTS = Key[UsageReports]("reports")


@function.resource
async def dependencies(fn: Function) -> AsyncIterator[None]:
    s = fn.settings
    fn[CATALOG] = catalog.cached(s.catalog_path)
    fn[OLLAMA] = ollama = OllamaClient(s.ollama_url)
    fn[LIMITS] = VisitorLimits(concurrent=s.chat_concurrent_per_visitor, per_minute=s.chat_requests_per_minute)
    fn[DISCONNECTS] = disconnects = Disconnects()
    fn[REPORTS] = reports = UsageReports(fn.publish, fn.log)
    yield
    await disconnects.close()
    await reports.drain()
    await ollama.close()


@function.subscribe(PurchaseCompleted, PurchaseRevoked, PurchaseSuspended, PurchaseRestored)
async def track_ownership(
    event: PurchaseCompleted | PurchaseRevoked | PurchaseSuspended | PurchaseRestored, delivery: Delivery
) -> None:
    when = delivery.event.time
    if isinstance(event, PurchaseCompleted):
        await record_purchase(function.db, event.purchase_id, event.user_id, event.model, when)
    elif isinstance(event, PurchaseRestored):
        await restore_purchase(function.db, event.purchase_id, event.user_id, event.model, when)
    else:  # revoked (refund, dispute lost) or suspended (dispute open): no access
        await revoke_purchase(function.db, event.purchase_id, event.user_id, event.model, when)


@function.route("POST", "/api/chat")
async def chat(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    user_id = require_visitor(request)
    conversation = parse(await json_body(request), function.settings)
    model = await chattable_model(function[CATALOG], function.db, identity(request), conversation.model)
    answer = Answer(model.id, user_id, started)
    response = web.StreamResponse(headers=relay.SSE_HEADERS) if conversation.stream else None
    with function[LIMITS].admit(user_id), function[DISCONNECTS].watch(request) as watch:
        try:
            return await generate(request, conversation, answer, response)
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


async def generate(
    request: web.Request, conversation: Conversation, answer: Answer, response: web.StreamResponse | None
) -> web.StreamResponse:
    """Ask Ollama, wait for its first line (within the first-token timeout), then relay or collect.

    Leaving the `chat` block, however that happens, closes the request to Ollama: generation stops.
    """
    s = function.settings
    wait = s.chat_first_token_timeout_s
    try:
        async with asyncio.timeout(wait) as first_token:
            async with function[OLLAMA].chat(
                conversation.ollama_body(), first_token_timeout=wait, idle_timeout=s.chat_token_timeout_s
            ) as lines:
                first = await anext(lines)
                first_token.reschedule(None)
                if response is not None:
                    return await relay.stream(request, response, first, lines, answer)
                return await relay.collect(first, lines, answer)
    except TimeoutError:
        raise GatewayTimeout(
            f"{answer.model} did not start answering within {wait:g} s; it may still be loading: try again in a moment",
            code="ollama_timeout",
        ) from None
    except OllamaError as exc:
        raise relay.ollama_failure(exc, answer.model) from None
