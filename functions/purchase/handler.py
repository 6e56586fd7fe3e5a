"""purchase: the marketplace. The catalog, who owns what, and checkout.

HTTP    GET  /api/models                      -> the catalog with `owned` and each model's install state (install's)
        POST /api/models/purchase/{model}     -> free/test: owned at once; else a Stripe Checkout URL
        GET  /api/purchases[/{purchase_id}]   -> the visitor's purchases (a pending checkout is re-checked)
        GET  /api/purchases?all=1&q=&status=  -> every visitor's purchases, searched (operator)
        ...                                   the operator's routes: operator.py (refunds, reconciliation,
                                              the sales overview, catalog edits)
Events  consumes payment.succeeded, payment.failed, payment.refunded, payment.refund_failed,
                 payment.disputed, payment.dispute_closed (settle the purchase: settlement.py)
        consumes install.failed (a disk full for good: the purchase is flagged for the operator)
        consumes install.removed (a model gone from Ollama is installed again for its owners)
        consumes account.merged (a visitor signed in: their purchases move to the account; emits purchase.transferred)
        emits    purchase.created, purchase.completed, purchase.failed, purchase.revoked, purchase.transferred,
                 purchase.suspended, purchase.restored, purchase.flagged, install.requested,
                 operator.refund_requested, operator.catalog_changed, operator.reconciled,
                 payment.refunded (only a test-mode purchase's rehearsed refund: operator.py)
Query   models.snapshot {"user_id", "admin"} -> {"models": [...]} (the gateway's live stream starts with it)
        purchases.owns {"user_id", "model"} -> {"owns": bool} (chat and install ask before a paid model
                                                answers or an owner's install request)
        catalog.changes {} -> {"changes": [{"model", "entry"}]} (other processes lay them over their catalog)
Asks    installs.states (install owns install state; purchase keeps no copy of it)
        accounts.emails (the operator's purchase search shows buyers by e-mail)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from events.bus import BusUnavailable
from events.catalog import (
    AccountMerged,
    InstallFailed,
    InstallRemoved,
    InstallRequested,
)
from events.delivery import Delivery
from events.ids import new_install_id, purchase_id_of_install
from functions.purchase import catalog_changes, operator
from functions.purchase.capacity import ensure_room_for
from functions.purchase.checkout import RecheckThrottle, open_checkout, recheck
from functions.purchase.contract import Catalog, Purchase, PurchaseAnswer, Purchases
from functions.purchase.declaration import LEDGER, PAYMENTS, RECHECKS, function, payment_mode
from functions.purchase.ledger import Ledger, new_purchase_id
from functions.purchase.settlement import PAYMENT_EVENTS, PaymentEvent, buyer_email, settle
from studio import catalog
from studio.clients.stripe import StripePayments
from studio.runtime.errors import Conflict, NotFound
from studio.runtime.function import Function
from studio.runtime.identity import identity, require_admin, require_visitor
from studio.runtime.routes import KIB

DISK_FULL = "disk is full"  # install.failed's reason when Ollama said "no space left on device"


@function.resource
async def dependencies(fn: Function) -> AsyncIterator[None]:
    fn[LEDGER], fn[RECHECKS] = Ledger(fn), RecheckThrottle()
    shared = catalog.cached(fn.settings.catalog_path)
    for change in await catalog_changes.stored(fn.db):  # the operator's changes over the seed
        shared.apply(change["model"], change["entry"])
    key = fn.settings.stripe_secret_key
    fn[PAYMENTS] = payments = StripePayments(key.get(), api_base=fn.settings.stripe_api_base) if key else None
    every_s = fn.settings.reconcile_every_h * 3600
    daily = asyncio.create_task(operator.reconcile_regularly(every_s)) if payments is not None and every_s > 0 else None
    yield
    if daily is not None:
        daily.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await daily
    if payments is not None:
        await payments.close()


def find_model(model_id: str) -> catalog.CatalogModel:
    model = catalog.cached(function.settings.catalog_path).get(model_id)
    if model is None:
        raise NotFound(f"{model_id!r} is not in the catalog", code="unknown_model")
    return model


async def model_list(user_id: str | None, *, strict: bool, operator: bool = False) -> list[dict[str, Any]]:
    """The catalog, what this visitor owns (ours) and every install state (install's, asked now).

    Without an answer from install, `strict` fails (the live stream must start from the truth);
    otherwise the catalog is still served, each install state "unknown". The operator also sees each
    model's state on every Ollama node (`install.nodes`; visitors are not told the servers' addresses)."""
    owned = await function[LEDGER].owned(user_id) if user_id else set()
    try:
        installs = (await function.bus.query("installs.states", {}, timeout=2.0))["installs"]
    except BusUnavailable:
        if strict:
            raise
        installs = {m.id: {"state": "unknown"} for m in catalog.cached(function.settings.catalog_path)}
    models = [
        {**m.to_dict(), "owned": m.id in owned, "install": installs.get(m.id) or {"state": "not_installed"}}
        for m in catalog.cached(function.settings.catalog_path)
    ]
    if operator:
        try:
            per_node = (await function.bus.query("installs.nodes", {}, timeout=2.0))["nodes"]
        except BusUnavailable:
            per_node = {}
        for m in models:
            m["install"] = {**m["install"], "nodes": per_node.get(m["id"], {})}
    return models


@function.route(
    "GET",
    "/api/models",
    summary="The catalog, with what the visitor owns and each model's install state",
    response=Catalog,
)
async def list_models(request: web.Request) -> web.Response:
    who = identity(request)
    models = await model_list(who.user_id, strict=False, operator=who.admin)
    return web.json_response({"models": models, "payments": payment_mode()})


@function.answer("catalog.changes")
async def stored_catalog_changes(query: dict[str, Any]) -> dict[str, Any]:
    return {"changes": await catalog_changes.stored(function.db)}


@function.answer("models.snapshot")
async def snapshot(query: dict[str, Any]) -> dict[str, Any]:
    return {"models": await model_list(query.get("user_id"), strict=True)}


@function.answer("purchases.owns")
async def answer_ownership(query: dict[str, Any]) -> dict[str, Any]:
    """The ledger's word on ownership: what a 200 or a recorded refund changed counts at once."""
    user_id, model = query.get("user_id"), query.get("model")
    if not (isinstance(user_id, str) and isinstance(model, str)):
        raise ValueError('purchases.owns needs "user_id" and "model" strings')
    return {"owns": await function[LEDGER].owns(user_id, model)}


