"""Model shapes from Hugging Face `config.json` files, and the small configs tradeoff ships for
real architectures (numbers only, no weights): profile speed, energy and memory of a model's
shape with random weights, and compute its roofline, with nothing downloaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tradeoff.engines.base import ModelShape
from tradeoff.errors import UserError
from tradeoff.paths import user_path

CONFIG_DIR = Path(__file__).with_name("configs")
# A weight type by each name transformers and tradeoff give it, and its bytes per value.
DTYPE_NAMES = {"float32": "fp32", "fp32": "fp32", "bfloat16": "bf16", "bf16": "bf16"}
DTYPE_NAMES |= {"float16": "fp16", "fp16": "fp16"}
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# The model types sized here (decoder-only, dense, unquantized, each layer's MLP the gated
# three matrices gate, up and down), with transformers' default for tie_word_embeddings where a
# config leaves it out: the Gemma family ties its LM head to the embedding, the others do not.
# A config without a model_type is read as one of these.
GATED_DENSE = {"llama": False, "mistral": False, "qwen2": False, "qwen3": False}
GATED_DENSE |= {"gemma": True, "gemma2": True, "gemma3_text": True}
SUPPORTED = (
    f"sized here: decoder-only, dense, unquantized, gated-MLP configs ({', '.join(GATED_DENSE)}, "
    "or one without a model_type)"
)
# Fields only a mixture of experts has: its MLP is many, a few of which run for each token.
MOE_FIELDS = ["num_local_experts", "num_experts", "n_routed_experts", "n_shared_experts"]
MOE_FIELDS += ["moe_intermediate_size", "num_experts_per_tok"]
# transformers' head_dim where a config leaves it out: Qwen3Config declares `head_dim: int =
# 128` and GemmaConfig, Gemma2Config and Gemma3TextConfig `head_dim: int = 256`, whatever
# hidden_size / num_attention_heads is; the others take that quotient.
HEAD_DIM_DEFAULT = {"qwen3": 128, "gemma": 256, "gemma2": 256, "gemma3_text": 256}
# transformers' sliding_window where a config leaves it out (null is none): MistralConfig,
# Gemma2Config, Gemma3TextConfig, Qwen2Config and Qwen3Config declare `sliding_window = 4096`;
# GemmaConfig and LlamaConfig have none.
WINDOW_DEFAULT = {"mistral": 4096, "gemma2": 4096, "gemma3_text": 4096}
WINDOW_DEFAULT |= {"qwen2": 4096, "qwen3": 4096}
# Qwen's sliding window applies only where use_sliding_window says so (transformers' default:
# off); other types use a sliding_window wherever a config gives one.
WINDOW_OFF_BY_DEFAULT = {"qwen2", "qwen3"}
MAX_SIZE = 10**9  # beyond any model's dimension or context; the arithmetic stays in range
# Rope scalings that stretch the positions a model was trained for by their factor, as vLLM
# derives a model's context; llama3's is in max_position_embeddings already, and so is Gemma
# 3's (its linear factor 8 is how its config reaches 131,072).
STRETCHING_ROPE = {"yarn", "dynamic", "linear"}


def shipped_configs() -> list[str]:
    """Names of the bundled architecture configs ("llama-3.1-8b", ...)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_hf_config(ref: str) -> dict[str, Any]:
    """A shipped config by name, a config.json file, or a directory holding one."""
    path = CONFIG_DIR / f"{ref}.json" if ref in shipped_configs() else user_path(ref)
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
    its parameter count and weight bytes in `dtype` (default: the config's dtype, else bf16);
    `name`: where the config came from, for the one-line error a config not sized here gets."""
    which = f"model config '{name}'" if name else "model config"
    kind = _checked_kind(config, which)

    def optional(field: str) -> int | None:
        return _size(config, field, which)

    def size(field: str) -> int:
        value = optional(field)
        if value is None:
            raise UserError(
                f"{which} lacks a usable field: '{field}' (a decoder-only transformer's "
                "config.json has hidden_size, num_hidden_layers, num_attention_heads, "
                "intermediate_size and vocab_size)"
            )
        return value

    d, layers, heads = size("hidden_size"), size("num_hidden_layers"), size("num_attention_heads")
    d_ff, vocab = size("intermediate_size"), size("vocab_size")
    kv_heads = optional("num_key_value_heads") or heads
    head_dim = optional("head_dim") or HEAD_DIM_DEFAULT.get(kind or "") or d // heads
    if head_dim < 1:
        raise UserError(
            f"{which}: hidden_size {d} is less than num_attention_heads {heads}; give head_dim"
        )
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    # Qwen2 always has q/k/v biases; the others say so with attention_bias, on o too.
    biased = bool(config.get("attention_bias"))
    q_k_v_bias = q_dim + 2 * kv_dim if kind == "qwen2" or biased else 0
    attention = d * q_dim + 2 * d * kv_dim + q_dim * d + q_k_v_bias + (d if biased else 0)
    mlp = 3 * d * d_ff + (2 * d_ff + d if config.get("mlp_bias") else 0)
    per_layer = attention + mlp + _norm_params(kind, d, head_dim)
    tied = config.get("tie_word_embeddings")
    tied = GATED_DENSE.get(kind or "", False) if tied is None else bool(tied)
    embedding = vocab * d
    n_params = embedding + layers * per_layer + d + (0 if tied else vocab * d)
    # transformers >= 4.56 writes `dtype` where older ones wrote `torch_dtype`
    given = config.get("dtype") or config.get("torch_dtype") or "bfloat16"
    stored = (str(given) if dtype is None else dtype).removeprefix("torch.")
    if stored not in DTYPE_NAMES:
        raise UserError(f"dtype '{stored}' is not known; known: {', '.join(DTYPE_NAMES)}")
    value_bytes = DTYPE_BYTES[DTYPE_NAMES[stored]]
    window_on = _slides(config, kind, layers, which)
    window = WINDOW_DEFAULT.get(kind or "")
    window = optional("sliding_window") if "sliding_window" in config else window
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
        weight_bytes=n_params * value_bytes,
        kv_bytes_per_value=value_bytes,
        context=_context(config, kind, optional("max_position_embeddings"), which),
        dtype=DTYPE_NAMES[stored],
        embedding_bytes=0 if tied else embedding * value_bytes,
        sliding_window=window if window_on else None,
    )


def _checked_kind(config: dict[str, Any], which: str) -> str | None:
    """The config's model_type, where it is one sized here: a mixture of experts, a quantized
    checkpoint or another MLP (a plain two-matrix one: GPT-2, Phi, Falcon ...) was read as a
    dense gated model and sized wrong (Mixtral as 7.2 B parameters), so each is one line."""
    kind = config.get("model_type")
    if kind is not None and kind not in GATED_DENSE:
        raise UserError(f"{which}: model_type '{kind}' is not {SUPPORTED}")
    for field in MOE_FIELDS:
        if config.get(field):
            raise UserError(
                f"{which}: {field} = {config[field]} makes it a mixture of experts, not {SUPPORTED}"
            )
    if config.get("quantization_config"):
        raise UserError(f"{which}: its quantization_config makes it quantized, not {SUPPORTED}")
    return kind


def _context(
    config: dict[str, Any], kind: str | None, trained: int | None, which: str
) -> int | None:
    """The positions the model serves: `trained` (max_position_embeddings), or where a rope
    scaling stretches them, its factor times its original_max_position_embeddings (YaRN gives
    them), else times `trained`. transformers 5 writes rope_parameters for rope_scaling."""
    rope = config.get("rope_scaling") or config.get("rope_parameters")
    if not isinstance(rope, dict) or kind == "gemma3_text":
        return trained
    if rope.get("rope_type", rope.get("type")) not in STRETCHING_ROPE:
        return trained
    factor = rope.get("factor")
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not 1 <= factor <= 1e3:
        raise UserError(
            f"{which}: its rope scaling's factor is {json.dumps(factor)}; it must be a number "
            "from 1 to 1,000"
        )
    original = _size(rope, "original_max_position_embeddings", which) or trained
    return None if original is None else int(original * factor)


def _slides(config: dict[str, Any], kind: str | None, layers: int, which: str) -> bool:
    """Whether some layer attends within a sliding window, as transformers decides: by the
    config's `layer_types` where it lists them; Qwen's only with use_sliding_window, and then
    on the layers from max_window_layers on (default 28: none, in a model of 28 layers or
    fewer, which the torch engine runs on full attention too); the others wherever a window
    is given."""
    types = config.get("layer_types")
    if isinstance(types, list) and types:
        return "sliding_attention" in types
    if kind not in WINDOW_OFF_BY_DEFAULT:
        return bool(config.get("use_sliding_window", True))
    if not config.get("use_sliding_window"):
        return False
    first = config.get("max_window_layers", 28)
    if isinstance(first, bool) or not isinstance(first, int) or first < 0:
        raise UserError(
            f"{which}: max_window_layers is {json.dumps(first)}; it must be an integer from 0"
        )
    return first < layers


def _size(config: dict[str, Any], field: str, which: str) -> int | None:
    """`config[field]`, an integer from 1 to MAX_SIZE (a whole float such as 4096.0 too), None
    where absent or null. A 0 divided by zero, a string raised TypeError, a 1e300 overflowed
    and a negative size gave negative costs."""
    value = config.get(field)
    if value is None:
        return None
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or not 1 <= value <= MAX_SIZE:
        raise UserError(
            f"{which}: {field} is {json.dumps(value)}; it must be an integer from 1 to {MAX_SIZE:,}"
        )
    return int(value)


def _norm_params(kind: str | None, d: int, head_dim: int) -> int:
    """Weights of a layer's norms: two (before attention and before the MLP), four in Gemma 2
    and 3 (after each too), and query and key norms in Qwen3 and Gemma 3."""
    norms = (4 if kind in ("gemma2", "gemma3_text") else 2) * d
    return norms + (2 * head_dim if kind in ("qwen3", "gemma3_text") else 0)
