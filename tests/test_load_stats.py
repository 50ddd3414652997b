"""Statistics under load, checked against values worked out by hand: a real SQLite store of
hand-made records of a load run (warm-up, measured and cool-down requests at four load points of
two configurations, failed and cancelled ones among them, scored and unscored), read through
`analysis.load` and through the real CLI (`tradeoff report`), piped and on a 100-column terminal."""

import csv
import io
import json
import math
import re

import pandas as pd
import pytest
from conftest import run_cli
from test_report_table import on_terminal, row_of

from tradeoff.analysis.load import (
    Slo,
    latency_percentiles,
    load_stats,
    parse_slo,
    percentiles,
)
from tradeoff.analysis.metrics import summarize
from tradeoff.errors import UserError
from tradeoff.store import Store
from tradeoff.types import CANCELLED, Record

A = "cascade-smollm2-135m-gemma3-270m-logprob-t1.5"  # long names: printed whole, never cut
B = "vote-gemma3-270m-n5"
SPEC = {
    "models": {"small": "smollm2-135m", "large": "gemma3-270m"},
    "prices": {
        "small": {"input": 0.0, "output": 0.0, "per_hour": 1.6},
        "large": {"input": 0.0, "output": 0.0, "per_hour": 2.0},
    },
    "load": {"slo": "ttft=0.035,e2e=0.2"},
}
FAILED = "HTTP 500: upstream failed"

# The steady point (A at constant:10): 23 measured requests sent every 0.1 s from 1.0 s, each
# 2 ms after it was scheduled. Request 5 failed, request 12 was cancelled; the other 21 took
# 0.05 + 0.01 k s end to end, k = 0..20 in this order (so answers come back at about 10/s), with
# TTFT = e2e / 5, 11 output tokens, 30 input tokens, correct for even k.
STEADY_K = [10, 3, 17, 0, 8, 20, 14, 5, 1, 19, 12, 7, 16, 2, 11, 18, 6, 13, 4, 9, 15]
STEADY_FAILED, STEADY_CANCELLED = 5, 12


def _record(
    config_id,
    load_point,
    j,
    phase,
    sent,
    e2e,
    *,
    queue=0.0,
    error=None,
    score=1.0,
    ttft=None,
    output_tokens=11,
    energy=2.0,
    item="q",
):
    ok = error is None
    return Record(
        config_id=config_id,
        task="arith",
        item_id=f"{item}{j}",
        sample=0,
        output="4" if ok else "",
        score=score,
        parsed=None,
        error=error,
        input_tokens=30,
        output_tokens=output_tokens if ok else 0,
        ttft_s=ttft if ok else None,
        e2e_s=e2e,
        itl_s=None if not ok or ttft is None else (e2e - ttft) / (output_tokens - 1),
        decode_tps=None,
        energy_j=energy,
        energy_source="rapl",
        energy_missing=None,
        flops=None,
        peak_rss_bytes=None,
        cost_usd=None,
        calls=[{"model": "small", "input_tokens": 30, "output_tokens": output_tokens}],
        load_point=load_point,
        phase=phase,
        scheduled_s=None if sent is None else sent - queue,
        sent_s=sent,
        queue_delay_s=queue,
    )


def steady_records():
    out = [
        _record("a", "constant:10", j, "warmup", 0.1 * j, 5.0, ttft=1.0, energy=100.0, item="w")
        for j in range(3)
    ]
    ks = iter(STEADY_K)
    for j in range(23):
        sent = 1.0 + 0.1 * j
        if j == STEADY_FAILED:
            out.append(
                _record(
                    "a",
                    "constant:10",
                    j,
                    "measure",
                    sent,
                    0.01,
                    queue=0.002,
                    error=FAILED,
                    score=0.0,
                )
            )
        elif j == STEADY_CANCELLED:
            out.append(
                _record(
                    "a",
                    "constant:10",
                    j,
                    "measure",
                    sent,
                    0.02,
                    queue=0.002,
                    error=CANCELLED,
                    score=None,
                )
            )
        else:
            k = next(ks)
            e2e = 0.05 + 0.01 * k
            out.append(
                _record(
                    "a",
                    "constant:10",
                    j,
                    "measure",
                    sent,
                    e2e,
                    queue=0.002,
                    ttft=e2e / 5,
                    score=1.0 if k % 2 == 0 else 0.0,
                )
            )
    out += [
        _record(
            "a", "constant:10", j, "cooldown", 3.5 + 0.1 * j, 5.0, ttft=1.0, energy=100.0, item="c"
        )
        for j in range(2)
    ]
    return out


