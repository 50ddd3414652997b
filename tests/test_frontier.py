"""The accuracy-cost frontier on a real SQLite store of hand-made records whose costs and scores
make every Pareto decision (ties, missing energy, accuracy 0, a failed query) known in advance."""

import html
import json
import math
import re

import numpy as np
import pytest
from browser import (
    assert_self_contained,
    chart_drawn,
    drive,
    hover,
    legends,
    png_size,
    render,
    script_errors,
    symbols,
)
from conftest import run_cli

from tradeoff.analysis.costs import COST_AXES
from tradeoff.analysis.frontier import axis_label, frontier
from tradeoff.analysis.metrics import accuracy_interval, wilson_interval
from tradeoff.errors import UserError
from tradeoff.store import Store, call_facts
from tradeoff.types import Record

NO_ENERGY = "no RAPL: /sys/class/powercap does not exist; no NVML: pynvml is not installed"
E2E = [1.0, 2.0, 1.0, 2.0, 1.0]
OUT_TOKENS = [10, 20, 30, 40, 50]

# name -> (energy J of each of 5 queries or None, scores; None marks a failed query)
CONFIGS = {
    "A": ([8, 12, 10, 9, 11], [1, 1, 0, 0, 0]),  # 10 J, 0.4: the cheapest with any accuracy
    "B": ([18, 22, 20, 19, 21], [1, 1, 1, 1, 0]),  # 20 J, 0.8
    "C<&>": ([20, 20, 20, 20, 20], [0, 1, 1, 1, 1]),  # 20 J, 0.8: tied with B, both on it
    "D": ([30, 30, 30, 30, 30], [1, 1, 1, 1, None]),  # 30 J, 0.8 (one failed): B is cheaper
    "E": ([10, 10, 10, 10, 10], [1, 0, 0, 0, 0]),  # 10 J, 0.2: A as cheap, more accurate
    "F": ([40, 40, 40, 40, 40], [1, 1, 1, 1, 1]),  # 40 J, 1.0: the most accurate
    "Z": ([15, 15, 15, 15, 15], [0, 0, 0, 0, 0]),  # 15 J, 0.0: A is cheaper and better
    "M": (None, [1, 1, 1, 1, 1]),  # energy not measured: never on the frontier
}
ON_FRONTIER = {"A", "B", "C<&>", "F"}


