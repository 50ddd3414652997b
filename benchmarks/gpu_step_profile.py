"""Where one decode step of the torch engine spends its time on the GPU (issue 17's breakdown).

    PYTHONPATH=src python3 benchmarks/gpu_step_profile.py --out DIR
        [--models llama-3.1-8b:1,8 qwen2.5-0.5b:1] [--variants graph,compile]
    PYTHONPATH=src python3 benchmarks/gpu_step_profile.py --out DIR --smoke   # CPU, tiny shape

For each model shape (random bf16 weights, a 512-position static cache unless `-ctxN`), variant
(`graph`: the decode step captured in a CUDA graph; `compile`: torch.compile first, as `compile=1`;
either with `-sdpa`: attention through SDPA instead of `engines/decode_attention.py`, `-cublas`:
the projections through cuBLAS with the norms and the rest op by op, instead of
`engines/decode_linear.py`, `-grouped` / `-perhead`: `decode_attention.GROUPED` on / off, `-pdl`:
`pdl=1`, the kernels launched as dependents, `engines/dependent_launch.py`, `-combine` /
`-incombine`: the attention's blocks combined by a kernel of their own / by the split kernel's
last program on either path, `decode_attention.COMBINED` off / on, `-skip` /
`-noskip`: `decode_attention.SKIP` on / off, `-blockN`: blocks of N positions, `-ctxN`: a cache of
N positions; `gpu_run.set_kernels`) and batch:

- the step's time: the captured graph replayed back to back (CUDA events, 200 replays), against
  its roofline (`meters.roofline.eval_cost` at position 256: weights once, the KV cache read and
  written, over the bandwidth measured by `meters.calibrate.calibrate_cuda` in the same run);
  and the engine's own decode rate (a 128-token prompt, 256 greedy tokens through
  `generate_batch`), whose gap to the replay is the host loop;
- the kernels of one replayed step, from PyTorch's profiler (CUPTI) over 20 replays: how many,
  how long each kind takes, and the GPU's idle time between them inside the graph;
- each matrix product's bytes: the same step run once more outside the graph under the profiler
  with shapes recorded, so that each GEMM kernel is tied to its operator's input dims (weights
  in bf16, read once): its time against the time its bytes take at the measured bandwidth;
- `decode_linear`'s tuning: for each product of the step, cuBLAS's time and each candidate's
  (µs in a CUDA graph, the weight arriving from memory), and the eager step that tuned them.

Prints Markdown for benchmarks/RESULTS.md and writes DIR/step_profile.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from gpu_run import _source, flag_options, set_kernels

from tradeoff.engines import decode_linear
from tradeoff.engines.torch_engine import TorchEngine
from tradeoff.meters.roofline import Peaks, eval_cost
from tradeoff.types import Request

PROMPT, NEW, POSITION = 128, 256, 256
REPLAYS, PROFILED = 200, 20

# Kernel kinds, by name (cuBLAS names its Hopper GEMMs nvjet_* or sm90_xmma_*, its GEMVs gemv*;
# inductor names its kernels triton_{poi,red,per,tem}_fused_<ops>).
KINDS = (
    ("matrix product", r"gemm|gemv|nvjet|xmma|cutlass|triton_tem|splitk|matmul|_mm_|linear"),
    ("attention", r"flash|fmha|attention|sdpa"),
    ("norm / reduction", r"triton_red_|triton_per_|reduce|norm|rsqrt|mean"),
    ("copy / index", r"copy|index|scatter|gather|memcpy|memset|cat"),
    ("elementwise", r"poi_|elementwise|vectorized|unrolled|silu|mul|add"),
)


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, pattern in KINDS if re.search(pattern, low)), "other")


def kernels(prof: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The kernel events of a finished profiler, from its Chrome trace (name, start, duration in
    µs, and the operator's correlation id where one launched it)."""
    path = Path(f"/tmp/step_profile_{time.monotonic_ns()}.json")
    prof.export_chrome_trace(str(path))
    trace = json.loads(path.read_text())
    path.unlink()
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")], events


def gemm_bytes(events: list[dict[str, Any]], kernel_events: list[dict[str, Any]]) -> dict[str, Any]:
    """For each GEMM kernel name: its operator's input dims and the bytes of the operand that is
    a weight (the largest 2-D input, bf16), from a profile with record_shapes."""
    ops = {
        e["args"]["External id"]: e
        for e in events
        if e.get("cat") == "cpu_op" and "External id" in e.get("args", {})
    }
    out: dict[str, Any] = {}
    for k in kernel_events:
        if kind_of(k["name"]) != "matrix product":
            continue
        op = ops.get(k.get("args", {}).get("External id"))
        if op is None:
            continue
        dims = [d for d in op["args"].get("Input Dims", []) if isinstance(d, list) and d]
        two_d = [d for d in dims if len(d) == 2]
        weight = max((d[0] * d[1] for d in two_d), default=0)
        out.setdefault(k["name"], []).append(
            {"op": op["name"], "dims": dims, "weight_bytes": 2 * weight}
        )
    return out


