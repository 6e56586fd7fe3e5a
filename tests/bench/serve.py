"""Serve one benchmark target in its own process: `python -m tests.bench.serve MODE PORT NATS_URL [UPSTREAM]`.

MODE: function (ping alone, as its container), embedded (gateway with ping in-process),
proxied (gateway forwarding to UPSTREAM over HTTP).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from functions import NAMES, load
from gateway.app import gateway_app
from studio.app.runner import install_event_loop_policy, serve, wait_for_signal
from studio.runtime.host import Host
from studio.runtime.logs import configure
from studio.runtime.server import function_app
from studio.runtime.settings import Settings
from tests.bench.ping import function as ping


async def main(mode: str, port: int, nats_url: str, upstream: str | None) -> None:
    settings = Settings.from_env(
        {},
        port=port,
        nats_url=nats_url,
        data_dir=Path(tempfile.mkdtemp()),
        log_level="WARNING",
        upstreams={"ping": upstream} if upstream else {},
    )
    configure(settings.log_level, f"bench-{mode}")
    host = None
    if mode == "function":
        app = function_app(ping, settings)
    elif mode == "embedded":
        host = Host([ping], settings)
        await host.start()
        app = gateway_app(settings, functions=[ping], bus=host.bus)
    else:
        app = gateway_app(settings, behind=[*(load(n) for n in NAMES), ping])
    runner = await serve(app, settings, f"ready {mode} {port}", edge=mode != "function")
    await wait_for_signal()
    await runner.cleanup()
    if host:
        await host.stop()


if __name__ == "__main__":
    install_event_loop_policy()
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None))
