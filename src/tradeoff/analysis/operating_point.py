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
    from collections.abc import Sequence

    import pandas as pd

    from tradeoff.store import Store

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
    """Each configuration's statistics row at the operating point `at` (for max-goodput, one of
    a configuration none of whose points measured a request, its `n_measure` 0); one line
    naming the load points there are when a configuration has none that matches."""
    if not stats:
        raise UserError("--at needs a load run (tradeoff load); this run has no load points")
    by_config: dict[str, list[dict[str, Any]]] = {}
    for row in stats:
        by_config.setdefault(row["config"], []).append(row)
    chosen: dict[str, dict[str, Any]] = {}
    for config, rows in by_config.items():
        if at.kind == "max-goodput":
            scored = [r for r in rows if r.get("goodput") is not None]
            if not scored and any(r.get("slo") for r in stats):
                chosen[config] = rows[0]  # no point measured a request: no goodput to compare
                continue
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
    priced there (`hour_shared`)."""
    phase = records["phase"].fillna("measure")
    keep = {(config, row["load_point"]) for config, row in chosen.items()}
    pairs = zip(records["config"], records["load_point"], strict=True)
    chosen_rows = records.index[[pair in keep for pair in pairs]]
    return hour_shared(
        records.loc[chosen_rows][phase.loc[chosen_rows] == "measure"], prices, models
    )


def measured_records(store: Store, columns: Sequence[str]) -> pd.DataFrame:
    """A run's measured records with `columns` (and `config`); a load run's priced as under
    load (`hour_shared`), so that a summary or frontier pooling its load points charges each
    point's hour once. Each record's calls are read (JSON) only where the hardware is priced by
    the hour."""
    prices = store.run()["spec"].get("prices") or {}
    models = models_of(store.configs())
    if not store.load_points() or not hourly(prices, models):
        return store.records(columns=columns, measured=True)
    wanted = list(dict.fromkeys([*columns, *HOUR_SHARED_COLUMNS]))
    priced = hour_shared(store.records(columns=wanted, measured=True), prices, models)
    return priced[["config", *dict.fromkeys(columns)]]


# What `hour_shared` reads of each record.
HOUR_SHARED_COLUMNS = ("load_point", "sent_s", "e2e_s", "error", "cost_usd", "calls")


def models_of(configs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each stored configuration's model aliases, by its name: what its prices are summed over."""
    return {c["name"]: list(c["spec"].get("models", {})) for c in configs}


def hourly(prices: Mapping[str, Any], models: Mapping[str, list[str]]) -> set[str]:
    """The configurations whose hardware is priced by the hour."""
    return {
        config
        for config, aliases in models.items()
        if any(price_field(prices.get(m), "per_hour") for m in aliases)
    }


def hour_shared(
    records: pd.DataFrame, prices: Mapping[str, Any], models: Mapping[str, list[str]]
) -> pd.DataFrame:
    """`records` with the `cost_usd` of the measured ones of a load point charged as under
    load: each call's per-token prices, plus the configuration's hardware per hour over the
    point's measured window shared by the requests measured in it, failed ones too (per_hour /
    3600 × window / requests), not per second of each request's own latency as stored (under
    load that charged the hour once per request in flight). (Shared over the completed ones
    alone, a failed request's share was charged again to each.) A failed request is charged its
    share and the tokens it reported (a failure reports none); a record with no cost for want
    of a price, or of input tokens a model priced on them did not report, keeps none. Warm-up
    and cool-down records, those of no load point, and configurations without a `per_hour`
    price keep theirs."""
    from tradeoff.analysis.load import measure_window

    out = records.copy()
    phase = out["phase"].fillna("measure") if "phase" in out else None
    measured = out if phase is None else out[phase == "measure"]
    for (config, point), rows in measured.groupby(
        ["config", "load_point"], sort=False
    ).groups.items():
        aliases = models.get(str(config), [])
        per_hour = sum((price_field(prices.get(m), "per_hour") or 0.0) for m in aliases)
        window = measure_window(out.loc[rows]) if point and per_hour else None
        if not window:
            continue
        share = per_hour / 3600 * window / len(rows)
        failed = out.loc[rows, "error"].notna() & all(m in prices for m in aliases)
        priced = out.loc[rows].index[out.loc[rows, "cost_usd"].notna() | failed]
        out.loc[priced, "cost_usd"] = [
            _token_cost(calls_of(out.at[i, "calls"]), prices) + share for i in priced
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
