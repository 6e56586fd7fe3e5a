"""Reconciliation: Stripe is the ledger of money, the studio the ledger of access; make them agree.

For a period, list what Stripe has (Checkout Sessions, charges, disputes: every page, through the
stripe library's auto-pagination) and compare it with the purchases, their access and the install
states. Each difference is one of:

- `paid_not_owned`       a studio Checkout Session paid (or needing no payment) whose purchase is not paid
- `refunded_but_owned`   a charge refunded in full whose purchase is still owned
- `dispute_not_applied`  a dispute open but access not suspended, lost but owned, won but suspended
- `pending_past_expiry`  a purchase pending although its Checkout Session expired (or was paid)
- `owned_not_installed`  a model someone owns that is neither installed nor on its way

A repair (`fix=True`) publishes the same events a webhook (or the marketplace) would have produced:
`payment.succeeded`, `payment.refunded`, `payment.disputed`, `payment.dispute_closed`,
`payment.failed`, `install.requested`. Settling them is idempotent, so a repair that raced the real
webhook changes nothing twice, and every repair is visible in the event stream. A second run after
the repairs settled finds nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from events.catalog import (
    EventData,
    InstallRequested,
    PaymentDisputeClosed,
    PaymentDisputed,
    PaymentFailed,
    PaymentRefunded,
    PaymentSucceeded,
)
from events.ids import new_install_id
from functions.purchase.ledger import Ledger, is_purchase_id
from studio.clients.stripe import StripePayments
from studio.runtime.function import Function

log = logging.getLogger("studio.functions.purchase")

CHECKOUT_LIFETIME_S = 24 * 3600  # Stripe's default expires_at
FULFILLED = ("paid", "no_payment_required")
ON_ITS_WAY = ("installed", "queued", "pulling")
CLOSED = {"won": "won", "warning_closed": "won", "lost": "lost"}
OPERATOR_REMOVED = "removed by the operator"  # install.removed's reason for DELETE /api/models/{model}


@dataclass
class Difference:
    kind: str
    detail: str
    purchase_id: str | None = None
    model: str | None = None
    stripe_id: str | None = None
    fixed: bool = False
    repair: EventData | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "repair"}
        out["repair"] = self.repair.TYPE if self.repair is not None else None
        return out


@dataclass
class Report:
    since: str
    fix: bool
    checked: dict[str, int]
    differences: list[Difference]

    @property
    def remaining(self) -> int:
        return sum(1 for d in self.differences if not d.fixed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "fix": self.fix,
            "checked": self.checked,
            "found": len(self.differences),
            "fixed": sum(1 for d in self.differences if d.fixed),
            "remaining": self.remaining,
            "differences": [d.to_dict() for d in self.differences],
        }


async def reconcile(fn: Function, ledger: Ledger, payments: StripePayments, *, since_s: float, fix: bool) -> Report:
    now = time.time()
    since = int(now - since_s)
    sessions = await payments.checkouts_since(since)
    charges = await payments.charges_since(since)
    disputes = await payments.disputes_since(since)
    stamp = int(now)

    refunded = {_id(c.get("payment_intent")): c for c in charges if _id(c.get("payment_intent")) and _fully_refunded(c)}
    disputed = {_id(d.get("payment_intent")): d for d in disputes if _id(d.get("payment_intent"))}

    differences: list[Difference] = []
    ours = [s for s in sessions if is_purchase_id((s.get("metadata") or {}).get("purchase_id"))]
    for session in ours:
        differences += await _check_session(ledger, session, refunded, disputed)
    for pi, charge in refunded.items():
        for purchase in await ledger.by_payment_intent(pi):  # type: ignore[arg-type]
            if purchase.status == "paid":
                differences.append(
                    Difference(
                        "refunded_but_owned",
                        f"charge {charge['id']} was refunded in full at Stripe but {purchase.model} is still owned",
                        purchase.id,
                        purchase.model,
                        charge["id"],
                        repair=PaymentRefunded(
                            stripe_event_id=f"reconcile_{charge['id']}",
                            charge_id=charge["id"],
                            payment_intent=pi,
                            amount_cents=int(charge.get("amount") or 0),
                            amount_refunded_cents=int(charge.get("amount_refunded") or 0),
                            full=True,
                            stripe_created=stamp,
                        ),
                    )
                )
    for pi, dispute in disputed.items():
        differences += await _check_dispute(ledger, pi, dispute, stamp)  # type: ignore[arg-type]
    differences += await _check_pending(ledger, payments, {s["id"]: s for s in sessions}, now)
    differences += await _check_installs(ledger, fn)

    if fix:
        await _repair(fn, differences)
    report = Report(
        since=datetime.fromtimestamp(since, UTC).isoformat().replace("+00:00", "Z"),
        fix=fix,
        checked={
            "checkout_sessions": len(sessions),
            "studio_checkout_sessions": len(ours),
            "charges": len(charges),
            "disputes": len(disputes),
        },
        differences=differences,
    )
    for d in differences:
        log.warning(
            "reconciliation: %s", d.kind, extra={"detail": d.detail, "purchase_id": d.purchase_id, "fixed": d.fixed}
        )
    return report


async def _check_session(
    ledger: Ledger, session: dict[str, Any], refunded: dict[Any, Any], disputed: dict[Any, Any]
) -> list[Difference]:
    meta = session.get("metadata") or {}
    if session.get("payment_status") not in FULFILLED or session.get("status") != "complete":
        return []
    pi = _id(session.get("payment_intent"))
    if pi and (pi in refunded or CLOSED.get((disputed.get(pi) or {}).get("status", "")) == "lost"):
        return []  # the money went back: not owning it is right (refunded_but_owned covers the rest)
    purchase = await ledger.get(meta["purchase_id"])
    if purchase is not None and purchase.status in ("paid", "refunded"):
        return []
    return [
        Difference(
            "paid_not_owned",
            f"Checkout Session {session['id']} is {session.get('payment_status')} at Stripe but the purchase is "
            f"{purchase.status if purchase else 'missing'}",
            meta["purchase_id"],
            meta.get("model"),
            session["id"],
            repair=PaymentSucceeded(
                stripe_event_id=f"reconcile_{session['id']}",
                session_id=session["id"],
                purchase_id=meta["purchase_id"],
                user_id=meta.get("user_id"),
                model=meta.get("model"),
                payment_intent=pi,
                amount_cents=int(session.get("amount_total") or 0),
                currency=str(session.get("currency") or "usd"),
            ),
        )
    ]


async def _check_dispute(ledger: Ledger, pi: str, dispute: dict[str, Any], stamp: int) -> list[Difference]:
    status = str(dispute.get("status") or "")
    outcome = CLOSED.get(status)
    out = []
    repair: PaymentDisputed | PaymentDisputeClosed
    for purchase in await ledger.by_payment_intent(pi):
        if outcome is None and purchase.status == "paid" and purchase.suspended_at is None:
            why, repair = "is open", _disputed(dispute, pi, stamp)
        elif outcome == "lost" and purchase.status == "paid":
            why, repair = "was lost", _closed(dispute, pi, "lost", stamp)
        elif outcome == "won" and purchase.status == "paid" and purchase.suspended_at is not None:
            why, repair = "was won", _closed(dispute, pi, "won", stamp)
        else:
            continue
        out.append(
            Difference(
                "dispute_not_applied",
                f"dispute {dispute['id']} {why} at Stripe but {purchase.model}'s access does not show it",
                purchase.id,
                purchase.model,
                dispute["id"],
                repair=repair,
            )
        )
    return out


async def _check_pending(
    ledger: Ledger, payments: StripePayments, listed: dict[str, dict[str, Any]], now: float
) -> list[Difference]:
    """Pending purchases whose Checkout Session is over at Stripe: expired (or paid) but not settled.
    Sessions in the listing are read from it; older ones (past Stripe's 24 h lifetime) are looked up."""
    cutoff = datetime.fromtimestamp(now - CHECKOUT_LIFETIME_S, UTC).isoformat(timespec="milliseconds")
    out = []
    for purchase in await ledger.pending_checkouts():
        sid = purchase.checkout_session_id
        if not sid or (sid not in listed and purchase.created_at >= cutoff.replace("+00:00", "Z")):
            continue
        if sid in listed:
            status, paid = listed[sid].get("status"), listed[sid].get("payment_status") in FULFILLED
            if status == "complete" and paid:
                continue  # paid_not_owned reports it
        else:
            checkout = await payments.checkout(sid)
            status, paid = checkout.status, checkout.payment_status in FULFILLED
        if status == "expired":
            repair: EventData = PaymentFailed(
                stripe_event_id=f"reconcile_{sid}", session_id=sid, purchase_id=purchase.id, reason="checkout expired"
            )
        elif status == "complete" and paid:
            repair = PaymentSucceeded(
                stripe_event_id=f"reconcile_{sid}",
                session_id=sid,
                purchase_id=purchase.id,
                user_id=purchase.user_id,
                model=purchase.model,
                payment_intent=checkout.payment_intent,
                amount_cents=checkout.amount_total or purchase.amount_cents,
                currency=checkout.currency or purchase.currency,
            )
        else:
            continue  # still open: the visitor may yet pay
        out.append(
            Difference(
                "pending_past_expiry",
                f"purchase pending since {purchase.created_at} but its Checkout Session is {status}",
                purchase.id,
                purchase.model,
                sid,
                repair=repair,
            )
        )
    return out


async def _check_installs(ledger: Ledger, fn: Function) -> list[Difference]:
    states = (await fn.bus.query("installs.states", {}, timeout=5.0))["installs"]  # install owns install state
    out = []
    for model, owners in sorted((await ledger.owned_models()).items()):
        row = states.get(model)
        state = row["state"] if row is not None else "not_installed"
        if state in ON_ITS_WAY or state == "verifying" or (state == "failed" and row and row.get("will_retry")):
            continue
        if row is not None and row.get("reason") == OPERATOR_REMOVED:
            continue  # the operator took it off the server on purpose; owners reinstall it themselves
        out.append(
            Difference(
                "owned_not_installed",
                f"{model} is owned ({owners} purchase{'s' if owners != 1 else ''}) but its install is {state}",
                model=model,
                repair=InstallRequested(
                    install_id=new_install_id(), model=model, requested_by="reconcile", reason="restore"
                ),
            )
        )
    return out


async def _repair(fn: Function, differences: list[Difference]) -> None:
    for d in differences:
        if d.repair is None:
            continue
        async with fn.db.transaction() as tx:
            await tx.publish(fn.event(d.repair))
        d.fixed = True


def _disputed(dispute: dict[str, Any], pi: str, stamp: int) -> PaymentDisputed:
    return PaymentDisputed(
        stripe_event_id=f"reconcile_{dispute['id']}",
        dispute_id=dispute["id"],
        charge_id=_id(dispute.get("charge")),
        payment_intent=pi,
        amount_cents=int(dispute.get("amount") or 0),
        reason=str(dispute.get("reason") or "unknown"),
        stripe_created=stamp,
    )


def _closed(dispute: dict[str, Any], pi: str, status: str, stamp: int) -> PaymentDisputeClosed:
    return PaymentDisputeClosed(
        stripe_event_id=f"reconcile_{dispute['id']}",
        dispute_id=dispute["id"],
        charge_id=_id(dispute.get("charge")),
        payment_intent=pi,
        status=status,
        stripe_created=stamp,
    )


def _fully_refunded(charge: dict[str, Any]) -> bool:
    amount, refunded = int(charge.get("amount") or 0), int(charge.get("amount_refunded") or 0)
    return bool(charge.get("refunded")) or (amount > 0 and refunded >= amount)


def _id(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def parse_since(text: str) -> float:
    """`7d`, `12h`, `30m` -> seconds (a bare number is days)."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    text = text.strip()
    try:
        if text and text[-1] in units:
            value = float(text[:-1]) * units[text[-1]]
        else:
            value = float(text) * 86400
    except ValueError:
        raise ValueError(f"{text!r} is not a period such as 7d, 12h or 30m") from None
    if not 0 < value <= timedelta(days=90).total_seconds():
        raise ValueError(f"{text!r} must be more than nothing and at most 90 days")
    return value
