"""The production compose stack, for real, under podman: the images build from compose/Dockerfile on
local base images (this machine reaches no registry), `compose/deploy` brings
docker-compose.production.yml up with the Ollama double as the `ollama` service, and the ops
scripts run against it: a test-mode purchase installs, chat answers, health-check is green, a
killed function container loses nothing (backup-and-monitor heals it), and a backup taken while
visitors buy is restored by compose/restore with nothing committed missing.

One stack per module (built once, brought up once); a private project name, subnet and loopback
ports, so two runs on one machine never meet; `compose down` at the end removes only what it made.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import free_port
from tests.support import eventually, wait_sync

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
NOFILE = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536)  # podman: at most the hard limits
NPROC = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)
PODMAN_COMPOSE = os.environ.get("PODMAN_COMPOSE") or str(
    COMPOSE_DIR / "build" / "venv-compose" / "bin" / "podman-compose"
)
BASE_IMAGES = ("localhost/localbase/python:3.11", "localhost/localbase/nginx:bookworm")
SERVICES = (
    "accounts",
    "chat",
    "frontend",
    "gateway",
    "health",
    "install",
    "monitor",
    "nats",
    "ollama",
    "purchase",
    "webhook",
)
PAID, SLOW_PAID, FREE, CHAT_MODEL = "llama3.2:1b", "llama3.2:3b", "qwen2.5:0.5b", "tinyllama:latest"
MiB = 1 << 20

pytestmark = pytest.mark.timeout(900)


class AlertReceiver(ThreadingHTTPServer):
    """A Slack-style webhook on the host, reachable from the containers through the bridge."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.texts.append(json.loads(body)["text"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("0.0.0.0", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@dataclass
