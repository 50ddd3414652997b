"""The torch engine's sampled answers, printed so that two trees can be diffed (issue 17): a
change that leaves every value the sampler sees alone must leave what it samples alone.

    PYTHONPATH=src python3 benchmarks/gpu_sampled_text.py [--model qwen2.5-0.5b]
        [--options "graph=1&pdl=1"] [--temperature 0.8] [--seeds 0,1,2] [--tokens 64]
        [--opnorm] [--noswap]

Random weights (the engine's `random_weights=1`, seed 0 of the weights), a 512-position cache,
one completion request per seed at `--temperature` (the engine's top-40 sampling, drawn from a
generator seeded by the request's seed), `--tokens` tokens with their log-probabilities. One
JSON line per seed: the text and the log-probabilities, rounded to 6 decimals (the sampled
tokens' values in float32, so equal runs print equal lines). `--opnorm` runs the norms that no
product fuses op by op (`rms_norm.ENABLED` off, change 22); a tree without that module runs them
so anyway. `--noswap` tunes without the swapped tensor-core shapes (change 25). Tuning's choice
for each product goes to stderr: two trees round alike only where their choices are the same.
Diff two trees' output, e.g. this one against an older `src` copied to ab_old:

    python3 benchmarks/gpu_sampled_text.py --opnorm --noswap > new.jsonl
    PYTHONPATH=ab_old/src python3 benchmarks/gpu_sampled_text.py > old.jsonl
    diff new.jsonl old.jsonl && echo same
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys

from tradeoff.engines import decode_linear
from tradeoff.engines.torch_engine import TorchEngine
from tradeoff.types import Request

PROMPT = "The frontier of accuracy against cost, measured on one's own workload, shows"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-0.5b", help="a bundled shape's name")
    parser.add_argument("--options", default="graph=1&pdl=1", help="the engine's options")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seeds", default="0,1,2", help="the requests' seeds, comma-separated")
    parser.add_argument("--tokens", type=int, default=64, help="tokens each answer samples")
    parser.add_argument("--opnorm", action="store_true", help="the norms op by op (change 22)")
    parser.add_argument(
        "--noswap", action="store_true", help="tuning without the swapped shapes (change 25)"
    )
    args = parser.parse_args()
    if args.opnorm:  # a tree from before change 22 has no such module: op by op already
        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module("tradeoff.engines.rms_norm").ENABLED = False
    if args.noswap:  # a tree from before change 25 tunes batch 1 without them already
        decode_linear.SWAPPED = ()
    engine = TorchEngine(f"torch:{args.model}?random_weights=1&ctx=512&{args.options}")
    try:
        for seed in (int(s) for s in args.seeds.split(",")):
            request = Request(
                prompt=PROMPT,
                max_tokens=args.tokens,
                temperature=args.temperature,
                seed=seed,
                logprobs=True,
                exact_tokens=True,
            )
            answer = engine.generate(request)
            if answer.error:
                raise SystemExit(f"seed {seed}: {answer.error}")
            logprobs = [round(float(p), 6) for p in answer.token_logprobs]
            print(json.dumps({"seed": seed, "text": answer.text, "logprobs": logprobs}))
    finally:
        engine.close()
    # what tuning gave each product: where two trees' choices differ, so may their roundings
    chosen = {
        str(k): decode_linear.name(b) if b else "cuBLAS" for k, b in decode_linear.CHOICES.items()
    }
    print("decode_linear's choices:", json.dumps(chosen), file=sys.stderr)


if __name__ == "__main__":
    main()
