"""Engines run one model each. A model reference picks the engine:

- a bundled name (`smollm2-135m`, `gemma3-270m`): in-process llama.cpp on the packaged GGUF;
- `gguf:PATH`: in-process llama.cpp on any local GGUF file;
- `torch:CONFIG_OR_DIR[?options]`: in-process PyTorch on a Hugging Face directory, or on a shipped
  architecture config with `random_weights=1` (GPU profiling with no weights on the machine);
- `openai:BASE_URL#MODEL`: any OpenAI-compatible server (vLLM, SGLang, llama.cpp, TGI, Ollama, ...);
  add `@completion` after MODEL to use `/v1/completions` with few-shot prompts (base models).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tradeoff.engines.base import Engine, InProcessEngine, ModelInfo
from tradeoff.engines.bundled import BUNDLED, bundled_path
from tradeoff.errors import UserError
from tradeoff.types import PromptMode


@dataclass(frozen=True)
class ModelListing:
    name: str
    kind: str
    prompt_mode: str
    description: str
    available: bool
    detail: str


def list_models() -> list[ModelListing]:
    """The bundled models and the shipped architecture shapes (torch engine, random weights),
    and whether what each needs is installed."""
    out = []
    for m in BUNDLED.values():
        try:
            from importlib.util import find_spec

            available = find_spec(m.package.replace("-", "_")) is not None
        except (ImportError, ValueError):
            available = False
        detail = "installed" if available else f"not installed: pip install {m.package}"
        out.append(ModelListing(m.name, "bundled", m.prompt_mode, m.description, available, detail))
    from importlib.util import find_spec

    from tradeoff.engines.hf_config import load_hf_config, shape_from_hf_config, shipped_configs

    has_torch = find_spec("torch") is not None
    for name in shipped_configs():
        shape = shape_from_hf_config(load_hf_config(name), "bf16")
        out.append(
            ModelListing(
                f"torch:{name}?random_weights=1",
                "torch",
                "completion",
                f"the {name} architecture ({shape.n_params / 1e9:.2f} B parameters), "
                "random weights",
                has_torch,
                "installed" if has_torch else "needs PyTorch: pip install 'tradeoff[torch]'",
            )
        )
    return out


def _unknown(ref: str) -> UserError:
    return UserError(
        f"model '{ref}' is not known; bundled: {', '.join(BUNDLED)}; "
        "or give gguf:PATH to a .gguf file, torch:CONFIG_OR_DIR[?random_weights=1] for PyTorch, "
        "or openai:BASE_URL#MODEL for a server"
    )


def parse_openai_ref(ref: str) -> tuple[str, str, PromptMode]:
    """`openai:BASE_URL#MODEL[@completion]` -> (base_url, model, prompt_mode)."""
    body = ref[len("openai:") :]
    if "#" not in body or not body.split("#", 1)[1]:
        raise UserError(f"model '{ref}' needs a served model name: openai:BASE_URL#MODEL")
    base_url, model = body.split("#", 1)
    mode: PromptMode = "chat"
    if model.endswith("@completion"):
        model, mode = model[: -len("@completion")], "completion"
    if not base_url.startswith(("http://", "https://")):
        raise UserError(f"model '{ref}': BASE_URL must start with http:// or https://")
    return base_url, model, mode


def check_ref(ref: str) -> None:
    """Fail early, without loading anything, on a reference that cannot work."""
    if ref in BUNDLED:
        return
    if ref.startswith("gguf:"):
        path = Path(ref[5:]).expanduser()
        if not path.is_file():
            raise UserError(f"model '{ref}': file {path} does not exist")
        return
    if ref.startswith("openai:"):
        parse_openai_ref(ref)
        return
    if ref.startswith("torch:"):
        from importlib.util import find_spec

        if find_spec("torch") is None:
            raise UserError(f"model '{ref}' needs PyTorch: pip install 'tradeoff[torch]'")
        from tradeoff.engines.torch_engine import check_torch_ref

        check_torch_ref(ref)
        return
    raise _unknown(ref)


async def open_engine(
    ref: str,
    *,
    api_key: str | None = None,
    timeout_s: float = 120.0,
    extra_body: dict[str, Any] | None = None,
    check: bool = True,
) -> Engine:
    """Load (or connect to) the model `ref` names. Loading happens once per run. `check`: ask a
    server whether it answers first (not again where another process already has)."""
    check_ref(ref)
    if ref.startswith("openai:"):
        from tradeoff.engines.openai import OpenAIEngine

        base_url, model, mode = parse_openai_ref(ref)
        engine = OpenAIEngine(
            base_url,
            model,
            api_key=api_key or os.environ.get("OPENAI_API_KEY"),
            timeout_s=timeout_s,
            prompt_mode=mode,
            ref=ref,
            extra_body=extra_body,
        )
        if not check:
            return engine
        try:
            await engine.check()
        except BaseException:
            await engine.aclose()
            raise
        return engine

    if extra_body:
        raise UserError(f"model '{ref}': extra_body applies to openai: models only")
    if ref.startswith("torch:"):
        from tradeoff.engines.torch_engine import TorchEngine

        return TorchEngine(ref)
    from tradeoff.engines.llamacpp import LlamaCppEngine

    if ref in BUNDLED:
        bundled = BUNDLED[ref]
        return LlamaCppEngine(
            bundled_path(ref),
            ref=ref,
            kind="bundled",
            prompt_mode=bundled.prompt_mode,
            description=bundled.description,
        )
    return LlamaCppEngine(Path(ref[5:]).expanduser(), ref=ref, kind="gguf")


__all__ = ["Engine", "InProcessEngine", "ModelInfo", "check_ref", "list_models", "open_engine"]
