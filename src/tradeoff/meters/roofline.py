"""The roofline cost model: FLOPs and bytes moved per forward pass, from the model's shape, and
the time a pass needs at least on a device with given peaks (labelled "analytic" wherever shown).

A pass that feeds `n` positions after `start` already in the context, for each of `batch`
sequences:
- FLOPs: as in `tradeoff.meters.flops.eval_flops` (weights, attention, the LM head once);
- bytes: every weight tensor read once (`ModelShape.weight_bytes`), except an input embedding
  not tied to the LM head (`ModelShape.embedding_bytes`), of which only the rows of the
  `batch x n` tokens fed are gathered; the keys and values of the `start + n` attended
  positions read once, and the `n` new positions' keys and values written. Activations are not
  counted (small next to weights and cache at the batch sizes here).
Roofline time of a pass = max(FLOPs / peak FLOP/s, bytes / peak bytes/s), the FLOP/s of the
precision the model runs in; of a request, the sum over its passes (one prefill, then one pass
per generated token after the first). Efficiency = roofline time / measured time. Attention is
counted in full: a model with a sliding window does less past it (the estimate says so).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl

from tradeoff.engines.base import ModelShape
from tradeoff.errors import UserError
from tradeoff.meters.flops import eval_flops
from tradeoff.paths import user_path


@dataclass(frozen=True)
class Peaks:
    """What a device can do at most: FLOP/s (at the precision the model runs in) and memory
    bytes/s, and where the figures come from ("datasheet: ..." or "calibrated: ...")."""

    device: str
    flops_per_s: float
    bytes_per_s: float
    source: str
    precision: str | None = None  # the FLOP/s' precision ("bf16", "fp32" ...), None if unknown


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
    weights = shape.weight_bytes - shape.embedding_bytes + gathered_bytes(shape, batch * n_tokens)
    moved = weights + batch * (kv * (start + n_tokens) + kv * n_tokens)
    return PassCost(batch * eval_flops(shape, start, n_tokens), float(moved))


def gathered_bytes(shape: ModelShape, tokens: int) -> int:
    """Bytes of the rows an untied input embedding gives `tokens` tokens: one row each, at most
    the whole table (a row wanted twice is read once). Counted whole, as it was, it put about
    1 GB too many (7%) in each decode step of Llama-3.1-8B."""
    return shape.embedding_bytes * min(tokens, shape.vocab) // shape.vocab


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
    name: str, steps: int, flops: float, moved: float, seconds: float, peaks: Peaks, batch: int
) -> PhaseRoofline:
    bound = "compute" if flops / peaks.flops_per_s >= moved / peaks.bytes_per_s else "memory"
    return PhaseRoofline(name, steps, flops, moved, seconds, bound, batch * steps / seconds)


def decode_sums(
    shape: ModelShape, first: int, steps: int, peaks: Peaks, batch: int = 1
) -> tuple[float, float, float]:
    """FLOPs, bytes and roofline seconds of `steps` one-token passes from position `first`, in
    closed form: a pass's FLOPs and bytes each grow linearly with its position, so each is an
    arithmetic series, and so is the time over the passes bound by the same peak; which peak
    binds changes at most once (two lines cross once). Pass by pass, a million output tokens
    took 7 s."""

    def cost(i: int) -> PassCost:
        return eval_cost(shape, first + i, 1, batch)

    def compute_bound(i: int) -> bool:
        c = cost(i)
        return c.flops / peaks.flops_per_s >= c.bytes / peaks.bytes_per_s

    # The first pass bound by the other peak than the first pass (`steps` if none), by bisection.
    start_bound, low, high = compute_bound(0), 1, steps
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if compute_bound(middle) != start_bound else (middle + 1, high)

    def series(a: int, b: int, value: Callable[[PassCost], float]) -> float:
        """value(cost(a)) + ... + value(cost(b)), for a value linear in the position."""
        return (b - a + 1) * (value(cost(a)) + value(cost(b))) / 2 if b >= a else 0.0

    def seconds(c: PassCost) -> float:
        return c.roofline_s(peaks)

    return (
        series(0, steps - 1, lambda c: c.flops),
        series(0, steps - 1, lambda c: c.bytes),
        series(0, low - 1, seconds) + series(low, steps - 1, seconds),
    )


def phase_rooflines(
    shape: ModelShape, input_tokens: int, output_tokens: int, peaks: Peaks, batch: int = 1
) -> list[PhaseRoofline]:
    """The prefill and (when there is more than one output token) the decode of a request."""
    p = max(input_tokens, 0)
    prefill = eval_cost(shape, 0, p, batch)
    phases = [
        _phase("prefill", p, prefill.flops, prefill.bytes, prefill.roofline_s(peaks), peaks, batch)
    ]
    steps = max(output_tokens - 1, 0)
    if steps:
        phases.append(
            _phase("decode", steps, *decode_sums(shape, p, steps, peaks, batch), peaks, batch)
        )
    return phases


@dataclass(frozen=True)
class RooflineEstimate:
    """What `tradeoff roofline` shows: a model's request on a device, phase by phase, and what
    the estimate leaves out for this request (`notes`)."""

    model: str
    shape: ModelShape
    peaks: Peaks
    batch: int
    phases: list[PhaseRoofline]
    notes: list[str] = field(default_factory=list)


# The device a request is timed on where none is named, but for a torch reference that runs on
# the CPU (device=cpu).
DEFAULT_DEVICE = "H100"


def request_roofline(
    model: str,
    device: str | None,
    input_tokens: int,
    output_tokens: int,
    batch: int = 1,
    dtype: str | None = None,
) -> RooflineEstimate:
    """The analytic least time of a request of `model` (a shipped architecture config, a
    config.json or its directory, or a model tradeoff can load) on `device` (a GPU name, or cpu
    once calibrated; None: where a torch reference's device= runs it, else `DEFAULT_DEVICE`)."""
    from tradeoff.meters.calibrate import cpu_device
    from tradeoff.meters.hardware import DATASHEET, device_peaks

    gpus = ", ".join(sorted({needle for needle, *_ in DATASHEET}))
    if device is not None and not device.strip():  # blank words named a calibrated CPU
        raise UserError(f"--device is blank; name a GPU ({gpus}) or cpu (once calibrated)")
    runs_on = _torch_device(model)
    # (unsaid, no peaks for the CPU that device= chose read as if the user had named cpu)
    other = "; or name a GPU" if device else " (cpu is the reference's device=cpu), or name a GPU"
    if device is None:
        device = "cpu" if runs_on == "cpu" else DEFAULT_DEVICE
    shape = model_shape(model, device, dtype)
    if shape.context is not None and input_tokens + output_tokens > shape.context:
        raise UserError(
            f"--input {input_tokens:,} + --output {output_tokens:,} tokens exceed "
            f"the context of model '{model}' ({shape.context:,} positions); no request of it "
            "is that long"
        )
    peaks, why = device_peaks(cpu_device() if device.lower() == "cpu" else device, shape.dtype)
    if peaks is None:
        raise UserError(f"{why}{other} with --device: {gpus}")
    phases = phase_rooflines(shape, input_tokens, output_tokens, peaks, batch)
    notes = _window_notes(shape, input_tokens + output_tokens)
    if runs_on is not None and (runs_on == "cpu") != _on_cpu(device):
        notes.insert(
            0,
            f"model '{model}' runs on {runs_on} (its device=), --device names {device}: timed "
            f"on {device} in {shape.dtype}, as the torch engine would run it there",
        )
    return RooflineEstimate(model, shape, peaks, batch, phases, notes)


def _torch_device(model: str) -> str | None:
    """The device a torch reference's device= runs `model` on ("cpu", "cuda", "cuda:N"), None
    where it names none or `model` is not one. (Not read, a device=cpu reference was timed on an
    H100 in bf16 without a word, though the engine runs it on the CPU in fp32.) Only a torch
    reference imports the torch engine: the install without PyTorch times the others."""
    if not model.startswith("torch:"):
        return None
    from tradeoff.engines import check_torch_installed

    check_torch_installed(model)
    from tradeoff.engines.torch_engine import parse_torch_ref

    return parse_torch_ref(model).device


def _on_cpu(device: str) -> bool:
    """Whether `device` names a CPU: cpu, or a CPU's calibration ("cpu: ... (2 threads)")."""
    return device.lower() == "cpu" or device.lower().startswith("cpu:")


def _window_notes(shape: ModelShape, positions: int) -> list[str]:
    """What a sliding window leaves out: attention past it is counted in full."""
    window = shape.sliding_window
    if window is None or positions <= window:
        return []
    return [
        f"the model attends within a sliding window of {window:,} positions (in some or all "
        f"layers) and this request reaches {positions:,}: attention past the window is counted "
        "as full attention, so the KV cache bytes and attention FLOPs are upper bounds"
    ]


def model_shape(model: str, device: str, dtype: str | None = None) -> ModelShape:
    """The shape of `model` as it runs on `device`: a bundled model or gguf: as llama.cpp loads
    it, torch: as the torch engine builds it, else an architecture config (shipped by name, a
    config.json, or a directory holding one; a bundled name comes first, a folder named like one
    shadowed it)."""
    # Imported here: meters.hardware imports this module, and the engines load only for a model
    # that is not a config.
    from tradeoff.engines import BUNDLED
    from tradeoff.engines.hf_config import (
        DTYPE_NAMES,
        load_hf_config,
        shape_from_hf_config,
        shipped_configs,
    )

    if model.startswith("openai:"):  # behind a server: its architecture is not ours to read
        raise UserError(
            f"model '{model}' is served elsewhere, so its architecture is unknown here; give its "
            "config.json (or a shipped config such as llama-3.1-8b) to roofline"
        )
    if dtype is not None and dtype not in DTYPE_NAMES:  # a blank one read as none given
        raise UserError(f"--dtype '{dtype}' is not known; known: {', '.join(DTYPE_NAMES)}")
    source = model.removeprefix("torch:").partition("?")[0]
    shadowed = source in shipped_configs() and (user_path(source) / "config.json").is_file()
    if shadowed and not _random_weights(model):  # the torch engine's rule, too
        raise UserError(  # the shipped one was read without a word
            f"model '{model}': {source} names a shipped config and the directory here that holds "
            f"a config.json; write ./{source} for the directory's"
        )
    if model.startswith("torch:"):
        shape = _torch_shape(model, device, dtype)
    elif model.startswith("gguf:") or model.partition("?")[0] in BUNDLED:
        if dtype is not None:  # a loadable model's weights are as stored: ignoring it misleads
            raise UserError(
                f"--dtype {dtype} applies to an architecture config; model '{model}' is read as "
                "it loads, its weights in their stored types: leave --dtype out"
            )
        shape = _engine_shape(model)
    elif (
        model in shipped_configs()
        or model.endswith(".json")
        or (user_path(model) / "config.json").is_file()
    ):
        shape = shape_from_hf_config(load_hf_config(model), dtype, model)
    else:
        raise UserError(
            f"model '{model}' is not known; give a shipped config "
            f"({', '.join(shipped_configs())}), a config.json or a directory holding one, a "
            f"bundled model ({', '.join(BUNDLED)}), gguf:PATH or torch:CONFIG_OR_DIR"
        )
    if shape.weight_bytes is None:
        raise UserError(f"model '{model}': its weight bytes are unknown, so no roofline")
    return shape


def _random_weights(model: str) -> bool:
    """Whether `model` is a torch reference built with random weights (the engine's parse)."""
    from tradeoff.engines.torch_engine import parse_torch_ref

    return model.startswith("torch:") and bool(parse_torch_ref(model).random_weights)


def _torch_shape(model: str, device: str, dtype: str | None) -> ModelShape:
    """The shape the torch engine would run `model` in on `device`, from its config, building
    nothing: in `?dtype=`, else bf16 on a GPU and fp32 on the CPU, as the engine chooses, with
    `?ctx=` its context, refused past the architecture's positions or sliding window as the
    engine refuses it.
    (Built here, it took this host's dtype, fp32: a GPU's roofline read twice the bytes, and a
    shape larger than this host's memory was refused.)"""
    from tradeoff.engines.hf_config import load_hf_config, shape_from_hf_config
    from tradeoff.engines.torch_engine import parse_torch_ref, torch_context
    from tradeoff.engines.torch_model import Arch

    if dtype is not None:
        raise UserError(
            f"--dtype {dtype}: a torch model runs in the dtype its reference gives; write "
            f"{model.partition('?')[0]}?dtype={dtype} instead"
        )
    spec = parse_torch_ref(model)
    config = load_hf_config(spec.source)
    chosen = spec.dtype or ("fp32" if _on_cpu(device) else "bf16")
    context = torch_context(model, Arch.of_model(model, config), spec.ctx)  # as the engine does
    shape = shape_from_hf_config(config, chosen, model)
    return shape if spec.ctx is None else replace(shape, context=context)


def _engine_shape(model: str) -> ModelShape:
    """The shape of a model tradeoff can load (bundled, gguf:), read from its metadata, with
    the context the engine was opened with where `?ctx=` gives it (it refuses longer requests;
    without it, the model's own, as for a torch reference)."""
    import asyncio

    from tradeoff.engines import open_engine
    from tradeoff.engines.base import InProcessEngine

    async def opened() -> tuple[ModelShape | None, int | None]:
        engine = await open_engine(model)
        await engine.aclose()
        n_ctx = engine.n_ctx if isinstance(engine, InProcessEngine) else None
        return engine.info.shape, n_ctx

    found, n_ctx = asyncio.run(opened())
    if found is None:
        raise UserError(f"model '{model}': its shape is unknown, so no roofline")
    asked = "ctx" in dict(parse_qsl(model.partition("?")[2]))
    return replace(found, context=n_ctx) if asked and n_ctx else found
