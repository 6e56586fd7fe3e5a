"""purchase: the marketplace. The catalog, who owns what, and checkout.

HTTP    GET  /api/models                      -> the catalog with `owned` and each model's install state (install's)
        POST /api/models/purchase/{model}     -> free/test: owned at once; else a Stripe Checkout URL
        GET  /api/purchases[/{purchase_id}]   -> the visitor's purchases (a pending checkout is re-checked)
        GET  /api/purchases?all=1&q=&status=  -> every visitor's purchases, searched (operator)
        POST /api/purchases/{purchase_id}/refund {"confirm": true} -> refunded in full through Stripe (operator);
                                                  Stripe's charge.refunded webhook then revokes it
        PATCH  /api/catalog/{model} {"price_cents"?, "featured"?, "description"?} -> the new entry (operator)
        POST   /api/catalog {catalog entry}    -> 201, the model added (operator)
        DELETE /api/catalog/{model}            -> the model removed from sale (operator)
        GET  /api/overview                    -> sales today / 7 / 30 days, Ollama's disk (operator)
        GET  /api/operator                    -> {"operator": bool}: whether this session is the operator's
        POST /api/purchases/reconcile {"since", "fix"} -> the reconciliation report with Stripe (operator);
                                                  also run by itself every STUDIO_RECONCILE_EVERY_H
Events  consumes payment.succeeded, payment.failed, payment.refunded, payment.refund_failed,
                 payment.disputed, payment.dispute_closed (settle the purchase: settlement.py)
        consumes install.failed (a disk full for good: the purchase is flagged for the operator)
        consumes install.removed (a model gone from Ollama is installed again for its owners)
        consumes account.merged (a visitor signed in: their purchases move to the account; emits purchase.transferred)
        emits    purchase.created, purchase.completed, purchase.failed, purchase.revoked, purchase.transferred,
                 purchase.suspended, purchase.restored, purchase.flagged, install.requested,
                 operator.refund_requested, operator.catalog_changed, operator.reconciled
Query   models.snapshot {"user_id", "admin"} -> {"models": [...]} (the gateway's live stream starts with it)
        purchases.owns {"user_id", "model"} -> {"owns": bool} (chat and install ask before a paid model
                                                answers or an owner's install request)
        catalog.changes {} -> {"changes": [{"model", "entry"}]} (other processes lay them over their catalog)
Asks    installs.states (install owns install state; purchase keeps no copy of it)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from events.bus import BusUnavailable
from events.catalog import (
    AccountMerged,
    InstallFailed,
    InstallRemoved,
    InstallRequested,
    OperatorReconciled,
    OperatorRefundRequested,
)
from events.delivery import Delivery
from events.envelope import new_id
from functions.purchase import catalog_changes
from functions.purchase.capacity import ensure_room_for, ollama_disk
from functions.purchase.checkout import RecheckThrottle, open_checkout, recheck
from functions.purchase.ledger import Ledger, new_purchase_id
from functions.purchase.reconciliation import Report, parse_since, reconcile
from functions.purchase.settlement import PAYMENT_EVENTS, PaymentEvent, settle
from studio import catalog
from studio.clients.stripe import PaymentsUnavailable, RefundRefused, StripePayments
from studio.runtime.errors import BadRequest, Conflict, NotFound, UpstreamUnavailable, json_body
from studio.runtime.function import Function, Key
from studio.runtime.identity import identity, require_admin, require_visitor

function = Function("purchase", migrations=Path(__file__).parent / "migrations")

LEDGER = Key[Ledger]("ledger")
PAYMENTS = Key[StripePayments | None]("payments")
RECHECKS = Key[RecheckThrottle]("rechecks")
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
    daily = asyncio.create_task(reconcile_regularly(every_s)) if payments is not None and every_s > 0 else None
    yield
    if daily is not None:
        daily.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await daily
    if payments is not None:
        await payments.close()


async def reconcile_regularly(every_s: float) -> None:
    """The studio's own reconciliation: the last 7 days, repaired, every `every_s` (first one after `every_s`)."""
    while True:
        await asyncio.sleep(every_s)
        try:
            report = await run_reconciliation(since_s=7 * 86400, fix=True)
        except PaymentsUnavailable as exc:
            function.log.warning("reconciliation skipped: Stripe unavailable", extra={"error": str(exc)})
            continue
        function.log.info(
            "reconciliation done", extra={"report": {k: v for k, v in report.to_dict().items() if k != "differences"}}
        )


