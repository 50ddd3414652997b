"""What a query costs, defined once: each cost axis (its name, unit, source, each record's cost and
why a cost is missing) and the one resolution of `auto`, used by the report, the frontier, policy
fit and policy eval alike.

A record's cost on an axis is NaN where it is not known; a configuration's mean cost is then
unknown too, with the reason, never a mean over the records that happen to have one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tradeoff.errors import UserError
from tradeoff.records import NO_CALLS, RELEASED_WHOLE
from tradeoff.store import CALL_FACTS, call_facts
from tradeoff.store_columns import EXTRA_PREFIX
from tradeoff.types import DISCONNECTED

AUTO = "auto"


@dataclass(frozen=True)
class CostAxis:
    """One way to count what a query costs.

    `values` gives each record's cost in `unit` (NaN where not known); `missing` says why some
    of a configuration's records have none, given the run's records for context. `source_of`,
    `note_of` and `unit_of` refine the source, add a caveat, or read the unit from the records,
    where the axis needs it.
    """

    name: str
    title: str
    unit: str
    source: str
    values: Callable[[pd.DataFrame], pd.Series]
    missing: Callable[[pd.DataFrame, pd.DataFrame], str]
    source_of: Callable[[pd.DataFrame], str] | None = None
    note_of: Callable[[pd.DataFrame], str | None] | None = None
    unit_of: Callable[[pd.DataFrame], str] | None = None


@dataclass(frozen=True)
class AxisCost:
    """One configuration's mean cost per query on one axis, or why it is unknown."""

    axis: str
    unit: str
    value: float | None  # mean per query, in unit
    source: str | None  # e.g. "measured by nvml", "wall clock", "analytic"
    missing: str | None  # why value is None
    note: str | None  # a caveat on how it was counted, e.g. output tokens only


def imported(df: pd.DataFrame) -> pd.Series:
    """Which records are imported outcomes (`tradeoff import outcomes`): a score and maybe a
    given cost, no time or tokens measured (stored as 0, which no axis may count)."""
    return extra_field(df, "imported").fillna(False).astype(bool)


# What says a record's answer was released whole: RELEASED_WHOLE, or in a record stored before
# that was written, what the two strategies that release one report (a vote's samples_drawn, a
# cascade's escalated).
RELEASED_WHOLE_KEYS = (RELEASED_WHOLE, "samples_drawn", "escalated")


def released_whole(df: pd.DataFrame) -> pd.Series:
    """Which records' answers were released whole once decided (`vote`, `cascade`): their TTFT
    is the moment every token reached the caller at once."""
    found = pd.Series(False, index=df.index)
    for key in RELEASED_WHOLE_KEYS:
        found |= extra_field(df, key).notna()
    return found


def _measured(column: Callable[[pd.DataFrame], pd.Series]) -> Callable[[pd.DataFrame], pd.Series]:
    """An axis's values where a run measured them; NaN for imported outcomes."""
    return lambda df: column(df).where(~imported(df)).astype(float)


# How every reason a value of imported outcomes is missing begins.
IMPORTED_NONE = "imported outcomes carry no"


def all_imported(reasons: Iterable[object]) -> bool:
    """Whether every one of these reasons a value is missing says the records are imported
    outcomes (`IMPORTED_NONE`): nothing a run measures is to be had of them."""
    return all(str(reason).startswith(IMPORTED_NONE) for reason in reasons)


def _not_imported(what: str) -> Callable[[pd.DataFrame, pd.DataFrame], str]:
    """Why an axis measured by runs has no value: the records are imported outcomes."""

    def missing(df: pd.DataFrame, run: pd.DataFrame) -> str:
        k = int(imported(df).sum())
        return f"{IMPORTED_NONE} {what} ({k} of {len(df)} queries)"

    return missing


def energy_meters(df: pd.DataFrame) -> str | None:
    """The energy meters behind the records, e.g. 'rapl' or 'nvml+rapl'; None if none."""
    return "+".join(sorted({str(s) for s in df["energy_source"].dropna().unique()})) or None


