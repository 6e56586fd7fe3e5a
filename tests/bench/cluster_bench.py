"""Several servers against one, in one run on one machine: purchases a second and their latency through
one studio on one nats-server (the baseline) and through two studios on a 3-node NATS cluster keeping
3 copies of the stream, sharing one database; then the cluster's stream leader SIGKILLed under the same
load: how long answered purchases take to reach the bus (the outbox relays them), against the same
load without a kill.

    .venv/bin/python -m tests.bench.cluster_bench [--purchases 400] [--buyers 8]

Both studios run on this one machine, so the cluster figures show the cost of replication and of
sharing the database, not the capacity a second VPS adds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from events.bus import STREAM, Bus
from events.envelope import Event
from events.server import NatsServer
from tests.cluster.nats_cluster import NatsCluster
from tests.cluster.processes import StudioProcess, studio_env
from tests.conftest import free_port
from tests.doubles.ollama import OllamaDouble

FREE = ("tinyllama:latest", "qwen2.5:0.5b", "gemma2:2b")


Answer = tuple[float, float, str]  # answered at (perf_counter), seconds taken, purchase id


async def buy_all(sites: list[str], n: int, buyers: int, stop: asyncio.Event | None = None) -> list[Answer]:
    """Visitors buying free models through the sites in turn; every purchase answered 200."""
    done: list[Answer] = []
    count = 0

    async def buyer(i: int) -> None:
        nonlocal count
        site = sites[i % len(sites)]
        while (stop is None and count < n) or (stop is not None and not stop.is_set()):
            async with aiohttp.ClientSession(
                cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=10)
            ) as s:
                try:
                    async with s.get(site + "/api/models") as first:
                        await first.read()
                    for model in FREE:
                        started = time.perf_counter()
                        async with s.post(f"{site}/api/models/purchase/{model}") as resp:
                            body = await resp.json()
                            if resp.status == 200:
                                done.append((time.perf_counter(), time.perf_counter() - started, body["purchase_id"]))
                                count += 1
                except (aiohttp.ClientError, TimeoutError):
                    await asyncio.sleep(0.05)  # refused mid-failover: the next visitor tries again

    await asyncio.gather(*(buyer(i) for i in range(buyers)))
    return done


def figures(done: list[Answer], seconds: float) -> tuple[float, float, float]:
    lat = sorted(d for _, d, _ in done)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return len(done) / seconds, statistics.median(lat) * 1000, p99 * 1000


def event_delays(done: list[Answer], seen: dict[str, float]) -> tuple[float, float, int]:
    """Answer -> purchase.completed on the bus (the outbox relaying it to JetStream): p99 and max in
    seconds, and how many answered purchases the listener has not seen (it may miss some while its
    own node restarts; the stream has them: tests/cluster checks that)."""
    delays = sorted(max(0.0, seen[p] - t) for t, _, p in done if p in seen)
    if not delays:
        return 0.0, 0.0, len(done)
    return delays[min(len(delays) - 1, int(len(delays) * 0.99))], delays[-1], len(done) - len(delays)


async def timed(sites: list[str], n: int, buyers: int) -> tuple[float, float, float]:
    await buy_all(sites, buyers * 3, buyers)  # warm-up
    started = time.perf_counter()
    done = await buy_all(sites, n, buyers)
    return figures(done, time.perf_counter() - started)


async def leader_of(cluster: NatsCluster) -> int:
    bus = Bus(cluster.url, name="bench", source="/bench", login=cluster.login())
    await bus.connect()
    try:
        info = await bus.nc.jsm().stream_info(STREAM)
        assert info.cluster is not None
        return next(i for i, n in enumerate(cluster.nodes) if n.name == info.cluster.leader)
    finally:
        await bus.close(1)


async def failover(cluster: NatsCluster, sites: list[str], buyers: int, kill: bool) -> tuple[float, float, int]:
    leader = await leader_of(cluster)
    watcher = next(n for i, n in enumerate(cluster.nodes) if i != leader and n.running)  # not the one killed
    bus = Bus(watcher.url, name="bench-watch", source="/bench", login=cluster.login())
    await bus.connect()
    seen: dict[str, float] = {}

    async def note(event: Event) -> None:
        seen.setdefault(event.data["purchase_id"], time.perf_counter())

    await bus.listen("purchase.completed", note)
    stop = asyncio.Event()
    load = asyncio.create_task(buy_all(sites, 0, buyers, stop))
    await asyncio.sleep(3)  # steady load before the kill (a benchmark's pacing, not a wait for an event)
    if kill:
        cluster.kill(leader)
    await asyncio.sleep(8)
    stop.set()
    done = await load
    await asyncio.sleep(5)  # let the outboxes finish relaying
    await bus.close(1)
    return event_delays(done, seen)


async def main(args: argparse.Namespace) -> None:
    async with OllamaDouble(installed=list(FREE)) as ollama:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            # baseline: one server
            single = NatsServer(root / "single-nats", port=free_port())
            await single.start()
            one = StudioProcess("one", root / "one" / "data", studio_env(single.url, ollama.url, replicas=1))
            try:
                await one.start()
                base = await timed([one.url], args.purchases, args.buyers)
            finally:
                one.stop()
                single.stop()
            # two servers, a 3-node cluster, one shared database
            cluster = NatsCluster(root / "cluster")
            await cluster.start()
            # (each server has its own data dir, as on two VPSs: one studio per data dir; the database they
            # share is one SQLite file both name, as PostgreSQL would be)
            database = {"STUDIO_DATABASE_URL": f"sqlite:///{root / 'shared.db'}"}
            pair = [
                StudioProcess(
                    n,
                    root / n / "data",
                    studio_env(
                        cluster.url,
                        ollama.url,
                        replicas=3,
                        STUDIO_NATS_CREDENTIALS_DIR=str(cluster.credentials),
                        STUDIO_NATS_CA=str(cluster.ca),
                        **database,
                    ),
                )
                for n in ("a", "b")
            ]
            try:
                for studio in pair:
                    await studio.start()
                sites = [s.url for s in pair]
                two = await timed(sites, args.purchases, args.buyers)
                calm = await failover(cluster, sites, args.buyers, kill=False)
                killed = await failover(cluster, sites, args.buyers, kill=True)
            finally:
                for studio in pair:
                    studio.stop()
                cluster.stop()
    print(f"\npurchases ({args.purchases}, {args.buyers} buyers)      purchases/s   p50 ms   p99 ms")
    print(f"one studio, one nats-server (R1)       {base[0]:10.0f} {base[1]:8.1f} {base[2]:8.1f}")
    print(f"two studios, 3-node cluster (R3)       {two[0]:10.0f} {two[1]:8.1f} {two[2]:8.1f}")
    ratios = (two[0] / base[0], two[1] / base[1], two[2] / base[2])
    print(f"ratio cluster / one                    {ratios[0]:10.2f} {ratios[1]:8.2f} {ratios[2]:8.2f}")
    print("\npurchase answered -> purchase.completed on the bus     p99 s    max s   not seen")
    print(f"steady                                           {calm[0]:8.3f} {calm[1]:8.3f} {calm[2]:10d}")
    print(f"stream leader SIGKILLed at 3 s                   {killed[0]:8.3f} {killed[1]:8.3f} {killed[2]:10d}")
    print(f"ratio killed / steady (max)                      {killed[1] / calm[1] if calm[1] else float('inf'):8.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--purchases", type=int, default=400)
    parser.add_argument("--buyers", type=int, default=8)
    parser.add_argument("--smoke", action="store_true", help="tiny parameters: check that the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.purchases, args.buyers = 20, 2
    asyncio.run(main(args))
