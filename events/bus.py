"""The event bus: the one place that talks to NATS.

- `publish(event)`: durable types go to JetStream with `Nats-Msg-Id` = event id (a retried publish is
  stored once); live types go to core NATS.
- `consume(...)`: a durable pull consumer (`<function>__<handler>`), shared by every replica that
  binds to it (pool semantics), running the ack policy of `events.delivery`. It fetches what is
  available in batches: a per-event handler runs up to `max_concurrency` events at once; a batch
  handler (`batch_size`) gets up to that many events in one call (a projection writes them in one
  transaction) and each is acknowledged after it returns. When a batch fails, its events are
  handled one by one, so a poison event is retried or dead-lettered alone and the others go on.
- `listen(...)`: a broadcast subscription on core NATS; every instance sees every matching event,
  durable and live alike, from now on.

`Bus` holds that behaviour once, over a few transport primitives (store a message, publish one, subscribe,
request, bind and pull a durable consumer). `Bus(url, ...)` opens a `NatsBus` (nats-py against a
nats-server), or for a `memory://name` URL a `MemoryBus` (events/memory.py: the same primitives inside
this process, for tests that need no nats-server, like FastStream's TestNatsBroker).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import DEFAULT_INBOX_PREFIX
from nats.aio.client import Client as NatsClient
from nats.js import api

from events.catalog import EventData, EventDeadLettered, data_class_for, durable_types
from events.correlation import correlation_id
from events.delivery import Backoff, Delivery, Pulled, Reject, Retry
from events.envelope import Event, InvalidEvent, nats_subject, new_id

log = logging.getLogger("studio.events")

STREAM = "STUDIO_EVENTS"
GATHER_S = 1.0  # at most this long to gather the messages a fetch's first one says are waiting
QUERY_PREFIX = "rpc.studio."  # request/reply queries: not events, so outside the `studio.` event subjects

ConsumerHandler = Callable[[Any, Delivery], Awaitable[None]]
BatchHandler = Callable[[list[Delivery]], Awaitable[None]]
Listener = Callable[[Event], Awaitable[None]]


class Message(Protocol):
    """A core message (a live event, a query): nats-py's `Msg`, or the in-memory bus's."""

    @property
    def subject(self) -> str: ...

    @property
    def data(self) -> bytes: ...

    async def respond(self, data: bytes) -> None: ...


class Subscription(Protocol):
    async def unsubscribe(self) -> None: ...


class PullSubscription(Protocol):
    """The pull side of a durable consumer bound in this process."""

    async def fetch(self, batch: int = 1, timeout: float | None = 5) -> Sequence[Pulled]: ...

    async def unsubscribe(self) -> None: ...


MessageCallback = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ConsumerLag:
    """How far behind one durable consumer is (events/lag.py)."""

    consumer: str
    pending: int
    ack_pending: int
    redelivered: int
    oldest_pending_s: float
    last_active_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class BusUnavailable(RuntimeError):
    """NATS (or JetStream) cannot be reached right now."""


class BusRefused(BusUnavailable):
    """NATS refused this process's credentials (or it has none and NATS requires them)."""


def _durable(event: Event) -> bool:
    """Whether the event goes into the durable stream (else core NATS, to whoever listens now)."""
    cls = data_class_for(event.type)
    return cls.DURABLE if cls is not None else False


def inbox_prefix(user: str) -> str:
    """Where a user's replies arrive (`_INBOX_<user>.>`): its permissions let only it subscribe there."""
    return f"_INBOX_{user}"


@dataclass(frozen=True)
class NatsLogin:
    """How to reach NATS: a user and password (studio.runtime.nats_users says what each may do), and the
    CA certificate the server's must chain to (TLS, a NATS cluster across servers)."""

    user: str
    password: str = field(repr=False)
    ca: Path | None = None

    @classmethod
    def anonymous(cls, ca: Path | None) -> NatsLogin | None:
        """No user (a NATS without users); still TLS when a CA is given."""
        return cls("", "", ca) if ca is not None else None

    def tls(self) -> ssl.SSLContext | None:
        if self.ca is None:
            return None
        try:
            return ssl.create_default_context(cafile=str(self.ca))
        except (OSError, ssl.SSLError) as exc:
            raise BusUnavailable(
                f"the NATS CA certificate {self.ca} cannot be read ({exc}): check STUDIO_NATS_CA"
            ) from None


class StreamRefused(RuntimeError):
    """JetStream will not create or resize the event stream (e.g. not enough storage for its limits)."""


INSUFFICIENT_STORAGE = 10047  # JetStream's err_code for a stream larger than the storage it has
NO_SUITABLE_PEERS = 10005  # a clustered stream placed before enough peers are known (the cluster is forming)


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """Retention of the durable stream. Power-loss safety is the server's `sync_interval`."""

    max_age_s: float = 30 * 86400
    max_bytes: int = 1 << 30
    duplicate_window_s: float = 600.0
    replicas: int = 1  # copies kept by a NATS cluster (STUDIO_EVENTS_REPLICAS); 3 survive losing a node

    def config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=STREAM,
            description="Local AI Studio durable events",
            subjects=[nats_subject(t) for t in durable_types()],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            discard=api.DiscardPolicy.OLD,
            max_age=self.max_age_s,
            max_bytes=self.max_bytes,
            duplicate_window=self.duplicate_window_s,
            num_replicas=self.replicas,
        )


