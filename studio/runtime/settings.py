"""Settings: every environment variable the studio reads, read once into a typed, frozen object.

This is the only module that reads `os.environ`. Each variable is declared once below (name, type,
default, meaning); README's configuration table is generated from the same list
(`localai-studio config --markdown`). Secrets may also come from a file named by `<NAME>_FILE`
(the way container secrets are mounted) and are masked in `repr`.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from events.bus import NatsLogin
from studio.runtime.dialect import DatabaseUrl

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(ValueError):
    """A variable has a value the studio cannot use; the message names it and says what to do."""


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


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _non_negative(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        value = kind(raw)
        if value < 0:
            raise ValueError("must be 0 or more")
        return value

    return parse


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        value = kind(raw)
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value

    return parse


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number 0-65535")
    return value


def _checked_url(raw: str, schemes: tuple[str, ...], example: str) -> str:
    """`raw` if it is a URL of one of `schemes` with a host (and a port number, if any), else a plain error."""
    raw = raw.strip()
    try:
        parts = urlsplit(raw)
        port = parts.port  # (raises for a port that is not a number 0-65535)
    except ValueError:
        raise ValueError(f"{raw!r} is not a URL such as {example}") from None
    if "://" not in raw or parts.scheme.lower() not in schemes:
        raise ValueError(f"{raw!r} is not a URL such as {example} (it must start with {_either(schemes)})")
    if not parts.hostname:
        raise ValueError(f"{raw!r} names no host; expected a URL such as {example}")
    del port
    return raw.rstrip("/")


def _either(schemes: tuple[str, ...]) -> str:
    names = [f"{scheme}://" for scheme in schemes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _url(raw: str) -> str:
    return _checked_url(raw, ("http", "https"), "http://host:port")


def _nats_url(raw: str) -> str:
    return _checked_url(raw, ("nats", "tls", "ws", "wss"), "nats://host:4222")


def _optional_url(raw: str) -> str | None:
    return _url(raw) if raw.strip() else None


def _nats_urls(raw: str) -> str | None:
    """One NATS URL or several, comma-separated (every node of a cluster); kept as one string."""
    if "memory://" in raw:
        raise ValueError("memory:// is the tests' in-process bus, never shared with another process: use nats://")
    urls = [_nats_url(u) for u in raw.split(",") if u.strip()]
    return ",".join(urls) if urls else None


def _replicas(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 5:
        raise ValueError("JetStream keeps 1 to 5 copies of a stream (3 in a 3-node cluster)")
    return value


def _signup(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("open", "closed"):
        raise ValueError("expected open or closed")
    return value


def _names(raw: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in raw.split(",") if n.strip())


# Every function of the studio, in start-up order (state owners before their observers): the choices of
# STUDIO_FUNCTIONS. `functions.NAMES` is this tuple (the platform names the functions, never imports them;
# tests/test_architecture.py checks that functions/ holds exactly these packages).
FUNCTIONS: tuple[str, ...] = ("accounts", "chat", "purchase", "install", "webhook", "health", "monitor")


def _function_names(raw: str) -> tuple[str, ...]:
    names = _names(raw) or FUNCTIONS
    unknown = [n for n in names if n not in FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown function(s) {', '.join(unknown)}; known: {', '.join(FUNCTIONS)}")
    return names


def _upstreams(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in _names(raw):
        name, sep, url = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r} is not name=url")
        out[name.strip()] = _url(url.strip())
    return out


def _urls(raw: str) -> tuple[str, ...]:
    urls = tuple(_url(u).rstrip("/") for u in _names(raw))
    if len(set(urls)) != len(urls):
        raise ValueError("a node is listed twice")
    return urls


def _database_url(raw: str) -> DatabaseUrl | None:
    return DatabaseUrl.parse(raw) if raw.strip() else None


def _networks(raw: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in _names(raw))


@dataclass(frozen=True)
class Var:
    env: str
    attr: str
    parse: Callable[[str], Any]
    default: str
    doc: str
    secret: bool = False


VARS: tuple[Var, ...] = (
    Var("STUDIO_HOST", "host", str, "127.0.0.1", "Address the studio (or one service) listens on."),
    Var("STUDIO_PORT", "port", _port, "8080", "HTTP port of the studio (or of one service with `run`)."),
    Var(
        "STUDIO_PUBLIC_URL",
        "public_url",
        _optional_url,
        "",
        "URL visitors use (for Stripe return links); default `http://STUDIO_HOST:STUDIO_PORT`.",
    ),
    Var("STUDIO_DATA_DIR", "data_dir", Path, "./data", "Runtime state: SQLite database, NATS store."),
    Var(
        "STUDIO_NATS_URL",
        "nats_url",
        _nats_urls,
        "",
        "An existing NATS server with JetStream, or every node of a NATS cluster comma-separated "
        "(`nats://a:4222,nats://b:4222,nats://c:4222`); empty = `up` starts one (and `run` uses the local one).",
    ),
    Var(
        "STUDIO_EVENTS_REPLICAS",
        "events_replicas",
        _replicas,
        "1",
        "Copies JetStream keeps of the event stream: 1 on one server, 3 in a 3-node NATS cluster "
        "(survives losing a node); changed on the running stream at start-up.",
    ),
    Var(
        "STUDIO_DATABASE_URL",
        "database_url",
        _database_url,
        "",
        "The database: empty = SQLite at `STUDIO_DATA_DIR/studio.db` (`sqlite:///data/studio.db` with the default "
        "data dir); `sqlite:///path.db` (`sqlite:////abs/path.db`), or `postgresql://user:pass@host:5432/db` "
        "(README, PostgreSQL).",
        secret=True,
    ),
    Var("STUDIO_NATS_PORT", "nats_port", _port, "4222", "Port of the NATS server `up` starts."),
    Var(
        "STUDIO_NATS_CA",
        "nats_ca",
        lambda s: Path(s) if s else None,
        "",
        "The CA certificate NATS's own certificate must chain to (a NATS cluster across servers: "
        "compose/nats/cluster-certs' ca.pem); set = TLS to NATS, required. Empty = plain (one host).",
    ),
    Var(
        "STUDIO_NATS_CREDENTIALS_DIR",
        "nats_credentials_dir",
        lambda s: Path(s) if s else None,
        "",
        "NATS passwords, one file per user (0600): `up` makes them there; in compose, the mounted secrets "
        "(`/run/secrets`). Empty = `STUDIO_DATA_DIR/nats-credentials`. No file for this process's user: no login.",
    ),
    Var("STUDIO_OLLAMA_URL", "ollama_url", _url, "http://127.0.0.1:11434", "Ollama's API (a fleet of one node)."),
    Var(
        "STUDIO_OLLAMA_URLS",
        "ollama_urls",
        _urls,
        "",
        "A fleet of Ollama nodes, comma-separated (`http://a:11434,http://b:11434`); empty = STUDIO_OLLAMA_URL alone.",
    ),
    Var(
        "STUDIO_OLLAMA_COPIES",
        "ollama_copies",
        _non_negative(int),
        "0",
        "On how many nodes each installed model is kept; 0 = every node.",
    ),
    Var(
        "STUDIO_OLLAMA_QUEUE_MAX",
        "ollama_queue_max",
        _positive(int),
        "10",
        "Answers in flight on one node beyond which it counts as saturated (a model's cloud fallback is used "
        "only when every node is).",
    ),
    Var(
        "STUDIO_OLLAMA_CHECK_S",
        "ollama_check_s",
        _positive(float),
        "15",
        "How often install checks every Ollama node: reconciles install states, fills a node that lacks "
        "models, alerts a node down.",
    ),
    Var("STUDIO_LOG_LEVEL", "log_level", str.upper, "INFO", "DEBUG, INFO, WARNING or ERROR."),
    Var(
        "STUDIO_FUNCTIONS",
        "functions",
        _function_names,
        "",
        "Functions `up` runs and `/health` expects heartbeats from; empty = all of them.",
    ),
    Var(
        "STUDIO_UPSTREAMS",
        "upstreams",
        _upstreams,
        "",
        "Gateway (distributed): `name=url` pairs overriding STUDIO_UPSTREAM_TEMPLATE.",
    ),
    Var(
        "STUDIO_UPSTREAM_TEMPLATE",
        "upstream_template",
        str,
        "http://{function}:8000",
        "Gateway (distributed): URL of each function's container.",
    ),
    Var(
        "STUDIO_MAX_BODY_BYTES",
        "max_body_bytes",
        _positive(int),
        "1048576",
        "Largest request body the gateway accepts (routes may set less).",
    ),
    Var(
        "STUDIO_CLIENT_TIMEOUT_S",
        "client_timeout_s",
        _positive(float),
        "15",
        "How long a client may take to send a request's headers, and between two reads of its body (nginx's 15 s).",
    ),
    Var(
        "STUDIO_STREAMS_PER_ADDRESS",
        "streams_per_address",
        _positive(int),
        "20",
        "Event and chat streams one client address may hold open at once (beyond: 429).",
    ),
    Var(
        "STUDIO_WRITES_PER_ADDRESS_PER_MINUTE",
        "writes_per_address_per_minute",
        _positive(int),
        "120",
        "State-changing requests (POST, DELETE...) one client address may send per minute (beyond: 429).",
    ),
    Var(
        "STUDIO_TRUSTED_PROXIES",
        "trusted_proxies",
        _networks,
        "127.0.0.1,::1",
        "Addresses or networks of the proxies (nginx) whose X-Forwarded-For / X-Real-IP name the client.",
    ),
    Var(
        "STUDIO_FRONTEND_DIR",
        "frontend_dir",
        lambda s: Path(s) if s else None,
        "",
        "Static site the embedded gateway serves; default the repository's `frontend/`.",
    ),
    Var("STUDIO_HEARTBEAT_S", "heartbeat_s", _positive(float), "5", "Seconds between function heartbeats."),
    Var(
        "STUDIO_SHUTDOWN_GRACE_S",
        "shutdown_grace_s",
        _positive(float),
        "10",
        "On SIGTERM, how long in-flight work may take before it is handed back for redelivery.",
    ),
    Var(
        "STUDIO_NATS_CONNECT_TIMEOUT_S",
        "nats_connect_timeout_s",
        _positive(float),
        "30",
        "How long a service waits for NATS at start-up.",
    ),
    Var(
        "STUDIO_EVENTS_MAX_AGE_DAYS",
        "events_max_age_days",
        _positive(float),
        "30",
        "How long durable events stay replayable.",
    ),
    Var(
        "STUDIO_EVENTS_LAG_ALERT_S",
        "events_lag_alert_s",
        _positive(float),
        "30",
        "The monitor alerts when a consumer's oldest unacknowledged event is older than this (seconds).",
    ),
    Var(
        "STUDIO_OUTBOX_KEEP_DAYS",
        "outbox_keep_days",
        _positive(float),
        "7",
        "Published outbox rows and processed Stripe event ids older than this are pruned (Stripe retries 3 days).",
    ),
    Var(
        "STUDIO_DISK_MIN_FREE_MB",
        "disk_min_free_mb",
        _positive(int),
        "1024",
        "Free space under the data dir below which `/health` fails and the monitor alerts.",
    ),
    Var(
        "STUDIO_EVENTS_MAX_BYTES",
        "events_max_bytes",
        _positive(int),
        str(1 << 30),
        "Most disk the event stream may use; less when the disk has less (half its free space, at least 16 MB).",
    ),
    Var(
        "STUDIO_LIVE_STREAMS_MAX",
        "live_streams_max",
        _non_negative(int),
        "0",
        "Live event streams (`/api/events`) one process keeps open; 0 = derived from the open-file limit.",
    ),
    Var(
        "STUDIO_CATALOG",
        "catalog_path",
        lambda s: Path(s) if s else None,
        "",
        "Your own catalog of models for sale (JSON); default the one shipped in studio/catalog/.",
    ),
    Var(
        "STUDIO_SKIP_PAYMENT",
        "skip_payment",
        _bool,
        "false",
        'Test mode: paid models are "bought" without Stripe (never in production).',
    ),
    Var(
        "STUDIO_STRIPE_API_BASE",
        "stripe_api_base",
        _url,
        "https://api.stripe.com",
        "Stripe's API (tests point it at a local stand-in).",
    ),
    Var(
        "STUDIO_OLLAMA_MODELS_DIR",
        "ollama_models_dir",
        lambda s: Path(s) if s else None,
        "",
        "Ollama's models directory as the studio sees it (its volume mounted here): a model whose download "
        "plus STUDIO_DISK_MIN_FREE_MB does not fit is refused before payment; empty = no disk check.",
    ),
    Var(
        "STUDIO_OLLAMA_LIBRARY_URL",
        "ollama_library_url",
        lambda s: s.rstrip("/"),
        "https://registry.ollama.ai",
        "Ollama's library, asked whether a model the operator adds to the catalog exists (when it "
        "cannot be reached, the model is added unchecked); empty = never asked.",
    ),
    Var(
        "STUDIO_SERVER_MEMORY_BYTES",
        "server_memory_bytes",
        int,
        "0",
        "Memory Ollama can use; a model needing more is refused before payment. 0 = the host's total "
        "memory (/proc/meminfo).",
    ),
    Var(
        "STUDIO_RECONCILE_EVERY_H",
        "reconcile_every_h",
        float,
        "24",
        "Hours between the studio's own reconciliations with Stripe (last 7 days, repaired); 0 = never.",
    ),
    Var(
        "STUDIO_CHAT_MAX_MESSAGE_CHARS",
        "chat_max_message_chars",
        _positive(int),
        "200000",
        "Longest single chat message (a coding agent's system prompt and file reads run to tens of thousands).",
    ),
    Var(
        "STUDIO_CHAT_MAX_MESSAGES",
        "chat_max_messages",
        _positive(int),
        "500",
        "Most messages in one chat request (an agent's session adds two per tool call).",
    ),
    Var(
        "STUDIO_CHAT_MAX_TOKENS",
        "chat_max_tokens",
        _positive(int),
        "2048",
        "Cap on tokens generated per answer (Ollama's num_predict).",
    ),
    Var(
        "STUDIO_CHAT_CONCURRENT_PER_VISITOR",
        "chat_concurrent_per_visitor",
        _positive(int),
        "2",
        "Answers one visitor may have generating at once.",
    ),
    Var(
        "STUDIO_CHAT_REQUESTS_PER_MINUTE",
        "chat_requests_per_minute",
        _positive(int),
        "20",
        "Chat requests one visitor may start per minute.",
    ),
    Var(
        "STUDIO_CHAT_FIRST_TOKEN_TIMEOUT_S",
        "chat_first_token_timeout_s",
        _positive(float),
        "120",
        "How long Ollama may take to start answering (loading a model can be slow).",
    ),
    Var(
        "STUDIO_CHAT_TOKEN_TIMEOUT_S",
        "chat_token_timeout_s",
        _positive(float),
        "60",
        "Longest silence allowed between two tokens.",
    ),
    Var(
        "STUDIO_CHAT_TOKENS_PER_DAY",
        "chat_tokens_per_day",
        int,
        "0",
        "Tokens (prompt + answer) one account or visitor may use a day, over every chat replica; 0 = no limit.",
    ),
    Var(
        "STUDIO_SIGNUP",
        "signup",
        _signup,
        "open",
        "open: anyone may create an account; closed: only the operator adds accounts (`localai-studio users add`).",
    ),
    Var(
        "STUDIO_FIRST_USER_IS_OPERATOR",
        "first_user_is_operator",
        _bool,
        "true",
        "On a studio with no account yet, the first sign-up becomes the operator (production compose: false).",
    ),
    Var(
        "STUDIO_SMTP_URL",
        "smtp_url",
        Secret,
        "",
        "Mail server for password reset links: smtp://user:pass@host:587 (STARTTLS) or smtps://...:465; "
        "empty = reset links only from `localai-studio users reset-link`.",
        secret=True,
    ),
    Var(
        "STUDIO_MAIL_FROM",
        "mail_from",
        str,
        "",
        "Sender of the studio's e-mails; default no-reply@ the host of STUDIO_PUBLIC_URL.",
    ),
    Var(
        "STUDIO_CHAT_MAX_IMAGE_BYTES",
        "chat_max_image_bytes",
        _positive(int),
        "10485760",
        "Largest image (decoded bytes) a chat message may carry (PNG, JPEG, WebP or GIF).",
    ),
    Var("STUDIO_CHAT_MAX_IMAGES", "chat_max_images", _positive(int), "4", "Most images one chat message may carry."),
    Var(
        "STUDIO_ALERT_WEBHOOK_URL",
        "alert_webhook_url",
        _optional_url,
        "",
        "Slack-compatible webhook the monitor and ops scripts post alerts to; empty = no alerts.",
    ),
    Var(
        "STUDIO_SCALE_VISITORS",
        "scale_visitors",
        _positive(int),
        "100",
        "Time to add a server: the monitor alerts above this many concurrent visitors (across every server).",
    ),
    Var(
        "STUDIO_SCALE_CHAT_PER_S",
        "scale_chat_per_s",
        _positive(float),
        "50",
        "Time to add a server: the monitor alerts above this many chat requests a second (across every server).",
    ),
    Var(
        "STUDIO_SCALE_QUEUE_DEPTH",
        "scale_queue_depth",
        _positive(int),
        "10",
        "Time to add an Ollama node: the monitor alerts when more answers than this wait on one node.",
    ),
    Var(
        "STUDIO_SCALE_CPU_PERCENT",
        "scale_cpu_percent",
        _positive(float),
        "80",
        "Time to add a server: the monitor alerts when a server's CPU stays above this (percent of all cores).",
    ),
    Var(
        "STRIPE_SECRET_KEY",
        "stripe_secret_key",
        Secret,
        "",
        "Stripe API key (sk_test_... / sk_live_...); empty = paid models cannot be bought (unless test mode).",
        secret=True,
    ),
    Var(
        "STRIPE_WEBHOOK_SECRET",
        "stripe_webhook_secret",
        Secret,
        "",
        "Signing secret of the Stripe webhook endpoint (whsec_...); empty = webhooks refused.",
        secret=True,
    ),
    Var(
        "STUDIO_FALLBACK_API_KEY",
        "fallback_api_key",
        Secret,
        "",
        "API key sent to a catalog model's cloud fallback (`fallback` in the catalog); empty = no key sent.",
        secret=True,
    ),
    Var(
        "STUDIO_ADMIN_TOKEN",
        "admin_token",
        Secret,
        "",
        "Bearer token for operator routes; empty = operator routes closed.",
        secret=True,
    ),
    Var(
        "STUDIO_SECRET_KEY",
        "secret_key",
        Secret,
        "",
        "Signs visitor cookies; empty = generated once into the data dir.",
        secret=True,
    ),
)


@dataclass(frozen=True, repr=True)
class Settings:
    host: str
    port: int
    public_url: str | None
    data_dir: Path
    nats_url: str | None
    database_url: DatabaseUrl | None
    events_replicas: int
    nats_port: int
    nats_ca: Path | None
    nats_credentials_dir: Path | None
    ollama_url: str
    ollama_urls: tuple[str, ...]
    ollama_copies: int
    ollama_queue_max: int
    ollama_check_s: float
    log_level: str
    functions: tuple[str, ...]
    upstreams: dict[str, str]
    upstream_template: str
    max_body_bytes: int
    client_timeout_s: float
    streams_per_address: int
    writes_per_address_per_minute: int
    trusted_proxies: tuple[IPNetwork, ...]
    frontend_dir: Path | None
    heartbeat_s: float
    shutdown_grace_s: float
    nats_connect_timeout_s: float
    events_max_age_days: float
    events_lag_alert_s: float
    outbox_keep_days: float
    disk_min_free_mb: int
    events_max_bytes: int
    live_streams_max: int
    catalog_path: Path | None
    skip_payment: bool
    stripe_api_base: str
    ollama_models_dir: Path | None
    ollama_library_url: str
    server_memory_bytes: int
    reconcile_every_h: float
    chat_max_message_chars: int
    chat_max_messages: int
    chat_max_tokens: int
    chat_concurrent_per_visitor: int
    chat_requests_per_minute: int
    chat_first_token_timeout_s: float
    chat_token_timeout_s: float
    chat_tokens_per_day: int
    signup: str
    first_user_is_operator: bool
    smtp_url: Secret
    mail_from: str
    chat_max_image_bytes: int
    chat_max_images: int
    alert_webhook_url: str | None
    scale_visitors: int
    scale_chat_per_s: float
    scale_queue_depth: int
    scale_cpu_percent: float
    stripe_secret_key: Secret
    stripe_webhook_secret: Secret
    fallback_api_key: Secret
    admin_token: Secret
    secret_key: Secret

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
                    raise SettingsError(f"{var.env}_FILE={file} cannot be read: {exc.strerror}") from None
            try:
                values[var.attr] = var.parse(var.default if raw is None else raw)
            except (ValueError, TypeError) as exc:
                shown = "(hidden: a secret)" if var.secret and raw else repr(raw)
                raise SettingsError(f"{var.env}={shown} is not valid: {exc}. {var.doc}") from None
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

    @property
    def ollama_nodes(self) -> tuple[str, ...]:
        """Every Ollama node's URL: STUDIO_OLLAMA_URLS, or the single STUDIO_OLLAMA_URL."""
        return self.ollama_urls or (self.ollama_url.rstrip("/"),)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def visitor_url(self) -> str:
        return self.public_url or self.url

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

    def effective_nats_url(self) -> str:
        return self.nats_url or f"nats://127.0.0.1:{self.nats_port}"

    @property
    def chat_max_body_bytes(self) -> int:
        """Largest chat request body: one message's images at their limit (base64) and room for the text."""
        return max(512 * 1024, self.chat_max_images * (-(-self.chat_max_image_bytes // 3) * 4) + 1024 * 1024)

    def upstream_url(self, function: str) -> str:
        return self.upstreams.get(function) or self.upstream_template.format(function=function)

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


def markdown_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for var in VARS:
        default = f"`{var.default}`" if var.default else "(empty)"
        rows.append(f"| `{var.env}` | {default} | {var.doc} |")
    return "\n".join(rows)
