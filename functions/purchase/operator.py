"""purchase's operator side: the console's sales overview, refunds, reconciliation with Stripe and catalog
edits. Every route here refuses anyone but the operator; every action is an `operator.*` event.

HTTP    GET  /api/operator                    -> {"operator": bool}: whether this session is the operator's
        GET  /api/overview                    -> sales today / 7 / 30 days (test-mode ones apart, under
                                                  "test"), sales and refunds per day over 30 days, the
                                                  payment mode, Ollama's disk
        POST /api/purchases/reconcile {"since", "fix"} -> the reconciliation report with Stripe; also run by
                                                  itself every STUDIO_RECONCILE_EVERY_H (`reconcile_regularly`)
        POST /api/purchases/{purchase_id}/refund {"confirm": true} -> refunded in full through Stripe;
                                                  Stripe's charge.refunded webhook then revokes it. A test-mode
                                                  purchase's refund is rehearsed: no Stripe call, and the
                                                  payment.refunded the webhook would publish is published here,
                                                  so settlement revokes it as it would a real one
        PATCH  /api/catalog/{model} {"price_cents"?, "featured"?, "description"?} -> the new entry
        POST   /api/catalog {catalog entry}    -> 201, the model added
        DELETE /api/catalog/{model}            -> the model removed from sale

The routes register on purchase's `function` (declaration.py) when handler.py imports this module.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from aiohttp import web
from msgspec import UNSET

from events.catalog import OperatorReconciled, OperatorRefundRequested, PaymentRefunded
from events.envelope import new_id
from functions.purchase import catalog_changes
from functions.purchase.capacity import ollama_disk
from functions.purchase.contract import (
    CatalogChange,
    CatalogEntry,
    IsOperator,
    ReconcileRequest,
    RefundRequest,
    Removed,
)
from functions.purchase.declaration import LEDGER, PAYMENTS, function, payment_mode
from functions.purchase.ledger import Purchase
from functions.purchase.reconciliation import Report, parse_since, reconcile
from studio.clients.stripe import PaymentsUnavailable, RefundRefused
from studio.runtime.errors import BadRequest, Conflict, NotFound, UpstreamUnavailable
from studio.runtime.identity import identity, require_admin
from studio.runtime.routes import KIB

OVERVIEW_DAYS = 30


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


@function.route(
    "PATCH",
    "/api/catalog/{model}",
    summary="Change a model's price, featured flag or description",
    body=CatalogChange,
    response=dict[str, Any],
    errors=(404,),
    max_body=16 * KIB,
    operator=True,
)
async def change_catalog_entry(request: web.Request, body: CatalogChange) -> web.Response:
    who = require_admin(request)
    fields = msgspec.structs.asdict(body)
    model = await catalog_changes.change(
        function, operator_name(who), request.match_info["model"], {k: v for k, v in fields.items() if v is not UNSET}
    )
    return web.json_response(model.to_dict())


@function.route(
    "POST",
    "/api/catalog",
    summary="Add a model to the catalog",
    body=CatalogEntry,
    response=dict[str, Any],
    status=201,
    errors=(409,),
    max_body=16 * KIB,
    operator=True,
)
async def add_catalog_entry(request: web.Request, body: dict[str, Any]) -> web.Response:
    who = require_admin(request)
    model = await catalog_changes.add(function, operator_name(who), body)
    return web.json_response(model.to_dict(), status=201)


@function.route(
    "DELETE",
    "/api/catalog/{model}",
    summary="Take a model off sale",
    response=Removed,
    errors=(404,),
    max_body=16 * KIB,
    operator=True,
)
async def remove_catalog_entry(request: web.Request) -> web.Response:
    who = require_admin(request)
    removed = await catalog_changes.remove(function, operator_name(who), request.match_info["model"])
    return web.json_response({"model": removed, "removed": True})


@function.route("GET", "/api/operator", summary="Whether this session is the operator's", response=IsOperator)
async def whoami(request: web.Request) -> web.Response:
    """Lets the console open without asking for the token when an operator session is signed in."""
    return web.json_response({"operator": identity(request).admin})


@function.route(
    "GET", "/api/overview", summary="Sales today, 7 and 30 days, Ollama's disk", response=dict[str, Any], operator=True
)
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
    first_day = (now - timedelta(days=OVERVIEW_DAYS - 1)).date().isoformat()
    return web.json_response(
        {
            "sales": sales,
            "days": {"from": first_day, "to": now.date().isoformat(), "rows": await ledger.daily(first_day)},
            "payments": payment_mode(),
            "ollama_disk": await ollama_disk(function.settings),
        }
    )


@function.route(
    "POST",
    "/api/purchases/reconcile",
    summary="Compare purchases and access with Stripe; `fix` repairs through events",
    body=ReconcileRequest,
    response=dict[str, Any],
    errors=(503,),
    timeout=120,
    max_body=4 * KIB,
    operator=True,
)
async def reconcile_with_stripe(request: web.Request, body: ReconcileRequest) -> web.Response:
    who = require_admin(request)
    try:
        since_s = parse_since(body.since)
    except ValueError as exc:
        raise BadRequest(str(exc), code="invalid_since") from None
    if function[PAYMENTS] is None:
        raise UpstreamUnavailable(
            "payments are not configured (STRIPE_SECRET_KEY): there is nothing to reconcile with",
            code="payments_not_configured",
        )
    try:
        report = await run_reconciliation(since_s=since_s, fix=body.fix)
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


@function.route(
    "POST",
    "/api/purchases/{purchase_id}/refund",
    summary="Refund a paid purchase in full through Stripe",
    body=RefundRequest,
    response=dict[str, Any],
    errors=(404, 409, 503),
    max_body=4 * KIB,
    operator=True,
)
async def refund_purchase(request: web.Request, body: RefundRequest) -> web.Response:
    who = require_admin(request)
    if body.confirm is not True:
        raise BadRequest('a refund gives the money back: send {"confirm": true}', code="confirmation_required")
    purchase = await function[LEDGER].get(request.match_info["purchase_id"])
    if purchase is None:
        raise NotFound("no such purchase", code="unknown_purchase")
    if purchase.kind == "test" and purchase.status == "paid":
        return web.json_response(await rehearse_refund(purchase, operator_name(who)))
    if purchase.kind != "stripe" or not purchase.payment_intent or purchase.status != "paid":
        raise Conflict(
            f"only a paid Stripe or test purchase can be refunded; this one is a {purchase.kind} purchase, "
            f"{purchase.status}",
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


async def rehearse_refund(purchase: Purchase, operator: str) -> dict[str, Any]:
    """A test-mode purchase's refund, so the operator can rehearse the journey before going live: the same
    operator.refund_requested, then the payment.refunded Stripe's webhook would bring (no money moved, no
    Stripe call); settlement takes access away from there exactly as for a real refund."""
    tag = new_id()[:16]
    async with function.db.transaction() as tx:
        payment_intent = await function[LEDGER].give_test_payment(tx, purchase)
        await tx.publish(
            function.event(
                OperatorRefundRequested(
                    operator=operator,
                    purchase_id=purchase.id,
                    user_id=purchase.user_id,
                    model=purchase.model,
                    amount_cents=purchase.amount_cents,
                    refund_id=f"re_test_{tag}",
                )
            )
        )
        await tx.publish(
            function.event(
                PaymentRefunded(
                    stripe_event_id=f"evt_test_{tag}",
                    charge_id=f"ch_test_{tag}",
                    payment_intent=payment_intent,
                    amount_cents=purchase.amount_cents,
                    amount_refunded_cents=purchase.amount_cents,
                    full=True,
                    stripe_created=int(time.time()),
                )
            )
        )
    return {"purchase_id": purchase.id, "refund_id": f"re_test_{tag}", "status": "succeeded", "test": True}
