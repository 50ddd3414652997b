"""The roofline cost model against hand-computed FLOPs and bytes, hardware peaks, calibration,
and the roofline efficiency in reports of real runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import run_cli

from tradeoff.engines.base import ModelShape
from tradeoff.errors import UserError
from tradeoff.meters.flops import request_flops
from tradeoff.meters.hardware import (
    calibrated_peaks,
    datasheet_peaks,
    device_peaks,
    save_calibration,
)
from tradeoff.meters.roofline import (
    Peaks,
    eval_cost,
    kv_bytes_per_position,
    model_shape,
    request_cost,
)
from tradeoff.report.hardware import scaled

# 2 layers, d_model 8, 2 query heads and 1 KV head of 4, gated FFN of 16, vocab 10.
TINY = ModelShape(
    n_params=0, n_layers=2, d_model=8, n_heads=2, n_kv_heads=1, head_dim=4, d_ff=16, vocab=10,
    weight_bytes=1000, kv_bytes_per_value=2,
)  # fmt: skip


def test_costs_match_hand_computation():
    # Per layer: q 8x8 + k,v 2x8x4 + o 8x8 = 192, FFN 3x8x16 = 384; 2 layers: 1,152 weights.
    # A position: 2 x 1,152 = 2,304 FLOPs; an attended position: 4 x 2 layers x 2 heads x 4 = 64;
    # the LM head once per pass: 2 x 8 x 10 = 160.
    assert kv_bytes_per_position(TINY) == 2 * 2 * 1 * 4 * 2 == 32
    prefill = eval_cost(TINY, 0, 3)
    assert prefill.flops == 2304 * 3 + 64 * (1 + 2 + 3) + 160 == 7456
    assert prefill.bytes == 1000 + 32 * 3 + 32 * 3 == 1192  # weights, KV read, KV written
    step = eval_cost(TINY, 3, 1)
    assert step.flops == 2304 + 64 * 4 + 160 == 2720
    assert step.bytes == 1000 + 32 * 4 + 32 == 1160

    cost = request_cost(TINY, 3, 3)  # prefill, then 2 decode passes (positions 4 and 5)
    assert cost.flops == 7456 + 2720 + (2304 + 64 * 5 + 160) == 12960
    assert cost.flops == request_flops(TINY, 3, 3).total
    assert cost.bytes == 1192 + 1160 + (1000 + 32 * 5 + 32) == 3544

    compute_bound = Peaks("x", flops_per_s=1000, bytes_per_s=1000, source="test")
    assert cost.roofline_s(compute_bound) == pytest.approx(7.456 + 2.720 + 2.784)
    memory_bound = Peaks("x", flops_per_s=1000, bytes_per_s=100, source="test")
    assert cost.roofline_s(memory_bound) == pytest.approx(11.92 + 11.60 + 11.92)


def test_unknown_weight_bytes_give_no_roofline():
    from dataclasses import replace

    with pytest.raises(ValueError, match="weight bytes"):
        eval_cost(replace(TINY, weight_bytes=None), 0, 1)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM"),
        ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe"),
        ("NVIDIA H200", "NVIDIA H200 SXM"),
        ("NVIDIA H200 NVL", "NVIDIA H200 NVL"),  # it read the SXM's 989 TFLOP/s
        ("NVIDIA A100 80GB PCIe", "NVIDIA A100 PCIe 80GB"),
        ("A100 80GB", "NVIDIA A100 PCIe 80GB"),  # it read a 40 GB card's 1.555 TB/s
        ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 SXM 80GB"),
        ("NVIDIA L4", "NVIDIA L4"),
        ("NVIDIA L40S", "NVIDIA L40S"),
        ("NVIDIA L40", None),  # not an L4 (a substring matched it, and gave it an L4's peaks)
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_datasheet_peaks_by_device_name(name, expected):
    peaks = datasheet_peaks(name)
    assert (peaks.source.removeprefix("datasheet: ").split(",")[0] if peaks else None) == expected


def test_a_calibration_is_preferred_to_the_datasheet(tmp_path):
    path = tmp_path / "cal.json"
    assert device_peaks("NVIDIA H200", path=path)[0].source.startswith("datasheet")
    save_calibration(Peaks("NVIDIA H200", 800e12, 4.1e12, "calibrated"), {"method": "t"}, path)
    peaks, why = device_peaks("NVIDIA H200", path=path)
    assert peaks.bytes_per_s == 4.1e12 and peaks.source.startswith("calibrated") and not why
    assert device_peaks("cpu: unknown", path=path) == (
        None,
        device_peaks("cpu: unknown", path=path)[1],
    )
    assert "tradeoff calibrate" in device_peaks("cpu: unknown", path=path)[1]


def test_a_calibration_is_found_by_the_words_of_its_device_name(tmp_path):
    """`calibrate --device cuda` keeps torch's full name; `roofline --device H100` finds it
    (it fell back to the datasheet), unless two calibrated devices share the words."""
    path = tmp_path / "cal.json"
    save_calibration(Peaks("NVIDIA H100 80GB HBM3", 700e12, 3e12, "c"), {"method": "t"}, path)
    assert device_peaks("H100", path=path)[0].bytes_per_s == 3e12
    assert device_peaks("h100", path=path)[0].source.startswith("calibrated")
    save_calibration(Peaks("NVIDIA H100 PCIe", 600e12, 2e12, "c"), {"method": "t"}, path)
    assert device_peaks("H100", path=path)[0].source.startswith("datasheet: NVIDIA H100 SXM,")
    peaks, why = device_peaks("cuda", path=path)
    assert peaks is None and "calibrated here: NVIDIA H100 80GB HBM3, NVIDIA H100 PCIe" in why


def test_a_calibration_kept_by_a_short_name_serves_the_gpu_s_full_name(tmp_path, monkeypatch):
    """Kept as "H100", it served `roofline --device H100` but not a run on "NVIDIA H100 80GB
    HBM3" (torch's name), which took the datasheet: 29% apart on one file. Where two kept names
    match, neither is used, and the peaks' source says why."""
    path = tmp_path / "cal.json"
    entry = {"flops_per_s": 6.5e14, "bytes_per_s": 2.6e12, "precision": "bfloat16"}
    path.write_text(json.dumps({"H100": entry}))
    peaks, _ = device_peaks("NVIDIA H100 80GB HBM3", path=path)
    assert peaks.bytes_per_s == 2.6e12 and peaks.source.startswith("calibrated"), peaks
    for other in ("NVIDIA H200", "NVIDIA H100X"):  # whole words only
        assert calibrated_peaks(other, path) is None, other
    monkeypatch.setenv("TRADEOFF_CALIBRATION", str(path))
    done = run_cli("roofline", "llama-3.1-8b", "--device", "NVIDIA H100 80GB HBM3")
    assert done.returncode == 0 and "(calibrated: ?, bf16 matmul)" in done.stdout, done.stdout
    path.write_text(json.dumps({"H100": entry, "H100 80GB": entry}))
    peaks, _ = device_peaks("NVIDIA H100 80GB HBM3", path=path)
    assert peaks.source.startswith("datasheet: NVIDIA H100 SXM"), peaks.source
    assert "matches 2 calibrated devices (H100, H100 80GB)" in peaks.source, peaks.source


