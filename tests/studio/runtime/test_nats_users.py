"""NATS locked down (issue 21, item 11): every client logs in, and each function may publish and subscribe
only to what its declaration says. A real nats-server with the generated users; the studio's own code
connects as each function would in its container."""

from __future__ import annotations

import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from events.bus import Bus, BusRefused, BusUnavailable, NatsLogin
from events.catalog import ChatCompleted, OperatorCatalogChanged
from events.envelope import Event
from events.server import NatsServer
from functions import NAMES, load
from gateway.app import gateway_app
from studio.runtime.function import RUNTIME_EVENTS, UndeclaredEvent
from studio.runtime.nats_users import every_user, password_of, write_credentials
from studio.runtime.server import function_app
from studio.runtime.settings import Secret, Settings
from tests.conftest import free_port
from tests.doubles.ollama import OllamaDouble
from tests.support import Recorder, eventually

FREE = "tinyllama:latest"


@pytest.fixture
async def locked(tmp_path: Path) -> AsyncIterator[tuple[NatsServer, Path]]:
    """A nats-server that requires the studio's generated users, and the directory of their passwords."""
    credentials = tmp_path / "data" / "nats-credentials"
    authorization = write_credentials(credentials, every_user([load(n) for n in NAMES]))
    server = NatsServer(tmp_path / "nats", port=free_port(), authorization=authorization)
    await server.start()
    yield server, credentials
    server.stop()


def login(credentials: Path, user: str) -> NatsLogin:
    password = password_of(credentials, user)
    assert password is not None, user
    return NatsLogin(user, password)


async def connected(server: NatsServer, credentials: Path, user: str) -> Bus:
    bus = Bus(server.url, name=f"test-{user}", source=f"/functions/{user}", login=login(credentials, user))
    await bus.connect(timeout=5)
    return bus


async def test_a_client_without_credentials_or_with_a_wrong_password_is_refused(locked) -> None:
    server, credentials = locked
    for who in (None, NatsLogin("purchase", "not-its-password"), NatsLogin("nobody", "x")):
        with pytest.raises(BusRefused, match="refused"):
            await Bus(server.url, name="stranger", source="/x", login=who).connect(timeout=5)
    ops = await connected(server, credentials, "ops")  # the right one gets in
    assert ops.connected
    await ops.close(0)


async def test_the_credentials_are_readable_by_their_owner_only(locked, tmp_path: Path) -> None:
    _, credentials = locked
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in credentials.iterdir()}
    assert set(modes) == {*NAMES, "studio", "gateway", "ops", "auth.conf"}
    assert set(modes.values()) == {0o600}, modes
    assert stat.S_IMODE((tmp_path / "nats" / "nats-server.conf").stat().st_mode) == 0o600


async def test_a_forged_catalog_change_from_a_function_that_does_not_publish_it_is_refused(locked) -> None:
    server, credentials = locked
    ops = await connected(server, credentials, "ops")
    await ops.ensure_stream()
    seen = Recorder()
    await ops.listen(OperatorCatalogChanged.TYPE, seen)
    forged = OperatorCatalogChanged(model="llama3.2:3b", change="updated", entry={"price_cents": 0}, operator="mallory")

    for user in ("install", "chat", "gateway", "webhook", "accounts"):
        bus = await connected(server, credentials, user)
        event = Event(type=forged.TYPE, source="/forged", data=forged.to_data(), subject=forged.subject)
        with pytest.raises(BusUnavailable):  # JetStream never stores it: the server drops it
            await bus.publish(event, timeout=0.2)  # never answered: any wait ends in a refusal
        await bus.nc.publish(event.nats_subject, event.to_json())  # plain NATS, to every listener: dropped too
        await bus.flush()
        await bus.close(0)

    purchase = await connected(server, credentials, "purchase")  # the owner of the catalog may
    await purchase.publish(Event(type=forged.TYPE, source="/functions/purchase", data=forged.to_data()))
    await eventually(lambda: len(seen) == 1, message="purchase's own catalog change")
    await purchase.close(0)
    assert [e.source for e in seen.items] == ["/functions/purchase"], "no forged change reached a listener"
    info = await ops.nc.jsm().stream_info("STUDIO_EVENTS", subjects_filter="studio.operator.>")
    assert info.state.messages == 1
    await ops.close(0)


