"""`localai-studio`: the one command operators use.

localai-studio up                         the whole studio in one process (embedded NATS)
localai-studio run <function>|gateway     one service alone, as its container runs it
localai-studio events tail [--since 10m] [--type 'purchase.*'] [--json] [--no-follow] [--until TIME]
localai-studio events consumers [--json]  each durable consumer's backlog and lag
localai-studio events consumers --remove NAME   delete a durable consumer no handler uses any more
localai-studio health [--url URL]         print the health report; exit 0 when healthy
localai-studio config [--markdown]        the configuration variables and their values
localai-studio reconcile [--since 7d] [--fix] [--url URL]   compare with Stripe; JSON report; exit 1 if
                                          differences remain (cron-friendly), 2 if it cannot run
localai-studio backup [--out DIR] [--file PATH ...] [--models]   a checked, consistent backup
localai-studio restore ARCHIVE [--check] [--force]                 put a backup back, checked
localai-studio db copy --from URL --to URL [--overwrite]   the database into another (SQLite -> PostgreSQL)
localai-studio users add|promote|demote|disable|enable|list|reset-link [EMAIL]   accounts (operator)
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import re
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

import functions
from events.bus import Bus, BusUnavailable
from events.lag import consumer_lags, remove_consumer, table
from events.tail import format_human, format_json, tail
from functions.accounts import admin as users
from studio.app import dbcopy, ops
from studio.app.runner import (
    StartupError,
    install_event_loop_policy,
    run_embedded,
    run_function,
    run_gateway,
)
from studio.runtime.database import Database
from studio.runtime.logs import configure
from studio.runtime.nats_users import every_user, write_credentials
from studio.runtime.settings import Settings, SettingsError, markdown_table

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30s, 10m, 2h or 1d")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (UTC when no offset is given), or a duration meaning that long ago."""
    if _DURATION.fullmatch(text.strip()):
        return datetime.now(UTC) - parse_duration(text)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time such as 2026-12-01T18:00:00Z or a duration such as 5m"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="localai-studio", description="Local AI Studio")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the whole studio (NATS, every function, the gateway)")
    run = sub.add_parser("run", help="run one function or the gateway alone")
    run.add_argument("service", choices=[*functions.NAMES, "gateway"])
    events = sub.add_parser("events", help="the event stream")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    tail_cmd = events_sub.add_parser("tail", help="follow events live")
    tail_cmd.add_argument(
        "--since", type=parse_duration, default=None, help="first replay stored events this old (e.g. 10m, 2h)"
    )
    tail_cmd.add_argument("--type", default="*", help="event types to show, e.g. 'purchase.*'")
    tail_cmd.add_argument("--json", action="store_true", help="one CloudEvents JSON object a line")
    tail_cmd.add_argument(
        "--no-follow", dest="follow", action="store_false", help="print what is stored (all, or --since) and exit"
    )
    tail_cmd.add_argument(
        "--until",
        type=parse_time,
        default=None,
        help="stop at this time (ISO 8601, e.g. 2026-12-01T18:00:00Z; or a duration ago, e.g. 5m)",
    )
    consumers_cmd = events_sub.add_parser(
        "consumers", help="each durable consumer: pending, ack pending, redelivered, oldest pending age, last active"
    )
    consumers_cmd.add_argument("--json", action="store_true", help="one JSON object a consumer")
    consumers_cmd.add_argument(
        "--remove", metavar="NAME", default=None, help="delete this durable consumer (one a renamed handler left)"
    )
    nats_cmd = sub.add_parser("nats", help="NATS users: their passwords and the server's users block")
    nats_sub = nats_cmd.add_subparsers(dest="nats_command", required=True)
    creds = nats_sub.add_parser(
        "credentials",
        help="write a password per user (function, gateway, studio, ops) and auth.conf, nats-server's users",
    )
    creds.add_argument("--dir", type=Path, default=None, help="where (default: STUDIO_NATS_CREDENTIALS_DIR)")
    creds.add_argument("--rotate", action="store_true", help="new passwords for every user (then restart NATS first)")
    health = sub.add_parser("health", help="print the health report; exit 0 when healthy")
    health.add_argument("--url", default=None, help="the studio's URL (default from STUDIO_HOST/PORT)")
    rec = sub.add_parser("reconcile", help="compare purchases and access with Stripe; --fix repairs")
    rec.add_argument("--since", default="7d", help="the period to compare (e.g. 7d, 12h); at most 90d")
    rec.add_argument(
        "--fix", action="store_true", help="repair each difference through the events a webhook would send"
    )
    rec.add_argument("--url", default=None, help="the studio's URL (default from STUDIO_HOST/PORT)")
    config = sub.add_parser("config", help="show the configuration")
    config.add_argument("--markdown", action="store_true", help="the variables as a README table")
    ops.add_commands(sub)  # backup, restore
    dbcopy.add_commands(sub)  # db copy
    users.add_commands(sub)  # accounts: add, promote, demote, disable, enable, list, reset-link
    return parser


