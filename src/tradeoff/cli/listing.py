"""`tradeoff models` and `tradeoff tasks`: what can run with no network, and how to name more."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from tradeoff.cli.output import ListFormat, console, write_json


def models(
    format: Annotated[ListFormat, typer.Option("--format", "-f")] = ListFormat.table,
) -> None:
    """The models available with no network, and how to name others.

    The bundled models, and the shipped architecture shapes for the torch engine.
    """
    from tradeoff.engines import list_models

    listing = list_models()
    if format is ListFormat.json:
        write_json([asdict(m) for m in listing])
        return
    width = max(len(m.name) for m in listing)
    for m in listing:
        console.print(
            f"{m.name:<{width}} {m.prompt_mode:<10} {m.description} [{m.detail}]", markup=False
        )
    console.print(
        "also: gguf:PATH (any local GGUF file), torch:HF_DIR (a Hugging Face model directory), "
        "openai:BASE_URL#MODEL (any OpenAI-compatible server)",
        style="dim",
    )


def tasks(
    format: Annotated[ListFormat, typer.Option("--format", "-f")] = ListFormat.table,
) -> None:
    """The built-in tasks (and how to name your own)."""
    from tradeoff.tasks import builtin_tasks

    listing = builtin_tasks()
    if format is ListFormat.json:
        write_json([asdict(t) for t in listing])
        return
    for t in listing:
        console.print(f"{t.name:<8} {t.n_items:>4} items  scorer {t.scorer:<8} {t.description}")
    console.print(
        "also: jsonl:PATH (fields prompt|messages, answer), "
        "hf:NAME[:CONFIG][:SPLIT] (local datasets), "
        "synthetic:prompt=N,output=N[,stdev=S][,seed=K][,n=M] (unscored load)",
        style="dim",
    )
