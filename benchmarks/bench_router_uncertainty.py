"""Whether a bundled model's own uncertainty about a question tells where GPT-4 beats Mixtral,
on RouteLLM's recorded MMLU outcomes (issue 16): the signal its earlier runs named as the one
left, since no feature of the question's text beat the sentence embedding. Each question (its
prompt ends in "Answer:") is run once through a bundled GGUF model by llama.cpp, and its
next-token log-probabilities of the four answer letters (" A" and "A" forms) become features:
entropy, top probability and margin over the letters, their total mass, and the prompt's log
length in tokens. Routed by the package's embed-lr (`out_of_fold`, grouped by subject and
5-fold random) on those features alone, on all-MiniLM-L6-v2's embedding alone, and on both.
Prints a Markdown section for benchmarks/RESULTS.md.

    PYTHONPATH=src python benchmarks/bench_router_uncertainty.py [DATA]
        [--models smollm2-135m,gemma3-270m] [--limit 40] [--cache /tmp/rf-cache]

DATA and the embedding cache are bench_router_features.py's. --limit: the first N questions
of each subject (the models took 0.20-0.29 s a question on this 2-core machine). Letter
log-probabilities are cached by prompt under --cache, so a rerun computes only what is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from bench_router_features import EVALUATIONS, PRICE_STRONG, PRICE_WEAK, cached, load, measure
from section import commit, loadavg, table

from tradeoff.analysis.router import random_apgr_spread, threshold_curve
from tradeoff.meters.host import cpu_model
from tradeoff.policy import embed
from tradeoff.policy.fit import out_of_fold

ROOT = Path(__file__).resolve().parent.parent
FOLDS, SEED = 5, 0
CONTEXT = 2048  # tokens; a longer prompt keeps its end (the question and "Answer:")
FEATURES = ("entropy", "top", "margin", "mass")
# MiniLM's unit vectors spread over 384 dimensions, about 1/sqrt(384) each: the uncertainty
# features, standardised, are scaled to that, and to 4 times that, beside the embedding.
SCALES = (384**-0.5, 4 * 384**-0.5)


def say(message: str) -> None:
    print(f"[bench_router_uncertainty] {message}", file=sys.stderr, flush=True)


def letter_logprobs(name: str, prompts: list[str], cache: Path) -> tuple[np.ndarray, float]:
    """(questions, 9): the log-probabilities of " A".." D" and "A".."D" as the next token, and
    the prompt's length in tokens; and this run's seconds per question computed (nan if all
    came from the cache)."""
    path = cache / f"router_letters_{name}.npz"
    known: dict[str, np.ndarray] = {}
    if path.exists():
        stored = np.load(path)
        known = dict(zip(stored["keys"].tolist(), stored["values"], strict=True))
    keys = [hashlib.sha256(f"{name}\0{p}".encode()).hexdigest()[:32] for p in prompts]
    missing = [i for i, k in enumerate(keys) if k not in known]
    seconds = float("nan")
    if missing:
        import llama_cpp

        from tradeoff.engines.bundled import BUNDLED

        llm = llama_cpp.Llama(
            model_path=str(BUNDLED[name].locate()),
            n_ctx=CONTEXT,
            n_batch=512,
            n_threads=2,
            verbose=False,
        )
        letters = [
            llm.tokenize(form.format(c).encode(), add_bos=False, special=False)[-1]
            for form in (" {}", "{}")
            for c in "ABCD"
        ]
        say(f"{name}: {len(missing)} questions not in the cache ...")
        t0 = time.perf_counter()
        for done, i in enumerate(missing, 1):
            tokens = llm.tokenize(prompts[i].encode(), add_bos=True)[-(CONTEXT - 8) :]
            llm.reset()
            llm.eval(tokens)
            # the last token's logits (llama-cpp-python keeps none itself without logits_all)
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
            logits = logits.astype(np.float64)
            top = logits.max()
            total = top + np.log(np.exp(logits - top).sum())
            known[keys[i]] = np.append(logits[letters] - total, len(tokens))
            if done % 256 == 0 or done == len(missing):
                np.savez(path, keys=np.array(list(known)), values=np.array(list(known.values())))
                say(f"{name}: {done}/{len(missing)} ({time.perf_counter() - t0:.0f} s)")
        seconds = (time.perf_counter() - t0) / len(missing)
    return np.array([known[k] for k in keys]), seconds


def uncertainty(logprobs: np.ndarray) -> np.ndarray:
    """Standardised features of each question: per letter form, the letters' entropy, top
    probability, margin between the two most likely (renormalised over the four), and their
    total probability mass (log); then the prompt's log length."""
    columns = []
    for form in (logprobs[:, :4], logprobs[:, 4:8]):
        top = form.max(axis=1, keepdims=True)
        weights = np.exp(form - top)
        mass = top[:, 0] + np.log(weights.sum(axis=1))
        p = weights / weights.sum(axis=1, keepdims=True)
        ranked = np.sort(p, axis=1)
        entropy = -(p * np.log(p + 1e-12)).sum(axis=1)
        columns += [entropy, ranked[:, -1], ranked[:, -1] - ranked[:, -2], mass]
    columns.append(np.log(logprobs[:, 8]))
    x = np.column_stack(columns)
    return (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-9)


