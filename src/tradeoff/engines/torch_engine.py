"""In-process PyTorch engine: `torch:SOURCE[?option=value&...]`.

SOURCE is a shipped architecture config (`llama-3.1-8b`, `qwen2.5-0.5b`, `qwen2.5-7b`), a
`config.json`, or a Hugging Face model directory (config, safetensors weights, tokenizer).
Options: `random_weights=1` (profile a shape with no weights on the machine), `dtype=bf16|fp16|
fp32`, `device=cuda|cuda:N|cpu`, `ctx=N` (KV cache positions), `graph=0|1` (capture the decode
step in a CUDA graph; default 1 on CUDA), `compile=0|1|max-autotune` (torch.compile the decode
step first; max-autotune also tunes its matrix products, and compiles for minutes),
`pdl=0|1` (launch the engine's Triton kernels in the captured step as programmatic dependents,
on Hopper GPUs and later, without compile; default 0: on an H200 it sped the Qwen2.5-0.5B
shape's step up by 6% and slowed the Llama-3.1-8B shape's; compiled, the 0.5B shape's step took
1.8x as long, so `compile` refuses it),
`seed=N` (of the random weights).

Decoding follows the gpt-fast recipe: a static KV cache per batch size and one decode step whose
shapes never change, compiled and captured once, then replayed for every token. Each step ends
by writing its greedy token into its own input and moving the position on
(`decode_greedy.advance`), so greedy decoding replays the graph and copies the token to the host,
nothing else; a step sampled at a temperature above 0 pays for that kernel unused (3.8 µs of the
Qwen2.5-0.5B shape's 650 µs step on an H200) and sets token and position from the host. The same
code runs on the CPU (no graph) so CI tests the path the GPU takes. Every token is timed (one device
synchronisation per step), and `on_pass` hooks report each forward pass for energy splitting.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import torch

from tradeoff.engines import decode_greedy, decode_linear, dependent_launch
from tradeoff.engines.base import InProcessEngine, ModelInfo, PassSink, refuse_repeated_options
from tradeoff.engines.emit import AnswerText, PieceDecoder, TextSink
from tradeoff.engines.hf_config import load_hf_config, shape_from_hf_config, shipped_configs
from tradeoff.engines.stream import MIN_P, TOP_K, TOP_P, TokenStream
from tradeoff.engines.torch_model import DTYPES, Arch, Transformer, build, load_weights, randomize
from tradeoff.engines.torch_text import ByteCodec, TextCodec, codec_for
from tradeoff.errors import UserError
from tradeoff.paths import user_path
from tradeoff.types import CANCELLED, Generation, Request

OPTIONS = ("random_weights", "dtype", "device", "ctx", "graph", "compile", "seed", "overlap", "pdl")
# Prefill pads its tokens to a multiple of this, so that few shapes recur: the first pass of each
# new shape costs 60-80 ms more on an H100 (kernel selection; benchmarks/RESULTS.md), which would
# otherwise land in the time to first token of every prompt of a new length.
PREFILL_BUCKET = 64
DEFAULT_CTX = 2048  # positions of the KV cache where `ctx` is not given (or the model's fewer)

# All torch work runs on one thread: CUDA graphs and the KV caches are not shared across threads.
_TORCH_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torch")


@dataclass(frozen=True)
class TorchSpec:
    source: str
    random_weights: bool
    dtype: str | None
    device: str | None
    ctx: int | None  # None: not given, DEFAULT_CTX within the architecture's positions
    graph: bool | None
    compile: str | None  # None, "default" or "max-autotune"
    seed: int
    overlap: bool | None  # queue the next decode step before reading this step's token
    pdl: bool  # launch the engine's kernels as programmatic dependents (`dependent_launch`)


def parse_torch_ref(ref: str) -> TorchSpec:
    """`torch:SOURCE[?options]` -> its parts, with a one-line error for anything unknown."""
    body = ref[len("torch:") :]
    source, _, query = body.partition("?")
    if not source:
        raise UserError(f"model '{ref}' needs a source: torch:CONFIG_OR_DIR[?options]")
    pairs = parse_qsl(query, keep_blank_values=True)
    refuse_repeated_options(ref, [key for key, _ in pairs])
    opts = dict(pairs)
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise UserError(
            f"model '{ref}': unknown option '{unknown[0]}'; valid: {', '.join(OPTIONS)}"
        )

    def flag(key: str) -> bool | None:
        if key not in opts:
            return None
        if opts[key] not in ("0", "1", "true", "false"):
            raise UserError(f"model '{ref}': {key} must be 0 or 1, not '{opts[key]}'")
        return opts[key] in ("1", "true")

    def integer(key: str, default: int, most: int | None = None) -> int:
        try:
            value = int(opts.get(key, default))
        except ValueError:
            raise UserError(f"model '{ref}': {key} must be an integer") from None
        least = 16 if key == "ctx" else 0
        if value < least or (most is not None and value > most):
            bounds = f"at least {least}" if most is None else f"{least} to {most}"
            raise UserError(f"model '{ref}': {key} = {value} is out of range ({bounds})")
        return value

    compile_mode = {"0": None, "false": None, "1": "default", "true": "default"}.get(
        opts.get("compile", "0"), opts.get("compile")
    )
    if compile_mode not in (None, "default", "max-autotune"):
        raise UserError(f"model '{ref}': compile must be 0, 1 or max-autotune")
    dtype = opts.get("dtype")
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"model '{ref}': dtype '{dtype}' is not known; known: bf16, fp16, fp32")
    device = opts.get("device")
    if device is not None and not re.fullmatch(r"cpu|cuda(:[0-9]+)?", device):  # not cudax
        raise UserError(f"model '{ref}': device must be cpu, cuda or cuda:N, not '{device}'")
    if "seed" in opts and not flag("random_weights"):  # it would change nothing, silently
        raise UserError(
            f"model '{ref}': seed sets the random weights; give it with random_weights=1 "
            "(the run's --seed seeds the sampling)"
        )
    if flag("pdl") and compile_mode is not None:  # measured: benchmarks/RESULTS.md, issue 17
        raise UserError(
            f"model '{ref}': pdl=1 is for a step that is not compiled (compile=0); with "
            "compile the step ran 1.8x slower on an H200"
        )
    return TorchSpec(
        source=source,
        random_weights=bool(flag("random_weights")),
        dtype=dtype,
        device=device,
        ctx=integer("ctx", DEFAULT_CTX) if "ctx" in opts else None,
        graph=flag("graph"),
        compile=compile_mode,
        seed=integer("seed", 0, most=2**64 - 1),  # what torch's generators take
        overlap=flag("overlap"),
        pdl=bool(flag("pdl")),
    )


def check_torch_ref(ref: str) -> TorchSpec:
    """Fail early, loading nothing heavy, on a torch reference that cannot work."""
    spec = parse_torch_ref(ref)
    directory = _directory(spec.source)
    load_hf_config(spec.source)
    if spec.random_weights:
        return spec
    if directory is None and user_path(spec.source).is_dir():  # shadowed by a shipped one
        raise UserError(
            f"model '{ref}': {spec.source} names the shipped config (no weights), not the "
            f"directory of that name; write ./{spec.source} for the directory, or add "
            "?random_weights=1 to profile the shape"
        )
    has_weights = directory is not None and (
        (directory / "model.safetensors").is_file()
        or (directory / "model.safetensors.index.json").is_file()
    )
    if not has_weights and directory is not None and any(directory.glob("pytorch_model*.bin")):
        raise UserError(
            f"model '{ref}': {directory} holds PyTorch .bin weights; the torch engine reads only "
            "safetensors (convert them, e.g. with transformers' "
            "save_pretrained(..., safe_serialization=True))"
        )
    if not has_weights:
        raise UserError(
            f"model '{ref}': no weights at {spec.source}; add ?random_weights=1 to profile "
            "the shape with random weights"
        )
    assert directory is not None
    if not (directory / "tokenizer.json").is_file():  # its weights' text, not bytes
        sentencepiece = (directory / "tokenizer.model").is_file()
        raise UserError(
            f"model '{ref}': {directory} has no tokenizer.json, which the torch engine reads "
            "its text with"
            + (
                " (its tokenizer.model is sentencepiece's: convert it, e.g. with transformers' "
                "AutoTokenizer.from_pretrained(dir).save_pretrained(dir))"
                if sentencepiece
                else ""
            )
        )
    return spec


def _directory(source: str) -> Path | None:
    if source in shipped_configs():
        return None
    path = user_path(source)
    return path if path.is_dir() else path.parent if path.is_file() else None


def _check_fits(
    ref: str, weight_bytes: int, cache_bytes: int, ctx: int, device: torch.device
) -> None:
    """A clear error, not an out-of-memory kill, when the weights and one row's KV cache and
    rotary tables (`cache_bytes`, sized by `ctx` positions) cannot fit."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        where = f"{torch.cuda.get_device_name(device)} has {free / 1e9:.1f} GB free"
    else:
        free = _available_memory()
        where = f"this host has {free / 1e9:.1f} GB of memory available"
    if weight_bytes > free:
        raise UserError(
            f"model '{ref}' needs {weight_bytes / 1e9:.1f} GB for its weights; {where} "
            "(use a smaller model, dtype=bf16, or another device)"
        )
    if weight_bytes + cache_bytes > free:
        raise UserError(
            f"model '{ref}' needs {weight_bytes / 1e9:.1f} GB for its weights and "
            f"{cache_bytes / 1e9:.1f} GB for a KV cache of ctx={ctx} positions; {where} "
            "(lower ctx)"
        )