def busy_us(kernel_events: list[dict[str, Any]]) -> float:
    """The union of the kernels' intervals: time the GPU ran at least one kernel."""
    spans = sorted((k["ts"], k["ts"] + k["dur"]) for k in kernel_events)
    total, end = 0.0, -1e30
    for s, e in spans:
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def around(step: Any, n: int) -> None:
    """Set the step's position so that n steps, each advancing it by one, center on POSITION."""
    step.pos.fill_(POSITION - n // 2)


def replay_ms(step: Any, n: int) -> float:
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    around(step, n)
    torch.cuda.synchronize()
    start.record()
    for _ in range(n):
        step.graph.replay()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) / n


@torch.inference_mode()
def profile_case(model: str, variant: str, batches: list[int], peaks: Peaks | None) -> list[dict]:
    base, *flags = variant.split("-")
    opts = {"graph": "graph=1", "compile": "graph=1&compile=1", "eager": "graph=0"}[base]
    set_kernels(flags)
    opts += flag_options(flags)
    ref = f"torch:{model}?random_weights=1&{opts}"
    t0 = time.perf_counter()
    engine = TorchEngine(ref)
    load_s = time.perf_counter() - t0
    shape = engine.info.shape
    assert shape is not None
    rows = []
    for batch in batches:
        request = Request(prompt="x" * PROMPT, max_tokens=NEW, temperature=0.0)
        t0 = time.perf_counter()
        engine.generate_batch([request] * batch)  # builds, compiles and captures
        setup_s = time.perf_counter() - t0
        gens = engine.generate_batch([request] * batch)
        g = gens[0]
        assert g.t_first is not None
        engine_tok_s = batch * (g.output_tokens - 1) / (g.t_end - g.t_first)
        step = engine.decode_step(batch)
        row: dict[str, Any] = {
            "model": model,
            "variant": variant,
            "batch": batch,
            "load_s": round(load_s, 1),
            "first_batch_s": round(setup_s, 1),
            "engine_decode_tok_s": engine_tok_s,
            "tune_s": round(engine.decode_step(batch).tune_s, 1),
            "tuning_us": {str(k): v for k, v in decode_linear.TIMES.items()},
        }
        cost = eval_cost(shape, POSITION, 1, batch)
        row["roofline_ms"] = cost.roofline_s(peaks) * 1e3 if peaks else None
        row["step_bytes"] = cost.bytes
        if step.graph is not None:
            replay_ms(step, 20)
            row["replay_ms"] = replay_ms(step, REPLAYS)
            activities = [torch.profiler.ProfilerActivity.CUDA]
            around(step, PROFILED)
            with torch.profiler.profile(activities=activities) as prof:
                for _ in range(PROFILED):
                    step.graph.replay()
                torch.cuda.synchronize()
            ks, _ = kernels(prof)
            row["kernels_from"] = "graph replays"
            if not ks:  # this profiler saw no kernels inside graphs: time them outside one
                around(step, PROFILED)
                with torch.profiler.profile(activities=activities) as prof:
                    for _ in range(PROFILED):
                        step._run()
                    torch.cuda.synchronize()
                ks, _ = kernels(prof)
                row["kernels_from"] = "the same step run outside the graph"
            row["kernels_per_step"] = len(ks) / PROFILED
            row["kernel_us_per_step"] = sum(k["dur"] for k in ks) / PROFILED
            row["busy_us_per_step"] = busy_us(ks) / PROFILED
            by_name: dict[str, list[float]] = defaultdict(list)
            for k in ks:
                by_name[k["name"]].append(k["dur"])
            row["by_name"] = {
                name: {"count": len(d) / PROFILED, "us": sum(d) / PROFILED, "kind": kind_of(name)}
                for name, d in by_name.items()
            }
        # Once more outside the graph, shapes recorded: which operator launched each GEMM.
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities, record_shapes=True) as prof2:
            step._run()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
        ks2, events2 = kernels(prof2)
        row["gemm_ops"] = gemm_bytes(events2, ks2)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("by_name", "gemm_ops")}))
        print(tuning(row), flush=True)
    del engine
    set_kernels([])
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rows


