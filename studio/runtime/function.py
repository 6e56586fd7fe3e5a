"""`Function`: what a function module declares. The runtime (`Host`) brings it to life.

A handler module creates one `Function`, then decorates its handlers:

    function = Function("install", migrations=Path(__file__).parent / "migrations")

    class InstallRequest(msgspec.Struct):            # the body's type: decoded and checked before the handler
        model: Annotated[str, Meta(min_length=1, description="a catalog model id, e.g. llama3.2:3b")]

    @function.route(
        "POST", "/api/models/install",
        summary="(Re)install an owned model",        # one line: the API reference's title for it
        body=InstallRequest, response=InstallAccepted, status=202, errors=(403, 404, 409),
        max_body=4 * KIB, needs_session=True,         # the gateway's policy for it (studio/runtime/routes.py)
    )
    async def request_install(request: web.Request, body: InstallRequest) -> web.Response: ...

A route declares everything about itself: method and path (an aiohttp template; `{tail:.*}` covers
everything below), the body's type (a msgspec Struct, or None: the handler reads the body itself),
the answer's type and status for the docs, the errors it answers, who may call it (`operator`,
`visitor`, `needs_session`, `keys`), `timeout`, `max_body` and `stream`. The gateway's route table,
the OpenAPI document and the body checks all come from it (docs/contracts.md). A body that does not
fit its type is a 400 (`invalid_json`, `unknown_field`, `invalid_<field>`: studio/runtime/bodies.py)
before the handler runs; `decode=False` keeps `body` for the docs while the handler reads the bytes
itself (the Stripe webhook verifies them as signed).

    @function.subscribe(PurchaseCompleted, InstallRequested, max_concurrency=2)
    async def install_model(event: PurchaseCompleted | InstallRequested, delivery: Delivery) -> None: ...

    @function.subscribe(PurchaseCompleted, PurchaseRevoked, batch=True)   # a projection: many events, one commit
    async def track_ownership(deliveries: list[Delivery]) -> None: ...

    @function.listen("install.progressed")          # broadcast: every replica sees every event
    async def remember_progress(event: Event) -> None: ...

    @function.resource                               # a dependency with a lifetime (cleanup_ctx)
    async def ollama(fn: Function) -> AsyncIterator[None]:
        fn[OLLAMA] = client = OllamaClient(fn.settings.ollama_url); yield; await client.close()

While running, `function.settings`, `.bus`, `.db` and the resources (`function[KEY]`) are bound.

What a function may say on the bus is declared with it too: `publishes=` the event types it emits,
`asks=` the queries it sends. With its subscriptions, listeners and answers, they are its contract,
and its NATS user's permissions are derived from them (`studio.runtime.nats_users`): NATS refuses a
function anything else, and `function.event(...)` refuses an undeclared type at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from aiohttp import web

from events.bus import Bus, BusUnavailable
from events.catalog import EventData
from events.correlation import correlation_id
from events.delivery import Backoff
from events.envelope import Event
from studio.runtime import bodies
from studio.runtime.database import Database, Migrations
from studio.runtime.errors import (
    PAYLOAD_ERRORS,
    ClientHungUp,
    PayloadTooLarge,
    StudioError,
    bus_down,
)
from studio.runtime.logs import current_function
from studio.runtime.metrics import RequestStats
from studio.runtime.retention import Retention
from studio.runtime.routes import BodyLimit, HttpHandler, Route

if TYPE_CHECKING:
    from studio.runtime.settings import Settings

T = TypeVar("T")
Resource = Callable[["Function"], AsyncIterator[None]]
BATCH_SIZE = 256  # events a batch handler gets at most at once (JetStream fetch + one transaction)


class Key(Generic[T]):
    """A typed key for a function's resources: `OLLAMA = Key[OllamaClient]("ollama")`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Key({self.name!r})"


@dataclass(frozen=True)
class SubscriptionSpec:
    handler: Callable[..., Awaitable[None]]
    types: tuple[str, ...]
    broadcast: bool
    max_concurrency: int = 1
    max_attempts: int = 5
    ack_wait: float = 30.0
    backoff: Backoff = field(default_factory=Backoff)
    envelope: bool = False
    batch_size: int = 0  # > 0: the handler takes a list of deliveries (up to this many)
    one_replica: bool = False  # live events: one replica (a NATS queue group) sees each, not all of them

    def consumer_name(self, function: str) -> str:
        return f"{function}__{self.handler.__name__}"


def _type_name(t: type[EventData] | str) -> str:
    return t if isinstance(t, str) else t.TYPE


# Published by the runtime for every function (Host, Bus): never declared by one.
RUNTIME_EVENTS = frozenset(
    {
        "function.started",
        "function.stopped",
        "heartbeat.emitted",
        "resource.exhausted",
        "resource.recovered",
        "event.dead_lettered",
    }
)


