"""The in-memory bus: `Bus("memory://<name>", ...)`, every behaviour of the bus without a nats-server.

For tests (like FastStream's TestNatsBroker): a function's handlers, the gateway's live stream and the
queries between functions run inside the test's process, with no server to start. Every `MemoryBus` of
one name shares one `Broker`, as every connection to one nats-server shares its JetStream:

- the durable stream: messages kept in order with a sequence number, a message id stored once;
- durable consumers shared by every bus bound to them (pool semantics), delivering from the start of the
  stream (`DeliverPolicy.ALL`), at most `max_ack_pending` unacknowledged at once, with `ack`, `nak(delay)`
  (redelivered after the delay), `term`, `in_progress` (the lease renewed) and the ack wait (a message
  neither acknowledged nor renewed within it is delivered again);
- core subjects with NATS wildcards (`*` one token, `>` the rest) and queue groups (one member of each
  group gets a message); each subscription handles its messages one at a time, in order, as nats-py's
  do; request/reply over them.

The ack policy, batching, dead letters and the query format are `events.bus.Bus`'s own, shared with the
NATS transport, so a test on this bus exercises the same code. What only a server has (a cluster, a
restart, a full disk, stream limits) stays with the tests that start one. A broker lives as long as a
bus of its name is connected or `forget(url)` is called; the settings refuse `memory://` from the
environment, so a process started by a test cannot silently get a bus of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nats.js import api

from events.bus import (
    STREAM,
    Bus,
    BusUnavailable,
    ConsumerLag,
    MessageCallback,
    NatsLogin,
    PullSubscription,
    StreamPolicy,
    Subscription,
)
from events.delivery import Pulled
from events.envelope import Event, InvalidEvent

log = logging.getLogger("studio.events")

SCHEME = "memory"
_BROKERS: dict[str, Broker] = {}
_names = itertools.count(1)


def new_url() -> str:
    """A URL no other bus uses: a fresh broker."""
    return f"{SCHEME}://bus-{next(_names)}"


def broker(url: str) -> Broker:
    """The broker of `url`, made on first use."""
    name = url.split("://", 1)[1]
    if name not in _BROKERS:
        _BROKERS[name] = Broker(name)
    return _BROKERS[name]


def forget(url: str) -> None:
    """Drop the broker of `url` with everything it stored (a test is over)."""
    gone = _BROKERS.pop(url.split("://", 1)[1], None)
    if gone is not None:
        gone.close()


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, `>` one or more trailing tokens."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


# -- core subjects -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CoreMessage:
    subject: str
    data: bytes
    _reply: asyncio.Future[bytes] | None = None

    async def respond(self, data: bytes) -> None:
        if self._reply is not None and not self._reply.done():
            self._reply.set_result(data)


@dataclass(eq=False)
class CoreSubscription:
    broker: Broker
    pattern: str
    queue: str | None
    callback: MessageCallback
    _inbox: asyncio.Queue[CoreMessage] = field(default_factory=asyncio.Queue)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"memory-sub:{self.pattern}")

    async def _run(self) -> None:
        while True:
            msg = await self._inbox.get()
            try:
                await self.callback(msg)
            except Exception:  # as nats-py: a failing callback does not end the subscription
                log.exception("subscription callback failed on %s", msg.subject)

    def deliver(self, msg: CoreMessage) -> None:
        self._inbox.put_nowait(msg)

    async def unsubscribe(self) -> None:
        with contextlib.suppress(ValueError):
            self.broker.subscriptions.remove(self)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# -- the durable stream and its consumers --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stored:
    seq: int
    subject: str
    data: bytes
    msg_id: str
    stored_at: datetime
    loop_time: float


@dataclass(slots=True)
class Counts:
    num_delivered: int
    num_pending: int


@dataclass(slots=True)
class Outstanding:
    """A message delivered and neither acknowledged nor terminated yet."""

    delivered: int = 0
    ready_at: float | None = None  # naked: deliver again from then on (None: in flight)
    lease_until: float = 0.0  # in flight: delivered again if not renewed or acknowledged by then


class PulledMessage:
    def __init__(self, durable: Durable, stored: Stored, delivered: int, pending: int) -> None:
        self._durable = durable
        self._stored = stored
        self.data = stored.data
        self.header: dict[str, str] | None = {"Nats-Msg-Id": stored.msg_id}
        self.metadata = Counts(num_delivered=delivered, num_pending=pending)

    async def ack(self) -> None:
        self._durable.finish(self._stored.seq)

    async def term(self) -> None:
        self._durable.finish(self._stored.seq)

    async def nak(self, delay: float | None = None) -> None:
        self._durable.nak(self._stored.seq, delay or 0.0)

    async def in_progress(self) -> None:
        self._durable.renew(self._stored.seq)


class Durable:
    """A durable consumer: where it is in the stream and what it delivered without an answer yet."""

    def __init__(self, broker: Broker, name: str) -> None:
        self.broker = broker
        self.name = name
        self.subjects: list[str] = []
        self.ack_wait = 30.0
        self.max_ack_pending = 1000
        self.next_seq = 1  # the first stream message never delivered to this consumer
        self.outstanding: dict[int, Outstanding] = {}
        self.last_active: datetime | None = None
        self.wake = asyncio.Event()

    def wants(self, subject: str) -> bool:
        return any(subject_matches(p, subject) for p in self.subjects)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def finish(self, seq: int) -> None:
        if self.outstanding.pop(seq, None) is not None:
            self.last_active = datetime.now(UTC)
            self.wake.set()  # a slot under max_ack_pending is free

    def nak(self, seq: int, delay: float) -> None:
        state = self.outstanding.get(seq)
        if state is not None:
            state.ready_at = self._now() + max(0.0, delay)
            self.broker.wake_at(self, state.ready_at)
            self.wake.set()

    def renew(self, seq: int) -> None:
        state = self.outstanding.get(seq)
        if state is not None and state.ready_at is None:
            state.lease_until = self._now() + self.ack_wait
            self.broker.wake_at(self, state.lease_until)

    def _due(self, now: float) -> list[int]:
        return sorted(
            seq
            for seq, s in self.outstanding.items()
            if (s.ready_at is not None and s.ready_at <= now) or (s.ready_at is None and s.lease_until <= now)
        )

    def _pending(self) -> int:
        return sum(1 for m in self.broker.stream[self.next_seq - 1 :] if self.wants(m.subject))

    def take(self, n: int) -> list[Pulled]:
        """Up to `n` messages ready now: redeliveries first, then new ones, within max_ack_pending."""
        now = self._now()
        chosen: list[tuple[Stored, int]] = []
        for seq in self._due(now):
            if len(chosen) >= n:
                break
            state = self.outstanding[seq]
            state.delivered += 1
            state.ready_at, state.lease_until = None, now + self.ack_wait
            self.broker.wake_at(self, state.lease_until)
            chosen.append((self.broker.stream[seq - 1], state.delivered))
        stream = self.broker.stream
        while len(chosen) < n and self.next_seq <= len(stream) and len(self.outstanding) < self.max_ack_pending:
            stored = stream[self.next_seq - 1]
            self.next_seq += 1
            if not self.wants(stored.subject):
                continue
            self.outstanding[stored.seq] = Outstanding(delivered=1, lease_until=now + self.ack_wait)
            self.broker.wake_at(self, now + self.ack_wait)
            chosen.append((stored, 1))
        if chosen:
            self.last_active = datetime.now(UTC)
        pending = self._pending() if chosen else 0
        return [PulledMessage(self, stored, delivered, pending) for stored, delivered in chosen]

    def lag(self) -> ConsumerLag:
        now = datetime.now(UTC)
        waiting = [m for m in self.broker.stream[self.next_seq - 1 :] if self.wants(m.subject)]
        unacked = [self.broker.stream[seq - 1] for seq in self.outstanding]
        oldest = min((m.stored_at for m in [*unacked, *waiting]), default=None)
        return ConsumerLag(
            consumer=self.name,
            pending=len(waiting),
            ack_pending=len(self.outstanding),
            redelivered=sum(1 for s in self.outstanding.values() if s.delivered > 1),
            oldest_pending_s=round((now - oldest).total_seconds(), 3) if oldest else 0.0,
            last_active_s=None if self.last_active is None else round((now - self.last_active).total_seconds(), 3),
        )


class DurablePull:
    """This process's pull side of a durable consumer."""

    def __init__(self, durable: Durable) -> None:
        self.durable = durable
        self.closed = False

    async def fetch(self, batch: int = 1, timeout: float | None = 5) -> Sequence[Pulled]:
        """What is ready, as soon as there is some; [] when nothing came within `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else 5.0)
        while not self.closed:
            self.durable.wake.clear()
            msgs = self.durable.take(batch)
            if msgs:
                return msgs
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.durable.wake.wait(), remaining)
        return []

    async def unsubscribe(self) -> None:
        self.closed = True
        self.durable.wake.set()


class Broker:
    """What one nats-server holds, in this process: the stream, its consumers, the subscriptions."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stream: list[Stored] = []
        self.msg_ids: set[str] = set()
        self.durables: dict[str, Durable] = {}
        self.subscriptions: list[CoreSubscription] = []
        self._timers: list[asyncio.TimerHandle] = []

    def wake_at(self, durable: Durable, when: float) -> None:
        """Wake the durable's pullers at `when` (a nak's delay or a lease running out)."""
        loop = asyncio.get_running_loop()
        self._timers = [t for t in self._timers if not t.cancelled() and t.when() > loop.time()]
        self._timers.append(loop.call_at(when + 0.001, durable.wake.set))

    def store(self, subject: str, data: bytes, msg_id: str) -> None:
        """Into the stream (once per message id) and, as on NATS, to the subject's subscribers (every time)."""
        self.send(subject, data)
        if msg_id in self.msg_ids:
            return
        self.msg_ids.add(msg_id)
        stored = Stored(
            len(self.stream) + 1, subject, data, msg_id, datetime.now(UTC), asyncio.get_running_loop().time()
        )
        self.stream.append(stored)
        for durable in self.durables.values():
            if durable.wants(subject):
                durable.wake.set()

    def send(self, subject: str, data: bytes, reply: asyncio.Future[bytes] | None = None) -> int:
        """To every matching subscription, one per queue group; how many got it."""
        msg = CoreMessage(subject, data, reply)
        plain: list[CoreSubscription] = []
        groups: dict[str, list[CoreSubscription]] = {}
        for sub in self.subscriptions:
            if subject_matches(sub.pattern, subject):
                if sub.queue:
                    groups.setdefault(sub.queue, []).append(sub)
                else:
                    plain.append(sub)
        chosen = plain + [random.choice(members) for members in groups.values()]
        for sub in chosen:
            sub.deliver(msg)
        return len(chosen)

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()


