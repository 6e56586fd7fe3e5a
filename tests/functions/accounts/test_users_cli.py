"""`localai-studio users ...` run as the operator runs it (a real process), against a running studio."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.functions.accounts.conftest import PASSWORD
from tests.support import eventually

CLI = str(Path(sys.executable).parent / "localai-studio")


async def users(studio, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env["STUDIO_DATA_DIR"] = str(studio.settings.data_dir)
    if studio.settings.database_url is not None:
        env["STUDIO_DATABASE_URL"] = studio.settings.database_url.url
    env["STUDIO_PUBLIC_URL"] = "https://studio.test"
    proc = await asyncio.create_subprocess_exec(
        CLI, "users", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def token_of(output: str) -> str:
    link = next(line for line in output.splitlines() if line.startswith("https://studio.test/account?reset="))
    return parse_qs(urlsplit(link).query)["reset"][0]


async def test_the_operator_adds_an_account_whose_link_sets_the_password_once(studio) -> None:
    code, out, _ = await users(studio, "add", "Boss@Example.com", "--operator")
    assert code == 0 and "boss@example.com (operator)" in out
    browser = studio.browser()
    token = token_of(out)

    status, _, _ = await browser.request("POST", "/api/auth/reset", {"token": token, "password": PASSWORD})
    assert status == 200
    status, account, _ = await browser.login("boss@example.com")
    assert status == 200 and account["role"] == "operator"
    status, error, _ = await browser.request("POST", "/api/auth/reset", {"token": token, "password": "another one!"})
    assert status == 400 and error["error"]["code"] == "invalid_token", "a link works once"

    code, out, _ = await users(studio, "list")
    assert code == 0 and "boss@example.com\toperator\tactive" in out


async def test_demote_and_disable_take_effect_on_live_sessions(studio) -> None:
    first, second = studio.browser(), studio.browser()
    await first.signup("first@example.com")  # the operator
    await second.signup("second@example.com")
    assert (await first.request("GET", "/api/monitor/stats"))[0] == 200

    assert (await users(studio, "demote", "first@example.com"))[0] == 0
    await eventually(
        lambda: _status(first, "/api/monitor/stats", 401), message="the demotion to reach the gateway's cache"
    )

    assert (await users(studio, "disable", "second@example.com"))[0] == 0
    await eventually(lambda: _status(second, "/api/account", 401), message="the disabled account's session to end")
    assert (await second.login("second@example.com"))[0] == 403

    code, _, err = await users(studio, "promote", "nobody@example.com")
    assert code == 1 and "no account has the e-mail nobody@example.com" in err


async def _status(browser, path: str, expected: int) -> bool:
    return (await browser.request("GET", path))[0] == expected


async def test_a_reset_link_ends_every_session(studio) -> None:
    browser = studio.browser()
    await browser.signup("forgetful@example.com")
    code, out, _ = await users(studio, "reset-link", "forgetful@example.com")
    assert code == 0

    status, _, _ = await studio.browser().request(
        "POST", "/api/auth/reset", {"token": token_of(out), "password": "a brand new passphrase"}
    )
    assert status == 200
    assert (await browser.request("GET", "/api/account"))[0] == 401
    assert (await browser.login("forgetful@example.com", "a brand new passphrase"))[0] == 200
