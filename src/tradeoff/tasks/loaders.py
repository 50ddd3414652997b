"""Tasks from the user's data: JSONL files (`jsonl:PATH`) and Hugging Face data sets
(`hf:NAME[:CONFIG][:SPLIT]`), read strictly offline."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from tradeoff.errors import UserError
from tradeoff.paths import user_path
from tradeoff.tasks.base import Scorer, Task
from tradeoff.tasks.scorers import (
    LETTERS,
    ChoiceScorer,
    alternatives,
    make_scorer,
    reference_number,
)
from tradeoff.types import Item, Message, Prompt

PROMPT_FIELDS = ("prompt", "messages", "question", "input", "problem", "query", "text")
ROLES = ("system", "developer", "user", "assistant", "tool")  # as OpenAI's chat API names them
ANSWER_FIELDS = ("answer", "target", "label", "solution", "output", "answerKey")
ID_FIELDS = ("id",)
CHOICES_FIELD = "choices"
SPLIT_ORDER = ("test", "validation", "train")
N_FEWSHOT = 3
CSV_FILES = (".csv", ".tsv")
NARROW_FLOATS = ("float16", "float32")  # Arrow's names of floats narrower than Python's
YES, NO = "yes|true", "no|false"  # a boolean answer's reference
_LINE_END = re.compile(r"\r\n|\r|\n")

INSTRUCTIONS = {
    "numeric": "Answer with just the final number.",
    "choice": "Answer with the letter of the correct option.",
    "exact": "Answer with just the answer, on one line.",
    "contains": "Answer in a few words.",
    "regex": "",
}


@dataclass(frozen=True)
class Fields:
    """Which column of a row holds what."""

    prompt: str
    answer: str
    id: str | None
    choices: str | None


def _pick_field(
    keys: list[str], override: str | None, candidates: tuple[str, ...], what: str, where: str
) -> str:
    have = ", ".join(keys) or "none"
    if override is not None:
        if override not in keys:
            raise UserError(f"{where} has no field {override!r} (fields there: {have})")
        return override
    for name in candidates:
        if name in keys:
            return name
    raise UserError(
        f"{where} has no {what} field (looked for {', '.join(candidates)}; fields there: {have}); "
        f"name it with --{what}-field (in a spec: {what}_field on the task)"
    )


def resolve_fields(
    keys: list[str],
    where: str,
    prompt_field: str | None,
    answer_field: str | None,
    id_field: str | None,
) -> Fields:
    """The fields to read, from overrides or the first of the usual names present in `keys`."""
    prompt = _pick_field(keys, prompt_field, PROMPT_FIELDS, "prompt", where)
    answer = _pick_field(keys, answer_field, ANSWER_FIELDS, "answer", where)
    if id_field is not None:
        ident: str | None = _pick_field(keys, id_field, ID_FIELDS, "id", where)
    else:
        ident = next((k for k in ID_FIELDS if k in keys), None)
    choices = CHOICES_FIELD if CHOICES_FIELD in keys and prompt != CHOICES_FIELD else None
    return Fields(prompt, answer, ident, choices)


def _prompt(value: Any, field: str, where: str) -> Prompt:
    if isinstance(value, str) and value.strip():
        return value
    if value == []:
        raise UserError(
            f"{where}: field {field!r} is an empty list; give the messages, at least one "
            'of them {"role": "user", "content": ...}'
        )
    if isinstance(value, list) and value:
        messages: list[Message] = []
        for m in value:
            if not (
                isinstance(m, dict)
                and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)
            ):
                raise UserError(
                    f"{where}: field {field!r} is a list but not of chat messages; "
                    'give a string or a list of {"role": ..., "content": ...} objects'
                )
            if m["role"] not in ROLES:
                raise UserError(
                    f"{where}: field {field!r} has a message of role {m['role']!r}; roles are "
                    f"{', '.join(ROLES)}"
                )
            if not m["content"].strip():
                raise UserError(
                    f"{where}: field {field!r} has a message of role {m['role']!r} whose content "
                    f"is {describe(m['content'])}; every message needs text, as a prompt does"
                )
            messages.append({"role": m["role"], "content": m["content"]})
        if not any(m["role"] == "user" for m in messages):
            raise UserError(f"{where}: field {field!r} has no message of role 'user'")
        return messages
    raise UserError(
        f"{where}: field {field!r} is {describe(value)}; the prompt must be a non-empty string "
        'or a list of {"role": ..., "content": ...} messages'
    )


def describe(value: Any) -> str:
    """`value` as an error message names it: its type, or a string's first 40 characters (a
    field may hold a whole document)."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return "an empty string" if not value.strip() else f"the string {value[:40]!r}"
    kind = type(value).__name__
    if isinstance(value, (list, dict)) and not value:
        return f"an empty {kind}"
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _reference(value: Any, field: str, where: str) -> str:
    if isinstance(value, list) and value:
        for position, v in enumerate(value):
            if not isinstance(v, (str, int, float)):
                raise UserError(
                    f"{where}: field {field!r} holds {describe(v)} at position {position}; "
                    "every accepted answer must be a string or a number"
                )
        return "|".join(_scalar(v, field, where) for v in value)
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.strip()):
        return _scalar(value, field, where)
    raise UserError(
        f"{where}: field {field!r} is {describe(value)}; the answer must be a string, a number, "
        "or a list of accepted strings"
    )


