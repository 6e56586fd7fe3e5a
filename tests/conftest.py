"""Shared fixtures: a real nats-server with JetStream per test, a real SQLite file, settings.

Also the test tiers (README, "Tests and benchmarks"): tests that need a heavy system part are marked by
folder here, so `-m "not browser"` and friends select without anyone remembering to decorate a test.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from events.bus import Bus
from events.server import NatsServer
from studio.runtime.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `tests.support` importable from every test module


# marker -> the test files it covers (relative to tests/); `slow` is set in the test files themselves.
TIERS = {
    "browser": ("frontend/",),
    "nginx": ("production/test_nginx.py",),
    "stack": ("production/test_stack.py",),
}
HERE = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--system-needs",
        metavar="FILE",
        help="write to FILE the tiers (browser, nginx, stack) the selected tests need; tests/run reads it",
    )


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        where = item.path.relative_to(HERE).as_posix() if item.path.is_relative_to(HERE) else ""
        for marker, prefixes in TIERS.items():
            if where.startswith(prefixes):
                item.add_marker(marker)


def pytest_collection_finish(session: pytest.Session) -> None:
    target = session.config.getoption("--system-needs")
    if target:
        needed = {marker for item in session.items for marker in TIERS if item.get_closest_marker(marker)}
        Path(target).write_text("".join(f"{marker}\n" for marker in sorted(needed)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    server = NatsServer(tmp_path / "nats", port=free_port())
    await server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(tmp_path: Path, nats_server: NatsServer) -> Settings:
    return Settings.from_env(
        {},
        data_dir=tmp_path / "data",
        nats_url=nats_server.url,
        port=free_port(),
        heartbeat_s=0.5,
        shutdown_grace_s=3.0,
        nats_connect_timeout_s=5.0,
        ollama_url=f"http://127.0.0.1:{free_port()}",  # nothing listens unless a test starts a double
        server_memory_bytes=64 * 1024**3,  # the stand-in server holds every catalog model, whatever this host has
        scale_cpu_percent=100.0,  # this machine, busy running tests, never raises the scale alert (test_scale sets it)
    )


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    b = Bus(nats_server.url, name="test", source="/tests")
    await b.connect()
    await b.ensure_stream()
    yield b
    await b.close(1)


@pytest.fixture
async def embedded_studio(settings: Settings, aiohttp_client):
    """Start functions in-process behind the embedded gateway: `client = await embedded_studio([fn, ...])`."""
    from gateway.app import gateway_app
    from gateway.routes import ROUTES
    from studio.runtime.host import Host

    hosts: list[Host] = []

    async def start(fns, *, routes=ROUTES, settings_override: Settings | None = None):
        s = settings_override or settings
        host = Host(fns, s)
        await host.start()
        hosts.append(host)
        client = await aiohttp_client(gateway_app(s, functions=fns, routes=routes, bus=host.bus))
        client.host_runtime = host
        return client

    yield start
    for host in reversed(hosts):
        await host.stop()


@pytest.fixture
async def ollama():
    """The Ollama stand-in over real HTTP; pulls take a moment so progress can be watched."""
    from tests.doubles.ollama import OllamaDouble

    async with OllamaDouble(pull_speed=60_000, pull_interval=0.05) as double:
        yield double


@pytest.fixture
async def stripe_api():
    from tests.doubles.stripe import StripeDouble

    async with StripeDouble() as double:
        yield double


@pytest.fixture
async def studio(embedded_studio, settings, ollama, stripe_api, bus):
    """Purchase, install and webhook behind the embedded gateway, with both stand-ins."""
    from tests.functions.pipeline import start_studio

    return await start_studio(embedded_studio, settings, ollama, stripe_api, bus)
