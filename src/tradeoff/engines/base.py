"""What engines offer. Every engine describes its model (`info`) and answers `agenerate`; a
network `Engine` (an OpenAI-compatible server) does no more. An `InProcessEngine` runs its model
in this process and declares the rest: where its work runs, its warm-up, batches, per-pass
reporting, its context and prompt tokens, the token stream `switch` needs, and the GPU it runs
on."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeVar

from tradeoff.engines.emit import TextSink
from tradeoff.errors import UserError
from tradeoff.types import Generation, PromptMode, Request

if TYPE_CHECKING:
    from tradeoff.engines.stream import TokenStream

# An in-process engine reports each forward pass it runs for a request: (first position, tokens
# evaluated per row, rows in the batch). Meters weight the request's share of energy by it.
PassSink = Callable[[int, int, int], None]
T = TypeVar("T")


@dataclass(frozen=True)
class ModelShape:
    """The architecture numbers the analytic cost model needs (read from GGUF metadata or a
    Hugging Face config)."""

    n_params: int
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    vocab: int
    gated_ffn: bool = True
    # Bytes of all weight tensors as stored (what memory holds; a pass reads all but the rows of
    # an untied embedding it does not gather), None when unknown; and bytes per cached key or
    # value element (llama.cpp's default KV cache is f16).
    weight_bytes: int | None = None
    kv_bytes_per_value: int = 2
    # The positions it serves, where its metadata says: those it was trained for, as a rope
    # scaling (YaRN ...) stretches them.
    context: int | None = None
    # The weights' type ("bf16", "fp16" or "fp32"): which of a device's FLOP/s peaks applies;
    # None where mixed or unknown (a GGUF's quantized tensors).
    dtype: str | None = None
    # Bytes of an input embedding table not tied to the LM head (0 when tied, or unknown): a pass
    # gathers a few of its rows, where the LM head reads a tied table whole.
    embedding_bytes: int = 0
    # Positions a sliding-window attention sees (None: full attention everywhere); the roofline
    # counts full attention, and says so where a request runs past the window.
    sliding_window: int | None = None


@dataclass(frozen=True)
class ModelInfo:
    """A loaded model as tradeoff describes it in stores and tables."""

    ref: str  # as the user wrote it: "smollm2-135m", "gguf:/path.gguf", "openai:URL#name"
    kind: str  # "bundled", "gguf", "torch" or "openai"
    prompt_mode: PromptMode  # "chat" for instruction-tuned models, "completion" for base models
    description: str = ""
    path: str | None = None
    shape: ModelShape | None = None
    in_process: bool = True  # energy and memory of this process are the model's
    # The accelerator an in-process model runs on ("NVIDIA H100 80GB HBM3"), None for the host
    # CPU: its peaks give the model's roofline times.
    device: str | None = None


class Engine(Protocol):
    """Every engine: a model's description and one answer at a time, streamed to `on_text`."""

    info: ModelInfo

    async def agenerate(self, request: Request, on_text: TextSink | None = None) -> Generation:
        """Generate one answer. `on_text`, when given, receives the answer's text piece by piece
        as it is generated (possibly from another thread); the pieces join to the final text.
        Never raises for a failed request: the Generation carries the error."""
        ...

    async def aclose(self) -> None: ...


class InProcessEngine(ABC):
    """A model computed in this process (llama.cpp, PyTorch).

    All of an engine kind's work runs on one thread of its own (`executor`): llama.cpp's thread
    team and torch's CUDA graphs and caches belong to the thread that made them. When nothing
    else shares the event loop (a profile of in-process models only) the session sets `inline`,
    and calls run on the loop's thread instead: they are serialized anyway, and each hop to the
    worker thread and back costs about 0.4 ms on a small VM.
    """

    info: ModelInfo
    executor: ClassVar[ThreadPoolExecutor]
    # `generate_batch` decodes its requests as one batch (one prompt, n rows), not one by one.
    batches: ClassVar[bool] = False
    # `warm` does real work (compiling, capturing): worth telling the user it is under way.
    warm_takes_time: ClassVar[bool] = False
    inline: bool = False
    # Its chat template may refuse a conversation (`PromptRefused`): `serve` renders each chat
    # request's prompt before running it, to answer 400 rather than fail the model's call.
    template_refuses: bool = False
    # The GPU this model runs on, its UUID as NVML names it less "GPU-"; None on the CPU.
    gpu_uuid: str | None = None
    # The model's context: the most tokens a request's prompt and answer may take together.
    n_ctx: int

    @abstractmethod
    def generate(
        self, request: Request, on_text: TextSink | None = None, on_pass: PassSink | None = None
    ) -> Generation:
        """One answer, synchronously. `on_pass` hears of each forward pass. Never raises for a
        failed request: the Generation carries the error."""

    def generate_batch(
        self, requests: list[Request], on_pass: list[PassSink] | None = None
    ) -> list[Generation]:
        """Answers to requests that share one prompt (the draws of a vote)."""
        sinks: list[PassSink | None] = list(on_pass) if on_pass else [None] * len(requests)
        return [self.generate(r, None, sink) for r, sink in zip(requests, sinks)]

    @abstractmethod
    def prompt_tokens(self, request: Request) -> list[int]:
        """The token ids the model is fed for `request` (a chat template applied to messages),
        its `prefix` included: a prompt fits when these and `max_tokens` fit in `n_ctx`."""

    @abstractmethod
    def token_stream(self, request: Request) -> TokenStream:
        """The model's own context for token-level strategies (`switch`)."""

    @abstractmethod
    def is_end(self, token: int) -> bool:
        """Whether `token` ends the answer (end of sequence or of turn)."""

    @abstractmethod
    def warm(self, batch_sizes: list[int], stopped: Callable[[], bool] = lambda: False) -> None:
        """Build whatever a request of each batch size would otherwise pay for once (caches,
        compiled and captured steps), so that no request's time includes it. Runs where the
        requests will run (`run_sync`); gives up, half done, once `stopped()` (a Ctrl-C)."""

    @abstractmethod
    def close(self) -> None:
        """Free the model."""

    async def run_sync(self, fn: Callable[[], T]) -> T:
        """Run `fn` where this engine's work runs: inline, or on its thread."""
        if self.inline:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def agenerate(
        self, request: Request, on_text: TextSink | None = None, on_pass: PassSink | None = None
    ) -> Generation:
        return await self.run_sync(lambda: self.generate(request, on_text, on_pass))

    async def agenerate_batch(
        self, requests: list[Request], on_pass: list[PassSink] | None = None
    ) -> list[Generation]:
        return await self.run_sync(lambda: self.generate_batch(requests, on_pass))

    async def aclose(self) -> None:
        """Free the model on its own thread, after the work queued there: a generation whose
        request was cancelled (its client gone) may still be running, and freeing the model
        under it crashed the process (a segfault as `tradeoff serve` stopped)."""
        await self.run_sync(self.close)


def refuse_repeated_options(ref: str, keys: list[str]) -> None:
    """A model reference's `?options` each given once: given twice, the last would win silently."""
    twice = next((key for key in keys if keys.count(key) > 1), None)
    if twice is not None:
        raise UserError(f"model '{ref}': {twice} is given twice; give it once")
