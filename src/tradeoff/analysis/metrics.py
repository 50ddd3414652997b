"""Per-configuration summaries of records, with the definitions of DESIGN.md: one aggregation that
`tradeoff report` shows and `tradeoff frontier` is drawn from, so the two always agree.

The rule for failed records (error set): they score 0 and count in every mean of what a query
costs (energy, latency, tokens, FLOPs, dollars): they were paid for. Where a failed record has no
measurement on a cost axis (no FLOPs are counted for a failed call), the configuration's cost on
that axis is unknown and says why (`analysis.costs`), never a mean over the records that have
one. What a failed request may never have (a first token, so TTFT, inter-token latency and
decode tok/s) is a mean over the records that have it, with their count beside it. The
percentiles of latency, TTFT, ITL and TPOT are over the same records as their means
(`analysis.load.percentiles`: numpy's, linear interpolation). Roofline efficiency is the
engine's, over the successful records' calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tradeoff.analysis.costs import (
    COST_AXES,
    FACT_COLUMNS,
    AxisCost,
    call_fact,
    counted_in_chunks,
    energy_meters,
    failed,
    imported,
    mean_cost,
    with_facts,
)
from tradeoff.analysis.load import latency_percentiles, tpot
from tradeoff.types import DISCONNECTED

Z95 = 1.959963984540054

# The columns of records that `summaries` reads (beside `config`): a run read with
# `Store.records(columns=SUMMARY_COLUMNS)` is summarized as one read whole, and fast.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "task",
    "item_id",
    "sample",
    "score",
    "error",
    "input_tokens",
    "output_tokens",
    "ttft_s",
    "e2e_s",
    "itl_s",
    "decode_tps",
    "energy_j",
    "energy_source",
    "energy_missing",
    "flops",
    "peak_rss_bytes",
    "cost_usd",
    *FACT_COLUMNS,
)


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at no success (or all) the bound is 0 (or 1) exactly, not the rounding of centre - half
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return (low, high)


# Values the bootstraps resample at once: a few MB at a time however many records (all 2,000
# resamples at once over 100,000 fractional scores took 3.2 GB).
BOOTSTRAP_VALUES = 1_000_000


def _percentile_bootstrap(
    data: tuple[np.ndarray, ...], statistic: Any, resamples: int, seed: int
) -> tuple[float, float]:
    """scipy's percentile bootstrap 95% interval of `statistic` over `data`'s rows resampled
    together (paired)."""
    from scipy import stats

    if len(data[0]) < 2:  # scipy wants two observations; one resamples to itself
        value = float(statistic(*data, axis=-1))
        return (value, value)
    batch = max(1, BOOTSTRAP_VALUES // len(data[0]))
    found = stats.bootstrap(
        data, statistic, n_resamples=resamples, batch=batch, vectorized=True, paired=True,
        method="percentile", rng=np.random.default_rng(seed),
    ).confidence_interval  # fmt: skip
    return (float(found.low), float(found.high))


def bootstrap_interval(
    scores: np.ndarray, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean."""
    if len(scores) == 0:
        return (math.nan, math.nan)
    return _percentile_bootstrap((np.asarray(scores, dtype=float),), np.mean, resamples, seed)


