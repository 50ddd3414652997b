"""Loaders: JSONL files and Hugging Face datasets written here, read offline, with errors that
name the line and what would be valid."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tradeoff.errors import UserError
from tradeoff.tasks import build_request, load_task
from tradeoff.tasks.loaders import Fields, jsonl_rows, row_to_item

try:
    import datasets
except ImportError:  # the JSONL tests still run; the hf: ones need the optional package
    datasets = None

needs_datasets = pytest.mark.skipif(datasets is None, reason="the 'datasets' package is needed")


def write_jsonl(path: Path, rows: list[Any], blank_after: int | None = None) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    if blank_after is not None:
        lines.insert(blank_after, "   ")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def user_error(ref: str, **kwargs: Any) -> str:
    with pytest.raises(UserError) as err:
        load_task(ref, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


# JSONL --------------------------------------------------------------------------------------


def test_jsonl_numeric_with_ids_and_blank_lines(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"id": "a", "prompt": "What is 2+2?", "answer": "4", "difficulty": 1},
            {"id": "b", "prompt": "What is 6*7?", "answer": 42},
            {"id": "c", "prompt": "Natalia?", "answer": "48 + 24 = 72\n#### 72"},
        ],
        blank_after=1,
    )
    task = load_task(f"jsonl:{path}")
    assert task.name == f"jsonl:{path}"
    assert [it.id for it in task.items] == ["a", "b", "c"]
    assert task.scorer.name == "numeric"
    assert task.instruction == "Answer with just the final number."
    assert task.items[0].meta == {"difficulty": 1}
    assert task.items[1].reference == "42"
    assert task.scorer.score("It is 72.", task.items[2]) == 1.0
    assert all(it.task == task.name for it in task.items)
    assert task.fewshot == []


def test_jsonl_ids_default_to_line_numbers(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"prompt": "Capital of France?", "answer": ["Paris", "paris, france"]},
            {"prompt": "Colour of the sky?", "answer": "blue"},
        ],
        blank_after=1,
    )
    task = load_task(str(path))  # a bare .jsonl path works too
    assert [it.id for it in task.items] == ["1", "3"]
    assert task.scorer.name == "contains"
    assert task.items[0].reference == "Paris|paris, france"
    assert task.scorer.score("It is Paris.", task.items[0]) == 1.0


def test_jsonl_letters_pick_the_choice_scorer(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "Pick\nA. x\nB. y", "answer": "b"}])
    task = load_task(f"jsonl:{path}")
    assert task.scorer.name == "choice"
    assert task.scorer.score("(B)", task.items[0]) == 1.0


def test_jsonl_choices_are_rendered_as_options(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"question": "Largest?", "choices": ["1", "9", "3"], "answer": 1},
            {"question": "Smallest?", "choices": ["5", "2", "8"], "answer": "A"},
            {"question": "Middle?", "choices": ["5", "2", "8"], "answer": "5"},
        ],
    )
    task = load_task(f"jsonl:{path}")
    assert task.scorer.name == "choice"
    assert task.items[0].prompt == "Largest?\nA. 1\nB. 9\nC. 3"
    assert [it.reference for it in task.items] == ["B", "A", "A"]
    assert task.scorer.parse("D") is None  # three options: A to C


def test_options_a_later_line_gives_are_read_though_the_first_has_none(tmp_path: Path) -> None:
    """Only the first line's fields were read: a later line's options were dropped, and its
    question asked and scored as free text (the word "b" looked for), with no word."""
    rows = [
        {"prompt": "Which is a fruit?\nA. pear\nB. stone", "answer": "A"},  # options inline
        {"prompt": "Which is a colour?", "answer": "B", "choices": ["car", "red", "rock"]},
    ]
    task = load_task(f"jsonl:{write_jsonl(tmp_path / 'q.jsonl', rows)}")
    assert task.items[1].prompt == "Which is a colour?\nA. car\nB. red\nC. rock"
    assert task.items[1].meta["choices"] == ["car", "red", "rock"]
    # as with the lines the other way round, a free-text line among options is said
    rows[0]["answer"] = "Paris"
    with pytest.raises(UserError, match="line 1: answer 'Paris' is not a letter A-J"):
        load_task(f"jsonl:{write_jsonl(tmp_path / 'mixed.jsonl', rows)}")


def test_jsonl_with_a_byte_order_mark_reads_as_without(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompt": "2+2?", "answer": "4"}).encode())
    (item,) = load_task(f"jsonl:{path}").items
    assert (item.prompt, item.reference) == ("2+2?", "4")


def test_jsonl_messages_prompt(tmp_path: Path) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+3?"}]
    path = write_jsonl(tmp_path / "q.jsonl", [{"messages": messages, "answer": "5"}])
    task = load_task(f"jsonl:{path}")
    it = task.items[0]
    assert it.prompt == messages
    chat = build_request(task, it, "chat", max_tokens=8, temperature=0, seed=None)
    assert chat.messages == messages
    completion = build_request(task, it, "completion", max_tokens=8, temperature=0, seed=None)
    assert completion.prompt == "Question: 2+3?\nAnswer:"


def test_jsonl_field_overrides_and_forced_scorer(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "q.jsonl",
        [{"key": "k1", "q": "Say yes", "a": "YES", "prompt": "ignored", "answer": "no"}],
    )
    task = load_task(
        f"jsonl:{path}", prompt_field="q", answer_field="a", id_field="key", scorer="exact"
    )
    it = task.items[0]
    assert (it.id, it.prompt, it.reference) == ("k1", "Say yes", "YES")
    assert it.meta == {"prompt": "ignored", "answer": "no"}
    assert task.scorer.name == "exact"
    assert task.scorer.score("yes", it) == 1.0
    regex = load_task(f"jsonl:{path}", prompt_field="q", answer_field="a", pattern=r"final: (\w+)")
    assert regex.scorer.name == "regex"
    assert regex.scorer.score("so... final: Yes", regex.items[0]) == 1.0


def test_jsonl_missing_file(tmp_path: Path) -> None:
    message = user_error(f"jsonl:{tmp_path}/nope.jsonl")
    assert "nope.jsonl" in message and "does not exist" in message


@pytest.mark.parametrize(
    "name", ["jsonl:~nosuchuser-of-this-host/x.jsonl", "~nosuchuser-of-this-host/x.jsonl"]
)
def test_a_home_of_no_user_is_a_missing_file_not_a_crash(name: str) -> None:
    message = user_error(
        name
    )  # pathlib's expanduser raised RuntimeError ("Could not determine home")
    assert "~nosuchuser-of-this-host/x.jsonl" in message and "does not exist" in message


def test_jsonl_directory_and_bad_encoding(tmp_path: Path) -> None:
    assert "is a directory" in user_error(f"jsonl:{tmp_path}")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'\xef\xbb\xbf{"prompt": "a", "answer": "x"}\n{"prompt": "caf\xe9"}\n')
    # the offset in the file: past the byte-order mark, which the decoder did not count
    assert "line 2 is not UTF-8 text (byte 0xe9 at offset 49)" in user_error(f"jsonl:{bad}")


def test_jsonl_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "q.jsonl",
        [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "2"}, '{"prompt": "c", '],
    )
    message = user_error(f"jsonl:{path}")
    assert "line 3 is not valid JSON" in message


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "a", "answer": "1"}, "[1, 2]"])
    assert "line 2 is a JSON list, not an object" in user_error(f"jsonl:{path}")


def test_jsonl_missing_field_names_the_line_and_its_fields(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"prompt": "a", "answer": "1"},
            {"prompt": "b", "answer": "2"},
            {"prompt": "c", "solution": "3"},
        ],
    )
    message = user_error(f"jsonl:{path}")
    assert "line 3" in message and "'answer'" in message and "prompt, solution" in message


def test_jsonl_first_line_without_a_prompt_lists_what_was_looked_for(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", [{"q": "a", "answer": "1"}])
    message = user_error(f"jsonl:{path}")
    assert "line 1 has no prompt field" in message
    assert "prompt, messages, question" in message and "fields there: q, answer" in message
    assert "--prompt-field" in message
    assert "has no field 'qq'" in user_error(f"jsonl:{path}", prompt_field="qq")


def test_jsonl_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    assert "holds no items" in user_error(f"jsonl:{empty}")
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n  \n\n", encoding="utf-8")
    assert "holds no items" in user_error(f"jsonl:{blank}")


def test_jsonl_bad_values(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "a", "answer": None}])
    assert "line 1: field 'answer' is null" in user_error(f"jsonl:{path}")
    # "field 'answer' is a list; the answer must be ... or a list of accepted strings" said
    # no more than that of a list holding a null
    path = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "a", "answer": ["Paris", None]}])
    assert user_error(f"jsonl:{path}").endswith(
        "line 1: field 'answer' holds null at position 1; every accepted answer must be a "
        "string or a number"
    )
    path = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "", "answer": "x"}])
    assert "line 1: field 'prompt' is an empty string" in user_error(f"jsonl:{path}")
    path = write_jsonl(
        tmp_path / "q.jsonl", [{"prompt": "a", "choices": ["x", "y"], "answer": "z"}]
    )
    assert "not an option index 0-1" in user_error(f"jsonl:{path}")
    for messages, says in [
        ([{"role": "bogus", "content": "2+2?"}], "role 'bogus'; roles are system, developer"),
        ([{"role": "system", "content": "Be brief."}], "no message of role 'user'"),
        ([{"role": "user", "content": 5}], "is a list but not of chat messages"),
        ([], "is an empty list; give the messages"),
    ]:
        path = write_jsonl(tmp_path / "q.jsonl", [{"messages": messages, "answer": "4"}])
        assert "line 1: field 'messages' " in user_error(f"jsonl:{path}")
        assert says in user_error(f"jsonl:{path}")


def test_jsonl_duplicate_ids(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "q.jsonl",
        [{"id": 1, "prompt": "a", "answer": "1"}, {"id": 1, "prompt": "b", "answer": "2"}],
    )
    message = user_error(f"jsonl:{path}")
    assert "id '1' is used twice" in message and "line 1" in message and "line 2" in message


def test_jsonl_ids_on_some_lines_only_are_refused(tmp_path: Path) -> None:
    """Numbered by line where line 1 has no id, by id where it has one: a file that mixes them
    would mix the two, silently (and a line number could then clash with an id)."""
    later = write_jsonl(
        tmp_path / "later.jsonl",
        [{"prompt": "a", "answer": "1"}, {"id": "x", "prompt": "b", "answer": "2"}],
    )
    message = user_error(f"jsonl:{later}")
    assert "line 2: field 'id' gives an id, but" in message and "line 1 has none" in message
    missing = write_jsonl(
        tmp_path / "missing.jsonl",
        [{"id": "2", "prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "2"}],
    )
    message = user_error(f"jsonl:{missing}")
    assert "line 2: no 'id' (an id, which" in message and "give every line an id" in message


def test_jsonl_forced_numeric_scorer_checks_references(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "q.jsonl", [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "two"}]
    )
    message = user_error(f"jsonl:{path}", scorer="numeric")
    assert "line 2" in message and "'two' is not a number" in message
    assert "scorers: numeric, choice" in user_error(f"jsonl:{path}", scorer="nope")


def test_a_builtin_task_refuses_a_scorer_that_can_score_none_of_its_answers() -> None:
    """--scorer on a built-in task replaced its scorer unchecked: `choice` scored with exact
    (its answer 'A' normalizes to nothing) or numeric scored every item 0. Its items are now
    checked as a file's are."""
    message = user_error("choice", scorer="exact")
    assert "built-in task 'choice', item choice-0000: answer 'A' is nothing once" in message
    assert "score a letter with --scorer choice" in message
    assert "answer 'A' is not a number" in user_error("choice", scorer="numeric")
    assert "is nothing once normalized" in user_error("choice", pattern=r"(\S+)")
    assert "is not a letter A-J" in user_error("arith", scorer="choice")
    assert load_task("arith", scorer="exact").scorer.name == "exact"  # what can score, still may


