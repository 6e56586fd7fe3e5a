"""The operator's API reference at /api/docs: a page that renders /api/openapi.json in the browser; and
the event reference at /api/docs/events: the AsyncAPI document of the event catalog (events/asyncapi.py,
also at /api/asyncapi.json) as a page, rendered here (no script: it is the same for every request).

Operator only, refused the way the route table's operator routes are (`Edge.operator_only`): the
token (`Authorization: Bearer`) or a signed-in operator account. The pages' one shell (`_shell`) lives here rather
than in frontend/ because the gateway's container has no frontend/, and everything in frontend/ is
public (nginx serves it); the renderer it loads, frontend/assets/js/api-docs.js, is code only, and
the document it renders is public at /api/openapi.json anyway. No CDN: the shell, its script and its
style all come from the studio, as the CSP requires.
"""

from __future__ import annotations

import html
import json
from typing import Any

from aiohttp import web

NAV = (("Console", "/admin"), ("API", "/api/docs"), ("Events", "/api/docs/events"))


def _shell(*, title: str, current: str, main: str, script: str = "") -> bytes:
    """One page of the operator's references: the studio's header, its nav (`current` marked) and `main`."""
    marked = ' aria-current="page"'
    nav = "".join(f'<li><a href="{href}"{marked if href == current else ""}>{label}</a></li>' for label, href in NAV)
    module = f'\n  <script type="module" src="{script}"></script>' if script else ""
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="robots" content="noindex">
  <title>{title} &middot; Local AI Studio</title>
  <link rel="icon" href="/assets/icon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="/assets/css/studio.css">
  <link rel="stylesheet" href="/assets/css/api-docs.css">{module}
</head>
<body>
  <a class="skip-link" href="#main">Skip to content</a>
  <header class="site-header">
    <div class="wrap">
      <a class="brand" href="/"><img src="/assets/icon.svg" alt="" width="28" height="28"
        ><span class="brand-name">Local AI Studio</span></a>
      <nav class="nav" aria-label="Main">
        <ul>{nav}</ul>
      </nav>
    </div>
  </header>
  <main id="main" class="wrap">
{main}
  </main>
</body>
</html>
""".encode()


# The API reference: frontend/assets/js/api-docs.js fills it from /api/openapi.json.
PAGE = _shell(
    title="API reference",
    current="/api/docs",
    script="/assets/js/api-docs.js",
    main="""    <div class="page-head">
      <h1 id="title">API reference</h1>
      <p id="summary">Rendered from <a href="/api/openapi.json">/api/openapi.json</a>.</p>
      <p>The events the studio publishes on NATS: <a href="/api/docs/events">the event reference</a>
        (<a href="/api/asyncapi.json">AsyncAPI 3.0</a>).</p>
    </div>
    <div id="problem" class="notice error" role="alert" hidden></div>
    <nav id="toc" class="api-toc" aria-label="Routes"></nav>
    <div id="operations"></div>
    <section id="components"></section>""",
)


def html_page(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-store"})


def _type(schema: dict[str, Any]) -> str:
    """A JSON schema as a short type: `string`, `integer | null`, `array of string`, `object`."""
    if "anyOf" in schema:
        return " | ".join(_type(s) for s in schema["anyOf"])
    if "const" in schema:
        return json.dumps(schema["const"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    return str(kind)


def _fields(schema: dict[str, Any]) -> str:
    required = set(schema.get("required", []))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        default = "required" if name in required else f"default {json.dumps(prop.get('default'))}"
        rows.append(
            f"<tr><td><code>{html.escape(name)}</code></td><td>{html.escape(_type(prop))}</td>"
            f"<td>{html.escape(default)}</td></tr>"
        )
    return (
        '<table class="api-params"><thead><tr><th>field</th><th>type</th><th></th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def events_page(document: dict[str, Any]) -> bytes:
    """The AsyncAPI document for people: every event type, its subject, how it travels, its data's fields."""
    channels = document["channels"]
    messages = document["components"]["messages"]
    schemas = document["components"]["schemas"]
    toc, sections = [], []
    for key, channel in channels.items():
        (ref,) = channel["messages"].values()
        name = ref["$ref"].rsplit("/", 1)[1]
        message = messages[name]
        title = html.escape(channel["title"])
        toc.append(f'<li><a href="#{key}">{title}</a></li>')
        sections.append(
            f'<section class="api-op" id="{key}"><h2>{title}</h2>'
            f'<p class="api-who"><code>{html.escape(channel["address"])}</code>: {html.escape(channel["description"])}'
            f"</p><p>{html.escape(message['description'])}</p>{_fields(schemas[name])}</section>"
        )
    main = f"""    <div class="page-head">
      <h1>Event reference</h1>
      <p>{html.escape(document["info"]["description"])}</p>
      <p>Rendered from <a href="/api/asyncapi.json">/api/asyncapi.json</a> (AsyncAPI 3.0). Each message is a
        CloudEvents 1.0 JSON envelope; the fields below are its <code>data</code>.</p>
    </div>
    <nav class="api-toc" aria-label="Event types"><ul>{"".join(toc)}</ul></nav>
    {"".join(sections)}"""
    return _shell(title="Event reference", current="/api/docs/events", main=main)