async def connect_cli(settings: Settings, name: str) -> Bus:
    bus = Bus(settings.effective_nats_url(), name=name, source="/cli", login=settings.nats_login("ops"))
    try:
        await bus.connect(timeout=3)
    except BusUnavailable as exc:
        raise StartupError(f"{exc}: is the studio running? (set STUDIO_NATS_URL to its NATS)") from None
    return bus


async def events_consumers(settings: Settings, args: argparse.Namespace) -> int:
    bus = await connect_cli(settings, "events-consumers")
    try:
        if args.remove:
            await remove_consumer(bus, args.remove)
            print(f"removed {args.remove}")
            return 0
        lags = await consumer_lags(bus)
    except (BusUnavailable, LookupError) as exc:
        raise StartupError(str(exc)) from None
    finally:
        await bus.close(0)
    if args.json:
        for lag in lags:
            print(json.dumps(lag.to_dict()))
    else:
        print(table(lags) if lags else "no durable consumers yet")
    return 0


async def events_tail(settings: Settings, args: argparse.Namespace) -> int:
    bus = await connect_cli(settings, "events-tail")
    fmt = format_json if args.json else format_human

    def emit(event: object) -> None:
        print(fmt(event), flush=True)  # type: ignore[arg-type]

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await tail(bus, emit, pattern=args.type, since=args.since, stop=stop, follow=args.follow, until=args.until)
    finally:
        await bus.close(0)
    return 0


async def health(settings: Settings, args: argparse.Namespace) -> int:
    url = (args.url or settings.url).rstrip("/") + "/health"
    token = settings.admin_token.get()
    operator = {"Authorization": f"Bearer {token}"} if token else {}  # the details are the operator's
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(url, headers=operator) as resp,
        ):
            report = await resp.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError) as exc:
        raise StartupError(f"no health report from {url} ({type(exc).__name__}): is the studio running?") from None
    print(json.dumps(report, indent=2))
    return 0 if resp.status == 200 else 1


async def reconcile(settings: Settings, args: argparse.Namespace) -> int:
    """Ask the running studio (operator token: STUDIO_ADMIN_TOKEN) to reconcile; print its JSON report."""
    if not settings.admin_token:
        print("localai-studio: reconcile needs STUDIO_ADMIN_TOKEN (the operator token)", file=sys.stderr)
        return 2
    url = (args.url or settings.url).rstrip("/") + "/api/purchases/reconcile"
    headers = {"Authorization": f"Bearer {settings.admin_token.get()}"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=150)) as session,
            session.post(url, json={"since": args.since, "fix": args.fix}, headers=headers) as resp,
        ):
            report = await resp.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError) as exc:
        print(f"localai-studio: no answer from {url} ({type(exc).__name__}): is the studio running?", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    if resp.status != 200:
        return 2
    return 1 if report.get("remaining") else 0


def nats_credentials(settings: Settings, directory: Path | None, *, rotate: bool) -> int:
    """`localai-studio nats credentials`: the NATS users' passwords (kept, unless --rotate) and auth.conf."""
    where = directory or settings.nats_credentials
    write_credentials(where, every_user([functions.load(name) for name in functions.NAMES]), rotate=rotate)
    print(
        f"NATS credentials in {where}: one password file per user and auth.conf (nats-server's users); "
        + ("rotated: restart NATS, then every service" if rotate else "existing passwords kept")
    )
    return 0


def show_config(settings: Settings, markdown: bool) -> int:
    print(markdown_table() if markdown else settings.as_env())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints every thread's stack to stderr
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"localai-studio: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        return show_config(settings, args.markdown)
    if args.command in ("backup", "restore"):
        return ops.run(settings, args)
    if args.command == "users":
        return users.run(settings, args)
    if args.command == "db":
        return dbcopy.run(Database(settings.database_target), args)
    if args.command == "nats":
        return nats_credentials(settings, args.dir, rotate=args.rotate)
    service = args.service if args.command == "run" else "studio" if args.command == "up" else "cli"
    configure(settings.log_level, service)
    install_event_loop_policy()
    try:
        if args.command == "up":
            asyncio.run(run_embedded(settings))
        elif args.command == "run":
            asyncio.run(run_gateway(settings) if args.service == "gateway" else run_function(args.service, settings))
        elif args.command == "events" and args.events_command == "consumers":
            return asyncio.run(events_consumers(settings, args))
        elif args.command == "events":
            return asyncio.run(events_tail(settings, args))
        elif args.command == "health":
            return asyncio.run(health(settings, args))
        elif args.command == "reconcile":
            return asyncio.run(reconcile(settings, args))
    except StartupError as exc:
        print(f"localai-studio: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
