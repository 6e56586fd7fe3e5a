"""Settings: every environment variable the studio reads, declared once, read once into a typed, frozen object.

This is the only module that reads `os.environ`. Each variable is one field of a group below
(`ChatLimits`, `PaymentSettings`, ...), declared with `setting(...)`: its variable name, what it
accepts (a `Kind`: the parser and the plain words an error shows), default, meaning, and whether it is
a secret or belongs in `compose/.env.example`. `Settings` inherits every group. Everything else is
derived from those fields: `VARS` (one `Var` a row), the error an operator reads for a bad value (one
sentence naming the variable and what it accepts), `localai-studio config` (the values in effect as
`.env` lines, by group) and README's configuration table (`localai-studio config --markdown`).
Secrets may also come from a file named by `<NAME>_FILE` (the way container secrets are mounted) and
are masked in `repr` and in `config`.

Functions receive the whole `Settings` (`settings.chat_max_tokens`); code that needs one group only
can take that group as its type (`limits: ChatLimits`), and is given the same `Settings` object.
Adding a setting: one `name: type = setting("STUDIO_NAME", KIND, "default", "Meaning.")` line in its
group (mypy checks the type against the kind), then `localai-studio config --markdown` into README.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast
from urllib.parse import urlsplit

from events.bus import NatsLogin
from studio.runtime.dialect import DatabaseUrl, DatabaseUrlError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")


class SettingsError(ValueError):
    """A variable has a value the studio cannot use; the message names it and says what to do."""


class Invalid(ValueError):
    """Raised by a parser with a plain-words reason (shown to the operator beside what the setting accepts)."""


class Secret:
    """A string that never shows in logs or reprs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and secrets.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"


# -- groups ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingsGroup:
    """A group of settings that belong together (what one function or one concern reads).

    Each group is a frozen dataclass whose fields are its settings' declarations; `Settings` inherits
    every group. So `settings.chat_max_tokens` and a function typed to take only `ChatLimits` read the
    same declaration, and mypy keeps such a function to its own group.
    """

    title: ClassVar[str] = "Settings"


# -- kinds: what a setting accepts -------------------------------------------------------------------


@dataclass(frozen=True)
class Kind(Generic[T]):
    """What a setting accepts: `accepts` in plain words (the error says it), the parser, and bad values.

    `bad` lists values the parser refuses; the settings tests try each one against every setting of
    this kind (a kind that takes any text has none).
    """

    accepts: str
    parse: Callable[[str], T]
    bad: tuple[str, ...] = ()


