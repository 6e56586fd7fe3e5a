"""Accounts: sign-up, sign-in, sessions that really end, brute-force limits, and purchases that follow
the person from an anonymous browser to every device."""

from __future__ import annotations

import asyncio
import time

from yarl import URL

from functions import load
from studio.runtime.settings import Secret
from tests.functions.accounts.conftest import FREE, OPERATOR_TOKEN, OTHER_PAID, PAID, PASSWORD
from tests.support import eventually


async def test_anonymous_purchase_follows_the_account_to_a_second_device_that_can_chat_with_it(studio) -> None:
    phone, laptop = studio.browser(), studio.browser()
    await phone.visit()
    status, body, _ = await phone.request("POST", f"/api/models/purchase/{PAID}")
    assert status == 200 and body["owned"] is True
    assert await eventually(lambda: phone.chat(PAID), message="chat to learn the purchase")

    status, account = await phone.signup("Ada@Example.com ")
    assert status == 201 and account["email"] == "ada@example.com" and account["role"] == "operator"

    assert PAID not in await laptop.owned(), "another browser owns nothing before signing in"
    status, _, _ = await laptop.login("ada@example.com")
    assert status == 200
    assert await eventually(lambda: _owns(laptop, PAID), message="the purchase to move into the account")
    status, answer = await eventually(lambda: _chat_ok(laptop, PAID), message="chat to follow the move")
    assert status == 200 and answer["response"]
    assert PAID in await phone.owned(), "the first browser, now signed in, still owns it"

    rows = await load("purchase").db.fetch_all("SELECT user_id FROM purchases")
    assert [r["user_id"] for r in rows] == [account["id"]]


async def _owns(browser, model: str) -> bool:
    return model in await browser.owned()


async def _chat_ok(browser, model: str):
    status, body = await browser.chat(model)
    return (status, body) if status == 200 else None


async def test_signup_then_account_then_logout_ends_the_session(studio) -> None:
    browser = studio.browser()
    status, created = await browser.signup("grace@example.com")
    assert status == 201

    status, me, _ = await browser.request("GET", "/api/account")
    assert status == 200 and me["email"] == "grace@example.com" and me["id"] == created["id"] and me["created"]
    stolen = browser.session.cookie_jar.filter_cookies(URL(studio.url("/")))["studio_session"].value

    status, _, _ = await browser.request("POST", "/api/auth/logout")
    assert status == 204
    assert (await browser.request("GET", "/api/account"))[0] == 401
    replay = await browser.request("GET", "/api/account", headers={"Cookie": f"studio_session={stolen}"})
    assert replay[0] == 401, "a logged-out session does not come back with its old cookie"


async def test_password_change_ends_every_other_session_and_logout_everywhere_ends_all(studio) -> None:
    a, b, c = studio.browser(), studio.browser(), studio.browser()
    await a.signup("linus@example.com")
    await b.login("linus@example.com")
    await c.login("linus@example.com")
    assert (await b.request("GET", "/api/account"))[0] == 200

    status, _, _ = await a.request(
        "POST", "/api/account/password", {"current": PASSWORD, "new": "a much better passphrase"}
    )
    assert status == 204
    assert (await a.request("GET", "/api/account"))[0] == 200, "the session that changed it stays"
    assert (await b.request("GET", "/api/account"))[0] == 401
    assert (await b.login("linus@example.com"))[0] == 401, "the old password no longer works"
    assert (await b.login("linus@example.com", "a much better passphrase"))[0] == 200

    assert (await a.request("POST", "/api/auth/logout?everywhere=1"))[0] == 204
    assert (await a.request("GET", "/api/account"))[0] == 401
    assert (await b.request("GET", "/api/account"))[0] == 401


