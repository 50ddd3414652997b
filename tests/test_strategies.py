"""Strategies on the real llama.cpp engine with the bundled models: vote, cascade, switch, budget.
Each runs through the runner into a real SQLite store, as a user's spec would."""

import json
from collections import Counter

import pandas as pd
import pytest

from tradeoff.config import parse_spec
from tradeoff.errors import UserError
from tradeoff.runner import profile
from tradeoff.serve.app import _Run
from tradeoff.store import Store
from tradeoff.strategies.vote import decided, majority
from tradeoff.types import Call, Generation, Outcome

MODELS = {"small": "smollm2-135m", "large": "gemma3-270m"}


def run(tmp_path, configs, *, tasks=("arith",), limit=3, max_tokens=24, name="run"):
    spec = parse_spec(
        {
            "models": MODELS,
            "tasks": list(tasks),
            "limit": limit,
            "sampling": {"max_tokens": max_tokens},
            "configs": configs,
        }
    )
    result = profile(spec, tmp_path / name, notify=lambda m: None)
    assert result.status == "finished" and result.errors == 0
    return _records(tmp_path / name)


def _records(directory):
    """A run's records, `extra` and `calls` parsed."""
    store = Store.open(directory)
    try:
        df = store.records()
    finally:
        store.close()
    df["extra"] = df["extra"].map(json.loads)
    df["calls"] = df["calls"].map(json.loads)
    return df


def test_decided_and_majority_rules():
    assert decided(Counter({"4": 3}), 2)  # 3 > 0 + 2
    # a tie goes to the answer seen first: two of "4" with two draws left is decided (a new
    # answer drawn twice ties, seen after "4"); it drew one answer more than it needed
    assert decided(Counter({"4": 2}), 2)
    assert not decided(Counter({"4": 2}), 3)  # a new answer drawn thrice overtakes
    assert decided(Counter({"4": 2, "5": 1}), 1)  # "5" can tie, but was seen after "4"
    assert not decided(Counter({"5": 1, "4": 2}), 1)  # seen before "4", "5" would win the tie
    assert decided(Counter({"4": 3, "5": 1}), 1)
    # what the rule spares changes no answer: every order of five draws of three answers,
    # stopped where it is decided, has the full vote's majority
    import itertools

    for draws in itertools.product("abc", repeat=5):
        counts: Counter[str] = Counter()
        for i, answer in enumerate(draws):
            counts[answer] += 1
            if decided(counts, len(draws) - i - 1):
                assert (
                    majority(list(draws[: i + 1]), list(draws[: i + 1]))[1]
                    == (majority(list(draws), list(draws))[1])
                ), draws
                break
    chosen, answer, share = majority(["a 4", "b 5", "c 5"], ["4", "5", "5"])
    assert (chosen, answer, share) == (1, "5", 2 / 3)
    chosen, answer, share = majority(["x", "y"], [None, None])
    assert (chosen, answer, share) == (0, None, 0.0)
    # an unreadable answer agrees with none: one "7" of four answers is no consensus
    assert majority(["7", "", "?", "-"], ["7", None, None, None])[1:] == ("7", 0.25)


def test_an_answer_is_failed_where_the_call_it_came_from_failed():
    def call(text, error=None):
        return Call("m", Generation(text, 3, 2, 0.0, 0.1, 0.2, "stop", "chat", error=error))

    broken = call("The answer", "ServerDisconnectedError")  # partial text, then the drop
    assert Outcome("The answer", [broken]).error == "ServerDisconnectedError"
    # a vote's failed draw, or a cascade's small answer before it escalated: not the answer's
    assert Outcome("4", [call("4"), broken, call("4")], answered_by=0).error is None
    assert Outcome("4", [broken, call("4")]).error is None
    assert Outcome("", [call("4"), broken], answered_by=1).error == "ServerDisconnectedError"
    assert Outcome("", []).error is None
    # its finish reason too: a vote of a draw that stopped, beside one cut at max_tokens
    cut = Call("m", Generation("4 and", 3, 2, 0.0, 0.1, 0.2, "length", "chat"))
    assert _Run._finish_reason(Outcome("4", [call("4"), cut], answered_by=0)) == "stop"
    assert _Run._finish_reason(Outcome("4 and", [call("4"), cut])) == "length"


