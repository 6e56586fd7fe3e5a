"""A real 3-node NATS cluster with JetStream, as on three servers: each node its own client port,
cluster port, store dir and server name, routes to the other two, `sync_interval: always`. Locked
down as in production: clients log in as the studio's generated NATS users (`credentials`, `login()`)
over TLS checked against the cluster's CA (`ca`), and the routes use mutual TLS, with certificates from
compose/nats/cluster-certs.

`start()` returns once the nodes have elected a JetStream meta leader (before that, JetStream answers
nothing); `kill(i)` is SIGKILL, `restart(i)` brings a node back on its own port and store. Each node
serves NATS's monitoring endpoint on `monitor_port` (`/jsz`: who leads JetStream's meta group, which
`meta_leader()` asks; `stream_leader()` asks JetStream itself, `$JS.API.STREAM.INFO.<stream>`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient

from events.bus import STREAM, NatsLogin
from events.server import find_binary
from functions import NAMES, load
from studio.runtime.nats_users import every_user, password_of, write_credentials
from tests.conftest import free_port

CERTS = Path(__file__).resolve().parents[2] / "compose" / "nats" / "cluster-certs"


@dataclass
class Node:
    name: str
    store_dir: Path
    port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class NatsCluster:
    def __init__(self, root: Path, size: int = 3, *, name: str = "studio") -> None:
        self.name = name
        self.nodes = [Node(f"n{i + 1}", root / f"n{i + 1}") for i in range(size)]
        self.credentials = root / "credentials"  # STUDIO_NATS_CREDENTIALS_DIR for the studios
        self.tls = root / "tls"
        self._authorization = write_credentials(self.credentials, every_user([load(n) for n in NAMES]))
        subprocess.run([str(CERTS), str(self.tls), "127.0.0.1"], check=True, capture_output=True)

    @property
    def ca(self) -> Path:
        """STUDIO_NATS_CA for the studios."""
        return self.tls / "ca.pem"

    def login(self, user: str = "ops") -> NatsLogin:
        password = password_of(self.credentials, user)
        assert password is not None, user
        return NatsLogin(user, password, ca=self.ca)

    def _connect_options(self) -> dict[str, Any]:
        ops = self.login()
        return {"user": ops.user, "password": ops.password, "tls": ops.tls()}

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated: what STUDIO_NATS_URL holds in a cluster."""
        return ",".join(n.url for n in self.nodes)

    def _config(self, node: Node) -> Path:
        node.store_dir.mkdir(parents=True, exist_ok=True)
        routes = ", ".join(f'"nats-route://127.0.0.1:{o.cluster_port}"' for o in self.nodes if o is not node)
        conf = node.store_dir / "nats-server.conf"
        conf.write_text(
            f'listen: "127.0.0.1:{node.port}"\n'
            f'http: "127.0.0.1:{node.monitor_port}"\n'
            f"server_name: {node.name}\n"
            "max_payload: 1MB\n"
            f'tls {{\n  cert_file: "{self.tls / "node.pem"}"\n  key_file: "{self.tls / "node-key.pem"}"\n'
            f'  ca_file: "{self.ca}"\n  timeout: 5\n}}\n'
            f'jetstream {{\n  store_dir: "{node.store_dir}"\n  sync_interval: always\n}}\n'
            f'cluster {{\n  name: {self.name}\n  listen: "127.0.0.1:{node.cluster_port}"\n  routes: [{routes}]\n'
            f'  tls {{\n    cert_file: "{self.tls / "node.pem"}"\n    key_file: "{self.tls / "node-key.pem"}"\n'
            f'    ca_file: "{self.tls / "ca.pem"}"\n    verify: true\n    timeout: 5\n  }}\n}}\n' + self._authorization
        )
        return conf

    def spawn(self, node: Node) -> None:
        conf = self._config(node)
        with open(node.store_dir / "nats-server.log", "ab") as log:
            node.proc = subprocess.Popen([find_binary(), "-c", str(conf)], stdout=log, stderr=log)

    async def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            self.spawn(node)
        await self.wait_for_meta_leader(timeout)

    async def wait_for_meta_leader(self, timeout: float = 30.0) -> None:
        """Until JetStream answers through a running node (a meta leader was elected)."""
        async with asyncio.timeout(timeout):
            while True:
                for node in self.nodes:
                    if node.running and await _jetstream_answers(node.url, self._connect_options()):
                        return
                await asyncio.sleep(0.2)

    async def wait_for_replicas(self, replicas: int, timeout: float = 30.0) -> None:
        """Until the event stream has a leader and `replicas - 1` followers that are current."""
        urls = [n.url for n in self.nodes if n.running]
        nc = await nats.connect(servers=urls, connect_timeout=2, **self._connect_options())
        try:
            async with asyncio.timeout(timeout):
                while True:
                    with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, TimeoutError):
                        info = await nc.jsm().stream_info(STREAM)
                        cluster = info.cluster
                        if (
                            cluster is not None
                            and cluster.leader
                            and info.config.num_replicas == replicas
                            and len([p for p in cluster.replicas or [] if p.current]) == replicas - 1
                        ):
                            return
                    await asyncio.sleep(0.2)
        finally:
            await nc.close()

    def index(self, name: str) -> int:
        return next(i for i, n in enumerate(self.nodes) if n.name == name)

    async def meta_leader(self) -> str:
        """The node leading JetStream's meta group, as the running nodes' `/jsz` says ("" while none does)."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            for node in self.nodes:
                if not node.running:
                    continue
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    async with session.get(f"http://127.0.0.1:{node.monitor_port}/jsz") as resp:
                        leader = str(((await resp.json()).get("meta_cluster") or {}).get("leader") or "")
                        if leader:
                            return leader
        return ""

    async def stream_leader(self, nc: NatsClient | None = None, stream: str = STREAM) -> str:
        """The node leading `stream` (its `cluster.leader` in JetStream's stream info; "" while none does),
        asked through `nc` (a connection that rides out a node's loss), else a connection of its own."""
        own = nc is None
        try:
            if nc is None:
                nc = await nats.connect(
                    servers=[n.url for n in self.nodes if n.running], connect_timeout=2, **self._connect_options()
                )
            info = await nc.jsm(timeout=1.0).stream_info(stream)  # a second: without a leader nobody answers
            return str(info.cluster.leader or "") if info.cluster is not None else ""
        except (OSError, nats.errors.Error, nats.js.errors.Error, TimeoutError):
            return ""
        finally:
            if own and nc is not None:
                await nc.close()

    def kill(self, index: int) -> None:
        node = self.nodes[index]
        if node.running:
            assert node.proc is not None
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(10)

    async def restart(self, index: int) -> None:
        self.spawn(self.nodes[index])
        await self.wait_for_meta_leader()

    def stop(self) -> None:
        for node in self.nodes:
            if node.running:
                assert node.proc is not None
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()


async def _jetstream_answers(url: str, login: dict[str, Any]) -> bool:
    try:
        nc = await nats.connect(url, connect_timeout=1, allow_reconnect=False, **login)
    except (OSError, nats.errors.Error, TimeoutError):
        return False
    try:
        await nc.jsm().account_info()
        return True
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
        return False
    finally:
        await nc.close()
