"""A paid purchase ends installed even when the whole studio is killed in the middle of the pull."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.studio.test_cli import CLI, Lines, studio_env
from tests.support import wait_sync

ROOT = Path(__file__).resolve().parents[3]


def start_up(env: dict[str, str]) -> tuple[subprocess.Popen[str], Lines]:
    proc = subprocess.Popen([CLI, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = Lines(proc.stdout)
    wait_sync(
        lambda: out.find(lambda ln: "running at" in ln) or proc.poll() is not None,
        timeout=30,
        message="the studio to start",
    )
    assert proc.poll() is None
    return proc, out


def install_state(client: httpx.Client, url: str, model: str) -> dict:
    models = client.get(url + "/api/models", timeout=10).json()["models"]
    return next(m for m in models if m["id"] == model)


@pytest.mark.slow  # ~40 s: the restarted consumer waits out the killed one's lease
def test_studio_killed_mid_pull_finishes_the_install_after_restart(tmp_path: Path) -> None:
    ollama_port = free_port()
    ollama = subprocess.Popen(
        [sys.executable, "-m", "tests.doubles.ollama", "--port", str(ollama_port), "--pull-speed", "20000"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    env = studio_env(tmp_path, STUDIO_OLLAMA_URL=f"http://127.0.0.1:{ollama_port}", STUDIO_SKIP_PAYMENT="true")
    url = f"http://127.0.0.1:{env['STUDIO_PORT']}"
    studio = None
    try:
        studio, _ = start_up(env)
        with httpx.Client() as visitor:
            assert visitor.get(url + "/api/models", timeout=10).status_code == 200  # the session cookie
            assert visitor.post(url + "/api/models/purchase/llama3.2:3b", timeout=10).status_code == 200
            wait_sync(
                lambda: install_state(visitor, url, "llama3.2:3b")["install"]["state"] == "pulling",
                timeout=15,
                message="the pull to start",
            )

            studio.send_signal(signal.SIGKILL)  # no goodbye: nats-server goes down with it
            studio.wait(10)
            studio, _ = start_up(env)

            shown = wait_sync(
                lambda: (m := install_state(visitor, url, "llama3.2:3b"))["install"]["state"] == "installed" and m,
                timeout=90,
                interval=0.5,
                message="the install to finish after the restart",
            )
            assert shown["owned"] is True
    finally:
        if studio is not None and studio.poll() is None:
            studio.send_signal(signal.SIGTERM)
            studio.wait(20)
        ollama.terminate()
        ollama.wait(10)
