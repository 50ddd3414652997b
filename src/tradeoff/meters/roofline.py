"""The roofline cost model: FLOPs and bytes moved per forward pass, from the model's shape, and
the time a pass needs at least on a device with given peaks (labelled "analytic" wherever shown).

A pass that feeds `n` positions after `start` already in the context:
- FLOPs: as in `tradeoff.meters.flops.eval_flops` (weights, attention, the LM head once);
- bytes: every weight tensor read once (`ModelShape.weight_bytes`), the keys and values of the
  `start + n` attended positions read once, and the `n` new positions' keys and values written.
  Activations are not counted (small next to weights and cache at the batch sizes here).
Roofline time of a pass = max(FLOPs / peak FLOP/s, bytes / peak bytes/s); of a request, the sum
over its passes (one prefill, then one pass per generated token after the first). Efficiency =
roofline time / measured time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from tradeoff.engines.base import ModelShape
from tradeoff.errors import UserError
from tradeoff.meters.flops import eval_flops


@dataclass(frozen=True)
class Peaks:
    """What a device can do at most: FLOP/s (at the precision the model runs in) and memory
    bytes/s, and where the figures come from ("datasheet: ..." or "calibrated: ...")."""

    device: str
    flops_per_s: float
    bytes_per_s: float
    source: str


@dataclass(frozen=True)
class PassCost:
    flops: float
    bytes: float

    def roofline_s(self, peaks: Peaks) -> float:
        return max(self.flops / peaks.flops_per_s, self.bytes / peaks.bytes_per_s)


def kv_bytes_per_position(shape: ModelShape) -> int:
    """Bytes of one position's keys and values over all layers."""
    return 2 * shape.n_layers * shape.n_kv_heads * shape.head_dim * shape.kv_bytes_per_value


def eval_cost(shape: ModelShape, start: int, n_tokens: int, batch: int = 1) -> PassCost:
    """FLOPs and bytes of one pass feeding `n_tokens` positions after `start`, for each of
    `batch` sequences at once (the weights are read once for all of them). Needs
    `shape.weight_bytes`."""
    if shape.weight_bytes is None:
        raise ValueError("the model's weight bytes are unknown: no roofline")
    if n_tokens <= 0:
        return PassCost(0.0, 0.0)
    kv = kv_bytes_per_position(shape)
    moved = shape.weight_bytes + batch * (kv * (start + n_tokens) + kv * n_tokens)
    return PassCost(batch * eval_flops(shape, start, n_tokens), float(moved))


@dataclass(frozen=True)
class RequestCost:
    prefill: PassCost
    decode: list[PassCost]

    @property
    def flops(self) -> float:
        return self.prefill.flops + sum(p.flops for p in self.decode)

    @property
    def bytes(self) -> float:
        return self.prefill.bytes + sum(p.bytes for p in self.decode)

    def roofline_s(self, peaks: Peaks) -> float:
        return self.prefill.roofline_s(peaks) + sum(p.roofline_s(peaks) for p in self.decode)


def request_cost(
    shape: ModelShape, input_tokens: int, output_tokens: int, batch: int = 1
) -> RequestCost:
    """The passes of a request (of `batch` like requests run together): prefill of
    `input_tokens`, then one pass per output token after the first (which the prefill's last
    position gives)."""
    p = max(input_tokens, 0)
    steps = max(output_tokens - 1, 0)
    return RequestCost(
        prefill=eval_cost(shape, 0, p, batch),
        decode=[eval_cost(shape, p + i, 1, batch) for i in range(steps)],
    )


@dataclass(frozen=True)
class PhaseRoofline:
    """One phase of a request at its roofline: the prefill (one pass over the prompt) or the
    decode (`steps` passes, one per token after the first), for `batch` like requests at once."""

    phase: str  # "prefill" or "decode"
    steps: int  # prompt tokens (prefill) or decode passes
    flops: float
    bytes: float
    seconds: float  # roofline time, summed over the phase's passes
    bound: str  # "compute" or "memory": which of the two peaks sets the time
    tokens_per_s: float  # over the batch


def _phase(
    name: str, steps: int, passes: list[PassCost], peaks: Peaks, batch: int
) -> PhaseRoofline:
    flops = sum(p.flops for p in passes)
    moved = sum(p.bytes for p in passes)
    seconds = sum(p.roofline_s(peaks) for p in passes)
    bound = "compute" if flops / peaks.flops_per_s >= moved / peaks.bytes_per_s else "memory"
    return PhaseRoofline(name, steps, flops, moved, seconds, bound, batch * steps / seconds)


def phase_rooflines(
    shape: ModelShape, input_tokens: int, output_tokens: int, peaks: Peaks, batch: int = 1
) -> list[PhaseRoofline]:
    """The prefill and (when there is more than one output token) the decode of a request."""
    cost = request_cost(shape, input_tokens, output_tokens, batch)
    phases = [_phase("prefill", max(input_tokens, 0), [cost.prefill], peaks, batch)]
    if cost.decode:
        phases.append(_phase("decode", len(cost.decode), cost.decode, peaks, batch))
    return phases


