"""`localai-studio users ...`: the operator's commands for accounts, run against the studio's database.

users add EMAIL [--operator]      a new account; prints a one-time link (an hour) to choose its password
users promote|demote EMAIL        make the account the operator, or a user again
users disable|enable EMAIL        a disabled account cannot sign in; its sessions and keys stop at once
users list                        every account: e-mail, role, state, created
users reset-link EMAIL            a one-time password reset link, valid for an hour

The commands work while the studio runs: they write through the accounts store, and the events they
cause (`account.created`, `account.access_changed`) go through the outbox, which the running studio
publishes within a second (so every gateway forgets a disabled or demoted account's cached sessions).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from pathlib import Path

from events.catalog import AccountAccessChanged, AccountCreated, EventData
from events.envelope import Event
from functions.accounts.passwords import hash_password
from functions.accounts.store import Account, Accounts, normalise_email
from studio.runtime.database import RUNTIME_MIGRATIONS, Database, Migrations, Transaction
from studio.runtime.errors import BadRequest
from studio.runtime.settings import Settings

MIGRATIONS = Migrations("accounts", Path(__file__).parent / "migrations")


class UsersError(RuntimeError):
    pass


def add_commands(sub: argparse._SubParsersAction) -> None:
    users = sub.add_parser("users", help="accounts: add, promote, demote, disable, list, reset-link")
    verbs = users.add_subparsers(dest="users_command", required=True)
    add = verbs.add_parser("add", help="add an account; prints a link to choose its password")
    add.add_argument("email")
    add.add_argument("--operator", action="store_true", help="the account is an operator")
    for verb, text in (
        ("promote", "make the account an operator"),
        ("demote", "make the account a user again"),
        ("disable", "stop the account: no sign-in, its sessions and keys end"),
        ("enable", "let a disabled account sign in again"),
        ("reset-link", "print a one-time password reset link (valid an hour)"),
    ):
        verbs.add_parser(verb, help=text).add_argument("email")
    verbs.add_parser("list", help="every account")


def run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        print(asyncio.run(_run(settings, args)))
    except (UsersError, BadRequest) as exc:
        print(f"localai-studio users: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    return 0


def _event(data: EventData) -> Event:
    return Event(type=data.TYPE, source="/cli", data=data.to_data(), subject=data.subject)


def reset_url(settings: Settings, token: str) -> str:
    return f"{settings.visitor_url}/account?reset={token}"


async def _run(settings: Settings, args: argparse.Namespace) -> str:
    db = Database(settings.database_target)
    await db.open()
    try:
        await db.migrate([RUNTIME_MIGRATIONS, MIGRATIONS])
        return await _command(settings, Accounts(db), db, args)
    finally:
        await db.close()


async def _find(accounts: Accounts, raw: str) -> Account:
    account = await accounts.by_email(normalise_email(raw))
    if account is None:
        raise UsersError(f"no account has the e-mail {raw.strip().lower()}")
    return account


async def _command(settings: Settings, accounts: Accounts, db: Database, args: argparse.Namespace) -> str:
    verb = args.users_command
    if verb == "list":
        rows = await accounts.all()
        lines = [f"{a.email}\t{a.role}\t{'disabled' if a.disabled else 'active'}\t{a.created_at}\t{a.id}" for a in rows]
        return "\n".join(["email\trole\tstate\tcreated\tid", *lines]) if lines else "no accounts yet"
    if verb == "add":
        email = normalise_email(args.email)
        role = "operator" if args.operator else "user"
        unusable = await hash_password(secrets.token_urlsafe(32))  # nobody knows it: the link sets the real one
        async with db.transaction() as tx:
            if await accounts.email_taken_in(tx, email):
                raise UsersError(f"an account with the e-mail {email} exists already")
            account = await accounts.create(tx, email=email, password_hash=unusable, role=role)
            await tx.publish(_event(AccountCreated(account_id=account.id, role=role, by="cli")))
            token = await accounts.create_reset(tx, account.id)
        return f"added {email} ({role}); to choose a password, open within an hour:\n{reset_url(settings, token)}"
    account = await _find(accounts, args.email)
    async with db.transaction() as tx:
        if verb == "reset-link":
            token = await accounts.create_reset(tx, account.id)
            return f"a one-time link for {account.email}, valid for an hour:\n{reset_url(settings, token)}"
        if verb in ("promote", "demote"):
            await accounts.set_role(tx, account.id, "operator" if verb == "promote" else "user")
            await _changed(tx, account.id, "role_changed")
            return f"{account.email} is now {'an operator' if verb == 'promote' else 'a user'}"
        await accounts.set_disabled(tx, account.id, verb == "disable")
        if verb == "disable":
            await accounts.end_sessions(tx, account.id)
            await _changed(tx, account.id, "disabled")
        return f"{account.email} is {'disabled' if verb == 'disable' else 'enabled'}"


async def _changed(tx: Transaction, account_id: str, reason: str) -> None:
    await tx.publish(_event(AccountAccessChanged(account_id=account_id, reason=reason)))