def _record(config_id: str, i: int, energy: float | None, score: int | None) -> Record:
    return Record(
        config_id=config_id,
        task="arith",
        item_id=f"q{i}",
        sample=0,
        output="" if score is None else "4",
        score=None if score is None else float(score),
        parsed=None,
        error="timed out after 120 s" if score is None else None,
        # The server of M reports no input tokens for its first two queries.
        input_tokens=None if config_id == "M" and i < 2 else 100,
        output_tokens=OUT_TOKENS[i],
        ttft_s=0.1,
        e2e_s=E2E[i],
        itl_s=0.01,
        decode_tps=50.0,
        energy_j=energy,
        energy_source=None if energy is None else "rapl",
        energy_missing=NO_ENERGY if energy is None else None,
        flops=1e9 * (i + 1),
        peak_rss_bytes=1,
        cost_usd=None,
        # its engine call took half its time (it waited for the engine the other half)
        calls=[{"model": config_id.lower(), "input_tokens": 100, "e2e_s": E2E[i] / 2}],
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("frontier") / "run"
    store = Store.create(directory, {"models": {}}, {"host": "test"})
    store.add_configs([(f"id-{name}", name, {"strategy": "single"}) for name in CONFIGS])
    for name, (energies, scores) in CONFIGS.items():
        for i, score in enumerate(scores):
            energy = None if energies is None else float(energies[i])
            rec = _record(name, i, energy, score)
            rec.config_id = f"id-{name}"
            store.write_record(rec)
    store.close()
    return directory


@pytest.fixture(scope="module")
def records(run_dir):
    store = Store.open(run_dir)
    try:
        return store.records()
    finally:
        store.close()


def test_pareto_marks_exactly_the_non_dominated(records):
    rows = {r.config: r for r in frontier(records, "energy")}
    assert list(rows) == list(CONFIGS)  # first-seen order
    assert {name for name, r in rows.items() if r.pareto} == ON_FRONTIER
    assert rows["D"].dominated_by == "B"  # cheaper, as accurate
    assert rows["E"].dominated_by == "A"  # as cheap, more accurate
    assert rows["Z"].dominated_by == "A"
    # M is the most accurate of all, but with no energy it cannot be placed
    assert rows["M"].cost is None and not rows["M"].pareto
    assert rows["M"].cost_missing == NO_ENERGY


def test_metrics_equal_a_hand_computation(records):
    rows = {r.config: r for r in frontier(records, "energy")}
    b = rows["B"]
    assert b.n == 5 and b.errors == 0
    assert b.accuracy == pytest.approx(0.8)
    assert (b.accuracy_low, b.accuracy_high) == pytest.approx(wilson_interval(4, 5))
    assert wilson_interval(0, 12)[0] == 0.0 and wilson_interval(12, 12)[1] == 1.0  # exactly
    assert b.cost == pytest.approx(20.0) and b.cost_unit == "J"
    assert b.cost_source == "measured by rapl"
    assert b.cost_of_pass == pytest.approx(20.0 / 0.8)
    assert b.accuracy_per_joule == pytest.approx(0.8 / 20.0)
    # the queries' J over their engine calls' seconds (not their wall time's)
    power = (18 + 22 + 20 + 19 + 21) / (0.5 + 1 + 0.5 + 1 + 0.5)
    assert b.power_w == pytest.approx(power)
    assert b.ipw == pytest.approx(0.8 / power)
    assert b.e3 == pytest.approx(0.8**2 / 30.0)
    # the failed query scores 0 and its 30 J count
    d = rows["D"]
    assert d.errors == 1 and d.accuracy == pytest.approx(0.8) and d.cost == pytest.approx(30.0)
    # accuracy 0: no cost-of-pass, but a cost and E³ of 0
    z = rows["Z"]
    assert z.accuracy == 0 and z.cost == pytest.approx(15.0) and z.cost_of_pass is None
    assert z.e3 == 0 and z.accuracy_per_joule == 0
    # no energy: no accuracy per joule, no IPW; E³ still
    m = rows["M"]
    assert m.accuracy_per_joule is None and m.ipw is None and m.energy_missing == NO_ENERGY
    assert m.e3 == pytest.approx(1.0 / 30.0)


def test_mean_power_weighs_each_query_by_its_engine_time(tmp_path):
    """Mean power was the mean of each query's energy over its time, so a query refused at once
    (1 ms, read as 0 J or one whole RAPL update) weighed as much as a 1 s answer: a steady 10 W
    read 8.75 W here, and IPW 14% high. It is the queries' energy over their engine time."""
    directory = tmp_path / "run"
    store = Store.create(directory, {"models": {}}, {"host": "test"})
    store.add_configs([("id-P", "P", {"strategy": "single"})])
    # (J, engine seconds): two answers at 10 W, two refusals for the context
    for i, (energy, seconds) in enumerate([(10.0, 1.0), (10.0, 1.0), (0.0, 1e-3), (0.015, 1e-3)]):
        rec = _record("P", i, energy, 1 if i < 2 else 0)
        rec.config_id = "id-P"
        rec.calls = [{"model": "p", "input_tokens": 100, "e2e_s": seconds}]
        store.write_record(rec)
    df = store.records()
    store.close()
    [p] = frontier(df, "energy")
    assert p.power_w == pytest.approx(20.015 / 2.002)
    assert p.ipw == pytest.approx(0.5 / (20.015 / 2.002))


def test_peak_memory_is_in_the_megabytes_its_name_says(records):
    """peak_rss_mb was bytes / 2**20 (MiB): 715.8 for 750.6 MB."""
    from tradeoff.analysis.metrics import summarize

    df = records.copy()
    df["peak_rss_bytes"] = 750_600_000
    rows = {row["config"]: row for row in summarize(df, list(CONFIGS))}
    assert rows["B"]["peak_rss_mb"] == pytest.approx(750.6)


def test_other_cost_axes(records):
    latency = {r.config: r for r in frontier(records, "latency")}
    assert latency["M"].cost == pytest.approx(sum(E2E) / 5) and latency["M"].pareto
    assert latency["M"].cost_unit == "s" and latency["M"].cost_source == "wall clock"
    # tokens: M's server reported no input for two queries, which count output tokens only
    tokens = {r.config: r for r in frontier(records, "tokens")}
    assert tokens["A"].cost == pytest.approx(100 + 30) and tokens["A"].cost_note is None
    assert tokens["M"].cost == pytest.approx((10 + 20 + 130 + 140 + 150) / 5)
    assert "2 of 5" in (tokens["M"].cost_note or "")
    assert "output only" in axis_label("tokens", list(tokens.values()))
    assert "output only" not in axis_label("tokens", [tokens["A"]])
    flops = {r.config: r for r in frontier(records, "flops")}
    assert flops["A"].cost == pytest.approx(3.0) and flops["A"].cost_unit == "GFLOPs"
    dollars = frontier(records, "dollars")
    assert all(r.cost is None and not r.pareto for r in dollars)
    assert {r.cost_missing for r in dollars} == {"no prices in the spec"}
    # no ★ anywhere: the legend says why rather than define a mark no row has
    from tradeoff.report.table import frontier_table

    _, footnotes = frontier_table(dollars, "dollars")
    assert footnotes[0].startswith("no ★: no configuration has both") and not any(
        "★ Pareto-optimal" in f for f in footnotes
    )
    assert frontier_table(latency_rows := frontier(records, "latency"), "s")[1][0].startswith(
        "★ Pareto-optimal"
    ), latency_rows
    assert set(COST_AXES) == {"energy", "latency", "tokens", "flops", "dollars", "given"}
    with pytest.raises(UserError, match="known: energy, latency"):
        frontier(records, "watts")


def test_config_order_is_kept(records):
    rows = frontier(records, "energy", ["F", "A"])
    assert [r.config for r in rows] == ["F", "A"]
    assert all(r.pareto for r in rows)


def test_cli_json_matches_the_library(run_dir, records):
    result = run_cli("frontier", str(run_dir), "--cost", "energy", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [r.to_dict() for r in frontier(records, "energy")]
    # the default axis is energy only where every query has it; one config here lacks it
    auto = run_cli("frontier", str(run_dir), "--format", "json")
    assert json.loads(auto.stdout) == [r.to_dict() for r in frontier(records, "latency")]
    table = run_cli("frontier", str(run_dir), "--cost", "latency")
    assert table.returncode == 0, table.stderr
    assert "latency per query [s, wall clock]" in table.stdout
    assert "★" in table.stdout and "C<&>" in table.stdout
    csv = run_cli("frontier", str(run_dir), "--cost", "flops", "--format", "csv")
    assert csv.returncode == 0, csv.stderr
    assert csv.stdout.splitlines()[0].startswith("config,n,n_scored,accuracy,")
    assert len(csv.stdout.splitlines()) == 1 + len(CONFIGS)


def test_cli_plots(run_dir, tmp_path):
    png = tmp_path / "frontier.png"
    result = run_cli("frontier", str(run_dir), "--plot", str(png))
    assert result.returncode == 0, result.stderr
    assert f"wrote {png}" in result.stderr
    data = png.read_bytes()
    width, height = png_size(data)
    assert 1000 < width < 3000 and 600 < height < 2000, (width, height)  # 2 px a point
    assert len(data) > 20_000

    page = tmp_path / "frontier.html"
    result = run_cli(
        "frontier", str(run_dir), "--cost", "energy", "--format", "json", "--plot", str(page)
    )
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)  # the plot note goes to stderr, stdout stays JSON
    text = page.read_text()
    assert_self_contained(text)
    assert "C<&>" not in text  # escaped in the table, and "<" nowhere in the chart's script
    markup = re.sub(r"<script>.*?</script>", "", text, flags=re.S)
    assert markup.count("<tr>") == 1 + len(CONFIGS)  # the table of every configuration
    assert "C&lt;&amp;&gt;" in markup and "energy unknown, so not on the frontier" in markup
    dom = render(page)
    assert script_errors(dom) == "" and chart_drawn(dom, "chart")
    drawn = [name for name in CONFIGS if name != "M"]
    assert legends(dom) == {"configuration": drawn, "frontier": ["Pareto-optimal", "dominated"]}
    # M has no energy: not drawn, and said so under the title
    assert "not plotted, cost unknown (" + NO_ENERGY + "): M" in html.unescape(dom)

    points = symbols(page, "chart", tmp_path / "symbols.html")
    assert sorted(p["datum"]["config"] for p in points) == sorted(drawn)
    status = {p["datum"]["config"]: p["datum"]["status"] for p in points}
    assert {c for c, s in status.items() if s == "Pareto-optimal"} == ON_FRONTIER
    assert len({p["fill"] for p in points}) == len(drawn)  # a colour each
    tip = hover(page, "chart", "config", "D", tmp_path / "hover.html")
    for said in ("dominated by B", "0.800 [95% CI", "30 J/query (measured by rapl)", "errors"):
        assert said in tip, tip
    # B and C<&> are drawn on one spot: each one's details name the other
    tip = hover(page, "chart", "config", "B", tmp_path / "hover-b.html")
    assert "same point as" in tip and "C<&>" in tip, tip


def assert_one_line_error(result, needle):
    assert result.returncode == 2, result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_cli_bad_input(run_dir, tmp_path):
    bad_plot = run_cli("frontier", str(run_dir), "--plot", str(tmp_path / "f.pdf"))
    assert_one_line_error(bad_plot, ".png or .html")
    assert not (tmp_path / "f.pdf").exists()
    assert_one_line_error(run_cli("frontier", str(tmp_path / "nope")), "nope does not exist")
    bad_cost = run_cli("frontier", str(run_dir), "--cost", "watts")
    assert bad_cost.returncode == 2 and "Traceback" not in bad_cost.stderr
    assert "energy" in bad_cost.stderr and "dollars" in bad_cost.stderr


# Picks `label` in the chart's menu, then writes what the chart says into #picked.
PICK = """
var menu = document.querySelector("#chart select");
menu.value = %s;
menu.dispatchEvent(new Event("change"));
setTimeout(function () {
  var said = Array.from(document.querySelectorAll("#chart [aria-label]")).map(
    function (e) { return e.getAttribute("aria-label"); });
  var points = document.querySelectorAll("#chart g.mark-symbol.role-mark path").length;
  var title = document.querySelector("#chart .role-title-text text").textContent;
  var out = document.createElement("pre"); out.id = "picked";
  out.textContent = JSON.stringify({said: said, points: points, title: title});
  document.body.appendChild(out); }, 300);
"""


def test_a_menu_picks_the_cost_axis(records, tmp_path):
    from tradeoff.report.charts import frontier_chart, write_chart

    axes = {}
    for name in ("energy", "latency", "flops"):
        rows = frontier(records, name)
        axes[axis_label(name, rows)] = rows
    page = write_chart(frontier_chart(axes, list(CONFIGS)), tmp_path / "f.html", "axes")
    dom = render(page)
    assert script_errors(dom) == "" and chart_drawn(dom, "chart")
    energy, latency, flops = axes
    assert f"Title text 'accuracy against {energy}'" in html.unescape(dom)  # the first axis
    picked = drive(page, PICK % json.dumps(flops), tmp_path / "picked.html")
    found = re.search(r'<pre id="picked">(.*?)</pre>', picked, re.S)
    assert found, script_errors(picked)
    said = json.loads(html.unescape(found.group(1)))
    assert said["title"] == f"accuracy against {flops}"
    assert said["points"] == len(CONFIGS)  # every configuration has FLOPs, M too
    # 3 GFLOPs a query for every configuration: the axis has room either side of it
    x_axis = next(s for s in said["said"] if s.startswith("X-axis"))
    assert "values from 2.7 to 3.3" in x_axis, x_axis


def test_an_empty_frontier_still_draws(tmp_path):
    from tradeoff.report.charts import write_frontier

    rows = frontier(_records_of_one_unmeasured_config(tmp_path), "energy")
    assert rows and not any(r.pareto for r in rows) and not math.isnan(rows[0].accuracy)
    label = axis_label("energy", rows)
    png_size(write_frontier(rows, label, tmp_path / "e.png").read_bytes())
    dom = render(write_frontier(rows, label, tmp_path / "e.html"))
    assert script_errors(dom) == "" and chart_drawn(dom, "chart")
    assert "not plotted, cost unknown (" + NO_ENERGY + "): M" in html.unescape(dom)


def _records_of_one_unmeasured_config(tmp_path):
    store = Store.create(tmp_path / "run", {}, {})
    store.add_configs([("id-M", "M", {})])
    for i in range(3):
        rec = _record("M", i, None, 1)
        rec.config_id = "id-M"
        store.write_record(rec)
    try:
        return store.records()
    finally:
        store.close()


def test_the_interval_of_repeated_samples_is_over_items():
    """Five items, four samples each, the same answer every time: 12 of 20 records correct,
    but five questions. Wilson over the records (0.39-0.78) claimed what 20 independent
    queries would show; over items, 3 of 5 right reads 0.2 to 1.0."""
    items = np.repeat([f"q{i}" for i in range(5)], 4)
    scores = np.repeat([1.0, 1.0, 1.0, 0.0, 0.0], 4)
    mean, low, high = accuracy_interval(scores, items)
    assert mean == pytest.approx(0.6) and (low, high) == pytest.approx((0.2, 1.0))
    assert high - low > np.subtract(*wilson_interval(12, 20)[::-1])
    # one record an item: the records' Wilson interval, as before
    assert accuracy_interval(scores[::4], items[::4])[1:] == pytest.approx(wilson_interval(3, 5))
    # every sample of every item wrong (or right): a bootstrap has no spread (it read
    # 0.000-0.000, surer with two samples than one); Wilson's over the five items
    for every in (0.0, 1.0):
        alike = np.full(20, every)
        assert accuracy_interval(alike, items)[1:] == pytest.approx(wilson_interval(5 * every, 5))


def test_scores_all_alike_have_an_interval_and_ties_tie_in_any_order(tmp_path):
    """Partial credit: one query of score 0.5 (or four of 0.5) read 0.500-0.500, surer than one
    right-or-wrong answer (0.207-1.000); and two configurations of the same scores in another
    order differed in their sum's last bit, one of them off the frontier at the same cost."""
    assert accuracy_interval(np.array([0.5]))[1:] == pytest.approx(wilson_interval(0.5, 1))
    four = accuracy_interval(np.full(4, 0.5))
    assert four[1:] == pytest.approx(wilson_interval(2.0, 4)) and four[1] < 0.5 < four[2]
    path = tmp_path / "tie.csv"
    path.write_text("prompt,x,y\nq1,0.1,0.1\nq2,0.7,0.2\nq3,0.3,0.3\nq4,0.2,0.7\n")
    made = run_cli("import", "outcomes", str(path), "--prompt-col", "prompt",
                   "--model", "x=x,cost=0.5", "--model", "y=y,cost=0.5",
                   "--out", str(tmp_path / "run"))  # fmt: skip
    assert made.returncode == 0, made.stderr
    shown = run_cli("frontier", str(tmp_path / "run"), "--format", "json")
    rows = {r["config"]: r for r in json.loads(shown.stdout)}
    assert rows["x"]["accuracy"] == rows["y"]["accuracy"]
    assert rows["x"]["pareto"] and rows["y"]["pareto"], rows


def test_an_exact_tie_in_other_numbers_is_a_tie(tmp_path):
    """(0.1 + 0.2) / 2 and (0.3 + 0) / 2 are both 0.15 but differ in the last bit: a
    configuration tied on accuracy and cost with another was marked dominated by it."""
    path = tmp_path / "tie.csv"
    path.write_text("prompt,a,b\nq1,0.1,0.3\nq2,0.2,0\n")
    made = run_cli("import", "outcomes", str(path), "--prompt-col", "prompt",
                   "--model", "A=a,cost=1", "--model", "B=b,cost=1",
                   "--out", str(tmp_path / "run"))  # fmt: skip
    assert made.returncode == 0, made.stderr
    shown = run_cli("frontier", str(tmp_path / "run"), "--format", "json")
    marks = [(r["pareto"], r["dominated_by"]) for r in json.loads(shown.stdout)]
    assert marks == [(True, None), (True, None)]
    # and on cost: 0.1 J and 0.2 J a query, 0.15 J and 0.15 J
    store = Store.create(tmp_path / "energy", {"models": {}}, {"host": "test"})
    store.add_configs([("p", "P", {"strategy": "single"}), ("q", "Q", {"strategy": "single"})])
    for config, energies in (("p", [0.1, 0.2]), ("q", [0.15, 0.15])):
        for i, energy in enumerate(energies):
            store.write_record(_record(config, i, energy, 1))
    rows = frontier(store.records(), "energy")
    store.close()
    assert rows[0].cost != rows[1].cost and all(r.pareto for r in rows), rows


def test_a_batch_s_time_counts_once_in_the_time_energy_was_measured_over():
    """A vote's three draws decoded as one batch each last the batch's 2 s: 30 J over 2 s is
    15 W (over their summed 6 s, 5 W); calls one after another add up."""
    batched = [{"model": "m", "e2e_s": 2.0, "batch": 3}] * 3
    assert call_facts(batched)[3] == 2.0
    assert call_facts([{"model": "m", "e2e_s": 0.5}, {"model": "m", "e2e_s": 1.5}])[3] == 2.0
    assert call_facts([{"model": "m", "e2e_s": None}])[3] is None


def test_a_run_without_scores_is_told_why_no_cost_axis_plots_it(tmp_path):
    """Synthetic load has no accuracy on any cost axis: 'choose another --cost' sent the user
    looking for one."""
    import contextlib

    from conftest import fast_server, one_line_error

    with contextlib.contextmanager(fast_server)() as url:
        made = run_cli("profile", "-m", f"openai:{url}#m", "-t", "synthetic:prompt=8,output=4,n=2",
                       "--out", str(tmp_path / "run"))  # fmt: skip
    assert made.returncode == 0, made.stderr
    refused = run_cli("frontier", str(tmp_path / "run"), "--plot", str(tmp_path / "f.html"))
    one_line_error(refused, "no reference answers to score")
    assert "choose another --cost" not in refused.stderr


# Clicks the ★ header twice; writes the ★ column from the top after each click into #driven.
STAR_SORT = """
var t = document.querySelector("table.sortable"), out = [];
var th = Array.from(t.querySelectorAll("th")).filter(function (h) {
  return h.textContent === "★"; })[0];
function stars() { return Array.from(t.tBodies[0].rows).map(function (r) {
  return r.cells[th.cellIndex].textContent || "."; }).join(""); }
th.click(); out.push("asc=" + stars()); th.click(); out.push("desc=" + stars());
var p = document.createElement("pre"); p.id = "driven"; p.textContent = out.join("\\n");
document.body.appendChild(p);
"""


def test_the_star_column_sorts_the_pareto_optimal_together(tmp_path):
    """Every ★ cell sorted as missing: a click on the header moved no row."""
    outcomes = tmp_path / "o.csv"
    outcomes.write_text("prompt,a,b\n" + "".join(f"q{i},{i % 2},{i % 3 != 0}\n" for i in range(6)))
    run, page = tmp_path / "run", tmp_path / "f.html"
    made = run_cli("import", "outcomes", str(outcomes), "--prompt-col", "prompt",
                   "--model", "dominated=a,cost=3", "--model", "cheap=a,cost=1",
                   "--model", "accurate=b,cost=2", "--out", str(run))  # fmt: skip
    assert made.returncode == 0, made.stderr
    plotted = run_cli("frontier", str(run), "--plot", str(page))
    assert plotted.returncode == 0, plotted.stderr
    dom = drive(page, STAR_SORT, tmp_path / "driven.html")
    found = re.search(r'<pre id="driven">(.*?)</pre>', dom, re.S)
    assert found and script_errors(dom) == "", dom[-2000:]
    seen = dict(line.split("=", 1) for line in found.group(1).splitlines())
    assert seen == {"asc": ".★★", "desc": "★★."}, seen
