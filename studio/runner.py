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
import gc
import logging
import signal
import sys
from functools import partial
from pathlib import Path

from aiohttp import web

import functions
from events.bus import BusUnavailable
from events.server import NatsServer, NatsServerError, port_in_use
from gateway.app import RouteTableMismatch, gateway_app
from gateway.connections import EdgeRunner
from studio import catalog
from studio.runtime.database import DatabaseError
from studio.runtime.function import Function
from studio.runtime.host import Host
from studio.runtime.server import function_app
from studio.runtime.settings import Settings

log = logging.getLogger("studio.runtime")


class StartupError(RuntimeError):
    """A start-up failure the operator can fix; the message says how."""


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
    await runner.setup()
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
    check_data_dir(settings.data_dir)
    check_port(settings.host, settings.port, "the studio", "STUDIO_PORT")
    check_catalog(settings)
    fns = load_functions(settings.functions)
    nats_server = None
    if settings.nats_url is None:
        nats_server = NatsServer(settings.nats_store_dir, port=settings.nats_port)
        try:
            await nats_server.start()
        except NatsServerError as exc:
            raise StartupError(str(exc)) from None
    host = Host(fns, settings, service="studio")
    runner = None
    try:
        try:
            await host.start(connect_timeout=5 if settings.nats_url else 10)
        except BusUnavailable as exc:
            raise StartupError(f"{exc}: check STUDIO_NATS_URL, or unset it to let the studio start its own") from None
        except DatabaseError as exc:
            raise StartupError(f"the database could not be prepared: {exc}") from None
        try:
            app = gateway_app(settings, functions=fns, bus=host.bus)
        except RouteTableMismatch as exc:
            raise StartupError(str(exc)) from None
        runner = await serve(
            app, settings, f"Local AI Studio is running at {settings.url}  (Ctrl-C to stop)", edge=True
        )
        log.info(
            "studio started", extra={"url": settings.url, "functions": list(settings.functions), "nats": host.bus.url}
        )
        await wait_for_signal()
        log.info("stopping the studio")
    finally:
        if runner is not None:
            await runner.cleanup()
        await host.stop()
        if nats_server is not None:
            nats_server.stop()
    log.info("studio stopped")


async def run_function(name: str, settings: Settings) -> None:
    """`localai-studio run <function>`: one function with its own HTTP server, as in a container."""
    check_port(settings.host, settings.port, f"the {name} function", "STUDIO_PORT")
    check_catalog(settings)
    (fn,) = load_functions((name,))
    if fn.uses_database:
        check_data_dir(settings.data_dir)
    app = function_app(fn, settings)
    try:
        runner = await serve(app, settings, f"function {name} listening on {settings.url}")
    except BusUnavailable as exc:
        raise StartupError(f"{exc}: start NATS or set STUDIO_NATS_URL") from None
    except DatabaseError as exc:
        raise StartupError(f"the database could not be prepared: {exc}") from None
    try:
        await wait_for_signal()
    finally:
        await runner.cleanup()


async def run_gateway(settings: Settings) -> None:
    """`localai-studio run gateway`: the front door, proxying to function containers by URL."""
    check_port(settings.host, settings.port, "the gateway", "STUDIO_PORT")
    check_data_dir(settings.data_dir)  # holds the generated cookie key when none is configured
    runner = await serve(
        gateway_app(settings), settings, f"gateway listening on {settings.url}", cancel_on_disconnect=True, edge=True
    )
    try:
        await wait_for_signal()
    finally:
        await runner.cleanup()


def install_event_loop_policy() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        if sys.platform != "win32":
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
