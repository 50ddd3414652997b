"""The decoder-only transformer the `torch` engine runs (Llama, Qwen2 and Mistral families),
written for fast decoding in the gpt-fast manner: fused q/k/v and gate/up projections, a static
KV cache the caller owns, and a forward pass whose shapes stay fixed from one decode step to the
next, so that one step can be compiled and captured in a CUDA graph.

Weights come from a Hugging Face directory (safetensors, names as in `LlamaForCausalLM`) or are
random (normal, std 0.02; norms 1): random weights give real speed, energy and memory with
meaningless text. The numerics follow transformers' implementation (RMSNorm in float32, rotary
embedding on the half-split convention, Llama-3 frequency scaling); tests/test_torch_engine.py
checks the logits against transformers' own model on the same weights.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tradeoff.engines import decode_attention, decode_linear
from tradeoff.engines.rms_norm import fused as fused_rms_norm
from tradeoff.errors import UserError

SUPPORTED = ("llama", "qwen2", "mistral")
DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}


@dataclass(frozen=True)
class Arch:
    """The numbers of an architecture, read from a Hugging Face config."""

    vocab: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn: int
    norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    qkv_bias: bool
    tied: bool
    max_positions: int
    o_bias: bool = False  # Llama's attention_bias puts one on o_proj too
    mlp_bias: bool = False  # Llama's mlp_bias: on gate, up and down
    # Positions a layer attends back over (Mistral's sliding_window, Qwen2's where
    # use_sliding_window is on), None where every layer sees the whole context: the engine
    # attends over the whole context, so its context must not exceed the window.
    window: int | None = None

    @classmethod
    def of_model(cls, ref: str, config: dict[str, Any]) -> Arch:
        """`from_hf`, a config it refuses named by the model's reference (a spec may hold
        several)."""
        try:
            return cls.from_hf(config)
        except UserError as exc:
            raise UserError(f"model '{ref}': {exc}") from None

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> Arch:
        kind = config.get("model_type")
        if kind is None:
            raise UserError(
                "the model's config.json has no model_type; the torch engine reads "
                f"{', '.join(SUPPORTED)}"
            )
        if kind not in SUPPORTED:
            raise UserError(
                f"model type '{kind}' is not supported by the torch engine; "
                f"supported: {', '.join(SUPPORTED)}"
            )
        if config.get("hidden_act", "silu") != "silu":
            raise UserError(f"activation '{config['hidden_act']}' is not supported (only silu)")
        # transformers 5 writes `rope_parameters` (theta and scaling together) where older
        # configs have `rope_theta` and `rope_scaling`.
        rope = config.get("rope_parameters") or {}
        for field, value in (
            ("rope_parameters", rope),
            ("rope_scaling", config.get("rope_scaling")),
        ):
            if value is not None and not isinstance(value, dict):
                raise UserError(
                    f"model config: {field} is {json.dumps(value)}; it must be an object such "
                    'as {"rope_type": "llama3", "factor": 8.0, ...} (or null)'
                )
        theta = config.get("rope_theta", rope.get("rope_theta", 10000.0))
        scaling = config.get("rope_scaling") or (
            rope if rope.get("rope_type", "default") != "default" else None
        )
        # Biases as transformers builds each family: Qwen2 has them on q/k/v only, Mistral none.
        llama = kind == "llama"
        attention_bias = llama and bool(config.get("attention_bias"))
        try:
            heads = int(config["num_attention_heads"])
            dim = int(config["hidden_size"])
            arch = cls(
                vocab=int(config["vocab_size"]),
                dim=dim,
                n_layers=int(config["num_hidden_layers"]),
                n_heads=heads,
                n_kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or (dim // heads if heads > 0 else 0)),
                ffn=int(config["intermediate_size"]),
                norm_eps=float(config.get("rms_norm_eps", 1e-6)),
                rope_theta=float(theta),
                rope_scaling=scaling,
                qkv_bias=kind == "qwen2" or attention_bias,
                tied=bool(config.get("tie_word_embeddings", False)),
                max_positions=int(config.get("max_position_embeddings", 4096)),
                o_bias=attention_bias,
                mlp_bias=llama and bool(config.get("mlp_bias")),
                window=_window(kind, config),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"model config lacks a usable field: {exc}") from None
        arch.check(explicit_head_dim="head_dim" in config and config["head_dim"] is not None)
        inverse_frequencies(arch)  # a malformed rope scaling is refused here, as the config is read
        return arch

    def check(self, explicit_head_dim: bool) -> None:
        """A shape the model can be built in, else one line saying what does not fit."""
        sizes = {
            "vocab_size": self.vocab,
            "hidden_size": self.dim,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "intermediate_size": self.ffn,
        }
        small = [name for name, value in sizes.items() if value < 1]
        if small:
            raise UserError(f"model config: {small[0]} must be at least 1")
        # Either at 0 or below makes every logit NaN.
        for name, value in (("rope_theta", self.rope_theta), ("rms_norm_eps", self.norm_eps)):
            if not (math.isfinite(value) and value > 0):
                raise UserError(f"model config: {name} is {value:g}; it must be a positive number")
        if not explicit_head_dim and self.dim % self.n_heads:
            raise UserError(
                f"model config: hidden_size {self.dim} is not a multiple of "
                f"num_attention_heads {self.n_heads} (or give head_dim)"
            )
        if self.head_dim < 2 or self.head_dim % 2:
            raise UserError(f"model config: head size {self.head_dim} must be even (rotary)")
        if self.n_heads % self.n_kv_heads:
            raise UserError(
                f"model config: num_attention_heads {self.n_heads} is not a multiple of "
                f"num_key_value_heads {self.n_kv_heads}"
            )


def _window(kind: str, config: dict[str, Any]) -> int | None:
    """The sliding window as transformers applies it: Mistral's wherever given (4096 where the
    field is absent, null for none); Qwen2's only with use_sliding_window, and then only on the
    layers from max_window_layers on (none slide where that is all of them)."""
    if kind == "mistral":
        window = config.get("sliding_window", 4096)
    elif kind == "qwen2" and config.get("use_sliding_window"):
        window = config.get("sliding_window", 4096)
        if int(config.get("max_window_layers", 28)) >= int(config["num_hidden_layers"]):
            window = None
    else:
        return None
    if window is None:
        return None
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise UserError(
            f"model config: sliding_window is {json.dumps(window)}; it must be a positive "
            "integer (or null for none)"
        )
    return window


def inverse_frequencies(arch: Arch) -> Tensor:
    """Rotary inverse frequencies (float64), with Llama-3's long-context scaling when asked."""
    hd = arch.head_dim
    inv = 1.0 / (arch.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    scaling = arch.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return inv
    if kind != "llama3":
        raise UserError(f"rope scaling '{kind}' is not supported (default and llama3 are)")

    def number(key: str, default: float | None = None) -> float:
        value = scaling.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise UserError(
                f"model config: llama3 rope scaling needs {key} as a positive number, not "
                f"{json.dumps(value)}"
            )
        return float(value)

    factor = number("factor")
    low, high = number("low_freq_factor", 1.0), number("high_freq_factor", 4.0)
    if high <= low:
        raise UserError(
            f"model config: llama3 rope scaling's high_freq_factor {high} must exceed its "
            f"low_freq_factor {low}"
        )
    old = number("original_max_position_embeddings")
    wavelen = 2 * math.pi / inv
    # Long wavelengths are slowed by `factor`, short ones kept, those between blended.
    scaled = torch.where(wavelen > old / low, inv / factor, inv)
    blend = (old / wavelen - low) / (high - low)
    blended = (1 - blend) * scaled / factor + blend * scaled
    between = (wavelen >= old / high) & (wavelen <= old / low)
    return torch.where(between, blended, scaled)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm as transformers computes it: in float32, rounded to x's dtype, then scaled; in
    one kernel on CUDA (`rms_norm.fused`), else op by op."""
    y = fused_rms_norm(x, weight, eps)
    return y if y is not None else rms_norm_ops(x, weight, eps)


def rms_norm_ops(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """`rms_norm` op by op."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def linear(
    x: Tensor,
    layer: nn.Linear,
    norm: RMSNorm | None = None,
    gated: bool = False,
    residual: Tensor | None = None,
) -> Tensor:
    """`residual + layer(f(x))`, where f is `norm`, or SiLU(first half) * second half when
    `gated`: through `decode_linear`'s fused kernel for a decode step on CUDA, else op by op."""
    w, b = layer.weight, layer.bias
    g, eps = (norm.weight, norm.eps) if norm is not None else (None, 0.0)
    y = decode_linear.fused(x, w, b, residual, g, eps, gated)
    if y is not None:
        return y
    return plain_linear(x, w, b, residual, g, eps, gated)


