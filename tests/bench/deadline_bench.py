"""What a per-request deadline costs: `asyncio.timeout` vs. the shared watchdog (studio/runtime/watchdog.py).

    .venv/bin/python -m tests.bench.deadline_bench [--requests 200000] [--rounds 5]

The gateway gives every routed request a deadline to start answering (gateway/edge.py). Each way is
timed around the same stand-in handler (one suspension, as a handler awaiting its function does),
50 requests in flight as 50 tasks, on uvloop as the gateway runs. Printed: the time per request of
the bare handler (the baseline) and what each deadline adds to it, the median of interleaved rounds;
then the added cost as a share of a whole gateway request (`--request-us`, from gateway_bench.py:
the embedded gateway's throughput on one core, 1 / req/s).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from studio.app.runner import install_event_loop_policy
from studio.runtime.watchdog import Watchdog

IN_FLIGHT = 50
TIMEOUT_S = 30.0


async def handler() -> int:
    await asyncio.sleep(0)
    return 1


async def bare() -> int:
    return await handler()


async def with_asyncio_timeout() -> int:
    async with asyncio.timeout(TIMEOUT_S):
        return await handler()


def with_watchdog(dog: Watchdog) -> Callable[[], Awaitable[int]]:
    async def run() -> int:  # as gateway/edge.py's _within_deadline did
        loop = asyncio.get_running_loop()
        at = loop.time() + TIMEOUT_S
        watched = dog.watch(lambda: loop.time() >= at)
        try:
            return await handler()
        except asyncio.CancelledError as exc:
            if watched.owns(exc):
                raise TimeoutError from None
            raise
        finally:
            dog.release(watched.task)

    return run


async def per_request_ns(way: Callable[[], Awaitable[int]], requests: int) -> float:
    async def worker(n: int) -> None:
        for _ in range(n):
            await way()

    started = time.perf_counter_ns()
    await asyncio.gather(*(worker(requests // IN_FLIGHT) for _ in range(IN_FLIGHT)))
    return (time.perf_counter_ns() - started) / (requests // IN_FLIGHT * IN_FLIGHT)


async def measure(requests: int, rounds: int) -> dict[str, float]:
    dog = Watchdog("bench")
    ways = {"bare handler": bare, "asyncio.timeout": with_asyncio_timeout, "watchdog": with_watchdog(dog)}
    for way in ways.values():
        await per_request_ns(way, requests // 10)  # warm-up
    runs: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, way in ways.items():
            runs[name].append(await per_request_ns(way, requests))
    await dog.close()
    return {name: statistics.median(r) for name, r in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--request-us", type=float, default=100.0, help="one gateway request, for the share")
    parser.add_argument("--smoke", action="store_true", help="tiny parameters: check that the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.rounds = 2_000, 1
    install_event_loop_policy()
    results = asyncio.run(measure(args.requests, args.rounds))
    base = results["bare handler"]
    print(f"\nmedians of {args.rounds} interleaved rounds, {args.requests:,} requests each, {IN_FLIGHT} in flight")
    print(f"{'way':<18}{'ns/request':>12}{'added ns':>10}{'ratio':>8}{'of a request':>14}")
    for name, ns in results.items():
        added = ns - base
        share = added / (args.request_us * 1000)
        print(f"{name:<18}{ns:>12,.0f}{added:>10,.0f}{ns / base:>8.2f}{share:>13.1%}")
    gain = results["asyncio.timeout"] - results["watchdog"]
    print(f"\nwatchdog saves {gain:,.0f} ns per request vs asyncio.timeout: {gain / (args.request_us * 1000):.1%}")
    print(f"of a {args.request_us:g} us gateway request")


if __name__ == "__main__":
    main()
