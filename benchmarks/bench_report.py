"""`tradeoff report`, `tradeoff frontier` and `tradeoff report --html` timed on a synthetic run
store of 1,000,000 records (issue 14): wall time and peak memory of each, in a process of its
own, the HTML file's size and its first render in headless Chromium (benchmarks/render_time.py),
against the issue's targets. Prints a Markdown section for benchmarks/RESULTS.md.

    python benchmarks/bench_report.py [--records 1000000] [--rounds 3] [--write DIR]
        [--rewrite] [--seed 0]

1. The store: a profile run of 20 configurations (10 models, each at temperature 0 and 0.7) over
   5 tasks, records / 500 items per task, 5 samples each, so that (configuration, item, sample)
   is unique: 5 x 2,000 x 5 x 20 = 1,000,000. Written through tradeoff's own API, as a profile
   run writes it: the spec parsed by `config.parse_spec`, configurations from `resolve_configs`,
   `Store.create`, `add_configs`, `add_items`, `begin_session`, `write_records` (one
   configuration's records per transaction), `end_session`. Drawn from numpy's default_rng(seed):
   per item its input tokens (lognormal, a median per task) and difficulty (normal); per record a
   0/1 score (Bernoulli of the logistic of model skill + task ease + item difficulty, a little
   lower at temperature 0.7), output tokens (lognormal around the model's median scaled per task,
   clipped to [1, 2048]), TTFT (lognormal, growing with the prompt), inter-token latency
   (lognormal), e2e = TTFT + ITL x (output tokens - 1) + a small overhead (so e2e >= TTFT). The 5
   local models (gguf:) have energy = mean power x e2e (RAPL or NVML), analytic FLOPs, no price;
   the 5 remote ones (openai:) have token prices in the spec and energy missing (a remote
   server's is not visible). 0.5-4% of records per configuration failed (an error, no output,
   no first token, no input tokens: so not priced and no FLOPs, as a failed call is stored). One
   engine call per record (strategy `single`), stored in `calls` as `Call.summary()` gives it.
   Outputs are short text (a few words and the parsed answer), not as long as their tokens: a
   real run's store is larger by its outputs. No host-condition samples are stored.
   The store is written under ~/.cache/tradeoff/bench-report/ (or --write DIR) and reused while it
   holds the same records (DIR/bench_report.json says what was written, and how long it took).
2. Timing: `python -m tradeoff report DIR` (the table), `tradeoff frontier DIR` and, where this
   tree's `tradeoff report --help` offers `--html`, `tradeoff report DIR --html -o FILE`, each in a
   fresh process with this tree's src first on PYTHONPATH, `--rounds` times, the commands
   alternating. Wall = from starting the process to reaping it (interpreter start-up and imports
   included). Peak memory = ru_maxrss of the rusage that os.wait4 returns for that one child
   (the tradeoff process itself: it starts no children), in MiB. Standard output goes to a file;
   its size is shown beside the HTML file's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from render_time import Render, render
from section import commit, loadavg, pythonpath, table, verdict

from tradeoff.config import Config, parse_spec, resolve_configs
from tradeoff.meters.host import cpu_model, host_info, usable_cores
from tradeoff.store import STORE_FILE, Store
from tradeoff.tasks.synthetic import WORDS
from tradeoff.types import Call, Generation, Item, Record

MARKER = "bench_report.json"  # in the store's directory: what this script wrote there
GENERATOR = 1  # bumped when the records drawn change, so that an old store is rewritten

SAMPLES = 5
MAX_TOKENS = 2048
TABLE_WALL_S = 10.0  # issue 14: the table and the frontier in at most 10 s
TABLE_PEAK_MIB = 2048.0  # and at most 2 GiB of memory
HTML_MB = 15.0  # the HTML file at most 15 MB
RENDER_S = 3.0  # and its first render in headless Chromium in at most 3 s


def say(message: str) -> None:
    print(f"[bench_report] {message}", file=sys.stderr, flush=True)


# The run the store holds --------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """What a model's records are drawn from: medians, and its costs."""

    ref: str
    skill: float  # logit of the chance of a right answer on an item of average difficulty
    ttft_s: float  # median time to the first token, for an empty prompt
    itl_s: float  # median inter-token latency
    tokens: float  # median output tokens, before the task's factor
    errors: float  # share of failed requests
    error: str  # what a failed request says
    rss_gib: float  # the process's peak resident memory
    power_w: float | None = None  # local models: mean power while answering
    meter: str | None = None  # and what measured it
    params: float | None = None  # parameters, for analytic FLOPs
    price: tuple[float, float] | None = None  # remote models: $ per million input, output tokens


