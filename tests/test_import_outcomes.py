"""`tradeoff import outcomes`: recorded per-model outcomes become a run directory (real SQLite,
real CLI)."""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import one_line_error, run_cli

from tradeoff.errors import UserError
from tradeoff.importer import config_id, import_outcomes, parse_model_option
from tradeoff.policy.fit import Policy
from tradeoff.store import STORE_FILE, Store

# Scores as spreadsheets and notebooks write them: booleans, 0/1 and graded floats.
ROWS = [
    {"qid": "q1", "prompt": "What is 2+2?", "big": "True", "small": "1", "mid": "0.5"},
    {"qid": "q2", "prompt": "Line one\nline two, with a comma", "big": "true", "small": "0",
     "mid": "1.0"},
    {"qid": "q3", "prompt": 'She said "hi"\n\nthen left.', "big": "False", "small": "0",
     "mid": "0.25"},
    {"qid": "q4", "prompt": "Name a prime.", "big": "1", "small": "false", "mid": "0"},
]  # fmt: skip
EXPECTED = {  # model -> score per row
    "big": [1.0, 1.0, 0.0, 1.0],
    "small": [1.0, 0.0, 0.0, 0.0],
    "mid": [0.5, 1.0, 0.25, 0.0],
}
MODEL_ARGS = ["--model", "big=big,cost=0.03", "--model", "small=small,cost=0.001",
              "--model", "mid=mid"]  # fmt: skip


def _write_csv(path, rows):
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _imported(tmp_path, name, rows, *models):
    """A run directory `tmp_path/name` imported by the CLI from `rows` (written as CSV, prompts
    in column `prompt`), with the `--model` flags `models`."""
    _write_csv(tmp_path / f"{name}.csv", rows)
    flags = [flag for model in models for flag in ("--model", model)]
    made = run_cli("import", "outcomes", str(tmp_path / f"{name}.csv"), "--prompt-col", "prompt",
                   *flags, "--out", str(tmp_path / name))  # fmt: skip
    assert made.returncode == 0, made.stderr
    return tmp_path / name


def _report(directory):
    result = run_cli("report", str(directory), "--format", "json")
    assert result.returncode == 0, result.stderr
    return {row["config"]: row for row in json.loads(result.stdout)}


def _check_store(directory, ids, prompts):
    store = Store.open(directory)
    try:
        records = store.records()
        configs = {c["name"]: c for c in store.configs()}
        run = store.run()
        items = store.conn.execute("SELECT item FROM items ORDER BY rowid").fetchall()
    finally:
        store.close()
    assert run["status"] == "finished"
    assert [json.loads(i[0])["prompt"] for i in items] == prompts
    assert run["spec"]["cost_unit"] == "USD"
    assert set(run["spec"]["models"]) == {"big", "small", "mid"}
    assert len(records) == len(ids) * 3
    assert configs["big"]["config_id"] == config_id("big", "big")
    assert configs["big"]["spec"]["cost_per_query"] == 0.03
    for name, scores in EXPECTED.items():
        df = records[records["config"] == name]
        assert list(df["item_id"]) == ids
        assert list(df["score"]) == scores
        assert (df["e2e_s"] == 0.0).all() and df["error"].isna().all()
    costs = records.groupby("config")["cost_usd"].first()
    assert costs["big"] == 0.03 and costs["small"] == 0.001
    assert records[records["config"] == "mid"]["cost_usd"].isna().all()
    extra = json.loads(records[records["config"] == "big"]["extra"].iloc[0])
    assert extra == {"imported": True, "cost": 0.03, "cost_unit": "USD"}
    report = _report(directory)
    assert list(report) == ["big", "small", "mid"]
    for name, scores in EXPECTED.items():
        assert report[name]["n"] == len(ids)
        assert report[name]["accuracy"] == pytest.approx(sum(scores) / len(scores))
        # nothing was timed or counted: no latency or tokens, not the 0 the store holds
        assert report[name]["e2e_s"] is None and report[name]["e2e_s_p50"] is None
        assert report[name]["output_tokens"] is None
        assert "imported outcomes carry no energy" in report[name]["energy_missing"]
        assert "imported outcomes carry no latency" in report[name]["e2e_missing"]
    assert (report["big"]["given_cost"], report["big"]["given_cost_unit"]) == (0.03, "USD")
    assert report["mid"]["given_cost"] is None  # imported without a cost
    # the table: the given cost as a column, and why latency is n/a
    table = run_cli("report", str(directory)).stdout
    assert "given cost" in table and "USD/query" in table, table
    assert "e2e s n/a: imported outcomes carry no latency" in table, table
    assert "given cost n/a: mid was imported without cost=" in table, table  # not a bare "-"
    wide = run_cli("report", str(directory), "--wide").stdout
    assert "imported outcomes carry no FLOPs (4 of 4 queries)" in wide, wide  # not "shape unknown"
    assert "calibrate" not in wide, wide  # no roofline to get by calibrating
    # nor in the frontier's: no column of what a run measures, which it would offer
    frontier_wide = run_cli("frontier", str(directory), "--wide").stdout
    assert "calibrate" not in frontier_wide and "IPW" not in frontier_wide, frontier_wide
    assert "--wide adds" not in run_cli("frontier", str(directory)).stdout
    # the frontier's auto axis: the given costs, mid n/a; latency left all three n/a
    frontier = run_cli("frontier", str(directory), "--format", "json")
    assert frontier.returncode == 0, frontier.stderr
    rows = {r["config"]: r for r in json.loads(frontier.stdout)}
    assert {r["cost_axis"] for r in rows.values()} == {"given"}
    assert rows["big"]["cost"] == pytest.approx(0.03) and rows["mid"]["cost"] is None, rows


