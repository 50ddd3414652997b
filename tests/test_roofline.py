"""The roofline cost model against hand-computed FLOPs and bytes, hardware peaks, calibration,
and the roofline efficiency in reports of real runs."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from tradeoff.engines.base import ModelShape
from tradeoff.meters.flops import request_flops
from tradeoff.meters.hardware import (
    calibrated_peaks,
    datasheet_peaks,
    device_peaks,
    save_calibration,
)
from tradeoff.meters.roofline import Peaks, eval_cost, kv_bytes_per_position, request_cost

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
        ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 SXM 80GB"),
        ("NVIDIA L4", "NVIDIA L4"),
        ("NVIDIA L40S", "NVIDIA L40S"),
        ("NVIDIA L40", None),  # not an L4 (a substring matched it, and gave it an L4's peaks)
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_datasheet_peaks_by_device_name(name, expected):
    peaks = datasheet_peaks(name)
    assert (peaks.source.removeprefix("datasheet: ") if peaks else None) == expected


def test_a_calibration_is_preferred_to_the_datasheet(tmp_path):
    path = tmp_path / "cal.json"
    assert device_peaks("NVIDIA H200", path)[0].source.startswith("datasheet")
    save_calibration(Peaks("NVIDIA H200", 800e12, 4.1e12, "calibrated"), {"method": "t"}, path)
    peaks, why = device_peaks("NVIDIA H200", path)
    assert peaks.bytes_per_s == 4.1e12 and peaks.source.startswith("calibrated") and not why
    assert device_peaks("cpu: unknown", path) == (None, device_peaks("cpu: unknown", path)[1])
    assert "tradeoff calibrate" in device_peaks("cpu: unknown", path)[1]


def test_a_calibration_is_found_by_the_words_of_its_device_name(tmp_path):
    """`calibrate --device cuda` keeps torch's full name; `roofline --device H100` finds it
    (it fell back to the datasheet), unless two calibrated devices share the words."""
    path = tmp_path / "cal.json"
    save_calibration(Peaks("NVIDIA H100 80GB HBM3", 700e12, 3e12, "c"), {"method": "t"}, path)
    assert device_peaks("H100", path)[0].bytes_per_s == 3e12
    assert device_peaks("h100", path)[0].source.startswith("calibrated")
    save_calibration(Peaks("NVIDIA H100 PCIe", 600e12, 2e12, "c"), {"method": "t"}, path)
    assert device_peaks("H100", path)[0].source == "datasheet: NVIDIA H100 SXM"
    peaks, why = device_peaks("cuda", path)
    assert peaks is None and "calibrated here: NVIDIA H100 80GB HBM3, NVIDIA H100 PCIe" in why


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
    """shared/FACTS: 16.06 GB of bf16 weights at 4.29 TB/s is about 267 tokens/s at batch 1."""
    from tradeoff.engines.hf_config import load_hf_config, shape_from_hf_config

    shape = shape_from_hf_config(load_hf_config("llama-3.1-8b"))
    assert shape.weight_bytes / 1e9 == pytest.approx(16.06, abs=0.01)
    h200 = Peaks("H200", 989e12, 4.29e12, "FACTS")
    cost = request_cost(shape, 128, 257)
    tokens_per_s = 256 / sum(p.roofline_s(h200) for p in cost.decode)
    assert tokens_per_s == pytest.approx(267, rel=0.01)
    # batch 8: the weights are read once per step for all eight
    batched = request_cost(shape, 128, 257, batch=8)
    assert batched.decode[0].flops == 8 * cost.decode[0].flops
    assert batched.decode[0].bytes < 1.1 * cost.decode[0].bytes


def test_roofline_command(tmp_path):
    done = run_cli("roofline", "qwen2.5-0.5b", "--device", "H100", "--batch", "8")
    assert done.returncode == 0, done.stderr
    assert "494 M parameters" in done.stdout and "datasheet: NVIDIA H100 SXM" in done.stdout
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
    forever = run_cli("calibrate", "--seconds", "inf", "--no-save")
    assert forever.returncode == 2 and "--seconds must be" in forever.stderr, forever.stderr


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

        zero = tmp_path / "zero.json"
        zero.write_text(json.dumps({cpu_device(): {"flops_per_s": -1, "bytes_per_s": 0}}))
        os.environ["TRADEOFF_CALIBRATION"] = str(zero)
        done = run_cli("roofline", "smollm2-135m", "--device", "cpu")
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "each must be a number above 0" in done.stderr, done.stderr
    finally:
        os.environ["TRADEOFF_CALIBRATION"] = str(tmp_path / "none.json")


def test_a_config_without_a_shape_field_is_one_line_naming_it(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"model_type": "llama"}')
    done = run_cli("roofline", str(config))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"model config '{config}' lacks a usable field: 'hidden_size'" in done.stderr
