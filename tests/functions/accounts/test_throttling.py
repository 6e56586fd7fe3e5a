"""Sign-in throttling that slows attackers without locking the owner out, client addresses only from
trusted proxies, password changes throttled like sign-ins, and API keys that end with a password reset
or a "sign out everywhere" that asks for it (issue 21, items 8, 9 and 12)."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

from functions import load
from functions.accounts.handler import ACCOUNTS
from functions.accounts.throttle import FREE_PER_ADDRESS, MAX_WAIT, backoff
from tests.functions.accounts.conftest import PASSWORD


def from_address(address: str) -> dict[str, dict[str, str]]:
    """What nginx on this host sends: the client's address in X-Forwarded-For (the test's peer is loopback,
    a trusted proxy by default)."""
    return {"headers": {"X-Forwarded-For": address}}


async def test_an_attack_from_many_addresses_slows_the_attackers_but_the_owner_still_signs_in(studio) -> None:
    owner = studio.browser()
    await owner.signup("victim@example.com")
    attacker = studio.browser()
    for i in range(10):  # 10 wrong passwords from 10 addresses: what locked the account for 15 minutes
        status, _, _ = await attacker.login("victim@example.com", f"guess {i}", **from_address(f"203.0.113.{i}"))
        assert status == 401, i
    for i in range(10, 20):  # and more from the same addresses, still going
        status, error, headers = await attacker.login(
            "victim@example.com", PASSWORD, **from_address(f"203.0.113.{i % 10}")
        )
        assert status == 429 and error["error"]["code"] == "too_many_attempts", "an address that failed waits"
        assert 1 <= int(headers["Retry-After"]) <= MAX_WAIT.total_seconds()

    status, account, _ = await studio.browser().login("victim@example.com", PASSWORD, **from_address("198.51.100.7"))
    assert status == 200 and account["email"] == "victim@example.com", "an address with no failures gets in"
    status, _, _ = await attacker.login("victim@example.com", "guess 99", **from_address("203.0.113.250"))
    assert status == 401, "a new address gets its one guess (then waits with the others)"
    status, _, _ = await attacker.login("victim@example.com", "guess 100", **from_address("203.0.113.250"))
    assert status == 429


async def test_one_address_gets_a_few_free_failures_then_backs_off(studio) -> None:
    await studio.browser().signup("owner@example.com")
    sprayer = studio.browser()
    statuses = []
    for i in range(FREE_PER_ADDRESS + 1):  # different accounts: the address's own count
        status, _, headers = await sprayer.login(f"user{i}@example.com", "guess", **from_address("192.0.2.9"))
        statuses.append(status)
    assert statuses == [401] * FREE_PER_ADDRESS + [429]
    assert headers["Retry-After"] == "1"
    status, _, _ = await sprayer.login("owner@example.com", PASSWORD, **from_address("192.0.2.9"))
    assert status == 429, "even a right password waits from an address that is backing off"
    assert (await studio.browser().login("owner@example.com", PASSWORD, **from_address("192.0.2.10")))[0] == 200


def test_the_backoff_doubles_from_one_second_to_at_most_fifteen_minutes() -> None:
    assert [backoff(n, 5) for n in range(4, 9)] == [timedelta(seconds=s) for s in (0, 1, 2, 4, 8)]
    assert backoff(15, 5) == backoff(500, 5) == MAX_WAIT == timedelta(minutes=15)


async def test_x_forwarded_for_from_a_peer_that_is_not_a_trusted_proxy_is_ignored(make_studio) -> None:
    studio = await make_studio(trusted_proxies=(ipaddress.ip_network("10.255.255.254/32"),))
    await studio.browser().signup("someone@example.com")
    rotating = studio.browser()
    statuses = []
    for i in range(FREE_PER_ADDRESS + 1):  # a new address named on every attempt: they are all the peer's
        status, _, _ = await rotating.login(f"x{i}@example.com", "guess", **from_address(f"198.51.100.{i}"))
        statuses.append(status)
    assert statuses == [401] * FREE_PER_ADDRESS + [429], "rotating the header does not dodge the limit"


async def test_wrong_current_passwords_on_a_password_change_are_throttled_like_sign_ins(studio) -> None:
    holder = studio.browser()  # holds a session (a stolen cookie), not the password
    await holder.signup("changer@example.com")
    statuses = []
    for i in range(FREE_PER_ADDRESS + 1):
        status, _, headers = await holder.request(
            "POST", "/api/account/password", {"current": f"guess {i}", "new": "a brand new passphrase"}
        )
        statuses.append(status)
    assert statuses == [403] * FREE_PER_ADDRESS + [429] and int(headers["Retry-After"]) >= 1
    status, _, _ = await holder.request(
        "POST", "/api/account/password", {"current": PASSWORD, "new": "a brand new passphrase"}
    )
    assert status == 429, "the right one waits too, so guessing costs time"


async def make_key(browser) -> dict[str, str]:
    status, created, _ = await browser.request("POST", "/api/account/keys", {"name": "laptop"})
    assert status == 201
    return {"Authorization": f"Bearer {created['key']}"}


async def test_a_password_reset_revokes_the_api_keys_and_says_so(studio) -> None:
    owner = studio.browser()
    _, account = await owner.signup("reset@example.com")
    key = await make_key(owner)
    machine = studio.browser()
    assert (await machine.request("GET", "/v1/models", headers=key))[0] == 200
    accounts = load("accounts")
    async with accounts.db.transaction() as tx:
        token = await accounts[ACCOUNTS].create_reset(tx, account["id"])

    status, done, _ = await studio.browser().request(
        "POST", "/api/auth/reset", {"token": token, "password": "a new passphrase!"}
    )
    assert status == 200 and done["keys_revoked"] == 1 and done["sessions_ended"] == 1, done
    assert "revoked" in done["message"]
    status, error, _ = await machine.request("GET", "/v1/models", headers=key)
    assert status == 401 and error["error"]["code"] == "invalid_api_key"
    assert (await owner.request("GET", "/api/account"))[0] == 401


async def test_sign_out_everywhere_revokes_the_keys_only_when_asked(studio) -> None:
    browser = studio.browser()
    await browser.signup("leaving@example.com")
    key = await make_key(browser)
    machine = studio.browser()
    assert (await browser.request("POST", "/api/auth/logout?everywhere=1"))[0] == 204
    assert (await machine.request("GET", "/v1/models", headers=key))[0] == 200, "keys stay unless asked"

    await browser.login("leaving@example.com")
    assert (await browser.request("POST", "/api/auth/logout?everywhere=1&keys=1"))[0] == 204
    status, error, _ = await machine.request("GET", "/v1/models", headers=key)
    assert status == 401 and error["error"]["code"] == "invalid_api_key"
