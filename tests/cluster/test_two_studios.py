"""Two studios (`localai-studio up` each, as on two servers) sharing one database and a real 3-node NATS
cluster (`STUDIO_EVENTS_REPLICAS=3`), with the Ollama stand-in: what one server answered, the other
knows; a burst of purchases through both pulls a model once; losing a NATS node or a whole studio
loses nothing and does nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import nats.errors
import pytest

from events.bus import STREAM, Bus
from events.tail import stored
from tests.cluster.nats_cluster import NatsCluster
from tests.cluster.processes import StudioProcess
from tests.support import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PAID = "llama3.2:1b"
OTHER_PAID = "phi3:mini"
FREE = ("tinyllama:latest", "qwen2.5:0.5b", "gemma2:2b")


def visitor() -> aiohttp.ClientSession:
    """One browser: its cookie goes to whichever server it talks to (as behind one load balancer)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=30))


async def models(s: aiohttp.ClientSession, site: str) -> dict[str, dict[str, Any]]:
    async with s.get(site + "/api/models") as resp:
        assert resp.status == 200, await resp.text()
        return {m["id"]: m for m in (await resp.json())["models"]}


async def buy(s: aiohttp.ClientSession, site: str, model: str) -> str:
    async with s.post(f"{site}/api/models/purchase/{model}") as resp:
        body = await resp.json()
        assert resp.status == 200 and body["status"] == "success", body
        return str(body["purchase_id"])


async def installed(s: aiohttp.ClientSession, site: str, *wanted: str) -> bool:
    seen = await models(s, site)
    return all(seen[m]["install"]["state"] == "installed" for m in wanted)


async def stored_completions(cluster: NatsCluster) -> Counter[str]:
    """purchase.completed events in the replicated stream, counted per purchase id."""
    bus = Bus(cluster.url, name="test-reader", source="/tests", login=cluster.login())
    await bus.connect()
    try:
        return Counter(e.data["purchase_id"] for e in await stored(bus, ["purchase.completed"]))
    finally:
        await bus.close(1)


class LiveStream:
    """A browser's `GET /api/events` on one server: the event types it received, in order."""

    def __init__(self, s: aiohttp.ClientSession, site: str) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._task = asyncio.create_task(self._read(s, site))

    async def _read(self, s: aiohttp.ClientSession, site: str) -> None:
        async with s.get(site + "/api/events", timeout=aiohttp.ClientTimeout(total=None)) as resp:
            assert resp.status == 200, await resp.text()
            kind = ""
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    self.events.append((kind, json.loads(line[6:])))

    def saw(self, kind: str, model: str) -> bool:
        return any(k == kind and d.get("data", {}).get("model") == model for k, d in self.events)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def test_a_purchase_answered_by_one_server_is_owned_and_chatted_with_through_the_other(
    studios: Callable[..., StudioProcess],
) -> None:
    a, b = studios("a"), studios("b")
    await asyncio.gather(a.start(), b.start())
    async with visitor() as s, visitor() as stranger:
        await models(s, a.url)  # the visitor's cookie comes from server A ...
        live = LiveStream(s, b.url)  # ... and B verifies it (one STUDIO_SECRET_KEY): the live feed opens
        await eventually(lambda: live.events, timeout=15, message="the live stream's opening state on B")
        await buy(s, a.url, PAID)

        await eventually(lambda: installed(s, b.url, PAID), timeout=90, interval=0.5, message=f"{PAID} installed")
        assert (await models(s, b.url))[PAID]["owned"] is True
        await eventually(lambda: live.saw("install.completed", PAID), timeout=15, message="B's feed tells it")
        assert live.saw("purchase.completed", PAID)
        await live.close()

        async with s.post(b.url + "/api/chat", json={"message": "Hello", "model": PAID}) as resp:
            answer = await resp.json()
        assert resp.status == 200, answer
        assert answer["model"] == PAID and answer["response"]
        await models(stranger, b.url)
        async with stranger.post(b.url + "/api/chat", json={"message": "Hello", "model": PAID}) as resp:
            refused = await resp.json()
        assert resp.status == 403 and refused["error"]["code"] == "not_owned", refused


async def test_fifty_purchases_of_one_model_through_both_servers_pull_it_once(
    studios: Callable[..., StudioProcess], nats_cluster: NatsCluster, cluster_ollama: Any
) -> None:
    a, b = studios("a"), studios("b")
    await asyncio.gather(a.start(), b.start())

    async def one_buyer(site: str) -> str:
        async with visitor() as s:
            await models(s, site)
            return await buy(s, site, PAID)

    purchases = await asyncio.gather(*(one_buyer(a.url if i % 2 else b.url) for i in range(50)))

    async with visitor() as s:
        await eventually(lambda: installed(s, a.url, PAID), timeout=120, interval=0.5, message=f"{PAID} installed")
        assert await installed(s, b.url, PAID)
    assert cluster_ollama.pull_count(PAID) == 1
    completions = await stored_completions(nats_cluster)
    assert set(purchases) <= set(completions) and all(completions[p] == 1 for p in purchases)


