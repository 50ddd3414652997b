"""Comparing runs of the same configurations (two machines, two versions of a server, yesterday's
run and today's): per configuration they share, accuracy on the items both answered, paired, and
what a query cost in one run over the other; and what differs between their hosts and specs.

Run A, the first, is the baseline; each other run B is compared with it. Only measured records
count (a load run's warm-up and cool-down are left out), scored as `analysis.metrics` scores them
(a failed query scores 0) and summarised by its `summarize_config`, so that each run's numbers
here are those `tradeoff report` gives for the same records. The accuracy difference's 95%
interval is the paired t interval (scipy.stats) over the per-item score differences.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradeoff.analysis.costs import failed
from tradeoff.analysis.metrics import (
    SUMMARY_COLUMNS,
    Summary,
    record_scores,
    scored,
    summarize_config,
)
from tradeoff.analysis.operating_point import measured_records
from tradeoff.config import FILE_TASKS, shown_spec, split_path
from tradeoff.errors import UserError

# What makes two records answers to the same question: the item (its task, as `task_key` names
# it, id and content: the prompt and reference, so that two imports numbering other questions
# alike do not pair), its sample, and (in a load run) the load point it was sent at ('' in a
# profile run).
PAIR_KEY = ["task_key", "item_id", "item_content", "sample", "load_point"]
ITEM_KEY = PAIR_KEY[:3]  # one question, however often it was asked
SERVED = "serve"  # the task of `tradeoff serve`'s records (`serve.app.SERVE_TASK`)
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Quantity:
    """A quantity compared as a ratio B/A: its title, its unit and where it comes from."""

    title: str
    unit: str
    source: str


QUANTITIES: dict[str, Quantity] = {
    "e2e_mean": Quantity("end-to-end latency, mean", "s", "wall clock"),
    "e2e_p50": Quantity("end-to-end latency, p50", "s", "wall clock"),
    "ttft_mean": Quantity("time to first token, mean", "s", "wall clock"),
    "energy": Quantity("energy per query", "J", "measured"),
    "output_tokens": Quantity("output tokens per query", "tokens", "counted"),
    # dollars (the spec's prices, or costs given in USD), else costs given at import: a
    # ratio's `unit` says which (a comparison of costs in two units has none)
    "cost": Quantity("cost per query", "$", "spec prices, or given with imported outcomes"),
}


@dataclass(frozen=True)
class Ratio:
    """One quantity of a configuration in B over the same in A, each over the paired items; or
    why there is no ratio."""

    a: float | None
    b: float | None
    ratio: float | None
    missing: str | None  # why ratio is None
    unit: str | None = None  # of a and b, where not the quantity's own


@dataclass(frozen=True)
class ConfigComparison:
    """One configuration that both runs have, over the items both answered (`n`)."""

    config: str
    n: int  # paired items: the same task, item (id and content), sample and load point in both
    n_a: int  # A's measured records of the configuration, paired or not
    n_b: int
    accuracy_a: float | None  # over the paired items; None where there is no accuracy
    accuracy_b: float | None
    difference: float | None  # accuracy B - A, the mean of the per-item differences
    low: float | None  # its 95% paired t interval, within [-1, 1]
    high: float | None
    accuracy_missing: str | None  # why difference is None
    ratios: dict[str, Ratio]  # keyed as QUANTITIES
    energy_source_a: str | None  # the meters behind A's energy, e.g. 'rapl'; None if unmeasured
    energy_source_b: str | None
    errors_a: int = 0  # of the paired queries, those that failed in A (they score 0)
    errors_b: int = 0
    # Load runs: the load points of the paired queries, pooled in the row (in A's order)
    load_points: list[str] = dataclasses.field(default_factory=list)
    # The paired records of each run (an item answered at several samples or load points pairs
    # as many): what n_a and n_b, and errors_a and errors_b, are counted against
    paired: int = 0


@dataclass(frozen=True)
class FieldDifference:
    """A field of the runs' hosts or specs that differs, e.g. 'host.versions.llama-cpp-python';
    None where a run does not have it."""

    field: str
    a: Any
    b: Any


@dataclass(frozen=True)
class RunInfo:
    """What identifies a run: where it is stored, its id, when and where it ran."""

    directory: str
    id: str
    status: str
    created_at: float | None
    ended_at: float | None
    host: dict[str, Any]
    records: int  # measured records
    configs: list[str]


@dataclass(frozen=True)
class Comparison:
    """Run B against the baseline A."""

    a: RunInfo
    b: RunInfo
    shared: list[str]  # the configurations both runs have, in A's order
    only_a: list[str]
    only_b: list[str]
    configs: list[ConfigComparison]  # one per shared configuration
    differences: list[FieldDifference]  # hosts first, then specs

    def to_dict(self) -> dict[str, Any]:
        """Plain data, each ratio's `a` and `b` with their `unit` and `source` beside them."""
        data = dataclasses.asdict(self)
        for config in data["configs"]:
            for key, ratio in config["ratios"].items():
                ratio.update(unit=ratio["unit"] or QUANTITIES[key].unit)
                ratio.update(source=QUANTITIES[key].source)
        return data


