"""Fit a per-query policy on stored records: predict each configuration's score from the query,
then route each query to argmax_j (expected score_j - lambda * cost_j), lambda calibrated to a
target accuracy, a budget, or a share of calls to the strongest configuration.

Calibration uses out-of-fold predictions (5 folds over items), so the target is met on queries the
predictor did not see; the final predictor is then refitted on every item. The same predictions
say whether the policy routes better than random at all (`Policy.warnings`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradeoff.analysis.compare import SERVED
from tradeoff.analysis.costs import (
    AUTO,
    COST_AXES,
    given_costs,
    imported,
    record_costs,
    resolve,
    unit,
)
from tradeoff.analysis.metrics import scored
from tradeoff.analysis.operating_point import hour_shared, models_of
from tradeoff.analysis.router import (
    apgr,
    choose,
    lambda_curve,
    no_gap,
    random_apgr_spread,
    router_curve,
)
from tradeoff.config import Price
from tradeoff.errors import UserError
from tradeoff.paths import written_whole
from tradeoff.policy import embed
from tradeoff.policy.features import TOKENS, prompt_text
from tradeoff.policy.routers import (
    Featurizer,
    Router,
    WordsLR,
    load_router,
    new_router,
    reads_task,
)
from tradeoff.resumes import how_to_continue, unfinished
from tradeoff.store import Store

# What to do where the cost axis asked for is missing: the CLI's own advice, unless a policy
# fixes the axis (`policy eval --policy`)
MISSING_COST_HINT = "choose another with --cost"
# The cost axis of outcomes imported without costs: every configuration counts 0 (a policy
# fitted on them keeps it, so that `policy eval --policy` reads the run the same way).
NO_COSTS = "none"
# The cost axes a policy can be fitted on (and its file keep)
FITTED_AXES = (*COST_AXES, NO_COSTS)
# A table read for its scores alone (`policy eval --train`: the run fitted on), costed as none.
SCORES_ONLY = "scores only"


@dataclass
class Table:
    """Per-item outcomes of some configurations: scores and costs (N x M), and the queries."""

    configs: list[str]
    keys: list[tuple[str, str]]  # (task, item_id)
    texts: list[str]
    tasks: list[str]
    scores: np.ndarray
    costs: np.ndarray
    cost_axis: str
    meta: list[dict[str, Any]] = field(default_factory=list)  # each item's metadata, in order
    cost_unit: str = ""  # the axis's unit for these records (`analysis.costs.unit`)

    def subset(self, keep: np.ndarray) -> Table:
        """The items where `keep` (a boolean mask) is true."""
        at = np.flatnonzero(keep)
        return Table(
            configs=self.configs,
            keys=[self.keys[i] for i in at],
            texts=[self.texts[i] for i in at],
            tasks=[self.tasks[i] for i in at],
            scores=self.scores[at],
            costs=self.costs[at],
            cost_axis=self.cost_axis,
            meta=[self.meta[i] for i in at] if self.meta else [],
            cost_unit=self.cost_unit,
        )

    def groups(self, name: str) -> list[str]:
        """Each item's value of field `name` (`task`, or a metadata field such as a column kept
        by `import outcomes`); a field some items lack is one line naming the fields they have.
        A column every item keeps wins over the item's own field of that name: an imported
        file's `task` column, not the one task name the import gave every row. Else `task` is
        the task each item was run under, where no item has the column or the run has several
        tasks (a profiled run: one data file's `task` field does not split the others)."""
        if self.meta and all(name in m for m in self.meta):
            return [str(m[name]) for m in self.meta]
        if name == "task" and _run_tasks_split(self.meta, self.tasks):
            return list(self.tasks)
        # (a `task` column some items of one task lack is refused too: their own task, the
        # import's one name for every row, would read as one group of them)
        metas = self.meta or [{}] * len(self.keys)
        lacking = [i for i, m in enumerate(metas) if name not in m]
        if lacking:
            raise UserError(
                f"--split-by {name}: {len(lacking):,} of {len(self.keys):,} items have no field "
                f"{name!r}; {_fields(metas, self.tasks)}"
            )
        return [str(m[name]) for m in self.meta]


def _run_tasks_split(metas: list[dict[str, Any]], tasks: list[str]) -> bool:
    """Whether `task` means the task each item was run under: no item has a `task` column, or
    the items were run under several tasks."""
    return not any("task" in m for m in metas) or len(set(tasks)) > 1


def _fields(metas: list[dict[str, Any]], tasks: list[str]) -> str:
    """The fields a split can use, those every item has (and its task, where `task` means the
    task each item was run under), then the ones only some items have."""
    kept = [set(m) for m in metas]
    every = set.intersection(*kept) | ({"task"} if _run_tasks_split(metas, tasks) else set())
    some = set.union(*kept) - every
    named = f"fields every item has: {', '.join(sorted(every)) or 'none'}"
    return named + (f"; only some have: {', '.join(sorted(some))}" if some else "")


def outcome_table(
    records: pd.DataFrame,
    items: pd.DataFrame,
    configs: list[str] | None,
    cost: str = "auto",
    missing_hint: str = MISSING_COST_HINT,
    stored: list[str] | None = None,
    run_state: str = "",
) -> Table:
    """Scores and costs per item for `configs` (mean over samples), only items all of them ran;
    None: the run's configurations, when it has exactly two.

    Costs are on the axis `cost` names (`analysis.costs`), `auto` resolved on the records of
    `configs`. A failed record scores 0 and its cost counts, as in every summary of a run.
    `stored`: the run's configurations (None: those of the records), some of which may have no
    record yet; `run_state`: how the run stands and goes on, where it did not finish.
    """
    if records.empty:
        raise UserError(
            "the run has no records yet (no query answered): a policy learns from scored "
            "outcomes; profile the run first, or give imported outcomes"
        )
    answered = list(dict.fromkeys(records["config"]))
    known = stored or answered
    if configs is None:
        if len(known) != 2:
            has = f"{len(known)} configuration(s)" + (f" ({', '.join(known)})" if known else "")
            raise UserError(
                f"the run has {has}: "
                + (
                    "choose between them with --configs A,B[,C...]"
                    if len(known) > 2
                    else "a policy chooses between at least two"
                )
            )
        configs = known
    unknown = [c for c in configs if c not in known]
    if unknown:
        raise UserError(
            f"configuration '{unknown[0]}' is not in this run; known: {', '.join(known)}"
        )
    if silent := [c for c in configs if c not in answered]:
        named = ", ".join(f"'{c}'" for c in silent)
        have = "has" if len(silent) == 1 else "have"
        raise UserError(
            f"configuration{'s' * (len(silent) > 1)} {named} {have} no records yet"
            + (
                f": the run {run_state}"
                if run_state
                else f" (no query of {'it' if len(silent) == 1 else 'them'} answered); those "
                f"that have: {', '.join(answered)}"
            )
        )
    if len(configs) < 2:
        raise UserError("a policy chooses between at least two configurations: --configs A,B")
    df = records[records["config"].isin(configs)].copy()
    given = given_costs(df)
    unpriced_import = bool(imported(df).all() and given.isna().all())
    if cost == AUTO and imported(df).all() and given.notna().any() and given.isna().any():
        unpriced = df.loc[given.isna(), "config"].iloc[0]
        raise UserError(
            f"costs were imported for some configurations but not for '{unpriced}': import the "
            "outcomes again with cost= on every --model (cost=0 for a free one)"
        )
    if cost == NO_COSTS and not unpriced_import:
        raise UserError(
            "the policy was fitted on outcomes imported without costs, and these records have "
            "costs; fit a policy on this run (tradeoff policy fit) to evaluate it here"
        )
    if cost in (NO_COSTS, SCORES_ONLY) or (cost == AUTO and unpriced_import):
        # Outcomes imported without costs: none to trade; each configuration costs its rank by
        # accuracy (`ranked`), never shown. `fit_policy` refuses a budget that nothing prices.
        df["cost"], axis_name, axis_unit = 0.0, NO_COSTS, ""
    else:
        axis = resolve(cost, df)
        df["cost"] = record_costs(df, axis)
        axis_name, axis_unit = axis.name, unit(axis, df)
        if df["cost"].isna().any():
            raise UserError(
                f"cost '{axis.name}' is missing for some records ({axis.missing(df, records)}); "
                f"{missing_hint}"
            )
    if df["score"].isna().all():
        raise UserError(
            "the run's records have no scores (served traffic, or a task without a reference): "
            "a policy learns from scored outcomes; give a profiled run or imported outcomes"
        )
    df = df[scored(df)]
    df["score"] = df["score"].fillna(0.0).where(df["error"].isna(), 0.0)
    grouped = df.groupby(["task", "item_id", "config"])[["score", "cost"]].mean()
    scores = grouped["score"].unstack("config")[configs].dropna()
    costs = grouped["cost"].unstack("config")[configs].loc[scores.index]
    prompts = {
        (t, i): prompt_text(p)
        for t, i, p in items[["task", "item_id", "prompt"]].itertuples(index=False)
    }
    metas = {
        (t, i): m or {} for t, i, m in items[["task", "item_id", "meta"]].itertuples(index=False)
    }
    keys = [(str(task), str(item)) for task, item in scores.index]
    if len(keys) < 10:
        raise UserError(
            f"only {len(keys)} items were run by every configuration; a policy needs at least 10"
        )
    score_table = scores.to_numpy(dtype=float)
    return Table(
        configs=configs,
        keys=keys,
        texts=[prompts.get(k, "") for k in keys],
        tasks=[k[0] for k in keys],
        scores=score_table,
        costs=ranked(score_table) if axis_name == NO_COSTS else costs.to_numpy(dtype=float),
        cost_axis=axis_name,
        meta=[metas.get(k, {}) for k in keys],
        cost_unit=axis_unit,
    )


def ranked(scores: np.ndarray) -> np.ndarray:
    """Outcomes imported without costs: each configuration's rank by mean score (0 the least
    accurate) as its cost on every item, never shown. Nothing else orders them for a λ sweep:
    at equal costs it had one routing (each query to its best predicted), so among three
    configurations APGR read 0.50 on outcomes a router predicts exactly, and an accuracy the
    strongest alone reaches was out of reach."""
    order = np.argsort(np.argsort(scores.mean(axis=0), kind="stable"), kind="stable")
    return np.broadcast_to(order.astype(float), scores.shape).copy()


def task_shares(tasks: list[str]) -> dict[str, float]:
    """Each task's share of the queries a router is fitted on."""
    return {t: n / len(tasks) for t, n in sorted(Counter(tasks).items())}


def task_mixture(
    expected: np.ndarray,
    router: Router,
    features: Featurizer,
    texts: list[str],
    tasks: list[str],
    shares: dict[str, float],
) -> np.ndarray:
    """`expected` with each query of a task the router was not fitted on (not in `shares`)
    scored as the mixture of the tasks it was, by their shares: a words router reads the task,
    and had learnt nothing of this one's. How a policy scores it, so also how a held-out task is
    evaluated (`--train`, `--split-by task`: they scored its task feature raw)."""
    unknown = [i for i, task in enumerate(tasks) if task not in shares]
    if not (shares and unknown and reads_task(features.kind)):
        return expected
    mixed = expected.copy()
    mixed[unknown] = mixture(router, features, [texts[i] for i in unknown], shares)
    return mixed


def mixture(
    router: Router, features: Featurizer, texts: list[str], shares: dict[str, float]
) -> np.ndarray:
    """Expected scores of `texts` as the mean over the tasks of `shares`, weighted by them: how a
    router that reads the task scores a query whose task it does not know."""
    return np.asarray(
        sum(
            share * router.expected(features(texts, [task] * len(texts)))
            for task, share in shares.items()
        )
    )


def folds(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    """k disjoint index sets covering range(n), shuffled with `seed`; none empty."""
    if not 2 <= k <= n:
        raise UserError(f"cannot split {n} items into {k} folds: give between 2 and {n}")
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::k] for i in range(k)]


