"""E-mail for the accounts function: the password reset link, through the operator's SMTP server
(STUDIO_SMTP_URL: `smtp://user:pass@host:587` uses STARTTLS when the server offers it, `smtps://` TLS
from the start), with aiosmtplib."""

from __future__ import annotations

from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import aiosmtplib


class Mailer:
    def __init__(self, url: str, sender: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("STUDIO_SMTP_URL must look like smtp://user:pass@host:587 or smtps://host:465")
        self.host = parts.hostname
        self.tls = parts.scheme == "smtps"
        self.port = parts.port or (465 if self.tls else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.sender = sender

    async def send_reset_link(self, to: str, link: str) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = "Choose a new password for Local AI Studio"
        message.set_content(
            "Someone (we hope you) asked to reset the password of your Local AI Studio account.\n\n"
            f"Open this link within an hour to choose a new one (it works once):\n{link}\n\n"
            "If it was not you, ignore this e-mail: your password stays as it is.\n"
        )
        await aiosmtplib.send(
            message,
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.tls,
            start_tls=None if not self.tls else False,
            timeout=30,
        )