REMOTE_MISSING = "remote server: its energy is not visible to the client"
LOCAL_ERROR = "context length exceeded: the prompt and answer need more than n_ctx 4096 tokens"
TIMEOUT = "timeout: no answer within 120.0 s"
RATE_LIMITED = "HTTP 429 Too Many Requests: rate limit reached"
API = "openai:https://api.example.com/v1#"

MODELS: dict[str, Model] = {
    "local-0.1b": Model("gguf:/models/local-0.1b-q8_0.gguf", -1.2, 0.030, 0.006, 60, 0.005,
                        LOCAL_ERROR, 0.3, 18.0, "rapl", 0.135e9),
    "local-0.5b": Model("gguf:/models/local-0.5b-q8_0.gguf", -0.4, 0.060, 0.012, 80, 0.005,
                        LOCAL_ERROR, 0.8, 22.0, "rapl", 0.5e9),
    "local-1.5b": Model("gguf:/models/local-1.5b-f16.gguf", 0.2, 0.020, 0.006, 100, 0.006,
                        LOCAL_ERROR, 3.5, 120.0, "nvml", 1.5e9),
    "local-4b": Model("gguf:/models/local-4b-f16.gguf", 0.7, 0.035, 0.009, 120, 0.008,
                      LOCAL_ERROR, 8.5, 180.0, "nvml", 4e9),
    "local-8b": Model("gguf:/models/local-8b-f16.gguf", 1.1, 0.050, 0.014, 140, 0.01,
                      LOCAL_ERROR, 16.5, 250.0, "nvml", 8e9),
    "remote-a": Model(API + "remote-a", 0.6, 0.30, 0.010, 150, 0.02, RATE_LIMITED, 0.15,
                      price=(0.10, 0.40)),
    "remote-b": Model(API + "remote-b", 1.0, 0.35, 0.012, 180, 0.025, RATE_LIMITED, 0.15,
                      price=(0.15, 0.60)),
    "remote-c": Model(API + "remote-c", 1.5, 0.45, 0.018, 220, 0.03, TIMEOUT, 0.15,
                      price=(0.80, 3.20)),
    "remote-d": Model(API + "remote-d", 1.9, 0.60, 0.022, 260, 0.035, TIMEOUT, 0.15,
                      price=(2.50, 10.00)),
    "remote-e": Model(API + "remote-e", 2.3, 0.80, 0.030, 320, 0.04, TIMEOUT, 0.15,
                      price=(3.00, 15.00)),
}  # fmt: skip
TEMPERATURES = [0.0, 0.7]
HOT_SKILL = -0.15  # temperature 0.7 answers a little worse, and longer
HOT_TOKENS = 1.1


@dataclass(frozen=True)
class TaskShape:
    ref: str
    input_tokens: float  # median prompt tokens
    input_sigma: float
    ease: float  # added to the model's skill
    output_factor: float  # times the model's median output tokens
    answers: list[str]  # the references are drawn from these


TASKS = [
    TaskShape("arith", 45, 0.35, 0.3, 1.0, [str(n) for n in range(2, 200)]),
    TaskShape("choice", 160, 0.30, 0.8, 0.3, ["A", "B", "C", "D"]),
    TaskShape("facts", 30, 0.30, 0.5, 0.25, WORDS[:150]),
    TaskShape("hf:openai/gsm8k", 120, 0.40, -0.6, 1.8, [str(n) for n in range(1, 1000)]),
    TaskShape("jsonl:/data/summaries.jsonl", 900, 0.50, -0.2, 1.2, WORDS[150:]),
]
TOKENS_PER_WORD = 1.33


