"""Router families on outcomes the test writes (topics of known difficulty), through the real
CLI, store, embedding model (all-MiniLM-L6-v2 from its PyPI package) and scikit-learn."""

import json
import sys

import numpy as np
import pytest
from conftest import import_outcomes, one_line_error, run_cli, run_cli_unable_to_write

from tradeoff.policy.fit import Policy, out_of_fold
from tradeoff.policy.routers import ROUTERS, load_router, new_router

# Two kinds of topic, each kind in words no other topic uses: medicine is hard (only the strong
# model answers), sport easy (both do). A router that knows what the words mean can carry
# "medicine is hard" to a medical topic it never saw; one that knows only the words cannot.
TOPICS = {
    "cardiology": ("medicine", ["heart", "artery", "cardiac valve", "arrhythmia", "ventricle"]),
    "oncology": ("medicine", ["tumor", "cancer", "chemotherapy", "biopsy", "metastasis"]),
    "neurology": ("medicine", ["brain", "neuron", "seizure", "stroke", "dementia"]),
    "immunology": ("medicine", ["antibody", "vaccine", "immune system", "infection", "allergy"]),
    "football": ("sport", ["goalkeeper", "penalty kick", "striker", "offside rule", "stadium"]),
    "tennis": ("sport", ["racket", "backhand", "volley", "wimbledon", "tiebreak"]),
    "basketball": ("sport", ["slam dunk", "rebound", "hoop", "dribbling", "three-pointer"]),
    "baseball": ("sport", ["pitcher", "inning", "home run", "batter", "shortstop"]),
}
FRAMES_FREE_NOUNS = ["violin", "glacier", "tax law", "volcano", "poetry", "satellite", "bread"]
FRAMES = [
    "Explain how the {a} relates to the {b}.",
    "What is the role of the {a} when considering the {b}?",
    "Describe the {a} and compare it with the {b}.",
    "Why does the {a} matter for the {b}?",
]


def topic_rows(per_topic=30, seed=0):
    """(prompt, weak correct, strong correct, topic): weak fails 80% of medicine, 10% of sport;
    strong is right on 95% of both."""
    rng = np.random.default_rng(seed)
    rows = []
    for topic, (kind, words) in TOPICS.items():
        for _ in range(per_topic):
            a, b = rng.choice(words, size=2, replace=False)
            prompt = FRAMES[rng.integers(len(FRAMES))].format(a=a, b=b)
            weak_fails = 0.8 if kind == "medicine" else 0.1
            rows.append((prompt, int(rng.random() >= weak_fails), int(rng.random() < 0.95), topic))
    return rows


@pytest.fixture(scope="module")
def topics(tmp_path_factory):
    return import_outcomes(tmp_path_factory.mktemp("topics"), topic_rows(), "topic")


