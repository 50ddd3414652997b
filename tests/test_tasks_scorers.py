"""Scorers: answers found the way models write them, and wrong answers not mistaken for right."""

from __future__ import annotations

import pytest

from tradeoff.errors import UserError
from tradeoff.tasks import make_scorer, normalize
from tradeoff.tasks.scorers import ChoiceScorer
from tradeoff.types import Item


def item(reference: str) -> Item:
    return Item(id="x", prompt="q", reference=reference, task="t")


GSM8K_REF = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether 48+24 = 72.\n#### 72"


@pytest.mark.parametrize(
    ("output", "reference", "expected"),
    [
        ("The answer is 42.", "42", 1.0),
        ("72", GSM8K_REF, 1.0),
        ("She sold 48 + 24 = 72 clips.", GSM8K_REF, 1.0),
        ("She sold 24 clips in May.", GSM8K_REF, 0.0),
        ("The total is 1,234.", "#### 1,234", 1.0),
        ("The total is 1234", "1,234", 1.0),
        ("It costs $1,234.50 in all.", "1234.5", 1.0),
        ("It is -7 degrees.", "-7", 1.0),
        ("It is 7 degrees.", "-7", 0.0),
        ("10-3=7", "7", 1.0),
        ("First 3, then 5, so the answer is 8", "8", 1.0),
        ("First 3, then 5, so the answer is 8", "5", 0.0),
        ("3.50", "3.5", 1.0),
        ("about .5", "0.5", 1.0),
        ("The speed is 120km per hour", "120", 1.0),
        ("0.3333331", "0.333333", 1.0),
        ("0.3334", "0.333333", 0.0),
        ("so 5 + 3 = 8\n#### 8\nNext question: 10", "8", 1.0),
        ("I don't know", "4", 0.0),
        ("4", "four", 0.0),  # a reference that is no number never scores
        ("\u22125", "-5", 1.0),  # the Unicode minus sign
    ],
)
def test_numeric_score(output: str, reference: str, expected: float) -> None:
    assert make_scorer("numeric").score(output, item(reference)) == expected


@pytest.mark.parametrize(
    ("output", "reference", "expected"),
    [
        ("#### 2,500,002", "#### 2500000", 0.0),
        ("The answer is 1234568.", "1234567", 0.0),
        ("10000009", "10000000", 0.0),
        ("The answer is 1,234,567.", "1234567", 1.0),
        ("1234567.0", "1234567", 1.0),
        ("2500000.0000001", "2500000", 1.0),  # a fraction: compared within 1e-6 relative
    ],
)
def test_numeric_whole_numbers_are_compared_exactly(
    output: str, reference: str, expected: float
) -> None:
    """Within 1e-6 relative, two whole numbers from a million up that differ by one or more
    compared equal: 1234568 scored right for 1234567."""
    assert make_scorer("numeric").score(output, item(reference)) == expected


@pytest.mark.parametrize(
    ("output", "parsed"),
    [
        ("#### Step 1: Multiply\n3 * 4 = 12\n#### Step 2: Add\n12 + 5 = 17\nSo 17.", "17"),
        ("#### Solution for 2 boxes\nEach box holds 12, so 24.", "24"),
        ("#### 8\n#### Check: 2 * 4 = 8, done in 3 steps", "8"),
        ("####42", "42"),
        ("#### 1. Read the problem\n#### 2. Answer\nThe answer is 17.", "17"),
        ("#### 2 Compute\n12 + 5 = 17", "17"),
        ("so 5 + 3 = 8\n#### 8.\n", "8"),
        ("so 5 + 3 = 8\r\n#### 8\r\nNext: 10\r\n", "8"),  # Windows line endings
    ],
)
def test_numeric_marker_is_four_hashes_before_a_number(output: str, parsed: str) -> None:
    """A markdown heading ("#### Step 2") was read as GSM8K's answer marker, and the first
    number after it (the step's) as the answer."""
    assert make_scorer("numeric").parse(output) == parsed


@pytest.mark.parametrize(
    ("output", "parsed"),
    [
        ("1,234.50", "1234.5"),
        ("42.0", "42"),
        ("-0", "0"),
        ("The answer is $1,000,000.", "1000000"),
        ("It was 3-4 hours", "4"),
        ("x2 and y3", None),
        ("no number", None),
        ("50%", "50"),
    ],
)
def test_numeric_parse_is_canonical(output: str, parsed: str | None) -> None:
    assert make_scorer("numeric").parse(output) == parsed


@pytest.mark.parametrize(
    ("output", "letter"),
    [
        ("B", "B"),
        ("(B)", "B"),
        ("B)", "B"),
        ("B. Paris", "B"),
        ("b", "B"),
        ("The answer is B.", "B"),
        ("Answer: b", "B"),
        ("answer: (c)", "C"),
        ("**C**", "C"),
        ("I think the answer is (D) because it is big.", "D"),
        ("Option A is wrong; the answer is C.", "C"),
        ("The correct option is D", "D"),
        ("I think it's B", "B"),
        ("A cat is an animal, so D.", "D"),
        ("B because it is larger", "B"),
        ("The answer is a cat", None),
        ("Nothing to see here", None),
        ("", None),
    ],
)
def test_choice_parse(output: str, letter: str | None) -> None:
    assert make_scorer("choice").parse(output) == letter


