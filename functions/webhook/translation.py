"""Which Stripe events matter to the studio, and the studio event each one becomes.

Stripe sends every subscribed event of the whole account, so an event is the studio's only when it
says so: a Checkout Session carries the purchase id the studio gave it (`metadata.purchase_id`, and
`client_reference_id`, when set, the same); a charge, refund or dispute names a payment intent (every Checkout in
payment mode has one; which purchase it is, the purchase function knows). Anything else (another
product's sale, `stripe trigger` fixtures, a charge with `payment_intent: null`) becomes
`stripe_event.ignored` with the reason: counted, logged, never a `payment.*` event.

Fields are read strictly: a field of the wrong type (metadata as a list) or an amount out of range
raises `MalformedEvent`, which the webhook answers with 400 and a log line naming the field.
"""

from __future__ import annotations

import re
from typing import Any

from events.catalog import (
    EventData,
    PaymentDisputeClosed,
    PaymentDisputed,
    PaymentFailed,
    PaymentRefunded,
    PaymentRefundFailed,
    PaymentSucceeded,
    StripeEventIgnored,
)

PURCHASE_ID = re.compile(r"^pur_[0-9a-f]{20}$")  # functions/purchase/ledger.py: new_purchase_id()
MAX_AMOUNT = 10**12  # far above any real charge in the smallest currency unit (Stripe caps at 8-12 digits)
MAX_TEXT = 500
FULFILLED = ("paid", "no_payment_required")  # Stripe's fulfilment guide: anything but "unpaid"
REFUND_FAILED = ("refund.failed", "charge.refund.updated", "refund.updated")
HANDLED = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.closed",
    *REFUND_FAILED,
)


class MalformedEvent(ValueError):
    """A verified Stripe event whose fields are not what Stripe documents (wrong type, out of range)."""


def translate(stripe_event: dict[str, Any]) -> EventData | None:
    """The payment fact in a verified Stripe event; `StripeEventIgnored` when it is not the studio's;
    None when it is the studio's but nothing is to be done yet (an unpaid session waits for its
    async payment)."""
    kind = stripe_event["type"]
    obj = stripe_event["data"]["object"]
    event_id = stripe_event["id"]
    created = _number(stripe_event, "created")

    def ignored(reason: str) -> StripeEventIgnored:
        return StripeEventIgnored(stripe_event_id=event_id, stripe_type=kind, reason=reason)

    if kind not in HANDLED:
        return ignored("type not handled")
    if kind.startswith("checkout.session."):
        meta = _mapping(obj, "metadata")
        reference = _text(obj, "client_reference_id")
        purchase_id = _text(meta, "purchase_id") or reference
        if reference is not None and (reference != purchase_id or not PURCHASE_ID.match(reference)):
            return ignored("foreign client_reference_id")
        if not (purchase_id and PURCHASE_ID.match(purchase_id)):
            return ignored("no studio metadata")
        session_id = _text(obj, "id", required=True)
        if kind in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
            if _text(obj, "payment_status") not in FULFILLED:
                return None  # a delayed method: async_payment_succeeded (or _failed) follows
            return PaymentSucceeded(
                stripe_event_id=event_id,
                session_id=session_id,  # type: ignore[arg-type]
                purchase_id=purchase_id,
                user_id=_text(meta, "user_id"),
                model=_text(meta, "model"),
                payment_intent=_stripe_id(obj, "payment_intent"),
                amount_cents=_number(obj, "amount_total"),
                currency=_text(obj, "currency") or "usd",
            )
        return PaymentFailed(
            stripe_event_id=event_id,
            session_id=session_id,  # type: ignore[arg-type]
            purchase_id=purchase_id,
            reason="checkout expired" if kind.endswith("expired") else "the payment failed",
        )
    payment_intent = _stripe_id(obj, "payment_intent")
    if payment_intent is None:
        return ignored("no payment intent")
    object_id = _text(obj, "id", required=True)
    if kind == "charge.refunded":
        amount = _number(obj, "amount")
        refunded = _number(obj, "amount_refunded")
        return PaymentRefunded(
            stripe_event_id=event_id,
            charge_id=object_id,  # type: ignore[arg-type]
            payment_intent=payment_intent,
            amount_cents=amount,
            amount_refunded_cents=refunded,
            full=_flag(obj, "refunded") or (amount > 0 and refunded >= amount),
            stripe_created=created,
        )
    if kind == "charge.dispute.created":
        return PaymentDisputed(
            stripe_event_id=event_id,
            dispute_id=object_id,  # type: ignore[arg-type]
            charge_id=_stripe_id(obj, "charge"),
            payment_intent=payment_intent,
            amount_cents=_number(obj, "amount"),
            reason=_text(obj, "reason") or "unknown",
            stripe_created=created,
        )
    if kind == "charge.dispute.closed":
        return PaymentDisputeClosed(
            stripe_event_id=event_id,
            dispute_id=object_id,  # type: ignore[arg-type]
            charge_id=_stripe_id(obj, "charge"),
            payment_intent=payment_intent,
            status=_text(obj, "status", required=True),  # type: ignore[arg-type]
            stripe_created=created,
        )
    if _text(obj, "status") != "failed":  # kind in REFUND_FAILED: only a failure changes access
        return ignored("refund not failed")
    return PaymentRefundFailed(
        stripe_event_id=event_id,
        refund_id=object_id,  # type: ignore[arg-type]
        charge_id=_stripe_id(obj, "charge"),
        payment_intent=payment_intent,
        amount_cents=_number(obj, "amount"),
        stripe_created=created,
    )


# -- strict readers ---------------------------------------------------------------------------------


def _mapping(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedEvent(f"{key} must be an object, not {type(value).__name__}")
    return value


def _text(obj: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        if required:
            raise MalformedEvent(f"{key} is missing")
        return None
    if not isinstance(value, str):
        raise MalformedEvent(f"{key} must be a string, not {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise MalformedEvent(f"{key} is longer than {MAX_TEXT} characters")
    return value


def _number(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedEvent(f"{key} must be a whole number, not {type(value).__name__}")
    if not 0 <= value <= MAX_AMOUNT:
        raise MalformedEvent(f"{key} is out of range: {value}")
    return value


def _flag(obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key)
    if value is not None and not isinstance(value, bool):
        raise MalformedEvent(f"{key} must be true or false, not {type(value).__name__}")
    return bool(value)


def _stripe_id(obj: dict[str, Any], key: str) -> str | None:
    """An id field, collapsed or expanded into the object it names."""
    value = obj.get(key)
    if isinstance(value, dict):
        return _text(value, "id", required=True)
    return _text(obj, key)
