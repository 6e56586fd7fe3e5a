"""Settling purchases from what Stripe says (webhook events, or a checkout looked up directly).

Every step is idempotent: a payment seen twice (Stripe retries, or the webhook and the success page
race) completes the purchase once. A paid checkout with no pending purchase on record (the studio
crashed between opening the checkout and saving it) is recorded from the checkout's metadata, so
money taken always ends in a purchase.

Refunds, refund failures and disputes are kept as facts about the payment intent (`payment_facts`)
before they touch any purchase, and every confirmation checks them, so the end state does not depend
on the order Stripe delivers in (it guarantees none, and retries for three days): a full refund or a
lost dispute wins over a late `checkout.session.completed`, an open dispute suspends access, a won
dispute or a failed refund restores it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from events.catalog import (
    PaymentDisputeClosed,
    PaymentDisputed,
    PaymentFailed,
    PaymentRefunded,
    PaymentRefundFailed,
    PaymentSucceeded,
)
from events.delivery import Reject
from functions.purchase.ledger import Ledger, PaymentFacts, Purchase, new_purchase_id
from studio import catalog
from studio.clients.stripe import Checkout, PaymentsUnavailable, StripePayments
from studio.runtime.database import Transaction
from studio.runtime.function import Function

log = logging.getLogger("studio.functions.purchase")


PaymentEvent = (
    PaymentSucceeded | PaymentFailed | PaymentRefunded | PaymentRefundFailed | PaymentDisputed | PaymentDisputeClosed
)
PAYMENT_EVENTS = (
    PaymentSucceeded,
    PaymentFailed,
    PaymentRefunded,
    PaymentRefundFailed,
    PaymentDisputed,
    PaymentDisputeClosed,
)
DISPUTE_CLOSED = {"won": "won", "warning_closed": "won", "lost": "lost"}


async def settle(fn: Function, ledger: Ledger, event: PaymentEvent, *, email: str | None = None) -> None:
    """`email`: the buyer's, asked of Stripe for a `payment.succeeded` (the event does not carry it)."""
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
            email=email,
        )
    elif isinstance(event, PaymentFailed):
        await fail(fn, ledger, event.purchase_id, event.session_id, event.reason)
    elif isinstance(event, PaymentRefunded):
        await refund(fn, ledger, event)
    elif isinstance(event, PaymentRefundFailed):
        await refund_failed(fn, ledger, event)
    elif isinstance(event, PaymentDisputed):
        await dispute_opened(fn, ledger, event)
    else:
        await dispute_closed(fn, ledger, event)


async def buyer_email(payments: StripePayments | None, event: PaymentEvent) -> str | None:
    """The e-mail Checkout collected, for the operator's search and the purchase's record: asked of Stripe,
    since `payment.succeeded` does not carry it. Best effort: without an answer the purchase settles anyway."""
    if not isinstance(event, PaymentSucceeded) or payments is None:
        return None
    try:
        return (await payments.checkout(event.session_id)).email
    except PaymentsUnavailable as exc:
        log.warning("the buyer's e-mail could not be asked of Stripe: %s", exc, extra={"session_id": event.session_id})
        return None


def fulfilled(checkout: Checkout) -> bool:
    """Stripe's fulfilment rule: anything but `unpaid` (`no_payment_required`: a 100% promotion code)."""
    return checkout.payment_status == "paid" or (
        checkout.payment_status == "no_payment_required" and checkout.status == "complete"
    )


