"""NATS users: who may publish and subscribe to what, derived from the Function declarations.

Every process logs in to NATS (`studio.runtime.settings.Settings.nats_login`): one user per function (its
container in production), `gateway`, `studio` (the embedded `up`: every function and the gateway in one
process) and `ops` (the `localai-studio events ...` commands). Each user may

- publish the event types its functions declare (`publishes=`) and those the runtime publishes for every
  function (heartbeats, started/stopped, resource alerts, dead letters), send the queries they declare
  (`asks=`), and answer the requests it receives (`allow_responses`);
- subscribe to the events its functions consume (durable consumers, through the JetStream API of exactly
  those consumers) and listen to, the queries they answer, and its own inbox (`_INBOX_<user>.>`: replies,
  JetStream acknowledgements and pulled messages; nobody else's);
- use the JetStream API for the event stream's info and creation, and for its own consumers only.

So a function cannot forge another's events: the install user publishing `operator.catalog_changed` is
refused by the server. The monitor (`reads_stream`) may read the stored stream and put a stored event
back (a dead letter's redrive); `ops` may do anything (it is the operator at the command line).

Passwords are random, one file per user (0600) in a directory (0700): STUDIO_NATS_CREDENTIALS_DIR,
default `STUDIO_DATA_DIR/nats-credentials`, where `up` makes them; `localai-studio nats credentials`
makes them for compose (docs/operators/locking-down.md: rotation). `auth.conf` beside them is the `authorization`
block nats-server includes.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from events.bus import QUERY_PREFIX, STREAM, inbox_prefix
from events.envelope import nats_subject
from studio.runtime.function import RUNTIME_EVENTS, Function

JS = f"$JS.API.STREAM.%s.{STREAM}"
HOST_PUBLISH = frozenset(
    {
        "$JS.API.INFO",
        *(JS % verb for verb in ("INFO", "CREATE", "UPDATE")),
        *(nats_subject(t) for t in RUNTIME_EVENTS),
        QUERY_PREFIX + "catalog.changes",  # a host follows the operator's catalog changes
    }
)
HOST_SUBSCRIBE = frozenset({nats_subject("heartbeat.requested"), nats_subject("operator.catalog_changed")})
GATEWAY_PUBLISH = frozenset(
    {nats_subject("server.reported"), QUERY_PREFIX + "models.snapshot", QUERY_PREFIX + "credentials.resolve"}
)
GATEWAY_SUBSCRIBE = frozenset(
    {
        nats_subject("purchase.*"),
        nats_subject("install.*"),
        nats_subject("account.access_changed"),
        nats_subject("operator.catalog_changed"),  # the live feed tells open marketplace tabs (gateway/live.py)
    }
)
# Reading the stored stream and its consumers (lag, dead letters, replays through ephemeral consumers).
STREAM_READER = frozenset(
    {
        f"$JS.API.CONSUMER.LIST.{STREAM}",
        f"$JS.API.CONSUMER.NAMES.{STREAM}",
        f"$JS.API.CONSUMER.INFO.{STREAM}.*",
        f"$JS.API.CONSUMER.CREATE.{STREAM}",
        f"$JS.API.CONSUMER.CREATE.{STREAM}.>",
        f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.*",
        f"$JS.API.CONSUMER.DELETE.{STREAM}.*",
        f"$JS.API.STREAM.MSG.GET.{STREAM}",
        f"$JS.API.DIRECT.GET.{STREAM}",
        f"$JS.API.DIRECT.GET.{STREAM}.>",
        f"$JS.ACK.{STREAM}.>",
    }
)
EVERYTHING = frozenset({">"})
USERS_FILE = "auth.conf"


@dataclass(frozen=True)
class NatsUser:
    name: str
    publish: frozenset[str]
    subscribe: frozenset[str]

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.name)

    def authorization_entry(self, password: str) -> str:
        """This user in nats-server's config syntax (JSON is valid there)."""
        inbox = f"{self.inbox_prefix}.>"
        publish = sorted(self.publish)
        subscribe = sorted(self.subscribe | {inbox}) if self.subscribe != EVERYTHING else [">"]
        entry = {
            "user": self.name,
            "password": password,
            "permissions": {
                "publish": {"allow": publish},
                "subscribe": {"allow": subscribe},
                "allow_responses": True,
            },
        }
        return json.dumps(entry)


