"""Router curves and their metrics (AUC, APGR, CPT, cost saved) on hand-made outcomes whose
results are worked out in the comments, and on seeded random 0/1 outcomes where the oracle must
beat every router."""

import math

import numpy as np
import pytest

from tradeoff.analysis.router import (
    Curve,
    apgr,
    auc,
    cost_saved_at,
    cpt,
    lambda_curve,
    oracle_curve,
    random_apgr_spread,
    random_curve,
    threshold_curve,
    weak_strong,
)
from tradeoff.errors import UserError

# Five queries. acc_weak = 2/5 = 0.4, acc_strong = 4/5 = 0.8; gain (strong − weak) = 0, 1, 1, -1, 1.
WEAK = [1, 0, 0, 1, 0]
STRONG = [1, 1, 1, 0, 1]
COST_W = [1.0] * 5
COST_S = [10.0] * 5
# Router order (descending strong_prob): q0 (gain 0), q1 (+1), q3 (−1), q2 (+1), q4 (+1).
PROB = [0.9, 0.8, 0.3, 0.6, 0.1]
ACC_W, ACC_S = 0.4, 0.8


def _hand() -> Curve:
    return threshold_curve(WEAK, STRONG, COST_W, COST_S, PROB)


def test_threshold_curve_points_by_hand():
    curve = _hand()
    # k strong = 0..5: accuracy 0.4, 0.4 (+0), 0.6 (+1), 0.4 (−1), 0.6 (+1), 0.8 (+1);
    # cost = 1 + 9k/5.
    assert curve.strong_fraction == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert curve.accuracy == pytest.approx([0.4, 0.4, 0.6, 0.4, 0.6, 0.8])
    assert curve.cost == pytest.approx([1.0, 2.8, 4.6, 6.4, 8.2, 10.0])
    assert curve.knob[0] == math.inf
    assert curve.knob[1:] == pytest.approx([0.9, 0.8, 0.6, 0.3, 0.1])


def test_auc_apgr_cpt_by_hand():
    curve = _hand()
    # Trapezoids of width 0.2: (0.4 + 0.5 + 0.5 + 0.5 + 0.7) · 0.2 = 0.52.
    assert auc(curve) == pytest.approx(0.52)
    # (0.52 − 0.4) / (0.8 − 0.4) = 0.3
    assert apgr(curve, ACC_W, ACC_S) == pytest.approx(0.3)
    # CPT(50%): target 0.6, first reached at the point k = 2: fraction 0.4.
    assert cpt(curve, ACC_W, ACC_S, 0.5) == pytest.approx(0.4)
    # CPT(25%): target 0.5, halfway between (0.2, 0.4) and (0.4, 0.6): 0.3.
    assert cpt(curve, ACC_W, ACC_S, 0.25) == pytest.approx(0.3)
    # CPT(80%): target 0.72, between (0.8, 0.6) and (1.0, 0.8): 0.8 + 0.12/0.2 · 0.2 = 0.92.
    assert cpt(curve, ACC_W, ACC_S, 0.8) == pytest.approx(0.92)
    # CPT(100%) only at 100% strong; beyond the gap, never.
    assert cpt(curve, ACC_W, ACC_S, 1.0) == pytest.approx(1.0)
    assert math.isnan(cpt(curve, ACC_W, ACC_S, 1.01))


def test_oracle_by_hand():
    curve = oracle_curve(WEAK, STRONG, COST_W, COST_S)
    # Order: q1, q2, q4 (gain 1), q0 (gain 0), q3 (gain −1).
    assert curve.accuracy == pytest.approx([0.4, 0.6, 0.8, 1.0, 1.0, 0.8])
    # Widths 0.2: (0.5 + 0.7 + 0.9 + 1.0 + 0.9) · 0.2 = 0.8; APGR (0.8 − 0.4) / 0.4 = 1.0.
    assert auc(curve) == pytest.approx(0.8)
    assert apgr(curve, ACC_W, ACC_S) == pytest.approx(1.0)
    # CPT(50%): target 0.6 at k = 1; CPT(80%): 0.72, between (0.2, 0.6) and (0.4, 0.8): 0.32.
    assert cpt(curve, ACC_W, ACC_S, 0.5) == pytest.approx(0.2)
    assert cpt(curve, ACC_W, ACC_S, 0.8) == pytest.approx(0.32)


