"""Prometheus text exposition (format 0.0.4) of what the server did, kept in plain dicts.

Counters and histograms are updated on the event loop's thread only, so they need no locks.
"""

from __future__ import annotations

import math
from collections import defaultdict

Labels = tuple[tuple[str, str], ...]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(_pair(k, v) for k, v in labels) + "}"


def _pair(key: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{key}="{escaped}"'


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    def __init__(self, name: str, help: str, unit_type: str = "counter"):
        self.name, self.help, self.type = name, help, unit_type
        self.values: dict[Labels, float] = defaultdict(float)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self.values[tuple(sorted(labels.items()))] += amount

    def set(self, value: float, **labels: str) -> None:
        self.values[tuple(sorted(labels.items()))] = value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.type}"]
        lines += [f"{self.name}{_labels(k)} {_number(v)}" for k, v in sorted(self.values.items())]
        return lines


class Histogram:
    def __init__(self, name: str, help: str, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.name, self.help, self.buckets = name, help, buckets
        self.counts: dict[Labels, list[int]] = {}
        self.sums: dict[Labels, float] = defaultdict(float)

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        counts = self.counts.setdefault(key, [0] * (len(self.buckets) + 1))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
        self.sums[key] += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, counts in sorted(self.counts.items()):
            total = 0
            for bound, count in zip((*self.buckets, math.inf), counts):
                total += count
                le = (*key, ("le", _number(bound)))
                lines.append(f"{self.name}_bucket{_labels(le)} {total}")
            lines.append(f"{self.name}_sum{_labels(key)} {_number(self.sums[key])}")
            lines.append(f"{self.name}_count{_labels(key)} {total}")
        return lines


class ServerMetrics:
    """Everything /metrics reports. `model` is the served name a client asked for; `upstream` is
    the alias of a model the configuration called."""

    def __init__(self) -> None:
        self.requests = Counter(
            "tradeoff_requests_total", "HTTP requests answered, by served model, endpoint, status"
        )
        self.rejected = Counter(
            "tradeoff_rejected_total", "requests refused before any model ran, by reason"
        )
        self.errors = Counter(
            "tradeoff_upstream_errors_total", "served requests whose model call failed"
        )
        self.in_flight = Counter("tradeoff_in_flight", "requests being answered now", "gauge")
        self.latency = Histogram(
            "tradeoff_request_duration_seconds", "time from request to the last byte of the answer"
        )
        self.ttft = Histogram(
            "tradeoff_time_to_first_token_seconds", "time from request to the first answer token"
        )
        self.tokens = Counter(
            "tradeoff_tokens_total", "tokens by served model, upstream model and kind"
        )
        self.escalations = Counter(
            "tradeoff_escalations_total", "cascade requests that escalated to the large model"
        )
        self.switches = Counter("tradeoff_switches_total", "switch hand-overs between models")
        self.routes = Counter(
            "tradeoff_routes_total", "route requests, by the configuration the policy chose"
        )
        self.energy = Counter(
            "tradeoff_energy_joules_total", "measured energy of served requests (J)"
        )
        self.energy_missing = Counter(
            "tradeoff_energy_missing_total", "served requests whose energy was not measured"
        )
        self.stored = Counter("tradeoff_records_stored_total", "records written to the run store")
        self.store_errors = Counter(
            "tradeoff_store_errors_total", "records the run store failed to write"
        )
        self.served = Counter("tradeoff_served_total", "requests answered by a model (records due)")

    def render(self) -> bytes:
        lines: list[str] = []
        for metric in (
            self.requests,
            self.served,
            self.rejected,
            self.errors,
            self.in_flight,
            self.latency,
            self.ttft,
            self.tokens,
            self.escalations,
            self.switches,
            self.routes,
            self.energy,
            self.energy_missing,
            self.stored,
            self.store_errors,
        ):
            lines += metric.render()
        return ("\n".join(lines) + "\n").encode()