def plain_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    residual: Tensor | None,
    norm: Tensor | None,
    eps: float,
    gated: bool,
) -> Tensor:
    """`linear` op by op: RMSNorm with weight `norm` or SiLU·up, the product, the residual."""
    if norm is not None:
        x = rms_norm(x, norm, eps)
    if gated:
        gate, up = x.chunk(2, dim=-1)
        x = F.silu(gate) * up
    y = F.linear(x, weight, bias)
    return y if residual is None else residual + y


class Positions(NamedTuple):
    """What every layer of one forward pass shares: the positions, the rotary's cos and sin (their
    rows at pos, or the whole tables where a decode step attends through
    `decode_attention.fused`, which reads the row itself) and the causal mask (None there)."""

    pos: Tensor
    cos: Tensor
    sin: Tensor
    mask: Tensor | None


class Attention(nn.Module):
    def __init__(self, arch: Arch):
        super().__init__()
        self.arch = arch
        q, kv = arch.n_heads * arch.head_dim, arch.n_kv_heads * arch.head_dim
        self.wqkv = nn.Linear(arch.dim, q + 2 * kv, bias=arch.qkv_bias)
        self.wo = nn.Linear(q, arch.dim, bias=arch.o_bias)
        self.split = (q, kv, kv)

    def forward(self, x: Tensor, norm: RMSNorm, at: Positions, k: Tensor, v: Tensor) -> Tensor:
        """x + attention(norm(x)), writing this step's keys and values into k and v."""
        a = self.arch
        b, t, _ = x.shape
        pos, cos, sin, mask = at
        qkv = linear(x, self.wqkv, norm=norm)
        if mask is None:  # rotary, cache writes and attention in the kernel
            y = decode_attention.fused(qkv, cos, sin, k, v, pos, a.n_heads)
            return linear(y, self.wo, residual=x)
        q, kn, vn = qkv.split(self.split, dim=-1)
        q = q.view(b, t, a.n_heads, a.head_dim).transpose(1, 2)
        kn = kn.view(b, t, a.n_kv_heads, a.head_dim).transpose(1, 2)
        vn = vn.view(b, t, a.n_kv_heads, a.head_dim).transpose(1, 2)
        q, kn = _rotate(q, cos, sin), _rotate(kn, cos, sin)
        k.index_copy_(2, pos, kn)
        v.index_copy_(2, pos, vn)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        y = y.transpose(1, 2).reshape(b, t, a.n_heads * a.head_dim)
        return linear(y, self.wo, residual=x)