def _scalar(value: str | int | float, field: str, where: str) -> str:
    """One accepted answer as a reference writes it; each of a list's the same way."""
    if isinstance(value, bool):  # BoolQ's answers: either word accepted
        return YES if value else NO
    if isinstance(value, str):
        if value.strip().casefold() in ("true", "false"):  # a CSV's
            return YES if value.strip().casefold() == "true" else NO
        return value.strip()
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{where}: field {field!r} holds {value}; a numeric answer must be finite")
    return _number_text(value)


def _number_text(value: int | float) -> str:
    """A number positionally, as a model would write it: 5e-05 is 0.00005 (the numeric scorer
    reads no exponent)."""
    if isinstance(value, float) and math.isfinite(value):
        return format(Decimal(repr(value)), "f")
    return str(value)


def _options(value: Any, where: str) -> tuple[list[str], list[str] | None]:
    """A `choices` value as (option texts, their labels if the data names them): a list of
    texts; ARC's {"text": [...], "label": [...]}; or the same as a list of {"label": ...,
    "text": ...} objects, as JSON written row by row has it."""
    if isinstance(value, dict) and isinstance(value.get("text"), list):
        texts = [_option_text(t, where) for t in value["text"]]
        labels = value.get("label")
        labels = (
            [_option_text(label, where) for label in labels] if isinstance(labels, list) else None
        )
    elif isinstance(value, list) and value and all(isinstance(o, dict) for o in value):
        texts = [_option_text(o.get("text"), where) for o in value]
        labeled = all("label" in o for o in value)
        labels = [_option_text(o["label"], where) for o in value] if labeled else None
    elif isinstance(value, list):
        texts, labels = [_option_text(t, where) for t in value], None
    else:
        raise UserError(
            f"{where}: field 'choices' is {describe(value)}; it must be a list of option texts"
        )
    if not 2 <= len(texts) <= len(LETTERS):
        raise UserError(
            f"{where}: 'choices' has {len(texts)} options; between 2 and {len(LETTERS)} are "
            f"supported (letters {LETTERS[0]}-{LETTERS[-1]})"
        )
    return texts, labels


def _option_text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # options True and False, as a data set writes them
        return str(value)
    if isinstance(value, (int, float)):
        return _number_text(value)
    raise UserError(
        f"{where}: field 'choices' holds {describe(value)} among its options; an option is a "
        'string, a number or a boolean, or an object {"label": ..., "text": ...}'
    )


def _choice_letter(
    answer: Any, texts: list[str], labels: list[str] | None, where: str, digits: str | None = None
) -> str:
    """The option letter an answer names: an int index, one of the data's labels, a letter, a
    string of digits (read as `digits` says: "index" or "text", `digit_reading`), or an option's
    text."""
    n = len(texts)
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < n:
        return LETTERS[answer]
    text = str(answer).strip()
    if labels is not None and text in labels:
        return LETTERS[labels.index(text)]
    if len(text) == 1 and text.upper() in LETTERS[:n]:
        return text.upper()
    if text.isascii() and text.isdigit() and int(text) < n and digits != "text":
        return LETTERS[int(text)]
    if text in texts:
        return LETTERS[texts.index(text)]
    raise UserError(
        f"{where}: answer {text[:40]!r} is not an option index 0-{n - 1}, a letter "
        f"A-{LETTERS[n - 1]}, nor the text of one of the {n} choices"
    )


def digit_reading(rows: Iterable[tuple[str, dict[str, Any]]], fields: Fields) -> str | None:
    """How a data set's multiple-choice answers written as digit strings are read, the same way
    for every row: "text" where each one is an option's text ("3" of 3, 5, 7, 9), "index" where
    each one is an option's index; None where no answer is such a string. A data set in which
    both hold and the two readings differ is a UserError naming a row: it cannot be read
    safely."""
    found: list[tuple[str, str, list[str]]] = []
    for where, row in rows:
        if fields.choices is None or row.get(fields.choices) is None:
            continue
        answer = row.get(fields.answer)
        if isinstance(answer, str) and answer.strip().isdigit():
            texts, labels = _options(row[fields.choices], where)
            if labels is None or answer.strip() not in labels:
                found.append((where, answer.strip(), texts))
    if not found:
        return None
    as_text = all(a in texts for _, a, texts in found)
    as_index = all(int(a) < len(texts) for _, a, texts in found)
    if as_text and as_index:
        for where, a, texts in found:
            if texts.index(a) != int(a):
                raise UserError(
                    f"{where}: answer {a!r} is both the text of option "
                    f"{LETTERS[texts.index(a)]} and the index of option {LETTERS[int(a)]}, and "
                    "every answer of the data reads either way; write the answers as letters "
                    "(A, B, ...) or as JSON numbers (indexes from 0)"
                )
    return "text" if as_text else "index" if as_index else None