def saturated_records():
    """A at constant:20: every request sent on time, each 50 ms slower than the one before, so
    answers come back every 0.1 s: at 10/s, half the target."""
    return [
        _record("a", "constant:20", j, "measure", 0.05 * j, 0.1 + 0.05 * j, ttft=0.02)
        for j in range(20)
    ]


def queueing_records():
    """B at constant:10: requests sent 5 ms later each time (queue delay 0 to 145 ms), served in
    0.1 s: answers come back at 1 / 0.105 s = 9.5/s, within 10% of the target; unscored."""
    return [
        _record(
            "b", "constant:10", j, "measure", 0.105 * j, 0.1, queue=0.005 * j, ttft=0.02, score=None
        )
        for j in range(30)
    ]


def noisy_records():
    """B at concurrent:2: queue delays that jump about between 0 and 36 ms without growing."""
    return [
        _record(
            "b",
            "concurrent:2",
            j,
            "measure",
            0.25 * j,
            0.5,
            queue=0.004 * ((7 * j) % 10),
            ttft=0.05,
            score=None,
        )
        for j in range(30)
    ]


# A profile run's records beside the load run's (load point ''): e2e 1..11 s.
PROFILE_E2E = [float(x) for x in range(1, 12)]


def profile_records():
    return [
        _record("a", "", j, None, None, e2e, ttft=e2e / 10, item="p")
        for j, e2e in enumerate(PROFILE_E2E)
    ]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("load") / "run"
    store = Store.create(directory, SPEC, {"host": "test"})
    store.add_configs(
        [
            ("a", A, {"strategy": "cascade", "models": {"small": "s", "large": "l"}}),
            ("b", B, {"strategy": "vote", "models": {"large": "l"}}),
        ]
    )
    store.write_records(
        steady_records()
        + saturated_records()
        + queueing_records()
        + noisy_records()
        + profile_records()
    )
    # The load points the scheduler stored; B's concurrent:2 has none (its records name it).
    for t, (config_id, point, spec) in enumerate(
        [
            ("a", "constant:10", {"kind": "constant", "rate": 10.0}),
            ("a", "constant:20", {"kind": "constant", "rate": 20.0}),
            ("b", "constant:10", {"kind": "constant", "rate": 10.0}),
        ]
    ):
        store.conn.execute(
            "INSERT INTO load_points (run_id, config_id, load_point, spec, started_at, "
            "ended_at, status) VALUES (?, ?, ?, ?, ?, ?, 'done')",
            (store.run_id, config_id, point, json.dumps(spec), float(t), float(t) + 1),
        )
    store.close()
    return directory


@pytest.fixture(scope="module")
def stored(run_dir):
    store = Store.open(run_dir)
    try:
        return store.records(), store.load_points(), store.configs()
    finally:
        store.close()


RUN_SLO = parse_slo(SPEC["load"]["slo"])


def _rows(stored, slo=RUN_SLO):
    records, points, configs = stored
    rows = load_stats(records, points, slo, SPEC["prices"], configs)
    return {(r["config"], r["load_point"]): r for r in rows}


def test_one_row_per_configuration_and_load_point_in_the_order_they_ran(stored):
    records, points, configs = stored
    rows = load_stats(records, points, None, SPEC["prices"], configs)
    assert [(r["config"], r["load_point"]) for r in rows] == [
        (A, "constant:10"),
        (A, "constant:20"),
        (B, "constant:10"),
        (B, "concurrent:2"),  # no stored load point: after those that have one
    ]
    assert [r["status"] for r in rows] == ["done", "done", "done", None]
    assert rows[3]["profile"] == "concurrent" and rows[3]["target_concurrency"] == 2


