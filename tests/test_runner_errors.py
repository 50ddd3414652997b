"""A server that fails some requests mid-run: those records carry the error, the run goes on,
and the summary counts them. The server is benchmarks/fast_server.py on loopback, told to answer
every third generation with HTTP 500."""

import contextlib
import json

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