def _int(raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise Invalid() from None


def _float(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise Invalid() from None
    if not math.isfinite(value):
        raise Invalid()
    return value


def _at_least(parse: Callable[[str], Any], low: float, strict: bool) -> Callable[[str], Any]:
    def check(raw: str) -> Any:
        value = parse(raw)
        if value < low or (strict and value == low):
            raise Invalid()
        return value

    return check


POSITIVE_INT: Kind[int] = Kind("a whole number greater than 0", _at_least(_int, 0, True), ("abc", "0", "-1", "1.5"))
COUNT: Kind[int] = Kind("a whole number, 0 or more", _at_least(_int, 0, False), ("abc", "-1", "2.5"))
POSITIVE: Kind[float] = Kind("a number greater than 0", _at_least(_float, 0, True), ("abc", "0", "-2", "nan", "inf"))
NON_NEGATIVE: Kind[float] = Kind("a number, 0 or more", _at_least(_float, 0, False), ("abc", "-1", "nan"))


def _port(raw: str) -> int:
    value = _int(raw)
    if not 0 <= value <= 65535:
        raise Invalid()
    return value


PORT: Kind[int] = Kind("a port number from 0 to 65535", _port, ("abc", "70000", "-1"))


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise Invalid()


BOOL: Kind[bool] = Kind("true or false (or 1/0, yes/no, on/off)", _bool, ("maybe", "2"))


def _checked_url(raw: str, schemes: tuple[str, ...]) -> str:
    """`raw` if it is a URL of one of `schemes` with a host (and a port number, if any); else Invalid, saying why."""
    raw = raw.strip()
    if any(c.isspace() for c in raw):
        raise Invalid(f"{raw} holds a space")
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018  (raises for a port that is not a number 0-65535)
    except ValueError:
        raise Invalid(f"{raw} has no valid port number") from None
    if "://" not in raw or parts.scheme.lower() not in schemes:
        names = [f"{scheme}://" for scheme in schemes]
        either = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        raise Invalid(f"{raw} must start with {either}")
    if not parts.hostname:
        raise Invalid(f"{raw} names no host")
    return raw.rstrip("/")


def _url(raw: str) -> str:
    return _checked_url(raw, ("http", "https"))


URL: Kind[str] = Kind("a URL such as http://host:port", _url, ("localhost:11434", "http://", "not a url"))
OPTIONAL_URL: Kind[str | None] = Kind(
    "a URL such as https://host/path, or nothing", lambda raw: _url(raw) if raw.strip() else None, ("hooks.example",)
)
URL_OR_EMPTY: Kind[str] = Kind(
    "a URL such as https://host, or nothing", lambda raw: _url(raw) if raw.strip() else "", ("registry.ollama.ai",)
)


def _nats_urls(raw: str) -> str | None:
    """One NATS URL or several, comma-separated (every node of a cluster); kept as one string."""
    if "memory://" in raw:
        raise Invalid("memory:// is the tests' in-process bus, never shared with another process: use nats://")
    urls = _each(raw, lambda u: _checked_url(u, ("nats", "tls", "ws", "wss")), "a NATS URL")
    return ",".join(urls) if urls else None


NATS_URLS: Kind[str | None] = Kind(
    "one NATS URL or several comma-separated, such as nats://a:4222,nats://b:4222, or nothing",
    _nats_urls,
    ("nats://a:4222,b:4222", "localhost", "http://x", "memory://bus"),
)


def _replicas(raw: str) -> int:
    value = _int(raw)
    if not 1 <= value <= 5:
        raise Invalid()
    return value


REPLICAS: Kind[int] = Kind(
    "a number of copies from 1 to 5 (JetStream keeps 1 to 5 copies of a stream; 3 in a 3-node cluster)",
    _replicas,
    ("0", "6", "three"),
)


def _choice(*choices: str, upper: bool = False) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in choices:
            raise Invalid()
        return value

    return parse


LOG_LEVEL: Kind[str] = Kind(
    "DEBUG, INFO, WARNING or ERROR", _choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True), ("LOUD", "")
)
SIGNUP: Kind[str] = Kind("open or closed", _choice("open", "closed"), ("invite", ""))


def _names(raw: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in raw.split(",") if n.strip())


def _each(raw: str, parse: Callable[[str], T], what: str) -> tuple[T, ...]:
    """Each comma-separated item of `raw` parsed; a bad one is named in the reason."""
    out = []
    for item in _names(raw):
        try:
            out.append(parse(item))
        except Invalid as exc:
            raise Invalid(str(exc) or f"{item} is not {what}") from None
    return tuple(out)


# Every function of the studio, in start-up order (state owners before their observers): the choices of
# STUDIO_FUNCTIONS. `functions.NAMES` is this tuple (the platform names the functions, never imports them;
# tests/test_architecture.py checks that functions/ holds exactly these packages).
FUNCTION_NAMES: tuple[str, ...] = ("accounts", "chat", "purchase", "install", "webhook", "health", "monitor")


def _function_names(raw: str) -> tuple[str, ...]:
    names = _names(raw) or FUNCTION_NAMES
    unknown = [n for n in names if n not in FUNCTION_NAMES]
    if unknown:
        raise Invalid(f"unknown: {', '.join(unknown)}; known: {', '.join(FUNCTION_NAMES)}")
    return names


FUNCTIONS: Kind[tuple[str, ...]] = Kind(
    "names of functions, comma-separated (those of `localai-studio run --help`), or nothing for all",
    _function_names,
    ("nosuchfunction", "chat,nosuchfunction"),
)


def _upstreams(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in _names(raw):
        name, sep, url = item.partition("=")
        try:
            if not sep or not name.strip():
                raise Invalid()
            out[name.strip()] = _url(url)
        except Invalid:
            raise Invalid(f"{item} is not name=url") from None
    return out


UPSTREAMS: Kind[dict[str, str]] = Kind(
    "name=url pairs, comma-separated, such as chat=http://chat:8000,accounts=http://accounts:8000, or nothing",
    _upstreams,
    ("chat", "chat=chat:8000"),
)


def _template(raw: str) -> str:
    try:
        url = raw.format(function="chat")
    except (KeyError, IndexError, ValueError):
        raise Invalid("only {function} may appear in braces") from None
    _url(url)
    return raw


UPSTREAM_TEMPLATE: Kind[str] = Kind(
    "a URL in which {function} stands for each function's name, such as http://{function}:8000",
    _template,
    ("http://{name}:8000", "{function}:8000", "http://{function"),
)


def _urls(raw: str) -> tuple[str, ...]:
    urls = _each(raw, _url, "a URL")
    if len(set(urls)) != len(urls):
        raise Invalid("a node is listed twice")
    return urls


OLLAMA_URLS: Kind[tuple[str, ...]] = Kind(
    "URLs of Ollama nodes, comma-separated, such as http://a:11434,http://b:11434, or nothing",
    _urls,
    ("a:11434", "http://a:11434,http://a:11434"),
)


def _database_url(raw: str) -> DatabaseUrl | None:
    if not raw.strip():
        return None
    try:
        return DatabaseUrl.parse(raw.strip())
    except DatabaseUrlError as exc:
        raise Invalid(str(exc)) from None


DATABASE_URL: Kind[DatabaseUrl | None] = Kind(
    "sqlite:///file.db or postgresql://user:pass@host:5432/db, or nothing",
    _database_url,
    ("mysql://db/studio", "postgresql://db:5432", "studio.db"),
)


def _networks(raw: str) -> tuple[IPNetwork, ...]:
    out = []
    for item in _names(raw):
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise Invalid(f"{item} is not an address or network") from None
    return tuple(out)


NETWORKS: Kind[tuple[IPNetwork, ...]] = Kind(
    "addresses or networks, comma-separated, such as 127.0.0.1,::1,10.0.0.0/8",
    _networks,
    ("10.0.0.300", "127.0.0.1,proxy"),
)

_HOST = re.compile(r"[A-Za-z0-9._:-]*")


def _host(raw: str) -> str:
    if not _HOST.fullmatch(raw.strip()):
        raise Invalid()
    return raw.strip()


HOST: Kind[str] = Kind("an address or host name such as 127.0.0.1, 0.0.0.0, :: or studio", _host, ("http://x", "a b"))
TEXT: Kind[str] = Kind("any text", str)
PATH: Kind[Path] = Kind("a path", Path)
OPTIONAL_PATH: Kind[Path | None] = Kind("a path, or nothing", lambda raw: Path(raw) if raw else None)
SECRET: Kind[Secret] = Kind("any text (kept secret)", Secret)


def _smtp(raw: str) -> Secret:
    parts = urlsplit(raw.strip())
    if raw.strip() and (parts.scheme not in ("smtp", "smtps") or not parts.hostname):
        raise Invalid()
    return Secret(raw.strip())


SMTP_URL: Kind[Secret] = Kind(
    "smtp://user:pass@host:587 or smtps://user:pass@host:465, or nothing",
    _smtp,
    ("mail.example.com", "http://mail.example.com"),
)


def _mail_from(raw: str) -> str:
    if raw.strip() and not re.fullmatch(r"[^@<>\s]+@[^@<>\s]+|[^<>@]*<[^@<>\s]+@[^@<>\s]+>", raw.strip()):
        raise Invalid()
    return raw.strip()


MAIL_FROM: Kind[str] = Kind(
    "an e-mail address such as studio@example.com or Studio <studio@example.com>, or nothing",
    _mail_from,
    ("studio", "Studio <studio>"),
)


# -- the declaration ----------------------------------------------------------------------------------


def _plain(value: Any) -> str:
    """A value as an operator writes it: the text that parses back to it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, tuple):
        return ",".join(_plain(item) for item in value)
    if isinstance(value, dict):
        return ",".join(f"{name}={_plain(item)}" for name, item in value.items())
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value.network_address) if value.prefixlen == value.max_prefixlen else str(value)
    if isinstance(value, Path):
        text = str(value)
        return text if value.is_absolute() or text.startswith(".") else "./" + text
    if isinstance(value, Secret):
        return value.get()
    if isinstance(value, DatabaseUrl):
        return value.masked()
    return str(value)


def _env_text(text: str) -> str:
    """`text` as the right-hand side of a `.env` line (quoted when a shell or Compose would split or expand it)."""
    if not re.search(r"[\s#'\"\\$`]", text):
        return text
    if "'" not in text:
        return f"'{text}'"
    return '"' + re.sub(r'(["\\$`])', r"\\\1", text) + '"'


@dataclass(frozen=True)
class Var:
    """One setting as the operator sees it, derived from its `Settings` field (see `setting`)."""

    env: str
    attr: str
    parse: Callable[[str], Any]
    default: str
    doc: str
    secret: bool = False
    group: type[SettingsGroup] = SettingsGroup  # the class that declares it
    accepts: str = "any text"
    bad: tuple[str, ...] = ()
    example: bool = False  # listed in compose/.env.example (what an operator of the production compose sets)

    def read(self, raw: str) -> Any:
        """The value `raw` gives, or a SettingsError: one sentence naming the variable and what it accepts."""
        try:
            return self.parse(raw)
        except (ValueError, TypeError) as exc:
            shown = "(hidden: a secret)" if self.secret and raw else _env_text(raw) if raw else '""'
            detail = f" ({exc})" if isinstance(exc, Invalid) and str(exc) else ""
            raise SettingsError(f"{self.env}={shown} is not valid{detail}: expected {self.accepts}.") from None

    def show(self, value: Any) -> str:
        """`value` as a `.env` line's right side; a secret as `**********` (a database URL without its password)."""
        if self.secret and value and not isinstance(value, DatabaseUrl):
            return "**********"
        return _env_text(_plain(value))


_VAR = "studio.setting"


def setting(
    env: str,
    kind: Kind[T],
    default: str,
    doc: str,
    *,
    secret: bool = False,
    example: bool = False,
) -> T:
    """Declare one field of `Settings`: the only place a setting is written down."""
    declared = Var(env, "", kind.parse, default, doc, secret, SettingsGroup, kind.accepts, kind.bad, example)
    return cast(T, field(metadata={_VAR: declared}))


@dataclass(frozen=True)
class ProcessSettings(SettingsGroup):
    title: ClassVar[str] = "The studio process"

    host: str = setting("STUDIO_HOST", HOST, "127.0.0.1", "Address the studio (or one service) listens on.")
    port: int = setting("STUDIO_PORT", PORT, "8080", "HTTP port of the studio (or of one service with `run`).")
    public_url: str | None = setting(
        "STUDIO_PUBLIC_URL",
        OPTIONAL_URL,
        "",
        "URL visitors use (for Stripe return links); default `http://STUDIO_HOST:STUDIO_PORT`.",
        example=True,
    )
    data_dir: Path = setting("STUDIO_DATA_DIR", PATH, "./data", "Runtime state: SQLite database, NATS store.")
    log_level: str = setting("STUDIO_LOG_LEVEL", LOG_LEVEL, "INFO", "DEBUG, INFO, WARNING or ERROR.", example=True)
    functions: tuple[str, ...] = setting(
        "STUDIO_FUNCTIONS",
        FUNCTIONS,
        "",
        "Functions `up` runs and `/health` expects heartbeats from; empty = all of them.",
    )
    frontend_dir: Path | None = setting(
        "STUDIO_FRONTEND_DIR",
        OPTIONAL_PATH,
        "",
        "Static site the embedded gateway serves; default the repository's `frontend/`.",
    )
    heartbeat_s: float = setting("STUDIO_HEARTBEAT_S", POSITIVE, "5", "Seconds between function heartbeats.")
    shutdown_grace_s: float = setting(
        "STUDIO_SHUTDOWN_GRACE_S",
        POSITIVE,
        "10",
        "On SIGTERM, how long in-flight work may take before it is handed back for redelivery.",
    )

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def visitor_url(self) -> str:
        return self.public_url or self.url


@dataclass(frozen=True)
class DatabaseSettings(SettingsGroup):
    title: ClassVar[str] = "Database"

    database_url: DatabaseUrl | None = setting(
        "STUDIO_DATABASE_URL",
        DATABASE_URL,
        "",
        "The database: empty = SQLite at `STUDIO_DATA_DIR/studio.db` (`sqlite:///data/studio.db` with the default "
        "data dir); `sqlite:///path.db` (`sqlite:////abs/path.db`), or `postgresql://user:pass@host:5432/db` "
        "(README, PostgreSQL).",
        secret=True,
        example=True,
    )
    outbox_keep_days: float = setting(
        "STUDIO_OUTBOX_KEEP_DAYS",
        POSITIVE,
        "7",
        "Published outbox rows and processed Stripe event ids older than this are pruned (Stripe retries 3 days).",
    )


@dataclass(frozen=True)
class EventSettings(SettingsGroup):
    title: ClassVar[str] = "NATS and events"

    nats_url: str | None = setting(
        "STUDIO_NATS_URL",
        NATS_URLS,
        "",
        "An existing NATS server with JetStream, or every node of a NATS cluster comma-separated "
        "(`nats://a:4222,nats://b:4222,nats://c:4222`); empty = `up` starts one (and `run` uses the local one).",
    )
    nats_port: int = setting("STUDIO_NATS_PORT", PORT, "4222", "Port of the NATS server `up` starts.")
    events_replicas: int = setting(
        "STUDIO_EVENTS_REPLICAS",
        REPLICAS,
        "1",
        "Copies JetStream keeps of the event stream: 1 on one server, 3 in a 3-node NATS cluster "
        "(survives losing a node); changed on the running stream at start-up.",
    )
    nats_connect_timeout_s: float = setting(
        "STUDIO_NATS_CONNECT_TIMEOUT_S", POSITIVE, "30", "How long a service waits for NATS at start-up."
    )
    events_max_age_days: float = setting(
        "STUDIO_EVENTS_MAX_AGE_DAYS", POSITIVE, "30", "How long durable events stay replayable.", example=True
    )
    events_max_bytes: int = setting(
        "STUDIO_EVENTS_MAX_BYTES",
        POSITIVE_INT,
        str(1 << 30),
        "Most disk the event stream may use; less when the disk has less (half its free space, at least 16 MB).",
    )
    nats_ca: Path | None = setting(
        "STUDIO_NATS_CA",
        OPTIONAL_PATH,
        "",
        "The CA certificate NATS's own certificate must chain to (a NATS cluster across servers: "
        "compose/nats/cluster-certs' ca.pem); set = TLS to NATS, required. Empty = plain (one host).",
    )
    nats_credentials_dir: Path | None = setting(
        "STUDIO_NATS_CREDENTIALS_DIR",
        OPTIONAL_PATH,
        "",
        "NATS passwords, one file per user (0600): `up` makes them there; in compose, the mounted secrets "
        "(`/run/secrets`). Empty = `STUDIO_DATA_DIR/nats-credentials`. No file for this process's user: no login.",
    )
    live_streams_max: int = setting(
        "STUDIO_LIVE_STREAMS_MAX",
        COUNT,
        "0",
        "Live event streams (`/api/events`) one process keeps open; 0 = derived from the open-file limit.",
    )

    def effective_nats_url(self) -> str:
        return self.nats_url or f"nats://127.0.0.1:{self.nats_port}"


@dataclass(frozen=True)
class FleetSettings(SettingsGroup):
    title: ClassVar[str] = "Ollama fleet"

    ollama_url: str = setting("STUDIO_OLLAMA_URL", URL, "http://127.0.0.1:11434", "Ollama's API (a fleet of one node).")
    ollama_urls: tuple[str, ...] = setting(
        "STUDIO_OLLAMA_URLS",
        OLLAMA_URLS,
        "",
        "A fleet of Ollama nodes, comma-separated (`http://a:11434,http://b:11434`); empty = STUDIO_OLLAMA_URL alone.",
        example=True,
    )
    ollama_copies: int = setting(
        "STUDIO_OLLAMA_COPIES",
        COUNT,
        "0",
        "On how many nodes each installed model is kept; 0 = every node.",
        example=True,
    )
    ollama_queue_max: int = setting(
        "STUDIO_OLLAMA_QUEUE_MAX",
        POSITIVE_INT,
        "10",
        "Answers in flight on one node beyond which it counts as saturated (a model's cloud fallback is used "
        "only when every node is).",
        example=True,
    )
    ollama_check_s: float = setting(
        "STUDIO_OLLAMA_CHECK_S",
        POSITIVE,
        "15",
        "How often install checks every Ollama node: reconciles install states, fills a node that lacks "
        "models, alerts a node down.",
    )
    ollama_models_dir: Path | None = setting(
        "STUDIO_OLLAMA_MODELS_DIR",
        OPTIONAL_PATH,
        "",
        "Ollama's models directory as the studio sees it (its volume mounted here): a model whose download "
        "plus STUDIO_DISK_MIN_FREE_MB does not fit is refused before payment; empty = no disk check.",
    )
    ollama_library_url: str = setting(
        "STUDIO_OLLAMA_LIBRARY_URL",
        URL_OR_EMPTY,
        "https://registry.ollama.ai",
        "Ollama's library, asked whether a model the operator adds to the catalog exists (when it "
        "cannot be reached, the model is added unchecked); empty = never asked.",
    )
    server_memory_bytes: int = setting(
        "STUDIO_SERVER_MEMORY_BYTES",
        COUNT,
        "0",
        "Memory Ollama can use; a model needing more is refused before payment. 0 = the host's total "
        "memory (/proc/meminfo).",
    )
    fallback_api_key: Secret = setting(
        "STUDIO_FALLBACK_API_KEY",
        SECRET,
        "",
        "API key sent to a catalog model's cloud fallback (`fallback` in the catalog); empty = no key sent.",
        secret=True,
        example=True,
    )

    @property
    def ollama_nodes(self) -> tuple[str, ...]:
        """Every Ollama node's URL: STUDIO_OLLAMA_URLS, or the single STUDIO_OLLAMA_URL."""
        return self.ollama_urls or (self.ollama_url.rstrip("/"),)


@dataclass(frozen=True)
class PaymentSettings(SettingsGroup):
    title: ClassVar[str] = "Catalog and payments"

    catalog_path: Path | None = setting(
        "STUDIO_CATALOG",
        OPTIONAL_PATH,
        "",
        "Your own catalog of models for sale (JSON); default the one shipped in studio/catalog/.",
        example=True,
    )
    skip_payment: bool = setting(
        "STUDIO_SKIP_PAYMENT",
        BOOL,
        "false",
        'Test mode: paid models are "bought" without Stripe (never in production).',
        example=True,
    )
    stripe_api_base: str = setting(
        "STUDIO_STRIPE_API_BASE",
        URL,
        "https://api.stripe.com",
        "Stripe's API (tests point it at a local stand-in).",
    )
    stripe_secret_key: Secret = setting(
        "STRIPE_SECRET_KEY",
        SECRET,
        "",
        "Stripe API key (sk_test_... / sk_live_...); empty = paid models cannot be bought (unless test mode).",
        secret=True,
        example=True,
    )
    stripe_webhook_secret: Secret = setting(
        "STRIPE_WEBHOOK_SECRET",
        SECRET,
        "",
        "Signing secret of the Stripe webhook endpoint (whsec_...); empty = webhooks refused.",
        secret=True,
        example=True,
    )
    reconcile_every_h: float = setting(
        "STUDIO_RECONCILE_EVERY_H",
        NON_NEGATIVE,
        "24",
        "Hours between the studio's own reconciliations with Stripe (last 7 days, repaired); 0 = never.",
    )


@dataclass(frozen=True)
class ChatLimits(SettingsGroup):
    title: ClassVar[str] = "Chat limits"

    chat_max_message_chars: int = setting(
        "STUDIO_CHAT_MAX_MESSAGE_CHARS",
        POSITIVE_INT,
        "200000",
        "Longest single chat message (a coding agent's system prompt and file reads run to tens of thousands).",
    )
    chat_max_messages: int = setting(
        "STUDIO_CHAT_MAX_MESSAGES",
        POSITIVE_INT,
        "500",
        "Most messages in one chat request (an agent's session adds two per tool call).",
    )
    chat_max_tokens: int = setting(
        "STUDIO_CHAT_MAX_TOKENS",
        POSITIVE_INT,
        "2048",
        "Cap on tokens generated per answer (Ollama's num_predict).",
        example=True,
    )
    chat_concurrent_per_visitor: int = setting(
        "STUDIO_CHAT_CONCURRENT_PER_VISITOR",
        POSITIVE_INT,
        "2",
        "Answers one visitor may have generating at once.",
        example=True,
    )
    chat_requests_per_minute: int = setting(
        "STUDIO_CHAT_REQUESTS_PER_MINUTE",
        POSITIVE_INT,
        "20",
        "Chat requests one visitor may start per minute.",
        example=True,
    )
    chat_first_token_timeout_s: float = setting(
        "STUDIO_CHAT_FIRST_TOKEN_TIMEOUT_S",
        POSITIVE,
        "120",
        "How long Ollama may take to start answering (loading a model can be slow).",
    )
    chat_token_timeout_s: float = setting(
        "STUDIO_CHAT_TOKEN_TIMEOUT_S", POSITIVE, "60", "Longest silence allowed between two tokens."
    )
    chat_tokens_per_day: int = setting(
        "STUDIO_CHAT_TOKENS_PER_DAY",
        COUNT,
        "0",
        "Tokens (prompt + answer) one account or visitor may use a day, over every chat replica; 0 = no limit.",
        example=True,
    )
    chat_max_image_bytes: int = setting(
        "STUDIO_CHAT_MAX_IMAGE_BYTES",
        POSITIVE_INT,
        "10485760",
        "Largest image (decoded bytes) a chat message may carry (PNG, JPEG, WebP or GIF).",
    )
    chat_max_images: int = setting(
        "STUDIO_CHAT_MAX_IMAGES", POSITIVE_INT, "4", "Most images one chat message may carry."
    )
    chat_max_request_images: int = setting(
        "STUDIO_CHAT_MAX_REQUEST_IMAGES",
        POSITIVE_INT,
        "16",
        "Most images one chat request may carry over all its messages (a conversation resends earlier ones).",
    )

    @property
    def chat_max_text_body_bytes(self) -> int:
        """Largest body of a chat request that cannot carry images (/v1/completions, /v1/embeddings): one
        message at STUDIO_CHAT_MAX_MESSAGE_CHARS with every character escaped (`\\uXXXX`, 6 bytes: the worst
        case, a client that writes ASCII-only JSON), and a megabyte for the rest (several texts, the other
        fields). 2.2 MB by default: agents' bodies are 50-500 KB, an embedding batch of OpenAI's 300k tokens ~1.2 MB."""
        return 6 * self.chat_max_message_chars + 1024 * 1024

    @property
    def chat_max_body_bytes(self) -> int:
        """Largest body of a chat request that may carry images: one message's images at their limit (base64)
        and the text a text-only request may carry (`chat_max_text_body_bytes`)."""
        return self.chat_max_images * (-(-self.chat_max_image_bytes // 3) * 4) + self.chat_max_text_body_bytes


@dataclass(frozen=True)
class AccountSettings(SettingsGroup):
    title: ClassVar[str] = "Accounts"

    signup: str = setting(
        "STUDIO_SIGNUP",
        SIGNUP,
        "open",
        "open: anyone may create an account; closed: only the operator adds accounts (`localai-studio users add`).",
        example=True,
    )
    first_user_is_operator: bool = setting(
        "STUDIO_FIRST_USER_IS_OPERATOR",
        BOOL,
        "true",
        "On a studio with no account yet, the first sign-up becomes the operator (production compose: false).",
    )
    smtp_url: Secret = setting(
        "STUDIO_SMTP_URL",
        SMTP_URL,
        "",
        "Mail server for password reset links: smtp://user:pass@host:587 (STARTTLS) or smtps://...:465; "
        "empty = reset links only from `localai-studio users reset-link`.",
        secret=True,
        example=True,
    )
    mail_from: str = setting(
        "STUDIO_MAIL_FROM",
        MAIL_FROM,
        "",
        "Sender of the studio's e-mails; default no-reply@ the host of STUDIO_PUBLIC_URL.",
        example=True,
    )
    admin_token: Secret = setting(
        "STUDIO_ADMIN_TOKEN",
        SECRET,
        "",
        "Bearer token for operator routes; empty = operator routes closed.",
        secret=True,
        example=True,
    )
    secret_key: Secret = setting(
        "STUDIO_SECRET_KEY",
        SECRET,
        "",
        "Signs visitor cookies; empty = generated once into the data dir.",
        secret=True,
        example=True,
    )


@dataclass(frozen=True)
class EdgeSettings(SettingsGroup):
    title: ClassVar[str] = "Gateway and edge"

    upstreams: dict[str, str] = setting(
        "STUDIO_UPSTREAMS",
        UPSTREAMS,
        "",
        "Gateway (distributed): `name=url` pairs overriding STUDIO_UPSTREAM_TEMPLATE.",
    )
    upstream_template: str = setting(
        "STUDIO_UPSTREAM_TEMPLATE",
        UPSTREAM_TEMPLATE,
        "http://{function}:8000",
        "Gateway (distributed): URL of each function's container.",
    )
    max_body_bytes: int = setting(
        "STUDIO_MAX_BODY_BYTES",
        POSITIVE_INT,
        "1048576",
        "Largest request body the gateway accepts (routes may set less).",
    )
    body_bytes_in_flight: int = setting(
        "STUDIO_BODY_BYTES_IN_FLIGHT",
        POSITIVE_INT,
        "268435456",
        "Bytes of request bodies the gateway holds at once, over every route (256 MiB; beyond: 503 "
        "`request_bodies_full` with Retry-After, before the body is read). A body bigger than this passes only "
        "while no other is held.",
    )
    client_timeout_s: float = setting(
        "STUDIO_CLIENT_TIMEOUT_S",
        POSITIVE,
        "15",
        "How long a client may take to send a request's headers, and between two reads of its body (nginx's 15 s).",
    )
    streams_per_address: int = setting(
        "STUDIO_STREAMS_PER_ADDRESS",
        POSITIVE_INT,
        "20",
        "Event and chat streams one client address may hold open at once (beyond: 429).",
    )
    writes_per_address_per_minute: int = setting(
        "STUDIO_WRITES_PER_ADDRESS_PER_MINUTE",
        POSITIVE_INT,
        "120",
        "State-changing requests (POST, DELETE...) one client address may send per minute (beyond: 429).",
    )
    trusted_proxies: tuple[IPNetwork, ...] = setting(
        "STUDIO_TRUSTED_PROXIES",
        NETWORKS,
        "127.0.0.1,::1",
        "Addresses or networks of the proxies (nginx) whose X-Forwarded-For / X-Real-IP name the client.",
    )

    def upstream_url(self, function: str) -> str:
        return self.upstreams.get(function) or self.upstream_template.format(function=function)


@dataclass(frozen=True)
class AlertSettings(SettingsGroup):
    title: ClassVar[str] = "Operations and alerts"

    alert_webhook_url: str | None = setting(
        "STUDIO_ALERT_WEBHOOK_URL",
        OPTIONAL_URL,
        "",
        "Slack-compatible webhook the monitor and ops scripts post alerts to; empty = no alerts.",
        example=True,
    )
    disk_min_free_mb: int = setting(
        "STUDIO_DISK_MIN_FREE_MB",
        POSITIVE_INT,
        "1024",
        "Free space under the data dir below which `/health` fails and the monitor alerts.",
        example=True,
    )
    events_lag_alert_s: float = setting(
        "STUDIO_EVENTS_LAG_ALERT_S",
        POSITIVE,
        "30",
        "The monitor alerts when a consumer's oldest unacknowledged event is older than this (seconds).",
    )


@dataclass(frozen=True)
class ScalingSettings(SettingsGroup):
    title: ClassVar[str] = "Scaling alerts"

    scale_visitors: int = setting(
        "STUDIO_SCALE_VISITORS",
        POSITIVE_INT,
        "100",
        "Time to add a server: the monitor alerts above this many concurrent visitors (across every server).",
    )
    scale_chat_per_s: float = setting(
        "STUDIO_SCALE_CHAT_PER_S",
        POSITIVE,
        "50",
        "Time to add a server: the monitor alerts above this many chat requests a second (across every server).",
    )
    scale_queue_depth: int = setting(
        "STUDIO_SCALE_QUEUE_DEPTH",
        POSITIVE_INT,
        "10",
        "Time to add an Ollama node: the monitor alerts when more answers than this wait on one node.",
    )
    scale_cpu_percent: float = setting(
        "STUDIO_SCALE_CPU_PERCENT",
        POSITIVE,
        "80",
        "Time to add a server: the monitor alerts when a server's CPU stays above this (percent of all cores).",
    )


GROUPS: tuple[type[SettingsGroup], ...] = (
    ProcessSettings,
    DatabaseSettings,
    EventSettings,
    FleetSettings,
    PaymentSettings,
    ChatLimits,
    AccountSettings,
    EdgeSettings,
    AlertSettings,
    ScalingSettings,
)


@dataclass(frozen=True, repr=True)
class Settings(
    ProcessSettings,
    DatabaseSettings,
    EventSettings,
    FleetSettings,
    PaymentSettings,
    ChatLimits,
    AccountSettings,
    EdgeSettings,
    AlertSettings,
    ScalingSettings,
):
    """Every setting: each group's fields, read once from the environment."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for var in VARS:
            raw = env.get(var.env)
            if raw is None and var.secret and env.get(var.env + "_FILE"):
                file = Path(env[var.env + "_FILE"])
                try:
                    raw = file.read_text().strip()
                except OSError as exc:
                    reason = (exc.strerror or "unreadable").lower()
                    raise SettingsError(
                        f"{var.env}_FILE={file} cannot be read ({reason}): it names a file holding {var.env}."
                    ) from None
            values[var.attr] = var.read(var.default if raw is None else raw)
        values.update(overrides)
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        current.update(changes)
        return Settings(**current)

    def as_env(self) -> str:
        """The values in effect as `.env` lines, under a `# <group>` line per group; secrets masked."""
        blocks = []
        for group in GROUPS:
            lines = [f"# {group.title}"]
            lines += [f"{var.env}={var.show(getattr(self, var.attr))}" for var in VARS if var.group is group]
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)

    @property
    def database_is_postgres(self) -> bool:
        return self.database_url is not None and self.database_url.is_postgres

    @property
    def database_path(self) -> Path:
        """The SQLite file (STUDIO_DATA_DIR/studio.db unless STUDIO_DATABASE_URL names another)."""
        if self.database_url is None:
            return self.data_dir / "studio.db"
        if self.database_url.is_postgres:
            raise SettingsError("the database is PostgreSQL (STUDIO_DATABASE_URL), not a SQLite file")
        return self.database_url.sqlite_path(Path.cwd())

    @property
    def database_target(self) -> Path | DatabaseUrl:
        """What `Database(...)` opens: the SQLite file, or the PostgreSQL URL."""
        return (
            self.database_url if self.database_url is not None and self.database_url.is_postgres else self.database_path
        )

    @property
    def nats_store_dir(self) -> Path:
        return self.data_dir / "nats"

    @property
    def nats_credentials(self) -> Path:
        return self.nats_credentials_dir or self.data_dir / "nats-credentials"

    def nats_login(self, user: str) -> NatsLogin | None:
        """How `user` logs in to NATS: its password file in `nats_credentials`, or None (NATS without users)."""
        try:
            password = (self.nats_credentials / user).read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except PermissionError as exc:
            raise SettingsError(
                f"the NATS password of {user!r} in {self.nats_credentials} cannot be read ({exc.strerror}): the "
                "studio's user must own it (STUDIO_NATS_CREDENTIALS_DIR)"
            ) from None
        return NatsLogin(user, password, ca=self.nats_ca) if password else NatsLogin.anonymous(self.nats_ca)

    def cookie_key(self) -> bytes:
        """The visitor-cookie signing key: configured, or generated once and kept in the data dir."""
        if self.secret_key:
            return self.secret_key.get().encode()
        path = self.data_dir / "secret_key"
        try:
            return path.read_bytes().strip()
        except FileNotFoundError:
            key = secrets.token_urlsafe(32).encode()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process of the studio wrote it first
                return path.read_bytes().strip()
            with os.fdopen(fd, "wb") as f:
                f.write(key)
            return key


def _declared() -> tuple[Var, ...]:
    return tuple(replace(f.metadata[_VAR], attr=f.name, group=group) for group in GROUPS for f in fields(group))


VARS: tuple[Var, ...] = _declared()


def markdown_table(level: int = 4) -> str:
    """README's (and the docs') configuration reference: a table per group under a heading of `level`."""
    parts = []
    for group in GROUPS:
        rows = [f"{'#' * level} {group.title}", "", "| variable | default | meaning |", "|---|---|---|"]
        for var in VARS:
            if var.group is group:
                default = f"`{var.default}`" if var.default else "(empty)"
                rows.append(f"| `{var.env}` | {default} | {var.doc} |")
        parts.append("\n".join(rows))
    return "\n\n".join(parts)
