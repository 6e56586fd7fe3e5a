"""Reliability figures: drive a real studio (`localai-studio up`, real NATS, SQLite, the host nginx
config in a real nginx, the Ollama and Stripe stand-ins) through faults, bad inputs and a flood, and
print one table (README's "Reliability figures" are this table, rerun):

    .venv/bin/python -m tests.reliability.run [--rounds 5] [--ollama-down-s 60] [--postgres-down-s 10]
    .venv/bin/python -m tests.reliability.run --only postgres      # the two PostgreSQL rows alone
    .venv/bin/python -m tests.reliability.run --only nats-leaders  # the NATS cluster leaders' row alone

- faults: the studio SIGKILLed at a random moment during a stream of purchases (each round), then restarted:
  every purchase it answered 200 is there, paid, once, with one purchase.completed; nats-server killed and
  restarted mid-purchases: every purchase answered 200 is there and the outbox drains onto the bus; the same
  mid-chats: every chat answered has its usage event (chat.completed through the outbox, published once NATS
  is back); two studios on one PostgreSQL database and a 3-node NATS cluster while visitors chat, the
  JetStream meta leader and then the event stream's leader SIGKILLed and restarted (`--leader-down-s`):
  every chat answered has exactly one chat.completed in the stream (tests/cluster/leaders.py); the install
  function alone (`localai-studio run install` beside an `up` without it, as the
  containers run it) SIGKILLed mid-pull and started again: every model bought ends installed, no model
  pulled twice at once; Ollama down (`--ollama-down-s`) during purchases and chat: chat answers 503, /health
  names ollama, installs wait visibly and end installed; the same Stripe webhook 3x at once: one
  purchase.completed; a backup taken while purchases are written, restored into a fresh data dir: the studio
  starts on it, every purchase answered before the backup is there, whole; PostgreSQL stopped (`--postgres-
  down-s`) under a studio on it while visitors load pages, buy and chat: no 500, nothing answered 200 lost,
  owners of a paid model keep chatting, one log line and no traceback, serving again without a restart; two
  studios on one PostgreSQL database and one NATS, visitors buying through both: every outbox row published
  once (a listener counts every publish);
- bad inputs: schemathesis with the contract (tests/gateway/test_contract.py), outcomes counted;
- load through nginx: one address opens many event streams while another asks /health.

tests/reliability/test_faults.py runs the new fault scenarios at a small scale in the suite (slow tier).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import copy
import json
import math
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from asyncio.subprocess import PIPE
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import requests
import schemathesis

import functions
from events.bus import Bus
from events.envelope import Event
from events.server import NatsServer
from gateway.openapi import document
from studio import catalog
from tests.cluster.leaders import leaders_killed_mid_chats, studio_on
from tests.cluster.nats_cluster import NatsCluster
from tests.conftest import free_port
from tests.doubles.stripe import StripeDouble
from tests.postgres import PostgresServer, postgres_bin
from tests.production import nginx
from tests.support import eventually, wait_sync

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "localai-studio")
TOKEN = "op-reliability"
FREE_MODELS = tuple(m.id for m in catalog.cached(None) if m.free)


class Studio:
    """`localai-studio up` as a process over one data dir, restartable, killable. `without`: functions
    `up` leaves out, to be run alone beside it (`alone`), as the containers run them."""

    def __init__(
        self,
        data: Path,
        nats_url: str,
        stripe: StripeDouble,
        ollama_port: int,
        without: tuple[str, ...] = (),
        *,
        postgres: tuple[PostgresServer, str] | None = None,
    ) -> None:
        self.args = ["up"]
        self.postgres = postgres  # (the server, this studio's database URL), or the SQLite file in the data dir
        self.log = data.parent / "studio.log"
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
        if without:
            self.env["STUDIO_FUNCTIONS"] = ",".join(n for n in functions.NAMES if n not in without)
        if postgres is not None:
            self.env["STUDIO_DATABASE_URL"] = postgres[1]
        self.proc: subprocess.Popen[bytes] | None = None

    def alone(self, function: str) -> Studio:
        """`localai-studio run <function>` on this studio's data dir and NATS, with a port of its own."""
        other = copy.copy(self)
        other.args = ["run", function]
        other.port = free_port()
        other.url = f"http://127.0.0.1:{other.port}"
        other.env = {**self.env, "STUDIO_PORT": str(other.port)}
        other.proc = None
        return other

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:  # the studio's JSON log lines (warnings and errors), kept
            self.proc = subprocess.Popen([CLI, *self.args], env=self.env, stdout=subprocess.DEVNULL, stderr=log)

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, f"{' '.join(self.args)} exited at start-up"
            try:
                return requests.get(self.url + "/healthz", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_sync(up, timeout=30, message=f"{' '.join(self.args)} to start")

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

    def log_lines(self) -> list[dict]:
        """The studio's log so far, one JSON document a line (its other output skipped)."""
        return self.read_log(self.log)

    @staticmethod
    def read_log(path: Path) -> list[dict]:
        out = []
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"level": "raw", "message": line})
        return out

    def rows(self, sql: str) -> list[tuple]:
        if self.postgres is not None:
            server, url = self.postgres
            text = server.psql(url.rsplit("/", 1)[1], sql)
            return [tuple(int(v) if v.isdigit() else v for v in line.split("|")) for line in text.splitlines() if line]
        conn = sqlite3.connect(f"file:{self.data / 'studio.db'}?mode=ro", uri=True)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()


