"""`tradeoff serve`: a configuration or a fitted policy behind an OpenAI-compatible endpoint, every
served request stored as a record."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tradeoff.errors import UserError


def serve(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Run directory for the served requests' records "
            "(created, or a previous serve's directory to append to).",
        ),
    ],
    policy: Annotated[
        Path | None, typer.Option(help="Serve this fitted policy (from `policy fit`).")
    ] = None,
    spec_file: Annotated[
        Path | None,
        typer.Option(
            "--spec",
            help="Serve configurations of this spec (default: the demo's, on the bundled models).",
        ),
    ] = None,
    config: Annotated[
        list[str] | None,
        typer.Option(
            "--config",
            "-c",
            help="A configuration of the spec to serve, by name "
            "(repeatable; default: all of them).",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="The model name clients use for --policy (default: the file's stem)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="TRADEOFF_API_KEY",
            show_envvar=True,
            help="Clients must send 'Authorization: Bearer KEY'.",
        ),
    ] = None,
    upstream_api_key: Annotated[
        str | None, typer.Option(help="API key for openai: upstreams (default $OPENAI_API_KEY).")
    ] = None,
    max_concurrency: Annotated[
        int, typer.Option(help="Requests in flight at once; beyond it, 429.")
    ] = 64,
    max_body_bytes: Annotated[
        int, typer.Option(help="Largest request body; beyond it, 413.")
    ] = 1_048_576,
    max_tokens_limit: Annotated[
        int, typer.Option(help="Largest max_tokens a request may ask for; beyond it, 422.")
    ] = 4096,
    max_connections: Annotated[
        int,
        typer.Option(
            help="Open connections served at once; a request on one opened past them gets 503.",
        ),
    ] = 1024,
    request_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds a client has to send a request's head (else the connection closes) "
            "and its body (else 408).",
        ),
    ] = 30.0,
) -> None:
    """Serve a configuration or a policy behind an OpenAI-compatible endpoint.

    Endpoints: POST /v1/chat/completions and /v1/completions (streamed or not), GET /v1/models
    and /v1/models/{model}, /health, /metrics (Prometheus) and /openapi.json. The request's
    `model` names what runs: a configuration of the spec, or the policy. Every served request is
    stored as a record in --out, so `tradeoff report` and `tradeoff frontier` work on live
    traffic. A client that goes away cancels its generation (stored as `client disconnected`).
    Ctrl-C or SIGTERM finish the requests in flight, then stop.
    """
    from tradeoff.config import load_spec
    from tradeoff.demo import demo_spec
    from tradeoff.serve import Limits, ServeOptions, served_configs
    from tradeoff.serve import serve as run_server

    if policy is not None and (spec_file is not None or config):
        raise UserError("give either --policy or --spec/--config, not both")
    if name is not None and policy is None:
        raise UserError("--name names a --policy; configurations are served under their names")
    if name is not None and not name.strip():
        raise UserError("--name is empty; give the model name clients will ask for")
    if api_key is None:  # click takes an empty variable as unset
        api_key = os.environ.get("TRADEOFF_API_KEY")
    if api_key is not None and not api_key.strip():  # "$KEY" of a variable that is not set
        raise UserError(
            "--api-key (or $TRADEOFF_API_KEY) is empty: the server would take any client; give "
            "a key, or leave both unset to serve without one"
        )
    spec = None
    if policy is None:
        spec = load_spec(spec_file) if spec_file is not None else demo_spec()
    served = served_configs(spec, config or [], policy, name)
    source: dict[str, Any] = (
        {"policy": str(policy.resolve())}
        if policy is not None
        else {"spec": str(spec_file.resolve()) if spec_file else "demo"}
    )
    logging.basicConfig(format="tradeoff serve: %(levelname)s %(message)s", stream=sys.stderr)
    options = ServeOptions(
        host=host,
        port=port,
        api_key=api_key,
        upstream_api_key=upstream_api_key or os.environ.get("OPENAI_API_KEY"),
        limits=Limits(
            max_concurrency, max_body_bytes, max_tokens_limit, max_connections, request_timeout
        ),
    )
    run_server(served, spec, out, source=source, options=options)
