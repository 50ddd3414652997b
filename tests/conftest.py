"""Shared fixtures: the real bundled models, a CLI runner, free loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 600, **kw
) -> subprocess.CompletedProcess:
    """Run `python -m tradeoff ARGS` in a fresh process, as a user would."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "tradeoff", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        **kw,
    )


FAST_SERVER = REPO / "benchmarks" / "fast_server.py"


def fast_server(*flags: str) -> Iterator[str]:
    """Run benchmarks/fast_server.py (a canned OpenAI-compatible streaming server) on a free
    loopback port; yields its base URL (`http://127.0.0.1:PORT/v1`), kills it afterwards."""
    proc = subprocess.Popen(
        [sys.executable, str(FAST_SERVER), "--port", "0", *flags], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()  # printed once the socket accepts connections
    assert line.startswith("listening on "), line
    try:
        yield line.removeprefix("listening on ")
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def smollm():
    from tradeoff.engines.bundled import bundled_path
    from tradeoff.engines.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(bundled_path("smollm2-135m"), ref="smollm2-135m", kind="bundled")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def gemma():
    from tradeoff.engines.bundled import bundled_path
    from tradeoff.engines.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(
        bundled_path("gemma3-270m"), ref="gemma3-270m", kind="bundled", prompt_mode="completion"
    )
    yield engine
    engine.close()
