"""The `torch` engine on the CPU, through the code paths it takes on a GPU (less the CUDA graph):
2-layer configs, checked against transformers' own model on the same weights, then run by the
real runner into a real SQLite store with every strategy that needs it (batched vote, cascade's
per-token log-probabilities, switch between two models)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
import transformers
from conftest import run_cli

from tradeoff.config import parse_spec, with_absolute_paths
from tradeoff.engines.hf_config import shape_from_hf_config
from tradeoff.engines.torch_engine import TorchEngine
from tradeoff.runner import profile
from tradeoff.store import Store
from tradeoff.strategies.calls import CPU_WORK
from tradeoff.types import Request

LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # grouped-query attention
    "vocab_size": 320,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {  # Llama-3's frequency scaling, on a short original context
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    },
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
}
QWEN = {  # q/k/v biases and tied embeddings
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 96,
    "intermediate_size": 192,
    "num_hidden_layers": 2,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "vocab_size": 300,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
}


def byte_tokenizer(directory: Path) -> None:
    """A `tokenizer.json` whose token k is byte k (GPT-2's byte-level alphabet, no merges): a
    checkpoint's own tokenizer, with the ids the byte codec would give (ids from 256 decode as
    nothing)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    shown = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    shown += range(ord("®"), ord("ÿ") + 1)
    hidden = [b for b in range(256) if b not in shown]
    chars = {b: chr(b) for b in shown} | {b: chr(256 + i) for i, b in enumerate(hidden)}
    tokenizer = Tokenizer(models.BPE(vocab={c: b for b, c in chars.items()}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.save(str(directory / "tokenizer.json"))


def hf_checkpoint(directory: Path, config: dict, seed: int = 0, tokenizer: bool = True):
    """A Hugging Face checkpoint with random (non-trivial) weights, saved by transformers, with
    a byte tokenizer where `tokenizer` and the directory has none."""
    directory.mkdir(parents=True, exist_ok=True)
    if tokenizer and not (directory / "tokenizer.json").is_file():
        byte_tokenizer(directory)
    (directory / "config.json").write_text(json.dumps(config))
    hf_config = transformers.AutoConfig.from_pretrained(directory)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(hf_config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if "norm" in name else 0.0, 0.2 if "norm" in name else 0.08)
    model.save_pretrained(directory)
    return model


def config_file(tmp_path: Path, config: dict, name: str) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("config", [LLAMA, QWEN], ids=["llama-gqa-rope-scaling", "qwen2-bias-tied"])
def test_logits_match_transformers_on_the_same_checkpoint(tmp_path, config):
    hf = hf_checkpoint(tmp_path / "ckpt", config)
    engine = TorchEngine(f"torch:{tmp_path / 'ckpt'}?ctx=64")
    ids = torch.randint(
        0, config["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(1)
    )
    step = engine.decode_step(2)
    with torch.no_grad():
        expected = hf(ids).logits
        got = engine.model(ids, torch.arange(12), step.cache, last_only=False)
        assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)
        # one decode step from the static cache equals a full forward over 13 tokens
        nxt = torch.tensor([7, 11])
        expected = hf(torch.cat([ids, nxt[:, None]], 1)).logits[:, -1]
        assert torch.allclose(step.step(nxt, 12), expected, atol=1e-5, rtol=1e-4)
    # the analytic shape counts exactly the parameters the model holds
    params = sum(p.numel() for p in engine.model.parameters())
    assert shape_from_hf_config(config, "fp32").n_params == params
    assert engine.info.shape is not None and engine.info.shape.weight_bytes == 4 * params


def test_greedy_generation_matches_transformers_generate(tmp_path):
    hf = hf_checkpoint(tmp_path / "ckpt", LLAMA, seed=3)
    engine = TorchEngine(f"torch:{tmp_path / 'ckpt'}")
    prompt = "12+7="  # the byte tokenizer: one token a byte
    gen = engine.generate(Request(prompt=prompt, max_tokens=20, temperature=0.0))
    ids = torch.tensor([list(prompt.encode())])
    out = hf.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0)
    expected = out[0, ids.shape[1] :].tolist()
    assert gen.output_tokens == 20 and gen.input_tokens == len(prompt)
    assert gen.text.encode("utf-8", errors="surrogateescape") != b""  # text is produced
    assert gen.text == engine.codec.decode(expected).decode("utf-8")
    assert len(gen.token_times) == 20 and gen.t_first is not None and gen.t_first <= gen.t_end


def test_a_temperature_too_small_to_divide_by_is_greedy(tmp_path):
    """5e-324 (valid: in [0, 2]) is 0 as float32: the top log-probability divided by it was
    0/0, and sampling failed with "probability tensor contains either inf, nan"."""
    engine = TorchEngine(f"torch:{config_file(tmp_path, LLAMA, 'llama')}?random_weights=1")
    greedy = engine.generate(Request(prompt="hello", max_tokens=8, temperature=0.0))
    for temperature in (5e-324, 1e-40):
        tiny = engine.generate(Request(prompt="hello", max_tokens=8, temperature=temperature))
        assert (tiny.error, tiny.text) == (None, greedy.text), temperature


def test_batched_rows_match_single_requests_and_sample_apart(tmp_path):
    engine = TorchEngine(f"torch:{config_file(tmp_path, LLAMA, 'llama')}?random_weights=1")
    single = engine.generate(Request(prompt="hello", max_tokens=12, temperature=0.0))
    rows = engine.generate_batch([Request(prompt="hello", max_tokens=12, temperature=0.0)] * 3)
    assert [r.text for r in rows] == [single.text] * 3
    hot = engine.generate_batch(
        [Request(prompt="hello", max_tokens=12, temperature=5.0, seed=1)] * 4
    )
    assert len({r.text for r in hot}) > 1  # rows draw their own tokens
    again = engine.generate_batch(
        [Request(prompt="hello", max_tokens=12, temperature=5.0, seed=1)] * 4
    )
    assert [r.text for r in again] == [r.text for r in hot]  # seeded
    with_stats = engine.generate(Request(prompt="hi", max_tokens=5, temperature=0.0, logprobs=True))
    assert len(with_stats.token_logprobs) == 5 and len(with_stats.token_entropies) == 5
    vocab = LLAMA["vocab_size"]
    assert all(0 <= e <= math.log(vocab) + 1e-6 for e in with_stats.token_entropies)
    assert all(lp <= 0 for lp in with_stats.token_logprobs)
    too_long = engine.generate(Request(prompt="x" * 30, max_tokens=2040))
    # at the model's 512 positions already: "raise it with ?ctx=N" was advice ctx refuses
    assert too_long.error and "context of 512 positions (the most the model" in too_long.error
    short = TorchEngine(f"torch:{config_file(tmp_path, LLAMA, 'llama')}?random_weights=1&ctx=64")
    raisable = short.generate(Request(prompt="x" * 30, max_tokens=60))
    assert raisable.error and "(raise it with ?ctx=N, up to 512)" in raisable.error


def spec(tmp_path: Path, configs: list[dict], **extra) -> dict:
    small = config_file(tmp_path, LLAMA, "small")
    large = config_file(tmp_path, {**LLAMA, "hidden_size": 128, "num_attention_heads": 8}, "large")
    return {
        "models": {
            "small": f"torch:{small}?random_weights=1",
            "large": f"torch:{large}?random_weights=1&seed=1",
        },
        "tasks": ["arith"],
        "limit": 3,
        "sampling": {"max_tokens": 16},
        "configs": configs,
        **extra,
    }


def run_profile(tmp_path: Path, body: dict, name: str = "run"):
    result = profile(parse_spec(body), tmp_path / name, notify=lambda m: None)
    assert result.status == "finished" and result.errors == 0
    store = Store.open(tmp_path / name)
    try:
        df, run = store.records(), store.run()
    finally:
        store.close()
    df["extra"] = df["extra"].map(json.loads)
    df["calls"] = df["calls"].map(json.loads)
    return df, run


STRATEGIES = [
    {"model": "small"},
    {"strategy": "vote", "model": "small", "n": 3, "temperature": 1.5},
    {"strategy": "cascade", "models": ["small", "large"], "signal": "entropy", "threshold": 0.0},
    {"strategy": "switch", "models": ["small", "large"], "threshold": 5.5, "threshold_low": 5.0},
]


def test_every_strategy_runs_on_the_torch_engine(tmp_path):
    hourly = {"small": {"per_hour": 3.6}, "large": {"per_hour": 3.6}}
    df, _ = run_profile(tmp_path, spec(tmp_path, STRATEGIES, prices=hourly))
    by = {name.split("-")[0]: g for name, g in df.groupby("config")}
    assert set(by) == {"small", "vote", "cascade", "switch"}
    for _, r in df.iterrows():
        assert r["error"] is None and r["flops"] > 0
        for c in r["calls"]:
            assert c["bytes"] > 0 and c["input_tokens"] > 0
    vote = by["vote"]
    for _, r in vote.iterrows():  # one batch of three draws: three calls, one shared prompt
        assert len(r["calls"]) == 3 and r["extra"]["samples_drawn"] == 3
        assert len({c["input_tokens"] for c in r["calls"]}) == 1
        # the hardware's hour for the batch's time once (each of its rows lasts it whole: it
        # was charged three times)
        assert {c["batch"] for c in r["calls"]} == {3}
        batch_s = sum(c["e2e_s"] for c in r["calls"]) / 3  # each row's, its end its own
        assert r["cost_usd"] == pytest.approx(3.6 * batch_s / 3600)
    cascade = by["cascade"]
    assert cascade["extra"].map(lambda e: e["escalated"] and e["uncertainty"] > 0).all()
    switch = by["switch"]
    tokens = switch["extra"].map(lambda e: (e["tokens_small"], e["tokens_large"]))
    assert sum(s + lg for s, lg in tokens) == switch["output_tokens"].sum()


def test_switch_extremes_are_the_single_models(tmp_path):
    df, _ = run_profile(
        tmp_path,
        spec(
            tmp_path,
            [
                {"model": "small"},
                {"model": "large"},
                {"strategy": "switch", "models": ["small", "large"], "threshold": [0.0, 1e9]},
            ],
        ),
    )
    by = {name: list(g.sort_values("item_id")["output"]) for name, g in df.groupby("config")}
    assert by["switch-small-large-t0"] == by["large"]
    assert by["switch-small-large-t1e+09"] == by["small"]


class SteppedCounter:
    """An energy counter that moves in 20 ms steps at a fixed power, as NVML's moves in 100 ms
    ones: the stand-in for the GPU's counter (NVML is not on this machine); the splitting of its
    steps among requests, the thing under test, is tradeoff's own code."""

    source = "nvml"
    stepped = True
    power = 250.0

    def __init__(self, step_s: float = 0.02):
        self.origin = time.perf_counter()
        self.step_s = step_s

    def read_j(self) -> float:
        return self.power * self.step_s * int((time.perf_counter() - self.origin) / self.step_s)

    def power_w(self) -> float:
        return self.power

    def memory_used_bytes(self) -> int:
        return 1 << 30


def test_stepped_counter_is_split_among_requests_and_models(tmp_path, monkeypatch):
    counter = SteppedCounter()
    monkeypatch.setattr("tradeoff.session.find_energy_meter", lambda **kw: (counter, ""))
    monkeypatch.setattr(TorchEngine, "gpu_uuid", "GPU-stand-in")  # the counter's GPU
    monkeypatch.setattr("tradeoff.session.IDLE_S", 0.2)
    df, run = run_profile(tmp_path, spec(tmp_path, STRATEGIES))
    [meter] = run["meters"]
    assert meter["source"] == "nvml" and meter["idle_w"] == pytest.approx(counter.power, rel=0.2)
    assert df["energy_source"].eq("nvml").all() and df["energy_j"].gt(0).all()
    # every joule the counter moved while sampling is a request's or idle
    total = df["energy_j"].sum() + meter["idle_j"]
    assert total == pytest.approx(meter["counter_total_j"], rel=1e-9)
    for _, r in df.iterrows():
        for c in r["calls"]:
            assert c["mean_power_w"] == counter.power and c["device_memory_bytes"] == 1 << 30
    shown = run_cli("report", str(tmp_path / "run"))
    assert shown.returncode == 0 and "nvml idle baseline:" in shown.stdout, shown.stdout
    switch = df[df["config"].str.startswith("switch")]
    for _, r in switch.iterrows():  # energy by model, each share of the record's total
        by_model = {c["model"]: c["energy_j"] for c in r["calls"]}
        assert sum(by_model.values()) == pytest.approx(r["energy_j"])


def test_a_record_s_latency_ends_with_its_answer_not_the_counter_s_next_step(tmp_path, monkeypatch):
    """With a stepped counter each call waited for the counter's next step before it returned,
    so every record's e2e (and a vote's or cascade's TTFT) held up to a whole step after its
    answer was done; its energy now settles after the answer's time is taken."""
    counter = SteppedCounter(step_s=0.5)
    monkeypatch.setattr("tradeoff.session.find_energy_meter", lambda **kw: (counter, ""))
    monkeypatch.setattr(TorchEngine, "gpu_uuid", "GPU-stand-in")  # the counter's GPU
    monkeypatch.setattr("tradeoff.session.IDLE_S", 0.1)
    df, run = run_profile(tmp_path, spec(tmp_path, STRATEGIES))
    for _, r in df.iterrows():
        engine_s = sum(c["e2e_s"] for c in r["calls"])
        assert r["e2e_s"] - engine_s < 0.05, (r["config"], r["e2e_s"], engine_s)
        assert r["ttft_s"] <= r["e2e_s"]
        assert r["energy_source"] == "nvml" and r["energy_j"] >= 0
    [meter] = run["meters"]
    total = df["energy_j"].sum() + meter["idle_j"]
    assert total == pytest.approx(meter["counter_total_j"], rel=1e-9)


def test_a_closed_loop_sends_its_next_request_without_waiting_for_the_counter(
    tmp_path, monkeypatch
):
    """`tradeoff load` at a closed loop of 1 with a stepped counter (NVML's) sent each request
    only once the last one's energy had settled, up to a counter step later: requests/s low by
    up to a step a request. The next is sent when the answer is done; the energy is still the
    request's share."""
    from tradeoff.load.options import LoadOptions
    from tradeoff.load.run import load

    counter = SteppedCounter(step_s=0.5)
    monkeypatch.setattr("tradeoff.session.find_energy_meter", lambda **kw: (counter, ""))
    monkeypatch.setattr(TorchEngine, "gpu_uuid", "GPU-stand-in")  # the counter's GPU
    monkeypatch.setattr("tradeoff.session.IDLE_S", 0.1)
    options = LoadOptions(profile="synchronous", max_requests=4, max_seconds=None, scrape="off")
    result = load(parse_spec(spec(tmp_path, [{"model": "small"}])), options, tmp_path / "load")
    assert result.status == "finished"
    store = Store.open(tmp_path / "load")
    try:
        df, run = store.records().sort_values("sent_s"), store.run()
    finally:
        store.close()
    assert len(df) == 4 and df["energy_source"].eq("nvml").all()
    ends = (df["sent_s"] + df["e2e_s"]).to_numpy()
    waits = df["sent_s"].to_numpy()[1:] - ends[:-1]  # from one answer to the next send
    assert waits.max() < 0.1, waits
    [meter] = run["meters"]
    assert df["energy_j"].sum() + meter["idle_j"] == pytest.approx(meter["counter_total_j"])


def test_a_record_that_cannot_be_stored_while_its_energy_settles_stops_the_point(
    tmp_path, monkeypatch
):
    """A record stored after its energy settles (the test above) that fails to be written (the
    disk full) stops the sends at once, as before: the failure waited for the point's end, a
    closed loop sending for all of --max-seconds with every record lost."""
    from tradeoff.errors import RunFailed, UserError
    from tradeoff.load.options import LoadOptions
    from tradeoff.load.run import load

    counter = SteppedCounter(step_s=0.05)
    monkeypatch.setattr("tradeoff.session.find_energy_meter", lambda **kw: (counter, ""))
    monkeypatch.setattr(TorchEngine, "gpu_uuid", "GPU-stand-in")  # the counter's GPU
    monkeypatch.setattr("tradeoff.session.IDLE_S", 0.1)
    tried: list[int] = []

    def disk_full(store: Store, records: list) -> None:  # the disk, not the driver, stands in
        tried.append(len(records))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Store, "write_records", disk_full)
    options = LoadOptions(profile="synchronous", max_seconds=30.0, scrape="off")
    with pytest.raises((OSError, RunFailed, UserError)) as failed:
        load(parse_spec(spec(tmp_path, [{"model": "small"}])), options, tmp_path / "load")
    assert "No space left on device" in str(failed.value)
    # the sends stop once the first store has failed, about a counter step (50 ms) after its
    # answer: a few requests, not all of --max-seconds (1,793 before)
    assert len(tried) <= 10, tried


