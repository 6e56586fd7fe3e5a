"""Stripe objects and events shaped after Stripe's own published fixtures (stripe/openapi
`openapi/fixtures3.json`: resources `checkout.session`, `charge`, `refund`, `dispute`, `event`), with
every field those fixtures have that the studio could read, and their values where a test does not
say otherwise. Tests override only what their case is about, so the rest is what Stripe sends.
"""

from __future__ import annotations

import copy
import itertools
import time
from typing import Any

_ids = itertools.count(1)


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    out.update(changes)
    return out


CHECKOUT_SESSION: dict[str, Any] = {
    "after_expiration": None,
    "allow_promotion_codes": None,
    "amount_subtotal": None,
    "amount_total": None,
    "automatic_tax": {"enabled": False, "status": None},
    "billing_address_collection": None,
    "cancel_url": "https://example.com/cancel",
    "client_reference_id": None,
    "consent": None,
    "consent_collection": None,
    "created": 1234567890,
    "currency": None,
    "custom_fields": [],
    "custom_text": {"shipping_address": None, "submit": None},
    "customer": None,
    "customer_creation": None,
    "customer_details": {
        "address": None,
        "email": "example@example.com",
        "name": None,
        "phone": None,
        "tax_exempt": "none",
        "tax_ids": None,
    },
    "customer_email": None,
    "expires_at": 1234567890,
    "id": "cs_test_a1vvp1B50lYAE8U2KLu1lzd6US91IMmBfnLfDXmJiKOQIzXbgFKgxUviQu",
    "invoice": None,
    "invoice_creation": None,
    "livemode": False,
    "locale": None,
    "metadata": {},
    "mode": "payment",
    "object": "checkout.session",
    "payment_intent": "pi_1MoS6fLgUG5tbmjca6AdBPsl",
    "payment_link": None,
    "payment_method_collection": None,
    "payment_method_options": {},
    "payment_method_types": ["card"],
    "payment_status": "unpaid",
    "phone_number_collection": {"enabled": False},
    "recovered_from": None,
    "setup_intent": None,
    "shipping_address_collection": None,
    "shipping_cost": None,
    "shipping_details": None,
    "shipping_options": [],
    "status": "open",
    "submit_type": None,
    "subscription": None,
    "success_url": "https://example.com/success",
    "total_details": None,
    "url": "https://checkout.stripe.com/pay/c/cs_test_a1vvp1B50lYAE8U2KLu1lzd6US91IMmBfnLfDXmJiKOQIzXbgFKgxUviQu",
}

CHARGE: dict[str, Any] = {
    "amount": 100,
    "amount_captured": 0,
    "amount_refunded": 0,
    "application": None,
    "application_fee": None,
    "application_fee_amount": None,
    "balance_transaction": "txn_1Moqx7LgUG5tbmjcEekVfAbn",
    "billing_details": {
        "address": {"city": None, "country": None, "line1": None, "line2": None, "postal_code": None, "state": None},
        "email": None,
        "name": "Jenny Rosen",
        "phone": None,
    },
    "calculated_statement_descriptor": None,
    "captured": False,
    "created": 1234567890,
    "currency": "usd",
    "customer": None,
    "description": "My First Test Charge (created for API docs)",
    "disputed": False,
    "failure_balance_transaction": None,
    "failure_code": None,
    "failure_message": None,
    "fraud_details": {},
    "id": "ch_1MoS30LgUG5tbmjcjfsQqpHI",
    "invoice": None,
    "livemode": False,
    "metadata": {},
    "object": "charge",
    "on_behalf_of": None,
    "outcome": None,
    "paid": True,
    "payment_intent": None,
    "payment_method": "card_1MoRxGLgUG5tbmjcfQwEkNkb",
    "receipt_email": None,
    "receipt_number": None,
    "refunded": False,
    "refunds": {
        "data": [],
        "has_more": False,
        "object": "list",
        "url": "/v1/charges/ch_1MoS30LgUG5tbmjcjfsQqpHI/refunds",
    },
    "review": None,
    "shipping": None,
    "source_transfer": None,
    "statement_descriptor": None,
    "statement_descriptor_suffix": None,
    "status": "succeeded",
    "transfer_data": None,
    "transfer_group": None,
}

REFUND: dict[str, Any] = {
    "amount": 100,
    "balance_transaction": None,
    "charge": "ch_1MoS30LgUG5tbmjcjfsQqpHI",
    "created": 1234567890,
    "currency": "usd",
    "id": "re_1MoqxPLgUG5tbmjcL8Xa5Nbl",
    "metadata": {},
    "object": "refund",
    "payment_intent": None,
    "reason": None,
    "receipt_number": None,
    "source_transfer_reversal": None,
    "status": "succeeded",
    "transfer_reversal": None,
}

DISPUTE: dict[str, Any] = {
    "amount": 1000,
    "balance_transactions": [],
    "charge": "ch_1MoS30LgUG5tbmjcjfsQqpHI",
    "created": 1234567890,
    "currency": "usd",
    "evidence_details": {"due_by": 1681257599, "has_evidence": False, "past_due": False, "submission_count": 0},
    "id": "dp_1MoqxHLgUG5tbmjcom3Mmh0p",
    "is_charge_refundable": True,
    "livemode": False,
    "metadata": {},
    "object": "dispute",
    "payment_intent": None,
    "reason": "general",
    "status": "warning_needs_response",
}


def checkout_session(**changes: Any) -> dict[str, Any]:
    return _merge(CHECKOUT_SESSION, changes)


def charge(**changes: Any) -> dict[str, Any]:
    return _merge(CHARGE, changes)


def refund(**changes: Any) -> dict[str, Any]:
    return _merge(REFUND, changes)


def dispute(**changes: Any) -> dict[str, Any]:
    return _merge(DISPUTE, changes)


def event(event_type: str, obj: dict[str, Any], *, created: int | None = None) -> dict[str, Any]:
    """An event as fixtures3.json's `event` resource has it, around `obj`."""
    return {
        "api_version": "2022-11-15",
        "created": created if created is not None else int(time.time()),
        "data": {"object": obj},
        "id": f"evt_1MoS6tLgUG5tbmj{next(_ids):06d}",
        "livemode": False,
        "object": "event",
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def studio_session(double_session: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The fixture session carrying what the studio put into its own session at the Stripe stand-in."""
    keep = ("id", "client_reference_id", "metadata", "amount_total", "currency", "payment_intent", "url")
    ours = {k: double_session[k] for k in keep}
    ours.update(amount_subtotal=double_session["amount_total"], status="complete", payment_status="paid")
    return checkout_session(**{**ours, **changes})
