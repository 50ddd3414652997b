"""The scripts under benchmarks/ at their smallest settings: what they print about a run, not the
figures they measure (those are RESULTS.md's, on a quiet machine)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import REPO, fast_server

BENCHMARKS = REPO / "benchmarks"


@pytest.fixture
def benchmarks_importable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The scripts import their neighbours (section, bench_router_features) as top-level
    modules, as they do when run from benchmarks/."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    yield


def test_bench_routers_draws_every_question_of_a_cut_smaller_than_its_samples(
    benchmarks_importable: None,
) -> None:
    """A cut of fewer than 50 questions (--subjects 2 --limit 10) crashed in numpy before it
    measured anything: the encoder's check drew 50 prompts without replacement."""
    from bench_routers import draw

    check, single = draw(20)
    assert sorted(check) == list(range(20))
    assert sorted(single) == list(range(20))


def roofline_embedding(script: Path, path: str) -> subprocess.CompletedProcess[str]:
    """benchmarks/roofline_embedding.py (arithmetic only, so quick) on one recorded figure, its
    section ending with the tree it ran on; `path`: the PATH it runs with."""
    env = {**os.environ, "PATH": path}
    args = [sys.executable, str(script), "llama-3.1-8b:1:241.1:263.3"]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)


def test_section_without_git_names_the_tree_unknown(tmp_path: Path) -> None:
    """Without git on PATH, every script's section was lost at its last line: a traceback
    (FileNotFoundError: 'git'), after the whole run's measuring."""
    done = roofline_embedding(BENCHMARKS / "roofline_embedding.py", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "| llama-3.1-8b | 1 |" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "Tree unknown (git not found)."


def test_section_outside_a_git_checkout_names_the_tree_unknown(tmp_path: Path) -> None:
    """Run from a tree that is not a git checkout (an sdist, a `git archive`), a section named a
    blank tree ("Tree **.**"), read as a formatting slip."""
    for name in ("roofline_embedding.py", "section.py"):
        shutil.copy(BENCHMARKS / name, tmp_path / name)
    done = roofline_embedding(tmp_path / "roofline_embedding.py", os.environ["PATH"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "Tree unknown (not a git checkout)."


def test_bench_harness_before_states_the_requests_each_run_made() -> None:
    """--before stated the requests asked for (100), not the 120 each run made: arith's 60 items
    are run whole, 2 samples each."""
    args = ["--before", str(REPO / "src"), "--rounds", "1", "--requests", "100"]
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_harness.py"), *args, "--concurrency", "4"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "fast_server.py, 120 requests of 4 tokens at concurrency 4" in done.stdout


# The scripts whose description runs past its docstring's first line; not gpu_check_logits, which
# imports torch before it parses (some 9 s).
DESCRIBED = [
    "bench_harness.py",
    "bench_intervals.py",
    "bench_load.py",
    "bench_ray.py",
    "bench_report.py",
    "bench_router_embedders.py",
    "bench_router_features.py",
    "bench_routers.py",
    "gpu_meter_check.py",
]


@pytest.mark.parametrize("script", DESCRIBED)
def test_help_describes_the_script_in_its_docstrings_whole_first_paragraph(script: str) -> None:
    """--help cut the description after the docstring's first line, mid-sentence ("... and the
    rate at which")."""
    path = BENCHMARKS / script
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring is not None
    done = subprocess.run(
        [sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    # argparse wraps the text at spaces and hyphens: compare without any whitespace
    first = "".join(docstring.split("\n\n")[0].split())
    assert first in "".join(done.stdout.split())


def test_bench_serve_serves_this_trees_tradeoff_whatever_the_environment_imports(
    benchmarks_importable: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench_serve labelled its served rows "this tree" but started whichever `tradeoff` the
    caller's environment imported (another checkout's, an installed one): here a stand-in
    package on PYTHONPATH that only says what it is."""
    from bench_serve import start_tradeoff

    other = tmp_path / "other" / "tradeoff"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    (other / "__main__.py").write_text("import sys\nprint('another tradeoff', file=sys.stderr)\n")
    monkeypatch.setenv("PYTHONPATH", str(other.parent))
    upstream = fast_server()
    url = next(upstream)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"models:\n  fast: 'openai:{url}#fast'\ntasks: [arith]\n")
    try:
        proc, served = start_tradeoff(spec, tmp_path / "run")
        try:
            assert httpx.get(f"{served}/v1/models", timeout=30).status_code == 200
        finally:
            proc.terminate()
            proc.wait(60)
    finally:
        upstream.close()
