"""Scorers: find the answer in a model's output and compare it with the item's reference."""

from __future__ import annotations

import math
import re
import string
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from tradeoff.errors import UserError
from tradeoff.tasks.base import Scorer
from tradeoff.types import Item

SCORER_NAMES = ("numeric", "choice", "exact", "contains", "regex")
LETTERS = "ABCDEFGHIJ"

# A number as models and GSM8K write it: "-3", "$1,234.50", "0.5", ".5". A minus sign counts only
# where it cannot be a binary minus ("10-3" holds 10 and 3), and a trailing "." is a full stop.
_NUMBER = re.compile(
    r"(?<![\w.])(?:(?<![\w)])-)?\$?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
    r"|(?:(?<![\w)])-)?(?<!\d)\.\d+"
)
# A number standing alone in text, for `normalize`: an optional sign where it cannot be a binary
# minus, digits (comma-grouped in any way: "1,00,000"), an optional decimal part; not touching a
# word ("4a", "v2") or a dotted run ("1.10.0", "1.10.2024").
_NUMBER_PIECE = re.compile(
    r"((?:(?<![\w)])-)?(?<![\w.])\$?(?:\d+(?:,\d+)*(?:\.\d+)?|\.\d+)(?!\w|\.\d))"
)
# A reference that is a number and nothing else: "42", "-3", "+5", ".5", "$1,234.50", "12%",
# "42." (a full stop after it).
_BARE_NUMBER = re.compile(
    r"\s*[-+\u2212]?\s*\$?\s*(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)\s*%?\.?\s*"
)
# GSM8K's answer marker: "####" and a number that ends its line ("#### 42", as GSM8K writes it and
# lm-evaluation-harness's strict match reads it); a markdown heading ("#### Step 2: Add",
# "#### 2. Answer") is no marker.
_MARKED_NUMBER = re.compile(rf"####[ \t]*({_NUMBER.pattern})[ \t]*\.?[ \t\r]*$", re.MULTILINE)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCT_TO_SPACE = str.maketrans({c: " " for c in "-/_\u2013\u2014"})
_PUNCT_DELETE = str.maketrans("", "", string.punctuation + "\u2018\u2019\u201c\u201d")
# "Answer:", "Final answer -", and in markdown bold or italics: "**Answer:**", "**Answer**:".
_ANSWER_PREFIX = re.compile(
    r"^\s*[*_]*\s*(?:final\s+)?answer\s*[*_]*\s*[:\-]\s*[*_]*\s*", re.IGNORECASE
)


# The version of the text scorers' rules (`normalize`, `first_line`), in their repr and so in
# each stored item's hash: records scored by earlier rules are found on --resume, not mixed with
# new ones (2: a number keeps its sign and point; 3: "Answer:" on a line of its own, or in bold,
# is not the answer). The regex scorer, which reads no first line, keeps NORMALIZE_RULES.
TEXT_RULES = 3
NORMALIZE_RULES = 2

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def after_thinking(output: str) -> str:
    """The answer in a reasoning model's output: what follows a closed <think>...</think> at
    its start, and nothing where the thinking was never closed (it was cut off: no answer was
    given); any other output as it is. (A number in the thinking scored as the answer.)"""
    body = output.lstrip()
    if not body.startswith(THINK_OPEN):
        return output
    end = body.find(THINK_CLOSE)
    return "" if end < 0 else body[end + len(THINK_CLOSE) :]


def normalize(text: str) -> str:
    """Lowercase, drop accents, punctuation and the articles a/an/the, collapse whitespace.
    A number standing alone keeps its sign and decimal point ("-7", "2.5"; "1,234" as "1234",
    ".5" as "0.5"): the punctuation went from inside numbers too, so "-7" read as "7" and "2.5"
    as "25". Otherwise as written: "3.0" is not "3" here (the numeric scorer compares values),
    and digits within a word or a dotted run ("4a", "1.10.0") are left to the rules for text."""
    text = unicodedata.normalize("NFKD", text.replace("\u2212", "-"))
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    pieces = _NUMBER_PIECE.split(text)  # words, then a number, then words, ...
    words = [p.translate(_PUNCT_TO_SPACE).translate(_PUNCT_DELETE) for p in pieces[::2]]
    numbers = [_number_word(p) for p in pieces[1::2]]
    joined = " ".join(w for pair in zip(words, [*numbers, ""]) for w in pair)
    return " ".join(_ARTICLES.sub(" ", joined).split())


