"""The accuracy interval of fractional scores (a bootstrap): wall time and peak memory of
`analysis.metrics.accuracy_interval` (scipy.stats.bootstrap in batches) beside the one-shot
resample it replaced (numpy drawing all 2,000 resamples of n scores at once), each in a process
of its own, on n scores drawn uniform in [0, 1]. Prints a Markdown section for RESULTS.md.

    python benchmarks/bench_intervals.py [--n 20000 100000] [--rounds 2]

Peak memory: ru_maxrss of the child (os.wait4), in MiB, the interpreter and imports included;
the imports alone are measured too ("baseline"), so the interval's own memory is the difference.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from section import SRC, commit, loadavg, table

SETUP = (
    "import numpy as np\n"
    "from tradeoff.analysis.metrics import accuracy_interval\n"
    "scores = np.random.default_rng(0).random({n})\n"
)
WAYS = {
    "baseline (imports, scores)": "",
    "tradeoff (scipy.stats.bootstrap, batched)": "print(accuracy_interval(scores))\n",
    "one-shot numpy resample (replaced)": (
        "rng = np.random.default_rng(0)\n"
        "means = rng.choice(scores, size=(2000, len(scores)), replace=True).mean(axis=1)\n"
        "print(np.quantile(means, [0.025, 0.975]))\n"
    ),
}


def measure(code: str) -> tuple[float, float]:
    """(wall seconds, peak MiB) of `python -c code` with this tree's src first."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"the child failed ({status}): {code}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for n in args.n:
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.rounds):  # the ways alternate, round after round
            for name, body in WAYS.items():
                wall, mib = measure(SETUP.format(n=n) + body)
                old = best.get(name, (float("inf"), 0.0))
                best[name] = (min(old[0], wall), max(old[1], mib))
        base = best["baseline (imports, scores)"]
        for name, (wall, mib) in best.items():
            own = "" if name.startswith("baseline") else f"{mib - base[1]:,.0f}"
            rows.append([f"{n:,}", name, f"{wall:.2f}", f"{mib:,.0f}", own])
    print(f"## Accuracy intervals of fractional scores ({time.strftime('%Y-%m-%d')})\n")
    print(f"`python benchmarks/bench_intervals.py --n {' '.join(map(str, args.n))} --rounds "
          f"{args.rounds}` on {commit()}, load average {loadavg()} before.\n")  # fmt: skip
    header = ["scores", "way", "wall s (best)", "peak MiB", "MiB over baseline"]
    print(table(header, rows))


if __name__ == "__main__":
    main()