def test_calibrate_says_a_folder_it_cannot_make_before_it_measures_and_warns_of_a_busy_host(
    tmp_path,
):
    import os
    import subprocess
    import sys

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    try:
        os.environ["TRADEOFF_CALIBRATION"] = str(blocked / "cal.json")
        done = run_cli("calibrate", "--seconds", "0.1")
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "its folder cannot be made" in done.stderr and "measuring" not in done.stderr
        # a folder that exists and takes no file: it measured, then failed to save
        os.environ["TRADEOFF_CALIBRATION"] = "/proc/cal.json"
        done = run_cli("calibrate", "--seconds", "0.1")
        assert done.returncode == 2 and "cannot be written there" in done.stderr, done.stderr
        assert "measuring" not in done.stderr
    finally:
        os.environ["TRADEOFF_CALIBRATION"] = str(tmp_path / "none.json")
    spin = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        busy = run_cli("calibrate", "--seconds", "3", "--no-save")
    finally:
        for p in spin:
            p.kill()
            p.wait()
    assert busy.returncode == 0, busy.stderr
    said = " ".join(busy.stderr.split())
    assert "measured on a busy host" in said and "the peaks measured may be too low" in said, said


def test_calibrate_then_profile_reports_roofline_efficiency(tmp_path):
    import os

    env_file = tmp_path / "cal.json"
    os.environ["TRADEOFF_CALIBRATION"] = str(env_file)
    try:
        done = run_cli("calibrate", "--seconds", "0.5")
        assert done.returncode == 0, done.stderr
        assert "GB/s" in done.stdout and "TFLOP/s" in done.stdout
        from tradeoff.meters.calibrate import cpu_device

        peaks = calibrated_peaks(cpu_device(), env_file)
        assert peaks is not None and peaks.bytes_per_s > 1e8 and peaks.flops_per_s > 1e8
        run = tmp_path / "run"
        profiled = run_cli(
            "profile", "-m", "smollm2-135m", "-t", "arith", "--limit", "3", "--max-tokens", "8",
            "--out", str(run),
        )  # fmt: skip
        assert profiled.returncode == 0, profiled.stderr
    finally:
        os.environ["TRADEOFF_CALIBRATION"] = str(tmp_path / "none.json")
    report = run_cli("report", str(run), "--format", "json")
    (row,) = json.loads(report.stdout)
    # llama.cpp cannot beat the roofline of the peaks measured on the same machine
    assert 0 < row["roofline_eff"] <= 1
    wide = " ".join(run_cli("report", str(run), "--wide").stdout.split())
    says = "least time on the device's peaks (as `tradeoff calibrate` measured them, else a GPU's"
    assert f"{says} datasheet figures) / measured engine time" in wide, wide  # not "calibrated"
    frontier = run_cli("frontier", str(run), "--format", "json")
    (point,) = json.loads(frontier.stdout)
    assert point["roofline_eff"] == pytest.approx(row["roofline_eff"])
    records = run_cli("report", str(run), "--records", "--format", "json")
    for record in json.loads(records.stdout):
        (call,) = record["calls"]
        assert call["bytes"] > 50e6  # the weights are read at least once
        assert 0 < call["roofline_s"] < call["e2e_s"]


def test_without_calibration_the_report_says_how_to_get_one(tmp_path):
    run = tmp_path / "run"
    profiled = run_cli(
        "profile", "-m", "smollm2-135m", "-t", "arith", "--limit", "1", "--max-tokens", "2",
        "--out", str(run),
    )  # fmt: skip
    assert profiled.returncode == 0, profiled.stderr
    assert "tradeoff report --wide adds:" in profiled.stdout and "roofline eff." in profiled.stdout
    report = run_cli("report", str(run), "--wide")
    assert "run `tradeoff calibrate` before profiling" in report.stdout


@pytest.mark.parametrize(
    "name, billions",
    # Published parameter counts: Llama-3.1-8B 8.03 B; Qwen2.5-0.5B 0.49 B; Qwen2.5-7B 7.61 B.
    [("llama-3.1-8b", 8.03), ("qwen2.5-0.5b", 0.494), ("qwen2.5-7b", 7.62)],
)
def test_shipped_configs_have_their_published_sizes(name, billions):
    from tradeoff.engines.hf_config import load_hf_config, shape_from_hf_config

    shape = shape_from_hf_config(load_hf_config(name))
    assert shape.n_params / 1e9 == pytest.approx(billions, rel=0.005)
    assert shape.weight_bytes == 2 * shape.n_params  # bf16
    assert shape_from_hf_config(load_hf_config(name), "float32").weight_bytes == 4 * shape.n_params


def test_llama_8b_decode_roofline_matches_the_measured_bandwidth_bound():
    """shared/FACTS: 16.06 GB of bf16 weights, of which a decode step reads all but the untied
    input embedding (1.05 GB, a gather of one row): at 4.29 TB/s about 285 tokens/s at batch 1
    (267 where the embedding was counted as read whole)."""
    from tradeoff.engines.hf_config import load_hf_config, shape_from_hf_config

    shape = shape_from_hf_config(load_hf_config("llama-3.1-8b"))
    assert shape.weight_bytes / 1e9 == pytest.approx(16.06, abs=0.01)
    assert shape.embedding_bytes == 128256 * 4096 * 2
    h200 = Peaks("H200", 989e12, 4.29e12, "FACTS")
    cost = request_cost(shape, 128, 257)
    tokens_per_s = 256 / sum(p.roofline_s(h200) for p in cost.decode)
    assert tokens_per_s == pytest.approx(285, rel=0.01)
    # batch 8: the weights are read once per step for all eight
    batched = request_cost(shape, 128, 257, batch=8)
    assert batched.decode[0].flops == 8 * cost.decode[0].flops
    assert batched.decode[0].bytes < 1.1 * cost.decode[0].bytes