def group_folds(groups: list[str], k: int, seed: int = 0) -> list[np.ndarray]:
    """Folds of whole groups: the distinct values of `groups` shuffled with `seed` and dealt to
    min(k, groups) folds, each fold the items of its groups; no group is in two folds."""
    names = sorted(set(groups))
    if len(names) < 2:
        raise UserError(
            f"every item is in one group ({names[0] if names else 'none'}): a grouped split "
            "needs at least two; choose another --split-by field"
        )
    sizes = pd.Series(groups).value_counts()
    if (sizes == 1).any():
        single = sizes[sizes == 1].index
        raise UserError(
            f"{len(single):,} of {len(names):,} groups have a single item (e.g. {single[0]!r}): "
            "a grouped split needs groups of at least 2; choose a coarser --split-by field"
        )
    order = np.random.default_rng(seed).permutation(len(names))
    fold_of = {names[g]: i % min(k, len(names)) for i, g in enumerate(order)}
    index = np.array([fold_of[g] for g in groups])
    return [np.flatnonzero(index == f) for f in range(min(k, len(names)))]


def out_of_fold(
    x: np.ndarray,
    scores: np.ndarray,
    k: int = 5,
    seed: int = 0,
    groups: list[str] | None = None,
    router: str = WordsLR.kind,
    queries: tuple[list[str], list[str], Featurizer] | None = None,
    why: str = "",
    as_served: bool = False,
    on_fold: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Expected scores for every item from a `router` that never saw it: k folds over items, or
    over whole `groups` (a group's items are fitted and evaluated in none of the same folds).
    Items of the same features (one query under several ids) share a fold, or with `groups`,
    the copies of a held-out query in other groups are left out of its fold's fitting: otherwise
    the router is scored on a query it was fitted on. Where every item differs, the folds are
    `folds`' (or `group_folds`').
    `queries` (the items' texts, tasks and the features of `x`): a fold's queries of a task its
    router was not fitted on are scored as a policy scores them (`task_mixture`); `as_served`:
    every held-out query is, its task unknown as a served one's. `why`: where the folds come
    from, when the user did not ask for them. `on_fold(done, k)` follows the folds fitted."""
    out = np.zeros_like(scores, dtype=float)
    first: dict[bytes, int] = {}
    query = np.array([first.setdefault(row.tobytes(), len(first)) for row in x])
    if groups is None:
        if len(first) < k <= len(x):
            raise UserError(
                f"the {len(x):,} items hold only {len(first):,} distinct queries (one query "
                f"under several ids is one), too few for {k} folds{why}: a router learns from "
                "distinct queries"
            )
        split = [np.flatnonzero(np.isin(query, f)) for f in folds(len(first), k, seed)]
    else:
        split = group_folds(groups, k, seed)
    for done, test in enumerate(split, 1):
        # A held-out query's copies in other groups are not fitted on either
        train = np.flatnonzero(~np.isin(query, query[test]))
        if not len(train):  # folds of groups only: plain folds deal whole queries
            names = sorted({groups[i] for i in test}) if groups else []
            raise UserError(
                f"every item outside the group(s) {', '.join(names[:3])}"
                f"{', ...' if len(names) > 3 else ''} repeats one of their queries (one query "
                "under several ids is one): no item left to fit on; choose another --split-by "
                "field"
            )
        fitted = new_router(router).fit(x[train], scores[train])
        out[test] = fitted.expected(x[test])
        if queries is not None:
            texts, tasks, features = queries
            shares = task_shares([tasks[i] for i in train])
            held = [SERVED] * len(test) if as_served else [tasks[i] for i in test]
            out[test] = task_mixture(
                out[test], fitted, features, [texts[i] for i in test], held, shares
            )
        if on_fold:
            on_fold(done, len(split))
    return out


# Calibration sweeps at most this many λ (evenly ranked breakpoints): cheap on large runs.
SWEEP_POINTS = 512


def sweep(
    expected: np.ndarray, scores: np.ndarray, costs: np.ndarray, mean_costs: np.ndarray, strong: int
) -> pd.DataFrame:
    """Accuracy, mean cost and strong share of the routed choices at every λ where some query's
    choice changes (`analysis.router.lambda_curve`: past 0 both ways, from every query on its
    cheapest configuration to every one on its dearest), in order of λ."""
    curve = lambda_curve(
        expected,
        np.broadcast_to(mean_costs, expected.shape),
        scores,
        costs,
        strong=strong,
        max_points=SWEEP_POINTS,
    )
    return pd.DataFrame(
        {
            "lam": curve.knob,
            "accuracy": curve.accuracy,
            "cost": curve.cost,
            "strong_fraction": curve.strong_fraction,
        }
    ).sort_values("lam", ignore_index=True)


def _share_lam(expected: np.ndarray, mean_costs: np.ndarray, strong: int, share: float) -> float:
    """Two configurations: the λ that sends `share` of the queries to the strong one, that
    quantile of their predicted gain of it per unit of cost."""
    weak = 1 - strong
    gain = (expected[:, strong] - expected[:, weak]) / (mean_costs[strong] - mean_costs[weak])
    # The strong one answers where the gain is above λ (a tie goes to the cheaper): λ lies
    # halfway between the k-th largest gain and the next, or past the ends (the quantile itself
    # sat on a query, so a share of 1 left one query on the weak one).
    ranked = np.sort(gain)[::-1]
    k = int(round(share * len(ranked)))
    margin = 1e-6 * (1.0 + float(np.abs(ranked).max()))
    if k >= len(ranked):
        return float(ranked[-1] - margin)
    if k == 0:
        return float(ranked[0] + margin)
    return float((ranked[k - 1] + ranked[k]) / 2)


def routed(
    expected: np.ndarray,
    scores: np.ndarray,
    costs: np.ndarray,
    mean_costs: np.ndarray,
    strong: int,
    lam: float,
) -> dict[str, float]:
    """Routing by `expected` at `lam`: the accuracy, mean cost and strong share it gives."""
    return {"lam": lam, **routing(choose(expected, mean_costs, lam), scores, costs, strong)}


def routing(
    choice: np.ndarray, scores: np.ndarray, costs: np.ndarray, strong: int
) -> dict[str, float]:
    """The accuracy, mean cost and strong share of sending each query to its `choice` (a
    column of `scores` and `costs`)."""
    rows = np.arange(len(choice))
    return {
        "accuracy": float(scores[rows, choice].mean()),
        "cost": float(costs[rows, choice].mean()),
        "strong_fraction": float((choice == strong).mean()),
    }


def out_of_fold_apgr(table: Table, oof: np.ndarray, strong: int) -> tuple[float, float]:
    """APGR of routing by out-of-fold predictions, and the spread of a random order's APGR on
    these items (`analysis.router.random_apgr_spread`); nan when no configuration scores below
    the strongest."""
    s = table.scores
    means = s.mean(axis=0)
    weak = int(np.argmin(means))
    if no_gap(means[weak], means[strong]):
        return math.nan, math.nan
    curve = router_curve(oof, s, table.costs, weak, strong)
    spread = random_apgr_spread(s[:, weak], s[:, strong])
    return apgr(curve, float(means[weak]), float(means[strong])), spread


FORMAT = "tradeoff-policy/3"
# Format 2 lacks `served_lam`: a query of a task it was not fitted on routes at `lam`.
SERVED_LAM_ADDED = "tradeoff-policy/2"
DIGEST = 16  # hex characters of a training query's digest kept in the policy file

# Fewer items than this per configuration are too few to learn hashed word features from.
MIN_ITEMS_PER_CONFIG = 50


def _digests(texts: list[str], x: np.ndarray) -> list[tuple[str, str]]:
    """Each query's digests: of its text, and of its features as a router reads them (`x`, a
    row each)."""
    return [
        (embed.digest(text)[:DIGEST], hashlib.sha256(row.tobytes()).hexdigest()[:DIGEST])
        for text, row in zip(texts, x, strict=True)
    ]


def query_digests(texts: list[str], x: np.ndarray) -> set[str]:
    """The digests of queries (`_digests`) that `among` looks a query up in."""
    return {digest for pair in _digests(texts, x) for digest in pair}


def among(texts: list[str], x: np.ndarray, digests: set[str]) -> np.ndarray:
    """Which queries (texts, and their features `x`) are among those of `digests`
    (`query_digests`): the same text, or the same features, which to the router is the same
    query, as `out_of_fold` counts one (words-lr reads words casefolded: a query in capitals
    is the query it was fitted on)."""
    return np.array([a in digests or b in digests for a, b in _digests(texts, x)], dtype=bool)


@dataclass
class Policy:
    """A fitted mapping from a query to a configuration, with what it was calibrated for."""

    configs: list[str]
    config_specs: list[dict[str, Any]]
    cost_axis: str
    mean_costs: list[float]
    strong: int
    router: dict[str, Any]  # its kind and fitted state (`routers.py`)
    lam: float
    target: dict[str, float]
    calibration: dict[str, Any] = field(default_factory=dict)
    # Digests of the training queries (`query_digests`: of their texts, and in files fitted
    # since they were kept, of their features); None in files of the first format, which kept
    # none.
    fitted_on: list[str] | None = None
    # The training queries' tasks and each one's share: a query of another task (served
    # traffic, say) is scored as the mean over them, where the router reads the task
    tasks: dict[str, float] = field(default_factory=dict)
    # The unit of its costs (`mean_costs`, a budget target): another run's costs must share it.
    # "" in files fitted before it was kept: taken from imported configurations' own unit.
    cost_unit: str = ""
    # The fitted run's prices of the models its configurations call, by alias (as a spec's
    # `prices:`): `serve --policy`, which takes no spec, prices its records with them. None in
    # files fitted before they were kept.
    prices: dict[str, dict[str, Any]] | None = None
    # The λ for a query of a task the policy was not fitted on (every served one), scored as the
    # mixture over `tasks`: those predictions are flatter than with the task known, so at `lam`
    # served traffic like the training queries missed the target (90% to the weak configuration
    # of a policy fitted for 70%). Calibrated as `lam` is, on out-of-fold predictions, but with
    # each held-out query's task unknown. None: `lam` (a router that reads no task, a policy
    # fitted on one task, or a file of format 2).
    served_lam: float | None = None
    format: str = FORMAT

    def __post_init__(self) -> None:
        self._router: Router | None = None

    @property
    def kind(self) -> str:
        return str(self.router["kind"])

    def _features(self, run: str | Path | None) -> tuple[Router, Featurizer]:
        """Its router, and the features it reads (embeddings of a run directory's queries are
        read from, and kept in, its store)."""
        if self._router is None:
            self._router = load_router(self.router)
        tokens = getattr(self._router, "tokens", TOKENS)
        return self._router, Featurizer(self.kind, run, tokens=tokens)

    def expected(
        self, texts: list[str], tasks: list[str], run: str | Path | None = None
    ) -> np.ndarray:
        """Each configuration's expected score for each query."""
        router, featurizer = self._features(run)
        scores = router.expected(featurizer(texts, tasks))
        return task_mixture(scores, router, featurizer, texts, tasks, self.tasks)

    def seen(self, texts: list[str], tasks: list[str], run: str | Path | None = None) -> np.ndarray:
        """Which queries this policy was fitted on (an evaluation on them is in-sample): the
        same text, or the same features (`among`)."""
        _, featurizer = self._features(run)
        return among(texts, featurizer(texts, tasks), set(self.fitted_on or ()))

    def lams(self, tasks: list[str]) -> np.ndarray:
        """The λ each query is routed at: `lam` where its task is one the policy was fitted on,
        `served_lam` (where kept) otherwise."""
        other = self.lam if self.served_lam is None else self.served_lam
        return np.array([self.lam if task in self.tasks else other for task in tasks], dtype=float)

    def decide(self, expected: np.ndarray, tasks: list[str]) -> np.ndarray:
        """Each query's configuration (its index) from its expected scores (`Policy.expected`),
        at the λ of its task (`lams`)."""
        return choose(expected, np.asarray(self.mean_costs), self.lams(tasks))

    def choose(self, texts: list[str], tasks: list[str]) -> list[str]:
        return [self.configs[i] for i in self.decide(self.expected(texts, tasks), tasks)]

    def warnings(self) -> list[str]:
        """Why not to trust this policy, from its calibration (out of fold); empty if no reason."""
        cal, found = self.calibration, []
        items, floor = int(cal.get("items", 0)), MIN_ITEMS_PER_CONFIG * len(self.configs)
        if items < floor:
            found.append(
                f"{items} items are too few to learn a router from: fit on at least {floor} "
                f"({MIN_ITEMS_PER_CONFIG} for each of the {len(self.configs)} configurations it "
                "chooses among)"
            )
        share = self.target.get("strong_fraction")
        if share is not None and abs(cal.get("strong_fraction", share) - share) > 0.1:
            strongest = self.configs[self.strong]
            others = [c for i, c in enumerate(self.mean_costs) if i != self.strong]
            why = (
                f"{strongest} costs no more than the others on '{self.cost_axis}', so no "
                "trade of cost for accuracy sends queries away from it; choose another --cost"
                if all(self.mean_costs[self.strong] <= c for c in others)
                else "its predicted gains do not spread enough to draw a line there"
            )
            found.append(
                f"the strong share asked, {share:.0%}, could not be reached: out of fold the "
                f"policy sends {cal['strong_fraction']:.0%} to {strongest} ({why})"
            )
        gained, spread = cal.get("apgr", math.nan), cal.get("apgr_spread", math.nan)
        if gained <= 0.5 + 2 * spread:  # False when nan: no gap to recover
            found.append(
                f"out of fold, this policy routes no better than random: APGR {gained:.2f}, "
                f"random 0.50 ± {2 * spread:.2f} (2 standard deviations over {items} items)"
            )
        return found

    def _malformed(self) -> str | None:
        """What in a loaded file does not have the type or length a policy's fields have."""
        if not (isinstance(self.configs, list) and all(isinstance(c, str) for c in self.configs)):
            return "configs must be a list of configuration names"
        if len(set(self.configs)) < len(self.configs) or not all(c.strip() for c in self.configs):
            return "configs must name each configuration once, by a name that is not empty"
        n = len(self.configs)

        def number(x: Any) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        if not (isinstance(self.mean_costs, list) and len(self.mean_costs) == n):
            return f"mean_costs must give one cost for each of the {n} configurations"
        if not all(number(c) and c >= 0 for c in self.mean_costs):
            return "mean_costs must be finite numbers, none below 0"
        if not number(self.lam):
            return "lam must be a finite number"
        if self.served_lam is not None and not number(self.served_lam):
            return "served_lam must be a finite number, or left out"
        if not (isinstance(self.strong, int) and not isinstance(self.strong, bool)) or not (
            0 <= self.strong < n
        ):
            return f"strong must be the index of one of the {n} configurations"
        specs = self.config_specs
        if not (
            isinstance(specs, list) and len(specs) == n and all(isinstance(c, dict) for c in specs)
        ):
            return f"config_specs must describe each of the {n} configurations (a mapping each)"
        shares = self.tasks.values() if isinstance(self.tasks, dict) else [math.nan]
        if not (all(number(v) and 0 <= v <= 1 for v in shares) and sum(shares) <= 1 + 1e-6):
            return "tasks must map each task to its share of the training queries (0 to 1)"
        if not isinstance(self.cost_unit, str):
            return "cost_unit must be the unit of its costs, a string"
        if self.cost_axis not in FITTED_AXES:
            return f"cost_axis must be the axis it was fitted on, one of {', '.join(FITTED_AXES)}"
        target = self.target
        if not (
            isinstance(target, dict)
            and len(target) == 1
            and set(target) <= {"accuracy", "budget", "strong_fraction"}
            and all(number(v) for v in target.values())
        ):
            return "target must be one of accuracy, budget or strong_fraction, with a number"
        ((aim, value),) = target.items()
        if value < 0 or (aim != "budget" and value > 1):
            return f"target {aim} {value:g} is out of its range (a budget ≥ 0; a share 0 to 1)"
        calibration = self.calibration
        if not (
            isinstance(calibration, dict)
            and all(number(v) for k, v in calibration.items() if k != "evaluation")
            and isinstance(calibration.get("evaluation", ""), str)
        ):
            return "calibration must map its figures to numbers (and evaluation to a string)"
        if self.fitted_on is not None and not (
            isinstance(self.fitted_on, list) and all(isinstance(d, str) for d in self.fitted_on)
        ):
            return "fitted_on must list the training queries' digests"
        try:
            self.model_prices()
        except (TypeError, ValueError, AttributeError):  # pydantic's ValidationError too
            return "prices must map model aliases to prices (input, output, per_hour)"
        return None

    def model_prices(self) -> dict[str, Price]:
        """`prices` as a spec's: what each model's calls cost."""
        return {alias: Price(**price) for alias, price in (self.prices or {}).items()}

    def save(self, path: str | Path) -> None:
        try:
            with written_whole(path) as part:
                part.write_text(json.dumps(asdict(self)))
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror}") from None

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise UserError(f"policy file {path} does not exist") from None
        except (OSError, ValueError) as exc:
            raise UserError(f"policy file {path} is not readable JSON: {exc}") from None
        found = data.get("format") if isinstance(data, dict) else None
        if not isinstance(found, str) or not found.startswith("tradeoff-policy/"):
            raise UserError(f"{path} is not a tradeoff policy file (format {FORMAT})")
        if found == "tradeoff-policy/1":  # hashed words and their weights, before routers
            data["router"] = {"kind": WordsLR.kind, "dim": data.pop("dim", None)}
            data["router"]["weights"] = data.pop("weights", None)
        elif found not in (FORMAT, SERVED_LAM_ADDED):
            raise UserError(
                f"{path} is a policy of format {found}; this tradeoff reads {FORMAT}, "
                f"{SERVED_LAM_ADDED} and tradeoff-policy/1: fit it again with this version "
                "(`tradeoff policy fit`)"
            )
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - known):
            raise UserError(f"{path}: unknown field(s) {', '.join(unknown)} for {FORMAT}")
        data["format"] = FORMAT
        required = [f.name for f in fields(cls) if f.default is f.default_factory is MISSING]
        if missing := [name for name in required if name not in data]:
            raise UserError(f"{path} is not a complete {FORMAT} policy: no {', '.join(missing)}")
        policy = cls(**data)
        if not isinstance(policy.configs, list) or len(policy.configs) < 2:
            raise UserError(f"{path}: configs must list the policy's configurations' names")
        if problem := policy._malformed():
            raise UserError(f"{path}: {problem}; fit the policy again (`tradeoff policy fit`)")
        if not policy.cost_unit and policy.cost_axis == "given":  # imported, fitted before 7
            units = {str(s.get("cost_unit", "")) for s in policy.config_specs}
            policy.cost_unit = units.pop() if len(units) == 1 else ""
        try:
            policy._router = load_router(policy.router, len(policy.configs))
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from None
        return policy


