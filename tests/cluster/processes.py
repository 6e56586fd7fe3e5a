"""A whole studio (`localai-studio up`) as one server's process, for the cluster tests and benchmark."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.conftest import free_port
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "localai-studio")
SECRET_KEY = "cluster-test-shared-secret-key-0123456789"
ADMIN_TOKEN = "op-cluster"


def studio_env(nats_url: str, ollama_url: str, *, replicas: int, **extra: str) -> dict[str, str]:
    """One server's settings: the NATS nodes, the stand-in Ollama, the key every server shares, test mode."""
    return {
        "STUDIO_NATS_URL": nats_url,
        "STUDIO_EVENTS_REPLICAS": str(replicas),
        "STUDIO_SECRET_KEY": SECRET_KEY,  # every server signs and checks visitor cookies with one key
        "STUDIO_ADMIN_TOKEN": ADMIN_TOKEN,
        "STUDIO_OLLAMA_URL": ollama_url,
        "STUDIO_SKIP_PAYMENT": "true",
        "STUDIO_WRITES_PER_ADDRESS_PER_MINUTE": "1000000",
        "STUDIO_CHAT_REQUESTS_PER_MINUTE": "100000",
        "STUDIO_SERVER_MEMORY_BYTES": str(64 * 1024**3),
        "STUDIO_HEARTBEAT_S": "0.5",
        "STUDIO_LOG_LEVEL": "INFO",
        **extra,
    }


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