def _number_word(number: str) -> str:
    """A number as `normalize` writes it: as written, without its grouping commas and currency
    sign, a bare leading point given its zero."""
    number = number.replace(",", "").replace("$", "")
    return re.sub(r"^(-?)\.", r"\g<1>0.", number)


def alternatives(reference: str) -> list[str]:
    """The acceptable answers in a reference written as "USA|United States", normalized."""
    return [n for n in (normalize(part) for part in reference.split("|")) if n]


def canonical_number(text: str) -> str | None:
    """'1,234' -> '1234', '$3.50' -> '3.5', '-0' -> '0'; None when `text` is no number."""
    cleaned = text.replace("\u2212", "-").replace(",", "").replace("$", "").replace(" ", "")
    cleaned = cleaned.removesuffix(".").rstrip("%")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    # As text: exact (Decimal.normalize rounds to 28 digits, so two long numbers read as one)
    # and of any length (int() refuses a number of more than 4,300 digits, a crash mid-run on
    # a model that repeats a digit).
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def marked_number(text: str) -> str | None:
    """The number after the last "####" that a number follows (GSM8K's "#### 42"), canonical;
    None where there is none."""
    found = _MARKED_NUMBER.findall(text.replace("\u2212", "-"))
    return canonical_number(found[-1]) if found else None


def reference_number(reference: str) -> str | None:
    """The number a reference stands for: GSM8K style "...\\n#### 42", or a bare number."""
    if "####" in reference:
        return marked_number(reference)
    if _BARE_NUMBER.fullmatch(reference):
        return canonical_number(reference)
    return None


@dataclass(frozen=True)
class NumericScorer:
    """The last number in the output (or the one after "####"): two whole numbers compared
    exactly, a fraction within 1e-6 relative (a rounded decimal)."""

    name: str = "numeric"
    # In its repr, so in each item's hash: a resume sees them change (2: "####" marks the answer
    # only where a number follows it; 3: whole numbers compared exactly).
    rules: int = 3

    def parse(self, output: str) -> str | None:
        # Models trained on GSM8K mark their final answer the way its references do.
        marked = marked_number(output)
        if marked is not None:
            return marked
        numbers = _NUMBER.findall(output.replace("\u2212", "-"))
        return canonical_number(numbers[-1]) if numbers else None

    def score(self, output: str, item: Item) -> float:
        expected = reference_number(item.reference)
        got = self.parse(output)
        if expected is None or got is None:
            return 0.0
        if "." not in expected and "." not in got:
            # Whole numbers exactly: within 1e-6, 1234568 is 1234567.
            return 1.0 if expected == got else 0.0
        a, b = float(expected), float(got)
        return 1.0 if math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) else 0.0


@dataclass(frozen=True)
class ChoiceScorer:
    """The letter of a multiple-choice option, from "B", "(b)", "B) Paris", "The answer is B."."""

    name: str = "choice"
    letters: str = LETTERS  # the options' letters; "ABCD" for four options
    # In its repr, so in each item's hash: a resume sees them change (2: a lowercase letter or
    # an "A" before a word is read unless it is the article or the pronoun).
    rules: int = 2

    def parse(self, output: str) -> str | None:
        text = output.replace("*", "").strip()  # markdown bold: "**B**"
        letters = self.letters
        lower = letters.lower()
        # 1. An explicit statement: "the answer is B", "Answer: (c)", then "correct option is D".
        for keyword in ("answer", "option|choice"):
            for m in re.finditer(
                rf"\b(?:{keyword})\s*(?:is|would\s+be|should\s+be|must\s+be|=|-)?\s*:?\s*"
                rf"(?:option\s+|letter\s+)?(\(?)([{letters}{lower}])\b(\)?)",
                text,
                re.IGNORECASE,
            ):
                if m.group(2).isupper() or not _a_word(m):
                    return m.group(2).upper()
        # 2. The output starts with the letter: "B", "(B)", "b) Paris", "B. Paris", "b because".
        start = re.match(rf"(\(?)([{letters}{lower}])(\)?)(?=[.:,]?(?:\s|$))", text)
        if start and not _a_word(start):
            return start.group(2).upper()
        # 3. The first standalone capital letter, skipping "A" and "I" used as words ("I think").
        for m in re.finditer(rf"(?<![\w'])(\(?)([{letters}])(\)?)(?![\w'])", text):
            if not _a_word(m):
                return m.group(2)
        return None

    def score(self, output: str, item: Item) -> float:
        return 1.0 if self.parse(output) == item.reference.strip().upper() else 0.0