def test_a_throughput_points_cap_is_its_max_concurrency_and_counts_stay_whole(stored, tmp_path):
    """A throughput point is stored as {"kind": "throughput", "concurrency": N}: its cap read
    as null (`max_concurrency` came from a key it never has). And in the table the JSON is
    written from, a count column with nulls (a rate's target concurrency) read 2.0, not 2."""
    from tradeoff.analysis.load import load_frame, target
    from tradeoff.cli.output import write_json_rows

    throughput = target({"kind": "throughput", "concurrency": 64}, "throughput")
    assert throughput["max_concurrency"] == throughput["target_concurrency"] == 64
    assert (
        target({"kind": "concurrent", "concurrency": 4}, "concurrent:4")["max_concurrency"] is None
    )
    records, points, configs = stored
    written = tmp_path / "load.json"
    write_json_rows(load_frame(load_stats(records, points, None, SPEC["prices"], configs)), written)
    rows = json.loads(written.read_text())
    by_point = {(r["config"], r["load_point"]): r for r in rows}
    assert by_point[(B, "concurrent:2")]["target_concurrency"] == 2
    assert by_point[(A, "constant:10")]["target_concurrency"] is None
    for row in rows:
        for key in ("target_concurrency", "n_measure", "completed", "failed", "n_ttft_s"):
            assert row[key] is None or type(row[key]) is int, (key, row[key])


def test_percentiles_are_numpys_linear_ones_and_p999_needs_1000_values():
    # 21 values 0..20: rank p/100 * 20, interpolated
    found = percentiles(list(range(21)))
    assert found == {
        "p50": 10.0,
        "p90": 18.0,
        "p95": 19.0,
        "p99": pytest.approx(19.8),
        "p999": None,
    }
    big = percentiles(list(range(1001)))
    assert big["p999"] == pytest.approx(999.0)
    assert percentiles([]) == dict.fromkeys(["p50", "p90", "p95", "p99", "p999"])
    assert percentiles([math.nan, 2.0])["p50"] == 2.0


def test_the_steady_point_by_hand(stored):
    r = _rows(stored)[(A, "constant:10")]
    # warm-up (3) and cool-down (2) requests, 5 s and 100 J each, are counted and left out
    assert (r["n_warmup"], r["n_measure"], r["n_cooldown"]) == (3, 23, 2)
    assert (r["completed"], r["failed"], r["cancelled"]) == (21, 1, 1)
    assert r["error_rate"] == pytest.approx(1 / 23)
    assert r["target_rate"] == 10.0 and r["profile"] == "constant"
    # window: first send 1.0 s to the last end, 3.2 + 0.05 + 0.15 = 3.4 s
    assert r["window_s"] == pytest.approx(2.4)
    assert r["achieved_rate"] == pytest.approx(21 / 2.4)  # 8.75/s: the drain lowers it
    # every answer, warm-up and cool-down too (5 s each), over the whole point: 0.0 s to the
    # last cool-down's end, 3.6 + 5.0 s (the failed and the cancelled one are no answers)
    assert r["served_rate"] == pytest.approx((3 + 21 + 2) / 8.6)
    # answers kept pace with the schedule: the medians of the waits of the first and last 7
    # requests differ by little against the 1.5 s between their schedules
    assert r["pace"] == pytest.approx(1.0, abs=0.05)
    # e2e of every measured request, failed and cancelled ones too: 21 * 0.05 + 2.1 + 0.03
    assert r["concurrency"] == pytest.approx(3.18 / 2.4)
    assert r["output_tps"] == pytest.approx(21 * 11 / 2.4)
    assert r["total_tps"] == pytest.approx(21 * 41 / 2.4)
    # e2e 0.05..0.25 over the 21 completed requests (the failed and cancelled ones left out)
    assert r["e2e_s"] == pytest.approx(0.15)
    assert r["e2e_s_p50"] == pytest.approx(0.15)
    assert r["e2e_s_p90"] == pytest.approx(0.23)
    assert r["e2e_s_p95"] == pytest.approx(0.24)
    assert r["e2e_s_p99"] == pytest.approx(0.248)
    assert r["e2e_s_p999"] is None  # fewer than 1000 requests
    assert r["ttft_s_p50"] == pytest.approx(0.03) and r["ttft_s_p99"] == pytest.approx(0.0496)
    # TPOT = (e2e - e2e / 5) / 10 = 0.08 e2e; ITL as stored, the same here
    assert r["tpot_s_p50"] == pytest.approx(0.012) and r["itl_s_p90"] == pytest.approx(0.0184)
    assert r["n_ttft_s"] == 21
    assert r["queue_delay_s"] == pytest.approx(0.002)
    assert r["queue_delay_s_p99"] == pytest.approx(0.002)
    assert not r["saturated"] and r["saturation_reason"] is None


