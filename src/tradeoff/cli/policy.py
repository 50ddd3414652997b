"""`tradeoff policy fit` and `tradeoff policy eval`: a per-query router fitted on a run's records,
and its evaluation as RouteLLM does it."""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tradeoff.analysis.costs import same_unit
from tradeoff.cli.output import (
    COST_METAVAR,
    ListFormat,
    check_plot,
    check_writable,
    console,
    cost_choice,
    err_console,
    file_option,
    write_json,
    writing,
)
from tradeoff.errors import UserError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tradeoff.policy.evaluate import Evaluation
    from tradeoff.policy.routers import Featurizer


@contextlib.contextmanager
def _naming(run: Path, role: str) -> Iterator[None]:
    """A refusal about one of two runs names which one it is about."""
    try:
        yield
    except UserError as e:
        raise UserError(f"{run} ({role}): {e}") from None


def _names(configs: str | None) -> list[str] | None:
    """--configs' names, in order; a name given twice is refused (nothing to route between)."""
    if configs is None:
        return None
    names = [c.strip() for c in configs.split(",") if c.strip()]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"--configs names {', '.join(twice)} twice; give each configuration once")
    return names


ROUTER_HELP = (
    "Router family: words-lr (hashed words, logistic regression; nothing to install, fastest), "
    "embed-lr, embed-knn, mf (two-tower, for many configurations), ensemble (embed-knn and "
    "embed-lr stacked: the best on queries unlike the training set). All but words-lr read "
    "sentence embeddings: pip install 'tradeoff\\[embed]'."
)


def _features(router: str, run: Path) -> Featurizer:
    """The router's features for a run's queries; embeddings are cached in its store where it
    can be written, with a progress line while they are computed."""
    from tradeoff.policy.routers import ROUTERS, Featurizer
    from tradeoff.store import can_write

    if ROUTERS[router].features == "words":
        return Featurizer(router)
    kept = "kept in its store" if can_write(run) else "not kept: it cannot be written"

    def progress(done: int, total: int) -> None:
        err_console.print(
            f"embedding {done:,}/{total:,} queries of {run} ({kept})",
            highlight=False,
            soft_wrap=True,
        )

    return Featurizer(router, run, progress)


# A router fitted out of fold says how far it got once its folds have taken this long.
QUIET_FOLDS_S = 5.0


def _fold_progress(router: str, what: str) -> Callable[[int, int], None]:
    """A line for each fold fitted, from the first to end past QUIET_FOLDS_S: a large run's
    folds took minutes with nothing shown (20,000 items: 100 s)."""
    start = time.monotonic()

    def fitted(done: int, folds: int) -> None:
        took = time.monotonic() - start
        if took >= QUIET_FOLDS_S:
            err_console.print(
                f"{what}: router '{router}' fitted on {done} of {folds} folds ({took:.0f} s)",
                highlight=False,
                soft_wrap=True,
            )

    return fitted


