"""Router families: each predicts every configuration's expected score for a query (N x M, in
[0, 1]); the policy routes on those predictions and the configurations' costs.

- `words-lr`: logistic regression on hashed words (`features.featurize`), one per configuration,
  fitted by scikit-learn's newton-cholesky solver (`logistic.py`). Needs no extra; the fastest.
- `embed-lr`: logistic regression on sentence embeddings (`embed.py`), one per configuration
  (scikit-learn; a fractional score is a weighted pair of a success and a failure).
- `embed-knn`: the similarity-weighted mean score of the k nearest training queries by cosine
  (weights exp(-distance / 0.1), as RouteLLM's similarity-weighted ranking weighs by similarity;
  numpy, see the class).
- `mf`: a two-tower scorer for N-way routing, sigmoid(<P e(q), v_j> + b_j): one projection P of
  the query's embedding shared by all configurations, one vector v_j per configuration. Hand-written
  (numpy, full-batch Adam): scikit-learn has no factorised multi-output model.
- `ensemble`: `embed-knn` and `embed-lr` stacked: per configuration, a logistic regression on
  the members' out-of-fold predicted scores (scikit-learn), so its output is a calibrated
  probability. On the scores, not their logits: a neighbour mean of 0 or 1 is common and its
  logit is only the clip: stacking logits cost 0.013 grouped APGR on RouteLLM's MMLU outcomes
  (benchmarks/RESULTS.md, issue 16).

The settings below (k, width, penalty, rank) were chosen by hand on RouteLLM's MMLU outcomes
(k 50 to 400 and C 0.01 to 1 tried: under 0.03 APGR apart) and on the tests' topics (mf's L2);
none is tuned per run. Their figures: `benchmarks/bench_routers.py` (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tradeoff.errors import UserError
from tradeoff.policy import embed
from tradeoff.policy.features import TOKENS, WORDS, featurize
from tradeoff.policy.logistic import fit_per_config, logit, sigmoid

WORDS_DIM = 512


def _pack(a: np.ndarray) -> dict[str, Any]:
    """An array in a JSON file: float16 (knn's training embeddings) or float32, base64."""
    a = np.ascontiguousarray(a)
    text = base64.b64encode(a.tobytes()).decode()
    return {"dtype": a.dtype.str, "shape": list(a.shape), "b64": text}


def _unpack(d: dict[str, Any]) -> np.ndarray:
    raw = base64.b64decode(d["b64"])
    array = np.frombuffer(raw, dtype=np.dtype(d["dtype"])).reshape(d["shape"]).astype(np.float64)
    if not np.isfinite(array).all():  # (a packed array: `_finite` reads the file's numbers)
        raise ValueError("it holds a number that is not finite (NaN or infinity)")
    return array


class Router:
    """Fit on features and scores (N x M in [0, 1]); predict expected scores (N x M)."""

    kind: ClassVar[str]
    features: ClassVar[str]  # "words" or "embedding"

    def fit(self, x: np.ndarray, scores: np.ndarray) -> Router:
        raise NotImplementedError

    def expected(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Router:
        raise NotImplementedError


class WordsLR(Router):
    kind, features = "words-lr", "words"

    def __init__(
        self, weights: np.ndarray | None = None, dim: int = WORDS_DIM, tokens: int = TOKENS
    ) -> None:
        self.weights, self.dim, self.tokens = weights, dim, tokens

    def fit(self, x: np.ndarray, scores: np.ndarray) -> Router:
        """Weights (M x d) of x's columns, the last (`featurize`'s constant 1) the intercept;
        L2 penalty 1 on the summed log-loss."""
        coef, intercept = fit_per_config(x[:, :-1], scores, c=1.0, solver="newton-cholesky")
        self.weights = np.hstack([coef, intercept[:, None]])
        return self

    def expected(self, x: np.ndarray) -> np.ndarray:
        assert self.weights is not None
        return sigmoid(x @ self.weights.T)

    def state(self) -> dict[str, Any]:
        assert self.weights is not None
        return {"dim": self.dim, "tokens": self.tokens, "weights": self.weights.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Router:
        """A policy fitted before `tokens` was kept split words as version 1 does."""
        tokens = state.get("tokens", 1)
        if tokens not in WORDS:
            raise ValueError(
                f"tokens {tokens!r} is not a known version ({', '.join(map(str, WORDS))})"
            )
        return cls(np.asarray(state["weights"], dtype=float), int(state["dim"]), tokens)


class EmbedLR(Router):
    kind, features = "embed-lr", "embedding"
    # L2 penalty on the mean log-loss, whatever the number of queries n (scikit-learn's C is
    # 1 / (PENALTY * n)): C = 0.1 on RouteLLM's 8,770 training queries of a fold, the best there.
    PENALTY = 1e-3

    def __init__(self, coef: np.ndarray | None = None, intercept: np.ndarray | None = None):
        self.coef, self.intercept = coef, intercept

    def fit(self, x: np.ndarray, scores: np.ndarray) -> Router:
        self.coef, self.intercept = fit_per_config(x, scores, c=1.0 / (self.PENALTY * len(x)))
        return self

    def expected(self, x: np.ndarray) -> np.ndarray:
        assert self.coef is not None and self.intercept is not None
        return sigmoid(x @ self.coef.T + self.intercept)

    def state(self) -> dict[str, Any]:
        assert self.coef is not None and self.intercept is not None
        return {"coef": _pack(self.coef.astype(np.float32)), "intercept": self.intercept.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Router:
        return cls(_unpack(state["coef"]), np.asarray(state["intercept"], dtype=float))


class EmbedKNN(Router):
    """Hand-written in numpy: the training embeddings are unit vectors, so cosine similarity is
    one matrix product. scikit-learn's KNeighborsRegressor (metric="cosine") re-normalised all
    10,962 stored vectors on every call: 122 ms a decision against about 2 ms here
    (benchmarks/RESULTS.md, issue 16)."""

    kind, features = "embed-knn", "embedding"
    K = 100
    WIDTH = 0.1  # cosine distance at which a neighbour weighs 1/e of an identical query
    BLOCK = 1024  # queries scored against every training query at once

    def __init__(self, x: np.ndarray | None = None, scores: np.ndarray | None = None) -> None:
        self.x, self.scores = x, scores

    def fit(self, x: np.ndarray, scores: np.ndarray) -> Router:
        self.x, self.scores = x, scores
        return self

    def expected(self, x: np.ndarray) -> np.ndarray:
        assert self.x is not None and self.scores is not None
        k = min(self.K, len(self.x))
        out = np.empty((len(x), self.scores.shape[1]))
        for at in range(0, len(x), self.BLOCK):
            similarity = x[at : at + self.BLOCK] @ self.x.T
            nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
            near = np.take_along_axis(similarity, nearest, axis=1)
            weights = np.exp(-(1.0 - near) / self.WIDTH)
            block = np.einsum("qk,qkm->qm", weights, self.scores[nearest])
            out[at : at + self.BLOCK] = block / weights.sum(axis=1, keepdims=True)
        return np.clip(out, 0.0, 1.0)

    def state(self) -> dict[str, Any]:
        assert self.x is not None and self.scores is not None
        return {"x": _pack(self.x.astype(np.float16)), "scores": _pack(self.scores)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Router:
        return cls(_unpack(state["x"]), _unpack(state["scores"]))


class TwoTower(Router):
    kind, features = "mf", "embedding"
    RANK, STEPS, RATE, L2 = 16, 400, 0.02, 1e-2

    def __init__(
        self, p: np.ndarray | None = None, v: np.ndarray | None = None, b: np.ndarray | None = None
    ) -> None:
        self.p, self.v, self.b = p, v, b

    def fit(self, x: np.ndarray, scores: np.ndarray) -> Router:
        rng = np.random.default_rng(0)
        n, d = x.shape
        m = scores.shape[1]
        params = [
            rng.normal(0, 1 / math.sqrt(d), (d, self.RANK)),
            rng.normal(0, 1 / math.sqrt(self.RANK), (self.RANK, m)),
            logit(scores.mean(axis=0)),
        ]
        first = [np.zeros_like(a) for a in params]
        second = [np.zeros_like(a) for a in params]
        for step in range(1, self.STEPS + 1):
            p, v, b = params
            u = x @ p
            err = (sigmoid(u @ v + b) - scores) / (n * m)  # d(mean log-loss)/d(logit)
            grads = [x.T @ (err @ v.T) + self.L2 * p, u.T @ err + self.L2 * v, err.sum(axis=0)]
            for a, g, m1, m2 in zip(params, grads, first, second):  # Adam
                m1 *= 0.9
                m1 += 0.1 * g
                m2 *= 0.999
                m2 += 0.001 * g * g
                a -= self.RATE * (m1 / (1 - 0.9**step)) / (np.sqrt(m2 / (1 - 0.999**step)) + 1e-8)
        self.p, self.v, self.b = params
        return self

    def expected(self, x: np.ndarray) -> np.ndarray:
        assert self.p is not None and self.v is not None and self.b is not None
        return sigmoid(x @ self.p @ self.v + self.b)

    def state(self) -> dict[str, Any]:
        assert self.p is not None and self.v is not None and self.b is not None
        return {"p": _pack(self.p.astype(np.float32)), "v": self.v.tolist(), "b": self.b.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Router:
        return cls(_unpack(state["p"]), np.asarray(state["v"]), np.asarray(state["b"]))


class Ensemble(Router):
    kind, features = "ensemble", "embedding"
    MEMBERS: ClassVar[tuple[type[Router], ...]] = (EmbedKNN, EmbedLR)
    FOLDS = 5

    def __init__(
        self,
        members: list[Router] | None = None,
        stack: EmbedLR | None = None,
        stacked_on: str = "scores",
    ) -> None:
        # stacked_on "logits": a policy file written before 2026-12-03 stacked the logits.
        self.members, self.stack, self.stacked_on = members or [], stack, stacked_on

    def _stacked(self, predictions: list[np.ndarray], j: int) -> np.ndarray:
        take = logit if self.stacked_on == "logits" else np.asarray
        return np.stack([take(p[:, j]) for p in predictions], axis=1)

    def fit(self, x: np.ndarray, scores: np.ndarray) -> Router:
        order = np.random.default_rng(0).permutation(len(x))
        folds = [order[i :: self.FOLDS] for i in range(min(self.FOLDS, len(x)))]
        oof = [np.zeros_like(scores, dtype=float) for _ in self.MEMBERS]
        for test in folds:
            train = np.setdiff1d(order, test)
            for out, member in zip(oof, self.MEMBERS):
                out[test] = member().fit(x[train], scores[train]).expected(x[test])
        fitted = [
            fit_per_config(self._stacked(oof, j), scores[:, [j]], c=1.0)
            for j in range(scores.shape[1])
        ]
        coef, intercept = (np.vstack([f[k] for f in fitted]) for k in (0, 1))
        self.stack = EmbedLR(coef, intercept.ravel())
        self.members = [member().fit(x, scores) for member in self.MEMBERS]
        return self

    def expected(self, x: np.ndarray) -> np.ndarray:
        assert self.stack is not None and self.stack.coef is not None
        predictions = [m.expected(x) for m in self.members]
        assert self.stack.intercept is not None
        columns = [
            sigmoid(self._stacked(predictions, j) @ self.stack.coef[j] + self.stack.intercept[j])
            for j in range(len(self.stack.intercept))
        ]
        return np.stack(columns, axis=1)

    def state(self) -> dict[str, Any]:
        assert self.stack is not None
        return {
            "members": [{"kind": m.kind, **m.state()} for m in self.members],
            "stack": self.stack.state(),
            "stacked_on": self.stacked_on,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Router:
        members = [ROUTERS[m["kind"]].from_state(m) for m in state["members"]]
        stack = EmbedLR.from_state(state["stack"])
        assert isinstance(stack, EmbedLR)
        return cls(members, stack, state.get("stacked_on", "logits"))


ROUTERS: dict[str, type[Router]] = {
    r.kind: r for r in (WordsLR, EmbedLR, EmbedKNN, TwoTower, Ensemble)
}


def resolve_router(name: str) -> str:
    """A router's kind, checked: an unknown name, or one whose embedding model is not installed,
    is one line saying what would do."""
    if name not in ROUTERS:
        raise UserError(f"unknown router '{name}'; known: {', '.join(ROUTERS)}")
    if ROUTERS[name].features == "embedding" and not embed.available():
        raise embed.missing(f"router '{name}'")
    return name


@dataclass
class Featurizer:
    """The features a router reads, for given queries; embeddings cached in `run`'s store."""

    kind: str
    run: str | Path | None = None
    progress: Callable[[int, int], None] | None = None
    tokens: int = TOKENS  # how a words router's policy splits words (`features.WORDS`)

    def __call__(self, texts: list[str], tasks: list[str]) -> np.ndarray:
        router = ROUTERS[self.kind]
        if router.features == "words":
            return featurize(texts, tasks, WORDS_DIM, self.tokens)
        return embed.embed(texts, self.run, f"router '{self.kind}'", self.progress).astype(
            np.float64
        )


def reads_task(kind: str) -> bool:
    """Whether router `kind` reads a query's task (the words routers' features hold it)."""
    return ROUTERS[kind].features == "words"


def new_router(kind: str) -> Router:
    return ROUTERS[kind]()


def _finite(value: Any) -> bool:
    """Whether every number in `value` (a router's state, as read from JSON) is finite: a NaN
    weight routed every query to the first configuration, without a word."""
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        try:
            return bool(np.isfinite(np.asarray(value, dtype=float)).all())
        except OverflowError:  # an integer beyond any float
            return False
        except (TypeError, ValueError):  # not numbers alone: its members one by one
            return all(_finite(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def load_router(data: dict[str, Any], configs: int | None = None) -> Router:
    """The router a policy file keeps, checked: its state whole, and, given the policy's number
    of `configs`, its expected scores for an empty query (zeros for an embedding), one for each.
    A file edited or cut short is one line, here, not a traceback at the first query."""
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in ROUTERS:
        raise UserError(f"unknown router '{kind}' in the policy file; known: {', '.join(ROUTERS)}")
    try:
        if not _finite(data):
            raise ValueError("it holds a number that is not finite (NaN or infinity)")
        router = ROUTERS[kind].from_state(data)
        if configs is not None:  # a policy's router (not an ensemble's stack): a query's scores
            words = router.features == "words"
            query = featurize([""], [""], WORDS_DIM) if words else np.zeros((1, embed.DIM))
            shape = router.expected(query).shape
            if shape != (1, configs):
                raise ValueError(f"it gives {shape[-1]} scores for the {configs} configurations")
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, AssertionError) as exc:
        raise UserError(
            f"the policy file's {kind} router is not valid ({exc}); fit the policy again "
            "(`tradeoff policy fit`)"
        ) from None
    return router
