"""The published contract (/api/openapi.json) names exactly the routes the studio serves, with the
policy the route table applies (operator-only routes need the operator's token)."""

from __future__ import annotations

import schemathesis

import functions
from functions import load
from gateway.openapi import OPERATOR, document
from gateway.routes import ROUTES, RouteTable

GATEWAY_OWN = {("GET", "/api/events"), ("GET", "/api/openapi.json"), ("GET", "/healthz")}
CONCRETE = {"{model}": "llama3.2:1b", "{purchase_id}": "pur_x"}


def concrete(path: str) -> str:
    for param, value in CONCRETE.items():
        path = path.replace(param, value)
    return path


def test_the_contract_names_every_route_and_only_those() -> None:
    declared = {(spec.method, spec.path) for name in functions.NAMES for spec in load(name).routes}
    described = {(method.upper(), path) for path, ops in document()["paths"].items() for method in ops}
    assert described == declared | GATEWAY_OWN, {
        "undocumented": (declared | GATEWAY_OWN) - described,
        "not served": described - declared - GATEWAY_OWN,
    }


def test_operator_only_routes_are_described_as_such() -> None:
    table = RouteTable(ROUTES)
    for path, ops in document()["paths"].items():
        for method, op in ops.items():
            route, _ = table.match(concrete(path), method.upper())
            if route is None:
                assert (method.upper(), path) in GATEWAY_OWN
                continue
            assert (op["security"] == OPERATOR) == route.admin, (method, path)


def test_the_contract_is_valid_openapi_3_1_with_schemas_for_every_answer() -> None:
    schema = schemathesis.openapi.from_dict(document())
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == sum(len(ops) for ops in document()["paths"].values())
    for op in operations:
        for status, response in op.definition.raw["responses"].items():
            if status != "204":  # No Content has, by definition, no schema
                assert "content" in response or "$ref" in response, (op.label, status)


async def test_the_gateway_serves_it(embedded_studio, settings) -> None:
    client = await embedded_studio([load("health")], settings_override=settings.replace(functions=("health",)))
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200 and resp.content_type == "application/json"
    assert await resp.json() == document()
