"""install: pulls owned models into Ollama, and is the one owner of every model's install state.

HTTP    POST   /api/models/install {"model"}  -> 202 {"install_id"}: the owner (re)installs, or the operator
        DELETE /api/models/{model}   (operator) -> 200 {"model", "removed"}: out of Ollama, ownership stays
Events  consumes purchase.completed, install.requested; listens install.progressed (the live percentage)
        emits    install.requested, install.started, install.progressed (live), install.completed,
                 install.failed, install.removed
Query   installs.states {} -> {"installs": {model: state}} (from the installs table, written with each event)
Asks    purchases.owns {"user_id", "model"} (purchase owns ownership) before a visitor's install request
Query   installs.nodes {} -> {"nodes": {model: {node: state}}} (a fleet: each model's install on each node)
The stored install states are reconciled with every node's `/api/tags` at start-up and then every
STUDIO_OLLAMA_CHECK_S; a node lacking an installed model gets it, a node down is alerted (installer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import msgspec
from aiohttp import web

from events.bus import BusUnavailable
from events.catalog import InstallProgressed, InstallRequested, OperatorInstallRequested, PurchaseCompleted
from events.delivery import Delivery, Reject
from events.ids import new_install_id
from functions.install.installer import Installer
from functions.install.store import InstallStore
from studio import catalog
from studio.clients.ollama import OllamaClient, OllamaError
from studio.runtime.errors import Conflict, Forbidden, NotFound, UpstreamUnavailable
from studio.runtime.function import Function, Key
from studio.runtime.host import instance_id
from studio.runtime.identity import identity, require_admin, require_visitor
from studio.runtime.routes import KIB

function = Function(
    "install",
    migrations=Path(__file__).parent / "migrations",
    publishes=(
        "install.requested",
        "install.started",
        "install.progressed",
        "install.completed",
        "install.failed",
        "install.removed",
        "operator.install_requested",
    ),
    asks=("purchases.owns",),
)

STORE = Key[InstallStore]("installs")
INSTALLER = Key[Installer]("installer")


@function.resource
async def dependencies(fn: Function) -> AsyncIterator[None]:
    s = fn.settings
    nodes = {url: OllamaClient(url, request_timeout=15) for url in s.ollama_nodes}
    fn[STORE] = store = InstallStore(fn.db)
    fn[INSTALLER] = installer = Installer(
        fn, store, nodes, catalog.cached(s.catalog_path), instance_id(), copies=s.ollama_copies
    )
    reconciling = asyncio.create_task(installer.keep_reconciling(s.ollama_check_s))
    yield
    reconciling.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reconciling
    for client in nodes.values():
        await client.close()


def find_model(model_id: str) -> catalog.CatalogModel:
    model = catalog.cached(function.settings.catalog_path).get(model_id)
    if model is None:
        raise NotFound(f"{model_id!r} is not in the catalog", code="unknown_model")
    return model


@function.answer("installs.states")
async def install_states(query: dict[str, Any]) -> dict[str, Any]:
    return {"installs": await function[STORE].views()}


@function.answer("installs.nodes")
async def install_nodes(query: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, dict[str, str]] = {}
    for (model, node), row in sorted((await function[STORE].nodes()).items()):
        out.setdefault(model, {})[node] = row.state
    return {"nodes": out}


@function.listen(InstallProgressed)
async def follow_progress(event: InstallProgressed) -> None:
    function[STORE].progressed(event)


# Many at once: most requests are no-ops (the model is installed or pulling); pulls are limited apart.
@function.subscribe(PurchaseCompleted, InstallRequested, max_concurrency=64, max_attempts=8, ack_wait=15)
async def install_model(event: PurchaseCompleted | InstallRequested, delivery: Delivery) -> None:
    model = catalog.cached(function.settings.catalog_path).get(event.model)
    if model is None:
        raise Reject(f"{event.model!r} is not in the catalog")
    await function[INSTALLER].install(model, event.install_id, delivery)


class InstallRequest(msgspec.Struct):
    model: Annotated[str, msgspec.Meta(min_length=1, description='the catalog id of a model, e.g. "llama3.2:3b"')]


class InstallAccepted(msgspec.Struct):
    install_id: str
    model: str
    status: str


class Removed(msgspec.Struct):
    model: str
    removed: bool


@function.route(
    "POST",
    "/api/models/install",
    summary="(Re)install an owned model (the operator: any model)",
    body=InstallRequest,
    response=InstallAccepted,
    status=202,
    errors=(401, 403, 404, 409),
    max_body=4 * KIB,
    needs_session=True,
)
async def request_install(request: web.Request, body: InstallRequest) -> web.Response:
    who = identity(request)
    user_id = who.user_id if who.admin else require_visitor(request)
    model = find_model(body.model)
    owner = bool(user_id) and await owns(user_id or "", model.id)
    if not (owner or who.admin):
        raise Forbidden(f"you don't own {model.id}: buy it in the marketplace first", code="not_owner")
    store = function[STORE]
    async with function.db.transaction() as tx:
        current = await store.get(tx, model.id)
        if current is not None and current.state == "installed":
            raise Conflict(f"{model.id} is already installed", code="already_installed")
        if current is not None and current.in_progress:
            return web.json_response(
                {"install_id": current.install_id, "model": model.id, "status": current.state}, status=202
            )
        data = InstallRequested(
            install_id=new_install_id(),
            model=model.id,
            requested_by=user_id if owner and user_id else "operator",
            reason="retry" if owner else "operator",
        )
        await store.queue(tx, model.id, data.install_id)
        await tx.publish(function.event(data))
        if who.admin and not owner:  # every operator action is an event saying who did it
            operator = who.account_id or "admin token"
            await tx.publish(
                function.event(OperatorInstallRequested(operator=operator, model=model.id, install_id=data.install_id))
            )
    return web.json_response({"install_id": data.install_id, "model": model.id, "status": "queued"}, status=202)


async def owns(user_id: str, model: str) -> bool:
    """Ownership is purchase's: ask it."""
    try:
        answer = await function.bus.query("purchases.owns", {"user_id": user_id, "model": model}, timeout=3.0)
    except BusUnavailable:
        raise UpstreamUnavailable(
            "cannot check what you own right now; try again in a moment",
            code="ownership_unavailable",
            headers={"Retry-After": "3"},
        ) from None
    return bool(answer["owns"])


@function.route(
    "DELETE",
    "/api/models/{model}",
    summary="Remove a model from Ollama",
    response=Removed,
    errors=(404, 409, 503),
    timeout=60,
    operator=True,
)
async def remove_model(request: web.Request) -> web.Response:
    require_admin(request)
    model = find_model(request.match_info["model"])
    current = await function[STORE].get(function.db, model.id)
    if current is not None and current.in_progress:  # the stored state changes with its event: no gap
        raise Conflict(
            f"{model.id} is being installed right now; remove it when that is done", code="install_in_progress"
        )
    try:
        existed = await function[INSTALLER].remove(model)
    except OllamaError as exc:
        raise UpstreamUnavailable(
            f"Ollama could not remove {model.id}: {exc.message}", code="ollama_unavailable"
        ) from None
    return web.json_response({"model": model.id, "removed": existed})
