"""`Store.records(columns=...)`, the fast reader of a run's records (`store_columns`), and the
facts of each record's calls stored beside them (`store.CALL_FACTS`): on a real SQLite store of
hand-made records of every awkward kind, the fast read reads what the whole read reads, the facts
of records stored before they were are the ones written now, and every summary and frontier
drawn from a fast read is the one drawn from a whole read, to the last bit."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest

from tradeoff.analysis.costs import COST_AXES, FACT_COLUMNS, with_facts
from tradeoff.analysis.frontier import frontier
from tradeoff.analysis.metrics import SUMMARY_COLUMNS, summarize
from tradeoff.store import CALL_FACTS, STORE_FILE, Store
from tradeoff.types import Record

CONFIGS = [("c1", "single"), ("c2", 'cascade "quoted" \\ name'), ("c3", "priced")]
PRICES = {"big": {"input": 1.0, "output": 2.0}}
# Floats that a careless parse gets wrong in the last bit, and ones of every size.
AWKWARD = [0.1 + 0.2, 1e-7, 5e-324, 2.2250738585072014e-308, 123456789.12345678, 1 / 3]


def _call(model, i, *, input_tokens=10, roofline=True, **more):
    return {
        "model": model,
        "input_tokens": input_tokens,
        "output_tokens": 5 + i,
        "e2e_s": AWKWARD[i % len(AWKWARD)] + i,
        "roofline_s": AWKWARD[(i + 1) % len(AWKWARD)] if roofline else None,
        "error": None,
        **more,
    }


def _record(config_id, i, calls, **fields):
    base = dict(
        config_id=config_id,
        task="arith" if i % 2 else "facts",
        item_id=f"q{i}",
        sample=0,
        output="4",
        score=float(i % 3 == 0),
        parsed="4",
        error=None,
        input_tokens=10 + i,
        output_tokens=5 + i,
        ttft_s=0.01 * i + AWKWARD[i % len(AWKWARD)],
        e2e_s=0.5 + AWKWARD[(i + 2) % len(AWKWARD)],
        itl_s=0.02,
        decode_tps=40.0 + i,
        energy_j=1.5 * i + AWKWARD[i % len(AWKWARD)],
        energy_source="rapl",
        energy_missing=None,
        flops=1e9 * i,
        peak_rss_bytes=2**30 + i,
        cost_usd=None,
        calls=calls,
        extra={},
    )
    return Record(**{**base, **fields})


def _records():
    out = []
    for i in range(12):
        # one call, every one with its roofline time: c1's roofline is known
        out.append(_record("c1", i, [_call("small", i)]))
        # two or three calls (a cascade), one of them without input tokens or roofline time;
        # a model name that JSON must escape
        calls = [_call("small", i), _call('big "v2" \\ ü', i + 1, input_tokens=None)]
        if i % 4 == 0:
            calls.append(_call("big", i + 2))
        out.append(
            _record(
                "c2",
                i,
                calls,
                input_tokens=None if i % 5 == 0 else 10 + i,
                energy_j=None,
                energy_source=None,
                energy_missing="no RAPL here",
                extra={"cost": AWKWARD[i % len(AWKWARD)], "cost_unit": "credits"},
            )
        )
        # priced, some failed (no calls, no price), imported costs given as text
        failed = i % 6 == 5
        out.append(
            _record(
                "c3",
                i,
                [] if failed else [_call("big", i, roofline=i != 4)],
                error="HTTP 500" if failed else None,
                score=None if failed else 1.0,
                cost_usd=None if failed else 1e-6 * (i + AWKWARD[i % len(AWKWARD)]),
                flops=None if failed else 1e9,
                extra={"cost": str(i), "note": {"nested": [1, 2]}},
            )
        )
    # a load run's records beside them: warm-up and measured ones of a load point
    # (a call stored with its model alone: every other key missing)
    for i, phase in enumerate(["warmup", "measure", "measure", "cooldown"]):
        calls = [{"model": "small"}] if i == 0 else [_call("small", i)]
        out.append(_record("c1", 100 + i, calls, load_point="constant:1", phase=phase))
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    directory = tmp_path_factory.mktemp("columns") / "run"
    created = Store.create(directory, {"prices": PRICES}, {"host": "test"})
    created.add_configs([(cid, name, {"strategy": "single"}) for cid, name in CONFIGS])
    created.write_records(_records())
    created.close()
    opened = Store.open(directory)
    yield opened
    opened.close()


def _same(a: pd.Series, b: pd.Series) -> bool:
    """Equal value by value (NaN and None alike missing), and floats to the bit."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if pd.isna(x) is True or pd.isna(y) is True:
            if not (pd.isna(x) is True and pd.isna(y) is True):
                return False
        elif isinstance(x, float) or isinstance(y, float):
            if np.float64(x).tobytes() != np.float64(y).tobytes():
                return False
        elif x != y:
            return False
    return True