def fit(
    directory: Annotated[Path, typer.Argument(help="A run directory with records.")],
    out: Annotated[
        Path,
        file_option("--out", "-o", help="Policy file to write (JSON)."),
    ],
    configs: Annotated[
        str | None,
        typer.Option(
            help="Configurations to choose between: A,B[,C...] (default: both of a run that "
            "has two)."
        ),
    ] = None,
    target_accuracy: Annotated[
        float | None, typer.Option(help="Cheapest routing reaching this accuracy.")
    ] = None,
    budget: Annotated[
        float | None,
        typer.Option(
            help="Most accurate routing within this mean cost per query, in the --cost axis's "
            "unit (latency s, energy J, tokens, flops GFLOPs, dollars $, given: as imported)."
        ),
    ] = None,
    strong_fraction: Annotated[
        float | None, typer.Option(help="Share of queries for the most accurate configuration.")
    ] = None,
    cost: Annotated[
        str,
        typer.Option(
            parser=cost_choice,
            metavar=COST_METAVAR,
            help="What a query costs (given: the costs of imported outcomes).",
        ),
    ] = "auto",
    router: Annotated[str, typer.Option(metavar="NAME", help=ROUTER_HELP)] = "words-lr",
) -> None:
    """Learn which configuration to use per query, calibrated to one target.

    Calibrated on out-of-fold predictions (5 folds over items), whose figures it prints; the
    router is then refitted on every item. `policy eval --split-by` says how it transfers to
    queries unlike these.
    """
    from tradeoff.policy.fit import NO_COSTS, fit_policy, run_prices, run_table
    from tradeoff.policy.routers import resolve_router

    targets = {
        k: v
        for k, v in {
            "accuracy": target_accuracy,
            "budget": budget,
            "strong_fraction": strong_fraction,
        }.items()
        if v is not None
    }
    if len(targets) != 1:
        raise UserError("give exactly one of --target-accuracy, --budget, --strong-fraction")
    if strong_fraction is not None and not 0.0 <= strong_fraction <= 1.0:
        raise UserError("--strong-fraction is a share: give a number in [0, 1]")
    if target_accuracy is not None and not 0.0 <= target_accuracy <= 1.0:
        raise UserError("--target-accuracy is a mean score: give a number in [0, 1]")
    if budget is not None and not 0.0 <= budget < math.inf:
        raise UserError("--budget is a mean cost per query: give a number >= 0")
    kind = resolve_router(router)
    check_writable("--out", out)
    table, specs = run_table(directory, _names(configs), cost)
    policy = fit_policy(
        table, targets, specs, kind, _features(kind, directory), run_prices(directory),
        _fold_progress(kind, "calibrating"),
    )  # fmt: skip
    policy.save(out)
    cal = policy.calibration
    gained = (
        f"; APGR {cal['apgr']:.3f} (random 0.50 ± {2 * cal['apgr_spread']:.2f})"
        if "apgr" in cal
        else ""
    )
    if table.cost_axis == NO_COSTS:
        costs, mean = "no costs (imported without them)", ""
    else:
        costs = f"cost {table.cost_axis}"
        mean = f"mean cost {cal['cost']:.4g} {table.cost_unit}, "
    console.print(
        f"wrote {out}: router {kind}, {len(table.configs)} configurations, {len(table.keys)} "
        f"items, {costs}; calibrated out of fold ({cal['evaluation']}): accuracy "
        f"{cal['accuracy']:.3f}, {mean}{cal['strong_fraction']:.0%} to "
        f"{table.configs[policy.strong]}{gained}",
        soft_wrap=True,
        highlight=False,
    )
    for warning in policy.warnings():
        err_console.print(f"warning: {warning}", style="yellow", highlight=False, soft_wrap=True)


def _keep(directory: Path, result: Evaluation) -> None:
    """The evaluation, stored with the run (its report shows the latest of each pair); a run
    this process cannot write (read as it is, or through a copy) keeps nothing, and a note says
    why."""
    from tradeoff.store import Store

    store = Store.open(directory)
    try:
        if store.writable:
            store.add_evaluation("router", result.to_dict())
    finally:
        store.close()
    if not store.writable:
        err_console.print(
            f"note: the evaluation is not kept with the run: {directory} {store.not_kept}",
            style="yellow",
            highlight=False,
            soft_wrap=True,
        )


