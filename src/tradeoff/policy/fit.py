"""Fit a per-query policy on stored records: predict each configuration's score from the query,
then route each query to argmax_j (expected score_j - lambda * cost_j), lambda calibrated to a
target accuracy, a budget, or a share of calls to the strongest configuration.

Calibration uses out-of-fold predictions (5 folds over items), so the target is met on queries the
predictor did not see; the final predictor is then refitted on every item.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradeoff.errors import UserError
from tradeoff.policy.features import featurize, prompt_text
from tradeoff.policy.logistic import fit_logistic, predict

COSTS = ["auto", "energy", "latency", "tokens", "flops", "dollars", "given"]


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


def _record_cost(df: pd.DataFrame, axis: str) -> pd.Series:
    if axis == "energy":
        return df["energy_j"]
    if axis == "latency":
        return df["e2e_s"]
    if axis == "tokens":
        return df["input_tokens"].fillna(0) + df["output_tokens"]
    if axis == "flops":
        return df["flops"]
    if axis == "dollars":
        return df["cost_usd"]
    given = df["extra"].map(lambda e: json.loads(e).get("cost") if isinstance(e, str) else None)
    return pd.to_numeric(given, errors="coerce")


def pick_cost(records: pd.DataFrame) -> str:
    """energy where measured for every record, else the imported cost where given, else latency."""
    if records["energy_j"].notna().all():
        return "energy"
    if _record_cost(records, "given").notna().all():
        return "given"
    return "latency"


def outcome_table(
    records: pd.DataFrame, items: pd.DataFrame, configs: list[str], cost: str = "auto"
) -> Table:
    """Scores and costs per item for `configs` (mean over samples), only items all of them ran."""
    known = list(dict.fromkeys(records["config"]))
    unknown = [c for c in configs if c not in known]
    if unknown:
        raise UserError(
            f"configuration '{unknown[0]}' is not in this run; known: {', '.join(known)}"
        )
    if len(configs) < 2:
        raise UserError("a policy chooses between at least two configurations: --configs A,B")
    if cost not in COSTS:
        raise UserError(f"cost '{cost}' is not known; known: {', '.join(COSTS)}")
    df = records[records["config"].isin(configs)].copy()
    axis = pick_cost(df) if cost == "auto" else cost
    df["cost"] = _record_cost(df, axis)
    if df["cost"].isna().any():
        raise UserError(f"cost '{axis}' is missing for some records; choose another with --cost")
    df["score"] = df["score"].fillna(0.0)
    grouped = df.groupby(["task", "item_id", "config"])[["score", "cost"]].mean()
    scores = grouped["score"].unstack("config")[configs].dropna()
    costs = grouped["cost"].unstack("config")[configs].loc[scores.index]
    prompts = {
        (t, i): prompt_text(p)
        for t, i, p in items[["task", "item_id", "prompt"]].itertuples(index=False)
    }
    keys = [tuple(k) for k in scores.index]
    if len(keys) < 10:
        raise UserError(
            f"only {len(keys)} items were run by every configuration; a policy needs at least 10"
        )
    return Table(
        configs=configs,
        keys=keys,  # type: ignore[arg-type]
        texts=[prompts.get(k, "") for k in keys],  # type: ignore[call-overload]
        tasks=[k[0] for k in keys],
        scores=scores.to_numpy(dtype=float),
        costs=costs.to_numpy(dtype=float),
        cost_axis=axis,
    )


def fit_predictors(x: np.ndarray, scores: np.ndarray, l2: float = 1.0) -> np.ndarray:
    """One logistic predictor of P(score) per configuration: weights, shape (M, d)."""
    return np.stack([fit_logistic(x, scores[:, j], l2=l2) for j in range(scores.shape[1])])


def expected_scores(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.stack([predict(x, w) for w in weights], axis=1)


def folds(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    """k disjoint index sets covering range(n), shuffled with `seed`."""
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::k] for i in range(k)]


def out_of_fold(x: np.ndarray, scores: np.ndarray, k: int = 5, seed: int = 0) -> np.ndarray:
    """Expected scores for every item from predictors that never saw it (k-fold)."""
    out = np.zeros_like(scores, dtype=float)
    for test in folds(len(x), k, seed):
        train = np.setdiff1d(np.arange(len(x)), test)
        out[test] = expected_scores(x[test], fit_predictors(x[train], scores[train]))
    return out


def route(expected: np.ndarray, mean_costs: np.ndarray, lam: float) -> np.ndarray:
    """Index of the chosen configuration per query: argmax expected - lam * cost; ties go to the
    cheaper configuration."""
    value = expected - lam * mean_costs[None, :]
    order = np.argsort(mean_costs, kind="stable")
    return order[np.argmax(value[:, order], axis=1)]


def _lambdas(expected: np.ndarray, mean_costs: np.ndarray) -> np.ndarray:
    """Every lambda at which some query's choice can change, plus 0 and a lambda past all."""
    diffs = []
    m = len(mean_costs)
    for a in range(m):
        for b in range(m):
            dc = mean_costs[b] - mean_costs[a]
            if dc > 0:
                diffs.append((expected[:, b] - expected[:, a]) / dc)
    values = np.concatenate(diffs) if diffs else np.zeros(1)
    values = np.unique(values[values >= 0])
    if len(values) > 512:  # keep the sweep cheap on large runs: 512 evenly ranked breakpoints
        values = values[np.linspace(0, len(values) - 1, 512).astype(int)]
    top = values.max(initial=0) * 2 + 1
    return np.unique(np.concatenate([[0.0], values, values + 1e-12, [top]]))