async def test_a_function_publishing_a_type_it_does_not_declare_is_refused_by_nats(locked, caplog) -> None:
    server, credentials = locked
    chat = await connected(server, credentials, "chat")
    await chat.ensure_stream()  # every process may make the stream
    undeclared = Event(type="purchase.completed", source="/functions/chat", data={"purchase_id": "p"})
    with caplog.at_level(logging.ERROR, logger="studio.events"):
        with pytest.raises(BusUnavailable):
            await chat.publish(undeclared, timeout=1.0)
        await eventually(lambda: "permissions violation" in caplog.text.lower(), message="the server's refusal, logged")
    assert "purchase.completed" in caplog.text
    await chat.publish(
        Event(type=ChatCompleted.TYPE, source="/functions/chat", data={}), timeout=5.0
    )  # its own type is stored
    await chat.close(0)
    with pytest.raises(UndeclaredEvent, match=r"publishes operator\.catalog_changed"):  # and in-process, before NATS
        load("chat").event(OperatorCatalogChanged(model="m", change="removed", entry=None, operator="x"))


async def test_every_function_in_its_own_process_works_with_only_its_own_permissions(
    locked, settings: Settings, aiohttp_server, aiohttp_client, caplog
) -> None:
    """As in compose: each function and the gateway its own app and NATS user; a visitor signs up, gets a
    model (purchase -> install -> chat's projection), sees it installed, chats, and health sees everyone."""
    server, credentials = locked
    names = ("accounts", "purchase", "install", "chat", "health", "monitor")
    async with OllamaDouble(installed=[FREE]) as ollama:
        s = settings.replace(
            nats_url=server.url,
            nats_credentials_dir=credentials,
            ollama_url=ollama.url,
            skip_payment=True,
            admin_token=Secret("op"),
            functions=names,
        )
        with caplog.at_level(logging.ERROR, logger="studio.events"):
            apps = {name: await aiohttp_server(function_app(load(name), s)) for name in names}
            gateway = s.replace(upstreams={n: str(a.make_url("")).rstrip("/") for n, a in apps.items()})
            client = await aiohttp_client(gateway_app(gateway))

            account = {"email": "a@example.com", "password": "a fine passphrase"}
            signup = await client.post("/api/auth/signup", json=account)
            assert signup.status == 201
            bought = await client.post(f"/api/models/purchase/{FREE}")
            assert bought.status in (200, 201), await bought.text()

            async def installed() -> bool:
                models = (await (await client.get("/api/models")).json())["models"]
                mine = next(m for m in models if m["id"] == FREE)
                return mine["owned"] and mine["install"]["state"] == "installed"

            await eventually(installed, timeout=20, message="owned and installed")
            answer = await client.post("/api/chat", json={"model": FREE, "message": "Hello", "stream": False})
            assert answer.status == 200, await answer.text()
            health = await client.get("/health", headers={"Authorization": "Bearer op"})
            assert health.status in (200, 503)
            report = await health.json()
            assert report["components"]["nats"]["status"] == "ok", report["components"]["nats"]
            operator = {"Authorization": "Bearer op"}
            for path in ("/metrics", "/api/monitor/dead-letters", "/api/monitor/events", "/api/monitor/stats"):
                resp = await client.get(path, headers=operator)
                assert resp.status == 200, (path, await resp.text())
            async with client.get("/api/events") as live:  # the gateway's feed: a query and its listeners
                assert live.status == 200
                first = await live.content.readuntil(b"\n\n")
                state = first if b"event: state" in first else await live.content.readuntil(b"\n\n")
                assert b"event: state" in state, state
        assert "permissions violation" not in caplog.text.lower(), caplog.text


def test_every_function_declares_what_it_publishes_and_its_user_allows_exactly_that() -> None:
    users = {u.name: u for u in every_user([load(n) for n in NAMES])}
    for name in NAMES:
        fn = load(name)
        assert fn.publishes, f"{name} declares no publishes=: its NATS user could publish nothing of its own"
        allowed = {s.removeprefix("studio.") for s in users[name].publish if s.startswith("studio.")}
        if not fn.redrives:
            assert allowed == fn.publishes | RUNTIME_EVENTS, name
    assert users["ops"].publish == {">"} and "studio.operator.catalog_changed" not in users["install"].publish


async def test_rotated_credentials_refuse_the_old_password_once_nats_restarts_and_say_so(locked, caplog) -> None:
    server, credentials = locked
    old = login(credentials, "install")
    running = await connected(server, credentials, "install")
    server.authorization = write_credentials(credentials, every_user([load(n) for n in NAMES]), rotate=True)
    new = login(credentials, "install")
    assert new.password != old.password
    with caplog.at_level(logging.ERROR, logger="studio.events"):
        await server.restart()  # the documented rotation: NATS first, then every service
        await eventually(lambda: "were the credentials rotated" in caplog.text, message="the refusal, said")
        with pytest.raises(BusRefused, match="'install'"):
            await Bus(server.url, name="stale", source="/x", login=old).connect(timeout=5)
    assert caplog.text.count("were the credentials rotated") == 1, "said once, not at every reconnect"
    restarted = await connected(server, credentials, "install")  # the service restarted: its new password
    assert restarted.connected
    await restarted.close(0)
    await running.close(0)
