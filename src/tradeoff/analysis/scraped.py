"""What the upstream servers said of themselves during each load point (`load.scrape`): requests
running and waiting, and KV-cache use, as each server names them, over the point's time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

# The gauges that tell how loaded a server is, by what they mean, as each server names them
# (the first found in a scrape is used).
GAUGES = {
    "running": (
        "vllm:num_requests_running",
        "sglang:num_running_reqs",
        "tgi_batch_current_size",
        "llamacpp:requests_processing",
        "tradeoff_in_flight",
    ),
    "waiting": (
        "vllm:num_requests_waiting",
        "sglang:num_queue_reqs",
        "tgi_queue_size",
        "llamacpp:requests_deferred",
    ),
    "kv_cache": (
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",
        "sglang:token_usage",
        "llamacpp:kv_cache_usage_ratio",
    ),
}
# How a gauge's label sets in one scrape make the server's figure: requests are counted, so
# summed (over served models, and engines); a KV-cache share is one per engine (vLLM, SGLang with
# data parallelism), so averaged, a share of the whole server's cache if the engines are alike.
AGGREGATE = {"running": "sum", "waiting": "sum", "kv_cache": "mean"}


def _family(series: str) -> str:
    return series.split("{", 1)[0]


def scraped_rows(
    scrapes: pd.DataFrame,
    load_points: list[dict[str, Any]],
    upstreams: Mapping[str, set[str]] | None = None,
) -> list[dict[str, Any]]:
    """Per load point and scraped server: mean and max of each gauge over the scrapes taken
    while the point ran (over a scrape's label sets, e.g. one per served model or engine,
    requests summed and KV-cache shares averaged: AGGREGATE), the number of scrapes and of failed
    ones. Empty when nothing was scraped. `upstreams`: each
    configuration's own servers' scrape URLs (--scrape auto), the only ones of its points;
    without, every server scraped (a URL the user gave speaks for every configuration)."""
    if scrapes.empty:
        return []
    scrapes = scrapes.assign(family=scrapes["series"].fillna("").map(_family))
    out = []
    for point in load_points:
        start, end = point["started_at"], point["ended_at"] or float("inf")
        during = scrapes[(scrapes["t"] >= start) & (scrapes["t"] <= end)]
        if upstreams is not None:  # another configuration's server, idle meanwhile, is not its
            during = during[during["source"].isin(upstreams.get(point["config_id"], set()))]
        for source, rows in during.groupby("source", sort=False):
            row: dict[str, Any] = {
                "config_id": point["config_id"],
                "load_point": point["load_point"],
                "source": source,
                "scrapes": int(rows.loc[rows["error"].isna(), "t"].nunique()),
                "failed": int(rows["error"].notna().sum()),
            }
            for meaning, names in GAUGES.items():
                name = next((n for n in names if (rows["family"] == n).any()), None)
                per_scrape = (
                    None
                    if name is None
                    else rows[rows["family"] == name].groupby("t")["value"].agg(AGGREGATE[meaning])
                )
                row[f"{meaning}_mean"] = None if per_scrape is None else float(per_scrape.mean())
                row[f"{meaning}_max"] = None if per_scrape is None else float(per_scrape.max())
                row[f"{meaning}_metric"] = name
            out.append(row)
    return out
