"""What the benchmark scripts' Markdown sections for benchmarks/RESULTS.md share: tables,
verdicts against a target, and where and on which tree a figure was measured (and the PYTHONPATH
that has a child process run that tree)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def loadavg() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def pythonpath(src: Path = SRC) -> str:
    """`src` (this tree's unless another version's is given) first, then whatever PYTHONPATH
    already holds (a machine's extra packages): a child process runs the tree its figures are
    labelled with, not whichever tradeoff the caller's environment imports."""
    return os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p)


def commit() -> str:
    """This tree's commit, and whether tracked files differ from it; "unknown" and why where git
    cannot tell (git not installed, or not a checkout: an sdist, a `git archive`)."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True)

    try:
        head = git("rev-parse", "--short", "HEAD")
    except OSError:
        return "unknown (git not found)"
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    return head.stdout.strip() + (" with uncommitted changes" if dirty else "")