def item_bootstrap_interval(
    scores: np.ndarray, items: np.ndarray, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean score, resampling items (each with all its
    records: the samples of one item are not independent queries), as the ratio of the resampled
    items' score sums to their record counts."""
    codes, _ = pd.factorize(items)
    sums = np.bincount(codes, weights=scores)
    counts = np.bincount(codes).astype(float)

    def ratio(s: np.ndarray, c: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.asarray(s.sum(axis=axis) / c.sum(axis=axis))

    return _percentile_bootstrap((sums, counts), ratio, resamples, seed)


def accuracy_interval(
    scores: np.ndarray, items: np.ndarray | None = None
) -> tuple[float, float, float]:
    """Mean score and its 95% interval: Wilson for 0/1 scores, bootstrap otherwise; where
    `items` (each score's item) holds an item more than once (`samples` above 1), a bootstrap
    over items (`item_bootstrap_interval`): Wilson over every record counted each sample as a
    query of its own, too narrow for what the items support. Scores all 0 or all 1 leave a
    bootstrap no spread (3 items all wrong read 0.000–0.000 with 2 samples, 0.000–0.561 with
    one): theirs is Wilson's over the items, as if each were asked once."""
    if len(scores) == 0:
        return (math.nan, math.nan, math.nan)
    mean = math.fsum(scores) / len(scores)  # the same scores in any order: the same mean
    binary = bool(np.isin(scores, [0.0, 1.0]).all())
    # Scores all alike leave a bootstrap nothing to resample (an interval of no width): as many
    # right-or-wrong answers of that mean, the most a score in [0, 1] can vary, give Wilson's.
    alike = bool(np.ptp(scores) == 0)
    if items is not None and (k := len(pd.unique(items))) < len(items):
        if alike:
            low, high = wilson_interval(mean * k, k)
        else:
            low, high = item_bootstrap_interval(scores, items)
    elif binary or alike:
        low, high = wilson_interval(float(scores.sum()), len(scores))
    else:
        low, high = bootstrap_interval(scores)
    return (mean, low, high)


def record_items(df: pd.DataFrame) -> np.ndarray | None:
    """Each record's item (task and id), for an interval over items (`accuracy_interval`); None
    where every record is an item's first sample (none repeats one)."""
    if not (df["sample"] > 0).any():
        return None
    return (df["task"].astype(str) + "\x1f" + df["item_id"].astype(str)).to_numpy()


def scored(df: pd.DataFrame) -> pd.Series:
    """Which records count toward an accuracy: those of the tasks with reference answers (a
    task any of whose records has a score). A task without (synthetic load, served traffic)
    has none: beside a scored task, its records read as wrong answers."""
    return df["task"].isin(df.loc[df["score"].notna(), "task"].unique())


def record_scores(df: pd.DataFrame) -> np.ndarray:
    """The scores of records that `scored` counts: a failed record scores 0 (it was paid for,
    and gave no answer)."""
    failed = df["error"].notna()
    return df["score"].fillna(0.0).where(~failed, 0.0).to_numpy(dtype=float)


def accuracy_of(df: pd.DataFrame) -> tuple[float, float, float]:
    """The accuracy of records `df` and its 95% interval (`accuracy_interval`), over those
    `scored` counts; NaN where none is."""
    counted = df[scored(df)]
    return accuracy_interval(record_scores(counted), record_items(counted))


def roofline(records: pd.DataFrame) -> tuple[float | None, float | None]:
    """(mean roofline time per query in s, efficiency = roofline time / measured engine time),
    over the records' engine calls; (None, None) unless every call has a roofline time."""
    rooflines = call_fact(records, "call_rooflines")
    if rooflines.isna().any():
        return None, None
    # each call's roofline_s and e2e_s in turn, every record's in order: summed one by one
    found = ",".join(text for text in rooflines if text)
    times = [float(t) for t in found.split(",")] if found else []
    total_roofline = total_measured = 0.0
    for roofline_s, e2e_s in zip(times[::2], times[1::2], strict=True):
        total_roofline += roofline_s
        total_measured += e2e_s
    n = len(rooflines)
    if not n or total_measured <= 0:
        return None, None
    return total_roofline / n, total_roofline / total_measured


def _mean(series: pd.Series) -> float | None:
    values = series.dropna()
    return float(values.mean()) if len(values) else None


@dataclass
class Summary:
    """One configuration's records, aggregated once (the rule is in the module's docstring)."""

    config: str
    n: int
    n_scored: int  # the records accuracy and its interval are over (`scored`)
    accuracy: float
    accuracy_low: float
    accuracy_high: float
    errors: int  # records that failed (a client that went away is not counted: `disconnected`)
    disconnected: int  # served requests whose client went away before the answer (HTTP 499)
    costs: dict[str, AxisCost]  # every cost axis: the mean per query, or why it is unknown
    energy_source: str | None  # the meters, e.g. "rapl" or "nvml"
    power_w: float | None  # the queries' energy / their engine calls' time
    input_tokens: float | None  # mean over the n_input_tokens queries that reported them
    n_input_tokens: int
    output_tokens: float | None  # mean over every query (None: imported outcomes count none)
    # TTFT, ITL, TPOT and decode tok/s: over the n_first_token queries that produced a first
    # token (ITL and TPOT: of those, the ones of two output tokens or more; TPOT: not released
    # whole, `analysis.load.tpot`)
    ttft_s: float | None
    itl_s: float | None
    tpot_s: float | None
    decode_tps: float | None
    n_first_token: int
    n_counted_in_chunks: int  # answers whose output tokens were counted in stream chunks
    # 'ttft_s_p50' ... 'e2e_s_p999' (`analysis.load.latency_percentiles`): e2e over every query
    # (its mean is costs["latency"]), the others over the queries that have them
    percentiles: dict[str, float | None]
    roofline_s: float | None  # analytic roofline time per successful query
    roofline_eff: float | None  # roofline time / measured engine time
    peak_rss_mb: float | None

    def _percentiles(self, latency: str) -> dict[str, float | None]:
        return {k: v for k, v in self.percentiles.items() if k.startswith(latency + "_p")}

    def row(self) -> dict[str, Any]:
        """The summary as `tradeoff report` writes it: flat, one value per column."""
        energy, latency = self.costs["energy"], self.costs["latency"]
        flops, dollars, given = self.costs["flops"], self.costs["dollars"], self.costs["given"]
        return {
            "config": self.config,
            "n": self.n,
            "n_scored": self.n_scored,
            "accuracy": self.accuracy,
            "accuracy_low": self.accuracy_low,
            "accuracy_high": self.accuracy_high,
            "input_tokens": self.input_tokens,
            "n_input_tokens": self.n_input_tokens,
            "output_tokens": self.output_tokens,
            "ttft_s": self.ttft_s,
            **self._percentiles("ttft_s"),
            "itl_s": self.itl_s,
            **self._percentiles("itl_s"),
            "tpot_s": self.tpot_s,
            **self._percentiles("tpot_s"),
            "decode_tps": self.decode_tps,
            "n_first_token": self.n_first_token,
            "n_counted_in_chunks": self.n_counted_in_chunks,
            "e2e_s": latency.value,
            "e2e_missing": latency.missing,
            **self._percentiles("e2e_s"),
            "energy_j": energy.value,
            "energy_source": self.energy_source if energy.value is not None else None,
            "energy_missing": energy.missing,
            "gflops": flops.value,
            "gflops_missing": flops.missing,
            "cost_usd": dollars.value,
            "cost_usd_missing": dollars.missing,
            "given_cost": given.value,
            "given_cost_unit": given.unit if given.value is not None else None,
            "roofline_s": self.roofline_s,
            "roofline_eff": self.roofline_eff,
            "peak_rss_mb": self.peak_rss_mb,
            "errors": self.errors,
            "disconnected": self.disconnected,
        }


def _power(df: pd.DataFrame) -> float | None:
    """Mean power (W): the queries' energy over the time their engine calls took (the time the
    energy was measured over; wall-clock time counts waits for the engine, which under load read
    the power low). Weighed by time: a query refused in a millisecond, read as 0 J or one whole
    RAPL update, counts for its millisecond, not as much as a long answer."""
    seconds = pd.to_numeric(call_fact(df, "call_seconds"), errors="coerce").astype(float)
    timed = seconds > 0
    if not timed.any() or df["energy_j"].isna().any():
        return None
    return float(df.loc[timed, "energy_j"].sum() / seconds[timed].sum())


def summarize_config(name: str, df: pd.DataFrame, run: pd.DataFrame) -> Summary:
    """The summary of one configuration's records `df`; `run` holds every record of the run."""
    acc, low, high = accuracy_of(df)
    roofline_s, roofline_eff = roofline(df[df["error"].isna()])
    return Summary(
        config=name,
        n=int(len(df)),
        n_scored=int(scored(df).sum()),
        accuracy=acc,
        accuracy_low=low,
        accuracy_high=high,
        errors=int(failed(df).sum()),
        disconnected=int((df["error"] == DISCONNECTED).sum()),
        costs={key: mean_cost(df, axis, run) for key, axis in COST_AXES.items()},
        energy_source=energy_meters(df),
        power_w=_power(df),
        input_tokens=_mean(df["input_tokens"]),
        n_input_tokens=int(df["input_tokens"].notna().sum()),
        output_tokens=_mean(df["output_tokens"].where(~imported(df))),
        ttft_s=_mean(df["ttft_s"]),
        itl_s=_mean(df["itl_s"]),
        tpot_s=_mean(tpot(df)),
        decode_tps=_mean(df["decode_tps"]),
        n_first_token=int(df["ttft_s"].notna().sum()),
        n_counted_in_chunks=int((counted_in_chunks(df) & df["error"].isna()).sum()),  # answered
        percentiles=latency_percentiles(df),
        roofline_s=roofline_s,
        roofline_eff=roofline_eff,
        peak_rss_mb=(
            float(df["peak_rss_bytes"].dropna().max()) / 1e6  # MB as named (it was MiB)
            if df["peak_rss_bytes"].notna().any()
            else None
        ),
    )


def summaries(records: pd.DataFrame, config_order: list[str] | None = None) -> list[Summary]:
    """One summary per configuration, in `config_order` (else first-seen order); a configuration
    without records has none."""
    names = config_order or list(dict.fromkeys(records["config"]))
    records = with_facts(records)
    groups = dict(tuple(records.groupby("config", sort=False))) if len(records) else {}
    return [summarize_config(name, groups[name], records) for name in names if name in groups]


def summarize(records: pd.DataFrame, config_order: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per configuration, as `tradeoff report` writes it: accuracy with its interval,
    tokens, latency, energy, FLOPs, dollars."""
    return [s.row() for s in summaries(records, config_order)]
