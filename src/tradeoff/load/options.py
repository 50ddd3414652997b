"""The options of a load run (`tradeoff load`'s flags), checked once and stored with the run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from tradeoff.errors import UserError
from tradeoff.load.profiles import Profile, parse_profile


@dataclass(frozen=True)
class Amount:
    """A number of requests, or of seconds ('10' or '10s')."""

    value: float
    seconds: bool

    @classmethod
    def parse(cls, text: str | None, flag: str) -> Amount | None:
        if text is None:
            return None
        body = text.strip()
        seconds = body.endswith("s")
        try:
            value = float(body.removesuffix("s"))
        except ValueError:
            value = -1.0
        if not 0 <= value < math.inf or (not seconds and value != int(value)):  # and nan
            raise UserError(
                f"{flag} {text!r}: give a number of requests (e.g. 10) or of seconds (e.g. 5s)"
            )
        return cls(value, seconds)


@dataclass(frozen=True)
class LoadOptions:
    """How each load point runs and when it stops. Stored with the run (`spec["load"]`)."""

    profile: str = "sweep"
    max_requests: int | None = None
    max_seconds: float | None = 30.0
    warmup: str | None = None
    cooldown: str | None = None
    rampup_s: float = 0.0
    slo: str | None = None
    max_concurrency: int = 256
    max_errors: int | None = None
    max_error_rate: float | None = None
    seed: int = 0
    # The upstreams' Prometheus metrics, sampled through the run: "auto" (each openai: model's
    # server's /metrics, where it answers Prometheus text), "off", or a URL (which must answer).
    scrape: str = "auto"

    def check(self) -> Profile:
        """The parsed profile; one line on any option that cannot work."""
        if self.max_requests is None and self.max_seconds is None:
            raise UserError("give --max-requests N and/or --max-seconds S: when a load point ends")
        for flag, value in (
            ("--max-requests", self.max_requests),
            ("--max-errors", self.max_errors),
        ):
            if value is not None and value < 1:
                raise UserError(f"{flag} must be at least 1 (got {value})")
        if self.max_seconds is not None and not 0 < self.max_seconds < math.inf:
            raise UserError(f"--max-seconds must be a number above 0 (got {self.max_seconds})")
        if self.max_concurrency < 1:
            raise UserError(f"--max-concurrency must be at least 1 (got {self.max_concurrency})")
        if not 0 <= self.rampup_s < math.inf:
            raise UserError(
                f"--rampup must be a number of seconds, 0 or more (got {self.rampup_s})"
            )
        if self.max_seconds is not None and self.rampup_s >= self.max_seconds:
            raise UserError(
                f"--rampup {self.rampup_s:g} is as long as each load point or longer "
                f"(--max-seconds {self.max_seconds:g}): no request would go at the target rate; "
                "shorten it"
            )
        if self.max_error_rate is not None and not 0 < self.max_error_rate <= 1:
            raise UserError(f"--max-error-rate must be in (0, 1] (got {self.max_error_rate})")
        set_aside = {True: 0.0, False: 0.0}  # seconds, requests: the warm-up and cool-down's
        for flag, text in (("--warmup", self.warmup), ("--cooldown", self.cooldown)):
            amount = Amount.parse(text, flag)
            if amount is None:
                continue
            set_aside[amount.seconds] += amount.value
            bound = "--max-seconds" if amount.seconds else "--max-requests"
            # (a cool-down is counted back from where the point ended, whichever bound ended it)
            unbounded = (self.max_seconds if amount.seconds else self.max_requests) is None
            if flag == "--warmup" and unbounded:
                unit = "seconds" if amount.seconds else "requests"
                raise UserError(
                    f"{flag} {text} counts {unit}, so it needs {bound} (each load point's "
                    f"length in {unit}); to bound points otherwise, give {flag} in "
                    f"{'requests, e.g. 10' if amount.seconds else 'seconds, e.g. 5s'}"
                )
        lengths = ((True, self.max_seconds, "--max-seconds"),
                   (False, self.max_requests, "--max-requests"))  # fmt: skip
        for seconds, length, option in lengths:
            if length is not None and set_aside[seconds] and set_aside[seconds] >= length:
                unit = "s" if seconds else " requests"
                raise UserError(
                    f"--warmup and --cooldown set aside {set_aside[seconds]:g}{unit} of each "
                    f"load point of {option} {length:g}: nothing would be measured; shorten "
                    "them or lengthen the points"
                )
        if self.slo is not None:
            from tradeoff.analysis.load import parse_slo

            parse_slo(self.slo)
        if self.scrape not in ("auto", "off") and not self.scrape.startswith(
            ("http://", "https://")
        ):
            raise UserError(f"--scrape {self.scrape!r}: give auto, off, or an http(s):// URL")
        return parse_profile(self.profile, self.max_concurrency)

    @cached_property
    def _warmup(self) -> Amount | None:
        return Amount.parse(self.warmup, "--warmup")

    @cached_property
    def cooldown_amount(self) -> Amount | None:
        return Amount.parse(self.cooldown, "--cooldown")

    def phase(self, index: int, sent_s: float) -> str:
        """'warmup' or 'measure' for the point's index-th request (a process sends its own in
        that order), sent at `sent_s`: its first --warmup requests, or those sent in its first
        seconds (one due then that waited for a slot went out later, and is measured). Decided
        as it is sent, so that a point still running, or killed, has its warm-up marked; the
        cool-down is marked once the point has ended (`load.run`), counted back from there."""
        warmup = self._warmup
        if warmup and (sent_s < warmup.value if warmup.seconds else index < warmup.value):
            return "warmup"
        return "measure"
