"""What every engine offers: a description of its model and an async `agenerate`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from tradeoff.engines.emit import TextSink
from tradeoff.types import Generation, PromptMode, Request

# An in-process engine reports each forward pass it runs for a request: (first position, tokens
# evaluated per row, rows in the batch). Meters weight the request's share of energy by it.
PassSink = Callable[[int, int, int], None]


@dataclass(frozen=True)
class ModelShape:
    """The architecture numbers the analytic cost model needs (read from GGUF metadata)."""

    n_params: int
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    vocab: int
    gated_ffn: bool = True
    # Bytes of all weight tensors as stored (read once per forward pass), None when unknown; and
    # bytes per cached key or value element (llama.cpp's default KV cache is f16).
    weight_bytes: int | None = None
    kv_bytes_per_value: int = 2


@dataclass(frozen=True)
class ModelInfo:
    """A loaded model as tradeoff describes it in stores and tables."""

    ref: str  # as the user wrote it: "smollm2-135m", "gguf:/path.gguf", "openai:URL#name"
    kind: str  # "bundled", "gguf" or "openai"
    prompt_mode: PromptMode  # "chat" for instruction-tuned models, "completion" for base models
    description: str = ""
    path: str | None = None
    shape: ModelShape | None = None
    in_process: bool = True  # energy and memory of this process are the model's
    # The accelerator an in-process model runs on ("NVIDIA H100 80GB HBM3"), None for the host
    # CPU: its peaks give the model's roofline times.
    device: str | None = None


class Engine(Protocol):
    info: ModelInfo

    async def agenerate(self, request: Request, on_text: TextSink | None = None) -> Generation:
        """Generate one answer. `on_text`, when given, receives the answer's text piece by piece
        as it is generated (possibly from another thread); the pieces join to the final text."""
        ...

    async def aclose(self) -> None: ...
