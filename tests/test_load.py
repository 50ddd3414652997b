"""`tradeoff load` against real processes on loopback: the canned server (benchmarks/
fast_server.py) and the bundled model. Send times follow the profile, phases are marked, finished
load points are skipped by --resume, and bad input is one line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sqlite3
import subprocess
import sys
from collections import Counter

import pytest
from conftest import fast_server, one_line_error, records_so_far, run_cli, static_files

from tradeoff.errors import RunFailed, UserError
from tradeoff.load.options import Amount
from tradeoff.load.profiles import LoadPoint, parse_profile, send_times, sweep_rates
from tradeoff.load.run import side_by_side


@pytest.fixture(scope="module")
def canned():
    yield from fast_server("--delay-ms", "1")


def _mark_stopped(out, point: str) -> None:
    """Mark a load point stopped before it ended, as a Ctrl-C in it leaves it."""
    with contextlib.closing(sqlite3.connect(out / "tradeoff.sqlite")) as con, con:
        con.execute("UPDATE load_points SET status = 'stopped' WHERE load_point = ?", (point,))


def _rows(out, sql):
    con = sqlite3.connect(out / "tradeoff.sqlite")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _load(canned, out, *args, model="m"):
    return run_cli(
        "load", "-m", f"openai:{canned}#{model}", "-t", "arith", "--max-tokens", "4",
        "--out", str(out), *args,
    )  # fmt: skip


def test_a_constant_rate_sends_at_even_gaps(canned, tmp_path):
    out = tmp_path / "run"
    result = _load(canned, out, "--profile", "constant:50", "--max-requests", "100")
    assert result.returncode == 0, result.stderr
    rows = _rows(out, "SELECT scheduled_s, sent_s, queue_delay_s, load_point FROM records")
    assert len(rows) == 100 and {r[3] for r in rows} == {"constant:50"}
    scheduled = sorted(r[0] for r in rows)
    assert scheduled == pytest.approx([i / 50 for i in range(100)])
    sent = sorted(r[1] for r in rows)
    gaps = sorted(b - a for a, b in zip(sent, sent[1:], strict=False))
    assert gaps[len(gaps) // 2] == pytest.approx(0.02, abs=0.002)  # the median gap
    delays = sorted(r[2] for r in rows)
    assert delays[len(delays) // 2] < 0.005, delays  # sent when due (generous: shared machine)


def test_progress_lines_stay_whole_when_stderr_is_a_file(canned, tmp_path):
    """Rich wraps a console that is not a terminal at its width (80 columns, or COLUMNS: 200 in
    these tests); a progress line naming a long model must stay one line in a log."""
    name = "a-model-name-long-enough-to-push-the-progress-line-past-the-width" * 3
    result = run_cli(
        "load", "-m", f"openai:{canned}#{name}", "-t", "arith", "--max-tokens", "4",
        "--profile", "constant:50", "--max-requests", "20", "--scrape", "off",
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    last = [line for line in result.stderr.splitlines() if line.startswith(f"{name} @ ")][-1]
    assert len(last) > 200 and "20/20" in last and last.endswith(" s"), result.stderr


def test_a_spec_s_seed_is_kept_unless_seed_is_given(canned, tmp_path):
    """`load SPEC` ran every configuration at seed 0 whatever the spec's sampling.seed (other
    arith items than `profile SPEC` asks, which compare could not pair), and gave the poisson
    gaps seed 0 too."""
    from tradeoff.store import Store

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"models: {{m: 'openai:{canned}#m'}}\ntasks: [arith]\n"
        "sampling: {max_tokens: 4, seed: 7}\n"
    )
    for flags, seed in [((), 7), (("--seed", "3"), 3)]:
        out = tmp_path / f"seed{seed}"
        done = run_cli("load", str(spec), "--profile", "poisson:200", "--max-requests", "5",
                       "--scrape", "off", "--out", str(out), *flags)  # fmt: skip
        assert done.returncode == 0, done.stderr
        store = Store.open(out)
        try:
            stored = [store.run()["spec"], *(c["spec"] for c in store.configs())]
        finally:
            store.close()
        assert [s["sampling"]["seed"] for s in stored] == [seed, seed]
        due = send_times(LoadPoint("poisson", rate=200.0), seed=seed)
        scheduled = sorted(r[0] for r in _rows(out, "SELECT scheduled_s FROM records"))
        assert scheduled == pytest.approx([next(due) for _ in range(5)])


def test_poisson_gaps_fit_the_exponential():
    """Kolmogorov-Smirnov against Exp(rate) on the seeded schedule (critical value at 1%)."""
    times = send_times(LoadPoint("poisson", rate=20.0), seed=7)
    due = [next(times) for _ in range(2001)]
    gaps = sorted(b - a for a, b in zip(due, due[1:], strict=False))
    n = len(gaps)
    d = max(
        max((i + 1) / n - (1 - math.exp(-20.0 * g)), (1 - math.exp(-20.0 * g)) - i / n)
        for i, g in enumerate(gaps)
    )
    assert d < 1.63 / math.sqrt(n), d
    assert sum(gaps) / n == pytest.approx(1 / 20.0, rel=0.05)
    again = send_times(LoadPoint("poisson", rate=20.0), seed=7)
    assert [next(again) for _ in range(2001)] == due, "seeded: the same schedule again"


def test_a_rampup_grows_the_rate_to_its_target():
    times = send_times(LoadPoint("constant", rate=10.0), seed=0, rampup_s=4.0)
    due = [next(times) for _ in range(60)]
    assert sum(t < 4.0 for t in due) == 20  # half the target rate over the ramp: 10 * 4 / 2
    late = due[30:]
    assert all(b - a == pytest.approx(0.1) for a, b in zip(late, late[1:], strict=False))


def test_profiles_parse_and_sweeps_spread():
    assert [p.label for p in parse_profile("concurrent:1,4", 64).points] == [
        "concurrent:1",
        "concurrent:4",
    ]
    sweep = parse_profile("sweep:3", 64)
    assert [p.label for p in sweep.points] == ["synchronous", "throughput"] and sweep.sweep == 3
    assert sweep_rates(10, 50, 3) == [20, 30, 40]
    # Rates that round alike (to three digits) run once, and none equal to an end.
    assert sweep_rates(2.52, 2.55, 5) == [2.53, 2.54]
    assert sweep_rates(5, 5, 3) == sweep_rates(5, 4, 3) == []
    with pytest.raises(UserError, match="sweep takes at most 100 rates"):
        parse_profile("sweep:1000000", 64)
    # '00' is no rate, '³' no number for int(): both refused, not 0 rates or a traceback
    for bad in ("sweep:00", "sweep:³", "concurrent:²", "concurrent:0"):
        with pytest.raises(UserError, match="whole number"):
            parse_profile(bad, 64)


def test_a_profile_that_repeats_a_load_point_is_refused():
    """A load point is stored under its label: one given twice ran twice, the second replacing
    the first. Distinct rates get distinct labels (1000000.5 and 1000001 were both 1e+06)."""
    for text, label in [
        ("constant:1,1", "constant:1"),
        ("constant:5,5.0", "constant:5"),
        ("poisson:2,3,2", "poisson:2"),
        ("concurrent:4,4", "concurrent:4"),
    ]:
        with pytest.raises(UserError, match=f"{label} is given twice; give each load point once"):
            parse_profile(text, 64)
    labels = [p.label for p in parse_profile("constant:1000000.5,1000001,1e6,10,2.53", 64).points]
    assert labels == [
        "constant:1000000.5",
        "constant:1000001",
        "constant:1e+06",  # as before, where the short form reads back as the same rate
        "constant:10",
        "constant:2.53",
    ]


@pytest.mark.parametrize("text", ["nan", "nans", "inf", "1e400", "-1", "2.5"])
def test_a_warmup_that_is_no_number_of_requests_or_seconds_is_one_line(text):
    with pytest.raises(UserError, match="give a number of requests"):
        Amount.parse(text, "--warmup")
    assert Amount.parse("2.5s", "--warmup") == Amount(2.5, True)


def test_a_sweep_whose_throughput_is_no_faster_says_why_it_ran_no_rate(tmp_path):
    """One stream at a time, ten times slower once synchronous's 12 requests are served:
    throughput is below synchronous, so no constant rate lies between them, and the sweep ends
    with a line saying so, not in silence."""
    slow = ("--max-concurrent", "1", "--slow-after", "12", "--slow-factor", "10")
    with contextlib.contextmanager(fast_server)("--delay-ms", "2", *slow) as url:
        sweep = ("--profile", "sweep:3", "--max-requests", "12", "--scrape", "off")
        result = _load(url, tmp_path / "run", *sweep)
    assert result.returncode == 0, result.stderr
    points = _rows(tmp_path / "run", "SELECT load_point FROM load_points ORDER BY started_at")
    assert points == [("synchronous",), ("throughput",)]
    said = [line for line in result.stdout.splitlines() if line.startswith("sweep of m: ")]
    assert len(said) == 1 and said[0].startswith("sweep of m: 0 of 3 rates run, throughput ("), said
    assert "is no more than synchronous" in said[0]


def test_a_cooldown_marks_the_last_requests_whichever_bound_ended_the_point(canned, tmp_path):
    """--cooldown 3 (requests) on a point that ran out of --max-seconds, and --cooldown 0.22s on
    one that ran out of --max-requests: each was counted back from the bound that did not end
    the point, and marked nothing (the drain was measured). Marked in the parent, the records
    of every process."""
    ran_out_of_time = tmp_path / "time"
    result = _load(canned, ran_out_of_time, "--profile", "constant:20", "--max-requests", "1000",
                   "--max-seconds", "1", "--cooldown", "3", "--scrape", "off",
                   "--processes", "2")  # fmt: skip
    assert result.returncode == 0, result.stderr
    sent = _rows(ran_out_of_time, "SELECT phase FROM records ORDER BY sent_s")
    assert 10 < len(sent) < 1000
    assert [p for (p,) in sent[-3:]] == ["cooldown"] * 3
    assert {p for (p,) in sent[:-3]} == {"measure"}
    ran_out_of_requests = tmp_path / "requests"
    result = _load(canned, ran_out_of_requests, "--profile", "constant:20", "--max-requests", "10",
                   "--max-seconds", "30", "--cooldown", "0.22s", "--scrape", "off")  # fmt: skip
    assert result.returncode == 0, result.stderr
    # due every 0.05 s, the last at 0.45 s: those due at 0.25 s or later end the point
    due = _rows(ran_out_of_requests, "SELECT scheduled_s, phase FROM records ORDER BY scheduled_s")
    assert [p for _, p in due] == ["measure"] * 5 + ["cooldown"] * 5, due
    (point,) = json.loads(
        run_cli("report", str(ran_out_of_requests), "--load", "-f", "json").stdout
    )
    assert (point["n_measure"], point["n_cooldown"]) == (5, 5), point


def test_a_cooldown_needs_no_bound_of_its_own_and_one_of_nothing_marks_nothing(canned, tmp_path):
    """Counted back from where the point ended, a cool-down in requests needs no --max-requests
    (it was refused: "counts requests, so it needs --max-requests"); one of 0s marked the last
    request of a point that ended on --max-requests (after the review)."""
    bare = tmp_path / "bare"
    result = _load(canned, bare, "--profile", "constant:20", "--max-seconds", "1", "--cooldown",
                   "2", "--scrape", "off", "--processes", "1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    sent = _rows(bare, "SELECT phase FROM records ORDER BY sent_s")
    assert [p for (p,) in sent[-2:]] == ["cooldown"] * 2, sent
    none = tmp_path / "none"
    result = _load(canned, none, "--profile", "constant:20", "--max-requests", "4",
                   "--cooldown", "0s", "--scrape", "off")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert _rows(none, "SELECT DISTINCT phase FROM records") == [("measure",)]


def test_warmup_is_marked_and_finished_points_are_not_redone(canned, tmp_path):
    out = tmp_path / "run"
    args = [
        "--profile",
        "concurrent:1,2",
        "--max-requests",
        "8",
        "--warmup",
        "2",
        "--cooldown",
        "1",
    ]
    assert _load(canned, out, *args).returncode == 0
    phases = _rows(
        out, "SELECT load_point, phase, COUNT(*) FROM records GROUP BY load_point, phase"
    )
    assert sorted(phases) == [
        ("concurrent:1", "cooldown", 1),
        ("concurrent:1", "measure", 5),
        ("concurrent:1", "warmup", 2),
        ("concurrent:2", "cooldown", 1),
        ("concurrent:2", "measure", 5),
        ("concurrent:2", "warmup", 2),
    ]
    # The records export lists them all, marked (it held the measured ones alone)
    exported = run_cli("report", str(out), "--records", "-f", "json")
    assert exported.returncode == 0, exported.stderr
    shown = Counter((r["load_point"], r["phase"]) for r in json.loads(exported.stdout))
    assert sorted((*key, n) for key, n in shown.items()) == sorted(phases)
    table = run_cli("report", str(out), "--records").stdout  # rows told apart without --wide
    header = table.splitlines()[1]
    assert "load_point" in header and "phase" in header and "concurrent:2" in table, header
    before = _rows(out, "SELECT rowid, created_at FROM records ORDER BY rowid")
    resumed = run_cli("load", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "skipped" in resumed.stderr
    assert _rows(out, "SELECT rowid, created_at FROM records ORDER BY rowid") == before
    # What a resume cannot change is refused, not ignored: the run goes on as it was started.
    for flags in (["--profile", "constant:3"], ["--rampup", "0", "--slo", "ttft=1"]):
        refused = run_cli("load", "--resume", str(out), *flags)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert f"it takes no {', '.join(f for f in flags if f.startswith('--'))}" in refused.stderr


def test_an_unfinished_point_is_measured_again_on_resume(canned, tmp_path):
    out = tmp_path / "run"
    assert _load(canned, out, "--profile", "concurrent:1,2", "--max-requests", "4").returncode == 0
    con = sqlite3.connect(out / "tradeoff.sqlite")
    con.execute("UPDATE load_points SET status = 'stopped' WHERE load_point = 'concurrent:2'")
    con.execute(
        "DELETE FROM records WHERE load_point = 'concurrent:2' AND sample = 0 AND rowid % 2"
    )
    con.commit()
    con.close()
    assert run_cli("load", "--resume", str(out)).returncode == 0
    counts = _rows(out, "SELECT load_point, COUNT(*) FROM records GROUP BY load_point")
    assert sorted(counts) == [("concurrent:1", 4), ("concurrent:2", 4)]
    status = _rows(out, "SELECT load_point, status FROM load_points ORDER BY load_point")
    assert status == [("concurrent:1", "finished"), ("concurrent:2", "finished")]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--profile", "steady:3"], "'steady' is not a profile"),
        (["--profile", "constant:0"], "above 0 requests per second"),
        (["--profile", "poisson:-2"], "above 0 requests per second"),
        (["--profile", "concurrent:x"], "whole numbers"),
        (["--profile", "constant:1e400"], "'1e400' is no finite number of requests per second"),
        (["--warmup", "5s", "--max-requests", "10", "--max-seconds", "0"], "--max-seconds"),
        (["--warmup", "ten"], "number of requests"),
        (["--warmup", "2", "--max-seconds", "3"], "counts requests, so it needs --max-requests"),
        (["--warmup", "3s", "--max-seconds", "2"], "nothing would be measured"),
        (["--warmup", "3", "--cooldown", "2", "--max-requests", "5"], "set aside 5 requests"),
        (["--max-error-rate", "2"], "--max-error-rate"),
        (["--max-seconds", "nan"], "--max-seconds must be a number above 0 (got nan)"),
        (["--max-seconds", "inf"], "--max-seconds must be a number above 0 (got inf)"),
        (["--rampup", "nan"], "--rampup must be a number of seconds"),
        (["--rampup", "1e308"], "no request would go at the target rate"),
        (["--rampup", "40"], "(--max-seconds 30)"),  # the default length of a point
        (["--slo", "ttft=abc"], "not a number of seconds"),
        (["--slo", "latency=2"], "ttft, itl, tpot, e2e"),
        (["--scrape", "ftp://x"], "auto, off, or an http(s):// URL"),
        (["--task", "synthetic:prompt=abc,output=8"], "synthetic:"),
        (["--processes", "many"], "give auto or a number"),
    ],
)
def test_bad_load_options_are_one_line(tmp_path, args, needle):
    out = tmp_path / "run"
    result = run_cli("load", "-m", "smollm2-135m", "-t", "arith", "--out", str(out), *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert not out.exists()


def test_a_served_upstream_is_scraped_through_the_run(tmp_path):
    from serve_support import UPSTREAM_MODELS, running

    alias = next(iter(UPSTREAM_MODELS))
    with running(tmp_path, upstream=("--delay-ms", "100")) as served:  # answers take 0.3 s
        out = tmp_path / "load"
        result = run_cli(
            "load", "-m", f"openai:{served.url}#{alias}", "-t", "arith", "--max-tokens", "4",
            "--profile", "concurrent:2", "--max-seconds", "3", "--out", str(out),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    rows = _rows(out, "SELECT source, t, sample FROM scrapes ORDER BY t")
    assert len(rows) >= 2 and {r[0] for r in rows} == {served.root + "/metrics"}
    assert all("tradeoff_" in r[2] for r in rows), rows[0]
    # Shown beside the load table: the server's own count of requests in flight.
    assert "the servers' own metrics (scraped)" in result.stdout
    assert "tradeoff_in_flight" in result.stdout
    import json

    from tradeoff.analysis.scraped import scraped_rows
    from tradeoff.store import Store

    store = Store.open(out)
    try:
        [point] = scraped_rows(store.scrapes(), store.load_points())
    finally:
        store.close()
    assert point["scrapes"] >= 2 and point["running_metric"] == "tradeoff_in_flight"
    assert 1 <= point["running_max"] <= 2  # concurrent:2: never more in flight at the server
    assert json.loads(rows[-1][2])


def test_a_killed_load_run_keeps_what_was_scraped_of_its_finished_points(tmp_path):
    """Scrapes were stored once, as the run ended: a run killed (or aborted by a second Ctrl-C)
    kept its finished points' records and none of their server's metrics."""
    import signal
    import subprocess
    import sys
    import time

    from serve_support import UPSTREAM_MODELS, running

    alias = next(iter(UPSTREAM_MODELS))
    out = tmp_path / "load"
    with running(tmp_path, upstream=("--delay-ms", "20")) as served:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tradeoff", "load", "-m", f"openai:{served.url}#{alias}",
             "-t", "arith", "--max-tokens", "4", "--profile", "concurrent:1,2",
             "--max-seconds", "3", "--out", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.time() + 60
        while True:
            if records_so_far(out) and _rows(out, "SELECT 1 FROM load_points WHERE ended_at"):
                break
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ((first,),) = _rows(out, "SELECT started_at FROM load_points WHERE ended_at IS NOT NULL")
    scraped = _rows(out, "SELECT t FROM scrapes")
    assert len(scraped) >= 2 and min(t for (t,) in scraped) <= first + 1.5, scraped


def test_each_configuration_is_shown_its_own_servers_metrics(tmp_path):
    """Two upstreams scraped (auto): each configuration's points were shown both servers' rows,
    alike but for the figures, half of them the other server's, idle meanwhile."""
    from serve_support import UPSTREAM_MODELS, running

    from tradeoff.cli.report import scraped_rows_of

    (tmp_path / "v1").mkdir()
    (tmp_path / "metrics").write_text("tradeoff_in_flight 7\n")  # a static "server"
    (tmp_path / "v1" / "models").write_text('{"object": "list", "data": []}')
    alias = next(iter(UPSTREAM_MODELS))
    with (
        static_files(tmp_path) as other,
        running(tmp_path, upstream=("--delay-ms", "100")) as served,
    ):
        out = tmp_path / "load"
        result = run_cli(
            "load", "-m", f"openai:{served.url}#{alias}", "-m", f"openai:{other}/v1#x",
            "-t", "arith", "--max-tokens", "4", "--profile", "concurrent:2",
            "--max-seconds", "3", "--out", str(out),
        )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr  # the static server answers no request
    rows = scraped_rows_of(out)
    sources = {r["config"]: {s["source"] for s in rows if s["config"] == r["config"]} for r in rows}
    assert sources == {alias: {served.root + "/metrics"}, "x": {other + "/metrics"}}, rows
    assert {r["running_max"] for r in rows if r["config"] == "x"} == {7}