@pytest.mark.parametrize("cost", ["latency", "tokens"])
def test_imported_outcomes_have_no_latency_or_tokens_to_route_or_rank_by(tmp_path, cost):
    """A run measures them; imported outcomes do not: frontier shows them as unknown, and a
    policy fitted against them is refused, as for energy nobody measured."""
    path = tmp_path / "outcomes.csv"
    _write_csv(path, ROWS)
    out = tmp_path / "run"
    args = ["--prompt-col", "prompt", *MODEL_ARGS, "--out", str(out)]
    assert run_cli("import", "outcomes", str(path), *args).returncode == 0
    frontier = run_cli("frontier", str(out), "--cost", cost, "--format", "json")
    assert frontier.returncode == 0, frontier.stderr
    rows = json.loads(frontier.stdout)
    assert all(
        r["cost"] is None and "imported outcomes carry no" in r["cost_missing"] for r in rows
    )
    fit = run_cli("policy", "fit", str(out), "--configs", "small,big", "--strong-fraction", "0.5",
                  "--cost", cost, "-o", str(tmp_path / "p.json"))  # fmt: skip
    assert fit.returncode == 2 and "Traceback" not in fit.stderr, fit.stderr
    assert f"cost '{cost}' is missing" in fit.stderr and "imported outcomes" in fit.stderr