async def run_reconciliation(*, since_s: float, fix: bool) -> Report:
    payments = function[PAYMENTS]
    if payments is None:
        raise UpstreamUnavailable(
            "payments are not configured (STRIPE_SECRET_KEY): there is nothing to reconcile with",
            code="payments_not_configured",
        )
    return await reconcile(function, function[LEDGER], payments, since_s=since_s, fix=fix)


def find_model(model_id: str) -> catalog.CatalogModel:
    model = catalog.cached(function.settings.catalog_path).get(model_id)
    if model is None:
        raise NotFound(f"{model_id!r} is not in the catalog", code="unknown_model")
    return model


def payment_mode() -> str:
    s = function.settings
    return "test" if s.skip_payment else "stripe" if s.stripe_secret_key else "disabled"


async def model_list(user_id: str | None, *, strict: bool) -> list[dict[str, Any]]:
    """The catalog, what this visitor owns (ours) and every install state (install's, asked now).

    Without an answer from install, `strict` fails (the live stream must start from the truth);
    otherwise the catalog is still served, each install state "unknown"."""
    owned = await function[LEDGER].owned(user_id) if user_id else set()
    try:
        installs = (await function.bus.query("installs.states", {}, timeout=2.0))["installs"]
    except BusUnavailable:
        if strict:
            raise
        installs = {m.id: {"state": "unknown"} for m in catalog.cached(function.settings.catalog_path)}
    return [
        {**m.to_dict(), "owned": m.id in owned, "install": installs.get(m.id) or {"state": "not_installed"}}
        for m in catalog.cached(function.settings.catalog_path)
    ]


@function.route("GET", "/api/models")
async def list_models(request: web.Request) -> web.Response:
    models = await model_list(identity(request).user_id, strict=False)
    return web.json_response({"models": models, "payments": payment_mode()})


@function.answer("catalog.changes")
async def stored_catalog_changes(query: dict[str, Any]) -> dict[str, Any]:
    return {"changes": await catalog_changes.stored(function.db)}


@function.route("PATCH", "/api/catalog/{model}")
async def change_catalog_entry(request: web.Request) -> web.Response:
    who = require_admin(request)
    model = await catalog_changes.change(
        function, operator_name(who), request.match_info["model"], await json_body(request)
    )
    return web.json_response(model.to_dict())


@function.route("POST", "/api/catalog")
async def add_catalog_entry(request: web.Request) -> web.Response:
    who = require_admin(request)
    model = await catalog_changes.add(function, operator_name(who), await json_body(request))
    return web.json_response(model.to_dict(), status=201)


@function.route("DELETE", "/api/catalog/{model}")
async def remove_catalog_entry(request: web.Request) -> web.Response:
    who = require_admin(request)
    removed = await catalog_changes.remove(function, operator_name(who), request.match_info["model"])
    return web.json_response({"model": removed, "removed": True})


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


@function.route("POST", "/api/models/purchase/{model}")
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


@function.route("GET", "/api/operator")
async def whoami(request: web.Request) -> web.Response:
    """Lets the console open without asking for the token when an operator session is signed in."""
    return web.json_response({"operator": identity(request).admin})