def _with_options(prompt: Prompt, texts: list[str]) -> Prompt:
    lines = "\n".join(f"{LETTERS[i]}. {t}" for i, t in enumerate(texts))
    if isinstance(prompt, str):
        return f"{prompt.rstrip()}\n{lines}"
    messages = [dict(m) for m in prompt]
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    messages[last_user]["content"] = f"{messages[last_user]['content'].rstrip()}\n{lines}"
    return messages


def row_to_item(
    row: dict[str, Any],
    fields: Fields,
    *,
    default_id: str,
    where: str,
    task: str,
    class_names: list[str] | None = None,
    digits: str | None = None,
) -> Item:
    """One item from one row; `where` ("data.jsonl line 3") names the row in errors; `digits`:
    how its data set's digit-string choice answers read (`digit_reading`)."""
    for name in (fields.prompt, fields.answer):
        if name not in row:
            have = ", ".join(row) or "none"
            raise UserError(f"{where} has no field {name!r} (fields there: {have})")
    prompt = _prompt(row[fields.prompt], fields.prompt, where)
    meta: dict[str, Any] = {}
    answer = row[fields.answer]
    if fields.choices is not None and row.get(fields.choices) is not None:
        texts, labels = _options(row[fields.choices], where)
        reference = _choice_letter(answer, texts, labels, where, digits)
        prompt = _with_options(prompt, texts)
        meta["choices"] = texts
    elif class_names is not None and isinstance(answer, int) and not isinstance(answer, bool):
        if not 0 <= answer < len(class_names):  # GLUE's test splits are labelled -1
            raise UserError(
                f"{where}: label {answer} is none of the {len(class_names)} classes of "
                f"{fields.answer!r} ({', '.join(class_names[:4])}"
                f"{', ...' if len(class_names) > 4 else ''}): an unlabelled split? name a "
                "labelled one, e.g. hf:NAME:validation"
            )
        reference = class_names[answer]  # a ClassLabel column: the label's name, not its index
    else:
        reference = _reference(answer, fields.answer, where)
    ident = row.get(fields.id) if fields.id is not None else None
    used = {fields.prompt, fields.answer, fields.id, fields.choices}
    meta.update(
        (k, v)
        for k, v in row.items()
        if k not in used and (v is None or isinstance(v, (str, int, float, bool)))
    )
    return Item(
        id=default_id if _no_id(ident) else _id_text(ident),
        prompt=prompt,
        reference=reference,
        task=task,
        meta=meta,
    )


def choose_scorer(
    items: list[Item], wheres: list[str], scorer: str | None, pattern: str | None
) -> Scorer:
    """The named scorer, checked against every reference; or, when none is named: choice for
    multiple-choice rows or single-letter answers, numeric when every answer is a number,
    contains otherwise."""
    n_options = max((len(it.meta.get("choices", [])) for it in items), default=0)
    if scorer is None and pattern:
        scorer = "regex"
    every_number = False
    if scorer is None:
        if n_options or all(_is_letter(it.reference) for it in items):
            scorer = "choice"
        elif every_number := all(reference_number(it.reference) is not None for it in items):
            scorer = "numeric"
        elif all(it.reference in (YES, NO) for it in items):
            scorer = "exact"  # yes or no: "contains" would take "no, not true" for true
        else:
            scorer = "contains"
    chosen = make_scorer(scorer, pattern)
    if scorer == "choice" and n_options:
        chosen = ChoiceScorer(letters=LETTERS[:n_options])
    if not every_number:  # chosen as numeric because each answer is one: nothing to check
        check_references(items, wheres, scorer)
    return chosen


def check_references(items: list[Item], wheres: list[str], scorer: str) -> None:
    """A UserError naming the first item (at its `wheres`) whose reference the scorer called
    `scorer` could never match: every item would score 0, silently."""
    for item, where in zip(items, wheres, strict=True):
        reference = item.reference
        if scorer == "numeric" and reference_number(reference) is None:
            raise UserError(
                f"{where}: answer {reference[:40]!r} is not a number, which the numeric "
                "scorer needs (a number, or GSM8K's '... #### 42'); choose another with --scorer"
            )
        if scorer in ("exact", "contains", "regex") and not alternatives(reference):
            # The regex scorer compares its group normalized, as these do.
            fix = (
                "score a letter with --scorer choice"
                if _is_letter(reference)
                else "give a fuller answer"
            )
            raise UserError(
                f"{where}: answer {reference[:40]!r} is nothing once normalized (case, "
                "punctuation and the articles a, an, the are dropped before comparing), so the "
                f"{scorer} scorer could match no output to it; {fix}"
            )
        if scorer == "choice" and not _is_letter(reference):
            raise UserError(
                f"{where}: answer {reference[:40]!r} is not a letter A-J, which the choice "
                "scorer needs; choose another scorer with --scorer (or, in a data file, give "
                "a 'choices' list)"
            )