def test_a_scrape_url_that_does_not_answer_stops_the_run_before_it_starts(canned, tmp_path):
    from conftest import free_port

    out = tmp_path / "run"
    url = f"http://127.0.0.1:{free_port()}/metrics"
    result = _load(canned, out, "--profile", "synchronous", "--max-requests", "2", "--scrape", url)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert url in result.stderr
    assert not out.exists()  # checked before the store is made: the same command may run again
    # auto: a server without /metrics is noted, and the run goes on
    auto = _load(canned, tmp_path / "auto", "--profile", "synchronous", "--max-requests", "2")
    assert auto.returncode == 0 and "not scraped" in auto.stderr, auto.stderr
    # auto, with the upstream itself down: its one line, not a "not scraped" line first
    down = _load(f"http://127.0.0.1:{free_port()}/v1", tmp_path / "down", "--max-requests", "2")
    assert down.returncode == 2 and "not scraped" not in down.stderr, down.stderr
    assert len(down.stderr.strip().splitlines()) == 1 and "unreachable" in down.stderr


def test_a_scrape_url_of_no_metrics_kept_is_said_and_one_gone_stops_no_resume(canned, tmp_path):
    """A URL answering Prometheus text of none of the metrics kept ran with no word, and
    nothing was scraped. A run started with --scrape URL could not be resumed once the URL was
    gone, though --resume takes no --scrape: the error's advice could not be followed."""
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "other.txt").write_text('foo_bar 1\nfoo_baz{a="b"} 2\n')
    (tmp_path / "kept.txt").write_text("tradeoff_in_flight 3\n")
    with static_files(tmp_path) as root:
        deadline = time.time() + 60
        other = _load(canned, tmp_path / "other", "--profile", "synchronous",
                      "--max-requests", "2", "--scrape", f"{root}/other.txt")  # fmt: skip
        assert other.returncode == 0, other.stderr
        said = " ".join(other.stderr.split())
        assert f"{root}/other.txt: Prometheus text, but none of the metrics kept" in said, said
        out = tmp_path / "stopped"
        proc = subprocess.Popen(
            [sys.executable, "-m", "tradeoff", "load", "-m", f"openai:{canned}#m", "-t", "arith",
             "--max-tokens", "4", "--profile", "constant:5,10", "--max-seconds", "3",
             "--scrape", f"{root}/kept.txt", "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        while not records_so_far(out):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    resumed = run_cli("load", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert f"not scraped: scrape URL {root}/kept.txt" in " ".join(resumed.stderr.split())


def test_report_of_a_load_run_shows_the_servers_own_metrics(canned, tmp_path):
    """`tradeoff load` printed the servers' own metrics (scraped) under its load table; `report
    DIR` and `report DIR --load`, which print that table again, never showed them."""
    (tmp_path / "metrics.txt").write_text("tradeoff_in_flight 3\n")
    out = tmp_path / "run"
    with static_files(tmp_path) as root:
        made = _load(canned, out, "--profile", "constant:10", "--max-seconds", "2",
                     "--scrape", f"{root}/metrics.txt")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "the servers' own metrics (scraped)" in made.stdout, made.stdout
    for args in ([], ["--load"]):
        shown = run_cli("report", str(out), *args)
        assert shown.returncode == 0, shown.stderr
        assert "the servers' own metrics (scraped)" in shown.stdout, (args, shown.stdout)
        assert "tradeoff_in_flight" in shown.stdout, (args, shown.stdout)


def test_rates_past_what_a_limited_server_sustains_are_marked_saturated(tmp_path):
    """A server that streams 2 answers at a time, each taking 3 x 50 ms: about 12 requests/s at
    most. At 4/s it keeps up; at 30/s requests queue, and the point is marked saturated."""
    with contextlib.contextmanager(fast_server)("--delay-ms", "50", "--max-concurrent", "2") as url:
        out = tmp_path / "run"
        result = run_cli(
            "load", "-m", f"openai:{url}#m", "-t", "arith", "--max-tokens", "4",
            "--profile", "constant:4,30", "--max-seconds", "4", "--scrape", "off",
            "--out", str(out),
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "▲" in result.stdout  # the table marks it
    summaries = dict(_rows(out, "SELECT load_point, summary FROM load_points"))
    import json

    assert json.loads(summaries["constant:4"])["saturated"] is False
    assert json.loads(summaries["constant:30"])["saturated"] is True
    report = run_cli("report", str(out), "--load", "--format", "json")
    rows = {r["load_point"]: r for r in json.loads(report.stdout)}
    assert rows["constant:30"]["saturated"] and rows["constant:30"]["saturation_reason"]
    assert rows["constant:30"]["achieved_rate"] < 20


def test_warm_up_and_cool_down_in_seconds_take_the_requests_sent_in_them(tmp_path):
    """A rate far past what 2 slots (--max-concurrency) let through: every request sent was due
    in the point's first 0.35 s and waited for a slot. Judged on when each was due, all were
    warm-up and none cool-down: the point measured nothing and lost its saturation mark. Judged
    on when each was sent, the warm-up is the first 0.5 s, the cool-down the last 0.5 s."""
    out = tmp_path / "run"
    with contextlib.contextmanager(fast_server)("--delay-ms", "30") as url:
        result = _load(url, out, "--profile", "constant:100", "--max-seconds", "2.5",
                       "--max-concurrency", "2", "--warmup", "0.5s", "--cooldown", "0.5s",
                       "--scrape", "off")  # fmt: skip
    assert result.returncode == 0, result.stderr
    sent = _rows(out, "SELECT phase, sent_s, scheduled_s FROM records ORDER BY sent_s")
    assert max(due for *_, due in sent) < 0.5, sent  # (so every one was due in the warm-up)
    by_phase = {p: [s for q, s, _ in sent if q == p] for p in ("warmup", "measure", "cooldown")}
    assert by_phase["warmup"] and max(by_phase["warmup"]) < 0.5, sent
    assert len(by_phase["measure"]) >= 9, sent
    assert min(by_phase["measure"]) >= 0.5 and max(by_phase["measure"]) < 2.0, sent
    assert by_phase["cooldown"] and min(by_phase["cooldown"]) >= 2.0, sent
    (summary,) = _rows(out, "SELECT summary FROM load_points")
    assert json.loads(summary[0])["saturated"] is True, summary
    assert "▲" in result.stdout, result.stdout


@pytest.mark.parametrize("warmup", ["6", "0.4s"])
def test_a_killed_point_leaves_its_warm_up_out(canned, tmp_path, warmup):
    """The warm-up was marked only as the point ended: a point killed (or still running) had
    every record "measure", and `report --load` counted the warm-up among its measured
    requests. It is marked as each request is stored."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradeoff", "load", "-m", f"openai:{canned}#m", "-t", "arith",
         "--max-tokens", "4", "--profile", "constant:20", "--max-requests", "1000",
         "--max-seconds", "60", "--warmup", warmup, "--scrape", "off", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 60
    while records_so_far(out) < 16:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    sent = _rows(out, "SELECT phase, sent_s FROM records ORDER BY sent_s")
    n_warmup = 6 if warmup == "6" else sum(s < 0.4 for _, s in sent)
    assert n_warmup >= 6 and [p for p, _ in sent[:n_warmup]] == ["warmup"] * n_warmup, sent
    assert {p for p, _ in sent[n_warmup:]} == {"measure"}, sent
    shown = run_cli("report", str(out), "--load", "-f", "json")
    (row,) = json.loads(shown.stdout)
    assert (row["n_warmup"], row["n_measure"]) == (n_warmup, len(sent) - n_warmup), row


def test_a_sweep_stops_at_the_first_saturated_rate_and_says_so(tmp_path):
    """A server that streams 2 answers at a time, each 7 x 5 ms, until it has served the 24
    requests of synchronous and throughput (12 each); then 10 times slower: about 6 requests/s,
    below any rate of the sweep (all above the synchronous rate, some 20/s). The first rate
    saturates, and the sweep stops there; resumed, it stays stopped."""
    import json

    slow = ("--slow-after", "24", "--slow-factor", "10")
    points_sql = "SELECT load_point, status, summary FROM load_points ORDER BY started_at"
    with contextlib.contextmanager(fast_server)(
        "--delay-ms", "5", "--max-concurrent", "2", *slow
    ) as url:
        out = tmp_path / "run"
        result = run_cli(
            "load", "-m", f"openai:{url}#m", "-t", "arith", "--max-tokens", "4",
            "--profile", "sweep:3", "--max-requests", "12", "--scrape", "off", "--out", str(out),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        rows = _rows(out, points_sql)
        resumed = run_cli("load", "--resume", str(out))  # nothing left to run
    assert all(status == "finished" for _, status, _ in rows)
    points = {label: json.loads(summary) for label, _, summary in rows}
    low, high = points["synchronous"]["achieved_rps"], points["throughput"]["achieved_rps"]
    first = LoadPoint("constant", rate=sweep_rates(low, high, 3)[0]).label
    assert list(points) == ["synchronous", "throughput", first]  # the higher rates never started
    assert points[first]["saturated"] is True
    reason = points[first]["saturation_reason"]
    assert reason
    line = f"sweep stopped at m @ {first} (saturated: {reason}); 2 higher rates not run"
    assert line in result.stdout, result.stdout
    assert resumed.returncode == 0 and line in resumed.stdout, resumed.stderr
    assert _rows(out, points_sql) == rows


def test_frontier_at_an_operating_point_takes_that_points_costs(canned, tmp_path):
    import json

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f'models: {{a: "openai:{canned}#a", b: "openai:{canned}#b"}}\n'
        "tasks: [arith]\nsampling: {max_tokens: 4}\n"
        "prices: {a: {per_hour: 3.6}, b: {per_hour: 7.2}}\n"
    )
    out = tmp_path / "run"
    result = run_cli(
        "load", str(spec), "--profile", "concurrent:1,4", "--max-requests", "40",
        "--warmup", "4", "--scrape", "off", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stats = {
        (r["config"], r["load_point"]): r
        for r in json.loads(run_cli("report", str(out), "--load", "-f", "json").stdout)
    }
    measured = _rows(
        out,
        "SELECT c.name, AVG(r.e2e_s) FROM records r JOIN configs c USING (config_id) "
        "WHERE r.load_point = 'concurrent:4' AND r.phase = 'measure' GROUP BY c.name",
    )
    latency = json.loads(
        run_cli("frontier", str(out), "--at", "concurrency=4", "-c", "latency", "-f", "json").stdout
    )
    for row in latency:
        assert row["cost"] == pytest.approx(dict(measured)[row["config"]], rel=1e-6)
        assert row["n"] == 36 and row["load_point"] == "concurrent:4"  # the output says where
    dollars = json.loads(
        run_cli("frontier", str(out), "--at", "concurrent:4", "-c", "dollars", "-f", "json").stdout
    )
    for row in dollars:  # the hour over the window, shared by the requests measured in it
        per_hour = {"a": 3.6, "b": 7.2}[row["config"]]
        point = stats[(row["config"], "concurrent:4")]
        hour = per_hour / 3600 * point["window_s"]
        assert row["cost"] == pytest.approx(hour / point["n_measure"], rel=1e-6)
    missing = run_cli("frontier", str(out), "--at", "rate=5")
    assert missing.returncode == 2 and "concurrent:1, concurrent:4" in missing.stderr
    for at in ([], ["--at", "concurrency=4"]):  # an SLO judges only --at max-goodput's pick
        ignored = run_cli("frontier", str(out), "--slo", "e2e=1", *at)
        assert ignored.returncode == 2 and "--slo goes with --at max-goodput" in ignored.stderr
    # without --at, the frontier pools every load point, and says so
    pooled = run_cli("frontier", str(out))
    assert pooled.returncode == 0 and "pools the measured requests of every load point" in (
        pooled.stderr
    ), pooled.stderr
    # an SLO no point meets: the pick is any, and it says so
    none = run_cli("frontier", str(out), "--at", "max-goodput", "--slo", "e2e=0.000001")
    assert none.returncode == 0 and "goodput 0 at every point" in none.stdout, none.stdout
    # ... which is for --at max-goodput only: a point named by its load is not chosen by goodput
    named = run_cli("frontier", str(out), "--at", "concurrency=4")
    assert named.returncode == 0 and "goodput 0" not in named.stdout, named.stdout
    pooled_json = json.loads(run_cli("frontier", str(out), "-f", "json").stdout)
    assert all(row["load_point"] is None for row in pooled_json)
    # pooled, each point's hour is shared by its own requests, as at the point: charged per
    # second of each request's own latency, the hour was billed once per request in flight
    pooled_dollars = json.loads(run_cli("frontier", str(out), "-c", "dollars", "-f", "json").stdout)
    summary = json.loads(run_cli("report", str(out), "-f", "json").stdout)
    for row in pooled_dollars:
        per_hour = {"a": 3.6, "b": 7.2}[row["config"]]
        points = [stats[(row["config"], p)] for p in ("concurrent:1", "concurrent:4")]
        hours = sum(per_hour / 3600 * p["window_s"] for p in points)
        mean = hours / sum(p["n_measure"] for p in points)
        assert row["cost"] == pytest.approx(mean, rel=1e-6)
        (summarized,) = [s for s in summary if s["config"] == row["config"]]
        assert summarized["cost_usd"] == pytest.approx(mean, rel=1e-6)


def test_a_point_of_warm_up_only_says_it_measured_nothing(tmp_path):
    """Every request of the point was warm-up: its table said "no request completed (see its
    failures)" with none failed, and "no reference answers" on a scored task."""
    out = tmp_path / "run"
    args = ("--profile", "synchronous", "--max-seconds", "1", "--max-requests", "12",
            "--warmup", "1", "--slo", "e2e=10", "--scrape", "off")  # fmt: skip
    with contextlib.contextmanager(fast_server)("--delay-ms", "1500") as slow:
        result = _load(slow, out, *args)  # its one request, of warm-up, outlasts the point
        # a sweep whose synchronous point so measured no rate runs none between: said, not
        # silent
        swept = _load(slow, tmp_path / "swept", "--profile", "sweep:2", "--max-concurrency", "2",
                      *args[2:])  # fmt: skip
    assert swept.returncode == 0, swept.stderr
    assert "sweep of m: 0 of 2 rates run, synchronous measured no rate" in swept.stdout
    assert result.returncode == 0, result.stderr
    shown = run_cli("report", str(out), "--load", "--wide")
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "the load point measured no request (each one it sent was warm-up" in text, text
    assert "no request of the load point completed" not in text
    assert "no reference answers" not in text


def test_a_sweep_takes_its_top_rate_from_every_answer_of_the_throughput_point(tmp_path):
    """Behind a warm-up of requests kept in flight, the measured ones wait, and their rate reads
    low (2.5× on a short point): the sweep's rates, taken from it, stopped short of what the
    server kept up. Its top now comes from every answer of the point."""
    from tradeoff.store import Store

    out = tmp_path / "run"
    with contextlib.contextmanager(fast_server)("--delay-ms", "20", "--max-concurrent", "2") as url:
        result = _load(url, out, "--profile", "sweep:1", "--max-concurrency", "64",
                       "--warmup", "0.3s", "--max-seconds", "1.5", "--scrape", "off")  # fmt: skip
    assert result.returncode == 0, result.stderr
    store = Store.open(out)
    try:
        points = {p["load_point"]: p for p in store.load_points()}
    finally:
        store.close()
    sync, top = points["synchronous"]["summary"], points["throughput"]["summary"]
    assert top["served_rps"] > top["achieved_rps"], top  # the warm-up's answers counted
    (swept,) = [label for label in points if label.startswith("constant:")]
    middle = (sync["achieved_rps"] + top["served_rps"]) / 2
    assert float(swept.removeprefix("constant:")) == pytest.approx(middle, rel=0.01), points


def test_max_goodput_takes_a_finished_point_over_a_stopped_one():
    """A point stopped after a few requests is measured over a short window: its goodput read
    11.5 against the finished point's 5, and --at max-goodput took it, with no word."""
    from tradeoff.analysis.operating_point import choose, parse_at

    rows = [
        {"config": "m", "load_point": "constant:5", "goodput": 5.0, "status": "finished"},
        {"config": "m", "load_point": "constant:10", "goodput": 11.5, "status": "stopped"},
    ]
    assert choose(rows, parse_at("max-goodput"))["m"]["load_point"] == "constant:5"
    only_stopped = [rows[1]]
    assert choose(only_stopped, parse_at("max-goodput"))["m"]["load_point"] == "constant:10"


def test_a_configuration_with_nothing_measured_is_named_at_an_operating_point(canned, tmp_path):
    """A configuration whose point measured no request (Ctrl-C in its warm-up leaves it so):
    --at max-goodput said the run measured under an SLO "needs an SLO: give --slo", even with
    --slo given, and --at rate=R left it out of the table with no word."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"models: {{a: 'openai:{canned}#fast', b: 'openai:{canned}#fast'}}\n"
        "tasks: [arith]\nlimit: 5\nsampling: {max_tokens: 4}\n"
        "configs: [{model: a, name: first}, {model: b, name: second}]\n"
    )
    out = tmp_path / "run"
    ran = run_cli(
        "load", str(spec), "--profile", "constant:20", "--max-requests", "10", "--slo", "e2e=1",
        "--scrape", "off", "--out", str(out),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    with sqlite3.connect(out / "tradeoff.sqlite") as db:  # as the warm-up stopped left it
        db.execute(
            "DELETE FROM records WHERE phase = 'measure' AND config_id = "
            "(SELECT config_id FROM configs WHERE name = 'second')"
        )
    for at in (["--at", "max-goodput"], ["--at", "max-goodput", "--slo", "e2e=5"]):
        shown = run_cli("frontier", str(out), *at)
        assert shown.returncode == 0, shown.stderr
        said = " ".join(shown.stdout.split())
        assert "second @ constant:20 (no request measured: not on this frontier)" in said, said
    at_rate = run_cli("frontier", str(out), "--at", "rate=20")
    said = " ".join(at_rate.stdout.split())
    assert "second @ constant:20 (no request measured: not on this frontier)" in said, said


def test_an_answer_streamed_in_one_chunk_has_no_decode_rate(canned, tmp_path):
    """Its few microseconds from the chunk to the stream's end read as 10^5 decode tokens/s;
    its ITL was rightly unknown."""
    out = tmp_path / "run"
    result = _load(canned, out, "--profile", "synchronous", "--max-requests", "3",
                   "--scrape", "off", model="one-chunk")  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = _rows(out, "SELECT output_tokens, ttft_s, itl_s, decode_tps FROM records")
    assert len(rows) == 3 and all(r[0] == 4 and r[1] and r[2:] == (None, None) for r in rows)


def test_failed_requests_say_why_and_a_session_of_failures_is_not_a_success(canned, tmp_path):
    args = ("--profile", "synchronous", "--max-requests", "3", "--scrape", "off")
    result = _load(canned, tmp_path / "run", *args, model="fail-500")
    assert result.returncode == 1, result.stderr
    said = " ".join(result.stderr.split())
    assert "fail-500 @ synchronous: 3 of 3 measured requests failed; the first: " in said, said
    assert "fake failure for tests" in said and "every request of this session failed" in said
    assert "3 done, 3 errors, 0.00 req/s" in said  # failures are not throughput, as in the table
    some = _load(canned, tmp_path / "some", *args)
    assert some.returncode == 0 and "requests failed" not in some.stderr, some.stderr


@pytest.mark.parametrize("price", ["3.5", "{}"])  # {} once priced every query at $0
def test_a_price_without_a_unit_is_one_line(tmp_path, price):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"models: {{a: smollm2-135m}}\ntasks: [arith]\nprices: {{a: {price}}}\n")
    result = run_cli("load", str(spec), "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"a: {price} has no unit" in result.stderr and "per_hour" in result.stderr


def _interrupted(canned, out, processes, *pace, wait_s=0.0, signals=1, code=130):
    """A load run against the canned server, sent Ctrl-C `wait_s` after its first record is
    stored (`signals` times, 0.3 s apart); its stderr once it has ended with `code`."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "tradeoff", "load", "-m", f"openai:{canned}#m", "-t", "arith",
         "--max-tokens", "4", *pace, "--scrape", "off", "--processes", processes,
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 60
    while not records_so_far(out):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    time.sleep(wait_s)
    for i in range(signals):
        time.sleep(0.3 * bool(i))
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    return err


@pytest.mark.parametrize("processes", ["1", "2"])
def test_ctrl_c_keeps_what_was_measured_and_marks_the_point_stopped(canned, tmp_path, processes):
    out = tmp_path / "run"
    pace = ("--profile", "constant:20", "--max-seconds", "60")
    err = _interrupted(canned, out, processes, *pace, wait_s=1.0)
    assert "tradeoff load --resume" in err
    kept = _rows(out, "SELECT COUNT(*) FROM records")[0][0]
    assert kept >= 10
    assert _rows(out, "SELECT status FROM load_points") == [("stopped",)]
    # report and frontier say it did not finish, and how to go on, as for a profile run
    for command in (
        ("report",),
        ("frontier",),
        ("report", "--load"),
        ("frontier", "--at", "rate=20"),
    ):
        said = run_cli(*command, str(out)).stderr
        assert "note: the load run stopped before it finished: 0 of the 1" in said, said
        assert f"tradeoff load --resume {out}" in said
    # the operating point says its load point stopped (it was shown as if measured whole)
    at = run_cli("frontier", str(out), "--at", "rate=20")
    assert "(m @ constant:20 (stopped))" in at.stdout, at.stdout
    # the load table marks the point that did not finish (it looked like any other)
    assert "constant:20 (stopped)" in run_cli("report", "--load", str(out)).stdout


@pytest.mark.parametrize("processes", ["1", "2"])
def test_ctrl_c_after_every_request_of_a_point_was_sent_keeps_the_point(tmp_path, processes):
    """Ctrl-C while a point's last requests streamed, every send of its schedule made: the point
    was marked stopped, and --resume deleted its records and measured it again from its start."""
    out = tmp_path / "run"
    pace = ("--profile", "constant:1", "--max-seconds", "2")  # sent at 0 and 1 s, 2 s each
    with contextlib.contextmanager(fast_server)("--delay-ms", "500") as slow:
        _interrupted(slow, out, processes, *pace, code=0)  # once the first has ended
        assert _rows(out, "SELECT status FROM load_points") == [("finished",)]
        kept = _rows(out, "SELECT rowid, created_at FROM records ORDER BY rowid")
        assert len(kept) == 2, kept
        resumed = run_cli("load", "--resume", str(out))
    assert resumed.returncode == 0 and "skipped" in resumed.stderr, resumed.stderr
    assert _rows(out, "SELECT rowid, created_at FROM records ORDER BY rowid") == kept


def test_ctrl_c_starts_no_point_after_the_one_it_came_in(tmp_path):
    """Ctrl-C as a point's last requests streamed: the next point was started all the same,
    stored as stopped with nothing sent, and blamed on its --max-seconds."""
    out = tmp_path / "run"
    pace = ("--profile", "constant:1,2", "--max-seconds", "2")  # the first sent at 0 and 1 s
    with contextlib.contextmanager(fast_server)("--delay-ms", "500") as slow:
        err = _interrupted(slow, out, "1", *pace)
    assert f"continue with: tradeoff load --resume {out}" in err, err
    assert "constant:2" not in err, err
    assert _rows(out, "SELECT load_point, status FROM load_points") == [("constant:1", "finished")]


@pytest.mark.parametrize(
    "status, why", [("stopped", "it was stopped"), ("failed", "a process of it failed")]
)
def test_a_point_stopped_before_its_first_request_says_so(canned, tmp_path, status, why):
    """Its footnote blamed --max-seconds ("give it more seconds"), which a Ctrl-C as the point
    began (while its helper processes started), or a helper that failed to start, had nothing
    to do with."""
    out = tmp_path / "run"
    assert _load(canned, out, "--profile", "concurrent:1,2", "--max-requests", "4").returncode == 0
    con = sqlite3.connect(out / "tradeoff.sqlite")
    con.execute("UPDATE load_points SET status = ? WHERE load_point = 'concurrent:2'", (status,))
    con.execute("DELETE FROM records WHERE load_point = 'concurrent:2'")
    con.commit()
    con.close()
    shown = run_cli("report", str(out), "--load")
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert f"the load point sent no request ({why} before its first went out" in text, text
    assert "--max-seconds" not in text, text


def test_ctrl_c_twice_aborts_and_says_how_to_resume_the_load_run(tmp_path):
    """The abort names `load --resume` (it named nothing), and report says the run may have
    died rather than that it is running. Half a second a token: the second Ctrl-C comes while
    the first waits for the requests in flight."""
    out = tmp_path / "run"
    pace = ("--profile", "constant:20", "--max-seconds", "60")
    with contextlib.contextmanager(fast_server)("--delay-ms", "500") as slow:
        err = _interrupted(slow, out, "1", *pace, signals=2)
    assert (
        f"aborting now; requests in flight are lost; continue with: tradeoff load --resume {out}"
        in err
    )
    said = run_cli("report", str(out)).stderr
    assert "the load run is running (still being written, or its process died): 0 of the 1" in said
    assert f"tradeoff load --resume {out}" in said


@pytest.mark.parametrize("processes", ["1", "2"])
def test_ctrl_c_between_slow_sends_stops_at_once_and_sends_nothing_more(
    canned, tmp_path, processes
):
    """One send every 100 s: Ctrl-C after the first ends the run, not the wait for the next
    (`_interrupted` waits 60 s at most for it to end)."""
    out = tmp_path / "run"
    _interrupted(canned, out, processes, "--profile", "constant:0.01", "--max-requests", "3")
    assert _rows(out, "SELECT COUNT(*) FROM records") == [(1,)]
    assert _rows(out, "SELECT status FROM load_points") == [("stopped",)]


def test_a_point_spread_over_processes_sends_each_request_once_on_one_schedule(canned, tmp_path):
    """--processes 2: a helper process sends the odd requests of the schedule and this one the
    even, from one start; each request is stored once, and the sends keep the one pace."""
    out = tmp_path / "run"
    args = ("--profile", "constant:100", "--max-requests", "120", "--processes", "2")
    result = _load(canned, out, *args, "--scrape", "off")
    assert result.returncode == 0, result.stderr
    assert "constant:100: sent from 2 processes" in result.stderr
    rows = _rows(out, "SELECT item_id, sample, scheduled_s, sent_s FROM records")
    assert len(rows) == 120 and len({(r[0], r[1]) for r in rows}) == 120
    assert sorted(r[2] for r in rows) == pytest.approx([i / 100 for i in range(120)])
    sent = sorted(r[3] for r in rows)
    gaps = sorted(b - a for a, b in zip(sent, sent[1:], strict=False))
    assert gaps[len(gaps) // 2] == pytest.approx(0.01, abs=0.002)  # the median gap
    import json

    summary = json.loads(_rows(out, "SELECT summary FROM load_points")[0][0])
    assert summary["processes"] == 2 and summary["sent"] == summary["done"] == 120


def test_a_closed_loop_spread_over_processes_keeps_its_requests_in_flight(canned, tmp_path):
    out = tmp_path / "run"
    args = ("--profile", "concurrent:4", "--max-requests", "60", "--processes", "2")
    result = _load(canned, out, *args, "--scrape", "off")
    assert result.returncode == 0, result.stderr
    rows = _rows(out, "SELECT item_id, sample, sent_s, e2e_s FROM records")
    assert len(rows) == 60 and len({(r[0], r[1]) for r in rows}) == 60
    # at most 4 in flight at any send, and more than 2 at some (both processes' workers)
    spans = [(r[2], r[2] + r[3]) for r in rows]
    in_flight = [sum(a <= s < b for a, b in spans) for s, _ in spans]
    assert max(in_flight) <= 4 and max(in_flight) > 2, in_flight


def test_a_rampup_no_point_uses_is_said(canned, tmp_path):
    """--rampup grows a rate: beside closed-loop points alone it did nothing, unsaid."""
    args = ("--max-requests", "4", "--max-seconds", "5", "--rampup", "2", "--scrape", "off")
    closed = _load(canned, tmp_path / "closed", "--profile", "concurrent:2", *args)
    assert closed.returncode == 0, closed.stderr
    said = " ".join(closed.stderr.split())
    assert "--rampup 2 is not used: it grows a rate, and closed-loop points (concurrent:2)" in said
    paced = _load(canned, tmp_path / "paced", "--profile", "constant:5", *args)
    assert paced.returncode == 0 and "--rampup" not in paced.stderr, paced.stderr


def test_a_closed_loop_of_uneven_shares_deals_its_requests_as_its_workers(tmp_path):
    """concurrent:3 over 2 processes is 2 workers and 1: dealt half the requests each, the
    process of one worker sent its half alone at the end, 2 in flight on average (not 3), and
    throughput read a third low."""
    import contextlib

    from conftest import fast_server

    out = tmp_path / "run"
    with contextlib.contextmanager(fast_server)("--delay-ms", "30") as url:
        result = _load(url, out, "--profile", "concurrent:3", "--max-requests", "30",
                       "--processes", "2", "--scrape", "off")  # fmt: skip
    assert result.returncode == 0, result.stderr
    spans = [(sent, sent + e2e) for sent, e2e in _rows(out, "SELECT sent_s, e2e_s FROM records")]
    window = max(b for _, b in spans) - min(a for a, _ in spans)
    assert len(spans) == 30 and sum(b - a for a, b in spans) / window > 2.5, spans


def _spread_run(canned, out, *pace):
    """A load run against the canned server from 2 processes, begun (not waited for)."""
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "tradeoff", "load", "-m", f"openai:{canned}#m", "-t", "arith",
         "--max-tokens", "4", *pace, "--processes", "2", "--scrape", "off", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _helper_of(parent: int) -> int | None:
    """The pid of the load helper process `parent` started, once it runs."""
    from pathlib import Path

    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            line = (stat.parent / "cmdline").read_bytes()
            if b"tradeoff.load.spread" in line and f") S {parent} " in stat.read_text():
                return int(stat.parent.name)
    return None


def test_a_helper_that_dies_fails_the_run_in_one_line_and_resume_measures_its_point(
    canned, tmp_path
):
    """A killed --processes helper ended the run with a traceback of some 60 lines and no
    command to continue it; now one line says how, and --resume measures the point again. The
    point it cut short read "running" for good; it is marked failed."""
    import os
    import signal
    import time

    out = tmp_path / "run"
    proc = _spread_run(canned, out, "--profile", "constant:10", "--max-requests", "40")
    deadline = time.time() + 60
    while not (records_so_far(out) and (pid := _helper_of(proc.pid))):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: a load helper process failed (helper process exited"), last
    assert last.endswith(f"continue with: tradeoff load --resume {out}"), last
    assert _rows(out, "SELECT status FROM load_points") == [("failed",)]
    assert "constant:10 (failed)" in run_cli("report", "--load", str(out)).stdout
    resumed = run_cli("load", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert _rows(out, "SELECT status FROM load_points") == [("finished",)]
    assert _rows(out, "SELECT COUNT(*) FROM records") == [(40,)]


def test_ctrl_c_while_a_helper_process_starts_sends_nothing_more(canned, tmp_path):
    """The stop reached the helper before its part of the point did, and was lost: it sent its
    whole share of the point after the Ctrl-C, for all of --max-seconds."""
    import signal
    import time

    out = tmp_path / "run"
    proc = _spread_run(canned, out, "--profile", "constant:10", "--max-seconds", "10")
    deadline = time.time() + 60
    while not _helper_of(proc.pid):  # importing tradeoff and opening the engines
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert _rows(out, "SELECT COUNT(*) FROM records") == [(0,)]
    assert _rows(out, "SELECT status FROM load_points") == [("stopped",)]


def test_a_stop_right_behind_a_helper_s_part_of_a_point_reaches_it(canned):
    """A Ctrl-C as a point began sent the helper its part with a stop right behind: the stop
    reached the helper before its loop took the part, and was lost, the part driven whole."""
    import dataclasses
    import time

    from tradeoff.config import parse_spec, resolve_configs
    from tradeoff.dispatch import Helper
    from tradeoff.load.options import LoadOptions

    models = {"m": f"openai:{canned}#m"}
    spec = parse_spec({"models": models, "tasks": ["arith"], "sampling": {"max_tokens": 4}})
    options = LoadOptions(profile="constant:10", max_seconds=10)
    point = LoadPoint("constant", rate=10)
    helper = Helper.start("tradeoff.load.spread")
    try:
        helper.conn.send(("init", spec.model_dump(mode="json"), None, dataclasses.asdict(options)))
        assert helper.conn.recv() == ("ready", None)
        config_id = resolve_configs(spec)[0].config_id
        part = (config_id, dataclasses.asdict(point), time.perf_counter(), 2, 1)  # stride 1 of 2
        helper.conn.send(("point", part))
        helper.conn.send(("stop", None))
        assert helper.conn.recv() == ("point-done", (0, "stopped"))  # no record: none was sent
    finally:
        helper.close()


def test_errors_in_every_process_count_toward_max_errors(canned, tmp_path):
    """Every request fails: the helper's failures and this process's together stop the point
    at --max-errors, long before its 400 requests."""
    out = tmp_path / "run"
    result = run_cli(
        "load", "-m", f"openai:{canned}#fail-500", "-t", "arith", "--max-tokens", "4",
        "--profile", "constant:100", "--max-requests", "400", "--processes", "2",
        "--max-errors", "20", "--scrape", "off", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "too many failed requests" in result.stderr
    stored = _rows(out, "SELECT COUNT(*), COUNT(error) FROM records")[0]
    assert 20 <= stored[0] == stored[1] < 100, stored
    # Its report said the run "is errors (still being written, or its process died)".
    said = " ".join(run_cli("report", str(out)).stderr.split())
    assert "the load run stopped at its error limit (--max-errors / --max-error-rate): 0 of" in said
    assert "died" not in said, said


def test_max_error_rate_is_judged_on_the_point_not_on_each_process(tmp_path):
    """Every 2nd answer fails, so one process's share fails whole while the point fails half:
    the helper judged --max-error-rate 0.6 on its own share and quietly stopped sending, and the
    point read finished with a quarter of its schedule never sent."""
    out = tmp_path / "run"
    with contextlib.contextmanager(fast_server)("--delay-ms", "1", "--fail-every", "2") as url:
        args = ("--profile", "constant:20", "--max-requests", "40", "--processes", "2")
        result = _load(url, out, *args, "--max-error-rate", "0.6", "--scrape", "off")
    assert result.returncode == 0, result.stderr
    assert _rows(out, "SELECT COUNT(*), COUNT(error) FROM records") == [(40, 20)]
    assert _rows(out, "SELECT status FROM load_points") == [("finished",)]


def test_the_first_model_group_to_fail_stops_the_others_before_its_error_is_raised():
    """Ray load runs drive each model group's points side by side: a lost worker's error must
    reach the run only once the other groups stopped (they ran on, under a session closing)."""
    stopped: list[str] = []

    async def lost() -> None:
        await asyncio.sleep(0.01)
        raise RunFailed("the Ray worker for small was lost")

    async def driving() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.append("large")
            raise

    async def run() -> list[str]:
        with pytest.raises(RunFailed, match="was lost"):
            await side_by_side([lost(), driving()])
        return list(stopped)

    assert asyncio.run(run()) == ["large"]


def _failing_priced_load(tmp_path, fail_every: str, price: str) -> str:
    """A load run (concurrent:2, 20 requests) of model `a` priced `price`, against a server
    failing every `fail_every`-th request; its directory."""
    import contextlib

    from conftest import fast_server

    with contextlib.contextmanager(fast_server)("--fail-every", fail_every) as url:
        spec = tmp_path / "spec.yaml"
        spec.write_text(
            f'models: {{a: "openai:{url}#a"}}\ntasks: [arith]\nsampling: {{max_tokens: 4}}\n'
            f"prices: {{a: {price}}}\n"
        )
        out = str(tmp_path / "run")
        result = run_cli("load", str(spec), "--profile", "concurrent:2", "--max-requests", "20",
                         "--scrape", "off", "--out", out)  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    return out


def test_the_hour_at_an_operating_point_is_shared_by_failed_requests_too(tmp_path):
    """Shared over the completed requests alone, each failed request's share of the hour was
    charged again to the others: half the requests failing read 2x the hour."""
    import json

    out = _failing_priced_load(tmp_path, "2", "{per_hour: 3.6}")
    (point,) = json.loads(run_cli("report", out, "--load", "-f", "json").stdout)
    assert 0 < point["failed"] < point["n_measure"], point
    (row,) = json.loads(
        run_cli("frontier", out, "--at", "concurrent:2", "-c", "dollars", "-f", "json").stdout
    )
    hour = 3.6 / 3600 * point["window_s"]
    assert row["cost"] * point["n_measure"] == pytest.approx(hour, rel=1e-6)


def test_failed_requests_of_a_model_priced_on_tokens_too_share_the_hour(tmp_path):
    """A failure reports no tokens: priced on tokens as well as by the hour, its query was left
    unpriced, and so was the configuration at the point, its share of the hour charged to no
    one."""
    import json

    out = _failing_priced_load(tmp_path, "5", "{input: 1, output: 2, per_hour: 3.6}")
    (point,) = json.loads(run_cli("report", out, "--load", "-f", "json").stdout)
    records = json.loads(run_cli("report", out, "--records", "-f", "json").stdout)
    tokens = sum(
        (c["input_tokens"] or 0) * 1e-6 + c["output_tokens"] * 2e-6
        for r in records for c in r["calls"]
    )  # fmt: skip
    hour = 3.6 / 3600 * point["window_s"]
    assert point["failed"] > 0
    for at in ([], ["--at", "concurrent:2"]):
        (row,) = json.loads(run_cli("frontier", out, *at, "-c", "dollars", "-f", "json").stdout)
        assert row["cost"] * len(records) == pytest.approx(hour + tokens, rel=1e-6), row
    # the export charges each query as the summary does
    assert sum(r["cost_usd"] for r in records) == pytest.approx(hour + tokens, rel=1e-6)
    # and the load table's $/M output tokens likewise (it said n/a: "input tokens not reported")
    answered = sum(r["output_tokens"] for r in records if r["error"] is None)
    assert point["usd_missing"] is None, point
    assert point["usd_per_m_output_tokens"] == pytest.approx(
        (hour + tokens) / answered * 1e6, rel=1e-6
    )


def test_a_query_of_no_price_has_no_cost_at_an_operating_point_either(tmp_path):
    """A server that reports no input tokens, a model priced on them: every record is unpriced
    (n/a, and off the frontier), but `--at` charged the input tokens as 0 and starred it."""
    import contextlib
    import json

    from conftest import fast_server

    serve = contextlib.contextmanager(fast_server)
    with serve("--no-usage") as url, serve() as counted:
        spec = tmp_path / "spec.yaml"
        spec.write_text(
            f'models: {{a: "openai:{url}#a", b: "openai:{counted}#b"}}\ntasks: [arith]\n'
            "sampling: {max_tokens: 4}\nprices: {a: {input: 1000, output: 2000, per_hour: "
            "3600}, b: {input: 1, output: 2}}\n"
        )
        out = str(tmp_path / "run")
        result = run_cli("load", str(spec), "--profile", "concurrent:2", "--max-requests", "8",
                         "--scrape", "off", "--out", out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for at in ([], ["--at", "concurrent:2"]):
        rows = json.loads(run_cli("frontier", out, *at, "-c", "dollars", "-f", "json").stdout)
        (row,) = [r for r in rows if r["config"] == "a"]
        assert row["cost"] is None and not row["pareto"], row
        # not "no price in the spec for a", as where another model of the run had a cost
        assert row["cost_missing"] == "input tokens not reported by a, so not priced", row


def test_answers_counted_in_chunks_are_noted_under_every_table(tmp_path):
    """A server that sends no usage and its answer in one chunk: each answer was counted as one
    token (out tok/s read as req/s), and neither the load table nor the summary said so; only a
    synthetic task's answers were noted, and only their tok/s."""
    with contextlib.contextmanager(fast_server)("--no-usage") as url:
        out = tmp_path / "run"
        result = _load(url, out, "--profile", "synchronous", "--max-requests", "3",
                       "--scrape", "off")  # fmt: skip
        assert result.returncode == 0, result.stderr
        report = run_cli("report", str(out))
    (point,) = json.loads(run_cli("report", str(out), "--load", "-f", "json").stdout)
    assert point["n_counted_in_chunks"] == 3, point
    (row,) = json.loads(run_cli("report", str(out), "-f", "json").stdout)
    assert row["n_counted_in_chunks"] == 3, row
    said = (
        "3 of 3 answers were counted in stream chunks (the server sent no usage): a chunk may "
        "hold several tokens, so their out tok/s, decode tok/s and $/M may read low, and ITL, "
        "TPOT and the itl/tpot SLO checks high"
    )
    for printed in (result.stdout, report.stdout):  # the load table's, the summary's
        assert f"m at synchronous: {said}" in " ".join(printed.split()), printed
    assert f"m: {said}" in " ".join(report.stdout.split()), report.stdout


def _in_flight(out):
    """The most requests of the run in flight at once, from their stored send and end times."""
    spans = [(sent, sent + e2e) for sent, e2e in _rows(out, "SELECT sent_s, e2e_s FROM records")]
    return max(sum(a <= s < b for a, b in spans) for s, _ in spans)


def test_a_rate_spread_over_processes_keeps_to_max_concurrency(canned, tmp_path):
    """--processes 2 at --max-concurrency 1: each process kept a slot of its own, and two
    requests were in flight. Now the point is sent from no more processes than it may keep
    requests in flight."""
    import json

    out = tmp_path / "run"
    args = ("--profile", "constant:1000", "--max-seconds", "0.2", "--max-concurrency", "1",
            "--processes", "2", "--scrape", "off")  # fmt: skip
    result = _load(canned, out, *args)
    assert result.returncode == 0, result.stderr
    assert "sent from 2 processes" not in result.stderr, result.stderr
    assert json.loads(_rows(out, "SELECT summary FROM load_points")[0][0])["processes"] == 1
    assert _in_flight(out) == 1


def test_max_seconds_ends_a_rate_whose_sends_wait_for_a_slot(tmp_path):
    """1,000 requests/s, one at a time, each some 30 ms: the 200 due in 0.2 s took 6 s to send,
    the point running 30 times its --max-seconds. Now sending stops at 0.2 s, and the requests
    due that were not sent are counted: stored, in the progress line and after the table."""
    import json

    out = tmp_path / "run"
    args = ("--profile", "constant:1000", "--max-seconds", "0.2", "--max-concurrency", "1",
            "--processes", "1", "--scrape", "off")  # fmt: skip
    with contextlib.contextmanager(fast_server)("--delay-ms", "5") as url:
        result = _load(url, out, *args)
    assert result.returncode == 0, result.stderr
    summary = json.loads(_rows(out, "SELECT summary FROM load_points")[0][0])
    assert summary["elapsed_s"] < 1.0, summary
    assert 0 < summary["sent"] < 200 and summary["sent"] + summary.get("unsent", 0) == 200
    said = " ".join(result.stderr.split())
    assert f"{summary['unsent']} not sent in time" in said, said
    assert f"{summary['unsent']} requests due within --max-seconds were not sent" in said, said
    assert _rows(out, "SELECT COUNT(*), MAX(sent_s) < 0.2 FROM records") == [(summary["sent"], 1)]


def test_a_rate_no_server_keeps_ends_on_time_counting_what_it_did_not_send(canned, tmp_path):
    """constant:10000000000 for 0.5 s: the requests due and not sent were counted one by one, a
    blocking loop of 5 billion steps (a quarter of an hour, deaf to Ctrl-C). The rest of the
    schedule is counted by its length: the sent and the unsent are the 5 billion due."""
    import json

    out = tmp_path / "run"
    args = ("--profile", "constant:10000000000", "--max-seconds", "0.5", "--processes", "1",
            "--scrape", "off")  # fmt: skip
    result = run_cli(
        "load", "-m", f"openai:{canned}#m", "-t", "arith", "--max-tokens", "4",
        "--out", str(out), *args, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(_rows(out, "SELECT summary FROM load_points")[0][0])
    assert summary["sent"] + summary["unsent"] == 5_000_000_000, summary


def test_ctrl_c_sends_nothing_more_from_a_rate_waiting_for_a_slot(tmp_path):
    """One request in flight at --max-concurrency 1, the next one due and waiting for its slot:
    after Ctrl-C, the one in flight ends and the waiting one is not sent (it was)."""
    out = tmp_path / "run"
    pace = ("--profile", "constant:20", "--max-seconds", "60", "--max-concurrency", "1")
    with contextlib.contextmanager(fast_server)("--delay-ms", "250") as slow:
        _interrupted(slow, out, "1", *pace)  # once the first request is stored
    assert _rows(out, "SELECT COUNT(*) FROM records") == [(2,)]
    assert _rows(out, "SELECT status FROM load_points") == [("stopped",)]


def test_a_run_that_sends_no_request_fails_and_says_why(canned, tmp_path):
    """Points too short for a first request: the run exited 0, its table saying that what each
    point sent was warm-up or cool-down."""
    out = tmp_path / "run"
    result = _load(canned, out, "--profile", "sweep:2", "--max-seconds", "0.000001",
                   "--scrape", "off")  # fmt: skip
    assert result.returncode == 1, result.stderr
    said = " ".join(result.stderr.split())
    assert "no request of this session was sent: each load point's --max-seconds ran out" in said
    table = " ".join(result.stdout.split())
    assert "the load point sent no request (its --max-seconds ran out" in table, table
    assert "warm-up or cool-down" not in table, table
    assert _rows(out, "SELECT COUNT(*) FROM records") == [(0,)]


def test_ctrl_c_while_the_table_is_drawn_says_the_run_is_stored(canned, tmp_path):
    """The run has ended and is stored; a Ctrl-C as its table and plot are drawn said only
    "interrupted". It says where the run is and how to see it."""
    import subprocess
    import sys

    out = tmp_path / "run"
    code = (
        "import os, signal, sys\n"
        "import tradeoff.cli.report as report\n"
        "drawn = report.draw_load_plot\n"
        "def interrupted(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, as the plot is drawn\n"
        "    return drawn(*args, **kwargs)\n"
        "report.draw_load_plot = interrupted\n"
        "from tradeoff.launch import main\n"
        "main()\n"
    )
    ended = subprocess.run(
        [sys.executable, "-c", code, "load", "-m", f"openai:{canned}#m", "-t", "arith",
         "--max-tokens", "4", "--profile", "synchronous", "--max-requests", "2",
         "--scrape", "off", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ended.returncode == 130, ended.stderr
    said = " ".join(ended.stderr.split())
    assert f"interrupted; the run is stored in {out}; tradeoff report {out} --load shows it" in (
        said
    ), said
    assert _rows(out, "SELECT status FROM load_points") == [("finished",)]


def test_resume_refuses_items_whose_content_changed(canned, tmp_path):
    """A rewritten JSONL line: the resumed point sent the new prompt, its records stored against
    the old item (its prompt, its reference). The resume stops and names the items, as
    `profile --resume` does."""
    import json

    data, out = tmp_path / "items.jsonl", tmp_path / "run"

    def write(second):
        rows = [{"prompt": "2+2?", "answer": "4"}, {"prompt": second, "answer": "10"}]
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    write("5+5?")
    made = run_cli("load", "-m", f"openai:{canned}#m", "-t", f"jsonl:{data}", "--max-tokens", "4",
                   "--profile", "concurrent:1,2", "--max-requests", "4", "--scrape", "off",
                   "--out", str(out))  # fmt: skip
    assert made.returncode == 0, made.stderr
    _mark_stopped(out, "concurrent:2")
    before = _rows(out, "SELECT rowid, created_at FROM records ORDER BY rowid")
    write("Capital of France?")
    refused = run_cli("load", "--resume", str(out))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert "1 stored item(s) changed since their records were written" in line, line
    assert "#2" in line and "#1" not in line and "--out" in line, line
    assert _rows(out, "SELECT rowid, created_at FROM records ORDER BY rowid") == before
    # the changed line taken out: its records stay, which the resume says (it said nothing), and
    # it measures the stopped point again
    data.write_text(json.dumps({"prompt": "2+2?", "answer": "4"}) + "\n")
    resumed = run_cli("load", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "1 stored item(s) are no longer in their task" in resumed.stderr, resumed.stderr
    assert "load into a new --out" in resumed.stderr, resumed.stderr
    assert _rows(out, "SELECT status FROM load_points WHERE load_point = 'concurrent:2'") == [
        ("finished",)
    ]


def test_a_changed_item_past_the_limit_does_not_stop_a_load_resume(canned, tmp_path):
    """An item now past the spec's limit (one added before it) is never sent again: its records
    answer what it was, so a change to it stopped the resume ("restore them, or load into a new
    --out"). It is said, changed, and the resume measures the stopped point."""
    import json

    data, out = tmp_path / "items.jsonl", tmp_path / "run"
    a, b = (
        {"id": "a", "prompt": "2+2?", "answer": "4"},
        {"id": "b", "prompt": "5+5?", "answer": "10"},
    )

    def write(*rows):
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    write(a, b, {"id": "c", "prompt": "1+1?", "answer": "2"})
    made = run_cli("load", "-m", f"openai:{canned}#m", "-t", f"jsonl:{data}", "--limit", "2",
                   "--max-tokens", "4", "--profile", "concurrent:1,2", "--max-requests", "4",
                   "--scrape", "off", "--out", str(out))  # fmt: skip
    assert made.returncode == 0, made.stderr
    _mark_stopped(out, "concurrent:2")
    write({"id": "x", "prompt": "3+3?", "answer": "6"}, a, b | {"answer": "11"})
    resumed = run_cli("load", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    said = " ".join(resumed.stderr.split())
    assert (
        f"1 stored item(s) are now past their task's first 2 items, the spec's limit (jsonl:{data}"
        "#b): not asked again, their records stay in the run and its report as they were; load "
        f"into a new --out to leave them out; 1 of them changed in the file since (jsonl:{data}"
        "#b): their records are of the earlier content" in said
    ), said
    assert "--rescore-changed" not in said, said
    assert _rows(out, "SELECT status FROM load_points WHERE load_point = 'concurrent:2'") == [
        ("finished",)
    ]


def test_resume_refuses_a_route_whose_policy_was_fitted_again(canned, tmp_path):
    """A policy file fitted again at its path: the resume measured every point again under a
    second configuration of the same name, and each table pooled the records of both policies.
    It is refused in one line, as `profile --resume` refuses it."""
    import json

    data, policy, out = tmp_path / "items.jsonl", tmp_path / "policy.json", tmp_path / "run"
    rows = [{"prompt": f"{i}: {'forty two' if i % 2 else 'seven'}?", "answer": 42 if i % 2 else 7}
            for i in range(20)]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f'models: {{m: "openai:{canned}#m"}}\ntasks: ["jsonl:{data}"]\n'
        "configs: [{strategy: budget, model: m, budget: 2, name: cheap}, "
        "{strategy: budget, model: m, budget: 8, name: dear}]\n"
    )
    assert run_cli("profile", str(spec), "--out", str(tmp_path / "both")).returncode == 0

    def fit(fraction):
        fitted = run_cli("policy", "fit", str(tmp_path / "both"), "--strong-fraction", fraction,
                         "-o", str(policy))  # fmt: skip
        assert fitted.returncode == 0, fitted.stderr

    fit("0.5")
    routed = tmp_path / "routed.yaml"
    routed.write_text(
        f'tasks: ["jsonl:{data}"]\nconfigs: [{{strategy: route, policy: "{policy}", '
        "name: routed}]\n"
    )
    made = run_cli("load", str(routed), "--profile", "concurrent:1,2", "--max-requests", "4",
                   "--scrape", "off", "--out", str(out))  # fmt: skip
    assert made.returncode == 0, made.stderr
    _mark_stopped(out, "concurrent:2")
    before = _rows(out, "SELECT rowid, config_id, created_at FROM records ORDER BY rowid")
    fit("0.2")
    refused = run_cli("load", "--resume", str(out))
    one_line_error(refused, "configuration 'routed' is not what its records ran", "its policy",
                   "load into a new --out")  # fmt: skip
    assert _rows(out, "SELECT rowid, config_id, created_at FROM records ORDER BY rowid") == before
    assert len(_rows(out, "SELECT * FROM configs")) == 1


def test_a_configuration_of_two_scraped_servers_names_each_row_by_its_server():
    from rich.console import Console

    from tradeoff.report.load_table import scraped_table

    gauges = {f"{m}_{s}": None for m in ("running", "waiting", "kv_cache") for s in ("mean", "max")}
    rows = [
        {**gauges, "config": c, "load_point": "concurrent:2", "profile": "concurrent",
         "source": f"http://{host}/metrics", "scrapes": 3, "failed": 0, "running_metric": None,
         "waiting_metric": None, "kv_cache_metric": None}
        for c, host in (("casc", "small:8000"), ("casc", "large:8000"))
    ]  # fmt: skip
    console = Console(width=160, record=True)
    console.print(scraped_table(rows)[0])
    text = console.export_text()
    assert " server " in text and "http://small:8000/metrics" in text, text
    console.print(scraped_table(rows[:1])[0])  # one server a configuration: no column for it
    assert " server " not in console.export_text()


def test_a_data_parallel_server_s_kv_cache_use_is_a_share_and_its_requests_a_count(tmp_path):
    """vLLM with data parallelism 2 exposes its gauges once per engine: two engines 70% full
    read "kv cache max 1.40" (their shares summed); the requests running on them are added."""
    import time

    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    from tradeoff.analysis.scraped import scraped_rows
    from tradeoff.load.scrape import parse
    from tradeoff.store import Store

    r = CollectorRegistry()
    labels = ["model_name", "engine"]
    running = Gauge("vllm:num_requests_running", "", labels, registry=r)
    kv_cache = Gauge("vllm:kv_cache_usage_perc", "", labels, registry=r)
    for engine, (requests, share) in enumerate([(3, 0.7), (2, 0.5)]):
        running.labels("m", str(engine)).set(requests)
        kv_cache.labels("m", str(engine)).set(share)
    store = Store.create(tmp_path / "run", spec={}, host={})
    try:
        store.start_load_point("m", "concurrent:5", {})
        sample, _ = parse(generate_latest(r).decode())
        store.add_scrapes("http://dp:8000/metrics", [(time.time(), sample)])
        store.end_load_point("m", "concurrent:5", "finished", {})
        [point] = scraped_rows(store.scrapes(), store.load_points())
    finally:
        store.close()
    assert point["running_max"] == 5 and point["kv_cache_max"] == pytest.approx(0.6), point


def test_a_point_cut_short_by_another_group_s_lost_worker_reads_stopped(tmp_path):
    """On Ray, a model group whose worker is lost fails the run and the other groups are
    cancelled: their points read (running) for good. Ray's pool is stood in for by one whose
    first group's worker is lost (the thing under test is how the points end)."""
    from tradeoff.config import parse_spec, resolve_configs
    from tradeoff.load import run as load_run
    from tradeoff.load.options import LoadOptions
    from tradeoff.runner import Stop, Writer
    from tradeoff.store import Store
    from tradeoff.strategies.calls import CallMeter
    from tradeoff.work import Plan, items_of, load_tasks

    spec = parse_spec({
        "models": {"a": "openai:http://127.0.0.1:9/v1#a", "b": "openai:http://127.0.0.1:9/v1#b"},
        "tasks": ["arith"], "limit": 2,
    })  # fmt: skip
    configs, tasks = resolve_configs(spec), load_tasks(spec)
    options = LoadOptions(profile="constant:1", max_seconds=5, scrape="off")

    class OneWorkerLost:
        async def drive_point(self, config, point, options, stopped):
            if config is configs[0]:
                await asyncio.sleep(0.2)
                raise RunFailed("the Ray worker for a was lost")
            await asyncio.sleep(5)
            raise AssertionError("the other group's point was not stopped")

    async def main() -> None:
        store = Store.create(tmp_path / "run", {}, {})
        for task in tasks:
            store.add_items(items_of(task, spec.limit), task.scorer)
        plan = Plan(spec, configs, tasks, CallMeter({}, None, ""))
        run = load_run._Run(
            plan, options, store, Writer(store), Stop(lambda _: None, "load"), None, None,
            OneWorkerLost(),  # type: ignore[arg-type]
        )  # fmt: skip
        result = load_run.LoadResult(store.directory, "finished")
        with pytest.raises(RunFailed):
            await side_by_side(
                [load_run._drive_config(run, c, options.check(), set(), result) for c in configs]
            )
        store.close()

    asyncio.run(main())
    names = {c.config_id: c.name for c in configs}
    points = _rows(tmp_path / "run", "SELECT config_id, status FROM load_points")
    assert {names[c]: status for c, status in points} == {"a": "failed", "b": "stopped"}


def test_the_failures_line_counts_as_the_table_and_names_the_warm_up_s_apart(tmp_path):
    """The line under the table counted every phase: "2 of 8 requests failed" under a table of
    5 measured requests, none failed. It gives the table's count, and the warm-up's besides."""
    for url in fast_server("--fail-every", "2"):
        result = _load(url, tmp_path / "run", "--profile", "synchronous", "--max-requests", "6",
                       "--warmup", "2", "--scrape", "off")  # fmt: skip
    assert result.returncode == 0, result.stderr
    phases = dict(_rows(tmp_path / "run", "SELECT phase, COUNT(*) FROM records GROUP BY phase"))
    failed = dict(_rows(tmp_path / "run", "SELECT phase, COUNT(*) FROM records "
                        "WHERE error IS NOT NULL GROUP BY phase"))  # fmt: skip
    assert phases["warmup"] == 2 and failed["warmup"] == 1, (phases, failed)
    said = " ".join(result.stderr.split())
    assert (
        f"m @ synchronous: {failed['measure']} of {phases['measure']} measured requests failed, "
        "and 1 of its 2 warm-up and cool-down requests; the first: "
    ) in said, said


def test_a_concurrency_past_the_open_files_limit_is_capped_not_failed(tmp_path):
    """No fixed pool caps the connections to a server (it queued requests past 256 inside the
    latency measured), but the open files do: at a limit of 256, a load at concurrent:300 failed
    requests with "Too many open files", then could not write its store. Half the files go to
    connections, and the wait of the others is said; no request fails."""
    for url in fast_server("--delay-ms", "20"):
        command = [sys.executable, "-m", "tradeoff", "load", "-m", f"openai:{url}#m", "-t",
                   "arith", "--max-tokens", "4", "--profile", "concurrent:300", "--max-requests",
                   "600", "--processes", "1", "--scrape", "off",
                   "--out", str(tmp_path / "run")]  # fmt: skip
        ended = subprocess.run(
            ["bash", "-c", 'ulimit -n 256 && exec "$@"', "bash", *command],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert ended.returncode == 0, ended.stderr[-3000:]
    errors = _rows(tmp_path / "run", "SELECT COUNT(*) FROM records WHERE error IS NOT NULL")
    assert errors == [(0,)] and "requests failed" not in ended.stderr, ended.stderr[-3000:]
    said = " ".join(ended.stderr.split())  # the others wait in tradeoff: said (after the review)
    assert "note: up to 300 requests in flight in one process, which may open only 128 " in said
