"""Router evaluation as RouteLLM defines it, on per-query outcomes: accuracy against the share of
calls sent to the strong configuration, with AUC, APGR, CPT(x%) and cost saved, beside the
random and oracle baselines; and accuracy against cost for an N-way λ router, whose sweep over λ
(`lambda_curve`) is also the one `policy fit` calibrates a policy on.

Inputs are plain arrays: for N queries, scores in [0, 1] and costs ≥ 0 (any unit, e.g. J or $ per
query; curves report the mean per query in that same unit). Fractions are in [0, 1], not percent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from tradeoff.errors import UserError

# Slack for comparing means of floats against a target accuracy: without it, a target computed as
# acc_weak + x·gap can land a rounding error above the very curve point that reaches it.
EPS = 1e-12


@dataclass(frozen=True)
class Curve:
    """A router's trade-off curve, one point per router setting, sorted by `strong_fraction`
    (ties by cost).

    strong_fraction: share of queries routed to the strong configuration, 0..1.
    accuracy: mean score over all queries, 0..1.
    cost: mean cost per query, in the unit of the costs given.
    knob: the setting that produced each point: the threshold on strong_prob (threshold_curve) or
        λ in score per cost unit (lambda_curve); nan for the random and oracle baselines.
    """

    strong_fraction: np.ndarray
    accuracy: np.ndarray
    cost: np.ndarray
    label: str
    knob: np.ndarray = field(default_factory=lambda: np.empty(0))

    def __post_init__(self) -> None:
        frac = np.asarray(self.strong_fraction, dtype=float).ravel()
        acc = np.asarray(self.accuracy, dtype=float).ravel()
        cost = np.asarray(self.cost, dtype=float).ravel()
        knob = np.asarray(self.knob, dtype=float).ravel()
        if knob.size == 0:
            knob = np.full(frac.size, np.nan)
        if not (frac.size == acc.size == cost.size == knob.size) or frac.size == 0:
            raise UserError(
                f"curve {self.label!r} needs as many accuracies, costs and knobs as strong "
                f"fractions, at least one; got {frac.size}, {acc.size}, {cost.size}, {knob.size}"
            )
        order = np.lexsort((cost, frac))
        for name, values in (("strong_fraction", frac), ("accuracy", acc), ("cost", cost)):
            object.__setattr__(self, name, values[order])
        object.__setattr__(self, "knob", knob[order])


def _vector(name: str, values: ArrayLike, n: int | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise UserError(f"{name} must be a non-empty 1-D array, one value per query")
    if n is not None and array.size != n:
        raise UserError(f"{name} has {array.size} values; the other inputs have {n} (one a query)")
    if not np.isfinite(array).all():
        raise UserError(f"{name} has nan or infinite values; drop or fill those queries first")
    return array


def _scores(name: str, values: ArrayLike, n: int | None = None) -> np.ndarray:
    array = _vector(name, values, n)
    if (array < 0).any() or (array > 1).any():
        raise UserError(f"{name} must lie in [0, 1]; got {array.min():g}..{array.max():g}")
    return array


def _costs(name: str, values: ArrayLike, n: int) -> np.ndarray:
    array = _vector(name, values, n)
    if (array < 0).any():
        raise UserError(f"{name} must be ≥ 0; got a minimum of {array.min():g}")
    return array


def _pair(
    scores_weak: ArrayLike,
    scores_strong: ArrayLike,
    costs_weak: ArrayLike,
    costs_strong: ArrayLike,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    sw = _scores("scores_weak", scores_weak)
    n = sw.size
    ss = _scores("scores_strong", scores_strong, n)
    return sw, ss, _costs("costs_weak", costs_weak, n), _costs("costs_strong", costs_strong, n)


def _matrix(name: str, values: ArrayLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 2 or 0 in array.shape:
        raise UserError(
            f"{name} must be a non-empty N×M array: a row per query, a column per config"
        )
    if shape is not None and array.shape != shape:
        raise UserError(f"{name} has shape {array.shape}; the other inputs have {shape}")
    if not np.isfinite(array).all():
        raise UserError(f"{name} has nan or infinite values; drop or fill those queries first")
    return array


def weak_strong(
    scores: ArrayLike, costs: ArrayLike, strong: int | None = None, weak: int | None = None
) -> tuple[int, int]:
    """The (weak, strong) column indices of N×M `scores` and `costs` (M configurations).

    strong defaults to the most accurate configuration (highest mean score, first on ties); weak
    to the cheapest by mean cost per query (first on ties). Columns need not be ordered by cost.
    """
    s = _matrix("scores", scores)
    c = _matrix("costs", costs, s.shape)
    m = s.shape[1]
    for name, index in (("strong", strong), ("weak", weak)):
        if index is not None and not 0 <= index < m:
            raise UserError(f"{name} index {index} is out of range; there are {m} configurations")
    strong_i = int(np.argmax(s.mean(axis=0))) if strong is None else strong
    weak_i = int(np.argmin(c.mean(axis=0))) if weak is None else weak
    if weak_i == strong_i:
        raise UserError(
            f"configuration {strong_i} is both the strong and the weak one; nothing to route "
            "between: pass weak= (or strong=) explicitly"
        )
    return weak_i, strong_i


def _walk(
    sw: np.ndarray,
    ss: np.ndarray,
    cw: np.ndarray,
    cs: np.ndarray,
    order: np.ndarray,
    ends: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points after sending queries order[:k] to strong, for k = 0 and each k in ends."""
    n = sw.size
    gain = np.concatenate([[0.0], np.cumsum((ss - sw)[order])])
    extra = np.concatenate([[0.0], np.cumsum((cs - cw)[order])])
    k = np.concatenate([[0], ends]).astype(int)
    return k / n, (sw.sum() + gain[k]) / n, (cw.sum() + extra[k]) / n


