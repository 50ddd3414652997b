"""A server that fails some requests mid-run: those records carry the error, the run goes on,
and the summary counts them. The server is benchmarks/fast_server.py on loopback, told to answer
every third generation with HTTP 500."""

import contextlib
import json
import resource
import signal

import pytest
from conftest import fast_server, run_cli


@pytest.fixture
def flaky_server():
    yield from fast_server("--fail-every", "3")


def test_failed_requests_are_stored_counted_and_the_run_goes_on(tmp_path, flaky_server):
    out = tmp_path / "run"
    result = run_cli(
        "profile",
        "--model",
        f"openai:{flaky_server}#fast",
        "--task",
        "arith",
        "--limit",
        "9",
        "--concurrency",
        "1",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    # the table counts them; a line says why, with the first error
    assert "fast: 3 of 9 requests failed; the first: " in result.stderr, result.stderr
    assert "HTTP 500" in result.stderr and "every request" not in result.stderr
    summary = json.loads(run_cli("report", str(out), "--format", "json").stdout)
    assert summary[0]["n"] == 9 and summary[0]["errors"] == 3
    records = json.loads(run_cli("report", str(out), "--records", "--format", "json").stdout)
    failed = [r for r in records if r["error"]]
    assert len(failed) == 3
    assert all("HTTP 500" in r["error"] and r["score"] == 0.0 for r in failed)
    assert all(r["output"] for r in records if not r["error"])


def test_a_run_whose_every_request_failed_exits_1_saying_why(tmp_path):
    with contextlib.contextmanager(fast_server)("--fail-every", "1") as url:
        result = run_cli("profile", "--model", f"openai:{url}#fast", "--task", "arith",
                         "--limit", "3", "--out", str(tmp_path / "run"))  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "fast: 3 of 3 requests failed; the first: " in result.stderr, result.stderr
    assert "every request of this session failed" in result.stderr
    assert "errors" in result.stdout  # the summary is printed all the same
    # on the frontier it is cheapest (it fails at once): starred, and worth nothing, said so
    frontier = run_cli("frontier", str(tmp_path / "run"))
    assert "warning: every query of fast failed" in frontier.stdout, frontier.stdout


def test_a_stream_that_broke_after_some_text_is_a_failed_request(tmp_path):
    """The upstream drops the connection after two words: the record keeps them, with the
    error (the request counted as answered, errors 0, before)."""
    with contextlib.contextmanager(fast_server)() as url:
        result = run_cli("profile", "--model", f"openai:{url}#fail-drop", "--task", "arith",
                         "--limit", "3", "--out", str(tmp_path / "run"))  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "fail-drop: 3 of 3 requests failed; the first: " in result.stderr, result.stderr
    records = json.loads(
        run_cli("report", str(tmp_path / "run"), "--records", "--format", "json").stdout
    )
    assert [(r["output"], r["score"]) for r in records] == [("The answer", 0.0)] * 3
    assert all(r["error"] for r in records), records


def _files_up_to(size: int):
    """A limit on the size of any file the process writes (RLIMIT_FSIZE): past it a write fails
    (EFBIG), as it would on a full disk."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def test_a_store_that_cannot_be_made_leaves_nothing_behind(tmp_path):
    """The disk full as the store is made: one line, and no half-made store that neither
    --resume nor a new run could use (each told to use the other)."""
    out = tmp_path / "run"
    result = run_cli("profile", "-m", "smollm2-135m", "-t", "arith", "--limit", "2",
                     "--out", str(out), preexec_fn=_files_up_to(4096))  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot create the run store in {out}: " in result.stderr
    assert not out.exists()


def test_a_store_that_fills_up_mid_run_says_how_to_go_on(tmp_path):
    """The disk full mid-run: one line naming what to do (it was two tracebacks); the records
    committed before are kept, and --resume completes the run."""
    out = tmp_path / "run"
    result = run_cli("profile", "-m", "smollm2-135m", "-t", "arith", "--limit", "6",
                     "--max-tokens", "4", "--out", str(out),
                     preexec_fn=_files_up_to(200_000))  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"the run store in {out} could not be written: " in result.stderr
    assert f"continue with tradeoff profile --resume {out}" in result.stderr
    resumed = run_cli("profile", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    records = json.loads(run_cli("report", str(out), "--records", "--format", "json").stdout)
    assert sorted(r["item_id"] for r in records) == [f"arith-{i:04d}" for i in range(6)]
