"""Which query features and which router best predict where GPT-4 beats Mixtral, on RouteLLM's
recorded MMLU outcomes (issue 16's first measurement): hashed words against sentence embeddings
(all-MiniLM-L6-v2, the bundled GGUF models' own), logistic regression against k-nearest
neighbours, held-out subjects against random folds. Prints a Markdown section for
benchmarks/RESULTS.md.

    PYTHONPATH=src python benchmarks/bench_router_features.py [DATA] --minilm DIR
        [--gguf smollm2-135m,gemma3-270m] [--cache /tmp] [--subjects N] [--limit N]

DATA is the folder of `mmlu_SUBJECT.csv` files (default ../shared/data/routellm-mmlu beside the
repository). --minilm is an extracted all-MiniLM-L6-v2 sentence-transformers directory, run
through transformers (mean pooling over the attention mask, L2 norm, as its 1_Pooling says).
Embeddings are cached by prompt as .npy under --cache, so reruns (and interrupted runs)
only compute what is missing. Curves, APGR and CPT come from tradeoff.analysis.router.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from section import commit, loadavg, table, verdict
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, KFold
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tradeoff.analysis.router import (
    Curve,
    apgr,
    cpt,
    oracle_curve,
    random_apgr_spread,
    random_curve,
    threshold_curve,
)
from tradeoff.meters.host import cpu_model
from tradeoff.policy.features import featurize
from tradeoff.policy.routers import WordsLR

ROOT = Path(__file__).resolve().parent.parent
WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"
# RouteLLM's prices, $ per million tokens, equal token counts assumed (the data's README): only
# the curves' cost column uses them; APGR and CPT do not.
PRICE_WEAK, PRICE_STRONG = 0.24, 24.7
MINILM_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length (sentence_bert_config.json)
GGUF_TOKENS = 512  # the GGUF models' context here: longer prompts are truncated
MINILM_BATCH = 32
C = 0.1  # inverse L2 strength of every logistic regression, on standardised features
KS = (10, 50)
EVALUATIONS = ("grouped by subject", "5-fold random")

Encoder = Callable[[list[str]], np.ndarray]


def say(message: str) -> None:
    print(f"[bench_router_features] {message}", file=sys.stderr, flush=True)


# 1. Data -----------------------------------------------------------------------------------------


def load(data: Path, subjects: int | None, limit: int | None) -> pd.DataFrame:
    """One row per question: subject, prompt, weak and strong correctness (0/1)."""
    files = sorted(data.glob("mmlu_*.csv"))
    if not files:
        sys.exit(f"no mmlu_*.csv under {data}; give the routellm-mmlu folder as DATA")
    frames = []
    for path in files[:subjects]:
        df = pd.read_csv(path).head(limit)
        frames.append(
            pd.DataFrame(
                {
                    "subject": path.stem.removeprefix("mmlu_"),
                    "prompt": df["prompt"].astype(str),
                    "weak": df[WEAK].astype(bool).astype(float),
                    "strong": df[STRONG].astype(bool).astype(float),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


# 2. Features -------------------------------------------------------------------------------------


def minilm_encoder(directory: Path) -> Encoder:
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory).eval()

    def encode(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
        # Similar lengths together: far less padding than the input order.
        order = np.argsort([len(t) for t in texts], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(texts), MINILM_BATCH):
                rows = order[start : start + MINILM_BATCH]
                batch = tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=MINILM_TOKENS,
                    return_tensors="pt",
                )
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[rows] = torch.nn.functional.normalize(pooled, dim=1).numpy()
        return out

    return encode


def gguf_encoder(name: str) -> Encoder:
    import llama_cpp

    from tradeoff.engines.bundled import BUNDLED

    llm = llama_cpp.Llama(
        model_path=str(BUNDLED[name].locate()),
        embedding=True,
        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
        n_ctx=GGUF_TOKENS,
        n_batch=GGUF_TOKENS,
        n_threads=os.cpu_count(),
        verbose=False,
    )

    def encode(texts: list[str]) -> np.ndarray:
        x = np.asarray(llm.embed(texts, truncate=True), dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    return encode


@dataclass
class FeatureSet:
    name: str
    x: np.ndarray
    embedding: bool  # kNN by cosine runs on embeddings only
    prompts_per_s: float  # batched, over every prompt, when the features were computed
    load_then: str  # load average (1 / 5 / 15 min) right after computing them
    latency_ms: float  # median per prompt, one prompt per call
    note: str


def latency(encode: Encoder, sample: list[str]) -> float:
    encode(sample[:2])  # warm
    times = []
    for text in sample:
        t0 = time.perf_counter()
        encode([text])
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


CHUNK = 256  # prompts embedded between two saves of the cache: an interrupted run resumes


def _key(name: str, text: str) -> str:
    # Hex, not bytes: numpy's fixed-width bytes drop trailing NULs, so 1 key in 256 came back
    # unequal to itself.
    return hashlib.sha256(f"{name}\0{text}".encode()).hexdigest()[:32]


def cached(
    name: str,
    texts: list[str],
    cache: Path,
    make: Callable[[], Encoder],
    sample: list[str],
) -> FeatureSet:
    """Embeddings of `texts` by prompt: those in the cache (two .npy files per model, keys and
    vectors) are read, the others computed, shortest first, and added every CHUNK prompts.
    Batched throughput is this run's over the prompts it computed, else the last run's that
    computed any (kept in a .json beside them)."""
    keys_path = cache / f"router_features_{name}.keys.npy"
    vectors_path = cache / f"router_features_{name}.vectors.npy"
    facts_path = cache / f"router_features_{name}.json"
    keys = np.load(keys_path) if keys_path.exists() else np.empty(0, dtype="U32")
    vectors = np.load(vectors_path) if vectors_path.exists() else None
    row = {k: i for i, k in enumerate(keys.tolist())}
    wanted = [_key(name, t) for t in texts]
    missing = sorted(
        {k: t for k, t in zip(wanted, texts) if k not in row}.items(),
        key=lambda kt: len(kt[1]),
    )
    encode = make()
    if missing:
        say(f"{name}: embedding {len(missing)} distinct prompts not in the cache ...")
        t0 = time.perf_counter()
        for start in range(0, len(missing), CHUNK):
            chunk = missing[start : start + CHUNK]
            x = encode([t for _, t in chunk])
            vectors = x if vectors is None else np.concatenate([vectors, x])
            keys = np.concatenate([keys, np.array([k for k, _ in chunk], dtype="U32")])
            row.update({k: len(keys) - len(chunk) + i for i, (k, _) in enumerate(chunk)})
            np.save(vectors_path, vectors)
            np.save(keys_path, keys)
            done = start + len(chunk)
            say(f"{name}: {done}/{len(missing)}, {done / (time.perf_counter() - t0):.1f} prompts/s")
        seconds = time.perf_counter() - t0
        facts = {
            "prompts": len(missing),
            "prompts_per_s": len(missing) / seconds,
            "load": loadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
        note = f"{len(missing):,} prompts computed this run in {seconds:.0f} s"
        kept = json.loads(facts_path.read_text()) if facts_path.exists() else None
        # The rate over the most prompts computed at once stands for the model: a rerun that
        # fills in a few prompts measures mostly its start.
        if kept is None or kept["prompts"] <= facts["prompts"]:
            facts_path.write_text(json.dumps(facts))
        else:
            facts = kept
            note += f"; rate measured {facts['date']} over {facts['prompts']:,} prompts"
    else:
        facts = json.loads(facts_path.read_text())
        note = f"all cached; rate measured {facts['date']} over {facts['prompts']:,} prompts"
    assert vectors is not None
    x = vectors[[row[k] for k in wanted]]
    ms = latency(encode, sample)
    return FeatureSet(name, x, True, facts["prompts_per_s"], facts["load"], ms, note)


def hashed(texts: list[str], sample: list[str]) -> FeatureSet:
    # One task name for every prompt: the subject is not a feature (no set here gets it).
    t0 = time.perf_counter()
    x = featurize(texts, ["mmlu"] * len(texts))
    rate = len(texts) / (time.perf_counter() - t0)
    ms = latency(lambda t: featurize(t, ["mmlu"] * len(t)), sample)
    return FeatureSet("hashed words", x, False, rate, loadavg(), ms, "computed this run")


# 3. Routers: each maps (x_fit, outcomes_fit (n, 2: weak, strong), x_eval) to a score ordering the
# evaluated queries by how much they need the strong model (higher: send first). ---------------


def _probability(x: np.ndarray, y: np.ndarray, x_eval: np.ndarray) -> np.ndarray:
    """P(y = 1) by logistic regression; a constant where the fit data has one class only."""
    if np.unique(y).size < 2:
        return np.full(len(x_eval), float(y.mean()))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    return model.fit(x, y).predict_proba(x_eval)[:, 1]


def lr_gain(x: np.ndarray, y: np.ndarray, x_eval: np.ndarray) -> np.ndarray:
    """One classifier: P(strong right and weak wrong)."""
    return _probability(x, (y[:, 1] > y[:, 0]).astype(int), x_eval)


def lr_pair(x: np.ndarray, y: np.ndarray, x_eval: np.ndarray) -> np.ndarray:
    """Two classifiers: P(strong right) − P(weak right)."""
    return _probability(x, y[:, 1], x_eval) - _probability(x, y[:, 0], x_eval)


def irls_pair(x: np.ndarray, y: np.ndarray, x_eval: np.ndarray) -> np.ndarray:
    """`policy fit`'s words-lr predictors, one per model, same difference (fitted by its own
    IRLS until 2026-12-07: the same predictions, bench_logistic.py)."""
    e = WordsLR().fit(x, y).expected(x_eval)
    return e[:, 1] - e[:, 0]


def knn(k: int) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    def route(x: np.ndarray, y: np.ndarray, x_eval: np.ndarray) -> np.ndarray:
        """Mean correctness of each model over the k nearest fit queries (cosine)."""
        model = KNeighborsRegressor(n_neighbors=min(k, len(x)), metric="cosine", algorithm="brute")
        e = model.fit(x, y).predict(x_eval)
        return e[:, 1] - e[:, 0]

    return route


Router = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def routers(features: FeatureSet) -> dict[str, Router]:
    found: dict[str, Router] = {
        "LR P(strong) − P(weak)": lr_pair,
        "LR P(only strong right)": lr_gain,
    }
    if features.embedding:
        found.update({f"kNN k={k} (cosine)": knn(k) for k in KS})
    else:
        found["today's policy (IRLS pair)"] = irls_pair
    return found


# 4. Evaluation -----------------------------------------------------------------------------------


def splits(data: pd.DataFrame, folds: int, seed: int) -> dict[str, list[tuple[np.ndarray, ...]]]:
    groups = data["subject"].to_numpy()
    n_groups = len(set(groups))
    grouped = GroupKFold(n_splits=min(folds, n_groups)).split(data, groups=groups)
    shuffled = KFold(n_splits=folds, shuffle=True, random_state=seed).split(data)
    found = {EVALUATIONS[0]: list(grouped), EVALUATIONS[1]: list(shuffled)}
    for fit, held in found[EVALUATIONS[0]]:
        assert not set(groups[fit]) & set(groups[held]), "a subject on both sides of a split"
    return found


def out_of_fold(
    route: Router, x: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, ...]]
) -> np.ndarray:
    score = np.full(len(x), np.nan)
    for fit, held in folds:
        score[held] = route(x[fit], y[fit], x[held])
    return score


@dataclass
class Row:
    evaluation: str
    features: str
    router: str
    apgr: float
    cpt50: float
    cpt80: float
    at95: float  # strong-call share at which the curve reaches 95% of strong accuracy


def measure(evaluation: str, features: str, router: str, curve: Curve, y: np.ndarray) -> Row:
    acc_w, acc_s = float(y[:, 0].mean()), float(y[:, 1].mean())
    x95 = (0.95 * acc_s - acc_w) / (acc_s - acc_w)
    return Row(
        evaluation,
        features,
        router,
        apgr(curve, acc_w, acc_s),
        cpt(curve, acc_w, acc_s, 0.5),
        cpt(curve, acc_w, acc_s, 0.8),
        cpt(curve, acc_w, acc_s, x95),
    )


# 5. The section ----------------------------------------------------------------------------------


def pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1%}"


def section(
    args: argparse.Namespace,
    data: pd.DataFrame,
    sets: list[FeatureSet],
    rows: list[Row],
    baselines: list[Row],
    grouped_folds: int,
    wall: float,
    loads: tuple[str, str],
) -> str:
    y = data[["weak", "strong"]].to_numpy()
    acc_w, acc_s = float(y[:, 0].mean()), float(y[:, 1].mean())
    x95 = (0.95 * acc_s - acc_w) / (acc_s - acc_w)
    spread = random_apgr_spread(y[:, 0], y[:, 1])
    n_subjects = data["subject"].nunique()
    cut = []
    if args.subjects is not None:
        cut.append(f"first {args.subjects} subjects")
    if args.limit is not None:
        cut.append(f"at most {args.limit} questions each")
    scope = f"**cut: {', '.join(cut)}**" if cut else "all of them"
    cmd = "PYTHONPATH=src python benchmarks/bench_router_features.py " + shlex.join(sys.argv[1:])

    feature_rows = [
        [
            s.name,
            str(s.x.shape[1]),
            f"{s.prompts_per_s:,.1f}",
            f"{s.latency_ms:.2f}",
            f"{s.note}; load after {s.load_then}",
        ]
        for s in sets
    ]
    result_rows = [
        [
            r.evaluation,
            r.features,
            r.router,
            f"{r.apgr:.3f}",
            pct(r.cpt50),
            pct(r.cpt80),
            pct(r.at95),
        ]
        for r in baselines + rows
    ]

    lines = [
        f"## Router features on RouteLLM's MMLU outcomes ({time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()}-core {cpu_model()})",
        "",
        f"Command: `{cmd}` ({wall:.0f} s wall; what came from the embedding cache is in the "
        "features table).",
        "",
        f"Data: RouteLLM's recorded correctness of Mixtral-8x7B (weak) and GPT-4-1106 (strong) on "
        f"{len(data):,} questions of {n_subjects} MMLU subjects ({scope}); weak accuracy "
        f"{acc_w:.3f}, strong {acc_s:.3f}, so 95% of strong's accuracy is {0.95 * acc_s:.3f}, "
        f"{x95:.1%} of the way from weak to strong (the strong share a random router needs "
        f"there). Out-of-fold scores for every question: **grouped by subject** is "
        f"{grouped_folds}-fold GroupKFold over whole subjects (a router "
        f"never saw the subjects it is scored on); **5-fold random** is KFold, shuffled, seed "
        f"{args.seed}. One curve per row over all questions, built by "
        "`tradeoff.analysis.router.threshold_curve` on the router's score; APGR and CPT by its "
        '`apgr` and `cpt`; "strong share at 95%" is `cpt` at that x. A random order\'s APGR '
        f"spreads ±{spread:.3f} (one standard deviation, `random_apgr_spread`) around 0.5.",
        "",
        "Features (throughput: all prompts, batched: MiniLM "
        f"{MINILM_BATCH} prompts per forward pass truncated at {MINILM_TOKENS} tokens; the GGUF "
        f"models through llama.cpp, sequences packed into {GGUF_TOKENS}-token batches, each "
        f"truncated at {GGUF_TOKENS} tokens, mean pooled; latency: median over "
        f"{args.latency_sample} prompts, one per call; wall-clock, measured):",
        "",
        table(
            [
                "feature set",
                "dim",
                "prompts/s batched",
                "ms/prompt at batch 1",
                "measured",
            ],
            feature_rows,
        ),
        "",
        f"Routers (scikit-learn): **LR P(strong) − P(weak)**: two logistic regressions "
        f"(standardised features, L2, C = {C}), one per model's correctness, routing by the "
        'difference; **LR P(only strong right)**: one logistic regression on "strong right and '
        'weak wrong"; **kNN**: KNeighborsRegressor, cosine, brute force, uniform weights, the '
        "neighbours' mean correctness of each model, routing by the difference (ties move "
        "together, as threshold_curve does); **today's policy**: `tradeoff.policy.fit`'s own "
        "IRLS predictors on today's features, the same difference. The hashed-word features get "
        'one task name ("mmlu") for every question: no feature set is told the subject.',
        "",
        table(
            [
                "evaluation",
                "features",
                "router",
                "APGR",
                "CPT(50%)",
                "CPT(80%)",
                "strong share at 95% of strong accuracy",
            ],
            result_rows,
        ),
        "",
    ]
    lines += verdicts(rows, baselines)
    lines += [
        "",
        f"Host: {os.cpu_count()} cores ({cpu_model()}), load average (1 / 5 / 15 min) "
        f"{loads[0]} before and {loads[1]} after; Python {platform.python_version()}, "
        f"scikit-learn {sklearn_version()}, torch/transformers and llama-cpp-python as "
        f"installed ({library_versions()}); tree {commit()}.",
    ]
    return "\n".join(lines)


def sklearn_version() -> str:
    import sklearn

    return sklearn.__version__


def library_versions() -> str:
    found = []
    for module in ("torch", "transformers", "llama_cpp"):
        try:
            found.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            found.append(f"{module} not installed")
    return ", ".join(found)


def target_rows(rows: list[Row], rand: Row, name: Callable[[Row], str]) -> list[list[str]]:
    """Issue 16's accuracy targets: the best of `rows` at each, beside the random router."""
    grouped = [r for r in rows if r.evaluation == EVALUATIONS[0]]
    shuffled = [r for r in rows if r.evaluation == EVALUATIONS[1]]
    g_apgr = max(grouped, key=lambda r: r.apgr)
    g_share = min(grouped, key=lambda r: r.at95 if not math.isnan(r.at95) else math.inf)
    s_apgr = max(shuffled, key=lambda r: r.apgr)
    return [
        [
            "grouped APGR ≥ 0.65",
            f"{g_apgr.apgr:.3f} ({name(g_apgr)})",
            f"{rand.apgr:.3f}",
            verdict(g_apgr.apgr >= 0.65),
        ],
        [
            "grouped: ≤ 65% strong calls at 95% of strong accuracy",
            f"{pct(g_share.at95)} ({name(g_share)})",
            pct(rand.at95),
            verdict(g_share.at95 <= 0.65),
        ],
        [
            "5-fold APGR ≥ 0.70",
            f"{s_apgr.apgr:.3f} ({name(s_apgr)})",
            f"{rand.apgr:.3f}",
            verdict(s_apgr.apgr >= 0.70),
        ],
    ]


