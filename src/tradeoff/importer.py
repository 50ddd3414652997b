"""Outcomes recorded elsewhere (one row per prompt, one score column per model, as in RouteLLM's
tables) turned into a run directory of records, so reports, frontiers and policies use them with
no model run."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tradeoff.abort import terminated_as_interrupted
from tradeoff.analysis.costs import is_usd
from tradeoff.config import name_problem, text_problem
from tradeoff.errors import UserError
from tradeoff.meters.host import host_info
from tradeoff.store import LOCK_FILE, STORE_FILE, Store
from tradeoff.tasks.loaders import describe, jsonl_rows, not_utf8
from tradeoff.types import Item, Record

CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".json")
MAX_FIELD = 1 << 30  # characters a CSV field may hold (the csv module stops at 131,072)
PROGRESS_EVERY = 10_000  # records written between two calls of `import_outcomes`' on_written

MODEL_EXAMPLE = "e.g. --model gpt4=gpt4_correct,cost=0.03"

# (model name, score column, cost per query or None)
ImportedModel = tuple[str, str, float | None]


@dataclass
class ImportResult:
    directory: Path
    n_rows: int
    n_records: int


@dataclass
class _Row:
    line: int  # physical line where the row starts, for error messages
    values: dict[str, Any]


def parse_model_option(text: str) -> ImportedModel:
    """`NAME=SCORE_COL` or `NAME=SCORE_COL,cost=PRICE`, as given to `--model`."""
    usage = (
        f"--model {text!r}: expected NAME=SCORE_COL or NAME=SCORE_COL,cost=PRICE, {MODEL_EXAMPLE}"
    )
    name, sep, rest = text.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise UserError(usage)
    column, cost = rest, None
    head, comma, option = rest.rpartition(",")
    if comma and "=" in option:
        key, _, value = option.partition("=")
        if key.strip() != "cost":
            raise UserError(f"{usage} ('{key.strip()}' is not an option; only cost= is)")
        try:
            cost = float(value)
        except ValueError:
            raise UserError(f"{usage} (cost {value!r} is not a number)") from None
        if not math.isfinite(cost) or cost < 0:
            raise UserError(f"{usage} (cost {value!r} must be a number >= 0)")
        column = head
    if not column.strip():
        raise UserError(usage)
    return name.strip(), column.strip(), cost


def config_id(name: str, score_col: str) -> str:
    """Stable across imports: the same model name and score column give the same id."""
    content = json.dumps(["imported", name, score_col])
    return hashlib.sha256(content.encode()).hexdigest()[:12]


def import_outcomes(
    path: str | Path,
    *,
    prompt_col: str,
    models: list[ImportedModel],
    out: str | Path,
    cost_unit: str = "USD",
    id_col: str | None = None,
    task: str = "imported",
    on_written: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Write one configuration per model and one record per (row, model) to the run directory
    `out`. The whole file is checked first: a bad row leaves no directory behind. `on_written`
    is told (records written, records in all) every `PROGRESS_EVERY` records."""
    path = Path(path)
    shown = str(path)
    _check_models(models)
    for flag, value, example in (("--task", task, "mmlu"), ("--cost-unit", cost_unit, "USD")):
        if not value.strip():
            raise UserError(f"{flag} is empty; give a name (e.g. {flag} {example})")
        if problem := text_problem(value):  # each table shows it on one line, in headings too
            raise UserError(f"{flag} {value!r} {problem}")
    scored = {col for _, col, _ in models}
    for flag, column in (("--prompt-col", prompt_col), ("--id-col", id_col)):
        if column in scored:  # every prompt read "0" or "1", and no error said why
            raise UserError(f"{flag} {column!r} is also a model's score column; give each its own")
    if id_col is not None and id_col == prompt_col:
        raise UserError(f"--id-col {id_col!r} is also the prompt column; give each its own")
    columns, rows = _read(path, shown)
    wanted = [("prompt column", prompt_col)] + [("score column", col) for _, col, _ in models]
    if id_col is not None:
        wanted.append(("id column", id_col))
    for what, column in wanted:
        if column not in columns:
            raise UserError(
                f"{shown} has no {what} {column!r}; its columns: {', '.join(map(repr, columns))}"
            )

    used = {column for _, column in wanted}
    items: list[Item] = []
    scores: list[list[float]] = []
    first_line: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        where = f"{shown} line {row.line}"
        for what, column in wanted:
            if column not in row.values:
                raise UserError(f"{where}: has no {what} {column!r}")
        item_id = str(number) if id_col is None else _item_id(row.values[id_col], where, id_col)
        if item_id in first_line:
            raise UserError(
                f"{where}: id {item_id!r} in column {id_col!r} repeats line {first_line[item_id]}; "
                "ids must be unique (or leave out --id-col to number the rows)"
            )
        first_line[item_id] = row.line
        prompt = row.values[prompt_col]
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError(
                f"{where}: column {prompt_col!r} holds {_shown(prompt)}; expected the prompt text"
            )
        # Every other column is kept as the item's metadata (`policy eval --split-by COLUMN`).
        meta = {k: v for k, v in row.values.items() if k not in used}
        items.append(Item(id=item_id, prompt=prompt, reference="", task=task, meta=meta))
        scores.append([_score(row.values[col], where, col) for _, col, _ in models])

    usd = is_usd(cost_unit)
    cost_unit = "USD" if usd else cost_unit.strip()  # "usd" and "$" are dollars, written one way
    configs = [
        (
            config_id(name, col),
            name,
            {
                "strategy": "imported",
                "model": name,
                "score_col": col,
                "cost_per_query": cost,
                "cost_unit": cost_unit,
            },
        )
        for name, col, cost in models
    ]
    spec = {
        "imported_from": shown,
        "models": {name: {"score_col": col, "cost_per_query": cost} for name, col, cost in models},
        "cost_unit": cost_unit,
        "prompt_col": prompt_col,
        "id_col": id_col,
        "task": task,
    }
    out = Path(out)
    Store.ensure_new(out)
    new_dir = not out.exists()
    store: Store | None = None
    try:
        with terminated_as_interrupted():
            store = Store.create(out, spec, host_info())
            store.add_configs(configs)
            store.add_items(items)
            started = store.begin_session()
            # One transaction for all records: a file of 100k rows imports in seconds, not
            # minutes.
            store.conn.execute("BEGIN")
            written, total = 0, len(items) * len(models)
            for item, row_scores in zip(items, scores, strict=True):
                for (cid, _, _), (_, _, cost), score in zip(
                    configs, models, row_scores, strict=True
                ):
                    store.write_record(_record(cid, item, score, cost, cost_unit, usd))
                    written += 1
                    if on_written is not None and written % PROGRESS_EVERY == 0:
                        on_written(written, total)
            store.conn.execute("COMMIT")
            store.end_session(started, "finished")
    except BaseException as exc:
        if store is None and isinstance(exc, UserError):
            raise  # refused before a store was made (another writer's may be there): none to remove
        # A half-written import (a Ctrl-C as early as while its store is made) would look like
        # a run to resume; remove it instead.
        if store is not None:
            store.close()
        _discard(out, new_dir)
        raise
    store.close()
    return ImportResult(out, len(items), len(items) * len(models))


