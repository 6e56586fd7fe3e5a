"""Who may chat with which model: the catalog, the owner of purchases, the operator.

- a model outside the catalog: 404 `unknown_model`;
- a free model (price 0): anyone;
- the operator (admin token): any catalog model;
- a paid model: only a visitor with a purchase of it that was not revoked, else 403 `not_owned`.

Whether a caller owns a paid model is answered, cheapest first (`owner_says`):

1. this replica's memory of owned (caller, model) pairs (a dict lookup: no round trip on the hot path);
2. chat's projection `chat_ownership` (below): an owned, not revoked, not suspended purchase there
   needs no question to anyone, and is remembered;
3. only on a miss, the purchase function, which owns purchases (`purchases.owns`, NATS request/reply):
   a purchase answered 200 counts on the very next request, on any replica, however far behind any
   consumer is (read-your-own-purchase), and is remembered.

A refund or a dispute takes effect within the consumers' lag: every replica hears `purchase.revoked` and
`purchase.suspended` as they are published (a broadcast, `forget`) and drops the pair from memory, and
the projection applies them as its consumer reaches them (until then the pair is asked of purchase
again, not taken from the projection). A replica cut from NATS when the event passed re-checks what it
remembers every `REMEMBER_S` seconds.

While the database is unreachable (an outage), a caller who chatted with a paid model lately (a pair
this replica saw owned within `KEEP_S`) keeps chatting with it, as chat keeps answering through a
purchase outage; anyone else gets the 503 database_unavailable. A refusal or a withdrawal forgets the
pair at once; at most `KEPT_MAX` pairs are kept (the oldest go first). This is the same memory as the
one above, kept longer and used only when nothing else can answer (`model_for`).

Chat keeps its own projection, `chat_ownership` (one row per purchase id), fed in batches:
`purchase.completed` grants (never over an existing row), `purchase.revoked` (a full refund, a dispute
lost) and `purchase.suspended` (a dispute open) take access away, `purchase.restored` (a dispute won, a
refund that failed) gives it back, `purchase.transferred` moves it to the buyer's account. Each access
change carries its event's time and applies only when it is not older than the row's, so the projection
is idempotent under redelivery and order-safe. It also answers "not owned" while the purchase function
cannot answer (down, or slower than `OWNER_TIMEOUT_S`): chat keeps working through a purchase outage, as
of the events it has seen.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence

from events.bus import Bus, BusUnavailable
from events.catalog import (
    EventData,
    PurchaseCompleted,
    PurchaseRestored,
    PurchaseRevoked,
    PurchaseSuspended,
    PurchaseTransferred,
)
from studio.catalog import Catalog, CatalogModel
from studio.clients.ollama import normalise
from studio.runtime.database import Database, DatabaseUnavailable, utcnow
from studio.runtime.errors import Forbidden, NotFound, report_database_down
from studio.runtime.identity import Identity

log = logging.getLogger("studio.functions.chat")

OWNER_QUERY = "purchases.owns"  # answered by the purchase function: {"user_id", "model"} -> {"owns": bool}
WARN_EVERY_S = 60.0
MEMORY_MAX = 100_000  # owned pairs remembered at most (past it, the expired ones go, or all)
OWNER_TIMEOUT_S = 5.0  # purchase down: NATS says "no responders" at once; alive but busy: worth the wait
REMEMBER_S = 60.0  # how long an owned pair is trusted from memory before the projection is read again
KEEP_S = 3600.0  # through a database outage, a pair seen owned this recently still answers
KEPT_MAX = 50_000  # pairs kept for an outage at most (the oldest go first)

GRANT = (
    "INSERT INTO chat_ownership (purchase_id, user_id, model, revoked, updated_at, event_time) "
    "VALUES (?, ?, ?, 0, ?, ?) ON CONFLICT (purchase_id) DO NOTHING"
)
ACCESS = (  # revoked 1 (refunded, disputed) or 0 (restored); an older event never overwrites a newer state
    "INSERT INTO chat_ownership (purchase_id, user_id, model, revoked, updated_at, event_time) "
    "VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (purchase_id) DO UPDATE SET revoked = excluded.revoked, updated_at = excluded.updated_at, "
    "event_time = excluded.event_time WHERE chat_ownership.event_time IS NULL OR excluded.event_time IS NULL "
    "OR chat_ownership.event_time <= excluded.event_time"
)
TRANSFER = (  # a revocation stays a revocation: only the owner changes
    "INSERT INTO chat_ownership (purchase_id, user_id, model, revoked, updated_at) VALUES (?, ?, ?, 0, ?) "
    "ON CONFLICT (purchase_id) DO UPDATE SET user_id = excluded.user_id, updated_at = excluded.updated_at"
)
Change = PurchaseCompleted | PurchaseRevoked | PurchaseSuspended | PurchaseRestored | PurchaseTransferred


Pair = tuple[str, str]  # (user id, normalised model)


class Ownership:
    """The chat function's projection of purchases (table chat_ownership), and this replica's memory of it."""

    def __init__(self, db: Database, *, remember_s: float = REMEMBER_S, keep_s: float = KEEP_S) -> None:
        self.db = db
        self.warned_at = float("-inf")  # when chat last said it answers from the projection
        self.remember_s = remember_s
        self.keep_s = keep_s
        self._owned: dict[Pair, float] = {}  # owned pairs -> until when (monotonic) memory may say so
        self._withdrawn: dict[Pair, float] = {}  # pairs revoked or suspended lately -> when heard
        self._seen: OrderedDict[Pair, float] = OrderedDict()  # owned pairs -> when last seen (for an outage)

    # -- memory ----------------------------------------------------------------------------------

    def remembers(self, user_id: str, model: str) -> bool:
        until = self._owned.get((user_id, model))
        if until is None:
            return False
        if until < time.monotonic():
            del self._owned[(user_id, model)]
            return False
        return True

    def remember(self, user_id: str, model: str) -> None:
        now = time.monotonic()
        if len(self._owned) >= MEMORY_MAX:
            self._owned = {pair: until for pair, until in self._owned.items() if until >= now}
            if len(self._owned) >= MEMORY_MAX:
                self._owned.clear()
        self._owned[(user_id, model)] = now + self.remember_s

    def forget(self, user_id: str, model: str) -> None:
        """Access was taken away (heard live): not from memory, and not from the projection until it has
        applied the change too (within REMEMBER_S: the consumers' lag is far shorter)."""
        pair = (user_id, normalise(model))
        self._owned.pop(pair, None)
        self._seen.pop(pair, None)
        now = time.monotonic()
        self._withdrawn = {p: at for p, at in self._withdrawn.items() if now - at < self.remember_s}
        self._withdrawn[pair] = now

    def withdrawn(self, user_id: str, model: str) -> bool:
        at = self._withdrawn.get((user_id, model))
        return at is not None and time.monotonic() - at < self.remember_s

    def restored(self, user_id: str, model: str) -> None:
        self._withdrawn.pop((user_id, normalise(model)), None)

    # -- what an outage falls back to ------------------------------------------------------------

    def saw(self, user_id: str, model: str) -> None:
        """`user_id` was just answered as an owner of `model` (kept `keep_s` for a database outage)."""
        pair = (user_id, normalise(model))
        self._seen[pair] = time.monotonic()
        self._seen.move_to_end(pair)
        while len(self._seen) > KEPT_MAX:
            self._seen.popitem(last=False)

    def unsee(self, user_id: str, model: str) -> None:
        """Refused (403): not kept for an outage either."""
        self._seen.pop((user_id, normalise(model)), None)

    def seen_lately(self, user_id: str, model: str) -> bool:
        at = self._seen.get((user_id, normalise(model)))
        return at is not None and time.monotonic() - at <= self.keep_s

    # -- the projection --------------------------------------------------------------------------

    async def apply(self, changes: Sequence[tuple[EventData, str | None]]) -> None:
        """Record a batch of changes, each with its event's time, in one transaction."""
        now = utcnow()
        grants: list[tuple[object, ...]] = []
        access: list[tuple[object, ...]] = []
        transfers: list[tuple[object, ...]] = []
        for c, at in changes:
            if isinstance(c, PurchaseCompleted):
                grants.append((c.purchase_id, c.user_id, normalise(c.model), now, at))
            elif isinstance(c, PurchaseTransferred):
                transfers.append((c.purchase_id, c.user_id, normalise(c.model), now))
            elif isinstance(c, PurchaseRevoked | PurchaseSuspended | PurchaseRestored):
                revoked = int(not isinstance(c, PurchaseRestored))
                access.append((c.purchase_id, c.user_id, normalise(c.model), revoked, now, at))
        async with self.db.transaction() as tx:
            for sql, rows in ((GRANT, grants), (TRANSFER, transfers), (ACCESS, access)):
                if rows:
                    await tx.execute_many(sql, rows)

    async def owns(self, user_id: str, model: str) -> bool:
        row = await self.db.fetch_one(
            "SELECT 1 FROM chat_ownership WHERE user_id = ? AND model = ? AND revoked = 0 LIMIT 1",
            (user_id, normalise(model)),
        )
        return row is not None


async def record_purchase(
    db: Database, purchase_id: str, user_id: str, model: str, event_time: str | None = None
) -> None:
    grant = PurchaseCompleted(
        purchase_id=purchase_id, user_id=user_id, model=model, kind="free", amount_cents=0, currency="usd"
    )
    await Ownership(db).apply([(grant, event_time)])


async def revoke_purchase(
    db: Database, purchase_id: str, user_id: str, model: str, event_time: str | None = None
) -> None:
    revoke = PurchaseRevoked(purchase_id=purchase_id, user_id=user_id, model=model, reason="refunded")
    await Ownership(db).apply([(revoke, event_time)])


async def restore_purchase(db: Database, purchase_id: str, user_id: str, model: str, event_time: str) -> None:
    restore = PurchaseRestored(purchase_id=purchase_id, user_id=user_id, model=model, reason="dispute won")
    await Ownership(db).apply([(restore, event_time)])


async def owns(db: Database, user_id: str, model: str) -> bool:
    return await Ownership(db).owns(user_id, model)


async def owner_says(bus: Bus, ownership: Ownership, user_id: str, model: str) -> bool:
    """Whether `user_id` owns `model`: memory, else the projection, else the purchase function (module doc)."""
    model = normalise(model)
    if ownership.remembers(user_id, model):
        return True
    withdrawn = ownership.withdrawn(user_id, model)  # the projection may not have applied it yet
    if not withdrawn and await ownership.owns(user_id, model):
        ownership.remember(user_id, model)
        return True
    try:
        answer = await bus.query(OWNER_QUERY, {"user_id": user_id, "model": model}, timeout=OWNER_TIMEOUT_S)
        owns = answer["owns"] is True
    except (BusUnavailable, KeyError) as exc:
        now = time.monotonic()
        if now - ownership.warned_at > WARN_EVERY_S:  # a purchase outage: say so, not once a request
            ownership.warned_at = now
            log.warning("the purchase function did not answer (%s); using chat's projection of purchases", exc)
        return not withdrawn and await ownership.owns(user_id, model)
    if owns:
        ownership.remember(user_id, model)
    return owns


async def chattable_model(
    catalog: Catalog, bus: Bus, ownership: Ownership, who: Identity, model_id: str
) -> CatalogModel:
    """The catalog entry `who` may chat with, or the 404/403 saying why not."""
    model = catalog.get(model_id)
    if model is None:
        raise NotFound(f"{model_id} is not a model of this studio; pick one from the marketplace", code="unknown_model")
    if model.free or who.admin:
        return model
    if who.user_id and await owner_says(bus, ownership, who.user_id, model.id):
        return model
    raise Forbidden(
        f"you do not own {model.name} ({model.id}); buy it in the marketplace to chat with it", code="not_owned"
    )


async def model_for(catalog: Catalog, bus: Bus, ownership: Ownership, who: Identity, model_id: str) -> CatalogModel:
    """`chattable_model`, and through a database outage what this replica saw owned lately (module doc)."""
    try:
        model = await chattable_model(catalog, bus, ownership, who, model_id)
    except DatabaseUnavailable as exc:
        known = catalog.get(model_id)
        if known is None or not who.user_id or not ownership.seen_lately(who.user_id, known.id):
            raise
        report_database_down(exc)
        return known
    except Forbidden:
        if who.user_id:
            ownership.unsee(who.user_id, model_id)
        raise
    if who.user_id and not model.free:
        ownership.saw(who.user_id, model.id)
    return model


async def usable_models(catalog: Catalog, ownership: Ownership, who: Identity) -> list[str]:
    """The catalog models `who` may chat with: free ones, owned ones, every one for the operator."""
    if who.admin:
        return [m.id for m in catalog]
    owned: set[str] = set()
    if who.user_id:
        rows = await ownership.db.fetch_all(
            "SELECT DISTINCT model FROM chat_ownership WHERE user_id = ? AND revoked = 0", (who.user_id,)
        )
        owned = {r["model"] for r in rows if not ownership.withdrawn(who.user_id, r["model"])}
    return [m.id for m in catalog if m.free or m.id in owned]
