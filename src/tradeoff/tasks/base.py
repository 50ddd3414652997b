"""What a task is: items to ask, a scorer to check answers, and how to prompt for them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from tradeoff.types import Item


class Scorer(Protocol):
    """Checks a model's output against an item's reference."""

    @property
    def name(self) -> str:
        """Which scorer this is: numeric, choice, exact, contains or regex."""
        ...

    def parse(self, output: str) -> str | None:
        """The answer found in `output`, normalized so that equal answers compare equal
        (majority voting counts these); None when the output holds no answer."""
        ...

    def score(self, output: str, item: Item) -> float:
        """1.0 when `output` answers `item` correctly, 0.0 when not (always within [0, 1])."""
        ...


@dataclass
class Task:
    """A named list of items with the scorer that checks them and the prompt pieces for them."""

    name: str  # "arith", "jsonl:data/q.jsonl", "hf:openai/gsm8k:main:test"
    description: str  # one line
    items: list[Item]
    scorer: Scorer
    instruction: str = ""  # put before the question for chat models
    # Worked examples (prompt + reference) for completion-form prompts to base models; never
    # among `items`.
    fewshot: list[Item] = field(default_factory=list)
    # With no `fewshot`: how many of the task's own items (never the one asked) a base model is
    # shown as worked examples instead (loaded tasks without a train split).
    fewshot_from_items: int = 0
    stop: list[str] = field(default_factory=lambda: ["\n"])  # completion mode only
    # False for a task without answers (synthetic load): its records store score None, and it
    # has no accuracy.
    scored: bool = True
    # Each item asks for exactly its meta's `max_tokens` output tokens (synthetic load). Only
    # such a task's: a data file's column of that name is the user's metadata (it made a scored
    # task's requests exact-length load requests, and a text in it crashed the run).
    exact_lengths: bool = False


def exact_length(task: Task, item: Item) -> int | None:
    """The exact number of output tokens `item` of `task` asks for; None where it asks for none."""
    own = item.meta.get("max_tokens") if task.exact_lengths else None
    return None if own is None else int(own)


T = TypeVar("T")


def interleave(levels: list[list[T]]) -> list[T]:
    """Round-robin over difficulty levels, so that any first N items (N >= number of levels)
    cover every level."""
    out: list[T] = []
    for i in range(max((len(level) for level in levels), default=0)):
        out.extend(level[i] for level in levels if i < len(level))
    return out


def number_items(items: list[Item], task: str) -> list[Item]:
    """Give items their stable ids ("arith-0007") in the order they will be asked."""
    for i, item in enumerate(items):
        item.id = f"{task}-{i:04d}"
        item.task = task
    return items
