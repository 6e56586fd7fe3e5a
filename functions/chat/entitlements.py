"""Who may chat with which model: the catalog, the chat function's own projection of purchases, the operator.

- a model outside the catalog: 404 `unknown_model`;
- a free model (price 0): anyone;
- the operator (admin token): any catalog model;
- a paid model: only a visitor with a purchase of it that was not revoked, else 403 `not_owned`.

Ownership is projected from the purchase events into `chat_ownership` (one row per purchase id):
`purchase.completed` grants (never over an existing row), `purchase.revoked` (a full refund, a dispute
lost) and `purchase.suspended` (a dispute open) take access away, `purchase.restored` (a dispute won,
a refund that failed) gives it back. Each change carries the event's time and applies only when it is
not older than the row's, so the projection is idempotent under redelivery and order-safe.
"""

from __future__ import annotations

from studio.catalog import Catalog, CatalogModel
from studio.clients.ollama import normalise
from studio.runtime.database import Database, utcnow
from studio.runtime.errors import Forbidden, NotFound
from studio.runtime.identity import Identity


async def record_purchase(
    db: Database, purchase_id: str, user_id: str, model: str, event_time: str | None = None
) -> None:
    await db.execute(
        "INSERT INTO chat_ownership (purchase_id, user_id, model, revoked, updated_at, event_time) "
        "VALUES (?, ?, ?, 0, ?, ?) ON CONFLICT (purchase_id) DO NOTHING",
        (purchase_id, user_id, normalise(model), utcnow(), event_time),
    )


async def revoke_purchase(
    db: Database, purchase_id: str, user_id: str, model: str, event_time: str | None = None
) -> None:
    """No access (revoked or suspended)."""
    await _set_access(db, purchase_id, user_id, model, revoked=True, event_time=event_time)


async def restore_purchase(db: Database, purchase_id: str, user_id: str, model: str, event_time: str) -> None:
    await _set_access(db, purchase_id, user_id, model, revoked=False, event_time=event_time)


async def _set_access(
    db: Database, purchase_id: str, user_id: str, model: str, *, revoked: bool, event_time: str | None
) -> None:
    await db.execute(
        "INSERT INTO chat_ownership (purchase_id, user_id, model, revoked, updated_at, event_time) "
        "VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (purchase_id) DO UPDATE SET revoked = excluded.revoked, updated_at = excluded.updated_at, "
        "event_time = excluded.event_time WHERE chat_ownership.event_time IS NULL OR excluded.event_time IS NULL "
        "OR chat_ownership.event_time <= excluded.event_time",
        (purchase_id, user_id, normalise(model), int(revoked), utcnow(), event_time),
    )


async def owns(db: Database, user_id: str, model: str) -> bool:
    row = await db.fetch_one(
        "SELECT 1 FROM chat_ownership WHERE user_id = ? AND model = ? AND revoked = 0 LIMIT 1",
        (user_id, normalise(model)),
    )
    return row is not None


async def chattable_model(catalog: Catalog, db: Database, who: Identity, model_id: str) -> CatalogModel:
    """The catalog entry `who` may chat with, or the 404/403 saying why not."""
    model = catalog.get(model_id)
    if model is None:
        raise NotFound(f"{model_id} is not a model of this studio; pick one from the marketplace", code="unknown_model")
    if model.free or who.admin:
        return model
    if who.user_id and await owns(db, who.user_id, model.id):
        return model
    raise Forbidden(
        f"you do not own {model.name} ({model.id}); buy it in the marketplace to chat with it", code="not_owned"
    )
