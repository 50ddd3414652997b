"""Issue 6's GPU run: the torch engine and the NVML meter on a lent H100 or H200.

    PYTHONPATH=src python3 benchmarks/gpu_run.py --out DIR [--part calibrate,decode,profile]
        [--variants graph,compile+graph,max-autotune+graph] [--batches 1,8]
        [--model llama-3.1-8b] [--repeats 1]
    PYTHONPATH=src python3 benchmarks/gpu_run.py --out DIR --smoke   # the same code on a CPU

Parts (each prints a markdown block and adds to DIR/results.json as it finishes):
- calibrate: `tradeoff calibrate --device cuda` (stored in DIR/calibration.json, which the
  other parts use as the device's measured peaks);
- decode: the Llama-3.1-8B shape (or `--model`'s) in bf16 with random weights through
  `TorchEngine`: a 128-token prompt and 256 greedy tokens at batch 1 and 8, `--repeats` times
  after a warm-up; decode tokens/s and its share of the measured bandwidth roofline (analytic
  bytes of every decode pass / calibrated copy bandwidth), prefill time against its roofline
  (FLOP-bound), joules per token by the NVML counter, peak memory; one variant per `--variants`
  (the decode step captured in a CUDA graph, with or without torch.compile first; a `-before`
  suffix turns the engine's Triton kernels off, `decode_attention` and `decode_linear`, as the
  engine was before issue 17; `-sync` gives `overlap=0`: each token read before the next step is
  queued; `-grouped` and `-perhead` set `decode_attention.GROUPED`; `-pdl` gives `pdl=1`, the
  kernels launched as dependents, `engines/dependent_launch.py`; `-combine` and `-incombine`
  force `decode_attention.COMBINED` off and on, the attention's blocks combined by a kernel of
  their own or by the split kernel's last program on either path); on
  CUDA, `decode_linear`'s tuning too (µs for each product of the step: cuBLAS's and each
  candidate block shape's);
- profile: `tradeoff.runner.profile` on the Qwen2.5-0.5B and -7B shapes (random weights): single
  models, a batched vote of 8, and `switch` between them, metered by NVML through the energy
  account; the requests' energies against the counter's total, J per output token by config
  and by model, then `tradeoff report` on the run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from tradeoff.engines import decode_attention, decode_linear, rms_norm
from tradeoff.engines.torch_engine import TorchEngine
from tradeoff.meters.hardware import device_peaks
from tradeoff.meters.roofline import eval_cost
from tradeoff.types import Request

RESULTS: dict[str, Any] = {}
ATTENTION_BLOCK = decode_attention.BLOCK  # as shipped: `-blockN` variants change it
SWAPPED = decode_linear.SWAPPED  # as shipped: `-noswap` variants tune without them


def save(out: Path, key: str, value: Any) -> None:
    """Add `key` to DIR/results.json (kept across runs of this script into one DIR)."""
    path = out / "results.json"
    if not RESULTS and path.is_file():
        RESULTS.update(json.loads(path.read_text()))
    RESULTS[key] = value
    path.write_text(json.dumps(RESULTS, indent=2, default=str))


def cli(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "tradeoff", *args], capture_output=True, text=True, timeout=600
    )
    return (proc.stdout + proc.stderr).strip()


def part_calibrate(out: Path, smoke: bool) -> None:
    args = ["calibrate", "--device", "cpu" if smoke else "cuda"]
    text = cli(*args, "--seconds", "1" if smoke else "4")
    print(f"### `tradeoff {' '.join(args)}`\n\n```\n{text}\n```\n", flush=True)
    save(out, "calibrate", text)


class Counter:
    """NVML's total-energy counter of GPU 0 (J), or None without NVML."""

    def __init__(self) -> None:
        self.handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.nvml = pynvml
        except Exception:
            pass

    def read(self) -> float | None:
        if self.handle is None:
            return None
        return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1e3


