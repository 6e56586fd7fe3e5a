"""A local stand-in for the part of Stripe's API the studio uses, and Stripe's webhook sender.

The studio's real stripe library talks to it over HTTP (`STUDIO_STRIPE_API_BASE`): Checkout Sessions
are created (form-encoded, bracketed keys, `Idempotency-Key` replays the first answer as Stripe does)
and retrieved; Checkout Sessions, charges and disputes are listed as Stripe lists them (newest first,
`limit`, `starting_after`, `created[gte]`, pages with `has_more`), so the stripe library's
auto-pagination walks them; `POST /v1/refunds` refunds a payment intent in full. Tests then play the
visitor and Stripe: `pay()` marks a session paid (and makes its charge), `refund()` / `dispute()`
change the charge as the dashboard would, `deliver()` sends a webhook signed with the stripe
library's own helper to the studio's webhook URL.

    stripe_api = StripeDouble(webhook_secret="whsec_test")
    await stripe_api.start()                    # stripe_api.url -> STUDIO_STRIPE_API_BASE
    ...
    await stripe_api.deliver(webhook_url, "checkout.session.completed", session_id)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from typing import Any

import aiohttp
import stripe
from aiohttp import web

_BRACKETS = re.compile(r"\[([^\]]*)\]")


def unflatten(form: dict[str, str]) -> dict[str, Any]:
    """`metadata[purchase_id]=x&line_items[0][quantity]=1` -> nested dicts/lists, as Stripe parses it."""
    root: dict[str, Any] = {}
    for key, value in form.items():
        head = key.split("[", 1)[0]
        parts = [head, *_BRACKETS.findall(key)]
        node: Any = root
        for part, nxt in itertools.pairwise(parts):
            container: Any = [] if nxt.isdigit() else {}
            if isinstance(node, list):
                idx = int(part)
                while len(node) <= idx:
                    node.append(None)
                if node[idx] is None:
                    node[idx] = container
                node = node[idx]
            else:
                node = node.setdefault(part, container)
        last = parts[-1]
        if isinstance(node, list):
            idx = int(last)
            while len(node) <= idx:
                node.append(None)
            node[idx] = value
        else:
            node[last] = value
    return root


class StripeDouble:
    def __init__(self, *, api_key: str = "sk_test_studio", webhook_secret: str = "whsec_test_studio") -> None:
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.sessions: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}  # by charge id
        self.disputes: dict[str, dict[str, Any]] = {}  # by dispute id
        self.refund_requests: list[dict[str, Any]] = []
        self.list_requests: list[tuple[str, dict[str, str]]] = []
        self.create_requests: list[dict[str, Any]] = []
        self.retrieve_requests: list[str] = []  # session ids asked about
        self.idempotency_keys: list[str] = []
        self._replies: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self.failing = False  # answer 500 to everything (Stripe having a bad day)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- the API -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/checkout/sessions", self._create)
        app.router.add_get("/v1/checkout/sessions/{sid}", self._retrieve)
        app.router.add_get("/v1/checkout/sessions", self._lister(lambda: self.sessions, "/v1/checkout/sessions"))
        app.router.add_get("/v1/charges", self._lister(lambda: self.charges, "/v1/charges"))
        app.router.add_get("/v1/disputes", self._lister(lambda: self.disputes, "/v1/disputes"))
        app.router.add_post("/v1/refunds", self._refund)
        return app

    def _lister(self, objects: Any, url: str) -> Any:
        async def list_page(request: web.Request) -> web.Response:
            if (refused := self._auth(request)) is not None:
                return refused
            query = dict(request.query)
            self.list_requests.append((url, query))
            limit = int(query.get("limit", "10"))
            if not 1 <= limit <= 100:
                return web.json_response(
                    {"error": {"type": "invalid_request_error", "message": "limit must be 1-100"}}, status=400
                )
            since = int(query.get("created[gte]", "0"))
            # Stripe lists newest first; ties (same second) in reverse creation order.
            items = [o for o in reversed(list(objects().values())) if o["created"] >= since]
            after = query.get("starting_after")
            if after is not None:
                ids = [o["id"] for o in items]
                if after not in ids:
                    return web.json_response(
                        {"error": {"type": "invalid_request_error", "message": f"No such object: {after}"}},
                        status=400,
                    )
                items = items[ids.index(after) + 1 :]
            return web.json_response(
                {"object": "list", "data": items[:limit], "has_more": len(items) > limit, "url": url}
            )

        return list_page

    async def _refund(self, request: web.Request) -> web.Response:
        if (refused := self._auth(request)) is not None:
            return refused
        key = request.headers.get("Idempotency-Key", "")
        if key and key in self._replies:
            return web.json_response(self._replies[key])
        params = unflatten(dict(await request.post()))  # type: ignore[arg-type]
        self.refund_requests.append(params)
        charge = next((c for c in self.charges.values() if c["payment_intent"] == params.get("payment_intent")), None)
        if charge is None:
            return web.json_response(
                {"error": {"type": "invalid_request_error", "message": "No such payment_intent"}}, status=400
            )
        if charge["refunded"]:
            return web.json_response(
                {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "charge_already_refunded",
                        "message": f"Charge {charge['id']} has already been refunded.",
                    }
                },
                status=400,
            )
        refund = self._refund_charge(charge)
        if key:
            self._replies[key] = refund
        return web.json_response(refund)

    def _refund_charge(self, charge: dict[str, Any], amount: int | None = None) -> dict[str, Any]:
        amount = charge["amount"] - charge["amount_refunded"] if amount is None else amount
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        return {
            "id": f"re_{next(self._ids):06d}",
            "object": "refund",
            "amount": amount,
            "charge": charge["id"],
            "created": int(time.time()),
            "currency": charge["currency"],
            "metadata": {},
            "payment_intent": charge["payment_intent"],
            "reason": None,
            "status": "succeeded",
        }

    def _auth(self, request: web.Request) -> web.Response | None:
        if self.failing:
            return web.json_response({"error": {"type": "api_error", "message": "Stripe is down"}}, status=500)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response(
                {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}, status=401
            )
        return None

    async def _create(self, request: web.Request) -> web.Response:
        if (refused := self._auth(request)) is not None:
            return refused
        key = request.headers.get("Idempotency-Key", "")
        self.idempotency_keys.append(key)
        if key in self._replies:
            return web.json_response(self._replies[key])
        params = unflatten(dict(await request.post()))  # type: ignore[arg-type]
        self.create_requests.append(params)
        n = next(self._ids)
        sid = f"cs_test_{n:06d}"
        amount = sum(int(li["price_data"]["unit_amount"]) * int(li.get("quantity", 1)) for li in params["line_items"])
        session = {
            "id": sid,
            "object": "checkout.session",
            "status": "open",
            "payment_status": "unpaid",
            "mode": params["mode"],
            "url": f"https://checkout.stripe.test/c/pay/{sid}",
            "client_reference_id": params.get("client_reference_id"),
            "metadata": params.get("metadata", {}),
            "amount_total": amount,
            "currency": params["line_items"][0]["price_data"]["currency"],
            "payment_intent": None,
            "success_url": params["success_url"],
            "cancel_url": params["cancel_url"],
            "created": int(time.time()),
            "expires_at": int(time.time()) + 24 * 3600,
            "livemode": False,
        }
        self.sessions[sid] = session
        self._replies[key] = session
        return web.json_response(session)

    async def _retrieve(self, request: web.Request) -> web.Response:
        if (refused := self._auth(request)) is not None:
            return refused
        self.retrieve_requests.append(request.match_info["sid"])
        session = self.sessions.get(request.match_info["sid"])
        if session is None:
            return web.json_response(
                {"error": {"type": "invalid_request_error", "message": "No such checkout.session"}}, status=404
            )
        return web.json_response(session)

    # -- playing the visitor and Stripe --------------------------------------------------------

    def pay(self, session_id: str, email: str = "buyer@example.com") -> dict[str, Any]:
        session = self.sessions[session_id]
        session.update(status="complete", payment_status="paid", payment_intent=f"pi_{session_id[8:]}", url=None)
        session["customer_details"] = {"email": email, "name": None, "phone": None, "address": None}
        self.charges.setdefault(
            f"ch_{session_id[8:]}",
            {
                "id": f"ch_{session_id[8:]}",
                "object": "charge",
                "amount": session["amount_total"],
                "amount_captured": session["amount_total"],
                "amount_refunded": 0,
                "refunded": False,
                "disputed": False,
                "currency": session["currency"],
                "payment_intent": session["payment_intent"],
                "metadata": {},
                "paid": True,
                "status": "succeeded",
                "created": int(time.time()),
                "livemode": False,
            },
        )
        return session

    def charge_of(self, session_id: str) -> dict[str, Any]:
        return self.charges[f"ch_{session_id[8:]}"]

    def refund(self, session_id: str, amount: int | None = None) -> dict[str, Any]:
        """Refund a paid session's charge (in full unless `amount`), as the dashboard does; no webhook."""
        return self._refund_charge(self.charge_of(session_id), amount)

    def dispute(self, session_id: str, status: str = "needs_response") -> dict[str, Any]:
        """Open (or move) the dispute of a paid session's charge; no webhook."""
        charge = self.charge_of(session_id)
        charge["disputed"] = True
        dispute = self.disputes.setdefault(
            f"dp_{session_id[8:]}",
            {
                "id": f"dp_{session_id[8:]}",
                "object": "dispute",
                "amount": charge["amount"],
                "charge": charge["id"],
                "currency": charge["currency"],
                "payment_intent": charge["payment_intent"],
                "reason": "fraudulent",
                "metadata": {},
                "created": int(time.time()),
                "livemode": False,
            },
        )
        dispute["status"] = status
        return dispute

    def expire(self, session_id: str) -> dict[str, Any]:
        session = self.sessions[session_id]
        session.update(status="expired", url=None)
        return session

    def event(self, event_type: str, obj: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        return {
            "id": event_id or f"evt_{next(self._ids):08d}",
            "object": "event",
            "type": event_type,
            "api_version": "2026-10-28.endive",
            "created": int(time.time()),
            "livemode": False,
            "data": {"object": obj},
        }

    def refund_event(self, session_id: str, *, amount_refunded: int | None = None) -> dict[str, Any]:
        session = self.sessions[session_id]
        amount = session["amount_total"]
        refunded = amount if amount_refunded is None else amount_refunded
        charge = {
            "id": f"ch_{session_id[8:]}",
            "object": "charge",
            "amount": amount,
            "amount_refunded": refunded,
            "refunded": refunded >= amount,
            "payment_intent": session["payment_intent"],
        }
        return self.event("charge.refunded", charge)

    def signed(
        self, event: dict[str, Any], *, secret: str | None = None, timestamp: int | None = None
    ) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(
            body, secret or self.webhook_secret, timestamp=timestamp
        )
        return body.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"}

    async def send(self, url: str, event: dict[str, Any], *, times: int = 1, **sign: Any) -> list[int]:
        """Deliver `event` to the webhook `times` times at once (Stripe retries and duplicates)."""
        body, headers = self.signed(event, **sign)
        async with aiohttp.ClientSession() as session:

            async def once() -> int:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    return resp.status

            return list(await asyncio.gather(*(once() for _ in range(times))))

    async def deliver(self, url: str, event_type: str, session_id: str, **kwargs: Any) -> list[int]:
        return await self.send(url, self.event(event_type, dict(self.sessions[session_id])), **kwargs)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> StripeDouble:
        self._runner = web.AppRunner(self.app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> StripeDouble:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
