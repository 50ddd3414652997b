"""`tradeoff compare` on real runs of the bundled models: two runs of the same configurations that
answer differently (B writes at most 4 tokens, on 3 of A's 4 items), one that shares none. The
paired numbers are checked against the stores' records by hand; the page in headless Chromium.

TRADEOFF_DOCS=1 also copies the page's screenshot to docs/compare.png (the README shows it)."""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from browser import chart_drawn, drive, render, screenshot, script_errors
from conftest import REPO, one_line_error, run_cli
from scipy import stats

from tradeoff.analysis.compare import QUANTITIES
from tradeoff.store import Store

CONFIGS = ("smollm2-135m", "gemma3-270m")
OTHER_SPEC = """\
models: {tiny: smollm2-135m}
tasks: [facts]
limit: 1
configs: [{model: tiny, name: other}]
"""


def profile(out, *flags):
    result = run_cli(
        "profile", "-m", CONFIGS[0], "-m", CONFIGS[1], "-t", "facts", *flags, "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A (4 items, 16 tokens), B (3 of the same items, 4 tokens: the longer answers are cut) and
    C (one configuration, named as neither of the others')."""
    root = tmp_path_factory.mktemp("compare")
    a = profile(root / "a", "--limit", "4", "--max-tokens", "16")
    b = profile(root / "b", "--limit", "3", "--max-tokens", "4")
    spec = root / "other.yaml"
    spec.write_text(OTHER_SPEC)
    other = run_cli("profile", str(spec), "--out", str(root / "c"))
    assert other.returncode == 0, other.stderr
    return a, b, root / "c"


def measured(directory, config):
    """{(task, item_id, sample): score} and {...: e2e_s} of one configuration's measured
    records, read straight from the store; a failed record scores 0."""
    store = Store.open(directory)
    try:
        df = store.records()
    finally:
        store.close()
    df = df[(df["config"] == config) & (df["phase"].fillna("measure") == "measure")]
    return {
        (r.task, r.item_id, r.sample): (
            0.0 if isinstance(r.error, str) or math.isnan(r.score) else float(r.score)
        )
        for r in df.itertuples()
    }, dict(zip(zip(df["task"], df["item_id"], df["sample"]), df["e2e_s"]))


def test_the_table_names_each_shared_configuration_with_its_paired_count(runs):
    a, b, _ = runs
    result = run_cli("compare", str(a), str(b))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name in CONFIGS:
        # n = 3: the items both runs answered, not A's 4
        assert any(re.match(rf"{name}\s+3\s", line) for line in lines), result.stdout
    assert "left out, answered in one run only" in result.stdout
    assert re.search(r"spec\.sampling\.max_tokens\s+16\s+4", result.stdout), result.stdout
    assert re.search(r"spec\.limit\s+4\s+3", result.stdout), result.stdout
    assert "Traceback" not in result.stderr


def test_the_json_has_every_field_and_the_paired_difference_is_the_records(runs):
    a, b, _ = runs
    result = run_cli("compare", str(a), str(b), str(a), "--format", "json")
    assert result.returncode == 0, result.stderr
    first, itself = json.loads(result.stdout)
    assert set(first) == {"a", "b", "shared", "only_a", "only_b", "configs", "differences"}
    assert first["shared"] == list(CONFIGS) and first["only_a"] == first["only_b"] == []
    assert {"field": "spec.sampling.max_tokens", "a": 16, "b": 4} in first["differences"]
    for row in first["configs"]:
        assert set(row["ratios"]) == set(QUANTITIES)
        for key, ratio in row["ratios"].items():
            assert set(ratio) == {"a", "b", "ratio", "missing", "unit", "source"}
            assert (ratio["ratio"] is None) == bool(ratio["missing"])
            assert (ratio["unit"], ratio["source"]) == (
                QUANTITIES[key].unit,
                QUANTITIES[key].source,
            )
        assert row["ratios"]["e2e_mean"]["unit"] == "s" and row["ratios"]["energy"]["unit"] == "J"
        # by hand, from the stores: the items both answered, B's score minus A's
        scores_a, e2e_a = measured(a, row["config"])
        scores_b, e2e_b = measured(b, row["config"])
        keys = [k for k in scores_a if k in scores_b]
        diffs = [scores_b[k] - scores_a[k] for k in keys]
        n = len(keys)
        assert n == 3 and (row["n"], row["n_a"], row["n_b"]) == (3, 4, 3)
        assert row["accuracy_a"] == pytest.approx(sum(scores_a[k] for k in keys) / n)
        assert row["accuracy_b"] == pytest.approx(sum(scores_b[k] for k in keys) / n)
        mean = sum(diffs) / n
        assert row["difference"] == pytest.approx(mean)
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
        half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
        interval = (max(mean - half, -1.0), min(mean + half, 1.0))  # scores lie in [0, 1]
        assert (row["low"], row["high"]) == pytest.approx(interval)
        e2e = sum(e2e_b[k] for k in keys) / sum(e2e_a[k] for k in keys)
        assert row["ratios"]["e2e_mean"]["ratio"] == pytest.approx(e2e)
    # B's answers cut at 4 tokens score lower: the runs differ, and compare sees it
    assert any(row["difference"] < 0 for row in first["configs"]), first["configs"]
    # a run against itself: every item paired, no difference, every ratio 1
    assert itself["differences"] == []
    for row in itself["configs"]:
        assert row["n"] == 4 and row["difference"] == 0 and row["low"] == row["high"] == 0
        for ratio in row["ratios"].values():
            assert ratio["ratio"] is None or ratio["ratio"] == pytest.approx(1.0)
    shown = run_cli("compare", str(a), str(a))
    assert shown.returncode == 0, shown.stderr
    assert "A and B are one run" in shown.stdout and "compare it with another run" in shown.stdout


def test_the_page_draws_every_chart_and_its_table_sorts(runs, tmp_path):
    a, b, _ = runs
    page = tmp_path / "compare.html"
    result = run_cli("compare", str(a), str(b), "--html", str(page))
    assert result.returncode == 0, result.stderr
    assert f"wrote {page}" in result.stderr
    markup = re.sub(r"<script>.*?</script>", "", page.read_text(), flags=re.S)
    assert "<script" not in markup, "every script is inline, with no src"
    assert not re.search(r"<[a-z]+[^>]*\s(src|href)=", markup), "nothing loaded from outside"
    dom = render(page)
    assert script_errors(dom) == ""
    for chart in ("accuracy-1", "ratios-1"):
        assert chart_drawn(dom, chart), f"{chart} did not draw"
    for text in (*CONFIGS, str(a.resolve()), str(b.resolve()), "spec.sampling.max_tokens"):
        assert text in dom
    # the configurations' table, in A's order (smollm2 first), sorted by name: then reversed
    click = """
    var table = Array.from(document.querySelectorAll("table.sortable")).find(
      function (t) { return t.querySelector("th").textContent === "config"; });
    var seen = [];
    function first() { return table.tBodies[0].rows[0].cells[0].textContent; }
    seen.push(first());
    table.querySelector("th").click(); seen.push(first());
    table.querySelector("th").click(); seen.push(first());
    var out = document.createElement("pre"); out.id = "sorted";
    out.textContent = seen.join("|"); document.body.appendChild(out);
    """
    driven = drive(page, click, tmp_path / "driven.html")
    found = re.search(r'<pre id="sorted">(.*?)</pre>', driven)
    assert found, "the sorting script did not run"
    assert found.group(1) == "smollm2-135m|gemma3-270m|smollm2-135m"
    assert script_errors(driven) == ""
    shot = screenshot(page, tmp_path / "compare.png", height=1000)
    if os.environ.get("TRADEOFF_DOCS") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copy(shot, REPO / "docs" / "compare.png")


def test_bad_input_is_one_line(runs, tmp_path):
    a, b, c = runs
    empty = tmp_path / "empty"
    store = Store.create(empty, {"models": {}}, {"hostname": "test"})
    store.add_configs([("c0", CONFIGS[0], {})])
    store.close()
    cases = [
        ([], "two run directories or more"),
        ([str(a)], "two run directories or more"),
        ([str(a), str(tmp_path / "nothing")], "nothing does not exist; give a run directory"),
        ([str(a), str(empty)], f"{empty} holds no records"),
        ([str(a), str(c)], "share no configuration"),
        ([str(a), str(b), "--html", str(tmp_path / "no" / "c.html")], "--html"),
        # the output path is refused before any work: before the runs are compared
        ([str(a), str(c), "--html", str(tmp_path / "no" / "c.html")], "does not exist"),
        ([str(a), str(b), "--html", str(tmp_path / "c.svg")], "ending in .html"),
    ]
    for args, needle in cases:
        bad = run_cli("compare", *args)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
        lines = [line for line in bad.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and needle in lines[0], bad.stderr
    share = run_cli("compare", str(a), str(c)).stderr
    for name in (*CONFIGS, "other"):
        assert name in share, share
    # a run not finished (its process killed, say) is named, with how to go on
    unfinished = tmp_path / "unfinished"
    shutil.copytree(b, unfinished)
    con = sqlite3.connect(unfinished / "tradeoff.sqlite")
    with con:
        con.execute("UPDATE runs SET status = 'running'")
    con.close()
    said = run_cli("compare", str(a), str(unfinished)).stderr
    assert "note: the run is running" in said and f"--resume {unfinished}" in said, said
    # among several runs, one that shares nothing is left out, saying why; the others compared
    some = run_cli("compare", str(a), str(c), str(b), "--format", "json")
    assert some.returncode == 0 and "left out: " in some.stderr, some.stderr
    assert "share no configuration" in some.stderr
    assert [cmp["b"]["directory"] for cmp in json.loads(some.stdout)] == [str(b)]
    # where every run is left out, each one's reason (only the first's was said)
    shutil.copytree(c, tmp_path / "c2")
    one_line_error(run_cli("compare", str(a), str(c), str(tmp_path / "c2")),
                   f"{a} and {c} share no", f"{a} and {tmp_path / 'c2'} share no")  # fmt: skip


def test_failures_are_counted_and_other_load_points_named(tmp_path):
    """B's server fails every request: its queries 'answer' fast, and the table must say they
    failed, not that B is faster. A load run pairs with no profile run: the load point is why."""
    import contextlib

    from conftest import fast_server

    def run(url, out, *how):
        done = run_cli(*how, "-m", f"openai:{url}#m", "-t", "arith", "--limit", "3",
                       "--max-tokens", "4", "--out", str(out))  # fmt: skip
        assert done.returncode in (0, 1), done.stderr
        return str(out)

    with contextlib.contextmanager(fast_server)() as good:
        with contextlib.contextmanager(fast_server)("--fail-every", "1") as bad:
            a = run(good, tmp_path / "a", "profile")
            b = run(bad, tmp_path / "b", "profile")
        load = run(good, tmp_path / "load", "load", "--profile", "synchronous",
                   "--max-requests", "3", "--scrape", "off")  # fmt: skip
        warmed = run(good, tmp_path / "warmed", "load", "--profile", "synchronous",
                     "--max-requests", "6", "--warmup", "3", "--scrape", "off")  # fmt: skip
    table = run_cli("compare", a, b)
    assert table.returncode == 0, table.stderr
    assert "errors" in table.stdout and "0 / 3" in table.stdout, table.stdout
    assert "warning: the runs failed different numbers" in table.stdout
    (cmp,) = json.loads(run_cli("compare", a, b, "--format", "json").stdout)
    assert (cmp["configs"][0]["errors_a"], cmp["configs"][0]["errors_b"]) == (0, 3)
    # no item pairs: one line, exit 2 (it was a table of n/a and exit 0)
    unpaired = run_cli("compare", a, load, "--format", "json")
    assert unpaired.stdout == "", unpaired.stdout
    one_line_error(unpaired, "answered no item in common", "at the same load point",
                   "B's: synchronous", "none (a profile run)")  # fmt: skip
    # the same questions, the warm-up taking their first pass: it said their prompts or
    # references differed
    other_pass = run_cli("compare", load, warmed)
    one_line_error(other_pass, "answered no item in common", "A as sample 0 and B as sample 1",
                   "--warmup")  # fmt: skip
    # a profile run pairs with no load run, whatever passes the load run measured
    one_line_error(run_cli("compare", a, warmed), "at the same load point")


def test_load_runs_pair_their_common_load_points_and_name_them(tmp_path):
    """Two load runs with one load point in common: the row pools only that one, and the notes
    name it. The page is written even when the reader of the tables stops early."""
    import contextlib
    import subprocess

    from conftest import fast_server

    def run(url, out, points):
        done = run_cli("load", "-m", f"openai:{url}#m", "-t", "arith", "--max-tokens", "4",
                       "--profile", points, "--max-requests", "6", "--scrape", "off",
                       "--out", str(out))  # fmt: skip
        assert done.returncode == 0, done.stderr
        return str(out)

    with contextlib.contextmanager(fast_server)() as url:
        a = run(url, tmp_path / "a", "constant:20,40")
        b = run(url, tmp_path / "b", "constant:20,30")
    table = run_cli("compare", a, b)
    assert table.returncode == 0, table.stderr
    said = " ".join(table.stdout.split())
    assert "load points measured in both runs, pooled in each row: m constant:20" in said, said
    (cmp,) = json.loads(run_cli("compare", a, b, "--format", "json").stdout)
    assert cmp["configs"][0]["load_points"] == ["constant:20"]
    assert cmp["configs"][0]["n"] == 6
    page = tmp_path / "cmp.html"
    piped = subprocess.run(
        ["bash", "-c", f'"$0" -m tradeoff compare {a} {b} --html {page} | head -1', sys.executable],
        capture_output=True, text=True,
    )  # fmt: skip
    assert page.exists() and "load points measured in both runs" in page.read_text(), piped


def _three_samples_a_item(path, scores, failed=()):
    """A run of one configuration 'm' whose items i0, i1, ... are answered three times each
    (`scores` in that order); the records at the indices `failed` failed."""
    from tradeoff.store import Store
    from tradeoff.types import Item, Record

    store = Store.create(path, {"samples": 3}, {})
    store.add_configs([("id-m", "m", {"strategy": "single"})])
    store.add_items([Item(f"i{k}", f"question {k}", "4", "arith") for k in range(4)])
    for k, score in enumerate(scores):
        store.write_record(Record(
            config_id="id-m", task="arith", item_id=f"i{k // 3}", sample=k % 3, output="",
            score=float(score), parsed=None, error="HTTP 500" if k in failed else None,
            input_tokens=10, output_tokens=5, ttft_s=0.1, e2e_s=0.2, itl_s=None, decode_tps=None,
            energy_j=None, energy_source=None, energy_missing="none", flops=1e9,
            peak_rss_bytes=None, cost_usd=None,
        ))  # fmt: skip
    store.close()
    return str(path)


def test_an_item_s_samples_are_one_difference_in_the_paired_interval(tmp_path):
    """Four items of three samples each: the t interval ran over the twelve records as if they
    were independent queries (n 12, 45% narrower); it runs over the four items' differences,
    and n counts items, as the README says."""
    from scipy import stats

    a_scores = [1, 0, 1, 0, 1, 1, 0, 0, 1, 1, 1, 0]
    b_scores = [1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1]
    a = _three_samples_a_item(tmp_path / "a", a_scores)
    shown = run_cli("compare", a, _three_samples_a_item(tmp_path / "b", b_scores), "--format",
                    "json")  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)[0]["configs"]
    per_item = np.subtract(b_scores, a_scores).reshape(4, 3).mean(axis=1)
    low, high = stats.t.interval(0.95, 3, loc=per_item.mean(), scale=stats.sem(per_item))
    assert row["n"] == 4, row
    assert (row["difference"], row["low"], row["high"]) == pytest.approx(
        (per_item.mean(), max(low, -1.0), min(high, 1.0))
    )


def test_records_left_out_and_failed_are_counted_as_records(tmp_path):
    """n counts items, the runs' sizes records: the notes took one from the other. Two runs
    whose every record paired said "8 of A's 12, 8 of B's 12" were left out, and B's 2 failed
    records of 9 paired ones read "2 of 3"."""
    scores = [1, 0, 1, 0, 1, 1, 0, 0, 1, 1, 1, 0]
    a = _three_samples_a_item(tmp_path / "a", scores)
    same = _three_samples_a_item(tmp_path / "same", scores)
    fewer = _three_samples_a_item(tmp_path / "fewer", scores[:9], failed=(0, 4))
    alike = run_cli("compare", a, same)
    assert alike.returncode == 0 and "left out" not in alike.stdout, alike.stdout
    shown = " ".join(run_cli("compare", a, fewer).stdout.split())
    assert "left out, answered in one run only: m 3 of A's 12, 0 of B's 9" in shown, shown
    assert "failed different numbers of the paired queries, m (A 0, B 2 of 9)" in shown, shown


def test_items_that_share_an_id_but_not_their_question_do_not_pair(tmp_path):
    """Imported without an id column, items are numbered by row: two files of other questions
    share every id. Only the rows whose prompt is the same pair."""
    from conftest import import_outcomes

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rows_a = [(f"question {i}", i % 2, 1) for i in range(6)]
    rows_b = rows_a[:2] + [(f"another question {i}", 1, 0) for i in range(2, 6)]
    a, b = import_outcomes(tmp_path / "a", rows_a), import_outcomes(tmp_path / "b", rows_b)
    result = run_cli("compare", str(a), str(b), "--format", "json")
    assert result.returncode == 0, result.stderr
    (comparison,) = json.loads(result.stdout)
    assert {c["config"]: c["n"] for c in comparison["configs"]} == {"weak": 2, "strong": 2}
    (tmp_path / "c").mkdir()
    c = import_outcomes(tmp_path / "c", [(f"yet another {i}", 1, 1) for i in range(6)])
    none = run_cli("compare", str(a), str(c), "--format", "json")
    one_line_error(none, "their items' prompts or references differ")
    # imported outcomes carry no latency: the ratios say so (they said "none")
    ratios = comparison["configs"][0]["ratios"]
    assert "imported outcomes carry no latency" in ratios["e2e_mean"]["missing"], ratios


def test_imported_costs_are_compared_in_their_unit(tmp_path):
    """Imports carry a cost and nothing else measured: the cost is compared (every ratio was
    n/a, a doubled price only in the spec's differences), unless the runs' units differ."""
    outcomes = tmp_path / "o.jsonl"
    outcomes.write_text("".join(
        json.dumps({"prompt": f"what is {i}+{i}?", "big": 1, "small": i % 2}) + "\n"
        for i in range(10)
    ))  # fmt: skip

    def imported(name: str, big: float, *unit: str) -> str:
        out = str(tmp_path / name)
        made = run_cli("import", "outcomes", str(outcomes), "--prompt-col", "prompt",
                       "--model", f"big=big,cost={big}", "--model", "small=small,cost=0.5",
                       *unit, "--out", out)  # fmt: skip
        assert made.returncode == 0, made.stderr
        return out

    usd, dearer = imported("usd", 3, "--cost-unit", "USD"), imported("dearer", 6)
    eur, eur_dearer = (imported(n, b, "--cost-unit", "EUR") for n, b in [("eur", 3), ("e2", 6)])
    result = run_cli("compare", usd, dearer, eur, "--format", "json")
    assert result.returncode == 0, result.stderr
    priced, other_unit = json.loads(result.stdout)
    costs = {row["config"]: row["ratios"]["cost"] for row in priced["configs"]}
    assert costs["big"]["ratio"] == pytest.approx(2.0) and costs["big"]["unit"] == "$"
    assert costs["small"]["ratio"] == pytest.approx(1.0)
    missing = {row["ratios"]["cost"]["missing"] for row in other_unit["configs"]}
    assert missing == {"A's cost is in $, B's in EUR"}
    euros = json.loads(run_cli("compare", eur, eur_dearer, "--format", "json").stdout)
    big = next(row for row in euros[0]["configs"] if row["config"] == "big")["ratios"]["cost"]
    assert (big["ratio"], big["a"], big["b"], big["unit"]) == (pytest.approx(2.0), 3, 6, "EUR")
    shown = run_cli("compare", usd, dearer).stdout
    assert "cost" in shown and "2×" in shown, shown


def test_an_unscored_task_beside_a_scored_one_counts_toward_no_accuracy(tmp_path):
    """Synthetic load has no reference answers: beside a scored task, its records counted as
    wrong answers (accuracy 0.5 for every answer right) in `report`, `compare` and its paired
    interval."""
    import contextlib

    from conftest import fast_server

    def run(url, out):
        tasks = ("-t", "arith", "-t", "synthetic:prompt=8,output=4,n=2")
        done = run_cli(
            "profile", "-m", f"openai:{url}#m", *tasks, "--limit", "2", "--out", str(out)
        )
        assert done.returncode == 0, done.stderr
        con = sqlite3.connect(out / "tradeoff.sqlite")  # every scored answer right
        with con:
            con.execute("UPDATE records SET score = 1 WHERE score IS NOT NULL")
        con.close()
        return str(out)

    with contextlib.contextmanager(fast_server)() as url:
        a, b = run(url, tmp_path / "a"), run(url, tmp_path / "b")
    (row,) = json.loads(run_cli("report", a, "--format", "json").stdout)
    assert (row["n"], row["accuracy"]) == (4, 1.0), row
    (cmp,) = json.loads(run_cli("compare", a, b, "--format", "json").stdout)
    (config,) = cmp["configs"]
    assert config["n"] == 4 and (config["accuracy_a"], config["accuracy_b"]) == (1.0, 1.0)


def test_one_data_file_at_two_paths_pairs_and_served_runs_say_why_they_cannot(tmp_path):
    """A run names a file's task by its absolute path: two machines' checkouts of the same
    data paired nothing. Served requests are items of their own, and the refusal says so."""
    import contextlib

    import httpx
    from conftest import fast_server, serve_process

    lines = "".join(json.dumps({"prompt": f"What is {i}+{i}?", "answer": 2 * i}) + "\n"
                    for i in range(3))  # fmt: skip
    for place in ("one", "two"):
        (tmp_path / place).mkdir()
        (tmp_path / place / "q.jsonl").write_text(lines)
    with contextlib.contextmanager(fast_server)() as url:
        for place in ("one", "two"):
            task = f"jsonl:{tmp_path / place / 'q.jsonl'}"
            out = str(tmp_path / f"r{place}")
            done = run_cli("profile", "-m", f"openai:{url}#m", "-t", task, "--out", out)
            assert done.returncode == 0, done.stderr
        (tmp_path / "spec.yaml").write_text(f"models: {{m: 'openai:{url}#m'}}\n")
        for name in ("s1", "s2"):
            served = ("--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / name))
            with serve_process(*served) as s:
                ask = {"model": "m", "prompt": "What is 2+2?", "max_tokens": 4}
                assert httpx.post(f"{s.url}/completions", json=ask, timeout=60).status_code == 200
    paired = run_cli("compare", str(tmp_path / "rone"), str(tmp_path / "rtwo"), "-f", "json")
    assert paired.returncode == 0, paired.stderr
    assert [c["n"] for c in json.loads(paired.stdout)[0]["configs"]] == [3]
    one_line_error(
        run_cli("compare", str(tmp_path / "s1"), str(tmp_path / "s2")),
        "served requests are no task's questions",
    )


def test_two_data_files_of_one_name_pair_across_checkouts(tmp_path):
    """Two tasks of one run sharing a file name (gsm/test.jsonl, mm/test.jsonl) kept their
    absolute paths, so two checkouts of the same data paired none of their items. A run of
    gsm's file alone keyed it by its name, so it paired with neither of the two; and a third
    run given with two holding two gsm/test.jsonl (p/ and q/) kept the two from pairing."""
    import contextlib

    from conftest import fast_server

    for place in ("one", "two", "three", "four"):
        for folder, i in (("gsm", 2), ("mm", 3), ("p/gsm", 2), ("q/gsm", 2)):
            (tmp_path / place / folder).mkdir(parents=True)
            item = {"prompt": f"What is {i}+{i}?", "answer": 2 * i}
            (tmp_path / place / folder / "test.jsonl").write_text(json.dumps(item) + "\n")
    runs = {
        "one": ("gsm", "mm"),
        "two": ("gsm", "mm"),
        "three": ("gsm",),
        "four": ("p/gsm", "q/gsm"),
    }
    with contextlib.contextmanager(fast_server)() as url:
        for place, folders in runs.items():
            tasks = [("-t", f"jsonl:{tmp_path / place / f / 'test.jsonl'}") for f in folders]
            out = str(tmp_path / f"r{place}")
            done = run_cli("profile", "-m", f"openai:{url}#m", *sum(tasks, ()), "--out", out)
            assert done.returncode == 0, done.stderr
    runs_given = [str(tmp_path / f"r{place}") for place in runs]
    paired = run_cli("compare", *runs_given[:3], "-f", "json")
    assert paired.returncode == 0, paired.stderr
    assert [c["configs"][0]["n"] for c in json.loads(paired.stdout)] == [2, 1]
    alone = run_cli("compare", runs_given[2], runs_given[0], runs_given[3], "-f", "json")
    assert [c["configs"][0]["n"] for c in json.loads(alone.stdout)] == [1], alone.stderr


def test_costs_priced_per_hour_under_load_and_of_failed_queries_say_why(tmp_path):
    """A query's hourly price was its own latency's: under load that billed one hour once per
    request in flight, and compare's cost B/A read 11.7x where the load table's said 1.18x;
    then compare refused it. It is now each query's share of its point's hour.
    An hourly price needs no token counts (a failed query was unpriced for want of its input
    tokens), and queries unpriced because they failed say so (not 'no prices in the spec')."""
    import contextlib

    from conftest import fast_server

    def run(url, out, price, *how):
        spec = tmp_path / f"{out}.yaml"
        spec.write_text(yaml.safe_dump({
            "models": {"m": f"openai:{url}#m"}, "prices": {"m": price}, "tasks": ["arith"],
            "limit": 4, "sampling": {"max_tokens": 4},
        }))  # fmt: skip
        done = run_cli(*how, str(spec), "--out", str(tmp_path / out))
        assert done.returncode in (0, 1), done.stderr
        return str(tmp_path / out)

    hourly, tokens = {"per_hour": 3.6}, {"input": 1.0, "output": 2.0}
    load = ("load", "--profile", "concurrent:2", "--max-requests", "4", "--scrape", "off")
    with contextlib.contextmanager(fast_server)() as good:
        a, b = run(good, "la", hourly, *load), run(good, "lb", hourly, *load)
        fine = run(good, "fine", hourly, "profile")
    with contextlib.contextmanager(fast_server)("--fail-every", "2") as half:
        some_failed = run(half, "half", hourly, "profile")
    with contextlib.contextmanager(fast_server)("--fail-every", "1") as dead:
        all_failed = run(dead, "dead", tokens, "profile")
    # each query's cost is its share of its point's hour, as `report` charges it
    (cmp,) = json.loads(run_cli("compare", a, b, "--format", "json").stdout)
    cost = cmp["configs"][0]["ratios"]["cost"]
    (ra,), (rb,) = (json.loads(run_cli("report", d, "-f", "json").stdout) for d in (a, b))
    assert cost["ratio"] == pytest.approx(rb["cost_usd"] / ra["cost_usd"], rel=1e-6), cost
    (cmp,) = json.loads(run_cli("compare", fine, some_failed, "--format", "json").stdout)
    assert cmp["configs"][0]["ratios"]["cost"]["ratio"] is not None, cmp["configs"][0]
    (row,) = json.loads(run_cli("report", all_failed, "--format", "json").stdout)
    assert "a call of m failed, and a failure reports no tokens to price" in row["cost_usd_missing"]


def test_a_failing_model_without_a_price_is_named_as_unpriced(tmp_path):
    """Every query of `bad` failed, and it has no price: its reason said it failed, hiding
    that no price was given for it."""
    import contextlib

    from conftest import fast_server

    serve = contextlib.contextmanager(fast_server)
    with serve() as good, serve("--fail-every", "1") as dead:
        spec = tmp_path / "spec.yaml"
        spec.write_text(yaml.safe_dump({
            "models": {"ok": f"openai:{good}#ok", "bad": f"openai:{dead}#bad"},
            "prices": {"ok": {"input": 1.0, "output": 2.0}}, "tasks": ["arith"], "limit": 2,
        }))  # fmt: skip
        done = run_cli("profile", str(spec), "--out", str(tmp_path / "run"))
    assert done.returncode in (0, 1), done.stderr
    rows = {r["config"]: r for r in json.loads(run_cli("report", str(tmp_path / "run"), "-f",
                                                       "json").stdout)}  # fmt: skip
    assert rows["bad"]["cost_usd_missing"] == "no price in the spec for bad", rows["bad"]


def test_spec_differences_pair_configurations_by_name(tmp_path):
    """The differences paired the specs' configurations by position: the same two in another
    order read as every field changed. An empty mapping beside one with prices is said by the
    prices alone."""

    def run(name, configs, prices):
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(yaml.safe_dump({
            "models": {"s": "smollm2-135m?threads=1"}, "tasks": ["arith"], "limit": 2,
            "sampling": {"temperature": 0.0, "max_tokens": 8, "seed": 0},
            "configs": configs, "prices": prices,
        }))  # fmt: skip
        done = run_cli("profile", str(spec), "--out", str(tmp_path / name))
        assert done.returncode == 0, done.stderr
        return str(tmp_path / name)

    unnamed, short = {"model": "s"}, {"model": "s", "name": "short", "max_tokens": 4}
    a = run("a", [unnamed, short], {})
    b = run("b", [short, unnamed, {"model": "s", "name": "extra", "max_tokens": 2}],
            {"s": {"input": 1.0, "output": 2.0}})  # fmt: skip
    (cmp,) = json.loads(run_cli("compare", a, b, "--format", "json").stdout)
    spec = {d["field"]: (d["a"], d["b"]) for d in cmp["differences"]}
    assert {f: v for f, v in spec.items() if f.startswith("spec.")} == {
        "spec.configs[extra].strategy": (None, "single"),
        "spec.configs[extra].name": (None, "extra"),
        "spec.configs[extra].model": (None, "s"),
        "spec.configs[extra].max_tokens": (None, 2),
        "spec.prices.s.input": (None, 1.0),
        "spec.prices.s.output": (None, 2.0),
    }, cmp["differences"]


def test_spec_differences_pair_tasks_by_reference(tmp_path):
    """The differences paired the specs' tasks by position: one task added before a data
    file's read as that file's task replaced by it and the file's task added."""
    import contextlib

    from conftest import fast_server

    (tmp_path / "q.jsonl").write_text(json.dumps({"prompt": "What is 2+2?", "answer": 4}) + "\n")
    data = {"ref": f"jsonl:{tmp_path / 'q.jsonl'}", "prompt_field": "prompt"}
    with contextlib.contextmanager(fast_server)() as url:
        for name, tasks in (("a", ["arith", data]), ("b", ["arith", "facts", data])):
            spec = tmp_path / f"{name}.yaml"
            spec.write_text(yaml.safe_dump({
                "models": {"m": f"openai:{url}#m"}, "tasks": tasks, "limit": 1,
            }))  # fmt: skip
            done = run_cli("profile", str(spec), "--out", str(tmp_path / name))
            assert done.returncode == 0, done.stderr
    compared = run_cli("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--format", "json")
    (cmp,) = json.loads(compared.stdout)
    spec = {d["field"]: (d["a"], d["b"]) for d in cmp["differences"]}
    assert {f: v for f, v in spec.items() if f.startswith("spec.")} == {
        "spec.tasks[facts].ref": (None, "facts"),
    }, cmp["differences"]


def test_the_page_says_why_no_ratio_is_charted(tmp_path):
    """Costs in two units and nothing else measured: the page said no configuration had a value
    in both runs, and dropped every other reason the table gives."""
    outcomes = tmp_path / "o.jsonl"
    outcomes.write_text("".join(
        json.dumps({"prompt": f"what is {i}+{i}?", "big": 1, "small": i % 2}) + "\n"
        for i in range(6)
    ))  # fmt: skip
    runs = []
    for name, unit in (("usd", "USD"), ("eur", "EUR")):
        runs.append(str(tmp_path / name))
        made = run_cli("import", "outcomes", str(outcomes), "--prompt-col", "prompt",
                       "--model", "big=big,cost=2", "--model", "small=small,cost=1",
                       "--cost-unit", unit, "--out", runs[-1])  # fmt: skip
        assert made.returncode == 0, made.stderr
    page = tmp_path / "cmp.html"
    result = run_cli("compare", *runs, "--html", str(page))
    assert "cost per query B/A n/a: A's cost is in $, B's in EUR" in result.stdout, result.stdout
    said = html.unescape(page.read_text())
    assert "no configuration has a value in both runs" not in said
    for reason in (
        "cost per query: A's cost is in $, B's in EUR",
        "end-to-end latency, mean: A and B: imported outcomes carry no latency",
    ):
        assert f"not charted, {reason}" in said, said


def test_a_configuration_with_no_paired_item_has_no_error_counts(tmp_path):
    """B stopped before answering `strong` (its records deleted here): every cell of its row
    said n/a but its errors, 0 / 0."""
    from conftest import import_outcomes

    a = import_outcomes(tmp_path, [(f"question {i}", i % 2, 1) for i in range(4)])
    b = tmp_path / "b"
    shutil.copytree(a, b)
    con = sqlite3.connect(b / "tradeoff.sqlite")
    with con:
        con.execute("DELETE FROM records WHERE config_id IN "
                    "(SELECT config_id FROM configs WHERE name = 'strong')")  # fmt: skip
    con.close()
    result = run_cli("compare", str(a), str(b))
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[4:6]}
    assert re.match(r"weak\s+4\s.*\s0 / 0\s", rows["weak"]), result.stdout
    assert re.match(r"strong\s+0\s", rows["strong"]) and "0 / 0" not in rows["strong"]


def test_runs_are_labelled_alike_in_the_runs_table_the_headings_and_the_terminal(tmp_path):
    """Of A B C D, C shares no question with A and is left out: the page's runs table called
    D B2 and its heading B; the terminal said B of both."""
    from conftest import import_outcomes

    rows = [(f"question {i}", i % 2, 1) for i in range(4)]
    made = {}
    for name in "abcd":
        (tmp_path / name).mkdir()
        some = [(f"other {i}", 1, 1) for i in range(4)] if name == "c" else rows
        made[name] = str(import_outcomes(tmp_path / name, some))
    page = tmp_path / "cmp.html"
    result = run_cli("compare", *made.values(), "--html", str(page))
    assert result.returncode == 0 and "left out" in result.stderr, result.stderr
    titles = re.findall(r"^(B\d?) = (\S+) \(run", result.stdout, flags=re.M)
    assert titles == [("B1", made["b"]), ("B2", made["d"])], result.stdout
    said = page.read_text()
    headings = re.findall(r"<h2>(B\d?) = (\S+) \(run", said)
    runs = re.findall(r'<tr><td class="text">(B\d?)</td><td class="text">([^<]*)</td>', said)
    assert headings == titles, headings
    assert runs == [(label, str(Path(d).resolve())) for label, d in titles], runs


# The y-axis labels of the accuracy and ratio charts as drawn, into #driven.
AXIS_LABELS = """
var out = [];
["accuracy-1", "ratios-1"].forEach(function (id) {
  var texts = document.querySelectorAll("#" + id + " .role-axis-label text");
  Array.from(texts).forEach(function (t) {
    if (/[a-z]/.test(t.textContent)) out.push(id + "=" + t.textContent); }); });
var p = document.createElement("pre"); p.id = "driven"; p.textContent = out.join("\\n");
document.body.appendChild(p);
"""


def test_the_charts_name_each_configuration_whole(tmp_path):
    """Two names that differ at their end were cut at 180 px on the charts' axes: both rows of
    each chart read "meta-llama-3.1-8b-instruct-q4…"."""
    outcomes = tmp_path / "o.jsonl"
    outcomes.write_text("".join(
        json.dumps({"prompt": f"what is {i}+{i}?", "a": i % 2, "b": i % 3 == 0}) + "\n"
        for i in range(6)
    ))  # fmt: skip
    names = [f"meta-llama-3.1-8b-instruct-q4_k_m-temperature-0.7-variant-{v}" for v in "ab"]
    runs = []
    for run, (first, second) in (("r1", "ab"), ("r2", "ba")):
        runs.append(str(tmp_path / run))
        made = run_cli("import", "outcomes", str(outcomes), "--prompt-col", "prompt",
                       "--model", f"{names[0]}={first},cost=1", "--model",
                       f"{names[1]}={second},cost=2", "--out", runs[-1])  # fmt: skip
        assert made.returncode == 0, made.stderr
    page = tmp_path / "cmp.html"
    assert run_cli("compare", *runs, "--html", str(page)).returncode == 0
    dom = drive(page, AXIS_LABELS, tmp_path / "driven.html")
    assert script_errors(dom) == ""
    drawn = re.search(r'<pre id="driven">(.*?)</pre>', dom, re.S)
    assert drawn, "the driver script did not run"
    labels = sorted(drawn.group(1).splitlines())
    assert labels == sorted(f"{chart}={n}" for chart in ("accuracy-1", "ratios-1") for n in names)


def test_each_record_s_json_is_decoded_once_as_report_reads_it(tmp_path, monkeypatch):
    """compare read every column and decoded each record's `calls` and `extra` again for every
    configuration and cost axis (~29 times a record: 3.5 minutes where `report` took 24 s); it
    now reads them as `report` does, their facts as columns, and gives the same numbers."""
    from types import SimpleNamespace

    from conftest import import_outcomes

    from tradeoff.analysis import costs
    from tradeoff.analysis.compare import compare_runs

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a = import_outcomes(tmp_path / "a", [(f"question {i}", i % 2, 1) for i in range(6)])
    b = import_outcomes(tmp_path / "b", [(f"question {i}", 1, int(i % 3 > 0)) for i in range(6)])
    decoded = []
    counted = SimpleNamespace(loads=lambda text, **kw: decoded.append(text) or json.loads(text))
    monkeypatch.setattr(costs, "json", SimpleNamespace(**{**vars(json), **vars(counted)}))
    (comparison,), _ = compare_runs([a, b])
    assert decoded == []
    weak, strong = comparison.configs
    assert (weak.accuracy_a, weak.accuracy_b) == (pytest.approx(0.5), 1.0)
    assert (strong.accuracy_a, strong.accuracy_b) == (1.0, pytest.approx(4 / 6))
    assert weak.ratios["cost"].ratio == pytest.approx(1.0)
