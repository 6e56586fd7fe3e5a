"""The monitor's observations as Prometheus metric families (text format via prometheus-client)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from functions.monitor.observations import FIRST_TOKEN_BUCKETS
from studio.runtime.metrics import BUCKETS

if TYPE_CHECKING:
    from functions.monitor.consumers import ConsumerWatch
    from functions.monitor.observations import ChatUsage, EventCounts, FunctionReports
    from functions.monitor.scale import ScaleSignals


class StudioCollector(Collector):
    def __init__(
        self,
        counts: EventCounts,
        reports: FunctionReports,
        heartbeat_s: float,
        chat: ChatUsage | None = None,
        consumers: ConsumerWatch | None = None,
        scale: ScaleSignals | None = None,
    ) -> None:
        self.scale = scale
        self.counts = counts
        self.reports = reports
        self.heartbeat_s = heartbeat_s
        self.chat = chat
        self.consumers = consumers

    def collect(self) -> Iterator[Metric]:
        now_wall, now = time.time(), time.monotonic()
        events = CounterMetricFamily("studio_events", "Events seen on the bus, by type.", labels=["type"])
        rate = GaugeMetricFamily(
            "studio_event_rate_per_second", "Events per second, by type and window.", labels=["type", "window"]
        )
        for event_type, total in sorted(self.counts.totals.items()):
            events.add_metric([event_type], total)
            rate.add_metric([event_type, "1m"], self.counts.rate(event_type, 60, now_wall))
            rate.add_metric([event_type, "5m"], self.counts.rate(event_type, 300, now_wall))
        yield events
        yield rate

        up = GaugeMetricFamily(
            "studio_function_up", "1 if the instance sent a heartbeat recently.", labels=["function", "instance"]
        )
        uptime = GaugeMetricFamily(
            "studio_function_uptime_seconds", "Instance uptime.", labels=["function", "instance"]
        )
        inflight = GaugeMetricFamily(
            "studio_function_inflight",
            "HTTP requests (chat answers among them) an instance is handling; a drained server's go to 0.",
            labels=["function", "instance"],
        )
        requests = CounterMetricFamily(
            "studio_http_requests",
            "HTTP requests handled by functions.",
            labels=["function", "instance", "method", "route", "status"],
        )
        latency = HistogramMetricFamily(
            "studio_http_request_duration_seconds",
            "Time functions took to handle HTTP requests.",
            labels=["function", "instance", "method", "route"],
        )
        bounds = [str(b) for b in BUCKETS] + ["+Inf"]
        for rep in self.reports.current(now):
            fi = [rep.function, rep.instance]
            up.add_metric(fi, 1.0 if now - rep.seen_at <= 3 * self.heartbeat_s else 0.0)
            uptime.add_metric(fi, rep.uptime_s)
            inflight.add_metric(fi, rep.inflight)
            for r in rep.http.get("requests", []):
                requests.add_metric([*fi, r["method"], r["route"], str(r["status"])], r["count"])
            for h in rep.http.get("latency", []):
                cumulative, running = [], 0
                for bound, count in zip(bounds, h["buckets"], strict=False):
                    running += count
                    cumulative.append((bound, running))
                latency.add_metric([*fi, h["method"], h["route"]], cumulative, h["sum"])
        yield up
        yield uptime
        yield inflight
        yield requests
        yield latency
        if self.chat is not None:
            yield from chat_metrics(self.chat)
        if self.consumers is not None:
            yield from consumer_metrics(self.consumers)
        if self.scale is not None:
            yield from scale_metrics(self.scale, now)


def consumer_metrics(watch: ConsumerWatch) -> Iterator[Metric]:
    families = {
        "pending": GaugeMetricFamily(
            "studio_events_consumer_pending", "Events stored but not yet delivered, by consumer.", labels=["consumer"]
        ),
        "ack_pending": GaugeMetricFamily(
            "studio_events_consumer_ack_pending",
            "Events delivered but not yet acknowledged, by consumer.",
            labels=["consumer"],
        ),
        "redelivered": GaugeMetricFamily(
            "studio_events_consumer_redelivered",
            "Events delivered more than once and not yet acknowledged, by consumer.",
            labels=["consumer"],
        ),
        "oldest_pending_s": GaugeMetricFamily(
            "studio_events_consumer_oldest_pending_seconds",
            "Age of the oldest event the consumer has not acknowledged (0 when caught up): its lag.",
            labels=["consumer"],
        ),
        "last_active_s": GaugeMetricFamily(
            "studio_events_consumer_last_active_seconds",
            "Seconds since the consumer last fetched or acknowledged an event.",
            labels=["consumer"],
        ),
    }
    behind = GaugeMetricFamily(
        "studio_events_consumer_behind",
        "1 while the consumer is more than STUDIO_EVENTS_LAG_ALERT_S behind (alert raised).",
        labels=["consumer"],
    )
    for lag in watch.lags:
        for attr, family in families.items():
            value = getattr(lag, attr)
            if value is not None:
                family.add_metric([lag.consumer], value)
        behind.add_metric([lag.consumer], 1.0 if lag.consumer in watch.behind_since else 0.0)
    yield from families.values()
    yield behind


def chat_metrics(usage: ChatUsage) -> Iterator[Metric]:
    answers = CounterMetricFamily(
        "studio_chat_answers",
        "Chat answers by model and how they ended (completed, failed, cancelled).",
        labels=["model", "outcome"],
    )
    for (model, outcome), n in sorted(usage.answers.items()):
        answers.add_metric([model, outcome], n)
    tokens = CounterMetricFamily(
        "studio_chat_tokens",
        "Tokens read (prompt) and generated (completion) by model; thinking: the part of completion a thinking "
        "model spent reasoning.",
        labels=["model", "kind"],
    )
    for (model, kind), n in sorted(usage.tokens.items()):
        tokens.add_metric([model, kind], n)
    first = HistogramMetricFamily(
        "studio_chat_time_to_first_token_seconds",
        "Time from a chat request to its first token, by model.",
        labels=["model"],
    )
    bounds = [str(b) for b in FIRST_TOKEN_BUCKETS] + ["+Inf"]
    for model, hist in sorted(usage.first_token.items()):
        cumulative, running = [], 0.0
        for bound, count in zip(bounds, hist[:-1], strict=True):
            running += count
            cumulative.append((bound, running))
        first.add_metric([model], cumulative, hist[-1])
    fallback = CounterMetricFamily(
        "studio_chat_fallback_answers",
        "Chat answers given by a model's cloud fallback (every Ollama node was saturated), by model.",
        labels=["model"],
    )
    for model, n in sorted(usage.fallbacks.items()):
        fallback.add_metric([model], n)
    nodes = CounterMetricFamily(
        "studio_chat_node_answers", "Chat answers by the Ollama node that gave them.", labels=["node"]
    )
    for node, n in sorted(usage.nodes.items()):
        nodes.add_metric([node], n)
    by_api = CounterMetricFamily(
        "studio_chat_api_answers",
        "Chat answers by the API dialect asked (chat, responses, messages, completions, embeddings) and outcome.",
        labels=["api", "outcome"],
    )
    for (api, outcome), n in sorted(usage.apis.items()):
        by_api.add_metric([api, outcome], n)
    api_tokens = CounterMetricFamily(
        "studio_chat_api_tokens",
        "Tokens read (prompt) and generated (completion) by API dialect.",
        labels=["api", "kind"],
    )
    for (api, kind), n in sorted(usage.api_tokens.items()):
        api_tokens.add_metric([api, kind], n)
    yield answers
    yield tokens
    yield by_api
    yield api_tokens
    yield first
    yield fallback
    yield nodes


def scale_metrics(scale: ScaleSignals, now: float) -> Iterator[Metric]:
    """The "when to scale" signals (functions/monitor/scale.py) and their thresholds."""
    visitors = GaugeMetricFamily("studio_scale_visitors", "Concurrent visitors (seen in the last 5 min), all servers.")
    visitors.add_metric([], scale.visitors(now))
    chat = GaugeMetricFamily("studio_scale_chat_requests_per_second", "Chat requests a second, all servers.")
    chat.add_metric([], scale.chat_per_s(now))
    queue = GaugeMetricFamily(
        "studio_ollama_queue_depth", "Answers open on each Ollama node (waiting or being written).", labels=["node"]
    )
    for node, n in sorted(scale.queue_depth(now).items()):
        queue.add_metric([node], n)
    cpu = GaugeMetricFamily("studio_server_cpu_percent", "CPU busy on each server (recent mean).", labels=["server"])
    for server, pct in sorted(scale.cpu_percent(now).items()):
        cpu.add_metric([server], pct)
    t = scale.thresholds
    threshold = GaugeMetricFamily("studio_scale_threshold", "The STUDIO_SCALE_* thresholds.", labels=["signal"])
    for signal, value in (
        ("visitors", t.visitors),
        ("chat_requests_per_s", t.chat_per_s),
        ("ollama_queue", t.queue_depth),
        ("cpu_percent", t.cpu_percent),
    ):
        threshold.add_metric([signal], value)
    over = GaugeMetricFamily(
        "studio_scale_over_threshold", "1 while a signal is over its threshold.", labels=["signal", "key"]
    )
    for signal, key in sorted(scale.over):
        over.add_metric([signal, key], 1)
    yield from (visitors, chat, queue, cpu, threshold, over)
