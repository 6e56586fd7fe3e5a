"""The studio's public contract: an OpenAPI 3.1 description of every route, served at /api/openapi.json.

Written by hand next to the route table and kept true by tests: tests/gateway/test_openapi.py
compares its paths with the routes the functions declare and the gateway's own, and
tests/gateway/test_contract.py fuzzes the running studio with it (schemathesis): no 5xx, no answer
outside its schema, no database change from a refused request.
"""

from __future__ import annotations

from typing import Any

VERSION = "1.0.0"

ERROR = {"$ref": "#/components/responses/Error"}
VISITOR: list[dict[str, list[str]]] = [{"visitorCookie": []}]
OPERATOR: list[dict[str, list[str]]] = [{"operatorToken": []}]
ANYONE: list[dict[str, list[str]]] = [{}]
SIGNED_IN: list[dict[str, list[str]]] = [{"accountSession": []}]
KEY_OR_SESSION: list[dict[str, list[str]]] = [{"apiKey": []}, {"accountSession": []}, {"visitorCookie": []}]
NO_CONTENT = {"204": {"description": "Done"}}
TEXT = {"type": "string", "minLength": 1, "maxLength": 1000}


def obj(properties: dict[str, Any], required: tuple[str, ...] = (), **more: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), **more}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def ok(description: str, schema: dict[str, Any], status: str = "200") -> dict[str, Any]:
    return {status: {"description": description, "content": json_content(schema)}}


def errors(*statuses: int) -> dict[str, Any]:
    """The statuses a route answers with the error shape; `default` covers the rest (413, 429, 5xx...)."""
    return {**{str(s): ERROR for s in statuses}, "default": ERROR}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


MODEL_PARAM = {
    "name": "model",
    "in": "path",
    "required": True,
    "description": "A catalog model id, e.g. llama3.2:1b",
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}