@dataclass(frozen=True)
class _Run:
    info: RunInfo
    spec: dict[str, Any]  # as shown: the passwords in its URLs hidden
    records: pd.DataFrame  # measured records only


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """The mean of the per-item differences b - a and its 95% paired t interval (Student's t
    on the differences, through scipy.stats). One pair has no interval (NaN); pairs that all
    differ by the same amount have one of zero width, as the t interval says."""
    from scipy import stats

    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if len(d) == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if len(d) < 2:
        return (mean, math.nan, math.nan)
    sem = float(stats.sem(d))
    if sem == 0:
        return (mean, mean, mean)
    low, high = stats.t.interval(CONFIDENCE, len(d) - 1, loc=mean, scale=sem)
    return (mean, float(low), float(high))


def task_keys(runs: list[list[str]]) -> dict[str, str]:
    """What pairs a task with the same task in another run: a file's task by the shortest
    ending of its path that no two tasks of any one run share (its file's name, or
    `gsm/test.jsonl` where one run has `mm/test.jsonl` beside it, so that a run of gsm's file
    alone keys it alike; `compare_runs` keys each pair it compares): a run stores it by its
    absolute path, which differs between two machines' checkouts of the same data; any other
    by its name. `runs`: each run's tasks."""

    def ending(task: str, parts: int) -> str:
        prefix = next((p for p in FILE_TASKS if task.startswith(p)), None)
        if prefix is None:
            return task
        head, sep, rest = split_path(task, prefix)
        path = Path(head)
        if not path.is_absolute():
            return task
        return f"{prefix}{Path(*path.parts[-parts:])}{sep}{rest}"

    tasks = list(dict.fromkeys(t for run in runs for t in run))
    keys: dict[str, str] = {}
    for parts in range(1, max((len(Path(t).parts) for t in tasks), default=0) + 1):
        endings = {task: ending(task, parts) for task in tasks if task not in keys}
        shared: set[str] = set()  # endings two tasks of one run share
        for run in runs:
            taken = Counter([*(endings[t] for t in run if t in endings), *(
                keys[t] for t in run if t in keys)])  # fmt: skip
            shared.update(key for key, n in taken.items() if n > 1)
        keys.update({task: key for task, key in endings.items() if key not in shared})
    return {task: keys.get(task, task) for task in tasks}


def _read(directory: Path) -> _Run:
    """A run's measured records as `report` reads them (the columns a summary reads, each
    record's `calls` and `extra` decoded once, a load run's cost its share of each point's
    hour), each with its item's content."""
    from tradeoff.store import Store

    store = Store.open(directory)
    try:
        run = store.run()
        configs = store.configs()
        measured = measured_records(store, [*SUMMARY_COLUMNS, "load_point"])
        items = store.items()
    finally:
        store.close()
    names = [c["name"] for c in configs]
    content = {
        (task, item_id): json.dumps([prompt, reference], sort_keys=True, default=str)
        for task, item_id, prompt, reference in items[
            ["task", "item_id", "prompt", "reference"]
        ].itertuples(index=False)
    }
    measured["item_content"] = [
        content.get(key) for key in zip(measured["task"], measured["item_id"], strict=True)
    ]
    if measured.empty:
        raise UserError(
            f"{directory} holds no records yet (no query answered, or only warm-up and "
            "cool-down); compare runs that have answered queries"
        )
    info = RunInfo(
        directory=str(directory),
        id=run["id"],
        status=run["status"],
        created_at=run.get("created_at"),
        ended_at=run.get("ended_at"),
        host=run.get("host") or {},
        records=len(measured),
        configs=names,
    )
    return _Run(info, shown_spec(run.get("spec") or {}), measured)


