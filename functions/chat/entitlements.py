"""Who may chat with which model: the catalog, the chat function's own projection of purchases, the operator.

- a model outside the catalog: 404 `unknown_model`;
- a free model (price 0): anyone;
- the operator (admin token): any catalog model;
- a paid model: only a visitor with a purchase of it that was not revoked, else 403 `not_owned`.

Ownership is projected from `purchase.completed` / `purchase.revoked` / `purchase.transferred` into
`chat_ownership` (one row per purchase id, revocations kept as tombstones), so it is idempotent under
redelivery and order-safe.
"""

from __future__ import annotations

from studio.catalog import Catalog, CatalogModel
from studio.clients.ollama import normalise
from studio.runtime.database import Database, utcnow
from studio.runtime.errors import Forbidden, NotFound
from studio.runtime.identity import Identity


async def record_purchase(db: Database, purchase_id: str, user_id: str, model: str) -> None:
    await db.execute(
        "INSERT INTO chat_ownership (purchase_id, user_id, model, revoked, updated_at) VALUES (?, ?, ?, 0, ?) "
        "ON CONFLICT (purchase_id) DO NOTHING",
        (purchase_id, user_id, normalise(model), utcnow()),
    )


async def revoke_purchase(db: Database, purchase_id: str, user_id: str, model: str) -> None:
    await db.execute(
        "INSERT INTO chat_ownership (purchase_id, user_id, model, revoked, updated_at) VALUES (?, ?, ?, 1, ?) "
        "ON CONFLICT (purchase_id) DO UPDATE SET revoked = 1, updated_at = excluded.updated_at",
        (purchase_id, user_id, normalise(model), utcnow()),
    )


async def transfer_purchase(db: Database, purchase_id: str, user_id: str, model: str) -> None:
    """A paid purchase moved to another owner (a visitor signed in); a revocation stays a revocation."""
    await db.execute(
        "INSERT INTO chat_ownership (purchase_id, user_id, model, revoked, updated_at) VALUES (?, ?, ?, 0, ?) "
        "ON CONFLICT (purchase_id) DO UPDATE SET user_id = excluded.user_id, updated_at = excluded.updated_at",
        (purchase_id, user_id, normalise(model), utcnow()),
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


async def usable_models(catalog: Catalog, db: Database, who: Identity) -> list[str]:
    """The catalog models `who` may chat with: free ones, owned ones, every one for the operator."""
    if who.admin:
        return [m.id for m in catalog]
    owned: set[str] = set()
    if who.user_id:
        rows = await db.fetch_all(
            "SELECT DISTINCT model FROM chat_ownership WHERE user_id = ? AND revoked = 0", (who.user_id,)
        )
        owned = {r["model"] for r in rows}
    return [m.id for m in catalog if m.free or m.id in owned]