@pytest.mark.parametrize(
    ("output", "letter"),
    [
        ("The answer is b because the sky is blue.", "B"),
        ("The answer is (b) paris", "B"),
        ("Answer: c is right", "C"),
        ("option b is correct", "B"),
        ("(c) apple", "C"),
        ("(a) Paris", "A"),
        ("b) Paris", "B"),
        ("b. paris", "B"),
        ("A is correct.", "A"),
        ("A because it is bigger", "A"),
        ("the answer is a because it is bigger", "A"),
        ("a dog", None),  # the article, still
        ("the answer is a dog", None),
        ("i think so", None),
        ("e.g. nothing", None),
    ],
)
def test_choice_reads_a_letter_before_a_word(output: str, letter: str | None) -> None:
    """Only "a" can be an article and "i" a pronoun, but every lowercase letter a word followed
    ("the answer is b because", "(c) apple") was read as none, and "A is correct" read as none
    where "B is correct" read B."""
    assert ChoiceScorer(letters="ABCD").parse(output) == letter


def test_choice_letters_limit_the_options() -> None:
    four = ChoiceScorer(letters="ABCD")
    assert four.parse("E") is None
    assert four.parse("I think it is C") == "C"
    assert make_scorer("choice").parse("E") == "E"


def test_choice_score() -> None:
    scorer = make_scorer("choice")
    assert scorer.score("The answer is C.", item("C")) == 1.0
    assert scorer.score("The answer is C.", item("c")) == 1.0
    assert scorer.score("The answer is B.", item("C")) == 0.0
    assert scorer.score("no idea", item("C")) == 0.0


def test_normalize() -> None:
    assert normalize("  The U.S.A.! ") == "usa"
    assert normalize("An Apple,  a PEAR") == "apple pear"
    assert normalize("Brasília") == "brasilia"
    assert normalize("thirty-two") == "thirty two"


@pytest.mark.parametrize(
    ("scorer", "output", "reference", "expected"),
    [
        ("exact", "7", "-7", 0.0),  # the sign went with the punctuation: "-7" read as "7"
        ("exact", "-7", "-7", 1.0),
        ("exact", "\u22127", "-7", 1.0),  # a minus sign written as such
        ("exact", "25", "2.5", 0.0),  # the point went too: "2.5" read as "25"
        ("exact", "5", ".5", 0.0),
        ("exact", "0.5", ".5", 1.0),
        ("exact", "3,14", "3.14", 0.0),
        ("exact", "1,234", "1234", 1.0),
        ("exact", "1,00,000", "100000", 1.0),  # grouped in any way
        # as written otherwise: a version, a dotted date, digits in a word
        ("exact", "3.1", "3.10", 0.0),
        ("exact", "Python 3.1", "Python 3.10", 0.0),
        ("exact", "1.1.0", "1.10.0", 0.0),
        ("exact", "1.1.2024", "1.10.2024", 0.0),
        ("exact", "Room 4", "Room 4a", 0.0),
        ("exact", "1" * 5000, "Paris", 0.0),  # a model repeating a digit: no crash
        ("exact", "7", "007", 0.0),  # leading zeros: an identifier, kept as written
        ("exact", "007", "007", 1.0),
        ("contains", "It is 7 degrees.", "Paris|-7", 0.0),
        ("contains", "It is -7 degrees.", "Paris|-7", 1.0),
        ("contains", "The ratio is 25 to 1.", "2.5|Paris", 0.0),
        ("contains", "The ratio is 2.5.", "2.5|Paris", 1.0),
        ("contains", "Paris, of course.", "Paris|-7", 1.0),
    ],
)
def test_text_scorers_keep_a_numbers_sign_and_point(
    scorer: str, output: str, reference: str, expected: float
) -> None:
    assert make_scorer(scorer).score(output, item(reference)) == expected


@pytest.mark.parametrize("reference", [".5", "+5", "42.", "5%."])
def test_a_reference_written_as_outputs_write_numbers_is_a_number(reference: str) -> None:
    """The forms the numeric scorer reads in an output, read in a reference too (".5" was
    "not a number", and an automatic choice fell to `contains`)."""
    value = float(reference.strip("+.%") if reference != ".5" else reference)
    assert make_scorer("numeric").score(f"It is {value}", item(reference)) == 1.0
    assert make_scorer("numeric").score("It is 7", item(reference)) == 0.0