class FeedForward(nn.Module):
    def __init__(self, arch: Arch):
        super().__init__()
        self.w13 = nn.Linear(arch.dim, 2 * arch.ffn, bias=arch.mlp_bias)  # gate and up, fused
        self.w2 = nn.Linear(arch.ffn, arch.dim, bias=arch.mlp_bias)

    def forward(self, x: Tensor, norm: RMSNorm) -> Tensor:
        """x + w2(SiLU(gate) * up), gate and up from w13(norm(x))."""
        return linear(linear(x, self.w13, norm=norm), self.w2, gated=True, residual=x)


class Block(nn.Module):
    def __init__(self, arch: Arch):
        super().__init__()
        self.attention_norm = RMSNorm(arch.dim, arch.norm_eps)
        self.attention = Attention(arch)
        self.ffn_norm = RMSNorm(arch.dim, arch.norm_eps)
        self.feed_forward = FeedForward(arch)

    def forward(self, x: Tensor, at: Positions, k: Tensor, v: Tensor) -> Tensor:
        h = self.attention(x, self.attention_norm, at, k, v)
        return self.feed_forward(h, self.ffn_norm)


class Transformer(nn.Module):
    def __init__(self, arch: Arch):
        super().__init__()
        self.arch = arch
        self.embed = nn.Embedding(arch.vocab, arch.dim)
        self.layers = nn.ModuleList(Block(arch) for _ in range(arch.n_layers))
        self.norm = RMSNorm(arch.dim, arch.norm_eps)
        self.output = nn.Linear(arch.dim, arch.vocab, bias=False)
        if arch.tied:
            self.output.weight = self.embed.weight

    def setup_rope(self, positions: int, device: torch.device, dtype: torch.dtype) -> None:
        """Cos and sin tables for `positions` positions, computed in float32 as transformers
        does, then cast to the model's dtype."""
        inv = inverse_frequencies(self.arch).float().to(device)
        angles = torch.outer(torch.arange(positions, device=device, dtype=torch.float32), inv)
        angles = torch.cat((angles, angles), dim=-1)
        self.cos = angles.cos().to(dtype)
        self.sin = angles.sin().to(dtype)

    def new_cache(self, batch: int, length: int) -> list[tuple[Tensor, Tensor]]:
        """A static KV cache: per layer, keys and values of shape (batch, kv heads, length, hd)."""
        a = self.arch
        w = self.embed.weight
        shape = (batch, a.n_kv_heads, length, a.head_dim)
        return [
            (
                torch.zeros(shape, dtype=w.dtype, device=w.device),
                torch.zeros(shape, dtype=w.dtype, device=w.device),
            )
            for _ in range(a.n_layers)
        ]

    def forward(
        self,
        tokens: Tensor,
        pos: Tensor,
        cache: list[tuple[Tensor, Tensor]],
        last_only: bool = True,
        take: Tensor | None = None,
    ) -> Tensor:
        """Logits for `tokens` (batch, T) at positions `pos` (T,), writing their keys
        and values into `cache`: of the last position only unless `last_only` is False, or of
        the positions `take` (indices into T, a tensor so that compiled code needs no
        recompile). Float32 for several tokens a row, the model's dtype for one (a decode step:
        a cast of the Qwen2.5-0.5B shape's 151,936 logits took 3 µs of its step on an H200)."""
        # A decode step on CUDA attends through one kernel that reads the rotary tables' row
        # and the positions itself; elsewhere the rows are gathered and the mask built here.
        at = Positions(pos, self.cos, self.sin, None)
        if not decode_attention.takes(tokens, self.arch.head_dim):
            length = cache[0][0].shape[2]
            mask = pos[:, None] >= torch.arange(length, device=pos.device)[None, :]
            at = Positions(pos, self.cos[pos], self.sin[pos], mask)
        x = self.embed(tokens)
        for layer, (k, v) in zip(self.layers, cache):
            x = layer(x, at, k, v)
        if take is not None:
            x = x.index_select(1, take)
        elif last_only:
            x = x[:, -1:]
        if tokens.shape[1] > 1:  # prefill: cuBLAS, as tuning cannot run under its compile
            return self.output(self.norm(x)).float()
        # A step: the norm in the product, the logits left in the model's dtype (the greedy
        # kernel reads them so; sampling casts them)
        return linear(x, self.output, norm=self.norm)


