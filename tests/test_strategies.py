"""Strategies on the real llama.cpp engine with the bundled models: vote, cascade, switch, budget.
Each runs through the runner into a real SQLite store, as a user's spec would."""

import json
from collections import Counter

import pytest

from tradeoff.config import parse_spec
from tradeoff.runner import profile
from tradeoff.store import Store
from tradeoff.strategies.vote import decided, majority

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
    store = Store.open(tmp_path / name)
    try:
        df = store.records()
    finally:
        store.close()
    df["extra"] = df["extra"].map(json.loads)
    df["calls"] = df["calls"].map(json.loads)
    return df


def test_decided_and_majority_rules():
    assert decided(Counter({"4": 3}), 2)  # 3 > 0 + 2
    assert not decided(Counter({"4": 2}), 2)
    assert not decided(Counter({"4": 2, "5": 1}), 1)  # 2 > 1 + 1 is false: a tie is possible
    assert decided(Counter({"4": 3, "5": 1}), 1)
    out, answer, share = majority(["a 4", "b 5", "c 5"], ["4", "5", "5"])
    assert (out, answer, share) == ("b 5", "5", 2 / 3)
    out, answer, share = majority(["x", "y"], [None, None])
    assert (out, answer, share) == ("x", None, 0.0)
    # an unreadable answer agrees with none: one "7" of four answers is no consensus
    assert majority(["7", "", "?", "-"], ["7", None, None, None])[1:] == ("7", 0.25)


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
            assert sum(c["output_tokens"] for c in r["calls"]) == r["output_tokens"]
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
    df = run(tmp_path, [{"strategy": "budget", "model": "small", "budget": 6}], limit=3)
    assert (df["output_tokens"] <= 6).all()
    for _, r in df.iterrows():
        assert r["extra"]["cap_hit"] == (r["calls"][0]["finish_reason"] == "length")
    assert df["extra"].map(lambda e: e["cap_hit"]).any()
