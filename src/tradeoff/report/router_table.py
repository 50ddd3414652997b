"""A router evaluation as console tables: the RouteLLM metrics of each router beside the oracle and
the random router, and accuracy at each share of calls to the strong configuration."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from rich.markup import escape

from tradeoff.analysis.router import covering
from tradeoff.policy.evaluate import Evaluation, RouterReport
from tradeoff.policy.fit import NO_COSTS
from tradeoff.report.columns import Column, ColumnTable, build_table

ROUTER_NOTE = (
    "APGR: share of the weak-to-strong accuracy gap recovered, averaged over the curve "
    "(random 0.5); CPT(x%): strong calls needed to recover x% of the gap; n/a: not reached."
)


def _pct(value: float) -> str:
    """A share as a percentage; a rounding residue below 0 (-7e-15) is 0.0%, not -0.0%."""
    return "n/a" if math.isnan(value) else f"{round(100 * value, 1) + 0.0:.1f}%"


def router_heading(result: Evaluation) -> str:
    """One line: the items, where the predictions come from, and the weak and strong ends."""
    head = f"router {result.router}; {result.items} items, {result.source}; "
    if result.cost_axis == NO_COSTS:  # nothing priced: no cost saved to show either
        return (
            f"{head}weak {result.weak}: accuracy {result.acc_weak:.3f}; strong {result.strong}: "
            f"accuracy {result.acc_strong:.3f} (no costs: outcomes imported without them)"
        )
    return (
        f"{head}weak {result.weak}: accuracy {result.acc_weak:.3f}, cost {result.cost_weak:.4g}; "
        f"strong {result.strong}: accuracy {result.acc_strong:.3f}, cost "
        f"{result.cost_strong:.4g} (cost: {result.cost_axis}"
        f"{', ' + result.cost_unit if result.cost_unit else ''} per query)"
    )


def policy_line(result: Evaluation) -> str:
    """One line, for a policy file's evaluation: where its own λ routes these items as served,
    against its target, with each query's task known where that routes otherwise, and what its
    fit promised; "" for a router's curve alone (--cv, --train)."""
    op = result.operating
    if not op:
        return ""
    priced = result.cost_axis != NO_COSTS
    unit = f" {result.cost_unit}" if result.cost_unit else ""

    def figures(point: dict[str, float]) -> str:
        cost = f", cost {point['cost']:.4g}{unit} a query" if priced and "cost" in point else ""
        share = point.get("strong_fraction")
        shown = f", {share:.0%} to {op['strong']}" if share is not None else ""
        return f"accuracy {point.get('accuracy', math.nan):.3f}{cost}{shown}"

    target, verdict = op["target"], ""
    if "accuracy" in target:
        aim = f"accuracy ≥ {target['accuracy']:g}"
        gap = op["accuracy"] - target["accuracy"]
        verdict = "reaches it" if gap >= 0 else f"{-gap:.3f} short of it"
    elif "budget" in target:
        aim = f"a budget of {target['budget']:g}{unit} a query"
        over = op["cost"] - target["budget"]
        verdict = "within it" if over <= 0 else f"{over:.4g}{unit} over it"
    else:
        aim = f"{target['strong_fraction']:.0%} of queries to {op['strong']}"
    line = f"the policy's own routing as served (λ {op['lam']:.4g}, fitted for {aim}): "
    line += figures(op) + (f", {verdict}" if verdict else "")
    if op.get("with_tasks"):
        line += (
            "; with each query's task known (as a route configuration in a profile): "
            + figures(op["with_tasks"])
        )
    if op.get("promised"):
        line += f"; its fit promised, out of fold on its own run: {figures(op['promised'])}"
    return line


def router_tables(result: Evaluation) -> list[ColumnTable]:
    """The metrics table, then accuracy at 0%, 10%, ... 100% of calls to the strong one."""
    metrics, _ = build_table(
        None,
        [
            _labels("router"),
            Column("AUC", lambda r, _: f"{r.auc:.3f}"),
            Column("APGR", lambda r, _: f"{r.apgr:.3f}"),
            Column("CPT(50%)\n% strong", lambda r, _: _pct(r.cpt50)),
            Column("CPT(80%)\n% strong", lambda r, _: _pct(r.cpt80)),
            *(
                [
                    Column(
                        "cost saved at 95%\nof strong accuracy", lambda r, _: _pct(r.cost_saved_95)
                    )
                ]
                if result.cost_axis != NO_COSTS  # nothing priced: nothing saved, every cell n/a
                else []
            ),
        ],
        result.routers,
    )
    grid = np.linspace(0.0, 1.0, 11)
    curves, _ = build_table(
        None,
        [
            _labels("accuracy at % strong calls"),
            *[Column(f"{100 * share:.0f}%", _accuracy_at(share, result)) for share in grid],
        ],
        result.routers,
    )
    return [metrics, curves]


def _labels(header: str) -> Column:
    """The routers' labels, printed whole."""
    return Column(header, lambda r, _: escape(r.label), justify="left", name=True)


def _accuracy_at(share: float, result: Evaluation) -> Callable[[RouterReport, list[str]], str]:
    """A cell: the router's accuracy at `share` of calls to the strong configuration (past its
    curve's ends, mixed with always-weak or always-strong, as its AUC counts it)."""

    def cell(r: RouterReport, _: list[str]) -> str:
        x, y = covering(r.curve, result.acc_weak, result.acc_strong)
        return f"{np.interp(share, x, y):.3f}"

    return cell
