"""The studio's public contract: an OpenAPI 3.1 description of every route, served at /api/openapi.json.

Generated, not written: each route's method, path, summary, parameters, body, answers and who may
call it come from its declaration (`@function.route`, studio/runtime/routes.py), and every schema
from the declared types (`msgspec.json.schema_components`), the same types that decode the bodies.
What stays here by hand is prose: a description where a route needs more than its summary, the
path parameters' wording, the security schemes and the document's introduction, and where who may
call a route is more than its flags say (a Stripe signature, a signed-in account).

Kept true by tests: tests/gateway/test_openapi.py (every route, and only those, with the table's
policy) and tests/gateway/test_contract.py (schemathesis fuzzes the running studio with it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from gateway.routes import GATEWAY_ROUTES, Route, studio_routes

VERSION = "1.0.0"
REF = "#/components/schemas/{name}"

VISITOR: list[dict[str, list[str]]] = [{"visitorCookie": []}]
OPERATOR: list[dict[str, list[str]]] = [{"operatorToken": []}]
ANYONE: list[dict[str, list[str]]] = [{}]
SIGNED_IN: list[dict[str, list[str]]] = [{"accountSession": []}]
KEY_OR_SESSION: list[dict[str, list[str]]] = [{"apiKey": []}, {"accountSession": []}, {"visitorCookie": []}]

# Prose per route: anything an operation needs beyond what its declaration says.
PROSE: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/models/purchase/{model}"): {
        "description": "Needs an existing visitor session (401 otherwise) and a same-site request "
        "(403 cross_site). An open Checkout for the same visitor and model is reused."
    },
    ("POST", "/api/models/install"): {"security": [*VISITOR, *OPERATOR]},
    ("GET", "/api/purchases/{purchase_id}"): {"security": [*VISITOR, *OPERATOR]},
    ("GET", "/api/models"): {"security": [*VISITOR, {}]},
    ("POST", "/api/webhooks/stripe"): {"security": [{"stripeSignature": []}]},
    ("POST", "/api/chat"): {
        "description": "Send `message` (one question) or `messages` (a conversation). "
        "`stream` true: server-sent events `token`, then `done` or `error`.",
        "security": VISITOR,
    },
    ("POST", "/v1/chat/completions"): {"description": "Errors in OpenAI's shape."},
    ("POST", "/v1/responses"): {
        "description": "Stateless, as Ollama's: `previous_response_id`, `conversation` and stored prompts are "
        "400 `stateless`; `store: true` is answered `store: false`. Tool types other than `function` (Codex's "
        "`web_search`, `namespace`) are left out of what the model gets. Streamed: `event:` lines, "
        "response.created ... response.completed (or response.failed). Errors in OpenAI's shape."
    },
    ("POST", "/v1/completions"): {"description": "`prompt` in, text out, whole or streamed; errors in OpenAI's shape."},
    ("POST", "/v1/messages"): {
        "description": "Streamed: `event:` lines message_start, content_block_start/delta/stop, message_delta, "
        "message_stop, ping, error. `thinking` is ignored for a model that cannot think. Errors in "
        "Anthropic's shape; the studio's 503 is Anthropic's 529 overloaded_error.",
        "security": [{"apiKey": []}, {"anthropicKey": []}, {"accountSession": []}],
    },
    ("POST", "/v1/messages/count_tokens"): {
        "security": [{"apiKey": []}, {"anthropicKey": []}, {"accountSession": []}],
    },
    ("POST", "/v1/embeddings"): {
        "description": "`input` a string or a list, `encoding_format` float or base64, `dimensions`; "
        "errors in OpenAI's shape."
    },
    ("POST", "/api/auth/signup"): {"security": [*VISITOR, {}]},
    ("POST", "/api/auth/login"): {"security": [*VISITOR, {}]},
    ("POST", "/api/auth/logout"): {"security": [*SIGNED_IN, {}]},
    ("POST", "/api/auth/forgot"): {"security": ANYONE},
    ("POST", "/api/auth/reset"): {"security": ANYONE},
    ("GET", "/api/auth/session"): {"security": [*SIGNED_IN, {}]},
    ("GET", "/api/account"): {"security": SIGNED_IN},
    ("POST", "/api/account/password"): {"security": SIGNED_IN},
    ("GET", "/api/account/keys"): {"security": SIGNED_IN},
    ("POST", "/api/account/keys"): {"security": SIGNED_IN},
    ("DELETE", "/api/account/keys/{key_id}"): {"security": SIGNED_IN},
    ("GET", "/api/account/usage"): {"security": [*SIGNED_IN, *OPERATOR]},
    ("GET", "/api/operator"): {"security": [*OPERATOR, *SIGNED_IN, {}]},
    ("GET", "/health"): {"security": [{}, *OPERATOR]},
    ("GET", "/api/events"): {"security": [*VISITOR, {}]},
    ("DELETE", "/api/operator/session"): {"security": ANYONE},
}
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "model": {"description": "A catalog model id, e.g. llama3.2:1b", "schema": {"maxLength": 200}},
}
INTRODUCTION = (
    "A self-hosted store for local Ollama models. Every error is "
    '`{"error": {"code", "message"}}` with a 4xx or 5xx status. State-changing requests from '
    "another site are refused (403 cross_site); per client address, streams and state changes "
    "are limited (429, Retry-After)."
)
SECURITY_SCHEMES = {
    "visitorCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": "studio_visitor",
        "description": "Set on the first visit (any page or GET); signed, HttpOnly, SameSite=Lax.",
    },
    "operatorToken": {"type": "http", "scheme": "bearer", "description": "STUDIO_ADMIN_TOKEN"},
    "stripeSignature": {"type": "apiKey", "in": "header", "name": "Stripe-Signature"},
    "accountSession": {
        "type": "apiKey",
        "in": "cookie",
        "name": "studio_session",
        "description": "Set by sign-up or sign-in; server-side, HttpOnly, SameSite=Lax.",
    },
    "apiKey": {"type": "http", "scheme": "bearer", "description": "A personal key, sk-studio-..."},
    "anthropicKey": {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "A personal key, sk-studio-..., as Anthropic's clients send it (/v1/messages)",
    },
}


class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class Error(msgspec.Struct):
    """Every error the studio answers (its own routes)."""

    error: ErrorDetail


def document(routes: Sequence[Route] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes` (default: every studio function's) and the gateway's own."""
    routes = [*(studio_routes() if routes is None else routes), *GATEWAY_ROUTES]
    types = _types(routes)
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    schema_of = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schema_of, components)
    for route in routes:  # query types only lend their fields to parameters
        if _is_type(route.query):
            components.pop(route.query.__name__, None)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Local AI Studio", "version": VERSION, "description": INTRODUCTION},
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": {"Error": {"description": "An error", "content": _json(schema_of[Error])}},
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def _is_type(value: Any) -> bool:
    return value is not None and not isinstance(value, str)