def apgr_rows(x: np.ndarray, y: np.ndarray, groups: list[str], router: str) -> list[float]:
    """Out-of-fold APGR of `router` on x: grouped by subject, then 5-fold random."""
    ones = np.ones(len(y))
    found = []
    for by in (groups, None):
        e = out_of_fold(x, y, k=FOLDS, seed=SEED, groups=by, router=router)
        curve = threshold_curve(
            y[:, 0], y[:, 1], PRICE_WEAK * ones, PRICE_STRONG * ones, e[:, 1] - e[:, 0], router
        )
        found.append(measure("", "", router, curve, y).apgr)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "data", nargs="?", type=Path, default=ROOT.parent / "shared/data/routellm-mmlu"
    )
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m")
    parser.add_argument("--limit", type=int, default=40, help="questions per subject")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/rf-cache"))
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    before = loadavg()
    t_start = time.perf_counter()
    data = load(args.data, None, args.limit)
    prompts = data["prompt"].tolist()
    y = data[["weak", "strong"]].to_numpy()
    groups = data["subject"].tolist()
    minilm = cached(embed.MODEL, prompts, args.cache, lambda: embed.encode, prompts[:2]).x
    gain = y[:, 1] - y[:, 0]
    apgr_table = [
        ["all-MiniLM-L6-v2 (embed-lr)", *map(_f, apgr_rows(minilm, y, groups, "embed-lr"))],
        ["all-MiniLM-L6-v2 (ensemble)", *map(_f, apgr_rows(minilm, y, groups, "ensemble"))],
    ]
    correlations, speeds = [], []
    for name in filter(None, args.models.split(",")):
        logprobs, seconds = letter_logprobs(name, prompts, args.cache)
        if not math.isnan(seconds):  # computed this run, not all from the cache
            speeds.append(f"{name} {seconds:.2f} s a question")
        x = uncertainty(logprobs)
        names = [f"{f} ({form})" for form in ('" A"', '"A"') for f in FEATURES] + ["log tokens"]
        for j, feature in enumerate(names):
            correlations.append(
                [
                    name,
                    feature,
                    f"{np.corrcoef(x[:, j], y[:, 0])[0, 1]:+.3f}",
                    f"{np.corrcoef(x[:, j], gain)[0, 1]:+.3f}",
                ]
            )
        apgr_table.append(
            [f"{name} uncertainty alone", *map(_f, apgr_rows(x, y, groups, "embed-lr"))]
        )
        for scale in SCALES:
            both = np.hstack([minilm, x * scale])
            apgr_table.append(
                [
                    f"all-MiniLM-L6-v2 + {name} uncertainty × {scale:.3f}",
                    *map(_f, apgr_rows(both, y, groups, "embed-lr")),
                ]
            )
    spread = random_apgr_spread(y[:, 0], y[:, 1])
    command = "PYTHONPATH=src python benchmarks/bench_router_uncertainty.py " + shlex.join(
        sys.argv[1:]
    )
    print(f"Command: `{command.strip()}` ({time.perf_counter() - t_start:.0f} s wall).\n")
    print(
        f"{len(data):,} questions: the first {args.limit} of each of "
        f"{data['subject'].nunique()} subjects; weak accuracy {y[:, 0].mean():.3f}, strong "
        f"{y[:, 1].mean():.3f}; a random order's APGR spreads ±{spread:.3f}. Routers: the "
        f"package's, out of fold ({', '.join(EVALUATIONS)}), {FOLDS} folds, seed {SEED}.\n"
    )
    print(table(["features (router)", "APGR grouped by subject", "APGR 5-fold random"], apgr_table))
    print()
    print(
        table(
            [
                "model",
                "feature (standardised)",
                "correlation with weak right",
                "with strong − weak",
            ],
            correlations,
        )
    )
    print()
    print(
        f"Host: {cpu_model()}, load {before} before and {loadavg()} after; "
        f"{'; '.join(speeds) or 'letters from the cache'}; tree {commit()}."
    )


def _f(value: float) -> str:
    return f"{value:.3f}"


if __name__ == "__main__":
    main()