class UndeclaredEvent(RuntimeError):
    """A function built an event of a type its declaration does not list in `publishes=`."""


class Function:
    def __init__(
        self,
        name: str,
        *,
        migrations: Path | None = None,
        uses_database: bool = False,
        publishes: tuple[type[EventData] | str, ...] | None = None,
        asks: tuple[str, ...] = (),
        reads_stream: bool = False,
        redrives: bool = False,
    ) -> None:
        """`publishes`: every event type it emits (None: undeclared, a test's sample function: anything).
        `asks`: the queries it sends. `reads_stream`: it reads the stored stream and its consumers itself
        (health, monitor: lag, dead letters). `redrives`: it may put any stored event back (the monitor)."""
        self.name = name
        self.publishes = None if publishes is None else frozenset(_type_name(t) for t in publishes)
        self.asks = tuple(asks)
        self.reads_stream = reads_stream or redrives
        self.redrives = redrives
        self.source = f"/functions/{name}"
        self.migrations = Migrations(name, migrations) if migrations is not None else None
        self.uses_database = uses_database or migrations is not None
        self.routes: list[Route] = []
        self.subscriptions: list[SubscriptionSpec] = []
        self.resources: list[Resource] = []
        self.queries: list[tuple[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]]] = []
        self.retained: list[Retention] = []
        self.load_reports: list[Callable[[], dict[str, Any]]] = []
        self.stats = RequestStats()
        self.log = logging.getLogger(f"studio.functions.{name}")
        self._values: dict[Key[Any], Any] = {}
        self._settings: Settings | None = None
        self._bus: Bus | None = None
        self._db: Database | None = None

    def __repr__(self) -> str:
        return f"Function({self.name!r})"

    # -- declaration -----------------------------------------------------------------------------

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str = "",
        body: Any = None,
        query: Any = None,
        response: Any = None,
        status: int = 200,
        error: Any = None,
        errors: tuple[int, ...] = (),
        answers: tuple[tuple[int, Any], ...] = (),
        decode: bool = True,
        timeout: float = 30.0,
        max_body: BodyLimit = None,
        operator: bool = False,
        visitor: bool = True,
        needs_session: bool = False,
        stream: bool = False,
        keys: bool = False,
    ) -> Callable[[T], T]:
        """Declare an HTTP route and everything about it (the module docstring; studio/runtime/routes.py)."""

        def register(handler: T) -> T:
            self.routes.append(
                Route(
                    method.upper(),
                    path,
                    self.name,
                    handler,  # type: ignore[arg-type]
                    summary=summary,
                    body=body,
                    query=query,
                    response=response,
                    status=status,
                    error=error,
                    errors=errors,
                    answers=answers,
                    decode=decode,
                    timeout=timeout,
                    max_body=max_body,
                    operator=operator,
                    visitor=visitor,
                    needs_session=needs_session,
                    stream=stream,
                    keys=keys,
                )
            )
            return handler

        return register

    def subscribe(
        self,
        *types: type[EventData] | str,
        max_concurrency: int = 1,
        max_attempts: int = 5,
        ack_wait: float = 30.0,
        backoff: Backoff | None = None,
        batch: bool | int = False,
    ) -> Callable[[T], T]:
        """A durable consumer shared by all replicas: each event is handled by one of them.

        `batch=True` (or a size): the handler takes `list[Delivery]`, up to `BATCH_SIZE` events that
        were waiting (each `delivery.data` typed), and handles them together, typically in one
        transaction; they are acknowledged when it returns. If it raises, the runtime hands it the
        events one at a time, so one poison event is retried or dead-lettered alone.
        """
        batch_size = 0 if batch is False else BATCH_SIZE if batch is True else int(batch)

        def register(handler: T) -> T:
            self.subscriptions.append(
                SubscriptionSpec(
                    handler=handler,  # type: ignore[arg-type]
                    types=tuple(_type_name(t) for t in types),
                    broadcast=False,
                    max_concurrency=max_concurrency,
                    max_attempts=max_attempts,
                    ack_wait=ack_wait,
                    backoff=backoff or Backoff(),
                    batch_size=batch_size,
                )
            )
            return handler

        return register

    def listen(
        self, *patterns: type[EventData] | str, envelope: bool = False, one_replica: bool = False
    ) -> Callable[[T], T]:
        """A broadcast subscription: every replica sees every matching event (live, not replayed).

        The handler gets the event's typed data, or the whole `Event` with `envelope=True`.
        `one_replica=True`: each event goes to one replica of this function, on whichever server (a
        live event that must be acted on once, such as an alert to post), still never replayed.
        """

        def register(handler: T) -> T:
            self.subscriptions.append(
                SubscriptionSpec(
                    handler=handler,  # type: ignore[arg-type]
                    types=tuple(_type_name(p) for p in patterns),
                    broadcast=True,
                    envelope=envelope,
                    one_replica=one_replica,
                )
            )
            return handler

        return register

    def answer(self, name: str) -> Callable[[T], T]:
        """Answer a query (NATS request/reply) named `name`: `async def h(request: dict) -> dict`."""

        def register(handler: T) -> T:
            self.queries.append((name, handler))  # type: ignore[arg-type]
            return handler

        return register

    def retain(self, table: str, *, time_column: str, key: str) -> None:
        """Rows of `table` older than STUDIO_OUTBOX_KEEP_DAYS (by `time_column`, ISO-8601 UTC) are pruned."""
        self.retained.append(Retention(table, time_column, key))

    def resource(self, ctx: Resource) -> Resource:
        self.resources.append(ctx)
        return ctx

    def reports_load(self, report: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        """`report()` -> figures every heartbeat carries as `load` (chat: answers per Ollama node), which
        the monitor weighs against the "when to scale" thresholds."""
        self.load_reports.append(report)
        return report

    def load(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for report in self.load_reports:
            try:
                out.update(report())
            except Exception:  # a report must never cost the heartbeat itself
                self.log.debug("load report failed", exc_info=True)
        return out

    # -- running ---------------------------------------------------------------------------------

    def bind(self, settings: Settings, bus: Bus, db: Database | None) -> None:
        self._settings, self._bus, self._db = settings, bus, db

    def unbind(self) -> None:
        self._settings = self._bus = self._db = None
        self._values.clear()
        self.stats = RequestStats()

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            raise RuntimeError(f"function {self.name} is not running")
        return self._settings

    @property
    def bus(self) -> Bus:
        if self._bus is None:
            raise RuntimeError(f"function {self.name} is not running")
        return self._bus

    @property
    def db(self) -> Database:
        if self._db is None:
            raise RuntimeError(f"function {self.name} has no database (declare migrations= or uses_database)")
        return self._db

    def __getitem__(self, key: Key[T]) -> T:
        value: T = self._values[key]
        return value

    def __setitem__(self, key: Key[T], value: T) -> None:
        self._values[key] = value

    def event(self, data: EventData) -> Event:
        """The envelope for `data`, carrying the current correlation id."""
        if self.publishes is not None and data.TYPE not in self.publishes and data.TYPE not in RUNTIME_EVENTS:
            raise UndeclaredEvent(
                f"function {self.name} publishes {data.TYPE}, which its declaration does not list: add it to "
                f"Function({self.name!r}, publishes=...) (its NATS user may publish only what is listed)"
            )
        return Event(
            type=data.TYPE,
            source=self.source,
            data=data.to_data(),
            subject=data.subject,
            correlationid=correlation_id.get(),
        )

    async def publish(self, data: EventData) -> Event:
        """Publish now (not transactional: use `tx.publish(function.event(...))` for that)."""
        event = self.event(data)
        try:
            await self.bus.publish(event)
        except BusUnavailable as exc:
            raise bus_down() from exc
        return event

    def http_handler(self, spec: Route) -> HttpHandler:
        """The route's handler wrapped with this function's log context and request metrics; with a
        declared body type, the body refused from its Content-Length past the route's limit, then
        decoded and checked (`studio.runtime.bodies`) and handed to the handler."""
        inner, stats, name, path = spec.handler, self.stats, self.name, spec.path
        body_type = spec.body if spec.decode else None
        assert inner is not None, f"{spec.method} {spec.path} has no handler"

        async def handle(request: web.Request) -> web.StreamResponse:
            token = current_function.set(name)
            started = time.perf_counter()
            status = 500
            stats.inflight += 1
            try:
                length = request.content_length
                if length is not None and self._settings is not None:
                    limit = spec.body_limit(self._settings)
                    if length > limit:
                        raise PayloadTooLarge(
                            f"the request body is {length} bytes; this route accepts at most {limit}",
                            max_bytes=limit,
                        )
                if body_type is None:
                    response = await inner(request)
                else:
                    response = await inner(request, await bodies.read(request, body_type))
                status = response.status
                return response
            except (StudioError, web.HTTPException) as exc:
                status = exc.status
                raise
            except (*PAYLOAD_ERRORS, ConnectionResetError) as exc:  # the client (or the gateway for one) left
                status = ClientHungUp.status
                raise ClientHungUp(f"the client hung up before its whole body arrived: {exc}") from None
            finally:
                stats.inflight -= 1
                stats.observe(request.method, path, status, time.perf_counter() - started)
                current_function.reset(token)

        handle.__name__ = inner.__name__
        return handle
