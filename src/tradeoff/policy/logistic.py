"""One L2-penalised logistic regression per configuration, each predicting its score in [0, 1]
(scikit-learn's LogisticRegression). Until 2026-12-07 `words-lr` fitted its own Newton's method
in numpy; scikit-learn's newton-cholesky solver predicts the same probabilities (within 1e-6)
in 0.7 to 0.9 of its time: `benchmarks/bench_logistic.py` (benchmarks/RESULTS.md)."""

from __future__ import annotations

import numpy as np

# A configuration that scored one way only is predicted that score, its logit clipped here.
CLIP = 1e-4


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, CLIP, 1 - CLIP)
    return np.log(q / (1 - q))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -35, 35)))


def fit_per_config(
    x: np.ndarray, scores: np.ndarray, c: float, solver: str = "lbfgs"
) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients (M x d) and intercepts (M) of one logistic regression per column of
    `scores` (N x M) on x (N x d), the intercept not penalised; `c`: scikit-learn's C, the
    inverse of the L2 penalty on the summed log-loss. A fractional score is a success weighted
    by it and a failure weighted by the rest; a column of one value only is that constant."""
    from sklearn.linear_model import LogisticRegression

    coef, intercept = [], []
    for j in range(scores.shape[1]):
        y = np.clip(scores[:, j], 0.0, 1.0)
        if y.min() == y.max():  # one outcome only: a constant
            coef.append(np.zeros(x.shape[1]))
            intercept.append(float(logit(np.array([y[0]]))[0]))
            continue
        model = LogisticRegression(C=c, solver=solver, max_iter=1000)
        if np.isin(y, (0.0, 1.0)).all():
            model.fit(x, y)
        else:
            pairs = np.vstack([x, x]), np.r_[np.ones(len(y)), np.zeros(len(y))]
            model.fit(*pairs, sample_weight=np.r_[y, 1 - y])
        coef.append(model.coef_[0])
        intercept.append(float(model.intercept_[0]))
    return np.array(coef), np.array(intercept)