def test_roofline_command(tmp_path):
    done = run_cli("roofline", "qwen2.5-0.5b", "--device", "H100", "--batch", "8")
    assert done.returncode == 0, done.stderr
    assert "494 M parameters" in done.stdout and "datasheet: NVIDIA H100 SXM" in done.stdout
    heading = done.stdout.splitlines()[0]  # one line into a pipe (wrapped at the table's width)
    assert heading.startswith("qwen2.5-0.5b (") and heading.endswith("), batch 8"), heading
    assert "decode (255 steps)" in done.stdout and "memory" in done.stdout
    unknown = run_cli("roofline", "qwen2.5-0.5b", "--device", "TPU")
    assert unknown.returncode == 2 and "name a GPU" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    missing = run_cli("roofline", "no-such-config")
    assert missing.returncode == 2 and "not known" in missing.stderr
    assert "shipped config (llama-3.1-8b" in missing.stderr and "openai:" not in missing.stderr
    served = run_cli("roofline", "openai:http://127.0.0.1:9/v1#m")  # nothing asked of the network
    assert served.returncode == 2 and "architecture is unknown here" in served.stderr
    # a request longer than the model's context (config: max_position_embeddings; a bundled
    # model: its GGUF's context_length) is none the model serves
    for model, context in (("qwen2.5-0.5b", "32,768"), ("smollm2-135m", "8,192")):
        long = run_cli("roofline", model, "--input", "100000", "--output", "1")
        assert long.returncode == 2 and len(long.stderr.strip().splitlines()) == 1, long.stderr
        assert f"({context} positions)" in long.stderr and "--input 100,000" in long.stderr
    assert run_cli("roofline", "smollm2-135m", "--input", "8191", "--output", "1").returncode == 0
    # a loadable model's weights are as stored: --dtype would be ignored, so it is refused
    typed = run_cli("roofline", "smollm2-135m", "--dtype", "fp32")
    assert typed.returncode == 2 and "--dtype fp32 applies to an architecture config" in (
        typed.stderr
    ), typed.stderr
    # 1e308 s was accepted and measured for ever (inf was refused)
    for endless in ("inf", "nan", "1e308", "601"):
        forever = run_cli("calibrate", "--seconds", endless, "--no-save")
        assert forever.returncode == 2 and "measuring" not in forever.stderr, forever.stderr
        assert "'--seconds'" in forever.stderr and "600" in forever.stderr, forever.stderr
        assert len(forever.stderr.strip().splitlines()) == 1, forever.stderr


def test_a_torch_reference_s_roofline_is_of_the_dtype_and_context_it_runs_with():
    """Built on this host, a torch model took the CPU's fp32: a GPU's roofline read twice the
    bytes, an 8B shape was refused for this host's memory, and ?ctx= was ignored."""
    import re

    def gb(*args: str) -> float:
        done = run_cli("roofline", *args)
        assert done.returncode == 0, done.stderr
        found = re.search(r"([0-9.]+) (MB|GB) of weights", done.stdout)
        assert found, done.stdout
        return float(found[1]) / (1e3 if found[2] == "MB" else 1)

    on_gpu = gb("torch:qwen2.5-0.5b?random_weights=1", "--device", "H100")
    assert on_gpu == pytest.approx(gb("qwen2.5-0.5b", "--device", "H100", "--dtype", "bf16"))
    as_fp32 = gb("torch:qwen2.5-0.5b?random_weights=1&dtype=fp32", "--device", "H100")
    assert as_fp32 == pytest.approx(2 * on_gpu, rel=0.01)  # as printed, to 3 figures
    big = run_cli("roofline", "torch:llama-3.1-8b?random_weights=1", "--device", "H200")
    assert big.returncode == 0 and "16.1 GB of weights" in big.stdout, big.stderr
    short = run_cli("roofline", "torch:qwen2.5-0.5b?random_weights=1&ctx=256", "--device",
                    "H100", "--input", "300", "--output", "1")  # fmt: skip
    assert short.returncode == 2 and "(256 positions)" in short.stderr, short.stderr
    typed = run_cli("roofline", "torch:qwen2.5-0.5b?random_weights=1", "--dtype", "fp16")
    assert typed.returncode == 2 and "?dtype=fp16 instead" in typed.stderr, typed.stderr


def test_a_calibration_path_that_holds_no_calibrations_is_one_line(tmp_path):
    """A directory, or a file that is not JSON: calibrate says so before it measures, and the
    roofline names the file, instead of a traceback or a silent 'no peaks'."""
    import os

    bad = tmp_path / "cal.json"
    bad.write_text("{half a file")
    try:
        for path, says in [(tmp_path, "Is a directory"), (bad, "not JSON")]:
            os.environ["TRADEOFF_CALIBRATION"] = str(path)
            for args in (["calibrate", "--seconds", "0.1"], ["roofline", "qwen2.5-0.5b"]):
                done = run_cli(*args)
                assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
                lines = done.stderr.strip().splitlines()
                assert len(lines) == 1 and str(path) in lines[0] and says in lines[0], lines
                assert "measuring" not in done.stderr
        # a hand-edited peak of 0 or less: the roofline would divide by it
        from tradeoff.meters.calibrate import cpu_device

        # and text, true (once read as 1 FLOP/s) or a missing peak: once "no peaks for CPU
        # (calibrated here: CPU)", a message that contradicted itself
        zero = tmp_path / "zero.json"
        for peaks, shown in [
            ({"flops_per_s": -1, "bytes_per_s": 0}, "flops_per_s -1 and bytes_per_s 0"),
            ({"flops_per_s": "fast", "bytes_per_s": 1e9}, 'flops_per_s "fast" and'),
            ({"flops_per_s": True, "bytes_per_s": 1e9}, "flops_per_s true and"),
            ({"flops_per_s": 1e9}, "and bytes_per_s missing"),
        ]:
            zero.write_text(json.dumps({cpu_device(): peaks}))
            os.environ["TRADEOFF_CALIBRATION"] = str(zero)
            done = run_cli("roofline", "smollm2-135m", "--device", "cpu")
            assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
            assert f"{shown}" in done.stderr and "each must be a number above 0" in done.stderr
    finally:
        os.environ["TRADEOFF_CALIBRATION"] = str(tmp_path / "none.json")


def test_a_broken_calibration_file_stops_a_run_before_it_begins(tmp_path, monkeypatch):
    """It stopped profile, load and serve after the models loaded, leaving in --out a failed
    run that only --resume would take; a GPU's bad entry stopped the run at its first call."""
    cal, out, spec = tmp_path / "cal.json", tmp_path / "run", tmp_path / "spec.yaml"
    monkeypatch.setenv("TRADEOFF_CALIBRATION", str(cal))
    spec.write_text("models: {small: smollm2-135m}\ntasks: [arith]\nsampling: {max_tokens: 2}\n")
    gpu = {"NVIDIA H100 80GB HBM3": {"flops_per_s": 0, "bytes_per_s": 3e12}}
    for text, says in [
        ('{"cpu: typo": {"flops_per_s": 3e10, "bytes_per_s": 1.1e10},}', "not JSON"),
        (json.dumps(gpu), "NVIDIA H100 80GB HBM3 has peaks flops_per_s 0"),
    ]:
        cal.write_text(text)
        for command in [
            ["profile", str(spec), "--limit", "1"],
            ["load", str(spec), "--profile", "synchronous", "--max-requests", "1"],
            ["serve", "--spec", str(spec), "--port", "0"],
        ]:
            done = run_cli(*command, "--out", str(out), timeout=120)
            assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
            assert str(cal) in done.stderr and says in done.stderr, done.stderr
            assert not out.exists(), f"{command[0]} left a run directory behind"


