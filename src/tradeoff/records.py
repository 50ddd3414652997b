"""Records built from outcomes: a strategy's calls summed into the record's tokens, latencies,
energy, FLOPs and money. Profiling and serving build their records here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tradeoff.meters.memory import peak_rss_bytes
from tradeoff.types import Call, Outcome, Record

# Energy a strategy spent itself, outside its engine calls, read from the same counter as its
# calls' (a router's decision: `tradeoff.strategies.route`): part of the record's energy.
OWN_ENERGY = ("decision_j",)


# The key of a record's extra that says its answer was released whole (`Outcome.t_released`:
# `vote`, `cascade`): its tokens reached the caller at once, so it has no time per output token
# (`analysis.load.tpot`).
RELEASED_WHOLE = "released_whole"

# Why a record without calls has no energy.
NO_CALLS = "no engine call to meter: the request ended before any was kept (see its error)"


def energy_fields(outcome: Outcome) -> tuple[float | None, str | None, str | None]:
    """A record's energy from its calls': their sum with what the strategy metered of its own
    work (OWN_ENERGY), the source, or the first call's reason for missing it. Own work whose
    energy is missing while the calls' is measured ran where the calls' counter does not read
    (the CPU, beside NVML's GPUs): the record's energy is the calls', as for the rest of the
    host's work."""
    calls = outcome.calls
    if not calls:
        return None, None, NO_CALLS
    missing = next((c.energy_missing for c in calls if c.energy_j is None), None)
    if missing is not None:
        return None, None, missing
    own = sum(outcome.extra.get(key) or 0.0 for key in OWN_ENERGY)
    return sum(c.energy_j or 0.0 for c in calls) + own, calls[0].energy_source, None


def outcome_record(
    config_id: str,
    task: str,
    item_id: str,
    sample: int,
    outcome: Outcome,
    t0: float,
    t1: float,
    prices: dict[str, Any],
    *,
    score: float | None,
    parsed: str | None,
    waits: Sequence[tuple[float, float]] = (),
) -> Record:
    """The record of one outcome: its calls' tokens, latencies, energy, FLOPs and cost summed.
    `t0` and `t1` (perf_counter) bound the whole strategy call. `waits`: the (from, to) spans
    within them that it waited for the in-process engines behind other requests, its queue delay:
    left out of its TTFT (those before its first token) and e2e."""
    calls = outcome.calls
    gens = [c.generation for c in calls]
    if outcome.t_first is not None:
        # The answer's own timeline (`switch`, whose calls interleave): its ITL is the mean gap
        # between its tokens, whichever model wrote them.
        firsts = [outcome.t_first]
        decode_s = (t1 if outcome.t_last is None else outcome.t_last) - outcome.t_first
        decode_tokens = max(sum(g.output_tokens for g in gens) - 1, 0)
        itls = [decode_s / decode_tokens] if outcome.t_last is not None and decode_tokens else []
    else:
        firsts = [g.t_first for g in gens if g.t_first is not None]
        # decoding is timed where tokens came apart: an answer sent in one chunk has no time
        # after its first token (its few microseconds to the stream's end read 10^5 tok/s)
        timed = [
            (g.t_end - g.t_first, max(g.output_tokens - 1, 0), itl)
            for g in gens
            if g.t_first is not None and (itl := g.itl_s) is not None
        ]
        decode_s = sum(seconds for seconds, _, _ in timed)
        decode_tokens = sum(tokens for _, tokens, _ in timed)
        # the mean gap between the answer's tokens: each call's mean weighted by its gaps (a
        # 2-token continuation weighed as much as the 20 tokens before it)
        itls = (
            [sum(itl * tokens for _, tokens, itl in timed) / decode_tokens]
            if decode_tokens
            else [itl for _, _, itl in timed]
        )
    first = outcome.t_released if outcome.t_released is not None else min(firsts, default=None)
    queued = sum(end - start for start, end in waits)
    energy_j, energy_source, missing = energy_fields(outcome)
    flops = [c.flops for c in calls]
    cost, unpriced = _cost(calls, prices)
    whole = outcome.t_released is not None
    extra = {**outcome.extra, RELEASED_WHOLE: True} if whole else outcome.extra
    return Record(
        config_id=config_id,
        task=task,
        item_id=item_id,
        sample=sample,
        output=outcome.output,
        score=score,
        parsed=parsed,
        error=outcome.error,
        # unknown without calls, as their cost: an upstream dropped before it answered had read it
        input_tokens=(
            None
            if not gens or any(g.input_tokens is None for g in gens)
            else sum(g.input_tokens or 0 for g in gens)
        ),
        output_tokens=sum(g.output_tokens for g in gens),
        ttft_s=(
            None
            if first is None
            else first - t0 - sum(end - start for start, end in waits if end <= first)
        ),
        e2e_s=t1 - t0 - queued,
        itl_s=sum(itls) / len(itls) if itls else None,
        decode_tps=decode_tokens / decode_s if decode_s > 0 and decode_tokens and itls else None,
        energy_j=energy_j,
        energy_source=energy_source,
        energy_missing=missing,
        flops=None if any(f is None for f in flops) or not calls else sum(f or 0.0 for f in flops),
        peak_rss_bytes=peak_rss_bytes(),
        cost_usd=None if unpriced else cost,
        calls=[c.summary() for c in calls],
        # why a query of a priced run has no price, as only here it is known
        extra={**extra, "unpriced": unpriced} if unpriced and prices else extra,
        queue_delay_s=queued if waits else None,
    )


def _cost(calls: list[Call], prices: dict[str, Any]) -> tuple[float, str | None]:
    """The dollars of a query's calls, and why it has none (None where it has)."""
    cost, why = 0.0, [] if calls else ["no engine call was made"]
    for c in calls:
        price, g = prices.get(c.model), c.generation
        if price is None:
            why.append(f"no price in the spec for {c.model}")
            continue
        if g.input_tokens is None and price.input:  # an hourly price needs no token counts
            why.append(
                f"a call of {c.model} failed, and a failure reports no tokens to price"
                if g.error
                else f"input tokens not reported by {c.model}, so not priced"
            )
            continue
        cost += price.input * (g.input_tokens or 0) / 1e6 + price.output * g.output_tokens / 1e6
        if price.per_hour is not None:  # a batch's hour once: each row of it lasts it whole
            cost += price.per_hour * g.e2e_s / c.batch / 3600
    return cost, "; ".join(dict.fromkeys(why)) or None