def verdicts(rows: list[Row], baselines: list[Row]) -> list[str]:
    """Which row is best per evaluation, by how much over the next feature set's best and over
    today's features, and the issue's targets against it, all from the rows."""
    lines = []
    for evaluation in EVALUATIONS:
        mine = [r for r in rows if r.evaluation == evaluation]
        best = max(mine, key=lambda r: r.apgr)
        others = [r for r in mine if r.features != best.features]
        hashed_rows = [r for r in mine if r.features == "hashed words"]
        text = (
            f"- **{evaluation}**: best is {best.features} with {best.router}, APGR "
            f"{best.apgr:.3f}, strong share at 95% {pct(best.at95)}"
        )
        if others:
            runner = max(others, key=lambda r: r.apgr)
            text += (
                f"; the best other feature set, {runner.features} ({runner.router}), is "
                f"{best.apgr - runner.apgr:.3f} APGR behind it at {runner.apgr:.3f}"
            )
        if hashed_rows and best.features != "hashed words":
            base = max(hashed_rows, key=lambda r: r.apgr)
            text += (
                f"; over today's hashed words at their best ({base.router}, APGR "
                f"{base.apgr:.3f}) it gains {best.apgr - base.apgr:.3f} APGR and needs "
                f"{pct(best.at95)} strong calls at 95% against their {pct(base.at95)}"
            )
        lines.append(text + ".")
        # Best per router family too, so the router choice is visible apart from the features.
        by_router: dict[str, Row] = {}
        for r in mine:
            if r.router not in by_router or r.apgr > by_router[r.router].apgr:
                by_router[r.router] = r
        lines.append(
            "  Best per router: "
            + "; ".join(f"{k}: {v.apgr:.3f} ({v.features})" for k, v in by_router.items())
            + "."
        )
    pair_vs_gain = [
        (r.apgr - g.apgr)
        for r in rows
        for g in rows
        if r.router == "LR P(strong) − P(weak)"
        and g.router == "LR P(only strong right)"
        and (r.evaluation, r.features) == (g.evaluation, g.features)
    ]
    wins = sum(d > 0 for d in pair_vs_gain)
    lines.append(
        f"- Logistic regression, two classifiers against one: P(strong) − P(weak) beats "
        f"P(only strong right) in {wins} of {len(pair_vs_gain)} (evaluation, feature set) pairs, "
        f"by {statistics.mean(pair_vs_gain):+.3f} APGR on average."
    )
    rand = next(r for r in baselines if r.router == "random")
    lines += [
        "",
        "Issue 16's targets, best row of each, beside the random router's figure on the same "
        "data (a target random already meets does not separate routers):",
        "",
        table(
            ["target", "best measured", "random", "verdict"],
            target_rows(rows, rand, lambda r: f"{r.features}, {r.router}"),
        ),
    ]
    return lines