def test_oracle_ties_go_cheapest_first():
    # Both queries gain 1; q1's strong call costs less extra, so it goes first.
    curve = oracle_curve([0, 0], [1, 1], [1, 1], [9, 3])
    assert curve.cost == pytest.approx([1.0, 2.0, 6.0])


def test_random_curve_is_the_line_and_recovers_half():
    curve = random_curve(WEAK, STRONG, COST_W, COST_S)
    assert curve.strong_fraction == pytest.approx([0, 1])
    assert curve.accuracy == pytest.approx([ACC_W, ACC_S])
    assert curve.cost == pytest.approx([1, 10])
    # AUC of the line = (0.4 + 0.8) / 2 = 0.6, so APGR = 0.2 / 0.4 = 0.5.
    assert auc(curve) == pytest.approx(0.6)
    assert apgr(curve, ACC_W, ACC_S) == pytest.approx(0.5)
    # On the line, CPT(x) = x.
    assert cpt(curve, ACC_W, ACC_S, 0.5) == pytest.approx(0.5)
    assert cpt(curve, ACC_W, ACC_S, 0.8) == pytest.approx(0.8)


def test_cost_saved_by_hand():
    curve = _hand()
    # Accuracy 0.6 first at k = 2, cost 4.6 against 10 always-strong: 1 − 0.46 = 0.54.
    assert cost_saved_at(curve, 0.6, 10.0) == pytest.approx(0.54)
    # 0.7 is crossed halfway between (0.6, 8.2) and (0.8, 10): cost 9.1, saving 0.09.
    assert cost_saved_at(curve, 0.7, 10.0) == pytest.approx(0.09)
    # Oracle: 0.7 halfway between (0.6, 2.8) and (0.8, 4.6): cost 3.7, saving 0.63.
    oracle = oracle_curve(WEAK, STRONG, COST_W, COST_S)
    assert cost_saved_at(oracle, 0.7, 10.0) == pytest.approx(0.63)
    assert math.isnan(cost_saved_at(curve, 0.9, 10.0))
    assert math.isnan(cost_saved_at(curve, 0.6, 0.0))


def test_no_gap_gives_nan():
    same = [1, 0, 1, 0]
    curve = threshold_curve(same, [0, 1, 0, 1], [1] * 4, [2] * 4, [0.1, 0.2, 0.3, 0.4])
    assert math.isnan(apgr(curve, 0.5, 0.5))
    assert math.isnan(cpt(curve, 0.5, 0.5, 0.5))
    # auc is still defined: the curve is real, only the gap is missing.
    assert math.isfinite(auc(curve))


def test_tied_probabilities_move_together():
    curve = threshold_curve([0, 0, 1], [1, 1, 0], [1, 1, 1], [2, 2, 2], [0.5, 0.5, 0.2])
    assert curve.strong_fraction == pytest.approx([0, 2 / 3, 1])
    assert curve.accuracy == pytest.approx([1 / 3, 1.0, 2 / 3])


