"""Accounts with every service in its own app, as in compose: the gateway forwards over HTTP, the identity
travels in X-Studio-* headers, and a revocation reaches the gateway through the response and the bus."""

from __future__ import annotations

import ipaddress

from functions import load
from functions.accounts.throttle import FREE_PER_ADDRESS
from gateway.app import gateway_app
from studio.runtime.server import function_app
from studio.runtime.settings import Settings
from tests.functions.accounts.conftest import FREE, PASSWORD


async def test_sign_up_key_and_revocation_across_services(settings: Settings, double, aiohttp_server, aiohttp_client):
    s = settings.replace(ollama_url=double.url, functions=("accounts", "chat"))
    accounts = await aiohttp_server(function_app(load("accounts"), s))
    chat = await aiohttp_server(function_app(load("chat"), s))
    gw = s.replace(
        upstreams={
            "accounts": str(accounts.make_url("")).rstrip("/"),
            "chat": str(chat.make_url("")).rstrip("/"),
        }
    )
    client = await aiohttp_client(gateway_app(gw))

    resp = await client.post("/api/auth/signup", json={"email": "far@example.com", "password": PASSWORD})
    assert resp.status == 201
    me = await (await client.get("/api/account")).json()
    assert me["email"] == "far@example.com"
    created = await (await client.post("/api/account/keys", json={"name": "far"})).json()
    key = {"Authorization": f"Bearer {created['key']}"}

    answer = await client.post(
        "/v1/chat/completions", json={"model": FREE, "messages": [{"role": "user", "content": "Hi"}]}, headers=key
    )
    assert answer.status == 200 and (await answer.json())["object"] == "chat.completion"
    spoofed = await client.get("/api/account", headers={"X-Studio-Account": "acc_someone_else"})
    assert spoofed.status == 200 and (await spoofed.json())["id"] == me["id"], "identity headers are never trusted"

    revoked = await client.delete(f"/api/account/keys/{created['id']}")
    assert revoked.status == 204 and "X-Studio-Evict" not in revoked.headers
    assert (await client.get("/v1/models", headers=key)).status == 401

    assert (await client.post("/api/auth/logout")).status == 204
    assert (await client.get("/api/account")).status == 401


async def test_anthropics_api_across_services(settings: Settings, double, aiohttp_server, aiohttp_client):
    """/v1/messages through the proxying gateway: the key as x-api-key, a stream, and errors in Anthropic's
    shape whether the chat function or the gateway refuses."""
    s = settings.replace(ollama_url=double.url, functions=("accounts", "chat"))
    accounts = await aiohttp_server(function_app(load("accounts"), s))
    chat = await aiohttp_server(function_app(load("chat"), s))
    upstreams = {"accounts": str(accounts.make_url("")).rstrip("/"), "chat": str(chat.make_url("")).rstrip("/")}
    client = await aiohttp_client(gateway_app(s.replace(upstreams=upstreams)))
    assert (
        await client.post("/api/auth/signup", json={"email": "far@example.com", "password": PASSWORD})
    ).status == 201
    created = await (await client.post("/api/account/keys", json={"name": "far"})).json()
    key = {"x-api-key": created["key"], "anthropic-version": "2023-06-01"}
    hello = {"model": FREE, "max_tokens": 20, "messages": [{"role": "user", "content": "Hi"}]}
    client.session.cookie_jar.clear()  # the key alone

    streamed = await client.post("/v1/messages?beta=true", json={**hello, "stream": True}, headers=key)
    bad = await client.post("/v1/messages", json={**hello, "max_tokens": "ten"}, headers=key)
    stranger = await client.post("/v1/messages", json=hello, headers={"x-api-key": "sk-studio-nope"})

    assert streamed.status == 200 and (await streamed.text()).endswith(
        'event: message_stop\ndata: {"type": "message_stop"}\n\n'
    )
    assert bad.status == 400 and (await bad.json())["error"]["type"] == "invalid_request_error"
    assert stranger.status == 401 and (await stranger.json())["error"]["type"] == "authentication_error"


async def test_behind_the_distributed_gateway_accounts_sees_the_address_the_gateway_believes(
    settings: Settings, aiohttp_server, aiohttp_client
) -> None:
    """The gateway trusts no proxy here (its clients are the visitors): a client naming a new address in
    X-Forwarded-For on every attempt is still one address to the accounts function behind it."""
    s = settings.replace(functions=("accounts",))
    accounts = await aiohttp_server(function_app(load("accounts"), s))  # trusts loopback: the gateway
    gw = s.replace(
        upstreams={"accounts": str(accounts.make_url("")).rstrip("/")},
        trusted_proxies=(ipaddress.ip_network("10.255.255.254/32"),),
    )
    client = await aiohttp_client(gateway_app(gw))
    statuses = []
    for i in range(FREE_PER_ADDRESS + 1):
        resp = await client.post(
            "/api/auth/login",
            json={"email": f"x{i}@example.com", "password": "a guess"},
            headers={"X-Forwarded-For": f"198.51.100.{i}", "X-Real-IP": f"198.51.100.{i}"},
        )
        statuses.append(resp.status)
    assert statuses == [401] * FREE_PER_ADDRESS + [429]
