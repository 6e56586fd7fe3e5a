"""The record of Stripe events received: each id once, with what it became (an event type, or "ignored")."""

from __future__ import annotations

from typing import Any

from studio.runtime.database import Transaction, utcnow


class StripeEvents:
    async def outcome(self, tx: Transaction, event_id: str) -> str | None:
        """What an event already received became, or None if it is new."""
        row = await tx.fetch_one("SELECT outcome FROM stripe_events WHERE event_id = ?", (event_id,))
        return row["outcome"] if row is not None else None

    async def record(self, tx: Transaction, stripe_event: dict[str, Any], outcome: str) -> None:
        object_id = stripe_event["data"]["object"].get("id")
        await tx.execute(
            "INSERT INTO stripe_events (event_id, type, object_id, livemode, outcome, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                stripe_event["id"],
                stripe_event["type"],
                object_id if isinstance(object_id, str) else None,
                int(bool(stripe_event.get("livemode"))),
                outcome,
                utcnow(),
            ),
        )
