"""The gateway in both modes: embedded (functions in-process) and distributed (proxied over HTTP)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from functions import NAMES, load
from gateway.app import ROUTE_TABLE, RouteTableMismatch, gateway_app
from gateway.edge import SECURITY_HEADERS
from gateway.routes import Route, RouteTable, declared
from studio.runtime.errors import GatewayTimeout
from studio.runtime.function import Function
from studio.runtime.server import function_app
from studio.runtime.settings import Secret, Settings
from tests.conftest import free_port
from tests.sample.handler import TIMEOUT_S
from tests.sample.handler import function as sample

STUDIO_WITH_SAMPLE = [*(load(name) for name in NAMES), sample]  # the functions behind a distributed gateway


@pytest.fixture(params=["embedded", "distributed"])
async def gateway(request, settings, embedded_studio, aiohttp_client, aiohttp_server):
    """A test client talking to the gateway, with the sample function behind it."""
    settings = settings.replace(admin_token=Secret("op-secret"))
    if request.param == "embedded":
        return await embedded_studio([sample], settings_override=settings)
    function_server = await aiohttp_server(function_app(sample, settings))
    gw_settings = settings.replace(upstreams={"sample": str(function_server.make_url("")).rstrip("/")})
    return await aiohttp_client(gateway_app(gw_settings, behind=STUDIO_WITH_SAMPLE))


def assert_security_headers(resp) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers.get(name) == value, f"{name} missing on {resp.status}"


async def test_routes_to_the_function_and_issues_a_visitor_cookie(gateway) -> None:
    resp = await gateway.get("/api/sample/hello")
    body = await resp.json()

    assert resp.status == 200
    assert body["user_id"].startswith("v_") and body["admin"] is False
    assert "studio_visitor" in resp.cookies
    assert_security_headers(resp)

    again = await (await gateway.get("/api/sample/hello")).json()
    assert again["user_id"] == body["user_id"], "the cookie keeps the visitor's identity"


async def test_client_sent_identity_headers_are_not_trusted(gateway) -> None:
    resp = await gateway.get("/api/sample/hello", headers={"X-Studio-User": "v_someone_else", "X-Studio-Admin": "1"})
    body = await resp.json()

    assert body["user_id"] != "v_someone_else"
    assert body["admin"] is False


async def test_operator_token_grants_admin_and_a_wrong_one_is_refused(gateway) -> None:
    ok = await gateway.get("/api/sample/hello", headers={"Authorization": "Bearer op-secret"})
    wrong = await gateway.get("/api/sample/hello", headers={"Authorization": "Bearer nope"})

    assert (await ok.json())["admin"] is True
    assert wrong.status == 401
    assert (await wrong.json())["error"]["code"] == "invalid_token"
    assert_security_headers(wrong)


async def test_request_id_is_forwarded_or_assigned(gateway) -> None:
    sent = await gateway.get("/api/sample/hello", headers={"X-Request-Id": "trace-42"})
    bogus = await gateway.get("/api/sample/hello", headers={"X-Request-Id": "no spaces allowed"})

    assert sent.headers["X-Request-Id"] == "trace-42"
    assert (await sent.json())["request_id"] == "trace-42"
    assigned = bogus.headers["X-Request-Id"]
    assert assigned != "no spaces allowed" and (await bogus.json())["request_id"] == assigned


async def test_request_body_streams_through(gateway) -> None:
    async def chunks():
        for _ in range(50):
            yield b"x" * 1000
            await asyncio.sleep(0)

    resp = await gateway.post("/api/sample/count", data=chunks())

    assert resp.status == 200
    assert (await resp.json())["bytes"] == 50_000


async def test_a_client_expecting_100_continue_gets_the_functions_answer(gateway) -> None:
    # curl sends `Expect: 100-continue` with any body over 1 KiB; the gateway answers the 100 itself.
    resp = await gateway.post("/api/sample/count", data=b"x" * 5000, expect100=True)

    assert resp.status == 200
    assert (await resp.json())["bytes"] == 5000


async def test_server_sent_events_pass_through_unbuffered(gateway) -> None:
    started = time.monotonic()
    resp = await gateway.get("/api/sample/sse?n=3&delay=0.4")
    assert resp.headers["Content-Type"].startswith("text/event-stream")

    first = await resp.content.readuntil(b"\n\n")
    first_at = time.monotonic() - started
    rest = await resp.content.read()
    total = time.monotonic() - started

    assert first.startswith(b"id: 0\ndata: tick 0")
    assert b"event: done" in rest
    assert first_at < 0.3 < 1.0 < total, f"first event after {first_at:.2f} s of {total:.2f} s"


async def test_slow_function_gets_504(gateway) -> None:
    resp = await gateway.get("/api/sample/slow?seconds=3")

    assert resp.status == 504
    assert (await resp.json())["error"]["code"] == "upstream_timeout"
    assert_security_headers(resp)


async def test_body_over_the_route_limit_gets_413_and_never_reaches_the_function(gateway) -> None:
    declared = await gateway.post(
        "/api/sample/notes", data=b"x" * 200_000, headers={"Content-Type": "application/json"}
    )

    async def endless():
        for _ in range(300):
            yield b"y" * 1000

    streamed = await gateway.post("/api/sample/count", data=endless())

    assert declared.status == 413
    assert (await declared.json())["error"]["code"] == "payload_too_large"
    assert streamed.status == 413
    assert_security_headers(declared)


async def test_unknown_route_and_wrong_method_are_json_errors(gateway) -> None:
    missing = await gateway.get("/api/nothing/here")
    wrong = await gateway.delete("/health")

    assert missing.status == 404 and (await missing.json())["error"]["code"] == "no_route"
    assert wrong.status == 405 and "GET" in wrong.headers["Allow"]
    assert_security_headers(missing)


async def test_bad_json_is_a_400_that_says_why(gateway) -> None:
    resp = await gateway.post("/api/sample/notes", data=b"{oops", headers={"Content-Type": "application/json"})

    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_json" and "not valid JSON" in error["message"]


async def test_operator_routes_are_closed_without_a_configured_token(settings, embedded_studio) -> None:
    client = await embedded_studio([sample])  # no STUDIO_ADMIN_TOKEN

    resp = await client.get("/api/monitor/stats", headers={"Authorization": "Bearer anything"})

    assert resp.status == 401
    closed = await client.get("/metrics")
    assert closed.status == 403 and (await closed.json())["error"]["code"] == "admin_disabled"


async def test_unreachable_function_gets_502(settings, aiohttp_client) -> None:
    gw_settings = settings.replace(upstreams={"sample": f"http://127.0.0.1:{free_port()}"})
    client = await aiohttp_client(gateway_app(gw_settings, behind=STUDIO_WITH_SAMPLE))

    resp = await client.get("/api/sample/hello")

    assert resp.status == 502
    error = (await resp.json())["error"]
    assert error["code"] == "upstream_unreachable" and "sample" in error["message"]
    assert_security_headers(resp)


def test_the_table_is_the_functions_declarations() -> None:
    studio = [load(name) for name in NAMES]
    table = RouteTable(declared([*studio, sample]))

    for fn in [*studio, sample]:
        for spec in fn.routes:
            concrete = spec.path.replace("{", "x").replace("}", "")
            route, _ = table.match(concrete, spec.method)
            assert route is spec, (spec.method, spec.path, route)
    hello, _ = table.match("/api/sample/hello", "GET")
    assert hello is not None and hello.function == "sample" and hello.timeout == TIMEOUT_S


def test_a_route_declared_by_a_function_is_in_the_gateway_table(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=tmp_path)
    extra = Function("extra")

    @extra.route("PUT", "/api/extra/{thing}", summary="Put a thing", timeout=7, max_body=123, operator=True)
    async def put_thing(request):  # pragma: no cover - never called
        raise AssertionError

    app = gateway_app(settings, behind=[*(load(n) for n in NAMES), extra])
    route, _ = app[ROUTE_TABLE].match("/api/extra/a", "PUT")

    assert route is not None and (route.function, route.timeout, route.max_body, route.operator) == (
        "extra",
        7,
        123,
        True,
    )


def test_two_functions_declaring_one_route_fail_in_both_modes(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=tmp_path)
    copy = Function("copycat")

    @copy.route("POST", "/api/chat")
    async def chat(request):  # pragma: no cover - never called
        raise AssertionError

    with pytest.raises(RouteTableMismatch, match="POST /api/chat is declared twice: by chat and by copycat"):
        gateway_app(settings, behind=[*(load(n) for n in NAMES), copy])
    with pytest.raises(RouteTableMismatch, match="POST /api/chat is declared twice"):
        gateway_app(settings, functions=[copy])


def test_literal_paths_then_the_longest_template_and_the_method_decide_the_route() -> None:
    table = RouteTable(
        (
            Route("GET", "/api/models", "purchase"),
            Route("DELETE", "/api/models/{model}", "install"),
            Route("POST", "/api/models/install", "install"),
            Route("GET", "/api/purchases/{purchase_id}", "purchase"),
            Route("POST", "/api/purchases/reconcile", "purchase"),
            Route("GET", "/files/{tail:.*}", "files"),
        )
    )

    def function_for(path: str, method: str) -> str | None:
        route, _ = table.match(path, method)
        return route.function if route else None

    assert function_for("/api/models", "GET") == "purchase"
    assert function_for("/api/models", "HEAD") == "purchase"
    assert function_for("/api/models/llama3.2:3b", "DELETE") == "install"
    assert function_for("/api/models/install", "POST") == "install"
    assert function_for("/api/purchases/reconcile", "GET") == "purchase"  # the template answers GET
    assert function_for("/files/a/b/c", "GET") == "files"
    assert table.match("/api/modelsx", "GET") == (None, frozenset())
    assert table.match("/api/models/a/b", "DELETE") == (None, frozenset())
    assert table.match("/api/models", "PUT") == (None, frozenset({"GET", "HEAD"}))
    assert table.match("/api/models/x", "PUT") == (None, frozenset({"DELETE"}))
    assert table.match("/api/models/install", "GET") == (None, frozenset({"POST", "DELETE"}))


async def test_an_undeclared_method_on_a_known_path_is_a_405_with_the_declared_methods(gateway) -> None:
    put = await gateway.put("/api/sample/hello")
    post = await gateway.post("/api/sample/notes/x")

    assert put.status == 405 and put.headers["Allow"] == "GET, HEAD"
    assert (await put.json())["error"]["code"] == "method_not_allowed"
    assert post.status == 404 and (await post.json())["error"]["code"] == "no_route"
    own = await gateway.post("/api/openapi.json")  # the gateway's own routes are declared too
    assert own.status == 405 and own.headers["Allow"] == "GET, HEAD"


async def test_head_is_answered_by_the_get_route(gateway) -> None:
    resp = await gateway.head("/api/sample/hello")

    assert resp.status == 200 and await resp.read() == b""


def test_gateway_timeout_error_shape() -> None:
    assert GatewayTimeout("x").status == 504
