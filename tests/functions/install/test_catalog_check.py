"""Once a model is installed, the catalog's word about it is checked against Ollama's `/api/show`."""

from __future__ import annotations

import logging

from functions.install.capabilities import check_catalog
from studio import catalog
from studio.clients.ollama import OllamaClient
from tests.doubles.ollama import OllamaDouble, default_registry
from tests.functions.pipeline import start_studio
from tests.support import eventually


async def test_the_catalog_agrees_with_ollama_about_every_model_the_stand_in_knows() -> None:
    shipped = catalog.load()
    known = [m.id for m in shipped if m.id in default_registry()]
    assert {"llava:7b", "deepseek-r1:7b", "nomic-embed-text:latest", "llama3.2:3b"} <= set(known)
    async with OllamaDouble(installed=known) as double:
        ollama = OllamaClient(double.url)
        try:
            facts = await ollama.show("llava:7b")
            assert facts.capabilities == ("completion", "vision") and facts.context_length == 32768
            assert facts.quantization == "Q4_0"
            assert await check_catalog(ollama, shipped, set(known)) == {}
        finally:
            await ollama.close()


async def test_a_mismatch_is_logged_at_start_up(embedded_studio, settings, ollama, stripe_api, bus, caplog) -> None:
    ollama.add_model(
        "mistral:7b", ollama.registry_model("mistral:7b"), quantization_level="Q8_0", capabilities=("completion",)
    )
    ollama.preinstall("mistral:7b", "llava:7b")
    with caplog.at_level(logging.WARNING, logger="studio.functions.install"):
        studio = await start_studio(embedded_studio, settings, ollama, stripe_api, bus, skip_payment=True)
        record = await eventually(
            lambda: next((r for r in caplog.records if getattr(r, "catalog_mismatch", None)), None),
            message="the mismatch logged",
        )
    assert record.model == "mistral:7b"
    assert record.catalog_mismatch == [
        "capabilities completion, tools in the catalog, completion in Ollama",
        "quantization Q4_K_M in the catalog, Q8_0 in Ollama",
    ]
    assert not [
        r for r in caplog.records if getattr(r, "model", None) == "llava:7b" and getattr(r, "catalog_mismatch", None)
    ]
    listed = await studio.model("llava:7b")  # GET /api/models says what each model can do
    assert (listed["capabilities"], listed["context_length"], listed["quantization"]) == (
        ["completion", "vision"],
        32768,
        "Q4_0",
    )