def test_a_config_without_a_shape_field_is_one_line_naming_it(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"model_type": "llama"}')
    done = run_cli("roofline", str(config))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"model config '{config}' lacks a usable field: 'hidden_size'" in done.stderr


def _config(tmp_path, name: str = "config.json", **fields) -> str:
    """A small Llama-like config.json with `fields` changed (None: left out), as a path."""
    config = {
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 256, "max_position_embeddings": 8192, "torch_dtype": "bfloat16",
    }  # fmt: skip
    config.update(fields)
    path = tmp_path / name
    path.write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    return str(path)


def test_an_fp32_model_is_timed_against_the_fp32_peak(tmp_path):
    """The 16-bit tensor-core peak made an fp32 prefill 15 times too fast on an H200."""
    from tradeoff.meters.roofline import request_roofline

    fp32 = request_roofline("llama-3.1-8b", "H200", 4096, 2, 8, "fp32")
    bf16 = request_roofline("llama-3.1-8b", "H200", 4096, 2, 8)
    assert fp32.phases[0].bound == "compute"
    assert fp32.phases[0].seconds == pytest.approx(bf16.phases[0].seconds * 989 / 67)
    assert fp32.peaks.precision == "fp32" and "fp32" in fp32.peaks.source
    assert bf16.peaks.precision == "bf16" and "bf16" in bf16.peaks.source
    assert datasheet_peaks("NVIDIA H200", "fp32").flops_per_s == 67e12
    assert datasheet_peaks("NVIDIA H200", "bf16").flops_per_s == 989e12
    assert datasheet_peaks("NVIDIA L4", "float32").flops_per_s == 30.3e12
    assert datasheet_peaks("NVIDIA H200").flops_per_s == 989e12  # unknown: 16-bit, as before

    # a GPU calibrated in bf16: its bandwidth, with the datasheet's fp32 FLOP/s
    path = tmp_path / "cal.json"
    save_calibration(
        Peaks("NVIDIA H100 80GB HBM3", 700e12, 3e12, "c"), {"precision": "bfloat16"}, path
    )
    peaks, _ = device_peaks("H100", "fp32", path=path)
    assert (peaks.flops_per_s, peaks.bytes_per_s, peaks.precision) == (67e12, 3e12, "fp32")
    assert "calibrated in bf16" in peaks.source, peaks.source
    assert device_peaks("H100", "bf16", path=path)[0].flops_per_s == 700e12
    assert device_peaks("H100", path=path)[0].flops_per_s == 700e12  # callers giving no dtype
    # a CPU (no datasheet): its figure, saying what it was measured in
    save_calibration(Peaks("cpu: x", 1e12, 5e10, "c"), {"precision": "float32"}, path)
    cpu, _ = device_peaks("cpu: x", "bf16", path=path)
    assert cpu.flops_per_s == 1e12 and "fp32 matmul" in cpu.source and "bf16" in cpu.source


def test_a_calibration_s_precision_is_read_in_any_case_and_an_unknown_one_is_refused(
    tmp_path, monkeypatch
):
    """ "BF16" was read as no precision at all: an fp32 model was timed against the bf16 FLOP/s
    measured, a compute-bound prefill 10 times too fast, and "tf32" the same without a word."""
    path = tmp_path / "cal.json"

    def calibrated(precision: str) -> None:
        entry = {"flops_per_s": 7e14, "bytes_per_s": 3e12, "precision": precision}
        path.write_text(json.dumps({"NVIDIA H100 80GB HBM3": entry}))

    for name in ("BF16", "BFloat16", "bf16"):
        calibrated(name)
        peaks, _ = device_peaks("NVIDIA H100 80GB HBM3", "fp32", path=path)
        assert (peaks.flops_per_s, peaks.bytes_per_s, peaks.precision) == (67e12, 3e12, "fp32")
        assert "calibrated in bf16" in peaks.source, peaks.source
    calibrated("FP32")
    assert device_peaks("NVIDIA H100 80GB HBM3", "fp32", path=path)[0].flops_per_s == 7e14
    assert datasheet_peaks("NVIDIA H100 80GB HBM3", "Float32").flops_per_s == 67e12
    calibrated("tf32")
    monkeypatch.setenv("TRADEOFF_CALIBRATION", str(path))
    done = run_cli("roofline", "llama-3.1-8b", "--device", "NVIDIA H100 80GB HBM3")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert str(path) in line and "NVIDIA H100 80GB HBM3" in line and '"tf32"' in line, line
    assert "known: bf16, bfloat16, fp16, float16, fp32, float32" in line, line
    # `calibrate` here rewrites only this machine's entry: the line says what mends another's
    assert "edit or remove the entry 'NVIDIA H100 80GB HBM3'" in line, line


@pytest.mark.parametrize(
    "fields, says",
    [
        ({"model_type": "mixtral", "num_local_experts": 8}, "model_type 'mixtral' is not"),
        ({"num_local_experts": 8, "num_experts_per_tok": 2}, "num_local_experts = 8"),
        ({"model_type": "qwen3", "moe_intermediate_size": 768}, "moe_intermediate_size = 768"),
        ({"quantization_config": {"quant_method": "awq"}}, "quantization_config"),
        ({"model_type": "gpt2"}, "model_type 'gpt2' is not"),
        ({"model_type": "phi"}, "model_type 'phi' is not"),
        ({"model_type": "falcon"}, "model_type 'falcon' is not"),
    ],
)
def test_a_config_not_sized_here_is_refused_in_one_line(tmp_path, fields, says):
    """Mixtral was read as a dense 7.2 B model; a two-matrix MLP as a gated one."""
    from tradeoff.engines.hf_config import load_hf_config, shape_from_hf_config
    from tradeoff.errors import UserError

    with pytest.raises(UserError) as refused:
        shape_from_hf_config(load_hf_config(_config(tmp_path, **fields)), name="m")
    message = str(refused.value)
    assert says in message and "llama, mistral, qwen2, qwen3, gemma" in message, message
    assert "\n" not in message