async def visitor_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=10))


async def buy_free(
    studio: Studio,
    accepted: list[str],
    stop: asyncio.Event,
    *,
    pause: float = 0.0,
    answered_at: dict[str, float] | None = None,
) -> None:
    """New visitors buying free models as fast as they can (or one every `pause` s); the purchase ids
    answered 200, and when each was answered (`answered_at`)."""
    while not stop.is_set():
        async with await visitor_session() as s:
            try:
                async with s.get(studio.url + "/api/models") as first:
                    await first.read()
                for model in FREE_MODELS:
                    async with s.post(f"{studio.url}/api/models/purchase/{model}") as resp:
                        if resp.status == 200:
                            purchase_id = (await resp.json())["purchase_id"]
                            accepted.append(purchase_id)
                            if answered_at is not None:
                                answered_at[purchase_id] = time.monotonic()
                    if pause:
                        await asyncio.sleep(pause)  # a steady pace of buyers, not a flood
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


async def chat_free(studio: Studio, answered: list[str], stop: asyncio.Event) -> None:
    """A visitor chatting with a free model as fast as it answers; each answer completed (200) is counted."""
    async with await visitor_session() as s:
        async with s.get(studio.url + "/api/models") as first:  # the visitor's cookie
            await first.read()
        while not stop.is_set():
            try:
                body = {"model": FREE_MODELS[0], "message": "Hello"}
                async with s.post(studio.url + "/api/chat", json=body) as resp:
                    if resp.status == 200 and (await resp.json()).get("done_reason"):
                        answered.append(resp.headers.get("X-Request-Id", ""))
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.05)  # the studio is busy or down: try again (not a wait for an event)


async def nats_killed_mid_chats(lab: Lab) -> tuple[str, str]:
    """nats-server killed and restarted while visitors chat: every answered chat has its usage event
    (chat.completed, through the outbox), and the outbox drains onto the bus."""
    await lab.ollama.control("preinstall", {"models": [FREE_MODELS[0]]})
    studio = await lab.studio("nats-chats")
    studio.env["STUDIO_CHAT_REQUESTS_PER_MINUTE"] = "100000"
    nats_server = lab.servers[-1]
    studio.start()
    answered: list[str] = []
    stop = asyncio.Event()
    chatters = [asyncio.create_task(chat_free(studio, answered, stop)) for _ in range(2)]
    try:
        await eventually(lambda: len(answered) >= 5, timeout=30, message="chats answered")
        before = len(answered)
        nats_server.kill()
        await eventually(lambda: len(answered) >= before + 5, timeout=30, message="chats answered without NATS")
        during = len(answered) - before
        restarted = NatsServer(nats_server.store_dir, port=nats_server.port)
        lab.servers.append(restarted)  # stopped with the others
        await restarted.start()
        await eventually(lambda: len(answered) >= before + during + 5, timeout=30, message="chats after NATS is back")
    finally:
        stop.set()
        await asyncio.gather(*chatters)

    def usage(published: bool) -> int:
        extra = " AND published_at IS NOT NULL" if published else ""
        return studio.rows(f"SELECT count(*) FROM outbox WHERE event_type = 'chat.completed'{extra}")[0][0]

    try:
        wait_sync(lambda: usage(True) >= len(answered), timeout=30, message="every usage event published")
    except AssertionError:
        pass
    recorded, published = usage(False), usage(True)
    ids = {
        json.loads(p)["correlationid"]
        for (p,) in studio.rows("SELECT CAST(payload AS TEXT) FROM outbox WHERE event_type = 'chat.completed'")
    }
    missing = [a for a in answered if a not in ids]
    studio.stop()
    ok = not missing and published == recorded >= len(answered)
    return ("ok" if ok else "FAILED"), (
        f"{len(answered)} chats answered ({during} while NATS was down): {len(missing)} without a usage event, "
        f"{recorded - published} events not published"
    )


