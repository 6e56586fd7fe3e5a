"""Who is asking: the visitor or account, how they proved it, and whether they are the operator.

Only the gateway decides this (signed visitor cookie, account session cookie, personal API key, admin
bearer token). In-process it stores an `Identity` on the request; over HTTP it sends the `X-Studio-*`
headers below after stripping any a client sent, and the function's middleware turns them back into
an `Identity`.

`user_id` is whom purchases and chats belong to: the account id when signed in (or calling with a
key), else the anonymous visitor's id. `visitor_id` is the browser's visitor cookie either way (the
accounts function merges it into the account at sign-up or sign-in).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from studio.runtime.errors import Forbidden, Unauthorized

SESSION_COOKIE = "studio_session"  # a signed-in browser: a random id; the accounts function keeps its hash
EVICT_HEADER = "X-Studio-Evict"  # accounts -> gateway: forget the cached credentials of this account now
USER_HEADER = "X-Studio-User"
ADMIN_HEADER = "X-Studio-Admin"
ACCOUNT_HEADER = "X-Studio-Account"
KEY_HEADER = "X-Studio-Key"
ROLE_HEADER = "X-Studio-Role"
VISITOR_HEADER = "X-Studio-Visitor"
EMAIL_HEADER = "X-Studio-Email"
SESSION_HEADER = "X-Studio-Session"
IDENTITY_HEADERS = (
    USER_HEADER,
    ADMIN_HEADER,
    ACCOUNT_HEADER,
    KEY_HEADER,
    ROLE_HEADER,
    VISITOR_HEADER,
    EMAIL_HEADER,
    SESSION_HEADER,
)


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str | None = None
    admin: bool = False
    account_id: str | None = None  # signed in (session) or calling with a personal API key
    key_id: str | None = None  # the API key used, if any
    role: str | None = None  # the account's role: user | operator
    visitor_id: str | None = None  # the anonymous visitor cookie, when the browser has one
    email: str | None = None
    session_id: str | None = None  # the hash of the session in use (so logout can end exactly it)


ANONYMOUS = Identity()
IDENTITY_KEY = web.RequestKey("identity", Identity)


def identity(request: web.Request) -> Identity:
    found: Identity = request.get(IDENTITY_KEY, ANONYMOUS)
    return found


def from_headers(request: web.Request) -> Identity:
    h = request.headers
    if ACCOUNT_HEADER not in h and VISITOR_HEADER not in h:  # the common case: a visitor, or nobody
        return Identity(user_id=h.get(USER_HEADER) or None, admin=h.get(ADMIN_HEADER) == "1")
    return Identity(
        user_id=h.get(USER_HEADER) or None,
        admin=h.get(ADMIN_HEADER) == "1",
        account_id=h.get(ACCOUNT_HEADER) or None,
        key_id=h.get(KEY_HEADER) or None,
        role=h.get(ROLE_HEADER) or None,
        visitor_id=h.get(VISITOR_HEADER) or None,
        email=h.get(EMAIL_HEADER) or None,
        session_id=h.get(SESSION_HEADER) or None,
    )


def to_headers(who: Identity) -> dict[str, str]:
    headers = {}
    if who.user_id:
        headers[USER_HEADER] = who.user_id
    if who.admin:
        headers[ADMIN_HEADER] = "1"
    for name, value in (
        (ACCOUNT_HEADER, who.account_id),
        (KEY_HEADER, who.key_id),
        (ROLE_HEADER, who.role),
        (VISITOR_HEADER, who.visitor_id),
        (EMAIL_HEADER, who.email),
        (SESSION_HEADER, who.session_id),
    ):
        if value:
            headers[name] = value
    return headers


def require_visitor(request: web.Request) -> str:
    who = identity(request)
    if not who.user_id:
        raise Unauthorized("no visitor session; load the site first to get one", code="no_session")
    return who.user_id


def require_account(request: web.Request) -> Identity:
    """A signed-in account (session cookie), else 401."""
    who = identity(request)
    if not who.account_id:
        raise Unauthorized("sign in first (POST /api/auth/login)", code="not_signed_in")
    return who


def require_admin(request: web.Request) -> Identity:
    who = identity(request)
    if not who.admin:
        raise Forbidden("operator only: send Authorization: Bearer $STUDIO_ADMIN_TOKEN", code="admin_only")
    return who