def test_the_supported_types_have_transformers_parameter_counts_and_tie_defaults():
    """Each model type sized here, tie_word_embeddings left out (Gemma ties by default, the
    others do not; all were read as untied), against the model transformers builds."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from tradeoff.engines.hf_config import shape_from_hf_config

    numbers = {
        "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300, "head_dim": 16,
    }  # fmt: skip
    kinds = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"]
    counts, ours = {}, {}  # a tie read wrong is vocab x hidden parameters off
    for kind, extra in [*((k, {}) for k in kinds), ("llama", {"attention_bias": True})]:
        hf = transformers.AutoConfig.for_model(kind, **numbers, **extra)
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(hf)
        name = kind + "+bias" * bool(extra)
        counts[name] = sum(p.numel() for p in model.parameters())  # a tied table once
        ours[name] = shape_from_hf_config({"model_type": kind, **numbers, **extra}).n_params
    assert ours == counts


def test_a_config_without_head_dim_or_sliding_window_takes_transformers_defaults():
    """Qwen3 heads are 128 wide and Gemma's 256 whatever hidden_size / heads is; Mistral and
    Gemma 2 and 3 slide a window of 4096 where their config.json leaves it out. Sized as
    hidden_size / heads with no window, a Qwen3-0.6B lost 15% of its weights and half its KV
    cache."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from tradeoff.engines.hf_config import shape_from_hf_config

    qwen3 = {
        "model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072,
        "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
        "vocab_size": 151936, "tie_word_embeddings": True,
    }  # fmt: skip
    assert shape_from_hf_config(qwen3).n_params == 596_049_920  # Qwen3-0.6B, as published
    numbers = {
        "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
    }  # fmt: skip
    theirs, ours = {}, {}
    for kind in ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"]:
        hf = transformers.AutoConfig.for_model(kind, **numbers)
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(hf)
        n_params = sum(p.numel() for p in model.parameters())
        head_dim = getattr(hf, "head_dim", None) or 64 // 4  # Qwen2 and Llama-like: the quotient
        theirs[kind] = (n_params, head_dim, getattr(hf, "sliding_window", None))
        shape = shape_from_hf_config({"model_type": kind, **numbers})
        ours[kind] = (shape.n_params, shape.head_dim, shape.sliding_window)
    assert ours == theirs
    assert theirs["gemma2"][1:] == (256, 4096)  # the defaults this test is about
    none = shape_from_hf_config({"model_type": "mistral", **numbers, "sliding_window": None})
    assert none.sliding_window is None  # null: no window, as transformers reads it


def test_qwen_slides_only_the_layers_from_max_window_layers_on():
    """A Qwen config with use_sliding_window and max_window_layers at least its layers slides
    no layer (transformers and the torch engine attend in full); its roofline said "a sliding
    window of 16" and called its exact figures upper bounds."""
    transformers = pytest.importorskip("transformers")
    from tradeoff.engines.hf_config import shape_from_hf_config

    numbers = {
        "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
        "sliding_window": 16,
    }  # fmt: skip
    for kind in ["qwen2", "qwen3"]:
        for fields in [
            {"use_sliding_window": True},  # max_window_layers 28 by default: none slides
            {"use_sliding_window": True, "max_window_layers": 1},
            {"use_sliding_window": True, "max_window_layers": 0},
            {"use_sliding_window": False, "max_window_layers": 0},
        ]:
            hf = transformers.AutoConfig.for_model(kind, **numbers, **fields)
            theirs = 16 if "sliding_attention" in hf.layer_types else None
            ours = shape_from_hf_config({"model_type": kind, **numbers, **fields})
            assert ours.sliding_window == theirs, (kind, fields)
            listed = {"model_type": kind, **numbers, "layer_types": hf.layer_types}
            assert shape_from_hf_config(listed).sliding_window == theirs, (kind, fields)


def test_a_config_s_dtype_field_gives_its_weight_type(tmp_path):
    """transformers >= 4.56 writes `dtype`, not `torch_dtype`: it was read as bf16."""
    from tradeoff.engines.hf_config import load_hf_config, shape_from_hf_config

    config = load_hf_config(_config(tmp_path, torch_dtype=None, dtype="float32"))
    shape = shape_from_hf_config(config)
    assert shape.weight_bytes == 4 * shape.n_params and shape.dtype == "fp32"
    assert shape_from_hf_config(config, "bf16").weight_bytes == 2 * shape.n_params


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"num_attention_heads": 0}, "num_attention_heads"),  # was ZeroDivisionError
        ({"num_key_value_heads": 0}, "num_key_value_heads"),  # was read as the query heads
        ({"hidden_size": 1e300}, "hidden_size"),  # was OverflowError
        ({"intermediate_size": -5}, "intermediate_size"),  # gave negative costs, exit 0
        ({"vocab_size": "big"}, "vocab_size"),
        ({"num_hidden_layers": 2.5}, "num_hidden_layers"),
        ({"max_position_embeddings": 0}, "max_position_embeddings"),
        ({"head_dim": True}, "head_dim"),
    ],
)
def test_a_config_size_out_of_range_is_one_line_naming_it(tmp_path, fields, field):
    from tradeoff.engines.hf_config import load_hf_config, shape_from_hf_config
    from tradeoff.errors import UserError

    with pytest.raises(UserError) as refused:
        shape_from_hf_config(load_hf_config(_config(tmp_path, **fields)), name="m")
    assert f"{field} is " in str(refused.value) and "integer from 1 to" in str(refused.value)


def test_config_sizes_that_were_errors_and_requests_past_the_limits(tmp_path):
    """A null context (was TypeError) is none; every size 0 was a ZeroDivisionError in the
    roofline, a --batch of 400 digits an OverflowError: one line each."""
    from tradeoff.engines.hf_config import load_hf_config, shape_from_hf_config

    config = load_hf_config(_config(tmp_path)) | {"max_position_embeddings": None}
    assert shape_from_hf_config(config).context is None
    zeros = _config(tmp_path, "zeros.json", hidden_size=0, intermediate_size=0,
                    num_hidden_layers=0, num_attention_heads=0, vocab_size=0)  # fmt: skip
    done = run_cli("roofline", zeros)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "hidden_size is 0; it must be an integer from 1" in done.stderr
    huge = run_cli("roofline", "qwen2.5-0.5b", "--batch", "1" + "0" * 400)
    assert huge.returncode == 2 and "Traceback" not in huge.stderr, huge.stderr
    assert "100000" in huge.stderr.replace(",", ""), huge.stderr


def test_a_context_asked_of_an_engine_bounds_the_request():
    """torch: past max_position_embeddings is refused as the torch engine refuses it; a
    llama.cpp model's ?ctx= is the context it runs with (both were accepted)."""
    from tradeoff.errors import UserError
    from tradeoff.meters.roofline import request_roofline

    with pytest.raises(UserError, match="ctx = 40000 is beyond the 32768 positions"):
        request_roofline("torch:qwen2.5-0.5b?ctx=40000", "H100", 35000, 10)
    with pytest.raises(UserError, match=r"\(256 positions\)"):
        request_roofline("smollm2-135m?ctx=256", "H100", 200, 100)
    assert request_roofline("smollm2-135m?ctx=256", "H100", 200, 56).shape.context == 256


