"""The monitor: every event counted, function HTTP metrics from heartbeats, a recent-events log."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from functions import load
from studio.runtime.settings import Secret
from tests.sample.handler import function as sample
from tests.support import eventually

OPERATOR = {"Authorization": "Bearer op"}


async def start(embedded_studio, settings):
    return await embedded_studio(
        [load("monitor"), sample], settings_override=settings.replace(admin_token=Secret("op"))
    )


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(client) -> dict:
    resp = await client.get("/metrics", headers=OPERATOR)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    return samples(await resp.text())


async def test_metrics_count_events_and_every_functions_requests(embedded_studio, settings) -> None:
    client = await start(embedded_studio, settings)
    for n in range(3):
        assert (await client.post("/api/sample/notes", json={"n": n})).status == 201
    assert (await client.get("/api/sample/hello")).status == 200

    def notes_requests(metrics):
        return [
            v
            for (name, labels), v in metrics.items()
            if name == "studio_http_requests_total"
            and ("function", "sample") in labels
            and ("route", "/api/sample/notes") in labels
            and ("status", "201") in labels
        ]

    def counted(metrics):  # requests arrive with the next heartbeat
        return metrics.get(("studio_events_total", (("type", "sample.recorded"),))) == 3 and notes_requests(metrics)

    metrics = await eventually(lambda: _scrape_if(client, counted), message="events and requests counted")
    assert notes_requests(metrics) == [3.0]
    assert any(name == "studio_http_request_duration_seconds_bucket" for name, _ in metrics)
    assert any(
        name == "studio_function_up" and ("function", "monitor") in labels and v == 1.0
        for (name, labels), v in metrics.items()
    )


async def _scrape_if(client, predicate):
    metrics = await scrape(client)
    return metrics if predicate(metrics) else None


async def test_recent_events_log_and_stats_for_operators(embedded_studio, settings) -> None:
    client = await start(embedded_studio, settings)
    await client.post("/api/sample/notes", json={"n": 9}, headers={"X-Request-Id": "trace-9"})

    async def recent():
        resp = await client.get("/api/monitor/events?type=sample.&limit=10", headers=OPERATOR)
        return (await resp.json())["events"]

    events = await eventually(recent, message="the event in the recent log")
    assert events[-1]["type"] == "sample.recorded" and events[-1]["correlationid"] == "trace-9"
    stats = await (await client.get("/api/monitor/stats", headers=OPERATOR)).json()
    assert stats["events"]["sample.recorded"]["total"] == 1
    assert stats["events"]["sample.recorded"]["per_s_1m"] > 0


async def test_monitor_routes_are_for_operators_only(embedded_studio, settings) -> None:
    client = await start(embedded_studio, settings)
    assert (await client.get("/api/monitor/events")).status == 401
    assert (await client.get("/metrics")).status == 401
    bad = await client.get("/api/monitor/events?limit=5000", headers=OPERATOR)
    assert bad.status == 400 and (await bad.json())["error"]["code"] == "invalid_limit"


def test_a_node_down_is_alerted_per_node_with_what_to_do_and_its_return_resolves_only_it() -> None:
    from events.catalog import ResourceExhausted, ResourceRecovered
    from functions.monitor.alerts import ShortageAlerts

    alerts = ShortageAlerts(repeat_s=900)
    a, b = "http://a:11434", "http://b:11434"
    down_a = alerts.text(ResourceExhausted(kind="ollama_node_down", message="a is down", instance=a), "s", 0.0)
    down_b = alerts.text(ResourceExhausted(kind="ollama_node_down", message="b is down", instance=b), "s", 1.0)
    again_a = alerts.text(ResourceExhausted(kind="ollama_node_down", message="a is down", instance=a), "s", 2.0)

    assert down_a is not None and a in down_a and "start Ollama there" in down_a and "STUDIO_OLLAMA_URLS" in down_a
    assert down_b is not None and b in down_b  # another node: its own alert
    assert again_a is None  # the same node within the repeat interval: once
    back = alerts.text(ResourceRecovered(kind="ollama_node_down", message="a answers again", instance=a), "s", 3.0)
    assert back is not None and "Resolved" in back
    assert alerts.text(ResourceRecovered(kind="ollama_node_down", message="b", instance=b), "s", 4.0) is not None