def sweep(
    expected: np.ndarray, scores: np.ndarray, costs: np.ndarray, mean_costs: np.ndarray, strong: int
) -> pd.DataFrame:
    """Accuracy, mean cost and strong share of the routed choices at every lambda."""
    rows = []
    idx = np.arange(len(scores))
    for lam in _lambdas(expected, mean_costs):
        choice = route(expected, mean_costs, lam)
        rows.append(
            {
                "lam": float(lam),
                "accuracy": float(scores[idx, choice].mean()),
                "cost": float(costs[idx, choice].mean()),
                "strong_fraction": float((choice == strong).mean()),
            }
        )
    return pd.DataFrame(rows)


@dataclass
class Policy:
    """A fitted mapping from a query to a configuration, with what it was calibrated for."""

    configs: list[str]
    config_specs: list[dict[str, Any]]
    cost_axis: str
    mean_costs: list[float]
    strong: int
    dim: int
    weights: list[list[float]]
    lam: float
    target: dict[str, float]
    calibration: dict[str, float] = field(default_factory=dict)
    format: str = "tradeoff-policy/1"

    def expected(self, texts: list[str], tasks: list[str]) -> np.ndarray:
        return expected_scores(featurize(texts, tasks, self.dim), np.asarray(self.weights))

    def choose(self, texts: list[str], tasks: list[str]) -> list[str]:
        choice = route(self.expected(texts, tasks), np.asarray(self.mean_costs), self.lam)
        return [self.configs[i] for i in choice]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise UserError(f"policy file {path} does not exist") from None
        except (OSError, ValueError) as exc:
            raise UserError(f"policy file {path} is not readable JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != "tradeoff-policy/1":
            raise UserError(f"{path} is not a tradeoff policy file (format tradeoff-policy/1)")
        return cls(**data)


def calibrate(curve: pd.DataFrame, target: dict[str, float]) -> pd.Series:
    """The sweep row meeting the target: the cheapest reaching `accuracy`, the most accurate
    within `budget`, or the one whose strong share is closest to `strong_fraction`."""
    if "accuracy" in target:
        ok = curve[curve["accuracy"] >= target["accuracy"]]
        if ok.empty:
            best = curve["accuracy"].max()
            raise UserError(f"no routing reaches accuracy {target['accuracy']:g} (best {best:.3f})")
        return ok.sort_values(["cost", "accuracy"], ascending=[True, False]).iloc[0]
    if "budget" in target:
        ok = curve[curve["cost"] <= target["budget"]]
        if ok.empty:
            cheapest = curve["cost"].min()
            raise UserError(
                f"no routing costs at most {target['budget']:g} (cheapest {cheapest:.4g})"
            )
        return ok.sort_values(["accuracy", "cost"], ascending=[False, True]).iloc[0]
    gap = (curve["strong_fraction"] - target["strong_fraction"]).abs()
    return curve.loc[gap.idxmin()]


def fit_policy(
    table: Table, target: dict[str, float], config_specs: list[dict[str, Any]], dim: int = 512
) -> Policy:
    x = featurize(table.texts, table.tasks, dim)
    mean_costs = table.costs.mean(axis=0)
    strong = int(np.argmax(table.scores.mean(axis=0)))
    oof = out_of_fold(x, table.scores)
    weak = 1 - strong
    priced_apart = len(table.configs) == 2 and mean_costs[strong] > mean_costs[weak]
    if "strong_fraction" in target and priced_apart:
        # Two configurations: choose the threshold on the predicted gain directly, as a quantile.
        gain = (oof[:, strong] - oof[:, weak]) / (mean_costs[strong] - mean_costs[weak])
        lam = float(np.quantile(gain, 1 - target["strong_fraction"]))
        choice = route(oof, mean_costs, lam)
        idx = np.arange(len(choice))
        row = pd.Series(
            {
                "lam": lam,
                "accuracy": float(table.scores[idx, choice].mean()),
                "cost": float(table.costs[idx, choice].mean()),
                "strong_fraction": float((choice == strong).mean()),
            }
        )
    else:
        row = calibrate(sweep(oof, table.scores, table.costs, mean_costs, strong), target)
    weights = fit_predictors(x, table.scores)
    return Policy(
        configs=table.configs,
        config_specs=config_specs,
        cost_axis=table.cost_axis,
        mean_costs=[float(c) for c in mean_costs],
        strong=strong,
        dim=dim,
        weights=weights.tolist(),
        lam=float(row["lam"]),
        target=target,
        calibration={
            "items": float(len(table.keys)),
            "accuracy": float(row["accuracy"]),
            "cost": float(row["cost"]),
            "strong_fraction": float(row["strong_fraction"]),
        },
    )
