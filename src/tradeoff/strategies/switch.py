"""`switch`: token-level entropy-adaptive decoding between a small and a large model (EAD).

The small model generates. Before each token, the entropy of the generating model's next-token
distribution joins a rolling window of the last `window` entropies; when the window's mean exceeds
`threshold`, the large model generates (this token included) until the mean falls below
`threshold_low`, then the small model takes over again. Models hand over at the text level, so
they may have different tokenizers: each keeps its own context and KV cache and catches up on the
text it has not seen with one batched prefill, counted as that model's cost.

Runs on in-process models only (llama.cpp or torch: it needs every next-token distribution).
Energy by model: with a fine-grained counter, its difference across each model's turns; with a
stepped one (NVML), each model's passes are a request in the energy account, split by cost.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from tradeoff.engines.emit import StopHoldback, TextSink
from tradeoff.engines.llamacpp import entropy_of
from tradeoff.engines.stream import TokenStream
from tradeoff.meters.flops import eval_flops
from tradeoff.meters.roofline import Peaks, eval_cost
from tradeoff.strategies.context import StrategyContext
from tradeoff.types import Call, Generation, Item, Outcome, Request


def _choose(logp: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    if temperature <= 0:
        return int(np.argmax(logp))
    scaled = logp / temperature
    p = np.exp(scaled - scaled.max())
    return int(rng.choice(len(p), p=p / p.sum()))


def _call(
    alias: str,
    stream: TokenStream,
    text: bytes,
    t_start: float,
    t_first: float | None,
    energy: float | None,
    energy_missing: str | None,
    source: str | None,
    peaks: Peaks | None = None,
) -> Call:
    engine = stream.engine
    shape = engine.info.shape
    flops = sum(eval_flops(shape, s, n) for s, n in stream.evals) if shape else None
    moved = roofline = None
    if shape is not None and shape.weight_bytes is not None:
        costs = [eval_cost(shape, s, n) for s, n in stream.evals]
        moved = sum(c.bytes for c in costs)
        if peaks is not None:
            roofline = sum(c.roofline_s(peaks) for c in costs)
    gen = Generation(
        text=text.decode("utf-8", errors="replace"),
        input_tokens=stream.prompt_tokens + stream.catchup_tokens,
        output_tokens=stream.generated,
        t_start=t_start,
        t_first=t_first,
        t_end=t_start + stream.busy_s,  # time this model computed, not wall time
        finish_reason="stop",
        mode=stream.request.mode,
    )
    return Call(alias, gen, energy, source, energy_missing, flops, moved, roofline)


def run_switch_sync(
    small: TokenStream,
    large: TokenStream,
    *,
    max_tokens: int,
    threshold: float,
    threshold_low: float,
    window: int,
    temperature: float,
    seed: int,
    read_energy: Callable[[], float] | None = None,
    on_text: TextSink | None = None,
) -> tuple[bytes, dict[str, object], float | None, dict[str, float]]:
    """The decoding loop. Returns (answer bytes, stats, first-token time, energy by model).
    `on_text` receives the answer's text as it is committed."""
    rng = np.random.default_rng(seed)
    answer = b""
    pieces: dict[int, bytes] = {0: b"", 1: b""}
    streams = (small, large)
    entropies: deque[float] = deque(maxlen=window)
    current, switches, by_model = 0, 0, [0, 0]
    t_first: float | None = None
    energy = [0.0, 0.0]
    read = read_energy
    mark = read() if read else None
    finish = "length"
    emit = StopHoldback(on_text, small.request.stop) if on_text else None
    while by_model[0] + by_model[1] < max_tokens:
        stream = streams[current]
        logp = stream.next_distribution(answer)
        entropies.append(entropy_of(logp))
        mean = sum(entropies) / len(entropies)
        if current == 0 and mean > threshold:
            current, switches = 1, switches + 1  # the large model produces this token
            if read and mark is not None:
                now = read()
                energy[0] += now - mark
                mark = now
            stream = streams[current]
            logp = stream.next_distribution(answer)
            entropies[-1] = entropy_of(logp)
        token = _choose(logp, temperature, rng)
        if stream.engine.is_end(token):
            finish = "stop"
            break
        piece = stream.take(token)
        if t_first is None:
            t_first = time.perf_counter()
        answer += piece
        pieces[current] += piece
        by_model[current] += 1
        stops = stream.request.stop
        if stops and any(s.encode() in answer for s in stops):
            text = answer.decode("utf-8", errors="ignore")
            cut = min(text.index(s) for s in stops if s in text)
            answer = text[:cut].encode("utf-8")
            finish = "stop"
            break
        if emit:
            emit.update(answer.decode("utf-8", errors="ignore"))
        mean = sum(entropies) / len(entropies)
        if current == 1 and mean < threshold_low:
            current, switches = 0, switches + 1
            if read and mark is not None:
                now = read()
                energy[1] += now - mark
                mark = now
    if read and mark is not None:
        energy[current] += read() - mark
    if emit:
        emit.finish(answer.decode("utf-8", errors="replace"))
    stats: dict[str, object] = {
        "tokens_small": by_model[0],
        "tokens_large": by_model[1],
        "large_token_share": by_model[1] / max(by_model[0] + by_model[1], 1),
        "switches": switches,
        "catchup_tokens_small": small.catchup_tokens,
        "catchup_tokens_large": large.catchup_tokens,
        "finish_reason": finish,
        "text_small": pieces[0].decode("utf-8", errors="replace"),
        "text_large": pieces[1].decode("utf-8", errors="replace"),
    }
    return answer, stats, t_first, {"small": energy[0], "large": energy[1]}


