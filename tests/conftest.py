"""Shared fixtures: the real bundled models, a CLI runner, free loopback ports."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def _no_calibration(tmp_path_factory):
    """Tests see no calibration of this machine unless they make one (a developer's own
    ~/.cache/tradeoff/calibration.json would otherwise change what reports show)."""
    os.environ["TRADEOFF_CALIBRATION"] = str(tmp_path_factory.mktemp("cal") / "none.json")


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


class Served:
    """A running `tradeoff serve` process: its base URL (`http://127.0.0.1:PORT/v1`), its
    process, and what it has written to stderr once stopped (`stop()`)."""

    def __init__(self, proc: subprocess.Popen, url: str, lines: list[str]):
        self.proc = proc
        self.url = url
        self.lines = lines

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send `sig`, wait for the exit; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        assert self.proc.stderr is not None
        self.lines += self.proc.stderr.read().splitlines()
        self.proc.stderr.close()
        return code


@contextlib.contextmanager
def serve_process(*args: str, timeout: float = 120) -> Iterator[Served]:
    """Run `tradeoff serve --port 0 ARGS` until it listens; yields it; stops it (SIGTERM)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradeoff", "serve", "--port", "0", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    url = None
    while url is None:
        line = proc.stderr.readline()
        if not line:
            proc.wait(timeout)
            raise AssertionError(f"tradeoff serve exited {proc.returncode}: {lines}")
        lines.append(line.rstrip("\n"))
        match = re.search(r" at (http://\S+/v1) ", line)
        if match:
            url = match.group(1)
        assert time.monotonic() < deadline, lines
    served = Served(proc, url, lines)
    try:
        yield served
    finally:
        if proc.poll() is None:
            served.stop()


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