def test_vote_majority_and_adaptive_early_stop(tmp_path):
    df = run(
        tmp_path,
        [
            {"strategy": "vote", "model": "small", "n": 4, "temperature": 0.9},
            # nearly greedy: every draw agrees, so after 3 of 5 the leader cannot be overtaken
            {
                "strategy": "vote",
                "model": "small",
                "n": 5,
                "adaptive": True,
                "temperature": 0.01,
                "name": "adaptive",
            },
        ],
        limit=2,
        max_tokens=16,
    )
    full = df[df["config"] != "adaptive"]
    for _, r in full.iterrows():
        answers = r["extra"]["answers"]
        assert r["extra"]["samples_drawn"] == len(r["calls"]) == 4
        counts = Counter(a for a in answers if a is not None)
        if counts:
            top = max(counts.values())
            assert counts[r["parsed"]] == top
            assert r["extra"]["share"] == pytest.approx(top / len(answers))
        assert r["output_tokens"] == sum(c["output_tokens"] for c in r["calls"])
        # the answer is released once the draws are counted: that is its first token's time,
        # after every draw (the first draw's first token would flatter it)
        assert sum(c["e2e_s"] for c in r["calls"]) <= r["ttft_s"] <= r["e2e_s"]
    early = df[df["config"] == "adaptive"]
    for _, r in early.iterrows():
        answers = r["extra"]["answers"]
        assert len(set(answers)) == 1
        assert r["extra"]["samples_drawn"] == len(r["calls"]) == 3


def test_cascade_escalates_exactly_when_the_signal_crosses_the_threshold(tmp_path):
    probe = run(
        tmp_path,
        [
            {
                "strategy": "cascade",
                "models": ["small", "large"],
                "signal": "logprob",
                "threshold": 1e9,
            }
        ],
        name="probe",
        limit=4,
    )
    u = sorted(r["extra"]["uncertainty"] for _, r in probe.iterrows())
    assert not any(r["extra"]["escalated"] for _, r in probe.iterrows())
    threshold = (u[1] + u[2]) / 2  # between the 2nd and 3rd: two must escalate, two must not
    for signal in ("logprob", "entropy"):
        df = run(
            tmp_path,
            [
                {
                    "strategy": "cascade",
                    "models": ["small", "large"],
                    "signal": signal,
                    "threshold": threshold,
                }
            ],
            name=signal,
            limit=4,
        )
        for _, r in df.iterrows():
            e = r["extra"]
            assert e["escalated"] == (e["uncertainty"] > threshold)
            assert [c["model"] for c in r["calls"]] == (
                ["small", "large"] if e["escalated"] else ["small"]
            )
            # released whole once decided: after every call it made
            assert sum(c["e2e_s"] for c in r["calls"]) <= r["ttft_s"] <= r["e2e_s"]
        if signal == "logprob":
            assert sum(df["extra"].map(lambda e: e["escalated"])) == 2