async def run_switch(ctx: StrategyContext, item: Item, sample: int) -> Outcome:
    small_alias, large_alias = ctx.config.aliases
    small_engine: Any = ctx.meter.engines[small_alias]
    large_engine: Any = ctx.meter.engines[large_alias]
    if not hasattr(small_engine, "token_stream") or not hasattr(large_engine, "token_stream"):
        raise TypeError("switch needs in-process models (llama.cpp or torch)")
    p = ctx.params
    requests: list[Request] = [ctx.request_for(a, item, sample) for a in (small_alias, large_alias)]
    small: TokenStream = small_engine.token_stream(requests[0])
    large: TokenStream = large_engine.token_stream(requests[1])
    meter = ctx.meter
    account = meter.account
    rids: list[str] = []
    if account is not None:
        for stream in (small, large):
            rids.append(account.begin())
            stream.on_pass = account.sink(rids[-1], meter.pass_weight(stream.engine.info))
    read = meter.energy.read_j if meter.energy and account is None else None
    async with meter.inproc_lock:
        t_start = time.perf_counter()  # not before: waiting for another request is not latency
        answer, stats, t_first, energy = await small_engine.run_sync(
            lambda: run_switch_sync(
                small,
                large,
                max_tokens=requests[0].max_tokens,
                threshold=p["threshold"],
                threshold_low=p["threshold_low"],
                window=p["window"],
                temperature=requests[0].temperature,
                seed=requests[0].seed or 0,
                read_energy=read,
                on_text=ctx.on_text,
            )
        )
    source = meter.energy.source if meter.energy else None
    missing: dict[str, str | None] = {k: None if meter.energy else meter.energy_missing
                                      for k in ("small", "large")}  # fmt: skip
    usage: dict[str, tuple[float | None, int | None]] = {}
    if account is not None:
        for rid in rids:
            account.end(rid)
        for key, rid in zip(("small", "large"), rids):
            settled = await account.settle(rid)
            energy[key], missing[key] = settled.energy_j or 0.0, settled.missing
            usage[key] = (settled.mean_power_w, settled.peak_memory_bytes)
        for key, other, stream in (("small", "large", small), ("large", "small", large)):
            if not stream.started:  # a model never asked has no call: its share is the other's
                energy[other] += energy[key]
    calls = []
    for alias, stream, key in ((small_alias, small, "small"), (large_alias, large, "large")):
        if not stream.started:
            continue  # never asked for a token: no cost
        text = str(stats[f"text_{key}"]).encode()
        calls.append(
            call := _call(
                alias,
                stream,
                text,
                t_start,
                t_first if key == "small" else None,
                energy[key] if (read or account) and missing[key] is None else None,
                missing[key],
                source if missing[key] is None else None,
                meter.peaks_for(stream.engine.info),
            )
        )
        if key in usage:
            call.mean_power_w, call.device_memory_bytes = usage[key]
    return Outcome(answer.decode("utf-8", errors="replace"), calls, stats, t_first=t_first)