def _record(
    cid: str, item: Item, score: float, cost: float | None, cost_unit: str, usd: bool
) -> Record:
    return Record(
        config_id=cid,
        task=item.task,
        item_id=item.id,
        sample=0,
        output="",
        score=score,
        parsed=None,
        error=None,
        input_tokens=None,
        output_tokens=0,
        ttft_s=None,
        e2e_s=0.0,
        itl_s=None,
        decode_tps=None,
        energy_j=None,
        energy_source=None,
        energy_missing=None,
        flops=None,
        peak_rss_bytes=None,
        cost_usd=cost if usd else None,
        extra={"imported": True, "cost": cost, "cost_unit": cost_unit},
    )


def _check_models(models: list[ImportedModel]) -> None:
    if not models:
        raise UserError(f"give at least one --model NAME=SCORE_COL, {MODEL_EXAMPLE}")
    seen: set[str] = set()
    for name, _, cost in models:
        if name in seen:
            raise UserError(f"model name {name!r} is given twice; each --model needs its own NAME")
        seen.add(name)
        if problem := name_problem(name):  # it names the model's configuration
            raise UserError(f"model name {name!r} {problem}")
        if cost is not None and (not math.isfinite(cost) or cost < 0):
            raise UserError(f"model {name!r}: cost {cost} must be a number >= 0")


