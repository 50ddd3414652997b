"""Shared fixtures: the real bundled models, a CLI runner, free loopback ports, `tradeoff serve`
processes (and one shared by the test_serve_* files, in front of a canned upstream)."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def _no_calibration(tmp_path_factory):
    """Tests see no calibration of this machine unless they make one (a developer's own
    ~/.cache/tradeoff/calibration.json would otherwise change what reports show)."""
    os.environ["TRADEOFF_CALIBRATION"] = str(tmp_path_factory.mktemp("cal") / "none.json")


def run_cli(
    *args: str,
    cwd: Path | None = None,
    timeout: float = 600,
    wrapper: tuple[str, ...] = (),
    **kw,
) -> subprocess.CompletedProcess:
    """Run `python -m tradeoff ARGS` in a fresh process, as a user would; `wrapper`: a command
    that runs it (`setpriv ...`)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.run(
        [*wrapper, sys.executable, "-m", "tradeoff", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        **kw,
    )


def run_cli_unable_to_write(path: Path, *args: str) -> subprocess.CompletedProcess:
    """`run_cli` by a user who cannot write `path`, a directory or a file (a read-only mount,
    another user's run): its mode takes write permission away, and root, which writes whatever
    the mode says, runs without the capabilities that override modes."""
    drop = "-dac_override,-dac_read_search,-fowner"
    unprivileged = ("setpriv", "--bounding-set", drop, "--inh-caps", drop)
    mode = path.stat().st_mode
    path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        return run_cli(*args, wrapper=unprivileged if os.geteuid() == 0 else ())
    finally:
        path.chmod(mode)


def fitted_policy(root: Path, limit: int, max_tokens: int, cost: str) -> Path:
    """A policy file between the two bundled models (`small`, `large`), half the queries to the
    larger, fitted by `tradeoff policy fit` on a run of both over `limit` arith items."""
    from tradeoff.config import parse_spec
    from tradeoff.runner import profile

    models = {"small": "smollm2-135m", "large": "gemma3-270m"}
    sampling = {"max_tokens": max_tokens}
    spec = parse_spec({"tasks": ["arith"], "limit": limit, "sampling": sampling, "models": models})
    assert profile(spec, root / "records", notify=lambda m: None).errors == 0
    path = root / "router.json"
    fit = run_cli(
        "policy", "fit", str(root / "records"), "--configs", "small,large",
        "--strong-fraction", "0.5", "--cost", cost, "-o", str(path),
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    return path


FAST_SERVER = REPO / "benchmarks" / "fast_server.py"


def records_so_far(run_dir: Path) -> int:
    """How many records a run being written holds: 0 until its store exists and has its
    tables (the writer creates the file a moment before its schema)."""
    if not (run_dir / "tradeoff.sqlite").exists():
        return 0
    con = sqlite3.connect(run_dir / "tradeoff.sqlite")
    try:
        return int(con.execute("SELECT COUNT(*) FROM records").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """The CLI refused with exit 2 and one line on stderr holding every needle."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def import_outcomes(directory: Path, rows: list[tuple[Any, ...]], *extra: str) -> Path:
    """A run directory made by `tradeoff import outcomes` from rows of (prompt, weak correct,
    strong correct, *extra columns kept with each item); weak costs 0.1 a query, strong 1.0."""
    path = directory / "outcomes.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "weak_correct", "strong_correct", *extra])
        writer.writerows(rows)
    out = directory / "run"
    made = run_cli(
        "import", "outcomes", str(path), "--prompt-col", "prompt",
        "--model", "weak=weak_correct,cost=0.1", "--model", "strong=strong_correct,cost=1.0",
        "--out", str(out),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return out


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
    """A running `tradeoff serve`: its base URL (`http://127.0.0.1:PORT/v1`), its process, its
    run directory (`--out`), and the lines it writes to stderr, read as they come (a full pipe
    would block the server)."""

    def __init__(self, proc: subprocess.Popen, url: str, lines: list[str], out: Path | None):
        self.proc = proc
        self.url = url
        self.lines = lines
        self.out = out
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 300) -> int:
        """Send `sig` (unless it has exited), wait for the exit and its last lines; the exit code.
        `timeout` only bounds a server that never stops."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code


@contextlib.contextmanager
def serve_process(*args: str, timeout: float = 300) -> Iterator[Served]:
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
    out = Path(args[args.index("--out") + 1]) if "--out" in args else None
    served = Served(proc, url, lines, out)
    try:
        yield served
    finally:
        served.stop()
        proc.stderr.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def static_files(root: Path) -> Iterator[str]:
    """Python's http.server on `root` (its listing is HTML), on loopback: its URL once it
    answers, the server stopped after."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    try:
        while True:
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline and proc.poll() is None, "http.server did not answer"
            time.sleep(0.1)
        yield url
    finally:
        proc.kill()
        proc.wait()


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


@pytest.fixture(scope="session")
def canned_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`tradeoff serve` with tight limits (serve_support.LIMIT_FLAGS) in front of
    benchmarks/fast_server.py, one for all the test_serve_* files. Once the last of them is done
    it must still answer, then stop cleanly: exit 0, no traceback, every request it served
    stored (checked here, at the end of the session, whatever tests ran)."""
    from serve_support import LIMIT_FLAGS, assert_stopped_cleanly, running

    with running(tmp_path_factory.mktemp("serve"), *LIMIT_FLAGS) as served:
        yield served
        assert httpx.get(f"{served.root}/health", timeout=60).json()["status"] == "ok"
        assert_stopped_cleanly(served)


@pytest.fixture(scope="session")
def client(canned_server: Served) -> Iterator[httpx.Client]:
    """An HTTP client of canned_server that sends its API key."""
    from serve_support import AUTH

    with httpx.Client(base_url=canned_server.root, headers=AUTH, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def anonymous(canned_server: Served) -> Iterator[httpx.Client]:
    """An HTTP client of canned_server that sends no API key."""
    with httpx.Client(base_url=canned_server.root, timeout=60) as c:
        yield c
