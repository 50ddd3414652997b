"""A router evaluation as console tables: the RouteLLM metrics of each router beside the oracle and
the random router, and accuracy at each share of calls to the strong configuration."""

from __future__ import annotations

import math

import numpy as np
from rich.markup import escape
from rich.table import Table

from tradeoff.policy.evaluate import Evaluation

ROUTER_NOTE = (
    "APGR: share of the weak-to-strong accuracy gap recovered, averaged over the curve "
    "(random 0.5); CPT(x%): strong calls needed to recover x% of the gap; n/a: not reached."
)


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}%"


def router_heading(result: Evaluation) -> str:
    """One line: the items, where the predictions come from, and the weak and strong ends."""
    return (
        f"{result.items} items, {result.source}; weak {result.weak}: accuracy "
        f"{result.acc_weak:.3f}, cost {result.cost_weak:.4g}; strong {result.strong}: accuracy "
        f"{result.acc_strong:.3f}, cost {result.cost_strong:.4g} ({result.cost_axis} per query)"
    )


def router_tables(result: Evaluation) -> list[Table]:
    """The metrics table, then accuracy at 0%, 10%, ... 100% of calls to the strong one."""
    metrics = Table(
        "router",
        "AUC",
        "APGR",
        "CPT(50%)\n% strong",
        "CPT(80%)\n% strong",
        "cost saved at 95%\nof strong accuracy",
    )
    for r in result.routers:
        metrics.add_row(
            escape(r.label),
            f"{r.auc:.3f}",
            f"{r.apgr:.3f}",
            _pct(r.cpt50),
            _pct(r.cpt80),
            _pct(r.cost_saved_95),
        )
    grid = np.linspace(0.0, 1.0, 11)
    curves = Table("accuracy at % strong calls", *[f"{100 * g:.0f}%" for g in grid])
    for r in result.routers:
        accuracy = np.interp(grid, r.curve.strong_fraction, r.curve.accuracy)
        curves.add_row(escape(r.label), *[f"{a:.3f}" for a in accuracy])
    return [metrics, curves]
