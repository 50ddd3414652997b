"""Tasks: the built-in suites (arith, choice, facts), loaders for JSONL files and Hugging Face
data sets, the scorers that check answers, and the prompts that ask for them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from tradeoff.errors import UserError
from tradeoff.tasks import arith, choice, facts, synthetic
from tradeoff.tasks.base import Scorer, Task
from tradeoff.tasks.loaders import INSTRUCTIONS, check_references, load_hf, load_jsonl
from tradeoff.tasks.prompts import build_request, completion_prompt, question_text
from tradeoff.tasks.scorers import SCORER_NAMES, make_scorer, normalize

__all__ = [
    "BUILTIN",
    "SCORER_NAMES",
    "Scorer",
    "Task",
    "TaskInfo",
    "build_request",
    "builtin_tasks",
    "completion_prompt",
    "load_task",
    "make_scorer",
    "normalize",
    "question_text",
]

# name -> builder(seed). Each suite is generated or written by tradeoff, never downloaded.
BUILTIN: dict[str, Callable[[int], Task]] = {
    "arith": arith.build,
    "choice": choice.build,
    "facts": facts.build,
}


@dataclass(frozen=True)
class TaskInfo:
    """One line of `tradeoff tasks`."""

    name: str
    description: str
    n_items: int
    scorer: str


def builtin_tasks() -> list[TaskInfo]:
    """The built-in suites, as built with seed 0."""
    infos = []
    for build in BUILTIN.values():
        task = build(0)
        infos.append(TaskInfo(task.name, task.description, len(task.items), task.scorer.name))
    return infos


def _unknown(ref: str) -> UserError:
    return UserError(
        f"task {ref!r} is not known; built-in tasks: {', '.join(BUILTIN)}; "
        "or use jsonl:PATH, hf:NAME[:CONFIG][:SPLIT] or synthetic:prompt=N,output=N"
    )


def task_name(ref: str) -> str:
    """The name the task `ref` loads as: its reference, a bare path ending in .jsonl as jsonl:,
    a synthetic: reference written canonically (UserError if malformed)."""
    ref = ref.strip()
    if ref.startswith(synthetic.PREFIX):
        return synthetic.parse(ref).name
    if ref.endswith(".jsonl") and not ref.startswith(("jsonl:", "hf:")) and ref not in BUILTIN:
        return f"jsonl:{ref}"
    return ref


def load_task(
    ref: str,
    *,
    seed: int = 0,
    prompt_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    scorer: str | None = None,
    pattern: str | None = None,
) -> Task:
    """The task `ref` names: a built-in suite ("arith"), "jsonl:PATH" (a bare path ending in
    .jsonl works too), "hf:NAME[:CONFIG][:SPLIT]" or "synthetic:prompt=N,output=N[,...]"
    (unscored; its own seed). `seed` generates the built-in suites and picks few-shot examples
    from an hf train split; the field names override the loaders' guesses; `scorer` (and
    `pattern`, for regex) replaces the task's scorer."""
    ref = ref.strip()
    given = [
        flag
        for flag, value in (
            ("--prompt-field", prompt_field),
            ("--answer-field", answer_field),
            ("--id-field", id_field),
        )
        if value is not None
    ]
    if ref.startswith(synthetic.PREFIX):
        flags = [*given, *(["--scorer"] if scorer else []), *(["--pattern"] if pattern else [])]
        if flags:
            raise UserError(
                f"{', '.join(flags)} {'does' if len(flags) == 1 else 'do'} not apply to "
                f"{ref!r}: synthetic tasks have generated prompts and no answers to score"
            )
        return synthetic.build(ref)
    if ref in BUILTIN:
        if given:
            raise UserError(
                f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only to jsonl: "
                f"and hf: tasks, not to the built-in task {ref!r}"
            )
        task = BUILTIN[ref](seed)
        if (scorer is not None and scorer != task.scorer.name) or pattern:
            chosen = make_scorer(scorer or "regex", pattern)
            wheres = [f"built-in task {ref!r}, item {it.id}" for it in task.items]
            check_references(task.items, wheres, chosen.name)
            task = replace(task, scorer=chosen, instruction=INSTRUCTIONS[chosen.name])
        return task
    fields = {
        "prompt_field": prompt_field,
        "answer_field": answer_field,
        "id_field": id_field,
        "scorer": scorer,
        "pattern": pattern,
    }
    if ref.startswith("jsonl:"):
        path = ref.removeprefix("jsonl:")
        if not path:
            raise UserError("jsonl: needs a path, e.g. jsonl:data/questions.jsonl")
        return load_jsonl(path, name=ref, **fields)
    if ref.startswith("hf:"):
        return load_hf(ref.removeprefix("hf:"), seed=seed, name=ref, **fields)
    if ref.endswith(".jsonl"):
        return load_jsonl(ref, name=task_name(ref), **fields)
    raise _unknown(ref)
