"""The frontier at an operating point (`tradeoff frontier DIR --at ...`): each configuration's
measured requests at one of its load points, their costs as measured there, and the hardware's
hour shared by the requests served in it.

- `rate=R`: the load point sent at R requests/s (constant or poisson);
- `concurrency=N`: the one with N requests in flight (concurrent:N, throughput at N, or
  synchronous for N = 1);
- `max-goodput`: for each configuration, its load point of highest goodput under the SLO;
- a load point's label (`constant:10`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tradeoff.analysis.costs import calls_of
from tradeoff.analysis.load import price_field
from tradeoff.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

AT_FORMS = "rate=R, concurrency=N, max-goodput, or a load point's label (e.g. constant:10)"


@dataclass(frozen=True)
class At:
    kind: str  # "rate", "concurrency", "max-goodput", "label"
    value: float | str | None = None

    def __str__(self) -> str:
        if isinstance(self.value, float):
            return f"{self.kind}={self.value:g}"
        return str(self.value or self.kind)


def parse_at(text: str) -> At:
    body = text.strip()
    if body == "max-goodput":
        return At("max-goodput")
    key, eq, value = body.partition("=")
    if eq and key in ("rate", "concurrency"):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not number > 0:
            raise UserError(f"--at {text!r}: {key} must be a number above 0; give {AT_FORMS}")
        return At(key, number)
    if ":" in body or body in ("synchronous", "throughput"):
        return At("label", body)
    raise UserError(f"--at {text!r} is not an operating point; give {AT_FORMS}")


def _matches(row: Mapping[str, Any], at: At) -> bool:
    if at.kind == "label":
        return bool(row["load_point"] == at.value)
    number = at.value if isinstance(at.value, float) else math.nan
    if at.kind == "rate":
        return row.get("target_rate") is not None and math.isclose(row["target_rate"], number)
    if at.kind == "concurrency":
        if number == 1 and row.get("profile") == "synchronous":
            return True
        n = row.get("target_concurrency")
        return n is not None and math.isclose(n, number)
    return False


def choose(stats: list[dict[str, Any]], at: At) -> dict[str, dict[str, Any]]:
    """Each configuration's statistics row at the operating point `at`; one line naming the
    load points there are when a configuration has none that matches."""
    if not stats:
        raise UserError("--at needs a load run (tradeoff load); this run has no load points")
    by_config: dict[str, list[dict[str, Any]]] = {}
    for row in stats:
        by_config.setdefault(row["config"], []).append(row)
    chosen: dict[str, dict[str, Any]] = {}
    for config, rows in by_config.items():
        if at.kind == "max-goodput":
            scored = [r for r in rows if r.get("goodput") is not None]
            if not scored:
                raise UserError(
                    "--at max-goodput needs an SLO: give --slo (e.g. --slo ttft=0.5,e2e=10) or "
                    "measure the run with one"
                )
            # a point stopped before it finished is measured over a short window, often of the
            # fastest requests: chosen only where no finished point is scored
            finished = [r for r in scored if r.get("status") in (None, "finished")]
            chosen[config] = max(finished or scored, key=lambda r: r["goodput"])
            continue
        matching = [r for r in rows if _matches(r, at)]
        if not matching:
            have = ", ".join(r["load_point"] for r in rows)
            raise UserError(f"--at {at}: {config} has no such load point; it has {have}")
        chosen[config] = matching[0]
    return chosen


def records_at(
    records: pd.DataFrame,
    chosen: Mapping[str, Mapping[str, Any]],
    prices: Mapping[str, Any],
    models: Mapping[str, list[str]],
) -> pd.DataFrame:
    """The measured records of each configuration at its chosen load point, their `cost_usd`
    priced at it: each call's per-token prices, plus the configuration's hardware per hour over
    the measured window shared by the requests measured in it, failed ones too (per_hour / 3600
    × window / requests), not charged per second of each request's own latency. (Shared over
    the completed ones alone, a failed request's share was charged again to each.)"""
    phase = records["phase"].fillna("measure")
    keep = {(config, row["load_point"]) for config, row in chosen.items()}
    pairs = zip(records["config"], records["load_point"], strict=True)
    chosen_rows = records.index[[pair in keep for pair in pairs]]
    out = records.loc[chosen_rows][phase.loc[chosen_rows] == "measure"].copy()
    for config, row in chosen.items():
        rows = out["config"] == config
        per_hour = sum(
            (price_field(prices.get(m), "per_hour") or 0.0) for m in models.get(config, [])
        )
        window, measured = row.get("window_s"), int(rows.sum())
        if not per_hour or not window or not measured:
            continue
        share = per_hour / 3600 * window / measured
        out.loc[rows, "cost_usd"] = [
            _token_cost(calls_of(calls), prices) + share for calls in out.loc[rows, "calls"]
        ]
    return out


def _token_cost(calls: list[dict[str, Any]], prices: Mapping[str, Any]) -> float:
    return sum(
        _per(prices, str(c.get("model")), "input") * (c.get("input_tokens") or 0) / 1e6
        + _per(prices, str(c.get("model")), "output") * (c.get("output_tokens") or 0) / 1e6
        for c in calls
    )


def _per(prices: Mapping[str, Any], model: str, key: str) -> float:
    return price_field(prices.get(model), key) or 0.0
