"""The load plot (latency percentiles and goodput against achieved throughput): drawn from a real
SQLite store of hand-made records of a load run, two configurations at three load points each, one
of them saturated, through the library and the real CLI (`tradeoff report --plot`)."""

import html
import json
import re

import pytest
from browser import (
    assert_self_contained,
    chart_drawn,
    hover,
    legends,
    png_size,
    render,
    script_errors,
    symbols,
)
from conftest import run_cli
from test_frontier import assert_one_line_error
from test_load_stats import _record

from tradeoff.analysis.load import load_stats
from tradeoff.cli.report import load_rows, write_load_plot
from tradeoff.report.charts import load_chart, write_load
from tradeoff.store import Store

A = "cascade-smollm2-135m-gemma3-270m"
B = "vote<&>-n5"  # listed escaped
SPEC = {"load": {"slo": "ttft=0.1,e2e=0.5"}}
POINTS = {
    "a": ["constant:2", "constant:5", "constant:20"],
    "b": ["concurrent:1", "concurrent:2", "concurrent:4"],
}
SATURATED = ("a", "constant:20")
PANELS = 6  # TTFT p50, p99, e2e p50, p99, ITL p50, goodput


def steady(config_id, point, gap, e2e, scored):
    """12 requests sent every `gap` s, each `e2e` s end to end (TTFT a fifth of it)."""
    return [
        _record(
            config_id,
            point,
            j,
            "measure",
            gap * j,
            e2e,
            ttft=e2e / 5,
            score=(1.0 if j % 3 else 0.0) if scored else None,
        )
        for j in range(12)
    ]


def records():
    out = steady("a", "constant:2", 0.5, 0.1, True) + steady("a", "constant:5", 0.2, 0.3, True)
    # constant:20 sent on time, each answer 50 ms slower than the one before: answers come back
    # at 10/s, half the rate scheduled
    out += [
        _record("a", "constant:20", j, "measure", 0.05 * j, 0.1 + 0.05 * j, ttft=0.05)
        for j in range(20)
    ]
    for n in (1, 2, 4):
        out += steady("b", f"concurrent:{n}", 0.2 / n, 0.2 * n**0.5, False)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("load-plot") / "run"
    store = Store.create(directory, SPEC, {"host": "test"})
    store.add_configs([("a", A, {"models": {}}), ("b", B, {"models": {}})])
    store.write_records(records())
    for t, (config_id, point) in enumerate((c, p) for c, ps in POINTS.items() for p in ps):
        kind, _, value = point.partition(":")
        key = "rate" if kind == "constant" else "concurrency"
        store.conn.execute(
            "INSERT INTO load_points (run_id, config_id, load_point, spec, started_at, "
            "ended_at, status) VALUES (?, ?, ?, ?, ?, ?, 'done')",
            (
                store.run_id,
                config_id,
                point,
                f'{{"kind": "{kind}", "{key}": {value}}}',
                float(t),
                float(t) + 1,
            ),
        )
    store.close()
    return directory


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("profile-run") / "run"
    store = Store.create(directory, {}, {"host": "test"})
    store.add_configs([("a", A, {})])
    store.write_records([_record("a", "", j, None, None, 0.1, ttft=0.02) for j in range(3)])
    store.close()
    return directory


def test_the_run_has_one_saturated_point(run_dir):
    rows, source = load_rows(run_dir)
    assert source == "the run's spec"
    assert [(r["config"], r["load_point"]) for r in rows] == [(A, p) for p in POINTS["a"]] + [
        (B, p) for p in POINTS["b"]
    ]
    assert [r["load_point"] for r in rows if r["saturated"]] == ["constant:20"]
    assert all(r["goodput"] is not None for r in rows)
    assert [r["correct_goodput"] is None for r in rows] == [False] * 3 + [True] * 3


def test_cli_draws_a_png(run_dir, tmp_path):
    png = tmp_path / "load.png"
    result = run_cli("report", str(run_dir), "--load", "--plot", str(png))
    assert result.returncode == 0, result.stderr
    assert f"wrote {png}" in result.stderr
    assert "constant:20" in result.stdout  # the table is printed too
    data = png.read_bytes()
    width, height = png_size(data)
    assert 1500 < width < 3000 and 1500 < height < 4000, (width, height)  # 2 px a point
    assert 50_000 < len(data) < 3_000_000


def test_cli_draws_a_self_contained_html_page(run_dir, tmp_path):
    page = tmp_path / "load.html"
    result = run_cli("report", str(run_dir), "--load", "--format", "json", "--plot", str(page))
    assert result.returncode == 0, result.stderr
    assert result.stdout.lstrip().startswith("[")  # stdout stays JSON; the note is on stderr
    text = page.read_text()
    assert_self_contained(text)
    assert B not in text and "vote&lt;&amp;&gt;-n5" in text  # the table's cells escaped
    markup = re.sub(r"<script>.*?</script>", "", text, flags=re.S)
    assert markup.count("<tr>") == 1 + 6  # the load table: every load point
    dom = render(page)
    assert script_errors(dom) == "" and chart_drawn(dom, "chart")
    assert legends(dom) == {"configuration": [A, B]}
    said = html.unescape(dom)
    assert "SLO: ttft ≤ 0.1 s, e2e ≤ 0.5 s (from the run's spec)" in said
    assert f"correct goodput: n/a for {B} (unscored)" in said
    for panel in ("TTFT p50", "TTFT p99", "end-to-end p50", "end-to-end p99", "ITL p50"):
        assert f"Title text '{panel}'" in said
    assert "Title text 'goodput and correct goodput'" in said
    assert "dotted: goodput = achieved throughput" in said


