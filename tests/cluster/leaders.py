"""NATS leaders killed under chats (issue 21): studios on a 3-node NATS cluster answer visitors chatting
continuously with a free model while the JetStream meta leader, then the event stream's leader, then
both at once are SIGKILLed and restarted; afterwards every chat answered 200 must have exactly one
`chat.completed` in the replicated stream (read from the stream itself, by the answer's correlation id:
its `X-Request-Id`).

Shared by `tests/reliability/run.py` (the reliability row, at full size) and
`tests/cluster/test_leaders_killed.py` (the suite, small). One kill:

1. ask who leads (`/jsz` for the meta group, `$JS.API.STREAM.INFO` for the stream), SIGKILL that node;
2. until the survivors name a new meta leader and a new stream leader ("new leaders after ... s"), and
   `settle` more chats are answered with the node still down, and it has been down `down_s`;
3. restart it on its own store and wait until the stream has its three copies current again, then
   `settle` more chats before the next kill.

The "both" kill SIGKILLs the meta leader and the stream leader at once (and a follower when one node
leads both): two nodes of three, so JetStream has no quorum and stores nothing until they are
restarted; its new leaders are counted from the kill to their election after the restart.

"During the failover" counts chats answered between the kill and the new leaders; "while down" between
the kill and the restart. Each stored event's stream timestamp against when its chat was answered gives
how long usage waited for the stream (the outbox relay retrying while no leader takes publishes): "usage
at most ... late" is the longest wait of a chat answered while the killed node was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import api

from events.bus import STREAM, Bus, BusUnavailable
from events.envelope import Event, InvalidEvent, nats_subject
from studio import catalog
from tests.cluster.nats_cluster import NatsCluster
from tests.cluster.processes import StudioProcess, studio_env
from tests.support import eventually

FREE = next(m.id for m in catalog.cached(None) if m.free)


def studio_on(cluster: NatsCluster, name: str, root: Path, ollama_url: str, database_url: str) -> StudioProcess:
    """A studio (not started) on the cluster (its users, over TLS) and one database, as tests/cluster's
    `studios` fixture makes them."""
    env = studio_env(
        cluster.url,
        ollama_url,
        replicas=3,
        STUDIO_NATS_CREDENTIALS_DIR=str(cluster.credentials),
        STUDIO_NATS_CA=str(cluster.ca),
        STUDIO_DATABASE_URL=database_url,
        STUDIO_LOG_LEVEL="WARNING",
    )
    return StudioProcess(name, root / f"studio-{name}", env)


@dataclass
class Kill:
    node: str  # "n2", or "n2 and n3 at once"
    roles: str  # what each led: "meta leader", "stream leader", "meta leader and stream leader", "a follower"
    killed_at: float
    elected_at: float = 0.0  # a new meta leader and stream leader named (by the survivors, or once restarted)
    restarted_at: float = 0.0

    @property
    def new_leaders_s(self) -> float:
        return self.elected_at - self.killed_at


@dataclass
class Chats:
    """Chats answered 200 (their correlation ids, when each was answered), and every other outcome."""

    answered: dict[str, float] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)

    def between(self, start: float, end: float) -> list[str]:
        return [cid for cid, at in self.answered.items() if start <= at <= end]


async def chatter(site: str, chats: Chats, stop: asyncio.Event) -> None:
    """One visitor chatting with the free model as fast as it answers."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=timeout) as s:
        async with s.get(site + "/api/models") as first:  # the visitor's cookie
            await first.read()
        while not stop.is_set():
            try:
                body = {"model": FREE, "message": "Hello", "stream": False}
                async with s.post(site + "/api/chat", json=body) as resp:
                    answer = await resp.json()
                    if resp.status == 200 and answer.get("done_reason"):
                        chats.answered[resp.headers["X-Request-Id"]] = time.time()
                    else:
                        chats.refused[f"{resp.status} {(answer.get('error') or {}).get('code', '')}".strip()] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                chats.refused[type(exc).__name__] += 1
                await asyncio.sleep(0.05)  # cut: ask again (not a wait for an event)


