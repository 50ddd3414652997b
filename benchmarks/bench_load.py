"""`tradeoff load` measured in one run: how closely it keeps a rate, the highest rate it
sustains beside GuideLLM's, and whether its latencies agree with GuideLLM's on a real server.
Prints a Markdown section for benchmarks/RESULTS.md.

    python benchmarks/bench_load.py [--seconds 8] [--rates 100,500,1000] [--rounds 2]
        [--agree-warmup 10] [--agree-requests 40] [--guidellm-venv DIR]
        [--parts precision,throughput,dispatch,agreement] [--no-pin] [--without-guidellm]

1. Scheduling precision: `tradeoff load --profile constant:R` and `poisson:R` against
   benchmarks/fast_server.py (canned 8-token streams, no delay); from the run store, the rate
   requests were sent and completed at, each against the rate they were scheduled at, and the
   send lag (queue_delay_s: actual minus scheduled send time). Targets (issue 13): within 2%,
   p99 lag at most 1 ms. Beside them, GuideLLM's `constant` profile at the same rates, the same
   figures from its per-request timings.
2. Highest sustained rate: tradeoff's `throughput` profile and GuideLLM's on the same server,
   64 in flight; and the dispatch comparison, 2,000 requests with 64 in flight (`concurrent`),
   `--rounds` times each, alternately. Rate = requests completed / (last completion - first
   send) for both tools; client CPU = user + system seconds of the tool's processes
   (getrusage(RUSAGE_CHILDREN) around each), start-up included.
3. Agreement: `tradeoff serve` with the bundled smollm2-135m, the same 20 prompts from both
   tools (32 output tokens, temperature 0), `synchronous` and `concurrent:2`, warm-up left out
   by both; TTFT, inter-token latency and end-to-end medians and p99s side by side.

With --pin (the default where 2 cores or more may be used), the server under test runs on the
last of them and the tools on the others. --without-guidellm runs tradeoff's precision alone
(on a machine where GuideLLM cannot be installed).

GuideLLM 0.8.1 runs from a virtual environment of its own, never as a dependency of tradeoff:
--guidellm-venv, else $TRADEOFF_GUIDELLM_VENV, else /tmp/guidellm-venv when it holds guidellm,
else ~/.cache/tradeoff/guidellm-0.8.1, created (`python3 -m venv`, `pip install
guidellm==0.8.1`) when missing. It runs offline here: its data are JSON-lines files of prompts
written by this script (its synthetic data need a Hugging Face tokenizer, which it would
download), and against fast_server.py, which has no /health, with validate_backend off.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from section import commit, loadavg, pythonpath, table, verdict

from tradeoff.analysis.load import percentiles
from tradeoff.meters.conditions import summarize
from tradeoff.meters.host import cpu_model
from tradeoff.tasks.synthetic import WORDS

HERE = Path(__file__).resolve().parent
GUIDELLM = "0.8.1"
GUIDELLM_ENV = "TRADEOFF_GUIDELLM_VENV"
GUIDELLM_SHARED = Path("/tmp/guidellm-venv")
PARTS = ("precision", "throughput", "dispatch", "agreement")

RATE_TOLERANCE = 0.02  # issue 13: achieved rate within 2% of the target
LAG_P99_TARGET_MS = 1.0  # and send lag p99 at most 1 ms
AGREEMENT = 0.05  # latencies within 5% of GuideLLM's

FAST_TOKENS = 8  # output tokens per request against fast_server.py
FAST_PROMPT_WORDS = 16
IN_FLIGHT = 64
SERVED = "smollm2-135m"  # the configuration `tradeoff serve` serves for the agreement part
AGREE_TOKENS = 32
TOPICS = [
    "the sea", "a lighthouse keeper", "a small robot", "an old library", "a mountain village",
    "a lost cat", "a train journey", "a winter night", "a desert caravan", "a city garden",
    "a clockmaker", "a river boat", "a forest fire", "a school play", "a bakery at dawn",
    "a broken bridge", "a village festival", "a space station", "a chess player", "a storm at sea",
]  # fmt: skip


def say(message: str) -> None:
    print(f"[bench_load] {message}", file=sys.stderr, flush=True)


# Running the tools ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    cpu_s: float  # user + system seconds of the process and the children it waited for


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Cores:
    """Where the processes run: with `--pin` (the default on 2 cores or more), the server under
    test on the last core this benchmark may use and the tools on the others, so that neither
    takes CPU time from the other (on 2 shared cores the tools' latencies differed from each
    other's by up to 40% before)."""

    tools: set[int] | None = None
    server: set[int] | None = None

    def describe(self) -> str:
        if self.tools is None or self.server is None:
            return "not pinned: the tools and the server share every core"
        return (
            f"pinned: the server on core {', '.join(map(str, sorted(self.server)))}, the tools "
            f"on core{'s' if len(self.tools) > 1 else ''} "
            f"{', '.join(map(str, sorted(self.tools)))}"
        )


CORES = Cores()


def on_cores(cores: set[int] | None) -> Callable[[], None] | None:
    """A `preexec_fn` that pins the child process (and so its children) to `cores`."""
    if cores is None:
        return None
    return lambda: os.sched_setaffinity(0, cores)


def run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Ran:
    """Run `cmd` to its end on the tools' cores, its output to `log`; its CPU time. A failure
    stops the benchmark with the log's last lines."""
    cpu0 = _children_cpu()
    with open(log, "w") as out:
        code = subprocess.run(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=on_cores(CORES.tools)
        ).returncode
    ran = Ran(_children_cpu() - cpu0)
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed (exit {code}); {log}:\n{tail}")
    return ran


def tradeoff_load(model: str, data: str, flags: list[str], out: Path) -> Ran:
    """`tradeoff load` from this tree, in a process of its own."""
    cmd = [sys.executable, "-m", "tradeoff", "load", "-m", model, "--task", data, *flags]
    env = {**os.environ, "PYTHONPATH": pythonpath()}
    return run([*cmd, "-o", str(out)], out.with_suffix(".log"), env)


def guidellm(
    venv: Path,
    root: str,
    model: str,
    profile: dict[str, Any],
    constraint: dict[str, Any],
    data: Path,
    out: Path,
    validate: bool = True,
) -> tuple[Ran, dict[str, Any]]:
    """`guidellm run` against `root`; its CPU time and its JSON report's benchmark."""
    backend = {"kind": "openai_http", "target": root, "model": model, "validate_backend": validate}
    cmd = [
        str(venv / "bin" / "guidellm"), "run",
        "--backend", json.dumps(backend),
        "--profile", json.dumps(profile),
        "--constraint", json.dumps(constraint),
        "--data", json.dumps({"kind": "json_file", "path": str(data)}),
        "--output", json.dumps({"kind": "json", "path": str(out)}),
        "--disable-console",
    ]  # fmt: skip
    # Offline: a tokenizer download would hang or fail; json_file data need none.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    ran = run(cmd, out.with_suffix(".log"), env)
    return ran, json.loads(out.read_text())["benchmarks"][0]


def guidellm_venv(given: str | None) -> Path:
    """GuideLLM's own virtual environment, created and installed into when missing."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    chosen = given or os.environ.get(GUIDELLM_ENV)
    if chosen:
        venv = Path(chosen)
    elif (GUIDELLM_SHARED / "bin" / "guidellm").exists():
        venv = GUIDELLM_SHARED
    else:
        venv = cache / "tradeoff" / f"guidellm-{GUIDELLM}"
    exe = venv / "bin" / "guidellm"
    if not exe.exists():
        say(f"installing guidellm=={GUIDELLM} into {venv} (a virtual environment of its own)")
        python = shutil.which("python3") or sys.executable
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, f"guidellm=={GUIDELLM}"], check=True)
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True).stdout
    if GUIDELLM not in version:
        raise SystemExit(
            f"{exe} is not GuideLLM {GUIDELLM} ({version.strip() or 'no version'}); give another "
            f"--guidellm-venv, or remove {venv} to have it installed again"
        )
    return venv


@contextlib.contextmanager
def fast_server() -> Iterator[str]:
    """benchmarks/fast_server.py on a free loopback port, no delay between chunks; its root."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "fast_server.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=on_cores(CORES.server),
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("listening on "):
            raise SystemExit(f"fast_server.py did not start: {line!r}")
        yield line.strip().removeprefix("listening on ").removesuffix("/v1")
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def tradeoff_serve(out: Path) -> Iterator[str]:
    """`tradeoff serve --config smollm2-135m` from this tree on a free port; its root."""
    log = out.with_suffix(".log")
    env = {**os.environ, "PYTHONPATH": pythonpath(), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "tradeoff", "serve", "--port", "0", "--config", SERVED]
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [*cmd, "--out", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            preexec_fn=on_cores(CORES.server),
        )
    try:
        deadline = time.monotonic() + 300
        while not (found := re.search(r" at (http://\S+)/v1 ", log.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"tradeoff serve did not start; {log}:\n{log.read_text()}")
            time.sleep(0.2)
        yield found.group(1)
    finally:
        proc.terminate()
        proc.wait(300)


# Reading what they measured ------------------------------------------------------------------


def records(run_dir: Path) -> pd.DataFrame:
    """The run's records, the columns this benchmark reads."""
    columns = "load_point, phase, scheduled_s, sent_s, queue_delay_s, ttft_s, itl_s, e2e_s, "
    columns += "output_tokens, error"
    with contextlib.closing(sqlite3.connect(run_dir / "tradeoff.sqlite")) as conn:
        return pd.read_sql_query(f"SELECT {columns} FROM records", conn)


def host_line(run_dir: Path) -> str:
    """What the run's host sampler saw: the other processes' CPU and the hypervisor's steal."""
    with contextlib.closing(sqlite3.connect(run_dir / "tradeoff.sqlite")) as conn:
        rows = conn.execute("SELECT sample FROM host_samples").fetchall()
    host = summarize([json.loads(sample) for (sample,) in rows])
    if not host["samples"]:
        return "no host samples"
    steal = host["steal_share_mean"]
    return (
        f"other processes {host['other_cores_mean']:.2f} cores on average (max "
        f"{host['other_cores_max']:.2f}), steal "
        + ("not reported" if steal is None else f"{steal:.1%}")
    )


def sending_processes(run_dir: Path) -> dict[str, int]:
    """How many processes sent each load point's requests (its stored summary)."""
    with contextlib.closing(sqlite3.connect(run_dir / "tradeoff.sqlite")) as conn:
        rows = conn.execute("SELECT load_point, summary FROM load_points").fetchall()
    return {label: json.loads(summary).get("processes", 1) for label, summary in rows}


def rate(times: pd.Series) -> float | None:
    """Events per second over their span: (n - 1) / (last - first)."""
    span = times.max() - times.min() if len(times) > 1 else 0.0
    return (len(times) - 1) / span if span > 0 else None


def tradeoff_rate(frame: pd.DataFrame) -> tuple[int, float]:
    """Requests completed without error, and their number / (last completion - first send)."""
    ok = frame[frame.error.isna()]
    span = (ok.sent_s + ok.e2e_s).max() - frame.sent_s.min()
    return len(ok), len(ok) / span


def guidellm_rate(bench: dict[str, Any]) -> tuple[int, float]:
    """The same for a GuideLLM report: successful requests / (last end - first start)."""
    timings = [r["info"]["timings"] for r in bench["requests"]["successful"]]
    first = min(t["request_start"] for t in timings)
    return len(timings), len(timings) / (max(t["request_end"] for t in timings) - first)


def guidellm_after(bench: dict[str, Any], warm: int) -> list[dict[str, Any]]:
    """GuideLLM's successful requests (its report lists the warm-up's too) in the order they
    were sent, the first `warm` left out: the requests tradeoff measures of its own run."""
    sent = sorted(
        bench["requests"]["successful"], key=lambda r: r["info"]["timings"]["request_start"]
    )
    return sent[warm:]


# Formatting ----------------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1e3 * seconds:,.2f}"


def per_s(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * ratio:+.1f}%"


# 1. Scheduling precision ---------------------------------------------------------------------


def guidellm_precision(
    venv: Path, root: str, target: float, args: argparse.Namespace, work: Path
) -> list[str]:
    """GuideLLM's `constant` profile at `target` requests/s on the same server: a row of the
    precision table, from the per-request timings of its report (targeted_start: when it
    scheduled the request; request_start: when its backend began it; request_end)."""
    rows = int(target * args.seconds * 1.5) + 100
    data = fast_data(work / f"fast-precision-{target:g}.jsonl", rows)
    secs = args.seconds
    limits = (
        {"kind": "constant", "rate": [target]},
        {"kind": "max_duration", "seconds": int(secs) if secs == int(secs) else secs},
    )
    say(f"precision: {shown(limits)}")
    out = work / f"precision-guidellm-{target:g}.json"
    _, bench = guidellm(venv, root, "fast", *limits, data, out, validate=False)
    every = [r for kind in ("successful", "incomplete", "errored") for r in bench["requests"][kind]]
    timings = pd.DataFrame([r["info"]["timings"] for r in every])
    timings["ok"] = [r in bench["requests"]["successful"] for r in every]
    start = timings.targeted_start.min()
    measure = timings[timings.targeted_start >= start + args.warmup]
    began = measure[measure.request_start.notna()]
    ended = measure[measure.ok & measure.request_end.notna()]
    scheduled, sent, done = (
        rate(began.targeted_start),
        rate(began.request_start),
        rate(ended.request_end),
    )
    lag = percentiles(began.request_start - began.targeted_start)
    errors = bench["metrics"]["request_totals"]["errored"]
    return [
        f"constant:{target:g} (GuideLLM {GUIDELLM})",
        "its workers",
        f"{len(began):,} of {len(measure):,}",
        per_s(scheduled),
        f"{per_s(sent)} ({pct(sent / scheduled - 1 if sent and scheduled else None)})",
        f"{per_s(done)} ({pct(done / scheduled - 1 if done and scheduled else None)})",
        f"{ms(lag['p50'])} / {ms(lag['p99'])}",
        f"{errors}",
        "-",
        "-",
    ]


def precision(root: str, venv: Path | None, args: argparse.Namespace, work: Path) -> str:
    rates = [float(r) for r in args.rates.split(",")]
    model = f"openai:{root}/v1#fast"
    data = f"synthetic:prompt={FAST_PROMPT_WORDS},output={FAST_TOKENS}"
    rows, misses, hosts = [], [], []
    for kind in ("constant", "poisson"):
        point = f"{kind}:{','.join(f'{r:g}' for r in rates)}"
        say(f"precision: tradeoff load --profile {point}")
        out = work / f"precision-{kind}"
        flags = ["--profile", point, "--max-seconds", f"{args.seconds:g}"]
        flags += ["--warmup", f"{args.warmup:g}s", "--seed", "0", "--processes", args.processes]
        tradeoff_load(model, data, flags, out)
        hosts.append(f"- during the {kind} run (its host sampler): {host_line(out)}")
        frame = records(out)
        senders = sending_processes(out)
        for target in rates:
            label = f"{kind}:{target:g}"
            here = frame[frame.load_point == label]
            measure = here[here.phase == "measure"]
            ok = measure[measure.error.isna()]
            scheduled = rate(measure.scheduled_s)
            sent = rate(measure.sent_s)
            done = rate(ok.sent_s + ok.e2e_s)
            sent_err = sent / scheduled - 1 if sent and scheduled else None
            done_err = done / scheduled - 1 if done and scheduled else None
            lag = percentiles(measure.queue_delay_s)
            rate_ok = all(e is not None and abs(e) <= RATE_TOLERANCE for e in (sent_err, done_err))
            lag_ok = lag["p99"] is not None and 1e3 * lag["p99"] <= LAG_P99_TARGET_MS
            if not (rate_ok and lag_ok):
                misses.append(label)
            rows.append(
                [
                    label, f"{senders.get(label, 1)}", f"{len(measure):,}", per_s(scheduled),
                    f"{per_s(sent)} ({pct(sent_err)})", f"{per_s(done)} ({pct(done_err)})",
                    f"{ms(lag['p50'])} / {ms(lag['p99'])}", f"{here.error.notna().sum()}",
                    verdict(rate_ok), verdict(lag_ok),
                ]
            )  # fmt: skip
    theirs = [guidellm_precision(venv, root, r, args, work) for r in rates] if venv else []
    header = [
        "profile", "sending processes", "measured requests", "scheduled req/s",
        "sent req/s (vs scheduled)",
        "completed req/s (vs scheduled)", "send lag p50 / p99 ms", "errors",
        "rate within 2%", "lag p99 <= 1 ms",
    ]  # fmt: skip
    text = [
        "### Scheduling precision\n",
        f"`tradeoff load -m openai:URL#fast --data synthetic:prompt={FAST_PROMPT_WORDS},"
        f"output={FAST_TOKENS} --profile KIND:{args.rates} --max-seconds {args.seconds:g} "
        f"--warmup {args.warmup:g}s --seed 0 --processes {args.processes}` against "
        "benchmarks/fast_server.py (canned "
        f"{FAST_TOKENS}-token streams, no delay), one run "
        "per kind, all its rates in it. From the run store, over each load point's measured "
        "requests (its first "
        f"{args.warmup:g} s are warm-up): scheduled, sent and completed rate = (n - 1) / span "
        "of scheduled_s, of sent_s and of sent_s + e2e_s; the rates are judged against the "
        "scheduled rate, which for `constant` is the target itself and for `poisson` the rate "
        "its seeded draws came to (a Poisson sample's own rate departs from the target by about "
        "1/sqrt(n)). Send lag = queue_delay_s (actual minus scheduled send time). Errors: all "
        "requests of the point. "
        + (
            f'GuideLLM\'s rows: `guidellm run --profile \'{{"kind":"constant","rate":'
            f"[R]}}'` on the same server for {args.seconds:g} s, from the per-request timings of "
            "its JSON report: its requests scheduled after the first "
            f"{args.warmup:g} s, those begun of them, the same rates over targeted_start (when "
            "it scheduled a request), request_start (when its backend began the request) and "
            "request_end, and send lag = request_start - targeted_start. "
            if theirs
            else ""
        )
        + f"Processes {CORES.describe()}.\n",
        table(header, rows + theirs),
        "",
        *hosts,
        "",
        "Target (issue 13): rate within 2% of the target and send lag p99 at most 1 ms. "
        + (
            "**Met at every rate.**"
            if not misses
            else f"**Not met at {', '.join(misses)}**"
            + ("." if len(misses) == len(rows) else "; met at the other points.")
        ),
    ]
    return "\n".join(text)


# 2. Highest sustained rate and dispatch, side by side with GuideLLM --------------------------


def fast_data(path: Path, rows: int) -> Path:
    """GuideLLM's requests for fast_server: `rows` prompts of 16 words, 8 output tokens each
    (GuideLLM asks for them as max_completion_tokens, which fast_server honours)."""
    with open(path, "w") as out:
        for i in range(rows):
            prompt = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(FAST_PROMPT_WORDS))
            out.write(json.dumps({"prompt": prompt, "output_tokens_count": FAST_TOKENS}) + "\n")
    return path


@dataclass(frozen=True)
class Side:
    done: int
    rate: float
    cpu_s: float
    errors: int
    cut: int = 0  # GuideLLM: requests in flight when its time ran out ("incomplete")
    reported: float | None = None  # GuideLLM's own requests/s figure


def tradeoff_side(root: str, flags: list[str], out: Path) -> Side:
    data = f"synthetic:prompt={FAST_PROMPT_WORDS},output={FAST_TOKENS}"
    ran = tradeoff_load(f"openai:{root}/v1#fast", data, flags, out)
    frame = records(out)
    done, achieved = tradeoff_rate(frame)
    return Side(done, achieved, ran.cpu_s, int(frame.error.notna().sum()))


def guidellm_side(
    venv: Path, root: str, limits: tuple[dict[str, Any], dict[str, Any]], data: Path, out: Path
) -> Side:
    profile, constraint = limits
    ran, bench = guidellm(venv, root, "fast", profile, constraint, data, out, validate=False)
    done, achieved = guidellm_rate(bench)
    totals = bench["metrics"]["request_totals"]
    reported = bench["metrics"]["requests_per_second"]["successful"]["mean"]
    return Side(done, achieved, ran.cpu_s, totals["errored"], totals["incomplete"], reported)


def shown(limits: tuple[dict[str, Any], dict[str, Any]]) -> str:
    """The guidellm flags that set a profile and a constraint, as given on its command line."""
    profile, constraint = (json.dumps(x, separators=(",", ":")) for x in limits)
    return f"guidellm run --profile '{profile}' --constraint '{constraint}' ..."


def side_rows(sides: dict[str, list[Side]]) -> list[list[str]]:
    rows = []
    for name, runs in sides.items():
        median = statistics.median(s.rate for s in runs)
        cpu = statistics.median(s.cpu_s for s in runs)
        per_request = statistics.median(1e3 * s.cpu_s / s.done for s in runs)
        reported = [s.reported for s in runs if s.reported is not None]
        rows.append(
            [
                name,
                f"{median:,.0f} ({', '.join(f'{s.rate:,.0f}' for s in runs)})",
                ", ".join(f"{s.done:,}" for s in runs),
                f"{cpu:.2f} s ({per_request:.2f} ms per request)",
                ", ".join(f"{s.errors} / {s.cut}" for s in runs),
                ", ".join(f"{r:,.1f}" for r in reported) if reported else "-",
            ]
        )
    return rows


SIDE_HEADER = [
    "tool", "requests/s, median (runs)", "completed", "client CPU, median",
    "errors / cut at the end", "GuideLLM's own requests/s (mean)",
]  # fmt: skip


def throughput(root: str, venv: Path, args: argparse.Namespace, work: Path) -> str:
    data = fast_data(work / "fast-throughput.jsonl", args.throughput_rows)
    secs = args.throughput_seconds
    say(f"throughput: tradeoff load --profile throughput, {secs:g} s")
    flags = ["--profile", "throughput", "--max-concurrency", f"{IN_FLIGHT}"]
    ours = tradeoff_side(root, [*flags, "--max-seconds", f"{secs:g}"], work / "throughput-tradeoff")
    say(f"throughput: guidellm run --profile throughput, {secs:g} s")
    limits = (
        {"kind": "throughput", "max_concurrency": IN_FLIGHT},
        {"kind": "max_duration", "seconds": int(secs) if secs == int(secs) else secs},
    )
    theirs = guidellm_side(venv, root, limits, data, work / "throughput-guidellm.json")
    if theirs.done >= args.throughput_rows:
        say(f"GuideLLM used up its {args.throughput_rows} rows: raise --throughput-rows")
    ratio = ours.rate / theirs.rate
    text = [
        "### Highest sustained rate, side by side with GuideLLM's `throughput` profile\n",
        f"Both against benchmarks/fast_server.py (canned {FAST_TOKENS}-token streams, no delay), "
        f"at most {IN_FLIGHT} in flight, {secs:g} s: `tradeoff load --profile throughput "
        f"--max-concurrency {IN_FLIGHT} --max-seconds {secs:g} --data synthetic:prompt="
        f"{FAST_PROMPT_WORDS},output={FAST_TOKENS}` and `{shown(limits)}` (GuideLLM "
        f"with its default worker processes; {CORES.describe()}). Requests/s = "
        "completed / (last completion - first send), the same for both, from tradeoff's store "
        "and from GuideLLM's per-request timings in its JSON report; client CPU includes each "
        "tool's start-up and, for GuideLLM, its report. Cut at the end: GuideLLM's "
        "'incomplete' requests, in flight when its time ran out (tradeoff lets those finish).\n",
        table(SIDE_HEADER, side_rows({"tradeoff": [ours], f"GuideLLM {GUIDELLM}": [theirs]})),
        "",
        f"tradeoff / GuideLLM: {ratio:.2f}. Target (issue 13): at least GuideLLM's. "
        + ("**Met.**" if ratio >= 1 else "**Not met.**"),
    ]
    return "\n".join(text)


def dispatch(root: str, venv: Path, args: argparse.Namespace, work: Path) -> str:
    n = args.dispatch_requests
    data = fast_data(work / "fast-dispatch.jsonl", n)
    limits = ({"kind": "concurrent", "streams": IN_FLIGHT}, {"kind": "max_requests", "count": n})
    sides: dict[str, list[Side]] = {"tradeoff": [], f"GuideLLM {GUIDELLM}": []}
    for r in range(args.rounds):
        order = ("tradeoff", "guidellm") if r % 2 == 0 else ("guidellm", "tradeoff")
        for tool in order:
            say(f"dispatch round {r + 1}/{args.rounds}: {tool}, {n} requests")
            if tool == "tradeoff":
                flags = ["--profile", f"concurrent:{IN_FLIGHT}", "--max-requests", f"{n}"]
                sides["tradeoff"].append(tradeoff_side(root, flags, work / f"dispatch-{r}"))
            else:
                side = guidellm_side(venv, root, limits, data, work / f"dispatch-guidellm-{r}.json")
                sides[f"GuideLLM {GUIDELLM}"].append(side)
    ours, theirs = (statistics.median(s.rate for s in runs) for runs in sides.values())
    text = [
        f"### Dispatch: {n:,} requests, {IN_FLIGHT} in flight\n",
        f"The same server; `tradeoff load --profile concurrent:{IN_FLIGHT} --max-requests {n}` "
        f"and `{shown(limits)}`, {args.rounds} run{'s' if args.rounds > 1 else ''} "
        "each, alternately, every run a fresh process. Rate and CPU as above.\n",
        table(SIDE_HEADER, side_rows(sides)),
        "",
        f"tradeoff / GuideLLM: {ours / theirs:.2f} (medians).",
    ]
    return "\n".join(text)


# 3. Agreement on a real server ---------------------------------------------------------------


def agreement_data(work: Path, rows: int) -> tuple[Path, Path]:
    """The same prompts for both tools, in the same order: tradeoff's task (one user message,
    sent as is) and GuideLLM's rows (the prompt, 32 output tokens), repeated to `rows`."""
    ours, theirs = work / "prompts-tradeoff.jsonl", work / "prompts-guidellm.jsonl"
    texts = [f"Write a long story about {topic}." for topic in TOPICS]
    with open(ours, "w") as out:
        for i, text in enumerate(texts):
            message = {"role": "user", "content": text}
            out.write(json.dumps({"id": f"p{i:02d}", "messages": [message], "answer": "-"}) + "\n")
    with open(theirs, "w") as out:
        for i in range(rows):
            row = {"prompt": texts[i % len(texts)], "output_tokens_count": AGREE_TOKENS}
            out.write(json.dumps(row) + "\n")
    return ours, theirs


GUIDELLM_METRICS = {
    "TTFT": ("time_to_first_token_ms", 1e-3),
    "inter-token latency": ("inter_token_latency_ms", 1e-3),
    "end to end": ("request_latency", 1.0),
}
TRADEOFF_COLUMNS = {"TTFT": "ttft_s", "inter-token latency": "itl_s", "end to end": "e2e_s"}


# tradeoff's profile, and GuideLLM's
AGREE_PROFILES: dict[str, dict[str, Any]] = {
    "synchronous": {"kind": "synchronous"},
    "concurrent:2": {"kind": "concurrent", "streams": 2},
}


def agree_tradeoff(root: str, label: str, data: Path, warm: int, n: int, out: Path) -> pd.DataFrame:
    """tradeoff's measured requests at one profile."""
    flags = ["--profile", label, "--max-requests", f"{warm + n}", "--warmup", f"{warm}"]
    flags += ["--max-tokens", f"{AGREE_TOKENS}", "--temperature", "0"]
    tradeoff_load(f"openai:{root}/v1#{SERVED}", f"jsonl:{data}", flags, out)
    frame = records(out)
    return frame[(frame.phase == "measure") & frame.error.isna()]


def agree_guidellm(
    venv: Path, root: str, label: str, data: Path, warm: int, n: int, out: Path
) -> dict[str, Any]:
    """GuideLLM's report at one profile."""
    # In GuideLLM's code a warm-up of k requests takes in requests 0 to k: k = warm - 1.
    warmup = {"warmup": {"value": warm - 1, "mode": "requests"}} if warm > 1 else {}
    profile = {**AGREE_PROFILES[label], **warmup}
    limit = {"kind": "max_requests", "count": warm + n}
    return guidellm(venv, root, SERVED, profile, limit, data, out)[1]


def served_records(run_dir: Path) -> pd.DataFrame:
    """What `tradeoff serve` stored of each request it answered: when, and its own latencies."""
    with contextlib.closing(sqlite3.connect(run_dir / "tradeoff.sqlite")) as conn:
        return pd.read_sql_query(
            "SELECT created_at, ttft_s, itl_s, e2e_s FROM records WHERE error IS NULL", conn
        )


SERVER_HEADER = [
    "profile", "latency", "statistic", "server, tradeoff's requests ms",
    "tradeoff vs the server", "server, GuideLLM's requests ms", "GuideLLM vs the server",
]  # fmt: skip


def server_rows(
    ours: dict[str, pd.DataFrame],
    theirs: dict[str, dict[str, Any]],
    served: pd.DataFrame,
    windows: dict[tuple[str, str], tuple[float, float]],
    warm: int,
) -> tuple[list[list[str]], dict[str, float]]:
    """The server table's rows, and each tool's largest departure from the server's figures."""
    rows, worst = [], {"tradeoff": 0.0, "guidellm": 0.0}
    for label in AGREE_PROFILES:
        seen = {}
        for tool in ("tradeoff", "guidellm"):
            begun, ended = windows[(label, tool)]
            inside = served[(served.created_at >= begun) & (served.created_at <= ended)]
            seen[tool] = inside.sort_values("created_at").iloc[warm:]
        measured = guidellm_after(theirs[label], warm)
        for name, (key, scale) in GUIDELLM_METRICS.items():
            column = TRADEOFF_COLUMNS[name]
            client = {
                "tradeoff": percentiles(ours[label][column]),
                "guidellm": percentiles(
                    [scale * r[key] for r in measured if r.get(key) is not None]
                ),
            }
            server = {tool: percentiles(seen[tool][column]) for tool in seen}
            for stat, p in (("median", "p50"), ("p99", "p99")):
                cells = []
                for tool in ("tradeoff", "guidellm"):
                    mine, truth = client[tool][p], server[tool][p]
                    diff = mine / truth - 1 if mine and truth else None
                    cells += [ms(truth), pct(diff)]
                    worst[tool] = max(worst[tool], abs(diff) if diff is not None else math.inf)
                rows.append([label, name, stat, *cells])
    return rows, worst


def agreement(venv: Path, args: argparse.Namespace, work: Path) -> str:
    warm, n = args.agree_warmup, args.agree_requests
    ours_data, theirs_data = agreement_data(work, warm + n)
    ours: dict[str, pd.DataFrame] = {}
    theirs: dict[str, dict[str, Any]] = {}
    sync, conc = AGREE_PROFILES
    # neither tool always goes first
    order = [(sync, "tradeoff"), (sync, "guidellm"), (conc, "guidellm"), (conc, "tradeoff")]
    windows: dict[tuple[str, str], tuple[float, float]] = {}
    with tradeoff_serve(work / "serve") as root:
        for label, tool in order:
            say(f"agreement: {tool} {label}, {warm} warm-up + {n} measured requests")
            name = label.replace(":", "")
            begun = time.time()
            if tool == "tradeoff":
                ours[label] = agree_tradeoff(
                    root, label, ours_data, warm, n, work / f"agree-{name}"
                )
            else:
                theirs[label] = agree_guidellm(
                    venv, root, label, theirs_data, warm, n, work / f"agree-guidellm-{name}.json"
                )
            windows[(label, tool)] = (begun, time.time())
    served = served_records(work / "serve")
    by_server, worst = server_rows(ours, theirs, served, windows, warm)
    rows, counts, misses = [], [], []
    for label in AGREE_PROFILES:
        frame, bench = ours[label], theirs[label]
        measured = guidellm_after(bench, warm)
        their_tokens = [r["output_metrics"]["text_tokens"] for r in measured]
        counts.append(
            f"{label}: {len(frame)} requests measured by tradeoff, "
            f"{bench['metrics']['request_totals']['successful']} by GuideLLM; output tokens "
            f"per request median {frame.output_tokens.median():g} (tradeoff), "
            f"{statistics.median(their_tokens) if their_tokens else 0:g} (GuideLLM)"
        )
        for name, (key, scale) in GUIDELLM_METRICS.items():
            tradeoffs = percentiles(frame[TRADEOFF_COLUMNS[name]])
            reported = bench["metrics"][key]["successful"]
            per_request = [scale * (r[key] or 0.0) for r in measured if r.get(key) is not None]
            recomputed = percentiles(per_request)
            for stat, guide in (
                ("median", scale * reported["median"]),
                ("p99", scale * reported["percentiles"]["p99"]),
            ):
                mine = tradeoffs["p50" if stat == "median" else "p99"]
                again = recomputed["p50" if stat == "median" else "p99"]
                diff = mine / guide - 1 if mine is not None and guide else None
                ok = diff is not None and abs(diff) <= AGREEMENT
                if not ok:
                    misses.append(f"{label} {name} {stat}")
                rows.append(
                    [
                        label, name, stat, ms(mine), ms(guide), pct(diff),
                        f"{ms(again)} ({pct(mine / again - 1 if mine and again else None)})",
                        verdict(ok),
                    ]
                )  # fmt: skip
    header = [
        "profile", "latency", "statistic", "tradeoff ms", "GuideLLM ms (its report)",
        "tradeoff vs GuideLLM",
        "GuideLLM, same requests and percentiles as tradeoff, ms (tradeoff vs it)",
        "within 5%",
    ]  # fmt: skip
    text = [
        f"### Agreement with GuideLLM on `tradeoff serve` ({SERVED})\n",
        f"`tradeoff serve --config {SERVED}` (the bundled model through llama.cpp, one request "
        f'at a time) on loopback; the same {len(TOPICS)} prompts ("Write a long story about '
        f'...", one user message) from both tools in the same order, {AGREE_TOKENS} output '
        "tokens asked (tradeoff: max_tokens; GuideLLM: max_completion_tokens and ignore_eos, "
        "which tradeoff serve ignores; the stories run past 32 tokens), temperature 0 (tradeoff "
        "sends it; GuideLLM sends none and the server's default is 0). Each profile: "
        f"{warm} warm-up requests then {n} measured, warm-up left out by both (tradeoff "
        f"`--warmup {warm}`; GuideLLM `warmup: {{value: {warm - 1}, mode: requests}}`: in its "
        "code a warm-up of k requests takes in requests 0 to k, ending at the start of a "
        "request, and at concurrency 2 its window counts the request then in flight; the "
        "counts below are what each measured). Order: tradeoff and GuideLLM at synchronous, "
        "then GuideLLM and tradeoff at concurrent:2. tradeoff's figures are computed from its "
        "store by `tradeoff.analysis.load.percentiles` (numpy's linear interpolation); "
        "GuideLLM's are those of its JSON report, whose percentiles (the median too) are the "
        "first value whose cumulative share reaches p, with no interpolation. The last column "
        "takes GuideLLM's "
        f"own per-request values from the same report, leaves out its first {warm} requests as "
        "tradeoff does, and applies tradeoff's percentiles: the same requests counted the same "
        "way, so a difference there is the measurement alone.\n",
        *[f"- {line}" for line in counts],
        "",
        table(header, rows),
        "",
        "The server's own figures. `tradeoff serve` stores every request it answers with the "
        "latencies it measured itself (from the request's arrival to its first token and to "
        "its end; inter-token latency over its tokens): below, each tool's measured requests as "
        "the server saw them (the server's records written while that tool ran, its first "
        f"{warm} left out), and each tool's figure against the server's figure for its own "
        "requests. The server is the same program in both columns, so a difference between "
        "the two server columns is a difference in how fast the server ran, not in how it was "
        "measured.\n",
        table(SERVER_HEADER, by_server),
        "",
        f"Largest departure from the server's own figure: tradeoff {worst['tradeoff']:.1%}, "
        f"GuideLLM {worst['guidellm']:.1%}.",
        "",
        "Definitions. TTFT: tradeoff, from just before the client's POST (connection from the "
        "pool, request written) to the first chunk carrying text; GuideLLM, from the moment "
        "httpx starts writing the request headers (its trace hook) to the first SSE line that "
        "carries a token. Inter-token latency: tradeoff, each request's mean gap between "
        "content chunks, (last chunk - first chunk) / (chunks - 1), every request weighing "
        "the same in the percentiles; GuideLLM, (last token iteration - first token iteration) "
        "/ (output tokens - 1) with the output tokens from the server's usage, and its "
        "distribution weighs each request by its output tokens - 1 (equal here: every answer "
        f"has {AGREE_TOKENS} tokens, one per chunk). End to end: tradeoff, from before the "
        "POST to the end of the body (read past [DONE] so that the connection can be reused); "
        "GuideLLM, from the headers' write to the [DONE] line.",
        "",
        "Target (issue 13): within 5% of GuideLLM's medians and p99s. "
        + (
            "**Met for every figure.**"
            if not misses
            else f"**Not met for {len(misses)} of {len(rows)} figures** ({'; '.join(misses)})."
        ),
    ]
    return "\n".join(text)


# The run -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per precision load point")
    parser.add_argument("--warmup", type=float, default=1.0, help="precision warm-up, seconds")
    parser.add_argument("--rates", default="100,500,1000", help="precision rates, req/s")
    parser.add_argument("--throughput-seconds", type=float, default=10.0)
    parser.add_argument(
        "--throughput-rows", type=int, default=30000, help="GuideLLM's prompts for it"
    )
    parser.add_argument("--dispatch-requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="dispatch runs per tool")
    parser.add_argument("--agree-warmup", type=int, default=10, help="requests per profile")
    parser.add_argument("--agree-requests", type=int, default=40, help="measured, per profile")
    parser.add_argument("--guidellm-venv", help=f"GuideLLM {GUIDELLM}'s virtual environment")
    parser.add_argument("--parts", default=",".join(PARTS), help="which parts to run")
    parser.add_argument("--work", help="keep the run directories and logs here")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the server on one core, the tools on the others (where there are 2 or more)",
    )
    parser.add_argument(
        "--processes", default="auto", help="tradeoff load --processes in the precision part"
    )
    parser.add_argument(
        "--without-guidellm",
        action="store_true",
        help="tradeoff's precision alone (where GuideLLM cannot be installed)",
    )
    args = parser.parse_args()
    parts = args.parts.split(",")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: {', '.join(unknown)} unknown; parts: {', '.join(PARTS)}")

    if args.without_guidellm and set(parts) - {"precision"}:
        parser.error("--without-guidellm: only the precision part runs without GuideLLM")
    venv = None if args.without_guidellm else guidellm_venv(args.guidellm_venv)
    cores = sorted(os.sched_getaffinity(0))
    if args.pin and len(cores) >= 2:
        CORES.tools, CORES.server = set(cores[:-1]), {cores[-1]}
    before, started = loadavg(), time.perf_counter()
    sections = []
    with contextlib.ExitStack() as stack:
        if args.work:
            work = Path(args.work)
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_load-")))
        if {"precision", "throughput", "dispatch"} & set(parts):
            root = stack.enter_context(fast_server())
            if "precision" in parts:
                sections.append(precision(root, venv, args, work))
            if "throughput" in parts:
                assert venv is not None
                sections.append(throughput(root, venv, args, work))
            if "dispatch" in parts:
                assert venv is not None
                sections.append(dispatch(root, venv, args, work))
        if "agreement" in parts:
            assert venv is not None
            sections.append(agreement(venv, args, work))
    wall = time.perf_counter() - started
    cmd = " ".join(["python benchmarks/bench_load.py", *sys.argv[1:]]).strip()
    print("## Issue 13: load (scheduling precision, GuideLLM side by side)\n")
    print(
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores ({cpu_model()}); load "
        f"average (1 / 5 / 15 min) {before} before, {loadavg()} after; tradeoff at {commit()}"
        + (f"; GuideLLM {GUIDELLM} from {venv}" if venv else "")
        + f". The whole run took {wall:.0f} s.\n"
    )
    print(f"Command: `{cmd}`\n")
    print("\n\n".join(sections))


if __name__ == "__main__":
    main()