def _apart(value: float, target: float) -> str:
    """`value` with enough figures (3 to 8) not to read as `target` as the message gives it."""
    for figures in range(3, 9):
        shown = f"{value:.{figures}g}"
        if float(shown) != float(f"{target:g}"):
            return shown
    return f"{value:.8g}"


def _rounding(value: float) -> float:
    """What a mean of many floats may be off by: a budget of 0.1 met exactly by a mean cost of
    0.1 that sums to 0.10000000000000002 was refused as out of reach."""
    return 1e-9 * max(abs(value), 1e-3)


def calibrate(curve: pd.DataFrame, target: dict[str, float], cost_unit: str = "") -> pd.Series:
    """The sweep row meeting the target: the cheapest reaching `accuracy`, the most accurate
    within `budget`, or the one whose strong share is closest to `strong_fraction`."""
    if "accuracy" in target:
        ok = curve[curve["accuracy"] >= target["accuracy"] - _rounding(target["accuracy"])]
        if ok.empty:
            best = _apart(curve["accuracy"].max(), target["accuracy"])
            raise UserError(f"no routing reaches accuracy {target['accuracy']:g} (best {best})")
        return ok.sort_values(["cost", "accuracy"], ascending=[True, False]).iloc[0]
    if "budget" in target:
        ok = curve[curve["cost"] <= target["budget"] + _rounding(target["budget"])]
        if ok.empty:
            cheapest, unit = curve["cost"].min(), f" {cost_unit}" if cost_unit else ""
            raise UserError(
                f"no routing costs at most {target['budget']:g}{unit} a query (cheapest "
                f"{_apart(cheapest, target['budget'])}{unit})"
            )
        return ok.sort_values(["accuracy", "cost"], ascending=[False, True]).iloc[0]
    gap = (curve["strong_fraction"] - target["strong_fraction"]).abs()
    return curve.loc[gap.idxmin()]