async def stored_usage(cluster: NatsCluster) -> list[tuple[Event, float]]:
    """Every `chat.completed` in the replicated stream with when the stream stored it, oldest first."""
    bus = Bus(cluster.url, name="leaders-reader", source="/tests", login=cluster.login())
    await bus.connect(timeout=10)
    try:
        info = await bus.nc.jsm().add_consumer(
            STREAM,
            api.ConsumerConfig(
                filter_subject=nats_subject("chat.completed"),
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.NONE,
                inactive_threshold=30.0,
                mem_storage=True,
            ),
        )
        psub = await bus.nc.jetstream().pull_subscribe_bind(consumer=info.name, stream=STREAM)
        out: list[tuple[Event, float]] = []
        pending = info.num_pending or 0
        while pending > 0:
            try:
                msgs = await psub.fetch(batch=min(500, pending), timeout=5)
            except nats.errors.TimeoutError:
                break  # the rest is not there (yet): the caller reads again
            for msg in msgs:
                with contextlib.suppress(InvalidEvent):
                    out.append((Event.from_json(msg.data), msg.metadata.timestamp.timestamp()))
                pending = msg.metadata.num_pending
        with contextlib.suppress(Exception):
            await bus.nc.jsm().delete_consumer(STREAM, info.name)
        return out
    finally:
        await bus.close(1)


async def new_leaders(cluster: NatsCluster, nc: NatsClient, killed: list[str]) -> bool:
    meta, stream = await cluster.meta_leader(), await cluster.stream_leader(nc)
    return bool(meta and stream and meta not in killed and stream not in killed)


async def kill_leader(
    cluster: NatsCluster, nc: NatsClient, role: str, chats: Chats, settle: int, down_s: float
) -> Kill:
    """SIGKILL the node leading `role` ("meta" or "stream"), chat on, restart it (see the module docstring);
    `nc` asks who leads. "both": the meta leader and the stream leader at once (with a follower when one
    node leads both): two nodes of three, so JetStream has no quorum until they are back."""
    meta = await eventually(cluster.meta_leader, timeout=30, message="a meta leader")
    stream = await eventually(lambda: cluster.stream_leader(nc), timeout=30, message="a stream leader")
    if role == "both":
        victims = sorted({meta, stream})
        if len(victims) == 1:
            victims.append(next(n.name for n in cluster.nodes if n.name != meta))
    else:
        victims = [meta if role == "meta" else stream]
    roles = "; ".join(
        " and ".join(r for r, n in (("meta leader", meta), ("stream leader", stream)) if n == v) or "a follower"
        for v in victims
    )
    kill = Kill(" and ".join(victims) + (" at once" if len(victims) > 1 else ""), roles, time.time())
    for victim in victims:
        cluster.kill(cluster.index(victim))
    if role != "both":
        await eventually(lambda: new_leaders(cluster, nc, victims), timeout=60, interval=0.1, message="new leaders")
        kill.elected_at = time.time()
    await eventually(
        lambda: len(chats.between(kill.killed_at, time.time())) >= settle and time.time() >= kill.killed_at + down_s,
        timeout=60 + down_s,
        interval=0.1,
        message="chats, a node down",
    )
    for victim in victims:
        cluster.spawn(cluster.nodes[cluster.index(victim)])
    await cluster.wait_for_meta_leader(timeout=60)
    if role == "both":  # no quorum until they are back: the leaders are elected after the restart
        await eventually(lambda: new_leaders(cluster, nc, []), timeout=60, interval=0.1, message="new leaders")
        kill.elected_at = time.time()
    await cluster.wait_for_replicas(3, timeout=60)
    kill.restarted_at = time.time()
    back = len(chats.answered)
    await eventually(lambda: len(chats.answered) >= back + settle, timeout=60, message="chats after the restart")
    return kill


