"""Per-configuration summaries of records, with the definitions of DESIGN.md."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_interval(
    scores: np.ndarray, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean."""
    if len(scores) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = rng.choice(scores, size=(resamples, len(scores)), replace=True).mean(axis=1)
    return (float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)))


def accuracy_interval(scores: np.ndarray) -> tuple[float, float, float]:
    """Mean score and its 95% interval: Wilson for 0/1 scores, bootstrap otherwise."""
    if len(scores) == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(scores.mean())
    if np.isin(scores, [0.0, 1.0]).all():
        low, high = wilson_interval(float(scores.sum()), len(scores))
    else:
        low, high = bootstrap_interval(scores)
    return (mean, low, high)


def record_scores(df: pd.DataFrame) -> np.ndarray:
    """The scores behind a configuration's accuracy: a failed record scores 0 (it was paid for,
    and gave no answer). Records with no reference answer (served traffic) have no score; when
    none of the records has one, there is no accuracy: an empty array."""
    if df["score"].isna().all():
        return np.array([], dtype=float)
    failed = df["error"].notna()
    return df["score"].fillna(0.0).where(~failed, 0.0).to_numpy(dtype=float)


def accuracy_text(acc: float, low: float, high: float) -> str:
    """'0.850 [0.640, 0.948]', or why there is none."""
    if math.isnan(acc):
        return "n/a (unscored)"
    return f"{acc:.3f} [{low:.3f}, {high:.3f}]"


def roofline(records: pd.DataFrame) -> tuple[float | None, float | None]:
    """(mean roofline time per query in s, efficiency = roofline time / measured engine time),
    over the records' engine calls; (None, None) unless every call has a roofline time."""
    total_roofline = total_measured = 0.0
    n = 0
    for calls in records["calls"]:
        for call in json.loads(calls) if isinstance(calls, str) else calls:
            if call.get("roofline_s") is None or call.get("e2e_s") is None:
                return None, None
            total_roofline += call["roofline_s"]
            total_measured += call["e2e_s"]
        n += 1
    if not n or total_measured <= 0:
        return None, None
    return total_roofline / n, total_roofline / total_measured


def _mean(series: pd.Series) -> float | None:
    values = series.dropna()
    return float(values.mean()) if len(values) else None


def summarize(records: pd.DataFrame, config_order: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per configuration: accuracy with its interval, tokens, latency, energy, FLOPs."""
    rows = []
    names = config_order or list(dict.fromkeys(records["config"]))
    for name in names:
        df = records[records["config"] == name]
        if df.empty:
            continue
        acc, low, high = accuracy_interval(record_scores(df))
        ok = df[df["error"].isna()]
        energy = ok["energy_j"].dropna()
        energy_missing = None
        if len(energy) < len(ok):
            reasons = ok["energy_missing"].dropna()
            energy_missing = str(reasons.iloc[0]) if len(reasons) else "not measured"
        sources = ok["energy_source"].dropna().unique()
        energy_source = str(sources[0]) if len(sources) else None
        flops = ok["flops"].dropna()
        cost = ok["cost_usd"].dropna()
        roofline_s, roofline_eff = roofline(ok)
        rows.append(
            {
                "config": name,
                "n": int(len(df)),
                "accuracy": acc,
                "accuracy_low": low,
                "accuracy_high": high,
                "input_tokens": _mean(ok["input_tokens"]),
                "output_tokens": _mean(ok["output_tokens"]),
                "ttft_s": _mean(ok["ttft_s"]),
                "itl_s": _mean(ok["itl_s"]),
                "e2e_s": _mean(ok["e2e_s"]),
                "decode_tps": _mean(ok["decode_tps"]),
                "energy_j": float(energy.mean())
                if len(energy) and energy_missing is None
                else None,
                "energy_source": energy_source,
                "energy_missing": energy_missing,
                "gflops": float(flops.mean()) / 1e9 if len(flops) == len(ok) and len(ok) else None,
                "cost_usd": float(cost.mean()) if len(cost) and len(cost) == len(ok) else None,
                "roofline_s": roofline_s,
                "roofline_eff": roofline_eff,
                "peak_rss_mb": (
                    float(df["peak_rss_bytes"].dropna().max()) / 2**20
                    if df["peak_rss_bytes"].notna().any()
                    else None
                ),
                "errors": int(df["error"].notna().sum()),
            }
        )
    return rows
