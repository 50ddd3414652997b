"""The built-in suites: deterministic, graded, balanced, and scorable by their own scorers."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from tradeoff.errors import UserError
from tradeoff.tasks import Task, builtin_tasks, load_task
from tradeoff.tasks.scorers import alternatives
from tradeoff.types import Item

SUITES = ["arith", "choice", "facts"]


def snapshot(task: Task) -> list[tuple[object, ...]]:
    return [(it.id, it.prompt, it.reference, it.meta) for it in task.items + task.fewshot]


@pytest.mark.parametrize("name", SUITES)
def test_same_seed_gives_the_same_items(name: str) -> None:
    assert snapshot(load_task(name, seed=3)) == snapshot(load_task(name, seed=3))


@pytest.mark.parametrize("name", ["arith", "choice"])
def test_another_seed_gives_other_items(name: str) -> None:
    a, b = load_task(name, seed=0), load_task(name, seed=1)
    differ = sum(x.prompt != y.prompt for x, y in zip(a.items, b.items, strict=True))
    assert differ > len(a.items) // 2


@pytest.mark.parametrize("name", SUITES)
def test_items_have_stable_unique_ids_and_difficulty(name: str) -> None:
    task = load_task(name)
    assert len(task.items) >= 60
    ids = [it.id for it in task.items]
    assert ids == [f"{name}-{i:04d}" for i in range(len(ids))]
    assert all(it.task == name for it in task.items)
    levels = Counter(it.meta["difficulty"] for it in task.items)
    assert set(levels) == {1, 2, 3}
    assert min(levels.values()) >= 20


@pytest.mark.parametrize("name", SUITES)
def test_any_limit_covers_every_difficulty(name: str) -> None:
    task = load_task(name, seed=5)
    for n in range(3, len(task.items) + 1):
        assert {it.meta["difficulty"] for it in task.items[:n]} == {1, 2, 3}, n


@pytest.mark.parametrize("name", SUITES)
def test_fewshot_examples_are_not_items(name: str) -> None:
    for seed in range(5):
        task = load_task(name, seed=seed)
        assert len(task.fewshot) == 3
        asked = {str(it.prompt) for it in task.items}
        assert not asked & {str(shot.prompt) for shot in task.fewshot}
        assert task.stop == ["\n"]


def plausible(task: Task, it: Item) -> str:
    """The reference as a chatty model would write it."""
    if task.name == "arith":
        return f"Let me work it out. The answer is {int(it.reference):,}."
    if task.name == "choice":
        return f"The answer is ({it.reference}) {it.meta['answer_text']}."
    return f"I think it is {it.reference.split('|')[0]}."


def wrong(task: Task, it: Item, other: Item) -> str:
    if task.name == "arith":
        return f"The answer is {int(it.reference) + 1}."
    if task.name == "choice":
        letters = "ABCD"
        return f"The answer is {letters[(letters.index(it.reference) + 1) % 4]}."
    return f"I think it is {other.reference.split('|')[0]}."


@pytest.mark.parametrize("name", SUITES)
@pytest.mark.parametrize("seed", [0, 1])
def test_every_item_is_scored_by_its_reference(name: str, seed: int) -> None:
    task = load_task(name, seed=seed)
    for i, it in enumerate(task.items):
        # For facts the wrong answer is the next item with no accepted answer in common.
        others = task.items[i + 1 :] + task.items[:i]
        other = next(
            o
            for o in others
            if not set(alternatives(o.reference)) & set(alternatives(it.reference))
        )
        assert task.scorer.score(plausible(task, it), it) == 1.0, it
        assert task.scorer.score(wrong(task, it, other), it) == 0.0, it
        assert task.scorer.parse(plausible(task, it)) is not None


def test_facts_questions_do_not_give_their_answer_away() -> None:
    task = load_task("facts")
    for it in task.items + task.fewshot:
        assert isinstance(it.prompt, str)
        # A model that only repeats the question must not score.
        assert task.scorer.score(it.prompt, it) == 0.0, it
        assert task.scorer.score("I am not sure.", it) == 0.0, it


def test_arith_answers_are_right() -> None:
    """Check the generator's arithmetic where the question is a bare expression."""
    checked = 0
    for seed in range(3):
        for it in load_task("arith", seed=seed).items:
            assert isinstance(it.prompt, str)
            assert int(it.reference) >= 0
            m = re.fullmatch(r"(?:What is|Compute) ([\d a-z+*-]+)[?.]", it.prompt)
            if m:
                expr = m.group(1).replace("plus", "+").replace("minus", "-").replace("times", "*")
                assert eval(expr) == int(it.reference), it.prompt  # only digits and + - *
                checked += 1
    assert checked >= 10