def test_auc_extends_a_partial_curve_flat():
    # Flat 0.5 on [0, 0.5], trapezoid 0.5 → 1.0 on [0.5, 1]: 0.25 + 0.375 = 0.625.
    assert auc(Curve(np.array([0.5, 1.0]), np.array([0.5, 1.0]), np.zeros(2), "x")) == 0.625
    # Flat at 0.3 past the last point.
    assert auc(Curve(np.array([0.0]), np.array([0.3]), np.zeros(1), "y")) == pytest.approx(0.3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oracle_beats_routers_on_random_outcomes(seed):
    rng = np.random.default_rng(seed)
    n = 200
    weak = (rng.random(n) < 0.4).astype(float)
    strong = (rng.random(n) < 0.7).astype(float)
    cw, cs = rng.uniform(0.5, 1.5, n), rng.uniform(5, 15, n)
    acc_w, acc_s = weak.mean(), strong.mean()
    oracle = oracle_curve(weak, strong, cw, cs)
    best = apgr(oracle, acc_w, acc_s)
    assert best >= apgr(random_curve(weak, strong, cw, cs), acc_w, acc_s) == pytest.approx(0.5)
    for _ in range(20):
        router = threshold_curve(weak, strong, cw, cs, rng.random(n))
        assert best >= apgr(router, acc_w, acc_s)
        # Pointwise too: the oracle is on or above the router at each of its fractions.
        above = np.interp(router.strong_fraction, oracle.strong_fraction, oracle.accuracy)
        assert (above >= router.accuracy - 1e-12).all()
    # A router that knows where strong wins reaches the oracle's optimum at the same fraction.
    wins = strong > weak
    perfect = threshold_curve(weak, strong, cw, cs, wins.astype(float))
    top = int(np.argmax(oracle.accuracy))
    assert perfect.accuracy.max() == pytest.approx(oracle.accuracy[top])
    assert perfect.accuracy.max() == pytest.approx(np.maximum(weak, strong).mean())
    assert perfect.strong_fraction[np.argmax(perfect.accuracy)] == pytest.approx(wins.mean())
    assert oracle.strong_fraction[top] == pytest.approx(wins.mean())


@pytest.mark.parametrize(("n", "p_weak", "p_strong"), [(20, 0.5, 0.7), (300, 0.3, 0.9)])
def test_random_apgr_spread_is_the_spread_of_random_orders(n, p_weak, p_strong):
    rng = np.random.default_rng(n)
    weak = (rng.random(n) < p_weak).astype(float)
    strong = (rng.random(n) < p_strong).astype(float)
    acc_w, acc_s, ones = weak.mean(), strong.mean(), np.ones(n)
    orders = [threshold_curve(weak, strong, ones, 2 * ones, rng.random(n)) for _ in range(2000)]
    seen = np.std([apgr(curve, acc_w, acc_s) for curve in orders])
    assert random_apgr_spread(weak, strong) == pytest.approx(seen, rel=0.1)
    assert math.isnan(random_apgr_spread(weak, weak))


def test_lambda_curve_by_hand():
    # Configs A (cost 1), B (3), C (10); predictions equal the truth here.
    scores = np.array([[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 0]], dtype=float)
    costs = np.tile([1.0, 3.0, 10.0], (4, 1))
    curve = lambda_curve(scores, costs, scores, costs)
    # λ = 0: A (tie, cheapest), B (tie with C, cheaper), C, A: accuracy 0.75, cost 15/4, C share
    #   0.25 (C, mean 0.75, is the strong default).
    # λ = 1/9: q2 switches C → A (1 − 10λ = −λ): accuracy 0.5, cost 6/4 = 1.5.
    # λ = 1/2: q1 switches B → A (1 − 3λ = −λ): everything on A, accuracy 0.25, cost 1.
    # λ < 0: the ties go to the dearest, everything on C: accuracy 0.75, cost 10, C share 1.
    assert curve.strong_fraction == pytest.approx([0, 0, 0.25, 1])
    assert curve.cost == pytest.approx([1.0, 1.5, 3.75, 10.0])
    assert curve.accuracy == pytest.approx([0.25, 0.5, 0.75, 0.75])
    assert curve.knob == pytest.approx([0.5, 1 / 9, 0.0, -1.0])
    # A dearer config predicted to score less is reached below λ = 0: q0 predicts A 1, C 0.5,
    # so it goes to C below λ = −0.5 / 9; every query is on C below the lowest breakpoint.
    guessed = scores.copy()
    guessed[0] = [1.0, 0.2, 0.5]
    below = lambda_curve(guessed, costs, scores, costs)
    assert below.knob.min() < -0.5 / 9 and below.strong_fraction.max() == 1.0
    assert below.cost.max() == pytest.approx(10.0)
    # A given sweep: only λ = 0 and λ = 100 (all on A).
    two = lambda_curve(scores, costs, scores, costs, lambdas=[100.0, 0.0])
    assert two.cost == pytest.approx([1.0, 3.75])
    # Strong index given explicitly: B is routed to at λ = 0 and λ = 1/9; B is not the dearest,
    # so no λ < 0 is swept (it would send queries to a dearer config for no better score).
    on_b = lambda_curve(scores, costs, scores, costs, strong=1)
    assert sorted(on_b.strong_fraction) == pytest.approx([0, 0.25, 0.25])
    assert on_b.knob.min() == 0.0
    # Columns in any order (here C, B, A): ties still go to the cheaper config, not column 0.
    flipped = lambda_curve(scores[:, ::-1], costs[:, ::-1], scores[:, ::-1], costs[:, ::-1])
    assert flipped.cost == pytest.approx(curve.cost)
    assert flipped.strong_fraction == pytest.approx(curve.strong_fraction)


def test_a_strong_config_tied_as_the_dearest_is_swept_below_zero_whatever_its_column():
    # twin (10, never right), cheap (1, right on the first half), dear (10, always right)
    scores = np.array([[0, 1, 1]] * 4 + [[0, 0, 1]] * 4, dtype=float)
    costs = np.tile([10.0, 1.0, 10.0], (8, 1))
    guessed = scores + 0.1 * (np.arange(8)[:, None] % 2)  # noisy guesses, same order
    for order in ([0, 1, 2], [2, 1, 0]):
        curve = lambda_curve(guessed[:, order], costs[:, order], scores[:, order],
                             costs[:, order])  # fmt: skip
        assert curve.strong_fraction.max() == 1.0, order


def test_weak_strong_defaults_and_errors():
    scores = np.array([[0.9, 0.2, 0.5], [0.7, 0.0, 0.5]])
    costs = np.array([[9.0, 2.0, 1.0], [11.0, 2.0, 1.0]])
    # Strong: column 0 (mean 0.8); weak: column 2 (mean cost 1), not column 1.
    assert weak_strong(scores, costs) == (2, 0)
    assert weak_strong(scores, costs, weak=1) == (1, 0)
    with pytest.raises(UserError, match="both the strong and the weak"):
        weak_strong(scores, costs, strong=2)
    with pytest.raises(UserError, match="out of range"):
        weak_strong(scores, costs, strong=3)
    with pytest.raises(UserError, match="has 4 values"):
        threshold_curve(WEAK, STRONG, COST_W, COST_S, [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(UserError, match=r"in \[0, 1\]"):
        random_curve([2, 0], [1, 1], [1, 1], [2, 2])


def test_a_curve_short_of_an_end_is_joined_to_always_weak_or_always_strong():
    """Three configurations, the most accurate also the cheapest: no λ ≥ 0 routes a query away
    from it, so the λ router's curve is one point at 100% strong. Extended flat, it read as
    APGR 1 (above the oracle's); joined to always-weak, it is what mixing the two gives: 0.5."""
    one_point = Curve(np.array([1.0]), np.array([0.8]), np.zeros(1), "λ router")
    assert apgr(one_point, 0.2, 0.8) == pytest.approx(0.5)
    assert auc(one_point, 0.2, 0.8) == pytest.approx(0.5)
    assert auc(one_point) == pytest.approx(0.8)  # no ends given: flat, as before
    rng = np.random.default_rng(3)
    n = 200
    scores = np.stack([rng.random(n) < p for p in (0.8, 0.2, 0.5)], axis=1).astype(float)
    costs = np.broadcast_to([1.0, 3.0, 2.0], (n, 3))  # the strongest is the cheapest
    expected = np.array([0.8, 0.2, 0.5]) + 0.01 * rng.random((n, 3))  # as a router learns it
    curve = lambda_curve(expected, costs, scores, costs)
    assert curve.strong_fraction.min() > 0.99  # the router never leaves the strongest
    acc_w, acc_s = scores[:, 1].mean(), scores[:, 0].mean()
    assert apgr(curve, acc_w, acc_s) == pytest.approx(0.5, abs=0.02)
