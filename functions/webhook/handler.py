"""webhook: Stripe talks to the studio here. Verified, recorded once, answered fast.

HTTP    POST /api/webhooks/stripe   -> 200 {"received": true} (also for events the studio ignores);
                                       400 for a missing, wrong or stale signature (nothing changes);
                                       503 when STRIPE_WEBHOOK_SECRET is not set (Stripe retries later)
Events  emits payment.succeeded, payment.failed, payment.refunded (the purchase function settles them)

The signature is checked by the stripe library over the raw body. Each Stripe event id is recorded
with the event it becomes in one transaction, so a delivery repeated (or three at once) counts once.
The ids are kept for STUDIO_OUTBOX_KEEP_DAYS (Stripe retries for 3 days), then pruned.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from functions.webhook.stripe_events import StripeEvents
from functions.webhook.translation import translate
from studio.clients.stripe import InvalidWebhook, verify_webhook
from studio.runtime.errors import BadRequest, UpstreamUnavailable
from studio.runtime.function import Function

function = Function("webhook", migrations=Path(__file__).parent / "migrations")
function.retain("stripe_events", time_column="received_at", key="event_id")


@function.route("POST", "/api/webhooks/stripe")
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
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest(f"the Stripe event lacks what its type needs: {exc!r}", code="invalid_event") from None
    received = StripeEvents()
    async with function.db.transaction() as tx:
        known = await received.outcome(tx, stripe_event["id"])
        if known is not None:
            return web.json_response({"received": True, "duplicate": True, "outcome": known})
        outcome = data.TYPE if data is not None else "ignored"
        await received.record(tx, stripe_event, outcome)
        if data is not None:
            await tx.publish(function.event(data))
    function.log.info(
        "stripe event received",
        extra={"stripe_event": stripe_event["id"], "stripe_type": stripe_event["type"], "outcome": outcome},
    )
    return web.json_response({"received": True, "outcome": outcome})
