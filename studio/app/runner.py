"""Running services: the embedded studio (`up`), one function or the gateway alone (`run`).

Each runner checks what it can before starting (data dir, port, NATS) and turns every known
start-up failure into a `StartupError` with one line saying what is wrong and how to fix it.
SIGINT/SIGTERM stop it in order: stop accepting HTTP, finish in-flight requests, let functions
finish or hand back their events, stop the embedded nats-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import gc
import logging
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import IO

from aiohttp import web

import functions
from events.bus import BusUnavailable, StreamRefused
from events.server import NatsServer, NatsServerError, port_in_use
from gateway.app import RouteTableMismatch, gateway_app
from gateway.connections import EdgeRunner
from studio import catalog
from studio.runtime.database import DatabaseError
from studio.runtime.function import Function
from studio.runtime.host import Host
from studio.runtime.nats_users import every_user, write_credentials
from studio.runtime.resources import (
    STREAM_FLOOR_BYTES,
    FilesWatch,
    NotEnoughDisk,
    free_bytes,
    raise_open_files_limit,
)
from studio.runtime.server import function_app
from studio.runtime.settings import Settings
from studio.runtime.shortages import SHORTAGES, is_out_of_files

log = logging.getLogger("studio.runtime")


RESTART_FREE_BYTES = STREAM_FLOOR_BYTES  # room the disk needs before a stuck JetStream is restarted


class StartupError(RuntimeError):
    """A start-up failure the operator can fix; the message says how."""


@contextlib.contextmanager
def explained_startup_failures(nats_hint: str) -> Iterator[None]:
    """The failures of starting a host that the operator can fix, each as one line saying how."""
    try:
        yield
    except BusUnavailable as exc:
        raise StartupError(f"{exc}: {nats_hint}") from None
    except DatabaseError as exc:
        raise StartupError(f"the database could not be prepared: {exc}") from None
    except (NotEnoughDisk, StreamRefused) as exc:
        raise StartupError(str(exc)) from None


def check_data_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"the data dir {path.resolve()} cannot be written ({exc.strerror}): fix its permissions "
            f"or point STUDIO_DATA_DIR at a writable folder"
        ) from None


LOCK_FILE = "studio.lock"


def lock_data_dir(path: Path, port: int) -> IO[str]:
    """Hold `<data dir>/studio.lock` for as long as this process lives (the kernel lets it go when the
    process ends, however it ends): a second `up` on the same data dir would run a second nats-server
    on the same JetStream store, write the same SQLite file and rewrite the NATS config under the first.
    Refused with one line naming the process that holds it. (`run <function>` beside an `up` shares the
    data dir on purpose and takes no lock.)"""
    lock = path / LOCK_FILE
    handle = lock.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StartupError(
            f"the data dir {path.resolve()} is in use by another studio ({holder}): stop that one first, or "
            "give this one a data dir of its own (STUDIO_DATA_DIR)"
        ) from None
    handle.seek(0)
    handle.truncate()
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}, port {port}, since {since}\n")
    handle.flush()
    return handle


def check_port(host: str, port: int, what: str, variable: str) -> None:
    if port and port_in_use(host, port):
        raise StartupError(
            f"port {port} on {host} is already in use, so {what} cannot listen there: stop the other "
            f"program or set {variable} to a free port"
        )


def check_catalog(settings: Settings) -> None:
    try:
        catalog.cached(settings.catalog_path)
    except catalog.CatalogError as exc:
        raise StartupError(str(exc)) from None


def all_functions() -> list[Function]:
    """Every function of the studio (their NATS users exist whichever of them run here)."""
    return [functions.load(name) for name in functions.NAMES]


def load_functions(names: tuple[str, ...]) -> list[Function]:
    try:
        return [functions.load(name) for name in names]
    except KeyError as exc:
        raise StartupError(f"{exc.args[0]} (check STUDIO_FUNCTIONS)") from None


async def wait_for_signal() -> None:
    """Until SIGINT or SIGTERM. The handlers stay installed through the shutdown that follows (a second
    signal must not become a KeyboardInterrupt in the middle of it); closing the loop removes them."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("already stopping (in-flight work gets %s); send SIGKILL to stop at once", sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    await stop.wait()


def open_files_limit() -> int:
    """Raise the soft open-files limit to the hard one and log both; returns the soft limit now."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    soft, hard = raise_open_files_limit()
    log.info("open-files limit", extra={"soft_before": before, "soft": soft, "hard": hard})
    return soft


async def _cancel(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def watch_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Out of file handles when accepting: counted and logged once a minute, and alerted (instead of
    asyncio's traceback for every attempt, or nothing at all)."""
    default = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        exc = context.get("exception")
        if isinstance(exc, BaseException) and is_out_of_files(exc):
            SHORTAGES.report(
                "out_of_files",
                f"new connections fail: out of file handles ({exc}); raise the open-files limit (ulimit -n, "
                "compose ulimits.nofile) or lower STUDIO_LIVE_STREAMS_MAX",
            )
            return
        if default is not None:
            default(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


async def serve(
    app: web.Application,
    settings: Settings,
    banner: str,
    *,
    cancel_on_disconnect: bool = False,
    edge: bool = False,
) -> web.AppRunner:
    """Serve `app`. `cancel_on_disconnect`: a handler is cancelled when its client leaves (the
    distributed gateway: so the function behind it sees the disconnect too). `edge`: the gateway,
    facing clients: its connections cut slow request heads and answer aiohttp's own 400s as JSON."""
    runner_class = partial(EdgeRunner, head_timeout=settings.client_timeout_s) if edge else web.AppRunner
    runner = runner_class(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_grace_s,
        handler_cancellation=cancel_on_disconnect,
    )
    watches: list[asyncio.Task[None]] = []
    app.on_cleanup.append(lambda _: _cancel(*watches))
    await runner.setup()
    watch_accept_errors(asyncio.get_running_loop())
    watches.append(asyncio.create_task(FilesWatch().run(), name="files-watch"))
    try:
        # A deep accept queue: bursts of new connections must not be dropped while the loop is busy.
        await web.TCPSite(runner, settings.host, settings.port, reuse_address=True, backlog=1024).start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {settings.port} on {settings.host} is already in use: stop the other "
                "program or set STUDIO_PORT to a free port"
            ) from None
        raise StartupError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from None
    gc.freeze()  # start-up objects live for ever: keep them out of every later collection's work
    print(banner, flush=True)
    return runner


