"""`tradeoff report DIR --html`: one self-contained page of a real run (the bundled models),
rendered in headless Chromium with no network: every chart draws, no script fails, the summary
table sorts, the records table filters and pages; a load run's points, a measured energy's
fitted line and a kept router evaluation each get their section; what a run lacks (imported
outcomes' time, served traffic's scores, a failed record) is said, not drawn empty; bad input is
one line."""

from __future__ import annotations

import collections
import contextlib
import html
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from browser import chart_drawn, drive, render, screenshot, script_errors
from conftest import fast_server, records_so_far, run_cli

CHARTS = ("frontier", "by-task", "latency")
MODELS = ("smollm2-135m", "gemma3-270m")
DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "run"
    result = run_cli(
        "profile", "-m", MODELS[0], "-m", MODELS[1], "-t", "arith", "-t", "facts",
        "--limit", "5", "--max-tokens", "16", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of the module's run, for a test that adds to it."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("*.html", "*.png"))
    return copy


def _html(run_dir: Path) -> Path:
    result = run_cli("report", str(run_dir), "--html")
    assert result.returncode == 0, result.stderr
    page = run_dir / "report.html"
    assert f"wrote {page}" in result.stderr
    return page


def _sql(run_dir: Path, query: str, *params) -> list[tuple]:
    con = sqlite3.connect(run_dir / "tradeoff.sqlite")
    try:
        with con:
            return con.execute(query, params).fetchall()
    finally:
        con.close()


def test_the_report_is_one_self_contained_page_and_every_chart_draws(run_dir):
    page = _html(run_dir)
    markup = re.sub(r"<script[^>]*>.*?</script>", "", page.read_text(), flags=re.S)
    assert "<script" not in markup, "every script is inline, with no src"
    assert not re.search(r"<[a-z]+[^>]*\s(src|href)=", markup), "nothing loaded from outside"
    dom = render(page)
    assert script_errors(dom) == ""
    for chart in CHARTS:
        assert chart_drawn(dom, chart), f"{chart} did not draw"
    for name in MODELS:
        assert name in dom
    # Energy is drawn where it was measured (RAPL); where not (a VM), the section says so.
    assert chart_drawn(dom, "energy") or "No configuration has a measured energy per query" in dom
    shot = screenshot(page, run_dir / "report.png", 1250, 1700)
    if os.environ.get("TRADEOFF_DOCS") == "1":  # the README's screenshot, made by this test
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS / "report.png")


# Sorts the summary by accuracy both ways, then filters and pages the records table; writes what
# it saw (first configuration after each sort, rows and counts after each filter) into #driven.
DRIVER = """
var out = [], th = Array.from(document.querySelectorAll("table.sortable th"))
  .filter(function (h) { return h.textContent === "accuracy"; })[0];
function first() { return document.querySelector("table.sortable tbody tr td").textContent; }
th.click(); out.push("asc=" + first()); th.click(); out.push("desc=" + first());
var f = document.getElementById("records-filter");
function seen(label) {
  out.push(label + "=" + document.querySelectorAll("#records tbody tr").length + "|"
    + document.getElementById("records-info").textContent);
}
seen("all");
f.config.value = "gemma3-270m"; f.dispatchEvent(new Event("change")); seen("config");
f.task.value = "facts"; f.dispatchEvent(new Event("change")); seen("config+task");
f.config.value = ""; f.task.value = ""; f.wrong.checked = true;
f.dispatchEvent(new Event("change")); seen("wrong");
f.wrong.checked = false; f.failed.checked = true; f.dispatchEvent(new Event("change"));
seen("failed");
var p = document.createElement("pre"); p.id = "driven"; p.textContent = out.join("\\n");
document.body.appendChild(p);
"""


def _driven(dom: str) -> dict[str, str]:
    found = re.search(r'<pre id="driven">(.*?)</pre>', dom, re.S)
    assert found, "the driver script did not run"
    return dict(line.split("=", 1) for line in found.group(1).splitlines())


