"""A whole studio (`localai-studio up`, test mode) in its own process, with the Ollama stand-in beside it,
driven over HTTP by visitors who buy: shared by the consumer and growth benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from events.bus import NatsLogin
from studio import catalog
from studio.runtime.nats_users import password_of
from tests.bench.common import ROOT
from tests.support import free_port

CLI = str(Path(sys.executable).parent / "localai-studio")
MODELS = [m.id for m in catalog.load()]


def wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextlib.contextmanager
def ollama_double() -> Iterator[str]:
    port = free_port()
    args = [sys.executable, "-m", "tests.doubles.ollama", "--port", str(port)]
    proc = subprocess.Popen([*args, *(x for m in MODELS for x in ("--preinstall", m))], cwd=ROOT)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class Studio:
    data_dir: Path
    ollama_url: str
    port: int = field(default_factory=free_port)
    nats_port: int = field(default_factory=free_port)
    extra: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    def nats_login(self) -> NatsLogin | None:
        """The operator's NATS user (`ops`), which `up` wrote into the data dir: its NATS requires a login."""
        password = password_of(self.data_dir / "nats-credentials", "ops")
        return NatsLogin("ops", password) if password else None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
        env.update(
            STUDIO_DATA_DIR=str(self.data_dir),
            STUDIO_PORT=str(self.port),
            STUDIO_NATS_PORT=str(self.nats_port),
            STUDIO_OLLAMA_URL=self.ollama_url,
            STUDIO_SKIP_PAYMENT="true",
            STUDIO_LOG_LEVEL="WARNING",
            STUDIO_CHAT_REQUESTS_PER_MINUTE="100000",
        )
        env.setdefault("STUDIO_WRITES_PER_ADDRESS_PER_MINUTE", "100000000")  # every buyer here is 127.0.0.1
        env.update(self.extra)
        return env

    def start(self) -> float:
        """Start `up`; returns the seconds until it said it is running."""
        started = time.monotonic()
        self.proc = subprocess.Popen([CLI, "up"], env=self.env(), stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "running at" in line:
                return time.monotonic() - started
        raise RuntimeError("the studio exited at start-up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def visitor() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def first_visit(session: aiohttp.ClientSession, url: str) -> None:
    """A page view, as a browser's first: it sets the visitor's session cookie purchases need."""
    async with session.get(f"{url}/api/models") as resp:
        if resp.status != 200:
            raise RuntimeError(f"the first visit answered {resp.status}: {await resp.text()}")
        await resp.read()


async def buyers(url: str, concurrency: int, *, seconds: float | None = None, total: int | None = None) -> int:
    """`concurrency` visitors buying every model, one after another, then new visitors; returns purchases."""
    done = 0
    loop = asyncio.get_running_loop()
    deadline = None if seconds is None else loop.time() + seconds

    def more() -> bool:
        return (deadline is None or loop.time() < deadline) and (total is None or done < total)

    async def buyer() -> None:
        nonlocal done
        while more():
            async with visitor() as session:
                await first_visit(session, url)
                for model in MODELS:
                    if not more():
                        return
                    async with session.post(f"{url}/api/models/purchase/{model}") as resp:
                        if resp.status != 200:
                            raise RuntimeError(f"purchase answered {resp.status}: {await resp.text()}")
                        await resp.read()
                        done += 1

    await asyncio.gather(*(buyer() for _ in range(concurrency)))
    return done