def run_spec(seed: int) -> dict[str, Any]:
    """The spec a profile run of these models, tasks and temperatures would store."""
    spec = parse_spec(
        {
            "models": {name: m.ref for name, m in MODELS.items()},
            "tasks": [t.ref for t in TASKS],
            "configs": [{"model": name, "temperature": TEMPERATURES} for name in MODELS],
            "samples": SAMPLES,
            "sampling": {"max_tokens": MAX_TOKENS, "seed": seed},
            "prices": {
                name: {"input": m.price[0], "output": m.price[1]}
                for name, m in MODELS.items()
                if m.price
            },
        },
        "bench_report's spec",
    )
    return spec.model_dump(mode="json")


@dataclass(frozen=True)
class TaskItems:
    shape: TaskShape
    items: list[Item]
    input_tokens: np.ndarray  # per item
    difficulty: np.ndarray  # per item, added to the logit of a right answer


def task_items(shape: TaskShape, n: int, rng: np.random.Generator) -> TaskItems:
    tokens = np.maximum(rng.lognormal(math.log(shape.input_tokens), shape.input_sigma, n), 4)
    tokens = tokens.round().astype(int)
    difficulty = rng.normal(0.0, 1.0, n)
    references = rng.choice(shape.answers, n)
    items = []
    for i in range(n):
        words = rng.choice(WORDS, max(1, int(tokens[i] / TOKENS_PER_WORD)))
        items.append(
            Item(
                id=f"{shape.ref.rsplit('/', 1)[-1].split('.')[0]}-{i:05d}",
                prompt=" ".join(words) + "?",
                reference=str(references[i]),
                task=shape.ref,
                meta={"difficulty": round(float(difficulty[i]), 2)},
            )
        )
    return TaskItems(shape, items, tokens, difficulty)


# A stored call as `Call.summary()` writes it (every key, empty values), filled in per record.
CALL_KEYS = Call("", Generation("", None, 0, 0.0, None, 0.0)).summary()


def _draw(rng: np.random.Generator, median: float, sigma: float, n: int) -> np.ndarray:
    return rng.lognormal(math.log(median), sigma, n)


