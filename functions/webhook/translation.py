"""Which Stripe events matter to the studio, and the studio event each one becomes."""

from __future__ import annotations

from typing import Any

from events.catalog import EventData, PaymentFailed, PaymentRefunded, PaymentSucceeded


def translate(stripe_event: dict[str, Any]) -> EventData | None:
    """The payment fact in a verified Stripe event, or None when the studio has nothing to do."""
    kind = stripe_event["type"]
    obj = stripe_event["data"]["object"]
    if kind in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
        if obj.get("payment_status") != "paid":
            return None  # a delayed method: async_payment_succeeded (or _failed) follows
        meta = obj.get("metadata") or {}
        return PaymentSucceeded(
            stripe_event_id=stripe_event["id"],
            session_id=obj["id"],
            purchase_id=meta.get("purchase_id") or obj.get("client_reference_id"),
            user_id=meta.get("user_id"),
            model=meta.get("model"),
            payment_intent=_id(obj.get("payment_intent")),
            amount_cents=int(obj.get("amount_total") or 0),
            currency=str(obj.get("currency") or "usd"),
        )
    if kind in ("checkout.session.async_payment_failed", "checkout.session.expired"):
        meta = obj.get("metadata") or {}
        return PaymentFailed(
            stripe_event_id=stripe_event["id"],
            session_id=obj["id"],
            purchase_id=meta.get("purchase_id") or obj.get("client_reference_id"),
            reason="checkout expired" if kind.endswith("expired") else "the payment failed",
        )
    if kind == "charge.refunded":
        amount = int(obj.get("amount") or 0)
        refunded = int(obj.get("amount_refunded") or 0)
        return PaymentRefunded(
            stripe_event_id=stripe_event["id"],
            charge_id=obj["id"],
            payment_intent=_id(obj.get("payment_intent")),
            amount_cents=amount,
            amount_refunded_cents=refunded,
            full=bool(obj.get("refunded")) or (amount > 0 and refunded >= amount),
        )
    return None


def _id(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("id")
    return value if isinstance(value, str) else None