def test_switch_accounting_extremes_and_cross_tokenizer(tmp_path):
    df = run(
        tmp_path,
        [
            {"model": "small"},
            {"model": "large"},
            {
                "strategy": "switch",
                "models": ["small", "large"],
                "threshold": [0.0, 1.0, 1.5, 1e9],
            },  # fmt: skip
        ],
        tasks=("arith", "facts"),
        limit=3,
    )
    by = {name: g.set_index(["task", "item_id"]) for name, g in df.groupby("config")}
    all_large, mixed, all_small = (
        by["switch-small-large-t0"],
        by["switch-small-large-t1"],
        by["switch-small-large-t1e+09"],
    )
    for frame in (all_large, mixed, all_small):
        for _, r in frame.iterrows():
            e = r["extra"]
            assert e["tokens_small"] + e["tokens_large"] == r["output_tokens"]
            # the models' turns interleave: a call has no first-token time of its own (the
            # small one's read beyond its computed time, even where it wrote no token)
            assert all(c["ttft_s"] is None for c in r["calls"]), r["calls"]
            assert r["ttft_s"] is not None and r["ttft_s"] <= r["e2e_s"]
            assert sum(c["output_tokens"] for c in r["calls"]) == r["output_tokens"]
            # its ITL: the answer's own gaps between tokens, whichever model wrote them
            if r["output_tokens"] >= 2:
                span = r["itl_s"] * (r["output_tokens"] - 1)
                assert 0 < span <= r["e2e_s"] - r["ttft_s"]
                assert r["decode_tps"] == pytest.approx(1 / r["itl_s"])
            else:
                assert pd.isna(r["itl_s"])
            assert "\ufffd" not in r["output"]
    for name in ("switch-small-large-t1", "switch-small-large-t1.5"):
        for _, r in by[name].iterrows():
            e = r["extra"]
            turns = {c["model"]: c["finish_reason"] for c in r["calls"]}
            assert turns.pop(e["last_turn"]) == e["finish_reason"]
            assert set(turns.values()) <= {"switch"}  # its turn ended by a hand-over
            # The large model is prompted few-shot: once the answer holds its stop string "\n"
            # (the small chat model wrote one), the answer has ended in its format, and it does
            # not get the turn to write the next question. What follows is the small model's.
            if "\n" in r["output"]:
                assert e["text_small"].endswith(r["output"][r["output"].index("\n") :])
    hand_back = by["switch-small-large-t1.5"]["output"]
    assert hand_back.str.contains("\n").any()  # the case above, met by these items
    assert (all_large["extra"].map(lambda e: e["tokens_small"]) == 0).all()
    assert (all_small["extra"].map(lambda e: e["tokens_large"]) == 0).all()
    # at the extremes, switch is the single model, token for token
    assert list(all_small["output"]) == list(by["small"]["output"])
    assert list(all_large["output"]) == list(by["large"]["output"])
    # in between, both models write parts of one answer, across two tokenizers
    both = mixed[mixed["extra"].map(lambda e: e["tokens_small"] > 0 and e["tokens_large"] > 0)]
    assert len(both) >= 1
    for _, r in both.iterrows():
        e = r["extra"]
        assert e["switches"] >= 1
        assert e["catchup_tokens_large"] > 0  # the large model prefilled the small's text
        models = {c["model"]: c for c in r["calls"]}
        assert models["large"]["input_tokens"] > 0 and models["large"]["flops"] > 0


def test_budget_caps_output_and_records_when_the_cap_bit(tmp_path):
    df = run(
        tmp_path,
        [{"strategy": "budget", "model": "small", "budget": 6},
         {"strategy": "budget", "model": "small", "budget": 14, "think_budget": 4}],
        limit=3,
    )  # fmt: skip
    plain = df[df["config"] == "budget6-small"]
    assert (plain["output_tokens"] <= 6).all()
    for _, r in plain.iterrows():
        assert r["extra"]["cap_hit"] == (r["calls"][0]["finish_reason"] == "length")
    assert plain["extra"].map(lambda e: e["cap_hit"]).any()
    # cut at think_budget (a model that does not think: the cut text is its answer so far),
    # then finished inside the budget: the cap is the budget's, not think_budget's (it read
    # cap_hit for an answer of 9 tokens of 14)
    forced = df[df["config"] == "budget14-small-think4"]
    finished = 0
    for _, r in forced.iterrows():
        assert r["output_tokens"] <= 14
        assert r["extra"]["cap_hit"] == (r["calls"][-1]["finish_reason"] == "length"), r
        finished += len(r["calls"]) == 2 and r["calls"][-1]["finish_reason"] == "stop"
    assert finished >= 1