def paired(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A's and B's records of the items both answered, row i of each the same item (A's order)."""
    left = a[PAIR_KEY].assign(_a=np.arange(len(a)))
    right = b[PAIR_KEY].assign(_b=np.arange(len(b)))
    both = left.merge(right, on=PAIR_KEY, how="inner", sort=False)
    return a.iloc[both["_a"].to_numpy()], b.iloc[both["_b"].to_numpy()]


def _values(s: Summary) -> dict[str, tuple[float | None, str | None]]:
    """Each quantity of a summary, or why it has none (cost: `_cost`)."""
    energy, latency, tokens = s.costs["energy"], s.costs["latency"], s.costs["tokens"]
    return {
        "e2e_mean": (latency.value, latency.missing),
        "e2e_p50": (s.percentiles.get("e2e_s_p50"), latency.missing),
        "ttft_mean": (s.ttft_s, latency.missing or "no query produced a first token"),
        "energy": (energy.value, f"energy not measured: {energy.missing or 'not measured'}"),
        "output_tokens": (s.output_tokens, tokens.missing),
    }


def _cost(s: Summary) -> tuple[float | None, str | None, str]:
    """A summary's cost per query, why it has none, and its unit: dollars where it has them,
    else the cost given with imported outcomes (in the unit given with them)."""
    dollars, given = s.costs["dollars"], s.costs["given"]
    if dollars.value is not None:
        return dollars.value, None, dollars.unit
    if given.value is not None:
        return given.value, None, given.unit
    return None, dollars.missing, dollars.unit


def _cost_ratio(a: Summary, b: Summary) -> Ratio:
    (va, why_a, unit_a), (vb, why_b, unit_b) = _cost(a), _cost(b)
    if va is not None and vb is not None and unit_a != unit_b:
        return Ratio(
            va, vb, None, f"A's cost is in {unit_a}, B's in {unit_b}", f"{unit_a}/{unit_b}"
        )
    return replace(_ratio((va, why_a), (vb, why_b)), unit=unit_a if va is not None else unit_b)


def _ratio(a: tuple[float | None, str | None], b: tuple[float | None, str | None]) -> Ratio:
    (va, why_a), (vb, why_b) = a, b
    if va is None and vb is None and why_a == why_b:
        return Ratio(va, vb, None, f"A and B: {why_a or 'none'}")
    if va is None or vb is None:
        sides = (("A", va, why_a), ("B", vb, why_b))
        why = "; ".join(f"{run}: {w or 'none'}" for run, v, w in sides if v is None)
        return Ratio(va, vb, None, why)
    if va == 0:
        return Ratio(va, vb, None, "A's value is 0")
    return Ratio(va, vb, vb / va, None)


def _none(value: float) -> float | None:
    return None if math.isnan(value) else value


def compare_config(name: str, a: _Run, b: _Run) -> ConfigComparison:
    """One configuration both runs have, over the items both answered."""
    records_a = a.records[a.records["config"] == name]
    records_b = b.records[b.records["config"] == name]
    pa, pb = paired(records_a, records_b)
    n = len(pa.drop_duplicates(ITEM_KEY))  # items: an item's samples are not independent
    if n == 0:
        why = _unpaired_reason(records_a, records_b)
        return ConfigComparison(
            name, 0, len(records_a), len(records_b), None, None, None, None, None, why,
            {key: Ratio(None, None, None, why) for key in QUANTITIES}, None, None,
        )  # fmt: skip
    counted = (scored(pa).to_numpy() | scored(pb).to_numpy()) if n else np.array([], bool)
    scores_a, scores_b = record_scores(pa[counted]), record_scores(pb[counted])
    unscored = [run for run, s in (("A", scores_a), ("B", scores_b)) if len(s) == 0]
    if unscored:
        acc_a = acc_b = diff = low = high = None
        missing: str | None = (
            f"unscored in {' and '.join(unscored)}: the records have no reference answers"
        )
    else:
        acc_a, acc_b = float(scores_a.mean()), float(scores_b.mean())
        items = pd.DataFrame({"a": scores_a, "b": scores_b}).groupby(
            [pa.loc[counted, k].to_numpy() for k in ITEM_KEY]
        )
        by_item = items.mean()  # each item's samples: one difference
        mean, lo, hi = paired_difference(by_item["a"].to_numpy(), by_item["b"].to_numpy())
        # Scores lie in [0, 1], so a difference of them in [-1, 1]: a t interval of few items
        # reaches past that, and is cut there (as the Wilson interval of accuracy is at 0 and 1).
        lo, hi = max(lo, -1.0), min(hi, 1.0)
        diff, low, high, missing = mean, _none(lo), _none(hi), None
    summary_a = summarize_config(name, pa, a.records)
    summary_b = summarize_config(name, pb, b.records)
    values_a, values_b = _values(summary_a), _values(summary_b)
    ratios = {key: _ratio(values_a[key], values_b[key]) for key in values_a}
    cost = _cost_ratio(summary_a, summary_b)
    return ConfigComparison(
        name, n, len(records_a), len(records_b), acc_a, acc_b, diff, low, high, missing,
        {**ratios, "cost": cost},
        _source(summary_a), _source(summary_b), _failed(pa), _failed(pb),
        [p for p in dict.fromkeys(pa["load_point"]) if p], len(pa),
    )  # fmt: skip


def _failed(records: pd.DataFrame) -> int:
    return int((failed(records) & (records["error"].fillna("") != "")).sum())


def _unpaired_reason(a: pd.DataFrame, b: pd.DataFrame) -> str:
    """Why no record of A pairs with one of B: they answered other questions, questions that
    share a task and id but not their content, the same questions as other samples (passes over
    the items), or at other load points."""

    def alike(key: list[str]) -> int:
        return len(a[key].merge(b[key].drop_duplicates(), on=key))

    if same := alike([*PAIR_KEY[:3], "load_point"]):
        samples = [_listed(r["sample"]) for r in (a, b)]
        return (
            f"no item answered as the same sample in both runs ({same} records answer the same "
            f"questions, A as sample {samples[0]} and B as sample {samples[1]}: a load run's "
            "--warmup takes the first passes over the items, so runs of other warm-ups measure "
            "other passes)"
        )
    if alike(PAIR_KEY[:3]):
        points = [
            ", ".join(sorted(set(r["load_point"]))).strip() or "none (a profile run)"
            for r in (a, b)
        ]
        return (
            "no item answered at the same load point in both runs (A's load points: "
            f"{points[0]}; B's: {points[1]})"
        )
    if same_ids := alike(PAIR_KEY[:2]):
        return (
            f"no item answered in both runs ({same_ids} records share a task and id, but their "
            "items' prompts or references differ: not the same questions)"
        )
    if (a["task"] == SERVED).all() and (b["task"] == SERVED).all():
        return (
            "no item answered in both runs (served requests are no task's questions: each is "
            "its own item; compare load runs that sent the same questions to each server)"
        )
    return "no item answered in both runs"


def _listed(values: pd.Series) -> str:
    """Whole numbers as "0", "0, 1" or a range "0–7" when more than three."""
    found = sorted({int(v) for v in values})
    return ", ".join(map(str, found)) if len(found) <= 3 else f"{found[0]}–{found[-1]}"


def _source(s: Summary) -> str | None:
    return s.energy_source if s.costs["energy"].value is not None else None


def flatten(data: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Nested dicts as one level of dotted keys ('host.versions.numpy'), a list of dicts by
    `_keys` ('spec.configs[short].max_tokens', 'spec.tasks[arith].ref'); other lists kept whole
    ('host.gpus')."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item_key, item in zip(_keys(value), value, strict=True):
                out.update(flatten(item, f"{name}[{item_key}]"))
        else:
            out[name] = value
    return out


def _keys(items: list[dict[str, Any]]) -> list[str]:
    """Each dict's name where every one has a name of its own, so that two runs' lists of the
    same configurations in another order pair them as the table does; else its reference
    where every one has its own (tasks, keyed as `task_keys` pairs them); else its index."""
    for field in ("name", "ref"):
        values = [item.get(field) for item in items]
        if all(isinstance(v, str) and v for v in values) and len(set(values)) == len(values):
            names = [str(v) for v in values]
            return list(task_keys([names]).values()) if field == "ref" else names
    return [str(i) for i in range(len(items))]


def _named_configs(run: _Run) -> dict[str, Any]:
    """The run's spec, each configuration entry named as the configuration it ran (an entry
    given no name runs under the name `config.resolve_configs` derived), where each entry ran
    one (a list-valued parameter runs several, named after the entry)."""
    entries = run.spec.get("configs")
    names = run.info.configs
    if not isinstance(entries, list) or len(entries) != len(names):
        return run.spec
    if not all(isinstance(e, dict) for e in entries):
        return run.spec
    named = [{**e, "name": e.get("name") or n} for e, n in zip(entries, names, strict=True)]
    return {**run.spec, "configs": named}


def differences(a: dict[str, Any], b: dict[str, Any], prefix: str) -> list[FieldDifference]:
    """The fields of two nested dicts that differ, in A's order, then those only B has. An empty
    dict or list on one side where the other has fields under it is said by those fields."""
    flat_a, flat_b = flatten(a, prefix), flatten(b, prefix)
    fields = list(dict.fromkeys([*flat_a, *flat_b]))
    return [
        FieldDifference(f, flat_a.get(f), flat_b.get(f))
        for f in fields
        if flat_a.get(f) != flat_b.get(f)
        and not (_emptied(f, flat_a, flat_b) or _emptied(f, flat_b, flat_a))
    ]


def _emptied(field: str, flat: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether `field` is an empty dict or list in `flat` that `other` has fields under."""
    return (
        flat.get(field) in ({}, [])
        and field not in other
        and any(k.startswith((f"{field}.", f"{field}[")) for k in other)
    )


def _compare(a: _Run, b: _Run) -> Comparison:
    names_b = set(b.info.configs)
    shared = [name for name in a.info.configs if name in names_b]
    if not shared:
        raise UserError(
            f"{a.info.directory} and {b.info.directory} share no configuration: "
            f"{a.info.directory} has {', '.join(a.info.configs) or 'none'}; "
            f"{b.info.directory} has {', '.join(b.info.configs) or 'none'} "
            "(configurations are matched by name, as `tradeoff report` shows them)"
        )
    configs = [compare_config(name, a, b) for name in shared]
    if not any(c.n for c in configs):  # a table of n/a, every cell
        raise UserError(
            f"{a.info.directory} and {b.info.directory} answered no item in common: "
            f"{configs[0].accuracy_missing} (compare runs of the same questions, a load run "
            "with a load run)"
        )
    return Comparison(
        a=a.info,
        b=b.info,
        shared=shared,
        only_a=[name for name in a.info.configs if name not in names_b],
        only_b=[name for name in b.info.configs if name not in set(shared)],
        configs=configs,
        differences=differences(a.info.host, b.info.host, "host")
        + differences(_named_configs(a), _named_configs(b), "spec"),
    )


def check_directories(directories: list[Path]) -> None:
    """Refuses, before any work, fewer than two directories or one that holds no run."""
    from tradeoff.store import Store

    if len(directories) < 2:
        raise UserError(
            f"give two run directories or more (got {len(directories)}): the first is the "
            "baseline, each other is compared with it"
        )
    for directory in directories:
        Store.open(directory).close()


def compare_runs(directories: list[Path]) -> tuple[list[Comparison], list[str]]:
    """Each run after the first compared with the first (the baseline), and why any was left
    out (it shares no configuration with A; refused when no run is left). Every run is read
    before any is compared, so that a bad directory is named before any work is done."""
    check_directories(directories)
    runs = [_read(directory) for directory in directories]
    comparisons, left_out = [], []
    for b in runs[1:]:
        pair = (runs[0], b)  # keyed apart from other runs: a third's tasks change no pairing
        keys = task_keys([list(run.records["task"].unique()) for run in pair])
        for run in pair:
            run.records["task_key"] = run.records["task"].map(keys)
        try:
            comparisons.append(_compare(*pair))
        except UserError as exc:
            left_out.append(f"left out: {exc}")
    if not comparisons:  # each run's reason, in one line
        raise UserError("; ".join(why.removeprefix("left out: ") for why in left_out))
    return comparisons, left_out
