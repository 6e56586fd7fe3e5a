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


OPERATOR_COOKIE = "studio_operator"
OPERATOR_MAX_AGE_S = 12 * 3600


class OperatorPasses:
    """The operator's console session: a cookie the console gets for the admin token, so pages it opens
    (/api/docs, /health's details) work without an `Authorization` header.

    `studio_operator=<expires, unix seconds>.<HMAC-SHA256 of it and of the admin token's hash>`: HttpOnly,
    SameSite=Strict, 12 hours. Changing STUDIO_ADMIN_TOKEN ends every pass (the token is in the MAC)."""

    def __init__(self, key: bytes, admin_token: str | None) -> None:
        self._key = key
        self._token_hash = hashlib.sha256(admin_token.encode()).hexdigest() if admin_token else None

    def _sign(self, expires: str) -> str:
        mac = hmac.new(self._key, f"operator|{expires}|{self._token_hash}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")

    def issue(self, now: float) -> str:
        expires = str(int(now) + OPERATOR_MAX_AGE_S)
        return f"{expires}.{self._sign(expires)}"

    def verify(self, cookie: str | None, now: float) -> bool:
        if self._token_hash is None or not cookie or "." not in cookie:
            return False
        expires, _, signature = cookie.partition(".")
        if not expires.isdigit() or int(expires) < now:
            return False
        return hmac.compare_digest(signature, self._sign(expires))