async def settle_checkout(fn: Function, ledger: Ledger, purchase: Purchase, checkout: Checkout) -> None:
    if fulfilled(checkout):
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
            email=checkout.email,
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
    email: str | None = None,
) -> None:
    async with fn.db.transaction() as tx:
        purchase = await ledger.current(tx, purchase_id, session_id)
        if purchase is not None:
            await ledger.record_email(tx, purchase.id, email)
        facts = await ledger.payment_facts(tx, payment_intent) if payment_intent else None
        if facts is not None and facts.access()[0] == "revoked" and purchase is not None:
            if purchase.status != "refunded":  # refund (or a lost dispute) came first: it wins
                log.info(
                    "payment confirmed after its refund: the purchase stays revoked",
                    extra={"purchase_id": purchase.id, "payment_intent": payment_intent},
                )
                await ledger.mark_revoked(tx, purchase, facts.access()[1], payment_intent)
            return
        if purchase is None:
            known = catalog.cached(fn.settings.catalog_path).get(model) if model else None
            if not (user_id and known):
                raise Reject(f"checkout {session_id} was paid but names no purchase, visitor or catalog model")
            log.warning(
                "recording a paid checkout that had no pending purchase",
                extra={"session_id": session_id, "model": known.id},
            )
            record = dict(
                purchase_id=purchase_id or new_purchase_id(),
                user_id=user_id,
                model=known.id,
                amount_cents=amount_cents,
                currency=currency,
                payment_intent=payment_intent,
                session_id=session_id,
            )
            if facts is not None and facts.access()[0] == "revoked":  # refunded before we knew of it
                await ledger.record_revoked(tx, reason=facts.access()[1], **record)  # type: ignore[arg-type]
                return
            await ledger.record_paid(tx, kind="stripe", **record)  # type: ignore[arg-type]
            await ledger.record_email(tx, record["purchase_id"], email)  # type: ignore[arg-type]
        elif purchase.status in ("pending", "failed"):  # failed: an expiry raced a late async payment
            await ledger.mark_paid(tx, purchase, payment_intent)
        elif purchase.status == "refunded":
            log.warning("payment for an already refunded purchase ignored", extra={"purchase_id": purchase.id})
            return
        if facts is not None:  # a dispute opened (or a refund) before the confirmation
            for confirmed in await ledger.settled_by_intent(tx, payment_intent or ""):
                await apply_facts(ledger, tx, confirmed, facts)


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
    if not event.payment_intent:  # the webhook lets none through; an old stored event might
        log.info("full refund of a charge with no payment intent: not the studio's", extra={"charge": event.charge_id})
        return
    await record_fact(
        fn,
        ledger,
        event.payment_intent,
        lambda tx: ledger.record_refund_fact(tx, event.payment_intent or "", "full", event.stripe_created),
    )


async def refund_failed(fn: Function, ledger: Ledger, event: PaymentRefundFailed) -> None:
    await record_fact(
        fn,
        ledger,
        event.payment_intent,
        lambda tx: ledger.record_refund_fact(tx, event.payment_intent, "failed", event.stripe_created),
    )


async def dispute_opened(fn: Function, ledger: Ledger, event: PaymentDisputed) -> None:
    await record_fact(
        fn,
        ledger,
        event.payment_intent,
        lambda tx: ledger.record_dispute_fact(tx, event.payment_intent, event.dispute_id, "open", event.stripe_created),
    )


async def dispute_closed(fn: Function, ledger: Ledger, event: PaymentDisputeClosed) -> None:
    outcome = DISPUTE_CLOSED.get(event.status)
    if outcome is None:
        log.warning("dispute closed with an unknown status: nothing changed", extra={"status": event.status})
        return
    await record_fact(
        fn,
        ledger,
        event.payment_intent,
        lambda tx: ledger.record_dispute_fact(
            tx, event.payment_intent, event.dispute_id, outcome, event.stripe_created
        ),
    )


async def record_fact(
    fn: Function, ledger: Ledger, payment_intent: str, write: Callable[[Transaction], Awaitable[None]]
) -> None:
    """Keep what Stripe said about the payment, then bring every purchase paid with it in line."""
    async with fn.db.transaction() as tx:
        await write(tx)
        facts = await ledger.payment_facts(tx, payment_intent)
        purchases = await ledger.settled_by_intent(tx, payment_intent)
        for purchase in purchases:
            await apply_facts(ledger, tx, purchase, facts)  # type: ignore[arg-type]
    if not purchases:
        log.info(
            "payment fact kept: no purchase is confirmed with this payment yet (a late confirmation will see it)",
            extra={"payment_intent": payment_intent},
        )


async def apply_facts(ledger: Ledger, tx: Transaction, purchase: Purchase, facts: PaymentFacts) -> None:
    """Move a confirmed purchase to the access its payment's facts give it (idempotent)."""
    access, why = facts.access()
    if access == "revoked":
        if purchase.status != "refunded":
            await ledger.mark_revoked(tx, purchase, why)
    elif access == "suspended":
        if purchase.status == "refunded":
            await ledger.mark_restored(tx, purchase, "refund failed")
            purchase = await ledger.current(tx, purchase.id, None) or purchase
        if purchase.suspended_at is None:
            await ledger.mark_suspended(tx, purchase, why)
    elif purchase.status == "refunded" or purchase.suspended_at is not None:
        await ledger.mark_restored(tx, purchase, why)
