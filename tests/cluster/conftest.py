"""Fixtures for several servers: a real 3-node NATS cluster, the shared database, whole studios as
processes (`localai-studio up` against that NATS and that database), and the Ollama stand-in they share.

`shared_database` is the one place that says which database the studios share: a fresh database on the
session's real PostgreSQL server (`postgres_url`, tests/conftest.py), as several servers would share
one; each studio keeps its own data dir (its NATS-free local state: backups, logs).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.nats_cluster import NatsCluster
from tests.cluster.processes import StudioProcess, studio_env


@pytest.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    cluster = NatsCluster(tmp_path / "nats")
    try:
        await cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def shared_database(postgres_url: str) -> dict[str, str]:
    """The environment that points every studio at one database (see the module docstring)."""
    return {"STUDIO_DATABASE_URL": postgres_url}


@pytest.fixture
def studios(
    tmp_path: Path, nats_cluster: NatsCluster, shared_database: dict[str, str], cluster_ollama_url: str
) -> Iterator[Callable[..., StudioProcess]]:
    """`make("a")` -> a studio (not started) on the NATS cluster and the shared database."""
    made: list[StudioProcess] = []

    def make(name: str, **extra: str) -> StudioProcess:
        env = studio_env(
            nats_cluster.url,
            cluster_ollama_url,
            replicas=3,
            STUDIO_NATS_CREDENTIALS_DIR=str(nats_cluster.credentials),  # NATS requires its users,
            STUDIO_NATS_CA=str(nats_cluster.ca),  # over TLS
            **shared_database,
            **extra,
        )
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
