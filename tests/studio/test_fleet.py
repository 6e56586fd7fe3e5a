"""What a fleet of Ollama nodes is configured from, and the order its nodes are asked in (from what the
background refresh learnt: no request is made to choose)."""

from __future__ import annotations

import pytest

from studio.clients.fleet import Fleet
from studio.runtime.settings import Settings, SettingsError

A, B, C = "http://a:11434", "http://b:11434", "http://c:11434"
MODEL = "llama3.2:3b"


def test_one_url_is_a_fleet_of_one_and_urls_name_every_node() -> None:
    assert Settings.from_env({"STUDIO_OLLAMA_URL": A + "/"}).ollama_nodes == (A,)
    both = Settings.from_env({"STUDIO_OLLAMA_URL": C, "STUDIO_OLLAMA_URLS": f"{A}, {B}/"})
    assert both.ollama_nodes == (A, B) and both.ollama_copies == 0 and both.ollama_queue_max == 10
    with pytest.raises(SettingsError, match="STUDIO_OLLAMA_URLS"):
        Settings.from_env({"STUDIO_OLLAMA_URLS": f"{A},{A}"})
    with pytest.raises(SettingsError, match="STUDIO_OLLAMA_URLS"):
        Settings.from_env({"STUDIO_OLLAMA_URLS": "a:11434"})


def fleet(**nodes: dict) -> Fleet:
    f = Fleet([A, B, C])
    for node, facts in zip(f.nodes, nodes.values(), strict=True):
        for name, value in facts.items():
            setattr(node, name, value)
    return f


def urls(f: Fleet, queue_max: int | None = None) -> list[str]:
    return [n.url for n in f.candidates(MODEL, queue_max)]


def test_nodes_with_the_model_come_first_those_holding_it_in_memory_then_the_least_busy() -> None:
    has = frozenset({MODEL})
    f = fleet(a={"models": has, "in_flight": 3}, b={"models": has, "loaded": has, "in_flight": 5}, c={})
    assert urls(f) == [B, A, C]  # b holds it in memory; c may have it since the last refresh: last
    f.nodes[0].loaded = has
    assert urls(f) == [A, B, C]  # both in memory: the fewest answers in flight
    f.nodes[1].loaded = frozenset()
    assert urls(f) == [A, B, C]  # only a holds it in memory: a, though b is idle...
    f.nodes[1].in_flight = 0
    assert urls(f) == [A, B, C]
    assert urls(f, queue_max=3) == [B, A, C]  # ...unless a is full
    f.mark_down(f.nodes[1], "connection refused")
    assert urls(f) == [A, C, B]  # down: asked last (it may be back before the next refresh)


def test_saturated_only_when_every_node_with_the_model_is_full() -> None:
    has = frozenset({MODEL})
    f = fleet(a={"models": has, "in_flight": 2}, b={"models": has, "in_flight": 1}, c={"in_flight": 0})
    assert not f.saturated(MODEL, 2)  # b has room; c does not have the model
    f.nodes[1].in_flight = 2
    assert f.saturated(MODEL, 2)
    f.mark_down(f.nodes[0], "refused")
    f.mark_down(f.nodes[1], "refused")
    assert not f.saturated(MODEL, 2)  # no node has it up: not saturated, the request goes to c (or fails)