def test_an_answer_that_normalizes_to_nothing_is_refused_for_regex_too(tmp_path: Path) -> None:
    """The regex scorer compares its group normalized, so it cannot score 'A', 'The' or '!'
    either: the error recommended it. It is now refused for regex too, pointing a letter at
    the choice scorer, which does score it."""
    for answer, fix in [("A", "score a letter with --scorer choice"), ("!", "a fuller answer")]:
        path = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "?", "answer": answer}])
        message = user_error(f"jsonl:{path}", scorer="regex", pattern=r"(\S+)")
        assert f"line 1: answer {answer!r} is nothing once normalized" in message
        assert "so the regex scorer could match no output to it" in message
        assert fix in message and "--scorer regex" not in message
    path = write_jsonl(tmp_path / "the.jsonl", [{"prompt": "?", "answer": "The"}])
    assert "give a fuller answer" in user_error(f"jsonl:{path}", scorer="contains")
    letter = write_jsonl(tmp_path / "letter.jsonl", [{"prompt": "?", "answer": "A"}])
    task = load_task(f"jsonl:{letter}", scorer="choice")
    assert task.scorer.score("A", task.items[0]) == 1.0


def test_list_answers_are_written_as_single_answers_are(tmp_path: Path) -> None:
    """Each answer of a list was written by str(): [0.00001] as '1e-05', which the numeric
    scorer cannot read, and [true] as 'True'. Each is now written as it would be alone."""
    rows = [
        {"prompt": "tiny?", "answer": [0.00001]},
        {"prompt": "cold?", "answer": [True, "maybe"]},
        {"prompt": "huge?", "answer": [1e20, " 7 "]},
    ]
    task = load_task(f"jsonl:{write_jsonl(tmp_path / 'q.jsonl', rows)}", scorer="contains")
    assert [it.reference for it in task.items] == [
        "0.00001",
        "yes|true|maybe",
        "100000000000000000000|7",
    ]
    path = write_jsonl(tmp_path / "nan.jsonl", [{"prompt": "?", "answer": [1, float("nan")]}])
    assert "line 1: field 'answer' holds nan; a numeric answer must be finite" in user_error(
        f"jsonl:{path}"
    )


