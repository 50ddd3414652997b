"""`synthetic:prompt=N,output=N[,stdev=S][,seed=K][,n=M]`: generated prompts of about N tokens
(counted with the bundled SmolLM2's tokenizer), seeded output lengths asked for exactly, records
without a score; bad references fail in one line. End to end against benchmarks/fast_server.py,
which logs the request bodies it receives."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import fast_server, run_cli

from tradeoff.errors import UserError
from tradeoff.tasks import build_request, load_task, task_name
from tradeoff.tasks.synthetic import WORDS

FORM = "synthetic:prompt=N,output=N[,stdev=S][,seed=K][,n=M]"


def test_prompts_are_about_the_asked_number_of_tokens() -> None:
    from llama_cpp import Llama

    from tradeoff.engines.bundled import bundled_path

    vocab = Llama(str(bundled_path("smollm2-135m")), vocab_only=True, verbose=False)
    assert all(len(vocab.tokenize(f" {w}".encode(), add_bos=False)) == 1 for w in WORDS)
    task = load_task("synthetic:prompt=256,output=16,n=20")
    counts = [len(vocab.tokenize(str(i.prompt).encode(), add_bos=False)) for i in task.items]
    assert all(254 <= c <= 258 for c in counts), counts
    assert len({i.prompt for i in task.items}) == 20  # distinct prompts: no shared prefix cache


def test_output_lengths_are_seeded_normal_and_at_least_one() -> None:
    fixed = load_task("synthetic:prompt=8,output=128,n=50")
    assert {i.meta["max_tokens"] for i in fixed.items} == {128}
    spread = [
        i.meta["max_tokens"] for i in load_task("synthetic:prompt=8,output=128,stdev=32").items
    ]
    assert len(spread) == 1000
    assert abs(statistics.mean(spread) - 128) < 4 and abs(statistics.stdev(spread) - 32) < 3
    clipped = [
        i.meta["max_tokens"] for i in load_task("synthetic:prompt=8,output=2,stdev=10").items
    ]
    assert min(clipped) == 1 and clipped.count(1) > 300  # half the normal falls below 1


def test_same_reference_same_items_and_the_seed_changes_them() -> None:
    a = load_task("synthetic:prompt=32,output=16,stdev=4,n=10")
    b = load_task(" synthetic: prompt=32, output=16, stdev=4, seed=0, n=10")
    c = load_task("synthetic:prompt=32,output=16,stdev=4,seed=1,n=10")
    assert a.items == b.items and a.name == b.name
    assert [i.prompt for i in a.items] != [i.prompt for i in c.items]
    assert [i.meta for i in a.items] != [i.meta for i in c.items]
    assert a.name == "synthetic:prompt=32,output=16,stdev=4,n=10"
    assert (
        task_name("synthetic:output=16,prompt=32,seed=0,n=1000") == "synthetic:prompt=32,output=16"
    )
    assert c.name == "synthetic:prompt=32,output=16,stdev=4,seed=1,n=10"
    assert [i.id for i in a.items[:2]] == ["synthetic-0000", "synthetic-0001"]
    assert not a.scored and all(i.reference == "" for i in a.items)


@pytest.mark.parametrize("mode", ["chat", "completion"])
def test_requests_ask_for_exactly_the_items_output_length(mode) -> None:
    task = load_task("synthetic:prompt=12,output=40,stdev=10,n=3")
    for item in task.items:
        req = build_request(task, item, mode, max_tokens=512, temperature=0.0, seed=0)
        assert req.max_tokens == item.meta["max_tokens"] and req.exact_tokens
        assert req.stop == []  # a stop string would end the output early
    arith = load_task("arith")
    req = build_request(arith, arith.items[0], mode, max_tokens=512, temperature=0.0, seed=0)
    assert req.max_tokens == 512 and not req.exact_tokens


def test_field_and_scorer_flags_do_not_apply() -> None:
    with pytest.raises(UserError, match="--scorer does not apply to 'synthetic:"):
        load_task("synthetic:prompt=4,output=4", scorer="exact")
    with pytest.raises(UserError, match="--scorer, --pattern do not apply to 'synthetic:"):
        load_task("synthetic:prompt=4,output=4", scorer="regex", pattern="(x)")


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """fast_server.py writing each request body it receives to a file: (base URL, the file)."""
    log = tmp_path_factory.mktemp("fast") / "bodies.jsonl"
    for url in fast_server("--log-requests", str(log)):
        yield url, log


def test_profile_asks_the_server_for_exact_lengths_and_stores_no_score(logged, tmp_path) -> None:
    url, log = logged
    log.write_text("")  # only this test's bodies
    out = tmp_path / "run"
    ref = "synthetic:prompt=24,output=6,stdev=3,seed=5,n=6"
    result = run_cli("profile", "--model", f"openai:{url}#m", "--task", ref, "--out", str(out))
    assert result.returncode == 0, result.stderr
    records = json.loads(run_cli("report", str(out), "--records", "--format", "json").stdout)
    items = {i.id: i for i in load_task(ref).items}
    assert sorted(r["item_id"] for r in records) == sorted(items)
    for r in records:
        asked = items[r["item_id"]].meta["max_tokens"]
        assert r["score"] is None and r["parsed"] is None and r["error"] is None
        assert r["extra"]["asked_output_tokens"] == asked
        assert r["output_tokens"] == asked  # the canned server always honours it
        assert r["input_tokens"] == 24  # it counts words: the prompt is sent as it is
    bodies = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(b["max_tokens"] for b in bodies) == sorted(
        i.meta["max_tokens"] for i in items.values()
    )
    for body in bodies:
        assert body["ignore_eos"] is True and body["min_tokens"] == body["max_tokens"]
        assert "stop" not in body
    summary = json.loads(run_cli("report", str(out), "--format", "json").stdout)
    assert summary[0]["n"] == 6 and summary[0]["accuracy"] is None


def test_a_null_field_of_extra_body_is_left_out_of_the_request(logged, tmp_path) -> None:
    """A strict server (OpenAI's) refuses ignore_eos and min_tokens; `extra_body` could only
    replace them, sending null, which such a server refuses too."""
    import yaml

    url, log = logged
    log.write_text("")  # the module's server logged the tests' before
    spec = {
        "models": {"m": f"openai:{url}#m"},
        "model_options": {"m": {"extra_body": {"ignore_eos": None, "min_tokens": None}}},
        "tasks": ["synthetic:prompt=8,output=4,n=2"],
        "configs": [{"strategy": "single", "model": "m"}],
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    result = run_cli("profile", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    bodies = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(bodies) == 2 and all(b["max_tokens"] == 4 for b in bodies), bodies
    assert not any("ignore_eos" in b or "min_tokens" in b for b in bodies), bodies


@pytest.mark.parametrize(
    ("ref", "problem"),
    [
        ("synthetic:prompt=abc,output=8", "prompt='abc' is not a number"),
        ("synthetic:prompt=8,output=8,top=3", "unknown key 'top'"),
        ("synthetic:prompt=8", "output missing"),
        ("synthetic:prompt=8,output=-2", "output=-2 must be positive"),
        ("synthetic:prompt=8,output=8,stdev=-1", "stdev=-1 must be >= 0"),
        # each draw overflowed: a traceback; a huge prompt was built until memory ran out
        ("synthetic:prompt=8,output=8,stdev=1e308", "stdev=1e308 is more than 10,000,000"),
        ("synthetic:prompt=99999999999,output=8", "prompt=99999999999 is more than 10,000,000"),
        ("synthetic:prompt=100000,output=8", "1,000 prompts of 100,000 tokens are more than"),
        ("synthetic:prompt=8,output=8,seed=-1", "seed=-1 must be >= 0"),
    ],
)
def test_bad_references_fail_in_one_line_naming_the_form(logged, tmp_path, ref, problem) -> None:
    url, _ = logged
    args = ("profile", "--model", f"openai:{url}#m", "--task", ref, "--out", str(tmp_path / "r"))
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and problem in lines[0] and FORM in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_deviations_that_print_alike_name_two_tasks() -> None:
    """`:g` wrote 1.23456789 and 1.234571 alike: one name, refused as given twice."""
    from tradeoff.tasks.synthetic import parse

    names = {parse(f"synthetic:prompt=8,output=8,stdev={s}").name for s in (1.23456789, 1.234571)}
    assert len(names) == 2
    assert parse("synthetic:prompt=8,output=8,stdev=2.0").name.endswith("stdev=2")  # as before
