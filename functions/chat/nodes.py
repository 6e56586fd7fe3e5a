"""Which Ollama node answers, and trying the next one when a node fails before the first token.

`first_line` opens the answer on the best node (studio/clients/fleet.py: not full, holding the
model in memory, then the fewest answers in flight; no network round trip to choose) and waits for its first
line. A node that fails before that (refused, cut, 5xx, busy, or it lacks the model) is skipped and
the next one asked; once a line has arrived the answer stays on its node (no retry: the visitor has
text already). Every node failing raises the most telling error: a node that could not answer
rather than one that lacks the model.

Hybrid: a catalog model with a `fallback` is sent to that OpenAI-compatible API instead, only when
every node that has the model holds STUDIO_OLLAMA_QUEUE_MAX answers already; the answer's usage
event says `fallback: true`. A fallback failing before its first token leaves the answer to the nodes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from studio.catalog import CatalogModel
from studio.clients.cloud import CloudFallback
from studio.clients.fleet import Fleet, Node
from studio.clients.ollama import Embeddings, Lines, ModelNotFound, OllamaError, OllamaUnavailable

FALLBACK = "fallback"
log = logging.getLogger("studio.functions.chat")


def worth_another_node(exc: OllamaError) -> bool:
    """Whether another node may do better: not when the request itself was refused (400)."""
    return exc.status is None or exc.status >= 500 or isinstance(exc, ModelNotFound)


@dataclass
class Opened:
    node: str  # the node's URL, or "fallback"
    first: Lines  # the first lines (the first of them holds the first token, or the end)
    lines: AsyncIterator[Lines]  # the batches that follow


async def _one_by_one(lines: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Lines]:
    async for line in lines:
        yield Lines(decoded=[line])


@asynccontextmanager
async def first_line(
    fleet: Fleet,
    model: CatalogModel,
    body: dict[str, Any],
    *,
    first_token_timeout: float,
    idle_timeout: float,
    queue_max: int,
    cloud: CloudFallback | None = None,
) -> AsyncIterator[Opened]:
    errors: list[OllamaError] = []
    if model.fallback is not None and cloud is not None and fleet.saturated(model.id, queue_max):
        async with AsyncExitStack() as stack:
            try:
                lines = _one_by_one(
                    await stack.enter_async_context(
                        cloud.chat(model.fallback.base_url, model.fallback.model, body, idle_timeout=idle_timeout)
                    )
                )
                first = await anext(lines)
            except OllamaError as exc:  # the cloud failed before its first token: the local queue it is
                log.warning("the cloud fallback for %s failed: %s", model.id, exc.message, extra={"model": model.id})
                errors.append(exc)
            else:
                yield Opened(FALLBACK, first, lines)
                return
    for node in fleet.candidates(model.id, queue_max):
        async with AsyncExitStack() as stack:
            stack.enter_context(fleet.busy(node))
            try:
                lines = await stack.enter_async_context(
                    node.client.chat_batches(body, first_token_timeout=first_token_timeout, idle_timeout=idle_timeout)
                )
                first = await anext(lines)
            except OllamaError as exc:
                skip(fleet, node, model.id, exc, errors)
                continue
            fleet.answered(node, model.id)
            yield Opened(node.url, first, lines)
            return
    raise most_telling(errors)


def skip(fleet: Fleet, node: Node, model: str, exc: OllamaError, errors: list[OllamaError]) -> None:
    """A node failed: re-raise what another node would refuse too, else note it and what it says of the node."""
    if not worth_another_node(exc):
        raise exc
    errors.append(exc)
    if isinstance(exc, ModelNotFound):
        fleet.lacks(node, model)
    elif isinstance(exc, OllamaUnavailable):
        fleet.mark_down(node, exc.message)


def most_telling(errors: list[OllamaError]) -> OllamaError:
    """The error to answer with when every node failed: the last node's, rather than "lacks it"."""
    telling = [e for e in errors if not isinstance(e, ModelNotFound)]
    return telling[-1] if telling else errors[0] if errors else OllamaUnavailable("no Ollama node is configured")


async def embed(
    fleet: Fleet, model: str, inputs: list[str], *, dimensions: int | None, timeout: float
) -> tuple[str, Embeddings]:
    """Embeddings from the best node, the next one asked when a node fails (an embedding is one request:
    any failure short of a refusal of the input is worth another node). Returns (node URL, result)."""
    errors: list[OllamaError] = []
    for node in fleet.candidates(model):
        with fleet.busy(node):
            try:
                result = await node.client.embed(model, inputs, dimensions=dimensions, timeout=timeout)
            except OllamaError as exc:
                skip(fleet, node, model, exc, errors)
                continue
        fleet.answered(node, model)
        return node.url, result
    raise most_telling(errors)


async def installed_anywhere(fleet: Fleet) -> set[str]:
    """The models at least one node has (asked now: not on the chat's hot path)."""
    found = await asyncio.gather(*(n.client.installed() for n in fleet.nodes), return_exceptions=True)
    lists = [f for f in found if isinstance(f, dict)]
    if not lists:
        error = next((f for f in found if isinstance(f, OllamaError)), None)
        raise error or OllamaUnavailable("no Ollama node answered")
    return set().union(*lists)
