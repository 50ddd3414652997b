"""Evaluate a router the way RouteLLM does: accuracy against the share of calls to the strongest
configuration (and against cost), AUC, APGR, CPT(50%), CPT(80%), cost saved at 95% of the strong
configuration's accuracy, always beside the oracle and the random router."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from tradeoff.analysis.compare import SERVED
from tradeoff.analysis.router import (
    Curve,
    apgr,
    auc,
    cost_saved_at,
    cpt,
    no_gap,
    oracle_curve,
    random_curve,
    router_curve,
    weak_strong,
)
from tradeoff.errors import UserError
from tradeoff.policy.fit import (
    NO_COSTS,
    Policy,
    Table,
    among,
    out_of_fold,
    query_digests,
    routing,
    task_mixture,
    task_shares,
)
from tradeoff.policy.routers import Featurizer, WordsLR, new_router, reads_task


@dataclass
class RouterReport:
    label: str
    auc: float
    apgr: float
    cpt50: float  # share of calls to the strong configuration, 0..1
    cpt80: float
    cost_saved_95: float  # 1 - cost / cost of always strong, at 95% of strong's accuracy
    curve: Curve


@dataclass
class Evaluation:
    configs: list[str]
    weak: str
    strong: str
    acc_weak: float
    acc_strong: float
    cost_weak: float
    cost_strong: float
    cost_axis: str
    items: int
    source: str  # "cv K" or "policy FILE"
    routers: list[RouterReport]
    router: str = WordsLR.kind  # the router family evaluated (`routers.py`)
    warnings: list[str] = field(default_factory=list)  # why these figures may mislead
    cost_unit: str = ""  # the cost axis's unit ("" in evaluations stored before it was kept)
    # A policy file's own routing of these items as served, at the λ it keeps for that
    # (`policy_point`), and under `with_tasks` each routed with its own task where that differs;
    # empty for --cv and --train, which evaluate a router's whole curve
    operating: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: each curve as lists of floats."""
        data = asdict(self)
        for router, report in zip(data["routers"], self.routers, strict=True):
            curve = report.curve
            router["curve"] = {
                "strong_fraction": [float(v) for v in curve.strong_fraction],
                "accuracy": [float(v) for v in curve.accuracy],
                "cost": [float(v) for v in curve.cost],
            }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        """An evaluation as `to_dict` gave it (e.g. stored with the run); other keys ignored."""
        routers = [
            RouterReport(
                **{k: v for k, v in r.items() if k != "curve"},
                curve=Curve(label=r["label"], **r["curve"]),
            )
            for r in data["routers"]
        ]
        plain = {f.name for f in fields(cls)} - {"routers"}
        return cls(**{k: data[k] for k in plain if k in data}, routers=routers)


def _report(curve: Curve, acc_w: float, acc_s: float, cost_s: float) -> RouterReport:
    return RouterReport(
        label=curve.label,
        auc=auc(curve, acc_w, acc_s),
        apgr=apgr(curve, acc_w, acc_s),
        cpt50=cpt(curve, acc_w, acc_s, 0.5),
        cpt80=cpt(curve, acc_w, acc_s, 0.8),
        cost_saved_95=cost_saved_at(curve, 0.95 * acc_s, cost_s),
        curve=curve,
    )


# What to do where the strong configuration costs no more than the weak one: the CLI's own
# advice, unless a policy fixes the cost axis (`policy eval --policy` refuses --cost)
CHEAPER_STRONG_HINT = "choose another --cost"
POLICY_COST_HINT = "fit a policy on another cost axis (tradeoff policy fit --cost ...)"


def evaluate(
    table: Table,
    expected: np.ndarray,
    source: str,
    router: str = WordsLR.kind,
    cost_hint: str = CHEAPER_STRONG_HINT,
) -> Evaluation:
    """Curves and metrics of routing by `expected` scores (N x M) against the true outcomes;
    `cost_hint`: the advice where the strongest configuration costs no more than the weakest."""
    # As RouteLLM: weak and strong by quality (lowest and highest mean score); costs are reported.
    means = _means_apart(table)
    weak, strong = weak_strong(
        table.scores, table.costs, strong=int(np.argmax(means)), weak=int(np.argmin(means))
    )
    s, c = table.scores, table.costs
    acc_w, acc_s = float(s[:, weak].mean()), float(s[:, strong].mean())
    cost_s = float(c[:, strong].mean())
    pair = (s[:, weak], s[:, strong], c[:, weak], c[:, strong])
    curves = [
        router_curve(expected, s, c, weak, strong),
        oracle_curve(*pair),
        random_curve(*pair),
    ]
    reports = [_report(curve, acc_w, acc_s, cost_s) for curve in curves]
    if table.cost_axis == NO_COSTS:  # the ranks that ordered the sweep are no costs: none shown
        cost_s = 0.0
        for report in reports:
            report.cost_saved_95 = math.nan
            report.curve = replace(report.curve, cost=np.zeros_like(report.curve.cost))
    return Evaluation(
        configs=table.configs,
        weak=table.configs[weak],
        strong=table.configs[strong],
        acc_weak=acc_w,
        acc_strong=acc_s,
        cost_weak=float(c[:, weak].mean()) if table.cost_axis != NO_COSTS else 0.0,
        cost_strong=cost_s,
        cost_axis=table.cost_axis,
        items=len(table.keys),
        source=source,
        routers=reports,
        router=router,
        warnings=_cheaper_strong(table, weak, strong, cost_hint) + _pairwise(table, weak, strong),
        cost_unit=table.cost_unit,
    )


