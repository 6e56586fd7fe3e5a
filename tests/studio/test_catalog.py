"""The catalog: every shipped entry states what its model can do; a bad entry stops start-up naming the field."""

from __future__ import annotations

import json

import pytest

from studio import catalog
from studio.catalog import CAPABILITIES, CatalogError

ENTRY = {
    "id": "x:1b",
    "name": "X",
    "family": "llama",
    "parameter_size": "1B",
    "description": "d",
    "download_bytes": 1,
    "ram_bytes": 1,
    "license": "MIT",
    "price_cents": 0,
    "currency": "usd",
}


def one(**fields) -> str:
    return json.dumps({"models": [{**ENTRY, **fields}]})


def test_every_shipped_model_states_its_capabilities_context_and_quantization() -> None:
    shipped = catalog.load()
    for m in shipped:
        assert m.capabilities and set(m.capabilities) <= set(CAPABILITIES), m.id
        assert m.context_length and m.context_length >= 2048, m.id
        assert m.quantization, m.id
    llava, r1, llama = shipped.get("llava:7b"), shipped.get("deepseek-r1:7b"), shipped.get("llama3.2:3b")
    assert llava and llava.can("vision") and r1 and r1.can("thinking") and llama and llama.can("tools")
    embed = shipped.get("nomic-embed-text:latest")
    assert embed is not None
    assert embed.free and embed.capabilities == ("embedding",) and not embed.chat
    listed = embed.to_dict()
    assert (
        listed["capabilities"] == ["embedding"] and listed["context_length"] == 2048 and listed["quantization"] == "F16"
    )


def test_the_abilities_are_optional_for_an_operators_own_catalog() -> None:
    (m,) = catalog.parse(one()).models
    assert m.capabilities == ("completion",) and m.context_length is None and m.quantization == "" and m.chat


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"capabilities": []}, "capabilities"),
        ({"capabilities": ["completion", "telepathy"]}, "capabilities"),
        ({"capabilities": ["tools", "tools"]}, "capabilities"),
        ({"capabilities": "vision"}, "capabilities"),
        ({"context_length": 0}, "context_length"),
        ({"context_length": "4k"}, "context_length"),
        ({"context_length": True}, "context_length"),
        ({"quantization": ""}, "quantization"),
        ({"quantization": "Q4 K M"}, "quantization"),
        ({"quantization": 4}, "quantization"),
    ],
)
def test_a_bad_ability_names_the_entry_and_the_field(fields, named) -> None:
    with pytest.raises(CatalogError, match=rf"entry 1 \(x:1b\): field '{named}'"):
        catalog.parse(one(**fields))


def test_a_cloud_fallback_is_named_per_model_and_checked() -> None:
    (m,) = catalog.parse(one(fallback={"base_url": "https://api.example.com/v1/", "model": "gpt-4o-mini"})).models
    assert m.fallback == catalog.Fallback("https://api.example.com/v1", "gpt-4o-mini")
    assert m.to_dict()["fallback"] == {"base_url": "https://api.example.com/v1", "model": "gpt-4o-mini"}
    assert "fallback" not in catalog.parse(one()).models[0].to_dict()  # off unless an entry says so
    for bad in ({"base_url": "api.example.com", "model": "m"}, {"base_url": "https://x/v1"}, "https://x/v1"):
        with pytest.raises(CatalogError, match=r"entry 1 \(x:1b\): field 'fallback"):
            catalog.parse(one(fallback=bad))
