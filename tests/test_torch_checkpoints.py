"""The `torch` engine's reading of a model directory: what it cannot compute as transformers
does (a sliding window past its width, a tensor it would drop) and a directory it cannot read
(a file corrupt or missing, weights in another format) are one-line errors before any request;
what it can (Llama's biases), it computes as transformers does."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from test_torch_engine import LLAMA, QWEN, config_file, hf_checkpoint

from tradeoff.engines.hf_config import shape_from_hf_config
from tradeoff.engines.torch_engine import DecodeStep, TorchEngine, parse_torch_ref
from tradeoff.engines.torch_model import Arch
from tradeoff.errors import UserError
from tradeoff.types import Request

MISTRAL = {**LLAMA, "architectures": ["MistralForCausalLM"], "model_type": "mistral",
           "rope_scaling": None, "sliding_window": 32}  # fmt: skip


def refused(ref: str) -> str:
    """The one-line message opening `ref` gives (the CLI prints it and exits 2)."""
    with pytest.raises(UserError) as caught:
        TorchEngine(ref)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def logits(engine: TorchEngine, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        step = engine.decode_step(ids.shape[0])
        return engine.model(ids, torch.arange(ids.shape[1]), step.cache, last_only=False)


def test_a_ctx_beyond_the_sliding_window_is_refused(tmp_path):
    """The engine attends over its whole context: Mistral-7B-v0.1 (a 4096 window) at ctx=8192
    was accepted and computed another model past the window. Within it, the logits are
    transformers'."""
    hf = hf_checkpoint(tmp_path / "mistral", MISTRAL)
    message = refused(f"torch:{tmp_path / 'mistral'}?ctx=64")
    assert "beyond the model's sliding window of 32 positions" in message
    assert "give at most ctx=32" in message
    engine = TorchEngine(f"torch:{tmp_path / 'mistral'}")
    assert engine.n_ctx == 32  # the default context kept within the window
    ids = torch.randint(0, 320, (1, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(logits(engine, ids), hf(ids).logits, atol=1e-5, rtol=1e-4)
    # Qwen2 slides only with use_sliding_window, on the layers from max_window_layers on
    qwen = {**QWEN, "sliding_window": 32}
    for extra, slides in [
        ({}, False),
        ({"use_sliding_window": True, "max_window_layers": 2}, False),
        ({"use_sliding_window": True, "max_window_layers": 1}, True),
    ]:
        ref = f"torch:{config_file(tmp_path, {**qwen, **extra}, 'qwen')}?random_weights=1&ctx=64"
        if slides:
            assert "sliding window of 32 positions" in refused(ref)
        else:
            assert TorchEngine(ref).n_ctx == 64
    mistral_7b = {**MISTRAL, "sliding_window": 4096, "max_position_embeddings": 32768}
    big = f"torch:{config_file(tmp_path, mistral_7b, 'm7b')}?random_weights=1&ctx=8192"
    assert "give at most ctx=4096" in refused(big)


def test_llama_biases_match_transformers_and_unused_tensors_are_refused(tmp_path):
    """attention_bias (o_proj's too) and mlp_bias were dropped silently: logits 0.5-0.8 off.
    A checkpoint tensor the model leaves unused (its config does not describe it) is refused."""
    biased = {**LLAMA, "attention_bias": True, "mlp_bias": True}
    hf = hf_checkpoint(tmp_path / "biased", biased)
    engine = TorchEngine(f"torch:{tmp_path / 'biased'}?ctx=64")
    ids = torch.randint(0, 320, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(logits(engine, ids), hf(ids).logits, atol=1e-5, rtol=1e-4)
    params = sum(p.numel() for p in engine.model.parameters())
    assert shape_from_hf_config(biased, "fp32").n_params == params  # the roofline's count
    (tmp_path / "biased" / "config.json").write_text(json.dumps({**biased, "mlp_bias": False}))
    message = refused(f"torch:{tmp_path / 'biased'}?ctx=64")
    assert "the checkpoint has 6 tensors this model does not use" in message
    assert "layers.0.mlp.down_proj.bias" in message


def test_a_checkpoint_without_tokenizer_json_is_refused(tmp_path):
    """Its text was read as bytes, silently: another workload than its weights were made for."""
    hf_checkpoint(tmp_path / "ckpt", LLAMA, tokenizer=False)
    message = refused(f"torch:{tmp_path / 'ckpt'}")
    assert f"{tmp_path / 'ckpt'} has no tokenizer.json" in message
    (tmp_path / "ckpt" / "tokenizer.model").write_bytes(b"\x00")
    assert "tokenizer.model is sentencepiece's: convert it" in refused(f"torch:{tmp_path / 'ckpt'}")
    # random weights read a config's text as bytes, as before
    assert TorchEngine(f"torch:{tmp_path / 'ckpt'}?random_weights=1").codec.chat is False


def test_corrupt_or_missing_files_are_one_line_errors(tmp_path):
    """Each gave an 84-line traceback."""
    good = tmp_path / "good"
    hf_checkpoint(good, LLAMA)

    def variant(name: str) -> Path:
        return Path(shutil.copytree(good, tmp_path / name))

    weights = variant("truncated") / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    sharded = variant("sharded")
    index = {"weight_map": {"embed_tokens.weight": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    badindex = variant("badindex")
    (badindex / "model.safetensors.index.json").write_text("{not json")
    (variant("badtok") / "tokenizer.json").write_text('{"model": 3}')
    (variant("badcfg") / "tokenizer_config.json").write_text("{,")
    template = {"chat_template": "{% for m in messages %}{{ m["}
    (variant("badjinja") / "tokenizer_config.json").write_text(json.dumps(template))
    cases = {
        "truncated": f"{weights}: not a readable safetensors file",
        "sharded": f"{sharded / 'model-00002-of-00002.safetensors'}: missing",
        "badindex": "model.safetensors.index.json: not an index of safetensors shards",
        "badtok": "tokenizer.json: not a tokenizer the tokenizers library reads",
        "badcfg": "tokenizer_config.json: not valid JSON",
        "badjinja": "its chat template is not valid Jinja (line 1:",
    }
    for name, expected in cases.items():
        assert expected in refused(f"torch:{tmp_path / name}"), name


def test_other_directories_say_what_is_read(tmp_path, monkeypatch):
    """A .bin checkpoint, or a directory named like a shipped config, was told 'no weights at
    DIR; add ?random_weights=1'."""
    binary = tmp_path / "bin"
    binary.mkdir()
    (binary / "config.json").write_text(json.dumps(LLAMA))
    (binary / "pytorch_model.bin").write_bytes(b"\x00")
    message = refused(f"torch:{binary}")
    assert "reads only safetensors" in message and "safe_serialization=True" in message
    monkeypatch.chdir(tmp_path)
    shadowed = tmp_path / "qwen2.5-0.5b"
    hf_checkpoint(shadowed, QWEN)
    message = refused("torch:qwen2.5-0.5b")
    assert "names the shipped config" in message and "write ./qwen2.5-0.5b" in message
    assert TorchEngine("torch:./qwen2.5-0.5b?ctx=64").arch.dim == QWEN["hidden_size"]


def test_out_of_range_seeds_and_malformed_rope_and_norm_settings_are_one_line_errors(tmp_path):
    """A seed of 2**64 overflowed in the generator; each rope setting here was a KeyError,
    ValueError or AttributeError traceback (the last in `tradeoff roofline` too)."""
    cfg = config_file(tmp_path, LLAMA, "llama")
    with pytest.raises(UserError, match=r"seed = 18446744073709551616 is out of range \(0 to"):
        parse_torch_ref(f"torch:{cfg}?random_weights=1&seed={2**64}")
    assert parse_torch_ref(f"torch:{cfg}?random_weights=1&seed={2**64 - 1}").seed == 2**64 - 1
    llama3 = {"rope_type": "llama3", "factor": 8.0}
    bad = {
        "needs original_max_position_embeddings": {"rope_scaling": llama3},
        "needs factor as a positive number": {"rope_scaling": {**llama3, "factor": "big"}},
        'rope_scaling is "yes"; it must be an object': {"rope_scaling": "yes"},
        'rope_parameters is "abc"; it must be an object': {"rope_parameters": "abc"},
        # NaN logits: greedy answers of token 0 stored as successes, sampled ones a traceback
        "rope_theta is 0; it must be a positive number": {"rope_theta": 0},
        "rope_theta is -1; it must be a positive number": {"rope_theta": -1.0},
        "rms_norm_eps is -1; it must be a positive number": {"rms_norm_eps": -1},
        "rms_norm_eps is 0; it must be a positive number": {"rms_norm_eps": 0},
    }
    for expected, change in bad.items():
        with pytest.raises(UserError, match=expected):
            Arch.from_hf({**LLAMA, **change})


def test_the_memory_check_counts_memory_the_kernel_can_reclaim(tmp_path, monkeypatch):
    """Free pages alone (page cache counted as used) refused models that fit: MemAvailable
    is what a new allocation can have."""
    real = os.sysconf

    def no_free_pages(name: str) -> int:
        return 1 if name == "SC_AVPHYS_PAGES" else real(name)

    monkeypatch.setattr(os, "sysconf", no_free_pages)
    assert TorchEngine(f"torch:{config_file(tmp_path, LLAMA, 'llama')}?random_weights=1")


def test_an_eager_cpu_engine_warms_one_prefill_length(tmp_path, monkeypatch):
    """Each new length costs a GPU kernel selection, and compile a recompile; the CPU eager
    nothing: warming every multiple of 64 up to ctx took 46 s at ctx=1024 for nothing."""
    lengths: list[int] = []
    prefill = DecodeStep.prefill

    def counted(self: DecodeStep, ids: torch.Tensor, start: int) -> torch.Tensor:
        lengths.append(ids.shape[1])
        return prefill(self, ids, start)

    monkeypatch.setattr(DecodeStep, "prefill", counted)
    engine = TorchEngine(f"torch:{config_file(tmp_path, LLAMA, 'llama')}?random_weights=1")
    engine.warm([1])
    assert engine.n_ctx == 512
    assert [t for t in lengths if t >= 64] == [64]  # the others: the warm requests' prompts


def test_compile_on_a_cpu_without_a_cpp_compiler_is_one_line(tmp_path, monkeypatch):
    """Inductor emits C++ on the CPU: with no compiler the warm-up ended in its traceback. (In
    a process of its own: a failed compile stays failed for the rest of the process.)"""
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    monkeypatch.setenv("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")  # else a cached kernel serves
    model = f"torch:{config_file(tmp_path, LLAMA, 'llama')}?random_weights=1&compile=1&ctx=64"
    out = run_cli(
        "profile", "-m", model, "-t", "arith", "--limit", "1", "--out", str(tmp_path / "r")
    )
    assert out.returncode == 2, out.stderr
    last = out.stderr.strip().splitlines()[-1]  # after "preparing" and inductor's own warning
    assert "Traceback" not in out.stderr and last.startswith("error: "), out.stderr
    assert "compile=1 on the CPU needs a working C++ compiler" in last and "compile=0" in last


def test_random_weights_keep_the_directorys_tokenizer_and_chat_template(tmp_path):
    """With random_weights=1 a checkpoint's text was read as bytes and its chat template
    dropped: another workload (other prompt tokens, completion mode) than with its weights."""
    from test_answer_text import _trained_tokenizer

    directory = tmp_path / "ckpt"
    directory.mkdir()
    codec = _trained_tokenizer(directory, "bytelevel")
    template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    (directory / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    assert codec.tokenizer.get_vocab_size() < 512  # ids the model draws past it decode as ""
    hf_checkpoint(directory, {**LLAMA, "vocab_size": 512})
    engine = TorchEngine(f"torch:{directory}?random_weights=1&ctx=128")
    assert engine.info.prompt_mode == "chat" and engine.codec.chat
    request = Request(messages=[{"role": "user", "content": "the cat"}], max_tokens=4)
    words = engine.codec.encode(request)
    assert words == codec.encode_text("<user>the cat<assistant>") and len(words) < 24
    answers = engine.generate_batch([request] * 2)
    assert all(a.error is None and a.output_tokens == 4 for a in answers)
    pieces = engine.codec.pieces()
    assert engine.codec.decode([450]) == b"" and pieces.add(450) == b""