def test_csv_with_multiline_prompts_imports_every_row_and_model(tmp_path):
    path = tmp_path / "outcomes.csv"
    _write_csv(path, ROWS)
    out = tmp_path / "run"
    result = run_cli(
        "import", "outcomes", str(path), "--prompt-col", "prompt", *MODEL_ARGS, "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert f"imported 4 rows x 3 models = 12 records into {out}" in result.stdout
    _check_store(out, ["1", "2", "3", "4"], [r["prompt"] for r in ROWS])


def test_jsonl_with_json_booleans_and_ids(tmp_path):
    path = tmp_path / "outcomes.jsonl"
    lines = []
    for row in ROWS:
        obj = {"qid": row["qid"], "prompt": row["prompt"]}
        for name, scores in EXPECTED.items():
            score = scores[ROWS.index(row)]
            # big as JSON booleans, small as integers, mid as floats
            obj[name] = bool(score) if name == "big" else int(score) if name == "small" else score
        lines.append(json.dumps(obj))
    path.write_text("\n".join(lines) + "\n\n")
    out = tmp_path / "run"
    result = run_cli(
        "import", "outcomes", str(path), "--prompt-col", "prompt", "--id-col", "qid",
        *MODEL_ARGS, "--task", "routing", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    _check_store(out, ["q1", "q2", "q3", "q4"], [r["prompt"] for r in ROWS])


def test_bad_score_names_physical_line_and_column_and_leaves_no_directory(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[2]["small"] = "maybe"  # row 3 spans lines 5-7 (row 2 spans lines 3-4)
    path = tmp_path / "outcomes.csv"
    _write_csv(path, rows)
    out = tmp_path / "run"
    result = run_cli(
        "import", "outcomes", str(path), "--prompt-col", "prompt", *MODEL_ARGS, "--out", str(out)
    )
    assert result.returncode == 2
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert f"{path} line 5: column 'small' holds the string 'maybe'" in message
    assert "expected true/false, 0/1 or a number in [0, 1]" in message
    assert not out.exists()


def test_score_out_of_range_in_jsonl_names_the_line(tmp_path):
    path = tmp_path / "outcomes.jsonl"
    path.write_text('{"p": "a", "s": 1}\n\n{"p": "b", "s": 2}\n')
    with pytest.raises(UserError, match=r"outcomes.jsonl line 3: column 's' holds 2;"):
        import_outcomes(path, prompt_col="p", models=[("m", "s", None)], out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_bad_cell_is_named_cut_short_not_whole(tmp_path):
    """pandas' default `to_json()` writes each column as one object on one line: the error
    repeated the whole prompt column, 5 MB on one line; a long text in a score column too."""
    prompts = {str(i): f"question {i} " + "lorem ipsum " * 100 for i in range(20)}
    columns = tmp_path / "outcomes.json"
    columns.write_text(json.dumps({"prompt": prompts, "s": {str(i): 1 for i in range(20)}}))
    texts = tmp_path / "outcomes.csv"
    texts.write_text(f"prompt,s\nhi,{'a long answer ' * 500}\n")
    for path, said in (
        (columns, "line 1: column 'prompt' holds a dict; expected the prompt text"),
        (texts, f"line 2: column 's' holds the string {('a long answer ' * 3)[:40]!r}; "),
    ):
        result = run_cli("import", "outcomes", str(path), "--prompt-col", "prompt", "-m", "m=s",
                         "-o", str(tmp_path / "run"))  # fmt: skip
        one_line_error(result, said)
        assert len(result.stderr) < len(str(path)) + 200, result.stderr
    assert not (tmp_path / "run").exists()


def test_a_csv_line_of_only_spaces_is_blank(tmp_path):
    """A line holding a space or a tab was refused as a row of 1 field (is a quote left open?),
    where an empty line is skipped, and JSONL skips the same line."""
    path = tmp_path / "outcomes.csv"
    path.write_text("p,s\na,1\n \nb,0\n\t\n")
    result = import_outcomes(path, prompt_col="p", models=[("m", "s", None)], out=tmp_path / "run")
    assert (result.n_rows, result.n_records) == (2, 2)


def test_a_score_too_large_for_a_float_in_jsonl_names_the_line(tmp_path):
    """An integer of 401 digits (past a float's 1.8e308) ended in an OverflowError traceback,
    exit 1, where any other score out of [0, 1] is refused in one line."""
    path = tmp_path / "outcomes.jsonl"
    path.write_text(f'{{"p": "a", "s": 1}}\n{{"p": "b", "s": 1{"0" * 400}}}\n')
    refused = run_cli("import", "outcomes", str(path), "--prompt-col", "p", "-m", "m=s",
                      "-o", str(tmp_path / "run"))  # fmt: skip
    one_line_error(refused, "outcomes.jsonl line 2: column 's' holds 1000", "a number in [0, 1]")
    assert not (tmp_path / "run").exists()


def test_a_lone_surrogate_in_jsonl_names_the_line(tmp_path):
    """JSON's \\ud800 with no pair was imported, then every export and the page broke on it
    with a traceback (UTF-8 cannot hold it); a pair is one character, and imports."""
    path = tmp_path / "outcomes.jsonl"
    path.write_text('{"p": "ok \\ud83d\\ude00", "s": 1}\n{"p": "lone \\ud800 one", "s": 0}\n')
    with pytest.raises(UserError, match=r"outcomes.jsonl line 2 holds a lone surrogate"):
        import_outcomes(path, prompt_col="p", models=[("m", "s", None)], out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    path.write_text('{"p": "ok \\ud83d\\ude00", "s": 1}\n')
    import_outcomes(path, prompt_col="p", models=[("m", "s", None)], out=tmp_path / "run")
    exported = run_cli("report", str(tmp_path / "run"), "--records", "-f", "json")
    assert json.loads(exported.stdout)[0]["prompt"] == "ok \U0001f600"


def test_a_file_not_utf8_names_the_line_and_offset_of_its_byte(tmp_path):
    """The offset was counted within the 8 KiB chunk being decoded, and after a byte-order
    mark: a Latin-1 byte at 93,912 read "byte 3800", where the file held plain ASCII."""
    csv_rows = b"".join(b"Question %d?,1\n" % i for i in range(5000))
    jsonl_rows = b"".join(b'{"prompt": "Question %d?", "s": 1}\n' % i for i in range(3000))
    for name, data in (
        ("long.csv", b"prompt,s\n" + csv_rows + b"Caf\xe9?,1\n"),
        ("bom.csv", b"\xef\xbb\xbfprompt,s\r\nCaf\xe9?,1\r\n"),
        ("long.jsonl", jsonl_rows + b'{"prompt": "Caf\xe9?", "s": 1}\n'),
    ):
        path = tmp_path / name
        path.write_bytes(data)
        at = data.index(b"\xe9")
        line = data.count(b"\n", 0, at) + 1
        said = f"{name} line {line} is not UTF-8 text (byte 0xe9 at offset {at}); save it as UTF-8"
        with pytest.raises(UserError, match=re.escape(said)):
            import_outcomes(
                path, prompt_col="prompt", models=[("m", "s", None)], out=tmp_path / "r"
            )
    assert not (tmp_path / "r").exists()


def test_flat_exports_write_metadata_letters_as_letters(tmp_path):
    """CSV cells of item metadata read `"\\u65e5\\u672c"`, unlike the outputs beside them."""
    out = _imported(
        tmp_path, "run", [{"prompt": "Écris «bonjour»", "subject": "日本 🎉", "m": 1}], "m=m"
    )
    shown = run_cli("report", str(out), "--records", "-f", "csv")
    assert shown.returncode == 0, shown.stderr
    assert '""subject"": ""日本 🎉""' in shown.stdout and "\\u" not in shown.stdout


def test_names_and_paths_with_brackets_print_as_written(tmp_path):
    """Rich read `[/]` in a model's name or a path as markup: a MarkupError traceback (exit 1)
    after the work was done, and `[fp8]` cut from names."""
    rows = [{"prompt": f"q{i}", "a": str(i % 2), "b": "1"} for i in range(20)]
    out = _imported(tmp_path, "run[red]1", rows, "a[/]=a,cost=1", "b[fp8]=b,cost=5")
    evaluated = run_cli("policy", "eval", str(out), "--cv", "2")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "weak a[/]:" in evaluated.stdout and "strong b[fp8]:" in evaluated.stdout
    policy = tmp_path / "p[red].json"
    fitted = run_cli("policy", "fit", str(out), "--strong-fraction", "0.5", "-o", str(policy))
    assert fitted.returncode == 0 and f"wrote {policy}:" in fitted.stderr + fitted.stdout, fitted
    assert "b[fp8]" in run_cli("report", str(out)).stdout


def test_records_of_a_run_with_none_are_one_line(tmp_path):
    """A run with no records (a server stopped before any request) crashed in pandas' merge."""
    Store.create(tmp_path / "run", {"models": {}}, {"host": "test"}).close()
    for fmt in ("json", "csv", "table"):
        exported = run_cli("report", str(tmp_path / "run"), "--records", "-f", fmt)
        one_line_error(exported, "holds a run with no records yet")


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--prompt-col", "small"], "--prompt-col 'small' is also a model's score column"),
        (["--prompt-col", "prompt", "--id-col", "big"], "--id-col 'big' is also a model's score"),
        (["--prompt-col", "prompt", "--id-col", "prompt"], "--id-col 'prompt' is also the prompt"),
    ],
)
def test_a_column_given_two_roles_is_refused(tmp_path, flags, said):
    """A score column as the prompt imported every prompt as "0" or "1" without a word."""
    path = tmp_path / "outcomes.csv"
    _write_csv(path, ROWS)
    made = run_cli("import", "outcomes", str(path), *flags, "--model", "big=big",
                   "--model", "small=small", "--out", str(tmp_path / "run"))  # fmt: skip
    one_line_error(made, said)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("unit", ["usd", "$"])  # "$": as tradeoff itself writes dollars
def test_usd_in_any_case_is_one_unit(tmp_path, unit):
    """`--cost-unit usd` priced the records in dollars, then a policy fitted on USD was refused
    there: "fitted on costs in USD; those of ... are in usd". `$` was not dollars at all: its
    frontier said "imported costs are in $, not USD"."""
    rows = [{"prompt": f"q{i}", "w": str(i % 2), "s": "1"} for i in range(20)]
    priced = _imported(tmp_path, "a", rows, "w=w,cost=1", "s=s,cost=5")
    _write_csv(tmp_path / "b.csv", rows)
    made = run_cli("import", "outcomes", str(tmp_path / "b.csv"), "--prompt-col", "prompt",
                   "-m", "w=w,cost=1", "-m", "s=s,cost=5", "--cost-unit", unit,
                   "--out", str(tmp_path / "b"))  # fmt: skip
    assert made.returncode == 0, made.stderr
    dollars = run_cli("frontier", str(tmp_path / "b"), "-c", "dollars", "-f", "json")
    assert [row["cost"] for row in json.loads(dollars.stdout)] == [1, 5], dollars.stdout
    policy = tmp_path / "p.json"
    fitted = run_cli("policy", "fit", str(priced), "--strong-fraction", "0.5", "-o", str(policy))
    assert fitted.returncode == 0, fitted.stderr
    evaluated = run_cli("policy", "eval", str(tmp_path / "b"), "--policy", str(policy))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "USD per query" in evaluated.stdout and "usd per" not in evaluated.stdout


def test_train_on_a_run_without_costs_and_evaluate_on_one_with_them(tmp_path):
    """--train fits scores only; the run evaluated was held to the training run's cost axis, so
    a priced and an unpriced import were refused either way round, with advice about a policy."""

    def rows(word):
        return [{"prompt": f"{word} {i}", "w": str(i % 2), "s": "1"} for i in range(30)]

    priced = _imported(tmp_path, "priced", rows("alpha"), "w=w,cost=1", "s=s,cost=5")
    unpriced = _imported(tmp_path, "unpriced", rows("beta"), "w=w", "s=s")
    for evaluated, fitted_on, cost in ((priced, unpriced, "USD per query"), (unpriced, priced, "")):
        shown = run_cli("policy", "eval", str(evaluated), "--train", str(fitted_on))
        assert shown.returncode == 0, shown.stderr
        assert f"fitted on {fitted_on}" in shown.stdout and cost in shown.stdout
    # a cost named is the evaluated run's: the training run's costs are never read
    named = run_cli("policy", "eval", str(priced), "--train", str(unpriced), "--cost", "given")
    assert named.returncode == 0 and "USD per query" in named.stdout, named.stderr


def test_missing_column_lists_the_columns_the_file_has(tmp_path):
    path = tmp_path / "outcomes.csv"
    _write_csv(path, ROWS)
    out = tmp_path / "run"
    result = run_cli(
        "import", "outcomes", str(path), "--prompt-col", "prompt", "--model", "gpt4=gpt4_correct",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 2
    message = result.stderr.strip()
    assert "\n" not in message
    assert "no score column 'gpt4_correct'" in message
    assert "'qid', 'prompt', 'big', 'small', 'mid'" in message
    assert not out.exists()


@pytest.mark.parametrize("bad", ["big", "=big", "big=", "big=big,cost=cheap", "big=big,price=1"])
def test_malformed_model_option_exits_2_with_an_example(tmp_path, bad):
    path = tmp_path / "outcomes.csv"
    _write_csv(path, ROWS)
    result = run_cli(
        "import", "outcomes", str(path), "--prompt-col", "prompt", "--model", bad,
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 2
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert "NAME=SCORE_COL" in message and "e.g. --model" in message


def test_parse_model_option():
    assert parse_model_option("gpt4=gpt4_correct") == ("gpt4", "gpt4_correct", None)
    assert parse_model_option("gpt4=gpt4_correct,cost=0.5") == ("gpt4", "gpt4_correct", 0.5)
    assert parse_model_option("m=a,b") == ("m", "a,b", None)  # a column name with a comma


def test_other_cost_units_stay_out_of_cost_usd(tmp_path):
    path = tmp_path / "outcomes.csv"
    _write_csv(path, ROWS)
    result = import_outcomes(
        path, prompt_col="prompt", models=[("big", "big", 2.0)], out=tmp_path / "run",
        cost_unit="J",
    )  # fmt: skip
    assert (result.n_rows, result.n_records) == (4, 4)
    store = Store.open(result.directory)
    try:
        records = store.records()
    finally:
        store.close()
    assert records["cost_usd"].isna().all()
    assert {json.loads(e)["cost"] for e in records["extra"]} == {2.0}
    with pytest.raises(UserError, match="already holds a run; choose another --out"):
        import_outcomes(
            path, prompt_col="prompt", models=[("big", "big", None)], out=result.directory
        )


def test_a_directory_of_other_files_is_no_run_directory(tmp_path):
    """`--out ''` (an unset variable) wrote the run into the current directory among the
    project's files, and `--out data` into the folder of the data, where profile and load
    refuse both."""
    data = tmp_path / "data"
    data.mkdir()
    _write_csv(data / "outcomes.csv", ROWS)
    for cwd, out in ((data, ""), (tmp_path, "data")):
        refused = run_cli("import", "outcomes", str(data / "outcomes.csv"), "--prompt-col",
                          "prompt", *MODEL_ARGS, "--out", out, cwd=cwd)  # fmt: skip
        one_line_error(
            refused,
            f"--out {out or '.'}: the directory holds other files (outcomes.csv)",
            "give a new or empty directory",
        )
    assert not list(tmp_path.glob(f"**/{STORE_FILE}"))


def test_dollars_on_imported_outcomes_say_why_they_are_missing(tmp_path):
    """Imports are priced by costs given in USD, never by a spec's prices: a model imported
    without a cost, or with costs in another unit, says so on the dollars axis."""
    _write_csv(tmp_path / "outcomes.csv", ROWS)
    for unit, models in (("USD", MODEL_ARGS), ("J", ["--model", "big=big,cost=2"])):
        out = tmp_path / unit
        made = run_cli("import", "outcomes", str(tmp_path / "outcomes.csv"), "--prompt-col",
                       "prompt", *models, "--cost-unit", unit, "--out", str(out))  # fmt: skip
        assert made.returncode == 0, made.stderr
        frontier = run_cli("frontier", str(out), "--cost", "dollars", "--format", "json")
        assert frontier.returncode == 0, frontier.stderr
        missing = {r["config"]: r["cost_missing"] for r in json.loads(frontier.stdout)}
        assert not any("spec" in (why or "") for why in missing.values()), missing
        if unit == "USD":
            assert missing["big"] is None and missing["small"] is None
            assert "no cost given in USD for 4 of 4 imported queries" in missing["mid"]
        else:
            assert "imported costs are in J, not USD" in missing["big"]
            assert "--cost given" in missing["big"]


def test_empty_file_and_duplicate_ids_are_user_errors(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(UserError, match="is empty"):
        import_outcomes(empty, prompt_col="p", models=[("m", "s", None)], out=tmp_path / "a")
    fieldless = tmp_path / "fieldless.jsonl"
    fieldless.write_text("{}\n{}\n")
    with pytest.raises(UserError, match="its 2 JSON object.s. have no fields; give each line a"):
        import_outcomes(fieldless, prompt_col="p", models=[("m", "s", None)], out=tmp_path / "a")
    with pytest.raises(UserError, match="is a directory; give the .csv or .jsonl file"):
        import_outcomes(tmp_path, prompt_col="p", models=[("m", "s", None)], out=tmp_path / "a")
    dup = tmp_path / "dup.csv"
    dup.write_text("id,p,s\nx,a,1\nx,b,0\n")
    with pytest.raises(UserError, match="dup.csv line 3: id 'x' in column 'id' repeats line 2"):
        import_outcomes(
            dup, prompt_col="p", models=[("m", "s", None)], out=tmp_path / "b", id_col="id"
        )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert not list(tmp_path.glob(f"**/{STORE_FILE}"))


def test_outcomes_imported_without_costs_evaluate_but_fit_no_budget(tmp_path):
    """No cost to trade: an evaluation (APGR ranks by predicted gain) runs; a budget is refused
    in one line, a target accuracy or a strong share is fitted."""
    rows = [
        {"prompt": f"question {i} on {'algebra' if i % 2 else 'history'}",
         "weak": str(i % 3 == 0), "strong": str(i % 5 != 0)}
        for i in range(60)
    ]  # fmt: skip
    out = _imported(tmp_path, "run", rows, "weak=weak", "strong=strong")
    evaluated = run_cli("policy", "eval", str(out), "--cv", "5")
    assert evaluated.returncode == 0 and "APGR" in evaluated.stdout, evaluated.stderr
    assert "(no costs: outcomes imported without them)" in evaluated.stdout  # not "latency"
    fit = run_cli("policy", "fit", str(out), "--budget", "1", "-o", str(tmp_path / "p.json"))
    one_line_error(fit, "imported without costs have no budget to keep to", "cost=PRICE")
    shared = run_cli("policy", "fit", str(out), "--strong-fraction", "0.5", "-o",
                     str(tmp_path / "half.json"))  # fmt: skip
    assert shared.returncode == 0, shared.stderr
    assert "50% to strong" in shared.stdout, shared.stdout
    # nothing on the frontier's axis to draw: said in one line, not an empty chart
    one_line_error(
        run_cli("frontier", str(out), "--plot", str(tmp_path / "f.html")),
        "--plot has nothing to draw on latency per query",
    )
    assert not (tmp_path / "f.html").exists()
    policy = tmp_path / "p.json"
    fit = run_cli("policy", "fit", str(out), "--target-accuracy", "0.7", "-o", str(policy))
    assert fit.returncode == 0, fit.stderr
    assert "no costs (imported without them)" in fit.stdout and "mean cost" not in fit.stdout
    # the policy reads the run as it was fitted: every configuration at 0, not a missing latency
    again = run_cli("policy", "eval", str(out), "--policy", str(policy))
    assert again.returncode == 0 and "APGR" in again.stdout, again.stderr
    assert "cost saved" not in again.stdout + evaluated.stdout  # every cell read n/a
    as_json = json.loads(
        run_cli("policy", "eval", str(out), "--policy", str(policy), "-f", "json").stdout
    )
    operating = as_json["operating"]  # the ranks that order the configurations are no costs
    assert "cost" not in operating and "cost" not in operating["promised"], operating
    priced = _imported(tmp_path, "priced", rows, "weak=weak,cost=0.1", "strong=strong,cost=1")
    refused = run_cli("policy", "eval", str(priced), "--policy", str(policy))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "fitted on outcomes imported without costs" in refused.stderr

    # Costs imported for one model only: `auto` has nothing to compare them by (it fell back to
    # latency, which imports lack, and counted 0 for both).
    half = _imported(tmp_path, "half", rows, "weak=weak,cost=0.1", "strong=strong")
    for command in (
        ["eval", str(half), "--cv", "5"],
        ["fit", str(half), "--target-accuracy", "0.7", "-o", str(tmp_path / "q.json")],
    ):
        refused = run_cli("policy", *command)  # fmt: skip
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert "not for 'strong'" in refused.stderr and "cost= on every --model" in refused.stderr


def test_files_as_spreadsheets_and_scripts_write_them(tmp_path):
    """A header naming a column twice is refused (csv kept the last); a prompt past the csv
    module's 131,072 characters imports; JSONL objects may add columns after the first line;
    a .json file holding one JSON array says what to give instead."""
    twice = tmp_path / "twice.csv"
    twice.write_text("prompt,a,a\nhi,1,0\n")
    with pytest.raises(UserError, match="the header names column 'a' twice"):
        import_outcomes(twice, prompt_col="prompt", models=[("m", "a", None)], out=tmp_path / "t")
    long = tmp_path / "long.csv"
    long.write_text(f'prompt,s\n"{"word " * 40_000}",1\n')
    import_outcomes(long, prompt_col="prompt", models=[("m", "s", None)], out=tmp_path / "long")
    later = tmp_path / "later.jsonl"
    later.write_text('{"p": "a", "s": 1}\n{"p": "b", "s": 0, "s2": 1}\n')
    with pytest.raises(UserError, match=r"later.jsonl line 1: has no score column 's2'"):
        import_outcomes(later, prompt_col="p", models=[("m", "s2", None)], out=tmp_path / "j")
    array = tmp_path / "array.json"
    array.write_text('[{"p": "a", "s": 1},\n {"p": "b", "s": 0}]\n')
    with pytest.raises(UserError, match=r"holds a JSON array; give one JSON object per line"):
        import_outcomes(array, prompt_col="p", models=[("m", "s", None)], out=tmp_path / "a")
    for empty in ({"task": " "}, {"cost_unit": ""}):
        with pytest.raises(UserError, match="is empty; give a name"):
            import_outcomes(later, prompt_col="p", models=[("m", "s", 1.0)], out=tmp_path / "e",
                            **empty)  # fmt: skip
    assert not any((tmp_path / d).exists() for d in ("t", "j", "a", "e"))


def _import_one_row(tmp_path, *flags):
    """`import outcomes` of a one-row file, model m, with `flags`, into tmp_path/run."""
    rows = tmp_path / "rows.csv"
    rows.write_text("prompt,s\nhi,1\n")
    return run_cli(
        "import", "outcomes", str(rows), "--prompt-col", "prompt", "--model", "m=s", *flags,
        "--out", str(tmp_path / "run"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--task", "a\rb"], "--task 'a\\rb' holds a control character"),
        (["--model", "x\ry=s"], "model name 'x\\ry' holds a control character"),
        # it was imported, and broke every heading it is in ("given cost EUR\ncents/query")
        (["--cost-unit", "EUR\ncents"], "--cost-unit 'EUR\\ncents' holds a control character"),
    ],
)
def test_a_name_holding_a_control_character_is_refused(tmp_path, flags, said):
    """A page reads a carriage return in its filter menu as a newline: the records of task
    "a\rb" could never be picked ("0 of 0 matching records"), nor those of such a model."""
    result = _import_one_row(tmp_path, *flags)
    one_line_error(result, said, "give a name on one line")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--cost-unit", "\udca4"], "--cost-unit '\\udca4' is not UTF-8 text"),
        (["--model", "w\udce9ak=s"], "model name 'w\\udce9ak' is not UTF-8 text"),
        (["--task", "t\udce2che"], "--task 't\\udce2che' is not UTF-8 text"),
    ],
)
def test_a_name_not_utf8_is_refused(tmp_path, flags, said):
    """A byte of another encoding (€ typed in a Latin-9 terminal is 0xa4), which Python holds
    as a lone surrogate: a model name or task ended the import in a traceback, exit 1; a cost
    unit was imported, then `report -f json`, `policy eval` and `policy fit` ended in one."""
    result = _import_one_row(tmp_path, *flags)
    one_line_error(result, said, "give it in UTF-8")
    assert not (tmp_path / "run").exists()


def test_a_model_name_holding_a_comma_is_refused_as_a_spec_name_is(tmp_path):
    """`-m we,ak=weak` was imported, and then --configs could never name it: `policy eval
    --configs we,ak,strong` said "configuration 'we' is not in this run; known: we,ak, strong"."""
    rows = tmp_path / "rows.csv"
    rows.write_text("prompt,weak,strong\nhi,1,0\n")
    result = run_cli(
        "import", "outcomes", str(rows), "--prompt-col", "prompt", "-m", "we,ak=weak",
        "-m", "strong=strong", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    one_line_error(result, "model name 'we,ak' holds a comma, which separates names in --configs")
    assert not (tmp_path / "run").exists()


def test_a_task_column_splits_an_evaluation_by_its_values(tmp_path):
    """The import names every row's task `imported`; a file's own `task` column is what
    `--split-by task` means (it said: every item is in one group)."""
    rows = [
        {"prompt": f"question {i}", "task": ("alg", "geo", "bio")[i % 3],
         "weak": str(i % 2), "strong": "1"}
        for i in range(30)
    ]  # fmt: skip
    out = _imported(tmp_path, "run", rows, "weak=weak,cost=1", "strong=strong,cost=2")
    split = run_cli("policy", "eval", str(out), "--split-by", "task", "-f", "json")
    assert split.returncode == 0, split.stderr
    assert "3 groups" in json.loads(split.stdout)["source"]


def test_a_task_column_some_rows_lack_is_named_not_one_group(tmp_path):
    """A `task` column missing from some rows fell back, silently, to the import's one task
    name for every row: "every item is in one group"."""
    rows = [{"prompt": f"question {i}", "weak": str(i % 2), "strong": "1",
             **({"task": ("alg", "geo")[i % 2]} if i != 7 else {})}
            for i in range(30)]  # fmt: skip
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    made = run_cli("import", "outcomes", str(path), "--prompt-col", "prompt",
                   "--model", "weak=weak,cost=1", "--model", "strong=strong,cost=2",
                   "--out", str(tmp_path / "run"))  # fmt: skip
    assert made.returncode == 0, made.stderr
    one_line_error(
        run_cli("policy", "eval", str(tmp_path / "run"), "--split-by", "task"),
        "--split-by task: 1 of 30 items have no field 'task'",
    )


def test_folds_of_few_distinct_queries_say_so(tmp_path):
    """20 items holding two distinct queries: the folds were refused as "cannot split 2 items
    into 5 folds: give between 2 and 2", a fix `policy fit` has no flag for."""
    rows = [{"id": f"q{i}", "prompt": ("same question", "other question")[i % 2],
             "weak": str(i % 2), "strong": "1"} for i in range(20)]  # fmt: skip
    out = _imported(tmp_path, "run", rows, "weak=weak,cost=1", "strong=strong,cost=2")
    for command, why in (
        (["eval", str(out), "--cv", "5"], "5 folds:"),
        (
            ["fit", str(out), "--target-accuracy", "0.9", "-o", str(tmp_path / "p.json")],
            "5 folds (a policy is calibrated out of fold, on 5 folds)",  # not the user's folds
        ),
    ):
        needles = ("the 20 items hold only 2 distinct queries", f"too few for {why}")
        one_line_error(run_cli("policy", *command), *needles)


def test_imported_records_export_no_latency_or_output_rather_than_zeros(tmp_path):
    out = _imported(tmp_path, "run", ROWS, "big=big", "small=small")
    for fmt in ("json", "csv"):
        shown = run_cli("report", str(out), "--records", "-f", fmt)
        assert shown.returncode == 0, shown.stderr
        if fmt == "json":
            records = json.loads(shown.stdout)
        else:
            records = list(csv.DictReader(io.StringIO(shown.stdout)))
        assert len(records) == 8
        assert all(r["e2e_s"] in (None, "") and r["output_tokens"] in (None, "") for r in records)
        # the columns the import kept with each item (a subject to group by): they were left out
        metas = [r["meta"] if fmt == "json" else json.loads(r["meta"]) for r in records]
        assert {m["qid"] for m in metas} == {"q1", "q2", "q3", "q4"}, metas
    parquet = tmp_path / "r.parquet"
    assert (
        run_cli("report", str(out), "--records", "-f", "parquet", "-o", str(parquet)).returncode
        == 0
    )
    import pandas as pd

    frame = pd.read_parquet(parquet)
    assert frame["e2e_s"].isna().all() and frame["output_tokens"].isna().all()
    # A column with no value is typed as where it has some (it was Arrow's `null`, and another
    # run's file, with energy or errors, would not read together with this one).
    import pyarrow.parquet as pq

    for kind, file, args in (
        ("records", parquet, ["--records"]),
        ("summary", tmp_path / "s.parquet", []),
    ):
        assert run_cli("report", str(out), *args, "-f", "parquet", "-o", str(file)).returncode == 0
        types = {field.name: str(field.type) for field in pq.read_schema(file)}
        assert "null" not in types.values(), (kind, types)
        assert types["energy_j"] == "double" and types["energy_source"] in (
            "string",
            "large_string",
        )
    assert types["ttft_s_p99"] == "double" and types["e2e_missing"] in ("string", "large_string")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_import_leaves_no_directory_behind(tmp_path, sig):
    """Ctrl-C mid-import removes what it wrote; its lock file kept the directory alive. SIGTERM
    killed the import at once, leaving a store of no records that nothing could resume, report
    or import into."""
    path = tmp_path / "big.csv"
    _write_csv(path, [{"prompt": f"question number {i}", "a": str(i % 2), "b": "1"}
                      for i in range(200_000)])  # fmt: skip
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradeoff", "import", "outcomes", str(path),
         "--prompt-col", "prompt", "--model", "a=a", "--model", "b=b", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (out / STORE_FILE).exists() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert not out.exists(), sorted(p.name for p in out.iterdir())


def test_an_empty_prompt_is_refused_naming_its_line(tmp_path):
    path = tmp_path / "rows.csv"
    _write_csv(path, [{"prompt": "a question", "a": "1"}, {"prompt": "  ", "a": "0"}])
    one_line_error(
        run_cli("import", "outcomes", str(path), "--prompt-col", "prompt", "--model", "a=a",
                "--out", str(tmp_path / "run")),
        "line 3", "column 'prompt' holds an empty string; expected the prompt text",
    )  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_three_configurations_imported_without_costs_route_by_their_accuracy(tmp_path):
    """At equal costs the λ sweep had one routing (each query to its best predicted): among
    three configurations APGR read 0.50 where the router predicts every outcome, and an
    accuracy the strongest alone reaches was refused. The configurations' ranks by accuracy
    order them now."""
    kinds = [("alpha zeta", (0, 0, 1)), ("beta eta", (0, 1, 1)), ("gamma theta", (1, 1, 1))]
    rows = []
    for i in range(300):
        words, (w, m, s) = kinds[i % 3]
        rows.append({"prompt": f"q{i} {words} filler{i % 7}", "w": w, "m": m, "s": s})
    out = _imported(tmp_path, "run", rows, "w=w", "m=m", "s=s")
    evaluated = run_cli("policy", "eval", str(out), "--cv", "5", "--configs", "w,m,s", "-f", "json")
    assert evaluated.returncode == 0, evaluated.stderr
    routers = {r["label"]: r for r in json.loads(evaluated.stdout)["routers"]}
    assert routers["router"]["apgr"] > 0.8, routers  # the oracle's, near enough (was 0.50)
    # the ranks order the sweep; they are no costs, and none is shown
    assert all(r["cost_saved_95"] is None for r in routers.values()), routers
    assert all(set(r["curve"]["cost"]) == {0.0} for r in routers.values())
    # every query right: the strong one for the two kinds (of three) the weak gets wrong; for one
    # of three where the middle one answers the other
    for configs, share in (("w,s", 2 / 3), ("w,m,s", 1 / 3)):
        fit = run_cli("policy", "fit", str(out), "--configs", configs, "--target-accuracy", "1",
                      "-o", str(tmp_path / "p.json"))  # fmt: skip
        assert fit.returncode == 0, fit.stderr
        calibrated = Policy.load(tmp_path / "p.json").calibration
        assert calibrated["accuracy"] == 1.0, calibrated
        assert calibrated["strong_fraction"] == pytest.approx(share, abs=0.02), calibrated


def test_a_large_import_tells_how_far_it_got(tmp_path):
    """300,000 rows of two models took 47 s with nothing shown: the writer is told every
    PROGRESS_EVERY records how many of how many it has written."""
    from tradeoff.importer import PROGRESS_EVERY

    rows = PROGRESS_EVERY + 1  # two models: two calls, the second past the first
    path = tmp_path / "big.csv"
    path.write_text("prompt,a,b\n" + "".join(f"q{i},1,0\n" for i in range(rows)))
    told: list[tuple[int, int]] = []
    import_outcomes(
        path,
        prompt_col="prompt",
        models=[parse_model_option("a=a"), parse_model_option("b=b")],
        out=tmp_path / "run",
        on_written=lambda done, total: told.append((done, total)),
    )
    assert told == [(PROGRESS_EVERY, 2 * rows), (2 * PROGRESS_EVERY, 2 * rows)]
