"""Installing a model into Ollama: one pull per model at a time, reported, verified, retried.

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
    InstallStarted,
)
from events.delivery import Backoff, Delivery, Retry
from functions.install.capabilities import check_catalog
from functions.install.progress import PullProgress
from functions.install.store import InstallStore
from studio.catalog import Catalog, CatalogModel
from studio.clients.ollama import InstalledModel, OllamaClient, OllamaError, OllamaUnavailable
from studio.runtime.function import Function

log = logging.getLogger("studio.functions.install")

BACKOFF = Backoff(base=2.0, cap=60.0)
RENEW_EVERY_S = 8.0
PULLS_AT_ONCE = 4
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


class Installer:
    def __init__(self, fn: Function, store: InstallStore, ollama: OllamaClient, catalog: Catalog, owner: str) -> None:
        self.fn = fn
        self.ollama = ollama
        self.catalog = catalog
        self.owner = owner
        self.store = store
        self._pulls: dict[str, asyncio.Task[None]] = {}
        self._pull_slots = asyncio.Semaphore(PULLS_AT_ONCE)
        self._listing: asyncio.Future[dict[str, InstalledModel]] | None = None

    async def install(self, model: CatalogModel, install_id: str, delivery: Delivery) -> None:
        if model.id in self._pulls:  # this model is being pulled here already: that pull reports
            return
        task = asyncio.ensure_future(self._install(model, install_id, delivery))
        self._pulls[model.id] = task
        try:
            await task
        finally:
            self._pulls.pop(model.id, None)

    async def _installed_models(self) -> dict[str, InstalledModel]:
        """Ollama's list; callers arriving while a look is under way share it (a burst asks once)."""
        if self._listing is None:
            self._listing = asyncio.ensure_future(self.ollama.installed())
            self._listing.add_done_callback(self._listed)
        return await asyncio.shield(self._listing)

    def _listed(self, listing: asyncio.Future[dict[str, InstalledModel]]) -> None:
        if self._listing is listing:
            self._listing = None
        if not listing.cancelled():
            listing.exception()  # retrieved here, raised to every waiter

    async def _install(self, model: CatalogModel, install_id: str, delivery: Delivery) -> None:
        try:
            found = (await self._installed_models()).get(model.id)
        except OllamaError as exc:
            await self._failed(model, install_id, delivery, *explain(exc))
            return
        if found is not None:
            await self._installed(model, install_id, found, announce_always=False)
            return
        async with self._pull_slots:
            await self._claimed_pull(model, install_id, delivery)

    async def _claimed_pull(self, model: CatalogModel, install_id: str, delivery: Delivery) -> None:
        if not await self.store.claim(model.id, install_id, self.owner):
            raise Retry(f"another replica is pulling {model.id}", delay=RENEW_EVERY_S)
        try:
            await self._started(model, install_id, delivery.attempt)
            await self._pull(model, install_id)
            found = (await self.ollama.installed()).get(model.id)
            if found is None or not found.digest:
                raise OllamaError("Ollama reported success but does not list the model")
            await self._installed(model, install_id, found, announce_always=True)
            await check_catalog(self.ollama, self.catalog, {model.id})
        except OllamaError as exc:
            await self._failed(model, install_id, delivery, *explain(exc))
        finally:
            await self.store.release(model.id, self.owner)

    async def _pull(self, model: CatalogModel, install_id: str) -> None:
        progress = PullProgress()
        renewed = time.monotonic()
        async for line in self.ollama.pull(model.id):
            if progress.update(line):
                event = InstallProgressed(install_id=install_id, model=model.id, **progress.snapshot())
                self.store.progressed(event)
                with contextlib.suppress(BusUnavailable):
                    await self.fn.bus.publish(self.fn.event(event))
            if time.monotonic() - renewed > RENEW_EVERY_S:
                renewed = time.monotonic()
                await self.store.renew(model.id, self.owner)

    # -- state changes, each with its event ------------------------------------------------------

    async def _started(self, model: CatalogModel, install_id: str, attempt: int) -> None:
        async with self.fn.db.transaction() as tx:
            await self.store.save(
                tx, model.id, "pulling", install_id, attempt=attempt, reason=None, will_retry=0, retry_in_s=None
            )
            await tx.publish(self.fn.event(InstallStarted(install_id=install_id, model=model.id, attempt=attempt)))

    async def _installed(
        self, model: CatalogModel, install_id: str, found: InstalledModel, *, announce_always: bool
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
            if fresh or announce_always:
                await tx.publish(
                    self.fn.event(
                        InstallCompleted(
                            install_id=install_id, model=model.id, digest=found.digest, size_bytes=found.size
                        )
                    )
                )

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
        """The operator's removal: out of Ollama, then recorded with install.removed. Whether Ollama had it."""
        existed = await self.ollama.delete(model.id)
        await self.removed(model, "removed by the operator", by_operator=True)
        return existed

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
            await tx.publish(self.fn.event(InstallRemoved(model=model.id, reason=reason, by_operator=by_operator)))

    # -- start-up --------------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Make the stored states agree with what Ollama has (it may have changed while we were down)."""
        present = await self.ollama.installed()
        known = await self.store.all()
        for model in self.catalog:
            row, found = known.get(model.id), present.get(model.id)
            if found is not None and (row is None or row.state != "installed") and not (row and row.leased):
                await self._installed(
                    model, row.install_id if row else "ins_found_in_ollama", found, announce_always=True
                )
            elif found is None and row is not None and row.state == "installed":
                await self.removed(model, "not found in Ollama at start-up", by_operator=False)

    async def keep_reconciling(self, every_s: float = 15.0) -> None:
        """Reconcile at start-up, retrying until Ollama answers."""
        while True:
            try:
                await self.reconcile()
                log.info("install states reconciled with Ollama")
                await check_catalog(self.ollama, self.catalog, set(await self.ollama.installed()))
                return
            except OllamaError as exc:
                log.warning("cannot reconcile with Ollama yet: %s", exc.message)
            await asyncio.sleep(every_s)
