"""`localai-studio` as an operator runs it: a real process, real signals, real ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.support import wait_sync

CLI = str(Path(sys.executable).parent / "localai-studio")


def studio_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env.update(
        {
            "STUDIO_DATA_DIR": str(tmp_path / "data"),
            "STUDIO_PORT": str(free_port()),
            "STUDIO_NATS_PORT": str(free_port()),
            "STUDIO_HEARTBEAT_S": "0.5",
            "STUDIO_OLLAMA_URL": f"http://127.0.0.1:{free_port()}",
            "STUDIO_ADMIN_TOKEN": "op-cli",
        }
    )
    env.update(extra)
    return env


class Lines:
    """Collects a process's output lines from a thread, so tests can wait for one."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def find(self, predicate) -> str | None:
        return next((ln for ln in list(self.lines) if predicate(ln)), None)


@pytest.fixture
def studio(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str], Lines]]:
    env = studio_env(tmp_path)
    proc = subprocess.Popen([CLI, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = Lines(proc.stdout)
    Lines(proc.stderr)
    try:
        wait_sync(
            lambda: out.find(lambda ln: "running at" in ln) or proc.poll() is not None,
            timeout=30,
            message="the studio to start",
        )
        assert proc.poll() is None, "the studio exited at start-up"
        yield proc, env, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def nats_server_running(store: str) -> bool:
    found = subprocess.run(["pgrep", "-f", f"nats-server -c {store}"], capture_output=True, text=True)
    return bool(found.stdout.strip())


def test_up_serves_health_tails_events_and_stops_cleanly(studio) -> None:
    proc, env, out = studio
    url = f"http://127.0.0.1:{env['STUDIO_PORT']}"
    assert f"running at {url}" in out.find(lambda ln: "running at" in ln)

    public = httpx.get(url + "/health", timeout=10).json()
    assert public["failing"] == ["ollama"] and "message" not in public["components"]["ollama"]
    resp = httpx.get(url + "/health", timeout=10, headers={"Authorization": "Bearer op-cli"})
    report = resp.json()
    assert resp.status_code == 503, "no Ollama here, so not healthy"
    assert report["failing"] == ["ollama"]
    assert f"unreachable at {env['STUDIO_OLLAMA_URL']}" in report["components"]["ollama"]["message"]
    assert report["components"]["nats"]["status"] == "ok"
    assert report["components"]["functions"]["status"] == "ok"

    tail = subprocess.Popen(
        [CLI, "events", "tail", "--json", "--since", "10m"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    tail_out = Lines(tail.stdout)
    try:
        wait_sync(
            lambda: tail_out.find(lambda ln: '"function.started"' in ln),
            timeout=15,
            message="replayed function.started",
        )
        wait_sync(lambda: tail_out.find(lambda ln: '"heartbeat.emitted"' in ln), timeout=15, message="live heartbeats")
        event = json.loads(tail_out.find(lambda ln: '"function.started"' in ln) or "null")
        assert event["specversion"] == "1.0" and event["source"].startswith("/functions/")
    finally:
        tail.send_signal(signal.SIGINT)
        assert tail.wait(10) == 0

    store = str(Path(env["STUDIO_DATA_DIR"]) / "nats" / "nats-server.conf")
    assert nats_server_running(store)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert not nats_server_running(store), "nats-server must stop with the studio"


def test_health_command_exits_non_zero_when_unhealthy(studio) -> None:
    proc, env, _ = studio
    result = subprocess.run([CLI, "health"], env=env, capture_output=True, text=True, timeout=20)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["failing"] == ["ollama"]
    assert "unreachable" in report["components"]["ollama"]["message"]  # the operator's CLI sees the details

    proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(20) == 0


def run_up(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "up"], env=env, capture_output=True, text=True, timeout=60)


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("localai-studio:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_port_in_use_is_reported_in_one_line(tmp_path: Path) -> None:
    env = studio_env(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(env["STUDIO_PORT"])))
        taken.listen()
        result = run_up(env)
    assert_one_clear_line(result, f"port {env['STUDIO_PORT']}", "STUDIO_PORT")


def test_unwritable_data_dir_is_reported_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_up(studio_env(tmp_path, STUDIO_DATA_DIR=str(blocker / "data")))
    assert_one_clear_line(result, "cannot be written", "STUDIO_DATA_DIR")


def test_nats_url_that_does_not_answer_is_reported_in_one_line(tmp_path: Path) -> None:
    silent = f"nats://127.0.0.1:{free_port()}"
    result = run_up(studio_env(tmp_path, STUDIO_NATS_URL=silent, STUDIO_NATS_CONNECT_TIMEOUT_S="1"))
    assert_one_clear_line(result, silent, "does not answer", "STUDIO_NATS_URL")


def test_invalid_setting_names_the_variable(tmp_path: Path) -> None:
    result = run_up(studio_env(tmp_path, STUDIO_PORT="eighty"))
    assert result.returncode == 2
    assert_one_clear_line(result, "STUDIO_PORT")


def test_a_second_studio_on_the_same_data_dir_is_refused_naming_the_first(studio, tmp_path: Path) -> None:
    proc, env, _ = studio
    second = studio_env(tmp_path, STUDIO_DATA_DIR=env["STUDIO_DATA_DIR"])  # its own ports, the same data dir

    result = run_up(second)

    assert_one_clear_line(result, "in use by another studio", f"pid {proc.pid}", "STUDIO_DATA_DIR")
    assert proc.poll() is None  # the first one runs on, untouched


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("STUDIO_NATS_URL", "http://x", "nats://"),
        ("STUDIO_NATS_URL", "nats://a:4222,nats://b:port", "nats://b:port"),
        ("STUDIO_OLLAMA_URL", "127.0.0.1:11434", "http://"),
        ("STUDIO_OLLAMA_URLS", "http://a:11434,http://", "names no host"),
    ],
)
def test_a_url_that_is_not_one_is_refused_in_one_line(tmp_path: Path, variable: str, value: str, needle: str) -> None:
    result = run_up(studio_env(tmp_path, **{variable: value}))
    assert result.returncode == 2
    assert_one_clear_line(result, variable, needle)