SCHEMAS: dict[str, Any] = {
    "Error": obj(
        {
            "error": obj(
                {"code": {"type": "string"}, "message": {"type": "string"}},
                ("code", "message"),
            )
        },
        ("error",),
    ),
    "Install": obj(
        {
            "state": {"type": "string", "description": "not_installed, queued, pulling, verifying, installed, failed"},
            "install_id": {"type": ["string", "null"]},
            "updated_at": {"type": ["string", "null"]},
            "nodes": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "The operator only: the state on each Ollama node, by the node's URL",
            },
        },
        ("state",),
    ),
    "Model": obj(
        {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "family": {"type": "string"},
            "parameter_size": {"type": "string"},
            "download_bytes": {"type": "integer"},
            "ram_bytes": {"type": "integer"},
            "license": {"type": "string"},
            "price_cents": {"type": "integer", "minimum": 0},
            "currency": {"type": "string"},
            "featured": {"type": "boolean"},
            "free": {"type": "boolean"},
            "owned": {"type": "boolean"},
            "install": ref("Install"),
        },
        ("id", "name", "price_cents", "currency", "free", "owned", "install"),
    ),
    "Purchase": obj(
        {
            "id": {"type": "string"},
            "model": {"type": "string"},
            "kind": {"type": "string", "enum": ["free", "test", "stripe"]},
            "status": {"type": "string", "enum": ["pending", "paid", "failed", "refunded"]},
            "amount_cents": {"type": "integer"},
            "currency": {"type": "string"},
            "failure_reason": {"type": ["string", "null"]},
            "created_at": {"type": "string"},
            "completed_at": {"type": ["string", "null"]},
        },
        ("id", "model", "kind", "status", "amount_cents", "currency"),
    ),
    "PurchaseAnswer": obj(
        {
            "status": {"type": "string", "enum": ["success", "checkout"]},
            "purchase_id": {"type": "string"},
            "model": {"type": "string"},
            "checkout_url": {"type": ["string", "null"]},
            "owned": {"type": "boolean"},
            "message": {"type": "string"},
        },
        ("status", "purchase_id", "model"),
    ),
    "InstallRequest": obj({"model": {"type": "string", "minLength": 1}}, ("model",)),
    "InstallAccepted": obj(
        {"install_id": {"type": "string"}, "model": {"type": "string"}, "status": {"type": "string"}},
        ("install_id", "model", "status"),
    ),
    "ChatMessage": obj(
        {"role": {"type": "string", "enum": ["system", "user", "assistant"]}, "content": {"type": "string"}},
        ("role", "content"),
        additionalProperties=False,
    ),
    "ChatRequest": obj(
        {
            "model": {"type": "string", "minLength": 1, "maxLength": 200},
            "message": {"type": "string", "minLength": 1},
            "messages": {"type": "array", "items": ref("ChatMessage"), "minItems": 1},
            "options": obj(
                {
                    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
                    "top_k": {"type": "integer", "minimum": 1, "maximum": 1000},
                    "seed": {"type": "integer"},
                    "max_tokens": {"type": "integer", "minimum": 1},
                    "num_predict": {"type": "integer", "minimum": 1},
                    "stop": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 100}},
                },
                additionalProperties=False,
            ),
            "stream": {"type": "boolean", "description": "true (the default): text/event-stream"},
        },
        ("model",),
        additionalProperties=False,
    ),
    "ChatAnswer": obj(
        {
            "response": {"type": "string"},
            "model": {"type": "string"},
            "done_reason": {"type": ["string", "null"]},
            "prompt_tokens": {"type": ["integer", "null"]},
            "completion_tokens": {"type": ["integer", "null"]},
            "total_duration_ms": {"type": ["number", "null"]},
            "tokens_per_s": {"type": ["number", "null"]},
            "time_to_first_token_ms": {"type": ["number", "null"]},
        },
        ("response", "model"),
    ),
    "Account": obj(
        {
            "id": {"type": "string"},
            "email": {"type": "string"},
            "role": {"type": "string", "enum": ["user", "operator"]},
            "created": {"type": "string"},
        },
        ("id", "email", "role"),
    ),
    "Credentials": obj(
        {"email": {"type": "string", "maxLength": 320}, "password": {"type": "string", "maxLength": 1024}},
        ("email", "password"),
    ),
    "Key": obj(
        {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "prefix": {"type": "string"},
            "created": {"type": ["string", "null"]},
            "last_used": {"type": ["string", "null"]},
        },
        ("id", "name"),
    ),
    "Health": obj(
        {
            "status": {"type": "string", "enum": ["ok", "fail"]},
            "failing": {"type": "array", "items": {"type": "string"}},
            "checked_at": {"type": "string"},
            "components": {
                "type": "object",
                "additionalProperties": obj(
                    {"status": {"type": "string", "enum": ["ok", "warn", "fail"]}},
                    ("status",),
                ),
            },
        },
        ("status", "failing", "components"),
    ),
}


ANY_OBJECT: dict[str, Any] = {"type": "object"}


def operator_op(
    summary: str,
    *,
    status: str = "200",
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    errors_too: tuple[int, ...] = (),
) -> dict[str, Any]:
    """An operator-only operation of the console (JSON in, JSON out)."""
    op: dict[str, Any] = {
        "summary": summary + " (operator only)",
        "security": OPERATOR,
        "responses": {**ok("Done", ANY_OBJECT, status), **errors(401, 403, *errors_too)},
    }
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": json_content(body)}
    return op


def path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


def query_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": {"type": "string"}}