def threshold_curve(
    scores_weak: ArrayLike,
    scores_strong: ArrayLike,
    costs_weak: ArrayLike,
    costs_strong: ArrayLike,
    strong_prob: ArrayLike,
    label: str = "router",
) -> Curve:
    """The curve of a two-configuration router that sends query i to strong when
    strong_prob[i] ≥ t, for every distinct value t of strong_prob (plus t = +inf: nothing to
    strong), so it runs from 0% to 100% strong.

    strong_prob is the router's score that the strong configuration is needed (a probability or
    win rate; only its order matters). Queries with equal strong_prob move to strong together, so
    ties give one point, and the straight segment to it is the expected curve of breaking the tie
    at random. knob holds t (inf at 0% strong).
    """
    sw, ss, cw, cs = _pair(scores_weak, scores_strong, costs_weak, costs_strong)
    p = _vector("strong_prob", strong_prob, sw.size)
    order = np.argsort(-p, kind="stable")
    ranked = p[order]
    # The last query of each run of equal strong_prob: the threshold there takes the whole run.
    ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True)) + 1
    frac, acc, cost = _walk(sw, ss, cw, cs, order, ends)
    knob = np.concatenate([[math.inf], ranked[ends - 1]])
    return Curve(frac, acc, cost, label, knob)


def random_curve(
    scores_weak: ArrayLike,
    scores_strong: ArrayLike,
    costs_weak: ArrayLike,
    costs_strong: ArrayLike,
    label: str = "random",
) -> Curve:
    """The expected curve of a router that sends each query to strong with probability f: exactly
    the straight line from (0, acc_weak) to (1, acc_strong), cost likewise linear in f. Two
    points; read between them by linear interpolation (what auc and cpt do). Its APGR is 0.5."""
    sw, ss, cw, cs = _pair(scores_weak, scores_strong, costs_weak, costs_strong)
    return Curve(
        np.array([0.0, 1.0]),
        np.array([sw.mean(), ss.mean()]),
        np.array([cw.mean(), cs.mean()]),
        label,
    )


