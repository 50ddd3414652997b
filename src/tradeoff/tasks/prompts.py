"""Turn a task's item into an engine request: a chat message for instruct models, a few-shot
completion prompt for base models."""

from __future__ import annotations

from typing import Literal

from tradeoff.errors import UserError
from tradeoff.tasks.base import Task, exact_length
from tradeoff.types import Item, Request


def question_text(item: Item) -> str:
    """The item's question as plain text; chat prompts give their user turns, joined."""
    if isinstance(item.prompt, str):
        return item.prompt.strip()
    return "\n\n".join(m["content"].strip() for m in item.prompt if m.get("role") == "user")


def answer_text(item: Item) -> str:
    """The reference written as a model should answer on one line: the first of "a|b"
    alternatives, the number after GSM8K's "####"."""
    reference = item.reference.rsplit("####", 1)[-1]
    return " ".join(reference.split("|", 1)[0].split())


def examples(task: Task, item: Item) -> list[Item]:
    """The worked examples a base model sees before `item`: the task's few-shot examples, or
    else the first of its own items other than `item` (as lm-evaluation-harness does for a task
    with no training split)."""
    if task.fewshot or not task.fewshot_from_items:
        return task.fewshot
    others = (other for other in task.items if other.id != item.id)
    return [other for _, other in zip(range(task.fewshot_from_items), others, strict=False)]


def completion_prompt(task: Task, item: Item) -> str:
    """'Question: ...\\nAnswer: ...' for each few-shot example, then the item's question."""
    shots = "".join(
        f"Question: {question_text(ex)}\nAnswer: {answer_text(ex)}\n\n"
        for ex in examples(task, item)
    )
    return f"{shots}Question: {question_text(item)}\nAnswer:"


def build_request(
    task: Task,
    item: Item,
    mode: Literal["chat", "completion"],
    *,
    max_tokens: int,
    temperature: float,
    seed: int | None,
    logprobs: bool = False,
) -> Request:
    """The request that asks `item` of a model prompted in `mode`. An item with its own
    length (`exact_length`: synthetic load) asks for exactly that many tokens instead."""
    if mode not in ("chat", "completion"):
        raise UserError(f"prompt mode {mode!r} is not known; modes: chat, completion")
    own = exact_length(task, item)
    exact = own is not None
    if own is not None:
        max_tokens = own
    if mode == "completion":
        return Request(
            prompt=completion_prompt(task, item),
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
            stop=list(task.stop),
            logprobs=logprobs,
            exact_tokens=exact,
        )
    if isinstance(item.prompt, list):
        messages = [dict(m) for m in item.prompt]
    else:
        question = item.prompt.strip()
        content = f"{task.instruction}\n\n{question}" if task.instruction else question
        # One user turn: the 135M instruct models follow it better than a system turn.
        messages = [{"role": "user", "content": content}]
    return Request(
        messages=messages,
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        stop=[],
        logprobs=logprobs,
        exact_tokens=exact,
    )
