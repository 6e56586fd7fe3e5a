"""install: pulls owned models into Ollama and reports progress.

HTTP    DELETE /api/models/{model}   (operator) -> 200 {"model", "removed"}: out of Ollama, ownership stays
Events  consumes purchase.completed, install.requested
        emits    install.started, install.progressed (live), install.completed, install.failed,
                 install.removed
At start-up the stored install states are reconciled with Ollama's `/api/tags`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from events.catalog import InstallRequested, PurchaseCompleted
from events.delivery import Delivery, Reject
from functions.install.installer import Installer
from studio import catalog
from studio.clients.ollama import OllamaClient, OllamaError
from studio.runtime.errors import Conflict, NotFound, UpstreamUnavailable
from studio.runtime.function import Function, Key
from studio.runtime.host import instance_id
from studio.runtime.identity import require_admin

function = Function("install", migrations=Path(__file__).parent / "migrations")

INSTALLER = Key[Installer]("installer")


@function.resource
async def dependencies(fn: Function) -> AsyncIterator[None]:
    ollama = OllamaClient(fn.settings.ollama_url, request_timeout=15)
    fn[INSTALLER] = installer = Installer(fn, ollama, catalog.cached(fn.settings.catalog_path), instance_id())
    reconciling = asyncio.create_task(installer.keep_reconciling())
    yield
    reconciling.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reconciling
    await ollama.close()


# Many at once: most requests are no-ops (the model is installed or pulling); pulls are limited apart.
@function.subscribe(PurchaseCompleted, InstallRequested, max_concurrency=64, max_attempts=8, ack_wait=15)
async def install_model(event: PurchaseCompleted | InstallRequested, delivery: Delivery) -> None:
    model = catalog.cached(function.settings.catalog_path).get(event.model)
    if model is None:
        raise Reject(f"{event.model!r} is not in the catalog")
    install_id = event.install_id if isinstance(event, InstallRequested) else "ins_" + event.purchase_id[4:]
    await function[INSTALLER].install(model, install_id, delivery)


@function.route("DELETE", "/api/models/{model}")
async def remove_model(request: web.Request) -> web.Response:
    require_admin(request)
    model = catalog.cached(function.settings.catalog_path).get(request.match_info["model"])
    if model is None:
        raise NotFound(f"{request.match_info['model']!r} is not in the catalog", code="unknown_model")
    installer = function[INSTALLER]
    if installer.pulling(model.id):
        raise Conflict(
            f"{model.id} is being installed right now; remove it when that is done", code="install_in_progress"
        )
    try:
        existed = await installer.ollama.delete(model.id)
    except OllamaError as exc:
        raise UpstreamUnavailable(
            f"Ollama could not remove {model.id}: {exc.message}", code="ollama_unavailable"
        ) from None
    await installer.removed(model, "removed by the operator", by_operator=True)
    return web.json_response({"model": model.id, "removed": existed})