def _is_letter(reference: str) -> bool:
    return len(reference.strip()) == 1 and reference.strip().upper() in LETTERS


def _check_unique_ids(items: list[Item], wheres: list[str], source: str) -> None:
    first: dict[str, str] = {}
    for item, where in zip(items, wheres, strict=True):
        if item.id in first:
            raise UserError(
                f"{source}: id {item.id!r} is used twice ({first[item.id]} and {where}); "
                "ids must be unique, or leave the id field out to number the items"
            )
        first[item.id] = where


def _make_task(
    name: str,
    description: str,
    items: list[Item],
    wheres: list[str],
    scorer: str | None,
    pattern: str | None,
    fewshot: list[Item],
) -> Task:
    chosen = choose_scorer(items, wheres, scorer, pattern)
    return Task(
        name=name,
        description=description,
        items=items,
        scorer=chosen,
        instruction=INSTRUCTIONS[chosen.name],
        fewshot=fewshot,
        fewshot_from_items=0 if fewshot else N_FEWSHOT,
        stop=["\n"],
    )


# JSONL --------------------------------------------------------------------------------------


def _read_lines(path: Path, shown: str) -> list[str]:
    try:
        # utf-8-sig: editors on Windows often start a UTF-8 file with a byte-order mark
        # Lines end at \n, \r\n or \r only: str.splitlines would also split at U+2028, U+2029
        # and U+0085, which JSON allows raw inside its strings.
        return _LINE_END.split(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise UserError(
            f"task file {shown!r} does not exist; jsonl:PATH needs a file with one JSON object "
            "per line"
        ) from None
    except IsADirectoryError:
        raise UserError(
            f"{shown!r} is a directory; jsonl:PATH needs a file with one JSON object per line "
            "(for a saved Hugging Face data set use hf:PATH)"
        ) from None
    except UnicodeDecodeError:
        raise not_utf8(path, repr(shown)) from None
    except OSError as e:
        raise UserError(f"cannot read {shown!r}: {e.strerror or e}") from None


def not_utf8(path: Path, shown: str) -> UserError:
    """The error for a file that is not UTF-8, naming the line and the offset in the file of its
    first such byte (a decoder's own offset counts from the chunk it read, or past a byte-order
    mark)."""
    try:
        data = path.read_bytes()
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = len(_LINE_END.findall(data[: e.start].decode("utf-8"))) + 1
        return UserError(
            f"{shown} line {line} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
            f"{e.start}); save it as UTF-8"
        )
    except OSError:
        pass
    return UserError(f"{shown} is not UTF-8 text; save it as UTF-8")


def jsonl_rows(lines: list[str], shown: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a line that is not a JSON object is a
    UserError naming its line."""
    first = True
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if first and line.lstrip().startswith("["):
            raise UserError(
                f"{shown} holds a JSON array; give one JSON object per line (JSON Lines: "
                f"`jq -c '.[]' {shown}` writes them)"
            )
        first = False
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(
                f"{shown} line {lineno} is not valid JSON ({e.msg.removesuffix(' at')} at "
                f"column {e.colno}); "
                "each line must be one JSON object"
            ) from None
        except RecursionError:
            raise UserError(
                f"{shown} line {lineno} is nested too deeply to read (arrays or objects "
                "within each other, hundreds deep); each line must be one JSON object"
            ) from None
        except ValueError as e:  # Python reads no integer of more than 4300 digits
            raise UserError(
                f"{shown} line {lineno} cannot be read ({str(e).split(';')[0]}); "
                "write a number that long as a string"
            ) from None
        if not isinstance(row, dict):
            raise UserError(
                f"{shown} line {lineno} is a JSON {type(row).__name__}, not an object; each line "
                "must be one JSON object"
            )
        if "\\u" in line and not _is_text(row):
            raise UserError(
                f"{shown} line {lineno} holds a lone surrogate (an escape \\ud800 to \\udfff "
                "without its pair), which is no character; write the text as UTF-8"
            )
        yield lineno, row


def _is_text(row: dict[str, Any]) -> bool:
    """Whether every string of `row` is text UTF-8 can hold: JSON's \\u escapes can name half
    a surrogate pair, which Python reads and then cannot store, send or write."""
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def load_jsonl(
    path: str,
    *,
    name: str | None = None,
    prompt_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    scorer: str | None = None,
    pattern: str | None = None,
) -> Task:
    """A task from a JSONL file: one object per line with a prompt (`prompt` string or
    `messages` list), an `answer`, and optionally an `id` and a `choices` list."""
    name = name or f"jsonl:{path}"
    lines = _read_lines(user_path(path), path)
    rows = [(f"{path} line {lineno}", lineno, row) for lineno, row in jsonl_rows(lines, path)]
    items: list[Item] = []
    wheres: list[str] = []
    fields: Fields | None = None
    digits: str | None = None
    for where, lineno, row in rows:
        if fields is None:
            # The first object decides the fields; every later line must have them too.
            fields = resolve_fields(list(row), where, prompt_field, answer_field, id_field)
            # options are any line's to give: a later line's were dropped, and its question
            # asked and scored as free text, when the first line had none
            later_options = any(CHOICES_FIELD in later for _, _, later in rows)
            if fields.choices is None and fields.prompt != CHOICES_FIELD and later_options:
                fields = replace(fields, choices=CHOICES_FIELD)
            first = where
            digits = digit_reading(((w, r) for w, _, r in rows), fields)
        _check_id(row, fields, where, first)
        items.append(
            row_to_item(row, fields, default_id=str(lineno), where=where, task=name, digits=digits)
        )
        wheres.append(where)
    if not items:
        raise UserError(
            f"{path!r} holds no items (it is empty or only blank lines); write one JSON object "
            'per line, e.g. {"prompt": "What is 2+2?", "answer": "4"}'
        )
    _check_unique_ids(items, wheres, path)
    description = f"{len(items)} items from {path}"
    return _make_task(name, description, items, wheres, scorer, pattern, [])


def _check_id(row: dict[str, Any], fields: Fields, where: str, first: str) -> None:
    """Every line numbered alike: by its id field, or (no line has one) by its line number. A
    line whose id the first line's fields leave out, or that lacks the id the first line has,
    would be numbered by line among ids, silently."""
    if fields.id is None:
        given = next((k for k in ID_FIELDS if not _no_id(row.get(k))), None)
        if given is not None:
            raise UserError(
                f"{where}: field {given!r} gives an id, but {first} has none, so the items are "
                "numbered by line; give every line an id, or none"
            )
    elif _no_id(row.get(fields.id)):
        raise UserError(
            f"{where}: no {fields.id!r} (an id, which {first} has); give every line an id, or "
            "none to number the items by line"
        )


def _id_text(value: Any) -> str:
    """An item's id as text: a whole number kept as a float (a column pandas or Arrow widened)
    as written, 7 not 7.0."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _no_id(value: Any) -> bool:
    """Whether an id field's value gives no id: null, empty, or NaN (a pandas column's null)."""
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


# Hugging Face datasets ----------------------------------------------------------------------


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise UserError(
            "hf: tasks need the 'datasets' package: pip install 'tradeoff[hf]'"
        ) from None
    return datasets


@contextmanager
def _offline(datasets: Any) -> Iterator[None]:
    """No network for the `datasets` library while loading: the environment variables, and the
    module constants it read from them when it was first imported."""
    env = {k: os.environ.get(k) for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")}
    os.environ.update({k: "1" for k in env})
    targets: list[tuple[Any, str]] = [
        (datasets.config, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_DATASETS_OFFLINE"),
    ]
    try:
        import huggingface_hub.constants as hub_constants

        targets.append((hub_constants, "HF_HUB_OFFLINE"))
    except ImportError:
        pass
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr in targets if hasattr(obj, attr)]
    for obj, attr, _ in saved:
        setattr(obj, attr, True)
    try:
        yield
    finally:
        for obj, attr, value in saved:
            setattr(obj, attr, value)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _quiet(datasets: Any) -> Iterator[list[str]]:
    """`datasets` without its progress bars, and with the errors it logs kept rather than
    printed: a failure becomes one UserError line, and only those log lines name the file that
    failed."""
    logged: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record.getMessage())

    def below_error(record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR

    logger = logging.getLogger("datasets")
    printers = list(logger.handlers)
    keep = Keep(logging.ERROR)
    for handler in printers:
        handler.addFilter(below_error)
    logger.addHandler(keep)
    bars_on = not datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield logged
    finally:
        if bars_on:
            datasets.enable_progress_bars()
        logger.removeHandler(keep)
        for handler in printers:
            handler.removeFilter(below_error)


def _looks_local(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.path.exists(name)


def parse_hf_ref(spec: str) -> tuple[str, str | None, str | None, bool]:
    """'NAME[:CONFIG][:SPLIT]' as (name, config, split, is_local). A local directory takes
    'PATH[:SPLIT]', or 'PATH:CONFIG[:SPLIT]' where it declares configs: its one part comes back
    as the split, which `_local_config` reads as a config if the directory declares one so
    named."""
    parts = spec.split(":")
    name = parts[0]
    if not name:
        raise UserError(
            "hf: needs a data set, e.g. hf:openai/gsm8k:main:test or hf:PATH of a directory "
            "written by Dataset.save_to_disk"
        )
    rest = [p or None for p in parts[1:]]
    if len(rest) > 2:
        if _looks_local(name):
            raise UserError(
                f"hf:{spec} has too many parts; a local directory takes hf:PATH[:SPLIT], or "
                "hf:PATH:CONFIG[:SPLIT] where its README declares configs"
            )
        raise UserError(f"hf:{spec} has too many parts; write hf:NAME[:CONFIG][:SPLIT]")
    if _looks_local(name):
        return name, rest[0] if len(rest) == 2 else None, rest[-1] if rest else None, True
    config = rest[0] if rest else None
    split = rest[1] if len(rest) == 2 else None
    return name, config, split, False


def _load_hf_object(
    datasets: Any, name: str, config: str | None, split: str | None, local: bool
) -> tuple[Any, str | None]:
    """A Dataset or DatasetDict, without network, and the split asked of it."""
    path = user_path(name)
    if local:
        if not path.exists():
            raise UserError(
                f"hf dataset directory {name!r} does not exist; give a directory written by "
                "Dataset.save_to_disk or DatasetDict.save_to_disk"
            )
        if not path.is_dir():
            raise UserError(
                f"{name!r} is a file; hf:PATH takes a directory written by Dataset.save_to_disk "
                "(for a JSONL file use jsonl:PATH)"
            )
    with _quiet(datasets) as logged, _offline(datasets):
        if local and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            if config is not None:
                raise UserError(
                    f"{name!r} was written by save_to_disk, which keeps no configs; write "
                    f"hf:{name}[:SPLIT]"
                )
            try:
                return _load_saved(datasets, path, name, split)
            except UserError:
                raise
            except Exception as e:
                raise UserError(
                    f"cannot read the saved data set in {name!r} ({_reason(e, logged)}); write "
                    "it again with Dataset.save_to_disk"
                ) from None
        if local:
            config, split = _local_config(datasets, path, name, config, split)
        try:
            if local:
                return _load_data_files(datasets, path, name, config, split)
            return datasets.load_dataset(name, config), split  # a data set in the local cache
        except UserError:
            raise
        except Exception as e:
            if local:
                raise UserError(
                    f"{name!r} is neither a directory written by save_to_disk nor one of data "
                    f"files that datasets can read ({_reason(e, logged)})"
                ) from None
            raise UserError(
                f"hf dataset {name!r} is not in the local cache and there is no network "
                f"({_reason(e, logged)}); save it with Dataset.save_to_disk and use hf:PATH"
            ) from None


def _local_config(
    datasets: Any, path: Path, name: str, config: str | None, split: str | None
) -> tuple[str | None, str | None]:
    """The config and split that hf:PATH[:CONFIG][:SPLIT] names in a directory of data files.
    One part names a config where the directory declares one so named (a snapshot of GSM8K
    declares main and socratic in its README.md), else a split."""
    try:
        configs = list(datasets.get_dataset_config_names(str(path)))
    except Exception:  # no data files there: loading says so
        return config, split
    if config is None and split in configs:
        return split, None
    if config is not None and config not in configs:
        if configs == ["default"]:
            raise UserError(
                f"{name!r} declares no configs, so none is called {config!r}; write "
                f"hf:{name}[:SPLIT]"
            )
        raise UserError(f"{name!r} has no config {config!r}; configs: {', '.join(configs)}")
    if config is None and len(configs) > 1:
        try:
            datasets.load_dataset_builder(str(path))
        except ValueError:  # none is the default
            raise UserError(
                f"{name!r} declares the configs {', '.join(configs)}; name one, e.g. "
                f"hf:{name}:{configs[0]}{'' if split is None else f':{split}'}"
            ) from None
    return config, split


def _load_saved(
    datasets: Any, directory: Path, name: str, split: str | None
) -> tuple[Any, str | None]:
    """A directory written by save_to_disk: a Dataset, or a DatasetDict of the splits a task
    reads (`_wanted`), and the split asked of it."""
    if not (directory / "dataset_dict.json").exists():
        return _saved_split(datasets, directory), split
    splits = json.loads((directory / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    chosen = _split_name(splits, split, name)
    wanted = {s: _saved_split(datasets, directory / s) for s in _wanted(splits, chosen)}
    return datasets.DatasetDict(wanted), chosen


def _saved_split(datasets: Any, directory: Path) -> Any:
    """One Dataset written by save_to_disk; one of no rows too, which load_from_disk cannot
    read (it writes no data file)."""
    state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
    if not state.get("_data_files"):
        return _no_rows(datasets, datasets.DatasetInfo.from_directory(str(directory)).features)
    return datasets.load_from_disk(str(directory))


def _load_data_files(
    datasets: Any, directory: Path, name: str, config: str | None, split: str | None
) -> tuple[Any, str]:
    """A directory of data files (csv, json, parquet), as a DatasetDict of the splits a task
    reads (`_wanted`), and the split asked of it."""
    builder = datasets.load_dataset_builder(str(directory), config)
    # The files `datasets` reads, not whatever else lies beside them (a LICENSE, a README)
    files = {str(split): [str(f) for f in fs] for split, fs in builder.config.data_files.items()}
    chosen = _split_name(list(files), split, name)
    wanted = _wanted(list(files), chosen)
    if all(Path(f).suffix.lower() in CSV_FILES for fs in files.values() for f in fs):
        csv = builder.config
        texts = {s: _csv_as_text(datasets, directory, config, csv, s, files[s]) for s in wanted}
        return datasets.DatasetDict(texts), chosen
    # only the splits wanted: one of other columns (or none) would fail the whole preparation
    builder = datasets.load_dataset_builder(
        str(directory), config, data_files={s: files[s] for s in wanted}
    )
    builder.download_and_prepare()
    return datasets.DatasetDict({s: _prepared_split(datasets, builder, s) for s in wanted}), chosen


def _csv_as_text(
    datasets: Any, directory: Path, config: str | None, csv: Any, split: str, files: list[str]
) -> Any:
    """One split of CSV files, every column a string as written: `datasets` infers types as
    pandas does, so it read the answer 007 as 7, True as a boolean, NA (Namibia) as null, and
    a column of numbers in one split and of words in another not at all. An empty cell
    reads as the empty string."""
    text = datasets.Features({c: datasets.Value("string") for c in _csv_columns(csv, files[0])})
    builder = datasets.load_dataset_builder(
        str(directory), config, data_files={split: files}, features=text, keep_default_na=False
    )
    builder.download_and_prepare()
    return _prepared_split(datasets, builder, split)


def _prepared_split(datasets: Any, builder: Any, split: str) -> Any:
    """One split of a prepared builder; one of no rows too, which as_dataset refuses ("corresponds
    to no data")."""
    if not builder.info.splits[split].num_examples:
        return _no_rows(datasets, builder.info.features)
    return builder.as_dataset(split=split)


def _no_rows(datasets: Any, features: Any) -> Any:
    return datasets.Dataset.from_dict({c: [] for c in features or {}}, features=features)


def _csv_columns(csv: Any, file: str) -> list[str]:
    """The columns of a CSV file, read as `datasets` reads it (its separator, its header)."""
    import pandas as pd  # slow to import; `datasets` has by now

    # A file that is not UTF-8 fails when `datasets` reads it, in an error naming the file.
    head = {**csv.pd_read_csv_kwargs, "nrows": 0, "chunksize": None, "encoding_errors": "replace"}
    return [str(c) for c in pd.read_csv(file, **head).columns]


_LOGGED_FILE = re.compile(r"(?:file|from) '([^']+)'")  # "Failed to read file '/d/test.csv' ..."


def _reason(e: BaseException, logged: list[str] | None = None) -> str:
    """Why loading failed, in one line: the innermost error raised `from` another (`datasets`
    wraps a file's error in DatasetGenerationError), after the file its log named. Not an
    implicit __context__: that is whatever was being handled, often a first attempt that failed
    otherwise (datasets reads JSON with pyarrow, then pandas)."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = str(e).strip().splitlines()
    reason = f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__
    files = [m.group(1) for line in logged or [] if (m := _LOGGED_FILE.search(line))]
    return f"{files[-1]}: {reason}" if files else reason


def _pick_split(obj: Any, split: str | None, shown: str) -> tuple[Any, str | None]:
    if not hasattr(obj, "keys"):  # a single Dataset
        if split is not None:
            raise UserError(
                f"hf dataset {shown!r} was saved without splits (a Dataset, not a "
                f"DatasetDict), so it has no split {split!r}; drop :{split}"
            )
        return obj, None
    chosen = _split_name(list(obj.keys()), split, shown)
    return obj[chosen], chosen


def _split_name(splits: list[str], split: str | None, shown: str) -> str:
    """The split asked for, or else the first of test, validation and train there is."""
    if split is not None:
        if split not in splits:
            raise UserError(
                f"hf dataset {shown!r} has no split {split!r}; splits: {', '.join(splits)}"
            )
        return split
    if not splits:
        raise UserError(f"hf dataset {shown!r} has no splits")
    return next((s for s in SPLIT_ORDER if s in splits), splits[0])


def _wanted(splits: list[str], chosen: str) -> list[str]:
    """The splits a task reads: its own, and train for the few-shot examples (`load_hf`); the
    others are not read, so one that cannot be (a split of no rows) does not stop it."""
    return [chosen, *(["train"] if "train" in splits and chosen != "train" else [])]


def _class_names(dataset: Any, column: str) -> list[str] | None:
    feature = getattr(dataset, "features", {}).get(column)
    names = getattr(feature, "names", None)
    return list(names) if isinstance(names, list) else None


def _rows(datasets: Any, dataset: Any, fields: Fields) -> list[dict[str, Any]]:
    """Every row as plain values, in one read of the Arrow table (iterating a Dataset formats
    each row on its own, tens of times slower), of the columns an item uses: its fields, and
    the scalar ones its meta keeps (an image or audio column is not read)."""
    scalar = (datasets.Value, datasets.ClassLabel)
    used = {fields.prompt, fields.answer, fields.id, fields.choices}
    features = dataset.features
    columns = [c for c in dataset.column_names if c in used or isinstance(features[c], scalar)]
    rows: list[dict[str, Any]] = dataset.select_columns(columns).to_list()
    narrow = [c for c in columns if _holds_narrow_floats(features[c])]
    for row in rows:
        for c in narrow:
            row[c] = _as_written(row[c], features[c])
    return rows


def _holds_narrow_floats(feature: Any) -> bool:
    if isinstance(feature, dict):
        return any(_holds_narrow_floats(f) for f in feature.values())
    element = _element(feature)
    if element is not None:
        return _holds_narrow_floats(element)
    return getattr(feature, "dtype", None) in NARROW_FLOATS


def _as_written(value: Any, feature: Any) -> Any:
    """`value` with each float32 or float16 of `feature` the shortest number of that
    precision: Arrow hands out the float64 it widens to, so the 1.3 a file holds would be the
    reference 1.2999999523162842, which no model writes."""
    element = _element(feature)
    if isinstance(value, dict) and isinstance(feature, dict):
        return {k: _as_written(v, feature.get(k)) for k, v in value.items()}
    if isinstance(value, dict) and isinstance(element, dict):  # datasets < 3: Sequence of dicts
        return {k: _as_written(v, [element.get(k)]) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_written(v, element) for v in value]
    dtype = getattr(feature, "dtype", None)
    if isinstance(value, float) and dtype in NARROW_FLOATS:
        return float(str(np.dtype(dtype).type(value)))
    return value


def _element(feature: Any) -> Any:
    """The feature of a list's elements; None for a feature not a list."""
    if isinstance(feature, list):  # datasets' shorthand [feature]
        return feature[0]
    return getattr(feature, "feature", None)  # List, LargeList, Sequence


def _hf_items(
    datasets: Any, dataset: Any, fields: Fields, name: str, shown: str
) -> tuple[list[Item], list[str]]:
    """Items from every row; without an id field a row's id is its index in the split."""
    class_names = _class_names(dataset, fields.answer)
    rows = _rows(datasets, dataset, fields)
    wheres = [f"{shown} row {i}" for i in range(len(rows))]
    _check_hf_ids(rows, wheres, fields)
    digits = digit_reading(zip(wheres, rows, strict=True), fields)
    items = [
        row_to_item(
            row,
            fields,
            default_id=str(i),
            where=where,
            task=name,
            class_names=class_names,
            digits=digits,
        )
        for i, (where, row) in enumerate(zip(wheres, rows, strict=True))
    ]
    return items, wheres


def _check_hf_ids(rows: list[dict[str, Any]], wheres: list[str], fields: Fields) -> None:
    """Every row numbered alike, as `_check_id` has every JSONL line: by its id where any row
    has one, else by its index. A row without one would be numbered by index among ids,
    silently, or clash with the row whose id its index is."""
    if fields.id is None:
        return
    ids = [row.get(fields.id) for row in rows]
    given = next((where for where, i in zip(wheres, ids, strict=True) if not _no_id(i)), None)
    missing = next((where for where, i in zip(wheres, ids, strict=True) if _no_id(i)), None)
    if given is not None and missing is not None:
        raise UserError(
            f"{missing}: no {fields.id!r} (an id, which {given} has); give every row an id, or "
            "none to number the items by row"
        )


def load_hf(
    spec: str,
    *,
    seed: int = 0,
    name: str | None = None,
    prompt_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    scorer: str | None = None,
    pattern: str | None = None,
) -> Task:
    """A task from a Hugging Face data set, offline: a directory written by `save_to_disk`, a
    directory of data files (a local snapshot of a Hub data set too, configs and all), or a data
    set already in the local cache. When the data set also has a train split, 3 of its rows
    (chosen by `seed`) become the few-shot examples."""
    datasets = _import_datasets()
    name = name or f"hf:{spec}"
    ds_name, config, split, local = parse_hf_ref(spec)
    obj, split = _load_hf_object(datasets, ds_name, config, split, local)
    dataset, chosen_split = _pick_split(obj, split, ds_name)
    shown = ds_name if chosen_split is None else f"{ds_name} ({chosen_split})"
    if not len(dataset):  # before its fields: a split of no rows may have no columns either
        raise UserError(f"hf dataset {shown!r} has no rows")
    columns = list(dataset.column_names)
    fields = resolve_fields(columns, f"hf dataset {shown}", prompt_field, answer_field, id_field)
    items, wheres = _hf_items(datasets, dataset, fields, name, shown)
    _check_unique_ids(items, wheres, shown)
    fewshot: list[Item] = []
    if hasattr(obj, "keys") and "train" in obj and chosen_split != "train":
        train = obj["train"]
        picks = sorted(random.Random(seed).sample(range(len(train)), min(N_FEWSHOT, len(train))))
        try:
            fewshot, _ = _hf_items(
                datasets, train.select(picks), fields, name, f"{ds_name} (train)"
            )
        except UserError:
            fewshot = []  # a train split shaped unlike the test split gives no examples
        for i, shot in enumerate(fewshot):
            shot.id = f"shot-{i}"
    description = f"{len(items)} items from hf dataset {shown}"
    return _make_task(name, description, items, wheres, scorer, pattern, fewshot)
