"""What a strategy gets to work with: its configuration, the task, and measured engine calls."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tradeoff.config import DRAW_STRIDE, SAMPLE_STRIDE, SEED_MAX
from tradeoff.engines.emit import TextSink
from tradeoff.strategies.calls import CallMeter
from tradeoff.tasks import Task, build_request
from tradeoff.tasks.base import exact_length
from tradeoff.types import Item, Request

if TYPE_CHECKING:
    from tradeoff.config import Config


@dataclass
class StrategyContext:
    config: Config
    task: Task
    meter: CallMeter
    # Where a strategy streams its answer's text as it is committed (the server's SSE stream).
    # Strategies that decide their answer only at the end (vote, cascade) leave it unused.
    on_text: TextSink | None = None

    @property
    def params(self) -> dict[str, Any]:
        return self.config.params

    @property
    def cancel(self) -> threading.Event | None:
        """Set once the answer is no longer wanted (a served client went away); None where
        nothing cancels it (a profile run)."""
        return None

    @property
    def cancelled(self) -> bool:
        """Whether the answer is no longer wanted: a strategy makes no further call (a cascade
        does not escalate, a vote draws no more)."""
        return self.cancel is not None and self.cancel.is_set()

    def request_for(
        self, alias: str, item: Item, sample: int, draw: int = 0, **overrides: object
    ) -> Request:
        """The task's request for `item`, in the prompt form the model needs (chat or few-shot
        completion), with the configuration's sampling. Sample k, draw j (the j-th answer a
        strategy draws for one record) uses `request_seed`."""
        s = self.config.sampling
        request = build_request(
            self.task,
            item,
            self.meter.engines[alias].info.prompt_mode,
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            seed=request_seed(s.seed, sample, draw),
        )
        asked = asked_length(self.config, self.task, item)
        if asked is not None:
            request.max_tokens = asked
        for key, value in overrides.items():
            setattr(request, key, value)
        return request


def asked_length(config: Config, task: Task, item: Item) -> int | None:
    """The exact number of output tokens `item` asks for (synthetic load: `exact_length`, in
    place of the configuration's), within the budget of a configuration that caps its tokens
    (`budget`: its budget went unheeded); None where it asks for none."""
    from tradeoff.strategies import STRATEGIES

    own = exact_length(task, item)
    if own is None:
        return None
    if STRATEGIES[config.strategy].params.caps_max_tokens:
        return min(own, config.sampling.max_tokens)
    return own


def request_seed(seed: int, sample: int, draw: int = 0) -> int:
    """The seed of sample k's j-th draw of a run seeded `seed`: seed + 2,000,029 k + 1,000,003 j
    (modulo 2**31, the seeds every engine takes).
    Far-apart strides, so that runs of neighbouring seeds (0, 1, 2 to see the spread) draw
    nothing alike, as seed + k would (sample 1 of seed 0 was sample 0 of seed 1)."""
    return (seed + SAMPLE_STRIDE * sample + DRAW_STRIDE * draw) % (SEED_MAX + 1)