def _means_apart(table: Table) -> np.ndarray:
    """The configurations' mean scores; refused where they are the same (checked before any
    router is fitted: a run of many items fitted every fold first)."""
    means = table.scores.mean(axis=0)
    if no_gap(means.min(), means.max()):
        raise UserError(
            f"{', '.join(table.configs)} score the same on average on these {len(table.keys)} "
            f"items ({means[0]:.3f}): none is the stronger, so there is no gap to recover and "
            "nothing to evaluate routing by"
        )
    return means


def _pairwise(table: Table, weak: int, strong: int) -> list[str]:
    """Among more than two configurations, the baselines are RouteLLM's, between two."""
    if len(table.configs) <= 2:
        return []
    return [
        f"{len(table.configs)} configurations: the oracle and random rows route between "
        f"{table.configs[weak]} and {table.configs[strong]} only, and APGR and CPT measure the "
        "gap between those two; the router chooses among all of them, so it can beat that "
        "oracle"
    ]


def _cheaper_strong(table: Table, weak: int, strong: int, hint: str) -> list[str]:
    """Weak and strong are named by accuracy, as RouteLLM does; where the strong one costs no
    more, sending queries to the weak one saves nothing, and the figures should say so (and
    `hint`, what to do about it)."""
    cost_w, cost_s = table.costs[:, weak].mean(), table.costs[:, strong].mean()
    if cost_s > cost_w or not table.costs.any():  # or nothing is priced (imports without costs)
        return []
    if len(table.configs) > 2:  # the router may still save on the others
        return [
            f"the stronger {table.configs[strong]} costs no more than {table.configs[weak]} (the "
            f"least accurate) on '{table.cost_axis}' ({cost_s:.4g} against {cost_w:.4g} a "
            "query): the oracle's and random's costs saved, between those two, are 0"
        ]
    return [
        f"the stronger {table.configs[strong]} costs no more than {table.configs[weak]} on "
        f"'{table.cost_axis}' ({cost_s:.4g} against {cost_w:.4g} a query): routing to the weaker "
        f"saves nothing, so every cost saved is 0; {hint}"
    ]


def _other_configs(
    configs: list[str], fitted: list[dict[str, Any]], evaluated: list[dict[str, Any]], theirs: str
) -> list[str]:
    """A warning where a configuration evaluated is not the one of its name the router was
    fitted on (`theirs`, where its spec is kept): both keep its spec, and they differ.
    Configurations are matched by name, so the figures are then of routing between other
    configurations than it learnt (a policy fitted where `weak` was one model, on a run where
    it is another)."""
    differ = [
        (name, a, b)
        for name, a, b in zip(configs, fitted, evaluated, strict=True)
        if a and b and a != b
    ]
    if not differ:
        return []
    keys = sorted({k for _, a, b in differ for k in a.keys() | b.keys() if a.get(k) != b.get(k)})
    one = len(differ) == 1
    return [
        f"configuration{'' if one else 's'} {', '.join(name for name, _, _ in differ)} "
        f"{'is' if one else 'are'} not as in {theirs} ({', '.join(keys)} "
        f"{'differs' if len(keys) == 1 else 'differ'}); configurations are matched by name, so "
        "these figures route by what the router learnt of other configurations"
    ]