def config_records(
    config: Config, model: Model, task: TaskItems, rng: np.random.Generator, phrases: list[str]
) -> list[Record]:
    """One configuration's records of one task: every item, SAMPLES times."""
    shape, n_items = task.shape, len(task.items)
    n = n_items * SAMPLES
    item = np.repeat(np.arange(n_items), SAMPLES)
    hot = config.sampling.temperature > 0
    logit = model.skill + (HOT_SKILL if hot else 0.0) + shape.ease + task.difficulty[item]
    right = rng.random(n) < 1 / (1 + np.exp(-logit))
    failed = rng.random(n) < model.errors
    median_out = model.tokens * shape.output_factor * (HOT_TOKENS if hot else 1.0)
    out = np.clip(_draw(rng, median_out, 0.6, n).round(), 1, MAX_TOKENS).astype(int)
    inp = task.input_tokens[item]
    ttft = model.ttft_s * (1 + inp / 512) * _draw(rng, 1.0, 0.35, n)
    itl = _draw(rng, model.itl_s, 0.15, n)
    e2e = ttft + itl * (out - 1) + _draw(rng, 0.002, 0.5, n)
    if model.error == TIMEOUT:
        failed_e2e = 120.0 + _draw(rng, 0.01, 0.5, n)
    else:
        failed_e2e = _draw(rng, 0.2, 0.4, n)
    power = model.power_w or 0.0
    energy = (power * e2e * _draw(rng, 1.0, 0.08, n)).tolist()
    wrong = rng.choice(shape.answers, n).tolist()
    phrase = rng.integers(0, len(phrases), n).tolist()
    rss = (model.rss_gib * 2**30 * _draw(rng, 1.0, 0.02, n)).astype(int).tolist()
    local, gpu = model.power_w is not None, model.meter == "nvml"
    missing = None if local else REMOTE_MISSING

    records = []
    columns = zip(
        item.tolist(), failed.tolist(), right.tolist(), inp.tolist(), out.tolist(),
        ttft.tolist(), itl.tolist(), e2e.tolist(), failed_e2e.tolist(), energy, wrong, phrase,
        rss,
    )  # fmt: skip
    for k, row in enumerate(columns):
        i, fail, ok, tokens_in, tokens_out, first, gap, whole, lost, joules, other, p, peak = row
        it = task.items[i]
        if fail:
            # As a failed call is stored: no output, no first token, no input tokens (so no
            # price) and no FLOPs; a local model's energy was still measured.
            spent = power * lost if local else None
            call = dict(
                CALL_KEYS, model=config.model, mode="chat", e2e_s=lost, finish_reason="error",
                energy_j=spent, energy_source=model.meter, energy_missing=missing,
                error=model.error,
            )  # fmt: skip
            records.append(
                Record(
                    config_id=config.config_id, task=shape.ref, item_id=it.id,
                    sample=k % SAMPLES, output="", score=None, parsed=None, error=model.error,
                    input_tokens=None, output_tokens=0, ttft_s=None, e2e_s=lost, itl_s=None,
                    decode_tps=None, energy_j=spent, energy_source=model.meter,
                    energy_missing=missing, flops=None, peak_rss_bytes=peak, cost_usd=None,
                    calls=[call],
                )
            )  # fmt: skip
            continue
        parsed = it.reference if ok else other
        between = gap if tokens_out > 1 else None
        flops = 2 * model.params * (tokens_in + tokens_out) if model.params else None
        cost = None
        if model.price:
            cost = (model.price[0] * tokens_in + model.price[1] * tokens_out) / 1e6
        call = dict(
            CALL_KEYS, model=config.model, mode="chat", input_tokens=tokens_in,
            output_tokens=tokens_out, token_count_source="exact" if local else "usage",
            ttft_s=first, e2e_s=whole, itl_s=between,
            finish_reason="length" if tokens_out == MAX_TOKENS else "stop",
            energy_j=joules if local else None, energy_source=model.meter,
            energy_missing=missing, flops=flops,
            bytes=2 * model.params * tokens_out if model.params else None,
            roofline_s=0.35 * whole if gpu else None, mean_power_w=model.power_w if gpu else None,
            device_memory_bytes=int(model.rss_gib * 2**30) if gpu else None,
        )  # fmt: skip
        records.append(
            Record(
                config_id=config.config_id, task=shape.ref, item_id=it.id, sample=k % SAMPLES,
                output=f"{phrases[p]} {parsed}", score=1.0 if parsed == it.reference else 0.0,
                parsed=parsed, error=None, input_tokens=tokens_in, output_tokens=tokens_out,
                ttft_s=first, e2e_s=whole, itl_s=between,
                decode_tps=(tokens_out - 1) / (whole - first) if between else None,
                energy_j=joules if local else None, energy_source=model.meter,
                energy_missing=missing, flops=flops, peak_rss_bytes=peak, cost_usd=cost,
                calls=[call],
            )
        )  # fmt: skip
    return records


# Writing the store, or finding it written ---------------------------------------------------


@dataclass(frozen=True)
class Written:
    directory: Path
    records: int
    seed: int
    write_s: float
    written_at: str
    reused: bool

    def marker(self) -> dict[str, Any]:
        return {
            "generator": GENERATOR,
            "records": self.records,
            "seed": self.seed,
            "write_s": self.write_s,
            "written_at": self.written_at,
        }


def default_directory(records: int, seed: int) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "tradeoff" / "bench-report" / f"{records}-seed{seed}"


def stored_records(directory: Path) -> tuple[int, str]:
    """How many records the store holds, and its run's status."""
    store = Store.open(directory)
    try:
        count = store.conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        return int(count), str(store.run()["status"])
    finally:
        store.close()


