"""Pruning: published outbox rows and processed Stripe event ids go after the window; nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from functions import load
from studio.runtime.database import RUNTIME_MIGRATIONS, Database
from studio.runtime.retention import OUTBOX, Pruner, Retention, iso
from tests.support import eventually

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
KEEP_S = 7 * 86400


def ago(days: float, now: datetime = NOW) -> str:
    return iso(now - timedelta(days=days))


async def add_outbox(
    db: Database, event_id: str, created_days: float, published_days: float | None, now: datetime = NOW
) -> None:
    await db.execute(
        "INSERT INTO outbox (event_id, event_type, payload, created_at, published_at) VALUES (?, 'x.y', '{}', ?, ?)",
        (event_id, ago(created_days, now), None if published_days is None else ago(published_days, now)),
    )


async def add_stripe_event(db: Database, event_id: str, days: float, now: datetime = NOW) -> None:
    await db.execute(
        "INSERT INTO stripe_events (event_id, type, outcome, received_at) VALUES (?, 'charge.refunded', 'x', ?)",
        (event_id, ago(days, now)),
    )


async def ids(db: Database, table: str, key: str) -> list[str]:
    return sorted(r[0] for r in await db.fetch_all(f"SELECT {key} FROM {table}"))


async def test_only_published_rows_older_than_the_window_are_pruned_in_batches(db_target) -> None:
    db = Database(db_target)
    await db.open()
    try:
        await db.migrate([RUNTIME_MIGRATIONS, load("webhook").migrations or RUNTIME_MIGRATIONS])
        for n in range(7):
            await add_outbox(db, f"old_published_{n}", created_days=9, published_days=8.9)
        await add_outbox(db, "old_unpublished", created_days=30, published_days=None)  # NATS was down: kept
        await add_outbox(db, "recent_published", created_days=6.9, published_days=6.9)
        await add_outbox(db, "recent_unpublished", created_days=0, published_days=None)
        await add_stripe_event(db, "evt_old", days=7.5)
        await add_stripe_event(db, "evt_recent", days=2.9)  # Stripe may still retry it

        pruner = Pruner(db, [OUTBOX, Retention("stripe_events", "received_at", "event_id")], keep_s=KEEP_S, batch=3)
        deleted = await pruner.prune(now=NOW)

        assert deleted == {"outbox": 7, "stripe_events": 1}
        assert await ids(db, "outbox", "event_id") == ["old_unpublished", "recent_published", "recent_unpublished"]
        assert await ids(db, "stripe_events", "event_id") == ["evt_recent"]
        assert await pruner.prune(now=NOW) == {"outbox": 0, "stripe_events": 0}
    finally:
        await db.close()


async def test_the_host_prunes_at_start_up(tmp_path, embedded_studio, settings) -> None:
    webhook = load("webhook")
    db = Database(settings.database_target)
    await db.open()
    await db.migrate([RUNTIME_MIGRATIONS, webhook.migrations or RUNTIME_MIGRATIONS])
    now = datetime.now(UTC)
    await add_outbox(db, "old", created_days=20, published_days=20, now=now)
    await add_stripe_event(db, "evt_old", days=20, now=now)
    await add_stripe_event(db, "evt_new", days=0, now=now)
    await db.close()

    await embedded_studio([webhook])

    await eventually(lambda: _pruned(webhook), message="old rows pruned at start-up")
    assert await ids(webhook.db, "stripe_events", "event_id") == ["evt_new"]


async def _pruned(webhook) -> bool:
    old = await webhook.db.fetch_one("SELECT COUNT(*) FROM outbox WHERE event_id = 'old'")
    stripe = await webhook.db.fetch_one("SELECT COUNT(*) FROM stripe_events WHERE event_id = 'evt_old'")
    return old[0] == 0 and stripe[0] == 0