def test_a_rope_scaling_that_extends_the_context_bounds_the_request(tmp_path):
    """Qwen2.5-7B with the YaRN block its model card gives for 131,072 tokens: a request of
    65,536 was refused as longer than any the model serves (32,768, max_position_embeddings).
    The context is as vLLM derives it; llama3's and Gemma 3's are already in
    max_position_embeddings."""
    from tradeoff.engines.hf_config import load_hf_config, shape_from_hf_config
    from tradeoff.meters.roofline import request_roofline

    yarn = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    qwen = load_hf_config("qwen2.5-7b") | {"rope_scaling": yarn}
    path = tmp_path / "qwen-yarn.json"
    path.write_text(json.dumps(qwen))
    done = run_cli("roofline", str(path), "--input", "65536", "--output", "512")
    assert done.returncode == 0, done.stderr
    past = run_cli("roofline", str(path), "--input", "131072", "--output", "1")
    assert past.returncode == 2 and "(131,072 positions)" in past.stderr, past.stderr
    # transformers 5 writes rope_parameters; dynamic and linear scale max_position_embeddings
    v5 = {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0,
          "original_max_position_embeddings": 8192}  # fmt: skip
    for scaling, context in [
        ({"rope_parameters": v5}, 32768),
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, 65536),
        ({"rope_scaling": {"type": "linear", "factor": 2}}, 65536),
        ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}, 32768),
    ]:
        config = load_hf_config("qwen2.5-7b") | scaling
        assert shape_from_hf_config(config).context == context, scaling
    assert shape_from_hf_config(load_hf_config("llama-3.1-8b")).context == 131072
    gemma3 = load_hf_config(_config(tmp_path, "gemma3.json", model_type="gemma3_text",
                            rope_scaling={"rope_type": "linear", "factor": 8.0}))  # fmt: skip
    assert shape_from_hf_config(gemma3).context == 8192
    with pytest.raises(UserError, match='rope scaling\'s factor is "4"; it must be a number'):
        shape_from_hf_config(
            load_hf_config("qwen2.5-7b") | {"rope_scaling": yarn | {"factor": "4"}}
        )
    # the torch engine does not run YaRN, and its roofline says so
    with pytest.raises(UserError, match="rope scaling 'yarn' is not supported"):
        request_roofline(f"torch:{path}?random_weights=1", "H100", 65536, 512)


def test_an_untied_embedding_is_gathered_not_read_whole():
    """A pass reads the rows of the tokens it feeds, at most the table; a tied table is read
    whole as the LM head's."""
    from dataclasses import replace

    untied = replace(TINY, embedding_bytes=8 * 10 * 2)  # vocab 10 rows of 8 bf16 values
    assert eval_cost(untied, 3, 1).bytes == 1000 - 160 + 16 + 32 * 4 + 32
    assert eval_cost(untied, 0, 3).bytes == 1000 - 160 + 3 * 16 + 32 * 3 + 32 * 3
    assert eval_cost(untied, 0, 4, batch=8).bytes == 1000 + 8 * (32 * 4 + 32 * 4)  # 32 rows > 10
    assert eval_cost(untied, 3, 1).flops == eval_cost(TINY, 3, 1).flops


def test_a_request_past_a_sliding_window_says_attention_is_an_upper_bound(tmp_path):
    from tradeoff.meters.roofline import request_roofline

    mistral = _config(tmp_path, model_type="mistral", sliding_window=4096)
    (note,) = request_roofline(mistral, "H100", 5000, 10).notes
    assert "sliding window of 4,096 positions" in note and "upper bounds" in note
    assert request_roofline(mistral, "H100", 4000, 96).notes == []
    off = _config(tmp_path, "off.json", model_type="qwen2", sliding_window=4096)  # Qwen: off
    assert request_roofline(off, "H100", 5000, 10).notes == []
    on = _config(tmp_path, "on.json", model_type="qwen2", sliding_window=4096,
                 use_sliding_window=True, max_window_layers=1)  # fmt: skip
    assert len(request_roofline(on, "H100", 5000, 10).notes) == 1
    gemma = request_roofline("gemma3-270m", "H100", 600, 10)  # its GGUF: a window of 512
    assert gemma.shape.sliding_window == 512 and len(gemma.notes) == 1
    done = run_cli("roofline", mistral, "--input", "5000", "--output", "10", "--format", "json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["notes"] == [note] and shown["peaks"]["precision"] == "bf16"
    table = run_cli("roofline", mistral, "--input", "5000", "--output", "10")
    assert "upper bounds" in " ".join(table.stderr.split()), table.stderr


def test_a_blank_device_is_refused_with_the_names(tmp_path, monkeypatch):
    """Its empty words named a calibrated CPU (its name ends in ")"), which was taken."""
    from tradeoff.errors import UserError
    from tradeoff.meters.roofline import request_roofline

    path = tmp_path / "cal.json"
    save_calibration(Peaks("cpu: Some CPU (2 threads)", 1e11, 1e10, "c"), {"method": "t"}, path)
    monkeypatch.setenv("TRADEOFF_CALIBRATION", str(path))
    for blank in ("", "  "):
        with pytest.raises(UserError, match="--device is blank; name a GPU .*H100.*L4"):
            request_roofline("qwen2.5-0.5b", blank, 128, 2)
        assert device_peaks(blank, path=path)[0] is None


def test_a_folder_named_like_a_bundled_model_does_not_shadow_it(tmp_path, monkeypatch):
    """A folder is a config only where it holds config.json."""
    from tradeoff.errors import UserError
    from tradeoff.meters.roofline import request_roofline

    monkeypatch.chdir(tmp_path)
    (tmp_path / "smollm2-135m").mkdir()
    assert request_roofline("smollm2-135m", "H100", 8, 2).shape.n_layers == 30
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="model 'empty' is not known"):
        request_roofline("empty", "H100", 8, 2)
    _config(tmp_path / "empty")
    assert request_roofline("empty", "H100", 8, 2).shape.n_layers == 2


def test_the_help_names_every_model_reference_and_a_blank_dtype_is_refused():
    from tradeoff.errors import UserError
    from tradeoff.meters.roofline import request_roofline

    said = " ".join(run_cli("roofline", "--help").stdout.split())
    assert "gguf:PATH" in said and "torch:CONFIG_OR_DIR" in said, said
    said = " ".join(run_cli("calibrate", "--help").stdout.split())
    assert "$XDG_CACHE_HOME/tradeoff/calibration.json" in said, said
    assert "$TRADEOFF_CALIBRATION" in said and "~/.cache/tradeoff/calibration.json" in said
    with pytest.raises(UserError, match="--dtype '' is not known; known: float32, fp32"):
        request_roofline("qwen2.5-0.5b", "H100", 128, 2, dtype="")