def test_a_library_call_leaves_the_caller_s_process_as_it_was(tmp_path):
    """Called from a program: `profile` unfroze the caller's own frozen objects (gc.freeze, for
    memory shared across a fork), `serve` left the thread switch interval at 1 ms, and a call
    from a running event loop (a notebook's) failed in asyncio's words, warning of a coroutine
    never awaited. The heap and interval are put back; the loop is refused in one line."""
    import asyncio
    import gc
    import sys
    import warnings

    from tradeoff.errors import UserError
    from tradeoff.eventloop import steady

    body = spec(tmp_path, [{"model": "small"}])
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        run_profile(tmp_path, body)
        assert gc.get_freeze_count() >= frozen > 0
    finally:
        gc.unfreeze()
    interval = sys.getswitchinterval()
    with steady(switch_s=interval / 5):  # as serve's
        assert sys.getswitchinterval() == pytest.approx(interval / 5)
    assert sys.getswitchinterval() == interval and gc.get_freeze_count() == 0

    async def in_a_notebook() -> None:
        profile(parse_spec(body), tmp_path / "nb", notify=lambda m: None)

    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        with pytest.raises(UserError, match="call it in a thread, e.g. await asyncio.to_thread"):
            asyncio.run(in_a_notebook())
        gc.collect()
    assert not [w for w in warned if "never awaited" in str(w.message)], warned


