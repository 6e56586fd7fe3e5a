"""Accounts and the OpenAI-compatible API: what they cost, in one run.

    .venv/bin/python -m tests.bench.accounts_bench [--streams 50] [--tokens 2000] [--rounds 3] [--litellm PATH]

Processes on loopback: nats-server, the Ollama stand-in (`tests.bench.chat_serve ollama`), and the studio
embedded with the accounts and chat functions (`chat_serve accounts`). Measured:

1. A sign-in (Argon2id, argon2-cffi's defaults) through the gateway: p50 and p99 of sequential logins.
2. A key check as the gateway does it on every request (`gateway.credentials.Credentials`): the first
   lookup (a NATS query to the accounts function) and every later one (cached), p50.
3. 50 concurrent streams, straight from Ollama (NDJSON), through `/api/chat` (the studio's SSE) and
   through `/v1/chat/completions` (OpenAI's SSE, with a personal API key): added time to first token
   (short replies) and tokens/s (flat out), each as a ratio to straight from Ollama; and the same for
   LiteLLM's proxy (`--litellm` = its `litellm` executable, installed in a venv of its own with
   `pip install 'litellm[proxy]'`; one worker, `model: ollama_chat/tinyllama:latest`).

Goals (issue 10): /v1 within 10% of /api/chat on both; a login under 100 ms p50; a key check under
0.1 ms p50.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp

from events.bus import Bus
from events.server import NatsServer
from gateway.credentials import Credentials
from studio.app.runner import install_event_loop_policy
from tests.bench.chat_bench import MODEL, SHORT_REPLY, Double, Stream, read_ndjson, read_openai, read_sse, reply_of
from tests.bench.common import process
from tests.support import free_port

PASSWORD = "correct horse battery"
LITELLM_KEY = "sk-bench-" + "0" * 48  # LiteLLM's master key (it refuses to start without one)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


@contextlib.contextmanager
def litellm_proxy(executable: str, port: int, ollama_url: str, model: str = MODEL) -> Iterator[str]:
    config = Path(tempfile.mkdtemp()) / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {model}\n"
        "    litellm_params:\n"
        f"      model: ollama_chat/{model}\n"
        f"      api_base: {ollama_url}\n"
    )
    proc = subprocess.Popen(
        [executable, "--config", str(config), "--port", str(port), "--num_workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": LITELLM_KEY},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


async def wait_until_up(session: aiohttp.ClientSession, url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with session.get(url + "/health/liveliness") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up")
        await asyncio.sleep(0.5)


async def logins(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.post(
            url + "/api/auth/login", json={"email": "bench@example.com", "password": PASSWORD}
        ) as r:
            assert r.status == 200, await r.text()
        times.append(time.perf_counter() - t0)
    return times


async def key_checks(nats_url: str, key: str, n: int) -> tuple[float, float]:
    bus = Bus(nats_url, name="bench", source="/bench")
    await bus.connect()
    credentials = Credentials(bus)
    await credentials.start()
    t0 = time.perf_counter()
    held = await credentials.key(key)
    first = time.perf_counter() - t0
    assert held.account_id, "the key was not recognised"
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await credentials.key(key)
        samples.append(time.perf_counter() - t0)
    await bus.close(1)
    return first, statistics.median(samples)


async def concurrent(n: int, one: Callable[[], Awaitable[Stream]]) -> list[Stream]:
    return list(await asyncio.gather(*(one() for _ in range(n))))


async def streams(
    double: Double, targets: dict[str, Callable[[], Awaitable[Stream]]], n: int, tokens: int, rounds: int
) -> dict[str, dict[str, float]]:
    ttft: dict[str, list[float]] = {name: [] for name in targets}
    rate: dict[str, list[float]] = {name: [] for name in targets}
    names = list(targets)
    for k in range(rounds):
        # interleaved, and in a rotating order: drift, and the tail of the previous target's work
        # (its usage events being published), hit every target alike
        for name in names[k % len(names) :] + names[: k % len(names)]:
            one = targets[name]
            await double.configure(30, SHORT_REPLY)
            ttft[name].append(statistics.median(s.ttft for s in await concurrent(n, one)))
            await double.configure(0, reply_of(tokens))
            t0 = time.perf_counter()
            done = await concurrent(n, one)
            rate[name].append(sum(s.tokens for s in done) / (time.perf_counter() - t0))
    return {name: {"ttft": statistics.median(ttft[name]), "rate": statistics.median(rate[name])} for name in targets}


async def bench(args: argparse.Namespace, nats_url: str, double_url: str, studio: str, litellm: str | None) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        double = Double(double_url, session)
        browser = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        async with browser.post(studio + "/api/auth/signup", json={"email": "bench@example.com", "password": PASSWORD}):
            pass
        async with browser.post(studio + "/api/account/keys", json={"name": "bench"}) as resp:
            key = (await resp.json())["key"]
        cookie = {"Cookie": "; ".join(f"{c.key}={c.value}" for c in browser.cookie_jar)}
        bearer = {"Authorization": f"Bearer {key}"}
        await browser.close()

        login = await logins(session, studio, args.logins)
        first_check, cached_check = await key_checks(nats_url, key, 100_000)

        targets: dict[str, Callable[[], Awaitable[Stream]]] = {
            "straight from Ollama": lambda: read_ndjson(session, double_url),
            "/api/chat (studio SSE)": lambda: read_sse(session, studio, cookie),
            "/v1/chat/completions": lambda: read_openai(session, studio, bearer),
        }
        if litellm:
            await wait_until_up(session, litellm)
            targets["LiteLLM proxy /v1"] = lambda: read_openai(
                session, litellm, {"Authorization": f"Bearer {LITELLM_KEY}"}
            )
        for one in targets.values():
            await double.configure(0, SHORT_REPLY)
            await one()  # warm up
        figures = await streams(double, targets, args.streams, args.tokens, args.rounds)

    print(f"\n1. Sign-in (Argon2id), {args.logins} sequential logins through the gateway")
    print(
        f"   p50 {statistics.median(login) * 1e3:.1f} ms   p99 {pct(login, 0.99) * 1e3:.1f} ms   (goal: < 100 ms p50)"
    )
    print("\n2. API key check, as the gateway does it on every request")
    print(f"   first lookup (NATS query to accounts) {first_check * 1e3:.2f} ms")
    print(f"   cached, p50 of 100,000 {cached_check * 1e6:.2f} us   (goal: < 100 us)")
    base = figures["straight from Ollama"]
    print(
        f"\n3. {args.streams} concurrent streams: time to first token (short replies at 30 tokens/s) and tokens/s "
        f"({args.tokens:,} tokens each, flat out); medians of {args.rounds} rounds"
    )
    print(f"{'target':<26}{'ttft p50':>10}{'added':>10}{'tok/s total':>13}{'ratio':>7}")
    for name, f in figures.items():
        print(
            f"{name:<26}{f['ttft'] * 1e3:>8.2f}ms{(f['ttft'] - base['ttft']) * 1e3:>+8.2f}ms"
            f"{f['rate']:>13,.0f}{f['rate'] / base['rate']:>7.2f}"
        )
    api, v1 = figures["/api/chat (studio SSE)"], figures["/v1/chat/completions"]
    print(
        f"\n/v1 vs /api/chat: added ttft {(v1['ttft'] - base['ttft']) * 1e3:+.2f} ms vs "
        f"{(api['ttft'] - base['ttft']) * 1e3:+.2f} ms; tokens/s {v1['rate'] / api['rate']:.2f} of /api/chat "
        "(goal: within 10% on both)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=2000, help="tokens of each flat-out stream")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--logins", type=int, default=30)
    parser.add_argument("--litellm", default=None, help="the `litellm` executable of a venv with litellm[proxy]")
    parser.add_argument("--smoke", action="store_true", help="tiny parameters: check that the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.streams, args.tokens, args.rounds, args.logins = 3, 20, 1, 2

    install_event_loop_policy()
    nats = NatsServer(Path(tempfile.mkdtemp()) / "nats", port=free_port())
    asyncio.run(nats.start())
    try:
        dport, sport = free_port(), free_port()
        double_url = f"http://127.0.0.1:{dport}"
        serve = ("-m", "tests.bench.chat_serve")
        with (
            process(*serve, "ollama", str(dport), ready="ready"),
            process(*serve, "accounts", str(sport), nats.url, double_url, ready="ready"),
            litellm_proxy(args.litellm, free_port(), double_url)
            if args.litellm
            else contextlib.nullcontext() as litellm,
        ):
            print(f"{os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
            asyncio.run(bench(args, nats.url, double_url, f"http://127.0.0.1:{sport}", litellm))
    finally:
        nats.stop()


if __name__ == "__main__":
    main()
