"""accounts: people, their sessions and personal API keys. What they bought follows them everywhere.

HTTP    POST   /api/auth/signup {"email", "password"}   -> 201 the account, signed in (session cookie)
        POST   /api/auth/login  {"email", "password"}   -> 200 the account, signed in; 401 / 429 Retry-After
                                                           (throttle.py: backoff per address and account)
        POST   /api/auth/logout[?everywhere=1[&keys=1]] -> 204 this session (or every one, and the API keys) ended
        POST   /api/auth/forgot {"email"}               -> 202 whether or not the account exists (the account
                                                           gets a reset link by e-mail); 409 without STUDIO_SMTP_URL
        POST   /api/auth/reset  {"token", "password"}   -> 200 {"sessions_ended", "keys_revoked", "message"}: every
                                                           session and API key ended (a reset link's token, from
                                                           the e-mail or `localai-studio users reset-link`)
        GET    /api/auth/session                        -> {"account": {...} | null} (for pages: never a 401)
        GET    /api/account                             -> {"id", "email", "role", "created"} or 401
        POST   /api/account/password {"current", "new"} -> 204, every other session ended; 429 like sign-ins
        POST   /api/account/keys {"name"}               -> 201 {"id", "name", "prefix", "key"} (shown once)
        GET    /api/account/keys                        -> {"keys": [{"id", "name", "prefix", "created", "last_used"}]}
        DELETE /api/account/keys/{key_id}               -> 204, the key stops working at once everywhere
Events  emits    account.created, account.merged (with the session that merges), account.access_changed
Query   credentials.resolve {"session": sha256} | {"key": sha256} -> {"account_id", "role", "email", "key_id"} | {}
        accounts.emails {"account_ids": [...]} -> {"emails": {account_id: email}} (the console shows buyers
                                                   by e-mail; at most 500 ids a query)

Sessions are rows (the cookie carries a random id, the table its SHA-256): logging out, changing the
password or disabling the account really ends them. The gateway caches what `credentials.resolve`
answers and forgets it on `account.access_changed` (and at once on the replica that served the change,
through the X-Studio-Evict response header).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiosmtplib
from aiohttp import web

from events.catalog import AccountAccessChanged, AccountCreated, AccountMerged
from functions.accounts.contract import Account as AccountAnswer
from functions.accounts.contract import (
    CreatedKey,
    Credentials,
    ForgotRequest,
    KeyList,
    LogoutQuery,
    NewKey,
    PasswordChange,
    PasswordReset,
    ResetRequest,
    Sent,
    SessionAnswer,
)
from functions.accounts.mail import Mailer
from functions.accounts.passwords import check_strength, hash_password, prepare, verify_password
from functions.accounts.store import SESSION_IDLE, Account, Accounts, normalise_email
from functions.accounts.throttle import Attempt, SignInThrottle
from studio.runtime.addresses import client_address
from studio.runtime.database import Transaction
from studio.runtime.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
)
from studio.runtime.function import Function, Key
from studio.runtime.identity import EVICT_HEADER, SESSION_COOKIE, Identity, identity, require_account
from studio.runtime.routes import KIB

function = Function(
    "accounts",
    migrations=Path(__file__).parent / "migrations",
    publishes=("account.created", "account.merged", "account.access_changed"),
)

ACCOUNTS = Key[Accounts]("accounts")
MAX_EMAIL_LOOKUP = 500
MAILER = Key[Mailer | None]("mailer")
MAILS = Key[set]("mails")  # reset e-mails being sent
THROTTLE = Key[SignInThrottle]("throttle")
MAX_KEY_NAME = 100


@function.resource
async def dependencies(fn: Function):
    fn[ACCOUNTS] = Accounts(fn.db)
    fn[THROTTLE] = SignInThrottle(fn.db)
    s = fn.settings
    sender = s.mail_from or f"Local AI Studio <no-reply@{urlsplit(s.visitor_url).hostname or 'localhost'}>"
    fn[MAILER] = Mailer(s.smtp_url.get(), sender) if s.smtp_url else None
    mails: set[asyncio.Task[None]] = set()
    fn[MAILS] = mails
    await prepare()  # the dummy hash a missing account's sign-in is checked against
    yield
    if mails:
        await asyncio.wait(mails, timeout=10)


def attempt_on(request: web.Request, email: str) -> Attempt:
    return Attempt(email, client_address(request, function.settings.trusted_proxies))


def signed_in(request: web.Request, account: Account, token: str, status: int) -> web.Response:
    response = web.json_response(account.public(), status=status)
    secure = request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(SESSION_IDLE.total_seconds()),
        path="/",
        httponly=True,
        samesite="Lax",
        secure=secure,
    )
    return response


def signed_out(status: int = 204) -> web.Response:
    response = web.Response(status=status)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


def credentials(body: Credentials) -> tuple[str, str]:
    email = normalise_email(body.email)
    if not body.password:
        raise BadRequest("password is required", code="invalid_password")
    return email, body.password


async def open_session(tx: Transaction, account: Account, who: Identity) -> str:
    """A session for `account`; the visitor's purchases become the account's in the same transaction."""
    token = await function[ACCOUNTS].open_session(tx, account.id)
    visitor = who.visitor_id or (who.user_id if not who.account_id else None)
    if visitor and visitor != account.id:
        await tx.publish(function.event(AccountMerged(account_id=account.id, visitor_id=visitor)))
    return token


@function.route(
    "POST",
    "/api/auth/signup",
    summary="Create an account and sign in (the visitor's purchases move into it)",
    body=Credentials,
    response=AccountAnswer,
    status=201,
    errors=(403, 409, 429),
    timeout=10,
    max_body=8 * KIB,
)
async def signup(request: web.Request, body: Credentials) -> web.Response:
    settings = function.settings
    if settings.signup != "open":
        raise Forbidden("sign-up is closed on this studio: ask its operator for an account", code="signup_closed")
    email, password = credentials(body)
    check_strength(password, email)
    password_hash = await hash_password(password)
    accounts = function[ACCOUNTS]
    async with function.db.transaction() as tx:
        if await accounts.email_taken_in(tx, email):
            raise Conflict("an account with this e-mail exists already: sign in instead", code="email_taken")
        first = await accounts.count_in(tx) == 0
        role = "operator" if first and settings.first_user_is_operator else "user"
        account = await accounts.create(tx, email=email, password_hash=password_hash, role=role)
        await tx.publish(function.event(AccountCreated(account_id=account.id, role=role, by="signup")))
        token = await open_session(tx, account, identity(request))
    return signed_in(request, account, token, 201)


@function.route(
    "POST",
    "/api/auth/login",
    summary="Sign in (the visitor's purchases move into the account); failures slow the next try down per "
    "address and per account (429, Retry-After), never for an address that has not failed",
    body=Credentials,
    response=AccountAnswer,
    errors=(401, 403, 429),
    timeout=10,
    max_body=8 * KIB,
)
async def login(request: web.Request, body: Credentials) -> web.Response:
    email, password = credentials(body)
    accounts, throttle = function[ACCOUNTS], function[THROTTLE]
    attempt = attempt_on(request, email)
    await throttle.refuse_while_limited(attempt)
    account = await accounts.by_email(email)
    ok = await verify_password(account.password_hash if account else None, password)
    if account is None or not ok:
        await throttle.record_failure(attempt)
        raise Unauthorized("wrong e-mail or password", code="invalid_credentials")
    if account.disabled:
        raise Forbidden("this account is disabled; ask the studio's operator", code="account_disabled")
    async with function.db.transaction() as tx:
        await throttle.forget(tx, attempt)
        token = await open_session(tx, account, identity(request))
    return signed_in(request, account, token, 200)


YES = ("1", "true", "yes")


@function.route(
    "POST",
    "/api/auth/logout",
    summary="End this session (`everywhere=1`: every session of the account; with `keys=1` every API key too)",
    query=LogoutQuery,
    status=204,
    timeout=10,
    max_body=8 * KIB,
)
async def logout(request: web.Request) -> web.Response:
    who = identity(request)
    if not who.account_id or not who.session_id:
        return signed_out()
    everywhere = request.query.get("everywhere", "") in YES
    keys = everywhere and request.query.get("keys", "") in YES
    accounts = function[ACCOUNTS]
    async with function.db.transaction() as tx:
        if everywhere:
            await accounts.end_sessions(tx, who.account_id)
            if keys:
                await accounts.revoke_keys(tx, who.account_id)
        else:
            await accounts.end_session(tx, who.session_id)
        await tx.publish(
            function.event(
                AccountAccessChanged(account_id=who.account_id, reason="logout_everywhere" if everywhere else "logout")
            )
        )
    response = signed_out()
    response.headers[EVICT_HEADER] = who.account_id
    return response


@function.route(
    "POST",
    "/api/auth/forgot",
    summary="Mail a password reset link (the same answer whether or not the e-mail has an account)",
    body=ForgotRequest,
    response=Sent,
    status=202,
    errors=(409, 429),
    timeout=10,
    max_body=8 * KIB,
)
async def forgot_password(request: web.Request, body: ForgotRequest) -> web.Response:
    """Mail a reset link; the answer (and its timing: the work happens after it) never says whether the
    account exists."""
    mailer = function[MAILER]
    if mailer is None:  # a setting, not a fault: a 4xx that says who can help
        raise Conflict(
            "this studio does not send e-mail, so it cannot mail a reset link: ask its operator for one "
            "(`localai-studio users reset-link EMAIL`), or the operator sets STUDIO_SMTP_URL",
            code="mail_not_configured",
        )
    email = normalise_email(body.email)
    task = asyncio.get_running_loop().create_task(mail_reset_link(mailer, email))
    function[MAILS].add(task)
    task.add_done_callback(function[MAILS].discard)
    return web.json_response(
        {"status": "sent", "message": "if an account has this e-mail, a reset link is on its way"}, status=202
    )


async def mail_reset_link(mailer: Mailer, email: str) -> None:
    accounts = function[ACCOUNTS]
    account = await accounts.by_email(email)
    if account is None or account.disabled:
        return
    async with function.db.transaction() as tx:
        token = await accounts.create_reset(tx, account.id)
    try:
        await mailer.send_reset_link(account.email, f"{function.settings.visitor_url}/account?reset={token}")
    except (aiosmtplib.SMTPException, OSError) as exc:
        function.log.warning("the reset e-mail could not be sent: %s", exc)


@function.route(
    "POST",
    "/api/auth/reset",
    summary="Set a new password with a reset link's token: every session ends and every API key is revoked",
    body=ResetRequest,
    response=PasswordReset,
    errors=(429,),
    timeout=10,
    max_body=8 * KIB,
)
async def reset_password(request: web.Request, body: ResetRequest) -> web.Response:
    token = body.token
    if not token:
        raise BadRequest("token is required: the one in your reset link", code="invalid_token")
    accounts = function[ACCOUNTS]
    async with function.db.transaction() as tx:
        account_id = await accounts.use_reset(tx, token)
        account = await accounts.get(account_id) if account_id else None
        if account is None:
            raise BadRequest("this reset link is unknown, used or expired: ask for a new one", code="invalid_token")
        check_strength(body.password, account.email)
        await accounts.set_password(tx, account.id, await hash_password(body.password))
        sessions = await accounts.end_sessions(tx, account.id)
        keys = await accounts.revoke_keys(tx, account.id)  # whoever took the account may have made some
        await tx.publish(function.event(AccountAccessChanged(account_id=account.id, reason="password_changed")))
    response = web.json_response(
        {
            "status": "password_changed",
            "sessions_ended": sessions,
            "keys_revoked": keys,
            "message": f"the password is changed; {sessions} session(s) ended and {keys} API key(s) revoked: "
            "sign in with the new password, and make new keys where you need them",
        }
    )
    response.del_cookie(SESSION_COOKIE, path="/")
    response.headers[EVICT_HEADER] = account.id
    return response


@function.route(
    "GET",
    "/api/auth/session",
    summary="Who is signed in here (null when nobody)",
    response=SessionAnswer,
    timeout=10,
    max_body=8 * KIB,
)
async def show_session(request: web.Request) -> web.Response:
    """Who is signed in here: {"account": {...}} or {"account": null} (never a 401: pages ask on every load)."""
    who = identity(request)
    account = await function[ACCOUNTS].get(who.account_id) if who.account_id and not who.key_id else None
    return web.json_response({"account": account.public() if account else None})


@function.route(
    "GET",
    "/api/account",
    summary="The signed-in account",
    response=AccountAnswer,
    errors=(401, 403),
    timeout=10,
    max_body=8 * KIB,
)
async def show_account(request: web.Request) -> web.Response:
    who = require_account(request)
    account = await function[ACCOUNTS].get(who.account_id or "")
    if account is None:
        raise Unauthorized("sign in first (POST /api/auth/login)", code="not_signed_in")
    return web.json_response(account.public())


def session_only(request: web.Request) -> Identity:
    """Account routes take a signed-in browser, never an API key (a leaked key cannot take the account)."""
    who = require_account(request)
    if who.key_id:
        raise Forbidden("API keys work on /v1 only; sign in to manage your account", code="key_not_allowed")
    return who


@function.route(
    "POST",
    "/api/account/password",
    summary="Change the password; every other session ends",
    body=PasswordChange,
    status=204,
    errors=(401, 403),
    timeout=10,
    max_body=8 * KIB,
)
async def change_password(request: web.Request, body: PasswordChange) -> web.Response:
    who = session_only(request)
    current, new = body.current, body.new
    accounts, throttle = function[ACCOUNTS], function[THROTTLE]
    account = await accounts.get(who.account_id or "")
    if account is None:
        raise Unauthorized("sign in first (POST /api/auth/login)", code="not_signed_in")
    attempt = attempt_on(request, account.email)  # throttled like a sign-in: a stolen session cannot guess on
    await throttle.refuse_while_limited(attempt)
    if not await verify_password(account.password_hash, current):
        await throttle.record_failure(attempt)
        raise Forbidden("the current password is wrong", code="wrong_password")
    new_hash = await hash_password(check_strength(new, account.email))
    async with function.db.transaction() as tx:
        await throttle.forget(tx, attempt)
        await accounts.set_password(tx, account.id, new_hash)
        await accounts.end_sessions(tx, account.id, keep=who.session_id)
        await tx.publish(function.event(AccountAccessChanged(account_id=account.id, reason="password_changed")))
    return web.Response(status=204, headers={EVICT_HEADER: account.id})


@function.route(
    "POST",
    "/api/account/keys",
    summary="A new API key: shown once in this answer, stored as a hash",
    body=NewKey,
    response=CreatedKey,
    status=201,
    errors=(401, 403),
    timeout=10,
    max_body=8 * KIB,
)
async def create_key(request: web.Request, body: NewKey) -> web.Response:
    who = session_only(request)
    name = body.name
    if len(name.strip()) > MAX_KEY_NAME:
        raise BadRequest(f"name must be text of at most {MAX_KEY_NAME} characters", code="invalid_name")
    async with function.db.transaction() as tx:
        record, key = await function[ACCOUNTS].create_key(tx, who.account_id or "", name.strip() or "key")
    return web.json_response({**record, "key": key}, status=201)


@function.route(
    "GET",
    "/api/account/keys",
    summary="The account's API keys (never the keys themselves)",
    response=KeyList,
    errors=(401, 403),
    timeout=10,
    max_body=8 * KIB,
)
async def list_keys(request: web.Request) -> web.Response:
    who = session_only(request)
    return web.json_response({"keys": await function[ACCOUNTS].keys_of(who.account_id or "")})


@function.route(
    "DELETE",
    "/api/account/keys/{key_id}",
    summary="Revoke a key: it stops working at once on every replica",
    status=204,
    errors=(401, 403, 404),
    timeout=10,
    max_body=8 * KIB,
)
async def revoke_key(request: web.Request) -> web.Response:
    who = session_only(request)
    account_id = who.account_id or ""
    async with function.db.transaction() as tx:
        if not await function[ACCOUNTS].revoke_key(tx, account_id, request.match_info["key_id"]):
            raise NotFound("no such key", code="unknown_key")
        await tx.publish(function.event(AccountAccessChanged(account_id=account_id, reason="key_revoked")))
    return web.Response(status=204, headers={EVICT_HEADER: account_id})


@function.answer("accounts.emails")
async def emails(query: dict[str, Any]) -> dict[str, Any]:
    ids = query.get("account_ids")
    if not isinstance(ids, list) or len(ids) > MAX_EMAIL_LOOKUP or not all(isinstance(i, str) for i in ids):
        raise ValueError(f'accounts.emails needs "account_ids": a list of at most {MAX_EMAIL_LOOKUP} strings')
    return {"emails": await function[ACCOUNTS].emails_of(sorted(set(ids)))}


@function.answer("credentials.resolve")
async def resolve(query: dict[str, Any]) -> dict[str, Any]:
    accounts = function[ACCOUNTS]
    key_id = None
    if isinstance(query.get("session"), str):
        account = await accounts.session_owner(query["session"])
    elif isinstance(query.get("key"), str):
        found = await accounts.key_owner(query["key"])
        account, key_id = found if found else (None, None)
    else:
        return {}
    if account is None or account.disabled:
        return {}
    return {"account_id": account.id, "role": account.role, "email": account.email, "key_id": key_id}