def test_goodput_and_correct_goodput_under_the_runs_slo(stored):
    r = _rows(stored)[(A, "constant:10")]
    # ttft <= 0.035 s (e2e <= 0.175 s) and e2e <= 0.2 s: k = 0..12, 13 requests; 7 of them
    # (even k) correct; the failed one meets nothing, the cancelled one is not counted
    assert r["slo"] == "ttft=0.035,e2e=0.2"
    assert r["n_slo_met"] == 13 and r["n_correct_slo_met"] == 7
    assert r["goodput"] == pytest.approx(13 / 2.4)
    assert r["correct_goodput"] == pytest.approx(7 / 2.4)
    assert r["slo_attainment"] == pytest.approx(13 / 22)


def test_goodput_under_another_slo_and_none_without(stored):
    tight = _rows(stored, Slo(e2e=0.105))[(A, "constant:10")]
    assert tight["goodput"] == pytest.approx(6 / 2.4)  # k = 0..5
    assert tight["correct_goodput"] == pytest.approx(3 / 2.4)  # k = 0, 2, 4
    # an ITL objective: 0.08 e2e <= 0.01 s for e2e <= 0.125 s, k = 0..7
    assert _rows(stored, Slo(itl=0.01))[(A, "constant:10")]["n_slo_met"] == 8
    assert _rows(stored, Slo(tpot=0.01))[(A, "constant:10")]["n_slo_met"] == 8
    none = _rows(stored, None)[(A, "constant:10")]
    assert none["goodput"] is None and none["correct_goodput"] is None and none["slo"] is None


def test_unscored_requests_have_goodput_but_no_correct_goodput(stored):
    r = _rows(stored)[(B, "constant:10")]
    assert r["n_slo_met"] == 30 and r["correct_goodput"] is None


def test_energy_and_dollars_per_output_token(stored):
    r = _rows(stored)[(A, "constant:10")]
    assert r["energy_j_per_query"] == pytest.approx(2.0)  # the warm-up's 100 J left out
    assert r["energy_j_per_output_token"] == pytest.approx(23 * 2.0 / 231)
    assert r["energy_source"] == "rapl"
    # the hour of both models (1.6 + 2.0 $) over 2.4 s, spread over 231 output tokens:
    # per_hour / 3600 / (output tokens/s) * 1e6
    assert r["usd_per_m_output_tokens"] == pytest.approx(3.6 / 3600 / (231 / 2.4) * 1e6)
    assert r["usd_missing"] is None
    records, points, configs = stored
    unpriced = load_stats(records, points, None, {"small": {"per_hour": 1.0}}, configs)
    assert unpriced[0]["usd_per_m_output_tokens"] is None
    assert unpriced[0]["usd_missing"] == "no price in the spec for large"


def test_saturation_at_half_the_target_rate(stored):
    r = _rows(stored)[(A, "constant:20")]
    assert r["achieved_rate"] == pytest.approx(10.0)
    # the first and last 6 requests: scheduled 0.7 s apart (medians), answered 1.4 s apart
    assert r["pace"] == pytest.approx(0.5)
    assert r["saturated"]
    assert r["saturation_reason"] == (
        "answers came back at 50% of the rate requests were scheduled at (below 90%)"
    )


def test_a_point_whose_every_request_failed_has_no_pace(stored):
    # refused as fast as they were sent: the failures kept the schedule, the server did not
    records, points, configs = stored
    failing = records[records["load_point"] == "constant:20"].assign(
        error=FAILED, e2e_s=0.001, ttft_s=None
    )
    rows = load_stats(failing, points, RUN_SLO, SPEC["prices"], configs)
    (row,) = (r for r in rows if r["load_point"] == "constant:20")
    assert row["failed"] == 20 and row["pace"] is None and not row["saturated"]