# A route among a policy's choices: its decisions and their costs would be hidden behind the
# outer route's, and the file it names could change under it unnoticed.
ROUTES_ITSELF = (
    "routes by a policy of its own; fit over the configurations it routes among (--configs)"
)


def fit_policy(
    table: Table,
    target: dict[str, float],
    config_specs: list[dict[str, Any]],
    router: str = WordsLR.kind,
    features: Featurizer | None = None,
    prices: dict[str, dict[str, Any]] | None = None,
    on_fold: Callable[[int, int], None] | None = None,
) -> Policy:
    """A policy choosing among the table's configurations with a `router` (its kind), calibrated
    to `target` on 5-fold out-of-fold predictions, then refitted on every item; a router that
    reads the task, fitted on several, also keeps the λ that meets the target with the task
    unknown (`Policy.served_lam`). `prices`: the run's, by model alias (those of the
    configurations' models are kept). `on_fold`: as `out_of_fold`'s."""
    for name, spec in zip(table.configs, config_specs, strict=True):
        if spec.get("strategy") == "route":
            raise UserError(f"configuration '{name}' {ROUTES_ITSELF}")
    featurizer = features or Featurizer(router)
    x = featurizer(table.texts, table.tasks)
    mean_costs = table.costs.mean(axis=0)
    if "budget" in target and table.cost_axis == NO_COSTS:
        raise UserError(
            "outcomes imported without costs have no budget to keep to; import them with costs "
            "(--model NAME=COL,cost=PRICE), or fit to --target-accuracy or --strong-fraction"
        )
    if ("budget" in target or "strong_fraction" in target) and np.ptp(table.costs) == 0:
        raise UserError(
            f"every configuration costs the same on '{table.cost_axis}': a budget or a strong "
            "share has nothing to trade against; choose another --cost, or fit to "
            "--target-accuracy"
        )
    strong = int(np.argmax(table.scores.mean(axis=0)))
    shares = task_shares(table.tasks)
    as_served = reads_task(router) and len(shares) > 1  # else a query's task changes nothing
    passes = 2 if as_served else 1

    def folds_of(first: int) -> Callable[[int, int], None] | None:
        """`on_fold` over both passes: the second's folds counted after the first's."""
        if on_fold is None:
            return None
        return lambda done, k: on_fold(first * k + done, passes * k)

    oof = out_of_fold(
        x,
        table.scores,
        router=router,
        queries=(table.texts, table.tasks, featurizer),
        why=" (a policy is calibrated out of fold, on 5 folds)",
        on_fold=folds_of(0),
    )
    weak = 1 - strong
    priced_apart = len(table.configs) == 2 and mean_costs[strong] > mean_costs[weak]

    def calibrated(oof: np.ndarray) -> pd.Series:
        """Where routing by out-of-fold `oof` meets the target."""
        if "strong_fraction" in target and priced_apart:
            # Two configurations: the threshold on the predicted gain directly, as a quantile.
            lam = _share_lam(oof, mean_costs, strong, target["strong_fraction"])
            return pd.Series(routed(oof, table.scores, table.costs, mean_costs, strong, lam))
        # from no query to every one to the dearest, all-strong where it is the dearest
        curve = sweep(oof, table.scores, table.costs, mean_costs, strong)
        return calibrate(curve, target, table.cost_unit)

    row = calibrated(oof)
    fitted = new_router(router).fit(x, table.scores)
    lam = _transferred(row, target, fitted.expected(x), table, mean_costs, strong, priced_apart)
    served_lam = None
    if as_served:
        # Calibrated on its own out-of-fold predictions with the task unknown, as served: the
        # mixture is flatter, and reaches an accuracy only at a higher cost than with the task.
        served_oof = out_of_fold(
            x, table.scores, router=router, queries=(table.texts, table.tasks, featurizer),
            as_served=True, on_fold=folds_of(1),
        )  # fmt: skip
        served = mixture(fitted, featurizer, table.texts, shares)
        served_lam = _transferred(
            calibrated(served_oof), target, served, table, mean_costs, strong, priced_apart
        )
    calibration: dict[str, Any] = {
        "evaluation": "5-fold cross-validation over items",
        "items": float(len(table.keys)),
        "accuracy": float(row["accuracy"]),
        "cost": float(row["cost"]),
        "strong_fraction": float(row["strong_fraction"]),
    }
    gained, spread = out_of_fold_apgr(table, oof, strong)
    if not math.isnan(gained):  # the file stays strict JSON
        calibration.update(apgr=gained, apgr_spread=spread)
    return Policy(
        configs=table.configs,
        config_specs=config_specs,
        cost_axis=table.cost_axis,
        mean_costs=[float(c) for c in mean_costs],
        strong=strong,
        router={"kind": router, **fitted.state()},
        lam=lam,
        target=target,
        calibration=calibration,
        fitted_on=sorted(query_digests(table.texts, x)),
        tasks=shares,
        cost_unit=table.cost_unit,
        prices={
            alias: price
            for alias, price in (prices or {}).items()
            if any(alias in (spec.get("models") or {}) for spec in config_specs)
        },
        served_lam=served_lam,
    )