def grouped_apgr(run, router, *more):
    result = run_cli(
        "policy", "eval", str(run), "--split-by", "topic", "--cv", "4", "--router", router,
        "-f", "json", *more,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["router"] == router
    assert data["source"].startswith("4-fold cross-validation over whole topic groups")
    return next(r["apgr"] for r in data["routers"] if r["label"] == "router")


def test_embeddings_carry_difficulty_to_unseen_topics_where_hashed_words_cannot(topics):
    words = grouped_apgr(topics, "words-lr")
    for router in ("embed-knn", "embed-lr", "mf", "ensemble"):
        meaning = grouped_apgr(topics, router)
        assert meaning > 0.6, (router, meaning)  # random 0.5 ± 0.05; the oracle 0.88
        assert meaning > words + 0.15, (router, meaning, words)
    assert words < 0.55  # the held-out topics' words were never seen: nothing to go on


def test_the_embeddings_are_kept_in_the_store_and_reused(topics):
    from tradeoff.policy import embed
    from tradeoff.store import Store

    grouped_apgr(topics, "embed-lr")
    store = Store.open(topics)
    try:
        texts = store.items()["prompt"].tolist()
        kept = store.embeddings(embed.MODEL, [embed.digest(t) for t in texts])
    finally:
        store.close()
    assert set(kept) == {embed.digest(t) for t in texts}
    again = embed.embed(texts[:5], topics)
    assert np.allclose(again, embed.encode(texts[:5]), atol=1e-5)


def test_a_run_that_cannot_be_written_is_embedded_and_nothing_kept_there(tmp_path):
    """The embeddings computed for a run this user cannot write (a read-only mount) were added
    to its store, read as it is: a traceback, in `policy fit` and `policy eval` alike."""
    from tradeoff.store import Store

    run = import_outcomes(tmp_path, topic_rows(per_topic=5), "topic")
    policy_file = tmp_path / "p.json"
    fitted = run_cli_unable_to_write(
        run, "policy", "fit", str(run), "--strong-fraction", "0.5", "--router", "embed-lr",
        "-o", str(policy_file),
    )  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr
    assert f"queries of {run} (not kept: it cannot be written)" in fitted.stderr
    assert Policy.load(policy_file).kind == "embed-lr"
    shown = run_cli_unable_to_write(
        run, "policy", "eval", str(run), "--cv", "3", "--router", "embed-lr", "-f", "json"
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["router"] == "embed-lr"
    store = Store.open(run)
    try:
        assert store.conn.execute("SELECT COUNT(*) FROM embeddings").fetchone() == (0,)
    finally:
        store.close()


def test_a_grouped_split_never_lets_a_group_be_fitted_and_evaluated(tmp_path):
    """Every query of a group is nearly the same text (one number apart: random folds keep only
    identical ones together) with the same outcome, drawn at random per group: a
    nearest-neighbour router that saw any of a group would route it perfectly; one that never
    did has nothing to go on."""
    rng = np.random.default_rng(3)
    nouns = [w for _, words in TOPICS.values() for w in words] + FRAMES_FREE_NOUNS
    rows = []
    for g in range(24):
        text, weak = " ".join(rng.choice(nouns, size=3, replace=False)), int(rng.random() < 0.5)
        rows += [(f"{text} {copy}", weak, 1, f"g{g}") for copy in range(8)]
    run = import_outcomes(tmp_path, rows, "topic")
    grouped = grouped_apgr(run, "embed-knn")
    random_folds = run_cli(
        "policy", "eval", str(run), "--cv", "4", "--router", "embed-knn", "-f", "json"
    )
    router, oracle, _ = json.loads(random_folds.stdout)["routers"]
    # Random folds put near-copies of a query on both sides: memorised, as good as the oracle.
    assert router["apgr"] == pytest.approx(oracle["apgr"], abs=0.01)
    assert oracle["apgr"] > 0.65
    assert grouped < 0.58, grouped  # whole groups held out: no memory of them (random 0.5)


def test_each_router_round_trips_through_its_state():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 384))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    scores = (rng.random((60, 3)) < 0.5).astype(float)
    scores[:, 1] = 0.5  # a fractional score
    for kind, cls in ROUTERS.items():
        if cls.features == "words":
            continue
        fitted = new_router(kind).fit(x, scores)
        state = json.loads(json.dumps({"kind": kind, **fitted.state()}))
        back = load_router(state)
        expected = fitted.expected(x[:7])
        assert expected.shape == (7, 3)
        assert ((expected >= 0) & (expected <= 1)).all()
        assert np.allclose(back.expected(x[:7]), expected, atol=2e-3), kind  # float16/32 stored


def test_an_ensemble_file_from_before_stacking_on_scores_still_stacks_logits():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 384))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    scores = (rng.random((40, 2)) < 0.5).astype(float)
    state = new_router("ensemble").fit(x, scores).state()
    members = [load_router(m).expected(x[:5]) for m in state["members"]]
    stack = load_router({"kind": "embed-lr", **state["stack"]})
    old = {k: v for k, v in state.items() if k != "stacked_on"}  # as written before 2026-12-03
    for name, loaded, take in (
        ("scores", state, lambda p: p),
        (
            "logits",
            old,
            lambda p: np.log(np.clip(p, 1e-4, 1 - 1e-4) / (1 - np.clip(p, 1e-4, 1 - 1e-4))),
        ),
    ):
        z = np.stack([take(p[:, 1]) for p in members], axis=1)
        by_hand = 1 / (1 + np.exp(-(z @ stack.coef[1] + stack.intercept[1])))
        got = load_router({"kind": "ensemble", **loaded}).expected(x[:5])[:, 1]
        assert np.allclose(got, by_hand), name