async def nats_leaders_killed_mid_chats(lab: Lab, down_s: float, studios: int = 2) -> tuple[str, str]:
    """Two studios on one PostgreSQL database and a 3-node NATS cluster (TLS, the studio's users), two
    visitors chatting through each; the JetStream meta leader, then the event stream's leader, SIGKILLed,
    kept down `down_s`, restarted: every answered chat has exactly one chat.completed in the stream."""
    await lab.ollama.control("preinstall", {"models": [FREE_MODELS[0]]})
    root = lab.root / "nats-leaders"
    cluster = NatsCluster(root / "nats")
    database = lab.postgres.new_database("rel")
    made = [studio_on(cluster, name, root, lab.ollama.url, database) for name in "ab"[:studios]]
    try:
        await cluster.start()
        for studio in made:  # one after the other: the first applies the migrations
            await studio.start()
        await cluster.wait_for_replicas(3)
        outcome = await leaders_killed_mid_chats(
            cluster, [s.url for s in made], roles=("meta", "stream", "both"), settle=50, down_s=down_s
        )
    finally:
        for studio in made:
            studio.stop()
        cluster.stop()
    lines = [ln for s in made for ln in Studio.read_log(s.log_path)]
    waits = sum("outbox waiting" in str(ln.get("message", "")) for ln in lines)
    errors = sum(ln.get("level") in ("error", "critical") for ln in lines)
    verdict = "ok" if outcome.ok else "FAILED"
    return verdict, f"{outcome.text(len(made))}; log: {waits} 'outbox waiting for NATS', {errors} error lines"


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


def books(studio: Studio, accepted: list[str]) -> tuple[int, int]:
    """(purchases answered 200 that are not paid, purchases or purchase.completed events there twice)."""
    paid = studio.rows("SELECT id, user_id, model FROM purchases WHERE status = 'paid'")
    lost = len(set(accepted) - {r[0] for r in paid})
    events = studio.rows("SELECT count(*) FROM outbox WHERE event_type = 'purchase.completed'")[0][0]
    return lost, len(paid) - len({(r[1], r[2]) for r in paid}) + abs(events - len(paid))


def installed(studio: Studio) -> set[str]:
    return {m for (m,) in studio.rows("SELECT model FROM installs WHERE state = 'installed'")}


def bought(studio: Studio, accepted: list[str]) -> set[str]:
    ids = set(accepted)
    return {model for pid, model in studio.rows("SELECT id, model FROM purchases") if pid in ids}