def _transferred(
    row: pd.Series,
    target: dict[str, float],
    final: np.ndarray,
    table: Table,
    mean_costs: np.ndarray,
    strong: int,
    priced_apart: bool,
) -> float:
    """The λ of the router fitted on every item that routes the training queries as the
    calibrated (out-of-fold) `row` did: the same strong share, or the same mean cost within the
    target. `final`: that router's expected scores of them (with their tasks, or as served).
    Its predictions on the items it was fitted on are sharper than the out-of-fold ones, so the
    calibrated λ itself routed otherwise (a policy calibrated to a budget of 2 spent 3.3 a query
    on its own training queries)."""
    if "strong_fraction" in target and priced_apart:
        return _share_lam(final, mean_costs, strong, target["strong_fraction"])
    curve = sweep(final, table.scores, table.costs, mean_costs, strong)
    if "strong_fraction" in target:
        gap = (curve["strong_fraction"] - row["strong_fraction"]).abs()
        return float(curve.loc[gap.idxmin(), "lam"])
    if "budget" in target:  # the dearest within the budget, as near the calibrated cost as that
        limit = min(row["cost"], target["budget"])
        within = curve[curve["cost"] <= limit + _rounding(limit)]
        chosen = within["cost"].idxmax() if not within.empty else curve["cost"].idxmin()
    else:  # accuracy: the cheapest that costs what the calibrated routing did
        enough = curve[curve["cost"] >= row["cost"] - _rounding(row["cost"])]
        chosen = enough["cost"].idxmin() if not enough.empty else curve["cost"].idxmax()
    return float(curve.loc[chosen, "lam"])


