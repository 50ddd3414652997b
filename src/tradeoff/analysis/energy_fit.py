"""A configuration's energy per query as a line in its output tokens: joules per output token
(the slope) and fixed joules per query (the intercept: prompt, set-up, idle time of the call),
fitted by least squares on the records whose energy was measured."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

MIN_POINTS = 3  # below this, or with one token count only, no line is fitted


@dataclass
class EnergyFit:
    config: str
    n: int  # records with a measured energy and no error
    source: str  # how the energy was measured (the records' energy_source), e.g. "rapl"
    j_per_token: float | None  # slope, J per output token
    j_per_token_low: float | None  # its 95% interval
    j_per_token_high: float | None
    j_fixed: float | None  # intercept, J per query
    r2: float | None
    missing: str | None  # why there is no line


def fit_energy(records: pd.DataFrame, config: str) -> EnergyFit:
    """The line of one configuration's records (those of `config`, measured, not failed)."""
    from scipy import stats

    measured = records[records["energy_j"].notna() & records["error"].isna()]
    tokens = measured["output_tokens"].to_numpy(dtype=float)
    joules = measured["energy_j"].to_numpy(dtype=float)
    sources = measured["energy_source"].dropna().unique()
    source = ", ".join(sorted(str(s) for s in sources)) or "-"
    n = len(measured)
    if n < MIN_POINTS or np.unique(tokens).size < 2:
        metered = int(records["energy_j"].notna().sum())
        if n:
            why = f"{n} measured record(s) over {np.unique(tokens).size} token count(s)"
        elif metered:
            why = f"every record with a measured energy failed ({metered}); the line fits answers"
        else:
            why = "energy not measured"
        return EnergyFit(config, n, source, None, None, None, None, None, why)
    line = stats.linregress(tokens, joules)
    half = float(stats.t.ppf(0.975, n - 2) * line.stderr)
    slope = float(line.slope)
    return EnergyFit(
        config=config,
        n=n,
        source=source,
        j_per_token=slope,
        j_per_token_low=slope - half,
        j_per_token_high=slope + half,
        j_fixed=float(line.intercept),
        r2=float(line.rvalue**2),
        missing=None,
    )