@pytest.mark.parametrize(
    "first, steps, batch",
    [(0, 10, 2), (3, 1, 2), (7, 20, 1), (0, 40, 8), (100, 33, 3)],
)
def test_the_decode_in_closed_form_is_the_sum_of_its_passes(first, steps, batch):
    """Pass by pass, a million output tokens took 7 s; the closed form is the same sum, where
    the bound changes from one pass to the next too."""
    from dataclasses import replace

    from tradeoff.meters.roofline import decode_sums

    untied = replace(TINY, embedding_bytes=160)
    for shape in (TINY, untied):
        for peaks in (
            Peaks("x", 1000, 250, "t"), Peaks("x", 1000, 1000, "t"), Peaks("x", 10, 1e6, "t")
        ):  # fmt: skip
            passes = [eval_cost(shape, first + i, 1, batch) for i in range(steps)]
            flops, moved, seconds = decode_sums(shape, first, steps, peaks, batch)
            assert flops == pytest.approx(sum(p.flops for p in passes), rel=1e-12)
            assert moved == pytest.approx(sum(p.bytes for p in passes), rel=1e-12)
            assert seconds == pytest.approx(sum(p.roofline_s(peaks) for p in passes), rel=1e-12)
    # the first case crosses: compute-bound passes, then memory-bound ones
    cross = Peaks("x", 1000, 250, "t")
    bound = [p.flops / 1000 >= p.bytes / 250 for p in (eval_cost(TINY, s, 1, 2) for s in (0, 9))]
    assert bound == [True, False] and decode_sums(TINY, 0, 10, cross, 2)[2] > 0


def test_a_torch_ctx_past_a_sliding_window_is_refused_as_the_engine_refuses_it(tmp_path):
    """The roofline of a context the engine would not open (past a Mistral-style sliding
    window: the engine attends over the whole context) was given as if it would."""
    config = {
        "model_type": "mistral", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 512, "max_position_embeddings": 512, "sliding_window": 32,
    }  # fmt: skip
    path = tmp_path / "mistral.json"
    path.write_text(json.dumps(config))
    ok = run_cli("roofline", f"torch:{path}?random_weights=1&ctx=32", "--device", "H100",
                 "--input", "16", "--output", "4")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    past = run_cli("roofline", f"torch:{path}?random_weights=1&ctx=64", "--device", "H100",
                   "--input", "16", "--output", "4")  # fmt: skip
    assert past.returncode == 2 and "sliding window of 32 positions" in past.stderr, past.stderr


def test_a_cpu_calibration_is_named_for_the_cores_it_may_run_on():
    """Under `taskset -c 0` a one-core measurement was filed as the machine's two."""
    import os

    from tradeoff.meters.calibrate import cpu_device

    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores and CPU affinity")
    cores = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(cores)})
        assert cpu_device().endswith("(1 threads)")
    finally:
        os.sched_setaffinity(0, cores)
    assert cpu_device().endswith(f"({len(cores)} threads)")


def test_a_shipped_name_shadowed_by_a_directory_here_is_refused(tmp_path, monkeypatch):
    """A ./qwen2.5-0.5b holding another config.json: `roofline qwen2.5-0.5b` read the shipped
    one without a word (the torch engine refuses that name for the same reason)."""
    from tradeoff.engines.hf_config import CONFIG_DIR

    monkeypatch.chdir(tmp_path)
    (tmp_path / "qwen2.5-0.5b").mkdir()
    config = json.loads((CONFIG_DIR / "qwen2.5-0.5b.json").read_text()) | {"num_hidden_layers": 48}
    (tmp_path / "qwen2.5-0.5b" / "config.json").write_text(json.dumps(config))
    for name in ("qwen2.5-0.5b", "torch:qwen2.5-0.5b"):
        with pytest.raises(UserError, match="write ./qwen2.5-0.5b for the directory's"):
            model_shape(name, "H100")
    shipped = model_shape("torch:qwen2.5-0.5b?random_weights=true", "H100")  # as the engine builds
    assert shipped.n_layers == 24 and model_shape("./qwen2.5-0.5b", "H100").n_layers == 48


def test_one_token_and_one_step_are_singular():
    shown = run_cli("roofline", "llama-3.1-8b", "--input", "1", "--output", "2")
    assert shown.returncode == 0, shown.stderr
    assert "prefill (1 token)" in shown.stdout and "decode (1 step)" in shown.stdout


def _untied_copy(source: str, dest: str) -> None:
    """Write `source`'s GGUF again with an LM head of its own (`output.weight`, a copy of its
    input embedding `token_embd.weight`), as Llama-3.1-8B's and Qwen2.5-7B's GGUFs are stored;
    by ggml's own GGUF writer, which llama.cpp reads."""
    import ctypes

    from llama_cpp._ggml import libggml as ggml

    class Params(ctypes.Structure):
        _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.POINTER(ctypes.c_void_p))]

    pointer, name, index = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int64
    for function, arguments, result in [
        ("gguf_init_from_file", [name, Params], pointer),
        ("gguf_init_empty", [], pointer),
        ("gguf_set_kv", [pointer, pointer], None),
        ("gguf_get_n_tensors", [pointer], index),
        ("gguf_get_tensor_name", [pointer, index], name),
        ("ggml_get_tensor", [pointer, name], pointer),
        ("ggml_set_name", [pointer, name], pointer),
        ("gguf_add_tensor", [pointer, pointer], None),
        ("gguf_write_to_file", [pointer, name, ctypes.c_bool], ctypes.c_bool),
        ("gguf_free", [pointer], None),
        ("ggml_free", [pointer], None),
    ]:
        getattr(ggml, function).argtypes, getattr(ggml, function).restype = arguments, result
    tensors = ctypes.c_void_p()
    read = ggml.gguf_init_from_file(source.encode(), Params(False, ctypes.pointer(tensors)))
    written = ggml.gguf_init_empty()
    ggml.gguf_set_kv(written, read)
    for i in range(ggml.gguf_get_n_tensors(read)):
        ggml.gguf_add_tensor(
            written, ggml.ggml_get_tensor(tensors, ggml.gguf_get_tensor_name(read, i))
        )
    head = ggml.ggml_get_tensor(tensors, b"token_embd.weight")  # added as copied: now again
    ggml.gguf_add_tensor(written, ggml.ggml_set_name(head, b"output.weight"))
    assert ggml.gguf_write_to_file(written, dest.encode(), False)
    for context in (written, read):
        ggml.gguf_free(context)
    ggml.ggml_free(tensors)


def test_an_untied_gguf_reads_its_lm_head_whole_and_gathers_its_embedding(tmp_path):
    """A GGUF with an output.weight beside its token_embd.weight was charged both tables whole
    every pass (the decode step of an untied 8B about 7% too many bytes, which its config.json
    is not), though the roofline's note says only the rows gathered are read."""
    from tradeoff.engines.bundled import BUNDLED
    from tradeoff.meters.roofline import request_roofline

    untied = tmp_path / "untied.gguf"
    _untied_copy(str(BUNDLED["smollm2-135m"].locate()), str(untied))
    tied = request_roofline("smollm2-135m", "H100", 10, 3)
    split = request_roofline(f"gguf:{untied}", "H100", 10, 3)
    table = split.shape.embedding_bytes  # the tied model's table, stored twice
    assert table > 0 and split.shape.weight_bytes == tied.shape.weight_bytes + table
    assert tied.shape.embedding_bytes == 0
    row = table // tied.shape.vocab
    # the LM head read whole, as the tied table; the rows of 10 tokens gathered, then a row a step
    assert split.phases[0].bytes == tied.phases[0].bytes + 10 * row
    assert split.phases[1].bytes == tied.phases[1].bytes + 2 * row


