"""The frontend's static files, served by the embedded gateway (nginx serves them in production).

`/` is `index.html`; a path without an extension is the page of that name (`/marketplace` ->
`marketplace.html`); anything else is a file under the frontend folder, never outside it.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from studio.runtime.errors import BadRequest

HTML_CACHE = "no-cache"
ASSET_CACHE = "public, max-age=300"


def default_frontend_dir() -> Path | None:
    candidate = Path(__file__).resolve().parent.parent / "frontend"
    return candidate if candidate.is_dir() else None


class StaticSite:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def resolve(self, path: str) -> Path | None:
        if "\x00" in path:  # no file has one; the OS would refuse it ("embedded null byte")
            raise BadRequest("the path contains a NUL byte", code="invalid_path")
        rel = path.lstrip("/") or "index.html"
        if "." not in rel.rsplit("/", 1)[-1]:
            rel += ".html"
        candidate = (self.root / rel).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        return candidate

    def response(self, path: str) -> web.FileResponse | None:
        file = self.resolve(path)
        if file is None:
            return None
        cache = HTML_CACHE if file.suffix == ".html" else ASSET_CACHE
        return web.FileResponse(file, headers={"Cache-Control": cache})

    def not_found_page(self) -> web.FileResponse | None:
        page = self.root / "404.html"
        return web.FileResponse(page, status=404, headers={"Cache-Control": HTML_CACHE}) if page.is_file() else None
