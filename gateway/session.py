"""Visitor sessions: a signed cookie carrying a random user id, issued on the first visit.

`studio_visitor=<user id>.<HMAC-SHA256 of it, base64url>`: HttpOnly, SameSite=Lax, Secure when the
visitor came over HTTPS. A cookie whose signature does not verify is ignored (a new id is issued).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

COOKIE = "studio_visitor"
MAX_AGE_S = 365 * 86400


class Sessions:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _sign(self, user_id: str) -> str:
        mac = hmac.new(self._key, user_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:18]).decode().rstrip("=")

    def issue(self) -> tuple[str, str]:
        """A new visitor: (user id, cookie value)."""
        user_id = "v_" + secrets.token_hex(12)
        return user_id, f"{user_id}.{self._sign(user_id)}"

    def verify(self, cookie: str | None) -> str | None:
        if not cookie or "." not in cookie:
            return None
        user_id, _, signature = cookie.rpartition(".")
        if not user_id.startswith("v_") or len(user_id) > 64:
            return None
        return user_id if hmac.compare_digest(signature, self._sign(user_id)) else None
