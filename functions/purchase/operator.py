"""purchase's operator side: the console's sales overview, refunds, reconciliation with Stripe and catalog
edits. Every route here refuses anyone but the operator; every action is an `operator.*` event.

HTTP    GET  /api/operator                    -> {"operator": bool}: whether this session is the operator's
        GET  /api/overview                    -> sales today / 7 / 30 days, Ollama's disk
        POST /api/purchases/reconcile {"since", "fix"} -> the reconciliation report with Stripe; also run by
                                                  itself every STUDIO_RECONCILE_EVERY_H (`reconcile_regularly`)
        POST /api/purchases/{purchase_id}/refund {"confirm": true} -> refunded in full through Stripe;
                                                  Stripe's charge.refunded webhook then revokes it
        PATCH  /api/catalog/{model} {"price_cents"?, "featured"?, "description"?} -> the new entry
        POST   /api/catalog {catalog entry}    -> 201, the model added
        DELETE /api/catalog/{model}            -> the model removed from sale

The routes register on purchase's `function` (declaration.py) when handler.py imports this module.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from events.catalog import OperatorReconciled, OperatorRefundRequested
from functions.purchase import catalog_changes
from functions.purchase.capacity import ollama_disk
from functions.purchase.declaration import LEDGER, PAYMENTS, function
from functions.purchase.reconciliation import Report, parse_since, reconcile
from studio.clients.stripe import PaymentsUnavailable, RefundRefused
from studio.runtime.errors import BadRequest, Conflict, NotFound, UpstreamUnavailable, json_body
from studio.runtime.identity import identity, require_admin


def operator_name(who: Any) -> str:
    """Who acted: the operator's account when signed in with one, else the admin token."""
    return getattr(who, "account_id", None) or "admin token"  # (a visitor cookie says nothing of who operates)


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
