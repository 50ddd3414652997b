"""User data end to end: a JSONL file and a Hugging Face dataset saved to disk by the test,
profiled on the real bundled model, records in the real SQLite store."""

import json

import pytest

from tradeoff.config import parse_spec
from tradeoff.runner import profile
from tradeoff.store import Store


def _profile(tmp_path, task):
    spec = parse_spec(
        {
            "models": {"small": "smollm2-135m"},
            "tasks": [task],
            "sampling": {"max_tokens": 12},
        }
    )
    result = profile(spec, tmp_path / "run", notify=lambda m: None)
    assert result.status == "finished" and result.errors == 0
    store = Store.open(tmp_path / "run")
    try:
        return store.records(), store.run()
    finally:
        store.close()


def test_jsonl_task_with_mapped_fields(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [
        {"qid": f"q{i}", "question": f"What is {i} plus {i}?", "gold": str(2 * i)} for i in range(4)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    df, run = _profile(
        tmp_path,
        {
            "ref": f"jsonl:{path}",
            "prompt_field": "question",
            "answer_field": "gold",
            "id_field": "qid",
            "scorer": "numeric",
        },
    )
    assert sorted(df["item_id"]) == ["q0", "q1", "q2", "q3"]
    assert df["score"].isin([0.0, 1.0]).all()
    assert (df["input_tokens"] > 5).all() and (df["output_tokens"] > 0).all()
    # the stored spec holds the absolute path, so --resume works from any directory
    assert run["spec"]["tasks"][0]["ref"] == f"jsonl:{path.resolve()}"


def test_hf_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(
        {
            "question": ["What is 3 plus 4?", "What is 10 minus 2?", "What is 6 times 2?"],
            "answer": ["3 + 4 = 7\n#### 7", "10 - 2 = 8\n#### 8", "6 * 2 = 12\n#### 12"],
        }
    )
    saved = tmp_path / "gsm_like"
    datasets.DatasetDict({"test": ds}).save_to_disk(str(saved))
    df, _ = _profile(tmp_path, f"hf:{saved}:test")
    assert len(df) == 3
    assert set(df["task"]) == {f"hf:{saved.resolve()}:test"}
    assert df["error"].isna().all()


def test_a_bare_jsonl_path_is_stored_absolute_and_resumes_from_elsewhere(tmp_path, monkeypatch):
    """`-t w/t.jsonl` (no `jsonl:`) was stored as given, relative: `--resume` from another
    directory failed, or read another file of that name there; `compare` of it against the
    same file given as jsonl:PATH found no item in common."""
    from conftest import run_cli

    (tmp_path / "w").mkdir()
    rows = [{"prompt": f"What is {i} plus 1?", "answer": str(i + 1)} for i in range(3)]
    (tmp_path / "w" / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    monkeypatch.chdir(tmp_path)
    args = ["-m", "smollm2-135m", "--limit", "2", "--max-tokens", "4"]
    bare = run_cli("profile", "-t", "w/t.jsonl", *args, "--out", "bare")
    assert bare.returncode == 0, bare.stderr
    prefixed = run_cli("profile", "-t", "jsonl:w/t.jsonl", *args, "--out", "prefixed")
    assert prefixed.returncode == 0, prefixed.stderr
    store = Store.open(tmp_path / "bare")
    try:
        ref = store.run()["spec"]["tasks"][0]["ref"]
    finally:
        store.close()
    assert ref == f"jsonl:{(tmp_path / 'w' / 't.jsonl').resolve()}"
    compared = run_cli("compare", "prefixed", "bare", "-f", "json")
    assert compared.returncode == 0, compared.stderr
    assert json.loads(compared.stdout)[0]["configs"][0]["n"] == 2
    monkeypatch.chdir(tmp_path / "w")
    resumed = run_cli("profile", "--resume", str(tmp_path / "bare"))
    assert resumed.returncode == 0 and "nothing to resume" in resumed.stderr, resumed.stderr
