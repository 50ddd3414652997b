"""The options `profile` and `load` share, declared once (typer reads them from the annotations)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SpecFile = Annotated[Path | None, typer.Argument(help="Run spec (YAML). Or use the flags.")]
Models = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        "-m",
        help="Model: a bundled name, gguf:PATH, torch:DIR, torch:CONFIG or openai:URL#MODEL, "
        "each with its ?options (`tradeoff models` lists them). Repeatable.",
    ),
]
Limit = Annotated[int | None, typer.Option(help="Items per task (default: all).")]
Temperature = Annotated[
    float | None,
    typer.Option(
        help="Sampling temperature (the spec's sampling.temperature; an entry's own temperature "
        "wins, and a route answers at its policy's)."
    ),
]
MaxTokens = Annotated[
    int | None,
    typer.Option(
        help="Most output tokens per request (the spec's sampling.max_tokens; an entry's own "
        "max_tokens wins, and a route answers at its policy's)."
    ),
]
Timeout = Annotated[
    float | None,
    typer.Option(
        help="Seconds to wait for the connection and for each piece of an answer (openai "
        "engine; default 120); a long answer that keeps streaming is not cut.",
    ),
]
Out = Annotated[Path | None, typer.Option("--out", "-o", help="Run directory to create.")]
ApiKey = Annotated[
    str | None, typer.Option(help="API key for openai: models (default $OPENAI_API_KEY).")
]
Processes = Annotated[
    str | None,
    typer.Option(
        help="Processes sending requests to openai: servers (N or auto; the spec's `processes`). "
        "auto: profile, one per 32 requests in flight; load, one per 250 requests/s of a rate "
        "or 32 in flight of a load point; at most one per core.",
    ),
]


def processes_value(text: str | None) -> int | str | None:
    """--processes as the spec takes it: a number, or "auto" (checked there)."""
    return int(text) if text and text.isascii() and text.isdigit() else text


RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="WHERE",
        help="Run on a Ray cluster: auto (the one `ray start` began on this machine), local "
        "(start one here for this run) or its address (needs pip install 'tradeoff\\[ray]'). "
        "Overrides the spec's `executor: {ray: {address}}`; off runs here whatever the spec "
        "says (e.g. to resume a Ray run without Ray).",
    ),
]


def given_options(ctx: typer.Context, *allowed: str) -> list[str]:
    """The options of the command of `ctx` given on its command line, other than `allowed`
    (parameter names), as a user typed them (their first flag). Compared by name: typer may
    carry its own copy of click, whose enums are not the installed click's."""
    return [
        p.opts[0]
        for p in ctx.command.params
        if p.param_type_name == "option"
        and p.name not in allowed
        and getattr(ctx.get_parameter_source(str(p.name)), "name", None) == "COMMANDLINE"
    ]