def tuning(row: dict[str, Any]) -> str:
    """Markdown: decode_linear's timings for each product of the step (µs in a CUDA graph,
    each weight arriving from memory: `decode_linear.graph_us`)."""
    if not row["tuning_us"]:
        return ""
    lines = [
        f"**{row['model']}, {row['variant']}, batch {row['batch']}**: `decode_linear` tuned in "
        f"the first eager step ({row['tune_s']} s): µs for each product, (n, k, input kind "
        "0 plain / 1 normed / 2 gated, bias, residual)",
        "",
        "| product | cuBLAS | + the work fused (one kernel compiled, else op by op) | best "
        "candidate | its µs | kept | all candidates |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, times in row["tuning_us"].items():
        extra = times.get("the work fused", 0.0)
        cands = {k: v for k, v in times.items() if k not in ("cublas", "the work fused")}
        best = min(cands, key=cands.__getitem__)
        kept = "kernel" if cands[best] < times["cublas"] + extra else "cuBLAS"
        every = ", ".join(f"{k} {v:.1f}" for k, v in cands.items())
        lines.append(
            f"| {key} | {times['cublas']:.1f} | {extra:.1f} | {best} | {cands[best]:.1f} | "
            f"{kept} | {every} |"
        )
    return "\n".join(lines) + "\n"


def breakdown(row: dict[str, Any], peaks: Peaks | None) -> str:
    """Markdown: the step against its roofline, then its kernels by kind and the largest ones."""
    if "by_name" not in row:
        return f"(no graph: {row['variant']})\n"
    step = row["replay_ms"] * 1e3
    roof = row["roofline_ms"] * 1e3 if row["roofline_ms"] else float("nan")
    lines = [
        f"**{row['model']}, {row['variant']}, batch {row['batch']}**: one replayed step "
        f"{step:.1f} µs against its roofline {roof:.1f} µs ({roof / step:.1%}); "
        f"{row['kernels_per_step']:.0f} kernels (profiled in {row['kernels_from']}), "
        f"{row['kernel_us_per_step']:.1f} µs of kernel time, the GPU idle "
        f"{step - row['busy_us_per_step']:.1f} µs between them; the engine decodes "
        f"{row['engine_decode_tok_s']:.1f} tok/s against the replay's "
        f"{row['batch'] * 1e6 / step:.1f}.",
        "",
        "| kernel kind | kernels a step | µs a step | µs each (mean) | share of the step |",
        "| --- | --- | --- | --- | --- |",
    ]
    kinds: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for name, v in row["by_name"].items():
        kinds[kind_of(name)][0] += v["count"]
        kinds[kind_of(name)][1] += v["us"]
    for kind, (count, us) in sorted(kinds.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"| {kind} | {count:.0f} | {us:.1f} | {us / count:.2f} | {us / step:.1%} |")
    lines += [
        "",
        "| kernel (largest first) | kind | a step | µs a step | µs each | operator and dims "
        "(outside the graph) | weight MB | µs at the measured bandwidth | share of bandwidth |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    bw = peaks.bytes_per_s if peaks else None
    for name, v in sorted(row["by_name"].items(), key=lambda kv: -kv[1]["us"])[:16]:
        ops = row["gemm_ops"].get(name, [])
        desc, mb, ideal, share = "", "", "", ""
        if ops:
            distinct = sorted({json.dumps(o["dims"]) for o in ops})
            desc = f"{ops[0]['op']} {'; '.join(distinct[:3])}"
            per_call = sum(o["weight_bytes"] for o in ops) / len(ops)
            mb = f"{per_call / 1e6:.1f}"
            if bw:
                ideal_us = per_call / bw * 1e6
                each = v["us"] / v["count"]
                ideal, share = f"{ideal_us:.2f}", f"{ideal_us / each:.1%}"
        short = name if len(name) <= 60 else name[:57] + "..."
        lines.append(
            f"| `{short}` | {kind_of(name)} | {v['count']:.0f} | {v['us']:.1f} | "
            f"{v['us'] / v['count']:.2f} | {desc} | {mb} | {ideal} | {share} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["llama-3.1-8b:1,8", "qwen2.5-0.5b:1"])
    parser.add_argument("--variants", default="graph,compile")
    parser.add_argument("--smoke", action="store_true", help="a tiny shape on the CPU, no graph")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    peaks = None
    if torch.cuda.is_available():
        from tradeoff.meters.calibrate import calibrate_cuda

        peaks = calibrate_cuda(4.0).peaks
        print(
            f"calibrated {peaks.device}: {peaks.bytes_per_s / 1e9:,.1f} GB/s copy (read + "
            f"write), {peaks.flops_per_s / 1e12:,.1f} TFLOP/s bf16; torch {torch.__version__}"
        )
    rows: list[dict[str, Any]] = []
    cases = [(m.split(":")[0], [int(b) for b in m.split(":")[1].split(",")]) for m in args.models]
    variants = args.variants.split(",")
    if args.smoke:
        tiny = _source(args.out, "tests-tiny")  # gpu_run's 2-layer config
        cases, variants = [(tiny, [1])], ["eager"]
    for model, batches in cases:
        for variant in variants:
            try:
                rows += profile_case(model, variant, batches, peaks)
            except Exception:  # noqa: BLE001 - a variant that fails is a result; the rest run
                print(f"**{model}, {variant}** failed:\n```\n{traceback.format_exc()}```")
            (args.out / "step_profile.json").write_text(json.dumps(rows, indent=1, default=str))
    for row in rows:
        print(breakdown(row, peaks))


if __name__ == "__main__":
    main()
