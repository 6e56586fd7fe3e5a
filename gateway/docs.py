"""The operator's API reference at /api/docs: a page that renders /api/openapi.json in the browser.

Operator only, refused the way the route table's operator routes are (`Edge.operator_only`): the
token (`Authorization: Bearer`) or a signed-in operator account. The page's shell lives here rather
than in frontend/ because the gateway's container has no frontend/, and everything in frontend/ is
public (nginx serves it); the renderer it loads, frontend/assets/js/api-docs.js, is code only, and
the document it renders is public at /api/openapi.json anyway. No CDN: the shell, its script and its
style all come from the studio, as the CSP requires.
"""

from __future__ import annotations

from aiohttp import web

PAGE = b"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="robots" content="noindex">
  <title>API reference &middot; Local AI Studio</title>
  <link rel="icon" href="/assets/icon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="/assets/css/studio.css">
  <link rel="stylesheet" href="/assets/css/api-docs.css">
  <script type="module" src="/assets/js/api-docs.js"></script>
</head>
<body>
  <a class="skip-link" href="#main">Skip to content</a>
  <header class="site-header">
    <div class="wrap">
      <a class="brand" href="/"><img src="/assets/icon.svg" alt="" width="28" height="28"
        ><span class="brand-name">Local AI Studio</span></a>
      <nav class="nav" aria-label="Main">
        <ul>
          <li><a href="/admin">Console</a></li>
          <li><a href="/api/docs" aria-current="page">API</a></li>
        </ul>
      </nav>
    </div>
  </header>
  <main id="main" class="wrap">
    <div class="page-head">
      <h1 id="title">API reference</h1>
      <p id="summary">Rendered from <a href="/api/openapi.json">/api/openapi.json</a>.</p>
    </div>
    <div id="problem" class="notice error" role="alert" hidden></div>
    <nav id="toc" class="api-toc" aria-label="Routes"></nav>
    <div id="operations"></div>
    <section id="components"></section>
  </main>
</body>
</html>
"""


def docs_page() -> web.Response:
    return web.Response(body=PAGE, content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-store"})