def reusable(directory: Path, records: int, seed: int) -> Written | None:
    """The store at `directory` when this script wrote it with the same records and finished."""
    marker = directory / MARKER
    if not (directory / STORE_FILE).exists() or not marker.exists():
        return None
    found = json.loads(marker.read_text())
    wanted = {"generator": GENERATOR, "records": records, "seed": seed}
    if {k: found.get(k) for k in wanted} != wanted:
        return None
    if stored_records(directory) != (records, "finished"):
        return None
    return Written(directory, records, seed, found["write_s"], found["written_at"], True)


def clear(directory: Path) -> None:
    """Remove a store this script wrote (its marker says so); refuse to touch any other."""
    if (directory / STORE_FILE).exists() and not (directory / MARKER).exists():
        raise SystemExit(
            f"{directory} holds a run store that bench_report did not write ({MARKER} is "
            "missing); give another --write DIR"
        )
    for name in (STORE_FILE, f"{STORE_FILE}-wal", f"{STORE_FILE}-shm", "tradeoff.lock", MARKER):
        (directory / name).unlink(missing_ok=True)


def write_store(directory: Path, records: int, seed: int) -> Written:
    """A run store of `records` records (see the module's docstring), through Store's API."""
    per_task = records // (len(MODELS) * len(TEMPERATURES) * len(TASKS) * SAMPLES)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    spec = run_spec(seed)
    configs = resolve_configs(parse_spec(spec))
    tasks = [task_items(shape, per_task, rng) for shape in TASKS]
    phrases = [" ".join(rng.choice(WORDS, int(rng.integers(3, 9)))) for _ in range(256)]
    store = Store.create(directory, spec, host_info())
    try:
        store.add_configs([(c.config_id, c.name, c.content()) for c in configs])
        for task in tasks:
            store.add_items(task.items)
        session = store.begin_session()
        written = 0
        for i, config in enumerate(configs, 1):
            batch = [
                r
                for task in tasks
                for r in config_records(config, MODELS[config.model], task, rng, phrases)
            ]
            store.write_records(batch)
            written += len(batch)
            say(
                f"configuration {i}/{len(configs)} ({config.name}) written: {written:,} records, "
                f"{time.perf_counter() - started:.0f} s"
            )
        store.end_session(session, "finished")
    finally:
        store.close()
    done = Written(
        directory,
        written,
        seed,
        time.perf_counter() - started,
        time.strftime("%Y-%m-%d %H:%M"),
        False,
    )
    (directory / MARKER).write_text(json.dumps(done.marker(), indent=2))
    return done


def store_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob(f"{STORE_FILE}*"))


# Timing the commands -------------------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    code: int
    wall_s: float
    cpu_s: float  # user + system
    peak_mib: float
    output_bytes: int  # standard output, or the file the command wrote
    stderr_tail: str


def tradeoff_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": pythonpath()}


def timed(argv: list[str], stdout: Path, product: Path | None) -> Timed:
    """`python -m tradeoff ARGV` in a fresh process: its exit code, wall time, CPU time and peak
    RSS (the rusage os.wait4 returns for this child alone), and the size of what it wrote."""
    cmd = [sys.executable, "-m", "tradeoff", *argv]
    with open(stdout, "wb") as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=tradeoff_env())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        err.seek(0)
        tail = err.read().decode(errors="replace").splitlines()[-15:]
    written = product if product is not None and product.exists() else stdout
    peak_mib = usage.ru_maxrss / 1024  # KiB on Linux
    cpu = usage.ru_utime + usage.ru_stime
    return Timed(proc.returncode, wall, cpu, peak_mib, written.stat().st_size, "\n".join(tail))


def offers_html() -> bool:
    """Whether this tree's `tradeoff report` has an --html option."""
    found = subprocess.run(
        [sys.executable, "-m", "tradeoff", "report", "--help"],
        capture_output=True,
        text=True,
        env={**tradeoff_env(), "COLUMNS": "200"},
    )
    return "--html" in found.stdout


@dataclass(frozen=True)
class Command:
    label: str
    argv: list[str]
    product: Path | None  # the file it writes, else its standard output is what it produces