def consumer_api(consumer: str) -> set[str]:
    """The JetStream API subjects one durable pull consumer needs: create/update, info, pull, acks."""
    return {
        f"$JS.API.CONSUMER.CREATE.{STREAM}.{consumer}",
        f"$JS.API.CONSUMER.CREATE.{STREAM}.{consumer}.>",  # the form with the filter subject in it
        f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.{consumer}",
        f"$JS.API.CONSUMER.INFO.{STREAM}.{consumer}",
        f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{consumer}",
        f"$JS.ACK.{STREAM}.{consumer}.>",
    }


def _pattern(t: str) -> str:
    return nats_subject(">") if t in ("*", ">", "") else nats_subject(t)


def function_permissions(fn: Function) -> tuple[set[str], set[str]]:
    """(publish, subscribe) for one function, from its declaration."""
    publish: set[str] = {QUERY_PREFIX + q for q in fn.asks}
    subscribe: set[str] = set()
    if fn.publishes is None:  # undeclared (a test's sample function): any event
        publish.add(nats_subject(">"))
    else:
        publish |= {nats_subject(t) for t in fn.publishes}
    for spec in fn.subscriptions:
        if spec.broadcast:
            subscribe |= {_pattern(t) for t in spec.types}
        else:
            publish |= consumer_api(spec.consumer_name(fn.name))
    subscribe |= {QUERY_PREFIX + name for name, _ in fn.queries}
    if fn.reads_stream:
        publish |= STREAM_READER
    if fn.redrives:
        publish.add(nats_subject(">"))
    return publish, subscribe


def user_for(name: str, functions: Sequence[Function], *, gateway: bool = False) -> NatsUser:
    """The user of a process running `functions` (and the gateway, when `gateway`)."""
    publish, subscribe = set(HOST_PUBLISH), set(HOST_SUBSCRIBE)
    for fn in functions:
        p, s = function_permissions(fn)
        publish |= p
        subscribe |= s
    if gateway:
        publish |= GATEWAY_PUBLISH
        subscribe |= GATEWAY_SUBSCRIBE
    return NatsUser(name, frozenset(publish), frozenset(subscribe))


def gateway_user() -> NatsUser:
    return NatsUser("gateway", GATEWAY_PUBLISH, GATEWAY_SUBSCRIBE)


def ops_user() -> NatsUser:
    return NatsUser("ops", EVERYTHING, EVERYTHING)


def every_user(functions: Sequence[Function]) -> list[NatsUser]:
    """Every user a studio needs: `studio` (embedded), one per function, `gateway`, `ops`."""
    return [
        user_for("studio", functions, gateway=True),
        *(user_for(fn.name, [fn]) for fn in functions),
        gateway_user(),
        ops_user(),
    ]


# -- credentials on disk ------------------------------------------------------------------------------


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (replacing it atomically)."""
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(partial, 0o600)
    os.replace(partial, path)


def write_credentials(directory: Path, users: Iterable[NatsUser], *, rotate: bool = False) -> str:
    """A password file per user (kept unless `rotate`) and `auth.conf`, the server's users block; returns
    that block (the embedded server's config takes it inline)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    entries = []
    for user in users:
        path = directory / user.name
        password = None if rotate else _read(path)
        if password is None:
            password = secrets.token_urlsafe(24)
            _write_private(path, password + "\n")
        entries.append(user.authorization_entry(password))
    body = ",\n    ".join(entries)
    block = (
        "# Generated by Local AI Studio (studio/runtime/nats_users.py): one user per function, with the subjects\n"
        "# its declaration allows. Regenerate with `localai-studio nats credentials`; never edit by hand.\n"
        f"authorization {{\n  users: [\n    {body}\n  ]\n}}\n"
    )
    _write_private(directory / USERS_FILE, block)
    return block


def _read(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def password_of(directory: Path, user: str) -> str | None:
    """The password of `user` kept in `directory`, or None when there is none (NATS without users)."""
    return _read(directory / user)
