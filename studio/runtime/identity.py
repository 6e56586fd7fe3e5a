"""Who is asking: the visitor's user id and whether they are the operator.

Only the gateway decides this (signed visitor cookie, admin bearer token). In-process it stores an
`Identity` on the request; over HTTP it sends the `X-Studio-*` headers below after stripping any a
client sent, and the function's middleware turns them back into an `Identity`.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from studio.runtime.errors import Forbidden, Unauthorized

USER_HEADER = "X-Studio-User"
ADMIN_HEADER = "X-Studio-Admin"
IDENTITY_HEADERS = (USER_HEADER, ADMIN_HEADER)


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str | None = None
    admin: bool = False


ANONYMOUS = Identity()
IDENTITY_KEY = web.RequestKey("identity", Identity)


def identity(request: web.Request) -> Identity:
    found: Identity = request.get(IDENTITY_KEY, ANONYMOUS)
    return found


def from_headers(request: web.Request) -> Identity:
    return Identity(user_id=request.headers.get(USER_HEADER) or None, admin=request.headers.get(ADMIN_HEADER) == "1")


def to_headers(who: Identity) -> dict[str, str]:
    headers = {}
    if who.user_id:
        headers[USER_HEADER] = who.user_id
    if who.admin:
        headers[ADMIN_HEADER] = "1"
    return headers


def require_visitor(request: web.Request) -> str:
    who = identity(request)
    if not who.user_id:
        raise Unauthorized("no visitor session; load the site first to get one", code="no_session")
    return who.user_id


def require_admin(request: web.Request) -> Identity:
    who = identity(request)
    if not who.admin:
        raise Forbidden("operator only: send Authorization: Bearer $STUDIO_ADMIN_TOKEN", code="admin_only")
    return who
