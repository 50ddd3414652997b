"""The `words-lr` router's logistic regressions (`tradeoff.policy.routers.WordsLR`: scikit-learn's
newton-cholesky solver) beside the Newton's method (IRLS) in numpy it fitted by until 2026-12-07
and scikit-learn's default solver (lbfgs), on one objective: hashed-word features of RouteLLM's
MMLU prompts (`features.featurize`, the router's own), one fit per model's correctness, L2
penalty 1 on the summed log-loss, intercept unpenalised. All three should predict the same
probabilities; the table says how far apart they are and how long each took, the rows tiled to
larger n (a fit's cost grows with the rows). Prints a Markdown section for benchmarks/RESULTS.md.

    PYTHONPATH=src python benchmarks/bench_logistic.py [DATA] [--tile 1 4] [--rounds 3]

DATA: the routellm-mmlu folder (default ../shared/data/routellm-mmlu beside the checkout).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from bench_router_features import STRONG, WEAK, load
from section import commit, loadavg, table

from tradeoff.meters.host import cpu_model
from tradeoff.policy.features import featurize
from tradeoff.policy.logistic import sigmoid
from tradeoff.policy.routers import WORDS_DIM, WordsLR

ROOT = Path(__file__).resolve().parent.parent


def package(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return WordsLR().fit(x, y[:, None]).expected(x)[:, 0]


def numpy_newton(x: np.ndarray, y: np.ndarray, iters: int = 25) -> np.ndarray:
    """words-lr's fit until 2026-12-07: Newton's method on the mean log-loss plus
    |w|^2 / (2n), x's last column (a constant 1) unpenalised."""
    n, d = x.shape
    w = np.zeros(d)
    penalty = np.full(d, 1.0 / n)
    penalty[-1] = 0.0
    for _ in range(iters):
        p = sigmoid(x @ w)
        grad = x.T @ (p - y) / n + penalty * w
        hess = (x.T * (p * (1 - p))) @ x / n + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return sigmoid(x @ w)


def lbfgs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0, max_iter=10_000).fit(x[:, :-1], y)
    return model.predict_proba(x[:, :-1])[:, 1]


WAYS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "tradeoff words-lr (scikit-learn newton-cholesky)": package,
    "numpy Newton (words-lr's until 2026-12-07)": numpy_newton,
    "scikit-learn lbfgs": lbfgs,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "data", nargs="?", type=Path, default=ROOT.parent / "shared/data/routellm-mmlu"
    )
    parser.add_argument("--tile", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    before = loadavg()
    data = load(args.data, None, None)
    x_all = featurize(list(data["prompt"]), ["mmlu"] * len(data), WORDS_DIM)
    rows = []
    for tile in args.tile:
        x = np.tile(x_all, (tile, 1))
        for model, column in (("weak", WEAK), ("strong", STRONG)):
            y = np.tile(data[model].to_numpy(), tile)
            times: dict[str, list[float]] = {name: [] for name in WAYS}
            found: dict[str, np.ndarray] = {}
            for _ in range(args.rounds):  # the ways alternate, round after round
                for name, fit in WAYS.items():
                    start = time.perf_counter()
                    found[name] = fit(x, y)
                    times[name].append(time.perf_counter() - start)
            base = statistics.median(times[next(iter(WAYS))])
            for name in WAYS:
                took = statistics.median(times[name])
                gap = np.abs(found[name] - found[next(iter(WAYS))]).max()
                rows.append([
                    f"{len(x):,}", f"{model} ({column.split('/')[-1]})", name,
                    f"{took:.2f}", f"{took / base:.2f}", f"{gap:.1e}",
                ])  # fmt: skip
                print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    import sklearn

    command = "PYTHONPATH=src python benchmarks/bench_logistic.py " + shlex.join(
        [*(["--tile", *map(str, args.tile)]), "--rounds", str(args.rounds)]
    )
    print(f"## The words-lr router's logistic regressions, three ways\n\n`{command}`\n")
    print(
        f"Commit {commit()}, {cpu_model()}, load average before {before}, after "
        f"{loadavg()}; numpy {np.__version__}, scikit-learn {sklearn.__version__}. "
        f"Features: {x_all.shape[1]} hashed-word columns of RouteLLM's {len(data):,} MMLU "
        "prompts (tiled to the larger sizes); one fit per model's 0/1 correctness; "
        f"median wall time of {args.rounds} rounds, the ways interleaved; max |Δp|: the largest "
        "difference from words-lr's predicted probability on the fitted rows.\n"
    )
    header = ["rows", "target", "fitted by", "wall s", "× words-lr's", "max |Δp|"]
    print(table(header, rows))


if __name__ == "__main__":
    main()