def evaluate(
    directory: Annotated[Path, typer.Argument(help="A run directory with records.")],
    policy: Annotated[Path | None, typer.Option(help="Evaluate this policy file.")] = None,
    cv: Annotated[
        int | None, typer.Option(help="Or fit and evaluate with K-fold cross-validation.")
    ] = None,
    configs: Annotated[
        str | None,
        typer.Option(
            help="A,B[,C...] (with --cv; default: both of a run that has two; a policy names "
            "its own)."
        ),
    ] = None,
    cost: Annotated[
        str,
        typer.Option(
            parser=cost_choice, metavar=COST_METAVAR, help="Cost axis, as for policy fit."
        ),
    ] = "auto",
    split_by: Annotated[
        str | None,
        typer.Option(
            metavar="FIELD",
            help="With --cv (default 5): folds of whole groups of this item field (task, or a "
            "column kept by `import outcomes`, e.g. subject), so that no group is both fitted "
            "on and evaluated: how the router does on queries unlike its training set.",
        ),
    ] = None,
    train: Annotated[
        Path | None,
        typer.Option(
            metavar="RUN",
            help="Or fit on every item of this run and evaluate on DIRECTORY's (its items not "
            "in RUN): the configurations are matched by name (warned of where their specs "
            "differ).",
        ),
    ] = None,
    router: Annotated[
        str | None, typer.Option(metavar="NAME", help="With --cv or --train: " + ROUTER_HELP)
    ] = None,
    format: Annotated[ListFormat, typer.Option("--format", "-f")] = ListFormat.table,
    plot: Annotated[
        Path | None,
        file_option(
            "--plot",
            "-p",
            help="Also draw the curves to a .png or .html.",
        ),
    ] = None,
) -> None:
    """Router curves and metrics, beside the oracle and the random router.

    AUC, APGR, CPT(50%), CPT(80%) and the cost saved at 95% of the strongest configuration's
    accuracy. The evaluation is kept with the run where it can be written: `tradeoff report DIR
    --html` draws it.
    """
    from tradeoff.policy.evaluate import evaluate_cv, evaluate_policy
    from tradeoff.policy.fit import SCORES_ONLY, Policy, run_table
    from tradeoff.policy.routers import resolve_router

    if split_by is not None and (policy is not None or train is not None):
        raise UserError("--split-by goes with --cv K, not with --policy or --train")
    cv = 5 if split_by is not None and cv is None else cv
    if sum(x is not None for x in (policy, cv, train)) != 1:
        raise UserError("give one of --policy FILE, --cv K or --train RUN")
    if policy is not None and router is not None:
        raise UserError("--router goes with --cv K or --train RUN; a policy names its own")
    if policy is not None and (configs is not None or cost != "auto"):
        raise UserError(
            "--configs and --cost go with --cv K or --train RUN; a policy names its own "
            "configurations and cost axis"
        )
    check_plot(plot)
    kind = resolve_router(router or "words-lr") if policy is None else ""
    if train is not None:
        from tradeoff.policy.evaluate import evaluate_transfer

        with _naming(train, "the run fitted on"):  # its scores alone: the router fits those
            fitted_on, fitted_specs = run_table(train, _names(configs), SCORES_ONLY)
        with _naming(directory, "the run evaluated"):  # its own costs: the router uses none
            table, specs = run_table(directory, fitted_on.configs, cost)
        features = (_features(kind, train), _features(kind, directory))
        result = evaluate_transfer(
            fitted_on, table, str(train), kind, features, (fitted_specs, specs)
        )
    elif policy is not None:
        fitted = Policy.load(policy)
        hint = "the policy was fitted on that cost axis: fit one on this run to evaluate it here"
        table, specs = run_table(directory, fitted.configs, fitted.cost_axis, missing_hint=hint)
        if (
            fitted.cost_unit
            and table.cost_unit
            and not same_unit(fitted.cost_unit, table.cost_unit)
        ):
            raise UserError(
                f"{policy} was fitted on costs in {fitted.cost_unit}; those of {directory} are "
                f"in {table.cost_unit}: fit a policy on this run to evaluate it here"
            )
        result = evaluate_policy(table, fitted, str(policy), directory, specs)
    else:
        if cv is None or cv < 2:
            raise UserError(f"--cv {cv} leaves no items to train on; give at least 2")
        table, _ = run_table(directory, _names(configs), cost)
        if split_by is None and cv > len(table.keys):  # folds of groups: as many as there are
            raise UserError(
                f"--cv {cv} is more than the {len(table.keys)} items of {directory}; "
                f"give at most {len(table.keys)}"
            )
        result = evaluate_cv(
            table, cv, split_by=split_by, router=kind, features=_features(kind, directory),
            on_fold=_fold_progress(kind, "evaluating"),
        )  # fmt: skip
    for warning in result.warnings:
        err_console.print(f"warning: {warning}", style="yellow", highlight=False, soft_wrap=True)
    if plot is not None:
        from tradeoff.report.charts import write_router

        with writing(plot):
            write_router(result, plot)
        err_console.print(f"wrote {plot}", highlight=False, soft_wrap=True)
    _show(result, format)
    _keep(directory, result)


def _show(result: Evaluation, format: ListFormat) -> None:
    """The evaluation on stdout: JSON, or its heading, the policy's own point and the tables."""
    from tradeoff.report.router_table import (
        ROUTER_NOTE,
        policy_line,
        router_heading,
        router_tables,
    )

    if format is ListFormat.json:
        write_json(result.to_dict())
        return
    console.print(router_heading(result), soft_wrap=True, highlight=False)
    if line := policy_line(result):
        console.print(line, soft_wrap=True, highlight=False)
    for table_out in router_tables(result):
        console.print(table_out, crop=False)
    console.print(ROUTER_NOTE, style="dim")
