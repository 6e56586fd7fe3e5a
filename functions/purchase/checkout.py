"""Paying for a model with Stripe Checkout: opening a session (or reusing an open one), and asking
Stripe directly when the visitor is back before (or without) the webhook."""

from __future__ import annotations

import time

from aiohttp import web

from functions.purchase.ledger import Ledger, Purchase, new_purchase_id
from functions.purchase.settlement import settle_checkout
from studio.catalog import CatalogModel
from studio.clients.stripe import PaymentsUnavailable, StripePayments
from studio.runtime.errors import Conflict, UpstreamUnavailable
from studio.runtime.function import Function


async def open_checkout(
    fn: Function,
    ledger: Ledger,
    payments: StripePayments | None,
    user_id: str,
    model: CatalogModel,
    email: str | None = None,
) -> web.Response:
    """A Checkout Session for `model` (the signed-in buyer's e-mail filled in), or the open one."""
    if payments is None:
        raise UpstreamUnavailable(
            "payments are not configured: the operator must set STRIPE_SECRET_KEY "
            "(or STUDIO_SKIP_PAYMENT=true for test mode)",
            code="payments_not_configured",
        )
    if model.id in await ledger.owned(user_id):
        raise Conflict(f"you already own {model.id}", code="already_owned")
    if await ledger.suspended(user_id, model.id):
        raise Conflict(
            f"your purchase of {model.id} is on hold while its payment is disputed; it comes back if the "
            "dispute is decided in your favour",
            code="purchase_disputed",
        )
    existing = await ledger.open_checkout(user_id, model.id)
    if existing is not None:
        return checkout_answer(existing.id, model.id, existing.checkout_url)
    purchase_id = new_purchase_id()
    back = fn.settings.visitor_url + "/marketplace"
    try:
        checkout = await payments.open_checkout(
            purchase_id=purchase_id,
            user_id=user_id,
            model_id=model.id,
            model_name=model.name,
            amount_cents=model.price_cents,
            currency=model.currency,
            success_url=f"{back}?purchase={purchase_id}&session_id={{CHECKOUT_SESSION_ID}}",
            cancel_url=f"{back}?purchase={purchase_id}&cancelled=1",
            customer_email=email,
        )
    except PaymentsUnavailable as exc:
        raise UpstreamUnavailable(
            f"{exc}; nothing was charged, try again in a minute",
            code="payments_unavailable",
            headers={"Retry-After": "30"},
        ) from None
    async with fn.db.transaction() as tx:
        await ledger.record_pending(
            tx,
            purchase_id=purchase_id,
            user_id=user_id,
            model=model.id,
            amount_cents=model.price_cents,
            currency=model.currency,
            session_id=checkout.session_id,
            checkout_url=checkout.url,
        )
    return checkout_answer(purchase_id, model.id, checkout.url)


def checkout_answer(purchase_id: str, model: str, url: str | None) -> web.Response:
    return web.json_response({"status": "checkout", "checkout_url": url, "purchase_id": purchase_id, "model": model})


class RecheckThrottle:
    """Stripe is asked about one pending purchase at most once every `every_s`: a page polling it
    (every 1.5 s) or a script costs one Stripe call per 2 s; the webhook settles it in any case."""

    def __init__(self, every_s: float = 2.0, remember: int = 10_000) -> None:
        self.every_s = every_s
        self.remember = remember
        self._asked: dict[str, float] = {}

    def allow(self, purchase_id: str) -> bool:
        now = time.monotonic()
        if now - self._asked.get(purchase_id, -self.every_s) < self.every_s:
            return False
        if len(self._asked) >= self.remember:
            self._asked.clear()
        self._asked[purchase_id] = now
        return True


async def recheck(fn: Function, ledger: Ledger, payments: StripePayments, purchase: Purchase) -> Purchase:
    """The visitor is back from Checkout before (or without) the webhook: ask Stripe directly."""
    try:
        checkout = await payments.checkout(purchase.checkout_session_id or "")
    except PaymentsUnavailable:
        return purchase  # the webhook will settle it
    await settle_checkout(fn, ledger, purchase, checkout)
    return await ledger.get(purchase.id) or purchase
