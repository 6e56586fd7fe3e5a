"""webhook: Stripe talks to the studio here. Verified, recorded once, answered fast.

HTTP    POST /api/webhooks/stripe   -> 200 {"received": true} (also for events the studio ignores);
                                       400 for a missing, wrong or stale signature, or a signed event
                                       whose fields are malformed (nothing changes, a log line says why);
                                       503 when STRIPE_WEBHOOK_SECRET is not set (Stripe retries later)
Events  emits payment.succeeded, payment.failed, payment.refunded, payment.disputed,
              payment.dispute_closed, payment.refund_failed (the purchase function settles them);
              stripe_event.ignored (live-only, counted by the monitor) for events that are not the studio's

The signature is checked by the stripe library over the raw body. Each Stripe event id is recorded
with the event it becomes in one transaction, so a delivery repeated (or three at once) counts once.
The ids are kept for STUDIO_OUTBOX_KEEP_DAYS (Stripe retries for 3 days), then pruned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from events.catalog import StripeEventIgnored
from functions.webhook.stripe_events import StripeEvents
from functions.webhook.translation import MalformedEvent, translate
from studio.clients.stripe import InvalidWebhook, verify_webhook
from studio.runtime.errors import BadRequest, UpstreamUnavailable
from studio.runtime.function import Function
from studio.runtime.routes import KIB


class Received(msgspec.Struct):
    received: bool
    outcome: str = ""
    duplicate: bool = False


function = Function(
    "webhook",
    migrations=Path(__file__).parent / "migrations",
    publishes=(
        "payment.succeeded",
        "payment.failed",
        "payment.refunded",
        "payment.refund_failed",
        "payment.disputed",
        "payment.dispute_closed",
        "stripe_event.ignored",
    ),
)
function.retain("stripe_events", time_column="received_at", key="event_id")


@function.route(
    "POST",
    "/api/webhooks/stripe",
    summary="Stripe's signed events (no session, no origin check: the signature is the proof)",
    body=dict[str, Any],
    decode=False,  # verified as the bytes Stripe signed, then parsed (studio/clients/stripe.py)
    response=Received,
    errors=(400, 503),
    timeout=10,
    max_body=64 * KIB,
    visitor=False,
)
async def receive_stripe_event(request: web.Request) -> web.Response:
    secret = function.settings.stripe_webhook_secret
    if not secret:
        raise UpstreamUnavailable(
            "webhooks are not configured: the operator must set STRIPE_WEBHOOK_SECRET", code="webhooks_not_configured"
        )
    payload = await request.read()
    try:
        stripe_event = verify_webhook(payload, request.headers.get("Stripe-Signature"), secret.get())
    except InvalidWebhook as exc:
        raise BadRequest(str(exc), code="invalid_signature") from None
    try:
        data = translate(stripe_event)
    except MalformedEvent as exc:
        function.log.warning(
            "stripe event refused: malformed",
            extra={"stripe_event": stripe_event["id"], "stripe_type": stripe_event["type"], "problem": str(exc)},
        )
        raise BadRequest(f"the Stripe event {stripe_event['type']} is malformed: {exc}", code="invalid_event") from None
    ignored = isinstance(data, StripeEventIgnored)
    received = StripeEvents()
    async with function.db.transaction() as tx:
        known = await received.outcome(tx, stripe_event["id"])
        if known is not None:
            return web.json_response({"received": True, "duplicate": True, "outcome": known})
        outcome = "ignored" if ignored else data.TYPE if data is not None else "awaiting_payment"
        await received.record(tx, stripe_event, outcome)
        if data is not None:
            await tx.publish(function.event(data))
    function.log.info(
        "stripe event ignored: not the studio's" if ignored else "stripe event received",
        extra={
            "stripe_event": stripe_event["id"],
            "stripe_type": stripe_event["type"],
            "outcome": outcome,
            **({"reason": data.reason} if ignored else {}),  # type: ignore[union-attr]
        },
    )
    return web.json_response({"received": True, "outcome": outcome})