def test_choices_that_are_not_text_are_read_or_refused(tmp_path: Path) -> None:
    """Options that were not strings were shown to the model as Python reprs ("{'label': 'A',
    'text': 'Paris'}", "None"). Numbers are written as numbers, {label, text} objects are read
    as ARC's labelled choices are, and anything else is refused, naming its line."""
    rows = [
        {
            "prompt": "Capital of France?",
            "choices": [{"label": "1", "text": "Paris"}, {"label": "2", "text": "Lyon"}],
            "answer": "1",
        },
        {"prompt": "Smallest?", "choices": [3, 0.00001, 2], "answer": 1},
        {"prompt": "Is it?", "choices": [True, False], "answer": 0},  # as before: True, False
    ]
    task = load_task(f"jsonl:{write_jsonl(tmp_path / 'q.jsonl', rows)}")
    assert task.items[0].prompt == "Capital of France?\nA. Paris\nB. Lyon"
    assert task.items[1].prompt == "Smallest?\nA. 3\nB. 0.00001\nC. 2"
    assert task.items[2].prompt == "Is it?\nA. True\nB. False"
    assert [it.reference for it in task.items] == ["A", "B", "A"]
    for choices, says in [
        (["Paris", None], "holds null among its options"),
        (["Paris", ["Lyon"]], "holds a list among its options"),
        ([{"label": "A"}, {"label": "B", "text": "Lyon"}], "holds null among its options"),
    ]:
        path = write_jsonl(
            tmp_path / "bad.jsonl", [{"prompt": "?", "choices": choices, "answer": 0}]
        )
        message = user_error(f"jsonl:{path}")
        assert message.startswith(f"{path} line 1: field 'choices' {says}"), message
        assert "an option is a string, a number or a boolean" in message


def test_unreadable_json_lines_name_their_line(tmp_path: Path) -> None:
    """An integer of more than 4300 digits, or arrays nested 100,000 deep, raised ValueError
    and RecursionError past the loader: a traceback (exit 1). Both name their line now."""
    first = json.dumps({"prompt": "a", "answer": "1"})
    for line, says in [
        ('{"prompt": "b", "answer": ' + "9" * 5000 + "}", "line 2 cannot be read (Exceeds"),
        ("[" * 100_000, "line 2 is nested too deeply to read"),
    ]:
        with pytest.raises(UserError) as err:
            list(jsonl_rows([first, line], "q.jsonl"))
        assert str(err.value).startswith(f"q.jsonl {says}") and "\n" not in str(err.value)
    path = write_jsonl(tmp_path / "q.jsonl", [first, "[" * 100_000])
    assert "line 2 is nested too deeply" in user_error(f"jsonl:{path}")


