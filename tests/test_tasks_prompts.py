"""build_request: chat messages for instruct models, few-shot completion prompts for base ones."""

from __future__ import annotations

import json

import pytest

from tradeoff.errors import UserError
from tradeoff.tasks import Task, build_request, load_task, make_scorer
from tradeoff.types import Item


def test_chat_request_puts_the_instruction_before_the_question() -> None:
    task = load_task("arith")
    it = task.items[0]
    req = build_request(task, it, "chat", max_tokens=48, temperature=0.7, seed=11, logprobs=True)
    assert req.mode == "chat" and req.prompt is None
    assert req.messages == [
        {"role": "user", "content": f"Answer with just the final number.\n\n{it.prompt}"}
    ]
    assert req.stop == []
    assert (req.max_tokens, req.temperature, req.seed, req.logprobs) == (48, 0.7, 11, True)


def test_completion_request_is_few_shot_and_stops_at_newline() -> None:
    task = load_task("arith")
    it = task.items[1]
    req = build_request(task, it, "completion", max_tokens=16, temperature=0.0, seed=None)
    assert req.mode == "completion" and req.messages is None
    assert req.prompt is not None
    blocks = req.prompt.split("\n\n")
    assert len(blocks) == 4
    for shot, block in zip(task.fewshot, blocks, strict=False):
        assert block == f"Question: {shot.prompt}\nAnswer: {shot.reference}"
    assert blocks[-1] == f"Question: {it.prompt}\nAnswer:"
    assert req.stop == ["\n"]
    assert req.logprobs is False


def test_completion_choice_prompt_keeps_the_options_and_answers_with_a_letter() -> None:
    task = load_task("choice")
    req = build_request(task, task.items[0], "completion", max_tokens=4, temperature=0, seed=0)
    assert req.prompt is not None
    first = req.prompt.split("\n\n")[0]
    assert "\nA. " in first and "\nD. " in first
    assert first.endswith(f"Answer: {task.fewshot[0].reference}")
    assert req.prompt.endswith("\nD. " + task.items[0].meta["choices"][3] + "\nAnswer:")


def test_completion_shots_use_the_first_alternative_and_the_number_after_hashes() -> None:
    shots = [
        Item(
            id="s0", prompt="Capital of the US?", reference="Washington|Washington D.C.", task="t"
        ),
        Item(id="s1", prompt="Sum?", reference="2 + 2 is 4\nso\n#### 4", task="t"),
    ]
    task = Task(
        name="t",
        description="d",
        items=[],
        scorer=make_scorer("contains"),
        instruction="Answer in a few words.",
        fewshot=shots,
        stop=["\n", "Question:"],
    )
    q = Item(id="q", prompt="Capital of France?", reference="Paris", task="t")
    req = build_request(task, q, "completion", max_tokens=8, temperature=0, seed=None)
    assert req.prompt == (
        "Question: Capital of the US?\nAnswer: Washington\n\n"
        "Question: Sum?\nAnswer: 4\n\n"
        "Question: Capital of France?\nAnswer:"
    )
    assert req.stop == ["\n", "Question:"]


def test_chat_items_keep_their_messages_and_completion_joins_user_turns() -> None:
    task = Task(
        name="t",
        description="d",
        items=[],
        scorer=make_scorer("exact"),
        instruction="Answer briefly.",
    )
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": "Another one?"},
    ]
    it = Item(id="m", prompt=messages, reference="blue", task="t")
    chat = build_request(task, it, "chat", max_tokens=8, temperature=0, seed=None)
    assert chat.messages == messages and chat.messages is not messages
    completion = build_request(task, it, "completion", max_tokens=8, temperature=0, seed=None)
    assert completion.prompt == "Question: Name a colour.\n\nAnother one?\nAnswer:"


def test_empty_instruction_sends_the_bare_question() -> None:
    task = Task(name="t", description="d", items=[], scorer=make_scorer("exact"))
    it = Item(id="q", prompt="  Hello?  ", reference="hi", task="t")
    req = build_request(task, it, "chat", max_tokens=8, temperature=0, seed=None)
    assert req.messages == [{"role": "user", "content": "Hello?"}]


def test_unknown_mode() -> None:
    task = load_task("facts")
    with pytest.raises(UserError, match="modes: chat, completion"):
        build_request(task, task.items[0], "instruct", max_tokens=8, temperature=0, seed=None)  # type: ignore[arg-type]


def test_jsonl_tasks_show_base_models_their_own_items_never_the_one_asked(tmp_path) -> None:
    data = tmp_path / "q.jsonl"
    data.write_text("".join(f'{{"prompt": "{i}+{i}?", "answer": "{2 * i}"}}\n' for i in range(6)))
    task = load_task(f"jsonl:{data}")

    def prompt(i: int) -> str:
        req = build_request(task, task.items[i], "completion", max_tokens=8, temperature=0, seed=0)
        assert req.prompt is not None
        return req.prompt

    assert prompt(0).split("\n\n") == [
        "Question: 1+1?\nAnswer: 2",
        "Question: 2+2?\nAnswer: 4",
        "Question: 3+3?\nAnswer: 6",
        "Question: 0+0?\nAnswer:",
    ]
    assert prompt(2).startswith("Question: 0+0?\nAnswer: 0\n\nQuestion: 1+1?\nAnswer: 2\n\n")
    assert prompt(2).count("2+2?") == 1 and prompt(2).endswith("Question: 2+2?\nAnswer:")
    # Chat prompts are unchanged: the examples are for base models only.
    chat = build_request(task, task.items[0], "chat", max_tokens=8, temperature=0, seed=0)
    assert chat.messages is not None and "1+1" not in chat.messages[0]["content"]


@pytest.mark.parametrize("column", [5, "lots"])
def test_a_data_files_max_tokens_column_is_metadata_not_an_exact_length(tmp_path, column):
    """A scored task's column named `max_tokens` stays the user's metadata: its requests asked
    for exactly 5 tokens, as synthetic load's do (and "lots" crashed the run mid-profile)."""
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"prompt": "What is 1+1?", "answer": "2", "max_tokens": column}))
    task = load_task(f"jsonl:{path}")
    req = build_request(task, task.items[0], "chat", max_tokens=48, temperature=0, seed=None)
    assert (req.max_tokens, req.exact_tokens) == (48, False)
    assert task.items[0].meta["max_tokens"] == column
    synthetic = load_task("synthetic:prompt=4,output=7,n=1")
    req = build_request(synthetic, synthetic.items[0], "chat", max_tokens=48, temperature=0, seed=0)
    assert (req.max_tokens, req.exact_tokens) == (7, True)