async def run_embedded(settings: Settings) -> None:
    """`localai-studio up`: NATS (unless given), every function and the gateway in one process."""
    open_files_limit()
    check_data_dir(settings.data_dir)
    data_dir_lock = lock_data_dir(settings.data_dir, settings.port)
    check_port(settings.host, settings.port, "the studio", "STUDIO_PORT")
    check_catalog(settings)
    fns = load_functions(settings.functions)
    nats_server = None
    if settings.nats_url is None:  # every client logs in, and may use only its own subjects
        authorization = write_credentials(settings.nats_credentials, every_user([*all_functions()]))
        nats_server = NatsServer(settings.nats_store_dir, port=settings.nats_port, authorization=authorization)
        try:
            await nats_server.start()
        except NatsServerError as exc:
            raise StartupError(str(exc)) from None
    host = Host(fns, settings, service="studio")
    runner = None
    healer: asyncio.Task[None] | None = None
    try:
        with explained_startup_failures("check STUDIO_NATS_URL, or unset it to let the studio start its own"):
            # At most 5 s for a NATS the operator named (one that does not answer is reported soon), 10 s for
            # our own server to accept connections; STUDIO_NATS_CONNECT_TIMEOUT_S when it is shorter.
            await host.start(connect_timeout=min(settings.nats_connect_timeout_s, 5 if settings.nats_url else 10))
        try:
            app = gateway_app(settings, functions=fns, bus=host.bus)
        except RouteTableMismatch as exc:
            raise StartupError(str(exc)) from None
        runner = await serve(
            app, settings, f"Local AI Studio is running at {settings.url}  (Ctrl-C to stop)", edge=True
        )
        if nats_server is not None:
            healer = asyncio.create_task(keep_jetstream_writable(nats_server), name="jetstream-healer")
        log.info(
            "studio started", extra={"url": settings.url, "functions": list(settings.functions), "nats": host.bus.url}
        )
        await wait_for_signal()
        log.info("stopping the studio")
    finally:
        if healer is not None:
            healer.cancel()
        if runner is not None:
            await runner.cleanup()
        await host.stop()
        if nats_server is not None:
            nats_server.stop()
        data_dir_lock.close()
    log.info("studio stopped")


async def keep_jetstream_writable(server: NatsServer, interval_s: float = 2.0) -> None:
    """The embedded nats-server after a full disk: JetStream stops writing for good (it refuses or
    times out every publish, or disables itself) until it is restarted. Once the disk has room again,
    restart it; the outbox and the consumers carry on where they were, nothing acknowledged is lost."""
    broken = False
    while True:
        await asyncio.sleep(interval_s)
        broken = broken or server.storage_failed()
        if broken and await asyncio.to_thread(free_bytes, server.store_dir) >= RESTART_FREE_BYTES:
            log.warning(
                "restarting the embedded NATS: JetStream could not write while the disk was full, and only a "
                "restart lets it write again (the disk has room now)"
            )
            try:
                await server.restart()
            except NatsServerError as exc:
                log.error("the embedded NATS did not come back: %s; restart the studio", exc)
                continue
            broken = False


async def run_function(name: str, settings: Settings) -> None:
    """`localai-studio run <function>`: one function with its own HTTP server, as in a container."""
    open_files_limit()
    check_port(settings.host, settings.port, f"the {name} function", "STUDIO_PORT")
    check_catalog(settings)
    (fn,) = load_functions((name,))
    if fn.uses_database:
        check_data_dir(settings.data_dir)
    app = function_app(fn, settings)
    with explained_startup_failures("start NATS or set STUDIO_NATS_URL"):
        runner = await serve(app, settings, f"function {name} listening on {settings.url}")
    try:
        await wait_for_signal()
    finally:
        await runner.cleanup()


async def run_gateway(settings: Settings) -> None:
    """`localai-studio run gateway`: the front door, proxying to function containers by URL."""
    open_files_limit()
    check_port(settings.host, settings.port, "the gateway", "STUDIO_PORT")
    check_data_dir(settings.data_dir)  # holds the generated cookie key when none is configured
    try:
        app = gateway_app(settings)
    except RouteTableMismatch as exc:
        raise StartupError(str(exc)) from None
    runner = await serve(app, settings, f"gateway listening on {settings.url}", cancel_on_disconnect=True, edge=True)
    try:
        await wait_for_signal()
    finally:
        await runner.cleanup()


def install_event_loop_policy() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        if sys.platform != "win32":
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