def commands(directory: Path, work: Path, html: bool) -> list[Command]:
    found = [
        Command("`tradeoff report DIR` (table)", ["report", str(directory)], None),
        Command("`tradeoff frontier DIR` (table)", ["frontier", str(directory)], None),
    ]
    if html:
        page = work / "report.html"
        argv = [*found[0].argv, "--html", "-o", str(page)]
        found.append(Command("`tradeoff report DIR --html -o FILE`", argv, page))
    return found


def time_commands(cmds: list[Command], rounds: int, work: Path) -> dict[str, list[Timed]]:
    runs: dict[str, list[Timed]] = {c.label: [] for c in cmds}
    for r in range(1, rounds + 1):
        for c in cmds:
            if c.product is not None:
                c.product.unlink(missing_ok=True)
            t = timed(c.argv, work / "stdout.txt", c.product)
            runs[c.label].append(t)
            state = "ok" if t.code == 0 else f"FAILED (exit {t.code})"
            say(
                f"round {r}/{rounds} {c.label}: {t.wall_s:.2f} s wall, {t.cpu_s:.2f} s CPU, "
                f"{t.peak_mib:,.0f} MiB, {state}"
            )
    return runs


# The Markdown section ------------------------------------------------------------------------


def memory_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    return math.nan


def mb(size: int) -> str:
    return f"{size / 1e6:,.2f} MB" if size >= 1e6 else f"{size / 1e3:,.1f} kB"


def result_row(c: Command, runs: list[Timed]) -> list[str]:
    walls = [t.wall_s for t in runs]
    peaks = [t.peak_mib for t in runs]
    failed = [t for t in runs if t.code != 0]
    wall = f"{statistics.median(walls):.2f} ({', '.join(f'{w:.2f}' for w in walls)})"
    cpu = f"{statistics.median(t.cpu_s for t in runs):.2f}"
    peak = f"{max(peaks):,.0f} ({', '.join(f'{p:,.0f}' for p in peaks)})"
    size = mb(max(t.output_bytes for t in runs))
    if c.product is None:
        target = f"<= {TABLE_WALL_S:g} s, <= {TABLE_PEAK_MIB / 1024:g} GiB"
        met = statistics.median(walls) <= TABLE_WALL_S and max(peaks) <= TABLE_PEAK_MIB
    else:
        target = f"file <= {HTML_MB:g} MB"
        met = max(t.output_bytes for t in runs) <= HTML_MB * 1e6
    outcome = f"**failed** in {len(failed)} of {len(runs)} runs" if failed else verdict(met)
    return [c.label, wall, cpu, peak, size, target, outcome]