def test_stored_columns_are_read_as_the_whole_read_reads_them(store):
    whole = store.records()
    columns = [c for c in whole.columns if c not in ("calls", "extra")]
    lean = store.records(columns=columns)
    assert list(lean.columns) == columns  # `config` first, then those asked for, in order
    for column in columns:
        assert _same(lean[column], whole[column]), column
    # pandas' own types where it reads them the same way: a number column with a NULL is float
    for column in ("score", "e2e_s", "output_tokens", "sample", "peak_rss_bytes", "input_tokens"):
        assert lean[column].dtype == whole[column].dtype, column


def test_facts_of_the_calls_equal_those_derived_from_them(store):
    lean = store.records(columns=[*FACT_COLUMNS, "load_point"])
    derived = with_facts(store.records())
    for column in FACT_COLUMNS:
        a, b = lean[column].astype(object), derived[column]
        if column in ("call_models", "unreported_models"):  # JSON, spelt either way
            a, b = (s.map(lambda t: None if pd.isna(t) else json.loads(t)) for s in (a, b))
        assert _same(a, b), column
    assert isinstance(lean["call_models"].dtype, pd.CategoricalDtype)
    rooflines = lean["call_rooflines"][lean["load_point"] == ""].tolist()
    # each call's roofline and e2e time in turn, as stored; None where a call has none
    small, big = _call("small", 1), _call("big", 2)
    times = [small["roofline_s"], small["e2e_s"], big["roofline_s"], big["e2e_s"]]
    assert [float(t) for t in rooflines[3 * 1 + 1].split(",")] == times
    assert float(rooflines[0].split(",")[0]) == AWKWARD[1]
    assert len(rooflines[3 * 4 + 1].split(",")) == 6  # three calls
    assert rooflines[3 * 4 + 2] is None  # its call has no roofline time
    assert rooflines[3 * 5 + 2] == ""  # a failed request, no call made
    assert lean.loc[lean["config"] == "priced", "extra.cost"].iloc[0] == "0"  # as given: text


def test_records_stored_before_their_facts_were_get_the_same_ones(store, tmp_path):
    written = store.records(columns=list(CALL_FACTS))
    old = tmp_path / "old"
    shutil.copytree(store.directory, old)
    conn = sqlite3.connect(old / STORE_FILE)  # as schema 4 stored them: no facts
    for name in CALL_FACTS:
        conn.execute(f"ALTER TABLE records DROP COLUMN {name}")
    conn.execute("DROP TABLE embeddings")  # schema 6's
    conn.execute("PRAGMA user_version = 4")
    conn.close()
    migrated = Store.open(old)
    try:
        found = migrated.records(columns=list(CALL_FACTS))
    finally:
        migrated.close()
    for name in CALL_FACTS:
        assert _same(found[name].astype(object), written[name].astype(object)), name


def test_summaries_and_frontiers_are_the_same_to_the_last_bit(store):
    names = [name for _, name in CONFIGS]
    lean = store.records(columns=list(SUMMARY_COLUMNS), measured=True)
    whole = store.records(measured=True)
    assert len(lean) == len(whole) == 12 * 3 + 2

    def assert_same_rows(a_rows, b_rows, what):
        for a, b in zip(a_rows, b_rows, strict=True):
            assert a.keys() == b.keys()
            for key in a:
                assert _same(pd.Series([a[key]]), pd.Series([b[key]])), (what, a["config"], key)

    assert_same_rows(summarize(lean, names), summarize(whole, names), "summary")
    for axis in ["auto", *COST_AXES]:
        assert_same_rows(
            [r.to_dict() for r in frontier(lean, axis, names)],
            [r.to_dict() for r in frontier(whole, axis, names)],
            axis,
        )
    single, cascade, priced = summarize(lean, names)
    assert math.isfinite(single["roofline_eff"]) and math.isfinite(cascade["roofline_eff"])
    assert priced["roofline_s"] is None  # a call without its roofline time


def test_which_records_and_unknown_columns(store):
    every = store.records(columns=["phase"])
    assert len(every) == 12 * 3 + 4
    assert len(store.records(columns=["phase"], measured=True)) == 12 * 3 + 2
    loaded = store.records(columns=["load_point", "phase"], load_only=True)
    assert list(loaded["phase"]) == ["warmup", "measure", "measure", "cooldown"]
    assert (store.records(columns=["e2e_s"], config_id="c3")["config"] == "priced").all()
    assert list(store.records(columns=[], config_id="nothing").columns) == ["config"]
    # a sample of items to show, with every configuration's answer (and the whole read's)
    shown = store.records(columns=["task", "item_id", "output"], items=[("arith", "q1")])
    assert list(shown["config"]) == ["single", CONFIGS[1][1], "priced"]
    assert len(store.records(items=[("facts", "q0"), ("arith", "q0")])) == 3
    assert store.records(columns=["output"], items=[]).empty
    with pytest.raises(ValueError, match="unknown record columns"):
        store.records(columns=["e2e", "extra.a-b"])
    assert set(CALL_FACTS) <= set(FACT_COLUMNS)