async def test_bad_signups_are_refused_and_change_nothing(studio) -> None:
    browser = studio.browser()
    for body, code in (
        ({"email": "not-an-address", "password": PASSWORD}, "invalid_email"),
        ({"email": "x@example.com", "password": "short"}, "weak_password"),
        ({"email": "same.as.mail@example.com", "password": "Same.As.Mail@example.com"}, "weak_password"),
        ({"email": "x@example.com"}, "invalid_password"),
    ):
        status, error, _ = await browser.request("POST", "/api/auth/signup", body)
        assert status == 400 and error["error"]["code"] == code, (body, error)
    assert await load("accounts").db.fetch_all("SELECT * FROM accounts") == []
    await browser.signup("x@example.com")
    status, error = await studio.browser().signup("X@example.com")
    assert status == 409 and error["error"]["code"] == "email_taken"


async def test_only_the_first_account_is_the_operator_and_an_operator_session_has_its_powers(studio) -> None:
    first, second = studio.browser(), studio.browser()
    assert (await first.signup("op@example.com"))[1]["role"] == "operator"
    assert (await second.signup("user@example.com"))[1]["role"] == "user"

    assert (await first.request("DELETE", f"/api/models/{FREE}"))[0] in (200, 202, 204)
    assert (await second.request("DELETE", f"/api/models/{FREE}"))[0] == 401


async def test_closed_signup_and_no_first_operator_when_turned_off(make_studio) -> None:
    closed = await make_studio(signup="closed")
    status, error = await closed.browser().signup("a@example.com")
    assert status == 403 and error["error"]["code"] == "signup_closed"


async def test_first_user_is_not_the_operator_when_the_setting_is_off(make_studio) -> None:
    studio = await make_studio(first_user_is_operator=False)
    assert (await studio.browser().signup("a@example.com"))[1]["role"] == "user"


async def test_wrong_passwords_are_limited_with_retry_after_and_unknown_emails_answer_the_same(studio) -> None:
    browser = studio.browser()
    await browser.signup("target@example.com")
    attacker = studio.browser()

    known = await attacker.login("target@example.com", "wrong password 0")
    unknown = await attacker.login("nobody@example.com", "wrong password 0")
    assert known[0] == unknown[0] == 401 and known[1] == unknown[1], "the answer never says whether it exists"

    for i in range(1, 4):  # five failures from this address now: the last free ones
        assert (await attacker.login("target@example.com", f"wrong password {i}"))[0] == 401
    status, error, headers = await attacker.login("target@example.com", PASSWORD)
    assert status == 429 and error["error"]["code"] == "too_many_attempts"
    assert 1 <= int(headers["Retry-After"]) <= 15 * 60


async def test_unknown_and_known_emails_cost_about_the_same_work(studio) -> None:
    await studio.browser().signup("timing@example.com")
    browser = studio.browser()

    attempts = iter(range(100))

    async def work(email: str) -> float:
        """The CPU the studio (in this process, its hashing thread included) spent on one refused sign-in:
        the work an answer costs, which the machine's load does not change as it changes the wall time."""
        address = {"X-Forwarded-For": f"192.0.2.{next(attempts)}"}  # each its own: no backoff in the figures
        started = time.process_time()
        status, _, _ = await browser.login(email, "not the password", headers=address)
        assert status == 401
        return time.process_time() - started

    known = sorted([await work("timing@example.com") for _ in range(3)])[1]
    unknown = sorted([await work(f"ghost{i}@example.com") for i in range(3)])[1]
    # An unknown e-mail is hashed against a dummy: never the near-instant answer a lookup alone gives.
    assert unknown > known / 3, (known, unknown)


