"""Chosen columns of a run's records, read fast enough for a million of them (issue 14):
`Store.records(columns=...)` reads here. What the analysis needs of each record's calls is
stored beside them (`store.CALL_FACTS`), and the few values it needs of `extra` come from
SQLite's JSON functions, so that no record's JSON is decoded in Python, nor its text held.

Reading every column with pandas.read_sql_query held a million records' JSON as Python strings
(3 GiB, benchmarks/bench_report.py); here rows are fetched in chunks that become numpy arrays at
once, numbers as floats. tests/test_store_columns.py checks that a summary of records read here
is the one of records read whole, to the last bit of every number.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

CHUNK_ROWS = 50_000  # rows fetched and converted at once: bounds the Python objects alive

EXTRA_PREFIX = "extra."  # `extra.KEY`: each record's extra[KEY], None where it has none
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _expression(name: str) -> str:
    """SQL of `extra.KEY`: json_extract of two paths or more returns an array of the values as
    stored (of one path, SQLite's own parse of a number, which may differ from Python's in the
    last bit); NULL where the key is missing or null. The JSON is parsed only where the key's
    name is in its text (a key is written as itself, "name"): most records lack most keys, and
    a parse a key costs a summary a fifth of its time."""
    key = name.removeprefix(EXTRA_PREFIX)
    path = repr(f'$."{key}"')
    extract = f"nullif(json_extract(r.extra, {path}, {path}), '[null,null]')"
    return f"""CASE WHEN instr(r.extra, '"{key}"') THEN {extract} END"""


def derived(name: str) -> bool:
    """Whether `name` is a derived column, `extra.KEY`, rather than a stored one."""
    return name.startswith(EXTRA_PREFIX) and bool(_KEY.fullmatch(name.removeprefix(EXTRA_PREFIX)))


def _extra_values(texts: np.ndarray) -> np.ndarray:
    """`extra.KEY` from its JSON text `[value, value]`, each distinct text decoded once."""
    import pandas as pd

    codes, distinct = pd.factorize(texts)
    values = np.empty(len(distinct) + 1, dtype=object)  # the last one: for NULL (code -1)
    for i, text in enumerate(distinct):
        values[i] = json.loads(text)[0]
    return values[codes]


def read_columns(
    conn: sqlite3.Connection, columns: Sequence[str], where: str, params: Sequence[Any]
) -> pd.DataFrame:
    """The records `where` (conditions on `records r`, the first `r.run_id = ?`, with `params`)
    in rowid order, with `config` (their configuration's name) and `columns`: stored columns of
    `records` and derived ones (`derived`).

    Stored REAL columns are float64, INTEGER ones int64 (float64 where some are NULL or not
    whole), as pandas.read_sql_query makes them; TEXT ones Python strings, None where NULL
    (object dtype: pandas' str dtype would cost a conversion), but for call_models,
    unreported_models and task, categorical (a run has few distinct ones). `extra.KEY`: the
    value, None where there is none."""
    import pandas as pd

    declared = {row[1]: row[2].upper() for row in conn.execute("PRAGMA table_info(records)")}
    unknown = [c for c in columns if c not in declared and c != "config" and not derived(c)]
    if unknown:
        known = ", ".join([*declared, EXTRA_PREFIX + "KEY"])
        raise ValueError(f"unknown record columns {unknown}; known: {known}")
    wanted = [c for c in dict.fromkeys(columns) if c not in ("config", "run_id")]
    numeric = [c for c in wanted if not derived(c) and declared[c] in ("REAL", "INTEGER")]
    others = [c for c in wanted if c not in numeric]
    run_id = params[0]
    configs = dict(conn.execute("SELECT config_id, name FROM configs WHERE run_id = ?", (run_id,)))
    select = [
        "r.config_id",
        *(f"r.{c}" for c in numeric),
        *(_expression(c) if derived(c) else f"r.{c}" for c in others),
    ]
    # As a join with `configs` would: records of no stored configuration are left out.
    cursor = conn.execute(
        f"SELECT {', '.join(select)} FROM records r WHERE {where} AND r.config_id IN "
        "(SELECT config_id FROM configs WHERE run_id = ?) ORDER BY r.rowid",
        [*params, run_id],
    )
    numbers, objects = _fetched(cursor, len(numeric))
    codes, ids = pd.factorize(objects[0])
    names = np.array([configs[i] for i in ids], dtype=object)
    data: dict[str, pd.Series] = {"config": pd.Series(names[codes], dtype=object)}
    for i, name in enumerate(numeric):
        data[name] = pd.Series(_number_column(numbers[i], declared[name]), copy=False)
    for i, name in enumerate(others, 1):
        values = _extra_values(objects[i]) if derived(name) else _text(name, objects[i])
        data[name] = pd.Series(values, dtype=getattr(values, "dtype", object), copy=False)
    return pd.DataFrame({name: data[name] for name in ["config", *wanted]})


def _fetched(cursor: sqlite3.Cursor, n_numbers: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows, their first column then `n_numbers` numbers then the rest: the numbers as one
    float64 array (NULL: NaN), the others as one object array, a row of each per column. Chunk
    by chunk, so that only one chunk's Python objects are alive at once."""
    width = len(cursor.description)
    numbers, objects = [], []
    for rows in iter(partial(cursor.fetchmany, CHUNK_ROWS), []):
        block = np.array(rows, dtype=object)
        numbers.append(block[:, 1 : 1 + n_numbers].astype(np.float64).T)
        objects.append(np.delete(block, np.s_[1 : 1 + n_numbers], axis=1).T)
    if not numbers:
        return np.empty((n_numbers, 0)), np.empty((width - n_numbers, 0), dtype=object)
    return np.concatenate(numbers, axis=1), np.concatenate(objects, axis=1)


def _number_column(values: np.ndarray, declared: str) -> np.ndarray:
    """An INTEGER column's values as int64 where all are there and whole, as pandas reads
    them; else float64. (Read as floats first: exact below 2**53, as every count, size and
    token number stored is.)"""
    if declared == "INTEGER" and not np.isnan(values).any() and (values == np.floor(values)).all():
        return values.astype(np.int64)
    return values


def _text(name: str, values: np.ndarray) -> Any:
    """A TEXT column's values: categorical for the models of the calls and the task, else as
    they are."""
    import pandas as pd

    if name in ("call_models", "unreported_models", "task"):
        codes, distinct = pd.factorize(values)
        return pd.Categorical.from_codes(codes, pd.Index(distinct, dtype=object))
    return values
