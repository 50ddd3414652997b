"""L2-regularised logistic regression by Newton's method (IRLS), in numpy.

Small and exact enough for routing: a few hundred features, thousands of queries.
"""

from __future__ import annotations

import numpy as np


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -35, 35)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 25) -> np.ndarray:
    """Weights w minimising the mean log-loss of sigmoid(x @ w) against y in [0, 1] plus
    l2/2 |w|^2 / n (the bias column, the last, is not penalised)."""
    n, d = x.shape
    w = np.zeros(d)
    penalty = np.full(d, l2 / max(n, 1))
    penalty[-1] = 0.0
    for _ in range(iters):
        p = _sigmoid(x @ w)
        grad = x.T @ (p - y) / n + penalty * w
        hess = (x.T * (p * (1 - p))) @ x / n + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def predict(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Predicted probability of success for each row of x."""
    return _sigmoid(x @ w)


def fit_predictors(x: np.ndarray, scores: np.ndarray, l2: float = 1.0) -> np.ndarray:
    """One logistic predictor of P(score) per configuration: weights, shape (M, d)."""
    return np.stack([fit_logistic(x, scores[:, j], l2=l2) for j in range(scores.shape[1])])


def expected_scores(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.stack([predict(x, w) for w in weights], axis=1)
