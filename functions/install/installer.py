"""Installing a model into Ollama: one pull per model at a time, reported, verified, retried.

- A fleet (STUDIO_OLLAMA_URLS): the model is pulled onto every node that lacks it at once (or onto
  enough of them for STUDIO_OLLAMA_COPIES), with progress per node and overall in `install.progressed`
  (`nodes`), and an `install.completed` per node (`node`). Buyers see it installed once it is on
  one node; a node failing while another succeeded is recorded for that node only (reconciliation
  tries it again later). A node down is left out, and filled in when it answers again.
- Reconciliation runs every STUDIO_OLLAMA_CHECK_S: stored states follow what the nodes have, an
  installed model missing on a node that answers is requested again (`install.requested`,
  reason `reconcile`), and a node down is alerted (`resource.exhausted` kind `ollama_node_down`,
  then `resource.recovered`).

- In this process, a second request for a model already being pulled is done at once: that pull
  reports the outcome (and, if it fails, its own event is redelivered). Across replicas, a lease
  row (renewed while pulling) lets one pull and the others retry later. At most `PULLS_AT_ONCE`
  pulls run at once, so the consumer can take many requests at a time: the no-op ones (a model
  pulling or installed already: a burst of purchases) never queue a real pull behind them.
- A model Ollama already has is not pulled again (Ollama would re-contact the registry); requests
  arriving together share one look at Ollama's list, and an unchanged installed state is not
  written again.
- `install.completed` is published only once `/api/tags` lists the model with a digest.
- Transient failures (Ollama down, a cut stream, a registry hiccup) publish `install.failed`
  with `will_retry` and are retried with backoff by redelivery; permanent ones (unknown model,
  disk full) and the last attempt end in a visible failed state the owner can retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from events.bus import BusUnavailable
from events.catalog import (
    InstallCompleted,
    InstallFailed,
    InstallProgressed,
    InstallRemoved,
    InstallRequested,
    InstallStarted,
    ResourceExhausted,
    ResourceRecovered,
)
from events.delivery import Backoff, Delivery, Retry
from functions.install.capabilities import check_catalog
from functions.install.progress import FleetProgress
from functions.install.store import Install, InstallStore
from studio.catalog import Catalog, CatalogModel
from studio.clients.ollama import InstalledModel, OllamaClient, OllamaError, OllamaUnavailable
from studio.runtime.database import utcnow
from studio.runtime.errors import UpstreamUnavailable
from studio.runtime.function import Function

log = logging.getLogger("studio.functions.install")

BACKOFF = Backoff(base=2.0, cap=60.0)
RENEW_EVERY_S = 8.0
PULLS_AT_ONCE = 4
DOWN_AFTER_CHECKS = 2  # a node is alerted down after this many checks in a row it did not answer
ASK_AGAIN_S = 120.0  # a node still lacking a model is asked for it again no sooner than this
OPERATOR_REMOVED = "removed by the operator"
NODE_DOWN = "ollama_node_down"
PERMANENT = {
    "file does not exist": "the model is not in Ollama's library (check the catalog entry)",
    "invalid model name": "Ollama refused the model name (check the catalog entry)",
    "no space left on device": "the server's disk is full: free space, then retry",
}


def explain(exc: OllamaError) -> tuple[str, bool]:
    """(reason for people, whether retrying later can help)."""
    for marker, reason in PERMANENT.items():
        if marker in exc.message:
            return f"{reason} ({exc.message})", False
    if isinstance(exc, OllamaUnavailable):
        return f"Ollama is unreachable or broke off the download: {exc.message}", True
    return f"Ollama failed the download: {exc.message}", True


Listing = dict[str, InstalledModel] | OllamaError


class Installer:
    def __init__(
        self,
        fn: Function,
        store: InstallStore,
        nodes: dict[str, OllamaClient],
        catalog: Catalog,
        owner: str,
        copies: int = 0,
    ) -> None:
        self.fn = fn
        self.nodes = nodes  # url -> client, in the configured order
        self.catalog = catalog
        self.owner = owner
        self.store = store
        self.copies = min(copies or len(nodes), len(nodes))
        self._pulls: dict[str, asyncio.Task[None]] = {}
        self._pull_slots = asyncio.Semaphore(PULLS_AT_ONCE)
        self._listing: dict[str, asyncio.Future[dict[str, InstalledModel]]] = {}
        self._misses: dict[str, int] = {}  # node -> checks in a row it did not answer
        self._alerted: set[str] = set()  # nodes alerted down
        self._asked: dict[str, float] = {}  # model -> when reconciliation last asked for its missing copies

    @property
    def fleet(self) -> bool:
        return len(self.nodes) > 1

    async def install(self, model: CatalogModel, install_id: str, delivery: Delivery) -> None:
        if model.id in self._pulls:  # this model is being pulled here already: that pull reports
            return
        task = asyncio.ensure_future(self._install(model, install_id, delivery))
        self._pulls[model.id] = task
        try:
            await task
        finally:
            self._pulls.pop(model.id, None)

    async def _installed_models(self, node: str) -> dict[str, InstalledModel]:
        """A node's list; callers arriving while a look is under way share it (a burst asks once)."""
        listing = self._listing.get(node)
        if listing is None:
            listing = self._listing[node] = asyncio.ensure_future(self.nodes[node].installed())
            listing.add_done_callback(lambda done: self._listed(node, done))
        return await asyncio.shield(listing)

    def _listed(self, node: str, listing: asyncio.Future[dict[str, InstalledModel]]) -> None:
        if self._listing.get(node) is listing:
            del self._listing[node]
        if not listing.cancelled():
            listing.exception()  # retrieved here, raised to every waiter

    async def listings(self) -> dict[str, Listing]:
        """Every node's list, or the error it answered with."""
        found = await asyncio.gather(*(self._installed_models(n) for n in self.nodes), return_exceptions=True)
        out: dict[str, Listing] = {}
        for node, listing in zip(self.nodes, found, strict=True):
            if isinstance(listing, dict | OllamaError):
                out[node] = listing
            else:
                raise listing
        return out

    async def _install(self, model: CatalogModel, install_id: str, delivery: Delivery) -> None:
        listings = await self.listings()
        up = {n: listing for n, listing in listings.items() if isinstance(listing, dict)}
        if not up:
            error = next(e for e in listings.values() if isinstance(e, OllamaError))
            await self._failed(model, install_id, delivery, *explain(error))
            return
        have = {n: listing[model.id] for n, listing in up.items() if model.id in listing}
        if have:
            await self._installed(model, install_id, next(iter(have.values())), announce_always=False)
            await self._nodes_have(model, install_id, have)
        lacking = [n for n in up if n not in have][: max(0, self.copies - len(have))]
        if not lacking:
            return
        stored = await self.store.get(self.fn.db, model.id)
        quiet = stored is not None and stored.state == "installed"  # more copies of a model buyers have already
        if quiet and stored is not None:
            install_id = stored.install_id  # the browser keeps showing "installed" for the extra copies
        async with self._pull_slots:
            await self._claimed_pull(model, install_id, delivery, lacking, quiet)

    async def _nodes_have(self, model: CatalogModel, install_id: str, have: dict[str, InstalledModel]) -> None:
        if not self.fleet:
            return
        known = await self.store.nodes()
        for node, found in have.items():
            row = known.get((model.id, node))
            if row is None or row.state != "installed" or row.digest != found.digest:
                await self.store.save_node(
                    self.fn.db, model.id, node, "installed", install_id, digest=found.digest, size_bytes=found.size
                )

    async def _nodes_lack(self, model: CatalogModel, nodes: list[str]) -> None:
        """Nodes that answered without the model: a row saying installed there is corrected."""
        known = await self.store.nodes()
        for node in nodes:
            row = known.get((model.id, node))
            if row is not None and row.state == "installed" and not row.leased:
                await self.store.save_node(
                    self.fn.db, model.id, node, "removed", row.install_id, reason="not found on the node"
                )

    async def _claimed_pull(
        self, model: CatalogModel, install_id: str, delivery: Delivery, nodes: list[str], quiet: bool
    ) -> None:
        claimed = [n for n in nodes if await self.store.claim_node(model.id, n, install_id, self.owner)]
        if not claimed:
            if quiet:
                return  # another replica is adding these copies
            raise Retry(f"another replica is pulling {model.id}", delay=RENEW_EVERY_S)
        try:
            if not quiet:
                await self._started(model, install_id, delivery.attempt, claimed)
            progress = FleetProgress(claimed)
            results = await asyncio.gather(
                *(self._pull_onto(model, install_id, n, progress, quiet) for n in claimed), return_exceptions=True
            )
        finally:
            for n in claimed:
                await self.store.release_node(model.id, n, self.owner)
        unexpected = [r for r in results if isinstance(r, BaseException) and not isinstance(r, OllamaError)]
        if unexpected:
            raise unexpected[0]
        failures = [r for r in results if isinstance(r, OllamaError)]
        if failures and len(failures) == len(results) and not quiet:
            stored = await self.store.get(self.fn.db, model.id)
            if stored is None or stored.state != "installed":  # no node has it: the buyer's install failed
                await self._failed(model, install_id, delivery, *explain(failures[0]))

    async def _pull_onto(
        self, model: CatalogModel, install_id: str, node: str, progress: FleetProgress, quiet: bool
    ) -> None:
        ollama = self.nodes[node]
        try:
            await self.store.save_node(self.fn.db, model.id, node, "pulling", install_id, reason=None)
            renewed = time.monotonic()
            async for line in ollama.pull(model.id):
                if progress.update(node, line):
                    nodes = progress.per_node() if self.fleet else None
                    event = InstallProgressed(install_id=install_id, model=model.id, **progress.snapshot(), nodes=nodes)
                    if not quiet:
                        self.store.progressed(event)
                    with contextlib.suppress(BusUnavailable):
                        await self.fn.bus.publish(self.fn.event(event))
                if time.monotonic() - renewed > RENEW_EVERY_S:
                    renewed = time.monotonic()
                    await self.store.renew_node(model.id, node, self.owner)
            found = (await ollama.installed()).get(model.id)
            if found is None or not found.digest:
                raise OllamaError("Ollama reported success but does not list the model")
        except OllamaError as exc:
            reason, _ = explain(exc)
            await self.store.save_node(self.fn.db, model.id, node, "failed", install_id, reason=reason)
            if self.fleet:
                log.warning("install on a node failed", extra={"model": model.id, "node": node, "reason": reason})
            raise
        await self._installed(model, install_id, found, announce_always=True, node=node)
        await check_catalog(ollama, self.catalog, {model.id})

    # -- state changes, each with its event ------------------------------------------------------

    async def _started(self, model: CatalogModel, install_id: str, attempt: int, nodes: list[str]) -> None:
        async with self.fn.db.transaction() as tx:
            await self.store.save(
                tx, model.id, "pulling", install_id, attempt=attempt, reason=None, will_retry=0, retry_in_s=None
            )
            started = InstallStarted(
                install_id=install_id, model=model.id, attempt=attempt, nodes=nodes if self.fleet else None
            )
            await tx.publish(self.fn.event(started))

    async def _installed(
        self,
        model: CatalogModel,
        install_id: str,
        found: InstalledModel,
        *,
        announce_always: bool,
        node: str | None = None,
    ) -> None:
        if not announce_always:  # a no-op request: nothing to write when the stored state says so already
            stored = await self.store.get(self.fn.db, model.id)
            if stored is not None and stored.state == "installed" and stored.digest == found.digest:
                return
        async with self.fn.db.transaction() as tx:
            known = await self.store.get(tx, model.id)
            fresh = known is None or known.state != "installed" or known.digest != found.digest
            await self.store.save(
                tx, model.id, "installed", install_id, digest=found.digest, size_bytes=found.size, reason=None
            )
            if node is not None:
                await self.store.save_node(
                    tx, model.id, node, "installed", install_id, digest=found.digest, size_bytes=found.size, reason=None
                )
            if fresh or announce_always:
                done = InstallCompleted(
                    install_id=install_id,
                    model=model.id,
                    digest=found.digest,
                    size_bytes=found.size,
                    node=node if self.fleet else None,
                )
                await tx.publish(self.fn.event(done))

    async def _failed(
        self, model: CatalogModel, install_id: str, delivery: Delivery, reason: str, transient: bool
    ) -> None:
        will_retry = transient and not delivery.is_last_attempt
        delay = round(BACKOFF.delay(delivery.attempt), 1) if will_retry else None
        async with self.fn.db.transaction() as tx:
            await self.store.save(
                tx,
                model.id,
                "failed",
                install_id,
                attempt=delivery.attempt,
                reason=reason,
                will_retry=int(will_retry),
                retry_in_s=delay,
            )
            await tx.publish(
                self.fn.event(
                    InstallFailed(
                        install_id=install_id,
                        model=model.id,
                        reason=reason,
                        will_retry=will_retry,
                        attempt=delivery.attempt,
                        retry_in_s=delay,
                    )
                )
            )
        log.warning(
            "install failed",
            extra={"model": model.id, "reason": reason, "will_retry": will_retry, "attempt": delivery.attempt},
        )
        if will_retry:
            raise Retry(reason, delay=delay)

    async def remove(self, model: CatalogModel) -> bool:
        """The operator's removal: out of every node, then recorded with install.removed. Whether one had it.
        A node that cannot be reached now loses the model when it answers again (reconciliation)."""
        found = await asyncio.gather(*(c.delete(model.id) for c in self.nodes.values()), return_exceptions=True)
        answered = [f for f in found if isinstance(f, bool)]
        if not answered:
            raise next(f for f in found if isinstance(f, BaseException))
        await self.removed(model, OPERATOR_REMOVED, by_operator=True)
        return any(answered)

    async def removed(self, model: CatalogModel, reason: str, *, by_operator: bool) -> None:
        async with self.fn.db.transaction() as tx:
            known = await self.store.get(tx, model.id)
            await self.store.save(
                tx,
                model.id,
                "removed",
                known.install_id if known else "none",
                reason=reason,
                digest=None,
                size_bytes=None,
            )
            await tx.execute(  # every node's copy goes with it
                "UPDATE install_nodes SET state = 'removed', reason = ?, updated_at = ? "
                "WHERE model = ? AND state = 'installed'",
                (reason, utcnow(), model.id),
            )
            await tx.publish(self.fn.event(InstallRemoved(model=model.id, reason=reason, by_operator=by_operator)))

    # -- reconciliation ---------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Make the stored states agree with what the nodes have (they may have changed while we were not
        looking), and ask for the copies a node that answers lacks."""
        since = utcnow()
        listings = await self.listings()
        await self._watch(listings)
        up = {n: listing for n, listing in listings.items() if isinstance(listing, dict)}
        if not up:
            raise next(e for e in listings.values() if isinstance(e, OllamaError))
        known = await self.store.all()
        for model in self.catalog:
            row = known.get(model.id)
            if row is not None and row.updated_at >= since:
                continue  # changed while the nodes were asked: the next round looks again
            present = {n: listing[model.id] for n, listing in up.items() if model.id in listing}
            await self._reconcile_model(model, row, present, up, everyone_answered=len(up) == len(self.nodes))

    async def _reconcile_model(
        self,
        model: CatalogModel,
        row: Install | None,
        present: dict[str, InstalledModel],
        up: dict[str, dict[str, InstalledModel]],
        *,
        everyone_answered: bool,
    ) -> None:
        if row is not None and row.leased:
            return  # being pulled now: the pull reports
        if present and row is not None and row.state == "removed" and row.reason == OPERATOR_REMOVED:
            for node in present:  # a node that was down when the operator removed the model
                with contextlib.suppress(OllamaError):
                    await self.nodes[node].delete(model.id)
            return
        if present and (row is None or row.state != "installed"):
            first = next(iter(present.values()))
            await self._installed(model, row.install_id if row else "ins_found_in_ollama", first, announce_always=True)
        elif not present and everyone_answered and row is not None and row.state == "installed":
            where = "on any Ollama node" if self.fleet else "in Ollama"
            await self.removed(model, f"not found {where} when reconciling", by_operator=False)
            return
        if not self.fleet:
            return
        await self._nodes_lack(model, [n for n in up if n not in present])
        if not present:
            return
        await self._nodes_have(model, row.install_id if row else "ins_found_in_ollama", present)
        lacking = [n for n in up if n not in present]
        if lacking and len(present) < self.copies:
            await self._ask_for_copies(model, row.install_id if row else "ins_found_in_ollama", lacking)

    async def _ask_for_copies(self, model: CatalogModel, install_id: str, lacking: list[str]) -> None:
        now = time.monotonic()
        if now - self._asked.get(model.id, -ASK_AGAIN_S) < ASK_AGAIN_S:
            return
        self._asked[model.id] = now
        log.info("%s is missing on %s: installing it there", model.id, ", ".join(lacking), extra={"model": model.id})
        data = InstallRequested(install_id=install_id, model=model.id, requested_by="operator", reason="reconcile")
        with contextlib.suppress(BusUnavailable, UpstreamUnavailable):
            await self.fn.publish(data)

    async def _watch(self, listings: dict[str, Listing]) -> None:
        """Alert a node that did not answer DOWN_AFTER_CHECKS checks in a row; and its return."""
        for node, listing in listings.items():
            if isinstance(listing, dict):
                self._misses[node] = 0
                if node in self._alerted:
                    self._alerted.discard(node)
                    self._asked.clear()  # it may lack models: ask for them at once
                    await self._announce(
                        ResourceRecovered(
                            kind=NODE_DOWN,
                            message=f"Ollama node {node} answers again; models it lacks are installed on it",
                            instance=node,
                        )
                    )
                continue
            self._misses[node] = self._misses.get(node, 0) + 1
            if self._misses[node] >= DOWN_AFTER_CHECKS and node not in self._alerted:
                self._alerted.add(node)
                await self._announce(
                    ResourceExhausted(
                        kind=NODE_DOWN,
                        message=f"Ollama node {node} does not answer ({listing.message})",
                        instance=node,
                    )
                )

    async def _announce(self, data: ResourceExhausted | ResourceRecovered) -> None:
        with contextlib.suppress(BusUnavailable, UpstreamUnavailable):
            await self.fn.publish(data)

    async def keep_reconciling(self, every_s: float = 15.0) -> None:
        """Reconcile at start-up (retrying until a node answers), then every `every_s`."""
        checked = False
        while True:
            try:
                await self.reconcile()
                if not checked:
                    log.info("install states reconciled with Ollama")
                    for node, client in self.nodes.items():
                        with contextlib.suppress(OllamaError):
                            await check_catalog(client, self.catalog, set(await self._installed_models(node)))
                    checked = True
            except OllamaError as exc:
                log.warning("cannot reconcile with Ollama yet: %s", exc.message)
            await asyncio.sleep(every_s)