def test_a_torch_reference_is_timed_on_the_device_its_device_option_names(tmp_path, monkeypatch):
    """device=cpu was timed on an H100 in bf16 without a word, though the engine runs it on the
    CPU in fp32; a --device against the reference's device= is timed as named, with a note."""
    from tradeoff.meters.calibrate import cpu_device
    from tradeoff.meters.roofline import request_roofline

    path = tmp_path / "cal.json"
    save_calibration(Peaks(cpu_device(), 5e10, 2e10, "c"), {"precision": "fp32"}, path)
    monkeypatch.setenv("TRADEOFF_CALIBRATION", str(path))
    reference = "torch:qwen2.5-0.5b?random_weights=1"
    shown = run_cli("roofline", f"{reference}&device=cpu", "--output", "4")
    assert shown.returncode == 0 and "note:" not in shown.stderr, shown.stderr
    heading = shown.stdout.splitlines()[0]
    assert f"1.98 GB of weights) on {cpu_device()} (" in heading, heading  # fp32: 4 bytes each
    for device in ("cuda", "cuda:1"):
        on_gpu = request_roofline(f"{reference}&device={device}", None, 16, 4)
        assert (on_gpu.peaks.device, on_gpu.shape.dtype, on_gpu.notes) == ("H100", "bf16", [])
    (note,) = request_roofline(f"{reference}&device=cpu", "H100", 16, 4).notes
    assert "runs on cpu" in note and "timed on H100 in bf16" in note, note
    shown = run_cli("roofline", f"{reference}&device=cuda", "--device", "cpu", "--output", "4")
    assert shown.returncode == 0, shown.stderr
    assert "fp32 matmul" in shown.stdout.splitlines()[0], shown.stdout
    (said,) = [line for line in shown.stderr.splitlines() if line.startswith("note:")]
    assert "runs on cuda" in said and "timed on cpu in fp32" in said, shown.stderr


def test_peaks_calibrated_on_a_busy_host_say_so_where_they_are_used(tmp_path, monkeypatch):
    """`calibrate` stored its busy-host warning, and nothing read it again: the low peaks were
    shown as a plain "calibrated: <date>"."""
    from tradeoff.meters.calibrate import cpu_device
    from tradeoff.meters.roofline import request_roofline

    path = tmp_path / "cal.json"
    busy = {"busy_host": "measured on a busy host: ...; the peaks measured may be too low"}
    save_calibration(Peaks(cpu_device(), 5e10, 2e10, "c"), {"precision": "fp32"} | busy, path)
    save_calibration(Peaks("H100", 6e13, 3e12, "c"), {"precision": "fp32"} | busy, path)
    save_calibration(Peaks("L4", 3e13, 3e11, "c"), {"precision": "bf16"}, path)
    monkeypatch.setenv("TRADEOFF_CALIBRATION", str(path))
    said = "calibrated on a busy host (the peaks may be too low): "
    for device in ("cpu", "H100"):  # the H100's fp32 matmul, with its datasheet's bf16 FLOP/s
        source = request_roofline("qwen2.5-0.5b", device, 16, 4).peaks.source
        assert source.startswith(said), source
    assert request_roofline("qwen2.5-0.5b", "L4", 16, 4).peaks.source.startswith("calibrated: ")
    shown = run_cli("roofline", "qwen2.5-0.5b", "--device", "cpu", "--output", "4")
    assert f"on {cpu_device()} ({said}" in shown.stdout.splitlines()[0], shown.stdout


def test_the_table_scales_flops_and_bytes_so_a_small_model_s_are_not_zero():
    """In fixed TFLOPs to 3 decimals, the bundled models' passes read 0.000."""
    shown = run_cli("roofline", "smollm2-135m", "--input", "1", "--output", "2")
    assert shown.returncode == 0, shown.stderr
    rows = [line for line in shown.stdout.splitlines() if "prefill (" in line or "decode (" in line]
    assert len(rows) == 2 and all("269 MFLOP" in row and "96.6 MB" in row for row in rows), rows
    big = run_cli("roofline", "llama-3.1-8b", "--input", "131000", "--output", "2", "-f", "json")
    prefill = json.loads(big.stdout)["phases"][0]
    table = run_cli("roofline", "llama-3.1-8b", "--input", "131000", "--output", "2").stdout
    assert f"{prefill['flops'] / 1e15:.3g} PFLOP" in table, table


def test_a_value_that_rounds_up_to_a_thousand_takes_the_next_unit():
    """The unit was chosen before rounding, so 999.6 MB read '1e+03 MB'."""
    assert scaled(999_600, "B") == "1 MB"
    assert (scaled(999.6, "FLOP"), scaled(999_950_000, "")) == ("1 kFLOP", "1 B")
    assert (scaled(999.4, "B"), scaled(1_000_000, "B")) == ("999 B", "1 MB")
    shown = run_cli("roofline", "qwen2.5-0.5b", "--input", "471", "--output", "2")
    assert shown.returncode == 0, shown.stderr
    assert "1 GB" in shown.stdout and "e+" not in shown.stdout, shown.stdout


def test_no_peaks_for_the_cpu_a_reference_s_device_chose_says_where_cpu_came_from(
    tmp_path, monkeypatch
):
    """A torch: reference with device=cpu is timed on the CPU where no --device is given: on a
    host not calibrated, "no peaks for cpu" did not say that cpu came from its device=."""
    monkeypatch.setenv("TRADEOFF_CALIBRATION", str(tmp_path / "none.json"))
    reference = "torch:qwen2.5-0.5b?random_weights=1&device=cpu"
    refused = run_cli("roofline", reference, "--output", "4")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "no peaks for cpu" in refused.stderr, refused.stderr
    assert "(cpu is the reference's device=cpu), or name a GPU with --device: " in (
        refused.stderr
    ), refused.stderr
    named = run_cli("roofline", "qwen2.5-0.5b", "--device", "cpu", "--output", "4")
    assert named.returncode == 2 and "device=cpu" not in named.stderr, named.stderr


def test_a_roofline_of_a_model_that_is_not_a_torch_reference_imports_no_torch():
    """PyTorch is an extra (`tradeoff[torch]`): the plain install times shipped configs and
    bundled models. (Reading a torch reference's device= imported the torch engine for every
    model, so `roofline qwen2.5-0.5b` ended in ModuleNotFoundError: torch, a traceback, there.)"""
    code = (
        "import sys\n"
        "from tradeoff.meters.roofline import request_roofline\n"
        "request_roofline('qwen2.5-0.5b', 'H100', 128, 64)\n"
        "request_roofline('smollm2-135m', 'H100', 128, 64)\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