def oracle_curve(
    scores_weak: ArrayLike,
    scores_strong: ArrayLike,
    costs_weak: ArrayLike,
    costs_strong: ArrayLike,
    label: str = "oracle",
) -> Curve:
    """The best possible router: for every k = 0..N, the highest accuracy reachable with exactly
    k of the N queries on strong, at fraction k/N.

    Construction: queries go to strong in order of decreasing gain (score_strong − score_weak),
    ties by smaller extra cost (cost_strong − cost_weak), then by query index. So the queries where
    strong wins come first and the curve peaks at the oracle's optimum, fraction = share of
    queries where strong wins, accuracy = mean of max(score_weak, score_strong); past it the rest
    follow, ties (gain 0) flat and then losses, down to acc_strong at 100%. The curve is concave,
    so it lies on or above every other two-config router's curve on the same data at every
    fraction, including between points.
    """
    sw, ss, cw, cs = _pair(scores_weak, scores_strong, costs_weak, costs_strong)
    n = sw.size
    order = np.lexsort((np.arange(n), cs - cw, -(ss - sw)))
    frac, acc, cost = _walk(sw, ss, cw, cs, order, np.arange(1, n + 1))
    return Curve(frac, acc, cost, label)


def covering(
    curve: Curve, acc_weak: float | None = None, acc_strong: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The curve's (strong_fraction, accuracy) points over all of [0, 1]. One that does not
    reach an end is joined to it: to always-weak (0, acc_weak) and always-strong (1,
    acc_strong), which a mix of those and the curve's end point reaches (one or the other at
    random per query); without them, flat at its end's accuracy. The threshold curves built
    here cover [0, 1]; an N-way λ router's need not (the strongest configuration also the
    cheapest: no λ ≥ 0 sends a query from it)."""
    x = np.clip(curve.strong_fraction, 0.0, 1.0)
    y = curve.accuracy
    if x[0] > 0:
        low = y[0] if acc_weak is None else acc_weak
        x, y = np.concatenate([[0.0], x]), np.concatenate([[low], y])
    if x[-1] < 1:
        high = y[-1] if acc_strong is None else acc_strong
        x, y = np.concatenate([x, [1.0]]), np.concatenate([y, [high]])
    return x, y


def auc(curve: Curve, acc_weak: float | None = None, acc_strong: float | None = None) -> float:
    """Area under accuracy against strong_fraction over [0, 1] (trapezoid rule), in accuracy ×
    fraction: equal to the curve's mean accuracy over fractions. A curve short of an end is
    joined to it as `covering` says (it was extended flat, and a router that never left the
    strong configuration had APGR 1)."""
    x, y = covering(curve, acc_weak, acc_strong)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def no_gap(acc_weak: float, acc_strong: float) -> bool:
    """The two accuracies are the same but for rounding (means of other scores can differ in
    their last bits): there is no gap to recover, and no stronger of the two."""
    return math.isclose(acc_strong - acc_weak, 0.0, abs_tol=EPS)


def _gap(acc_weak: float, acc_strong: float) -> float:
    return math.nan if no_gap(acc_weak, acc_strong) else acc_strong - acc_weak


def apgr(curve: Curve, acc_weak: float, acc_strong: float) -> float:
    """Average performance gap recovered (RouteLLM): (AUC − acc_weak) / (acc_strong − acc_weak),
    the weak line's AUC being acc_weak·1 and the strong line's acc_strong·1. A share: 0 is no
    better than always weak, 0.5 the random router, 1 as good as always strong on average over
    the curve (the oracle can exceed 1). nan when acc_strong == acc_weak: there is no gap."""
    gap = _gap(acc_weak, acc_strong)
    return (auc(curve, acc_weak, acc_strong) - acc_weak) / gap if not math.isnan(gap) else math.nan


def random_apgr_spread(scores_weak: ArrayLike, scores_strong: ArrayLike) -> float:
    """Standard deviation of the APGR of a router that orders the N queries at random (the
    random router's expected curve has APGR exactly 0.5; one random order's lies around it):
    std(score_strong − score_weak) / ((acc_strong − acc_weak)·√(12·N)), the spread of the area
    under the bridge its cumulative gain walks. A router whose APGR is within about two of these
    of 0.5 is not shown better than random by these queries. nan when there is no gap."""
    sw = _scores("scores_weak", scores_weak)
    ss = _scores("scores_strong", scores_strong, sw.size)
    gap = _gap(float(sw.mean()), float(ss.mean()))
    return float(np.std(ss - sw) / (abs(gap) * math.sqrt(12 * sw.size)))


def cpt(curve: Curve, acc_weak: float, acc_strong: float, x: float) -> float:
    """Call-performance threshold CPT(x) (RouteLLM): the smallest strong_fraction (0..1, not %)
    at which the curve reaches acc_weak + x·(acc_strong − acc_weak), x a share (0.5 for CPT(50%)).

    Walks the curve in order of strong_fraction and interpolates linearly inside the segment
    where it first reaches the target; no extension before the first point. nan if the curve
    never reaches it, and when acc_strong == acc_weak.
    """
    gap = _gap(acc_weak, acc_strong)
    if math.isnan(gap):
        return math.nan
    target = acc_weak + x * gap
    hits = np.flatnonzero(curve.accuracy >= target - EPS)
    if hits.size == 0:
        return math.nan
    i = int(hits[0])
    frac, acc = curve.strong_fraction, curve.accuracy
    if i == 0:
        return float(frac[0])
    share = min(1.0, max(0.0, (target - acc[i - 1]) / (acc[i] - acc[i - 1])))
    return float(frac[i - 1] + share * (frac[i] - frac[i - 1]))


def cost_saved_at(curve: Curve, target_accuracy: float, strong_cost: float) -> float:
    """Share of cost saved, 1 − c / strong_cost, where c is the lowest mean cost per query at
    which the curve reaches target_accuracy (0..1) and strong_cost the mean cost per query of
    always using the strong configuration, in the same unit.

    c is taken over the curve's points and over the straight segments between consecutive points
    (a mix of two router settings, achievable by picking one at random per query): where a
    segment crosses the target, the cost there is interpolated. nan if the curve never reaches
    the target, or strong_cost is not positive.
    """
    if not strong_cost > 0 or not math.isfinite(strong_cost):
        return math.nan
    target = target_accuracy - EPS
    acc, cost = curve.accuracy, curve.cost
    candidates = [cost[acc >= target]]
    y0, y1, c0, c1 = acc[:-1], acc[1:], cost[:-1], cost[1:]
    crossing = (y0 - target) * (y1 - target) < 0
    if crossing.any():
        w = (target - y0[crossing]) / (y1[crossing] - y0[crossing])
        candidates.append(c0[crossing] + w * (c1[crossing] - c0[crossing]))
    reached = np.concatenate(candidates)
    if reached.size == 0:
        return math.nan
    return float(1.0 - reached.min() / strong_cost)


def choose(expected: ArrayLike, costs: ArrayLike, lam: ArrayLike) -> np.ndarray:
    """Per query (row of the N×M `expected` scores), the column j maximising expected[i, j] −
    λ·costs[i, j]; ties go to the lower cost, then the lower index. `costs` is N×M, or one cost
    per column (M); `lam` one λ, or one per query (N). This is what a λ router does, in
    evaluation and when serving a policy."""
    e = np.asarray(expected, dtype=float)
    c = np.broadcast_to(np.asarray(costs, dtype=float), e.shape)
    utility = e - np.reshape(np.asarray(lam, dtype=float), (-1, 1)) * c
    best = utility.max(axis=1, keepdims=True)
    # A choice sits exactly on a tie at each breakpoint; the slack absorbs rounding there.
    tied = utility >= best - 1e-9 * (1.0 + np.abs(best))
    return np.where(tied, c, np.inf).argmin(axis=1)


def router_curve(
    expected: ArrayLike,
    scores: ArrayLike,
    costs: ArrayLike,
    weak: int,
    strong: int,
    label: str = "router",
) -> Curve:
    """The curve of routing by `expected` scores (N×M) against the true `scores` and `costs`:
    between two configurations, a threshold on the predicted gain of strong over weak
    (threshold_curve); among more, the λ router over each configuration's mean cost
    (lambda_curve)."""
    e = _matrix("expected", expected)
    s = _matrix("scores", scores, e.shape)
    c = _matrix("costs", costs, e.shape)
    if e.shape[1] == 2:
        pair = (s[:, weak], s[:, strong], c[:, weak], c[:, strong])
        return threshold_curve(*pair, e[:, strong] - e[:, weak], label=label)
    mean_costs = np.broadcast_to(c.mean(axis=0), c.shape)
    return lambda_curve(e, mean_costs, s, c, strong=strong, label=label)


def _breakpoints(expected: np.ndarray, costs: np.ndarray, block: int = 4096) -> np.ndarray:
    """Every λ at which some query's choice can change: where a dearer config's utility equals a
    cheaper one's, λ = Δscore / Δcost; negative where the dearer one is predicted to score less
    (only a λ < 0, one that values cost, sends the query there)."""
    found = []
    for start in range(0, expected.shape[0], block):
        e, c = expected[start : start + block], costs[start : start + block]
        d_score = e[:, :, None] - e[:, None, :]
        d_cost = c[:, :, None] - c[:, None, :]
        keep = d_cost > 0
        found.append(np.unique(d_score[keep] / d_cost[keep]))
    return np.unique(np.concatenate(found)) if found else np.empty(0)


def lambda_curve(
    expected_scores: ArrayLike,
    costs_pred: ArrayLike,
    true_scores: ArrayLike,
    true_costs: ArrayLike,
    strong: int | None = None,
    lambdas: Sequence[float] | None = None,
    max_points: int = 256,
    label: str = "λ router",
) -> Curve:
    """The curve of an N-way router that sends query i to argmax_j expected_scores[i, j] −
    λ·costs_pred[i, j] (ties to the lower predicted cost, then the lower index), one point per λ:
    accuracy and mean cost per query of the true outcomes of the chosen configs.

    All four inputs are N×M (a row per query, a column per config). λ is in score per cost unit.
    strong_fraction is the share of queries routed to column `strong` (default: the highest mean
    true score). Without `lambdas`, the sweep is λ = 0 (most accurate predicted) and every λ at
    which some query's choice changes, up to where each query takes its cheapest predicted config,
    and, where the strong config is the dearest, down past 0 to where each takes its dearest (λ <
    0: a query goes to a dearer config predicted to score no better, as a two-way threshold below
    zero gain does, so that the curve reaches "all to the strong one"); above max_points such λ,
    an evenly spaced subset of them (by rank) is kept. Points with the same outcome as a smaller
    λ are dropped. The curve is sorted by strong_fraction as every Curve is; sort by cost to
    plot accuracy against cost.
    """
    e = _matrix("expected_scores", expected_scores)
    c = _matrix("costs_pred", costs_pred, e.shape)
    s = _matrix("true_scores", true_scores, e.shape)
    tc = _matrix("true_costs", true_costs, e.shape)
    n, m = e.shape
    if strong is None:
        strong = int(np.argmax(s.mean(axis=0)))
    elif not 0 <= strong < m:
        raise UserError(f"strong index {strong} is out of range; there are {m} configurations")
    if lambdas is None:
        points = _breakpoints(e, c)
        # Below 0, queries go to dearer configs: worth a sweep where that leads to the strong one
        mean_costs = c.mean(axis=0)
        dearest_strong = bool(mean_costs[strong] >= mean_costs.max())  # a tie counts too
        if not dearest_strong:
            points = points[points >= 0]
        if points.size > max_points:
            points = points[np.linspace(0, points.size - 1, max_points).round().astype(int)]
        # Below every breakpoint, each query on its dearest config (ties at a breakpoint go to
        # the cheaper one; at 0, between configs predicted alike).
        lowest = 2.0 * points[0] if points.size and points[0] < 0 else -1.0
        below = [lowest] if dearest_strong else []
        sweep = np.unique(np.concatenate([below, [0.0], points]))
    else:
        sweep = np.unique(_vector("lambdas", lambdas))
        if (sweep < 0).any():
            raise UserError("lambdas must be ≥ 0: λ is what one cost unit is worth in score")
    rows = np.arange(n)
    fracs, accs, costs, knobs = [], [], [], []
    seen: set[tuple[float, float, float]] = set()
    for lam in sweep:
        choice = choose(e, c, float(lam))
        point = (
            float(np.mean(choice == strong)),
            float(s[rows, choice].mean()),
            float(tc[rows, choice].mean()),
        )
        if point in seen:
            continue
        seen.add(point)
        fracs.append(point[0])
        accs.append(point[1])
        costs.append(point[2])
        knobs.append(float(lam))
    return Curve(np.array(fracs), np.array(accs), np.array(costs), label, np.array(knobs))