def _read(path: Path, shown: str) -> tuple[list[str], list[_Row]]:
    suffix = path.suffix.lower()
    if path.is_dir():
        raise UserError(f"{shown} is a directory; give the .csv or .jsonl file of outcomes")
    if suffix not in CSV_SUFFIXES + JSONL_SUFFIXES:
        raise UserError(
            f"{shown}: cannot tell the file type from {suffix or 'no suffix'!r}; "
            "give a .csv file or a .jsonl/.json file with one JSON object per line"
        )
    try:
        # utf-8-sig: spreadsheets often start their CSV exports with a byte-order mark.
        with path.open(encoding="utf-8-sig", newline="") as f:
            if suffix in CSV_SUFFIXES:
                columns, rows = _read_csv(f, shown)
            else:
                columns, rows = _read_jsonl(f, shown)
    except FileNotFoundError:
        raise UserError(f"{shown} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{shown} is a directory; give a .csv or .jsonl file") from None
    except UnicodeDecodeError:
        raise not_utf8(path, shown) from None
    except OSError as e:
        raise UserError(f"cannot read {shown}: {e.strerror or e}") from None
    if not columns and rows:
        raise UserError(
            f"{shown}: its {len(rows):,} JSON object(s) have no fields; give each line a prompt "
            'and a score per model, e.g. {"prompt": "2+2?", "big": 1, "small": 0}'
        )
    if not columns:
        raise UserError(
            f"{shown} is empty; give a CSV header and one row per prompt, "
            "or one JSON object per line"
        )
    if not rows:
        raise UserError(f"{shown} has columns {', '.join(map(repr, columns))} but no rows")
    return columns, rows


def _read_csv(f: Any, shown: str) -> tuple[list[str], list[_Row]]:
    csv.field_size_limit(MAX_FIELD)  # a long prompt is a field of any length, as in JSONL
    reader = csv.reader(f)
    columns: list[str] = []
    rows: list[_Row] = []
    line = 1  # a record starts on the line after the one the previous record ended on
    try:
        for fields in reader:
            start, line = line, reader.line_num + 1
            if len(fields) <= 1 and not "".join(fields).strip():  # a blank line, or spaces
                continue
            if not columns:
                columns = [c.strip() for c in fields]
                if twice := sorted({c for c in columns if columns.count(c) > 1}):
                    raise UserError(
                        f"{shown}: the header names column {twice[0]!r} twice; each column "
                        "needs its own name"
                    )
                continue
            if len(fields) != len(columns):
                raise UserError(
                    f"{shown} line {start}: has {len(fields)} fields; the header has "
                    f"{len(columns)} (is a quote left open, or a comma unquoted?)"
                )
            rows.append(_Row(start, dict(zip(columns, fields, strict=True))))
    except csv.Error as e:
        raise UserError(f"{shown} line {reader.line_num}: not valid CSV ({e})") from None
    return columns, rows


def _read_jsonl(f: Any, shown: str) -> tuple[list[str], list[_Row]]:
    columns: list[str] = []
    rows: list[_Row] = []
    for lineno, value in jsonl_rows(list(f), shown):
        columns += [c for c in value if c not in columns]  # every object's, in order of first use
        rows.append(_Row(lineno, value))
    return columns, rows


def _item_id(value: Any, where: str, column: str) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        raise UserError(f"{where}: column {column!r} holds {_shown(value)}; expected an id")
    text = str(value).strip()
    if not text:
        raise UserError(f"{where}: column {column!r} is empty; every row needs an id")
    return text


def _score(value: Any, where: str, column: str) -> float:
    """Booleans, 0/1 and numbers in [0, 1]; as JSON values or as CSV text."""
    score: float | None = None
    if isinstance(value, int | float):  # bool included: True is 1.0
        with contextlib.suppress(OverflowError):  # an integer past a float's 1.8e308
            score = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.lower() in ("true", "false"):
            score = float(text.lower() == "true")
        else:
            try:
                score = float(text)
            except ValueError:
                score = None
    if score is None or not 0.0 <= score <= 1.0:  # NaN fails the comparison too
        raise UserError(
            f"{where}: column {column!r} holds {_shown(value)}; "
            "expected true/false, 0/1 or a number in [0, 1]"
        )
    return score


def _shown(value: Any) -> str:
    """A cell as an error names it: a number as written (Python reads none of over 4300
    digits), else as a task's field is, a string cut short: a column-oriented JSON file's first
    cell holds a whole column."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return json.dumps(value)
    return describe(value)


def _discard(directory: Path, new_dir: bool) -> None:
    """Remove what a stopped import wrote (its store closed, so its lock released): the store,
    its lock file, and the directory where the import made it."""
    for name in (STORE_FILE, f"{STORE_FILE}-wal", f"{STORE_FILE}-shm", LOCK_FILE):
        (directory / name).unlink(missing_ok=True)
    if new_dir:
        with contextlib.suppress(OSError):
            directory.rmdir()