def _fast_records(tmp_path, configs, *, failing=False, small_model="small"):
    """Records of `configs` over two arith items against two loopback fast servers: models
    `small` (every generation failing where `failing`; the server's model `small_model`) and
    `large`."""
    import contextlib

    from conftest import fast_server

    serve = contextlib.contextmanager(fast_server)
    with serve(*(["--fail-every", "1"] if failing else [])) as small, serve() as large:
        spec = parse_spec(
            {
                "models": {
                    "small": f"openai:{small}#{small_model}",
                    "large": f"openai:{large}#large",
                },
                "tasks": ["arith"], "limit": 2, "sampling": {"max_tokens": 16},
                "configs": configs,
            }
        )  # fmt: skip
        result = profile(spec, tmp_path / "run", notify=lambda m: None)
    assert result.status == "finished"
    return _records(tmp_path / "run")


def test_a_small_answer_without_log_probabilities_escalates(tmp_path):
    """A failed small call has no tokens: infinitely uncertain, as the docstring says. The
    logprob signal read minus the mean of none, -inf, and never escalated (entropy did)."""
    df = _fast_records(
        tmp_path,
        [
            {"strategy": "cascade", "models": ["small", "large"], "signal": s, "threshold": 0}
            for s in ("logprob", "entropy")
        ],  # fmt: skip
        failing=True,
    )
    assert len(df) == 4
    for _, r in df.iterrows():
        assert r["extra"]["escalated"] is True and r["extra"]["uncertainty"] is None, r
        assert [c["model"] for c in r["calls"]] == ["small", "large"] and r["error"] is None


def test_an_alternative_of_probability_zero_leaves_the_entropy_a_number(tmp_path):
    """A top log-probability of -Infinity made the entropy NaN: never above the threshold, so
    never escalated, and stored as null (the mark of an infinitely uncertain answer)."""
    config = {"strategy": "cascade", "models": ["small", "large"], "signal": "entropy"}
    df = _fast_records(tmp_path, [{**config, "threshold": 0.01}], small_model="zero-alternative")
    assert len(df) == 2
    for _, r in df.iterrows():
        assert r["extra"]["escalated"] is True, r
        # fast_server's top five (0.6, 0.15, 0.1, 0.03, 0.02), the rest 0.1: 1.235 nats a token
        assert r["extra"]["uncertainty"] == pytest.approx(1.235, abs=1e-3), r
        assert [c["model"] for c in r["calls"]] == ["small", "large"]


def test_a_nan_log_probability_is_infinitely_uncertain(tmp_path):
    """A server's NaN log-probability made the mean NaN, which is never above a threshold: the
    small answer was kept, unescalated, stored with the null of an infinitely uncertain one."""
    config = {"strategy": "cascade", "models": ["small", "large"], "signal": "logprob"}
    df = _fast_records(tmp_path, [{**config, "threshold": 0.5}], small_model="nan-logprob")
    assert len(df) == 2
    for _, r in df.iterrows():
        assert r["extra"]["escalated"] is True and r["extra"]["uncertainty"] is None, r
        assert [c["model"] for c in r["calls"]] == ["small", "large"]


def test_budget_forcing_records_its_cap_and_a_failed_continuation(tmp_path):
    """An answer cut at think_budget whose continuation fails: the record kept the cut part
    with no error (the summary counted errors 0); the failed continuation is its error. A chat
    endpoint, which cannot continue an answer at all, is refused before the run (every answer
    that thought past think_budget failed)."""
    import contextlib

    from conftest import fast_server

    thinking = {"strategy": "budget", "model": "small", "budget": 14, "think_budget": 2}
    with contextlib.contextmanager(fast_server)("--fail-every", "2") as url:
        for mode in ("@completion", ""):  # every second generation fails: each continuation
            spec = parse_spec({
                "models": {"small": f"openai:{url}#small{mode}"}, "tasks": ["arith"],
                "limit": 2, "concurrency": 1, "configs": [thinking],
            })  # fmt: skip
            if not mode:
                with pytest.raises(UserError, match="a chat endpoint cannot; 'small' is openai:"):
                    profile(spec, tmp_path / "chat", notify=lambda m: None)
                continue
            assert profile(spec, tmp_path / "run", notify=lambda m: None).status == "finished"
    df = _records(tmp_path / "run")
    assert len(df) == 2
    for _, r in df.iterrows():
        assert r["calls"][0]["finish_reason"] == "length" and r["calls"][1]["error"], r["calls"]
        assert r["error"] and "500" in r["error"], r["error"]
        assert r["output"] and r["score"] == 0.0
    assert not (tmp_path / "chat").exists()


