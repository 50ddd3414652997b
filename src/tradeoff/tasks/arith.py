"""The built-in `arith` suite: arithmetic word problems generated from a seed, in three levels
(1: one operation on small numbers, 2: two operations or a times-table product, 3: three or
more operations or larger numbers)."""

from __future__ import annotations

import random
from collections.abc import Callable

from tradeoff.tasks.base import Task, interleave, number_items
from tradeoff.tasks.scorers import NumericScorer
from tradeoff.types import Item

NAME = "arith"
DESCRIPTION = "arithmetic word problems in 3 levels, generated from the seed (numeric answers)"
INSTRUCTION = "Answer with just the final number."
N_ITEMS = 60

NAMES = ["Tom", "Sara", "Ben", "Mia", "Leo", "Anna", "Sam", "Lily", "Max", "Emma", "Jack", "Zoe"]
THINGS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "cards", "balloons"]

Problem = tuple[str, int]
Template = Callable[[random.Random], Problem]


def _who(rng: random.Random) -> str:
    return rng.choice(NAMES)


def _what(rng: random.Random) -> str:
    return rng.choice(THINGS)


# Level 1: one operation, numbers up to 10 (results up to 20).
def _l1_buy(rng: random.Random) -> Problem:
    a, b, who, what = rng.randint(2, 9), rng.randint(1, 9), _who(rng), _what(rng)
    return f"{who} has {a} {what} and gets {b} more. How many {what} does {who} have now?", a + b


def _l1_give(rng: random.Random) -> Problem:
    a = rng.randint(4, 10)
    b, who, what = rng.randint(1, a - 1), _who(rng), _what(rng)
    return (
        f"{who} had {a} {what} and gave {b} of them to a friend. "
        f"How many {what} does {who} have left?",
        a - b,
    )


def _l1_birds(rng: random.Random) -> Problem:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    return f"There are {a} birds on a tree. {b} more birds land on it. How many birds are there?", (
        a + b
    )


def _l1_bus(rng: random.Random) -> Problem:
    a = rng.randint(5, 10)
    b = rng.randint(2, a - 1)
    return (
        f"A bus has {a} people on it. At the next stop {b} people get off. "
        "How many people are on the bus now?",
        a - b,
    )


def _l1_plus(rng: random.Random) -> Problem:
    a, b = rng.randint(1, 10), rng.randint(1, 10)
    return f"What is {a} plus {b}?", a + b


def _l1_minus(rng: random.Random) -> Problem:
    a = rng.randint(3, 10)
    b = rng.randint(1, a)
    return f"What is {a} minus {b}?", a - b


def _l1_class(rng: random.Random) -> Problem:
    a, b = rng.randint(2, 10), rng.randint(2, 10)
    return f"A class has {a} girls and {b} boys. How many children are in the class?", a + b


def _l1_pages(rng: random.Random) -> Problem:
    a, b, who = rng.randint(2, 10), rng.randint(2, 10), _who(rng)
    return (
        f"{who} read {a} pages on Monday and {b} pages on Tuesday. "
        f"How many pages did {who} read in all?",
        a + b,
    )


# Level 2: two operations on small numbers, or a product up to 12 x 12, or an exact division.
def _l2_boxes(rng: random.Random) -> Problem:
    a, b, what = rng.randint(2, 12), rng.randint(2, 12), _what(rng)
    return f"Each box holds {a} {what}. How many {what} are in {b} boxes?", a * b


def _l2_tickets(rng: random.Random) -> Problem:
    a, b = rng.randint(2, 12), rng.randint(2, 9)
    return f"A ticket costs ${a}. How many dollars do {b} tickets cost?", a * b


def _l2_buy_lose(rng: random.Random) -> Problem:
    a, b, who, what = rng.randint(5, 20), rng.randint(2, 10), _who(rng), _what(rng)
    c = rng.randint(1, a + b - 1)
    return (
        f"{who} has {a} {what}, buys {b} more and then loses {c}. "
        f"How many {what} does {who} have now?",
        a + b - c,
    )


def _l2_rows(rng: random.Random) -> Problem:
    a, b = rng.randint(3, 12), rng.randint(3, 12)
    return f"A garden has {a} rows of trees with {b} trees in each row. How many trees is that?", (
        a * b
    )


def _l2_spend(rng: random.Random) -> Problem:
    b, c, who = rng.randint(2, 15), rng.randint(2, 15), _who(rng)
    a = b + c + rng.randint(1, 20)
    return (
        f"{who} had ${a}. {who} spent ${b} on lunch and ${c} on a book. "
        f"How many dollars does {who} have left?",
        a - b - c,
    )


def _l2_share(rng: random.Random) -> Problem:
    n, each = rng.randint(2, 9), rng.randint(2, 12)
    return (
        f"{n} friends share {n * each} candies equally. How many candies does each friend get?",
        each,
    )


def _l2_times(rng: random.Random) -> Problem:
    a, b = rng.randint(3, 12), rng.randint(3, 12)
    return f"What is {a} times {b}?", a * b


def _l2_legs(rng: random.Random) -> Problem:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    return f"A farm has {a} cows and {b} chickens. How many legs do the animals have in total?", (
        4 * a + 2 * b
    )