def test_the_summary_sorts_and_the_records_filter(run_dir, tmp_path):
    copy = _copy(run_dir, tmp_path)  # with two failed records, for the failed filter to find
    _sql(copy, "UPDATE records SET error = 'failed on purpose' WHERE rowid IN "
         "(SELECT rowid FROM records ORDER BY rowid LIMIT 2)")  # fmt: skip
    page = _html(copy)
    seen = _driven(drive(page, DRIVER, tmp_path / "driven.html"))
    accuracy = dict(
        _sql(
            copy,
            "SELECT c.name, AVG(CASE WHEN r.error IS NULL THEN COALESCE(r.score, 0) ELSE 0 END) "
            "FROM records r JOIN configs c USING (run_id, config_id) GROUP BY c.name",
        )
    )
    low, high = min(accuracy, key=accuracy.get), max(accuracy, key=accuracy.get)
    if accuracy[low] != accuracy[high]:
        assert (seen["asc"], seen["desc"]) == (low, high)

    def count(where: str) -> int:
        return _sql(
            copy, f"SELECT COUNT(*) FROM records r JOIN configs c USING (run_id, config_id) "
            f"WHERE {where}"
        )[0][0]  # fmt: skip

    total = count("1")
    expected = {
        "all": total,
        "config": count("c.name = 'gemma3-270m'"),
        "config+task": count("c.name = 'gemma3-270m' AND r.task = 'facts'"),
        "wrong": count("r.error IS NULL AND r.score < 1"),
        "failed": 2,
    }
    for label, n in expected.items():
        rows, info = seen[label].split("|")
        assert int(rows) == min(n, 25), (label, seen[label])
        assert f"of {n} matching records (all {total} records of the run)" in info, info


def test_the_failed_filter_is_not_offered_when_no_record_failed(run_dir):
    """It could only find "0 of 0 matching records"."""
    assert _sql(run_dir, "SELECT COUNT(*) FROM records WHERE error IS NOT NULL") == [(0,)]
    dom = render(_html(run_dir))
    assert script_errors(dom) == ""
    form = dom.split('id="records-filter"')[1].split("</form>")[0]
    assert "no record failed" in form and 'name="failed"' not in form
    total = _sql(run_dir, "SELECT COUNT(*) FROM records")[0][0]
    assert f"1-{min(total, 25)} of {total} matching records" in form, form  # still drawn


def _section(dom: str, heading: str) -> str:
    """The page's section under `<h2>heading</h2>`, up to the next."""
    return dom.split(f"<h2>{heading}</h2>")[1].split("<h2>")[0]