@pytest.mark.parametrize(
    ("output", "reference", "expected"),
    [
        ("The United States.", "USA|United States", 1.0),
        ("usa", "USA|United States", 1.0),
        ("Paris\nIt is the capital of France.", "Paris", 1.0),
        ("\n\nAnswer: Paris", "Paris", 1.0),
        ("Paris is the capital", "Paris", 0.0),
        ("London", "Paris", 0.0),
        ("", "Paris", 0.0),
    ],
)
def test_exact_score(output: str, reference: str, expected: float) -> None:
    assert make_scorer("exact").score(output, item(reference)) == expected


@pytest.mark.parametrize(
    "output",
    ["Answer:\nParis", "Final answer:\n\nParis", "**Answer:** Paris", "**Answer**: Paris"],
)
def test_an_answer_prefix_on_its_own_line_or_in_bold_is_not_the_answer(output: str) -> None:
    """ "Answer:" on a line of its own was read as the answer (nothing), and "**Answer:**" was
    not taken for the prefix ("answer paris"), so exact scored Paris wrong and vote found no
    answer."""
    assert make_scorer("exact").parse(output) == "paris"
    assert make_scorer("exact").score(output, item("Paris")) == 1.0
    assert make_scorer("contains").parse(output) == "paris"


@pytest.mark.parametrize(
    ("output", "reference", "expected"),
    [
        ("I believe it is Paris, France.", "Paris", 1.0),
        ("Parisian food is good.", "Paris", 0.0),
        ("It is the United States of America.", "USA|United States", 1.0),
        ("The capital is Brasília.", "Brasilia", 1.0),
        ("A spider has eight legs.", "8|eight", 1.0),
        ("A spider has 6 legs.", "8|eight", 0.0),
        ("x" * 300 + " Paris", "Paris", 0.0),  # past the first 200 characters
        ("It is made of red blood cells.", "red blood cells|red", 1.0),
    ],
)
def test_contains_score(output: str, reference: str, expected: float) -> None:
    assert make_scorer("contains").score(output, item(reference)) == expected


def test_contains_parse_is_the_normalized_first_line() -> None:
    assert make_scorer("contains").parse("The Paris.\nmore") == "paris"
    assert make_scorer("contains").parse("  \n ") is None


def test_regex_scorer() -> None:
    scorer = make_scorer("regex", pattern=r"Answer: (\w+)")
    assert scorer.name == "regex"
    assert scorer.parse("thinking... Answer: Blue.") == "blue"
    assert scorer.score("thinking... Answer: Blue.", item("blue|azure")) == 1.0
    assert scorer.score("thinking... Answer: red", item("blue")) == 0.0
    assert scorer.parse("no match here") is None
    assert scorer.score("no match here", item("blue")) == 0.0


@pytest.mark.parametrize(
    ("name", "pattern", "message"),
    [
        ("fuzzy", None, "scorers: numeric, choice, exact, contains, regex"),
        ("regex", None, "needs a pattern"),
        ("regex", "Answer: \\w+", "has no group"),
        ("regex", "Answer: (", "does not compile"),
        ("numeric", "(\\d+)", "only to the regex scorer"),
    ],
)
def test_make_scorer_errors(name: str, pattern: str | None, message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        make_scorer(name, pattern)
    assert "\n" not in str(err.value)


def test_scores_stay_in_unit_interval() -> None:
    outputs = ["", "42", "B", "Paris", "-1e400", "\n\n\n", "Answer: x" * 50]
    for name, pattern in [
        ("numeric", None),
        ("choice", None),
        ("exact", None),
        ("contains", None),
        ("regex", r"Answer: (\w+)"),
    ]:
        scorer = make_scorer(name, pattern)
        for out in outputs:
            assert 0.0 <= scorer.score(out, item("42")) <= 1.0


def test_numbers_are_compared_exactly_at_any_length() -> None:
    """canonical_number rounded to 28 digits (two long numbers read as one) and refused more
    than 4,300 digits (a crash mid-run)."""
    from tradeoff.tasks.scorers import canonical_number

    assert canonical_number("0.1234567890123456789012345678901") != canonical_number(
        "0.1234567890123456789012345678902"
    )
    assert canonical_number("1" * 5000) == "1" * 5000
    assert [canonical_number(t) for t in ("-0", "3.50", "1,234", "1e5", "0.000")] == [
        "0", "3.5", "1234", "100000", "0",
    ]  # fmt: skip
    assert make_scorer("numeric").score("7" * 5000, item("7")) == 0.0


def test_the_regex_scorer_keeps_the_rules_version_its_stored_runs_were_hashed_with():
    """The text scorers' version went to 3 for how `exact` and `contains` read the first line;
    the regex scorer reads no first line, yet took it too, so every regex-scored run stored
    before it read as changed on --resume (and load --resume had no way on)."""
    from tradeoff.tasks.scorers import RegexScorer

    assert (
        repr(RegexScorer(pattern=r"(\d+)"))
        == "RegexScorer(pattern='(\\\\d+)', name='regex', rules=2)"
    )