def evaluate_cv(
    table: Table,
    k: int,
    seed: int = 0,
    split_by: str | None = None,
    router: str = WordsLR.kind,
    features: Featurizer | None = None,
    on_fold: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Every number from items the router did not train on: k folds over items, or over whole
    groups of the field `split_by` (e.g. a subject: how the router transfers to unseen ones).
    `on_fold(done, k)` follows the folds fitted."""
    _means_apart(table)
    featurizer = features or Featurizer(router)
    x = featurizer(table.texts, table.tasks)
    queries = (table.texts, table.tasks, featurizer)
    if split_by is None:
        expected = out_of_fold(
            x, table.scores, k, seed, router=router, queries=queries, on_fold=on_fold
        )
        return evaluate(table, expected, f"{k}-fold cross-validation", router)
    groups = table.groups(split_by)
    folds = min(k, len(set(groups)))
    expected = out_of_fold(
        x, table.scores, k, seed, groups=groups, router=router, queries=queries, on_fold=on_fold
    )
    source = (
        f"{folds}-fold cross-validation over whole {split_by} groups ({len(set(groups))} groups; "
        "none both fitted on and evaluated)"
    )
    result = evaluate(table, expected, source, router)
    if folds < k:
        result.warnings.append(
            f"{k} folds asked (--cv, 5 unless given) but only {folds} {split_by} groups: "
            f"{folds} folds, a group each"
        )
    return result


def evaluate_transfer(
    train: Table,
    test: Table,
    train_name: str,
    router: str = WordsLR.kind,
    features: tuple[Featurizer, Featurizer] | None = None,
    specs: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None,
) -> Evaluation:
    """Fitted on every item of one run, evaluated on another's (the same configurations by
    name): how the router does on traffic it was not fitted on. A query also in the training
    run (the same text, or the same features: `among`) is left out of the figures. `features`:
    of the training run and of the test run (each caches its own embeddings); `specs`: their
    configurations' stored specs, in order (one that differs is warned of)."""
    on_train, on_test = features or (Featurizer(router), Featurizer(router))
    x_train, x_test = on_train(train.texts, train.tasks), on_test(test.texts, test.tasks)
    keep = ~among(test.texts, x_test, query_digests(train.texts, x_train))
    if not keep.any():
        raise UserError(
            f"every query of the test run is also in {train_name}: nothing left to evaluate"
        )
    test = test.subset(keep)
    _means_apart(test)
    fitted = new_router(router).fit(x_train, train.scores)
    expected = fitted.expected(x_test[keep])
    shares = task_shares(train.tasks)
    expected = task_mixture(expected, fitted, on_test, test.texts, test.tasks, shares)
    source = f"fitted on {train_name} ({len(train.keys):,} items)"
    if not keep.all():
        source += f"; {int((~keep).sum()):,} queries also there left out"
    result = evaluate(test, expected, source, router)
    if specs is not None:
        result.warnings += _other_configs(test.configs, *specs, f"{train_name}, the run fitted on")
    return result


def evaluate_policy(
    table: Table,
    policy: Policy,
    path: str,
    run: str | Path | None = None,
    specs: list[dict[str, Any]] | None = None,
) -> Evaluation:
    """The policy's routing of the table's items: its curve with each query's own task, its own
    routing as served (and with their tasks, where that differs); in-sample where it was fitted
    on them (said in the result's warnings: `--cv` or `--split-by` are the honest figures
    then). `specs`: the run's stored specs of the policy's configurations, in order (one that
    differs from the policy file's is warned of)."""
    expected = policy.expected(table.texts, table.tasks, run)
    result = evaluate(table, expected, f"policy {path}", policy.kind, POLICY_COST_HINT)
    served = [SERVED] * len(table.keys)
    as_served = policy.expected(table.texts, served, run) if reads_task(policy.kind) else expected
    served_choice = policy.decide(as_served, served)
    result.operating = policy_point(table, served_choice, policy)
    with_tasks = policy.decide(expected, table.tasks)
    if not np.array_equal(with_tasks, served_choice):
        result.operating["with_tasks"] = _shown(
            table, routing(with_tasks, table.scores, table.costs, policy.strong)
        )
    if specs is not None:
        result.warnings += _other_configs(
            policy.configs, policy.config_specs, specs, "the policy file"
        )
    seen = int(policy.seen(table.texts, table.tasks, run).sum())
    if seen:
        result.warnings.append(
            f"in-sample: the policy was fitted on {seen:,} of these {len(table.keys):,} queries, "
            "so these figures overstate it; --cv K or --split-by FIELD evaluate it out of sample"
        )
    elif policy.fitted_on is None:
        result.warnings.append(
            f"the policy file {path} does not record which queries it was fitted on (files of "
            "the first format kept none): if these are among them, these figures overstate it; "
            "--cv K or --split-by FIELD evaluate it out of sample"
        )
    return result


FIGURES = ("accuracy", "cost", "strong_fraction")


def policy_point(table: Table, served_choice: np.ndarray, policy: Policy) -> dict[str, Any]:
    """Where the policy itself routes these items as `serve --policy` does (no task known, at
    the λ it keeps for that: `served_choice`, each item's configuration): the accuracy, mean
    cost and share to its strongest configuration it gives, beside the target it was fitted for
    and what its calibration promised (out of fold, on the run it was fitted on)."""
    point = routing(served_choice, table.scores, table.costs, policy.strong)
    promised = {k: float(policy.calibration[k]) for k in FIGURES if k in policy.calibration}
    return {
        "lam": float(policy.lams([SERVED])[0]),
        **_shown(table, point),
        "strong": policy.configs[policy.strong],
        "target": dict(policy.target),
        "promised": _shown(table, promised),
    }


def _shown(table: Table, figures: dict[str, float]) -> dict[str, float]:
    """`figures` less the cost where nothing is priced (the ranks that order the configurations
    of outcomes imported without costs are no costs)."""
    if table.cost_axis == NO_COSTS:
        return {k: v for k, v in figures.items() if k != "cost"}
    return figures
