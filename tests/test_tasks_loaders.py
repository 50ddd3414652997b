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


def test_jsonl_directory_and_bad_encoding(tmp_path: Path) -> None:
    assert "is a directory" in user_error(f"jsonl:{tmp_path}")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"prompt": "caf\xe9", "answer": "x"}\n')
    assert "not UTF-8" in user_error(f"jsonl:{bad}")


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