class MemoryBus(Bus):
    """The bus on a `Broker` in this process (see the module's docstring)."""

    def __init__(self, url: str, *, name: str, source: str, login: NatsLogin | None = None) -> None:
        super().__init__(url, name=name, source=source, login=login)  # no logins in one process: `login` unused
        self.servers = [url]
        self._broker: Broker | None = None
        self._subs: list[CoreSubscription] = []
        self._pulls: list[DurablePull] = []

    @property
    def broker(self) -> Broker:
        if self._broker is None:
            raise BusUnavailable("the bus is not connected")
        return self._broker

    async def connect(self, *, timeout: float = 5.0) -> None:
        self._broker = broker(self.url)

    @property
    def connected(self) -> bool:
        return self._broker is not None

    async def wait_for_jetstream(self, timeout: float) -> None:
        self.broker  # noqa: B018 - raises when not connected

    async def ensure_stream(self, policy: StreamPolicy | None = None, *, timeout: float = 10.0) -> api.StreamInfo:
        stream = self.broker.stream
        state = api.StreamState(
            messages=len(stream),
            bytes=await self.stream_bytes(),
            first_seq=1 if stream else 0,
            last_seq=len(stream),
            consumer_count=len(self.broker.durables),
        )
        return api.StreamInfo(config=(policy or StreamPolicy()).config(), state=state)

    async def wait_for_stream_leader(self, timeout: float) -> None:
        self.broker  # noqa: B018

    async def stream_bytes(self) -> int:
        return sum(len(m.data) for m in self.broker.stream)

    async def jetstream_info(self, timeout: float = 1.0) -> dict[str, Any]:
        return {
            "stream": STREAM,
            "messages": len(self.broker.stream),
            "bytes": await self.stream_bytes(),
            "max_bytes": StreamPolicy().max_bytes,
            "consumers": len(self.broker.durables),
        }

    async def consumer_lags(self) -> list[ConsumerLag]:
        return sorted((d.lag() for d in self.broker.durables.values()), key=lambda lag: lag.consumer)

    async def history(
        self, start: datetime | None, *, limit: int = 100_000, subjects: Sequence[str] | None = None
    ) -> list[Event]:
        events: list[Event] = []
        for stored in self.broker.stream:
            if len(events) >= limit:
                break
            if start is not None and stored.stored_at < start:
                continue
            if subjects and not any(subject_matches(p, stored.subject) for p in subjects):
                continue
            with contextlib.suppress(InvalidEvent):
                events.append(Event.from_json(stored.data))
        return events

    async def store(self, subject: str, data: bytes, *, msg_id: str, timeout: float) -> None:
        self.broker.store(subject, data, msg_id)

    async def send(self, subject: str, data: bytes) -> None:
        self.broker.send(subject, data)

    async def flush(self) -> None:
        self.broker  # noqa: B018 - nothing is in transit: subscriptions and messages take effect at once

    async def subscribe(self, subject: str, callback: MessageCallback, *, queue: str | None = None) -> Subscription:
        sub = CoreSubscription(self.broker, subject, queue or None, callback)
        sub.start()
        self.broker.subscriptions.append(sub)
        self._subs.append(sub)
        return sub

    async def request(self, subject: str, data: bytes, *, timeout: float) -> bytes:
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if not self.broker.send(subject, data, reply):
            raise BusUnavailable("NoRespondersError")
        try:
            return await asyncio.wait_for(reply, timeout)
        except TimeoutError:
            raise BusUnavailable("TimeoutError") from None

    async def _bind(self, name: str, subjects: list[str], *, ack_wait: float, max_deliver: int, in_flight: int) -> None:
        durable = self.broker.durables.get(name)
        if durable is None:
            durable = self.broker.durables[name] = Durable(self.broker, name)
        durable.subjects, durable.ack_wait, durable.max_ack_pending = list(subjects), ack_wait, in_flight

    async def _pull(self, name: str) -> PullSubscription:
        pull = DurablePull(self.broker.durables[name])
        self._pulls.append(pull)
        return pull

    async def _disconnect(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        for pull in self._pulls:
            await pull.unsubscribe()
        self._subs.clear()
        self._pulls.clear()
        self._broker = None


Bus.transports[SCHEME] = MemoryBus