class Stack:
    project: str
    env: dict[str, str]  # what the ops scripts run with
    data: Path
    backups: Path
    gateway_port: int
    frontend_port: int
    alerts: AlertReceiver
    log: Path
    deploy_output: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def site(self) -> str:
        return f"http://127.0.0.1:{self.frontend_port}"

    def script(self, name: str, *args: str, timeout: float = 600, **extra_env: str) -> subprocess.CompletedProcess:
        started = time.monotonic()
        done = subprocess.run(
            [str(COMPOSE_DIR / name), *args],
            env={**self.env, **extra_env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        self.timings[f"{name} {' '.join(args)}".strip()] = round(time.monotonic() - started, 1)
        with open(self.log, "a") as log:
            log.write(f"$ compose/{name} {' '.join(args)}  (rc {done.returncode})\n{done.stdout}\n{done.stderr}\n")
        return done

    def containers(self) -> dict[str, dict]:
        """service -> podman inspect of its container."""
        ids = podman("ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}").split()
        found = json.loads(podman("inspect", *ids)) if ids else []
        return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in found}


def podman(*args: str, check: bool = True) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {done.stderr[-2000:]}")
    return done.stdout


def free_subnet() -> str:
    """A /24 no podman network here uses (another test run's, a real stack's)."""
    taken: set[str] = set()
    for name in podman("network", "ls", "--format", "{{.Name}}").split():
        for net in json.loads(podman("network", "inspect", name)):
            taken.update(s["subnet"] for s in net.get("subnets") or [])
    candidates = [f"10.{random.randint(90, 250)}.{random.randint(0, 255)}.0/24" for _ in range(50)]
    return next(c for c in candidates if c not in taken)


def ensure_tools() -> None:
    assert shutil.which("podman"), "podman is missing: tests/run installs it"
    assert Path(PODMAN_COMPOSE).exists(), f"{PODMAN_COMPOSE} is missing: tests/run installs podman-compose"
    for image in BASE_IMAGES:
        if subprocess.run(["podman", "image", "exists", image]).returncode != 0:
            subprocess.run([str(COMPOSE_DIR / "base" / "build")], check=True, timeout=1200)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    ensure_tools()
    tmp = tmp_path_factory.mktemp("stack")
    project = f"lstest{os.getpid()}"
    data, backups = tmp / "data", tmp / "backups"
    data.mkdir()
    alerts = AlertReceiver()
    subnet = free_subnet()
    bridge_ip = subnet.rsplit(".", 1)[0] + ".1"
    gateway_port, frontend_port = free_port(), free_port()
    env_file = tmp / "studio.env"
    env_file.write_text(
        "\n".join(
            [
                "# the test stack's compose/.env",
                "STUDIO_SKIP_PAYMENT=true",
                "STUDIO_ADMIN_TOKEN=stack-op-token",
                "STUDIO_HEARTBEAT_S=2",
                f"STUDIO_ALERT_WEBHOOK_URL=http://{bridge_ip}:{alerts.server_port}/hooks/alerts",
                f"LOCALAI_PROJECT={project}",
                f"LOCALAI_DATA_DIR={data}",
                f"LOCALAI_BACKUP_DIR={backups}",
                f"LOCALAI_NATS_SECRETS={tmp / 'nats-secrets'}",  # deploy writes the NATS users there
                f"LOCALAI_SUBNET={subnet}",
                f"LOCALAI_NOFILE={NOFILE}",
                f"LOCALAI_NPROC={NPROC}",
                "STUDIO_WRITES_PER_ADDRESS_PER_MINUTE=100000",  # every test visitor is the same address
                f"LOCALAI_GATEWAY_PORT={gateway_port}",
                f"LOCALAI_FRONTEND_PORT={frontend_port}",
                "LOCALAI_IMAGE=localai-studio:stacktest",
                "LOCALAI_FRONTEND_IMAGE=localai-studio-frontend:stacktest",
                f"BASE_IMAGE={BASE_IMAGES[0]}",
                f"NGINX_IMAGE={BASE_IMAGES[1]}",
                "PIP_OFFLINE=true",
                "",
            ]
        )
    )
    # The one change from production: the `ollama` service is the Ollama double, run from the
    # studio image (it needs only aiohttp) with the checkout's tests/ mounted. Pulls take seconds.
    override = tmp / "ollama-double.yml"
    override.write_text(f"""services:
  ollama:
    image: localai-studio:stacktest
    read_only: true
    working_dir: /opt/double
    command: ["python", "-m", "tests.doubles.ollama", "--host", "0.0.0.0", "--port", "11434",
              "--pull-speed", "40000", "--preinstall", "{CHAT_MODEL}"]
    volumes:
      - {ROOT / "tests"}:/opt/double/tests:ro
    healthcheck: !override
      test: ["CMD", "studio-probe", "http://127.0.0.1:11434/api/version"]
      interval: 30s
      timeout: 5s
      retries: 3
""")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "ENGINE": "podman",
        "COMPOSE": PODMAN_COMPOSE,
        "LOCALAI_ENV_FILE": str(env_file),
        "LOCALAI_NOFILE": str(NOFILE),
        "LOCALAI_NPROC": str(NPROC),
        "COMPOSE_OVERRIDE": str(override),
        "PYTHON": sys.executable,
    }
    st = Stack(project, env, data, backups, gateway_port, frontend_port, alerts, tmp / "ops.log")
    try:
        done = st.script("deploy", "--no-pull", "--timeout", "240")
        st.deploy_output = done.stdout + done.stderr
        assert done.returncode == 0, st.deploy_output[-5000:]
        yield st
    finally:
        subprocess.run(
            ["bash", "-c", "source compose/lib.sh && compose down -t 5"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            timeout=300,
        )
        leftovers = podman("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}", check=False).split()
        if leftovers:
            podman("rm", "-f", "-t", "0", *leftovers, check=False)
        podman("network", "rm", "-f", f"{project}_localai-network", check=False)
        alerts.shutdown()
        print(f"\nstack timings (s): {st.timings}")


def visitor() -> aiohttp.ClientSession:
    """One visitor: the gateway's cookie is kept (it is set for 127.0.0.1, hence `unsafe`)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=30))


async def install_states(s: aiohttp.ClientSession, site: str) -> dict[str, str]:
    async with s.get(site + "/api/models") as resp:
        assert resp.status == 200
        return {m["id"]: m["install"]["state"] for m in (await resp.json())["models"]}


async def buy(s: aiohttp.ClientSession, site: str, model: str) -> str:
    await install_states(s, site)  # the marketplace page first: it sets the visitor's session cookie
    async with s.post(f"{site}/api/models/purchase/{model}") as resp:
        body = await resp.json()
        assert resp.status == 200 and body["status"] == "success", body
        return body["purchase_id"]


def test_deploy_brings_every_service_up_healthy_as_the_seed_asks(stack: Stack) -> None:
    assert "/health: ok" in stack.deploy_output
    containers = stack.containers()
    assert sorted(containers) == sorted(SERVICES)
    for service, c in containers.items():
        assert c["State"]["Status"] == "running" and c["State"]["Health"]["Status"] == "healthy", service
        assert c["Config"]["User"] == "1000:1000", service
        published = {p: b for p, b in (c["HostConfig"]["PortBindings"] or {}).items() if b}
        if service in ("gateway", "frontend"):
            assert [b["HostIp"] for bs in published.values() for b in bs] == ["127.0.0.1"], service
        else:
            assert not published, f"{service} must not be reachable from outside"
    limits = {
        s: (c["HostConfig"]["Memory"], c["HostConfig"]["NanoCpus"] or c["HostConfig"]["CpuQuota"] * 10_000)
        for s, c in containers.items()
    }
    assert limits["ollama"] == (8192 * MiB, 4_000_000_000)
    assert limits["frontend"] == (256 * MiB, 500_000_000)
    assert limits["purchase"] == (256 * MiB, 1_000_000_000)
    assert limits["chat"] == (256 * MiB, 500_000_000)
    assert limits["gateway"] == (512 * MiB, 1_000_000_000)
    assert all(c["HostConfig"]["ReadonlyRootfs"] for s, c in containers.items() if s != "ollama")
    assert containers["ollama"]["Config"]["Env"].count("OLLAMA_NOPRUNE=1") == 1
    env = {s: dict(e.split("=", 1) for e in c["Config"]["Env"]) for s, c in containers.items() if s != "ollama"}
    assert env["gateway"]["STUDIO_ADMIN_TOKEN"] == "stack-op-token", "the gateway checks the operator's token"
    for service in ("accounts", "chat", "purchase", "install", "webhook", "health", "monitor", "nats"):
        assert env[service].get("STUDIO_ADMIN_TOKEN", "") == "", f"{service} has no use for the operator token"
    net = json.loads(podman("network", "inspect", f"{stack.project}_localai-network"))[0]
    assert net["driver"] == "bridge"
    # the studio's state lives in the bind-mounted data dir
    assert (stack.data / "studio.db").exists() and (stack.data / "nats" / "jetstream").is_dir()


async def test_a_test_mode_purchase_installs_and_chat_answers(stack: Stack) -> None:
    async with visitor() as s:
        await buy(s, stack.site, PAID)
        await eventually(
            lambda: _state_is(s, stack.site, PAID, "installed"), timeout=60, interval=0.5, message=f"{PAID} installed"
        )
        async with s.post(stack.site + "/api/chat", json={"message": "Hello", "model": CHAT_MODEL}) as resp:
            answer = await resp.json()
        assert resp.status == 200, answer
        assert answer["model"] == CHAT_MODEL and answer["response"].startswith("Hello! I am a stand-in")
        async with s.get(stack.site + "/health", headers={"Authorization": "Bearer stack-op-token"}) as resp:
            report = await resp.json()
            assert resp.status == 200 and report["status"] == "ok", report
            assert report["components"]["functions"]["functions"]["purchase"]["instances"] == 1
        async with s.get(stack.site + "/marketplace") as page, s.get(stack.site + "/no/such/page") as missing:
            assert page.status == 200 and "text/html" in page.headers["Content-Type"]
            assert missing.status == 404 and "Page not found" in await missing.text()


async def _state_is(s: aiohttp.ClientSession, site: str, model: str, state: str) -> bool:
    return (await install_states(s, site)).get(model) == state


def test_health_check_is_green_and_the_services_idle_well_inside_their_limits(stack: Stack) -> None:
    done = stack.script("health-check")
    assert done.returncode == 0, done.stdout + done.stderr
    for what in (
        "container purchase: healthy",
        "endpoint site: 200",
        "/health ok",
        "database integrity ok",
        "logs: 0 error line(s)",
    ):
        assert what in done.stdout, done.stdout
    stats = json.loads(podman("stats", "--no-stream", "--format", "json"))
    used = {s["name"].split("_")[1]: s for s in stats if s["name"].startswith(stack.project + "_")}
    for service in ("gateway", "purchase", "install", "chat", "health", "monitor", "webhook"):
        usage = used[service]["mem_usage"].split("/")[0].strip()  # e.g. "38.4MB"
        assert _megabytes(usage) < 128, f"{service} uses {usage}: the 256 MB limit leaves too little room"


def _megabytes(text: str) -> float:
    units = {"kB": 1e-3, "KB": 1e-3, "MB": 1, "GB": 1e3, "B": 1e-6}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    raise ValueError(text)


async def test_a_killed_function_container_loses_nothing(stack: Stack) -> None:
    async with visitor() as s:
        await buy(s, stack.site, SLOW_PAID)
        await eventually(
            lambda: _state_is(s, stack.site, SLOW_PAID, "pulling"),
            timeout=30,
            interval=0.2,
            message=f"{SLOW_PAID} pulling",
        )
        install = stack.containers()["install"]["Name"]
        podman("kill", install)  # SIGKILL mid-pull; a killed container stays down
        await buy(s, stack.site, FREE)  # bought while nobody installs
        await buy(s, stack.site, "gemma2:2b")

        healed = stack.script("backup-and-monitor", "--no-backup", "--wait", "120")
        assert healed.returncode == 0, healed.stdout + healed.stderr
        assert "restarting: install" in healed.stdout
        assert any("healthy again" in t for t in stack.alerts.texts), stack.alerts.texts

        async def all_installed() -> bool:
            states = await install_states(s, stack.site)
            return all(states[m] == "installed" for m in (SLOW_PAID, FREE, "gemma2:2b"))

        await eventually(all_installed, timeout=120, interval=1, message="every purchase installed")
        async with s.get(stack.site + "/api/purchases") as resp:
            mine = json.dumps(await resp.json())
        assert all(m in mine for m in (SLOW_PAID, FREE, "gemma2:2b"))


async def test_backup_while_visitors_buy_then_restore_keeps_every_committed_purchase(stack: Stack) -> None:
    committed: list[tuple[str, float]] = []
    stop = asyncio.Event()

    async def keep_buying(worker: int) -> None:
        models = (PAID, FREE, CHAT_MODEL, SLOW_PAID)
        n = 0
        while not stop.is_set():
            async with visitor() as s:  # a new visitor each time (it loads a page first: its session cookie)
                committed.append((await buy(s, stack.site, models[(worker + n) % len(models)]), time.monotonic()))
            n += 1

    buyers = [asyncio.create_task(keep_buying(i)) for i in range(3)]
    await eventually(lambda: len(committed) >= 30, timeout=30, message="purchases before the backup")
    started = time.monotonic()
    # in the studio image, as on a VPS without the checkout's .venv, against the live database
    backup = await asyncio.to_thread(stack.script, "backup", STUDIO_CLI="image")
    ended = time.monotonic()
    await eventually(lambda: any(at > ended for _, at in committed), timeout=30, message="a purchase after")
    stop.set()
    await asyncio.gather(*buyers)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    before = {pid for pid, at in committed if at < started}
    archive = next(stack.backups.glob("localai_backup_*.tar.gz"))
    assert oct(archive.stat().st_mode & 0o777) == "0o600"

    # As on a new VPS, there is no compose/.env: the restore takes the backup's.
    env_file = Path(stack.env["LOCALAI_ENV_FILE"])
    settings = env_file.read_text()
    env_file.unlink()
    restored = await asyncio.to_thread(stack.script, "restore", str(archive), STUDIO_CLI="image")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "from the backup" in restored.stdout and env_file.read_text() == settings
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert "database: integrity ok" in restored.stdout and "/health: ok" in restored.stdout

    conn = sqlite3.connect(f"file:{stack.data / 'studio.db'}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        present = {pid for (pid,) in conn.execute("SELECT id FROM purchases")}
    finally:
        conn.close()
    assert before <= present, f"{len(before - present)} committed purchases missing after the restore"
    assert list(stack.data.glob("studio.db.before-restore-*")), "the replaced database is kept"
    # The stand-in Ollama forgot its models when the stack restarted, as a new VPS has none:
    # the restored studio finds owned models missing and installs them again by itself.
    assert "owned models missing from Ollama are downloading again" in restored.stdout, restored.stdout
    async with visitor() as s:
        await eventually(
            lambda: _state_is(s, stack.site, PAID, "installed"),
            timeout=90,
            interval=1,
            message=f"{PAID} installed again after the restore",
        )


def test_the_dev_compose_file_runs_the_whole_studio_in_one_container(stack: Stack, tmp_path: Path) -> None:
    project, port = f"{stack.project}dev", free_port()
    data = tmp_path / "data"
    (data / "ollama").mkdir(parents=True)
    shutil.chown(data, 1000, 1000)
    env = {
        **stack.env,
        "LOCALAI_PROJECT": project,
        "LOCALAI_DATA_DIR": str(data),
        "LOCALAI_STUDIO_PORT": str(port),
        "LOCALAI_OLLAMA_PORT": str(free_port()),
        "LOCALAI_IMAGE": "localai-studio:stacktest",
        "COMPOSE_FILE": str(COMPOSE_DIR / "docker-compose.dev.yml"),
        "LOCALAI_ENV_FILE": str(tmp_path / "none.env"),
    }
    compose = ["bash", "-c", 'source compose/lib.sh && compose "$@"', "compose"]
    try:
        up = subprocess.run(
            [*compose, "up", "-d", "--no-build"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert up.returncode == 0, up.stderr[-3000:]

        def healthy() -> bool:
            try:
                with urlopen(f"http://127.0.0.1:{port}/health") as resp:
                    return json.loads(resp.read())["status"] == "ok"
            except OSError:
                return False

        wait_sync(healthy, timeout=90, interval=0.5, message="the dev studio's /health")
        with urlopen(f"http://127.0.0.1:{port}/") as resp:
            assert resp.status == 200 and b"<html" in resp.read().lower()  # the checkout's frontend
    finally:
        subprocess.run([*compose, "down", "-t", "5"], env=env, cwd=ROOT, capture_output=True, timeout=300)
        leftovers = podman("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}", check=False)
        if leftovers.split():
            podman("rm", "-f", "-t", "0", *leftovers.split(), check=False)


def urlopen(url: str):
    return urllib.request.urlopen(url, timeout=5)
