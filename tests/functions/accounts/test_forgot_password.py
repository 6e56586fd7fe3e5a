"""A forgotten password by e-mail: a real SMTP server (aiosmtpd) receives the reset link."""

from __future__ import annotations

import email
import email.policy
import re

import pytest
from aiosmtpd.controller import Controller

from studio.runtime.settings import Secret
from tests.conftest import free_port
from tests.functions.accounts.conftest import PASSWORD
from tests.support import eventually


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], str]] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content.decode()))
        return "250 OK"


@pytest.fixture
def inbox():
    box = Inbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.url = f"smtp://127.0.0.1:{controller.port}"
    yield box
    controller.stop()


async def test_the_reset_link_arrives_by_mail_and_works_once(make_studio, inbox) -> None:
    studio = await make_studio(smtp_url=Secret(inbox.url), mail_from="studio@example.com")
    browser = studio.browser()
    await browser.signup("forgetful@example.com")

    known = await studio.browser().request("POST", "/api/auth/forgot", {"email": "Forgetful@Example.com"})
    unknown = await studio.browser().request("POST", "/api/auth/forgot", {"email": "nobody@example.com"})
    assert known[0] == unknown[0] == 202 and known[1] == unknown[1], "the answer never says whether it exists"

    await eventually(lambda: inbox.messages, message="the reset e-mail")
    sender, recipients, body = inbox.messages[0]
    assert sender == "studio@example.com" and recipients == ["forgetful@example.com"]
    text = email.message_from_string(body, policy=email.policy.default).get_content()
    link = re.search(r"/account\?reset=([\w-]+)", text)
    assert link is not None, text
    token = link.group(1)

    status, _, _ = await browser.request("POST", "/api/auth/reset", {"token": token, "password": "a new passphrase!"})
    assert status == 200
    assert (await browser.login("forgetful@example.com", PASSWORD))[0] == 401
    assert (await browser.login("forgetful@example.com", "a new passphrase!"))[0] == 200
    assert len(inbox.messages) == 1, "nothing was sent for the unknown e-mail"


async def test_without_a_mail_server_forgot_says_to_ask_the_operator(studio) -> None:
    status, error, _ = await studio.browser().request("POST", "/api/auth/forgot", {"email": "a@example.com"})
    assert status == 409 and error["error"]["code"] == "mail_not_configured", "a setting, not a fault"
    assert "STUDIO_SMTP_URL" in error["error"]["message"] and "reset-link" in error["error"]["message"]