def test_saturation_by_growing_queue_delay(stored):
    r = _rows(stored)[(B, "constant:10")]
    # scheduled 2.0 s apart, answered 2.1 s apart: within 10% of the schedule
    assert r["pace"] == pytest.approx(2.0 / 2.1)
    assert r["saturated"]
    # medians of j = 0..9 and 20..29: 22.5 ms and 122.5 ms
    assert r["saturation_reason"] == (
        "queue delay grew from a median of 22.5 ms over the first third of the requests to "
        "122.5 ms over the last third"
    )


def test_noisy_but_steady_queue_delay_is_not_saturation(stored):
    r = _rows(stored)[(B, "concurrent:2")]
    assert r["queue_delay_s_p99"] > 0.03
    assert not r["saturated"] and r["saturation_reason"] is None


def test_profile_runs_get_percentiles_too(stored):
    records, _, configs = stored
    profile = records[records["load_point"] == ""]
    # e2e 1..11 s: rank p/100 * 10
    found = latency_percentiles(profile)
    assert found["e2e_s_p50"] == 6.0 and found["e2e_s_p90"] == pytest.approx(10.0)
    assert found["e2e_s_p95"] == pytest.approx(10.5) and found["e2e_s_p99"] == pytest.approx(10.9)
    row = summarize(profile, [c["name"] for c in configs])[0]
    assert row["e2e_s_p99"] == pytest.approx(10.9) and row["ttft_s_p95"] == pytest.approx(1.05)
    assert row["itl_s_p50"] == pytest.approx(0.54)  # (e2e - e2e / 10) / 10 at e2e 6
    assert row["tpot_s"] == pytest.approx(0.54)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("ttft=abc", "ttft='abc' is not a number of seconds"),
        ("ttft=0", "ttft=0 is not > 0 seconds"),
        ("ttft=-1", "ttft=-1 is not > 0 seconds"),
        ("latency=1", "'latency' is not an objective"),
        ("ttft", "'ttft' is not KEY=SECONDS"),
        ("e2e=1,e2e=2", "e2e is given twice"),
        ("", "no objective given"),
        ("ttft=nan", "ttft=nan is not > 0 seconds"),
    ],
)
def test_malformed_slos_say_what_is_valid(text, problem):
    with pytest.raises(UserError) as caught:
        parse_slo(text)
    message = str(caught.value)
    assert problem in message and "\n" not in message
    assert "keys ttft, itl, tpot, e2e" in message and "> 0 seconds" in message


def test_an_slo_reads_back_as_written():
    slo = parse_slo(" ttft=0.5, itl=0.05,e2e=10 ")
    assert slo == Slo(ttft=0.5, itl=0.05, e2e=10.0)
    assert str(slo) == "ttft=0.5,itl=0.05,e2e=10"


def test_a_malformed_slo_exits_2_with_one_line(run_dir):
    result = run_cli("report", str(run_dir), "--slo", "ttft=abc")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "ttft='abc' is not a number of seconds" in lines[0], lines


def _load_rows_of(text: str, name: str) -> list[str]:
    """The load table's lines on which configuration `name` stands whole before a load point."""
    return [line for line in text.splitlines() if re.search(rf"(^|\s){re.escape(name)}\s+c", line)]


def test_report_prints_the_load_table_after_the_summary(run_dir):
    piped = run_cli("report", str(run_dir))
    assert piped.returncode == 0, piped.stderr
    text = piped.stdout
    summary, _, load = text.partition("under load")
    assert load, text
    # A and B: one summary row each, then two load points each
    assert len(row_of(summary, A)) and len(row_of(summary, B))
    assert len(_load_rows_of(load, A)) == 2 and len(_load_rows_of(load, B)) == 2
    steady = _load_rows_of(load, A)[0]
    # achieved, concurrency (1.325, just under in binary), done/failed, out tok/s, TTFT p50/p99
    # ms, ITL p50 ms, e2e p50/p99 s, goodput, correct goodput
    assert "8.75 1.32 21/1 96.25 30.0 49.6 12.0 0.150 0.248 5.42 2.92" in " ".join(
        steady.split()
    ), steady
    assert (
        "goodput: completed requests/s meeting every objective of the SLO ttft ≤ 0.035 s, "
        "e2e ≤ 0.2 s (from the run's spec)" in load
    )
    assert "queue delay grew from a median of 22.5 ms" in load
    assert "answers came back at 50% of the rate" in load


