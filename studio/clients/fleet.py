"""A fleet of Ollama nodes, and what this process knows about each without asking per request.

Choosing a node must not cost a request a network round trip (the studio's lead over a direct
Ollama is about a millisecond to the first token): each node's models (`/api/tags`) and the models
it holds in memory (`/api/ps`) are refreshed in the background every `refresh_s`, and answers in
flight are counted here as they start and end. A node that refuses a connection is marked down at
once (the next request skips it) and comes back at the next refresh that reaches it.

Order of preference for a model (`candidates`): up nodes known to have it, those not full
(`queue_max` answers in flight) first, then the ones holding it in memory, then the fewest answers
in flight; then the other up nodes (the knowledge may be a
refresh old); down nodes last (one may have come back since). In-flight counts are this process's:
with several studios each counts its own answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from studio.clients.ollama import OllamaClient, OllamaError, normalise

log = logging.getLogger("studio.clients.fleet")

REFRESH_S = 2.0


@dataclass
class Node:
    url: str
    client: OllamaClient
    index: int
    up: bool = True  # until a refresh or a request says otherwise
    checked: bool = False  # a refresh has answered (or failed) at least once
    models: frozenset[str] = frozenset()
    loaded: frozenset[str] = frozenset()
    in_flight: int = 0
    error: str = ""
    down_since: float | None = None
    answers: int = field(default=0)

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": "up" if self.up else "down",
            "models": sorted(self.models),
            "loaded": sorted(self.loaded),
            "in_flight": self.in_flight,
            "answers": self.answers,
        }
        if not self.up:
            out["error"] = self.error
            out["down_for_s"] = round(time.monotonic() - self.down_since, 1) if self.down_since else None
        return out


class Fleet:
    def __init__(self, urls: Iterable[str], *, refresh_s: float = REFRESH_S, **client_options: Any) -> None:
        self.nodes = [
            Node(url.rstrip("/"), OllamaClient(url, **client_options), i) for i, url in enumerate(dict.fromkeys(urls))
        ]
        if not self.nodes:
            raise ValueError("a fleet needs at least one Ollama node")
        self.refresh_s = refresh_s
        self._refreshing: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, url: str) -> Node | None:
        return next((n for n in self.nodes if n.url == url.rstrip("/")), None)

    # -- background knowledge --------------------------------------------------------------------

    def start(self) -> None:
        """Refresh every node now and then every `refresh_s`, in the background."""
        if self._refreshing is None:
            self._refreshing = asyncio.create_task(self._keep_fresh())

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refreshing
            self._refreshing = None
        for node in self.nodes:
            await node.client.close()

    async def _keep_fresh(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.refresh_s)

    async def refresh(self) -> None:
        await asyncio.gather(*(self._refresh(n) for n in self.nodes))

    async def _refresh(self, node: Node) -> None:
        try:
            tags, ps = await asyncio.gather(node.client.installed(), node.client.loaded())
        except OllamaError as exc:
            self.mark_down(node, exc.message)
        else:
            node.models, node.loaded = frozenset(tags), frozenset(ps)
            if not node.up:
                log.info("Ollama node %s is back", node.url, extra={"node": node.url})
            node.up, node.error, node.down_since = True, "", None
        node.checked = True

    # -- what requests tell us -------------------------------------------------------------------

    def mark_down(self, node: Node, reason: str) -> None:
        if node.up:
            log.warning("Ollama node %s is down: %s", node.url, reason, extra={"node": node.url})
            node.down_since = time.monotonic()
        node.up, node.error = False, reason

    def lacks(self, node: Node, model: str) -> None:
        """The node said it does not have the model (its list was a refresh old)."""
        key = normalise(model)
        node.models, node.loaded = node.models - {key}, node.loaded - {key}

    def answered(self, node: Node, model: str) -> None:
        """The node answered with the model: it has it, and holds it in memory now."""
        key = normalise(model)
        if key not in node.loaded:
            node.loaded = node.loaded | {key}
        if key not in node.models:
            node.models = node.models | {key}
        node.up = True

    @contextlib.contextmanager
    def busy(self, node: Node) -> Iterator[None]:
        """Counts an answer in flight on `node` for as long as the block lasts."""
        node.in_flight += 1
        node.answers += 1
        try:
            yield
        finally:
            node.in_flight -= 1

    # -- choosing --------------------------------------------------------------------------------

    def candidates(self, model: str, queue_max: int | None = None) -> list[Node]:
        """Every node, the best to ask first (see the module's docstring)."""
        if len(self.nodes) == 1:  # a fleet of one (the default): nothing to choose, on every request
            return list(self.nodes)
        key = normalise(model)
        full = queue_max if queue_max is not None else 1 << 30
        having = sorted(
            (n for n in self.nodes if n.up and key in n.models),
            key=lambda n: (n.in_flight >= full, key not in n.loaded, n.in_flight, n.index),
        )
        others = sorted((n for n in self.nodes if n.up and key not in n.models), key=lambda n: (n.in_flight, n.index))
        down = [n for n in self.nodes if not n.up]
        return having + others + down

    def saturated(self, model: str, queue_max: int) -> bool:
        """Every up node that has the model (or every up node, if none is known to) holds `queue_max` answers."""
        key = normalise(model)
        up = [n for n in self.nodes if n.up]
        having = [n for n in up if key in n.models] or up
        return bool(having) and all(n.in_flight >= queue_max for n in having)

    def report(self) -> dict[str, dict[str, Any]]:
        return {n.url: n.report() for n in self.nodes}
