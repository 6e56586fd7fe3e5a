"""Shared fixtures: the bus (in memory, or a real nats-server with JetStream), a real database, settings.

The bus: tests under MEMORY_BUS_TESTS run on the in-memory bus (events/memory.py: the same `Bus`, no
server to start) unless marked `nats` (or asking for `nats_server`); every other test gets a real
nats-server of its own. `nats_url` is the test's bus URL (`settings.nats_url` and `bus` use it);
`transport` says which it is, and a test parametrises it (indirect) to run on both.

The database is a SQLite file in the test's folder; the tests that exercise SQL (DATABASE_TESTS below)
run twice, `[sqlite]` and `[postgres]`, the second on a real PostgreSQL server started once per session
(`postgres_server`, tests/postgres.py) with a fresh database per test (`postgres_url`).

Also the test tiers (README, "Tests and benchmarks"): tests that need a heavy system part are marked by
folder here, so `-m "not browser"` and friends select without anyone remembering to decorate a test.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from _pytest.mark.expression import Expression

from events import memory
from events.bus import Bus
from events.server import NatsServer, NatsServerError
from studio.runtime.dialect import DatabaseUrl
from studio.runtime.settings import Settings
from tests.postgres import PostgresServer, PostgresUnavailable, postgres_bin
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `tests.support` importable from every test module


# marker -> the test files it covers (relative to tests/); `slow` is set in the test files themselves.
TIERS = {
    "browser": ("frontend/",),
    "nginx": ("production/test_nginx.py",),
    "stack": ("production/test_stack.py",),
    "clients": ("clients/",),
}
HERE = Path(__file__).resolve().parent

# The tests that run on both databases (their `settings`, or `db_target`, is parametrized by
# `db_backend`): the functions that own tables and the runtime's database layer. The `[postgres]` ones
# carry the `postgres` marker (tier: tests/run installs Debian's postgresql for them).
DATABASE_TESTS = (
    "functions/purchase/",
    "functions/install/",
    "functions/webhook/",
    "functions/chat/",
    "functions/accounts/",
    "studio/runtime/test_database.py",
    "studio/runtime/test_retention.py",
    "studio/runtime/test_host.py",
    "studio/runtime/test_outbox.py",
)
BACKENDS = ("sqlite", pytest.param("postgres", marks=pytest.mark.postgres))

# The tests that run on the in-memory bus (those that use the bus as a pipe between functions); a test
# among them that needs the server itself (JetStream's own state, a restart, another process) is marked
# `nats`, as is the purchase-to-install pipeline end to end (tests/functions/purchase/test_purchase.py).
# Everything else (tests/events, cluster, reliability, production, frontend) has a real server.
MEMORY_BUS_TESTS = ("functions/", "gateway/", "studio/")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--system-needs",
        metavar="FILE",
        help="write to FILE the tiers (browser, nginx, stack, clients, postgres, bench_smoke) the selected tests "
        "need; tests/run reads it",
    )


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """A tier's folder or file (TIERS) that `-m` deselects whatever other markers its tests carry is not even
    collected: importing its modules (the agent SDKs, Playwright) costs every xdist worker ~2 s of CPU."""
    markexpr = config.getoption("markexpr")
    if not markexpr or not collection_path.is_relative_to(HERE):
        return None
    where = collection_path.relative_to(HERE).as_posix()
    tier = next((m for m, prefixes in TIERS.items() if where in prefixes or f"{where}/" in prefixes), None)
    if tier is None:
        return None
    expression = Expression.compile(markexpr)
    others = [m for m in (*TIERS, "slow", "postgres", "nats", "bench_smoke") if m != tier]
    for chosen in itertools.product((False, True), repeat=len(others)):
        marked = {tier, *(m for m, on in zip(others, chosen, strict=True) if on)}
        if expression.evaluate(lambda name, /, marked=marked, **kwargs: name in marked):
            return None  # some test there could be selected
    return True


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    where = (
        metafunc.definition.path.relative_to(HERE).as_posix() if metafunc.definition.path.is_relative_to(HERE) else ""
    )
    if "db_backend" in metafunc.fixturenames and where.startswith(DATABASE_TESTS):
        metafunc.parametrize("db_backend", BACKENDS, indirect=True)


def pytest_runtest_teardown(item: pytest.Item) -> None:
    """aiohttp caches each application's middleware chain (up to 1,024, `web_app._cached_build_middleware`), which
    keeps every test's gateway app alive with all it holds: ~230 apps per 145 tests, the heap every garbage
    collection walks and every xdist worker frees when it exits. One app per process in production; here, none
    kept after its test."""
    import aiohttp.web_app

    cache = getattr(aiohttp.web_app, "_cached_build_middleware", None)
    if cache is not None:
        cache.cache_clear()


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        where = _where(item)
        for marker, prefixes in TIERS.items():
            if where.startswith(prefixes):
                item.add_marker(marker)
        if "postgres_url" in getattr(item, "fixturenames", ()):  # asked for directly (a shared database)
            item.add_marker("postgres")


def pytest_collection_finish(session: pytest.Session) -> None:
    target = session.config.getoption("--system-needs")
    if target:
        needed = {
            marker
            for item in session.items
            for marker in (*TIERS, "postgres", "bench_smoke")
            if item.get_closest_marker(marker)
        }
        Path(target).write_text("".join(f"{marker}\n" for marker in sorted(needed)))


def _where(item: pytest.Item) -> str:
    return item.path.relative_to(HERE).as_posix() if item.path.is_relative_to(HERE) else ""


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    for attempt in range(3):  # a port picked free can be taken before the server binds it: pick another
        server = NatsServer(tmp_path / "nats", port=free_port())
        try:
            await server.start()
            break
        except NatsServerError as exc:
            if "already in use" not in str(exc) or attempt == 2:
                raise
    yield server
    server.stop()


def _on_real_nats(request: pytest.FixtureRequest) -> bool:
    node = request.node
    where = node.path.relative_to(HERE).as_posix() if node.path.is_relative_to(HERE) else ""
    return (
        not where.startswith(MEMORY_BUS_TESTS)
        or node.get_closest_marker("nats") is not None
        or "nats_server" in request.fixturenames
    )


@pytest.fixture
def transport(request: pytest.FixtureRequest) -> str:
    """`nats` (a real nats-server) or `memory` (the in-memory bus): see the module's docstring."""
    return getattr(request, "param", None) or ("nats" if _on_real_nats(request) else "memory")