def run_prices(directory: str | Path) -> dict[str, dict[str, Any]]:
    """The prices of a run's spec, by model alias ({} for none, or an imported run)."""
    store = Store.open(directory)
    try:
        return dict(store.run()["spec"].get("prices") or {})
    finally:
        store.close()


def run_table(
    directory: str | Path,
    configs: list[str] | None,
    cost: str = "auto",
    missing_hint: str = MISSING_COST_HINT,
) -> tuple[Table, list[dict[str, Any]]]:
    """The outcome table of `configs` (None: both of a run that has two) in a run directory,
    and their stored specs (in order)."""
    store = Store.open(directory)
    try:
        stored, run = store.configs(), store.run()
        # a load run's measured requests (warm-up and cool-down are stored, never counted),
        # each costing its share of its point's hour, as `report` charges it
        records = hour_shared(
            store.records(measured=True), run["spec"].get("prices") or {}, models_of(stored)
        )
        state = unfinished(run)  # a configuration without records yet is named with it
        table = outcome_table(
            records, store.items(), configs, cost, missing_hint,
            stored=[c["name"] for c in stored],
            run_state=f"{state}{how_to_continue(run['spec'], directory)}" if state else "",
        )  # fmt: skip
        specs = {c["name"]: c["spec"] for c in stored}
    finally:
        store.close()
    return table, [specs.get(name, {}) for name in table.configs]