def test_a_blank_chat_message_is_refused_as_a_blank_prompt_is(tmp_path: Path) -> None:
    """A message of only whitespace was sent as an empty turn, where a blank prompt string is
    refused."""
    fields = Fields(prompt="messages", answer="answer", id=None, choices=None)
    for messages in (
        [{"role": "user", "content": "   "}],
        [{"role": "system", "content": ""}, {"role": "user", "content": "2+2?"}],
    ):
        with pytest.raises(UserError) as err:
            row_to_item(
                {"messages": messages, "answer": "4"},
                fields,
                default_id="1",
                where="q.jsonl line 1",
                task="t",
            )
        role = messages[0]["role"]
        assert str(err.value) == (
            f"q.jsonl line 1: field 'messages' has a message of role {role!r} whose content is "
            "an empty string; every message needs text, as a prompt does"
        )


def test_error_wording(tmp_path: Path) -> None:
    """'a int', '--id-field apply only', and an empty answer list called 'a list'."""
    path = write_jsonl(tmp_path / "q.jsonl", [{"prompt": 5, "answer": "x"}])
    assert "line 1: field 'prompt' is an int;" in user_error(f"jsonl:{path}")
    path = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "?", "answer": []}])
    assert "line 1: field 'answer' is an empty list;" in user_error(f"jsonl:{path}")
    assert user_error("arith", id_field="k").startswith("--id-field applies only to jsonl:")


def test_unknown_refs() -> None:
    assert "needs a path" in user_error("jsonl:")
    assert "built-in tasks: arith, choice, facts" in user_error("data.csv")


# Hugging Face datasets ----------------------------------------------------------------------


def gsm8k_like(n: int, offset: int = 0) -> Any:
    return datasets.Dataset.from_dict(
        {
            "question": [f"What is {i + offset} + {i}?" for i in range(n)],
            "answer": [
                f"{i + offset} + {i} = <<{i + offset}+{i}>>\n#### {2 * i + offset:,}"
                for i in range(n)
            ],
        }
    )


@needs_datasets
def test_hf_saved_dataset_gsm8k_style(tmp_path: Path) -> None:
    gsm8k_like(5, offset=1000).save_to_disk(str(tmp_path / "ds"))
    task = load_task(f"hf:{tmp_path / 'ds'}")
    assert task.name == f"hf:{tmp_path / 'ds'}"
    assert len(task.items) == 5
    assert [it.id for it in task.items] == ["0", "1", "2", "3", "4"]
    assert task.scorer.name == "numeric"
    assert task.items[3].prompt == "What is 1003 + 3?"
    assert task.scorer.score("1003 + 3 = 1006", task.items[3]) == 1.0
    assert task.scorer.score("1003 + 3 = 1005", task.items[3]) == 0.0
    assert task.fewshot == []


@needs_datasets
def test_hf_dataset_dict_splits_and_fewshot(tmp_path: Path) -> None:
    dd = datasets.DatasetDict(
        {"train": gsm8k_like(8, offset=100), "test": gsm8k_like(4), "validation": gsm8k_like(2)}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    task = load_task(f"hf:{tmp_path / 'dd'}", seed=1)
    assert len(task.items) == 4  # "test" first
    assert "(test)" in task.description
    assert len(task.fewshot) == 3
    assert all(str(s.prompt).startswith("What is 1") for s in task.fewshot)  # from train
    again = load_task(f"hf:{tmp_path / 'dd'}", seed=1)
    assert [s.prompt for s in again.fewshot] == [s.prompt for s in task.fewshot]
    req = build_request(task, task.items[0], "completion", max_tokens=8, temperature=0, seed=None)
    assert req.prompt is not None and "#### " not in req.prompt
    assert len(load_task(f"hf:{tmp_path / 'dd'}:validation").items) == 2
    train = load_task(f"hf:{tmp_path / 'dd'}:train")
    assert len(train.items) == 8 and train.fewshot == []
    message = user_error(f"hf:{tmp_path / 'dd'}:dev")
    assert "no split 'dev'" in message and "train, test, validation" in message


@needs_datasets
def test_hf_default_split_falls_back_to_train_then_first(tmp_path: Path) -> None:
    datasets.DatasetDict({"train": gsm8k_like(3)}).save_to_disk(str(tmp_path / "t"))
    assert "(train)" in load_task(f"hf:{tmp_path / 't'}").description
    datasets.DatasetDict({"other": gsm8k_like(2)}).save_to_disk(str(tmp_path / "o"))
    assert "(other)" in load_task(f"hf:{tmp_path / 'o'}").description


@needs_datasets
def test_hf_mmlu_style_choices(tmp_path: Path) -> None:
    features = datasets.Features(
        {
            "question": datasets.Value("string"),
            "subject": datasets.Value("string"),
            "choices": datasets.Sequence(datasets.Value("string")),
            "answer": datasets.ClassLabel(names=["A", "B", "C", "D"]),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "question": ["Which is a prime?", "Which is even?"],
            "subject": ["math", "math"],
            "choices": [["4", "6", "7", "9"], ["3", "8", "5", "1"]],
            "answer": [2, 1],
        },
        features=features,
    )
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "mmlu"))
    task = load_task(f"hf:{tmp_path / 'mmlu'}")
    assert task.scorer.name == "choice"
    assert task.instruction == "Answer with the letter of the correct option."
    assert task.items[0].prompt == "Which is a prime?\nA. 4\nB. 6\nC. 7\nD. 9"
    assert [it.reference for it in task.items] == ["C", "B"]
    assert task.items[0].meta["subject"] == "math"
    assert task.scorer.score("The answer is C.", task.items[0]) == 1.0