@function.route("GET", "/api/overview")
async def overview(request: web.Request) -> web.Response:
    require_admin(request)
    now = datetime.now(UTC)
    starts = {
        "today": now.replace(hour=0, minute=0, second=0, microsecond=0),
        "7d": now - timedelta(days=7),
        "30d": now - timedelta(days=30),
    }
    ledger = function[LEDGER]
    sales = {
        k: await ledger.sales_since(v.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
        for k, v in starts.items()
    }
    return web.json_response({"sales": sales, "ollama_disk": await ollama_disk(function.settings)})


@function.route("POST", "/api/purchases/reconcile")
async def reconcile_with_stripe(request: web.Request) -> web.Response:
    who = require_admin(request)
    body = await json_body(request)
    try:
        since_s = parse_since(str(body.get("since", "7d")))
    except ValueError as exc:
        raise BadRequest(str(exc), code="invalid_since") from None
    if not isinstance(body.get("fix", False), bool):
        raise BadRequest('"fix" must be true or false', code="invalid_fix")
    if function[PAYMENTS] is None:
        raise UpstreamUnavailable(
            "payments are not configured (STRIPE_SECRET_KEY): there is nothing to reconcile with",
            code="payments_not_configured",
        )
    try:
        report = await run_reconciliation(since_s=since_s, fix=body.get("fix", False))
    except PaymentsUnavailable as exc:
        raise UpstreamUnavailable(f"{exc}; nothing was changed", code="payments_unavailable") from None
    summary = report.to_dict()
    await function.publish(
        OperatorReconciled(
            operator=operator_name(who),
            since=report.since,
            fix=report.fix,
            found=summary["found"],
            fixed=summary["fixed"],
        )
    )
    return web.json_response(summary)


@function.route("POST", "/api/purchases/{purchase_id}/refund")
async def refund_purchase(request: web.Request) -> web.Response:
    who = require_admin(request)
    body = await json_body(request)
    if body.get("confirm") is not True:
        raise BadRequest('a refund gives the money back: send {"confirm": true}', code="confirmation_required")
    purchase = await function[LEDGER].get(request.match_info["purchase_id"])
    if purchase is None:
        raise NotFound("no such purchase", code="unknown_purchase")
    if purchase.kind != "stripe" or not purchase.payment_intent or purchase.status != "paid":
        raise Conflict(
            f"only a paid Stripe purchase can be refunded; this one is a {purchase.kind} purchase, {purchase.status}",
            code="not_refundable",
        )
    payments = function[PAYMENTS]
    if payments is None:
        raise UpstreamUnavailable("payments are not configured (STRIPE_SECRET_KEY)", code="payments_not_configured")
    try:
        # One key per state of the purchase: a repeated click refunds once; after a refund that failed
        # (ownership restored, so updated_at changed) the operator can try again.
        key = f"refund-{purchase.id}-{purchase.updated_at}"
        refund = await payments.refund_payment(purchase.payment_intent, idempotency_key=key)
    except RefundRefused as exc:
        raise Conflict(f"Stripe refused the refund: {exc}", code="refund_refused") from None
    except PaymentsUnavailable as exc:
        raise UpstreamUnavailable(f"{exc}; nothing was refunded", code="payments_unavailable") from None
    async with function.db.transaction() as tx:
        await tx.publish(
            function.event(
                OperatorRefundRequested(
                    operator=operator_name(who),
                    purchase_id=purchase.id,
                    user_id=purchase.user_id,
                    model=purchase.model,
                    amount_cents=int(refund.get("amount") or 0),
                    refund_id=str(refund.get("id")),
                )
            )
        )
    return web.json_response(
        {"purchase_id": purchase.id, "refund_id": refund.get("id"), "status": refund.get("status")}
    )


def operator_name(who: Any) -> str:
    """Who acted: the operator's account when signed in with one, else the admin token."""
    return getattr(who, "account_id", None) or "admin token"  # (a visitor cookie says nothing of who operates)


@function.route("GET", "/api/purchases")
async def list_purchases(request: web.Request) -> web.Response:
    if request.query.get("all") == "1":
        require_admin(request)
        found = await function[LEDGER].search(request.query.get("q", "").strip(), request.query.get("status", ""))
        return web.json_response({"purchases": [p.for_operator() for p in found]})
    purchases = await function[LEDGER].of_user(require_visitor(request))
    return web.json_response({"purchases": [p.public() for p in purchases]})

    return web.json_response({"purchases": [p.public() for p in purchases]})


@function.route("GET", "/api/purchases/{purchase_id}")
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
    await settle(function, function[LEDGER], event)


@function.subscribe(InstallFailed)
async def flag_what_cannot_be_installed(event: InstallFailed, delivery: Delivery) -> None:
    """The buyer paid for a model the server's disk cannot hold: the operator sees it (and may refund)."""
    if event.will_retry or DISK_FULL not in event.reason:
        return
    async with function.db.transaction() as tx:
        # the install of a purchase carries its id ("ins_" + the purchase id's tail, install's handler)
        await function[LEDGER].flag_for_operator(tx, "pur_" + event.install_id[4:], event.reason)


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
                install_id="ins_" + new_id()[:20], model=event.model, requested_by="studio", reason="restore"
            )
            await tx.publish(function.event(restore))
