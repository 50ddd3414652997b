"""What the server did, for Prometheus (`GET /metrics`), through prometheus_client.

Every metric has one label set. `model` is the served name a client asked for; `upstream` the
alias of a model its configuration called. Besides these, each strategy's `reports` (an
escalation, a switch, a route, a router's decision time) get a counter (or, for durations, a
histogram) of their own, declared with the strategy.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from tradeoff.config import Report
from tradeoff.strategies import STRATEGIES

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# What a strategy times of its own work (a router's decision): from tens of microseconds (hashed
# words) to tens of milliseconds (a sentence embedding on the CPU).
STEP_BUCKETS = (1e-4, 2.5e-4, 5e-4, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServerMetrics:
    def __init__(self) -> None:
        disable_created_metrics()  # no `_created` series beside each counter: noise for a scraper
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tradeoff_requests", "HTTP requests answered, by endpoint and status",
            ["endpoint", "code"], registry=r,
        )  # fmt: skip
        self.served = Counter(
            "tradeoff_served", "requests answered by a model (records due)", ["model"], registry=r
        )
        self.rejected = Counter(
            "tradeoff_rejected", "requests refused before any model ran, by status", ["reason"],
            registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "tradeoff_upstream_errors", "served requests whose model call failed", ["model"],
            registry=r,
        )  # fmt: skip
        self.disconnects = Counter(
            "tradeoff_client_disconnects",
            "served requests whose client went away before the answer (generation cancelled)",
            ["model"], registry=r,
        )  # fmt: skip
        self.in_flight = Gauge("tradeoff_in_flight", "requests being answered now", registry=r)
        self.latency = Histogram(
            "tradeoff_request_duration_seconds", "time from request to the last byte of the answer",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "tradeoff_time_to_first_token_seconds",
            "time from request to the first generated token (a reasoning model's thinking too)",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            "tradeoff_tokens", "tokens by served model, upstream model and kind (input, output)",
            ["model", "upstream", "kind"], registry=r,
        )  # fmt: skip
        self.energy = Counter(
            "tradeoff_energy_joules", "measured energy of served requests (J)", ["model"],
            registry=r,
        )  # fmt: skip
        self.energy_missing = Counter(
            "tradeoff_energy_missing", "served requests whose energy was not measured", ["model"],
            registry=r,
        )  # fmt: skip
        self.stored = Counter(
            "tradeoff_records_stored", "records written to the run store", registry=r
        )
        self.store_errors = Counter(
            "tradeoff_store_errors", "records the run store failed to write", registry=r
        )
        self.reports: list[tuple[Report, Counter | Histogram]] = []
        for strategy in STRATEGIES.values():
            for report in strategy.params.reports:
                labels = ["model", report.label] if report.kind == "label" else ["model"]
                name = report.metric.removesuffix("_total")
                metric: Counter | Histogram = (
                    Histogram(name, report.help, labels, buckets=STEP_BUCKETS, registry=r)
                    if report.kind == "seconds"
                    else Counter(name, report.help, labels, registry=r)
                )
                self.reports.append((report, metric))

    def observe_reports(self, model: str, extra: dict[str, object]) -> None:
        """Count what the outcome's strategy reports (escalated, switches, routed_to), and
        observe the durations it reports (decision_s)."""
        for report, metric in self.reports:
            if report.key not in extra:
                continue
            value = extra[report.key]
            if isinstance(metric, Histogram):
                if isinstance(value, (int, float)):
                    metric.labels(model=model).observe(value)
            elif report.kind == "flag":
                if value:
                    metric.labels(model=model).inc()
            elif report.kind == "count":
                if isinstance(value, (int, float)):
                    metric.labels(model=model).inc(value)
            else:
                metric.labels(model, str(value)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def total(self, counter: Counter) -> float:
        """The sum of a counter over its label sets."""
        return sum(
            s.value
            for metric in counter.collect()
            for s in metric.samples
            if s.name.endswith("_total")
        )