@needs_datasets
def test_hf_arc_style_choices_with_labels(tmp_path: Path) -> None:
    ds = datasets.Dataset.from_dict(
        {
            "id": ["q1"],
            "question": ["Which is a gas?"],
            "choices": [{"text": ["ice", "steam", "rock"], "label": ["1", "2", "3"]}],
            "answerKey": ["2"],
        }
    )
    ds.save_to_disk(str(tmp_path / "arc"))
    task = load_task(f"hf:{tmp_path / 'arc'}")
    assert task.items[0].id == "q1"
    assert task.items[0].reference == "B"
    assert task.items[0].prompt == "Which is a gas?\nA. ice\nB. steam\nC. rock"


@needs_datasets
def test_hf_field_override(tmp_path: Path) -> None:
    datasets.Dataset.from_dict({"src": ["Capital of Peru?"], "tgt": ["Lima"]}).save_to_disk(
        str(tmp_path / "p")
    )
    assert "no prompt field" in user_error(f"hf:{tmp_path / 'p'}")
    task = load_task(f"hf:{tmp_path / 'p'}", prompt_field="src", answer_field="tgt")
    assert task.scorer.name == "contains"
    assert task.scorer.score("It is Lima.", task.items[0]) == 1.0


@needs_datasets
def test_hf_ids_of_a_float_column_read_as_written(tmp_path: Path) -> None:
    """A column of ids stored as floats (as pandas keeps integers beside a missing value) gave
    ids "7.0", matching no other export of the same data."""
    rows = {"id": [7.0, 8.0, 2.5], "question": ["1+1?", "2+2?", "3+3?"], "answer": ["2", "4", "6"]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "f"))
    assert [item.id for item in load_task(f"hf:{tmp_path / 'f'}").items] == ["7", "8", "2.5"]


@needs_datasets
def test_hf_missing_local_directory(tmp_path: Path) -> None:
    message = user_error(f"hf:{tmp_path / 'missing'}")
    assert "does not exist" in message and "save_to_disk" in message


@needs_datasets
def test_hf_uncached_hub_dataset_fails_offline_and_leaves_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_DATASETS_CACHE", "/nonexistent-tradeoff-cache")
    message = user_error("hf:tradeoff-test/not-a-real-dataset:main:test")
    assert "hf dataset 'tradeoff-test/not-a-real-dataset' is not in the local cache" in message
    assert "save it with Dataset.save_to_disk and use hf:PATH" in message
    import os

    assert "HF_HUB_OFFLINE" not in os.environ and "HF_DATASETS_OFFLINE" not in os.environ


@needs_datasets
def test_hf_ref_with_too_many_parts() -> None:
    assert "too many parts" in user_error("hf:a:b:c:d")


@needs_datasets
def test_hf_a_dataset_saved_without_splits_refuses_a_split(tmp_path: Path) -> None:
    """hf:PATH:banana on a saved Dataset (not a DatasetDict) ran every row, ignoring it."""
    gsm8k_like(3).save_to_disk(str(tmp_path / "cls"))
    message = user_error(f"hf:{tmp_path / 'cls'}:banana")
    assert "was saved without splits" in message and "no split 'banana'; drop :banana" in message
    assert len(load_task(f"hf:{tmp_path / 'cls'}").items) == 3


def gsm8k_snapshot(directory: Path) -> Path:
    """A local snapshot of a Hub data set with two configs, laid out as GSM8K's is."""
    for config, n in (("main", 4), ("socratic", 2)):
        (directory / config).mkdir(parents=True)
        gsm8k_like(n).to_parquet(str(directory / config / "test-00000-of-00001.parquet"))
        gsm8k_like(n + 3, offset=100).to_parquet(
            str(directory / config / "train-00000-of-00001.parquet")
        )
    card = ["---", "configs:"]
    for config in ("main", "socratic"):
        card += [f"- config_name: {config}", "  data_files:"]
        card += [f"  - split: {s}\n    path: {config}/{s}-*" for s in ("train", "test")]
    (directory / "README.md").write_text("\n".join([*card, "---", "# gsm"]) + "\n")
    return directory