# Level 3: three or more operations, or numbers in the hundreds.
def _l3_wage(rng: random.Random) -> Problem:
    pay, h1, h2, who = rng.randint(8, 25), rng.randint(2, 8), rng.randint(2, 8), _who(rng)
    spend = rng.randint(5, pay * (h1 + h2) - 1)
    return (
        f"{who} earns ${pay} an hour, works {h1} hours on Monday and {h2} hours on Tuesday, "
        f"then spends ${spend}. How many dollars does {who} have left?",
        pay * (h1 + h2) - spend,
    )


def _l3_store(rng: random.Random) -> Problem:
    sold1, sold2, boxes, per = (
        rng.randint(10, 60),
        rng.randint(10, 60),
        rng.randint(2, 9),
        rng.randint(6, 24),
    )
    start = sold1 + sold2 + rng.randint(20, 200)
    return (
        f"A store had {start} apples. It sold {sold1} in the morning and {sold2} in the "
        f"afternoon, then received {boxes} boxes of {per} apples each. "
        "How many apples does it have now?",
        start - sold1 - sold2 + boxes * per,
    )


def _l3_train(rng: random.Random) -> Problem:
    v1, t1, v2, t2 = (
        rng.randint(40, 120),
        rng.randint(2, 5),
        rng.randint(40, 120),
        rng.randint(2, 5),
    )
    return (
        f"A train travels at {v1} km per hour for {t1} hours, then at {v2} km per hour for "
        f"{t2} hours. How many km does it travel in total?",
        v1 * t1 + v2 * t2,
    )


def _l3_library(rng: random.Random) -> Problem:
    a, b = rng.randint(200, 900), rng.randint(50, 300)
    c = rng.randint(20, a)
    return (
        f"A library has {a} books. It buys {b} new books and gives away {c} old ones. "
        "How many books does the library have now?",
        a + b - c,
    )


def _l3_expression(rng: random.Random) -> Problem:
    a, b, c, d = rng.randint(10, 99), rng.randint(3, 12), rng.randint(3, 12), rng.randint(1, 30)
    return f"Compute {a} + {b} * {c} - {d}.", a + b * c - d


def _l3_school(rng: random.Random) -> Problem:
    classes, size, absent = rng.randint(4, 12), rng.randint(18, 32), rng.randint(3, 25)
    return (
        f"A school has {classes} classes with {size} students in each class. "
        f"{absent} students are absent today. How many students are at school?",
        classes * size - absent,
    )


def _l3_change(rng: random.Random) -> Problem:
    a, p, b, q, who = (
        rng.randint(2, 6),
        rng.randint(2, 9),
        rng.randint(2, 6),
        rng.randint(1, 5),
        _who(rng),
    )
    cost = a * p + b * q
    bill = 50 if cost < 50 else 100
    return (
        f"{who} buys {a} notebooks at ${p} each and {b} pens at ${q} each, and pays with a "
        f"${bill} bill. How many dollars of change does {who} get?",
        bill - cost,
    )


def _l3_sum_large(rng: random.Random) -> Problem:
    a, b, c = rng.randint(100, 999), rng.randint(100, 999), rng.randint(100, 999)
    return f"What is {a} + {b} + {c}?", a + b + c


LEVELS: list[list[Template]] = [
    [_l1_buy, _l1_give, _l1_birds, _l1_bus, _l1_plus, _l1_minus, _l1_class, _l1_pages],
    [_l2_boxes, _l2_tickets, _l2_buy_lose, _l2_rows, _l2_spend, _l2_share, _l2_times, _l2_legs],
    [
        _l3_wage,
        _l3_store,
        _l3_train,
        _l3_library,
        _l3_expression,
        _l3_school,
        _l3_change,
        _l3_sum_large,
    ],
]


def _level_items(rng: random.Random, level: int, n: int, avoid: set[str], task: str) -> list[Item]:
    """`n` distinct problems of one level, cycling through its templates in a shuffled order."""
    templates = list(LEVELS[level - 1])
    rng.shuffle(templates)
    items: list[Item] = []
    attempts = 0
    while len(items) < n:
        template = templates[(len(items) + attempts) % len(templates)]
        question, answer = template(rng)
        if question in avoid:
            attempts += 1
            continue
        avoid.add(question)
        items.append(
            Item(
                id="",
                prompt=question,
                reference=str(answer),
                task=task,
                meta={"difficulty": level, "template": template.__name__.lstrip("_")},
            )
        )
    return items


def build(seed: int = 0, n: int = N_ITEMS) -> Task:
    """The arith suite for `seed`: `n` items interleaved by level, 3 worked examples."""
    rng = random.Random(f"{NAME}:{seed}")
    seen: set[str] = set()
    per_level = [n // 3 + (1 if i < n % 3 else 0) for i in range(3)]
    levels = [
        _level_items(rng, lvl, k, seen, NAME) for lvl, k in zip((1, 2, 3), per_level, strict=True)
    ]
    items = number_items(interleave(levels), NAME)
    # Worked examples come from their own stream and never repeat a question being asked.
    shot_rng = random.Random(f"{NAME}-fewshot:{seed}")
    fewshot = [_level_items(shot_rng, lvl, 1, seen, NAME)[0] for lvl in (1, 2, 3)]
    for i, shot in enumerate(fewshot):
        shot.id = f"{NAME}-shot-{i}"
    return Task(
        name=NAME,
        description=DESCRIPTION,
        items=items,
        scorer=NumericScorer(),
        instruction=INSTRUCTION,
        fewshot=fewshot,
        stop=["\n"],
    )
