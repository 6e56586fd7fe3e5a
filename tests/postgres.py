"""A real PostgreSQL server for tests (docs/postgres-in-tests.md): Debian's binaries, a temporary
directory (the test session's in memory, /dev/shm, when it has room), a free port, started once per test
session; each test gets a fresh database.

`PostgresServer.start()` -> `server.new_database()` -> a `postgresql://` URL of an empty database
(`CREATE DATABASE ... TEMPLATE template0`, a few tens of milliseconds), or of a copy of another
(`template=`: tests/conftest.py copies one holding the studio's schema, migrated once a session). The
server runs as the `postgres` user when the tests run as root (initdb refuses root), else as the current
user. Databases are made and dropped over one connection kept open on the server's maintenance database, in
a thread of its own (a `psql` process per statement cost ~10 ms of CPU, twice per test).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.support import free_port


class PostgresUnavailable(RuntimeError):
    pass


def postgres_bin() -> Path | None:
    """The newest installed server binaries (`/usr/lib/postgresql/<version>/bin`), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def _in_memory() -> str | None:
    """/dev/shm when it has room (a container's is often 64 MB): a test server's files in memory, where creating
    a database takes ~30 ms instead of 0.1-0.4 s on a busy disk (fsync is off either way: nothing here must
    survive a power loss). None: the default temporary directory."""
    try:
        return "/dev/shm" if shutil.disk_usage("/dev/shm").free >= 2 * 1024**3 else None
    except OSError:
        return None


class PostgresServer:
    def __init__(
        self,
        bin_dir: Path,
        user: str = "studio",
        *,
        durable: bool = False,
        spares: bool = False,
        in_memory: bool = False,
    ) -> None:
        self.bin = bin_dir
        self.durable = durable  # fsync on, as in production (benchmarks); tests turn it off
        self.user = user
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="studio-pg-", dir=_in_memory() if in_memory and not durable else None))
        self.data = self.dir / "data"
        self._names = itertools.count(1)
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postgres-databases")
        self.spares = spares  # make the next copy of a template in the background (the test session's server)
        self._spares: dict[str, Future[str]] = {}  # template -> its next copy, being made
        self._run_as = "postgres" if os.geteuid() == 0 else None
        self._loop: asyncio.AbstractEventLoop | None = None  # the background thread's, for `_maintenance`
        self._conn: Any = None  # asyncpg.Connection to the maintenance database, made and used in that thread

    @property
    def url(self) -> str:
        """The server's maintenance database (`postgres`)."""
        return self.url_of("postgres")

    def url_of(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self._run_as, "--", *args] if self._run_as else list(args)

    def _run(self, *args: str) -> None:
        result = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise PostgresUnavailable(f"{' '.join(args[:2])} failed: {result.stderr.strip() or result.stdout.strip()}")

    def start(self) -> PostgresServer:
        if self._run_as:
            pw = pwd.getpwnam(self._run_as)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8")
        self.resume()
        return self

    def halt(self) -> None:
        """Stop the server as a crash or an operator would (`pg_ctl stop -m fast`: every connection is
        cut), keeping its data: `resume()` starts it again on the same port."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not self.durable:
            # nothing must survive a power loss, and no autovacuum: a test's database lives for seconds
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=32MB"
            options += " -c autovacuum=off"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-o", options, "start"
        )

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # already shut down
            self._background.submit(self._close_maintenance)
        self._background.shutdown(wait=True, cancel_futures=True)  # the server's data goes below, spares with it
        self._spares.clear()
        with contextlib.suppress(PostgresUnavailable, subprocess.TimeoutExpired):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def psql(self, database: str, sql: str) -> str:
        result = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", self.url_of(database), "-c", sql],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise PostgresUnavailable(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def new_database(self, prefix: str = "t", *, template: str = "template0") -> str:
        """A fresh database on this server, a copy of `template` (default: empty); returns its URL.

        Copying a database writes its pages anew (~30 ms in memory, 0.1-0.4 s on a busy disk); with `spares`
        the next copy of the same template is made meanwhile, in the background: a test that asks for one gets
        the one made while the previous test ran. (Off for benchmarks: nothing runs beside what they measure.)"""
        spare = self._spares.pop(template, None)
        name = (spare or self._background.submit(self._create, prefix, template)).result()
        if self.spares:
            self._spares[template] = self._background.submit(self._create, prefix, template)
        return self.url_of(name)

    def _create(self, prefix: str, template: str) -> str:
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        # FILE_COPY (PostgreSQL 15+): the template's files copied as they are, half the CPU of the default
        # WAL_LOG, which writes every page of the copy to the WAL (fsync is off here: its checkpoints are cheap)
        strategy = " STRATEGY FILE_COPY" if int(self.bin.parent.name) >= 15 else ""
        self._maintenance(f"CREATE DATABASE {name} TEMPLATE {template}{strategy}")
        return name

    def drop_database(self, url: str) -> None:
        """Drop the database, in the background (the caller does not wait for the server's files to go)."""
        self._background.submit(self._drop, url.rsplit("/", 1)[-1])

    def _drop(self, name: str) -> None:
        with contextlib.suppress(PostgresUnavailable):
            self._maintenance(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def _maintenance(self, sql: str) -> None:
        """Run `sql` on the maintenance database over the kept connection (in the background thread only);
        a connection the server lost (`halt()`, a restart) is made again once."""
        import asyncpg

        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        for attempt in (1, 2):
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = self._loop.run_until_complete(asyncpg.connect(self.url, timeout=60))
                self._loop.run_until_complete(self._conn.execute(sql, timeout=60))
                return
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                lost = isinstance(exc, (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError))
                if lost and attempt == 1:
                    self._conn = None
                    continue
                raise PostgresUnavailable(f"{' '.join(sql.split()[:2])} failed: {exc}") from exc

    def _close_maintenance(self) -> None:
        if self._loop is None:
            return
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._conn.close(timeout=5))
        self._loop.close()
        self._loop = self._conn = None
