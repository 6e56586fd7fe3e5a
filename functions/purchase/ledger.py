"""The purchase ledger: who bought which model, and what happened to the payment.

Every change that completes, fails or revokes a purchase commits together with its event
(`tx.publish`), so the rest of the studio learns of it exactly when it becomes true.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from events.catalog import (
    PurchaseCompleted,
    PurchaseCreated,
    PurchaseFailed,
    PurchaseFlagged,
    PurchaseRestored,
    PurchaseRevoked,
    PurchaseSuspended,
    PurchaseTransferred,
)
from studio.runtime.database import Database, Row, Transaction, utcnow
from studio.runtime.function import Function

CHECKOUT_REUSE_S = 23 * 3600  # Stripe sessions live 24 h: reuse an open one, don't open another


def new_purchase_id() -> str:
    return "pur_" + secrets.token_hex(10)


def is_purchase_id(value: object) -> bool:
    """Whether `value` has the shape of a purchase id this studio made (Stripe metadata is untrusted)."""
    return isinstance(value, str) and len(value) == 24 and value.startswith("pur_") and _is_hex(value[4:])


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True)
class Purchase:
    id: str
    user_id: str
    model: str
    kind: str
    status: str
    amount_cents: int
    currency: str
    checkout_session_id: str | None
    checkout_url: str | None
    payment_intent: str | None
    failure_reason: str | None
    created_at: str
    completed_at: str | None
    updated_at: str = ""
    suspended_at: str | None = None  # a dispute is open: no access until it closes
    flag: str | None = None  # why the operator should look at it (its install failed: disk full)
    email: str | None = None  # the buyer's, as Stripe Checkout collected it

    @classmethod
    def from_row(cls, row: Row) -> Purchase:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})

    @property
    def owned(self) -> bool:
        return self.status == "paid" and self.suspended_at is None

    def for_operator(self) -> dict[str, Any]:
        return {
            **self.public(),
            "user_id": self.user_id,
            "email": self.email,
            "payment_intent": self.payment_intent,
            "checkout_session_id": self.checkout_session_id,
        }

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "kind": self.kind,
            "status": self.status,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "failure_reason": self.failure_reason,
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "suspended": self.suspended_at is not None,
            "flag": self.flag,
        }


@dataclass(frozen=True)
class PaymentFacts:
    """What Stripe said about one payment intent besides "paid" (table payment_facts)."""

    payment_intent: str
    refund: str | None  # full | failed
    refund_at: int
    dispute: str | None  # open | won | lost
    dispute_at: int

    def access(self) -> tuple[str, str]:
        """(owned | suspended | revoked, why): what a purchase paid with this payment intent deserves."""
        if self.dispute == "lost":
            return "revoked", "dispute lost"
        if self.refund == "full":
            return "revoked", "refunded"
        if self.dispute == "open":
            return "suspended", "disputed"
        return "owned", "dispute won" if self.dispute == "won" else "refund failed"


class Ledger:
    def __init__(self, fn: Function) -> None:
        self.fn = fn

    @property
    def db(self) -> Database:
        return self.fn.db

    # -- reads -----------------------------------------------------------------------------------

    async def owned(self, user_id: str) -> set[str]:
        rows = await self.db.fetch_all(
            "SELECT DISTINCT model FROM purchases WHERE user_id = ? AND status = 'paid' AND suspended_at IS NULL",
            (user_id,),
        )
        return {r["model"] for r in rows}

    async def owns(self, user_id: str, model: str) -> bool:
        """Paid and not suspended: a purchase under an open dispute is owned nowhere (chat asks this)."""
        row = await self.db.fetch_one(
            "SELECT 1 FROM purchases WHERE user_id = ? AND model = ? AND status = 'paid' AND suspended_at IS NULL "
            "LIMIT 1",
            (user_id, model),
        )
        return row is not None

    async def suspended(self, user_id: str, model: str) -> bool:
        """The visitor paid for `model` but its payment is disputed: no access, and no second purchase."""
        row = await self.db.fetch_one(
            "SELECT 1 FROM purchases WHERE user_id = ? AND model = ? AND status = 'paid' "
            "AND suspended_at IS NOT NULL LIMIT 1",
            (user_id, model),
        )
        return row is not None

    async def pending_checkouts(self) -> list[Purchase]:
        """Stripe purchases still pending, oldest first."""
        rows = await self.db.fetch_all(
            "SELECT * FROM purchases WHERE status = 'pending' AND kind = 'stripe' ORDER BY created_at"
        )
        return [Purchase.from_row(r) for r in rows]

    async def owned_models(self) -> dict[str, int]:
        """Every model someone owns (paid, not suspended), with how many purchases own it."""
        rows = await self.db.fetch_all(
            "SELECT model, COUNT(*) AS owners FROM purchases WHERE status = 'paid' AND suspended_at IS NULL "
            "GROUP BY model"
        )
        return {r["model"]: r["owners"] for r in rows}

    async def by_payment_intent(self, payment_intent: str) -> list[Purchase]:
        rows = await self.db.fetch_all("SELECT * FROM purchases WHERE payment_intent = ?", (payment_intent,))
        return [Purchase.from_row(r) for r in rows]

    async def search(self, text: str = "", status: str = "", limit: int = 200) -> list[Purchase]:
        """The operator's search: `text` in the purchase id, visitor, e-mail, model or payment; newest first."""
        like = f"%{text}%"
        rows = await self.db.fetch_all(
            "SELECT * FROM purchases WHERE (? = '' OR status = ?) AND (? = '' OR LOWER(id) LIKE ? "
            "OR LOWER(user_id) LIKE ? OR LOWER(model) LIKE ? OR LOWER(payment_intent) LIKE ? "
            "OR LOWER(checkout_session_id) LIKE ? OR LOWER(email) LIKE ?) ORDER BY created_at DESC LIMIT ?",
            (status, status, text, *[like.lower()] * 6, limit),  # LIKE: any case in SQLite, exact in PostgreSQL
        )
        return [Purchase.from_row(r) for r in rows]

    async def sales_since(self, since: str) -> dict[str, Any]:
        """Paid purchases completed since `since` (ISO time): how many, their amounts by currency, how many were
        refunded since; Stripe's (live) at the top, test-mode purchases (STUDIO_SKIP_PAYMENT) apart under "test"."""
        rows = await self.db.fetch_all(
            "SELECT kind, currency, COUNT(*) AS n, SUM(amount_cents) AS cents FROM purchases "
            "WHERE status = 'paid' AND kind IN ('stripe', 'test') AND completed_at >= ? GROUP BY kind, currency",
            (since,),
        )
        refunded = await self.db.fetch_all(
            "SELECT kind, COUNT(*) AS n FROM purchases WHERE status = 'refunded' AND updated_at >= ? GROUP BY kind",
            (since,),
        )

        def of(kind: str) -> dict[str, Any]:
            mine = [r for r in rows if r["kind"] == kind]
            return {
                "purchases": sum(r["n"] for r in mine),
                "amount_cents": {r["currency"]: r["cents"] for r in mine},
                "refunded": sum(r["n"] for r in refunded if r["kind"] == kind),
            }

        return {**of("stripe"), "test": of("test")}

    async def daily(self, since_day: str) -> list[dict[str, Any]]:
        """Sales (purchases completed, whatever became of them) and refunds per UTC day since `since_day`
        (YYYY-MM-DD), by kind (stripe, test) and currency: [{"day", "kind", "currency", "sales", "sales_cents",
        "refunds", "refunded_cents"}], days without any left out."""
        sold = await self.db.fetch_all(
            "SELECT SUBSTR(completed_at, 1, 10) AS day, kind, currency, COUNT(*) AS n, SUM(amount_cents) AS cents "
            "FROM purchases WHERE status IN ('paid', 'refunded') AND kind IN ('stripe', 'test') "
            "AND completed_at >= ? GROUP BY SUBSTR(completed_at, 1, 10), kind, currency",
            (since_day,),
        )
        back = await self.db.fetch_all(
            "SELECT SUBSTR(updated_at, 1, 10) AS day, kind, currency, COUNT(*) AS n, SUM(amount_cents) AS cents "
            "FROM purchases WHERE status = 'refunded' AND kind IN ('stripe', 'test') AND updated_at >= ? "
            "GROUP BY SUBSTR(updated_at, 1, 10), kind, currency",
            (since_day,),
        )
        out: dict[tuple[str, str, str], dict[str, Any]] = {}
        for rows, count, cents in ((sold, "sales", "sales_cents"), (back, "refunds", "refunded_cents")):
            for r in rows:
                key = (r["day"], r["kind"], r["currency"])
                entry = out.setdefault(
                    key,
                    {
                        "day": key[0],
                        "kind": key[1],
                        "currency": key[2],
                        "sales": 0,
                        "sales_cents": 0,
                        "refunds": 0,
                        "refunded_cents": 0,
                    },
                )
                entry[count], entry[cents] = int(r["n"]), int(r["cents"] or 0)
        return [out[k] for k in sorted(out)]

    async def give_test_payment(self, tx: Transaction, purchase: Purchase) -> str:
        """A test-mode purchase has no Stripe payment; its rehearsed refund needs one to name: `pi_test_...`."""
        payment_intent = purchase.payment_intent or "pi_test_" + purchase.id.removeprefix("pur_")
        await tx.execute(
            "UPDATE purchases SET payment_intent = ? WHERE id = ? AND payment_intent IS NULL",
            (payment_intent, purchase.id),
        )
        return payment_intent

    async def get(self, purchase_id: str) -> Purchase | None:
        row = await self.db.fetch_one("SELECT * FROM purchases WHERE id = ?", (purchase_id,))
        return Purchase.from_row(row) if row else None

    async def of_user(self, user_id: str) -> list[Purchase]:
        rows = await self.db.fetch_all(
            "SELECT * FROM purchases WHERE user_id = ? ORDER BY created_at DESC LIMIT 200", (user_id,)
        )
        return [Purchase.from_row(r) for r in rows]

    async def open_checkout(self, user_id: str, model: str) -> Purchase | None:
        row = await self.db.fetch_one(
            "SELECT * FROM purchases WHERE user_id = ? AND model = ? AND status = 'pending' AND kind = 'stripe' "
            "AND checkout_url IS NOT NULL AND created_at > ? ORDER BY created_at DESC LIMIT 1",
            (user_id, model, utcnow(-CHECKOUT_REUSE_S)),
        )
        return Purchase.from_row(row) if row else None

    # -- changes ---------------------------------------------------------------------------------

    async def owns_in(self, tx: Transaction, user_id: str, model: str) -> bool:
        row = await tx.fetch_one(
            "SELECT 1 FROM purchases WHERE user_id = ? AND model = ? AND status = 'paid' LIMIT 1", (user_id, model)
        )  # a suspended (disputed) purchase counts: it must not be bought twice
        return row is not None

    async def anyone_owns(self, tx: Transaction, model: str) -> bool:
        row = await tx.fetch_one("SELECT 1 FROM purchases WHERE model = ? AND status = 'paid' LIMIT 1", (model,))
        return row is not None

    async def record_paid(
        self,
        tx: Transaction,
        *,
        purchase_id: str,
        user_id: str,
        model: str,
        kind: str,
        amount_cents: int,
        currency: str,
        payment_intent: str | None = None,
        session_id: str | None = None,
    ) -> None:
        now = utcnow()
        await tx.execute(
            "INSERT INTO purchases (id, user_id, model, kind, status, amount_cents, currency, checkout_session_id, "
            "payment_intent, created_at, updated_at, completed_at) VALUES (?, ?, ?, ?, 'paid', ?, ?, ?, ?, ?, ?, ?)",
            (purchase_id, user_id, model, kind, amount_cents, currency, session_id, payment_intent, now, now, now),
        )
        await tx.publish(
            self.fn.event(
                PurchaseCompleted(
                    purchase_id=purchase_id,
                    user_id=user_id,
                    model=model,
                    kind=kind,
                    amount_cents=amount_cents,
                    currency=currency,
                )
            )
        )

    async def record_pending(
        self,
        tx: Transaction,
        *,
        purchase_id: str,
        user_id: str,
        model: str,
        amount_cents: int,
        currency: str,
        session_id: str,
        checkout_url: str | None,
    ) -> None:
        now = utcnow()
        await tx.execute(
            "INSERT INTO purchases (id, user_id, model, kind, status, amount_cents, currency, checkout_session_id, "
            "checkout_url, created_at, updated_at) VALUES (?, ?, ?, 'stripe', 'pending', ?, ?, ?, ?, ?, ?)",
            (purchase_id, user_id, model, amount_cents, currency, session_id, checkout_url, now, now),
        )
        await tx.publish(
            self.fn.event(
                PurchaseCreated(
                    purchase_id=purchase_id, user_id=user_id, model=model, amount_cents=amount_cents, currency=currency
                )
            )
        )

    async def mark_paid(self, tx: Transaction, purchase: Purchase, payment_intent: str | None) -> None:
        now = utcnow()
        await tx.execute(
            "UPDATE purchases SET status = 'paid', payment_intent = COALESCE(?, payment_intent), "
            "failure_reason = NULL, updated_at = ?, completed_at = ? WHERE id = ?",
            (payment_intent, now, now, purchase.id),
        )
        await tx.publish(
            self.fn.event(
                PurchaseCompleted(
                    purchase_id=purchase.id,
                    user_id=purchase.user_id,
                    model=purchase.model,
                    kind=purchase.kind,
                    amount_cents=purchase.amount_cents,
                    currency=purchase.currency,
                )
            )
        )

    async def mark_failed(self, tx: Transaction, purchase: Purchase, reason: str) -> None:
        await tx.execute(
            "UPDATE purchases SET status = 'failed', failure_reason = ?, updated_at = ? WHERE id = ?",
            (reason, utcnow(), purchase.id),
        )
        await tx.publish(
            self.fn.event(
                PurchaseFailed(purchase_id=purchase.id, user_id=purchase.user_id, model=purchase.model, reason=reason)
            )
        )

    async def mark_refunded(self, tx: Transaction, purchase: Purchase) -> None:
        await tx.execute(
            "UPDATE purchases SET status = 'refunded', updated_at = ? WHERE id = ?", (utcnow(), purchase.id)
        )
        await tx.publish(
            self.fn.event(
                PurchaseRevoked(
                    purchase_id=purchase.id, user_id=purchase.user_id, model=purchase.model, reason="refunded"
                )
            )
        )

    async def current(self, tx: Transaction, purchase_id: str | None, session_id: str | None) -> Purchase | None:
        row = await tx.fetch_one(
            "SELECT * FROM purchases WHERE id = ? OR (CAST(? AS TEXT) IS NOT NULL AND checkout_session_id = ?) LIMIT 1",
            (purchase_id, session_id, session_id),
        )
        return Purchase.from_row(row) if row else None

    async def paid_by_intent(self, tx: Transaction, payment_intent: str) -> list[Purchase]:
        rows = await tx.fetch_all(
            "SELECT * FROM purchases WHERE payment_intent = ? AND status = 'paid'", (payment_intent,)
        )
        return [Purchase.from_row(r) for r in rows]

    async def transfer(self, tx: Transaction, from_user_id: str, to_user_id: str) -> int:
        """Everything `from_user_id` bought or is paying for becomes `to_user_id`'s (a visitor signed in).

        Each paid purchase that moves says so (`purchase.transferred`), so ownership projections follow;
        a pending one completes later under its new owner. Returns how many purchases moved.
        """
        rows = await tx.fetch_all(
            "SELECT id, model, status FROM purchases WHERE user_id = ? ORDER BY created_at", (from_user_id,)
        )
        if not rows:
            return 0
        await tx.execute(
            "UPDATE purchases SET user_id = ?, updated_at = ? WHERE user_id = ?", (to_user_id, utcnow(), from_user_id)
        )
        for row in rows:
            if row["status"] == "paid":
                await tx.publish(
                    self.fn.event(
                        PurchaseTransferred(
                            purchase_id=row["id"], from_user_id=from_user_id, user_id=to_user_id, model=row["model"]
                        )
                    )
                )
        return len(rows)

    # -- payment facts: refunds, refund failures and disputes, kept whatever the arrival order ----

    async def payment_facts(self, tx: Transaction, payment_intent: str) -> PaymentFacts | None:
        row = await tx.fetch_one(
            "SELECT payment_intent, refund, refund_at, dispute, dispute_at FROM payment_facts WHERE payment_intent = ?",
            (payment_intent,),
        )
        return PaymentFacts(**{k: row[k] for k in PaymentFacts.__dataclass_fields__}) if row else None

    async def record_refund_fact(self, tx: Transaction, payment_intent: str, refund: str, at: int) -> None:
        """A full refund (`full`) or a refund failure (`failed`); the later Stripe event wins, a failure on a tie."""
        await tx.execute(
            "INSERT INTO payment_facts (payment_intent, refund, refund_at, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (payment_intent) DO UPDATE SET refund = excluded.refund, refund_at = excluded.refund_at, "
            "updated_at = excluded.updated_at WHERE payment_facts.refund IS NULL "
            "OR payment_facts.refund_at < excluded.refund_at "
            "OR (payment_facts.refund_at = excluded.refund_at AND excluded.refund = 'failed')",
            (payment_intent, refund, at, utcnow()),
        )

    async def record_dispute_fact(
        self, tx: Transaction, payment_intent: str, dispute_id: str, dispute: str, at: int
    ) -> None:
        """`open`, then `won` or `lost`: a closed dispute is never reopened by a late `open`."""
        await tx.execute(
            "INSERT INTO payment_facts (payment_intent, dispute, dispute_id, dispute_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (payment_intent) DO UPDATE SET dispute = excluded.dispute, dispute_id = excluded.dispute_id, "
            "dispute_at = excluded.dispute_at, updated_at = excluded.updated_at "
            "WHERE payment_facts.dispute IS NULL OR payment_facts.dispute = 'open' AND excluded.dispute <> 'open' "
            "OR payment_facts.dispute <> 'open' AND excluded.dispute <> 'open' "
            "AND payment_facts.dispute_at <= excluded.dispute_at",
            (payment_intent, dispute, dispute_id, at, utcnow()),
        )

    async def settled_by_intent(self, tx: Transaction, payment_intent: str) -> list[Purchase]:
        """Purchases confirmed with this payment intent, owned or not (paid, suspended, refunded)."""
        rows = await tx.fetch_all(
            "SELECT * FROM purchases WHERE payment_intent = ? AND status IN ('paid', 'refunded')", (payment_intent,)
        )
        return [Purchase.from_row(r) for r in rows]

    async def mark_revoked(
        self, tx: Transaction, purchase: Purchase, reason: str, payment_intent: str | None = None
    ) -> None:
        """Access taken back (a full refund, a dispute lost), also from a purchase never confirmed: a
        refund that arrived before the payment's confirmation wins over it."""
        await tx.execute(
            "UPDATE purchases SET status = 'refunded', payment_intent = COALESCE(?, payment_intent), "
            "suspended_at = NULL, failure_reason = ?, updated_at = ? WHERE id = ?",
            (payment_intent, None if reason == "refunded" else reason, utcnow(), purchase.id),
        )
        await tx.publish(
            self.fn.event(
                PurchaseRevoked(purchase_id=purchase.id, user_id=purchase.user_id, model=purchase.model, reason=reason)
            )
        )

    async def record_revoked(
        self,
        tx: Transaction,
        *,
        purchase_id: str,
        user_id: str,
        model: str,
        amount_cents: int,
        currency: str,
        payment_intent: str | None,
        session_id: str | None,
        reason: str,
    ) -> None:
        """A paid checkout with no purchase on record whose money already went back: recorded, never owned."""
        now = utcnow()
        await tx.execute(
            "INSERT INTO purchases (id, user_id, model, kind, status, amount_cents, currency, checkout_session_id, "
            "payment_intent, failure_reason, created_at, updated_at) "
            "VALUES (?, ?, ?, 'stripe', 'refunded', ?, ?, ?, ?, ?, ?, ?)",
            (
                purchase_id,
                user_id,
                model,
                amount_cents,
                currency,
                session_id,
                payment_intent,
                None if reason == "refunded" else reason,
                now,
                now,
            ),
        )
        await tx.publish(
            self.fn.event(PurchaseRevoked(purchase_id=purchase_id, user_id=user_id, model=model, reason=reason))
        )

    async def mark_suspended(self, tx: Transaction, purchase: Purchase, reason: str) -> None:
        now = utcnow()
        await tx.execute("UPDATE purchases SET suspended_at = ?, updated_at = ? WHERE id = ?", (now, now, purchase.id))
        await tx.publish(
            self.fn.event(
                PurchaseSuspended(
                    purchase_id=purchase.id, user_id=purchase.user_id, model=purchase.model, reason=reason
                )
            )
        )

    async def mark_restored(self, tx: Transaction, purchase: Purchase, reason: str) -> None:
        """Owned again: a dispute won (suspended -> paid) or a refund that failed (refunded -> paid)."""
        now = utcnow()
        await tx.execute(
            "UPDATE purchases SET status = 'paid', suspended_at = NULL, failure_reason = NULL, updated_at = ?, "
            "completed_at = COALESCE(completed_at, ?) WHERE id = ?",
            (now, now, purchase.id),
        )
        await tx.publish(
            self.fn.event(
                PurchaseRestored(purchase_id=purchase.id, user_id=purchase.user_id, model=purchase.model, reason=reason)
            )
        )

    async def flag_for_operator(self, tx: Transaction, purchase_id: str, reason: str) -> bool:
        """Mark a paid purchase for the operator (once); False when there is none to flag."""
        row = await tx.fetch_one(
            "SELECT * FROM purchases WHERE id = ? AND status = 'paid' AND flag IS NULL", (purchase_id,)
        )
        if row is None:
            return False
        purchase = Purchase.from_row(row)
        await tx.execute("UPDATE purchases SET flag = ?, updated_at = ? WHERE id = ?", (reason, utcnow(), purchase.id))
        await tx.publish(
            self.fn.event(
                PurchaseFlagged(purchase_id=purchase.id, user_id=purchase.user_id, model=purchase.model, reason=reason)
            )
        )
        return True

    async def record_email(self, tx: Transaction, purchase_id: str, email: str | None) -> None:
        if email:
            await tx.execute("UPDATE purchases SET email = ? WHERE id = ? AND email IS NULL", (email, purchase_id))