@dataclass(frozen=True)
class RooflineEstimate:
    """What `tradeoff roofline` shows: a model's request on a device, phase by phase."""

    model: str
    shape: ModelShape
    peaks: Peaks
    batch: int
    phases: list[PhaseRoofline]


def request_roofline(
    model: str,
    device: str,
    input_tokens: int,
    output_tokens: int,
    batch: int = 1,
    dtype: str | None = None,
) -> RooflineEstimate:
    """The analytic least time of a request of `model` (a shipped architecture config, a
    config.json or its directory, or a model tradeoff can load) on `device` (a GPU name, or cpu
    once calibrated)."""
    # Imported here: meters.hardware imports this module, and the engines load only for a model
    # that is not a config.
    from tradeoff.engines import BUNDLED
    from tradeoff.engines.hf_config import load_hf_config, shape_from_hf_config, shipped_configs
    from tradeoff.meters.calibrate import cpu_device
    from tradeoff.meters.hardware import DATASHEET, device_peaks

    if model.startswith("openai:"):  # behind a server: its architecture is not ours to read
        raise UserError(
            f"model '{model}' is served elsewhere, so its architecture is unknown here; give its "
            "config.json (or a shipped config such as llama-3.1-8b) to roofline"
        )
    loads = model.startswith(("gguf:", "torch:"))
    if not loads and (
        model in shipped_configs() or model.endswith(".json") or Path(model).is_dir()
    ):
        shape = shape_from_hf_config(load_hf_config(model), dtype, model)
    elif not loads and model.partition("?")[0] not in BUNDLED:
        raise UserError(
            f"model '{model}' is not known; give a shipped config "
            f"({', '.join(shipped_configs())}), a config.json or its directory, a bundled model "
            f"({', '.join(BUNDLED)}), gguf:PATH or torch:CONFIG_OR_DIR"
        )
    elif model.startswith("torch:"):
        shape = _torch_shape(model, device, dtype)
    elif dtype is not None:  # a loadable model's weights are as stored: ignoring it would mislead
        raise UserError(
            f"--dtype {dtype} applies to an architecture config; model '{model}' is read as it "
            "loads, its weights in their stored types: leave --dtype out"
        )
    else:
        shape = _engine_shape(model)
    if shape.weight_bytes is None:
        raise UserError(f"model '{model}': its weight bytes are unknown, so no roofline")
    if shape.context is not None and input_tokens + output_tokens > shape.context:
        raise UserError(
            f"--input {input_tokens:,} + --output {output_tokens:,} tokens exceed "
            f"the context of model '{model}' ({shape.context:,} positions); no request of it "
            "is that long"
        )
    peaks, why = device_peaks(cpu_device() if device.lower() == "cpu" else device)
    if peaks is None:
        gpus = ", ".join(sorted({needle for needle, *_ in DATASHEET}))
        raise UserError(f"{why}; or name a GPU: {gpus}")
    phases = phase_rooflines(shape, input_tokens, output_tokens, peaks, batch)
    return RooflineEstimate(model, shape, peaks, batch, phases)


def _torch_shape(model: str, device: str, dtype: str | None) -> ModelShape:
    """The shape the torch engine would run `model` in on `device`, from its config, building
    nothing: in `?dtype=`, else bf16 on a GPU and fp32 on the CPU, as the engine chooses, with
    `?ctx=` its context. (Built here, it took this host's dtype, fp32: a GPU's roofline read
    twice the bytes, and a shape larger than this host's memory was refused.)"""
    from tradeoff.engines.hf_config import load_hf_config, shape_from_hf_config
    from tradeoff.engines.torch_engine import parse_torch_ref

    if dtype is not None:
        raise UserError(
            f"--dtype {dtype}: a torch model runs in the dtype its reference gives; write "
            f"{model.partition('?')[0]}?dtype={dtype} instead"
        )
    spec = parse_torch_ref(model)
    chosen = spec.dtype or ("fp32" if device.lower() == "cpu" else "bf16")
    shape = shape_from_hf_config(load_hf_config(spec.source), chosen, model)
    return shape if spec.ctx is None else replace(shape, context=spec.ctx)


def _engine_shape(model: str) -> ModelShape:
    """The shape of a model tradeoff can load (bundled, gguf:), read from its metadata."""
    import asyncio

    from tradeoff.engines import open_engine

    async def shape() -> ModelShape | None:
        engine = await open_engine(model)
        await engine.aclose()
        return engine.info.shape

    found = asyncio.run(shape())
    if found is None:
        raise UserError(f"model '{model}': its shape is unknown, so no roofline")
    return found
