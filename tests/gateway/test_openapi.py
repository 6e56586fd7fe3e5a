"""The published contract (/api/openapi.json) names exactly the routes the studio serves, with the
policy the route table applies (operator-only routes need the operator's token)."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
import schemathesis

import functions
from events import asyncapi
from events.catalog import EVENT_TYPES
from functions import load
from gateway.openapi import OPERATOR, document
from gateway.routes import RouteTable, studio_routes
from gateway.session import OperatorPasses
from studio.runtime.function import Function
from studio.runtime.settings import Secret

GATEWAY_OWN = {
    ("GET", "/api/events"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/docs"),
    ("GET", "/healthz"),
    ("POST", "/api/operator/session"),
    ("DELETE", "/api/operator/session"),
    ("GET", "/api/asyncapi.json"),
    ("GET", "/api/docs/events"),
}
CONCRETE = {"{model}": "llama3.2:1b", "{purchase_id}": "pur_x"}


def concrete(path: str) -> str:
    for param, value in CONCRETE.items():
        path = path.replace(param, value)
    return re.sub(r"\{[^}]+\}", "x1", path)


def test_the_contract_names_every_route_and_only_those() -> None:
    declared = {(spec.method, spec.path) for name in functions.NAMES for spec in load(name).routes}
    described = {(method.upper(), path) for path, ops in document()["paths"].items() for method in ops}
    assert described == declared | GATEWAY_OWN, {
        "undocumented": (declared | GATEWAY_OWN) - described,
        "not served": described - declared - GATEWAY_OWN,
    }


def test_operator_only_routes_are_described_as_such() -> None:
    table = RouteTable(studio_routes())
    for path, ops in document()["paths"].items():
        for method, op in ops.items():
            route, _ = table.match(concrete(path), method.upper())
            if route is None:
                assert (method.upper(), path) in GATEWAY_OWN
                continue
            assert (op["security"] == OPERATOR) == route.operator, (method, path)


def test_the_contract_is_valid_openapi_3_1_with_schemas_for_every_answer() -> None:
    schema = schemathesis.openapi.from_dict(document())
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == sum(len(ops) for ops in document()["paths"].values())
    for op in operations:
        for status, response in op.definition.raw["responses"].items():
            if status != "204":  # No Content has, by definition, no schema
                assert "content" in response or "$ref" in response, (op.label, status)


def test_a_route_declared_on_a_function_is_in_the_document_with_its_types() -> None:
    extra = Function("extra")

    class Thing(msgspec.Struct):
        size: Annotated[int, msgspec.Meta(ge=1, description="how big")]

    @extra.route("PUT", "/api/extra/{thing}", summary="Put a thing", body=Thing, response=Thing, errors=(409,))
    async def put_thing(request, body: Thing):  # pragma: no cover - never called
        raise AssertionError

    doc = document([*studio_routes(), *extra.routes])
    op = doc["paths"]["/api/extra/{thing}"]["put"]

    assert op["summary"] == "Put a thing" and op["parameters"][0]["name"] == "thing"
    assert op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Thing"}
    assert doc["components"]["schemas"]["Thing"]["properties"]["size"] == {
        "type": "integer",
        "minimum": 1,
        "description": "how big",
    }
    assert {"200", "400", "409", "default"} <= set(op["responses"])


async def test_the_gateway_serves_it(embedded_studio, settings) -> None:
    client = await embedded_studio([load("health")], settings_override=settings.replace(functions=("health",)))
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200 and resp.content_type == "application/json"
    assert await resp.json() == document()


async def test_the_api_docs_page_is_the_operators_and_loads_nothing_from_elsewhere(embedded_studio, settings) -> None:
    s = settings.replace(functions=("health",), admin_token=Secret("op-docs"))
    client = await embedded_studio([load("health")], settings_override=s)

    visitor = await client.get("/api/docs")
    guess = await client.get("/api/docs", headers={"Authorization": "Bearer a-guess"})
    operator = await client.get("/api/docs", headers={"Authorization": "Bearer op-docs"})

    assert visitor.status == 401 and (await visitor.json())["error"]["code"] == "admin_only"
    assert guess.status == 401 and (await guess.json())["error"]["code"] == "invalid_token"
    assert operator.status == 200 and operator.content_type == "text/html"
    page = await operator.text()
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert "/assets/js/api-docs.js" in sources and "/api/openapi.json" in sources
    assert all(src.startswith(("/", "#")) and not src.startswith("//") for src in sources), sources  # no CDN
    for asset in ("/assets/js/api-docs.js", "/assets/css/api-docs.css"):
        resp = await client.get(asset)
        assert resp.status == 200
        assert "://" not in await resp.text(), asset  # fetches only the studio's own /api/openapi.json


async def test_the_api_docs_page_is_closed_while_operator_routes_are(embedded_studio, settings) -> None:
    client = await embedded_studio([load("health")], settings_override=settings.replace(functions=("health",)))

    resp = await client.get("/api/docs")

    assert resp.status == 403 and (await resp.json())["error"]["code"] == "admin_disabled"


async def test_the_consoles_operator_cookie_opens_the_api_docs_until_signed_out(embedded_studio, settings) -> None:
    s = settings.replace(functions=("health",), admin_token=Secret("op-docs"))
    client = await embedded_studio([load("health")], settings_override=s)

    refused = await client.post("/api/operator/session", headers={"Authorization": "Bearer a-guess"})
    assert refused.status == 401 and "studio_operator" not in refused.cookies
    forged = await client.get("/api/docs", headers={"Cookie": "studio_operator=9999999999.forged"})
    assert forged.status == 401
    signed_in = await client.post("/api/operator/session", headers={"Authorization": "Bearer op-docs"})
    assert signed_in.status == 204
    cookie = signed_in.cookies["studio_operator"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"

    docs = await client.get("/api/docs")  # the client's cookie jar carries the pass: no Authorization header
    health = await client.get("/health")
    assert docs.status == 200 and docs.content_type == "text/html"
    assert "path" in (await health.json())["components"]["database"]  # the operator's details

    signed_out = await client.delete("/api/operator/session")
    assert signed_out.status == 204
    assert (await client.get("/api/docs")).status == 401


def test_a_new_admin_token_ends_every_operator_cookie() -> None:
    old, new = OperatorPasses(b"key", "first-token"), OperatorPasses(b"key", "second-token")
    issued = old.issue(1_000)
    assert old.verify(issued, 2_000)
    assert not new.verify(issued, 2_000)  # the token changed: the pass is void
    assert not old.verify(issued, 1_000 + 13 * 3600)  # expired
    assert not OperatorPasses(b"key", None).verify(issued, 2_000)  # operator routes closed


async def test_the_event_catalog_is_the_operators_as_asyncapi_and_as_a_page(embedded_studio, settings) -> None:
    s = settings.replace(functions=("health",), admin_token=Secret("op-events"))
    client = await embedded_studio([load("health")], settings_override=s)
    operator = {"Authorization": "Bearer op-events"}

    for path in ("/api/asyncapi.json", "/api/docs/events"):
        visitor = await client.get(path)
        assert visitor.status == 401 and (await visitor.json())["error"]["code"] == "admin_only", path
    contract = await client.get("/api/asyncapi.json", headers=operator)
    assert contract.status == 200 and contract.content_type == "application/json"
    assert await contract.json() == asyncapi.document()

    page = await client.get("/api/docs/events", headers=operator)
    assert page.status == 200 and page.content_type == "text/html"
    text = await page.text()
    for event_type in EVENT_TYPES:
        assert f'id="{event_type.replace(".", "_")}"' in text, event_type
    assert "<code>nodes</code></td><td>array of string | null</td>" in text  # install.started's data, as typed
    sources = re.findall(r'(?:src|href)="([^"]+)"', text)
    assert all(src.startswith(("/", "#")) and not src.startswith("//") for src in sources), sources  # no CDN
    docs = await (await client.get("/api/docs", headers=operator)).text()
    assert 'href="/api/docs/events"' in docs  # linked from the API reference