def test_a_torch_path_is_stored_absolute_and_resumes_the_same_model_from_elsewhere(
    tmp_path, monkeypatch
):
    """`torch:tiny/config.json` was stored as typed: a stopped run resumed from another directory
    failed (not found), or ran the model that directory held at that path under the same
    configuration, its records mixed with the first model's."""
    import signal

    for where, size in [("proj", 64), ("other", 128)]:
        (tmp_path / where / "tiny").mkdir(parents=True)
        wider = {**LLAMA, "hidden_size": size, "num_attention_heads": size // 16}
        config_file(tmp_path / where / "tiny", wider, "config")
    monkeypatch.chdir(tmp_path / "proj")
    body = {
        "models": {"m": "torch:tiny/config.json?random_weights=1"},
        "tasks": ["arith"],
        "limit": 4,
        "sampling": {"max_tokens": 8},
    }

    def stop_after_one(done, total, skipped, errors):
        if done == 1:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C

    first = profile(parse_spec(body), "run", on_progress=stop_after_one, notify=lambda m: None)
    assert first.status == "stopped"
    monkeypatch.chdir(tmp_path / "other")
    resumed = profile(parse_spec(body), resume=tmp_path / "proj" / "run", notify=lambda m: None)
    assert resumed.status == "finished" and resumed.errors == 0
    store = Store.open(tmp_path / "proj" / "run")
    try:
        df, run = store.records(), store.run()
    finally:
        store.close()
    ref = f"torch:{(tmp_path / 'proj' / 'tiny' / 'config.json').resolve()}?random_weights=1"
    assert run["spec"]["models"] == {"m": ref}
    per_token = df["flops"] / (df["input_tokens"] + df["output_tokens"])
    assert len(df) == 4 and per_token.max() < 1.5 * per_token.min()  # one model's, not two
    # a shipped config is named, not a path, whatever the directory holds
    (tmp_path / "other" / "llama-3.1-8b").mkdir()
    assert with_absolute_paths(
        parse_spec({**body, "models": {"m": "torch:llama-3.1-8b"}})
    ).models == {"m": "torch:llama-3.1-8b"}


def test_a_model_on_the_cpu_is_not_charged_the_counter_of_the_gpu_beside_it(tmp_path, monkeypatch):
    """In a session with a model on a GPU, the llama.cpp model on the CPU was charged the GPU's
    counter (its idle power over the CPU model's time, labelled nvml); its energy is missing,
    with the reason, as a router's CPU work already is."""
    counter = SteppedCounter()
    monkeypatch.setattr("tradeoff.session.find_energy_meter", lambda **kw: (counter, ""))
    monkeypatch.setattr("tradeoff.session.IDLE_S", 0.1)
    # stands for a torch engine on CUDA (no GPU on this machine): it reports its GPU's UUID
    monkeypatch.setattr(TorchEngine, "gpu_uuid", "GPU-stand-in")
    body = spec(tmp_path, [{"model": "cpu"}, {"model": "small"}])
    body["models"]["cpu"] = "smollm2-135m?threads=1"
    df, run = run_profile(tmp_path, body)
    cpu, gpu = df[df["config"] == "cpu"], df[df["config"] == "small"]
    assert len(cpu) == len(gpu) == 3
    assert cpu["energy_j"].isna().all() and cpu["energy_source"].isna().all()
    assert cpu["energy_missing"].eq(CPU_WORK.format(source="nvml")).all()
    for calls in cpu["calls"]:
        assert calls[0]["mean_power_w"] is None and calls[0]["device_memory_bytes"] is None
    assert gpu["energy_source"].eq("nvml").all() and gpu["energy_j"].gt(0).all()
    [meter] = run["meters"]  # the counter's steps in the CPU model's calls are the GPU's idle
    total = gpu["energy_j"].sum() + meter["idle_j"]
    assert total == pytest.approx(meter["counter_total_j"], rel=1e-9)


def test_bad_torch_references_are_one_line_errors(tmp_path):
    cfg = config_file(tmp_path, LLAMA, "llama")
    gpt2 = config_file(tmp_path, {**LLAMA, "model_type": "gpt2"}, "gpt2")
    huge = config_file(tmp_path, {**LLAMA, "hidden_size": 65536, "vocab_size": 10**7}, "huge")
    bad = {  # shapes the model cannot be built in: refused as the config is read
        "nohid": {k: v for k, v in LLAMA.items() if k != "hidden_size"},
        "heads3": {**LLAMA, "num_attention_heads": 3, "num_key_value_heads": 3},
        "kv3": {**LLAMA, "num_key_value_heads": 3},
        "v100": {**LLAMA, "vocab_size": 100},
        "untyped": {k: v for k, v in LLAMA.items() if k != "model_type"},
        "long": {**LLAMA, "max_position_embeddings": 10**9},
    }
    nohid, heads3, kv3, v100, untyped, long = (
        config_file(tmp_path, c, name) for name, c in bad.items()
    )
    cases = {
        f"torch:{cfg}": "add ?random_weights=1",
        f"torch:{cfg}?random_weights=1&colour=red": "unknown option 'colour'",
        f"torch:{cfg}?random_weights=1&dtype=int3": "dtype 'int3' is not known",
        f"torch:{cfg}?random_weights=1&graph=1": "graph=1 needs a CUDA device",
        f"torch:{cfg}?random_weights=1&pdl=1": "pdl=1 needs a CUDA GPU of compute capability",
        f"torch:{cfg}?random_weights=1&pdl=yes": "pdl must be 0 or 1, not 'yes'",
        f"torch:{cfg}?random_weights=1&pdl=1&compile=1": "pdl=1 is for a step that is not",
        f"torch:{cfg}?seed=3": "seed sets the random weights; give it with random_weights=1",
        f"torch:{gpt2}?random_weights=1": "model type 'gpt2' is not supported",
        "torch:no-such-config?random_weights=1": "shipped: llama-3.1-8b",
        f"torch:{huge}?random_weights=1": "GB for its weights; this host has",
        f"torch:{long}?random_weights=1&ctx=100000000": "for a KV cache of ctx=100000000",
        # past the architecture's positions: it was accepted, then warmed every length to it
        f"torch:{cfg}?random_weights=1&ctx=1024": "ctx = 1024 is beyond the 512 positions",
        f"torch:{nohid}?random_weights=1": "lacks a usable field: 'hidden_size'",
        f"torch:{heads3}?random_weights=1": "not a multiple of num_attention_heads 3",
        f"torch:{kv3}?random_weights=1": "not a multiple of num_key_value_heads 3",
        f"torch:{v100}?random_weights=1": "vocab_size 100 is below 256",
        f"torch:{untyped}?random_weights=1": "config.json has no model_type",
    }
    for ref, message in cases.items():
        body = {"models": {"m": ref}, "tasks": ["arith"], "limit": 1, "configs": [{"model": "m"}]}
        path = tmp_path / "spec.json"
        path.write_text(json.dumps(body))
        out = run_cli("profile", str(path), "--out", str(tmp_path / "never"))
        assert out.returncode == 2, (ref, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr, (ref, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        # which of a spec's models it is: by its reference, or its config's name
        named = f"model '{ref}'" in out.stderr or "'no-such-config' not found" in out.stderr
        assert named, out.stderr
        assert not (tmp_path / "never").exists()


def test_compiled_steps_give_the_eager_answers(tmp_path):
    """compile=1 (torch.compile of the decode step, and of prefill with dynamic shapes): the
    path the GPU measurements take, less the CUDA graph; on this CPU inductor emits C++."""
    cfg = config_file(tmp_path, LLAMA, "llama")
    eager = TorchEngine(f"torch:{cfg}?random_weights=1")
    compiled = TorchEngine(f"torch:{cfg}?random_weights=1&compile=1")
    for prompt in ("12+7=", "a longer prompt, of another length"):
        request = Request(prompt=prompt, max_tokens=10, temperature=0.0)
        expected = eager.generate_batch([request] * 2)
        got = compiled.generate_batch([request] * 2)
        assert [g.text for g in got] == [e.text for e in expected]
        assert all(g.error is None and g.output_tokens == 10 for g in got)


def test_overlapped_steps_give_the_same_answers_and_count_the_step_a_stop_wastes(tmp_path):
    """overlap=1 (the default on CUDA) queues each next step before reading the token: the same
    tokens, statistics and stops as reading first, and a stop's wasted step counted as a pass."""
    cfg = config_file(tmp_path, LLAMA, "llama")
    plain = TorchEngine(f"torch:{cfg}?random_weights=1&overlap=0")
    ahead = TorchEngine(f"torch:{cfg}?random_weights=1&overlap=1")
    assert ahead.overlap and not plain.overlap
    free = plain.generate(Request(prompt="12+7=", max_tokens=12, temperature=0.0))
    stop = free.text[4:6]  # ends the answer early: its text is known from the first run
    requests = [
        Request(prompt="12+7=", max_tokens=12, temperature=0.0, logprobs=True),
        Request(prompt="12+7=", max_tokens=12, temperature=0.0, stop=[stop]),
    ]
    for request in requests:
        seen: tuple[list, list] = ([], [])
        want = plain.generate(request, on_pass=lambda *p, into=seen[0]: into.append(p))
        got = ahead.generate(request, on_pass=lambda *p, into=seen[1]: into.append(p))
        passes = {"plain": seen[0], "ahead": seen[1]}
        assert (got.text, got.output_tokens, got.finish_reason) == (
            want.text,
            want.output_tokens,
            want.finish_reason,
        )
        assert got.token_logprobs == pytest.approx(want.token_logprobs)
        assert got.token_entropies == pytest.approx(want.token_entropies)
        assert got.token_times == sorted(got.token_times) and got.t_end >= got.token_times[-1]
        last = passes["plain"][-1][0] + passes["plain"][-1][1]  # the position after it
        wasted = [(last, 1, 1)] if want.finish_reason == "stop" else []
        assert passes["ahead"] == passes["plain"] + wasted
    assert want.finish_reason == "stop" and want.output_tokens < 12  # the stop case stopped
    hot = [Request(prompt="hi", max_tokens=8, temperature=3.0, seed=2)] * 3
    assert [g.text for g in ahead.generate_batch(hot)] == [
        g.text for g in plain.generate_batch(hot)
    ]


def test_serve_answers_before_the_energy_settles_and_stores_it_after(tmp_path, monkeypatch):
    """`tradeoff serve` with a stepped counter: the answer does not wait for the counter's next
    step (its header says the energy is settling); the record gets the request's share."""
    import os
    import signal
    import socket
    import threading

    import httpx
    from conftest import free_port

    from tradeoff.serve.server import ServeOptions, serve, served_configs

    counter = SteppedCounter()
    monkeypatch.setattr("tradeoff.session.find_energy_meter", lambda **kw: (counter, ""))
    monkeypatch.setattr(TorchEngine, "gpu_uuid", "GPU-stand-in")  # the counter's GPU
    monkeypatch.setattr("tradeoff.session.IDLE_S", 0.1)
    body = spec(tmp_path, [{"model": "small"}])
    run_spec = parse_spec(body)
    port = free_port()
    answers: list[httpx.Response] = []

    def client() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        try:
            for i in range(4):
                answers.append(
                    httpx.post(
                        f"http://127.0.0.1:{port}/v1/completions",
                        json={"model": "small", "prompt": f"{i}+1=", "max_tokens": 12},
                        timeout=30,
                    )
                )
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=client)
    thread.start()
    serve(
        served_configs(run_spec, [], None, None),
        run_spec,
        tmp_path / "served",
        source={"spec": body},
        options=ServeOptions(port=port),
        notify=lambda m: None,
    )
    thread.join()
    assert [a.status_code for a in answers] == [200] * 4
    assert all("settling" in a.headers["x-tradeoff-energy-missing"] for a in answers)
    store = Store.open(tmp_path / "served")
    try:
        df, run = store.records(), store.run()
    finally:
        store.close()
    assert len(df) == 4 and df["energy_source"].eq("nvml").all() and df["energy_j"].gt(0).all()
    [meter] = run["meters"]
    assert df["energy_j"].sum() + meter["idle_j"] == pytest.approx(meter["counter_total_j"])
    for calls in df["calls"].map(json.loads):
        assert calls[0]["energy_j"] > 0 and calls[0]["mean_power_w"] == counter.power


def test_serve_refuses_a_prompt_beyond_the_ctx_in_the_models_own_tokens(tmp_path):
    """The torch engine declares its context (`ctx=N`) and counts a prompt as it would feed it
    (here one token a byte): `tradeoff serve` answers 400 before the model runs."""
    import httpx
    from conftest import serve_process

    cfg = config_file(tmp_path, LLAMA, "llama")
    spec_file = tmp_path / "serve.yaml"
    spec_file.write_text(f'models:\n  tiny: "torch:{cfg}?random_weights=1&ctx=64"\n')
    with serve_process("--spec", str(spec_file), "--out", str(tmp_path / "run")) as served:
        url = f"{served.url}/completions"
        fits = httpx.post(url, json={"model": "tiny", "prompt": "x" * 30, "max_tokens": 34})
        assert fits.status_code == 200, fits.text
        assert fits.json()["usage"] == {
            "prompt_tokens": 30, "completion_tokens": 34, "total_tokens": 64,
        }  # fmt: skip
        over = httpx.post(url, json={"model": "tiny", "prompt": "x" * 30, "max_tokens": 35})
        assert over.status_code == 400, over.text
        error = over.json()["error"]
        assert error["code"] == "context_length_exceeded"
        assert error["message"].startswith(
            "This model's maximum context length is 64 tokens. However, you requested 65 tokens "
            "(30 in the prompt, 35 in the completion)."
        )


def test_an_answer_is_decoded_after_its_prompt(tmp_path):
    """A sentencepiece-style tokenizer (Mistral's) marks a leading space on the token: decoded
    alone, the answer's first token lost it ("...France isParis."); after the prompt, it is the
    text the prompt and answer decode to, less the prompt's."""
    from test_answer_text import _trained_tokenizer

    from tradeoff.engines.torch_engine import _Row

    (tmp_path / "ckpt").mkdir()
    codec = _trained_tokenizer(tmp_path / "ckpt", "metaspace")
    hf_checkpoint(tmp_path / "ckpt", {**LLAMA, "vocab_size": codec.tokenizer.get_vocab_size()})
    engine = TorchEngine(f"torch:{tmp_path / 'ckpt'}?ctx=128")
    request = Request(prompt="The answer is", max_tokens=16)
    prompt = engine.codec.encode(request)
    answer = engine.codec.encode_text(" 42. Next we count")
    row = _Row(request, engine.codec, prompt, None)
    for token in answer:
        row.accept(token, 0.0, None, engine)
    whole = engine.codec.decode(prompt + answer)
    expected = whole[len(engine.codec.decode(prompt)) :].decode()
    assert expected.startswith(" 42") and row.generation(len(prompt), 0.0, 1.0).text == expected


MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] }}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)