def _imported(tmp_path: Path, csv_text: str, *models: str) -> Path:
    """A run imported by `tradeoff import outcomes` from `csv_text` (prompts in `prompt`), with
    the `--model` flags `models`."""
    outcomes = tmp_path / "outcomes.csv"
    outcomes.write_text(csv_text)
    out = tmp_path / "imported"
    flags = [flag for model in models for flag in ("--model", model)]
    result = run_cli(
        "import", "outcomes", str(outcomes), "--prompt-col", "prompt", *flags, "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    return out


def test_a_configuration_with_few_records_leaves_its_share_of_the_sample_to_the_others(tmp_path):
    """Of 2,100 records of `fast` and 100 of `slow` (a load run's slow configuration), 1,000
    and 100 were inlined: the 900 slow could not fill were lost, and the note said "per
    configuration the same number"."""
    rows = "".join(f"q{i},{i % 2},{i % 3 == 0}\n" for i in range(2100))
    out = _imported(tmp_path, f"prompt,fast,slow\n{rows}", "fast=fast", "slow=slow")
    assert (
        ": 1,000 of each configuration's records, its failed and wrong ones first;"
        in (_records_data(_html(out).read_text())["of"])
    )
    slow = "(SELECT config_id FROM configs WHERE name = 'slow')"
    _sql(out, f"DELETE FROM records WHERE config_id = {slow} AND rowid NOT IN "
         f"(SELECT rowid FROM records WHERE config_id = {slow} LIMIT 100)")  # fmt: skip
    data = _records_data(_html(out).read_text())
    at = data["columns"].index("config")
    assert collections.Counter(row[at] for row in data["rows"]) == {"fast": 1900, "slow": 100}
    assert data["of"] == (
        " (a sample of 2,000 of the run's 2,200 records: all the records of slow; 1,900 of each "
        "other configuration's, its failed and wrong ones first; `tradeoff report DIR --records` "
        "lists them all)"
    )


def test_imported_outcomes_say_why_they_have_no_latency(tmp_path):
    """Imported outcomes were not timed: the reason where a latency chart over the 0 s the store
    holds drew nothing (and Vega warned of a log scale over [0, 0]); their scores still draw."""
    out = _imported(
        tmp_path, "prompt,big,small\n2+2?,1,0\n3+3?,1,1\nA prime?,0,0\n",
        "big=big,cost=0.03", "small=small,cost=0.001",
    )  # fmt: skip
    dom = render(_html(out))
    assert script_errors(dom) == ""
    assert chart_drawn(dom, "frontier") and chart_drawn(dom, "by-task")
    assert 'id="latency"' not in dom
    assert "imported outcomes carry no latency (3 of 3 queries)" in _section(dom, "Latency")
    data = _records_data(dom)  # the records table: "-" for what was not measured, not 0
    for column in ("e2e_s", "ttft_s", "output_tokens"):
        assert {row[data["columns"].index(column)] for row in data["rows"]} == {None}, column
    assert {row[data["columns"].index("score")] for row in data["rows"]} == {0, 1}


def test_a_prompt_holding_script_markup_leaves_the_records_whole(tmp_path):
    """A prompt "<!--<script>" put the rest of the page inside the records' JSON <script>: no
    record was drawn and no script after it ran, the error script's included. A name with a run
    of spaces was not found by its own filter (an option's text collapses them)."""
    out = _imported(
        tmp_path, 'prompt,a,b\n"hello <!--<script> world",1,0\nsecond,0,1\n', "big  model=a",
        "small=b",
    )  # fmt: skip
    script = """
    var f = document.getElementById("records-filter"), out = [];
    function seen(label) { out.push(label + "=" + document.querySelectorAll("#records tbody tr")
      .length + "|" + document.getElementById("records-info").textContent); }
    seen("all"); f.config.value = "big  model"; f.dispatchEvent(new Event("change"));
    seen("big");
    var p = document.createElement("pre"); p.id = "driven"; p.textContent = out.join("\\n");
    document.body.appendChild(p);
    """
    dom = drive(_html(out), script, tmp_path / "driven.html")
    assert script_errors(dom) == ""
    seen = _driven(dom)
    assert seen["all"].startswith("4|") and "of 4 matching records" in seen["all"], seen
    assert seen["big"].startswith("2|") and "of 2 matching records" in seen["big"], seen
    assert "hello <!--<script> world" in _records_data(dom)["rows"][0]


# Writes each records cell whose text is wider than the cell (it spills over the next) into
# #driven, and the widest text cell.
SPILLED = """
var out = [], widest = 0;
document.querySelectorAll("#records tbody td").forEach(function (c) {
  if (c.scrollWidth > c.clientWidth + 2) out.push("spilled=" + c.textContent.slice(0, 20));
  if (c.classList.contains("long")) widest = Math.max(widest, c.clientWidth); });
out.push("widest=" + widest);
var p = document.createElement("pre"); p.id = "driven"; p.textContent = out.join("\\n");
document.body.appendChild(p);
"""


def test_a_long_text_without_spaces_wraps_within_its_cell(tmp_path):
    """A prompt of 1,200 characters with no break (a URL, base64, a number) was one line 8,500
    px wide, painted across the output and reference of its row."""
    out = _imported(tmp_path, f"prompt,a,b\nsee {'y' * 3000},1,0\nshort,0,1\n", "a=a", "b=b")
    seen = _driven(drive(_html(out), SPILLED, tmp_path / "driven.html"))
    assert "spilled" not in seen, seen
    assert 0 < int(seen["widest"]) <= 440  # its max-width and padding


def test_a_run_named_by_dot_is_titled_by_its_directory_s_name(tmp_path):
    """`report . --html` and `compare . . --html`, run inside the run, titled their pages
    "tradeoff report: " and "tradeoff compare:  vs ", with no run's name (a path `.` has none)."""
    out = _imported(tmp_path, "prompt,a,b\n2+2?,1,0\n3+3?,1,1\n", "a=a,cost=0.1", "b=b,cost=1")
    report = run_cli("report", ".", "--html", "-o", "../page.html", cwd=out)
    assert report.returncode == 0, report.stderr
    written = (tmp_path / "page.html").read_text("utf-8")
    assert "<title>tradeoff report: imported</title>" in written
    assert "<h1>tradeoff report: imported</h1>" in written
    compared = run_cli("compare", ".", "../imported", "--html", "../cmp.html", cwd=out)
    assert compared.returncode == 0, compared.stderr
    assert "<h1>tradeoff compare: imported vs imported</h1>" in (tmp_path / "cmp.html").read_text()


def test_a_run_directory_named_in_bytes_that_are_not_utf8_gets_its_pages(tmp_path):
    """A directory name is any bytes on Linux: one not UTF-8 (`runs/\\xffbad`) reached the page
    as a lone surrogate, which UTF-8 cannot write: report --html and frontier --plot X.html
    ended in a traceback and left an empty report.html."""
    out = _imported(tmp_path, "prompt,a,b\n2+2?,1,0\n3+3?,1,1\n", "a=a,cost=0.1", "b=b,cost=1")
    named = out.rename(tmp_path / os.fsdecode(b"\xffbad"))
    report = run_cli("report", str(named), "--html")
    assert report.returncode == 0 and "Traceback" not in report.stderr, report.stderr
    assert "<h1>tradeoff report: \ufffdbad</h1>" in (named / "report.html").read_text("utf-8")
    plot = tmp_path / "frontier.html"
    frontier = run_cli("frontier", str(named), "--plot", str(plot))
    assert frontier.returncode == 0 and "Traceback" not in frontier.stderr, frontier.stderr
    assert "\ufffdbad</" in plot.read_text("utf-8")


def test_served_traffic_says_it_has_no_frontier(tmp_path):
    """Served requests have no reference answers, so no scores: one line says so where an empty
    frontier and an empty accuracy heatmap were; their latencies still draw."""
    from serve_support import CHAT, COMPLETIONS, running, valid

    with running(tmp_path) as served:
        for endpoint in (CHAT, COMPLETIONS):
            answer = httpx.post(served.root + endpoint, json=valid(endpoint), timeout=60)
            assert answer.status_code == 200, answer.text
    assert served.out is not None
    assert _sql(served.out, "SELECT COUNT(*), COUNT(score) FROM records") == [(2, 0)]
    dom = render(_html(served.out))
    assert script_errors(dom) == "" and chart_drawn(dom, "latency")
    assert 'id="frontier"' not in dom and 'id="by-task"' not in dom
    assert "no reference answers (served traffic" in _section(dom, "Frontier")
    form = dom.split('id="records-filter"')[1].split("</form>")[0]
    assert "no record is scored" in form and 'name="wrong"' not in form


def _records_data(dom: str) -> dict:
    """The records inlined in the page for its table's script."""
    return json.loads(dom.split('id="records-data">')[1].split("</script>")[0])


def test_a_measured_energy_gets_its_fitted_line(run_dir, tmp_path):
    """Energy stored as 2 J + 0.5 J per output token: the page's fit gives back both."""
    copy = _copy(run_dir, tmp_path)
    _sql(
        copy,
        "UPDATE records SET energy_j = 2.0 + 0.5 * output_tokens, energy_source = 'rapl', "
        "energy_missing = NULL WHERE error IS NULL",
    )
    dom = render(_html(copy))
    assert script_errors(dom) == "" and chart_drawn(dom, "energy")
    fits = dom.split('id="energy-fits"')[1].split("</table>")[0]
    rows = re.findall(r'<tr><td class="text">([^<]+)</td>(.*?)</tr>', fits)
    fitted = {name: re.findall(r"<td[^>]*>([^<]*)</td>", cells) for name, cells in rows}
    for name in MODELS:
        n, per_token, _, fixed, r2 = fitted[name][:5]
        assert float(per_token) == pytest.approx(0.5) and float(fixed) == pytest.approx(2.0)
        assert float(r2) == pytest.approx(1.0)


def test_an_energy_fit_of_failed_records_says_they_failed():
    """A configuration whose every metered query failed read "energy not measured" in the fit,
    beside its measured J/query in the summary of the same page."""
    import pandas as pd

    from tradeoff.analysis.energy_fit import fit_energy

    failed = pd.DataFrame(
        {
            "energy_j": [2.0, 2.5, 3.0],
            "error": ["HTTP 500"] * 3,
            "output_tokens": [0, 0, 0],
            "energy_source": ["rapl"] * 3,
        }
    )
    assert fit_energy(failed, "bad").missing == (
        "every record with a measured energy failed (3); the line fits answers"
    )
    unmetered = failed.assign(energy_j=None, error=None)
    assert fit_energy(unmetered, "ok").missing == "energy not measured"


def test_a_kept_router_evaluation_is_drawn(run_dir, tmp_path):
    copy = _copy(run_dir, tmp_path)
    # The small models may score alike on so few items: make one the stronger on `facts`.
    _sql(
        copy,
        "UPDATE records SET score = (SELECT CASE name WHEN ? THEN 1.0 ELSE 0.0 END FROM configs c "
        "WHERE c.config_id = records.config_id), error = NULL WHERE task = 'facts'",
        MODELS[1],
    )
    configs = ",".join(MODELS)
    for router in ("words-lr", "embed-lr"):  # each router's evaluation (the second replaced it)
        result = run_cli("policy", "eval", str(copy), "--cv", "2", "--configs", configs,
                         "--router", router)  # fmt: skip
        assert result.returncode == 0, result.stderr
    # a policy evaluated on the queries it was fitted on: the page warns, as the terminal did
    policy = tmp_path / "policy.json"
    fitted = run_cli("policy", "fit", str(copy), "--configs", configs, "--strong-fraction", "0.5",
                     "-o", str(policy))  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr
    in_sample = run_cli("policy", "eval", str(copy), "--policy", str(policy))
    assert in_sample.returncode == 0 and "in-sample" in in_sample.stderr, in_sample.stderr
    dom = render(_html(copy))
    assert script_errors(dom) == "" and chart_drawn(dom, "router-0")
    assert chart_drawn(dom, "router-1") and "router words-lr;" in dom and "router embed-lr;" in dom
    assert "2-fold cross-validation" in dom and "oracle" in dom and "random" in dom
    (warned,) = re.findall(r"warning: in-sample[^<]*", dom)
    assert "overstate" in warned, warned


def test_a_load_run_gets_its_load_points(tmp_path):
    """Beside its load points, the page says what the terminal says: the summary pools them,
    and a configuration every query of which failed sits on the frontier for failing at once.
    Its latency distribution is of completed requests (a failure's time is not an answer's)."""
    out = tmp_path / "load"
    with contextlib.contextmanager(fast_server)("--delay-ms", "1", "--fail-every", "2") as url:
        result = run_cli(
            "load", "-m", f"openai:{url}#m", "-m", f"openai:{url}#fail-500", "-t", "arith",
            "--max-tokens", "4", "--profile", "constant:20,40", "--max-requests", "20",
            "--warmup", "2", "--scrape", "off", "--out", str(out),
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    dom = render(_html(out))
    # each record with its load point (an item is answered at each), warm-up said left out
    data = _records_data(dom)
    at = data["columns"].index("load_point")
    assert {row[at] for row in data["rows"]} == {"constant:20", "constant:40"}
    assert "all 72 measured records of the run; 8 of warm-up and cool-down left out" in data["of"]
    assert '<select name="load_point">' in dom
    # fail-500's points have no latency: the load table says why, not "-"
    assert "latencies n/a: no request of the load point completed" in _section(dom, "Under load")
    assert script_errors(dom) == "" and chart_drawn(dom, "load")
    assert "constant:20" in dom and "constant:40" in dom
    assert "this summary pools the measured requests of every load point" in dom
    assert "warning: every query of fail-500 failed" in dom
    latency = _section(dom, "Latency")
    assert "completed requests only" in latency and "failed requests left out: m " in latency
    # fail-500 has no completed request: not in the latency chart's legend (whose colours are
    # the page's)
    (legend,) = re.findall(r'aria-label="Symbol legend titled[^"]*"', latency)
    assert " m" in legend and "fail-500" not in legend, legend
    failed = _sql(out, "SELECT MAX(e2e_s) FROM records WHERE error IS NOT NULL")[0][0]
    completed = _sql(out, "SELECT MIN(e2e_s) FROM records WHERE error IS NULL")[0][0]
    shown = re.findall(r'"latency":\s*"end to end"[^}]*"ms":\s*([0-9.e+-]+)', dom)
    assert shown and min(float(v) for v in shown) >= 1e3 * completed - 1e-6 > 0
    assert failed is not None


def test_a_run_still_being_written_reports_what_is_there(tmp_path):
    out = tmp_path / "live"
    profile = subprocess.Popen(
        [sys.executable, "-m", "tradeoff", "profile", "-m", MODELS[0], "-t", "arith",
         "--limit", "200", "--max-tokens", "16", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if records_so_far(out) >= 2:
                break
            time.sleep(0.5)
        result = run_cli("report", str(out), "--html")
        assert result.returncode == 0, result.stderr
        assert profile.poll() is None, "the run should still be going"
        dom = render(out / "report.html")
        assert "(running)" in dom and script_errors(dom) == ""
        assert "note: the run is running (still being written, or its process died)" in dom
        assert f"tradeoff profile --resume {out}" in dom
    finally:
        profile.send_signal(signal.SIGINT)
        profile.wait(timeout=60)


def test_another_path_and_bad_input_are_one_line(run_dir, tmp_path):
    from tradeoff.store import Store

    elsewhere = tmp_path / "r.html"
    ok = run_cli("report", str(run_dir), "--html", "-o", str(elsewhere))
    assert ok.returncode == 0 and elsewhere.stat().st_size > 0, ok.stderr
    empty = tmp_path / "empty"
    Store.create(empty, {}, {}).close()
    for args, needle in (
        ([str(tmp_path / "nothing"), "--html"], "nothing"),
        ([str(run_dir), "--html", "-o", str(tmp_path / "no" / "r.html")], "no"),
        ([str(run_dir), "--html", "-o", str(tmp_path / "r.svg")], "ending in .html"),
        ([str(run_dir), "--html", "--records"], "--html"),
        ([str(empty), "--html"], "no records"),
    ):
        bad = run_cli("report", *args)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
        lines = [line for line in bad.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and needle in lines[0], bad.stderr
    # an empty table (or an empty file) said nothing, with exit code 0
    for args in (["report"], ["frontier"], ["report", "-f", "csv"], ["report", "-f", "parquet"]):
        bad = run_cli(*args[:1], str(empty), *args[1:])
        assert bad.returncode == 2 and "no records yet" in bad.stderr, bad.stderr


def test_a_url_s_password_is_hidden_on_the_pages_and_kept_in_the_store(tmp_path):
    """The report's spec showed `openai:http://user:PASSWORD@host/v1#m` on a page meant to be
    mailed; so did the comparison's differences. The store keeps it: a resumed run signs in."""
    runs = []
    with contextlib.contextmanager(fast_server)() as url:
        for user in ("user", "other"):
            out = tmp_path / user
            ref = f"openai:{url.replace('http://', f'http://{user}:pw123@')}#m"
            made = run_cli("profile", "-m", ref, "-t", "arith", "--limit", "1", "--out", str(out))
            assert made.returncode == 0, made.stderr
            runs.append(out)
    page = html.unescape(_html(runs[0]).read_text())
    assert "http://user:***@127.0.0.1" in page and "pw123" not in page
    assert "pw123@" in _sql(runs[0], "SELECT spec FROM runs")[0][0]
    compared = tmp_path / "compare.html"
    result = run_cli("compare", *map(str, runs), "--html", str(compared))
    assert result.returncode == 0, result.stderr
    page = html.unescape(compared.read_text())
    assert "http://user:***@" in page and "http://other:***@" in page and "pw123" not in page


def test_clients_that_left_are_not_failures_on_the_page(tmp_path):
    """Served requests whose client went away were offered under "failed only" and named as
    failed beside the latencies, as the summary's errors counted them."""
    from tradeoff.store import Store
    from tradeoff.types import DISCONNECTED, Record

    out = tmp_path / "served"
    store = Store.create(out, {"models": {}}, {"host": "test"})
    store.add_configs([("id-a", "served-a", {"strategy": "single"})])
    for i, error in enumerate([None, DISCONNECTED]):
        store.write_record(
            Record(
                config_id="id-a", task="serve", item_id=f"r{i}", sample=0, output="4",
                score=None, parsed=None, error=error, input_tokens=3, output_tokens=1,
                ttft_s=0.1, e2e_s=0.2, itl_s=None, decode_tps=None, energy_j=None,
                energy_source=None, energy_missing="none here", flops=None, peak_rss_bytes=None,
                cost_usd=None, calls=[],
            )
        )  # fmt: skip
    store.close()
    dom = render(_html(out))
    assert script_errors(dom) == ""
    form = dom.split('id="records-filter"')[1].split("</form>")[0]
    assert "no record failed" in form and 'name="failed"' not in form, form
    assert "served-a 1 of 2" not in _section(dom, "Latency")


def test_a_configuration_has_one_colour_on_the_page_and_its_name_whole(run_dir, tmp_path):
    """The latency distributions were drawn on Vega's default scheme, the frontier on the
    page's: one configuration in two colours. Legends cut names at 160 px."""
    copy = _copy(run_dir, tmp_path)
    page = _html(copy).read_text()
    scales, found_legends = {}, []

    def walk(node, chart):
        if isinstance(node, dict):
            if node.get("field") == "config" and "scale" in node:
                scales.setdefault(chart, []).append(node["scale"])
                found_legends.append(node.get("legend"))
            for value in node.values():
                walk(value, chart)
        elif isinstance(node, list):
            for value in node:
                walk(value, chart)

    for chart, spec in re.findall(r'vegaEmbed\("#([\w-]+)", (\{.*?\}), \{"actions"', page):
        walk(json.loads(spec), chart)
    assert {"frontier", "latency"} <= set(scales), scales.keys()
    found = [s for chart in scales.values() for s in chart]
    assert all(s == found[0] for s in found) and found[0]["domain"] == list(MODELS), found
    limits = [legend is None or legend.get("labelLimit") == 0 for legend in found_legends]
    assert all(limits), found_legends


def test_took_counts_the_sessions_not_the_time_a_run_sat_stopped():
    """A demo stopped after 6 s and resumed 3 minutes later for 157 s read "took 330 s"."""
    from tradeoff.report.html_report import _took

    run = {"created_at": 1000.0, "ended_at": 1337.0}
    two = [{"started_at": 1000.0, "ended_at": 1006.0}, {"started_at": 1180.0, "ended_at": 1337.0}]
    assert _took({**run, "sessions": two}) == "163 s in 2 sessions"
    killed = [{"started_at": 900.0, "ended_at": None}, *two]
    assert _took({**run, "sessions": killed}) == (
        "163 s in 2 sessions, and 1 session(s) cut short (not counted)"
    )
    assert _took({**run, "status": "running", "sessions": [*two, {"started_at": 2000.0}]}) == (
        "163 s in 2 sessions, and 1 session(s) still running, or cut short (not counted)"
    )
    assert _took({**run, "sessions": two[:1]}) == "6 s"
    assert _took({**run, "sessions": []}) == "337 s"  # a store from before sessions
    assert _took({"created_at": 1000.0, "ended_at": None, "sessions": killed[:1]}) == (
        "still running, or cut short"
    )


# Whether the page scrolls sideways, and how wide each chart is against its box, into #widths.
WIDTHS = """
var out = ["page=" + document.documentElement.scrollWidth + "/"
           + document.documentElement.clientWidth];
document.querySelectorAll("div.chart").forEach(function (c) {
  out.push(c.id + "=" + c.scrollWidth + "/" + c.clientWidth); });
var p = document.createElement("pre"); p.id = "widths"; p.textContent = out.join("\\n");
document.body.appendChild(p);
"""


def test_a_long_configuration_name_keeps_the_charts_within_the_page(tmp_path):
    """A 90-character name, whole in the legend, made the frontier 1370 px wide: the page
    scrolled sideways and the name was cut at the window's edge."""
    long = (
        "a-very-long-configuration-name-that-goes-on-and-on-and-on-forever-v1.2.3-instruct-q4_k_m"
    )
    out = _imported(tmp_path, "prompt,a,b\n2+2?,1,0\n3+3?,1,1\nA prime?,0,0\n",
                    f"{long}=a,cost=0.5", "b=b,cost=1")  # fmt: skip
    page = _html(out).read_text(encoding="utf-8")
    head, _, tail = page.rpartition("</body>")  # as browser.drive, in a 1250 px window
    driven = tmp_path / "widths.html"
    driven.write_text(f"{head}<script>setTimeout(function () {{ {WIDTHS} }}, 500);</script>"
                      f"</body>{tail}", encoding="utf-8")  # fmt: skip
    dom = render(driven, "--window-size=1250,1000")
    assert script_errors(dom) == ""
    found = re.search(r'<pre id="widths">(.*?)</pre>', dom, re.S)
    assert found, "the driver script did not run"
    widths = dict(line.split("=") for line in found.group(1).splitlines())
    assert {"page", "frontier"} <= set(widths), widths
    for name, pair in widths.items():
        if name == "by-task":  # its axis names each configuration whole, beside its row
            continue
        scroll, client = map(int, pair.split("/"))
        assert scroll <= client, f"{name} is {scroll} px wide in {client} px: {widths}"
    assert ">a-very-long-configur…-v1.2.3-instruct-q4_k_m</text>" in dom  # both ends, in the legend
