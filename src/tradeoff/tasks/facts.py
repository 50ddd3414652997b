"""The built-in `facts` suite: short factual questions written for this project, in three levels,
answered in a few words and checked by the `contains` scorer ("|" separates accepted answers)."""

from __future__ import annotations

import random

from tradeoff.tasks.base import Task, interleave, number_items
from tradeoff.tasks.scorers import ContainsScorer
from tradeoff.types import Item

NAME = "facts"
DESCRIPTION = "short factual questions in 3 levels, written for tradeoff (answer in a few words)"
INSTRUCTION = "Answer in a few words."

# (question, accepted answers). No accepted answer appears in its own question, so a model that
# only repeats the question scores 0.
FACTS: dict[int, list[tuple[str, str]]] = {
    1: [
        ("What colour is the sky on a clear day?", "blue"),
        ("What colour is a ripe banana?", "yellow"),
        ("Which animal barks?", "dog|dogs|puppy"),
        ("Which animal says meow?", "cat|cats|kitten"),
        ("How many legs does a cat have?", "4|four"),
        ("What day comes after Monday?", "Tuesday"),
        ("What month comes after January?", "February"),
        ("What is the opposite of hot?", "cold"),
        ("What is the opposite of up?", "down"),
        ("What do we call frozen water?", "ice"),
        ("What colour is snow?", "white"),
        ("How many days are in a week?", "7|seven"),
        ("What is the opposite of big?", "small|little|tiny"),
        ("What do you call a baby dog?", "puppy|pup"),
        ("What colour is grass?", "green"),
        ("What is the opposite of day?", "night"),
        ("What shape is a ball?", "round|sphere|spherical|circle"),
        ("Where do fish live?", "water|sea|ocean|river|lake|pond|aquarium"),
        ("How many eyes does a person have?", "2|two"),
        ("What is two plus two?", "4|four"),
        ("What sweet food do bees make?", "honey"),
        ("Which season comes after winter?", "spring"),
    ],
    2: [
        ("What is the capital of France?", "Paris"),
        ("What is the capital of Japan?", "Tokyo"),
        ("What is the capital of Italy?", "Rome"),
        ("What is the capital of Spain?", "Madrid"),
        ("What is the capital of Germany?", "Berlin"),
        ("What is the capital of the United Kingdom?", "London"),
        ("How many months are in a year?", "12|twelve"),
        ("How many legs does a spider have?", "8|eight"),
        ("What is the largest planet in our solar system?", "Jupiter"),
        ("Which planet do we live on?", "Earth"),
        ("What is the opposite of asleep?", "awake"),
        ("What is the biggest ocean on Earth?", "Pacific"),
        ("Which gas do people breathe in to stay alive?", "oxygen|O2"),
        ("At how many degrees Celsius does water boil?", "100|one hundred|hundred"),
        ("What is the tallest animal in the world?", "giraffe|giraffes"),
        ("What is the largest mammal?", "whale|whales"),
        ("How many continents are there on Earth?", "7|seven"),
        ("What colour do you get by mixing blue and yellow?", "green"),
        ("What colour do you get by mixing red and white?", "pink"),
        ("Which country is home to the kangaroo?", "Australia"),
        ("Which month of the year has the fewest days?", "February"),
        ("What is the largest country in the world by area?", "Russia|Russian Federation"),
    ],
    3: [
        ("What is the capital of Australia?", "Canberra"),
        ("What is the capital of Canada?", "Ottawa"),
        ("What is the chemical symbol for gold?", "Au"),
        ("What is the chemical symbol for sodium?", "Na"),
        ("Who wrote the play Romeo and Juliet?", "Shakespeare"),
        ("Who painted the Mona Lisa?", "Leonardo|da Vinci|Vinci"),
        ("What is the hardest natural material?", "diamond|diamonds"),
        ("How many sides does a hexagon have?", "6|six"),
        ("What is the smallest prime number?", "2|two"),
        ("What is the square root of 144?", "12|twelve"),
        ("What is the longest river in Africa?", "Nile"),
        ("In which year did the Second World War end?", "1945"),
        ("Which planet is closest to the Sun?", "Mercury"),
        ("How many bones are in the body of an adult human?", "206"),
        ("At how many degrees Fahrenheit does water freeze?", "32|thirty two|thirty-two"),
        ("Which gas makes up most of the air we breathe?", "nitrogen|N2"),
        ("Which language has the most native speakers?", "Mandarin|Chinese"),
        ("What is the capital of Brazil?", "Brasilia"),
        ("Who developed the theory of relativity?", "Einstein"),
        ("What is the currency of Japan?", "yen"),
        ("How many players does a football team have on the field?", "11|eleven"),
        ("What is the common name for H2O?", "water"),
    ],
}

FEWSHOT: list[tuple[str, str]] = [
    ("What colour is a tomato?", "red"),
    ("What is the capital of Egypt?", "Cairo"),
    ("How many wheels does a bicycle have?", "2|two"),
]


def build(seed: int = 0) -> Task:
    """The facts suite: every written question, shuffled within its level by `seed` and
    interleaved by level."""
    rng = random.Random(f"{NAME}:{seed}")
    levels: list[list[Item]] = []
    for level in (1, 2, 3):
        items = [
            Item(id="", prompt=q, reference=ref, task=NAME, meta={"difficulty": level})
            for q, ref in FACTS[level]
        ]
        rng.shuffle(items)
        levels.append(items)
    fewshot = [
        Item(id=f"{NAME}-shot-{i}", prompt=q, reference=ref, task=NAME, meta={"difficulty": 1})
        for i, (q, ref) in enumerate(FEWSHOT)
    ]
    return Task(
        name=NAME,
        description=DESCRIPTION,
        items=number_items(interleave(levels), NAME),
        scorer=ContainsScorer(),
        instruction=INSTRUCTION,
        fewshot=fewshot,
        stop=["\n"],
    )