@needs_datasets
def test_hf_local_snapshot_with_configs(tmp_path: Path) -> None:
    """A snapshot whose README declares configs could not be loaded: hf:PATH gave "Config name
    is missing" and hf:PATH:main:test "too many parts". A config is read where the directory
    declares one, and a directory of data files without configs still takes hf:PATH:SPLIT."""
    gsm = gsm8k_snapshot(tmp_path / "gsm")
    configs = f"{str(gsm)!r} declares the configs main, socratic; name one, e.g."
    assert user_error(f"hf:{gsm}") == f"{configs} hf:{gsm}:main"
    assert user_error(f"hf:{gsm}:test") == f"{configs} hf:{gsm}:main:test"
    task = load_task(f"hf:{gsm}:main:test")
    assert len(task.items) == 4 and "(test)" in task.description and len(task.fewshot) == 3
    assert len(load_task(f"hf:{gsm}:socratic").items) == 2
    assert len(load_task(f"hf:{gsm}:main:train").items) == 7
    assert "has no config 'nope'; configs: main, socratic" in user_error(f"hf:{gsm}:nope:test")
    assert "too many parts" in user_error(f"hf:{gsm}:main:test:x")

    plain = tmp_path / "plain"
    plain.mkdir()
    for split, n in (("test", 2), ("validation", 5)):
        (plain / f"{split}.jsonl").write_text(
            "".join(json.dumps({"question": f"q{i}", "answer": str(i)}) + "\n" for i in range(n))
        )
    assert len(load_task(f"hf:{plain}:validation").items) == 5
    assert len(load_task(f"hf:{plain}").items) == 2
    message = user_error(f"hf:{plain}:main:test")
    assert "declares no configs, so none is called 'main'" in message


