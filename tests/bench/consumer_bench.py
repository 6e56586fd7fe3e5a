"""Do the consumers keep up? Projection throughput, and lag at the highest purchase rate the studio sustains.

    .venv/bin/python -m tests.bench.consumer_bench [--events 20000] [--seconds 20] [--buyers 16]

1. Projection throughput: `--events` purchase.completed events wait in JetStream; chat's real
   ownership consumer (`chat__track_ownership`, batches of 256, one transaction each) starts and
   applies them all. Baseline, same run: the same projection one event per fetch and per transaction
   (how every consumer worked before). Goal: >= 5,000 events/s.
2. Lag under load: a whole studio (`localai-studio up`, test mode, every model preinstalled in the
   Ollama stand-in) and `--buyers` visitors buying as fast as it answers for `--seconds`; every
   durable consumer's lag (age of its oldest unacknowledged event) sampled 4 times a second.
   Goal: p99 under 1 s for every consumer at that rate. Then the time to drain once buying stops.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from events.bus import Bus
from events.catalog import PurchaseCompleted
from events.delivery import Delivery
from events.envelope import Event
from events.lag import consumer_lags
from events.server import NatsServer
from functions import load
from functions.chat.entitlements import Ownership
from studio.app.runner import install_event_loop_policy
from studio.runtime.database import RUNTIME_MIGRATIONS, Database
from studio.runtime.host import Host
from studio.runtime.logs import configure
from studio.runtime.settings import Settings
from tests.bench.studio_process import Studio, buyers, ollama_double
from tests.support import free_port


def purchases(n: int) -> list[Event]:
    out = []
    for i in range(n):
        data = PurchaseCompleted(
            purchase_id=f"pur_{uuid.uuid4().hex[:20]}",
            user_id=f"v_bench{i % 5000}",
            model="llama3.2:3b",
            kind="test",
            amount_cents=499,
            currency="usd",
        )
        out.append(Event(type=data.TYPE, source="/bench", data=data.to_data(), subject=data.subject))
    return out


async def publish(bus: Bus, events: list[Event]) -> None:
    for i in range(0, len(events), 1000):
        await bus.publish_many(events[i : i + 1000])


async def wait_until(check, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        await asyncio.sleep(0.01)


async def one_by_one(nats_url: str, data_dir: Path, n: int) -> tuple[float, float]:
    """The baseline: fetch one event, write it in its own transaction, ack it."""
    db = Database(data_dir / "baseline.db")
    await db.open()
    await db.migrate([RUNTIME_MIGRATIONS, load("chat").migrations or RUNTIME_MIGRATIONS])
    ownership = Ownership(db)
    bus = Bus(nats_url, name="bench-baseline", source="/bench")
    await bus.connect()

    async def apply(event: PurchaseCompleted, delivery: Delivery) -> None:
        await ownership.apply([(event, None)])

    started, cpu = time.perf_counter(), time.process_time()
    consumer = await bus.consume("bench__one_by_one", [PurchaseCompleted.TYPE], apply, max_concurrency=1)
    await wait_until(lambda: consumer.handled >= n)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await bus.close(1)
    await db.close()
    return n / elapsed, n / cpu


async def batched(nats_url: str, data_dir: Path, n: int) -> tuple[float, float]:
    """Chat's real projection consumer, as the runtime runs it."""
    settings = Settings.from_env({}, data_dir=data_dir / "chat", nats_url=nats_url, log_level="WARNING")
    started, cpu = time.perf_counter(), time.process_time()
    host = Host([load("chat")], settings)
    await host.start()
    consumer = host.bus.consumer("chat__track_ownership")
    await wait_until(lambda: consumer.handled >= n)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await host.stop()
    return n / elapsed, n / cpu


async def projection_throughput(events: int) -> tuple[tuple[float, float], tuple[float, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp) / "nats", port=free_port())
        await server.start()
        try:
            bus = Bus(server.url, name="bench-publisher", source="/bench")
            await bus.connect()
            await bus.ensure_stream()
            await publish(bus, purchases(events))
            await bus.close(1)
            base = await one_by_one(server.url, Path(tmp), min(events, 3000))
            fast = await batched(server.url, Path(tmp), events)
        finally:
            server.stop()
    return base, fast


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def lag_under_load(seconds: float, concurrency: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp, ollama_double() as ollama_url:
        studio = Studio(Path(tmp) / "data", ollama_url)
        studio.start()
        try:
            bus = Bus(studio.nats_url, name="bench-lag", source="/bench", login=studio.nats_login())
            await bus.connect()
            samples: dict[str, list[float]] = {}
            stop = asyncio.Event()

            async def sample() -> None:
                while not stop.is_set():
                    for lag in await consumer_lags(bus, timeout=5):
                        samples.setdefault(lag.consumer, []).append(lag.oldest_pending_s)
                    await asyncio.sleep(0.25)

            sampler = asyncio.create_task(sample())
            started = time.perf_counter()
            bought = await buyers(studio.url, concurrency, seconds=seconds)
            rate = bought / (time.perf_counter() - started)
            stopped = time.perf_counter()
            while True:
                lags = await consumer_lags(bus, timeout=5)
                if all(x.pending + x.ack_pending == 0 for x in lags):
                    break
                await asyncio.sleep(0.05)
            drain = time.perf_counter() - stopped
            stop.set()
            await sampler
            await bus.close(1)
        finally:
            studio.stop()
    return {"rate": rate, "bought": bought, "drain_s": drain, "samples": samples}


async def main(args: argparse.Namespace) -> None:
    configure("WARNING", "bench")
    (base, base_cpu), (fast, fast_cpu) = await projection_throughput(args.events)
    print("projection consumer (chat__track_ownership)      events/s   per CPU-second of the consumer")
    print(f"  one event per fetch and transaction (before): {base:9,.0f}   {base_cpu:9,.0f}")
    print(f"  batches of up to 256, one transaction each:   {fast:9,.0f}   {fast_cpu:9,.0f}")
    print(f"  ratio: {fast / base:.1f}x (per CPU-second {fast_cpu / base_cpu:.1f}x); goal >= 5,000 events/s")

    result = await lag_under_load(args.seconds, args.buyers)
    print(
        f"\nlag under load: {args.buyers} visitors buying for {args.seconds:g} s: "
        f"{result['bought']:,} purchases, {result['rate']:,.0f}/s; drained {result['drain_s']:.2f} s after"
    )
    print(f"  {'consumer':<34} {'p50 s':>7} {'p99 s':>7} {'max s':>7}")
    for consumer, values in sorted(result["samples"].items()):
        print(f"  {consumer:<34} {statistics.median(values):7.2f} {percentile(values, 0.99):7.2f} {max(values):7.2f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--buyers", type=int, default=16)
    install_event_loop_policy()
    p.add_argument("--smoke", action="store_true", help="tiny parameters: check that the bench runs (CI)")
    args = p.parse_args()
    if args.smoke:
        args.events, args.seconds, args.buyers = 200, 1.0, 2
    asyncio.run(main(args))
