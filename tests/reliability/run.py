"""Reliability figures: drive a real studio (`localai-studio up`, real NATS, SQLite, the host nginx
config in a real nginx, the Ollama and Stripe stand-ins) through faults, bad inputs and a flood, and
print one table (README's "Reliability figures" are this table, rerun):

    .venv/bin/python -m tests.reliability.run [--rounds 5]

- faults: the studio SIGKILLed at a random moment during a stream of purchases (each round), then
  restarted: every purchase it answered 200 is there, paid, once, with one purchase.completed;
  nats-server killed and restarted mid-purchases: every purchase answered 200 is there and the
  outbox drains onto the bus; the same Stripe webhook 3x at once: one purchase.completed;
- bad inputs: schemathesis with the contract (tests/gateway/test_contract.py), outcomes counted;
- load through nginx: one address opens many event streams while another asks /health.

Not here yet (issue 13 lists them): the install function killed mid-pull (tests/functions/install/
test_crash.py covers it), Ollama down for 60 s, a restore under writes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import requests
import schemathesis

from events.server import NatsServer
from gateway.openapi import document
from studio import catalog
from tests.conftest import free_port
from tests.doubles.stripe import StripeDouble
from tests.production import nginx
from tests.support import wait_sync

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "localai-studio")
TOKEN = "op-reliability"
FREE_MODELS = tuple(m.id for m in catalog.cached(None) if m.free)


class Studio:
    """`localai-studio up` as a process over one data dir, restartable, killable."""

    def __init__(self, data: Path, nats_url: str, stripe: StripeDouble, ollama_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = data
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
        self.env.update(
            STUDIO_DATA_DIR=str(data),
            STUDIO_PORT=str(self.port),
            STUDIO_NATS_URL=nats_url,
            STUDIO_OLLAMA_URL=f"http://127.0.0.1:{ollama_port}",
            STUDIO_ADMIN_TOKEN=TOKEN,
            STUDIO_SKIP_PAYMENT="false",
            STRIPE_SECRET_KEY=stripe.api_key,
            STRIPE_WEBHOOK_SECRET=stripe.webhook_secret,
            STUDIO_STRIPE_API_BASE=stripe.url,
            STUDIO_WRITES_PER_ADDRESS_PER_MINUTE="100000",
            STUDIO_LOG_LEVEL="WARNING",
            STUDIO_HEARTBEAT_S="0.5",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([CLI, "up"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, "the studio exited at start-up"
            try:
                return requests.get(self.url + "/healthz", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_sync(up, timeout=30, message="the studio to start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def rows(self, sql: str) -> list[tuple]:
        conn = sqlite3.connect(f"file:{self.data / 'studio.db'}?mode=ro", uri=True)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()


async def visitor_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=10))


async def buy_free(studio: Studio, accepted: list[str], stop: asyncio.Event) -> None:
    """New visitors buying free models as fast as they can; the purchase ids answered 200."""
    while not stop.is_set():
        async with await visitor_session() as s:
            try:
                async with s.get(studio.url + "/api/models") as first:
                    await first.read()
                for model in FREE_MODELS:
                    async with s.post(f"{studio.url}/api/models/purchase/{model}") as resp:
                        if resp.status == 200:
                            accepted.append((await resp.json())["purchase_id"])
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.05)  # the studio is down: try again (not a wait for an event)


async def killed_mid_purchases(studio: Studio, rounds: int) -> tuple[str, str]:
    accepted: list[str] = []
    for _ in range(rounds):
        studio.start()
        stop = asyncio.Event()
        buyers = [asyncio.create_task(buy_free(studio, accepted, stop)) for _ in range(4)]
        await asyncio.sleep(random.uniform(0.3, 1.5))  # a random moment to pull the plug
        studio.kill()
        stop.set()
        await asyncio.gather(*buyers)
    studio.start()
    paid = studio.rows("SELECT id, user_id, model FROM purchases WHERE status = 'paid'")
    ids = [r[0] for r in paid]
    lost = sorted(set(accepted) - set(ids))
    events = studio.rows("SELECT count(*) FROM outbox WHERE event_type = 'purchase.completed'")[0][0]
    twice = len(paid) - len({(r[1], r[2]) for r in paid}) + abs(events - len(paid))
    studio.stop()
    verdict = "ok" if not lost and not twice else "FAILED"
    return verdict, f"{rounds} SIGKILLs, {len(accepted)} purchases answered 200: {len(lost)} lost, {twice} twice"


async def nats_killed_mid_purchases(studio: Studio, servers: list[NatsServer]) -> tuple[str, str]:
    nats_server = servers[-1]
    studio.start()
    accepted: list[str] = []
    stop = asyncio.Event()
    buyers = [asyncio.create_task(buy_free(studio, accepted, stop)) for _ in range(2)]
    await asyncio.sleep(0.5)  # purchases flowing
    nats_server.kill()
    await asyncio.sleep(1.0)  # purchases accepted while NATS is down
    restarted = NatsServer(nats_server.store_dir, port=nats_server.port)
    servers.append(restarted)  # stopped with the others
    await restarted.start()
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*buyers)

    def delivered() -> bool:
        pending = studio.rows("SELECT count(*) FROM outbox WHERE published_at IS NULL")[0][0]
        return pending == 0

    try:
        wait_sync(delivered, timeout=30, message="the outbox to drain")
        drained = True
    except AssertionError:
        drained = False
    paid = {r[0] for r in studio.rows("SELECT id FROM purchases WHERE status = 'paid'")}
    lost = set(accepted) - paid
    studio.stop()
    ok = drained and not lost
    outbox = "drained" if drained else "NOT drained"
    return ("ok" if ok else "FAILED"), f"{len(accepted)} purchases across the outage: {len(lost)} lost, outbox {outbox}"


async def same_webhook_three_times(studio: Studio, stripe: StripeDouble) -> tuple[str, str]:
    studio.start()
    async with await visitor_session() as s:
        async with s.get(studio.url + "/api/models") as first:
            await first.read()
        async with s.post(studio.url + "/api/models/purchase/phi3:mini") as resp:
            body = await resp.json()
    session_id = body["checkout_url"].rsplit("/", 1)[1]
    stripe.pay(session_id)
    statuses = await stripe.deliver(
        studio.url + "/api/webhooks/stripe", "checkout.session.completed", session_id, times=3
    )
    wait_sync(
        lambda: studio.rows(f"SELECT status FROM purchases WHERE id = '{body['purchase_id']}'")[0][0] == "paid",
        timeout=15,
        message="the purchase to be paid",
    )
    completed = studio.rows(
        "SELECT count(*) FROM outbox WHERE event_type = 'purchase.completed' "
        f"AND CAST(payload AS TEXT) LIKE '%{body['purchase_id']}%'"
    )[0][0]
    studio.stop()
    return ("ok" if completed == 1 else "FAILED"), f"3 deliveries ({statuses}): {completed} purchase.completed"


def bad_inputs(studio: Studio) -> list[tuple[str, str, str]]:
    from tests.gateway.test_contract import ENDLESS, fuzz

    studio.start()
    visitor = requests.Session()
    visitor.get(studio.url + "/api/models")
    totals: dict[str, int] = {}
    failures = 0
    for result in schemathesis.openapi.from_dict(document()).get_all_operations():
        op = result.ok()  # type: ignore[union-attr]
        if op.path in ENDLESS:
            continue
        try:
            seen = fuzz(op, studio.url, visitor, studio.data / "studio.db")
        except Exception:
            failures += 1
            continue
        for status, n in seen.items():
            key = f"{status // 100}xx"
            totals[key] = totals.get(key, 0) + n
    studio.stop()
    cases = sum(totals.values())
    return [
        (
            "bad inputs",
            "contract fuzzing (schemathesis)",
            f"{cases} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())),
        ),
        (
            "bad inputs",
            "operations failing a check",
            f"{failures} (no unnamed 5xx, no schema break, no row changed on a 4xx)",
        ),
    ]


async def flood_through_nginx(studio: Studio, prefix: Path) -> list[tuple[str, str, str]]:
    studio.start()
    host = nginx.start_host(prefix, frontend_port=free_port(), gateway_port=studio.port)
    context = nginx_context(host)
    statuses: list[int] = []
    latencies: list[float] = []
    answered: list[bool] = []
    try:
        async with AsyncExitStack() as held:
            attacker = await held.enter_async_context(
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=0, force_close=True))
            )
            for _ in range(60):
                resp = await held.enter_async_context(attacker.get(host.url("https", "/api/events")))
                statuses.append(resp.status)
                await asyncio.sleep(0.12)  # under the request rate (10/s): what refuses is the stream cap
            other_context = nginx_context(host)
            other_context.check_hostname = False
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=other_context)) as other:
                for _ in range(200):
                    started = time.perf_counter()
                    async with other.get(f"https://[::1]:{host.ports['https']}/health") as health:
                        await health.read()
                        answered.append(health.status in (200, 503))
                    latencies.append((time.perf_counter() - started) * 1000)
                    await asyncio.sleep(0.04)  # a monitor's pace, under the pages' 30 r/s
                async with other.get(f"https://[::1]:{host.ports['https']}/api/models") as models:
                    others_served = models.status == 200
    finally:
        host.stop()
        studio.stop()
    p99 = statistics.quantiles(latencies, n=100)[98]
    return [
        (
            "load",
            "one address opens 60 event streams",
            f"{statuses.count(200)} served, {statuses.count(429)} refused (429)",
        ),
        (
            "load",
            "another address meanwhile",
            f"catalog {'served' if others_served else 'NOT served'}; /health p50 "
            f"{statistics.median(latencies):.1f} ms, p99 {p99:.1f} ms, {sum(answered)}/200 answered",
        ),
    ]


def nginx_context(host: nginx.Nginx):
    import ssl

    return ssl.create_default_context(cafile=str(host.prefix / "letsencrypt" / "live" / "localhost" / "fullchain.pem"))


async def main(rounds: int) -> None:
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        root = Path(tmp)
        ollama_port = free_port()
        ollama = subprocess.Popen(
            [sys.executable, "-m", "tests.doubles.ollama", "--port", str(ollama_port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        servers: list[NatsServer] = []
        try:
            async with StripeDouble() as stripe:

                async def studio(name: str) -> Studio:
                    """A studio of its own: data dir and NATS (no events leak between scenarios)."""
                    server = NatsServer(root / name / "nats-server", port=free_port())
                    await server.start()
                    servers.append(server)
                    return Studio(root / name / "data", server.url, stripe, ollama_port)

                verdict, text = await killed_mid_purchases(await studio("kill"), rounds)
                rows.append(("fault", "studio SIGKILLed mid-purchases", f"{verdict}: {text}"))
                nats_studio = await studio("nats")
                verdict, text = await nats_killed_mid_purchases(nats_studio, servers)
                rows.append(("fault", "nats-server killed mid-purchases", f"{verdict}: {text}"))
                verdict, text = await same_webhook_three_times(await studio("webhook"), stripe)
                rows.append(("fault", "the same webhook 3x at once", f"{verdict}: {text}"))
                rows.extend(bad_inputs(await studio("fuzz")))
                rows.extend(await flood_through_nginx(await studio("flood"), root / "nginx"))
        finally:
            for server in servers:
                server.stop()
            ollama.terminate()
            ollama.wait(10)
    print("| kind | what | outcome |")
    print("|---|---|---|")
    for kind, what, outcome in rows:
        print(f"| {kind} | {what} | {outcome} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="SIGKILLs during purchases")
    args = parser.parse_args()
    asyncio.run(main(args.rounds))
