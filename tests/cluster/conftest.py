"""Fixtures for several servers: a real 3-node NATS cluster, the shared database, whole studios as
processes (`localai-studio up` against that NATS and that database), and the Ollama stand-in they share.

`shared_database` is the one place that says which database the studios share. Until PostgreSQL lands
it is one SQLite file (WAL: several processes may write it), which with the current database layer
means one data dir for every studio; with PostgreSQL it becomes `{"STUDIO_DATABASE_URL": <url>}` and
each studio keeps its own data dir.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.nats_cluster import NatsCluster
from tests.conftest import free_port
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "localai-studio")
SECRET_KEY = "cluster-test-shared-secret-key-0123456789"
ADMIN_TOKEN = "op-cluster"


@pytest.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    cluster = NatsCluster(tmp_path / "nats")
    try:
        await cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def shared_database(tmp_path: Path) -> dict[str, str]:
    """The environment that points every studio at one database (see the module docstring)."""
    return {"STUDIO_DATA_DIR": str(tmp_path / "shared")}


class StudioProcess:
    """One server's studio: `localai-studio up` with an external NATS, in its own process."""

    def __init__(self, name: str, data_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
        self.env.update(STUDIO_DATA_DIR=str(data_dir), STUDIO_PORT=str(self.port), **env)
        self.log_path = data_dir.parent / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        """Start it and wait until it answers (the test's event loop keeps serving the stand-ins meanwhile)."""
        Path(self.env["STUDIO_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([CLI, "up"], env=self.env, stdout=log, stderr=log, cwd=ROOT)

        async def up() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise AssertionError(f"studio {self.name} exited at start-up: {self.log_tail()}")
            try:
                async with aiohttp.ClientSession() as s, s.get(self.url + "/healthz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(up, timeout=60, interval=0.2, message=f"studio {self.name} to start")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def studios(
    tmp_path: Path, nats_cluster: NatsCluster, shared_database: dict[str, str], cluster_ollama_url: str
) -> Iterator[Callable[..., StudioProcess]]:
    """`make("a")` -> a studio (not started) on the NATS cluster and the shared database."""
    made: list[StudioProcess] = []

    def make(name: str, **extra: str) -> StudioProcess:
        env = {
            "STUDIO_NATS_URL": nats_cluster.url,
            "STUDIO_EVENTS_REPLICAS": "3",
            "STUDIO_SECRET_KEY": SECRET_KEY,  # every server signs and checks visitor cookies with one key
            "STUDIO_ADMIN_TOKEN": ADMIN_TOKEN,
            "STUDIO_OLLAMA_URL": cluster_ollama_url,
            "STUDIO_SKIP_PAYMENT": "true",
            "STUDIO_WRITES_PER_ADDRESS_PER_MINUTE": "100000",
            "STUDIO_CHAT_REQUESTS_PER_MINUTE": "100000",
            "STUDIO_SERVER_MEMORY_BYTES": str(64 * 1024**3),
            "STUDIO_HEARTBEAT_S": "0.5",
            "STUDIO_LOG_LEVEL": "INFO",
            **shared_database,
            **extra,
        }
        data_dir = Path(env.pop("STUDIO_DATA_DIR", str(tmp_path / f"studio-{name}")))
        studio = StudioProcess(name, data_dir, env)
        made.append(studio)
        return studio

    yield make
    for studio in made:
        studio.stop()


@pytest.fixture
async def cluster_ollama() -> AsyncIterator[object]:
    """The Ollama stand-in every studio shares; pulls take seconds, so they overlap what the tests do."""
    from tests.doubles.ollama import OllamaDouble

    async with OllamaDouble(pull_speed=20_000, pull_interval=0.1) as double:
        yield double


@pytest.fixture
def cluster_ollama_url(cluster_ollama: object) -> str:
    return cluster_ollama.url  # type: ignore[attr-defined]