async def test_a_nats_node_killed_mid_flow_loses_nothing_and_does_nothing_twice(
    studios: Callable[..., StudioProcess], nats_cluster: NatsCluster
) -> None:
    a, b = studios("a"), studios("b")
    await asyncio.gather(a.start(), b.start())
    await nats_cluster.wait_for_replicas(3)
    answered: list[str] = []
    stop = asyncio.Event()

    async def buyers(site: str) -> None:
        while not stop.is_set():
            async with visitor() as s:
                try:
                    await models(s, site)
                    for model in FREE:
                        answered.append(await buy(s, site, model))
                except (aiohttp.ClientError, TimeoutError, AssertionError):
                    continue  # refused or cut during the failover: not answered, so not counted

    tasks = [asyncio.create_task(buyers(site)) for site in (a.url, b.url, a.url, b.url)]
    await eventually(lambda: len(answered) >= 30, timeout=60, message="purchases flowing")
    leader = await stream_leader(nats_cluster)
    nats_cluster.kill(next(i for i, n in enumerate(nats_cluster.nodes) if n.name == leader))
    before = len(answered)
    await eventually(lambda: len(answered) >= before + 30, timeout=90, message="purchases after the failover")
    stop.set()
    await asyncio.gather(*tasks)

    async def all_stored() -> bool:
        try:
            return set(answered) <= set(await stored_completions(nats_cluster))
        except (nats.errors.Error, TimeoutError):  # the meta leader may still be moving: ask again
            return False

    await eventually(all_stored, timeout=60, interval=0.5, message="every answered purchase in the stream")
    completions = await stored_completions(nats_cluster)
    twice = {p: n for p, n in completions.items() if n != 1}
    assert not twice, f"purchase.completed stored more than once: {twice}"
    assert len(answered) == len(set(answered))


async def stream_leader(cluster: NatsCluster) -> str:
    bus = Bus(cluster.url, name="test-leader", source="/tests", login=cluster.login())
    await bus.connect()
    try:
        info = await bus.nc.jsm().stream_info(STREAM)
        assert info.cluster is not None and info.cluster.leader
        return str(info.cluster.leader)
    finally:
        await bus.close(1)


async def test_a_studio_killed_mid_install_leaves_its_installs_to_the_other(
    studios: Callable[..., StudioProcess], cluster_ollama: Any
) -> None:
    cluster_ollama.pull_speed = 8_000  # pulls take long enough to kill the server doing them
    a, b = studios("a"), studios("b")
    await a.start()  # alone, so A takes both purchases' installs
    async with visitor() as s:
        await models(s, a.url)
        for model in (PAID, OTHER_PAID):
            await buy(s, a.url, model)
        await eventually(
            lambda: cluster_ollama.pull_count(PAID) and cluster_ollama.pull_count(OTHER_PAID),
            timeout=30,
            message="A pulling both",
        )
        await b.start()
        live = LiveStream(s, b.url)  # a browser on B sees the progress of A's pulls
        await eventually(
            lambda: live.saw("install.progressed", PAID), timeout=30, message="A's progress on B's live feed"
        )
        states = await models(s, b.url)
        assert {states[m]["install"]["state"] for m in (PAID, OTHER_PAID)} <= {"pulling", "verifying"}, states
        a.kill()  # SIGKILL: its leases stop being renewed, its deliveries are never acknowledged
        cluster_ollama.pull_speed = 200_000

        await eventually(
            lambda: installed(s, b.url, PAID, OTHER_PAID), timeout=180, interval=1, message="B finishing A's installs"
        )
        await eventually(lambda: live.saw("install.completed", OTHER_PAID), timeout=15, message="B's feed")
        await live.close()
    # A's cut pull and B's: B took the install over once A's lease lapsed, and pulled it once
    assert cluster_ollama.pull_count(PAID) == 2 and cluster_ollama.pull_count(OTHER_PAID) == 2


async def test_a_drained_studio_hands_its_pulls_to_the_other_and_stops_cleanly(
    studios: Callable[..., StudioProcess], cluster_ollama: Any
) -> None:
    """README's drain: out of the load balancer, then SIGTERM; the other server takes its work."""
    cluster_ollama.pull_speed = 4_000  # longer than the shutdown grace: the pull is handed back, not finished
    a, b = studios("a", STUDIO_SHUTDOWN_GRACE_S="2"), studios("b")
    await a.start()
    async with visitor() as s:
        await models(s, a.url)
        await buy(s, a.url, PAID)
        await eventually(lambda: cluster_ollama.pull_count(PAID), timeout=30, message="A pulling")
        await b.start()
        a.stop()  # SIGTERM
        assert a.proc is not None and a.proc.returncode == 0, a.log_tail()
        cluster_ollama.pull_speed = 200_000
        await eventually(lambda: installed(s, b.url, PAID), timeout=120, interval=1, message="B finishing A's pull")
    assert cluster_ollama.pull_count(PAID) == 2