def console_paths() -> dict[str, Any]:
    """The operator console's routes (purchase and monitor)."""
    return {
        "/api/catalog": {
            "post": operator_op("Add a model to the catalog", status="201", body=ANY_OBJECT, errors_too=(400, 409))
        },
        "/api/catalog/{model}": {
            "patch": operator_op(
                "Change a model's price, featured flag or description",
                params=[MODEL_PARAM],
                body=ANY_OBJECT,
                errors_too=(400, 404),
            ),
            "delete": operator_op("Take a model off sale", params=[MODEL_PARAM], errors_too=(404,)),
        },
        "/api/operator": {
            "get": {
                "summary": "Whether this session is the operator's",
                "security": [*OPERATOR, *SIGNED_IN, {}],
                "responses": {**ok("Yes or no", obj({"operator": {"type": "boolean"}}, ("operator",))), **errors()},
            }
        },
        "/api/overview": {"get": operator_op("Sales today, 7 and 30 days, Ollama's disk")},
        "/api/purchases/reconcile": {
            "post": operator_op(
                "Compare purchases and access with Stripe; `fix` repairs through events",
                body=obj({"since": {"type": "string"}, "fix": {"type": "boolean"}}),
                errors_too=(400, 503),
            )
        },
        "/api/purchases/{purchase_id}/refund": {
            "post": operator_op(
                "Refund a paid purchase in full through Stripe",
                params=[path_param("purchase_id")],
                body=obj({"confirm": {"type": "boolean"}}, ("confirm",)),
                errors_too=(400, 404, 409, 503),
            )
        },
        "/api/monitor/dead-letters": {"get": operator_op("Events a consumer gave up on")},
        "/api/monitor/dead-letters/redrive": {"post": operator_op("Deliver every dead letter again")},
        "/api/monitor/dead-letters/{event_id}/redrive": {
            "post": operator_op("Deliver one dead letter again", params=[path_param("event_id")], errors_too=(404,))
        },
        "/api/monitor/timeline": {
            "get": operator_op(
                "A purchase's events by correlation id",
                params=[query_param("purchase_id"), query_param("correlation_id")],
                errors_too=(400,),
            )
        },
        "/api/monitor/stream": {
            "get": {
                "summary": "The live event tail, filtered by type and correlation id (operator only)",
                "security": OPERATOR,
                "parameters": [query_param("type"), query_param("correlation_id")],
                "responses": {
                    "200": {"description": "Events", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                    **errors(401, 403),
                },
            }
        },
    }


def document() -> dict[str, Any]:
    event_stream = {"text/event-stream": {"schema": {"type": "string"}}}
    paths: dict[str, Any] = {
        "/api/models": {
            "get": {
                "summary": "The catalog, with what the visitor owns and each model's install state",
                "security": [*VISITOR, {}],
                "responses": {
                    **ok(
                        "The catalog",
                        obj(
                            {
                                "models": {"type": "array", "items": ref("Model")},
                                "payments": {"type": "string", "enum": ["stripe", "test", "disabled"]},
                            },
                            ("models", "payments"),
                        ),
                    ),
                    **errors(),
                },
            }
        },
        "/api/models/purchase/{model}": {
            "post": {
                "summary": "Buy a model: free and test purchases at once, else a Stripe Checkout URL",
                "description": "Needs an existing visitor session (401 otherwise) and a same-site request "
                "(403 cross_site). An open Checkout for the same visitor and model is reused.",
                "security": VISITOR,
                "parameters": [MODEL_PARAM],
                "responses": {**ok("Owned, or a Checkout to pay", ref("PurchaseAnswer")), **errors(401, 403, 404, 409)},
            }
        },
        "/api/models/install": {
            "post": {
                "summary": "(Re)install an owned model (the operator: any model)",
                "security": [*VISITOR, *OPERATOR],
                "requestBody": {"required": True, "content": json_content(ref("InstallRequest"))},
                "responses": {
                    **ok("Install queued (or already under way)", ref("InstallAccepted"), "202"),
                    **errors(400, 401, 403, 404, 409),
                },
            }
        },
        "/api/models/{model}": {
            "delete": {
                "summary": "Remove a model from Ollama (operator only)",
                "security": OPERATOR,
                "parameters": [MODEL_PARAM],
                "responses": {
                    **ok(
                        "Removed (or was not there)",
                        obj({"model": {"type": "string"}, "removed": {"type": "boolean"}}, ("model", "removed")),
                    ),
                    **errors(401, 403, 404),
                },
            }
        },
        "/api/purchases": {
            "get": {
                "summary": "The visitor's purchases",
                "security": VISITOR,
                "responses": {
                    **ok(
                        "Purchases",
                        obj({"purchases": {"type": "array", "items": ref("Purchase")}}, ("purchases",)),
                    ),
                    **errors(401),
                },
            }
        },
        "/api/purchases/{purchase_id}": {
            "get": {
                "summary": "One purchase of the visitor's (a pending Checkout is re-checked with Stripe, "
                "at most every 2 s)",
                "security": [*VISITOR, *OPERATOR],
                "parameters": [{"name": "purchase_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {**ok("The purchase", ref("Purchase")), **errors(404)},
            }
        },
        "/api/webhooks/stripe": {
            "post": {
                "summary": "Stripe's signed events (no session, no origin check: the signature is the proof)",
                "security": [{"stripeSignature": []}],
                "requestBody": {"required": True, "content": json_content({"type": "object"})},
                "responses": {
                    **ok(
                        "Received",
                        obj(
                            {
                                "received": {"type": "boolean"},
                                "outcome": {"type": "string"},
                                "duplicate": {"type": "boolean"},
                            },
                            ("received",),
                        ),
                    ),
                    **errors(400, 503),
                },
            }
        },
        "/api/chat": {
            "post": {
                "summary": "Chat with an owned (or free) installed model",
                "description": "Send `message` (one question) or `messages` (a conversation). "
                "`stream` true (the default): server-sent events `token`, then `done` or `error`.",
                "security": VISITOR,
                "requestBody": {"required": True, "content": json_content(ref("ChatRequest"))},
                "responses": {
                    "200": {
                        "description": "The answer (JSON), or its stream",
                        "content": {**json_content(ref("ChatAnswer")), **event_stream},
                    },
                    **errors(400, 401, 403, 404, 409, 429, 502, 503, 504),
                },
            }
        },
        "/api/auth/signup": {
            "post": {
                "summary": "Create an account and sign in (the visitor's purchases move into it)",
                "security": [*VISITOR, {}],
                "requestBody": {"required": True, "content": json_content(ref("Credentials"))},
                "responses": {**ok("Signed in", ref("Account"), "201"), **errors(400, 403, 409, 429)},
            }
        },
        "/api/auth/login": {
            "post": {
                "summary": "Sign in (the visitor's purchases move into the account)",
                "description": "Wrong passwords slow the attacker, never lock the owner out: after 5 failures "
                "in 15 minutes from one address, or on one account from addresses that failed themselves, the "
                "next attempt waits 1 s, then 2, 4 ... up to 15 minutes (429 with Retry-After). An address with "
                "no recent failures is not held back by the account's count.",
                "security": [*VISITOR, {}],
                "requestBody": {"required": True, "content": json_content(ref("Credentials"))},
                "responses": {**ok("Signed in", ref("Account")), **errors(400, 401, 403, 429)},
            }
        },
        "/api/auth/logout": {
            "post": {
                "summary": "End this session (`everywhere=1`: every session of the account; with `keys=1` its "
                "API keys are revoked too)",
                "security": [*SIGNED_IN, {}],
                "parameters": [
                    {"name": "everywhere", "in": "query", "schema": {"type": "string", "enum": ["1"]}},
                    {"name": "keys", "in": "query", "schema": {"type": "string", "enum": ["1"]}},
                ],
                "responses": {**NO_CONTENT, **errors()},
            }
        },
        "/api/auth/forgot": {
            "post": {
                "summary": "Mail a password reset link (the same answer whether or not the e-mail has an account)",
                "description": "409 `mail_not_configured` when the studio sends no e-mail (STUDIO_SMTP_URL is not "
                "set): a setting, not a fault; the operator makes a link with `localai-studio users reset-link`.",
                "security": ANYONE,
                "requestBody": {"required": True, "content": json_content(obj({"email": TEXT}, ("email",)))},
                "responses": {
                    **ok("Sent if the account exists", obj({"status": {"type": "string"}}, ("status",)), "202"),
                    **errors(400, 409, 429),
                },
            }
        },
        "/api/auth/reset": {
            "post": {
                "summary": "Set a new password with a reset link's token: every session ends and every API key "
                "is revoked (the answer says how many)",
                "security": ANYONE,
                "requestBody": {
                    "required": True,
                    "content": json_content(obj({"token": TEXT, "password": TEXT}, ("token", "password"))),
                },
                "responses": {
                    **ok(
                        "Changed; sign in again",
                        obj(
                            {
                                "status": TEXT,
                                "sessions_ended": {"type": "integer"},
                                "keys_revoked": {"type": "integer"},
                                "message": TEXT,
                            },
                            ("status", "sessions_ended", "keys_revoked", "message"),
                        ),
                    ),
                    **errors(400, 429),
                },
            }
        },
        "/api/auth/session": {
            "get": {
                "summary": "Who is signed in here (null when nobody)",
                "security": [*SIGNED_IN, {}],
                "responses": {
                    **ok("The account, or null", obj({"account": {"oneOf": [ref("Account"), {"type": "null"}]}})),
                    **errors(),
                },
            }
        },
        "/api/account": {
            "get": {
                "summary": "The signed-in account",
                "security": SIGNED_IN,
                "responses": {**ok("The account", ref("Account")), **errors(401, 403)},
            }
        },
        "/api/account/password": {
            "post": {
                "summary": "Change the password; every other session ends (wrong current passwords are throttled "
                "like sign-ins: 429)",
                "security": SIGNED_IN,
                "requestBody": {
                    "required": True,
                    "content": json_content(obj({"current": TEXT, "new": TEXT}, ("current", "new"))),
                },
                "responses": {**NO_CONTENT, **errors(400, 401, 403, 429)},
            }
        },
        "/api/account/keys": {
            "get": {
                "summary": "The account's API keys (never the keys themselves)",
                "security": SIGNED_IN,
                "responses": {
                    **ok("Keys", obj({"keys": {"type": "array", "items": ref("Key")}}, ("keys",))),
                    **errors(401, 403),
                },
            },
            "post": {
                "summary": "A new API key: shown once in this answer, stored as a hash",
                "security": SIGNED_IN,
                "requestBody": {
                    "required": True,
                    "content": json_content(obj({"name": {"type": "string", "maxLength": 100}}, ("name",))),
                },
                "responses": {
                    **ok("The key", {"allOf": [ref("Key"), obj({"key": {"type": "string"}}, ("key",))]}, "201"),
                    **errors(400, 401, 403),
                },
            },
        },
        "/api/account/keys/{key_id}": {
            "delete": {
                "summary": "Revoke a key: it stops working at once on every replica",
                "security": SIGNED_IN,
                "parameters": [{"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {**NO_CONTENT, **errors(401, 403, 404)},
            }
        },
        "/api/account/usage": {
            "get": {
                "summary": "Tokens per model per day (the operator: `all=1`, everyone's)",
                "security": [*SIGNED_IN, *OPERATOR],
                "parameters": [
                    {"name": "days", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 366}},
                    {"name": "all", "in": "query", "schema": {"type": "string", "enum": ["1", "true"]}},
                ],
                "responses": {
                    **ok(
                        "Usage",
                        obj(
                            {"days": {"type": "integer"}, "usage": {"type": "array", "items": {"type": "object"}}},
                            ("days", "usage"),
                        ),
                    ),
                    **errors(400, 401),
                },
            }
        },
        "/v1/models": {
            "get": {
                "summary": "OpenAI-compatible: the models the caller may chat with now (owned or free, installed)",
                "security": KEY_OR_SESSION,
                "responses": {
                    **ok(
                        "OpenAI's list shape",
                        obj({"object": {"type": "string"}, "data": {"type": "array", "items": {"type": "object"}}}),
                    ),
                    **errors(401, 502, 503),
                },
            }
        },
        "/v1/chat/completions": {
            "post": {
                "summary": "OpenAI-compatible chat completions, whole or streamed (chat.completion.chunk, [DONE]); "
                "errors in OpenAI's shape",
                "security": KEY_OR_SESSION,
                "requestBody": {"required": True, "content": json_content({"type": "object"})},
                "responses": {
                    "200": {
                        "description": "chat.completion, or its chunks",
                        "content": {**json_content({"type": "object"}), **event_stream},
                    },
                    "default": {
                        "description": "OpenAI's error shape",
                        "content": json_content(
                            obj({"error": obj({"message": {"type": "string"}, "type": {"type": "string"}})})
                        ),
                    },
                },
            }
        },
        "/v1/embeddings": {
            "post": {
                "summary": "OpenAI-compatible embeddings (models with `embedding`): `input` a string or a list, "
                "`encoding_format` float or base64, `dimensions`; errors in OpenAI's shape",
                "security": KEY_OR_SESSION,
                "requestBody": {"required": True, "content": json_content({"type": "object"})},
                "responses": {
                    **ok(
                        "OpenAI's list of embeddings",
                        obj(
                            {
                                "object": {"type": "string"},
                                "data": {"type": "array", "items": {"type": "object"}},
                                "model": {"type": "string"},
                                "usage": {"type": "object"},
                            },
                            ("object", "data", "model", "usage"),
                        ),
                    ),
                    "default": {
                        "description": "OpenAI's error shape",
                        "content": json_content(
                            obj({"error": obj({"message": {"type": "string"}, "type": {"type": "string"}})})
                        ),
                    },
                },
            }
        },
        "/api/events": {
            "get": {
                "summary": "The visitor's purchase and install events, live (server-sent events; "
                "at most STUDIO_STREAMS_PER_ADDRESS open per client address)",
                "security": [*VISITOR, {}],
                "responses": {"200": {"description": "`state`, then events", "content": event_stream}, **errors(429)},
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "security": ANYONE,
                "responses": ok("OpenAPI 3.1", {"type": "object"}),
            }
        },
        "/api/docs": {
            "get": {
                "summary": "This document rendered for people: routes, parameters, schemas (operator only)",
                "security": OPERATOR,
                "responses": {
                    "200": {"description": "An HTML page", "content": {"text/html": {"schema": {"type": "string"}}}},
                    **errors(401, 403),
                },
            }
        },
        "/health": {
            "get": {
                "summary": "Is the studio well? Anyone: the status and which components fail; the operator: "
                "each component's details",
                "security": [{}, *OPERATOR],
                "responses": {
                    **ok("Every component is fine", ref("Health")),
                    "503": {"description": "A component fails", "content": json_content(ref("Health"))},
                    "default": ERROR,
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "The gateway process is up (container health check)",
                "security": ANYONE,
                "responses": ok(
                    "Up",
                    obj(
                        {"status": {"type": "string"}, "service": {"type": "string"}, "mode": {"type": "string"}},
                        ("status",),
                    ),
                ),
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (operator only)",
                "security": OPERATOR,
                "responses": {
                    "200": {
                        "description": "Prometheus text",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **errors(401, 403),
                },
            }
        },
        "/api/monitor/events": {
            "get": {
                "summary": "The latest events on the bus (operator only)",
                "security": OPERATOR,
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                    },
                    {"name": "type", "in": "query", "schema": {"type": "string"}, "description": "a type prefix"},
                ],
                "responses": {
                    **ok("Events", obj({"events": {"type": "array", "items": {"type": "object"}}}, ("events",))),
                    **errors(400, 401, 403),
                },
            }
        },
        "/api/monitor/stats": {
            "get": {
                "summary": "Event counts by type (operator only)",
                "security": OPERATOR,
                "responses": {**ok("Counts", obj({"events": {}}, ("events",))), **errors(401, 403)},
            }
        },
    }
    paths.update(console_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Local AI Studio",
            "version": VERSION,
            "description": "A self-hosted store for local Ollama models. Every error is "
            '`{"error": {"code", "message"}}` with a 4xx or 5xx status. State-changing requests from '
            "another site are refused (403 cross_site); per client address, streams and state changes "
            "are limited (429, Retry-After).",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "responses": {
                "Error": {"description": "An error", "content": json_content(ref("Error"))},
            },
            "securitySchemes": {
                "visitorCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "studio_visitor",
                    "description": "Set on the first visit (any page or GET); signed, HttpOnly, SameSite=Lax.",
                },
                "operatorToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "STUDIO_ADMIN_TOKEN",
                },
                "stripeSignature": {"type": "apiKey", "in": "header", "name": "Stripe-Signature"},
                "accountSession": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "studio_session",
                    "description": "Set by sign-up or sign-in; server-side, HttpOnly, SameSite=Lax.",
                },
                "apiKey": {"type": "http", "scheme": "bearer", "description": "A personal key, sk-studio-..."},
            },
        },
    }