async def test_api_keys_work_on_v1_only_never_on_account_or_purchase_routes(studio) -> None:
    browser = studio.browser()
    await browser.signup("keys@example.com")
    status, created, _ = await browser.request("POST", "/api/account/keys", {"name": "laptop"})
    assert status == 201 and created["key"].startswith("sk-studio-") and created["name"] == "laptop"
    key = {"Authorization": f"Bearer {created['key']}"}
    machine = studio.browser()

    status, models, _ = await machine.request("GET", "/v1/models", headers=key)
    assert status == 200 and models["object"] == "list"
    for method, path in (
        ("GET", "/api/account"),
        ("GET", "/api/account/keys"),
        ("POST", f"/api/models/purchase/{FREE}"),
    ):
        status, error, _ = await machine.request(method, path, headers=key)
        assert status == 403 and error["error"]["code"] == "key_not_allowed", (path, error)

    status, listed, _ = await browser.request("GET", "/api/account/keys")
    assert [k["id"] for k in listed["keys"]] == [created["id"]] and "key" not in listed["keys"][0]
    assert listed["keys"][0]["prefix"] == created["key"][:14] and listed["keys"][0]["last_used"]

    assert (await browser.request("DELETE", f"/api/account/keys/{created['id']}"))[0] == 204
    status, error, _ = await machine.request("GET", "/v1/models", headers=key)
    assert status == 401 and error["error"]["code"] == "invalid_api_key"
    assert (await browser.request("DELETE", f"/api/account/keys/{created['id']}"))[0] == 404


async def test_chat_without_a_session_or_key_is_a_401(studio) -> None:
    status, error, _ = await studio.browser().request("POST", "/api/chat", {"model": FREE, "message": "Hi"})
    assert status == 401 and error["error"]["code"] == "no_session"


async def test_many_logins_in_parallel_do_not_block_each_other(studio) -> None:
    await studio.browser().signup("busy@example.com")
    results = await asyncio.gather(*(studio.browser().login("busy@example.com") for _ in range(4)))
    assert [r[0] for r in results] == [200] * 4


async def test_an_open_checkout_moves_into_the_account_and_completes_there(make_studio, stripe_api) -> None:
    studio = await make_studio(
        skip_payment=False,
        stripe_api_base=stripe_api.url,
        stripe_secret_key=Secret(stripe_api.api_key),
        stripe_webhook_secret=Secret(stripe_api.webhook_secret),
    )
    browser = studio.browser()
    await browser.visit()
    status, checkout, _ = await browser.request("POST", f"/api/models/purchase/{PAID}")
    assert status == 200 and checkout["status"] == "checkout"
    assert "customer_email" not in stripe_api.create_requests[-1], "an anonymous buyer has no e-mail to give"

    status, account = await browser.signup("payer@example.com")
    assert status == 201
    await eventually(lambda: _purchase_owner(checkout["purchase_id"], account["id"]), message="the checkout to move")
    status, _, _ = await browser.request("POST", f"/api/models/purchase/{OTHER_PAID}")
    assert stripe_api.create_requests[-1]["customer_email"] == "payer@example.com"

    session_id = checkout["checkout_url"].rsplit("/", 1)[1]
    stripe_api.pay(session_id)
    assert await stripe_api.deliver(studio.url("/api/webhooks/stripe"), "checkout.session.completed", session_id) == [
        200
    ]
    assert await eventually(lambda: _owns(browser, PAID), message="the paid checkout to complete on the account")
    other = studio.browser()
    await other.login("payer@example.com")
    assert PAID in await other.owned()


async def _purchase_owner(purchase_id: str, owner: str) -> bool:
    row = await load("purchase").db.fetch_one("SELECT user_id FROM purchases WHERE id = ?", (purchase_id,))
    return row is not None and row["user_id"] == owner


async def test_the_operators_purchase_search_shows_an_account_buyer_by_e_mail(studio) -> None:
    buyer = studio.browser()
    await buyer.visit()
    assert (await buyer.signup("shows@example.com"))[0] == 201
    status, bought, _ = await buyer.request("POST", f"/api/models/purchase/{PAID}")
    assert status == 200
    operator = studio.browser()
    auth = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}

    status, found, _ = await operator.request("GET", "/api/purchases?all=1", headers=auth)

    row = next(p for p in found["purchases"] if p["id"] == bought["purchase_id"])
    assert status == 200 and row["user_id"].startswith("acc_")
    assert row["email"] == "shows@example.com"  # asked of accounts (accounts.emails), not copied into purchases
