"""The operator's catalog changes: validated, stored (table catalog_changes) and published together as
`operator.catalog_changed`, which every process lays over the STUDIO_CATALOG seed (studio.runtime.host),
so every replica sells the same models at the same prices without a restart."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Any

import aiohttp

from events.catalog import OperatorCatalogChanged
from studio import catalog
from studio.catalog import CatalogError, CatalogModel
from studio.runtime.database import Database, utcnow
from studio.runtime.errors import BadRequest, Conflict, NotFound
from studio.runtime.function import Function

EDITABLE = {"price_cents", "featured", "description"}
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
log = logging.getLogger("studio.functions.purchase")


def entry(model: CatalogModel) -> dict[str, Any]:
    """The entry as the catalog file has it (JSON: tuples become lists; what is not stated is left out)."""
    unstated = {k for k in ("context_length", "quantization") if not getattr(model, k)}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(model).items() if k not in unstated}


async def stored(db: Database) -> list[dict[str, Any]]:
    rows = await db.fetch_all("SELECT model, entry FROM catalog_changes ORDER BY changed_at")
    return [{"model": r["model"], "entry": json.loads(r["entry"]) if r["entry"] else None} for r in rows]


def validated(raw: dict[str, Any], where: str) -> CatalogModel:
    try:
        return catalog.entry_of(raw, where)
    except CatalogError as exc:
        raise BadRequest(str(exc), code="invalid_catalog_entry") from None


async def change(fn: Function, operator: str, model_id: str, fields: dict[str, Any]) -> CatalogModel:
    """Change a model's price, featured flag or description."""
    unknown = set(fields) - EDITABLE
    if unknown or not fields:
        raise BadRequest(
            f"send one or more of {', '.join(sorted(EDITABLE))}"
            + (f"; not {', '.join(sorted(unknown))}" if unknown else ""),
            code="invalid_catalog_change",
        )
    current = catalog.cached(fn.settings.catalog_path).get(model_id)
    if current is None:
        raise NotFound(f"{model_id!r} is not in the catalog", code="unknown_model")
    model = validated({**entry(current), **fields}, f"change to {current.id}")
    await _record(fn, operator, model.id, "updated", entry(model))
    return model


async def add(fn: Function, operator: str, raw: Any) -> CatalogModel:
    if not isinstance(raw, dict):
        raise BadRequest("send the model's catalog entry as a JSON object", code="invalid_catalog_entry")
    model = validated(raw, "new model")
    if model.id in catalog.cached(fn.settings.catalog_path):
        raise Conflict(f"{model.id} is in the catalog already; change it instead", code="already_in_catalog")
    if await in_library(fn.settings.ollama_library_url, model.id) is False:
        raise BadRequest(
            f"{model.id} is not in Ollama's library (check the name and tag at ollama.com/library)",
            code="not_in_library",
        )
    await _record(fn, operator, model.id, "added", entry(model))
    return model


async def remove(fn: Function, operator: str, model_id: str) -> str:
    current = catalog.cached(fn.settings.catalog_path).get(model_id)
    if current is None:
        raise NotFound(f"{model_id!r} is not in the catalog", code="unknown_model")
    await _record(fn, operator, current.id, "removed", None)
    return current.id


async def _record(fn: Function, operator: str, model_id: str, kind: str, new: dict[str, Any] | None) -> None:
    async with fn.db.transaction() as tx:
        await tx.execute(
            "INSERT INTO catalog_changes (model, entry, changed_at, changed_by) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (model) DO UPDATE SET entry = excluded.entry, changed_at = excluded.changed_at, "
            "changed_by = excluded.changed_by",
            (model_id, json.dumps(new) if new is not None else None, utcnow(), operator),
        )
        await tx.publish(fn.event(OperatorCatalogChanged(operator=operator, model=model_id, change=kind, entry=new)))
    catalog.cached(fn.settings.catalog_path).apply(model_id, new)  # this process at once; others by the event


async def in_library(base: str, model_id: str) -> bool | None:
    """Whether Ollama's library has `model_id` (name:tag); None when the library cannot be asked."""
    if not base:
        return None
    name, _, tag = model_id.partition(":")
    path = name if "/" in name else f"library/{name}"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.head(f"{base}/v2/{path}/manifests/{tag}", headers={"Accept": MANIFEST}) as resp,
        ):
            if resp.status == 200:
                return True
            if resp.status == 404:
                return False
            log.warning("Ollama's library answered %s: model added unchecked", resp.status, extra={"model": model_id})
    except (TimeoutError, aiohttp.ClientError) as exc:
        log.warning("Ollama's library cannot be reached: model added unchecked", extra={"error": repr(exc)})
    return None
