"""Load profiles: what `tradeoff load --profile` accepts, the load points each one runs, and when
each request of a rate profile is due.

- `synchronous`: one request at a time, the next sent when the last one ends;
- `concurrent:N[,M,...]`: N requests always in flight (one load point per number);
- `constant:R[,...]` and `poisson:R[,...]`: R requests per second, at fixed or exponential gaps
  (seeded), however many are in flight (up to `max_concurrency`: beyond it, requests wait, and
  the wait shows as queue delay);
- `throughput`: as many in flight as `max_concurrency` allows;
- `sweep[:K]`: synchronous and throughput first, then K constant rates spread evenly between the
  two rates they achieved, stopping at the first saturated one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice, takewhile
from typing import Any, Literal

from tradeoff.errors import UserError

Kind = Literal["synchronous", "concurrent", "constant", "poisson", "throughput"]

PROFILE_FORMS = (
    "synchronous, concurrent:N[,M,...], constant:R[,...], poisson:R[,...], throughput, sweep[:K]"
)
SWEEP_POINTS = 5  # constant rates of a sweep between synchronous and throughput, by default
MAX_SWEEP = 100


@dataclass(frozen=True)
class LoadPoint:
    """One operating point a configuration is driven at."""

    kind: Kind
    rate: float | None = None  # requests/s: constant, poisson
    concurrency: int | None = None  # requests in flight: concurrent, throughput (its maximum)

    @property
    def label(self) -> str:
        """How records, tables and `frontier --at` name it: 'constant:10', 'concurrent:4'. A
        rate is written short ('10', '2.53') where that reads back as the same rate, else in
        full: as '1e+06', 1000000.5 and 1000001 were one label, and one point replaced the
        other's."""
        if self.rate is not None:
            short = f"{self.rate:g}"
            whole = short if float(short) == self.rate else repr(self.rate).removesuffix(".0")
            return f"{self.kind}:{whole}"
        if self.kind == "concurrent":
            return f"concurrent:{self.concurrency}"
        return self.kind

    @property
    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.rate is not None:
            out["rate"] = self.rate
        if self.concurrency is not None:
            out["concurrency"] = self.concurrency
        return out

    @property
    def paced(self) -> bool:
        """Sent on a schedule (rate profiles), not as earlier requests end."""
        return self.kind in ("constant", "poisson")


@dataclass(frozen=True)
class Profile:
    """The load points to run, or a sweep of `sweep` rates decided as it goes."""

    points: tuple[LoadPoint, ...]
    sweep: int | None = None


def _whole(text: str) -> bool:
    """Whether `text` is a whole number of at least 1 in ASCII digits ('³' is a digit to
    str.isdigit, not to int; '00' is 0)."""
    return text.isascii() and text.isdigit() and int(text) >= 1


def parse_profile(text: str, max_concurrency: int) -> Profile:
    """`--profile TEXT` as load points; one line naming the valid forms on bad input."""
    kind, _, args = text.strip().partition(":")
    values = [v.strip() for v in args.split(",")] if args else []

    def bad(why: str) -> UserError:
        return UserError(f"--profile {text!r}: {why}; profiles: {PROFILE_FORMS}")

    synchronous = LoadPoint("synchronous")
    throughput = LoadPoint("throughput", concurrency=max_concurrency)
    if kind in ("synchronous", "throughput"):
        if values:
            raise bad(f"{kind} takes no value")
        return Profile((synchronous if kind == "synchronous" else throughput,))
    if kind == "sweep":
        if len(values) > 1 or (values and not _whole(values[0])):
            raise bad("sweep takes the number of rates, a whole number of at least 1")
        if values and int(values[0]) > MAX_SWEEP:
            raise bad(f"sweep takes at most {MAX_SWEEP} rates (each is a load point of its own)")
        return Profile((synchronous, throughput), sweep=int(values[0]) if values else SWEEP_POINTS)
    if kind == "concurrent":
        if not values or not all(_whole(v) for v in values):
            raise bad("concurrent takes whole numbers of requests in flight, e.g. concurrent:1,4")
        return _once(tuple(LoadPoint("concurrent", concurrency=int(v)) for v in values), bad)
    if kind in ("constant", "poisson"):
        rates = []
        for v in values:
            try:
                rate = float(v)
            except ValueError:
                raise bad(f"{v!r} is not a rate in requests per second") from None
            if not math.isfinite(rate):
                raise bad(f"{v!r} is no finite number of requests per second (e.g. {kind}:10)")
            if rate <= 0:
                raise bad(f"a rate must be above 0 requests per second (got {v})")
            rates.append(rate)
        if not rates:
            raise bad(f"{kind} takes a rate in requests per second, e.g. {kind}:10")
        return _once(tuple(LoadPoint(kind, rate=r) for r in rates), bad)  # type: ignore[arg-type]
    raise bad(f"{kind!r} is not a profile")


