"""`tradeoff report DIR --html`: one self-contained page of a real run (the bundled models),
rendered in headless Chromium with no network: every chart draws, none fails, the summary table
sorts."""

from __future__ import annotations

import re

import pytest
from browser import chart_drawn, render, screenshot, script_errors
from conftest import run_cli

CHARTS = ("frontier", "by-task", "latency")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "run"
    result = run_cli(
        "profile", "-m", "smollm2-135m", "-m", "gemma3-270m", "-t", "arith", "-t", "facts",
        "--limit", "3", "--max-tokens", "16", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


def test_the_report_is_one_self_contained_page_and_every_chart_draws(run_dir):
    result = run_cli("report", str(run_dir), "--html")
    assert result.returncode == 0, result.stderr
    page = run_dir / "report.html"
    assert f"wrote {page}" in result.stderr
    markup = re.sub(r"<script>.*?</script>", "", page.read_text(), flags=re.S)
    assert "<script" not in markup, "every script is inline, with no src"
    assert not re.search(r"<[a-z]+[^>]*\s(src|href)=", markup), "nothing loaded from outside"
    dom = render(page)
    assert script_errors(dom) == ""
    for chart in CHARTS:
        assert chart_drawn(dom, chart), f"{chart} did not draw"
    for name in ("smollm2-135m", "gemma3-270m"):
        assert name in dom
    screenshot(page, run_dir / "report.png")


def test_another_path_and_bad_input_are_one_line(run_dir, tmp_path):
    elsewhere = tmp_path / "r.html"
    ok = run_cli("report", str(run_dir), "--html", "-o", str(elsewhere))
    assert ok.returncode == 0 and elsewhere.stat().st_size > 0, ok.stderr
    for args, needle in (
        ([str(tmp_path / "nothing"), "--html"], "nothing"),
        ([str(run_dir), "--html", "-o", str(tmp_path / "no" / "r.html")], "no"),
        ([str(run_dir), "--html", "--records"], "--html"),
    ):
        bad = run_cli("report", *args)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
        lines = [line for line in bad.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and needle in lines[0], bad.stderr