def pulled_at_once(streams: list[dict]) -> int:
    """Pulls that began while another pull of the same model was still running (the stand-in's clock)."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for s in streams:
        if s["kind"] == "pull":
            spans.setdefault(s["model"], []).append((s["started"], s["ended"] or math.inf))
    overlaps = 0
    for model_spans in spans.values():
        running_until = -math.inf
        for start, end in sorted(model_spans):
            overlaps += start < running_until
            running_until = max(running_until, end)
    return overlaps


PULL_SPEED = 11_000  # bytes/s a layer: the free models' pulls last ~2-15 s (the stand-in's blobs are 1e-4 size)


async def install_killed_mid_pull(lab: Lab) -> tuple[str, str]:
    """`up` without install, and `localai-studio run install` beside it on the same data dir and NATS (the
    containers' layout); install SIGKILLed mid-pull and started again while visitors keep buying."""
    await lab.ollama.control("reset", {"uninstall_all": True})
    await lab.ollama.control("config", {"pull_speed": PULL_SPEED})
    studio = await lab.studio("install", without=("install",))
    install = studio.alone("install")
    accepted: list[str] = []
    cut: list[str] = []
    try:
        studio.start()
        install.start()
        stop = asyncio.Event()
        buyers = [asyncio.create_task(buy_free(studio, accepted, stop, pause=0.1)) for _ in range(2)]

        async def pulling() -> list[str]:
            streams = (await lab.ollama.state())["streams"]
            return [s["model"] for s in streams if s["kind"] == "pull" and s["state"] == "streaming"]

        try:
            await eventually(pulling, timeout=30, interval=0.1, message="a pull to start")
            await asyncio.sleep(random.uniform(0.5, 2.0))  # a random moment in the pull
            cut = await pulling()
            install.kill()
            await asyncio.sleep(1.0)  # purchases while install is gone: their events wait in the stream
            install.start()
            await asyncio.sleep(1.0)  # and after it is back
        finally:
            stop.set()
            await asyncio.gather(*buyers)
        models = bought(studio, accepted)
        try:
            await eventually(lambda: models <= installed(studio), timeout=240, interval=0.5, message="every install")
        except AssertionError:
            pass
        missing = models - installed(studio)
        lost, twice = books(studio, accepted)
        streams = [s for s in (await lab.ollama.state())["streams"] if s["kind"] == "pull"]
    finally:
        install.stop()
        studio.stop()
        await lab.ollama.control("config", {"pull_speed": 0})
    at_once = pulled_at_once(streams)
    ok = cut and not lost and not twice and not missing and not at_once
    return ("ok" if ok else "FAILED"), (
        f"killed during {len(cut)} pulls; {len(accepted)} purchases answered 200 around it, {len(models)} models: "
        f"{lost} lost, {twice} twice, {len(missing)} not installed; {len(streams)} pulls, {at_once} of a model "
        "already being pulled"
    )


async def chat_outcome(visitor: aiohttp.ClientSession, studio: Studio, model: str) -> str:
    body = {"model": model, "message": "Hello", "stream": False}
    async with visitor.post(studio.url + "/api/chat", json=body) as resp:
        answer = await resp.json()
    return str(resp.status) if resp.status == 200 else f"{resp.status} {answer['error']['code']}"


async def health_outcome(studio: Studio) -> tuple[int, list[str]]:
    async with aiohttp.ClientSession() as s, s.get(studio.url + "/health") as resp:
        return resp.status, (await resp.json())["failing"]


async def install_states(visitor: aiohttp.ClientSession, studio: Studio) -> set[str]:
    """The install states a visitor sees on the free models, a failure told as retrying or final."""
    async with visitor.get(studio.url + "/api/models") as resp:
        models = (await resp.json())["models"]
    seen = set()
    for m in models:
        if m["id"] in FREE_MODELS:
            state = m["install"]["state"]
            if state == "failed":
                state += " (will retry)" if m["install"]["will_retry"] else " (final)"
            seen.add(state)
    return seen


async def ollama_down(lab: Lab, seconds: float) -> tuple[str, str]:
    """Ollama unreachable for `seconds` (the stand-in stops listening and drops its connections, then
    comes back with its models) while visitors buy and one chats; /health asked once a second."""
    await lab.ollama.control("reset", {"uninstall_all": True})
    studio = await lab.studio("ollama")
    model = "tinyllama:latest"
    accepted: list[str] = []
    chats: collections.Counter[str] = collections.Counter()
    health: collections.Counter[str] = collections.Counter()
    states: set[str] = set()
    try:
        studio.start()
        async with await visitor_session() as chatter:
            async with chatter.get(studio.url + "/api/models") as first:
                await first.read()
            async with chatter.post(f"{studio.url}/api/models/purchase/{model}") as resp:
                assert resp.status == 200, await resp.text()
            await eventually(lambda: model in installed(studio), timeout=60, message=f"{model} installed")
            before = await chat_outcome(chatter, studio, model)
            await lab.ollama.control("down", {"seconds": seconds})
            await eventually(lambda: not lab.ollama.reachable(), timeout=5, message="Ollama to go down")
            stop = asyncio.Event()
            buyers = [asyncio.create_task(buy_free(studio, accepted, stop, pause=0.5)) for _ in range(2)]
            try:
                looks = 0
                while not lab.ollama.reachable():
                    if looks % 4 == 0:  # a chat every 4 s: within a visitor's STUDIO_CHAT_REQUESTS_PER_MINUTE (20)
                        chats[await chat_outcome(chatter, studio, model)] += 1
                    looks += 1
                    status, failing = await health_outcome(studio)
                    health[f"{status} failing {'+'.join(failing) or 'nothing'}"] += 1
                    states |= await install_states(chatter, studio)
                    await asyncio.sleep(1.0)  # one look a second while it is down
                came_back = time.monotonic()
            finally:
                stop.set()
                await asyncio.gather(*buyers)
            models = bought(studio, accepted)
            try:
                await eventually(lambda: models <= installed(studio), timeout=240, interval=0.5, message="installs")
            except AssertionError:
                pass
            installed_after = time.monotonic() - came_back
            missing = models - installed(studio)

            async def healthy() -> bool:
                return (await health_outcome(studio))[0] == 200

            try:
                await eventually(healthy, timeout=60, interval=0.5, message="/health to recover")
                recovered = f"ok {time.monotonic() - came_back:.0f} s after"
            except AssertionError:
                recovered = "NOT ok again"
            after = await chat_outcome(chatter, studio, model)
        lost, twice = books(studio, accepted)
    finally:
        studio.stop()
    chats_503 = all(c.startswith("503 ") for c in chats)
    health_named = all(h.startswith("503 ") and "ollama" in h for h in health)
    ok = (
        before == after == "200"
        and chats_503
        and health_named
        and recovered.startswith("ok")
        and not lost
        and not twice
        and not missing
        and not any("final" in s for s in states)
    )

    return ("ok" if ok else "FAILED"), (
        f"{seconds:g} s down: {len(accepted)} purchases answered 200 meanwhile: {lost} lost, {twice} twice, "
        f"{len(missing)} of {len(models)} models not installed ({installed_after:.0f} s after it came back); "
        f"installs shown meanwhile: {', '.join(sorted(states))}; chat: {counted(chats)}; "
        f"/health: {counted(health)}, {recovered}"
    )


async def restore_under_writes(lab: Lab) -> tuple[str, str]:
    """`localai-studio backup` while visitors buy, then `localai-studio restore` into a fresh data dir (a new
    host) and a studio started on it."""
    live = await lab.studio("backup")
    accepted: list[str] = []
    answered: dict[str, float] = {}
    try:
        live.start()
        stop = asyncio.Event()
        buyers = [asyncio.create_task(buy_free(live, accepted, stop, answered_at=answered)) for _ in range(2)]
        try:
            await eventually(lambda: len(accepted) >= 40, timeout=30, message="purchases before the backup")
            started = time.monotonic()
            backup = await asyncio.create_subprocess_exec(
                CLI, "backup", "--out", str(lab.root / "backups"), env=live.env, stdout=PIPE, stderr=PIPE
            )
            _, err = await backup.communicate()
            ended = time.monotonic()
            at_end = len(accepted)
            await eventually(lambda: len(accepted) >= at_end + 20, timeout=30, message="purchases after the backup")
        finally:
            stop.set()
            await asyncio.gather(*buyers)
    finally:
        live.stop()
    if backup.returncode != 0:
        return "FAILED", f"the backup failed: {err.decode()[-300:]}"
    archive = next((lab.root / "backups").glob("localai_backup_*.tar.gz"))
    restored = await lab.studio("restored")
    (lab.root / "new-host").mkdir()
    restore = await asyncio.create_subprocess_exec(
        CLI, "restore", str(archive), env=restored.env, cwd=lab.root / "new-host", stdout=PIPE, stderr=PIPE
    )
    _, err = await restore.communicate()
    if restore.returncode != 0:
        return "FAILED", f"the restore failed: {err.decode()[-300:]}"
    try:
        restored.start()
        async with aiohttp.ClientSession() as s, s.get(restored.url + "/api/models") as resp:
            serves = resp.status == 200
        integrity = restored.rows("PRAGMA integrity_check")[0][0]
        purchases = {pid: status for pid, status in restored.rows("SELECT id, status FROM purchases")}
        outboxed = {
            json.loads(p)["data"]["purchase_id"]
            for (p,) in restored.rows("SELECT payload FROM outbox WHERE event_type = 'purchase.completed'")
        }
    finally:
        restored.stop()
    before = {pid for pid, at in answered.items() if at < started}
    during = {pid for pid, at in answered.items() if started <= at <= ended}
    after = {pid for pid, at in answered.items() if at > ended}
    missing = before - purchases.keys()
    strays = purchases.keys() - answered.keys()
    half = len(purchases.keys() ^ outboxed) + sum(status != "paid" for status in purchases.values())
    present_after = after & purchases.keys()
    ok = serves and integrity == "ok" and not missing and not strays and not half and not present_after
    return ("ok" if ok else "FAILED"), (
        f"restored studio {'starts' if serves else 'does NOT serve'}, integrity {integrity}; "
        f"{len(before)} purchases answered before the backup: {len(missing)} missing; "
        f"{len(during)} during it: {len(during & purchases.keys())} in the copy; {len(after)} after it: "
        f"{len(after) - len(present_after)} absent (the copy is one instant; nothing reconciles them back); "
        f"{half} half-written (a purchase without its purchase.completed, or not paid)"
    )


def counted(c: collections.Counter[str]) -> str:
    return ", ".join(f"{k} x{n}" for k, n in c.most_common()) or "none"


async def outcome(resp: aiohttp.ClientResponse) -> str:
    if resp.status < 400:
        await resp.read()
        return str(resp.status)
    try:
        return f"{resp.status} {(await resp.json())['error']['code']}"
    except (aiohttp.ContentTypeError, KeyError, TypeError, json.JSONDecodeError):
        return str(resp.status)


async def buy_paid(lab: Lab, studio: Studio, visitor: aiohttp.ClientSession, model: str) -> str:
    """A paid purchase the whole way: checkout, paid at the Stripe stand-in, its webhook delivered."""
    async with visitor.post(f"{studio.url}/api/models/purchase/{model}") as resp:
        body = await resp.json()
    session_id = body["checkout_url"].rsplit("/", 1)[1]
    lab.stripe.pay(session_id)
    await lab.stripe.deliver(studio.url + "/api/webhooks/stripe", "checkout.session.completed", session_id, times=1)
    return str(body["purchase_id"])


def log_summary(studio: Studio) -> tuple[int, int, collections.Counter[str]]:
    """(tracebacks, error lines, the error lines by message's start) in the studio's log."""
    lines = studio.log_lines()
    errors = [ln for ln in lines if ln.get("level") in ("error", "critical", "raw")]
    return (
        sum("traceback" in ln for ln in lines),
        len(errors),
        collections.Counter(str(ln.get("message", ""))[:60] for ln in errors),
    )


async def postgres_stopped(lab: Lab, seconds: float) -> tuple[str, str]:
    """PostgreSQL stopped (`pg_ctl stop -m fast`: every connection cut) for `seconds` under a studio on
    it, while visitors load pages, buy free models and chat (free models, and a paid model they own),
    then started again: every request is answered (no 500), nothing answered 200 is lost, the owners
    keep chatting, the log says it without a traceback, and the studio recovers without a restart."""
    await lab.ollama.control("reset", {"uninstall_all": True})
    studio = await lab.studio("postgres-stopped", postgres=True)
    paid, free = "phi3:mini", "tinyllama:latest"
    statuses: dict[str, collections.Counter[str]] = {k: collections.Counter() for k in ("pages", "purchases", "chats")}
    owner_chats: collections.Counter[str] = collections.Counter()
    accepted: list[str] = []
    stop = asyncio.Event()
    try:
        studio.start()
        async with AsyncExitStack() as held:
            owners = [await held.enter_async_context(await visitor_session()) for _ in range(3)]
            others = [await held.enter_async_context(await visitor_session()) for _ in range(3)]
            for v in owners + others:
                async with v.get(studio.url + "/api/models") as first:
                    await first.read()
            for v in owners:
                await buy_paid(lab, studio, v, paid)
            async with others[0].post(f"{studio.url}/api/models/purchase/{free}") as resp:
                assert resp.status == 200, await resp.text()
            await eventually(lambda: {paid, free} <= installed(studio), timeout=60, message="the models installed")
            for v in owners:  # chat learns they own it
                assert await chat_outcome(v, studio, paid) == "200"

            async def pages() -> None:
                async with await visitor_session() as v:
                    while not stop.is_set():
                        for path in ("/api/models", "/api/purchases"):
                            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                                async with v.get(studio.url + path) as resp:
                                    statuses["pages"][await outcome(resp)] += 1
                        await asyncio.sleep(0.2)  # a visitor's pace

            async def buyer() -> None:
                while not stop.is_set():
                    async with await visitor_session() as v:
                        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                            async with v.get(studio.url + "/api/models") as first:  # the visitor's cookie
                                await first.read()
                            async with v.post(f"{studio.url}/api/models/purchase/{free}") as resp:
                                got = await outcome(resp) if resp.status != 200 else "200"
                                if resp.status == 200:
                                    accepted.append((await resp.json())["purchase_id"])
                                statuses["purchases"][got] += 1
                    await asyncio.sleep(0.2)

            async def chatter(v: aiohttp.ClientSession, model: str, owner: bool) -> None:
                while not stop.is_set():
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        got = await chat_outcome(v, studio, model)
                        statuses["chats"][got] += 1
                        if owner:
                            owner_chats[got] += 1
                    await asyncio.sleep(3.2)  # under STUDIO_CHAT_REQUESTS_PER_MINUTE (20) a visitor

            load = [asyncio.create_task(pages()), *(asyncio.create_task(buyer()) for _ in range(2))]
            load += [asyncio.create_task(chatter(v, paid, True)) for v in owners]
            load += [asyncio.create_task(chatter(v, free, False)) for v in others]
            try:
                await asyncio.sleep(2.0)  # traffic flowing
                await asyncio.to_thread(lab.postgres.halt)
                await asyncio.sleep(seconds)  # the outage
                await asyncio.to_thread(lab.postgres.resume)
                back = time.monotonic()

                async def serves() -> bool:
                    async with aiohttp.ClientSession() as s, s.get(studio.url + "/api/models") as resp:
                        return resp.status == 200

                await eventually(serves, timeout=60, interval=0.2, message="the studio to serve again")
                recovered_s = time.monotonic() - back
                await asyncio.sleep(3.0)  # and traffic after it
            finally:
                stop.set()
                await asyncio.gather(*load, return_exceptions=True)
        lost, twice = books(studio, accepted)
    finally:
        studio.stop()
    tracebacks, errors, by_message = log_summary(studio)
    five_hundreds = sum(n for c in statuses.values() for k, n in c.items() if k.startswith("500"))
    ok = not five_hundreds and not lost and not twice and not tracebacks and set(owner_chats) == {"200"}
    return ("ok" if ok else "FAILED"), (
        f"{seconds:g} s stopped: {five_hundreds} x 500; pages: {counted(statuses['pages'])}; purchases: "
        f"{counted(statuses['purchases'])} ({len(accepted)} answered 200: {lost} lost, {twice} twice); chats: "
        f"{counted(statuses['chats'])} (owners of the paid model: {counted(owner_chats)}); serving again "
        f"{recovered_s:.1f} s after PostgreSQL was back, no restart; log: {tracebacks} tracebacks, {errors} error "
        f"lines ({counted(by_message)})"
    )


async def two_studios_one_outbox(lab: Lab, seconds: float = 8.0) -> tuple[str, str]:
    """Two studios (`up`, each its own data dir) on one PostgreSQL database and one NATS, visitors buying
    through both: every event of the shared outbox is published once (a listener on the bus counts every
    publish, those the stream would drop as duplicates included), and no error line in steady state."""
    first = await lab.studio("outbox-1", postgres=True)
    second = await lab.studio("outbox-2", beside=first)
    bus = Bus(first.env["STUDIO_NATS_URL"], name="reliability", source="/reliability")
    seen: collections.Counter[str] = collections.Counter()

    async def count(event: Event) -> None:
        seen[event.id] += 1

    accepted: list[str] = []
    try:
        await bus.connect()
        await bus.listen("*", count)
        await bus.flush()  # listening before the studios start (start() blocks this loop while it waits)
        first.start()
        second.start()
        stop = asyncio.Event()
        buyers = [asyncio.create_task(buy_free(s, accepted, stop, pause=0.05)) for s in (first, second, first, second)]
        await asyncio.sleep(seconds)  # steady state, both relaying
        stop.set()
        await asyncio.gather(*buyers)
        await eventually(
            lambda: first.rows("SELECT count(*) FROM outbox WHERE published_at IS NULL")[0][0] == 0,
            timeout=30,
            message="the outbox to drain",
        )
        await bus.flush()
        outboxed = [r[0] for r in first.rows("SELECT event_id FROM outbox")]
        with contextlib.suppress(AssertionError):  # (those never seen are counted below)
            await eventually(lambda: all(seen[e] for e in outboxed), timeout=10, message="every event on the bus")
        lost, twice = books(first, accepted)
    finally:
        second.stop()
        first.stop()
        await bus.close(1)
    published = collections.Counter(seen[e] for e in outboxed)
    more_than_once = sum(n for times, n in published.items() if times > 1)
    never = published.get(0, 0)
    logs = [log_summary(s) for s in (first, second)]
    waits = sum("outbox waiting" in str(ln.get("message", "")) for s in (first, second) for ln in s.log_lines())
    errors = sum(e for _, e, _ in logs)
    ok = not more_than_once and not never and not lost and not twice and not errors and not waits
    return ("ok" if ok else "FAILED"), (
        f"{len(accepted)} purchases through both in {seconds:g} s ({lost} lost, {twice} twice); {len(outboxed)} "
        f"outbox rows: {published.get(1, 0)} published once, {more_than_once} more than once, {never} never; "
        f"log: {waits} 'outbox waiting for NATS', {errors} error lines"
    )


async def drained_under_traffic(lab: Lab, rounds: int = 3) -> tuple[str, str]:
    """A studio stopped with SIGTERM (a drain) while visitors buy and every function's events flow
    (heartbeats twice a second, the monitor listening to everything): it exits 0, loses no purchase,
    and logs no error on the way out (before: KeyError('counts') in the monitor, KeyError('installs') in
    install, deliveries meeting a function already torn down)."""
    studio = await lab.studio("drain")
    accepted: list[str] = []
    exits: list[int | None] = []
    for _ in range(rounds):
        studio.start()
        stop = asyncio.Event()
        buyers = [asyncio.create_task(buy_free(studio, accepted, stop)) for _ in range(3)]
        await asyncio.sleep(random.uniform(1.0, 2.0))  # a random moment in the traffic
        assert studio.proc is not None
        studio.proc.terminate()  # SIGTERM: the drain
        exits.append(await asyncio.to_thread(studio.proc.wait, 30))
        stop.set()
        await asyncio.gather(*buyers)
    studio.start()
    lost, twice = books(studio, accepted)
    studio.stop()
    tracebacks, errors, by_message = log_summary(studio)
    ok = all(code == 0 for code in exits) and not lost and not twice and not errors
    return ("ok" if ok else "FAILED"), (
        f"{rounds} SIGTERMs under purchases (exit codes {exits}): {len(accepted)} purchases answered 200, {lost} "
        f"lost, {twice} twice; log: {errors} error lines, {tracebacks} tracebacks ({counted(by_message)})"
    )


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
            key = str(status) if status >= 500 else f"{status // 100}xx"  # a 5xx passed only where named
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


class Ollama:
    """The Ollama stand-in as a process of its own, steered through its control API (`--control`)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.doubles.ollama", "--port", str(self.port), "--control"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_sync(self.reachable, timeout=15, message="the Ollama stand-in to start")

    def reachable(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    async def control(self, action: str, body: dict | None = None) -> dict:
        def call() -> dict:
            resp = requests.post(f"{self.url}/_double/{action}", json=body or {}, timeout=5)
            resp.raise_for_status()
            return resp.json()

        return await asyncio.to_thread(call)

    async def state(self) -> dict:
        return await asyncio.to_thread(lambda: requests.get(self.url + "/_double/state", timeout=5).json())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Lab:
    """What the scenarios stand on: the Ollama stand-in, Stripe's, and a studio of its own per scenario
    (data dir and NATS: no events leak between scenarios)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: list[NatsServer] = []
        self.stripe = StripeDouble()
        self._postgres: PostgresServer | None = None

    @property
    def postgres(self) -> PostgresServer:
        """A PostgreSQL server of the lab's own (started on first use): scenarios stop and start it."""
        if self._postgres is None:
            bin_dir = postgres_bin()
            if bin_dir is None:
                raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (tests/run does)")
            self._postgres = PostgresServer(bin_dir).start()
        return self._postgres

    async def __aenter__(self) -> Lab:
        self.ollama = Ollama()
        await self.stripe.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for server in self.servers:
            server.stop()
        if self._postgres is not None:
            self._postgres.stop()
        await self.stripe.stop()
        self.ollama.stop()

    async def studio(
        self, name: str, without: tuple[str, ...] = (), *, postgres: bool = False, beside: Studio | None = None
    ) -> Studio:
        """A studio of its own (data dir and NATS; its own PostgreSQL database with `postgres`), or a
        second server `beside` another: its own data dir, the other's NATS and database."""
        if beside is not None:
            return Studio(
                self.root / name / "data",
                beside.env["STUDIO_NATS_URL"],
                self.stripe,
                self.ollama.port,
                without,
                postgres=beside.postgres,
            )
        server = NatsServer(self.root / name / "nats-server", port=free_port())
        await server.start()
        self.servers.append(server)
        database = (self.postgres, self.postgres.new_database("rel")) if postgres else None
        return Studio(self.root / name / "data", server.url, self.stripe, self.ollama.port, without, postgres=database)


async def main(rounds: int, ollama_down_s: float, postgres_down_s: float, leader_down_s: float) -> None:
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        root = Path(tmp)
        async with Lab(root) as lab:
            verdict, text = await killed_mid_purchases(await lab.studio("kill"), rounds)
            rows.append(("fault", "studio SIGKILLed mid-purchases", f"{verdict}: {text}"))
            verdict, text = await nats_killed_mid_purchases(await lab.studio("nats"), lab.servers)
            rows.append(("fault", "nats-server killed mid-purchases", f"{verdict}: {text}"))
            verdict, text = await nats_killed_mid_chats(lab)
            rows.append(("fault", "nats-server killed mid-chats", f"{verdict}: {text}"))
            verdict, text = await nats_leaders_killed_mid_chats(lab, leader_down_s)
            rows.append(("fault", "NATS leaders killed under chats (3-node cluster)", f"{verdict}: {text}"))
            verdict, text = await install_killed_mid_pull(lab)
            rows.append(("fault", "install function alone SIGKILLed mid-pull", f"{verdict}: {text}"))
            verdict, text = await ollama_down(lab, ollama_down_s)
            rows.append(("fault", f"Ollama down {ollama_down_s:g} s", f"{verdict}: {text}"))
            verdict, text = await same_webhook_three_times(await lab.studio("webhook"), lab.stripe)
            rows.append(("fault", "the same webhook 3x at once", f"{verdict}: {text}"))
            verdict, text = await restore_under_writes(lab)
            rows.append(("fault", "backup under writes, restored", f"{verdict}: {text}"))
            verdict, text = await drained_under_traffic(lab)
            rows.append(("fault", "studio drained (SIGTERM) under purchases", f"{verdict}: {text}"))
            verdict, text = await postgres_stopped(lab, postgres_down_s)
            rows.append(("fault", f"PostgreSQL stopped {postgres_down_s:g} s", f"{verdict}: {text}"))
            verdict, text = await two_studios_one_outbox(lab)
            rows.append(("fault", "two studios on one database", f"{verdict}: {text}"))
            rows.extend(bad_inputs(await lab.studio("fuzz")))
            rows.extend(await flood_through_nginx(await lab.studio("flood"), root / "nginx"))
    print("| kind | what | outcome |")
    print("|---|---|---|")
    for kind, what, outcome in rows:
        print(f"| {kind} | {what} | {outcome} |")


async def postgres_only(postgres_down_s: float) -> None:
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        async with Lab(Path(tmp)) as lab:
            verdict, text = await postgres_stopped(lab, postgres_down_s)
            print(f"| fault | PostgreSQL stopped {postgres_down_s:g} s | {verdict}: {text} |", flush=True)
            verdict, text = await two_studios_one_outbox(lab)
            print(f"| fault | two studios on one database | {verdict}: {text} |", flush=True)


async def nats_leaders_only(leader_down_s: float) -> None:
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        async with Lab(Path(tmp)) as lab:
            verdict, text = await nats_leaders_killed_mid_chats(lab, leader_down_s)
            print(f"| fault | NATS leaders killed under chats (3-node cluster) | {verdict}: {text} |", flush=True)


async def drain_only() -> None:
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        async with Lab(Path(tmp)) as lab:
            verdict, text = await drained_under_traffic(lab)
            print(f"| fault | studio drained (SIGTERM) under purchases | {verdict}: {text} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="SIGKILLs during purchases")
    parser.add_argument("--ollama-down-s", type=float, default=60, help="how long Ollama is down")
    parser.add_argument("--postgres-down-s", type=float, default=10, help="how long PostgreSQL is stopped")
    parser.add_argument("--leader-down-s", type=float, default=10, help="how long each killed NATS leader stays down")
    parser.add_argument(
        "--only",
        choices=["postgres", "drain", "nats-leaders"],
        help="the PostgreSQL scenarios (stopped, two studios), the drain, or the NATS cluster leaders killed",
    )
    args = parser.parse_args()
    if args.only == "postgres":
        asyncio.run(postgres_only(args.postgres_down_s))
    elif args.only == "drain":
        asyncio.run(drain_only())
    elif args.only == "nats-leaders":
        asyncio.run(nats_leaders_only(args.leader_down_s))
    else:
        asyncio.run(main(args.rounds, args.ollama_down_s, args.postgres_down_s, args.leader_down_s))
