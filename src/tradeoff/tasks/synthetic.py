"""`synthetic:prompt=N,output=N[,stdev=S][,seed=K][,n=M]`: generated prompts of given token
lengths for pure load, unscored. Each item asks for its own number of output tokens (meta
`max_tokens`), which requests ask for exactly: `openai:` upstreams get `ignore_eos` and
`min_tokens`, in-process engines still stop at their end-of-sequence token."""

from __future__ import annotations

import random
from dataclasses import dataclass

from tradeoff.errors import UserError
from tradeoff.tasks.base import Task
from tradeoff.types import Item

PREFIX = "synthetic:"
# Beyond any model's context (the longest are about 10M tokens): a larger length is a typo, and
# building its prompts would take all memory.
MAX_TOKENS = 10_000_000
MAX_ITEMS = 1_000_000
# Prompt tokens of all n items together: they are built at once (about 10 s and 1 GB here).
MAX_TOTAL = 50_000_000
FORM = (
    "synthetic:prompt=N,output=N[,stdev=S][,seed=K][,n=M] (whole numbers > 0, seed >= 0, "
    f"stdev >= 0; lengths and stdev at most {MAX_TOKENS:,}, n at most {MAX_ITEMS:,}; e.g. "
    "synthetic:prompt=256,output=128)"
)

# Common English words that are one token each, after a space, in the BPE vocabularies of
# SmolLM2 and Gemma 3 (checked with their tokenizers), as in GPT-2's and Llama's: a prompt of N
# of them is about N tokens. About: a chat template or completion prompt adds its own, and other
# tokenizers may split a few words; each record stores the input tokens the server counted.
_WORD_LIST = """
the of and to in is that it for was on are as with his they at be this have from or one had by word
but not what all were we when your can said there use an each which she do how their if will up
other about out many then them these so some her would make like him into time has look two more
write go see number no way could people my than first water been call who its now find long down day
did get come made may part over new sound take only little work know place year live me back give
most very after thing our just name good man think say great where help through much before line
right too mean old any same tell boy follow came want show also around form three small set put end
does another well large must big even such because turn here why ask went men read need land
different home us move try kind hand picture again change off play spell air away animal house point
page letter mother answer found study still learn should world high every near add food between own
below country plant last school father keep tree never start city earth eye light thought head under
story saw left few while along might close something seem next hard open example begin life always
those both paper together got group often run important until children side feet car mile night
walk white sea began grow took river four carry state once book hear stop without second later miss
idea enough eat face watch far real almost let above girl sometimes mountain cut young talk soon
list song being leave family
"""
WORDS = _WORD_LIST.split()


@dataclass(frozen=True)
class Synthetic:
    """What a `synthetic:` reference asks for: prompts of `prompt` tokens, outputs of `output`
    tokens (normal with standard deviation `stdev`, at least 1), `n` items drawn from `seed`."""

    prompt: int
    output: int
    stdev: float = 0.0
    seed: int = 0
    n: int = 1000

    @property
    def name(self) -> str:
        """The reference written canonically: keys in order, defaults left out."""
        parts = [f"prompt={self.prompt}", f"output={self.output}"]
        if self.stdev:
            parts.append(f"stdev={_shortest(self.stdev)}")
        if self.seed:
            parts.append(f"seed={self.seed}")
        if self.n != Synthetic.n:
            parts.append(f"n={self.n}")
        return PREFIX + ",".join(parts)


def _shortest(value: float) -> str:
    """`value` as `:g` writes it where that is the value (names of runs so far), else whole: two
    deviations `:g` wrote alike (1.23456789 and 1.234571) named one task."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def _bad(ref: str, problem: str) -> UserError:
    return UserError(f"task {ref!r}: {problem}; the form is {FORM}")


def parse(ref: str) -> Synthetic:
    """The lengths a `synthetic:` reference names; UserError naming the valid form if malformed."""
    values: dict[str, float] = {}
    for part in ref.strip().removeprefix(PREFIX).split(","):
        key, sep, text = (s.strip() for s in part.partition("="))
        if not sep:
            raise _bad(ref, f"{part.strip()!r} is not KEY=VALUE")
        if key not in Synthetic.__dataclass_fields__:
            raise _bad(ref, f"unknown key {key!r}")
        if key in values:
            raise _bad(ref, f"{key} is given twice")
        try:
            value = float(text) if key == "stdev" else int(text)
        except ValueError:
            raise _bad(ref, f"{key}={text!r} is not a number") from None
        if key in ("prompt", "output", "n") and value <= 0:
            raise _bad(ref, f"{key}={text} must be positive")
        if key in ("stdev", "seed") and not value >= 0:  # NaN included
            raise _bad(ref, f"{key}={text} must be >= 0")
        most = MAX_ITEMS if key == "n" else MAX_TOKENS if key != "seed" else None
        if most is not None and value > most:
            raise _bad(ref, f"{key}={text} is more than {most:,}")
        values[key] = value
    missing = [key for key in ("prompt", "output") if key not in values]
    if missing:
        raise _bad(ref, f"{' and '.join(missing)} missing")
    n = values.get("n", Synthetic.n)
    if values["prompt"] * n > MAX_TOTAL:
        raise _bad(
            ref, f"{n:,.0f} prompts of {values['prompt']:,.0f} tokens are more than "
            f"{MAX_TOTAL:,} tokens to build; give a smaller n",
        )  # fmt: skip
    return Synthetic(
        prompt=int(values["prompt"]),
        output=int(values["output"]),
        stdev=values.get("stdev", 0.0),
        seed=int(values.get("seed", 0)),
        n=int(values.get("n", Synthetic.n)),
    )


@dataclass(frozen=True)
class Unscored:
    """The scorer of a task without answers: it finds none. Runs never call `score`: the task is
    not `scored`, so its records store score None."""

    name: str = "none"

    def parse(self, output: str) -> str | None:
        return None

    def score(self, output: str, item: Item) -> float:
        raise TypeError("an unscored task's outputs have no score")


def build(ref: str) -> Task:
    """The task a `synthetic:` reference names, the same for the same reference."""
    spec = parse(ref)
    rng = random.Random(f"synthetic:{spec.seed}")
    items = []
    for i in range(spec.n):
        words = rng.choices(WORDS, k=spec.prompt)
        output = (
            min(MAX_TOKENS, max(1, round(rng.gauss(spec.output, spec.stdev))))
            if spec.stdev
            else spec.output
        )
        items.append(
            Item(
                id=f"synthetic-{i:04d}",
                prompt=" ".join(words),
                reference="",
                task=spec.name,
                meta={"max_tokens": output},
            )
        )
    return Task(
        name=spec.name,
        description=(
            f"{spec.n} generated prompts of about {spec.prompt} tokens asking for "
            f"{spec.output}{f' ± {spec.stdev:g}' if spec.stdev else ''} output tokens (unscored)"
        ),
        items=items,
        exact_lengths=True,
        scorer=Unscored(),
        stop=[],  # a stop string would end an output before the length it asks for
        scored=False,
    )