def test_the_saturated_point_is_hollow_and_says_why(run_dir, tmp_path):
    page = write_load(load_rows(run_dir)[0], tmp_path / "load.html")
    points = symbols(page, "chart", tmp_path / "symbols.html")
    # every load point in each latency panel, and in the goodput panel; A's also in correct goodput
    assert len(points) == 6 * PANELS + 3
    for point in points:
        tip = point["datum"]["tip"]
        assert point["shape"] == ("square" if tip["panel"] == "correct goodput" else "circle")
        hollow = point["fill"] == "white"
        if tip["load point"].startswith("constant:20 (done)"):
            assert hollow and tip["saturated"].startswith("yes: answers came back at"), point
        else:
            assert not hollow and point["fill"] == point["stroke"] and tip["saturated"] == "no"
    assert sum(p["datum"]["tip"]["load point"].startswith("constant:20") for p in points) == 7
    assert {p["datum"]["tip"]["load point"].split(" ")[0] for p in points} == {
        point for points in POINTS.values() for point in points
    }
    tip = hover(page, "chart", "config", B, tmp_path / "hover.html")
    for said in (B, "concurrent:1 (done), target 1 conc.", "TTFT ms", "p99", "saturated"):
        assert said in tip, tip
    # and in the notes under the table
    assert f"▲ {html.escape(A)} at constant:20: answers came back at" in page.read_text()


def tips_in(spec):
    """The hover details of every point of a chart's spec."""
    if isinstance(spec, dict):
        return ([spec["tip"]] if "tip" in spec else []) + [
            tip for value in spec.values() for tip in tips_in(value)
        ]
    return [tip for value in spec for tip in tips_in(value)] if isinstance(spec, list) else []


def test_without_an_slo_the_goodput_panel_says_so(run_dir, tmp_path):
    store = Store.open(run_dir)
    try:
        rows = load_stats(store.records(), store.load_points(), None, {}, store.configs())
    finally:
        store.close()
    chart = load_chart(rows).to_dict()
    goodput = chart["concat"][-1]
    assert "goodput needs a service-level objective: give --slo" in " ".join(
        goodput["title"]["subtitle"]
    )
    assert "dotted" not in json.dumps(chart["title"])  # no diagonal without an SLO
    tips = tips_in(chart)
    assert tips and all(tip["goodput"] == "n/a: no SLO" for tip in tips)
    assert not any(tip["panel"] == "correct goodput" for tip in tips)
    png_size(write_load(rows, tmp_path / "no-slo.png").read_bytes())


def test_cli_slo_overrides_the_runs(run_dir, tmp_path):
    page = tmp_path / "strict.html"
    result = run_cli("report", str(run_dir), "--plot", str(page), "--slo", "e2e=0.15")
    assert result.returncode == 0, result.stderr
    assert "e2e ≤ 0.15 s (from --slo)" in page.read_text()  # the table's footnote


def test_write_load_plot_for_tradeoff_load(run_dir, tmp_path):
    path = write_load_plot(run_dir, tmp_path / "load.html")
    assert path == tmp_path / "load.html" and 'vegaEmbed("#chart"' in path.read_text()


def test_cli_errors(run_dir, profile_dir, tmp_path):
    pdf = tmp_path / "load.pdf"
    assert_one_line_error(
        run_cli("report", str(run_dir), "--load", "--plot", str(pdf)), ".png or .html"
    )
    assert not pdf.exists()
    none = run_cli("report", str(profile_dir), "--load", "--plot", str(tmp_path / "p.png"))
    assert_one_line_error(none, "has no load points")
    assert "--plot draws a run of tradeoff load" in none.stderr
    assert none.stdout == "" and not (tmp_path / "p.png").exists()  # nothing printed first
    table = run_cli("report", str(profile_dir), "--load")  # not an empty table and exit 0
    assert_one_line_error(table, "--load reports a run of tradeoff load")
    assert_one_line_error(
        run_cli("report", str(run_dir), "--plot", str(tmp_path / "no" / "x.html")),
        "does not exist",
    )
    assert_one_line_error(
        run_cli("report", str(run_dir), "--records", "--plot", str(tmp_path / "r.html")),
        "--plot draws the load statistics",
    )


def test_failed_requests_are_named_above_the_panels(run_dir):
    """Failures are in neither throughput nor goodput: a point whose requests failed would sit
    on the goodput line, or at 0, with nothing to say why."""
    store = Store.open(run_dir)
    try:
        rows = load_stats(store.records(), store.load_points(), None, {}, store.configs())
    finally:
        store.close()
    assert "failed requests" not in json.dumps(load_chart(rows).to_dict()["title"])
    rows[0] = {**rows[0], "failed": 3}
    said = " ".join(load_chart(rows).to_dict()["title"]["subtitle"])
    assert "failed requests, in neither throughput" in said, said
    assert f"{rows[0]['config']} at {rows[0]['load_point']} 3 of {rows[0]['n_measure']}" in said


def test_a_goodput_far_under_every_throughput_is_drawn_inside_its_panel(run_dir):
    """On a log throughput axis the goodput panel took the axis's own range, from the slowest
    point's throughput / 1.5: a point where few requests met the SLO (goodput 0.05 of 2.1 req/s
    achieved) was drawn below the panel, over the axis's labels."""
    rows = [dict(r) for r in load_rows(run_dir)[0]]
    rows[-1]["achieved_rate"] = rows[-1]["goodput"] = 400.0  # two decades apart: x is log
    rows[0]["goodput"], rows[0]["correct_goodput"] = 0.05, 0.02
    goodput = load_chart(rows).to_dict()["concat"][-1]
    domains = [
        e["y"]["scale"]["domain"]
        for layer in goodput["layer"]
        for e in [layer.get("encoding", {})]
        if "scale" in e.get("y", {})
    ]
    assert domains and all(d[0] <= 0.02 for d in domains), domains
