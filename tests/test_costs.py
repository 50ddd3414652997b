"""One cost layer: `report` and `frontier` agree on every configuration of a run with failed
records (a real SQLite store of hand-made records, and the real CLI), and `auto` resolves the same
way for the frontier and for policy fit, also on imported outcomes with given costs."""

import json

import pandas as pd
import pytest
from conftest import import_outcomes, run_cli

from tradeoff.analysis.costs import auto_axis, record_costs, resolve
from tradeoff.analysis.frontier import frontier
from tradeoff.analysis.metrics import summarize
from tradeoff.policy.fit import Policy
from tradeoff.store import Store
from tradeoff.types import Record

# name -> one (score, error, energy J, e2e s, FLOPs, TTFT s) per query; a failed query scores 0.
FAILED = "timed out after 120 s"
QUERIES = {
    # every query metered; the failed one's 50 J and 9 s were paid for and count
    "paid": [
        (1.0, None, 10.0, 1.0, 2e9, 0.1),
        (1.0, None, 20.0, 2.0, 2e9, 0.2),
        (0.0, FAILED, 50.0, 9.0, None, None),
    ],
    # the failed query never reached the meter: energy and FLOPs unknown, not averaged away
    "unmetered": [
        (1.0, None, 12.0, 1.5, 3e9, 0.1),
        (0.0, None, 14.0, 2.5, 3e9, 0.3),
        (0.0, FAILED, None, 4.0, None, None),
    ],
    "clean": [
        (1.0, None, 30.0, 3.0, 5e9, 0.5),
        (1.0, None, 30.0, 3.0, 5e9, 0.5),
        (0.0, None, 30.0, 3.0, 5e9, 0.5),
    ],
}