def decode(event: Event) -> EventData | Event:
    """The typed data of a known event type, or the envelope itself for unknown types."""
    cls = data_class_for(event.type)
    return event if cls is None else cls.from_event(event)


# The NATS client's own errors that mean "NATS cannot be reached now" (code that calls the client
# directly, e.g. reading the stream, meets them in an outage); its other errors are bugs.
_NATS_DOWN = (
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.FlushTimeoutError,
    nats.js.errors.ServiceUnavailableError,
)


def is_bus_outage(exc: BaseException) -> bool:
    """`BusUnavailable`, or the client's own error for NATS being unreachable now."""
    return isinstance(exc, (BusUnavailable, *_NATS_DOWN))


def type_pattern_subject(pattern: str) -> str:
    """`purchase.*` / `*` / `install.completed` -> a NATS subject under the studio prefix."""
    if pattern in ("*", ">", ""):
        return nats_subject(">")
    return nats_subject(pattern)


def server_urls(url: str) -> list[str]:
    """`nats://a:4222,nats://b:4222` -> every node of a cluster; the client picks one and fails over."""
    return [u.strip() for u in url.split(",") if u.strip()]


class Bus:
    """The event bus every function, the gateway and the CLI use. `Bus(url, name=..., source=...)` is a
    `NatsBus`, or a `MemoryBus` for `memory://` (the transports register in `Bus.transports`)."""

    transports: ClassVar[dict[str, type[Bus]]] = {}  # URL scheme -> class; "nats" is the default

    def __new__(cls, url: str, *, name: str, source: str, login: NatsLogin | None = None) -> Bus:
        if cls is Bus:
            scheme = url.split("://", 1)[0] if "://" in url else "nats"
            transport = Bus.transports.get(scheme, Bus.transports.get("nats"))
            if transport is None:
                raise BusUnavailable(f"no bus for {url}")
            instance: Bus = super().__new__(transport)
            return instance
        return super().__new__(cls)

    def __init__(self, url: str, *, name: str, source: str, login: NatsLogin | None = None) -> None:
        self.url = url
        self.login = login
        self.servers = server_urls(url)
        self.name = name
        self.source = source
        self._consumers: list[Consumer] = []
        self._listeners: list[Subscription] = []
        self._listening: set[asyncio.Task[Any]] = set()  # the tasks inside a listener or a query answer now
        self.disconnected_since: float | None = None

    # -- the transport: what NatsBus and MemoryBus each do their way ------------------------------

    async def connect(self, *, timeout: float = 5.0) -> None:
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    @property
    def nc(self) -> NatsClient:
        """The NATS connection (tests and tools that speak JetStream directly); BusUnavailable without one."""
        raise BusUnavailable(f"{self.url} is not a NATS connection")

    async def wait_for_jetstream(self, timeout: float) -> None:
        raise NotImplementedError

    async def ensure_stream(self, policy: StreamPolicy | None = None, *, timeout: float = 10.0) -> api.StreamInfo:
        raise NotImplementedError

    async def wait_for_stream_leader(self, timeout: float) -> None:
        raise NotImplementedError

    async def stream_bytes(self) -> int:
        raise NotImplementedError

    async def jetstream_info(self, timeout: float = 1.0) -> dict[str, Any]:
        raise NotImplementedError

    async def consumer_lags(self) -> list[ConsumerLag]:
        """Every durable consumer of the stream with its lag, sorted by name (events/lag.py)."""
        raise NotImplementedError

    async def history(
        self, start: datetime | None, *, limit: int = 100_000, subjects: Sequence[str] | None = None
    ) -> list[Event]:
        """Durable events stored since `start` (None: all of them), oldest first."""
        raise NotImplementedError

    async def store(self, subject: str, data: bytes, *, msg_id: str, timeout: float) -> None:
        """Into the durable stream, once per `msg_id` (within the duplicate window)."""
        raise NotImplementedError

    async def send(self, subject: str, data: bytes) -> None:
        """On core NATS: whoever subscribes now."""
        raise NotImplementedError

    async def subscribe(self, subject: str, callback: MessageCallback, *, queue: str | None = None) -> Subscription:
        """Core messages on `subject` (NATS wildcards); with `queue`, one subscriber of the group gets each."""
        raise NotImplementedError

    async def request(self, subject: str, data: bytes, *, timeout: float) -> bytes:
        """The answer of one subscriber of `subject`; BusUnavailable when nobody answers in time."""
        raise NotImplementedError

    async def flush(self) -> None:
        """Until what this bus sent (subscriptions included) has reached the server."""
        raise NotImplementedError

    async def _bind(self, name: str, subjects: list[str], *, ack_wait: float, max_deliver: int, in_flight: int) -> None:
        """Create (or update) the durable consumer `name`."""
        raise NotImplementedError

    async def _pull(self, name: str) -> PullSubscription:
        raise NotImplementedError

    async def _disconnect(self) -> None:
        raise NotImplementedError

    # -- publishing ------------------------------------------------------------------------------

    async def publish(self, event: Event, *, timeout: float = 5.0) -> None:
        if _durable(event):
            await self.store(event.nats_subject, event.to_json(), msg_id=event.id, timeout=timeout)
        else:
            await self.send(event.nats_subject, event.to_json())

    async def publish_many(self, events: Iterable[Event], *, timeout: float = 5.0) -> None:
        """Publish several events with their acknowledgements awaited together (pipelined)."""
        await asyncio.gather(*(self.publish(e, timeout=timeout) for e in events))

    async def republish(self, event: Event) -> None:
        """Put a stored event into the stream again (a dead letter's redrive), under a fresh message id so
        the duplicate window does not drop it."""
        await self.store(event.nats_subject, event.to_json(), msg_id=f"{event.id}.{new_id()}", timeout=5.0)

    # -- consuming -------------------------------------------------------------------------------

    async def consume(
        self,
        name: str,
        types: Iterable[str],
        handler: ConsumerHandler | BatchHandler,
        *,
        max_concurrency: int = 1,
        max_attempts: int = 5,
        ack_wait: float = 30.0,
        backoff: Backoff | None = None,
        batch_size: int = 0,
    ) -> Consumer:
        """Bind to (creating or updating) the durable consumer `name` and start pulling.

        `batch_size` 0: `handler(data, delivery)` per event, up to `max_concurrency` at once.
        `batch_size` n: `handler(deliveries)` with up to n events (`delivery.data` is each one's data).
        """
        subjects = [nats_subject(t) for t in types]
        in_flight = batch_size * 2 if batch_size else max(max_concurrency * 2, 16)
        # max_deliver is a backstop: we terminate after max_attempts ourselves
        await self._bind(name, subjects, ack_wait=ack_wait, max_deliver=max_attempts + 2, in_flight=in_flight)
        consumer = Consumer(
            bus=self,
            name=name,
            handler=handler,
            max_concurrency=max_concurrency,
            batch_size=batch_size,
            max_attempts=max_attempts,
            ack_wait=ack_wait,
            backoff=backoff or Backoff(),
        )
        await consumer.start()
        self._consumers.append(consumer)
        return consumer

    def consumer(self, name: str) -> Consumer:
        """This process's pull loop of the durable consumer `name` (to pause or resume it)."""
        for consumer in self._consumers:
            if consumer.name == name:
                return consumer
        raise KeyError(f"no consumer {name!r} runs in this process")

    async def listen(self, pattern: str, listener: Listener, *, queue: str | None = None) -> Subscription:
        """Broadcast: every event whose type matches `pattern` (NATS wildcards), from now on. With
        `queue`, the listeners sharing that name (on any server) split the events: one sees each."""

        async def on_message(msg: Message) -> None:
            try:
                event = Event.from_json(msg.data)
            except InvalidEvent as exc:
                log.warning("ignored a malformed message on %s: %s", msg.subject, exc)
                return
            task = asyncio.current_task()
            if task is not None:
                self._listening.add(task)
            try:
                await listener(event)
            except Exception:
                log.exception("listener failed on %s", event.type, extra={"event_id": event.id})
            finally:
                self._listening.discard(task)

        sub = await self.subscribe(type_pattern_subject(pattern), on_message, queue=queue)
        self._listeners.append(sub)
        return sub

    # -- queries (request/reply) ----------------------------------------------------------------

    async def respond(self, name: str, answer: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> Subscription:
        """Answer queries named `name`; replicas share them (one answers each)."""

        async def on_request(msg: Message) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._listening.add(task)
            try:
                reply = await answer(json.loads(msg.data))
            except Exception as exc:
                log.exception("query %s failed", name)
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                self._listening.discard(task)
            with contextlib.suppress(Exception):
                await msg.respond(json.dumps(reply, separators=(",", ":")).encode())

        sub = await self.subscribe(QUERY_PREFIX + name, on_request, queue=name)
        self._listeners.append(sub)
        return sub

    async def query(self, name: str, payload: dict[str, Any], *, timeout: float = 2.0) -> dict[str, Any]:
        """Ask whichever replica answers `name`; raises BusUnavailable when nobody does in time."""
        try:
            data = await self.request(QUERY_PREFIX + name, json.dumps(payload).encode(), timeout=timeout)
        except BusUnavailable as exc:
            raise BusUnavailable(f"no answer to {name}: {exc}") from None
        reply: dict[str, Any] = json.loads(data)
        if "error" in reply:
            raise BusUnavailable(f"{name} failed: {reply['error']}")
        return reply

    async def dead_letter(self, event: Event, consumer: str, attempts: int, reason: str, error: str) -> None:
        data = EventDeadLettered(
            event_id=event.id,
            event_type=event.type,
            consumer=consumer,
            attempts=attempts,
            reason=reason,
            error=error[:500],
        )
        await self.publish(
            Event(
                type=data.TYPE,
                source=self.source,
                data=data.to_data(),
                subject=data.subject,
                correlationid=event.correlationid or event.id,
            )
        )

    # -- shutdown --------------------------------------------------------------------------------

    async def stop_consuming(self, grace: float = 10.0) -> None:
        """Stop fetching; in-flight handlers get `grace` seconds, then their events are handed back."""
        consumers, self._consumers = self._consumers, []
        await asyncio.gather(*(c.stop(grace) for c in consumers), return_exceptions=True)

    async def stop_listening(self, grace: float = 10.0) -> None:
        """Stop live listeners and query answers: no new message reaches them; those already
        delivered finish (up to `grace` seconds, then they are cut)."""
        subs, self._listeners = self._listeners, []

        async def stop(sub: Subscription) -> None:
            drain = getattr(sub, "drain", None)  # NATS: no new message, the delivered ones handled
            try:
                if drain is None:
                    await sub.unsubscribe()
                else:
                    await asyncio.wait_for(drain(), grace)
            except Exception:  # timed out, or the connection is gone: cut it
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

        await asyncio.gather(*(stop(sub) for sub in subs), return_exceptions=True)
        cut = list(self._listening)  # still in a listener after the grace period: cut it now
        for task in cut:
            task.cancel()
        await asyncio.gather(*cut, return_exceptions=True)

    async def close(self, grace: float = 10.0) -> None:
        """Stop consuming and listening (see `stop_consuming`, `stop_listening`), then drain the connection."""
        await self.stop_consuming(grace)
        await self.stop_listening(grace)
        await self._disconnect()


class NatsBus(Bus):
    """The bus on a nats-server (or cluster) with JetStream."""

    def __init__(self, url: str, *, name: str, source: str, login: NatsLogin | None = None) -> None:
        super().__init__(url, name=name, source=source, login=login)
        self._nc: NatsClient | None = None
        self._closing = False
        self._refused = asyncio.Event()

    # -- connection ------------------------------------------------------------------------------

    async def connect(self, *, timeout: float = 5.0) -> None:
        """Connect, retrying until `timeout`; then keep reconnecting forever."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_error: Exception | None = None
        while True:
            remaining = max(0.5, deadline - loop.time())
            try:
                # nats-py retries an unanswered first connect forever when reconnects are unlimited,
                # so the overall wait is bounded here; a refused login ends it at once (`_on_error`).
                self._nc = await self._connect_once(remaining)
                return
            except nats.errors.AuthorizationError:
                user = self.login.user if self.login else ""
                who = f"the user {user!r}" if user else "a client without credentials"
                raise BusRefused(
                    f"NATS at {self.url} refused {who}: the password in STUDIO_NATS_CREDENTIALS_DIR must be the one "
                    "nats-server was given (`localai-studio nats credentials`, docs/operators/locking-down.md)"
                ) from None
            except (TimeoutError, OSError, nats.errors.Error) as exc:
                last_error = exc
                if loop.time() >= deadline:
                    raise BusUnavailable(
                        f"NATS at {self.url} does not answer ({type(last_error).__name__}: {last_error})"
                    ) from None
                await asyncio.sleep(0.25)

    async def _connect_once(self, timeout: float) -> NatsClient:
        nc = NatsClient()
        self._refused = refused = asyncio.Event()
        user = self.login.user if self.login else ""
        connecting = asyncio.ensure_future(
            asyncio.wait_for(
                nc.connect(
                    servers=self.servers,
                    name=self.name,
                    connect_timeout=2,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,  # type: ignore[arg-type]  # annotated int, used as seconds
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    error_cb=self._on_error,
                    user=user or None,
                    password=self.login.password if self.login and user else None,
                    inbox_prefix=inbox_prefix(user) if user else DEFAULT_INBOX_PREFIX,
                    tls=self.login.tls() if self.login else None,
                ),
                timeout=timeout,
            )
        )
        waiting = asyncio.ensure_future(refused.wait())
        try:
            await asyncio.wait({connecting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await connecting
            with contextlib.suppress(Exception):
                await nc.close()
            raise nats.errors.AuthorizationError()
        connecting.result()  # raises what the connect raised
        return nc

    async def _on_disconnected(self) -> None:
        if self._closing:
            return
        if self.disconnected_since is None:
            self.disconnected_since = asyncio.get_running_loop().time()
        log.warning("NATS connection lost; reconnecting", extra={"nats_url": self.url})

    async def _on_reconnected(self) -> None:
        self.disconnected_since = None
        self._refused.clear()
        server = self._nc.connected_url if self._nc is not None else None
        log.info("NATS connection restored", extra={"nats_url": self.url, "server": getattr(server, "netloc", None)})

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in str(exc).lower():
            if self._nc is None:  # the first connect: the login is wrong, retrying cannot help
                self._refused.set()
            elif not self._refused.is_set():  # once per outage, not at every reconnect attempt
                self._refused.set()
                log.error(
                    "NATS refused this process's login while reconnecting: were the credentials rotated? Restart "
                    "this service so it reads its new password (docs/operators/locking-down.md)"
                )
            return
        if "permissions violation" in str(exc).lower():  # a subject this user's contract does not allow
            log.error("NATS refused: %s", exc, extra={"nats_user": self.login.user if self.login else None})
            return
        log.debug("NATS client error: %s", exc)

    @property
    def nc(self) -> NatsClient:
        if self._nc is None:
            raise BusUnavailable("the bus is not connected")
        return self._nc

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def wait_for_jetstream(self, timeout: float) -> None:
        """Until JetStream answers: a NATS cluster answers once a majority of its nodes is up and has
        elected a leader (its servers may start in any order). Raises BusUnavailable after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                await self.nc.jsm().account_info()
                return
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                if loop.time() >= deadline:
                    raise BusUnavailable(
                        f"JetStream at {self.url} does not answer ({type(exc).__name__}): is JetStream on, and "
                        "with a NATS cluster, are most of its nodes up (2 of 3) and routed to each other?"
                    ) from None
                await asyncio.sleep(0.5)

    async def ensure_stream(self, policy: StreamPolicy | None = None, *, timeout: float = 10.0) -> api.StreamInfo:
        """Create or update the durable stream; safe to run from every process at start-up. A NATS cluster
        still forming (its JetStream API times out, or too few peers are known yet to place the copies) is
        waited for, up to `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                return await self._ensure_stream(policy)
            except (nats.errors.TimeoutError, nats.js.errors.BadRequestError) as exc:
                forming = isinstance(exc, nats.errors.TimeoutError) or exc.err_code == NO_SUITABLE_PEERS
                if not forming or loop.time() >= deadline:
                    raise
                log.info("the NATS cluster is still forming; creating the event stream again shortly")
                await asyncio.sleep(0.5)

    async def _ensure_stream(self, policy: StreamPolicy | None) -> api.StreamInfo:
        config = (policy or StreamPolicy()).config()
        jsm = self.nc.jsm()
        try:
            try:
                info = await jsm.stream_info(STREAM)
            except nats.js.errors.NotFoundError:
                try:
                    return await jsm.add_stream(config)
                except nats.js.errors.BadRequestError as exc:  # another process created it first
                    if exc.err_code == INSUFFICIENT_STORAGE:
                        raise
                    info = await jsm.stream_info(STREAM)
            current = info.config
            if (
                sorted(current.subjects or []) != sorted(config.subjects or [])
                or current.max_age != config.max_age
                or current.max_bytes != config.max_bytes
                or current.duplicate_window != config.duplicate_window
                or (current.num_replicas or 1) != config.num_replicas
            ):
                info = await jsm.update_stream(config)
                log.info(
                    "updated stream %s",
                    STREAM,
                    extra={"subjects": config.subjects, "max_bytes": config.max_bytes, "replicas": config.num_replicas},
                )
        except nats.js.errors.APIError as exc:
            if exc.err_code != INSUFFICIENT_STORAGE:
                raise
            raise StreamRefused(
                f"JetStream has not enough storage for the event stream's {config.max_bytes} bytes "
                f"({exc.description}): free disk space where NATS stores its data, or lower STUDIO_EVENTS_MAX_BYTES"
            ) from None
        return info

    async def wait_for_stream_leader(self, timeout: float) -> None:
        """Until the event stream has a leader: a stream just created (or grown) on a NATS cluster takes
        a moment to elect one, and until then refuses publishes (NoStreamResponse) and new consumers."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                info = await self.nc.jsm().stream_info(STREAM)
                if info.cluster is None or info.cluster.leader:
                    return
                problem = "it has no leader yet"
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                problem = type(exc).__name__
            if loop.time() >= deadline:
                raise BusUnavailable(
                    f"the event stream on {self.url} is not available ({problem}): with a NATS cluster, are most "
                    "of its nodes up and routed to each other?"
                )
            await asyncio.sleep(0.2)

    async def stream_bytes(self) -> int:
        """Bytes the event stream holds now (0 before it exists)."""
        try:
            info = await self.nc.jsm().stream_info(STREAM)
        except nats.js.errors.NotFoundError:
            return 0
        return info.state.bytes

    async def jetstream_info(self, timeout: float = 1.0) -> dict[str, Any]:
        """A small report for health checks; raises BusUnavailable."""
        try:
            info = await self.nc.jsm().stream_info(STREAM)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise BusUnavailable(f"JetStream did not answer: {type(exc).__name__}") from None
        return {
            "stream": STREAM,
            "messages": info.state.messages,
            "bytes": info.state.bytes,
            "max_bytes": info.config.max_bytes,
            "consumers": info.state.consumer_count,
        }

    async def publish_many(self, events: Iterable[Event], *, timeout: float = 5.0) -> None:
        """Stored events sent back to back, each with its own reply subject under one inbox subscription, and
        their acknowledgements awaited together: nats-py's JetStream publish is a request each (its own
        inbox token, future and timer), about three times the CPU per event (the outbox publishes every
        chat answer's usage event this way: tests/bench/relay_bench.py). Any refusal fails the lot; the
        outbox publishes it again, and the stream keeps one of each event id."""
        events = list(events)
        stored = [e for e in events if _durable(e)]
        if len(stored) < 2:
            await super().publish_many(events, timeout=timeout)
            return
        await asyncio.gather(
            self._store_many(stored, timeout),
            *(self.send(e.nats_subject, e.to_json()) for e in events if not _durable(e)),
        )

    async def _store_many(self, events: list[Event], timeout: float) -> None:
        nc = self.nc
        inbox = nc.new_inbox()
        done = asyncio.get_running_loop().create_future()
        left, problems = len(events), []

        async def acknowledged(msg: Any) -> None:
            nonlocal left
            if msg.headers and msg.headers.get("Status"):  # 503: no stream takes the subject
                problems.append(f"NATS status {msg.headers.get('Status')}")
            else:
                try:
                    ack = json.loads(msg.data)
                except ValueError:
                    ack = {"error": "an unreadable acknowledgement"}
                if not isinstance(ack, dict) or "error" in ack:
                    problems.append(f"JetStream refused it: {ack.get('error') if isinstance(ack, dict) else ack}")
            left -= 1
            if (left == 0 or problems) and not done.done():
                done.set_result(None)

        try:
            sub = await nc.subscribe(inbox + ".*", cb=acknowledged)
            try:
                for i, event in enumerate(events):
                    await nc.publish(
                        event.nats_subject, event.to_json(), reply=f"{inbox}.{i}", headers={"Nats-Msg-Id": event.id}
                    )
                async with asyncio.timeout(timeout):
                    await done
            finally:
                with contextlib.suppress(nats.errors.Error, OSError):
                    await sub.unsubscribe()
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise BusUnavailable(f"could not publish {len(events)} events: {type(exc).__name__}") from None
        if problems:
            raise BusUnavailable(f"could not publish {len(events)} events: {problems[0]}")

    async def store(self, subject: str, data: bytes, *, msg_id: str, timeout: float) -> None:
        try:
            await self.nc.jetstream().publish(subject, data, timeout=timeout, headers={"Nats-Msg-Id": msg_id})
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise BusUnavailable(f"could not publish to {subject}: {type(exc).__name__}") from None

    async def flush(self) -> None:
        # nats-py's flush() writes its PING straight to the socket, ahead of the commands still queued for
        # its flusher task (a SUB just made): the PONG can come back before the server has seen them, and
        # a subscriber then misses what is published next (tests/cluster/test_one_replica.py, seen under
        # load). The first round trip lets the flusher write what was queued; the second PING follows it.
        await self.nc.flush()
        await self.nc.flush()

    async def send(self, subject: str, data: bytes) -> None:
        try:
            await self.nc.publish(subject, data)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise BusUnavailable(f"could not publish to {subject}: {type(exc).__name__}") from None

    async def subscribe(self, subject: str, callback: MessageCallback, *, queue: str | None = None) -> Subscription:
        sub: Subscription = await self.nc.subscribe(subject, queue=queue or "", cb=callback)
        return sub

    async def request(self, subject: str, data: bytes, *, timeout: float) -> bytes:
        if not self.connected:  # nobody can answer: at once, not after `timeout` (nats.py would hold it meanwhile)
            raise BusUnavailable("not connected to NATS")
        try:
            msg = await self.nc.request(subject, data, timeout=timeout)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise BusUnavailable(type(exc).__name__) from None
        return msg.data

    async def _bind(self, name: str, subjects: list[str], *, ack_wait: float, max_deliver: int, in_flight: int) -> None:
        config = api.ConsumerConfig(
            durable_name=name,
            name=name,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            max_ack_pending=in_flight,
            **({"filter_subject": subjects[0]} if len(subjects) == 1 else {"filter_subjects": subjects}),
        )
        await self.nc.jsm().add_consumer(STREAM, config)  # creates, or updates a changed config

    async def _pull(self, name: str) -> PullSubscription:
        psub: PullSubscription = await self.nc.jetstream().pull_subscribe_bind(durable=name, stream=STREAM)
        return psub

    async def consumer_lags(self) -> list[ConsumerLag]:
        if not self.connected:  # at once, not after JetStream's API timeout
            raise BusUnavailable("not connected to NATS")
        infos = await self.nc.jsm().consumers_info(STREAM)
        now = datetime.now(UTC)
        out = []
        for info in infos:
            if not info.config.durable_name:
                continue  # an ephemeral reader (events tail), not a consumer that must keep up
            oldest = await self._oldest_unacked(info)
            active = [s.last_active for s in (info.delivered, info.ack_floor) if s is not None and s.last_active]
            out.append(
                ConsumerLag(
                    consumer=info.name,
                    pending=info.num_pending or 0,
                    ack_pending=info.num_ack_pending or 0,
                    redelivered=info.num_redelivered or 0,
                    oldest_pending_s=round(_since(oldest, now) or 0.0, 3),
                    last_active_s=None if not active else round(_since(max(active), now) or 0.0, 3),
                )
            )
        return sorted(out, key=lambda lag: lag.consumer)

    async def _oldest_unacked(self, info: api.ConsumerInfo) -> datetime | None:
        """When the oldest event this consumer has not acknowledged was stored (None: there is none)."""
        if not (info.num_pending or info.num_ack_pending):
            return None
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        config = info.config
        subjects = list(config.filter_subjects or []) or [config.filter_subject or ">"]
        jsm = self.nc.jsm()
        times = []
        for subject in subjects:
            try:
                msg = await jsm.get_msg(STREAM, seq=floor + 1, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                continue
            if msg.time is not None:
                times.append(msg.time)
        return min(times) if times else None

    async def history(
        self, start: datetime | None, *, limit: int = 100_000, subjects: Sequence[str] | None = None
    ) -> list[Event]:
        """Read by an ephemeral consumer."""
        if not self.connected:  # at once, not after JetStream's API timeout
            raise BusUnavailable("not connected to NATS")
        js = self.nc.jetstream()
        by_time = {"deliver_policy": api.DeliverPolicy.BY_START_TIME, "opt_start_time": start}
        only = (
            {}
            if not subjects
            else {"filter_subject": subjects[0]}
            if len(subjects) == 1
            else {"filter_subjects": list(subjects)}
        )
        info = await self.nc.jsm().add_consumer(
            STREAM,
            api.ConsumerConfig(
                **only,
                **(by_time if start is not None else {"deliver_policy": api.DeliverPolicy.ALL}),
                ack_policy=api.AckPolicy.NONE,
                inactive_threshold=30.0,
                mem_storage=True,
            ),
        )
        psub = await js.pull_subscribe_bind(consumer=info.name, stream=STREAM)
        events: list[Event] = []
        try:
            pending = info.num_pending or 0
            while pending > 0 and len(events) < limit:
                try:
                    msgs = await psub.fetch(batch=min(500, pending), timeout=2)
                except nats.errors.TimeoutError:
                    break
                for msg in msgs:
                    with contextlib.suppress(InvalidEvent):
                        events.append(Event.from_json(msg.data))
                    pending = msg.metadata.num_pending
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
            with contextlib.suppress(Exception):
                await self.nc.jsm().delete_consumer(STREAM, info.name)
        return events

    async def _disconnect(self) -> None:
        self._closing = True
        if self._nc is not None and not self._nc.is_closed:
            try:
                await asyncio.wait_for(self._nc.drain(), timeout=5)
            except (TimeoutError, Exception):
                with contextlib.suppress(Exception):
                    await self._nc.close()
        self._nc = None


Bus.transports["nats"] = NatsBus


def _since(when: datetime | None, now: datetime) -> float | None:
    return None if when is None else max(0.0, (now - when).total_seconds())


@dataclass(eq=False)
class Consumer:
    """The pull loop of one durable consumer in this process."""

    bus: Bus
    name: str
    handler: ConsumerHandler | BatchHandler
    max_concurrency: int
    max_attempts: int
    ack_wait: float
    backoff: Backoff
    batch_size: int = 0
    handled: int = 0  # events acknowledged or dead-lettered by this process
    _task: asyncio.Task[None] | None = None
    _inflight: set[asyncio.Task[None]] = field(default_factory=set)
    _stopping: bool = False
    _slot_free: asyncio.Event = field(default_factory=asyncio.Event)
    _fetching: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self._psub = await self.bus._pull(self.name)
        self._fetching.set()
        self._task = asyncio.create_task(self._loop(), name=f"consumer:{self.name}")

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def _fetch(self, n: int) -> list[Pulled]:
        """Up to `n` messages: the first as soon as there is one (waiting up to 2 s), then as many of
        those waiting behind it (its `num_pending`) as fit. (One `fetch(n)` would hold the first
        message until n came or its whole timeout passed: seconds of lag at a trickle.)"""
        try:
            msgs = list(await self._psub.fetch(batch=1, timeout=2.0))
        except nats.errors.TimeoutError:
            return []
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
            if not self._stopping:
                await asyncio.sleep(0.5)
            return []
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            log.debug("fetch on %s failed: %s", self.name, exc)
            await asyncio.sleep(0.5)
            return []
        waiting = min(n - len(msgs), msgs[-1].metadata.num_pending) if msgs else 0
        if waiting > 0:  # there now: this returns as soon as they came (unless a replica took some)
            with contextlib.suppress(TimeoutError, nats.errors.Error, OSError):
                msgs += list(await self._psub.fetch(batch=waiting, timeout=GATHER_S))
        return msgs

    def pause(self) -> None:
        """Stop fetching (events wait in JetStream; what is in flight finishes) until `resume()`."""
        self._fetching.clear()

    def resume(self) -> None:
        self._fetching.set()

    async def _loop(self) -> None:
        while not self._stopping:
            await self._fetching.wait()
            if self._stopping:
                return
            if self.batch_size:
                await self._batch_loop()
                return
            free = self.max_concurrency - len(self._inflight)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            for msg in await self._fetch(free):
                task = asyncio.create_task(self._handle(msg))
                self._inflight.add(task)
                task.add_done_callback(self._done)

    async def _batch_loop(self) -> None:
        """One batch handled at a time, in stream order, while the next one is being fetched
        (the handler's transaction runs in the database thread, so the fetch costs nothing)."""
        handling: asyncio.Task[None] | None = None
        msgs: list[Pulled] = []
        try:
            while not self._stopping:
                await self._fetching.wait()
                msgs = await self._fetch(self.batch_size) if not self._stopping else []
                if handling is not None:
                    await asyncio.shield(handling)
                    handling = None
                if msgs:
                    handling = asyncio.create_task(self._handle_batch(msgs))
                    self._inflight.add(handling)  # `stop` lets it finish within the grace period
                    handling.add_done_callback(self._done)
                    msgs = []
        except asyncio.CancelledError:
            for msg in msgs:  # fetched, never started: hand them back now, not after the ack wait
                with contextlib.suppress(Exception):
                    await msg.nak()
            return

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slot_free.set()

    async def _keep_lease(self, msgs: list[Pulled]) -> None:
        while True:
            await asyncio.sleep(self.ack_wait / 3)
            for msg in msgs:
                with contextlib.suppress(Exception):
                    await msg.in_progress()

    async def _delivery(self, msg: Pulled) -> Delivery | None:
        """The delivery of `msg`, or None when it is malformed (then it is dead-lettered at once)."""
        attempt = msg.metadata.num_delivered
        try:
            event = Event.from_json(msg.data)
            payload = decode(event)
        except InvalidEvent as exc:
            raw = Event(
                type="unknown", source="unknown", data={}, id=msg.header.get("Nats-Msg-Id", "?") if msg.header else "?"
            )
            await self._give_up(msg, raw, attempt, "rejected", str(exc))
            return None
        return Delivery(
            event=event, consumer=self.name, attempt=attempt, max_attempts=self.max_attempts, _msg=msg, data=payload
        )

    async def _handle(self, msg: Pulled) -> None:
        delivery = await self._delivery(msg)
        if delivery is not None:
            await self._run_one(delivery, self.handler)  # type: ignore[arg-type]

    async def _run_one(self, delivery: Delivery, handler: ConsumerHandler) -> None:
        """Handle one event under the ack policy: ack, redeliver with backoff, or dead-letter."""
        msg, event, attempt = delivery._msg, delivery.event, delivery.attempt
        assert msg is not None
        token = correlation_id.set(event.correlationid or event.id)
        lease = asyncio.create_task(self._keep_lease([msg]))
        extra = {"event_id": event.id, "event_type": event.type, "consumer": self.name, "attempt": attempt}
        try:
            await handler(delivery.data, delivery)
        except Reject as exc:
            log.error("rejected %s: %s", event.type, exc, extra=extra)
            await self._give_up(msg, event, attempt, "rejected", str(exc))
        except asyncio.CancelledError:
            # Shutdown before the handler finished: hand the event back for another replica/restart.
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception as exc:
            if isinstance(exc, Retry):
                log.warning("retrying %s: %s", event.type, exc, extra=extra)
            else:
                log.exception("handler failed on %s", event.type, extra=extra)
            if attempt >= self.max_attempts:
                await self._give_up(msg, event, attempt, "exhausted", f"{type(exc).__name__}: {exc}")
            else:
                delay = exc.delay if isinstance(exc, Retry) and exc.delay is not None else None
                with contextlib.suppress(Exception):
                    await msg.nak(delay=delay if delay is not None else self.backoff.delay(attempt))
        else:
            self.handled += 1
            with contextlib.suppress(Exception):
                await msg.ack()
        finally:
            lease.cancel()
            correlation_id.reset(token)

    async def _handle_batch(self, msgs: list[Pulled]) -> None:
        """The whole batch in one call, acked after it returns; if it raises, one event at a time."""
        deliveries = [d for d in [await self._delivery(m) for m in msgs] if d is not None]
        if not deliveries:
            return
        handler: BatchHandler = self.handler  # type: ignore[assignment]
        if len(deliveries) > 1:
            lease = asyncio.create_task(self._keep_lease([m for m in msgs]))
            try:
                await handler(deliveries)
            except asyncio.CancelledError:
                for d in deliveries:
                    with contextlib.suppress(Exception):
                        await d._msg.nak()  # type: ignore[union-attr]
                raise
            except Exception as exc:
                log.warning(
                    "a batch of %d failed (%s: %s); handling its events one by one",
                    len(deliveries),
                    type(exc).__name__,
                    exc,
                    extra={"consumer": self.name},
                )
            else:
                self.handled += len(deliveries)
                for d in deliveries:
                    with contextlib.suppress(Exception):
                        await d._msg.ack()  # type: ignore[union-attr]
                return
            finally:
                lease.cancel()

        async def alone(data: Any, delivery: Delivery) -> None:
            await handler([delivery])

        for d in deliveries:
            await self._run_one(d, alone)

    async def _give_up(self, msg: Pulled, event: Event, attempt: int, reason: str, error: str) -> None:
        """Dead-letter first, then terminate; if the dead letter cannot be published, retry later."""
        try:
            await self.bus.dead_letter(event, self.name, attempt, reason, error)
        except Exception:
            log.exception("could not publish the dead letter; will redeliver", extra={"event_id": event.id})
            with contextlib.suppress(Exception):
                await msg.nak(delay=self.backoff.delay(attempt))
            return
        self.handled += 1
        with contextlib.suppress(Exception):
            await msg.term()

    async def stop(self, grace: float) -> None:
        self._stopping = True
        self._slot_free.set()
        self._fetching.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._psub.unsubscribe()