def _energy_missing(df: pd.DataFrame, run: pd.DataFrame) -> str:
    """Why the configuration's energy is unknown: the first unmeasured record's reason, a
    meter's (of a record that ran its calls) before that of a record that ended before any call
    (`records.NO_CALLS`), which says nothing of the meters."""
    unmeasured = df["energy_j"].isna()
    reasons = df.loc[unmeasured, "energy_missing"].dropna()
    if len(reasons):
        metered = reasons[reasons != NO_CALLS]
        return str((metered if len(metered) else reasons).iloc[0])
    counts = f"{int(unmeasured.sum())} of {len(df)} queries"
    if (unmeasured & imported(df)).all():
        return f"{IMPORTED_NONE} energy ({counts})"
    if (unmeasured & df["error"].isna()).any():
        return f"no meter reading for {counts}"
    return f"failed before metering: {counts}"


def _energy_source(df: pd.DataFrame) -> str:
    found = energy_meters(df)
    return f"measured by {found}" if found else "measured"


def _tokens(df: pd.DataFrame) -> pd.Series:
    return df["output_tokens"] + df["input_tokens"].fillna(0)


def _tokens_note(df: pd.DataFrame) -> str | None:
    no_input = int(df["input_tokens"].isna().sum())
    if not no_input:
        return None
    return (
        f"input tokens not reported for {no_input} of {len(df)} queries: output tokens only "
        "for those"
    )


def _gflops(df: pd.DataFrame) -> pd.Series:
    return df["flops"] / 1e9


def _flops_missing(df: pd.DataFrame, run: pd.DataFrame) -> str:
    uncounted = df["flops"].isna()
    k = int(uncounted.sum())
    if (uncounted & imported(df)).all():
        return f"{IMPORTED_NONE} FLOPs ({k} of {len(df)} queries)"
    failed = int((uncounted & df["error"].notna()).sum())
    why = f"FLOPs not counted for {k} of {len(df)} queries"
    if failed == k:
        return why + " (failed calls are not counted)"
    if not failed:
        return why + " (model shape unknown or input tokens not reported)"
    return why


def failed(df: pd.DataFrame) -> pd.Series:
    """Which records failed: an error, but not a served client's going away (`DISCONNECTED`),
    which is no failure of the model or the server."""
    return df["error"].notna() & (df["error"] != DISCONNECTED)


def calls_of(calls: Any) -> list[dict[str, Any]]:
    """One record's engine calls: its `calls` value (JSON text as stored, or decoded), decoded."""
    return json.loads(calls) if isinstance(calls, str) else list(calls or [])


