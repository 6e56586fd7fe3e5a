"""The install store: the one record of every model's install, and what the studio is told about it.

Each row is written in the same transaction as the event that announces it (`tx.publish`), so the
state this store answers is never behind the events: whoever subscribes to `install.*` and then asks
(`installs.states`) misses nothing. The live percentage of a pull is not stored (like
`install.progressed`, it is ephemeral): it is kept in memory from the progress events, and laid over
a row only while that row's install is the one pulling.

With a fleet of Ollama nodes, `install_nodes` keeps each (model, node): its state and the pull lease
(one replica pulls a model onto a node at a time, whichever studio it runs in). The model's own row
stays what buyers see: installed once the model is on at least one node; its lease is the latest of
its nodes' leases.

Stored states: queued, pulling, installed, failed, removed. What a visitor sees (`view`): queued,
pulling, verifying (a pull past its download), installed, failed (with `will_retry`), not_installed
(never installed, or removed, with the reason).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from events.catalog import InstallProgressed
from studio.runtime.database import Database, Row, Transaction, utcnow

LEASE_S = 30.0  # a crashed replica's claim expires this long after its last renewal
PROGRESS_FIELDS = ("phase", "completed_bytes", "total_bytes", "percent", "bytes_per_s", "eta_s")


@dataclass(frozen=True)
class Install:
    model: str
    state: str
    install_id: str
    digest: str | None
    reason: str | None
    lease_until: float | None
    updated_at: str = ""

    @classmethod
    def from_row(cls, row: Row) -> Install:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})

    @property
    def leased(self) -> bool:
        """A replica is pulling it now (its claim is renewed while the pull runs)."""
        return self.lease_until is not None and self.lease_until > time.time()

    @property
    def in_progress(self) -> bool:
        return self.state == "queued" or (self.state == "pulling" and self.leased)


# A model's lease is its own (before fleets) or the latest of its nodes' (a pull onto any node is under way).
SELECT_INSTALL = (
    "SELECT i.model, i.state, i.install_id, i.digest, i.reason, i.updated_at, "
    "COALESCE((SELECT MAX(n.lease_until) FROM install_nodes n WHERE n.model = i.model), i.lease_until) "
    "AS lease_until FROM installs i"
)


@dataclass(frozen=True)
class NodeInstall:
    model: str
    node: str
    state: str
    install_id: str
    digest: str | None
    reason: str | None
    lease_until: float | None
    updated_at: str

    @classmethod
    def from_row(cls, row: Row) -> NodeInstall:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})

    @property
    def leased(self) -> bool:
        return self.lease_until is not None and self.lease_until > time.time()


class InstallStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._progress: dict[str, dict[str, Any]] = {}

    # -- reads -----------------------------------------------------------------------------------

    async def get(self, db: Database | Transaction, model: str) -> Install | None:
        row = await db.fetch_one(f"{SELECT_INSTALL} WHERE i.model = ?", (model,))
        return Install.from_row(row) if row else None

    async def all(self) -> dict[str, Install]:
        return {r["model"]: Install.from_row(r) for r in await self.db.fetch_all(SELECT_INSTALL)}

    async def nodes(self) -> dict[tuple[str, str], NodeInstall]:
        """Every (model, node) on record."""
        rows = await self.db.fetch_all("SELECT * FROM install_nodes")
        return {(r["model"], r["node"]): NodeInstall.from_row(r) for r in rows}

    async def views(self) -> dict[str, dict[str, Any]]:
        """Every model with an install on record, as a visitor sees it (models absent: not_installed)."""
        rows = await self.db.fetch_all("SELECT * FROM installs")
        return {r["model"]: self.view(r) for r in rows}

    def view(self, row: Row) -> dict[str, Any]:
        state = "not_installed" if row["state"] == "removed" else row["state"]
        out: dict[str, Any] = {"state": state, "install_id": row["install_id"], "updated_at": row["updated_at"]}
        if state == "failed":
            out.update(reason=row["reason"], will_retry=bool(row["will_retry"]), retry_in_s=row["retry_in_s"])
        elif state == "not_installed" and row["reason"]:
            out["reason"] = row["reason"]
        progress = self._progress.get(row["model"])
        if state in ("queued", "pulling") and progress and progress["install_id"] == row["install_id"]:
            out["state"] = "verifying" if progress["phase"] in ("verifying", "writing") else "pulling"
            out.update({k: progress[k] for k in PROGRESS_FIELDS})
        return out

    def progressed(self, event: InstallProgressed) -> None:
        """The newest progress of a pull (on any replica): shown with its row while it is pulling."""
        self._progress[event.model] = {
            "install_id": event.install_id,
            **{k: getattr(event, k) for k in PROGRESS_FIELDS},
        }

    # -- changes (each in the caller's transaction, next to its event) ----------------------------

    async def save(self, tx: Transaction, model: str, state: str, install_id: str, **fields: object) -> None:
        cols = {"state": state, "install_id": install_id, "updated_at": utcnow(), **fields}
        names = ", ".join(cols)
        await tx.execute(
            f"INSERT INTO installs (model, {names}) VALUES (?, {', '.join('?' * len(cols))}) "
            f"ON CONFLICT (model) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in cols)}",
            (model, *cols.values()),
        )
        if state != "pulling":
            self._progress.pop(model, None)

    async def queue(self, tx: Transaction, model: str, install_id: str) -> None:
        await self.save(tx, model, "queued", install_id, reason=None, will_retry=0, retry_in_s=None)

    # -- the pull lease: one replica pulls a model at a time --------------------------------------

    async def claim(self, model: str, install_id: str, owner: str) -> bool:
        now = time.time()
        changed = await self.db.execute(
            "INSERT INTO installs (model, state, install_id, lease_owner, lease_until, updated_at) "
            "VALUES (?, 'pulling', ?, ?, ?, ?) ON CONFLICT (model) DO UPDATE SET lease_owner = excluded.lease_owner, "
            "lease_until = excluded.lease_until WHERE installs.lease_until IS NULL OR installs.lease_until < ? "
            "OR installs.lease_owner = excluded.lease_owner",
            (model, install_id, owner, now + LEASE_S, utcnow(), now),
        )
        return changed == 1

    async def renew(self, model: str, owner: str) -> None:
        await self.db.execute(
            "UPDATE installs SET lease_until = ? WHERE model = ? AND lease_owner = ?",
            (time.time() + LEASE_S, model, owner),
        )

    async def release(self, model: str, owner: str) -> None:
        await self.db.execute(
            "UPDATE installs SET lease_owner = NULL, lease_until = NULL WHERE model = ? AND lease_owner = ?",
            (model, owner),
        )

    # -- per node (a fleet): state and the pull lease of one model on one node ---------------------

    async def save_node(
        self, db: Database | Transaction, model: str, node: str, state: str, install_id: str, **fields: object
    ) -> None:
        cols = {"state": state, "install_id": install_id, "updated_at": utcnow(), **fields}
        await db.execute(
            f"INSERT INTO install_nodes (model, node, {', '.join(cols)}) VALUES (?, ?, {', '.join('?' * len(cols))}) "
            f"ON CONFLICT (model, node) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in cols)}",
            (model, node, *cols.values()),
        )

    async def claim_node(self, model: str, node: str, install_id: str, owner: str) -> bool:
        now = time.time()
        changed = await self.db.execute(
            "INSERT INTO install_nodes (model, node, state, install_id, lease_owner, lease_until, updated_at) "
            "VALUES (?, ?, 'pulling', ?, ?, ?, ?) ON CONFLICT (model, node) DO UPDATE SET "
            "lease_owner = excluded.lease_owner, lease_until = excluded.lease_until "
            "WHERE install_nodes.lease_until IS NULL OR install_nodes.lease_until < ? "
            "OR install_nodes.lease_owner = excluded.lease_owner",
            (model, node, install_id, owner, now + LEASE_S, utcnow(), now),
        )
        return changed == 1

    async def renew_node(self, model: str, node: str, owner: str) -> None:
        await self.db.execute(
            "UPDATE install_nodes SET lease_until = ? WHERE model = ? AND node = ? AND lease_owner = ?",
            (time.time() + LEASE_S, model, node, owner),
        )

    async def release_node(self, model: str, node: str, owner: str) -> None:
        await self.db.execute(
            "UPDATE install_nodes SET lease_owner = NULL, lease_until = NULL "
            "WHERE model = ? AND node = ? AND lease_owner = ?",
            (model, node, owner),
        )
