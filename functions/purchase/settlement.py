"""Settling purchases from what Stripe says (webhook events, or a checkout looked up directly).

Every step is idempotent: a payment seen twice (Stripe retries, or the webhook and the success page
race) completes the purchase once. A paid checkout with no pending purchase on record (the studio
crashed between opening the checkout and saving it) is recorded from the checkout's metadata, so
money taken always ends in a purchase.
"""

from __future__ import annotations

import logging

from events.catalog import PaymentFailed, PaymentRefunded, PaymentSucceeded
from events.delivery import Reject
from functions.purchase.ledger import Ledger, Purchase, new_purchase_id
from studio import catalog
from studio.clients.stripe import Checkout
from studio.runtime.function import Function

log = logging.getLogger("studio.functions.purchase")


async def settle(fn: Function, ledger: Ledger, event: PaymentSucceeded | PaymentFailed | PaymentRefunded) -> None:
    if isinstance(event, PaymentSucceeded):
        await complete(
            fn,
            ledger,
            purchase_id=event.purchase_id,
            session_id=event.session_id,
            user_id=event.user_id,
            model=event.model,
            payment_intent=event.payment_intent,
            amount_cents=event.amount_cents,
            currency=event.currency,
        )
    elif isinstance(event, PaymentFailed):
        await fail(fn, ledger, event.purchase_id, event.session_id, event.reason)
    else:
        await refund(fn, ledger, event)


async def settle_checkout(fn: Function, ledger: Ledger, purchase: Purchase, checkout: Checkout) -> None:
    if checkout.payment_status == "paid":
        await complete(
            fn,
            ledger,
            purchase_id=purchase.id,
            session_id=checkout.session_id,
            user_id=purchase.user_id,
            model=purchase.model,
            payment_intent=checkout.payment_intent,
            amount_cents=checkout.amount_total or purchase.amount_cents,
            currency=checkout.currency or purchase.currency,
        )
    elif checkout.status == "expired":
        await fail(fn, ledger, purchase.id, checkout.session_id, "checkout expired")


async def complete(
    fn: Function,
    ledger: Ledger,
    *,
    purchase_id: str | None,
    session_id: str,
    user_id: str | None,
    model: str | None,
    payment_intent: str | None,
    amount_cents: int,
    currency: str,
) -> None:
    async with fn.db.transaction() as tx:
        purchase = await ledger.current(tx, purchase_id, session_id)
        if purchase is None:
            known = catalog.cached(fn.settings.catalog_path).get(model) if model else None
            if not (user_id and known):
                raise Reject(f"checkout {session_id} was paid but names no purchase, visitor or catalog model")
            log.warning(
                "recording a paid checkout that had no pending purchase",
                extra={"session_id": session_id, "model": known.id},
            )
            await ledger.record_paid(
                tx,
                purchase_id=purchase_id or new_purchase_id(),
                user_id=user_id,
                model=known.id,
                kind="stripe",
                amount_cents=amount_cents,
                currency=currency,
                payment_intent=payment_intent,
                session_id=session_id,
            )
        elif purchase.status in ("pending", "failed"):  # failed: an expiry raced a late async payment
            await ledger.mark_paid(tx, purchase, payment_intent)
        elif purchase.status == "refunded":
            log.warning("payment for an already refunded purchase ignored", extra={"purchase_id": purchase.id})


async def fail(fn: Function, ledger: Ledger, purchase_id: str | None, session_id: str, reason: str) -> None:
    async with fn.db.transaction() as tx:
        purchase = await ledger.current(tx, purchase_id, session_id)
        if purchase is not None and purchase.status == "pending":
            await ledger.mark_failed(tx, purchase, reason)


async def refund(fn: Function, ledger: Ledger, event: PaymentRefunded) -> None:
    if not event.full:
        log.info(
            "partial refund: ownership kept",
            extra={"charge_id": event.charge_id, "refunded_cents": event.amount_refunded_cents},
        )
        return
    if not event.payment_intent:
        raise Reject(f"refund of charge {event.charge_id} names no payment intent")
    async with fn.db.transaction() as tx:
        purchases = await ledger.paid_by_intent(tx, event.payment_intent)
        for purchase in purchases:
            await ledger.mark_refunded(tx, purchase)
    if not purchases:
        log.warning("full refund for a payment with no paid purchase", extra={"payment_intent": event.payment_intent})