@function.route(
    "POST",
    "/api/models/purchase/{model}",
    summary="Buy a model: free and test purchases at once, else a Stripe Checkout URL",
    response=PurchaseAnswer,
    errors=(401, 403, 404, 409),
    max_body=4 * KIB,
    needs_session=True,
)
async def purchase_model(request: web.Request) -> web.Response:
    user_id = require_visitor(request)
    model = find_model(request.match_info["model"])
    ledger = function[LEDGER]
    kind = "free" if model.free else "test" if function.settings.skip_payment else "stripe"
    if model.id not in await ledger.owned(user_id):
        await ensure_room_for(model, function.settings)  # 507/409 before anything is charged
    if kind == "stripe":
        return await open_checkout(function, ledger, function[PAYMENTS], user_id, model, identity(request).email)
    purchase_id = new_purchase_id()
    async with function.db.transaction() as tx:
        if await ledger.owns_in(tx, user_id, model.id):
            raise Conflict(f"you already own {model.id}", code="already_owned")
        amount = 0 if kind == "free" else model.price_cents
        await ledger.record_paid(
            tx,
            purchase_id=purchase_id,
            user_id=user_id,
            model=model.id,
            kind=kind,
            amount_cents=amount,
            currency=model.currency,
        )
    message = "Free model added to your library" if kind == "free" else "Test purchase successful"
    return web.json_response(
        {"status": "success", "message": message, "purchase_id": purchase_id, "model": model.id, "owned": True}
    )