# 6. Main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "data",
        nargs="?",
        type=Path,
        default=ROOT.parent / "shared" / "data" / "routellm-mmlu",
    )
    parser.add_argument("--minilm", type=Path, help="extracted all-MiniLM-L6-v2 directory")
    parser.add_argument(
        "--gguf",
        default="smollm2-135m,gemma3-270m",
        help="bundled models whose embeddings to try, comma-separated ('' for none)",
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp"), help="embedding cache folder")
    parser.add_argument("--subjects", type=int, help="only the first N subjects (smoke tests)")
    parser.add_argument("--limit", type=int, help="at most N questions per subject (smoke tests)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-sample", type=int, default=32, help="prompts timed one by one")
    args = parser.parse_args()
    if args.minilm is not None and not (args.minilm / "config.json").exists():
        sys.exit(f"{args.minilm} holds no config.json: extract all_minilm_l6_v2/model.zip there")
    args.cache.mkdir(parents=True, exist_ok=True)

    load_before = loadavg()
    t0 = time.perf_counter()
    data = load(args.data, args.subjects, args.limit)
    texts = data["prompt"].tolist()
    y = data[["weak", "strong"]].to_numpy()
    rng = np.random.default_rng(args.seed)
    sample = [texts[i] for i in rng.choice(len(texts), args.latency_sample, replace=False)]
    say(f"{len(data)} questions, {data['subject'].nunique()} subjects")

    sets = [hashed(texts, sample)]
    if args.minilm is not None:
        sets.append(
            cached(
                "all-MiniLM-L6-v2",
                texts,
                args.cache,
                lambda: minilm_encoder(args.minilm),
                sample,
            )
        )
    for name in filter(None, args.gguf.split(",")):
        sets.append(cached(name, texts, args.cache, lambda n=name: gguf_encoder(n), sample))

    evaluated = splits(data, args.folds, args.seed)
    ones = np.ones(len(data))
    pair = (y[:, 0], y[:, 1], PRICE_WEAK * ones, PRICE_STRONG * ones)
    baselines = [
        measure("either (nothing fitted)", "—", name, curve(*pair), y)
        for name, curve in (("oracle", oracle_curve), ("random", random_curve))
    ]
    rows = []
    for evaluation, folds in evaluated.items():
        for features in sets:
            for name, route in routers(features).items():
                t1 = time.perf_counter()
                score = out_of_fold(route, features.x, y, folds)
                curve = threshold_curve(*pair, score, label=name)
                rows.append(measure(evaluation, features.name, name, curve, y))
                say(
                    f"{evaluation} | {features.name} | {name}: APGR {rows[-1].apgr:.3f} "
                    f"({time.perf_counter() - t1:.1f} s)"
                )
    wall = time.perf_counter() - t0
    grouped_folds = len(evaluated[EVALUATIONS[0]])
    loads = (load_before, loadavg())
    print(section(args, data, sets, rows, baselines, grouped_folds, wall, loads))


if __name__ == "__main__":
    main()
