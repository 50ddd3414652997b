"""What the benchmark scripts' Markdown sections for benchmarks/RESULTS.md share: tables,
verdicts against a target, and where and on which tree a figure was measured."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def loadavg() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def commit() -> str:
    """This tree's commit, and whether tracked files differ from it."""

    def git(*args: str) -> str:
        found = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True)
        return found.stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + (" with uncommitted changes" if dirty else "")
