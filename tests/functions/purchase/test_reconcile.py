"""Reconciliation with Stripe: each kind of difference found and repaired through events; a second
run finds nothing; the CLI's exit code and JSON report; the studio's own periodic run."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from tests.functions.pipeline import OPERATOR, OPERATOR_TOKEN, Studio, start_studio
from tests.support import Recorder, eventually

CLI = Path(sys.executable).parent / "localai-studio"


async def reconcile(studio: Studio, *, fix: bool, since: str = "7d") -> dict:
    resp = await studio.client.post("/api/purchases/reconcile", json={"since": since, "fix": fix}, headers=OPERATOR)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def open_checkout(studio: Studio, model: str) -> tuple[str, str]:
    body = await (await studio.client.post(f"/api/models/purchase/{model}")).json()
    return body["purchase_id"], body["checkout_url"].rsplit("/", 1)[1]


async def bought(studio: Studio, model: str) -> tuple[str, str]:
    """Paid, confirmed by the webhook, installed."""
    purchase_id, session_id = await open_checkout(studio, model)
    studio.stripe.pay(session_id)
    await studio.stripe.deliver(studio.url("/api/webhooks/stripe"), "checkout.session.completed", session_id)
    await studio.wait_for_event("install.completed", model)
    return purchase_id, session_id


async def settled(studio: Studio) -> None:
    await eventually(
        lambda: studio.idle("purchase__settle_payment", "install__install_model"),
        timeout=20,
        message="every consumer idle",
    )


async def test_each_difference_is_found_repaired_through_events_and_a_second_run_finds_nothing(studio) -> None:
    studio.ollama.pull_speed = 0  # no pull is watched here: installs complete at once
    paid_id, paid_session = await open_checkout(studio, "llama3.2:1b")
    studio.stripe.pay(paid_session)  # paid at Stripe, the webhook never came
    refunded_id, refunded_session = await bought(studio, "llama3.2:3b")
    studio.stripe.refund(refunded_session)  # refunded in the dashboard, the webhook lost
    lost_id, lost_session = await bought(studio, "phi3:mini")
    studio.stripe.dispute(lost_session, "lost")
    open_id, open_session = await bought(studio, "mistral:7b")
    studio.stripe.dispute(open_session, "needs_response")
    expired_id, expired_session = await open_checkout(studio, "codellama:7b")
    studio.stripe.expire(expired_session)
    studio.ollama.fail_next_pulls("tinyllama:latest", error="write /root/.ollama/models/blobs: no space left on device")
    await studio.client.post("/api/models/purchase/tinyllama:latest")
    failed = await studio.wait_for_event("install.failed", "tinyllama:latest")
    assert failed[0].data["will_retry"] is False
    await settled(studio)

    found = await reconcile(studio, fix=False)

    kinds = sorted((d["kind"], d["purchase_id"] or d["model"]) for d in found["differences"])
    assert kinds == sorted(
        [
            ("paid_not_owned", paid_id),
            ("refunded_but_owned", refunded_id),
            ("dispute_not_applied", lost_id),
            ("dispute_not_applied", open_id),
            ("pending_past_expiry", expired_id),
            ("owned_not_installed", "tinyllama:latest"),
        ]
    )
    assert found["remaining"] == 6 and found["fixed"] == 0
    assert found["checked"]["studio_checkout_sessions"] == 5
    assert studio.of_type("purchase.revoked") == [], "a report alone changes nothing"

    operator_events = Recorder()
    await studio.bus.listen("operator.*", operator_events)
    fixed = await reconcile(studio, fix=True)

    assert (fixed["found"], fixed["fixed"], fixed["remaining"]) == (6, 6, 0)
    await studio.wait_for_event("install.completed", "llama3.2:1b")
    await studio.wait_for_event("install.completed", "tinyllama:latest")
    revoked = {
        e.data["purchase_id"]: e.data["reason"] for e in await studio.wait_for_event("purchase.revoked", count=2)
    }
    assert revoked == {refunded_id: "refunded", lost_id: "dispute lost"}
    assert (await studio.wait_for_event("purchase.suspended"))[0].data["purchase_id"] == open_id
    assert (await studio.wait_for_event("purchase.failed"))[0].data["purchase_id"] == expired_id
    assert {e.data["stripe_event_id"] for e in studio.of_type("payment.succeeded")} >= {f"reconcile_{paid_session}"}
    owned = {m["id"]: m["owned"] for m in (await (await studio.client.get("/api/models")).json())["models"]}
    assert owned["llama3.2:1b"] and owned["tinyllama:latest"]
    assert not (owned["llama3.2:3b"] or owned["phi3:mini"] or owned["mistral:7b"] or owned["codellama:7b"])
    await settled(studio)
    events_before = len(studio.events.items)
    stream_before = (await studio.bus.jetstream_info())["messages"]

    again = await reconcile(studio, fix=True)

    assert (again["found"], again["remaining"]) == (0, 0), again["differences"]
    runs = await eventually(lambda: len(operator_events.items) >= 2 and operator_events.items, message="both runs")
    assert [(e.type, e.data["found"], e.data["fixed"]) for e in runs] == [
        ("operator.reconciled", 6, 6),
        ("operator.reconciled", 0, 0),
    ]
    # the second run repaired nothing: the only new event in the stream says it ran
    assert (await studio.bus.jetstream_info())["messages"] == stream_before + 1
    assert len(studio.events.items) == events_before


async def test_reconcile_walks_every_page_of_stripes_lists(studio) -> None:
    sessions = [(await open_checkout(studio, "llama3.2:1b"))[1]]
    for n in range(104):  # more than one page (100) of someone else's sessions
        studio.stripe.sessions[f"cs_test_foreign_{n:04d}"] = {
            **studio.stripe.sessions[sessions[0]],
            "id": f"cs_test_foreign_{n:04d}",
            "metadata": {},
            "client_reference_id": None,
        }
    studio.stripe.pay(sessions[0])

    report = await reconcile(studio, fix=False)

    assert report["checked"]["checkout_sessions"] == 105
    assert [d["kind"] for d in report["differences"]] == ["paid_not_owned"]
    pages = [q for url, q in studio.stripe.list_requests if url == "/v1/checkout/sessions"]
    assert len(pages) == 2 and "starting_after" in pages[1]


async def test_bad_periods_are_400_and_visitors_are_refused(studio) -> None:
    bad = await studio.client.post("/api/purchases/reconcile", json={"since": "forever"}, headers=OPERATOR)
    assert bad.status == 400 and (await bad.json())["error"]["code"] == "invalid_since"
    too_long = await studio.client.post("/api/purchases/reconcile", json={"since": "400d"}, headers=OPERATOR)
    assert too_long.status == 400
    visitor = await studio.client.post("/api/purchases/reconcile", json={"since": "7d"})
    assert visitor.status in (401, 403)


async def run_cli(studio: Studio, *args: str) -> tuple[int, dict]:
    env = {**os.environ, "STUDIO_ADMIN_TOKEN": OPERATOR_TOKEN}
    proc = await asyncio.create_subprocess_exec(
        str(CLI),
        "reconcile",
        "--url",
        studio.url("/"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, json.loads(out) if out.strip() else {"stderr": err.decode()}


async def test_the_cli_prints_a_json_report_and_its_exit_code_says_what_is_left(studio) -> None:
    studio.ollama.pull_speed = 0  # no pull is watched here: installs complete at once
    _, session = await open_checkout(studio, "llama3.2:1b")
    studio.stripe.pay(session)

    code, report = await run_cli(studio, "--since", "2d")
    assert code == 1 and report["remaining"] == 1 and report["differences"][0]["kind"] == "paid_not_owned"

    code, report = await run_cli(studio, "--fix")
    assert code == 0 and report["fixed"] == 1
    await studio.wait_for_event("install.completed", "llama3.2:1b")
    await settled(studio)

    code, report = await run_cli(studio)
    assert code == 0 and report["found"] == 0


async def test_the_studio_reconciles_by_itself(embedded_studio, settings, ollama, stripe_api, bus) -> None:
    studio = await start_studio(embedded_studio, settings, ollama, stripe_api, bus, reconcile_every_h=0.0003)
    purchase_id, session = await open_checkout(studio, "phi3:mini")
    studio.stripe.pay(session)

    completed = await studio.wait_for_event("purchase.completed", "phi3:mini", timeout=20)

    assert completed[0].data["purchase_id"] == purchase_id
    assert studio.of_type("payment.succeeded")[0].data["stripe_event_id"] == f"reconcile_{session}"