def section(
    args: argparse.Namespace,
    store: Written,
    cmds: list[Command],
    runs: dict[str, list[Timed]],
    html: bool,
    load: tuple[str, str],
    renders: list[Render],
) -> str:
    cmd = " ".join(["python benchmarks/bench_report.py", *sys.argv[1:]]).strip()
    out = [
        f"## Issue 14: report speed on a {store.records:,}-record run\n",
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores ({usable_cores()} "
        f"usable; {cpu_model()}), {memory_gib():.0f} GiB of memory; load average (1 / 5 / 15 "
        f"min) {load[0]} before the timed commands, {load[1]} after; tradeoff at {commit()}; "
        f"Python {sys.version.split()[0]}.\n",
        f"Command: `{cmd}`\n",
        f"Each command in a fresh process, {args.rounds} runs, the commands alternating. Wall: "
        "start of the process to its reaping (interpreter start-up and imports included), median "
        "and every run; CPU: user + system seconds of the process (less disturbed than wall by "
        "other processes on the machine). Peak memory: ru_maxrss of the process (os.wait4's "
        "rusage for that child alone), the highest and every run. Output: standard output of "
        "the tables; the file written for --html.\n",
        table(
            [
                "command",
                "wall s, median (runs)",
                "CPU s, median",
                "peak memory MiB, max (runs)",
                "output",
                "target",
                "met",
            ],
            [result_row(c, runs[c.label]) for c in cmds],
        ),  # fmt: skip
    ]
    if renders:
        drawn = [r.drawn_ms / 1e3 for r in renders]
        out.append(
            f"\nFirst render of the page (the last --html run's) in headless Chromium "
            f"({len(renders)} fresh browsers; `benchmarks/render_time.py`: navigation start to "
            "every chart drawn and the records table filled, the page's own clock through the "
            f"DevTools protocol): median {statistics.median(drawn):.2f} s "
            f"({', '.join(f'{d:.2f}' for d in drawn)}), {renders[0].charts} charts, script "
            f"errors: {renders[0].errors or 'none'}; target <= {RENDER_S:g} s: "
            f"{verdict(max(drawn) <= RENDER_S)}."
        )
    if not html:
        out.append(
            "\n`tradeoff report --html` is not timed: this tree's `tradeoff report --help` "
            "offers no --html yet."
        )
    for c in cmds:
        failed = [t for t in runs[c.label] if t.code != 0]
        if failed:
            out.append(
                f"\n{c.label} failed (exit {failed[0].code}); the end of its standard error:\n\n"
                f"```\n{failed[0].stderr_tail}\n```"
            )
    how = (
        f"reused: written {store.written_at} in {store.write_s:.0f} s"
        if store.reused
        else f"written by this run in {store.write_s:.0f} s"
    )
    per_task = store.records // (len(MODELS) * len(TEMPERATURES) * len(TASKS) * SAMPLES)
    out.append(
        f"\nThe store: {store.records:,} records, {len(MODELS) * len(TEMPERATURES)} "
        f"configurations (10 models at temperature 0 and 0.7; 5 local gguf: models with "
        f"energy measured by RAPL or NVML and analytic FLOPs, 5 remote openai: ones with token "
        f"prices and energy missing) x {len(TASKS)} tasks x {per_task:,} items x {SAMPLES} "
        f"samples, seed {store.seed}; {mb(store_bytes(store.directory))} on disk "
        f"({STORE_FILE}); {how} (tradeoff's Store API: write_records, one configuration's "
        "records per transaction). Per record: a 0/1 score drawn from the model's skill, the "
        "task's ease and the item's difficulty; lognormal TTFT (growing with the prompt), "
        "inter-token latency and output tokens (clipped to [1, 2048]); e2e = TTFT + ITL x "
        "(tokens - 1) + overhead; 0.5-4% failed per configuration; one call in `calls`; outputs "
        "a few words long (see the docstring of benchmarks/bench_report.py)."
    )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the store")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each command")
    parser.add_argument("--write", help="the store's directory (default: under ~/.cache)")
    parser.add_argument(
        "--rewrite", action="store_true", help="write the store even where it is written"
    )
    parser.add_argument("--seed", type=int, default=0, help="of the records drawn")
    args = parser.parse_args()
    unit = len(MODELS) * len(TEMPERATURES) * len(TASKS) * SAMPLES
    if args.records < unit or args.records % unit:
        parser.error(f"--records: give a multiple of {unit} (configurations x tasks x samples)")
    if args.rounds < 1:
        parser.error("--rounds: give 1 or more")

    directory = Path(args.write) if args.write else default_directory(args.records, args.seed)
    store = None if args.rewrite else reusable(directory, args.records, args.seed)
    if store is None:
        clear(directory)
        say(f"writing {args.records:,} records to {directory}")
        store = write_store(directory, args.records, args.seed)
    else:
        say(f"reusing {directory} ({store.records:,} records, written {store.written_at})")
    html = offers_html()
    work = Path(tempfile.mkdtemp(prefix="bench_report-"))
    try:
        cmds = commands(directory, work, html)
        before = loadavg()
        runs = time_commands(cmds, args.rounds, work)
        after = loadavg()
        page = work / "report.html"
        renders = [asyncio.run(render(page)) for _ in range(args.rounds)] if page.exists() else []
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(section(args, store, cmds, runs, html, (before, after), renders))


if __name__ == "__main__":
    main()
