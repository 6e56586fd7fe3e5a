"""Whether the catalog tells the truth about a model: its capabilities, context length and quantization,
compared with what Ollama's `/api/show` reports once the model is installed. A mismatch is logged (the
operator corrects the catalog); nothing else changes, since the catalog is what visitors were sold."""

from __future__ import annotations

import logging

from studio.catalog import CAPABILITIES, Catalog, CatalogModel
from studio.clients.ollama import ModelFacts, OllamaClient, OllamaError

log = logging.getLogger("studio.functions.install")


def differences(model: CatalogModel, facts: ModelFacts) -> list[str]:
    """What the catalog says that Ollama does not (only what the catalog states is compared)."""
    out = []
    shown = tuple(c for c in facts.capabilities if c in CAPABILITIES)
    if set(shown) != set(model.capabilities):
        out.append(
            f"capabilities {', '.join(model.capabilities)} in the catalog, {', '.join(shown) or 'none'} in Ollama"
        )
    if model.context_length is not None and facts.context_length not in (None, model.context_length):
        out.append(f"context length {model.context_length} in the catalog, {facts.context_length} in Ollama")
    if model.quantization and facts.quantization and facts.quantization.lower() != model.quantization.lower():
        out.append(f"quantization {model.quantization} in the catalog, {facts.quantization} in Ollama")
    return out


async def check_catalog(ollama: OllamaClient, catalog: Catalog, installed: set[str]) -> dict[str, list[str]]:
    """Compare every installed catalog model with Ollama; log each one that differs. {model: differences}."""
    found: dict[str, list[str]] = {}
    for model in catalog:
        if model.id not in installed:
            continue
        try:
            facts = await ollama.show(model.id)
        except OllamaError as exc:
            log.warning("cannot check %s against Ollama: %s", model.id, exc.message, extra={"model": model.id})
            continue
        diffs = differences(model, facts)
        if diffs:
            found[model.id] = diffs
            log.warning(
                "the catalog and Ollama disagree about %s: %s; correct the catalog entry",
                model.id,
                "; ".join(diffs),
                extra={"model": model.id, "catalog_mismatch": diffs},
            )
    return found