def test_mf_routes_among_many_configurations_by_what_each_is_good_at():
    """Three configurations, each right on its own cluster of queries: the two-tower scorer
    predicts the right one for queries it did not see."""
    rng = np.random.default_rng(1)
    centres = np.eye(3, 384)
    cluster = rng.integers(3, size=300)
    x = centres[cluster] + rng.normal(scale=0.05, size=(300, 384))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    scores = np.eye(3)[cluster]
    oof = out_of_fold(x, scores, k=5, router="mf")
    assert (oof.argmax(axis=1) == cluster).mean() > 0.95


def test_fit_writes_the_router_and_says_its_out_of_fold_figures(topics, tmp_path):
    policy_file = tmp_path / "p.json"
    fitted = run_cli(
        "policy", "fit", str(topics), "--router", "embed-knn", "--strong-fraction", "0.5",
        "--out", str(policy_file),
    )  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr
    assert "router embed-knn" in fitted.stdout
    assert "calibrated out of fold (5-fold cross-validation over items" in fitted.stdout
    assert "APGR" in fitted.stdout
    policy = Policy.load(policy_file)
    assert policy.kind == "embed-knn"
    chosen = policy.choose(
        [
            "Describe the tumor and compare it with the biopsy.",
            "Explain how the pitcher relates to the home run.",
        ],
        ["synthetic", "synthetic"],
    )
    assert chosen == ["strong", "weak"]
    # Evaluated on the very items it was fitted on: said to be in-sample.
    evaluated = run_cli("policy", "eval", str(topics), "--policy", str(policy_file))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "in-sample: the policy was fitted on 240 of these 240 queries" in evaluated.stderr


def test_bad_router_input_is_one_line(topics, tmp_path):
    one_line_error(
        run_cli("policy", "eval", str(topics), "--cv", "3", "--router", "forest"),
        "unknown router 'forest'", "words-lr", "ensemble",
    )  # fmt: skip
    # A field that names every item on its own: no group has two.
    unique = import_outcomes(
        tmp_path, [(f"question {i}", i % 2, 1, f"id{i}") for i in range(40)], "qid"
    )
    one_line_error(
        run_cli("policy", "eval", str(unique), "--split-by", "qid"),
        "40 of 40 groups have a single item", "coarser --split-by",
    )  # fmt: skip
    # A policy file from another version of tradeoff.
    future = tmp_path / "future.json"
    future.write_text(json.dumps({"format": "tradeoff-policy/9", "configs": ["weak", "strong"]}))
    one_line_error(
        run_cli("policy", "eval", str(topics), "--policy", str(future)),
        "format tradeoff-policy/9", "fit it again",
    )  # fmt: skip
    one_line_error(
        run_cli("policy", "eval", str(topics), "--policy", str(future), "--router", "mf"),
        "--router goes with --cv K or --train RUN",
    )  # fmt: skip