def test_a_conversation_the_chat_template_refuses_is_400_not_502(tmp_path):
    """Mistral's template raises on a system turn: `raise_exception` was undefined, and the
    server answered 502 upstream_error, stored a failed record and counted an upstream error;
    it is the request's to mend, as transformers and vLLM say."""
    import httpx
    import yaml
    from conftest import serve_process
    from test_answer_text import _trained_tokenizer

    (tmp_path / "ckpt").mkdir()
    codec = _trained_tokenizer(tmp_path / "ckpt", "bytelevel")
    hf_checkpoint(tmp_path / "ckpt", {**LLAMA, "vocab_size": codec.tokenizer.get_vocab_size()})
    settings = {"chat_template": MISTRAL_TEMPLATE, "bos_token": "", "eos_token": "<unk>"}
    (tmp_path / "ckpt" / "tokenizer_config.json").write_text(json.dumps(settings))
    spec = {
        "models": {"m": f"torch:{tmp_path / 'ckpt'}?ctx=128"},
        "configs": [{"strategy": "single", "model": "m", "name": "m"}],
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    with serve_process("--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "run")) as s:
        chat = f"{s.url}/chat/completions"
        user = {"role": "user", "content": "Hi"}
        refused = httpx.post(
            chat, json={"model": "m", "max_tokens": 2, "messages": [
                {"role": "system", "content": "Be brief"}, user]}, timeout=60,
        )  # fmt: skip
        answered = httpx.post(chat, json={"model": "m", "max_tokens": 2, "messages": [user]})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "messages", error
    assert "Only user and assistant roles are supported!" in error["message"], error
    assert answered.status_code == 200, answered.text


def test_a_switch_whose_prompt_and_max_tokens_overflow_a_model_fails_as_single_does(tmp_path):
    """A model whose context holds the prompt but not max_tokens more: the answer was cut where
    the context filled and stored as a success ("length"), where `single` fails the request. It
    fails as `single`'s does, with the engine's message, before any model generates."""
    from tradeoff.tasks import build_request, load_task

    body = spec(
        tmp_path,
        [{"model": "small"}, {"strategy": "switch", "models": ["small", "large"], "threshold": 99}],
    )
    task = load_task("arith")
    small = TorchEngine(body["models"]["small"])
    request = build_request(task, task.items[0], "completion", max_tokens=16, temperature=0, seed=0)
    body["models"]["small"] += f"&ctx={len(small.prompt_tokens(request)) + 4}"
    result = profile(parse_spec({**body, "limit": 1}), tmp_path / "run", notify=lambda m: None)
    assert result.status == "finished" and result.errors == 2
    store = Store.open(tmp_path / "run")
    try:
        by = {r["config"]: r for r in store.records().to_dict("records")}
    finally:
        store.close()
    single, switch = by["small"], by["switch-small-large-t99"]
    assert "exceeds the context" in single["error"] and "?ctx=N" in single["error"]
    assert switch["error"] == single["error"] and switch["output"] == ""
    assert [c["model"] for c in json.loads(switch["calls"])] == ["small"]


@pytest.mark.slow
def test_a_ctrl_c_while_a_model_warms_up_stops_there_and_leaves_no_run(tmp_path):
    """The warm-up runs inline, holding the loop: a Ctrl-C was heard once it ended (minutes on a
    GPU with compile), and the store was opened meanwhile, leaving a run of nothing to resume.
    (With compile here too: an eager CPU engine warms one prefill length, over in a moment.)"""
    import signal
    import subprocess
    import sys

    big = {**LLAMA, "hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 8,
           "num_attention_heads": 16, "num_key_value_heads": 4, "max_position_embeddings": 2048,
           "rope_scaling": None}  # fmt: skip
    model = f"torch:{config_file(tmp_path, big, 'big')}?random_weights=1&ctx=2048&compile=1"
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradeoff", "profile", "-m", model, "-t", "arith", "--limit", "1",
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("preparing"):
            time.sleep(1.0)
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.communicate(timeout=300)[0]
    assert proc.returncode == 130, lines + [rest]
    assert "interrupted before the run began; nothing was written" in rest, rest
    assert " ready in " not in rest and not out.exists(), rest  # stopped inside the warm-up
