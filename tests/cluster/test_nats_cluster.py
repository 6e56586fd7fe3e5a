"""The bus against a real 3-node NATS cluster: it connects with every node's URL, keeps the event stream
in `STUDIO_EVENTS_REPLICAS` copies, and rides out losing the node it is connected to."""

from __future__ import annotations

import asyncio
import subprocess

import aiohttp
import pytest

from events.bus import STREAM, Bus, BusRefused, BusUnavailable, NatsLogin, StreamPolicy
from events.envelope import Event
from events.server import find_binary
from studio.runtime.settings import Settings, SettingsError
from tests.cluster.nats_cluster import NatsCluster
from tests.conftest import free_port
from tests.support import Recorder, SampleRecorded, eventually


def sample(n: int) -> Event:
    data = SampleRecorded(n=n, note="")
    return Event(type=data.TYPE, source="/tests", data=data.to_data(), subject=data.subject)


def test_nats_url_takes_every_node_of_a_cluster() -> None:
    urls = " nats://a:4222, nats://b:4222 ,nats://c:4222"
    settings = Settings.from_env({"STUDIO_NATS_URL": urls, "STUDIO_EVENTS_REPLICAS": "3"})
    assert settings.nats_url == "nats://a:4222,nats://b:4222,nats://c:4222"
    assert settings.events_replicas == 3
    assert Bus(settings.effective_nats_url(), name="t", source="/t").servers == [
        "nats://a:4222",
        "nats://b:4222",
        "nats://c:4222",
    ]
    assert Settings.from_env({}).events_replicas == 1
    with pytest.raises(SettingsError, match="STUDIO_NATS_URL"):
        Settings.from_env({"STUDIO_NATS_URL": "nats://a:4222,b:4222"})
    with pytest.raises(SettingsError, match="1 to 5 copies"):
        Settings.from_env({"STUDIO_EVENTS_REPLICAS": "0"})


async def publish_until_stored(bus: Bus, event: Event) -> None:
    """What the outbox relay does: publish again (same id) until JetStream acknowledges it."""
    while True:
        try:
            await bus.publish(event, timeout=2.0)
            return
        except BusUnavailable:
            await asyncio.sleep(0.2)  # a node is down and the client is reconnecting: try again


def connected_port(bus: Bus) -> int | None:
    url = bus.nc.connected_url
    return None if url is None else url.port


@pytest.mark.slow
async def test_stream_is_replicated_and_survives_losing_the_connected_node(nats_cluster: NatsCluster) -> None:
    bus = Bus(nats_cluster.url, name="test", source="/tests", login=nats_cluster.login())
    await bus.connect()
    try:
        info = await bus.ensure_stream(StreamPolicy(replicas=3))
        assert info.config.num_replicas == 3
        await nats_cluster.wait_for_replicas(3)
        got = Recorder()
        await bus.consume("tests__cluster", [SampleRecorded.TYPE], got, max_concurrency=16, ack_wait=5)

        events = [sample(i) for i in range(200)]
        for event in events[:100]:
            await publish_until_stored(bus, event)
        connected = connected_port(bus)
        victim = next(i for i, n in enumerate(nats_cluster.nodes) if n.port == connected)
        nats_cluster.kill(victim)  # SIGKILL the node this client talks to, with deliveries in flight
        for event in events[100:]:
            await publish_until_stored(bus, event)

        await eventually(
            lambda: {item.n for item in got.items} == set(range(200)), timeout=60, message="every event handled"
        )
        survivors = [n for n in nats_cluster.nodes if n.running]
        assert connected_port(bus) in {n.port for n in survivors}
        stream = await bus.nc.jsm().stream_info(STREAM)
        assert stream.state.messages == 200, "a publish retried across the failover was stored twice"
    finally:
        await bus.close(1)


@pytest.mark.slow
async def test_replicas_of_an_existing_stream_follow_the_setting(nats_cluster: NatsCluster) -> None:
    bus = Bus(nats_cluster.url, name="test", source="/tests", login=nats_cluster.login())
    await bus.connect()
    try:
        await bus.ensure_stream(StreamPolicy(replicas=1))
        await publish_until_stored(bus, sample(1))
        info = await bus.ensure_stream(StreamPolicy(replicas=3))  # a single-server studio joins a cluster
        assert info.config.num_replicas == 3
        await nats_cluster.wait_for_replicas(3)
        assert (await bus.nc.jsm().stream_info(STREAM)).state.messages == 1
    finally:
        await bus.close(1)


@pytest.mark.slow
async def test_a_studio_waits_for_a_cluster_quorum_and_says_what_is_missing(tmp_path) -> None:
    cluster = NatsCluster(tmp_path / "nats")
    cluster.spawn(cluster.nodes[0])  # the first server up: alone, JetStream has no leader yet
    bus = Bus(cluster.url, name="test", source="/tests", login=cluster.login())
    try:
        await bus.connect(timeout=10)
        with pytest.raises(BusUnavailable, match=r"most of its nodes up \(2 of 3\)"):
            await bus.wait_for_jetstream(timeout=2)
        cluster.spawn(cluster.nodes[1])  # the second server comes up: a majority
        await bus.wait_for_jetstream(timeout=30)
        info = await bus.ensure_stream(StreamPolicy(replicas=2))
        assert info.config.num_replicas == 2
    finally:
        await bus.close(1)
        cluster.stop()


async def test_the_cluster_refuses_clients_without_a_login_or_tls_and_nodes_without_its_certificate(
    nats_cluster: NatsCluster, tmp_path
) -> None:
    with pytest.raises(BusRefused):  # TLS with the cluster's CA, but no user
        await Bus(nats_cluster.url, name="stranger", source="/x", login=NatsLogin.anonymous(nats_cluster.ca)).connect(
            timeout=5
        )
    with pytest.raises(BusUnavailable) as plain:  # without the CA: no TLS it can trust, no connection at all
        await Bus(nats_cluster.url, name="plain", source="/x").connect(timeout=3)
    assert not isinstance(plain.value, BusRefused)

    rogue = tmp_path / "rogue"  # a server someone starts next to the cluster, routing into it in plain text
    rogue.mkdir()
    target = nats_cluster.nodes[0]
    monitor = free_port()
    (rogue / "nats.conf").write_text(
        f'listen: "127.0.0.1:{free_port()}"\nserver_name: rogue\nhttp: "127.0.0.1:{monitor}"\n'
        f'cluster {{\n  name: {nats_cluster.name}\n  listen: "127.0.0.1:{free_port()}"\n'
        f'  routes: ["nats-route://127.0.0.1:{target.cluster_port}"]\n}}\n'
    )
    log = target.store_dir / "nats-server.log"
    with open(rogue / "log", "wb") as out:
        proc = subprocess.Popen([find_binary(), "-c", str(rogue / "nats.conf")], stdout=out, stderr=out)
    try:
        # The node wants TLS with a certificate of the cluster's CA on its route port: the route fails.
        await eventually(
            lambda: "TLS route handshake error" in log.read_text(),
            timeout=15,
            message="the node refusing the rogue route",
        )
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{monitor}/routez") as resp:
            assert (await resp.json())["num_routes"] == 0, "the rogue server never joined the cluster"
    finally:
        proc.terminate()
        proc.wait(10)