def build(arch: Arch, device: torch.device, dtype: torch.dtype) -> Transformer:
    """The module with uninitialised weights allocated on `device` (nothing on the host)."""
    with torch.device("meta"):
        model = Transformer(arch)
    model = model.to(dtype).to_empty(device=device)  # allocated once, in the target dtype
    if arch.tied:
        model.output.weight = model.embed.weight
    return model


@torch.no_grad()
def randomize(model: Transformer, seed: int = 0) -> None:
    """Random weights: normal with std 0.02, biases 0, norms 1 (as transformers initialises)."""
    gen = torch.Generator(device=model.embed.weight.device).manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.fill_(1.0)
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.normal_(0.0, 0.02, generator=gen)


def _weight_files(directory: Path) -> list[Path]:
    """The checkpoint's safetensors files, each one there, else one line naming what is wrong
    (an unreadable index or a shard it names that is missing gave a traceback)."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(
                f"{index}: not an index of safetensors shards (a JSON object whose weight_map "
                f"maps tensor names to files): {type(exc).__name__}: {exc}"
            ) from None
        missing = [n for n in names if not (directory / str(n)).is_file()]
        if missing:
            raise UserError(
                f"{directory / str(missing[0])}: missing, though {index.name} names it "
                f"({len(missing)} of its {len(names)} shards are missing)"
            )
        return [directory / n for n in names]
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    raise UserError(
        f"{directory} holds no model.safetensors (or index); give random_weights=1 to profile "
        "the shape with random weights"
    )


@torch.no_grad()
def load_weights(model: Transformer, directory: Path) -> None:
    """Copy a Hugging Face checkpoint's tensors into `model`, fusing q/k/v and gate/up; a
    checkpoint tensor left over is refused (biases the model lacked were dropped silently, and
    the logits were another model's)."""
    from safetensors import SafetensorError, safe_open

    device = model.embed.weight.device
    tensors: dict[str, Tensor] = {}
    for path in _weight_files(directory):
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                    tensors[key.removeprefix("model.")] = f.get_tensor(key)
        except (SafetensorError, OSError) as exc:  # truncated or not safetensors at all
            raise UserError(f"{path}: not a readable safetensors file: {exc}") from None

    def take(key: str) -> Tensor:
        if key not in tensors:
            raise UserError(f"{directory}: checkpoint has no tensor '{key}'")
        return tensors.pop(key)

    def put(param: Tensor, *keys: str) -> None:
        value = torch.cat([take(k) for k in keys], dim=0) if len(keys) > 1 else take(keys[0])
        if value.shape != param.shape:
            raise UserError(
                f"{directory}: {keys[0]} has shape {tuple(value.shape)}, "
                f"the config implies {tuple(param.shape)}"
            )
        param.copy_(value)

    put(model.embed.weight, "embed_tokens.weight")
    layers: list[Any] = list(model.layers)
    for i, layer in enumerate(layers):
        p = f"layers.{i}."
        at = p + "self_attn."
        put(
            layer.attention.wqkv.weight,
            at + "q_proj.weight",
            at + "k_proj.weight",
            at + "v_proj.weight",
        )
        if layer.attention.wqkv.bias is not None:
            put(
                layer.attention.wqkv.bias,
                at + "q_proj.bias",
                at + "k_proj.bias",
                at + "v_proj.bias",
            )
        put(layer.attention.wo.weight, at + "o_proj.weight")
        if layer.attention.wo.bias is not None:
            put(layer.attention.wo.bias, at + "o_proj.bias")
        put(layer.feed_forward.w13.weight, p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight")
        put(layer.feed_forward.w2.weight, p + "mlp.down_proj.weight")
        if layer.feed_forward.w13.bias is not None:
            put(layer.feed_forward.w13.bias, p + "mlp.gate_proj.bias", p + "mlp.up_proj.bias")
            put(layer.feed_forward.w2.bias, p + "mlp.down_proj.bias")
        put(layer.attention_norm.weight, p + "input_layernorm.weight")
        put(layer.ffn_norm.weight, p + "post_attention_layernorm.weight")
    put(model.norm.weight, "norm.weight")
    if not model.arch.tied:
        put(model.output.weight, "lm_head.weight")
    # What transformers itself ignores: a tied head saved anyway, old checkpoints' rotary tables
    left = [
        k
        for k in tensors
        if not (k == "lm_head.weight" and model.arch.tied) and not k.endswith("rotary_emb.inv_freq")
    ]
    if left:
        raise UserError(
            f"{directory}: the checkpoint has {len(left)} tensors this model does not use "
            f"({', '.join(sorted(left)[:3])}{', ...' if len(left) > 3 else ''}): its config "
            "does not describe it (a bias, a norm or a layer the torch engine would drop)"
        )