def test_an_embedding_router_without_the_model_installed_names_the_extra(topics):
    """The embed extra hidden from the process (as if never installed)."""
    import subprocess

    code = (
        "import sys; sys.modules['sentence_transformers'] = None; "
        "from tradeoff.cli import main; sys.argv = ['tradeoff'] + sys.argv[1:]; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "policy", "eval", str(topics), "--cv", "3",
         "--router", "ensemble"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    one_line_error(
        result, "router 'ensemble' needs the sentence-embedding model", "tradeoff[embed]"
    )


def _fitted(topics, policy_file):
    """A words-lr policy fitted on `topics` by the CLI, written to `policy_file`; its JSON."""
    fitted = run_cli(
        "policy", "fit", str(topics), "--strong-fraction", "0.5", "--out", str(policy_file)
    )
    assert fitted.returncode == 0, fitted.stderr
    return json.loads(policy_file.read_text())


def test_a_policy_file_of_the_first_format_still_routes(topics, tmp_path):
    policy_file = tmp_path / "p.json"
    data = _fitted(topics, policy_file)
    router = data.pop("router")
    assert router["kind"] == "words-lr"
    data.pop("fitted_on")
    old = tmp_path / "old.json"
    old.write_text(
        json.dumps({**data, "format": "tradeoff-policy/1", "dim": router["dim"],
                    "weights": router["weights"]})
    )  # fmt: skip
    texts = ["Why does the inning matter for the batter?", "Explain the brain and the neuron."]
    assert Policy.load(old).choose(texts, ["t", "t"]) == Policy.load(policy_file).choose(
        texts, ["t", "t"]
    )


def test_a_policy_file_of_the_first_format_evaluated_says_it_cannot_tell_what_is_in_sample(
    topics, tmp_path
):
    """A file of the first format keeps no digests of its training queries: evaluated on the
    very queries it was fitted on, its overstated figures read as out of sample, unwarned."""
    data = _fitted(topics, tmp_path / "p.json")
    router = data.pop("router")
    for later in ("fitted_on", "tasks", "cost_unit", "prices", "served_lam"):
        del data[later]
    old = tmp_path / "old.json"
    old.write_text(
        json.dumps({**data, "format": "tradeoff-policy/1", "dim": router["dim"],
                    "weights": router["weights"]})
    )  # fmt: skip
    evaluated = run_cli("policy", "eval", str(topics), "--policy", str(old))
    assert evaluated.returncode == 0, evaluated.stderr
    (warned,) = [line for line in evaluated.stderr.splitlines() if line.startswith("warning:")]
    assert "does not record which queries it was fitted on" in warned, warned
    assert "--cv K or --split-by FIELD" in warned, warned


def test_the_unzipped_model_is_kept_by_version_and_older_copies_go(tmp_path, monkeypatch):
    """Reinstalling the same package unzips nothing again; a new copy removes the others (each
    is 88 MB: keyed by the archive's modification time, they piled up with every install)."""
    from tradeoff.policy import embed

    monkeypatch.setenv("TRADEOFF_CACHE", str(tmp_path))
    older = tmp_path / f"{embed.MODEL}-0.0.1-12345"
    (older / "x").mkdir(parents=True)
    kept = embed.model_dir()
    assert (kept / "config.json").is_file() and not older.exists()
    assert kept.name.startswith(f"{embed.MODEL}-0.1.2-")
    stamp = (kept / "config.json").stat().st_mtime_ns
    assert embed.model_dir() == kept and (kept / "config.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [kept.name]


def test_an_embedding_decision_does_not_look_for_the_model_again(monkeypatch):
    """Finding the model's folder reads every installed package's metadata (a quarter of a
    second here): each served decision of an embedding router paid it, once per query."""
    import importlib.metadata

    from tradeoff.policy import embed

    embed.encode(["found once"])
    scans = []
    real = importlib.metadata.packages_distributions
    monkeypatch.setattr(
        importlib.metadata, "packages_distributions", lambda: scans.append(1) or real()
    )
    for i in range(3):
        assert embed.encode([f"question {i}"]).shape == (1, embed.DIM)
    assert scans == []


def test_a_policy_file_edited_or_cut_short_is_one_line(topics, tmp_path):
    """Checked when it loads, not at its first query: a traceback there would stop `serve`."""
    from tradeoff.errors import UserError

    data = _fitted(topics, tmp_path / "p.json")
    router = data["router"]
    first = {k: v for k, v in data.items() if k not in ("router", "fitted_on")}
    cases = {
        "weights-of-another-width": {**data, "router": {**router, "weights": [[1.0, 2.0]]}},
        "no-weights": {**data, "router": {"kind": "words-lr"}},
        "weights-as-text": {**data, "router": {**router, "weights": "abc"}},
        "router-as-text": {**data, "router": "words-lr"},
        "first-format-without-dim": {**first, "format": "tradeoff-policy/1", "weights": [[0.0]]},
        "one-configuration": {**data, "configs": ["weak"]},
        "no-configs": {k: v for k, v in data.items() if k != "configs"},
        # fields of the right name and the wrong type or length: refused here, not a traceback
        # (or a cost broadcast over both configurations) at the first served query
        "lam-as-text": {**data, "lam": "abc"},
        "lam-null": {**data, "lam": None},
        "one-cost": {**data, "mean_costs": [1.0]},
        "strong-out-of-range": {**data, "strong": 5},
        "specs-as-text": {**data, "config_specs": "x"},
        "tasks-as-list": {**data, "tasks": ["a"]},
        "cost-axis-unknown": {**data, "cost_axis": "bogus"},
        "cost-axis-as-number": {**data, "cost_axis": 3},
    }
    for label, body in cases.items():
        edited = tmp_path / f"{label}.json"
        edited.write_text(json.dumps(body))
        with pytest.raises(UserError) as exc:
            Policy.load(edited)
        assert str(edited) in str(exc.value) and "\n" not in str(exc.value), label
    one_line_error(
        run_cli("policy", "eval", str(topics), "--policy", str(tmp_path / "no-weights.json")),
        "words-lr router is not valid", "fit the policy again",
    )  # fmt: skip
    # refused as the file's, not as a --cost the user gave (which --policy refuses)
    bogus = tmp_path / "cost-axis-unknown.json"
    one_line_error(
        run_cli("policy", "eval", str(topics), "--policy", str(bogus)),
        f"{bogus}: cost_axis", "fit the policy again",
    )  # fmt: skip


def test_a_policy_file_whose_configurations_were_edited_is_one_line(topics, tmp_path):
    """The configurations a policy runs (`route`, `serve --policy`) read from its file: a field
    missing, of the wrong type, or one this version does not know gave a 50-line traceback."""
    from tradeoff.config import policy_configs
    from tradeoff.errors import UserError

    data = _fitted(topics, tmp_path / "p.json")
    runnable = {"strategy": "single", "model": "small", "models": {"small": "smollm2-135m"},
                "sampling": {"temperature": 0.0, "max_tokens": 8, "seed": 0}}  # fmt: skip
    sampling = runnable["sampling"]
    good = tmp_path / "good.json"
    good.write_text(json.dumps({**data, "config_specs": [runnable, runnable]}))
    assert [c.name for c in policy_configs(str(good))] == data["configs"]
    cases = {
        "no-sampling": {k: v for k, v in runnable.items() if k != "sampling"},
        "no-model": {k: v for k, v in runnable.items() if k != "model"},
        "hot": {**runnable, "sampling": {**sampling, "temperature": "hot"}},
        "unknown-option": {**runnable, "sampling": {**sampling, "top_k": 5}},
        "params-as-number": {**runnable, "params": 5},
        "models-as-list": {**runnable, "models": ["smollm2-135m"]},
    }
    for label, spec in cases.items():
        edited = tmp_path / f"{label}.json"
        edited.write_text(json.dumps({**data, "config_specs": [spec, runnable]}))
        with pytest.raises(UserError) as exc:
            policy_configs(str(edited))
        message = str(exc.value)
        assert f"policy {edited}: configuration '{data['configs'][0]}'" in message, label
        assert "fit the policy again" in message and "\n" not in message, label
    names = tmp_path / "names.json"
    names.write_text(json.dumps({**data, "configs": [1, 2]}))
    with pytest.raises(UserError, match="configs must be a list of configuration names"):
        Policy.load(names)


def test_more_folds_than_groups_is_said(topics):
    """Whole groups cannot be dealt to more folds than there are groups: a fold each, said."""
    result = run_cli("policy", "eval", str(topics), "--split-by", "topic", "--cv", "50")
    assert result.returncode == 0, result.stderr
    groups = len(TOPICS)
    assert f"50 folds asked (--cv, 5 unless given) but only {groups} topic groups" in result.stderr
    assert f"{groups}-fold cross-validation over whole topic groups" in result.stdout