def part_decode(
    out: Path, smoke: bool, variants: list[str], batches: list[int], model: str, repeats: int
) -> None:
    source = "tests-tiny" if smoke else model
    prompt_len, new = (16, 24) if smoke else (128, 256)
    counter = Counter()
    rows = []
    bases = {
        "eager": "graph=0",
        "graph": "graph=1",
        "compile+graph": "graph=1&compile=1",
        "max-autotune+graph": "graph=1&compile=max-autotune",
    }
    for variant in variants:
        # the longest base the variant starts with (one of them holds a "-"), then its flags
        known = [b for b in bases if variant == b or variant.startswith(b + "-")]
        if not known:
            sys.exit(f"variant {variant!r}: it must start with one of {', '.join(bases)}")
        base = max(known, key=len)
        flags = variant[len(base) + 1 :].split("-") if variant != base else []
        set_kernels(flags)
        opts = bases[base]
        if smoke:
            opts = "graph=0"
        opts += flag_options(flags)
        ref = f"torch:{_source(out, source)}?random_weights=1&{opts}"
        t0 = time.perf_counter()
        try:
            engine = TorchEngine(ref)
        except Exception as exc:
            rows.append({"variant": variant, "error": f"{type(exc).__name__}: {exc}"})
            continue
        load_s = time.perf_counter() - t0
        shape = engine.info.shape
        assert shape is not None
        peaks, why = device_peaks(engine.info.device or _cpu_name())
        step_obj = None  # a batch's decode step: it holds the model and the KV cache
        for batch in batches:
            request = Request(prompt="x" * prompt_len, max_tokens=new, temperature=0.0)
            try:
                t0 = time.perf_counter()
                engine.generate_batch([request] * batch)  # warm-up: builds and captures the step
                setup_s = time.perf_counter() - t0
                runs = []
                for _ in range(repeats):
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                        torch.cuda.reset_peak_memory_stats()
                    e0 = counter.read()
                    gens = engine.generate_batch([request] * batch)
                    runs.append((gens, e0, counter.read()))
            except Exception as exc:
                rows.append(
                    {"variant": variant, "batch": batch, "error": f"{type(exc).__name__}: {exc}"}
                )
                continue
            if decode_linear.TIMES:  # each product's µs, cuBLAS and the kernel's candidates
                tuning = {str(k): v for k, v in decode_linear.TIMES.items()}
                print(json.dumps({"decode_linear tuning, µs": tuning}), flush=True)
                save(out, f"tuning {source} {variant}", tuning)
            replay_tok_s = None
            step_obj = engine.decode_step(batch)
            if step_obj.graph is not None:  # the captured step alone, back to back: no host work
                with torch.inference_mode():  # a replay advances it by one
                    step_obj.pos.fill_(max(0, prompt_len + new // 2 - 50))
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(100):
                    step_obj.graph.replay()
                torch.cuda.synchronize()
                replay_tok_s = batch * 100 / (time.perf_counter() - t0)
            decode_roof = (
                sum(
                    eval_cost(shape, prompt_len + i, 1, batch).roofline_s(peaks)
                    for i in range(new - 1)
                )
                if peaks
                else None
            )
            prefill_cost = eval_cost(shape, 0, prompt_len, batch)
            step = eval_cost(shape, prompt_len + new // 2, 1, batch)
            for run, (gens, e0, e1) in enumerate(runs, 1):
                g = gens[0]
                assert g.t_first is not None and g.output_tokens == new, g
                decode_s = g.t_end - g.t_first
                prefill_s = g.t_first - g.t_start
                row = {
                    "variant": variant,
                    "batch": batch,
                    "run": run,
                    "load_s": round(load_s, 1),
                    "first_batch_s (build/compile/capture)": round(setup_s, 1),
                    "tune_s (decode_linear, in the first batch)": round(step_obj.tune_s, 1),
                    "decode_tok_s": batch * (new - 1) / decode_s,
                    "roofline_tok_s": batch / step.roofline_s(peaks) if peaks else None,
                    "graph_replay_tok_s": replay_tok_s,
                    "decode_roofline_share": decode_roof / decode_s if decode_roof else None,
                    "prefill_ms": prefill_s * 1e3,
                    "prefill_roofline_share": prefill_cost.roofline_s(peaks) / prefill_s
                    if peaks
                    else None,
                    "prefill_flop_share": prefill_cost.flops / peaks.flops_per_s / prefill_s
                    if peaks
                    else None,
                    "j_per_token": (e1 - e0) / (batch * new)
                    if e0 is not None and e1 is not None
                    else None,
                    "mean_w": (e1 - e0) / (g.t_end - g.t_start)
                    if e0 is not None and e1 is not None
                    else None,
                    "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30
                    if torch.cuda.is_available()
                    else None,
                    "peaks": peaks.source if peaks else why,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
            save(out, f"decode {source} {variant}", [r for r in rows if r["variant"] == variant])
        # Both released here: a step kept alive held this variant's model and cache in the next
        # variant's peak memory
        del engine, step_obj
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    set_kernels([])
    print(_decode_table(rows, source, prompt_len, new), flush=True)


def _decode_table(rows: list[dict[str, Any]], source: str, prompt_len: int, new: int) -> str:
    def f(v: Any, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    lines = [
        f"### Decode, {source} bf16 random weights, {prompt_len}-token prompt, {new} new tokens",
        "",
        "| variant | batch | run | decode tok/s | roofline tok/s | share of roofline "
        "| prefill ms | prefill share (roofline) | prefill share (FLOP) | J/token | mean W "
        "| peak GiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r.get('batch', '')} | error: {r['error'][:120]} |")
            continue
        runs.setdefault((r["variant"], r["batch"]), []).append(r)
        lines.append(
            f"| {r['variant']} | {r['batch']} | {r.get('run', 1)} | {r['decode_tok_s']:.1f} "
            f"| {f(r['roofline_tok_s'], '.1f')} | {f(r['decode_roofline_share'], '.1%')} "
            f"| {r['prefill_ms']:.1f} | {f(r['prefill_roofline_share'], '.1%')} "
            f"| {f(r.get('prefill_flop_share'), '.1%')} | {f(r['j_per_token'], '.3f')} "
            f"| {f(r['mean_w'], '.0f')} | {f(r['peak_mem_gib'], '.1f')} |"
        )
    spread = [(key, rs) for key, rs in runs.items() if len(rs) > 1]
    if spread:
        lines += [
            "",
            "| variant | batch | runs | decode tok/s, median (min–max) | share of roofline, "
            "median (min–max) | J/token, median |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
    for (variant, batch), rs in spread:
        tok = sorted(r["decode_tok_s"] for r in rs)
        share = sorted(r["decode_roofline_share"] for r in rs if r["decode_roofline_share"])
        joules = [r["j_per_token"] for r in rs if r["j_per_token"] is not None]
        shares = (
            f"{statistics.median(share):.1%} ({share[0]:.1%}–{share[-1]:.1%})" if share else "n/a"
        )
        lines.append(
            f"| {variant} | {batch} | {len(rs)} | {statistics.median(tok):.1f} "
            f"({tok[0]:.1f}–{tok[-1]:.1f}) | {shares} "
            f"| {f(statistics.median(joules) if joules else None, '.3f')} |"
        )
    return "\n".join(lines) + "\n"


def _cpu_name() -> str:
    from tradeoff.meters.calibrate import cpu_device

    return cpu_device()


TINY = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
}


def flag_options(flags: list[str]) -> str:
    """The engine options a variant's flags give: `-sync` is `overlap=0` (each token read before
    the next step is queued), `-pdl` is `pdl=1` (the kernels launched as dependents), `-ctxN`
    a KV cache of N positions (`ctx=N`; 512 without it, the engine's default being 2048)."""
    ctx = [f[3:] for f in flags if f.startswith("ctx") and f[3:].isdigit()]
    opts = f"&ctx={ctx[0] if ctx else 512}"
    opts += "&overlap=0" if "sync" in flags else ""
    return opts + ("&pdl=1" if "pdl" in flags else "")


def set_kernels(flags: list[str]) -> None:
    """Set the engine's kernels for a variant's flags (`[]`: as the package ships them): `-before`
    turns the Triton kernels off, as the engine was before issue 17; `-sdpa` the attention
    kernel alone (SDPA instead), `-cublas` the projections' kernel alone (cuBLAS, the norms and
    the rest op by op); `-grouped` / `-perhead` force `decode_attention.GROUPED` on / off
    (neither: its rule); `-combine` runs the attention's combine as a kernel of its own
    (`decode_attention.COMBINED` off), `-incombine` in the split kernel's last program, grouped
    heads too (on; neither: its rule); `-skip` / `-noskip` force `decode_attention.SKIP` on /
    off (the blocks past the last position skipped, or attended to masked; neither: its rule).
    Each variant compiles its own step: dynamo's caches are reset and inductor's get the
    variant's tag. In one process a second variant otherwise reused the first's compiled step
    whatever its kernels were launched with (the new engine's model passed its guards; the tag
    alone did not stop it). `-sync` changes the host loop only: it shares inductor's entry.
    `-pdl` is the engine's `pdl=1`, set by the callers. `-blockN`: the attention's programs take
    N positions each (`decode_attention.BLOCK`, else as shipped). `-noswap`: tuning leaves out
    the projections' swapped tensor-core shapes (`decode_linear.SWAPPED`), as before change 18.
    `-opnorm`: the norms that no product fuses run op by op, not as `rms_norm`'s kernel (as
    before change 22)."""
    torch.compiler.config.cache_key_tag = "-".join(f for f in flags if f != "sync")
    torch._dynamo.reset()  # a new engine's model passed the last compiled step's guards
    decode_attention.ENABLED = not {"before", "sdpa"} & set(flags)
    decode_linear.ENABLED = not {"before", "cublas"} & set(flags)
    rms_norm.ENABLED = not {"before", "opnorm"} & set(flags)
    decode_attention.GROUPED = True if "grouped" in flags else False if "perhead" in flags else None
    decode_attention.COMBINED = (
        False if "combine" in flags else True if "incombine" in flags else None
    )
    decode_attention.SKIP = True if "skip" in flags else False if "noskip" in flags else None
    blocks = [int(f[5:]) for f in flags if f.startswith("block") and f[5:].isdigit()]
    decode_attention.BLOCK = blocks[0] if blocks else ATTENTION_BLOCK
    decode_linear.SWAPPED = () if "noswap" in flags else SWAPPED
    decode_linear.CHOICES.clear()
    decode_linear.TIMES.clear()


def _source(out: Path, name: str) -> str:
    if not name.startswith("tests-"):
        return name
    path = out / f"{name}.json"
    width = 64 if name == "tests-tiny" else 128
    path.write_text(json.dumps({**TINY, "hidden_size": width, "num_attention_heads": width // 16}))
    return str(path)


def part_profile(out: Path, smoke: bool) -> None:
    from tradeoff.config import parse_spec
    from tradeoff.runner import profile
    from tradeoff.store import Store

    small, large = ("tests-tiny", "tests-wide") if smoke else ("qwen2.5-0.5b", "qwen2.5-7b")
    # Random weights give near-uniform next-token distributions: entropy about ln(vocab) minus
    # half the logits' variance, ~11.75 nats for the 0.5B shape and ~11.2 for the 7B. A
    # threshold between the two sends each token to the large model and back (both models
    # compute every position); 1e9 never leaves the small one.
    # The small model's median next-token entropy, measured here: at that threshold (window 1)
    # about half the tokens go to the large model, which hands back at once (threshold_low 100).
    probe = TorchEngine(f"torch:{_source(out, small)}?random_weights=1&ctx=1024")
    sample = probe.generate(Request(prompt="12+7=", max_tokens=64, temperature=1.0, logprobs=True))
    entropies = sorted(sample.token_entropies)
    threshold = round(entropies[len(entropies) // 2], 4)
    print(f"small model's median entropy: {threshold} nats (min {entropies[0]:.4f}, "
          f"max {entropies[-1]:.4f})", flush=True)  # fmt: skip
    del probe
    run_dir = out / "profile-run"
    spec = parse_spec(
        {
            "models": {
                "small": f"torch:{_source(out, small)}?random_weights=1&ctx=1024",
                "large": f"torch:{_source(out, large)}?random_weights=1&ctx=1024&seed=1",
            },
            "tasks": ["arith"],
            "limit": 8,
            "concurrency": 2,
            "sampling": {"max_tokens": 64, "temperature": 1.0},
            "configs": [
                {"model": "small"},
                {"model": "large"},
                {"strategy": "vote", "model": "small", "n": 8, "temperature": 1.0},
                {
                    "strategy": "switch",
                    "models": ["small", "large"],
                    "threshold": [threshold, 1e9],
                    "threshold_low": 100.0,
                    "window": 1,
                },
            ],
        }
    )
    t0 = time.perf_counter()
    result = profile(spec, run_dir, notify=lambda m: print(m, flush=True))
    wall = time.perf_counter() - t0
    store = Store.open(run_dir)
    df, run = store.records(), store.run()
    store.close()
    df["calls"] = df["calls"].map(json.loads)
    df["extra"] = df["extra"].map(json.loads)
    meters = run.get("meters") or [{}]
    meter = meters[-1]
    requests_j = float(df["energy_j"].sum()) if df["energy_j"].notna().any() else None
    missing = int(df["energy_j"].isna().sum())
    summary: dict[str, Any] = {
        "status": result.status,
        "records": len(df),
        "wall_s": wall,
        "records_without_energy": missing,
        "energy_missing_reasons": sorted(set(df["energy_missing"].dropna())),
        "meter": meter,
        "requests_j": requests_j,
    }
    if requests_j is not None and meter.get("counter_total_j"):
        accounted = requests_j + meter["idle_j"]
        summary["agreement"] = accounted / meter["counter_total_j"]
    lines = ["### Profile through the NVML energy account (Qwen2.5 shapes, random weights)", ""]
    lines.append(
        f"- idle baseline {meter.get('idle_w')} W over {meter.get('idle_measured_s')} s; "
        f"counter total over the run {meter.get('counter_total_j')} J; requests {requests_j} J; "
        f"idle (between requests) {meter.get('idle_j')} J; (requests + idle) / counter = "
        f"{summary.get('agreement')}; records without energy: {missing}"
    )
    lines += [
        "",
        "| config | records | output tokens | J | J/output token | mean e2e s | roofline eff. |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    by_config = []
    for name, g in df.groupby("config"):
        tokens = int(g["output_tokens"].sum())
        joules = float(g["energy_j"].sum())
        roof = sum(c["roofline_s"] or 0 for cs in g["calls"] for c in cs)
        engine_s = sum(c["e2e_s"] or 0 for cs in g["calls"] for c in cs)
        eff = roof / engine_s if roof and engine_s else None
        by_config.append({"config": name, "tokens": tokens, "joules": joules, "eff": eff})
        lines.append(
            f"| {name} | {len(g)} | {tokens} | {joules:.1f} | {joules / max(tokens, 1):.3f} "
            f"| {g['e2e_s'].mean():.3f} | {'n/a' if eff is None else f'{eff:.1%}'} |"
        )
    switch = df[df["config"].str.startswith("switch")]
    lines += [
        "",
        "Switch, by model (summed over records):",
        "",
        "| config | model | tokens produced | prefill+catch-up tokens | busy s | J "
        "| J/token produced |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    by_model = []
    for name, g in switch.groupby("config"):
        for alias in ("small", "large"):
            calls = [c for cs in g["calls"] for c in cs if c["model"] == alias]
            produced = int(sum(e[f"tokens_{alias}"] for e in g["extra"]))
            fed = int(sum(c["input_tokens"] or 0 for c in calls))
            busy = sum(c["e2e_s"] for c in calls)
            joules = sum(c["energy_j"] or 0 for c in calls)
            by_model.append(
                {"config": name, "model": alias, "produced": produced, "joules": joules}
            )
            lines.append(
                f"| {name} | {alias} | {produced} | {fed} | {busy:.2f} | {joules:.1f} "
                f"| {joules / produced if produced else float('nan'):.3f} |"
            )
    summary["by_config"] = by_config
    summary["by_model"] = by_model
    save(out, "profile", summary)
    print("\n".join(lines) + "\n", flush=True)
    report = cli("report", str(run_dir))
    print(f"```\n$ tradeoff report {run_dir.name}\n{report}\n```\n", flush=True)
    save(out, "report", report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--part", default="calibrate,decode,profile")
    parser.add_argument("--variants", default="graph,compile+graph")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--model", default="llama-3.1-8b", help="the decode part's shape")
    parser.add_argument("--repeats", type=int, default=1, help="decode runs after the warm-up")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["TRADEOFF_CALIBRATION"] = str(args.out.resolve() / "calibration.json")
    if torch.cuda.is_available():
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    parts = args.part.split(",")
    if "calibrate" in parts:
        part_calibrate(args.out, args.smoke)
    if "decode" in parts:
        batches = [int(b) for b in args.batches.split(",")]
        variants = args.variants.split(",")
        part_decode(args.out, args.smoke, variants, batches, args.model, args.repeats)
    if "profile" in parts:
        part_profile(args.out, args.smoke)


if __name__ == "__main__":
    main()