def test_budget_thinks_past_a_line_break_in_completion_mode(tmp_path):
    """A completion's answer ends at its first line break, and the thinking call was sent that
    stop too: a model that writes `<think>` and a new line thought for 1 token whatever
    think_budget said, then had its empty thinking closed (`forced: false`). The thinking now
    stops only at its close, and the answer after it at the line's end."""
    import contextlib

    from conftest import fast_server

    task = tmp_path / "q.jsonl"
    task.write_text('{"prompt": "What is 6 times 7?", "answer": "42"}\n')
    with contextlib.contextmanager(fast_server)() as url:
        spec = parse_spec({
            "models": {"thinker": f"openai:{url}#thinks@completion"}, "tasks": [f"jsonl:{task}"],
            "sampling": {"max_tokens": 40},
            "configs": [
                {"strategy": "budget", "model": "thinker", "budget": 40, "think_budget": 30},
                {"strategy": "budget", "model": "thinker", "budget": 40, "think_budget": 4},
            ],
        })  # fmt: skip
        assert profile(spec, tmp_path / "run", notify=lambda m: None).errors == 0
    df = _records(tmp_path / "run").set_index("config")
    closed = df.loc["budget40-thinker-think30"]  # closed its thinking itself, within 30
    assert closed["output"] == "<think>\n6 times 7\nis 42\n</think>\n 42", closed["calls"]
    assert closed["calls"][0]["output_tokens"] == 9 and closed["extra"]["forced"] is False
    assert closed["score"] == 1.0
    forced = df.loc["budget40-thinker-think4"]  # cut after 4 tokens, closed, then answered
    assert forced["output"] == "<think>\n6 times\n</think>\n 42", forced["calls"]
    assert forced["calls"][0]["output_tokens"] == 4 and forced["extra"]["forced"] is True
    assert forced["score"] == 1.0


def test_the_thinking_calls_stream_keeps_an_unthinking_answer_to_its_stops():
    """The thinking call stops only at `</think>`: an answer that does not think runs on past
    its own stop strings, which a served stream must not show."""
    from tradeoff.engines.emit import Thought
    from tradeoff.strategies.budget import _FirstCall
    from tradeoff.types import StopEarly

    for pieces, shown, stops in [
        (["The", " answer\nQues", "tion: 2"], "The answer", True),
        (["<th", "ink>\n6 times", "\n7</think>"], "<think>\n6 times\n7</think>", False),
        ([Thought("hmm"), " 4", "2", "\n"], "hmm 42", True),  # an upstream's reasoning goes on
    ]:
        got: list[str] = []
        sink = _FirstCall(got.append, ["\n"], StopEarly(None))
        for piece in pieces:
            sink(piece)
        sink.finish()
        assert "".join(got) == shown, got
        assert sink.stop_early.is_set() is stops  # the engine is told to stop there


def test_budget_stops_an_answer_that_does_not_think_at_its_own_stop(tmp_path):
    """The thinking call stops only at `</think>`: an answer that does not think (a base model
    prompted few-shot) ran on to think_budget past its line's end, paying 32 tokens for the 4
    of `single`'s answer. It is stopped at its stop string as `single` is."""
    df = run(
        tmp_path,
        [{"strategy": "single", "model": "large"},
         {"strategy": "budget", "model": "large", "budget": 64, "think_budget": 32}],
        limit=3, max_tokens=64,
    )  # fmt: skip
    single = df[df["config"] == "large"].set_index("item_id")
    budget = df[df["config"] == "budget64-large-think32"].set_index("item_id")
    for item, r in budget.iterrows():
        assert r["output"] == single.loc[item, "output"], (r["output"], single.loc[item])
        first = r["calls"][0]
        assert first["error"] is None and first["finish_reason"] == "stop", first
        assert first["output_tokens"] <= single.loc[item, "output_tokens"] + 2, r["calls"]