@dataclass
class Outcome:
    chats: Chats
    kills: list[Kill]
    missing: list[str]  # answered, no chat.completed in the stream
    twice: dict[str, int]  # answered, more than one chat.completed in the stream
    delays: dict[str, float]  # correlation id -> seconds from the answer to its event stored

    @property
    def ok(self) -> bool:
        return bool(self.kills) and not self.missing and not self.twice

    def during(self) -> list[str]:
        return [cid for k in self.kills for cid in self.chats.between(k.killed_at, k.elected_at)]

    def while_down(self) -> list[str]:
        return [cid for k in self.kills for cid in self.chats.between(k.killed_at, k.restarted_at)]

    def late_s(self, kill: Kill) -> float | None:
        """The longest a chat answered while the killed node was down waited for its usage in the stream."""
        delays = [self.delays[c] for c in self.chats.between(kill.killed_at, kill.restarted_at) if c in self.delays]
        return max(delays) if delays else None

    def text(self, studios: int) -> str:
        steady = [self.delays[c] for c in self.chats.between(0, self.kills[0].killed_at) if c in self.delays]
        refused = ", ".join(f"{k} x{n}" for k, n in self.chats.refused.most_common()) or "none"
        kills = ", then ".join(
            f"{k.node} ({k.roles}; new leaders after {k.new_leaders_s:.1f} s, usage at most "
            f"{_seconds(self.late_s(k))} late)"
            for k in self.kills
        )
        return (
            f"{studios} studio{'s' if studios > 1 else ''}, 3 NATS nodes; killed {kills}; "
            f"{len(self.chats.answered)} chats answered ({len(self.during())} during the failovers, "
            f"{len(self.while_down())} while a node was down; not answered: {refused}): "
            f"{len(self.missing)} without a chat.completed in the stream, {len(self.twice)} with more than one; "
            f"usage stored {_median(steady)} after its answer before the kills"
        )


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s" if values else "n/a"


async def leaders_killed_mid_chats(
    cluster: NatsCluster,
    sites: list[str],
    *,
    roles: tuple[str, ...] = ("meta", "stream"),
    chatters: int = 2,
    settle: int = 20,
    down_s: float = 0.0,
) -> Outcome:
    """`chatters` visitors per site chat on while each of `roles`' leader is killed and restarted in turn;
    then every answered chat's usage event is looked for in the stream (up to 60 s for the last ones)."""
    chats = Chats()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(chatter(site, chats, stop)) for site in sites for _ in range(chatters)]
    kills: list[Kill] = []
    asker = Bus(cluster.url, name="leaders-asker", source="/tests", login=cluster.login())
    try:
        await asker.connect(timeout=10)
        await eventually(lambda: len(chats.answered) >= settle, timeout=60, message="chats flowing")
        for role in roles:
            kills.append(await kill_leader(cluster, asker.nc, role, chats, settle, down_s))
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await asker.close(1)

    stored: list[tuple[Event, float]] = []

    async def all_stored() -> bool:
        nonlocal stored
        try:
            stored = await stored_usage(cluster)
        except (BusUnavailable, nats.errors.Error, nats.js.errors.Error, TimeoutError):
            return False  # a leader may still be moving: read again
        return set(chats.answered) <= {e.correlationid for e, _ in stored}

    with contextlib.suppress(AssertionError):  # those never stored are counted below
        await eventually(all_stored, timeout=60, interval=1.0, message="every answered chat's usage in the stream")
    per_chat = Counter(e.correlationid for e, _ in stored)
    at = {e.correlationid: when for e, when in stored}
    return Outcome(
        chats=chats,
        kills=kills,
        missing=[c for c in chats.answered if not per_chat[c]],
        twice={c: per_chat[c] for c in chats.answered if per_chat[c] > 1},
        delays={c: at[c] - chats.answered[c] for c in chats.answered if c in at},
    )