def test_at_100_columns_every_name_is_whole_in_the_load_table(run_dir):
    shown = on_terminal("report", str(run_dir), "--load")
    assert len(_load_rows_of(shown, A)) == 2 and len(_load_rows_of(shown, B)) == 2, shown
    assert "…" not in shown
    # the footnotes say which points saturated and why, the name whole
    assert f"▲ {A} at constant:20: answers came back at 50%" in shown


def test_report_slo_overrides_the_runs(run_dir, tmp_path):
    result = run_cli("report", str(run_dir), "--load", "--slo", "e2e=0.105")
    assert result.returncode == 0, result.stderr
    assert "e2e ≤ 0.105 s (from --slo)" in result.stdout
    # the HTML report too, and a malformed one is refused there as well
    page = tmp_path / "r.html"
    written = run_cli("report", str(run_dir), "--html", "-o", str(page), "--slo", "e2e=0.105")
    assert written.returncode == 0, written.stderr
    assert "e2e ≤ 0.105 s (from --slo)" in page.read_text()
    bad = run_cli("report", str(run_dir), "--html", "-o", str(tmp_path / "b.html"), "--slo", "x")
    assert bad.returncode == 2 and not (tmp_path / "b.html").exists(), bad.stderr


def test_load_rows_as_json_csv_and_parquet(run_dir):
    result = run_cli("report", str(run_dir), "--load", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = {(r["config"], r["load_point"]): r for r in json.loads(result.stdout)}
    assert set(rows) == {
        (A, "constant:10"),
        (A, "constant:20"),
        (B, "constant:10"),
        (B, "concurrent:2"),
    }
    steady = rows[(A, "constant:10")]
    for key in [
        "target_rate",
        "achieved_rate",
        "served_rate",
        "concurrency",
        "completed",
        "failed",
        "cancelled",
        "output_tps",
        "total_tps",
        "ttft_s_p99",
        "itl_s_p50",
        "tpot_s_p95",
        "e2e_s_p999",
        "queue_delay_s_p50",
        "goodput",
        "correct_goodput",
        "slo_attainment",
        "energy_j_per_output_token",
        "usd_per_m_output_tokens",
        "saturated",
        "saturation_reason",
        "n_warmup",
        "n_cooldown",
    ]:
        assert key in steady, key
    assert steady["goodput"] == pytest.approx(13 / 2.4)
    assert steady["e2e_s_p999"] is None
    assert rows[(A, "constant:20")]["saturated"] is True
    table = list(
        csv.DictReader(io.StringIO(run_cli("report", str(run_dir), "--load", "-f", "csv").stdout))
    )
    assert [float(r["achieved_rate"]) for r in table][0] == pytest.approx(8.75)
    result = run_cli("report", str(run_dir), "--load", "-f", "parquet")
    assert result.returncode == 0, result.stderr
    written = pd.read_parquet(run_dir / "load.parquet")
    assert list(written["load_point"]) == [
        r["load_point"]
        for r in json.loads(run_cli("report", str(run_dir), "--load", "-f", "json").stdout)
    ]


def test_summary_json_carries_the_percentiles(run_dir):
    result = run_cli("report", str(run_dir), "--format", "json")
    row = json.loads(result.stdout)[0]
    for key in [
        "e2e_s_p90",
        "e2e_s_p95",
        "e2e_s_p99",
        "ttft_s_p90",
        "ttft_s_p99",
        "itl_s_p50",
        "itl_s_p99",
        "tpot_s_p50",
    ]:
        assert key in row, key


def test_answers_shorter_than_asked_are_found_call_by_call():
    """A vote's two draws of 8 tokens each, asked 16: the record's 16 hid them; a server that
    sends no usage is counted in chunks, which says nothing of a short answer (it was blamed
    for ignoring ignore_eos while it sent all 16 tokens, 4 a chunk)."""
    from tradeoff.analysis.load import _asked_lengths

    def record(calls: list[dict], asked: int | None = 16) -> dict:
        extra = {} if asked is None else {"asked_output_tokens": asked}
        return {"extra": json.dumps(extra), "calls": json.dumps(calls)}

    usage = {"token_count_source": "usage", "error": None}
    stopped, whole = {**usage, "finish_reason": "stop"}, {**usage, "finish_reason": "length"}
    done = pd.DataFrame(
        [
            record([{**stopped, "output_tokens": 8}, {**stopped, "output_tokens": 8}]),  # a vote
            record([{**whole, "output_tokens": 16}]),
            # a switch: each model writes its share, the first's turn ended by a hand-over
            record(
                [
                    {**usage, "finish_reason": "switch", "output_tokens": 10},
                    {**whole, "output_tokens": 6},
                ]
            ),  # fmt: skip
            record([{"output_tokens": 4, "token_count_source": "chunks", "error": None}]),
            record([{**stopped, "output_tokens": 3}], asked=None),  # not a synthetic item
        ]
    )
    assert _asked_lengths(done) == {
        "n_asked_length": 4, "n_shorter_than_asked": 1, "n_counted_in_chunks": 1,
    }  # fmt: skip


def test_a_budget_caps_the_length_a_synthetic_item_asks_for():
    """`budget: 4` on a synthetic item of 16 tokens asked for 16, under a name saying 4."""
    from tradeoff.config import parse_spec, resolve_configs
    from tradeoff.strategies.context import asked_length
    from tradeoff.tasks import load_task
    from tradeoff.types import Item

    spec = parse_spec(
        {
            "models": {"m": "smollm2-135m"},
            "configs": [
                {"strategy": "budget", "model": "m", "budget": 4},
                {"strategy": "single", "model": "m"},
            ],
        }
    )
    budget, single = resolve_configs(spec)
    task = load_task("synthetic:prompt=4,output=16,n=1")
    item = task.items[0]
    assert (asked_length(budget, task, item), asked_length(single, task, item)) == (4, 16)
    assert asked_length(single, task, Item(id="1", prompt="x", reference="", task="t")) is None


def test_an_answer_released_whole_has_no_tpot(tmp_path):
    """`vote` and `cascade` release their answer whole once decided (their TTFT is that moment,
    after every call): (e2e - TTFT) / (output tokens - 1) read microseconds per token, and every
    one of their requests met any tpot objective. They have no TPOT (as an answer not streamed
    has no ITL), in the summary, the load statistics and goodput; their ITL is still their calls'.
    Records stored before the record said so read the same."""
    from test_strategies import run as profile_run

    from tradeoff.analysis.load import point_stats

    directory = tmp_path / "run"
    configs = [
        {"strategy": "single", "model": "small", "name": "single"},
        {"strategy": "vote", "model": "small", "n": 2, "name": "vote"},
        {"strategy": "cascade", "models": ["small", "large"], "signal": "logprob",
         "threshold": 1e9, "name": "cascade"},
    ]  # fmt: skip
    records = profile_run(tmp_path, configs, limit=2, max_tokens=8)
    whole = records["config"] != "single"
    assert (records["output_tokens"] >= 2).all()  # each one has gaps between its tokens

    def summary() -> dict[str, dict]:
        result = run_cli("report", str(directory), "--format", "json")
        assert result.returncode == 0, result.stderr
        return {r["config"]: r for r in json.loads(result.stdout)}

    rows = summary()
    assert rows["single"]["tpot_s"] > 0
    for name in ("vote", "cascade"):
        assert rows[name]["tpot_s"] is None and rows[name]["tpot_s_p50"] is None
        assert rows[name]["itl_s"] > 0  # from the calls' own tokens
    flags = records["extra"].map(lambda e: e.get("released_whole"))
    assert list(flags) == [True if w else None for w in whole]
    for name, group in records.groupby("config"):
        stats = point_stats(name, "synchronous", None, group, Slo(tpot=1e6), {}, [])
        released = bool(whole[group.index].all())
        assert stats["n_tpot_s"] == (0 if released else 2)
        assert stats["n_slo_met"] == (0 if released else 2)

    # stored before the record said it was released whole: a vote's samples_drawn and a
    # cascade's escalated tell it
    store = Store.open(directory)
    try:
        store.conn.execute("UPDATE records SET extra = json_remove(extra, '$.released_whole')")
        store.conn.commit()
        stored_flags = store.records(columns=["extra.released_whole"])["extra.released_whole"]
    finally:
        store.close()
    assert stored_flags.isna().all()
    assert summary() == rows