def test_budget_reads_a_servers_answer_that_does_not_think_to_its_end(tmp_path):
    """Stopped early at its stop string, a server's stream closed before its usage came: the
    record lost its input tokens, so its FLOPs and any input price. A server's answer is read to
    its end; only its text stops at the stop string."""
    import contextlib

    from conftest import fast_server

    task = tmp_path / "q.jsonl"  # a prompt that closed the thinking: `thinks` answers at once
    task.write_text('{"prompt": "</think> What is 6 times 7?", "answer": "42"}\n')
    with contextlib.contextmanager(fast_server)("--delay-ms", "20") as url:
        spec = parse_spec({
            "models": {"m": f"openai:{url}#thinks@completion"}, "tasks": [f"jsonl:{task}"],
            "sampling": {"max_tokens": 40},
            "configs": [{"strategy": "budget", "model": "m", "budget": 40, "think_budget": 30}],
        })  # fmt: skip
        assert profile(spec, tmp_path / "run", notify=lambda m: None).errors == 0
    (r,) = _records(tmp_path / "run").to_dict("records")
    assert r["output"] == " 42" and r["score"] == 1.0, r
    (call,) = r["calls"]
    assert call["input_tokens"] is not None and call["token_count_source"] == "usage", call


def test_a_reasoning_answer_is_scored_after_its_thinking():
    from tradeoff.tasks.scorers import after_thinking

    assert after_thinking("<think> 3 plus 10 is 13\n</think>\n The answer is unclear") == (
        "\n The answer is unclear"
    )
    assert after_thinking("  <think> 3 plus 10 is 13") == ""  # cut off: no answer given
    assert after_thinking("13, I think") == "13, I think"


def test_agreement_samples_the_small_model_and_the_large_answers_at_the_given_temperature(
    tmp_path,
):
    """`agreement` raises the temperature of the small model's draws to 0.7 (the spec's is 0);
    the large model's one answer was drawn at 0.7 too, so an escalated answer was a sample, not
    the large model's greedy answer. An entry's own temperature is both models'."""
    import contextlib

    from conftest import fast_server

    serve = contextlib.contextmanager(fast_server)
    small_log, large_log = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    always = {"strategy": "cascade", "models": ["small", "large"], "signal": "agreement"}
    with (
        serve("--log-requests", str(small_log)) as small,
        serve("--log-requests", str(large_log)) as large,
    ):
        spec = parse_spec(
            {
                "models": {"small": f"openai:{small}#small", "large": f"openai:{large}#large"},
                "tasks": ["arith"], "limit": 1, "sampling": {"max_tokens": 4},
                "configs": [
                    {**always, "threshold": -1, "name": "raised"},
                    {**always, "threshold": -1, "temperature": 0.4, "name": "given"},
                ],
            }
        )  # fmt: skip
        assert profile(spec, tmp_path / "run", notify=lambda m: None).status == "finished"
    drawn = [json.loads(line)["temperature"] for line in small_log.read_text().splitlines()]
    answered = [json.loads(line)["temperature"] for line in large_log.read_text().splitlines()]
    assert sorted(drawn) == [0.4] * 3 + [0.7] * 3
    assert sorted(answered) == [0.0, 0.4]