def _record(config: str, i: int, outcome: tuple) -> Record:
    score, error, energy, e2e, flops, ttft = outcome
    return Record(
        config_id=f"id-{config}",
        task="arith",
        item_id=f"q{i}",
        sample=0,
        output="" if error else "4",
        score=score,
        parsed=None,
        error=error,
        input_tokens=20,
        output_tokens=0 if error else 10,
        ttft_s=ttft,
        e2e_s=e2e,
        itl_s=None if error else 0.01,
        decode_tps=None if error else 90.0,
        energy_j=energy,
        energy_source=None if energy is None else "rapl",
        energy_missing=None,
        flops=flops,
        peak_rss_bytes=None,
        cost_usd=None,
        calls=[] if energy is None else [{"model": config, "input_tokens": 20}],
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("costs") / "run"
    store = Store.create(directory, {"models": {}}, {"host": "test"})
    store.add_configs([(f"id-{name}", name, {"strategy": "single"}) for name in QUERIES])
    for name, outcomes in QUERIES.items():
        for i, outcome in enumerate(outcomes):
            store.write_record(_record(name, i, outcome))
    store.close()
    return directory


@pytest.fixture(scope="module")
def records(run_dir):
    store = Store.open(run_dir)
    try:
        return store.records()
    finally:
        store.close()


def test_failed_records_count_in_the_summary_as_on_the_frontier(records):
    summary = {row["config"]: row for row in summarize(records)}
    paid = summary["paid"]
    assert paid["errors"] == 1 and paid["accuracy"] == pytest.approx(2 / 3)
    assert paid["energy_j"] == pytest.approx((10 + 20 + 50) / 3)
    assert paid["e2e_s"] == pytest.approx((1 + 2 + 9) / 3)
    assert paid["output_tokens"] == pytest.approx(20 / 3)
    # no first token for the failed query: TTFT is over the two that had one, and says so
    assert paid["ttft_s"] == pytest.approx(0.15) and paid["n_first_token"] == 2
    # no FLOPs counted for the failed call: unknown, with the reason
    assert paid["gflops"] is None and "failed calls are not counted" in paid["gflops_missing"]
    unmetered = summary["unmetered"]
    assert unmetered["energy_j"] is None and unmetered["energy_source"] is None
    assert unmetered["energy_missing"] == "failed before metering: 1 of 3 queries"
    assert summary["clean"]["gflops"] == pytest.approx(5.0)

    by_energy = {r.config: r for r in frontier(records, "energy")}
    by_latency = {r.config: r for r in frontier(records, "latency")}
    for name, row in summary.items():
        assert by_energy[name].accuracy == row["accuracy"] == by_latency[name].accuracy
        assert by_energy[name].cost == row["energy_j"] == by_energy[name].energy_j
        assert by_latency[name].cost == row["e2e_s"]
    assert by_energy["unmetered"].cost_missing == summary["unmetered"]["energy_missing"]


def _json(result):
    assert result.returncode == 0, result.stderr
    return {row["config"]: row for row in json.loads(result.stdout)}


def _same(a, b):
    return a is b is None or (a is not None and b is not None and a == pytest.approx(b, rel=1e-9))


def test_report_and_frontier_agree_through_the_cli(run_dir):
    report = _json(run_cli("report", str(run_dir), "--format", "json"))
    energy = _json(run_cli("frontier", str(run_dir), "--format", "json", "--cost", "energy"))
    latency = _json(run_cli("frontier", str(run_dir), "--format", "json", "--cost", "latency"))
    assert list(report) == list(energy) == list(latency) == list(QUERIES)
    for name, row in report.items():
        assert _same(row["energy_j"], energy[name]["cost"]), name
        assert _same(row["e2e_s"], latency[name]["cost"]), name
        assert _same(row["accuracy"], energy[name]["accuracy"]), name
        assert _same(row["accuracy"], latency[name]["accuracy"]), name
    assert report["paid"]["energy_j"] == pytest.approx(80 / 3)
    assert report["unmetered"]["energy_j"] is None
    assert energy["unmetered"]["cost"] is None and not energy["unmetered"]["pareto"]


def test_the_summary_table_says_what_is_unknown_and_what_each_mean_is_over(run_dir):
    shown = run_cli("report", str(run_dir))
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "n/a[1]" in text and "[1] energy not measured: failed before metering: 1 of 3" in text
    assert "tradeoff report --wide adds: in tok, out tok, TTFT s mean" in text
    wide = run_cli("report", str(run_dir), "--wide")
    assert wide.returncode == 0, wide.stderr
    text = wide.stdout
    assert "[1] FLOPs not counted for 1 of 3 queries (failed calls are not counted)" in text
    assert "n/a[2]" in text and "[2] energy not measured: failed before metering: 1 of 3" in text
    assert "over the queries that produced a first token (2 of 3 for paid" in text


def test_auto_prefers_energy_then_given_costs_then_latency(records):
    # every successful record is metered here; the one unmetered failure does not change it
    assert auto_axis(records) == "energy"
    unmetered = records.assign(energy_j=records["energy_j"].where(records["config"] != "clean"))
    assert auto_axis(unmetered) == "latency"
    given = unmetered.assign(extra=json.dumps({"imported": True, "cost": 0.5}))
    assert auto_axis(given) == "given" and resolve("auto", given).name == "given"
    assert resolve("flops", given).unit == "GFLOPs"


def _outcomes(n=20):
    """Strong is right on every row, weak on every other one."""
    return [(f"question {i} {' '.join(['long'] * (i % 7))}", int(i % 2 == 0), 1) for i in range(n)]


def test_auto_uses_the_costs_given_with_imported_outcomes(tmp_path):
    out = import_outcomes(tmp_path, _outcomes())

    rows = json.loads(run_cli("frontier", str(out), "--format", "json").stdout)
    by = {r["config"]: r for r in rows}
    assert {r["cost_axis"] for r in rows} == {"given"}
    assert by["weak"]["cost"] == pytest.approx(0.1) and by["strong"]["cost"] == pytest.approx(1.0)
    assert by["weak"]["cost_unit"] == "USD" and by["weak"]["accuracy"] == pytest.approx(0.5)
    assert by["weak"]["pareto"] and by["strong"]["pareto"]
    assert by["weak"]["cost_of_pass"] == pytest.approx(0.2)
    table = run_cli("frontier", str(out))
    assert table.returncode == 0, table.stderr
    assert "given cost per query [USD, given with the imported outcomes]" in table.stdout

    policy_file = tmp_path / "policy.json"
    fit = run_cli(
        "policy", "fit", str(out), "--configs", "weak,strong", "--strong-fraction", "0.5",
        "-o", str(policy_file),
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    policy = Policy.load(policy_file)
    assert policy.cost_axis == rows[0]["cost_axis"] == "given"
    assert policy.mean_costs == pytest.approx([0.1, 1.0])


def test_given_costs_missing_say_how_to_give_them(run_dir):
    rows = _json(run_cli("frontier", str(run_dir), "--format", "json", "--cost", "given"))
    assert all(r["cost"] is None and not r["pareto"] for r in rows.values())
    assert "no cost given for 3 of 3 queries" in rows["paid"]["cost_missing"]
    bad = run_cli("policy", "fit", str(run_dir), "--configs", "paid,clean", "--budget", "1",
                  "--cost", "watts", "-o", "p.json")  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "given" in bad.stderr


def test_record_costs_are_in_the_axis_unit(records):
    paid = records[records["config"] == "paid"]
    assert record_costs(paid, resolve("flops", records)).tolist()[:2] == [2.0, 2.0]  # GFLOPs
    assert record_costs(paid, resolve("tokens", records)).tolist() == [30, 30, 20]
    assert record_costs(paid, resolve("latency", records)).tolist() == [1.0, 2.0, 9.0]


def test_a_record_without_calls_says_why_it_has_no_energy():
    """A request that ended before any call was kept (a strategy that failed, a served client
    gone before its model ran) had neither energy nor a reason: a missing value must say why."""
    from tradeoff.records import NO_CALLS, energy_fields
    from tradeoff.types import Outcome

    assert energy_fields(Outcome("", [], {"exception": "boom"})) == (None, None, NO_CALLS)


def test_a_record_without_calls_has_its_input_tokens_unknown():
    """A served client gone before its upstream answered, or a strategy that raised, stored 0
    input tokens, which `report` counted as reported and averaged into `in tok`."""
    from tradeoff.records import outcome_record
    from tradeoff.types import Outcome

    outcome = Outcome("", [], {"exception": "boom"})
    record = outcome_record("c", "t", "i", 0, outcome, 0.0, 0.5, {}, score=None, parsed=None)
    assert (record.input_tokens, record.cost_usd) == (None, None)


def test_a_configuration_s_energy_reason_is_its_meter_s_not_a_call_less_record_s():
    """The first unmeasured record had failed before any call: its 'no engine call' stood for
    the whole configuration, hiding that no meter reads this machine."""
    from tradeoff.analysis.costs import _energy_missing
    from tradeoff.records import NO_CALLS

    df = pd.DataFrame(
        {
            "energy_j": [None, None, None],
            "energy_missing": [NO_CALLS, "no RAPL here", "no RAPL here"],
            "error": ["boom", None, None],
            "extra": ["{}"] * 3,
        }
    )
    assert _energy_missing(df, df) == "no RAPL here"
    assert _energy_missing(df.iloc[:1], df) == NO_CALLS  # the only reason there is


def test_a_record_s_itl_is_its_mean_gap_over_every_call_s_tokens():
    """A 2-token continuation weighed as much as the 20 tokens before it (`budget`'s forced
    answer, an escalated cascade): the record's ITL read 0.3 s where its tokens came 0.14 s
    apart, and disagreed with its own decode rate."""
    from tradeoff.records import outcome_record
    from tradeoff.types import Call, Generation, Outcome

    def call(tokens: int, first: float, gap: float) -> Call:
        times = [first + gap * i for i in range(tokens)]
        generation = Generation("x", 5, tokens, first - 0.1, first, times[-1], token_times=times)
        return Call("m", generation)

    outcome = Outcome("x", [call(21, 1.0, 0.1), call(3, 4.0, 0.5)])
    record = outcome_record("c", "t", "i", 0, outcome, 0.0, 5.5, {}, score=None, parsed=None)
    assert record.itl_s == pytest.approx((20 * 0.1 + 2 * 0.5) / 22)
    assert record.itl_s == pytest.approx(1 / record.decode_tps)