def record_calls(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Every engine call of the records, in order (the `calls` column, decoded)."""
    out: list[dict[str, Any]] = []
    for calls in df["calls"]:
        out.extend(calls_of(calls))
    return out


def with_facts(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with FACT_COLUMNS, derived from its `calls` and `extra` where it was not read with
    them (`Store.records(columns=...)` reads them), so that each record's JSON is decoded once
    however many configurations and axes read it."""
    missing = [c for c in FACT_COLUMNS if c not in df]
    if not missing:
        return df
    added: dict[str, Any] = {}
    if any(c in missing for c in CALL_FACTS):
        facts = [call_facts(calls) for calls in df["calls"]]
        added.update({name: [f[i] for f in facts] for i, name in enumerate(CALL_FACTS)})
    for column in missing:
        if column.startswith(EXTRA_PREFIX):
            added[column] = extra_field(df, column.removeprefix(EXTRA_PREFIX))
    # Python objects, None where missing, as the store reads them
    return df.assign(**{c: pd.Series(added[c], index=df.index, dtype=object) for c in missing})


def call_fact(df: pd.DataFrame, name: str) -> pd.Series:
    """Each record's fact `name` of `store.CALL_FACTS`."""
    return df[name] if name in df else with_facts(df)[name]


def counted_in_chunks(df: pd.DataFrame) -> pd.Series:
    """Which records had an answer's output tokens counted in stream chunks (a server that sent
    no usage: a chunk may hold several tokens, so their tokens read low, ITL and TPOT high)."""
    return call_fact(df, "counted_in_chunks").fillna(0).astype(bool)


def _models(facts: pd.Series) -> set[str]:
    """The models named in facts of `call_models` or `unreported_models`."""
    return {str(m) for text in facts.dropna().unique() for m in json.loads(text)}


def called_models(df: pd.DataFrame) -> set[str]:
    """The models the records called (each call's `model`)."""
    return _models(call_fact(df, "call_models"))


def is_usd(unit: str) -> bool:
    """Whether costs given in `unit` (`import outcomes --cost-unit`) are dollars, and so priced:
    USD in any case, `$` (as tradeoff writes dollars) or `US$`."""
    return unit.strip().upper() in ("USD", "$", "US$")


def same_unit(a: str, b: str) -> bool:
    """Whether costs in `a` and in `b` are in one unit ("usd" and "USD" are; runs imported
    before the unit was written one way hold either)."""
    return a.strip() == b.strip() or is_usd(a) and is_usd(b)


def _unpriced(df: pd.DataFrame, run: pd.DataFrame) -> str:
    """Why some queries of one configuration have no price: as each record says (`unpriced`,
    where the run has prices); in runs stored before records said, a model seen in a priced
    query of the run has a price in the spec and the others in unpriced queries have none.
    Imported outcomes are priced only by costs given in USD."""
    unpriced = df[df["cost_usd"].isna()]
    if len(unpriced) and imported(unpriced).all():
        units = sorted({str(u) for u in extra_field(unpriced, "cost_unit").dropna()})
        units = [u for u in units if not is_usd(u)]
        given = given_costs(unpriced).notna()
        if given.any() and units:
            return (
                f"imported costs are in {'+'.join(units)}, not USD "
                f"({int(given.sum())} of {len(df)} queries; --cost given plots them)"
            )
        return (
            f"no cost given in USD for {len(unpriced)} of {len(df)} imported queries "
            "(tradeoff import outcomes --model NAME=SCORE_COL,cost=PRICE --cost-unit USD)"
        )
    said = extra_field(unpriced, "unpriced")
    if len(said) and said.notna().all():  # each record says why, where the run has prices
        reasons = list(said.value_counts().index)
        more = f"; and {len(reasons) - 3} more reasons" if len(reasons) > 3 else ""
        some = f"{len(unpriced)} of {len(df)} queries have no price: "
        return some * (len(unpriced) < len(df)) + "; ".join(reasons[:3]) + more
    priced_models = _models(call_fact(run, "call_models")[run["cost_usd"].notna()])
    models = sorted(called_models(unpriced) - priced_models)
    if models and priced_models:
        return f"no price in the spec for {', '.join(models)}"
    if failed(unpriced).all() and (priced_models or failed(run).all()):
        # a failed call's tokens are unknown (a server's 500 says none); where nothing in the
        # run was priced, the prices may be missing too: said where something did not fail
        return (
            f"{len(unpriced)} of {len(df)} queries have no price: they failed, and a failure "
            "reports no tokens to price"
        )
    if not priced_models:
        return "no prices in the spec"
    no_input = sorted(_models(call_fact(unpriced, "unreported_models")))
    if no_input:
        return f"input tokens not reported by {', '.join(no_input)}, so not priced"
    return (
        f"{len(unpriced)} of {len(df)} queries have no price: a call of theirs failed, and a "
        "failed call reports no tokens to price (or none was made)"
    )


def extra_field(df: pd.DataFrame, key: str) -> pd.Series:
    """Each record's `extra[key]` (None where it has none): the column `extra.KEY` where the
    records were read with it, else from `extra`."""
    if EXTRA_PREFIX + key in df:
        return df[EXTRA_PREFIX + key]

    def field(extra: Any) -> Any:
        data = json.loads(extra) if isinstance(extra, str) else extra or {}
        return data.get(key)

    return df["extra"].map(field)


def given_costs(df: pd.DataFrame) -> pd.Series:
    """Each record's cost as given with imported outcomes (`extra.cost`); NaN where none was."""
    return pd.to_numeric(extra_field(df, "cost"), errors="coerce").astype(float)


def _given_missing(df: pd.DataFrame, run: pd.DataFrame) -> str:
    k = int(given_costs(df).isna().sum())
    return (
        f"no cost given for {k} of {len(df)} queries (costs are given with imported outcomes: "
        "tradeoff import outcomes --model NAME=SCORE_COL,cost=PRICE)"
    )


def _priced_by(df: pd.DataFrame) -> str:
    """Where dollars come from: the spec's prices, or costs in USD given with imported
    outcomes."""
    return "given with the imported outcomes" if imported(df).all() else "spec prices"


def _given_unit(df: pd.DataFrame) -> str:
    units = sorted({str(u) for u in extra_field(df, "cost_unit").dropna()})
    return "+".join(units) if units else "as given"


COST_AXES: dict[str, CostAxis] = {
    axis.name: axis
    for axis in [
        CostAxis(
            "energy",
            "energy per query",
            "J",
            "measured",
            lambda df: df["energy_j"],
            _energy_missing,
            source_of=_energy_source,
        ),
        CostAxis(
            "latency",
            "latency per query",
            "s",
            "wall clock",
            _measured(lambda df: df["e2e_s"]),
            _not_imported("latency"),
        ),
        CostAxis(
            "tokens",
            "tokens per query (input + output)",
            "tokens",
            "counted",
            _measured(_tokens),
            _not_imported("token counts"),
            note_of=_tokens_note,
        ),
        CostAxis("flops", "compute per query", "GFLOPs", "analytic", _gflops, _flops_missing),
        CostAxis(
            "dollars",
            "price per query",
            "$",
            "spec prices",
            lambda df: df["cost_usd"],
            _unpriced,
            source_of=_priced_by,
        ),
        CostAxis(
            "given",
            "given cost per query",
            "as given",
            "given with the imported outcomes",
            given_costs,
            _given_missing,
            unit_of=_given_unit,
        ),
    ]
}
COST_CHOICES = [AUTO, *COST_AXES]

# What the cost axes, the roofline and TPOT read of each record's JSON columns, as columns of
# their own (`with_facts`).
FACT_COLUMNS: tuple[str, ...] = (
    *CALL_FACTS,
    EXTRA_PREFIX + "cost",
    EXTRA_PREFIX + "cost_unit",
    EXTRA_PREFIX + "imported",
    EXTRA_PREFIX + "unpriced",
    *(EXTRA_PREFIX + key for key in RELEASED_WHOLE_KEYS),
)

# The tokens axis counts output tokens only for records whose server reported no input tokens.
OUTPUT_ONLY = "output only where input tokens were not reported"


def axis(name: str) -> CostAxis:
    """The cost axis called `name` (not `auto`: see `resolve`)."""
    if name not in COST_AXES:
        raise UserError(
            f"cost axis '{name}' is not known; known: {', '.join(COST_AXES)} (or {AUTO})"
        )
    return COST_AXES[name]


def auto_axis(records: pd.DataFrame) -> str:
    """What `auto` means for these records: energy when every successful record has it
    measured; else the given costs when every successful record has one, or when all are
    imported outcomes and some have one (those imported without a cost are n/a: latency would
    leave every one n/a); else latency, which every record has."""
    ok = records[records["error"].isna()]
    if len(ok) and ok["energy_j"].notna().all():
        return "energy"
    given = given_costs(ok)
    if len(ok) and (given.notna().all() or (imported(ok).all() and given.notna().any())):
        return "given"
    return "latency"


def resolve(cost: str, records: pd.DataFrame) -> CostAxis:
    """The axis `cost` names, `auto` resolved on `records` (the records being analysed)."""
    return axis(auto_axis(records) if cost == AUTO else cost)


def unit(cost: CostAxis, df: pd.DataFrame) -> str:
    """The axis's unit for these records; for costs given at import, the unit given with them."""
    return cost.unit_of(df) if cost.unit_of else cost.unit


def record_costs(df: pd.DataFrame, cost: CostAxis) -> pd.Series:
    """Each record's cost on the axis, in its unit; NaN where not known."""
    return cost.values(df).astype(float)


def mean_cost(df: pd.DataFrame, cost: CostAxis, run: pd.DataFrame) -> AxisCost:
    """The mean cost per query of one configuration's records `df` (failed ones included: they
    were paid for), or why it is unknown; `run` holds every record of the run, for context."""
    values = record_costs(df, cost)
    found_unit = unit(cost, df)
    if values.isna().any():
        return AxisCost(cost.name, found_unit, None, None, cost.missing(df, run), None)
    return AxisCost(
        cost.name,
        found_unit,
        float(values.mean()),
        cost.source_of(df) if cost.source_of else cost.source,
        None,
        cost.note_of(df) if cost.note_of else None,
    )
