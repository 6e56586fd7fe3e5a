"""The marketplace's view of installs: the state of each model, from the install function's events.

States come from durable install.* events (stored, so they survive restarts; an event older than
the stored state is ignored, since redeliveries can arrive late); the live percentage comes from
install.progressed events, kept in memory only.
"""

from __future__ import annotations

import time
from typing import Any

from events.catalog import (
    EventData,
    InstallCompleted,
    InstallFailed,
    InstallProgressed,
    InstallRemoved,
    InstallRequested,
    InstallStarted,
)
from functions.runtime.database import Database, Row, Transaction

STATE_OF: dict[type[EventData], str] = {
    InstallRequested: "queued",
    InstallStarted: "pulling",
    InstallCompleted: "installed",
    InstallFailed: "failed",
    InstallRemoved: "not_installed",
}
PROGRESS_FIELDS = ("phase", "completed_bytes", "total_bytes", "percent", "bytes_per_s", "eta_s")


class InstallBoard:
    def __init__(self) -> None:
        self._progress: dict[str, dict[str, Any]] = {}

    async def record(self, db: Database | Transaction, data: EventData, event_time: str) -> None:
        state = STATE_OF[type(data)]
        failed = isinstance(data, InstallFailed)
        sql = (
            "INSERT INTO install_states (model, state, install_id, reason, will_retry, retry_in_s, event_time) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (model) DO UPDATE SET state = excluded.state, "
            "install_id = COALESCE(excluded.install_id, install_states.install_id), reason = excluded.reason, "
            "will_retry = excluded.will_retry, retry_in_s = excluded.retry_in_s, event_time = excluded.event_time "
            "WHERE excluded.event_time >= install_states.event_time"
        )
        params = (data.model, state, getattr(data, "install_id", None),  # type: ignore[attr-defined]
                  data.reason if failed or isinstance(data, InstallRemoved) else None,  # type: ignore[attr-defined]
                  int(failed and data.will_retry), data.retry_in_s if failed else None,  # type: ignore[attr-defined]
                  event_time)
        await db.execute(sql, params)
        if state != "pulling":
            self._progress.pop(data.model, None)  # type: ignore[attr-defined]

    def remember_progress(self, progress: InstallProgressed) -> None:
        self._progress[progress.model] = {
            **{k: getattr(progress, k) for k in PROGRESS_FIELDS}, "install_id": progress.install_id,
            "at": time.monotonic(),
        }

    async def states(self, db: Database) -> dict[str, Row]:
        return {r["model"]: r for r in await db.fetch_all("SELECT * FROM install_states")}

    def view(self, model: str, row: Row | None) -> dict[str, Any]:
        """What a visitor sees of one model's install."""
        if row is None:
            return {"state": "not_installed"}
        out: dict[str, Any] = {"state": row["state"], "install_id": row["install_id"], "updated_at": row["event_time"]}
        if row["state"] == "failed":
            out.update(reason=row["reason"], will_retry=bool(row["will_retry"]), retry_in_s=row["retry_in_s"])
        elif row["state"] == "not_installed" and row["reason"]:
            out["reason"] = row["reason"]
        progress = self._progress.get(model)
        if row["state"] in ("queued", "pulling") and progress and progress["install_id"] == row["install_id"]:
            out["state"] = "verifying" if progress["phase"] in ("verifying", "writing") else "pulling"
            out.update({k: progress[k] for k in PROGRESS_FIELDS})
        return out
