"""Statistics of load runs, per configuration and load point: what was asked (a rate or a
concurrency) and what was achieved, latency percentiles, goodput and correct goodput under a
service-level objective, energy and dollars per output token, and whether the upstream saturated.
Percentiles are computed here, once, for every table (`percentiles`). README.md, "Reading the
load table", gives each definition; the docstrings below say which records each one counts."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tradeoff.analysis.costs import (
    COST_AXES,
    called_models,
    calls_of,
    counted_in_chunks,
    energy_meters,
    extra_field,
    imported,
    mean_cost,
    record_calls,
    released_whole,
)
from tradeoff.errors import UserError
from tradeoff.types import CANCELLED

# numpy.percentile with its default (linear) interpolation, as `vllm bench serve` (GuideLLM 0.8.1
# takes the first value reaching p, with no interpolation: benchmarks/bench_load.py compares
# both). p99.9 of fewer than P999_MIN_N values is mostly the largest one: None.
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p95", 95.0),
    ("p99", 99.0),
    ("p999", 99.9),
)
P999_MIN_N = 1000
LATENCIES = ("ttft_s", "itl_s", "tpot_s", "e2e_s")

# Saturation is judged on the medians of the first and last thirds of a load point's measured
# requests (in the order they were scheduled): medians, so that a few slow requests or a short
# point do not count; thirds, so that a trend does.
# A rate profile is saturated when its answers' pace falls more than this share below the pace
# its requests were scheduled at (`pace`).
SATURATION_MARGIN = 0.1
# Queue delay grows through a load point when the median of its last third exceeds that of its
# first third by more than max(QUEUE_GROWTH_MIN_S, QUEUE_GROWTH_FACTOR x the first third's): the
# floor keeps scheduling jitter of a few ms from counting, the factor keeps a steady delay (an
# in-process engine queueing each request behind one other) from counting.
QUEUE_GROWTH_MIN_S = 0.05
QUEUE_GROWTH_FACTOR = 2.0
TREND_MIN_N = 9  # three requests per third at least; fewer are not judged
RATE_PROFILES = ("constant", "poisson")

# A score at least this is a correct answer (a 0/1 scorer's 1; a fractional score must be full).
CORRECT = 1.0 - 1e-9

SLO_KEYS = ("ttft", "itl", "tpot", "e2e")
SLO_FORM = (
    "give KEY=SECONDS pairs separated by commas, keys ttft, itl, tpot, e2e, each value > 0 "
    "seconds (e.g. ttft=0.5,itl=0.05,e2e=10)"
)


@dataclass(frozen=True)
class Slo:
    """A service-level objective: the most seconds a request may take to its first token (ttft),
    between tokens (itl: the request's mean gap; tpot: (e2e - ttft) / (output tokens - 1)), and
    end to end (e2e). None: no objective on that latency."""

    ttft: float | None = None
    itl: float | None = None
    tpot: float | None = None
    e2e: float | None = None

    def objectives(self) -> dict[str, float]:
        """The objectives given, in the order of SLO_KEYS."""
        found = {key: getattr(self, key) for key in SLO_KEYS}
        return {key: value for key, value in found.items() if value is not None}

    def __str__(self) -> str:
        """As parse_slo reads it: 'ttft=0.5,e2e=10'."""
        return ",".join(f"{key}={value:g}" for key, value in self.objectives().items())


def parse_slo(text: str, source: str = "--slo") -> Slo:
    """'ttft=0.5,itl=0.05,e2e=10' (seconds) as an Slo; `source` names where the text came from
    in the error a malformed one raises."""

    def bad(problem: str) -> UserError:
        return UserError(f"{source} {text!r}: {problem}; {SLO_FORM}")

    if not text.strip():
        raise bad("no objective given")
    values: dict[str, float] = {}
    for part in text.split(","):
        key, eq, value = (s.strip() for s in part.partition("="))
        if not eq:
            raise bad(f"{part.strip()!r} is not KEY=SECONDS")
        if key not in SLO_KEYS:
            raise bad(f"{key!r} is not an objective")
        if key in values:
            raise bad(f"{key} is given twice")
        try:
            seconds = float(value)
        except ValueError:
            raise bad(f"{key}={value!r} is not a number of seconds") from None
        if not (math.isfinite(seconds) and seconds > 0):
            raise bad(f"{key}={value} is not > 0 seconds")
        values[key] = seconds
    return Slo(**values)


def percentiles(values: pd.Series | np.ndarray | list[float]) -> dict[str, float | None]:
    """p50, p90, p95, p99 and p99.9 ('p999') of the values (NaN left out); None where there are
    no values, and p99.9 None below P999_MIN_N values."""
    data = pd.Series(values, dtype=float).dropna().to_numpy()
    found = np.percentile(data, [q for _, q in PERCENTILES]) if len(data) else None
    return {
        name: (
            None
            if found is None or (name == "p999" and len(data) < P999_MIN_N)
            else float(found[i])
        )
        for i, (name, _) in enumerate(PERCENTILES)
    }


def tpot(records: pd.DataFrame) -> pd.Series:
    """Each record's time per output token after the first, (e2e - TTFT) / (output tokens - 1);
    NaN for a record with no first token, fewer than two output tokens, or an answer released
    whole (`released_whole`: its tokens came at once, at its TTFT, and the microseconds after
    it read a million tokens per second)."""
    gaps = records["output_tokens"].astype(float) - 1
    value = (records["e2e_s"] - records["ttft_s"].astype(float)) / gaps.where(gaps >= 1)
    return value.where(~released_whole(records)).astype(float)


def _latency(records: pd.DataFrame, name: str) -> pd.Series:
    """Each record's latency `name` (NaN where it has none: imported outcomes have none)."""
    values = tpot(records) if name == "tpot_s" else records[name].astype(float)
    return values.where(~imported(records))


def latency_percentiles(records: pd.DataFrame) -> dict[str, float | None]:
    """TTFT, ITL (each request's mean gap between tokens), TPOT and e2e percentiles over the
    records given, each over those of them that have it: keys like 'ttft_s_p99', 'e2e_s_p999'."""
    return {
        f"{name}_{p}": value
        for name in LATENCIES
        for p, value in percentiles(_latency(records, name)).items()
    }


def _distribution(name: str, values: pd.Series) -> dict[str, float | None]:
    """{name: mean, name_p50: ..., ...} over the values that are not NaN."""
    present = values.dropna()
    mean = float(present.mean()) if len(present) else None
    return {name: mean, **{f"{name}_{p}": v for p, v in percentiles(present).items()}}


def cancelled(records: pd.DataFrame) -> pd.Series:
    """The records of requests cancelled by tradeoff (the run stopped, a load point ended)
    rather than failed by the upstream: their error starts with 'cancelled' (as
    `types.CANCELLED`), or their `extra` says `cancelled: true`."""
    prefix = CANCELLED.split(":", 1)[0]
    by_error = records["error"].fillna("").astype(str).str.startswith(prefix)
    by_extra = extra_field(records, "cancelled").map(lambda v: v is True)
    return (by_error | by_extra.astype(bool)).astype(bool)


def slo_met(records: pd.DataFrame, slo: Slo) -> pd.Series:
    """Whether each request met every objective of `slo`. A failed or cancelled request meets
    none; a latency the request lacks (no first token; no ITL from an answer that was not
    streamed; no TPOT from one released whole) is not met. A request of fewer than two output
    tokens has no gap between tokens: it meets the itl and tpot objectives."""
    met = records["error"].isna()
    single = records["output_tokens"] < 2
    if slo.ttft is not None:
        met &= records["ttft_s"].astype(float) <= slo.ttft
    if slo.itl is not None:
        met &= single | (records["itl_s"].astype(float) <= slo.itl)
    if slo.tpot is not None:
        met &= single | (tpot(records) <= slo.tpot)
    if slo.e2e is not None:
        met &= records["e2e_s"].astype(float) <= slo.e2e
    return met.astype(bool)


def target(spec: Mapping[str, Any] | None, load_point: str) -> dict[str, Any]:
    """The profile and its target from a load point's spec ({"kind": "constant", "rate": 10}),
    else from its name ('constant:10')."""
    if spec is None:
        kind, _, value = load_point.partition(":")
        key = {"concurrent": "concurrency", "throughput": "max_concurrency"}.get(kind, "rate")
        try:
            spec = {"kind": kind, key: float(value)} if value else {"kind": kind}
        except ValueError:
            spec = {"kind": kind}
    kind = str(spec.get("kind", ""))
    concurrency = 1 if kind == "synchronous" else spec.get("concurrency")
    # A throughput point is stored with its cap as its concurrency ({"kind": "throughput",
    # "concurrency": 256}), and keeps that many in flight: both its target and its cap.
    cap = spec.get("max_concurrency", concurrency if kind == "throughput" else None)
    return {
        "profile": kind,
        "target_rate": spec.get("rate") if kind in RATE_PROFILES else None,
        "target_concurrency": None if concurrency is None else int(concurrency),
        "max_concurrency": None if cap is None else int(cap),
    }


def measure_window(measure: pd.DataFrame) -> float | None:
    """Seconds from the first measured request's send to the end of the last one to end."""
    sent = measure["sent_s"].astype(float)
    ends = sent + measure["e2e_s"].astype(float)
    if sent.isna().all():
        return None
    window = float(ends.max() - sent.min())
    return window if window > 0 else None


def served_rate(records: pd.DataFrame) -> float | None:
    """Every answer of the load point, warm-up and cool-down ones too, per second of the whole
    point (its first send to its last end): the pace the server kept. Where requests are kept in
    flight (throughput, concurrent) the measured ones wait behind the warm-up's still in flight,
    so `achieved_rate` reads low (2.5× on a 3 s point behind 256 warm-up requests); a sweep
    takes its top rate from this."""
    window = measure_window(records)
    answered = int(records["error"].isna().sum())
    return None if window is None else answered / window


def _thirds(measure: pd.DataFrame, columns: list[str]) -> list[pd.DataFrame] | None:
    """The first and last thirds of the requests that have `columns`, in the order they were
    scheduled (sent, where no schedule was stored); None below TREND_MIN_N requests."""
    order = measure["scheduled_s"].fillna(measure["sent_s"]).astype(float)
    timed = measure.assign(_order=order).dropna(subset=["_order", *columns])
    if len(timed) < TREND_MIN_N:
        return None
    ordered = timed.sort_values("_order", kind="stable")
    third = len(ordered) // 3
    return [ordered.iloc[:third], ordered.iloc[-third:]]


def _median(values: pd.Series) -> float:
    found = percentiles(values)["p50"]
    assert found is not None
    return found


def pace(measure: pd.DataFrame) -> float | None:
    """How well answers kept up with the schedule: the time between the first and last thirds of
    the measured requests' schedules (medians) over the time between their answers (medians of
    scheduled time + queue delay + e2e). 1: answers came back as fast as requests were
    scheduled; 0.5: at half that rate, the wait growing by as much as the schedule advanced.
    Unlike the achieved rate it is not lowered by the last requests' drain, nor by a Poisson
    schedule that ran below its target by chance. Only answers count: a failed request returns
    as fast as the upstream refuses it (a point whose every request failed read 100%), and a
    cancelled one was cut short. None below TREND_MIN_N answers."""
    answered = measure[measure["error"].isna() & ~cancelled(measure)]
    thirds = _thirds(answered, ["sent_s", "e2e_s"])
    if thirds is None:
        return None
    first, last = thirds
    scheduled = _median(last["_order"]) - _median(first["_order"])
    wait = [_median(t["sent_s"] + t["e2e_s"] - t["_order"]) for t in thirds]
    answers = scheduled + wait[1] - wait[0]
    if scheduled <= 0:
        return None
    return scheduled / answers if answers > 0 else math.inf


def queue_growth(measure: pd.DataFrame) -> tuple[float, float] | None:
    """(median queue delay of the first third of the measured requests, of the last third) when
    it grew by more than max(QUEUE_GROWTH_MIN_S, QUEUE_GROWTH_FACTOR x the first); else None."""
    thirds = _thirds(measure, ["queue_delay_s"])
    if thirds is None:
        return None
    first, last = (_median(t["queue_delay_s"]) for t in thirds)
    if last - first > max(QUEUE_GROWTH_MIN_S, QUEUE_GROWTH_FACTOR * first):
        return first, last
    return None


def saturation(profile: str, paced: float | None, measure: pd.DataFrame) -> str | None:
    """Why the load point saturated its upstream, or None: a rate profile whose answers fell
    more than SATURATION_MARGIN behind its schedule (`pace`), or queue delay that grew through
    the load point (`queue_growth`), whatever the profile."""
    reasons = []
    if profile in RATE_PROFILES and paced is not None and paced < 1 - SATURATION_MARGIN:
        reasons.append(
            f"answers came back at {paced:.0%} of the rate requests were scheduled at (below "
            f"{1 - SATURATION_MARGIN:.0%})"
        )
    growth = queue_growth(measure)
    if growth is not None:
        reasons.append(
            f"queue delay grew from a median of {growth[0] * 1000:.1f} ms over the first third "
            f"of the requests to {growth[1] * 1000:.1f} ms over the last third"
        )
    return "; ".join(reasons) or None


def price_field(price: Any, key: str) -> float | None:
    """A field of a price given as a `config.Price` or as its dict (a stored spec's); None for
    no price or no such field."""
    if price is None:
        return None
    value = price.get(key) if isinstance(price, Mapping) else getattr(price, key, None)
    return None if value is None else float(value)


def dollars_per_m_output(
    models: list[str],
    prices: Mapping[str, Any],
    measure: pd.DataFrame,
    window: float | None,
    output_tokens: int,
) -> tuple[float | None, str | None]:
    """Dollars per million output tokens answered, or why it is unknown: the hardware's price
    per hour (`per_hour`, summed over the configuration's models) over the measured window, plus
    the per-token prices of the measured requests' calls, divided by the output tokens of the
    answered requests. With per_hour alone that is per_hour / 3600 / (output tokens/s) * 1e6.

    Under load the hardware's hour is shared by the requests served in it. Outside load runs
    (`records.outcome_record`), per_hour is charged per second of each request's own latency,
    which bills the same hour once per request in flight."""
    if not models:
        return None, "the configuration's models are not known"
    unpriced = [m for m in models if m not in prices]
    if unpriced:
        return None, f"no price in the spec for {', '.join(unpriced)}"
    if window is None or not output_tokens:
        return None, "no output tokens answered in the measured window"
    dollars = sum(price_field(prices[m], "per_hour") or 0.0 for m in models) * window / 3600
    for call in record_calls(measure):
        model = str(call.get("model"))
        if model not in prices:
            return None, f"no price in the spec for {model}"
        per_input = price_field(prices[model], "input") or 0.0
        per_output = price_field(prices[model], "output") or 0.0
        if per_input and call.get("input_tokens") is None and not call.get("error"):
            # (a failed call reports none, and is charged its share of the hour alone)
            return None, f"input tokens not reported by {model}, so not priced"
        dollars += per_input * (call.get("input_tokens") or 0) / 1e6
        dollars += per_output * (call.get("output_tokens") or 0) / 1e6
    return dollars / output_tokens * 1e6, None


def _energy(measure: pd.DataFrame, output_tokens: int) -> dict[str, Any]:
    """Energy per measured request (failed ones included: they were paid for) and per output
    token answered, where every measured request was metered; else the reason."""
    if not len(measure):
        return {
            "energy_j_per_query": None,
            "energy_j_per_output_token": None,
            "energy_source": None,
            "energy_missing": "no measured requests",
        }
    cost = mean_cost(measure, COST_AXES["energy"], measure)
    per_token = None
    if cost.value is not None and output_tokens:
        per_token = float(measure["energy_j"].sum()) / output_tokens
    return {
        "energy_j_per_query": cost.value,
        "energy_j_per_output_token": per_token,
        "energy_source": energy_meters(measure) if cost.value is not None else None,
        "energy_missing": cost.missing,
    }


def _asked_lengths(done: pd.DataFrame) -> dict[str, int]:
    """Of the answers that asked each call for an exact length (synthetic data:
    `extra.asked_output_tokens`, sent with ignore_eos and min_tokens), how many had a call end
    before its length (finish "stop": a server that ignored them, an in-process model at its
    end of sequence; a call asked for its length ends at it, "length", or hands the answer over,
    "switch"); and of every answer, how many were counted in stream chunks (a server that sent
    no usage: a chunk may hold several tokens, which says nothing of a short answer). Call by
    call: a vote's two draws of half the length each added up to the length asked, and a
    switch's models each write a share of it."""
    asked = extra_field(done, "asked_output_tokens")
    chunked = counted_in_chunks(done)
    n_asked = shorter = 0
    for length, calls, in_chunks in zip(asked, done["calls"], chunked, strict=True):
        if pd.isna(length):  # not asked (None, or NaN beside asked ones)
            continue
        n_asked += 1
        answered = [c for c in calls_of(calls) if c.get("error") is None]
        if not in_chunks and any(c.get("finish_reason") == "stop" for c in answered):
            shorter += 1
    return {
        "n_asked_length": n_asked,
        "n_shorter_than_asked": shorter,
        "n_counted_in_chunks": int(chunked.sum()),
    }


def point_stats(
    config: str,
    load_point: str,
    spec: Mapping[str, Any] | None,
    records: pd.DataFrame,
    slo: Slo | None,
    prices: Mapping[str, Any],
    models: list[str],
) -> dict[str, Any]:
    """The statistics of one configuration at one load point, from its records (every phase:
    warm-up and cool-down are counted, and left out of everything else). `models`: the aliases
    the configuration uses, for its price per hour.

    Requests: completed (no error), cancelled (`cancelled`), failed (the other errors).
    Rates and throughputs are per second of the measured window (`measure_window`); latency
    distributions are over the completed requests, each latency over those that have it; queue
    delay over every measured request."""
    phase = records["phase"].fillna("measure")  # a load record stored without one: measured
    measure = records[phase == "measure"]
    stopped = cancelled(measure)
    failed = measure["error"].notna() & ~stopped
    done = measure[measure["error"].isna()]
    window = measure_window(measure)

    def per_s(count: float) -> float | None:
        return None if window is None else count / window

    output_tokens = int(done["output_tokens"].sum())
    input_tokens = done["input_tokens"]
    row: dict[str, Any] = {
        "config": config,
        "load_point": load_point,
        **target(spec, load_point),
        "n_warmup": int((phase == "warmup").sum()),
        "n_measure": len(measure),
        "n_cooldown": int((phase == "cooldown").sum()),
        "completed": len(done),
        "failed": int(failed.sum()),
        "cancelled": int(stopped.sum()),
        "error_rate": float(failed.sum()) / len(measure) if len(measure) else None,
        "window_s": window,
        "achieved_rate": per_s(len(done)),
        "served_rate": served_rate(records),
        "pace": pace(measure),
        "concurrency": per_s(float(measure["e2e_s"].where(measure["sent_s"].notna()).sum())),
        "output_tps": per_s(output_tokens),
        "total_tps": (
            None if input_tokens.isna().any() else per_s(output_tokens + int(input_tokens.sum()))
        ),
        **_asked_lengths(done),
    }
    for name in LATENCIES:
        row.update(_distribution(name, _latency(done, name)))
        row[f"n_{name}"] = int(_latency(done, name).notna().sum())
    queue = measure["queue_delay_s"].astype(float).dropna()
    row["queue_delay_s"] = float(queue.mean()) if len(queue) else None
    row["queue_delay_s_p50"] = percentiles(queue)["p50"]
    row["queue_delay_s_p99"] = percentiles(queue)["p99"]

    row["slo"] = None if slo is None else str(slo)
    row.update(goodput=None, correct_goodput=None, slo_attainment=None, n_slo_met=None)
    row["n_correct_slo_met"] = None
    if slo is not None:
        met = slo_met(measure, slo)
        row["n_slo_met"] = int(met.sum())
        row["goodput"] = per_s(int(met.sum()))
        answered = len(done) + int(failed.sum())  # cancelled ones say nothing of the service
        row["slo_attainment"] = int(met.sum()) / answered if answered else None
        if measure["score"].notna().any():
            correct = met & (measure["score"].astype(float) >= CORRECT)
            row["n_correct_slo_met"] = int(correct.sum())
            row["correct_goodput"] = per_s(int(correct.sum()))

    row.update(_energy(measure, output_tokens))
    dollars, dollars_missing = dollars_per_m_output(models, prices, measure, window, output_tokens)
    row["usd_per_m_output_tokens"] = dollars
    row["usd_missing"] = dollars_missing
    reason = saturation(row["profile"], row["pace"], measure)
    row["saturated"] = reason is not None
    row["saturation_reason"] = reason
    return row


def load_stats(
    records: pd.DataFrame,
    load_points: list[dict[str, Any]],
    slo: Slo | None,
    prices: Mapping[str, Any],
    configs: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row of `point_stats` per (configuration, load point) of a load run, in the order the
    load points started (`Store.load_points()`), then any whose records have no stored load point.
    `records`: `Store.records()`, profile records (load point '') left out here. `prices`: alias
    -> `config.Price` or its dict. `configs` (`Store.configs()`) gives each configuration's models
    for its price per hour; without it, the models its records called."""
    loaded = records[records["load_point"].fillna("") != ""]
    names = {c["config_id"]: c["name"] for c in configs or []}
    names.update(zip(loaded["config_id"], loaded["config"], strict=True))
    models = {c["config_id"]: list(c["spec"].get("models", {})) for c in configs or []}
    refs_of = {c["config_id"]: list(c["spec"].get("models", {}).values()) for c in configs or []}
    groups = dict(tuple(loaded.groupby(["config_id", "load_point"], sort=False)))
    specs = {(p["config_id"], p["load_point"]): p for p in load_points}
    rows = []
    for key in dict.fromkeys([*specs, *groups]):
        config_id, load_point = key
        df = groups.get(key, loaded.iloc[0:0])
        point = specs.get(key)
        row = point_stats(
            names.get(config_id, config_id),
            load_point,
            None if point is None else point["spec"],
            df,
            slo,
            prices,
            models.get(config_id) or sorted(called_models(df)),
        )
        status = None if point is None else point["status"]
        refs = refs_of.get(config_id, [])
        rows.append(
            {
                "config": row.pop("config"),
                "load_point": row.pop("load_point"),
                "status": status,
                **row,
                # Models computed in this process (not behind a server): one request at a time.
                "in_process": any(not ref.startswith("openai:") for ref in refs),
            }
        )
    return rows


# Fields of a `load_stats` row that count (requests, requests in flight), besides the n_ ones.
COUNTS = ("target_concurrency", "max_concurrency", "completed", "failed", "cancelled")


def load_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """`load_stats` rows as one table (JSON, CSV, parquet) whose counts stay whole numbers:
    pandas reads a column of numbers and nulls (a rate point's target concurrency) as floats,
    and the JSON then said 1.0 requests in flight."""
    frame = pd.DataFrame(rows)
    counts = [c for c in frame.columns if c in COUNTS or c.startswith("n_")]
    return frame.astype(dict.fromkeys(counts, "Int64"))


def run_load_stats(
    records: pd.DataFrame,
    points: list[dict[str, Any]],
    configs: list[dict[str, Any]],
    spec: dict[str, Any],
    slo: Slo | None = None,
    where: str = "the run",
) -> tuple[list[dict[str, Any]], str | None]:
    """`load_stats` of a stored run (its load-point records, load points, configurations and
    spec): goodput under `slo`, else under the SLO the run was measured under (its spec's
    `load.slo`), and where that SLO came from ('--slo', "the run's spec", or None)."""
    source = "--slo" if slo is not None else None
    stored = (spec.get("load") or {}).get("slo")
    if slo is None and stored:
        slo, source = parse_slo(stored, f"{where}: the run's load.slo"), "the run's spec"
    return load_stats(records, points, slo, spec.get("prices") or {}, configs), source
