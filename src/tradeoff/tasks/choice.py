"""The built-in `choice` suite: four-option multiple choice in three levels, part generated from
the seed (comparisons, categories, sequences, units), part written general knowledge."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from tradeoff.tasks.base import Task, interleave, number_items
from tradeoff.tasks.scorers import ChoiceScorer
from tradeoff.types import Item

NAME = "choice"
DESCRIPTION = "4-option multiple choice in 3 levels: generated comparisons and written knowledge"
INSTRUCTION = "Answer with the letter of the correct option."
LETTERS = "ABCD"
PER_LEVEL = 20
GENERATED_PER_KIND = 3  # 4 generated kinds per level, 3 items each; the rest are written


@dataclass
class Question:
    text: str
    answer: str
    distractors: list[str]  # exactly 3, all different from the answer and from each other
    level: int
    kind: str


Generator = Callable[[random.Random], tuple[str, str, list[str]]]


def _pick_distractors(rng: random.Random, answer: str, pool: list[str]) -> list[str]:
    unique = sorted({p for p in pool if p != answer})
    return rng.sample(unique, 3)


# Level 1 ------------------------------------------------------------------------------------

CATEGORIES = {
    "an animal": ["dog", "cat", "horse", "cow", "lion", "rabbit", "duck", "sheep"],
    "a fruit": ["apple", "banana", "grape", "pear", "cherry", "mango", "melon", "kiwi"],
    "a colour": ["red", "blue", "green", "yellow", "purple", "pink", "brown", "black"],
    "a vehicle": ["car", "bus", "train", "bicycle", "boat", "truck", "plane", "tractor"],
}
THINGS = ["chair", "spoon", "table", "cup", "shoe", "book", "lamp", "pillow", "window", "sock"]


def _largest_small(rng: random.Random) -> tuple[str, str, list[str]]:
    numbers = rng.sample(range(1, 31), 4)
    best = max(numbers)
    return "Which number is the largest?", str(best), [str(n) for n in numbers if n != best]


def _category(rng: random.Random) -> tuple[str, str, list[str]]:
    category = rng.choice(sorted(CATEGORIES))
    answer = rng.choice(CATEGORIES[category])
    others = THINGS + [w for c, words in CATEGORIES.items() if c != category for w in words]
    return f"Which of these is {category}?", answer, _pick_distractors(rng, answer, others)


def _next_small(rng: random.Random) -> tuple[str, str, list[str]]:
    step, start = rng.choice([1, 2]), rng.randint(1, 10)
    terms = [start + i * step for i in range(4)]
    answer = start + 4 * step
    pool = [answer + 1, answer - 1, answer + step, answer + 2 * step, terms[-1]]
    shown = ", ".join(map(str, terms))
    return (
        f"What comes next: {shown}, ?",
        str(answer),
        _pick_distractors(rng, str(answer), [str(p) for p in pool]),
    )


DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "March", "April", "June", "July", "August", "October", "December"]


def _calendar(rng: random.Random) -> tuple[str, str, list[str]]:
    if rng.random() < 0.5:
        question, answer = "Which of these is a day of the week?", rng.choice(DAYS)
    else:
        question, answer = "Which of these is a month?", rng.choice(MONTHS)
    pool = THINGS + CATEGORIES["an animal"] + CATEGORIES["a fruit"]
    return question, answer, _pick_distractors(rng, answer, pool)


# Level 2 ------------------------------------------------------------------------------------

OPPOSITES = [
    ("hot", "cold"),
    ("big", "small"),
    ("up", "down"),
    ("fast", "slow"),
    ("happy", "sad"),
    ("full", "empty"),
    ("wet", "dry"),
    ("early", "late"),
    ("loud", "quiet"),
    ("day", "night"),
    ("open", "closed"),
    ("tall", "short"),
]


def _smallest_close(rng: random.Random) -> tuple[str, str, list[str]]:
    base = rng.randint(20, 80)
    numbers = [base + d for d in rng.sample(range(-9, 10), 4)]
    least = min(numbers)
    return "Which number is the smallest?", str(least), [str(n) for n in numbers if n != least]


def _next_step(rng: random.Random) -> tuple[str, str, list[str]]:
    step = rng.choice([3, 4, 5, 10, -2, -3, -5])
    start = rng.randint(2, 20) if step > 0 else rng.randint(30, 60)
    terms = [start + i * step for i in range(4)]
    answer = start + 4 * step
    pool = [answer + 1, answer - 1, answer + step, answer - step, terms[-1] + 1]
    shown = ", ".join(map(str, terms))
    return (
        f"What comes next: {shown}, ?",
        str(answer),
        _pick_distractors(rng, str(answer), [str(p) for p in pool]),
    )


def _times(rng: random.Random) -> tuple[str, str, list[str]]:
    a, b = rng.randint(3, 12), rng.randint(3, 12)
    answer = a * b
    pool = [a * (b - 1), a * (b + 1), (a - 1) * b, (a + 1) * b, answer + 2, answer - 2]
    return (
        f"What is {a} times {b}?",
        str(answer),
        _pick_distractors(rng, str(answer), [str(p) for p in pool]),
    )


def _opposite(rng: random.Random) -> tuple[str, str, list[str]]:
    pair = rng.choice(OPPOSITES)
    word, answer = pair if rng.random() < 0.5 else (pair[1], pair[0])
    pool = [w for p in OPPOSITES if p != pair for w in p]
    return f'What is the opposite of "{word}"?', answer, _pick_distractors(rng, answer, pool)


# Level 3 ------------------------------------------------------------------------------------


def _length_text(rng: random.Random, cm: int) -> str:
    units = ["cm", "mm"]
    if cm % 50 == 0:
        units.append("m")
    unit = rng.choice(units)
    if unit == "m":
        return f"{Decimal(cm) / 100:g} m"
    return f"{cm * 10} mm" if unit == "mm" else f"{cm} cm"


def _units_length(rng: random.Random) -> tuple[str, str, list[str]]:
    values = rng.sample([5, 20, 30, 50, 80, 100, 120, 150, 200, 250, 300], 4)
    longest = rng.random() < 0.5
    target = max(values) if longest else min(values)
    texts = {v: _length_text(rng, v) for v in values}
    question = "Which is the longest?" if longest else "Which is the shortest?"
    return question, texts[target], [texts[v] for v in values if v != target]


def _mass_text(rng: random.Random, grams: int) -> str:
    if grams % 250 == 0 and rng.random() < 0.6:
        return f"{Decimal(grams) / 1000:g} kg"
    return f"{grams} g"


def _units_mass(rng: random.Random) -> tuple[str, str, list[str]]:
    values = rng.sample([100, 250, 400, 500, 750, 900, 1000, 1500, 2000, 3000], 4)
    heaviest = rng.random() < 0.5
    target = max(values) if heaviest else min(values)
    texts = {v: _mass_text(rng, v) for v in values}
    question = "Which is the heaviest?" if heaviest else "Which is the lightest?"
    return question, texts[target], [texts[v] for v in values if v != target]


def _decimals(rng: random.Random) -> tuple[str, str, list[str]]:
    t = rng.randint(2, 8)
    # The longer numbers look larger and are not: 0.5 > 0.49 > 0.475 > 0.05.
    texts = [
        f"0.{t}",
        f"0.{t - 1}{rng.randint(5, 9)}",
        f"0.{t - 1}{rng.randint(0, 4)}{rng.randint(1, 9)}",
        f"0.0{t}{rng.randint(1, 9)}",
    ]
    largest = rng.random() < 0.6
    pick = max if largest else min
    target = pick(texts, key=Decimal)
    question = "Which number is the largest?" if largest else "Which number is the smallest?"
    return question, target, [x for x in texts if x != target]


def _next_hard(rng: random.Random) -> tuple[str, str, list[str]]:
    kind = rng.choice(["double", "triple", "square", "growing"])
    if kind == "double":
        k = rng.randint(1, 5)
        terms = [k * 2**i for i in range(4)]
        answer = terms[-1] * 2
    elif kind == "triple":
        k = rng.randint(1, 3)
        terms = [k * 3**i for i in range(4)]
        answer = terms[-1] * 3
    elif kind == "square":
        n = rng.randint(1, 6)
        terms = [(n + i) ** 2 for i in range(4)]
        answer = (n + 4) ** 2
    else:  # differences 1, 2, 3, ...
        start = rng.randint(1, 10)
        terms = [start + i * (i + 1) // 2 for i in range(4)]
        answer = start + 10
    linear = terms[-1] + (terms[-1] - terms[-2])  # the mistake of continuing the last step
    pool = [linear, answer + 1, answer - 1, answer + 2, terms[-1] * 2 + 1]
    shown = ", ".join(map(str, terms))
    return (
        f"What comes next: {shown}, ?",
        str(answer),
        _pick_distractors(rng, str(answer), [str(p) for p in pool]),
    )


GENERATORS: dict[int, list[Generator]] = {
    1: [_largest_small, _category, _next_small, _calendar],
    2: [_smallest_close, _next_step, _times, _opposite],
    3: [_units_length, _units_mass, _decimals, _next_hard],
}

# Written general knowledge: (question, answer, three wrong options).
WRITTEN: dict[int, list[tuple[str, str, list[str]]]] = {
    1: [
        ("How many legs does a dog have?", "4", ["2", "6", "8"]),
        ("What colour is grass?", "green", ["blue", "red", "purple"]),
        ("Which animal says 'moo'?", "cow", ["cat", "dog", "duck"]),
        ("What do bees make?", "honey", ["milk", "silk", "wool"]),
        ("What is frozen water called?", "ice", ["steam", "sand", "glass"]),
        ("Which season is the coldest?", "winter", ["summer", "spring", "autumn"]),
        ("How many days are in a week?", "7", ["5", "6", "10"]),
        ("What do you wear on your feet?", "shoes", ["hats", "gloves", "scarves"]),
    ],
    2: [
        ("What is the capital of France?", "Paris", ["London", "Berlin", "Madrid"]),
        ("Which planet do we live on?", "Earth", ["Mars", "Venus", "Jupiter"]),
        (
            "What gas do people need to breathe to stay alive?",
            "oxygen",
            ["helium", "neon", "argon"],
        ),
        ("How many months are in a year?", "12", ["10", "11", "13"]),
        ("What is the largest ocean on Earth?", "Pacific", ["Atlantic", "Indian", "Arctic"]),
        ("Which organ pumps blood through the body?", "heart", ["liver", "lungs", "brain"]),
        ("On which continent is Egypt?", "Africa", ["Asia", "Europe", "South America"]),
        ("Which planet is known as the Red Planet?", "Mars", ["Venus", "Saturn", "Neptune"]),
    ],
    3: [
        (
            "Who wrote 'Romeo and Juliet'?",
            "William Shakespeare",
            ["Charles Dickens", "Jane Austen", "Mark Twain"],
        ),
        ("What is the chemical symbol for gold?", "Au", ["Ag", "Gd", "Go"]),
        ("How many sides does a hexagon have?", "6", ["5", "7", "8"]),
        ("What is the capital of Australia?", "Canberra", ["Sydney", "Melbourne", "Perth"]),
        ("Which element has atomic number 1?", "hydrogen", ["helium", "oxygen", "carbon"]),
        ("At how many degrees Fahrenheit does water freeze?", "32", ["0", "100", "212"]),
        ("How many bones are in the body of an adult human?", "206", ["106", "186", "306"]),
        (
            "Who painted the Mona Lisa?",
            "Leonardo da Vinci",
            ["Pablo Picasso", "Vincent van Gogh", "Claude Monet"],
        ),
    ],
}


def _level_questions(rng: random.Random, level: int) -> list[Question]:
    questions: list[Question] = []
    seen: set[str] = set()
    for generator in GENERATORS[level]:
        made = 0
        while made < GENERATED_PER_KIND:
            text, answer, distractors = generator(rng)
            key = f"{text}|{answer}"
            if key in seen:
                continue
            seen.add(key)
            kind = generator.__name__.lstrip("_")
            questions.append(Question(text, answer, distractors, level, kind))
            made += 1
    for text, answer, distractors in WRITTEN[level]:
        questions.append(Question(text, answer, list(distractors), level, "knowledge"))
    rng.shuffle(questions)
    return questions[:PER_LEVEL]


def _as_item(rng: random.Random, q: Question, position: int) -> Item:
    options = list(q.distractors)
    rng.shuffle(options)
    options.insert(position, q.answer)
    lines = "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(options))
    return Item(
        id="",
        prompt=f"{q.text}\n{lines}",
        reference=LETTERS[position],
        task=NAME,
        meta={"difficulty": q.level, "kind": q.kind, "choices": options, "answer_text": q.answer},
    )


def _fewshot() -> list[Item]:
    shots = [
        Question("Which of these is a bird?", "robin", ["table", "carrot", "river"], 1, "fewshot"),
        Question("What is 9 minus 4?", "5", ["4", "6", "13"], 1, "fewshot"),
        Question(
            "Which month comes after March?", "April", ["May", "February", "June"], 2, "fewshot"
        ),
    ]
    items = [
        _as_item(random.Random(i), q, pos)
        for i, (q, pos) in enumerate(zip(shots, (2, 0, 3), strict=True))
    ]
    for i, item in enumerate(items):
        item.id = f"{NAME}-shot-{i}"
    return items


def build(seed: int = 0) -> Task:
    """The choice suite for `seed`: 60 items interleaved by level, each letter correct in one
    of every four consecutive items."""
    rng = random.Random(f"{NAME}:{seed}")
    questions = interleave([_level_questions(rng, level) for level in (1, 2, 3)])
    items: list[Item] = []
    for start in range(0, len(questions), len(LETTERS)):
        block = questions[start : start + len(LETTERS)]
        positions = rng.sample(range(len(LETTERS)), len(LETTERS))
        items.extend(_as_item(rng, q, pos) for q, pos in zip(block, positions, strict=True))
    return Task(
        name=NAME,
        description=DESCRIPTION,
        items=number_items(items, NAME),
        scorer=ChoiceScorer(letters=LETTERS),
        instruction=INSTRUCTION,
        fewshot=_fewshot(),
        stop=["\n"],
    )
