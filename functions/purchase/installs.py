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
from studio.runtime.database import Database, Row, Transaction

STATE_OF: dict[type[EventData], str] = {
    InstallRequested: "queued",
    InstallStarted: "pulling",
    InstallCompleted: "installed",
    InstallFailed: "failed",
    InstallRemoved: "not_installed",
}
PROGRESS_FIELDS = ("phase", "completed_bytes", "total_bytes", "percent", "bytes_per_s", "eta_s")


def fact_of(data: EventData, event_time: str) -> dict[str, Any]:
    """An install event as the row it makes in install_states."""
    failed = isinstance(data, InstallFailed)
    return {
        "model": data.model,  # type: ignore[attr-defined]
        "state": STATE_OF[type(data)],
        "install_id": getattr(data, "install_id", None),
        "reason": data.reason if failed or isinstance(data, InstallRemoved) else None,  # type: ignore[attr-defined]
        "will_retry": int(failed and data.will_retry),  # type: ignore[attr-defined]
        "retry_in_s": data.retry_in_s if failed else None,  # type: ignore[attr-defined]
        "event_time": event_time,
    }


class InstallBoard:
    """Install states: stored from the durable events, and the newest ones seen live laid over them
    (the durable consumer applies an event a moment after it is published; a page loaded in that
    moment must not see the older state)."""

    def __init__(self) -> None:
        self._live: dict[str, dict[str, Any]] = {}
        self._progress: dict[str, dict[str, Any]] = {}

    async def record(self, db: Database | Transaction, data: EventData, event_time: str) -> None:
        fact = fact_of(data, event_time)
        await db.execute(
            "INSERT INTO install_states (model, state, install_id, reason, will_retry, retry_in_s, event_time) "
            "VALUES (:model, :state, :install_id, :reason, :will_retry, :retry_in_s, :event_time) "
            "ON CONFLICT (model) DO UPDATE SET state = excluded.state, "
            "install_id = COALESCE(excluded.install_id, install_states.install_id), reason = excluded.reason, "
            "will_retry = excluded.will_retry, retry_in_s = excluded.retry_in_s, event_time = excluded.event_time "
            "WHERE excluded.event_time >= install_states.event_time",
            fact,
        )
        self._remember(fact)

    def saw(self, data: EventData, event_time: str) -> None:
        """An install event seen live (broadcast), before the durable consumer records it."""
        self._remember(fact_of(data, event_time))

    def _remember(self, fact: dict[str, Any]) -> None:
        known = self._live.get(fact["model"])
        if known is None or fact["event_time"] >= known["event_time"]:
            self._live[fact["model"]] = fact
            if fact["state"] != "pulling":
                self._progress.pop(fact["model"], None)

    def remember_progress(self, progress: InstallProgressed) -> None:
        self._progress[progress.model] = {
            **{k: getattr(progress, k) for k in PROGRESS_FIELDS},
            "install_id": progress.install_id,
            "at": time.monotonic(),
        }

    async def states(self, db: Database) -> dict[str, Row]:
        return {r["model"]: r for r in await db.fetch_all("SELECT * FROM install_states")}

    def view(self, model: str, row: Row | None) -> dict[str, Any]:
        """What a visitor sees of one model's install: the newest of stored and live, with progress."""
        fact: dict[str, Any] | None = dict(row) if row is not None else None
        live = self._live.get(model)
        if live is not None and (fact is None or live["event_time"] > fact["event_time"]):
            fact = {**live, "install_id": live["install_id"] or (fact or {}).get("install_id")}
        if fact is None:
            return {"state": "not_installed"}
        out: dict[str, Any] = {
            "state": fact["state"],
            "install_id": fact["install_id"],
            "updated_at": fact["event_time"],
        }
        if fact["state"] == "failed":
            out.update(reason=fact["reason"], will_retry=bool(fact["will_retry"]), retry_in_s=fact["retry_in_s"])
        elif fact["state"] == "not_installed" and fact["reason"]:
            out["reason"] = fact["reason"]
        progress = self._progress.get(model)
        if fact["state"] in ("queued", "pulling") and progress and progress["install_id"] == fact["install_id"]:
            out["state"] = "verifying" if progress["phase"] in ("verifying", "writing") else "pulling"
            out.update({k: progress[k] for k in PROGRESS_FIELDS})
        return out