@function.route("GET", "/api/purchases", summary="The visitor's purchases", response=Purchases, errors=(401,))
async def list_purchases(request: web.Request) -> web.Response:
    if request.query.get("all") == "1":
        require_admin(request)
        found = await function[LEDGER].search(request.query.get("q", "").strip(), request.query.get("status", ""))
        return web.json_response({"purchases": await with_buyer_emails([p.for_operator() for p in found])})
    purchases = await function[LEDGER].of_user(require_visitor(request))
    return web.json_response({"purchases": [p.public() for p in purchases]})

    return web.json_response({"purchases": [p.public() for p in purchases]})


async def with_buyer_emails(purchases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The operator sees buyers by e-mail: an account's comes from accounts (its owner), asked now; a
    purchase that carries one (Stripe Checkout's) keeps it. Without an answer the ids stay."""
    ids = sorted({p["user_id"] for p in purchases if p["user_id"].startswith("acc_") and not p.get("email")})
    if not ids:
        return purchases
    try:
        emails = (await function.bus.query("accounts.emails", {"account_ids": ids[:500]}, timeout=2.0))["emails"]
    except (BusUnavailable, TimeoutError, KeyError):
        return purchases
    return [{**p, "email": p.get("email") or emails.get(p["user_id"])} for p in purchases]


@function.route(
    "GET",
    "/api/purchases/{purchase_id}",
    summary="One purchase of the visitor's (a pending Checkout is re-checked with Stripe, at most every 2 s)",
    response=Purchase,
    errors=(404,),
)
async def show_purchase(request: web.Request) -> web.Response:
    who = identity(request)
    purchase = await function[LEDGER].get(request.match_info["purchase_id"])
    if purchase is None or not (who.admin or purchase.user_id == who.user_id):
        raise NotFound("no such purchase", code="unknown_purchase")
    payments = function[PAYMENTS]
    if purchase.status == "pending" and purchase.checkout_session_id and payments is not None:
        if function[RECHECKS].allow(purchase.id):
            purchase = await recheck(function, function[LEDGER], payments, purchase)
    return web.json_response(purchase.public())


@function.subscribe(*PAYMENT_EVENTS, max_attempts=10)
async def settle_payment(event: PaymentEvent, delivery: Delivery) -> None:
    await settle(function, function[LEDGER], event, email=await buyer_email(function[PAYMENTS], event))


@function.subscribe(InstallFailed)
async def flag_what_cannot_be_installed(event: InstallFailed, delivery: Delivery) -> None:
    """The buyer paid for a model the server's disk cannot hold: the operator sees it (and may refund)."""
    if event.will_retry or DISK_FULL not in event.reason:
        return
    async with function.db.transaction() as tx:
        # the install of a purchase carries its id (events/ids.py)
        await function[LEDGER].flag_for_operator(tx, purchase_id_of_install(event.install_id), event.reason)


@function.subscribe(AccountMerged, max_attempts=10)
async def merge_visitor_purchases(event: AccountMerged, delivery: Delivery) -> None:
    async with function.db.transaction() as tx:
        await function[LEDGER].transfer(tx, event.visitor_id, event.account_id)


@function.subscribe(InstallRemoved)
async def reinstall_for_owners(event: InstallRemoved, delivery: Delivery) -> None:
    """A model vanished from Ollama (say, the studio was restored onto a new server): owners get it back.
    What the operator removed stays removed (owners reinstall it themselves, for free)."""
    if event.by_operator:
        return
    async with function.db.transaction() as tx:
        if await function[LEDGER].anyone_owns(tx, event.model):
            restore = InstallRequested(
                install_id=new_install_id(), model=event.model, requested_by="studio", reason="restore"
            )
            await tx.publish(function.event(restore))
