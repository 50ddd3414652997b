"""The accuracy-cost frontier: per configuration, accuracy against the mean cost of one query on a
chosen axis (`analysis.costs`), the efficiency metrics of DESIGN.md, and which configurations are
Pareto-optimal. Rows are drawn from the same per-configuration summaries as `tradeoff report`
(`analysis.metrics.summaries`), so the two agree: failed records score 0 and their costs count.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from tradeoff.analysis.costs import OUTPUT_ONLY, axis, resolve
from tradeoff.analysis.metrics import Summary, summaries


@dataclass
class FrontierRow:
    """One configuration on the frontier. A None metric is one that cannot be computed; for the
    chosen cost, `cost_missing` says why."""

    config: str
    n: int
    n_scored: int  # the records accuracy and its interval are over
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
    power_w: float | None  # the queries' energy_j / their engine calls' seconds
    ipw: float | None  # accuracy / power_w, 1/W
    output_tokens: float | None  # mean generated tokens per query (None: not counted)
    e3: float | None  # accuracy² / output_tokens, 1/token
    errors: int
    pareto: bool
    dominated_by: str | None  # one configuration that dominates this one
    # Analytic roofline time per query (s) and roofline time / measured engine time; None
    # unless the device's peaks are known (calibrated, else a GPU's datasheet) and every call
    # has one.
    roofline_s: float | None = None
    roofline_eff: float | None = None
    # The load point of a load run the row is measured at (`frontier --at`, "(stopped)" where
    # it did not finish); None: over every record
    load_point: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def axis_label(cost: str, rows: list[FrontierRow] | None = None) -> str:
    """The cost axis as a reader should see it, e.g. 'energy per query [J, measured by nvml]'."""
    found = axis(cost)
    sources = sorted({r.cost_source for r in rows or [] if r.cost_source})
    source = ", ".join(sources) if sources else found.source
    units = sorted({r.cost_unit for r in rows or []})
    title = found.title
    if any(r.cost_note for r in rows or []):
        title = f"{title}; {OUTPUT_ONLY}"
    return f"{title} [{', '.join(units) if units else found.unit}, {source}]"


def frontier(
    records: pd.DataFrame, cost: str, config_order: list[str] | None = None
) -> list[FrontierRow]:
    """One row per configuration (in `config_order`, else first-seen order), Pareto flags set;
    `cost` names an axis of `analysis.costs.COST_AXES`, or `auto`.

    A configuration is dominated when another is at most as costly and strictly more accurate,
    or strictly cheaper and at least as accurate (by more than a rounding residue, `TIE`). So
    two configurations tied on both cost and accuracy are both on the frontier, and a
    configuration whose cost is missing for any record (energy not measured, a model without a
    price, FLOPs not counted) is never on it: its cost is unknown, so it can neither be placed
    nor compared. A configuration with accuracy 0 stays on it only while no other costs less,
    nor the same with accuracy above 0.

    Failed records (error set) score 0 and their costs count: they were paid for. A failed
    record whose cost was not measured (no FLOPs are counted for a failed call) leaves the
    configuration's cost unknown on that axis rather than silently averaging it away.
    """
    name = resolve(cost, records).name  # an unknown axis fails before any aggregation
    return frontier_of(summaries(records, config_order), name)


def frontier_of(summarized: list[Summary], cost: str) -> list[FrontierRow]:
    """The frontier (as `frontier`) of configurations already summarized, on the axis named
    `cost` (not auto): one aggregation of a run's records serves every axis."""
    rows = [_row(s, cost) for s in summarized]
    _mark_pareto(rows)
    return rows


def _row(s: Summary, cost: str) -> FrontierRow:
    chosen, energy = s.costs[cost], s.costs["energy"]
    acc, value, energy_j, power = s.accuracy, chosen.value, energy.value, s.power_w
    scored = not math.isnan(acc)
    return FrontierRow(
        config=s.config,
        n=s.n,
        n_scored=s.n_scored,
        accuracy=acc,
        accuracy_low=s.accuracy_low,
        accuracy_high=s.accuracy_high,
        cost_axis=cost,
        cost_unit=chosen.unit,
        cost=value,
        cost_source=chosen.source,
        cost_missing=chosen.missing,
        cost_note=chosen.note,
        cost_of_pass=value / acc if value is not None and acc > 0 else None,
        energy_j=energy_j,
        energy_source=s.energy_source if energy_j is not None else None,
        energy_missing=energy.missing,
        accuracy_per_joule=acc / energy_j if energy_j and scored else None,
        power_w=power,
        ipw=acc / power if power and scored else None,
        output_tokens=s.output_tokens,
        e3=acc * acc / s.output_tokens if s.output_tokens and scored else None,
        errors=s.errors,
        pareto=False,
        dominated_by=None,
        roofline_s=s.roofline_s,
        roofline_eff=s.roofline_eff,
    )


# Means of other numbers that are equal can differ in their last bits ((0.1 + 0.2) / 2 is
# 0.15000000000000002, (0.3 + 0) / 2 is 0.15): within this relative tolerance they tie.
TIE = 1e-9


def _below(a: float, b: float) -> bool:
    """`a` is less than `b` by more than a rounding residue."""
    return a < b and not math.isclose(a, b, rel_tol=TIE)


def _mark_pareto(rows: list[FrontierRow]) -> None:
    placed = [(r, r.cost) for r in rows if r.cost is not None and not math.isnan(r.accuracy)]
    for x, x_cost in placed:
        for y, y_cost in placed:
            if (not _below(x_cost, y_cost) and _below(x.accuracy, y.accuracy)) or (
                _below(y_cost, x_cost) and not _below(y.accuracy, x.accuracy)
            ):
                x.dominated_by = y.config
                break
        x.pareto = x.dominated_by is None