def _a_word(found: re.Match[str]) -> bool:
    """Whether the letter `found` (groups: an opening bracket, the letter, a closing bracket) is
    the article "a" or the pronoun "I" ("a cat", "I think"): no bracket, and a lowercase word
    follows that is not "is" or "because", which neither comes before ("A is correct")."""
    opening, letter, closing = found.group(1, 2, 3)
    after = found.string[found.end() :]
    return (
        not (opening or closing)
        and letter in "aAiI"
        and re.match(r"\s+(?!(?:is|because)\b)[a-z]", after) is not None
    )


def first_line(output: str) -> str:
    """The first line with something on it besides a leading "Answer:", without that prefix."""
    for line in output.splitlines():
        if answer := _ANSWER_PREFIX.sub("", line).strip():
            return answer
    return ""


@dataclass(frozen=True)
class ExactScorer:
    """The first non-empty line of the output equals one of the reference's alternatives,
    after normalization."""

    name: str = "exact"
    rules: int = TEXT_RULES  # in its repr, so in each item's hash: a resume sees them change

    def parse(self, output: str) -> str | None:
        return normalize(first_line(output)) or None

    def score(self, output: str, item: Item) -> float:
        got = self.parse(output)
        return 1.0 if got is not None and got in alternatives(item.reference) else 0.0


@dataclass(frozen=True)
class ContainsScorer:
    """One of the reference's alternatives appears as whole words near the start of the output,
    for short factual questions answered by chatty models."""

    name: str = "contains"
    rules: int = TEXT_RULES  # in its repr, so in each item's hash: a resume sees them change
    window: int = 200  # characters of the output searched; the answer comes first or not at all

    def parse(self, output: str) -> str | None:
        return normalize(first_line(output))[: self.window] or None

    def score(self, output: str, item: Item) -> float:
        haystack = f" {normalize(output[: self.window])} "
        found = any(f" {alt} " in haystack for alt in alternatives(item.reference))
        return 1.0 if found else 0.0


@dataclass(frozen=True)
class RegexScorer:
    """The first match of a user pattern's group in the output, compared (normalized) with the
    reference's alternatives."""

    pattern: str
    name: str = "regex"
    rules: int = NORMALIZE_RULES  # not `first_line`'s: a regex reads the whole output
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            compiled = re.compile(self.pattern)
        except re.error as e:
            raise UserError(
                f"regex pattern {self.pattern!r} does not compile ({e}); "
                "give a Python regular expression with one group, e.g. 'Answer: (\\w+)'"
            ) from None
        if compiled.groups < 1:
            raise UserError(
                f"regex pattern {self.pattern!r} has no group; put the answer in parentheses, "
                "e.g. 'Answer: (\\w+)'"
            )
        object.__setattr__(self, "_compiled", compiled)

    def parse(self, output: str) -> str | None:
        m = self._compiled.search(output)
        if m is None or m.group(1) is None:
            return None
        return normalize(m.group(1)) or None

    def score(self, output: str, item: Item) -> float:
        got = self.parse(output)
        return 1.0 if got is not None and got in alternatives(item.reference) else 0.0


def make_scorer(name: str, pattern: str | None = None) -> Scorer:
    """The scorer called `name`; `pattern` (one group) is for the regex scorer and only it."""
    if name not in SCORER_NAMES:
        raise UserError(f"scorer {name!r} is not known; scorers: {', '.join(SCORER_NAMES)}")
    if name == "regex":
        if not pattern:
            raise UserError(
                "the regex scorer needs a pattern with one group, e.g. --pattern 'Answer: (\\w+)'"
            )
        return RegexScorer(pattern)
    if pattern:
        raise UserError(
            f"a pattern applies only to the regex scorer, not to {name!r}; "
            "use --scorer regex with it, or drop it"
        )
    scorers: dict[str, Scorer] = {
        "numeric": NumericScorer(),
        "choice": ChoiceScorer(),
        "exact": ExactScorer(),
        "contains": ContainsScorer(),
    }
    return scorers[name]