@pytest.mark.parametrize(
    ("small", "large", "max_tokens", "threshold", "refused"),
    [
        # the large model's context is shorter than its prompt: switch does not crash the run
        ("smollm2-135m", "gemma3-270m?ctx=128", 8, 0, "large"),
        # the small model's prompt fits, but not with max_tokens: no truncated "length" answer
        ("smollm2-135m?ctx=64", "gemma3-270m", 24, 100, "small"),
    ],
)
def test_switch_fails_a_prompt_past_a_models_context_as_single_does(
    tmp_path, small, large, max_tokens, threshold, refused
):
    spec = parse_spec(
        {
            "models": {"small": small, "large": large},
            "tasks": ["arith"], "limit": 2,
            "sampling": {"temperature": 0.0, "max_tokens": max_tokens, "seed": 0},
            "configs": [
                {"model": refused},
                {"strategy": "switch", "models": ["small", "large"], "threshold": threshold},
            ],
        }
    )  # fmt: skip
    result = profile(spec, tmp_path / "run", notify=lambda m: None)
    assert result.status == "finished" and result.errors >= 2
    by = {name: g.set_index("item_id") for name, g in _records(tmp_path / "run").groupby("config")}
    single, switch = by[refused], by[f"switch-small-large-t{threshold:g}"]
    assert single["error"].notna().any()
    for item, r in switch.iterrows():
        error = single.loc[item, "error"]
        if pd.isna(error):  # this item's prompt fits: switch answers it
            assert pd.isna(r["error"]) and r["output"]
            continue
        assert r["error"] == error and "exceeds the context" in error and r["output"] == ""
        assert [(c["model"], c["finish_reason"]) for c in r["calls"]] == [(refused, "error")]


def test_a_temperature_too_small_to_divide_by_draws_the_likeliest_token(smollm, gemma):
    """At a temperature as small as 5e-324 (valid: in [0, 2]) every scaled log-probability
    overflowed to -inf and `switch` failed with "Probabilities contain NaN", served as a 502;
    it is greedy decoding, the temperature-0 answer."""
    import numpy as np

    from tradeoff.engines.stream import sample
    from tradeoff.strategies.switch import run_switch_sync
    from tradeoff.tasks import build_request, load_task

    logp = np.log(np.array([0.1, 0.6, 0.3]))
    rng = np.random.default_rng(0)
    assert [sample(logp, t, rng) for t in (5e-324, 1e-300, 1e-12)] == [1, 1, 1]

    task = load_task("facts")
    answers = []
    for temperature in (0.0, 5e-324):
        request = build_request(
            task, task.items[0], "completion", max_tokens=8, temperature=temperature, seed=0
        )
        answer, _, _ = run_switch_sync(
            smollm.token_stream(request), gemma.token_stream(request), max_tokens=8,
            threshold=1.5, threshold_low=0.5, window=4, temperature=temperature, seed=0,
        )  # fmt: skip
        answers.append(answer)
    assert answers[0] and answers[1] == answers[0]


def test_switch_and_the_torch_engine_sample_from_llama_cpps_candidates(smollm, gemma):
    """At a temperature above 0 `switch` drew from the whole vocabulary, where the engines' own
    answers keep llama.cpp's top-k, top-p and min-p candidates: gibberish where `single`
    answered. Drawn this hot, a token from the whole vocabulary would fall almost anywhere."""
    import numpy as np
    import torch

    from tradeoff.engines.stream import MIN_P, TOP_K, candidates
    from tradeoff.engines.torch_engine import TorchEngine
    from tradeoff.strategies.switch import run_switch_sync
    from tradeoff.tasks import build_request, load_task

    task = load_task("facts")
    request = build_request(
        task, task.items[0], "completion", max_tokens=8, temperature=50.0, seed=0
    )
    small, large = smollm.token_stream(request), gemma.token_stream(request)
    read, take = small.next_distribution, small.take
    drawn, chosen = [], []
    small.next_distribution = lambda answer: drawn.append(read(answer)) or drawn[-1]
    small.take = lambda token: chosen.append(token) or take(token)
    _, stats, _ = run_switch_sync(
        small, large, max_tokens=8, threshold=1e9, threshold_low=1e9, window=4,
        temperature=50.0, seed=0,
    )  # fmt: skip
    assert stats["tokens_large"] == 0 and len(chosen) == stats["tokens_small"] >= 4
    for logp, token in zip(drawn, chosen):
        assert token in candidates(logp)
        assert token in np.argsort(-logp)[:TOP_K] and logp[token] >= logp.max() + np.log(MIN_P)
    # the torch engine's draws keep the same candidates
    logits = torch.from_numpy(np.stack(drawn)).float()
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        for row, token in zip(drawn, TorchEngine._sample(logits, 50.0, gen).tolist()):
            assert token in candidates(row)
