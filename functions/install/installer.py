"""Installing a model into Ollama: one pull per model at a time, reported, verified, retried.

- In this process, a second request for a model already being pulled waits for that pull.
  Across replicas, a lease row (renewed while pulling) lets one pull and the others retry later.
- A model Ollama already has is not pulled again (Ollama would re-contact the registry).
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
from studio.catalog import Catalog, CatalogModel
from studio.clients.ollama import InstalledModel, OllamaClient, OllamaError, OllamaUnavailable
from studio.runtime.database import Transaction, utcnow
from studio.runtime.function import Function

log = logging.getLogger("studio.functions.install")

BACKOFF = Backoff(base=2.0, cap=60.0)
LEASE_S = 30.0  # a crashed replica's claim expires this long after its last renewal
RENEW_EVERY_S = 8.0
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
    def __init__(self, fn: Function, ollama: OllamaClient, catalog: Catalog, owner: str) -> None:
        self.fn = fn
        self.ollama = ollama
        self.catalog = catalog
        self.owner = owner
        self._pulls: dict[str, asyncio.Task[None]] = {}

    async def install(self, model: CatalogModel, install_id: str, delivery: Delivery) -> None:
        running = self._pulls.get(model.id)
        if running is not None:  # this model is being pulled here already: share that pull
            await asyncio.shield(running)
            return
        task = asyncio.ensure_future(self._install(model, install_id, delivery))
        self._pulls[model.id] = task
        try:
            await task
        finally:
            self._pulls.pop(model.id, None)

    def pulling(self, model_id: str) -> bool:
        return model_id in self._pulls

    async def _install(self, model: CatalogModel, install_id: str, delivery: Delivery) -> None:
        try:
            found = (await self.ollama.installed()).get(model.id)
        except OllamaError as exc:
            await self._failed(model, install_id, delivery, *explain(exc))
            return
        if found is not None:
            await self._installed(model, install_id, found, announce_always=False)
            return
        if not await self._claim(model, install_id):
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
            await self._release(model)

    async def _pull(self, model: CatalogModel, install_id: str) -> None:
        progress = PullProgress()
        renewed = time.monotonic()
        async for line in self.ollama.pull(model.id):
            if progress.update(line):
                with contextlib.suppress(BusUnavailable):
                    await self.fn.bus.publish(
                        self.fn.event(InstallProgressed(install_id=install_id, model=model.id, **progress.snapshot()))
                    )
            if time.monotonic() - renewed > RENEW_EVERY_S:
                renewed = time.monotonic()
                await self.fn.db.execute(
                    "UPDATE installs SET lease_until = ? WHERE model = ? AND lease_owner = ?",
                    (time.time() + LEASE_S, model.id, self.owner),
                )

    # -- state changes, each with its event ------------------------------------------------------

    async def _claim(self, model: CatalogModel, install_id: str) -> bool:
        now = time.time()
        changed = await self.fn.db.execute(
            "INSERT INTO installs (model, state, install_id, lease_owner, lease_until, updated_at) "
            "VALUES (?, 'pulling', ?, ?, ?, ?) ON CONFLICT (model) DO UPDATE SET lease_owner = excluded.lease_owner, "
            "lease_until = excluded.lease_until WHERE installs.lease_until IS NULL OR installs.lease_until < ? "
            "OR installs.lease_owner = excluded.lease_owner",
            (model.id, install_id, self.owner, now + LEASE_S, utcnow(), now),
        )
        return changed == 1

    async def _release(self, model: CatalogModel) -> None:
        await self.fn.db.execute(
            "UPDATE installs SET lease_owner = NULL, lease_until = NULL WHERE model = ? AND lease_owner = ?",
            (model.id, self.owner),
        )

    async def _save(self, tx: Transaction, model: str, state: str, install_id: str, **fields: object) -> None:
        cols = {"state": state, "install_id": install_id, "updated_at": utcnow(), **fields}
        names = ", ".join(cols)
        await tx.execute(
            f"INSERT INTO installs (model, {names}) VALUES (?, {', '.join('?' * len(cols))}) "
            f"ON CONFLICT (model) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in cols)}",
            (model, *cols.values()),
        )

    async def _started(self, model: CatalogModel, install_id: str, attempt: int) -> None:
        async with self.fn.db.transaction() as tx:
            await self._save(tx, model.id, "pulling", install_id, attempt=attempt, reason=None)
            await tx.publish(self.fn.event(InstallStarted(install_id=install_id, model=model.id, attempt=attempt)))

    async def _installed(
        self, model: CatalogModel, install_id: str, found: InstalledModel, *, announce_always: bool
    ) -> None:
        async with self.fn.db.transaction() as tx:
            row = await tx.fetch_one("SELECT state, digest FROM installs WHERE model = ?", (model.id,))
            fresh = row is None or row["state"] != "installed" or row["digest"] != found.digest
            await self._save(
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
            await self._save(tx, model.id, "failed", install_id, attempt=delivery.attempt, reason=reason)
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

    async def removed(self, model: CatalogModel, reason: str, *, by_operator: bool) -> None:
        async with self.fn.db.transaction() as tx:
            row = await tx.fetch_one("SELECT install_id FROM installs WHERE model = ?", (model.id,))
            await self._save(
                tx,
                model.id,
                "removed",
                row["install_id"] if row else "none",
                reason=reason,
                digest=None,
                size_bytes=None,
            )
            await tx.publish(self.fn.event(InstallRemoved(model=model.id, reason=reason, by_operator=by_operator)))

    # -- start-up --------------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Make the stored states agree with what Ollama has (it may have changed while we were down)."""
        present = await self.ollama.installed()
        rows = {r["model"]: r for r in await self.fn.db.fetch_all("SELECT * FROM installs")}
        for model in self.catalog:
            row, found = rows.get(model.id), present.get(model.id)
            leased = row is not None and row["lease_until"] is not None and row["lease_until"] > time.time()
            if found is not None and (row is None or row["state"] != "installed") and not leased:
                await self._installed(
                    model, row["install_id"] if row else "ins_found_in_ollama", found, announce_always=True
                )
            elif found is None and row is not None and row["state"] == "installed":
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