@pytest.fixture
def nats_url(transport: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """This test's bus: the real server's URL, or a fresh in-memory bus's (forgotten after the test)."""
    if transport == "nats":
        yield request.getfixturevalue("nats_server").url
        return
    url = memory.new_url()
    yield url
    memory.forget(url)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session; `postgres_server.new_database()` gives a fresh
    database's URL (two studios sharing one database: call it once and give both the URL)."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed: apt-get install postgresql (tests/run does, for these tests)")
    for attempt in range(3):  # its port, picked free, can be taken before it binds (another session's server)
        server = PostgresServer(bin_dir, spares=True, in_memory=True)
        try:
            server.start()
            break
        except PostgresUnavailable as exc:
            server.stop()
            if attempt == 2:
                pytest.skip(f"PostgreSQL did not start: {exc}")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped after the test."""
    url = postgres_server.new_database()
    yield url
    postgres_server.drop_database(url)


_studio_templates: dict[int, str] = {}  # PostgreSQL server port -> its database holding the studio's schema


async def studio_template(server: PostgresServer) -> str:
    """A database on `server` with every migration of the runtime and of every function applied, made once a
    session: a studio's database copied from it starts with nothing left to migrate (as at any restart) instead
    of applying 19 migrations in a few dozen transactions. Migrating from empty stays tested: here, once per
    session, and by tests/studio/runtime/test_database.py's own empty databases."""
    if server.port not in _studio_templates:
        from functions import NAMES, load
        from studio.runtime.database import RUNTIME_MIGRATIONS, Database

        url = server.new_database("studio_template")
        db = Database(DatabaseUrl.parse(url))
        await db.open()
        try:
            await db.migrate([RUNTIME_MIGRATIONS, *(m for m in (load(n).migrations for n in NAMES) if m)])
        finally:
            await db.close()
        _studio_templates[server.port] = url.rsplit("/", 1)[-1]
    return _studio_templates[server.port]


@pytest.fixture
async def studio_postgres_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh database holding the studio's schema already (`studio_template`), dropped after the test."""
    url = postgres_server.new_database(template=await studio_template(postgres_server))
    yield url
    postgres_server.drop_database(url)


@pytest.fixture(scope="session")
def sqlite_studio_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with every migration of the runtime and of every function applied, made once a session: a
    studio's SQLite database (`settings`) is a copy of it and starts with nothing left to migrate, as at any
    restart, instead of applying 19 migrations (~15 ms of CPU and a few dozen fsyncs). Migrating from empty
    stays tested: here, and by tests/studio/runtime/test_database.py's own empty databases."""
    path = tmp_path_factory.mktemp("sqlite-template") / "studio.db"

    async def migrate() -> None:
        from functions import NAMES, load
        from studio.runtime.database import RUNTIME_MIGRATIONS, Database

        db = Database(path)
        await db.open()
        try:
            await db.migrate([RUNTIME_MIGRATIONS, *(m for m in (load(n).migrations for n in NAMES) if m)])
        finally:
            await db.close()

    thread = threading.Thread(target=asyncio.run, args=(migrate(),))  # whatever loop the calling test runs
    thread.start()
    thread.join()
    return path


@pytest.fixture
def db_backend(request: pytest.FixtureRequest) -> str:
    """`sqlite` (every test), or `postgres` for DATABASE_TESTS' second run."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def database_url(db_backend: str, request: pytest.FixtureRequest) -> DatabaseUrl | None:
    """STUDIO_DATABASE_URL for this test's studio: None (SQLite in the data dir) or a fresh PostgreSQL
    database that holds the studio's schema already (`studio_postgres_url`)."""
    if db_backend == "postgres":
        return DatabaseUrl.parse(request.getfixturevalue("studio_postgres_url"))
    return None


@pytest.fixture
def db_target(tmp_path: Path, db_backend: str, request: pytest.FixtureRequest) -> Path | DatabaseUrl:
    """What `Database(...)` opens in this test: a SQLite file in tmp_path, or a fresh, empty PostgreSQL database."""
    if db_backend == "postgres":
        return DatabaseUrl.parse(request.getfixturevalue("postgres_url"))
    return tmp_path / "studio.db"


@pytest.fixture
def settings(
    tmp_path: Path, nats_url: str, database_url: DatabaseUrl | None, request: pytest.FixtureRequest
) -> Settings:
    if database_url is None:  # the studio's SQLite file, migrated already (`sqlite_studio_template`)
        (tmp_path / "data").mkdir(exist_ok=True)
        if not (tmp_path / "data" / "studio.db").exists():
            shutil.copyfile(request.getfixturevalue("sqlite_studio_template"), tmp_path / "data" / "studio.db")
    return Settings.from_env(
        {},
        data_dir=tmp_path / "data",
        database_url=database_url,
        nats_url=nats_url,
        port=free_port(),
        heartbeat_s=0.5,
        shutdown_grace_s=3.0,
        nats_connect_timeout_s=5.0,
        ollama_url=f"http://127.0.0.1:{free_port()}",  # nothing listens unless a test starts a double
        server_memory_bytes=64 * 1024**3,  # the stand-in server holds every catalog model, whatever this host has
        scale_cpu_percent=100.0,  # this machine, busy running tests, never raises the scale alert (test_scale sets it)
    )


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = Bus(nats_url, name="test", source="/tests")
    await b.connect()
    await b.ensure_stream()
    yield b
    await b.close(1)


@pytest.fixture
async def embedded_studio(settings: Settings, aiohttp_client):
    """Start functions in-process behind the embedded gateway: `client = await embedded_studio([fn, ...])`."""
    from gateway.app import gateway_app
    from studio.runtime.host import Host

    started: list[tuple[Host, Any]] = []

    async def start(fns, *, settings_override: Settings | None = None):
        s = settings_override or settings
        host = Host(fns, s)
        await host.start()
        client = await aiohttp_client(gateway_app(s, functions=fns, bus=host.bus))
        client.host_runtime = host
        started.append((host, client))
        return client

    yield start
    # As `localai-studio up` stops: the HTTP side first (requests under way finish: an answer still writing
    # its usage keeps its database connection until then), then the functions. The other way round, closing
    # the database waited out its grace (5 s) for the connection such an answer held.
    for host, client in reversed(started):
        await client.close()
        await host.stop()


@pytest.fixture
async def ollama():
    """The Ollama stand-in over real HTTP; pulls take a moment so progress can be watched (12 KB a progress
    line, a line every 50 ms: the catalog's biggest models, scaled, take under two seconds)."""
    from tests.doubles.ollama import OllamaDouble

    async with OllamaDouble(pull_speed=240_000, pull_interval=0.05) as double:
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
