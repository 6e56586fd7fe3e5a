"""Stripe behind domain verbs: open a checkout for a purchase, look a checkout up, list what happened
in a period (checkouts, charges, disputes: for reconciliation), refund a payment, verify a webhook.

Facts this follows (docs/stripe.md): `StripeClient` does not retry unless told to
(`max_network_retries=2`); async calls go through aiohttp only when asked (`AIOHTTPClient`); Stripe
objects are not dicts; an idempotency key replays its first answer for 24 h, so a checkout's key
is the purchase id (a retried request for one purchase gets the same session); signatures are
verified over the raw body with the whole `whsec_...` secret, 300 s tolerance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import stripe
from stripe.params.checkout import SessionCreateParams

WEBHOOK_TOLERANCE_S = 300


class PaymentsUnavailable(Exception):
    """Stripe cannot be reached or failed; nothing was charged."""


class RefundRefused(Exception):
    """Stripe refused the refund (already refunded, disputed, unknown payment)."""


class InvalidWebhook(ValueError):
    """The webhook's signature is missing, wrong or stale, or its body is not an event."""


@dataclass(frozen=True)
class Checkout:
    session_id: str
    url: str | None
    status: str  # open | complete | expired
    payment_status: str  # paid | unpaid | no_payment_required
    payment_intent: str | None
    metadata: dict[str, str]
    amount_total: int | None
    currency: str | None
    email: str | None = None  # customer_details.email: the buyer's, as Checkout collected it


def _checkout(session: Any) -> Checkout:
    doc = session.to_dict() if hasattr(session, "to_dict") else dict(session)
    pi = doc.get("payment_intent")
    if isinstance(pi, dict):
        pi = pi.get("id")
    return Checkout(
        session_id=doc["id"],
        url=doc.get("url"),
        status=doc.get("status") or "open",
        payment_status=doc.get("payment_status") or "unpaid",
        payment_intent=pi,
        metadata=dict(doc.get("metadata") or {}),
        amount_total=doc.get("amount_total"),
        currency=doc.get("currency"),
        email=(doc.get("customer_details") or {}).get("email") or None,
    )


class StripePayments:
    def __init__(self, secret_key: str, *, api_base: str = "https://api.stripe.com") -> None:
        self._http = stripe.AIOHTTPClient(timeout=20)
        self._client = stripe.StripeClient(
            secret_key,
            http_client=self._http,
            max_network_retries=2,
            base_addresses={"api": api_base},
        )

    async def close(self) -> None:
        await self._http.close_async()

    async def open_checkout(
        self,
        *,
        purchase_id: str,
        user_id: str,
        model_id: str,
        model_name: str,
        amount_cents: int,
        currency: str,
        success_url: str,
        cancel_url: str,
        customer_email: str | None = None,
    ) -> Checkout:
        metadata = {"purchase_id": purchase_id, "user_id": user_id, "model": model_id}
        params: SessionCreateParams = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": currency,
                        "unit_amount": amount_cents,
                        "product_data": {"name": f"{model_name} ({model_id}) for Local AI Studio"},
                    },
                }
            ],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "client_reference_id": purchase_id,
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
        }
        if customer_email:  # a signed-in buyer: Stripe fills in the e-mail and sends the receipt there
            params["customer_email"] = customer_email
        try:
            session = await self._client.v1.checkout.sessions.create_async(
                params,
                {"idempotency_key": f"checkout-{purchase_id}"},
            )
        except stripe.StripeError as exc:
            raise PaymentsUnavailable(_describe(exc)) from None
        return _checkout(session)

    async def checkouts_since(self, created_gte: int) -> list[dict[str, Any]]:
        """Every Checkout Session created since `created_gte` (Unix seconds), every page of them."""
        return await self._every(self._client.v1.checkout.sessions.list_async, created_gte)

    async def charges_since(self, created_gte: int) -> list[dict[str, Any]]:
        return await self._every(self._client.v1.charges.list_async, created_gte)

    async def disputes_since(self, created_gte: int) -> list[dict[str, Any]]:
        return await self._every(self._client.v1.disputes.list_async, created_gte)

    async def _every(self, list_async: Any, created_gte: int) -> list[dict[str, Any]]:
        try:
            first = await list_async({"created": {"gte": created_gte}, "limit": 100})
            return [item.to_dict() async for item in first.auto_paging_iter()]
        except stripe.StripeError as exc:
            raise PaymentsUnavailable(_describe(exc)) from None

    async def refund_payment(self, payment_intent: str, *, idempotency_key: str) -> dict[str, Any]:
        """Refund a payment in full; Stripe's `charge.refunded` webhook then revokes the purchase."""
        try:
            refund = await self._client.v1.refunds.create_async(
                {"payment_intent": payment_intent}, {"idempotency_key": idempotency_key}
            )
        except stripe.InvalidRequestError as exc:
            raise RefundRefused(exc.user_message or str(exc)) from None
        except stripe.StripeError as exc:
            raise PaymentsUnavailable(_describe(exc)) from None
        return refund.to_dict()

    async def checkout(self, session_id: str) -> Checkout:
        try:
            return _checkout(await self._client.v1.checkout.sessions.retrieve_async(session_id))
        except stripe.StripeError as exc:
            raise PaymentsUnavailable(_describe(exc)) from None


MAX_WEBHOOK_DEPTH = 32  # Stripe's events nest under 10 levels


def nesting(value: Any) -> int:
    """How deep objects and arrays nest in parsed JSON (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def verify_webhook(payload: bytes, signature: str | None, secret: str) -> dict[str, Any]:
    """The verified event as a plain dict; raises InvalidWebhook."""
    if not signature:
        raise InvalidWebhook("the Stripe-Signature header is missing")
    try:
        stripe.WebhookSignature.verify_header(payload, signature, secret, WEBHOOK_TOLERANCE_S)
    except stripe.SignatureVerificationError as exc:
        raise InvalidWebhook(f"the signature does not verify: {exc.user_message or exc}") from None
    except ValueError as exc:
        raise InvalidWebhook(f"the body cannot be verified: {exc}") from None
    try:
        event = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # signed, but not JSON
        raise InvalidWebhook(f"the body is not JSON: {exc}") from None
    except RecursionError:  # nested deeper than the parser's stack: no Stripe event is
        raise InvalidWebhook(f"the body is nested deeper than {MAX_WEBHOOK_DEPTH} levels") from None
    if nesting(event) > MAX_WEBHOOK_DEPTH:  # every later step (recording it, logging it) stays shallow
        raise InvalidWebhook(f"the body is nested deeper than {MAX_WEBHOOK_DEPTH} levels")
    data = event.get("data") if isinstance(event, dict) else None
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not isinstance(event.get("type"), str)
        or not isinstance(data, dict)
        or not isinstance(data.get("object"), dict)
    ):
        raise InvalidWebhook("the body is not a Stripe event (id, type, data.object)")
    return event


def _describe(exc: stripe.StripeError) -> str:
    if isinstance(exc, stripe.APIConnectionError):
        return "Stripe cannot be reached"
    if isinstance(exc, stripe.AuthenticationError):
        return "Stripe refused the API key (check STRIPE_SECRET_KEY)"
    status = getattr(exc, "http_status", None)
    return f"Stripe answered with an error{f' ({status})' if status else ''}: {exc.user_message or exc}"