@needs_datasets
def test_hf_data_file_errors_name_the_file_and_their_cause(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A Latin-1 CSV or a JSONL file with a broken line said only "DatasetGenerationError: An
    error occurred while generating the dataset"; the error now names the file and what is
    wrong with it. Nor does `datasets` print progress bars or log lines while loading."""
    latin = tmp_path / "latin"
    latin.mkdir()
    (latin / "test.csv").write_bytes("question,answer\ncafé?,1\n".encode("latin-1"))
    message = user_error(f"hf:{latin}")
    assert f"({latin / 'test.csv'}: UnicodeDecodeError: 'utf-8' codec can't decode" in message
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "test.jsonl").write_text('{"question": "a", "answer": "1"}\n{"question": "b", \n')
    message = user_error(f"hf:{broken}")
    assert f"({broken / 'test.jsonl'}: ArrowInvalid: JSON parse error" in message
    fine = tmp_path / "fine"
    fine.mkdir()
    (fine / "test.csv").write_text("question,answer\nq,1\n", encoding="utf-8")
    capfd.readouterr()
    assert len(load_task(f"hf:{fine}").items) == 1
    assert capfd.readouterr().err == ""


@needs_datasets
def test_hf_rows_are_read_without_decoding_columns_no_item_uses(tmp_path: Path) -> None:
    """Rows were read one by one through `datasets`' formatting, every row twice: 200,000
    parquet rows took about 10 s, and an image column was decoded for every row (an image PIL
    cannot read failed the load). The columns an item uses are now read in one pass."""
    text = datasets.Value("string")
    features = datasets.Features(
        {"question": text, "answer": text, "source": text, "image": datasets.Image()}
    )
    ds = datasets.Dataset.from_dict(
        {
            "question": ["2+2?", "3+3?"],
            "answer": ["4", "6"],
            "source": ["a", "b"],
            "image": [{"bytes": b"not an image", "path": None}] * 2,
        },
        features=features,
    )
    ds.save_to_disk(str(tmp_path / "vqa"))
    task = load_task(f"hf:{tmp_path / 'vqa'}")
    assert [it.reference for it in task.items] == ["4", "6"]
    assert task.items[1].meta == {"source": "b"}


def test_hf_without_the_datasets_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    message = user_error("hf:whatever")
    assert message == "hf: tasks need the 'datasets' package: pip install 'tradeoff[hf]'"


# What the data says, read as it says it ------------------------------------------------------


def test_digit_answers_of_number_options_read_one_way_for_the_whole_file(tmp_path: Path) -> None:
    """An answer "3" among the options 3, 5, 7, 9 was read as the index 3 (D) and "5" as the
    text of B, in one file: each answer now reads as its option's text when every one of them
    is one, as an index when every one is one, and a file where both readings hold and differ
    is refused."""
    rows = [
        {"prompt": "2+1?", "choices": ["3", "5", "7", "9"], "answer": "3"},
        {"prompt": "4+1?", "choices": ["3", "5", "7", "9"], "answer": "5"},
    ]
    task = load_task(f"jsonl:{write_jsonl(tmp_path / 'text.jsonl', rows)}")
    assert [it.reference for it in task.items] == ["A", "B"]
    by_index = [
        {"prompt": "Pick fig", "choices": ["apple", "pear", "fig"], "answer": "2"},
        {"prompt": "Pick pear", "choices": ["apple", "pear", "fig"], "answer": "1"},
    ]
    task = load_task(f"jsonl:{write_jsonl(tmp_path / 'index.jsonl', by_index)}")
    assert [it.reference for it in task.items] == ["C", "B"]
    either = [
        {"prompt": "1+0?", "choices": ["0", "1", "2", "3"], "answer": "1"},
        {"prompt": "0+0?", "choices": ["3", "2", "1", "0"], "answer": "2"},
    ]
    message = user_error(f"jsonl:{write_jsonl(tmp_path / 'either.jsonl', either)}")
    assert "either.jsonl line 2: answer '2' is both the text of option B" in message
    assert "write the answers as letters" in message


def test_answers_are_kept_as_written(tmp_path: Path) -> None:
    """A number in exponent form is the number (5e-05 was a string the numeric scorer could
    not read); a boolean is yes or no; a raw U+2028 inside a JSON string does not end the line;
    an answer that normalizes to nothing is refused, naming its line."""
    text = "\n".join(
        [
            json.dumps({"prompt": "tiny?", "answer": 0.00005}),
            json.dumps({"prompt": "huge?", "answer": 1e20}),
            json.dumps({"prompt": "one\u2028two: 2+2?", "answer": 4}, ensure_ascii=False),
        ]
    )
    (tmp_path / "n.jsonl").write_text(text + "\n", encoding="utf-8")
    task = load_task(f"jsonl:{tmp_path / 'n.jsonl'}")
    assert [it.reference for it in task.items] == ["0.00005", "100000000000000000000", "4"]
    assert task.scorer.name == "numeric" and task.items[2].prompt.startswith("one\u2028two")
    assert task.scorer.score("It is 0.00005.", task.items[0]) == 1.0
    yes_no = [{"prompt": "Is ice cold?", "answer": True}, {"prompt": "Is fire?", "answer": "False"}]
    task = load_task(f"jsonl:{write_jsonl(tmp_path / 'b.jsonl', yes_no)}")
    assert task.scorer.name == "exact" and [it.reference for it in task.items] == [
        "yes|true",
        "no|false",
    ]
    assert task.scorer.score("Yes.", task.items[0]) == 1.0
    assert task.scorer.score("No, not true", task.items[0]) == 0.0
    empty = [{"prompt": "Capital of France?", "answer": "Paris"}, {"prompt": "?", "answer": "The"}]
    message = user_error(f"jsonl:{write_jsonl(tmp_path / 'e.jsonl', empty)}")
    assert "e.jsonl line 2: answer 'The' is nothing once normalized" in message
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "answer": "b\n', encoding="utf-8")
    assert "(Unterminated string starting at column 27)" in user_error(f"jsonl:{bad}")


@needs_datasets
def test_hf_unlabelled_split_and_csv_text(tmp_path: Path) -> None:
    """GLUE's test splits are labelled -1: read as the answer "-1" they scored every item 0;
    now refused, naming the row. A directory of CSV files is read as text: 007 stays 007 and
    True is an answer, not a boolean the loader refused."""
    features = datasets.Features(
        {
            "sentence": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["negative", "positive"]),
        }
    )
    split = {"sentence": ["good", "bad"]}
    datasets.DatasetDict(
        {
            "validation": datasets.Dataset.from_dict({**split, "label": [1, 0]}, features=features),
            "test": datasets.Dataset.from_dict({**split, "label": [-1, -1]}, features=features),
        }
    ).save_to_disk(str(tmp_path / "glue"))
    message = user_error(f"hf:{tmp_path / 'glue'}", prompt_field="sentence")
    assert "(test) row 0: label -1 is none of the 2 classes of 'label'" in message
    assert "hf:NAME:validation" in message
    task = load_task(f"hf:{tmp_path / 'glue'}:validation", prompt_field="sentence")
    assert [it.reference for it in task.items] == ["positive", "negative"]

    (tmp_path / "zips").mkdir()
    (tmp_path / "zips" / "test.csv").write_text(
        "question,answer,known\nzip of x,007,True\nzip of y,090210,False\n", encoding="utf-8"
    )
    task = load_task(f"hf:{tmp_path / 'zips'}", scorer="exact")
    assert [it.reference for it in task.items] == ["007", "090210"]
    assert task.items[0].meta["known"] == "True"
    (tmp_path / "boolq").mkdir()
    (tmp_path / "boolq" / "test.csv").write_text(
        "question,answer\nis the sky blue,True\nis grass red,False\n", encoding="utf-8"
    )
    task = load_task(f"hf:{tmp_path / 'boolq'}")
    assert [it.reference for it in task.items] == ["yes|true", "no|false"]


@needs_datasets
def test_hf_float32_numbers_are_read_as_the_file_writes_them(tmp_path: Path) -> None:
    """A float32 answer 1.3 was the reference '1.2999999523162842', so the output "1.3" scored
    0 under exact, and a few-shot example read "Answer: 0.30000001192092896". Floats of
    float32 and float16 columns, options too, now read as the shortest number of their
    precision."""
    import pandas as pd

    (tmp_path / "parquet").mkdir()
    for split, answers in (("test", [1.3, 1.25]), ("train", [0.3])):
        frame = pd.DataFrame({"question": ["q?"] * len(answers), "answer": answers})
        frame.astype({"answer": "float32"}).to_parquet(tmp_path / "parquet" / f"{split}.parquet")
    task = load_task(f"hf:{tmp_path / 'parquet'}", scorer="exact")
    assert [it.reference for it in task.items] == ["1.3", "1.25"]
    assert task.scorer.score("1.3", task.items[0]) == 1.0
    assert [shot.reference for shot in task.fewshot] == ["0.3"]

    features = datasets.Features(
        {
            "question": datasets.Value("string"),
            "choices": datasets.List(datasets.Value("float16")),
            "answer": datasets.Value("int64"),
        }
    )
    rows = {"question": ["0.1 + 0.2?"], "choices": [[0.1, 0.3]], "answer": [1]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "saved"))
    task = load_task(f"hf:{tmp_path / 'saved'}")
    assert task.items[0].meta["choices"] == ["0.1", "0.3"]


def csv_directory(directory: Path, **splits: str) -> Path:
    """A directory of CSV files, one a split, each a header line and `splits`' rows."""
    directory.mkdir()
    for split, rows in splits.items():
        (directory / f"{split}.csv").write_text(f"question,answer\n{rows}", encoding="utf-8")
    return directory


@needs_datasets
def test_hf_csv_words_pandas_reads_as_missing_are_answers(tmp_path: Path) -> None:
    """The text NA (Namibia's country code), None, null, N/A and nan in a CSV file were read as
    null: "field 'answer' is null". They are answers as written; an empty cell is the empty
    string, refused as an empty answer is."""
    words = "Namibia?,NA\nPython's nothing?,None\nJSON's?,null\nNot applicable?,N/A\nNaN?,nan\n"
    task = load_task(f"hf:{csv_directory(tmp_path / 'codes', test=words)}", scorer="exact")
    assert [it.reference for it in task.items] == ["NA", "None", "null", "N/A", "nan"]
    blank = csv_directory(tmp_path / "blank", test="Namibia?,NA\nNothing?,\n")
    message = user_error(f"hf:{blank}")
    assert message.endswith(
        "(test) row 1: field 'answer' is an empty string; the answer must be "
        "a string, a number, or a list of accepted strings"
    )


@needs_datasets
def test_hf_csv_text_whatever_lies_beside_the_files(tmp_path: Path) -> None:
    """A LICENSE.txt or a dataset_infos.json beside the CSV files turned their reading as text
    off, so the answer 007 was 7. Only the files `datasets` reads decide it."""
    zips = csv_directory(tmp_path / "zips", test="zip of x?,007\nzip of y?,090210\n")
    (zips / "LICENSE.txt").write_text("CC BY 4.0\n")
    (zips / "dataset_infos.json").write_text("{}\n")
    (zips / "README.md").write_text("# zips\n")
    task = load_task(f"hf:{zips}", scorer="exact")
    assert [it.reference for it in task.items] == ["007", "090210"]


@needs_datasets
def test_hf_csv_splits_of_numbers_and_of_words_are_both_read(tmp_path: Path) -> None:
    """Answers 1, 2 in train.csv and Paris, 3 in test.csv were refused ("ArrowInvalid: Failed to
    parse string: 'Paris' as a scalar of type int64"): each split is read as text."""
    mixed = csv_directory(
        tmp_path / "mixed", train="one?,1\ntwo?,2\n", test="France?,Paris\nthree?,3\n"
    )
    task = load_task(f"hf:{mixed}")
    assert [it.reference for it in task.items] == ["Paris", "3"]
    assert sorted(shot.reference for shot in task.fewshot) == ["1", "2"]
    assert [it.reference for it in load_task(f"hf:{mixed}:train").items] == ["1", "2"]


@needs_datasets
def test_hf_ids_on_some_rows_only_are_refused(tmp_path: Path) -> None:
    """A row whose id was null, empty or NaN was numbered by its index among the others' ids,
    silently, or said "id '1' is used twice" of a row with no id. It is refused, naming the
    row, as a JSONL line without the id other lines have is; a data set whose rows have no
    id at all is still numbered by row."""
    rows = {"question": ["a?", "b?", "c?"], "answer": ["1", "2", "3"]}
    for shown, ids in (("empty", ["1", "", "x"]), ("null", ["x", "y", None])):
        datasets.Dataset.from_dict({**rows, "id": ids}).save_to_disk(str(tmp_path / shown))
    message = user_error(f"hf:{tmp_path / 'empty'}")
    assert message == (
        f"{tmp_path / 'empty'} row 1: no 'id' (an id, which {tmp_path / 'empty'} row 0 has); "
        "give every row an id, or none to number the items by row"
    )
    assert "null row 2: no 'id' (an id, which" in user_error(f"hf:{tmp_path / 'null'}")

    import pandas as pd

    (tmp_path / "nan").mkdir()
    frame = pd.DataFrame({**rows, "id": [7.0, float("nan"), 9.0]})
    frame.to_parquet(tmp_path / "nan" / "test.parquet")
    assert "(test) row 1: no 'id' (an id, which" in user_error(f"hf:{tmp_path / 'nan'}")
    datasets.Dataset.from_dict({**rows, "id": [None] * 3}).save_to_disk(str(tmp_path / "none"))
    assert [it.id for it in load_task(f"hf:{tmp_path / 'none'}").items] == ["0", "1", "2"]


@needs_datasets
def test_hf_a_split_of_no_rows_stops_only_itself(tmp_path: Path) -> None:
    """An empty test split made every split unloadable: "Instruction "test" corresponds to no
    data!" for a CSV directory, "IndexError: list index out of range; write it again" for a
    saved DatasetDict. Only the splits a task reads are read; an empty one it reads says so."""
    csvs = csv_directory(tmp_path / "csvs", train="one?,1\ntwo?,2\n", test="")
    question = datasets.Value("string")
    features = datasets.Features({"question": question, "answer": question})
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"question": ["one?"], "answer": ["1"]}, features=features
            ),
            "test": datasets.Dataset.from_dict({"question": [], "answer": []}, features=features),
        }
    ).save_to_disk(str(tmp_path / "saved"))
    for directory in (csvs, tmp_path / "saved"):
        assert load_task(f"hf:{directory}:train").items[0].reference == "1"
        assert user_error(f"hf:{directory}") == f"hf dataset '{directory} (test)' has no rows"
        assert user_error(f"hf:{directory}:test") == f"hf dataset '{directory} (test)' has no rows"


def test_hf_a_json_split_of_other_columns_stops_only_itself(tmp_path: Path) -> None:
    """A directory of jsonl files was prepared whole: a validation split of other columns
    failed the test split asked for ("CastError"). Only the splits a task reads are read."""
    directory = tmp_path / "jsonl"
    directory.mkdir()
    (directory / "test.jsonl").write_text('{"question": "2+2?", "answer": "4"}\n')
    (directory / "train.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n')
    (directory / "validation.jsonl").write_text('{"other": "x", "count": 1}\n')
    task = load_task(f"hf:{directory}:test")
    assert [(item.prompt, item.reference) for item in task.items] == [("2+2?", "4")]
