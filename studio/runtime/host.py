"""`Host`: runs one or more functions in this process.

It owns what they share: the NATS connection (`Bus`), the database and its outbox relay. For each
function it binds settings/bus/db, enters its resources, starts its subscriptions and heartbeats,
and announces it; `stop()` undoes all of that in reverse order, letting in-flight events finish
(up to the grace period) or handing them back for redelivery: first nothing new arrives (consumers,
live listeners and query answers stop, those in flight finish), only then do the functions' resources
go, so no event meets a function whose state is gone.

An outage of the database meets every handler the same way: a request answers 503 (the error
middleware), an event handler waits for the database to answer again and then runs again with the same
delivery (an outage spends none of its attempts: nothing is dead-lettered for it), a query answers an
error the asker falls back from, and `OutageWatch` alerts and clears it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

from events.bus import Bus, BusUnavailable, StreamPolicy, decode
from events.catalog import (
    EventData,
    FunctionStarted,
    FunctionStopped,
    HeartbeatEmitted,
    HeartbeatRequested,
    OperatorCatalogChanged,
    ResourceExhausted,
    ResourceRecovered,
)
from events.delivery import Delivery
from events.envelope import Event
from studio import catalog
from studio.runtime.database import RUNTIME_MIGRATIONS, Database, DatabaseUnavailable
from studio.runtime.errors import report_database_down
from studio.runtime.function import RUNTIME_EVENTS, Function, SubscriptionSpec
from studio.runtime.logs import current_function
from studio.runtime.outages import OutageWatch
from studio.runtime.outbox import OutboxRelay
from studio.runtime.resources import DiskWatch, StreamBudget, stream_budget
from studio.runtime.retention import OUTBOX, Pruner
from studio.runtime.settings import Settings
from studio.runtime.shortages import SHORTAGES

log = logging.getLogger("studio.runtime")

VERSION = "0.1.0"


def instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Host:
    step_slack_s = 5.0  # beyond the shutdown grace, how long one shutdown step may take before it is left

    def __init__(self, functions: Sequence[Function], settings: Settings, *, service: str = "studio") -> None:
        self.functions = list(functions)
        self.settings = settings
        self.instance = instance_id()
        self.bus = Bus(
            settings.effective_nats_url(),
            name=f"{service}@{self.instance}",
            source=f"/functions/{service}",
            login=settings.nats_login(service),  # the NATS user named after the service (nats_users)
        )
        self.db: Database | None = None
        self.relay: OutboxRelay | None = None
        self.pruner: Pruner | None = None
        self.started_at = time.time()
        self._stack = AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._announcements: set[asyncio.Task[None]] = set()
        self.stream_budget: StreamBudget | None = None
        self.outages = OutageWatch(None, self.bus)
        self.running = False

    async def start(self, *, connect_timeout: float | None = None) -> None:
        s = self.settings
        try:
            await self.bus.connect(timeout=s.nats_connect_timeout_s if connect_timeout is None else connect_timeout)
            await self.bus.wait_for_jetstream(s.nats_connect_timeout_s)
            if s.events_replicas > 1:  # a NATS cluster stores the stream on its nodes' disks, not this one's:
                # every server must ask for the same size, or each start-up would resize it to its own disk
                self.stream_budget = StreamBudget(s.events_max_bytes, s.events_max_bytes, free=0)
            else:
                self.stream_budget = stream_budget(
                    s.data_dir, s.events_max_bytes, already_stored=await self.bus.stream_bytes()
                )
            log.info(self.stream_budget.describe(), extra={"max_bytes": self.stream_budget.max_bytes})
            await self.bus.ensure_stream(
                StreamPolicy(
                    max_age_s=s.events_max_age_days * 86400,
                    max_bytes=self.stream_budget.max_bytes,
                    replicas=s.events_replicas,
                ),
                timeout=s.nats_connect_timeout_s,
            )
            await self.bus.wait_for_stream_leader(s.nats_connect_timeout_s)
            SHORTAGES.listeners.append(self._announce_shortage)
            if any(f.uses_database for f in self.functions):
                self.db = Database(s.database_target)
                await self.db.open()
                await self.db.migrate([RUNTIME_MIGRATIONS, *(f.migrations for f in self.functions if f.migrations)])
                self.relay = OutboxRelay(self.db, self.bus, owner=self.instance, types=self.publishes())
                self.relay.start()
                self.outages = OutageWatch(self.db, self.bus)
                watch = DiskWatch(s.data_dir, s.disk_min_free_mb)
                self._tasks.append(asyncio.create_task(watch.run(), name="disk-watch"))
                retained = [OUTBOX, *(r for f in self.functions for r in f.retained)]
                self.pruner = Pruner(self.db, retained, keep_s=s.outbox_keep_days * 86400)
                self._tasks.append(asyncio.create_task(self.pruner.run(), name="pruner"))
            self._tasks.append(asyncio.create_task(self.outages.run(), name="outage-watch"))
            await self.bus.listen(HeartbeatRequested.TYPE, self._beat_all)  # before health asks at its start
            await self._follow_catalog()
            for fn in self.functions:
                await self._start_function(fn)
        except BaseException:
            await self.stop()
            raise
        self.running = True

    def publishes(self) -> frozenset[str] | None:
        """The event types this process may publish (its NATS user's), or None when one of its functions
        does not declare them (anything)."""
        declared = [fn.publishes for fn in self.functions]
        if any(d is None for d in declared):
            return None
        return RUNTIME_EVENTS.union(*(d for d in declared if d is not None))

    async def _follow_catalog(self) -> None:
        """The operator's catalog changes, laid over this process's catalog: those stored (asked of the
        marketplace, unless it runs here and applies them itself), then each as it is published."""
        try:
            shared = catalog.cached(self.settings.catalog_path)
        except catalog.CatalogError:
            return  # the functions that sell or run models refuse to start with this message themselves

        async def on_change(event: Event) -> None:
            try:
                shared.apply(event.data["model"], event.data.get("entry"))
            except (catalog.CatalogError, KeyError, TypeError) as exc:
                log.warning("catalog change ignored", extra={"error": str(exc)})

        await self.bus.listen(OperatorCatalogChanged.TYPE, on_change)
        if any(f.name == "purchase" for f in self.functions):
            return
        try:
            stored = await self.bus.query("catalog.changes", {}, timeout=2.0)
        except BusUnavailable:
            return  # the marketplace is not up: its changes arrive as events
        for change in stored.get("changes", []):
            with contextlib.suppress(catalog.CatalogError, KeyError, TypeError):
                shared.apply(change["model"], change.get("entry"))

    async def _start_function(self, fn: Function) -> None:
        fn.bind(self.settings, self.bus, self.db)
        self._stack.callback(fn.unbind)
        token = current_function.set(fn.name)
        try:
            for resource in fn.resources:
                await self._stack.enter_async_context(contextlib.asynccontextmanager(resource)(fn))
            for spec in fn.subscriptions:
                await self._subscribe(fn, spec)
            for name, answer in fn.queries:
                await self.bus.respond(name, self._answering(answer))
        finally:
            current_function.reset(token)
        self._tasks.append(asyncio.create_task(self._heartbeats(fn), name=f"heartbeat:{fn.name}"))
        with contextlib.suppress(BusUnavailable):  # an announcement: never a reason not to start
            await self.bus.publish(fn.event(FunctionStarted(function=fn.name, instance=self.instance, version=VERSION)))
        log.info("function started", extra={"function": fn.name, "instance": self.instance})

    def _answering(self, answer: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> Any:
        """A query answer that meets a database outage says so in one word (the asker falls back, e.g.
        chat to what it knows), counted once a minute instead of a traceback a query."""

        async def answering(request: dict[str, Any]) -> dict[str, Any]:
            try:
                return await answer(request)
            except DatabaseUnavailable as exc:
                report_database_down(exc)
                return {"error": "database_unavailable"}

        return answering

    async def _until_the_database_answers(self, run: Callable[[], Awaitable[None]]) -> None:
        """`run()`; through a database outage, again once the database answers (the delivery's lease
        is kept meanwhile, and shutdown cancels the wait, handing the event back)."""
        while True:
            try:
                await run()
                return
            except DatabaseUnavailable as exc:
                report_database_down(exc)
                await self.outages.database_back()

    async def _subscribe(self, fn: Function, spec: SubscriptionSpec) -> None:
        handler = spec.handler
        name = fn.name

        if spec.broadcast:
            envelope = spec.envelope

            async def on_event(event: Event) -> None:
                token = current_function.set(name)
                try:
                    await handler(event if envelope else decode(event))
                except DatabaseUnavailable as exc:  # a live event: missed, counted, not a traceback each
                    report_database_down(exc)
                finally:
                    current_function.reset(token)

            queue = spec.consumer_name(fn.name) if spec.one_replica else None
            for pattern in spec.types:
                await self.bus.listen(pattern, on_event, queue=queue)
            return

        async def on_delivery(payload: Any, delivery: Delivery) -> None:
            token = current_function.set(name)
            try:
                await self._until_the_database_answers(lambda: handler(payload, delivery))
            finally:
                current_function.reset(token)

        async def on_batch(deliveries: list[Delivery]) -> None:
            token = current_function.set(name)
            try:
                await self._until_the_database_answers(lambda: handler(deliveries))
            finally:
                current_function.reset(token)

        await self.bus.consume(
            spec.consumer_name(fn.name),
            spec.types,
            on_batch if spec.batch_size else on_delivery,
            max_concurrency=spec.max_concurrency,
            max_attempts=spec.max_attempts,
            ack_wait=spec.ack_wait,
            backoff=spec.backoff,
            batch_size=spec.batch_size,
        )

    # -- shortages -------------------------------------------------------------------------------

    def _announce_shortage(self, kind: str, message: str, count: int | None) -> None:
        """`resource.exhausted` / `resource.recovered`, live: with the disk full JetStream could not store it."""
        data: EventData = (
            ResourceRecovered(kind=kind, message=message, instance=self.instance)
            if count is None
            else ResourceExhausted(kind=kind, message=message, count=count, instance=self.instance)
        )
        event = Event(type=data.TYPE, source=self.bus.source, data=data.to_data(), subject=data.subject)
        task = asyncio.get_running_loop().create_task(self._publish_quietly(event))
        self._announcements.add(task)
        task.add_done_callback(self._announcements.discard)

    async def _publish_quietly(self, event: Event) -> None:
        with contextlib.suppress(BusUnavailable):
            await self.bus.publish(event)

    # -- heartbeats ------------------------------------------------------------------------------

    def heartbeat(self, fn: Function) -> HeartbeatEmitted:
        return HeartbeatEmitted(
            function=fn.name,
            instance=self.instance,
            pid=os.getpid(),
            started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at)),
            uptime_s=round(time.time() - self.started_at, 3),
            inflight=fn.stats.inflight,
            http=fn.stats.snapshot(),
            load=fn.load(),
        )

    async def _beat(self, fn: Function) -> None:
        if fn._bus is None or not self.bus.connected:
            return
        with contextlib.suppress(Exception):
            await fn.publish(self.heartbeat(fn))

    async def _heartbeats(self, fn: Function) -> None:
        while True:
            await self._beat(fn)
            await asyncio.sleep(self.settings.heartbeat_s)

    async def _beat_all(self, event: Event) -> None:
        for fn in self.functions:
            await self._beat(fn)

    # -- shutdown --------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Graceful: consumers and listeners stop (in-flight events finish or go back), then the
        functions' resources, the relay, the bus, the database.

        Every step runs even if an earlier one fails, so the process can always exit."""
        self.running = False
        with contextlib.suppress(ValueError):
            SHORTAGES.listeners.remove(self._announce_shortage)
        grace = self.settings.shutdown_grace_s
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=grace + self.step_slack_s)
            for task in stuck:
                log.error("a background task ignored its cancellation, going on: %s", task.get_name())
        self._tasks.clear()
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("stop consuming", lambda: self.bus.stop_consuming(grace)),
            ("stop listening", lambda: self.bus.stop_listening(grace)),
            ("announce the stop", self._announce_stop),
            ("close function resources", self._stack.aclose),
            ("flush the outbox", self.relay.stop if self.relay else _nothing),
            ("close the bus", lambda: self.bus.close(grace)),
            ("close the database", self.db.close if self.db else _nothing),
        ]
        for what, step in steps:
            try:
                # bounded: a step that hangs (a resource that never closes) must not keep the process up
                async with asyncio.timeout(grace + self.step_slack_s):
                    await step()
            except TimeoutError:
                log.error(
                    "shutdown step did not finish within %g s, going on: %s",
                    grace + self.step_slack_s,
                    what,
                    extra={"step": what},
                )
            except Exception:
                log.exception("shutdown step failed: %s", what)
        self.relay = None
        self.db = None

    async def _announce_stop(self) -> None:
        if not self.bus.connected:
            return
        for fn in self.functions:
            if fn._bus is not None:
                with contextlib.suppress(Exception):
                    await fn.publish(
                        FunctionStopped(
                            function=fn.name, instance=self.instance, uptime_s=round(time.time() - self.started_at, 3)
                        )
                    )


async def _nothing() -> None:
    return None