def _available_memory() -> int:
    """Bytes the kernel could give a new allocation: MemAvailable, which counts the page cache
    it can drop (free pages alone, SC_AVPHYS_PAGES, refused models that fit on a host whose
    memory held cached files), else the free pages where /proc/meminfo has no such line."""
    import os

    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # in kB
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class DecodeStep:
    """One batch size's KV cache and its decode step, captured in a CUDA graph when asked."""

    def __init__(self, engine: TorchEngine, batch: int):
        model, device = engine.model, engine.device
        self.model = model
        self.batch = batch
        self.cache = model.new_cache(batch, engine.n_ctx)
        self.tokens = torch.zeros((batch, 1), dtype=torch.long, device=device)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.graph: Any = None
        self.tune_s = 0.0
        # tuned and captured as it will replay
        with dependent_launch.enabled(engine.pdl), decode_linear.tuning(bool(engine.compile)):
            self._build(engine)

    def _build(self, engine: TorchEngine) -> None:
        model, device = self.model, engine.device
        if device.type == "cuda":
            # One eager step first: `decode_linear` tunes its kernel for each of the step's
            # products here, outside compilation and graph capture (seconds, once per shape).
            self.pos.fill_(engine.n_ctx - 1)
            t0 = time.perf_counter()
            model(self.tokens, self.pos, self.cache)
            self.tune_s = time.perf_counter() - t0
        fn: Callable[..., torch.Tensor] = model
        if engine.compile:
            mode = "max-autotune-no-cudagraphs" if engine.compile == "max-autotune" else None
            fn = torch.compile(model, fullgraph=True, dynamic=False, mode=mode)
        self.fn = fn
        # Prefill: one compiled graph for every prompt length (dynamic shapes) when compiling;
        # eager otherwise (launch-bound: about 20% of its roofline for an 8B model at batch 1).
        self.prefill_fn: Callable[..., torch.Tensor] = model
        if engine.compile:
            self.prefill_fn = torch.compile(model, fullgraph=True, dynamic=True)
        self.out: torch.Tensor | None = None
        if engine.use_graph:
            self._capture(engine.n_ctx - 1)

    def _run(self) -> torch.Tensor:
        """The step's logits; it then leaves its greedy token and the next position as the next
        step's input (`advance`), in the graph, so that greedy decoding launches nothing else."""
        logits = self.fn(self.tokens, self.pos, self.cache)[:, -1]
        decode_greedy.advance(logits, self.tokens, self.pos)
        return logits

    def _capture(self, scratch_pos: int) -> None:
        # Warm-up and capture write keys and values at the last position, which a real request
        # overwrites before it can attend to it; each run moves the position on (`_run`), so it
        # is set back before each, and the cache is never written past its end.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.pos.fill_(scratch_pos)
                self._run()
        torch.cuda.current_stream().wait_stream(side)
        self.pos.fill_(scratch_pos)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self._run()

    def prefill(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        """Logits after evaluating `ids` (batch, T) from position `start`. The tokens are padded
        to the next multiple of PREFILL_BUCKET that fits the cache: the padding's keys and values
        land at positions the request overwrites before it attends to them."""
        t = ids.shape[1]
        length = self.cache[0][0].shape[2]
        padded = max(t, min(-(-t // PREFILL_BUCKET) * PREFILL_BUCKET, length - start))
        if padded > t:
            ids = torch.nn.functional.pad(ids, (0, padded - t))
        pos = torch.arange(start, start + padded, device=ids.device)
        take = torch.tensor([t - 1], device=ids.device)
        return self.prefill_fn(ids, pos, self.cache, take=take)[:, -1]

    def step(self, tokens: torch.Tensor, pos: int) -> torch.Tensor:
        """Logits after one token per row (`tokens`: (batch,)) at position `pos`."""
        self.tokens.copy_(tokens.view(self.batch, 1))
        self.pos.fill_(pos)
        return self.advance()

    def advance(self) -> torch.Tensor:
        """Logits after the last step's greedy tokens (`chosen`) at the position after it."""
        if self.graph is not None:
            self.graph.replay()
            assert self.out is not None
            return self.out
        return self._run()

    def chosen(self) -> torch.Tensor:
        """The last step's greedy tokens (batch,), on the device: the input `advance` takes."""
        return self.tokens.view(self.batch)


def context_ceiling(arch: Arch) -> int:
    """The most positions the engine opens a model with: its trained positions, within its
    sliding window."""
    return min(arch.max_positions, arch.window or arch.max_positions)


def torch_context(ref: str, arch: Arch, ctx: int | None) -> int:
    """The context the engine opens `ref` with: `?ctx=` (`ctx`), else DEFAULT_CTX within the
    architecture's positions and sliding window; a ctx past either is a UserError (the roofline
    refuses what the engine refuses)."""
    window = arch.window or arch.max_positions
    if ctx is None:
        return min(DEFAULT_CTX, context_ceiling(arch))
    if ctx > arch.max_positions:
        raise UserError(
            f"model '{ref}': ctx = {ctx} is beyond the {arch.max_positions} positions the "
            "architecture was trained for (max_position_embeddings); give at most "
            f"ctx={arch.max_positions}"
        )
    # Within the window a sliding-window model's attention is the full one; past it the
    # model sees only the last `window` positions, and this engine would attend to all.
    if ctx > window:
        raise UserError(
            f"model '{ref}': ctx = {ctx} is beyond the model's sliding window of {window} "
            "positions, and the torch engine attends over the whole context (a longer prompt "
            f"would not be the model's computation); give at most ctx={window}"
        )
    return ctx


class TorchEngine(InProcessEngine):
    """A model in PyTorch on one device, generating one request (or one batch) at a time."""

    # The first pass of each shape on a thread costs 60-80 ms more on an H100 (per-thread library
    # state), so `warm` runs where the requests will: on this thread, or inline.
    executor = _TORCH_THREAD
    batches = True
    warm_takes_time = True

    def __init__(self, ref: str):
        spec = check_torch_ref(ref)
        config = load_hf_config(spec.source)
        self.arch = Arch.of_model(ref, config)
        if (
            spec.device is not None
            and spec.device.startswith("cuda")
            and not torch.cuda.is_available()
        ):
            raise UserError(f"model '{ref}': device {spec.device} asked, but CUDA is not available")
        self.device = torch.device(spec.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        on_gpu = self.device.type == "cuda"
        dtype_name = spec.dtype or ("bf16" if on_gpu else "fp32")
        self.dtype = DTYPES[dtype_name]
        self.n_ctx = torch_context(ref, self.arch, spec.ctx)
        self.use_graph = on_gpu if spec.graph is None else spec.graph
        if self.use_graph and not on_gpu:
            raise UserError(f"model '{ref}': graph=1 needs a CUDA device")
        self.compile = spec.compile
        self.overlap = on_gpu if spec.overlap is None else spec.overlap
        if spec.pdl and not (on_gpu and torch.cuda.get_device_capability(self.device)[0] >= 9):
            raise UserError(f"model '{ref}': pdl=1 needs a CUDA GPU of compute capability 9.0+")
        self.pdl = spec.pdl
        directory = _directory(spec.source)
        shape = shape_from_hf_config(config, dtype_name)
        # A directory's own tokenizer and template with random weights too: the workload (its
        # prompts' tokens, chat or completion) is the one its weights would be measured on.
        self.codec: TextCodec = codec_for(directory, config)
        self.template_refuses = getattr(self.codec, "refuses", False)
        if isinstance(self.codec, ByteCodec) and self.arch.vocab < 256:
            raise UserError(
                f"model '{ref}': vocab_size {self.arch.vocab} is below 256, the byte tokenizer's "
                "ids (a config with random weights and no tokenizer reads text as bytes)"
            )
        a, itemsize = self.arch, self.dtype.itemsize
        per_position = (2 * a.n_layers * a.n_kv_heads * a.head_dim + 2 * a.head_dim) * itemsize
        _check_fits(
            ref, shape.weight_bytes or 0, per_position * self.n_ctx, self.n_ctx, self.device
        )
        self.model: Transformer = build(self.arch, self.device, self.dtype)
        if spec.random_weights:
            randomize(self.model, spec.seed)
        else:
            assert directory is not None
            load_weights(self.model, directory)
        self.model.setup_rope(self.n_ctx, self.device, self.dtype)
        self.model.eval()
        self._steps: dict[int, DecodeStep] = {}
        self.info = ModelInfo(
            ref=ref,
            kind="torch",
            prompt_mode="chat" if self.codec.chat else "completion",
            description=(
                f"{config.get('model_type')} {shape.n_params / 1e9:.2f}B on {self.device}, "
                f"{dtype_name}{', random weights' if spec.random_weights else ''}"
            ),
            path=str(directory) if directory else spec.source,
            shape=shape,
            in_process=True,
            device=torch.cuda.get_device_name(self.device) if on_gpu else None,
        )
        if on_gpu:
            self.gpu_uuid = str(torch.cuda.get_device_properties(self.device).uuid) or "unknown"

    # --- building blocks shared with token-level strategies -----------------------------------

    def decode_step(self, batch: int) -> DecodeStep:
        """The decode step (and KV cache) for `batch` rows, built and captured on first use."""
        if batch not in self._steps:
            self._steps[batch] = DecodeStep(self, batch)
        return self._steps[batch]

    @torch.inference_mode()
    def warm(self, batches: list[int], stopped: Callable[[], bool] = lambda: False) -> None:
        """Build, compile and capture the decode step of each batch size, and run prefill once
        at each padded length (at one on the CPU without compile), before any request is timed
        (requests overwrite the caches).
        Checks `stopped` between passes: on a GPU with compile this takes minutes. Compiling on
        a host without a C++ compiler is one line, not inductor's traceback."""
        if not (self.compile and self.device.type == "cpu"):
            return self._warm(batches, stopped)
        from torch._dynamo.exc import BackendCompilerFailed
        from torch._inductor.exc import InductorError

        try:
            self._warm(batches, stopped)
        except (InductorError, BackendCompilerFailed) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if not any(word in reason.lower() for word in ("cxx", "cpp", "compiler")):
                raise  # inductor failed otherwise: its own message
            raise UserError(
                f"model '{self.info.ref}': compile=1 on the CPU needs a working C++ compiler "
                f"({reason}); give compile=0"
            ) from None

    def _warm(self, batches: list[int], stopped: Callable[[], bool]) -> None:
        # A GPU's first pass at each new prefill length costs 60-80 ms of kernel selection
        # (PREFILL_BUCKET), so it warms every padded length, as compile does; the CPU without
        # compile runs a new length at its usual cost, and one warms it (every padded length to
        # ctx=1024 took 46 s for the Qwen2.5-0.5B shape).
        lengths = list(range(PREFILL_BUCKET, self.n_ctx + 1, PREFILL_BUCKET))
        if self.device.type == "cpu" and not self.compile:
            lengths = [min(PREFILL_BUCKET, self.n_ctx)]
        for batch in batches:
            step = self.decode_step(batch)
            for t in lengths:
                if stopped():
                    return
                step.prefill(torch.zeros((batch, t), dtype=torch.long, device=self.device), 0)
            # and the whole request path (sampling greedy and at random, statistics), thrice
            for temperature in (0.0, 1.0, 1.0):
                request = Request(
                    prompt="warm", max_tokens=8, temperature=temperature, logprobs=True
                )
                self._batch([request] * batch, None, [])
        self.sync()

    def prompt_tokens(self, request: Request) -> list[int]:
        return self.codec.encode(request)

    def is_end(self, token: int) -> bool:
        return token in self.codec.end_ids

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # --- generation ---------------------------------------------------------------------------

    def generate_batch(
        self, requests: list[Request], on_pass: list[PassSink] | None = None
    ) -> list[Generation]:
        """Answers to requests that share one prompt (the draws of a vote), decoded as one
        batch; sampling uses the first request's seed. A failure is returned, not raised."""
        return self._batch(requests, None, on_pass or [])

    def generate(
        self, request: Request, on_text: TextSink | None = None, on_pass: PassSink | None = None
    ) -> Generation:
        return self._batch([request], on_text, [on_pass] if on_pass else [])[0]

    @torch.inference_mode()
    def _batch(
        self, requests: list[Request], on_text: TextSink | None, on_pass: list[PassSink]
    ) -> list[Generation]:
        t_start = time.perf_counter()
        if requests[0].cancelled:
            return [Generation.cancelled_before(r.mode, t_start) for r in requests]
        try:
            return self._generate(requests, t_start, on_text, on_pass)
        except Exception as exc:  # a failed request is a record with its error
            error = f"{type(exc).__name__}: {exc}"
            return [Generation.failed(r.mode, t_start, error) for r in requests]

    def refuse_overlong(self, prompt: int, max_tokens: int) -> None:
        """ValueError where a prompt of `prompt` tokens and `max_tokens` do not fit the context."""
        if prompt + max_tokens > self.n_ctx:
            most = context_ceiling(self.arch)
            raise ValueError(
                f"prompt of {prompt} tokens + max_tokens {max_tokens} exceeds the context "
                f"of {self.n_ctx} positions "
                + (f"(raise it with ?ctx=N, up to {most})" if self.n_ctx < most else
                   "(the most the model takes: shorten the prompt or max_tokens)")
            )  # fmt: skip

    def _generate(
        self,
        requests: list[Request],
        t_start: float,
        on_text: TextSink | None,
        on_pass: list[PassSink],
    ) -> list[Generation]:
        first = requests[0]
        prompt = self.prompt_tokens(first)
        if any(self.prompt_tokens(r) != prompt for r in requests[1:]):
            raise ValueError("a batch must share one prompt")
        if not prompt:
            raise ValueError("the prompt is empty")
        max_tokens = max(r.max_tokens for r in requests)
        self.refuse_overlong(len(prompt), max_tokens)
        batch = len(requests)
        step = self.decode_step(batch)
        gen = torch.Generator(device=self.device).manual_seed(first.seed or 0)
        ids = torch.tensor([prompt] * batch, dtype=torch.long, device=self.device)
        logits = step.prefill(ids, 0)
        passes = [(0, len(prompt))]
        rows = [_Row(r, self.codec, prompt, on_text if batch == 1 else None) for r in requests]
        position = len(prompt)
        sampled = 0
        # Greedy, each step after the first takes the token and position the last one left
        # on the device (`DecodeStep.advance`): no argmax, copy or fill launched between steps.
        greedy, chained = first.temperature <= 0, False
        while True:
            tokens = step.chosen() if chained else self._sample(logits, first.temperature, gen)
            stats = self._stats(logits, tokens) if first.logprobs else None
            fetch = _Fetch(tokens, stats)
            sampled += 1
            # With `overlap`, the next step is queued before this token is read, so that the GPU
            # computes it while the host reads, decodes and checks the token; after a stop, that
            # step was wasted: it is waited for and counted as this request's pass.
            ahead = self.overlap and sampled < max_tokens
            if ahead:
                logits = step.advance() if chained else step.step(tokens, position)
                chained = greedy
            chosen, chosen_stats = fetch.result()  # waits for this step's token only
            now = time.perf_counter()
            for sink in on_pass:
                sink(passes[-1][0], passes[-1][1], batch)
            for b, row in enumerate(rows):
                if not row.done:
                    row.accept(chosen[b], now, chosen_stats[b] if chosen_stats else None, self)
            if all(row.done for row in rows):
                if ahead:
                    for sink in on_pass:
                        sink(position, 1, batch)
                    self.sync()
                break
            if not ahead:
                logits = step.advance() if chained else step.step(tokens, position)
                chained = greedy
            passes.append((position, 1))
            position += 1
        t_end = time.perf_counter()
        return [row.generation(len(prompt), t_start, t_end) for row in rows]

    @staticmethod
    def _sample(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> torch.Tensor:
        if temperature <= 0:
            return logits.argmax(dim=-1)
        # as llama.cpp samples (`stream.candidates`); a decode step's logits are 16-bit on a GPU
        top, index = torch.topk(logits.float(), min(TOP_K, logits.shape[-1]), dim=-1)
        p = torch.softmax(top, dim=-1)
        keep = (p.cumsum(-1) - p < TOP_P) & (top >= top[..., :1] + math.log(MIN_P))
        # Less the top one, in float64: a temperature as small as 5e-324 is 0 as a float32, and
        # the top log-probability over it 0/0; so each other one is -inf, the top one 0.
        scaled = (top - top[..., :1]).double().masked_fill(~keep, -torch.inf) / temperature
        pick = torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=gen)
        return index.gather(-1, pick).squeeze(-1)

    @staticmethod
    def _stats(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(log-probability of each row's token, entropy in nats) under the raw distribution,
        (batch, 2) on the device."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        chosen = logp.gather(-1, tokens[:, None]).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        return torch.stack((chosen, entropy), dim=-1)

    def last_logprobs(self, logits: torch.Tensor) -> np.ndarray:
        """Log-probabilities (float64, on the host) of one row of logits."""
        return torch.log_softmax(logits.double(), dim=-1).cpu().numpy()

    def token_stream(self, request: Request) -> TorchTokenStream:
        return TorchTokenStream(self, request)

    def close(self) -> None:
        self._steps.clear()


class TorchTokenStream(TokenStream):
    """`switch`'s view of a torch model. Single tokens go through the captured decode step; a
    prompt or a catch-up on text another model wrote is one prefill pass."""

    engine: TorchEngine

    def __init__(self, engine: TorchEngine, request: Request):
        super().__init__(engine, request)
        self._logits: torch.Tensor | None = None

    def _prompt(self) -> list[int]:
        return self.engine.prompt_tokens(self.request)

    def _tokenize(self, text: bytes) -> list[int]:
        return self.engine.codec.encode_text(text.decode("utf-8", errors="ignore"))

    @torch.inference_mode()
    def _run(self, tokens: list[int], start: int) -> None:
        engine = self.engine
        step = engine.decode_step(1)  # within n_ctx: `TokenStream._eval` checked
        if len(tokens) == 1:
            one = torch.tensor(tokens, dtype=torch.long, device=engine.device)
            self._logits = step.step(one, start)
        else:
            ids = torch.tensor([tokens], dtype=torch.long, device=engine.device)
            self._logits = step.prefill(ids, start)

    def _refuse_overlong(self, prompt: int) -> None:
        self.engine.refuse_overlong(prompt, self.request.max_tokens)

    def _logprobs(self) -> np.ndarray:
        assert self._logits is not None
        return self.engine.last_logprobs(self._logits[0])

    def _pieces(self) -> PieceDecoder:
        return self.engine.codec.pieces()


class _Fetch:
    """A step's sampled tokens (and their statistics) copied to the host behind the work queued
    so far, without waiting for what is queued after them (CUDA: pinned memory and an event)."""

    def __init__(self, tokens: torch.Tensor, stats: torch.Tensor | None):
        cuda = tokens.is_cuda
        # a copy: the tokens may be the step's own input, which the next step overwrites
        self.tokens = tokens.to("cpu", non_blocking=cuda, copy=True)
        self.stats = None if stats is None else stats.to("cpu", non_blocking=cuda)
        self.copied = torch.cuda.Event() if cuda else None
        if self.copied is not None:
            self.copied.record()

    def result(self) -> tuple[list[int], list[tuple[float, float]] | None]:
        if self.copied is not None:
            self.copied.synchronize()
        stats = None if self.stats is None else [(a, b) for a, b in self.stats.tolist()]
        return self.tokens.tolist(), stats


class _Row:
    """One row of a batch: its tokens, timings and stop handling."""

    def __init__(
        self, request: Request, codec: TextCodec, prompt: list[int], on_text: TextSink | None
    ):
        self.request = request
        self.completion: list[int] = []
        self.times: list[float] = []
        self.logprobs: list[float] = []
        self.entropies: list[float] = []
        self.pieces = codec.pieces()
        # Decoded after the prompt: a sentencepiece tokenizer's first "▁the" is " the" there
        # (alone, the answer's leading space was dropped: "...France isParis").
        self.pieces.context(prompt)
        self.answer = AnswerText(request.stop, on_text)
        self.done = False
        self.finish = "length"
        self.t_done: float | None = None
        self.end_pass = False  # its last pass produced the end of sequence

    def accept(
        self, token: int, now: float, stats: tuple[float, float] | None, engine: TorchEngine
    ) -> None:
        if engine.is_end(token):
            self.done, self.finish, self.t_done = True, "stop", now
            self.end_pass = True
            return
        if self.request.cancelled:
            self.done, self.finish, self.t_done = True, "cancelled", now
            return
        self.completion.append(token)
        self.times.append(now)
        if stats:
            self.logprobs.append(stats[0])
            self.entropies.append(stats[1])
        if self.answer.add(self.pieces.add(token)):
            self.done, self.finish, self.t_done = True, "stop", now
            return
        if len(self.completion) >= self.request.max_tokens:
            self.done, self.t_done = True, now

    def generation(self, prompt_tokens: int, t_start: float, t_end: float) -> Generation:
        return Generation(
            text=self.answer.finish(),
            input_tokens=prompt_tokens,
            output_tokens=len(self.completion),
            t_start=t_start,
            t_first=self.times[0] if self.times else None,
            t_end=self.t_done or t_end,
            finish_reason=self.finish,
            mode=self.request.mode,
            token_times=self.times,
            token_logprobs=self.logprobs,
            token_entropies=self.entropies,
            token_count_source="exact",
            error=CANCELLED if self.finish == "cancelled" else None,
            end_pass=self.end_pass,
        )
