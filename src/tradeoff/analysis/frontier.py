"""The accuracy-cost frontier: per configuration, accuracy against the mean cost of one query on a
chosen axis, the efficiency metrics of DESIGN.md, and which configurations are Pareto-optimal.

Failed records (error set) score 0 and their costs count: the query was paid for.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from tradeoff.analysis.metrics import accuracy_interval, record_scores, roofline
from tradeoff.errors import UserError


@dataclass(frozen=True)
class CostAxis:
    """One way to count what a query costs: its name, unit and where the number comes from."""

    name: str
    title: str
    unit: str
    source: str


COST_AXES: dict[str, CostAxis] = {
    "energy": CostAxis("energy", "energy per query", "J", "measured"),
    "latency": CostAxis("latency", "latency per query", "s", "wall clock"),
    "tokens": CostAxis("tokens", "tokens per query (input + output)", "tokens", "counted"),
    "flops": CostAxis("flops", "compute per query", "GFLOPs", "analytic"),
    "dollars": CostAxis("dollars", "price per query", "$", "spec prices"),
}

# The tokens axis counts output tokens only for records whose server reported no input tokens.
OUTPUT_ONLY = "output only where input tokens were not reported"


@dataclass
class FrontierRow:
    """One configuration on the frontier. A None metric is one that cannot be computed; for the
    chosen cost, `cost_missing` says why."""

    config: str
    n: int
    accuracy: float
    accuracy_low: float
    accuracy_high: float
    cost_axis: str
    cost_unit: str
    cost: float | None  # mean per query, in cost_unit
    cost_source: str | None  # e.g. "measured by nvml", "wall clock", "analytic"
    cost_missing: str | None  # why cost is None
    cost_note: str | None  # a caveat on how cost was counted, e.g. output tokens only
    cost_of_pass: float | None  # cost / accuracy, in cost_unit
    energy_j: float | None  # mean measured energy per query
    energy_source: str | None
    energy_missing: str | None
    accuracy_per_joule: float | None  # accuracy / energy_j, 1/J
    power_w: float | None  # mean of energy_j / e2e_s over queries
    ipw: float | None  # accuracy / power_w, 1/W
    output_tokens: float  # mean generated tokens per query
    e3: float | None  # accuracy² / output_tokens, 1/token
    errors: int
    pareto: bool
    dominated_by: str | None  # one configuration that dominates this one
    # Analytic roofline time per query (s) and roofline time / measured engine time; None
    # unless the device's peaks were calibrated and every call has one.
    roofline_s: float | None = None
    roofline_eff: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_cost(records: pd.DataFrame) -> str:
    """Energy when every successful record has it measured, else latency (always measured)."""
    ok = records[records["error"].isna()]
    return "energy" if len(ok) and ok["energy_j"].notna().all() else "latency"


def axis_label(cost: str, rows: list[FrontierRow] | None = None) -> str:
    """The cost axis as a reader should see it, e.g. 'energy per query [J, measured by nvml]'."""
    axis = _axis(cost)
    sources = sorted({r.cost_source for r in rows or [] if r.cost_source})
    source = ", ".join(sources) if sources else axis.source
    title = axis.title
    if any(r.cost_note for r in rows or []):
        title = f"{title}; {OUTPUT_ONLY}"
    return f"{title} [{axis.unit}, {source}]"


def frontier(
    records: pd.DataFrame, cost: str, config_order: list[str] | None = None
) -> list[FrontierRow]:
    """One row per configuration (in `config_order`, else first-seen order), Pareto flags set.

    A configuration is dominated when another is at most as costly and strictly more accurate,
    or strictly cheaper and at least as accurate. So two configurations tied on both cost and
    accuracy are both on the frontier, and a configuration whose cost is missing for any record
    (energy not measured, a model without a price, FLOPs not counted) is never on it: its cost is
    unknown, so it can neither be placed nor compared. A configuration with accuracy 0 stays on it
    only while no other costs less, nor the same with accuracy above 0.

    Failed records (error set) score 0 and their costs count: they were paid for. A failed
    record whose cost was not measured (no FLOPs are counted for a failed call) leaves the
    configuration's cost unknown on that axis rather than silently averaging it away.
    """
    axis = _axis(cost)
    names = config_order or list(dict.fromkeys(records["config"]))
    rows = []
    priced_models = (
        _models(records[records["cost_usd"].notna()]) if axis.name == "dollars" else None
    )
    for name in names:
        df = records[records["config"] == name]
        if df.empty:
            continue
        acc, low, high = accuracy_interval(record_scores(df))
        scored = not math.isnan(acc)
        value, source, missing, note = _cost(df, axis, priced_models)
        energy_j, energy_source, energy_missing = _energy(df)
        power = _power(df) if energy_j is not None else None
        out_tokens = float(df["output_tokens"].mean())
        roofline_s, roofline_eff = roofline(df[df["error"].isna()])
        rows.append(
            FrontierRow(
                config=name,
                n=int(len(df)),
                accuracy=acc,
                accuracy_low=low,
                accuracy_high=high,
                cost_axis=axis.name,
                cost_unit=axis.unit,
                cost=value,
                cost_source=source,
                cost_missing=missing,
                cost_note=note,
                cost_of_pass=value / acc if value is not None and acc > 0 else None,
                energy_j=energy_j,
                energy_source=energy_source,
                energy_missing=energy_missing,
                accuracy_per_joule=acc / energy_j if energy_j and scored else None,
                power_w=power,
                ipw=acc / power if power and scored else None,
                output_tokens=out_tokens,
                e3=acc * acc / out_tokens if out_tokens > 0 and scored else None,
                errors=int(df["error"].notna().sum()),
                pareto=False,
                dominated_by=None,
                roofline_s=roofline_s,
                roofline_eff=roofline_eff,
            )
        )
    _mark_pareto(rows)
    return rows


def _axis(cost: str) -> CostAxis:
    if cost not in COST_AXES:
        raise UserError(f"cost axis '{cost}' is not known; known: {', '.join(COST_AXES)}")
    return COST_AXES[cost]


def _mark_pareto(rows: list[FrontierRow]) -> None:
    placed = [(r, r.cost) for r in rows if r.cost is not None and not math.isnan(r.accuracy)]
    for x, x_cost in placed:
        for y, y_cost in placed:
            if (y_cost <= x_cost and y.accuracy > x.accuracy) or (
                y_cost < x_cost and y.accuracy >= x.accuracy
            ):
                x.dominated_by = y.config
                break
        x.pareto = x.dominated_by is None


def _cost(
    df: pd.DataFrame, axis: CostAxis, priced_models: set[str] | None
) -> tuple[float | None, str | None, str | None, str | None]:
    """(mean cost per query, its source, why it is missing, a caveat) for one configuration."""
    if axis.name == "latency":
        return float(df["e2e_s"].mean()), axis.source, None, None
    if axis.name == "tokens":
        no_input = df["input_tokens"].isna()
        tokens = df["output_tokens"] + df["input_tokens"].fillna(0)
        note = (
            f"input tokens not reported for {int(no_input.sum())} of {len(df)} queries: "
            "output tokens only for those"
            if no_input.any()
            else None
        )
        return float(tokens.mean()), axis.source, None, note
    if axis.name == "energy":
        energy_j, source, missing = _energy(df)
        return energy_j, f"measured by {source}" if source else None, missing, None
    if axis.name == "flops":
        flops = df["flops"]
        if flops.isna().any():
            k = int(flops.isna().sum())
            failed = int((flops.isna() & df["error"].notna()).sum())
            why = f"FLOPs not counted for {k} of {len(df)} queries"
            if failed == k:
                why += " (failed calls are not counted)"
            elif not failed:
                why += " (model shape unknown or input tokens not reported)"
            return None, None, why, None
        return float(flops.mean()) / 1e9, axis.source, None, None
    dollars = df["cost_usd"]
    if dollars.isna().any():
        return None, None, _unpriced(df, priced_models), None
    return float(dollars.mean()), axis.source, None, None


def _energy(df: pd.DataFrame) -> tuple[float | None, str | None, str | None]:
    """Mean measured energy per query (J), its meter, or why it is missing."""
    energy = df["energy_j"]
    if energy.isna().any():
        reasons = df.loc[energy.isna(), "energy_missing"].dropna()
        return None, None, str(reasons.iloc[0]) if len(reasons) else "not measured"
    sources = "+".join(sorted(set(df["energy_source"].dropna().astype(str)))) or None
    return float(energy.mean()), sources, None


def _power(df: pd.DataFrame) -> float | None:
    """Mean power per query (W): each query's energy over its wall-clock time."""
    ok = df["e2e_s"] > 0
    if not ok.any():
        return None
    return float(np.mean(df.loc[ok, "energy_j"] / df.loc[ok, "e2e_s"]))


def _calls(df: pd.DataFrame) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for calls in df["calls"]:
        out.extend(json.loads(calls) if isinstance(calls, str) else calls or [])
    return out


def _models(df: pd.DataFrame) -> set[str]:
    return {str(c.get("model")) for c in _calls(df)}


def _unpriced(df: pd.DataFrame, priced_models: set[str] | None) -> str:
    """Why some queries of one configuration have no price. A model seen in a priced query has a
    price in the spec; the others in unpriced queries have none."""
    if not priced_models:
        return "no prices in the spec"
    unpriced = df[df["cost_usd"].isna()]
    calls = _calls(unpriced)
    no_input = sorted({str(c.get("model")) for c in calls if c.get("input_tokens") is None})
    if no_input:
        return f"input tokens not reported by {', '.join(no_input)}, so not priced"
    models = sorted(_models(unpriced) - priced_models)
    if models:
        return f"no price in the spec for {', '.join(models)}"
    return f"{len(unpriced)} of {len(df)} queries have no price"