def _once(points: tuple[LoadPoint, ...], bad: Callable[[str], UserError]) -> Profile:
    """`points`, each given once: a load point is stored under its label, and one run twice
    was measured again over the first."""
    seen: set[str] = set()
    for point in points:
        if point.label in seen:
            raise bad(f"{point.label} is given twice; give each load point once")
        seen.add(point.label)
    return Profile(points)


def sweep_rates(low: float, high: float, k: int) -> list[float]:
    """K rates spread evenly strictly between the synchronous and the throughput rates, each to
    three significant digits: fewer where two of them, or one and an end, round alike (a label
    run twice would measure its point again over the first)."""
    if not (high > low > 0):
        return []
    step = (high - low) / (k + 1)
    ends = {_three_digits(low), _three_digits(high)}
    rates = (_three_digits(low + step * (i + 1)) for i in range(k))
    return [r for r in dict.fromkeys(rates) if r not in ends]


def _three_digits(rate: float) -> float:
    """A rate to three significant digits, so that its label reads 'constant:553'."""
    return round(rate, 2 - math.floor(math.log10(rate)))


def send_times(point: LoadPoint, seed: int, rampup_s: float = 0.0) -> Iterator[float]:
    """When each request of a rate profile is due, in seconds from the start of its point: at
    fixed gaps (constant) or exponential ones (poisson, seeded). With `rampup_s`, the rate grows
    linearly from 0 to its target over that time: the n-th request is due when the expected
    count ∫rate reaches n (arrivals of a unit-rate process, stretched in time)."""
    if point.rate is None:
        raise ValueError(f"{point.label} is not paced")
    rate = point.rate
    rng = random.Random(seed)
    count = 0.0  # arrivals of the unit-rate process: i (constant), a sum of Exp(1) (poisson)
    ramp_count = rate * rampup_s / 2  # expected requests during the ramp
    while True:
        if count < ramp_count:
            yield math.sqrt(2 * rampup_s * count / rate)
        else:
            yield rampup_s + (count - ramp_count) / rate
        count += 1.0 if point.kind == "constant" else rng.expovariate(1.0)


def expected_due(point: LoadPoint, rampup_s: float, seconds: float) -> int:
    """How many requests of a rate profile's schedule are due before `seconds`, without walking
    it: exact for constant, the expected count for poisson (its first request at 0, then the
    unit-rate process's arrivals up to ∫rate, as `send_times`)."""
    rate = point.rate or 0.0
    if seconds <= rampup_s:
        expected = rate * seconds * seconds / (2 * rampup_s) if rampup_s > 0 else 0.0
    else:
        expected = rate * rampup_s / 2 + (seconds - rampup_s) * rate
    return math.ceil(expected) if point.kind == "constant" else 1 + round(expected)


def due_within(
    point: LoadPoint, seed: int, rampup_s: float, seconds: float, most: int | None = None
) -> int:
    """How many requests of a rate profile's schedule are due before `seconds` (`most` at most:
    the count stops there)."""
    times = islice(send_times(point, seed, rampup_s), most)
    return sum(1 for _ in takewhile(lambda t: t < seconds, times))