def _types(routes: Sequence[Route]) -> list[Any]:
    out: list[Any] = [Error]
    for route in routes:
        for t in (route.body, route.response, route.error, route.query, *(t for _, t in route.answers)):
            if _is_type(t) and t not in out:
                out.append(t)
    return out


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _security(route: Route) -> list[dict[str, list[str]]]:
    if route.operator:
        return OPERATOR
    if route.keys:
        return KEY_OR_SESSION
    return [*VISITOR, *SIGNED_IN] if route.visitor else ANYONE


def _operation(route: Route, schema_of: dict[Any, dict[str, Any]], components: dict[str, Any]) -> dict[str, Any]:
    prose = PROSE.get((route.method, route.path), {})
    summary = route.summary + (" (operator only)" if route.operator else "")
    op: dict[str, Any] = {
        "operationId": f"{route.function}.{route.handler.__name__ if route.handler else route.path}",
        "summary": summary,
        "security": prose.get("security", _security(route)),
    }
    if "description" in prose:
        op["description"] = prose["description"]
    parameters = [_path_parameter(name) for name in route.parameters()]
    if _is_type(route.query):
        parameters += _query_parameters(components[route.query.__name__])
    if parameters:
        op["parameters"] = parameters
    if _is_type(route.body):
        op["requestBody"] = {"required": True, "content": _json(schema_of[route.body])}
    op["responses"] = _responses(route, schema_of)
    return op


def _path_parameter(name: str) -> dict[str, Any]:
    prose = PATH_PARAMETERS.get(name, {})
    parameter: dict[str, Any] = {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, **prose.get("schema", {})},
    }
    if "description" in prose:
        parameter["description"] = prose["description"]
    return parameter


def _query_parameters(schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", ()))
    out = []
    for name, field in schema.get("properties", {}).items():
        field = dict(field)
        description = field.pop("description", None)
        parameter: dict[str, Any] = {"name": name, "in": "query", "schema": field}
        if name in required:
            parameter["required"] = True
        if description:
            parameter["description"] = description
        out.append(parameter)
    return out


def _content(route: Route, schema_of: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    if isinstance(route.response, str):
        return {route.response: {"schema": {"type": "string"}}}
    content = _json(schema_of[route.response] if route.response is not None else {"type": "object"})
    if route.stream:
        content["text/event-stream"] = {"schema": {"type": "string"}}
    return content


def _responses(route: Route, schema_of: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    status = str(route.status)
    responses: dict[str, Any] = {}
    if route.status == 204:
        responses[status] = {"description": "Done"}
    else:
        responses[status] = {"description": "Done", "content": _content(route, schema_of)}
    error = (
        {"description": "An error", "content": _json(schema_of[route.error])}
        if route.error is not None
        else {"$ref": "#/components/responses/Error"}
    )
    statuses = set(route.errors)
    if _is_type(route.body) and route.decode:
        statuses.add(400)
    if route.operator or route.needs_session:
        statuses |= {401, 403}
    for code, answer in route.answers:
        responses[str(code)] = {"description": "Answered with its own shape", "content": _json(schema_of[answer])}
    for code in sorted(statuses):
        responses.setdefault(str(code), error)
    responses["default"] = error
    return responses