def test_arith_levels_and_phrasings() -> None:
    task = load_task("arith")
    assert len(task.items) == 60
    templates = {it.meta["template"] for it in task.items}
    assert len(templates) >= 8
    assert all(it.meta["template"].startswith(f"l{it.meta['difficulty']}") for it in task.items)
    easy = [int(it.reference) for it in task.items if it.meta["difficulty"] == 1]
    hard = [int(it.reference) for it in task.items if it.meta["difficulty"] == 3]
    assert max(easy) <= 20 < max(hard)
    assert all(shot.reference.isdigit() for shot in task.fewshot)


def test_choice_letters_are_balanced_and_options_well_formed() -> None:
    task = load_task("choice", seed=2)
    assert len(task.items) == 60
    assert Counter(it.reference for it in task.items) == {"A": 15, "B": 15, "C": 15, "D": 15}
    for start in range(0, 60, 4):
        assert {it.reference for it in task.items[start : start + 4]} == set("ABCD")
    for it in task.items:
        choices = it.meta["choices"]
        assert len(choices) == 4 == len(set(choices)), it
        assert choices["ABCD".index(it.reference)] == it.meta["answer_text"]
        assert isinstance(it.prompt, str)
        assert it.prompt.splitlines()[1:] == [
            f"{L}. {c}" for L, c in zip("ABCD", choices, strict=True)
        ]
    kinds = {it.meta["kind"] for it in task.items}
    assert "knowledge" in kinds and len(kinds) >= 10
    assert task.instruction == "Answer with the letter of the correct option."


def follows(terms: list[int], nxt: int) -> bool:
    """Whether `nxt` continues `terms` by a constant step, a constant ratio, squares, or steps
    that grow by one."""
    seq = [*terms, nxt]
    steps = [b - a for a, b in zip(seq, seq[1:], strict=False)]
    if len(set(steps)) == 1:
        return True
    pairs = list(zip(seq, seq[1:], strict=False))
    if all(a != 0 and b % a == 0 for a, b in pairs) and len({b // a for a, b in pairs}) == 1:
        return True
    if all(round(x**0.5) ** 2 == x for x in seq) and len({round(x**0.5) for x in seq}) == 5:
        return True
    return len({b - a for a, b in zip(steps, steps[1:], strict=False)}) == 1


@pytest.mark.parametrize("seed", range(4))
def test_choice_generated_answers_are_right(seed: int) -> None:
    for it in load_task("choice", seed=seed).items:
        assert isinstance(it.prompt, str)
        question, answer = it.prompt.splitlines()[0], it.meta["answer_text"]
        others = [c for c in it.meta["choices"] if c != answer]
        if question.startswith("What comes next: "):
            terms = [int(t) for t in question.removeprefix("What comes next: ")[:-3].split(", ")]
            assert follows(terms, int(answer)), it.prompt
            assert not any(follows(terms, int(o)) for o in others), it.prompt
        elif question in ("Which number is the largest?", "Which number is the smallest?"):
            values = [float(c) for c in it.meta["choices"]]
            best = max(values) if "largest" in question else min(values)
            assert float(answer) == best and values.count(best) == 1, it.prompt
        elif question.startswith("What is ") and " times " in question:
            a, b = question.removeprefix("What is ").rstrip("?").split(" times ")
            assert int(answer) == int(a) * int(b)


def test_builtin_tasks_listing() -> None:
    infos = {info.name: info for info in builtin_tasks()}
    assert list(infos) == SUITES
    assert infos["arith"].scorer == "numeric" and infos["arith"].n_items == 60
    assert infos["choice"].scorer == "choice" and infos["choice"].n_items == 60
    assert infos["facts"].scorer == "contains" and infos["facts"].n_items >= 60
    assert all(info.description and "\n" not in info.description for info in infos.values())


def test_unknown_task_names_the_valid_ones() -> None:
    with pytest.raises(UserError) as err:
        load_task("arth")
    message = str(err.value)
    assert "'arth'" in message and "arith, choice, facts" in message
    assert "jsonl:PATH" in message and "hf:NAME[:CONFIG][:SPLIT]" in message


def test_builtin_takes_a_scorer_but_no_fields() -> None:
    task = load_task("facts", scorer="exact")
    assert task.scorer.name == "exact"
    assert task.scorer.score("Paris", task.items[0]) in (0.0, 1.0)
    with pytest.raises(UserError, match="--answer-field"):
        load_task("arith", answer_field="x")
    with pytest.raises(UserError, match="scorers: numeric"):
        load_task("arith", scorer="close")
