"""Model shapes from Hugging Face `config.json` files, and the small configs tradeoff ships for
real architectures (numbers only, no weights): profile speed, energy and memory of a model's
shape with random weights, and compute its roofline, with nothing downloaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tradeoff.engines.base import ModelShape
from tradeoff.errors import UserError

CONFIG_DIR = Path(__file__).with_name("configs")
DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}


def shipped_configs() -> list[str]:
    """Names of the bundled architecture configs ("llama-3.1-8b", ...)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_hf_config(ref: str) -> dict[str, Any]:
    """A shipped config by name, a config.json file, or a directory holding one."""
    path = CONFIG_DIR / f"{ref}.json" if ref in shipped_configs() else Path(ref).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise UserError(
            f"model config '{ref}' not found; shipped: {', '.join(shipped_configs())}, "
            "or give a config.json (or a directory holding one)"
        )
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} does not hold a JSON object")
    return data


def shape_from_hf_config(
    config: dict[str, Any], dtype: str | None = None, name: str = ""
) -> ModelShape:
    """The shape of a decoder-only transformer config (Llama, Qwen2, Mistral and alike), with
    its parameter count and weight bytes in `dtype` (default: the config's torch_dtype);
    `name`: where the config came from, for the error a config without a field gets."""
    try:
        d = int(config["hidden_size"])
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or d // heads)
        d_ff = int(config["intermediate_size"])
        vocab = int(config["vocab_size"])
    except (KeyError, TypeError, ValueError) as exc:
        which = f"model config '{name}'" if name else "model config"
        raise UserError(
            f"{which} lacks a usable field: {exc} (a decoder-only transformer's config.json "
            "has hidden_size, num_hidden_layers, num_attention_heads, intermediate_size and "
            "vocab_size)"
        ) from None
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    # Qwen2 always has q/k/v biases; others say so with attention_bias.
    biased = config.get("model_type") == "qwen2" or bool(config.get("attention_bias"))
    attention = d * q_dim + 2 * d * kv_dim + q_dim * d + (q_dim + 2 * kv_dim if biased else 0)
    per_layer = attention + 3 * d * d_ff + 2 * d  # gated MLP, two norms
    embedding = vocab * d
    head = 0 if config.get("tie_word_embeddings") else vocab * d
    n_params = embedding + layers * per_layer + d + head
    name = (dtype or str(config.get("torch_dtype") or "bfloat16")).removeprefix("torch.")
    if name not in DTYPE_BYTES:
        raise UserError(f"dtype '{name}' is not known; known: {', '.join(DTYPE_BYTES)}")
    size = DTYPE_BYTES[name]
    return ModelShape(
        n_params=n_params,
        n_layers=layers,
        d_model=d,
        n_heads=heads,
        n_kv_heads=kv_heads,
        head_dim=head_dim,
        d_ff=d_ff,
        vocab=vocab,
        gated_ffn=True,
        weight_bytes=n_params * size,
        kv_bytes_per_value=size,
        context=int(config["max_position_embeddings"])
        if "max_position_embeddings" in config
        else None,
    )
