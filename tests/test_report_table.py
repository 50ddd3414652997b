"""The summary and frontier tables as a user reads them: on a terminal 100 columns wide (a real
pseudo-terminal) and piped, from a real SQLite store of hand-made records with long configuration
names. A name is what `policy fit --configs` takes: it must come out whole, never shortened or
wrapped; a missing value reads n/a[k], its reason once, in footnote k; medians beside the means."""

import csv
import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest
from conftest import run_cli
from rich.cells import cell_len

from tradeoff.analysis.metrics import summarize
from tradeoff.store import Store
from tradeoff.types import Record

NO_ENERGY = (
    "no RAPL: /sys/class/powercap/intel-rapl:0 does not exist; no model runs on a GPU: "
    "NVML has nothing to meter"
)
NAMES = [
    "smollm2-135m",
    "gemma3-270m",
    "cascade-smollm2-135m-gemma3-270m-logprob-t1.5",
    "vote-gemma3-270m-n5",
    "switch-smollm2-135m-gemma3-270m-t1.5",
]
# Each configuration's queries: one slow one in five, so the mean is well above the median.
E2E = [1.0, 1.0, 1.0, 2.0, 10.0]  # x (k + 1) for the k-th configuration: mean 3, median 1
TTFT = [0.1, 0.1, 0.1, 0.2, 1.0]  # mean 0.3, median 0.1
SCORES = [1.0, 0.0, 1.0, 1.0, 0.0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("table") / "run"
    store = Store.create(directory, {"models": {}}, {"host": "test"})
    store.add_configs([(f"id-{name}", name, {"strategy": "single"}) for name in NAMES])
    for k, name in enumerate(NAMES):
        for i in range(len(E2E)):
            store.write_record(
                Record(
                    config_id=f"id-{name}",
                    task="arith",
                    item_id=f"q{i}",
                    sample=0,
                    output="4",
                    score=SCORES[i],
                    parsed=None,
                    error=None,
                    input_tokens=30,
                    output_tokens=10,
                    ttft_s=TTFT[i],
                    e2e_s=E2E[i] * (k + 1),
                    itl_s=0.01,
                    decode_tps=100.0,
                    energy_j=None,
                    energy_source=None,
                    energy_missing=NO_ENERGY,
                    flops=2e9,
                    peak_rss_bytes=None,
                    cost_usd=None,
                    calls=[{"model": name, "input_tokens": 30}],
                )
            )
    store.close()
    return directory


def on_terminal(*args: str, columns: int = 100) -> str:
    """`tradeoff ARGS` run on a pseudo-terminal `columns` wide; what it showed, colours left out."""
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradeoff", *args], stdout=child, stderr=subprocess.PIPE, env=env
    )
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(parent, 65536)
        except OSError:  # EIO: the command ended and closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(parent)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()
    shown = b"".join(chunks).decode().replace("\r\n", "\n")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)


def row_of(text: str, name: str) -> str:
    """The one line of `text` on which configuration `name` stands whole."""
    lines = [line for line in text.splitlines() if re.search(rf"(^|\s){re.escape(name)}\s", line)]
    assert len(lines) == 1, f"{name!r} whole on {len(lines)} lines of:\n{text}"
    return lines[0]


def test_at_100_columns_every_name_is_whole_and_the_summary_fits(run_dir):
    shown = on_terminal("report", str(run_dir))
    for name in NAMES:
        assert "n/a[1]" in row_of(shown, name)
    assert "n/a (" not in shown and "…" not in shown
    assert "[1] energy not measured: " + NO_ENERGY in " ".join(shown.split())
    assert max(cell_len(line.rstrip()) for line in shown.splitlines()) <= 100, shown


def test_at_100_columns_the_frontier_keeps_every_name_whole(run_dir):
    shown = on_terminal("frontier", str(run_dir), "--cost", "energy")
    for name in NAMES:
        assert "n/a[1]" in row_of(shown, name)
    assert "n/a (" not in shown and "…" not in shown
    assert max(cell_len(line.rstrip()) for line in shown.splitlines()) <= 100, shown


def test_a_table_wider_than_the_terminal_is_printed_whole(run_dir):
    shown = on_terminal("report", str(run_dir), "--wide")
    for k, name in enumerate(NAMES):
        # TTFT mean, p50, p90, p95, p99 (numpy's linear interpolation: p90 of 0.1, 0.1, 0.1, 0.2,
        # 1.0 is 0.2 + 0.6 x 0.8), then e2e's: every column there, none cut at the terminal's edge
        ttft = "0.300 0.100 0.680 0.840 0.968"
        e2e = " ".join(f"{x * (k + 1):.3f}" for x in [3, 1, 6.8, 8.4, 9.68])
        assert f"{ttft} {e2e}" in " ".join(row_of(shown, name).split())
    assert "n/a (" not in shown and "…" not in shown


@pytest.mark.parametrize(
    "args, footnoted",
    [
        (["report"], True),
        (["report", "--wide"], True),
        (["frontier"], False),  # on latency: no energy column
        (["frontier", "--wide"], True),
    ],
)
def test_piped_tables_are_one_line_per_configuration(run_dir, args, footnoted):
    piped = run_cli(args[0], str(run_dir), *args[1:])
    assert piped.returncode == 0, piped.stderr
    text = piped.stdout
    for k, name in enumerate(NAMES):
        row = " ".join(row_of(text, name).split())
        if args[0] == "report":  # mean and median latency on the name's line
            assert f"{3 * (k + 1):.3f} {k + 1:.3f}" in row, row
        assert "n/a[1]" in row if footnoted else "n/a" not in row
    assert "n/a (" not in text and "…" not in text
    if footnoted:  # the footnote whole on one line
        assert any(line.endswith(": " + NO_ENERGY) for line in text.splitlines()), text


def test_medians_beside_the_means_in_every_format(run_dir):
    store = Store.open(run_dir)
    try:
        rows = {r["config"]: r for r in summarize(store.records())}
    finally:
        store.close()
    for k, name in enumerate(NAMES):
        assert rows[name]["e2e_s"] == pytest.approx(3 * (k + 1))
        assert rows[name]["e2e_s_p50"] == pytest.approx(k + 1)
        assert rows[name]["ttft_s"] == pytest.approx(0.3)
        assert rows[name]["ttft_s_p50"] == pytest.approx(0.1)
    shown = run_cli("report", str(run_dir), "--format", "json")
    assert {r["config"]: r["e2e_s_p50"] for r in json.loads(shown.stdout)} == {
        name: rows[name]["e2e_s_p50"] for name in NAMES
    }
    table = list(csv.DictReader(io.StringIO(run_cli("report", str(run_dir), "-f", "csv").stdout)))
    assert [float(r["ttft_s_p50"]) for r in table] == pytest.approx([0.1] * len(NAMES))


def test_a_number_too_large_for_its_figures_shows_whole_not_as_an_exponent():
    from tradeoff.report.columns import number

    assert number(1550.3, ".3g") == "1,550" and number(12360.0, ".4g") == "12,360"
    assert number(12.345, ".3g") == "12.3" and number(None, ".3g") == "-"
    assert number(4594.3, ".4g") == "4,594" and number(999.5, ".4g") == "999.5"


def test_a_number_too_small_for_its_decimals_is_not_shown_as_zero():
    """An e2e p50 of 0.4 ms beside a mean of 1 ms read '0.000' and '0.001': a zero it is not."""
    from tradeoff.report.columns import number

    assert number(0.0004, ".3f") == "0.0004" and number(0.0012, ".3f") == "0.001"
    assert number(0.0, ".3f") == "0.000" and number(-0.00004, ".3f") == "-4e-05"


def test_clients_that_left_are_counted_apart_from_the_errors(tmp_path):
    """Served traffic: a request whose client went away (499) is no failure of the model or the
    server; the errors counted both, so a run of impatient clients read as a failing one."""
    from tradeoff.types import DISCONNECTED

    directory = tmp_path / "run"
    store = Store.create(directory, {"models": {}}, {"host": "test"})
    store.add_configs([("id-a", "served-a", {"strategy": "single"})])
    for i, error in enumerate([None, "upstream: 502 Bad Gateway", DISCONNECTED, DISCONNECTED]):
        store.write_record(_bare_record(f"r{i}", "serve", None, error))
    store.close()
    (row,) = json.loads(run_cli("report", str(directory), "--format", "json").stdout)
    assert (row["n"], row["errors"], row["disconnected"]) == (4, 1, 2)
    text = run_cli("report", str(directory)).stdout
    row_text = " ".join(row_of(text, "served-a").split())
    assert re.search(r" 1 \+2 left\[(\d)\]$", row_text), row_text
    k = re.search(r"left\[(\d)\]$", row_text).group(1)
    assert f"[{k}] left: served requests whose client went away" in " ".join(text.split()), text


def _bare_record(item_id, task, score, error=None, calls=()):
    """A record of configuration id-a with no energy, FLOPs or cost."""
    return Record(
        config_id="id-a", task=task, item_id=item_id, sample=0, output="", score=score,
        parsed=None, error=error, input_tokens=3, output_tokens=1, ttft_s=0.1, e2e_s=0.2,
        itl_s=None, decode_tps=None, energy_j=None, energy_source=None, energy_missing=NO_ENERGY,
        flops=None, peak_rss_bytes=None, cost_usd=None, calls=list(calls),
    )  # fmt: skip


def test_a_failed_answer_counted_in_chunks_is_in_no_note_of_answers(tmp_path):
    """The chunks note counted records that failed after a chunk-counted call (a cascade whose
    escalation failed) among answers it did not count: "2 of 1 answers" (after the review)."""
    directory = tmp_path / "run"
    store = Store.create(directory, {"models": {}}, {"host": "test"})
    store.add_configs([("id-a", "casc", {"strategy": "cascade"})])
    chunked = {"model": "small", "token_count_source": "chunks", "e2e_s": 0.1}
    for i in range(2):
        failed = {"model": "large", "error": "upstream 500", "e2e_s": 0.1}
        store.write_record(_bare_record(f"i{i}", "arith", 0.0, "upstream 500", [chunked, failed]))
    store.write_record(_bare_record("i9", "arith", 1.0, None, [{**chunked, "model": "large"}]))
    store.close()
    said = " ".join(run_cli("report", str(directory)).stdout.split())
    assert "1 of 1 answers were counted in stream chunks" in said, said


def test_an_accuracy_over_fewer_records_than_n_says_how_many(tmp_path):
    """Beside an unscored task (synthetic load), n counted its records while the accuracy and
    its interval left them out: n 4 beside accuracy 0.5 over 2 records, and nothing said so."""
    directory = tmp_path / "run"
    store = Store.create(directory, {"models": {}}, {"host": "test"})
    store.add_configs([("id-a", "small", {"strategy": "single"})])
    for i, (task, score) in enumerate([("arith", 1.0), ("arith", 0.0), ("synthetic", None),
                                       ("synthetic", None)]):  # fmt: skip
        store.write_record(_bare_record(f"i{i}", task, score))
    store.close()
    (row,) = json.loads(run_cli("report", str(directory), "--format", "json").stdout)
    assert (row["n"], row["n_scored"], row["accuracy"]) == (4, 2, 0.5), row
    (point,) = json.loads(run_cli("frontier", str(directory), "--format", "json").stdout)
    assert (point["n"], point["n_scored"]) == (4, 2), point
    for command in ("report", "frontier"):
        text = " ".join(run_cli(command, str(directory)).stdout.split())
        assert "accuracy, 95% CI: over the records of tasks with reference answers (2 of 4 " \
            "for small)" in text, text  # fmt: skip


def test_a_wide_table_leaves_out_the_columns_no_configuration_has(tmp_path):
    """An imported run has no tokens, TTFT or latency tails: `--wide` (and the page, which shows
    the wide table) drew a dozen columns of '-' and scrolled sideways; they are named instead."""
    (tmp_path / "o.csv").write_text("prompt,a,b\nq1,1,0\nq2,0,1\n")
    imported = run_cli(
        "import", "outcomes", str(tmp_path / "o.csv"), "--prompt-col", "prompt",
        "--model", "weak=a,cost=0.1", "--model", "strong=b,cost=1", "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    text = run_cli("report", str(tmp_path / "r"), "--wide").stdout
    header = text.split("─")[0]
    assert "TTFT" not in header and "tok" not in header and "p99" not in header, text
    # nor a roofline column kept for its note on calibrating: nothing imported ran here
    assert "roofline" not in header and "given cost" in header, text
    assert "calibrate" not in text, text
    left_out = next(line for line in text.splitlines() if line.startswith("left out"))
    assert "in tok, out tok, TTFT s mean" in left_out and "decode tok/s" in left_out, left_out
    assert "roofline eff." in left_out, left_out
    assert "TTFT s (mean, percentiles)" not in text  # no note on a column not shown
    plain = run_cli("report", str(tmp_path / "r")).stdout  # nor offers them under --wide
    adds = next(line for line in plain.splitlines() if "--wide adds" in line)
    assert "TTFT" not in adds and "in tok" not in adds and "GFLOPs" in adds, adds


def test_json_carries_every_figure_whole_and_no_nan(tmp_path):
    """pandas' JSON writer rounded every float to 10 decimals (a cost of 2e-11 $ read 0.0, and
    the JSON disagreed with the CSV); the frontier of unscored records wrote NaN, not JSON."""
    (tmp_path / "o.csv").write_text("prompt,a,b\nx,1,0\ny,0,1\n")
    imported = run_cli(
        "import", "outcomes", str(tmp_path / "o.csv"), "--prompt-col", "prompt",
        "--model", "A=a,cost=0.00000000002", "--model", "B=b,cost=0.0000001234567",
        "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    summary = json.loads(run_cli("report", str(tmp_path / "r"), "-f", "json").stdout)
    assert [r["cost_usd"] for r in summary] == [2e-11, 1.234567e-07]
    records = json.loads(run_cli("report", str(tmp_path / "r"), "--records", "-f", "json").stdout)
    assert {r["cost_usd"] for r in records} == {2e-11, 1.234567e-07}
    assert {r["extra"]["cost"] for r in records} == {2e-11, 1.234567e-07}

    unscored = tmp_path / "served"
    store = Store.create(unscored, {"models": {}}, {"host": "test"})
    store.add_configs([("id-a", "served-a", {"strategy": "single"})])
    store.write_record(
        Record(
            config_id="id-a", task="serve", item_id="r0", sample=0, output="4", score=None,
            parsed=None, error=None, input_tokens=3, output_tokens=1, ttft_s=0.1, e2e_s=0.2,
            itl_s=None, decode_tps=None, energy_j=None, energy_source=None,
            energy_missing=NO_ENERGY, flops=None, peak_rss_bytes=None, cost_usd=None, calls=[],
        )
    )  # fmt: skip
    store.close()
    text = run_cli("frontier", str(unscored), "-f", "json").stdout
    (row,) = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert row["accuracy"] is None, row


@pytest.mark.parametrize(
    "args", [["report"], ["report", "--records", "-f", "csv"], ["frontier", "-f", "json"]]
)
def test_a_standard_output_that_cannot_be_written_is_one_line(run_dir, args):
    """`> file` on a full disk: a traceback ending in OSError, where `--output` said one line."""
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "tradeoff", args[0], str(run_dir), *args[1:]],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr == "error: cannot write the standard output: No space left on device\n"


@pytest.mark.parametrize("args", [["report"], ["frontier"]])
def test_a_standard_output_without_the_table_s_characters_is_one_line(run_dir, args):
    """PYTHONIOENCODING=ascii: ★, ± and – (or a prompt's é) ended in a UnicodeEncodeError
    traceback; a closed stdout (`>&-`) in one before any command began."""
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    result = subprocess.run(
        [sys.executable, "-m", "tradeoff", args[0], str(run_dir), *args[1:]],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message, message
    assert message.startswith("error: cannot write the standard output: its encoding, ascii,")
    assert "PYTHONIOENCODING=utf-8" in message
    closed = subprocess.run(
        [sys.executable, "-m", "tradeoff", args[0], str(run_dir), *args[1:]],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120,
        preexec_fn=lambda: os.close(1),
    )  # fmt: skip
    assert closed.returncode == 0 and "Traceback" not in closed.stderr, closed.stderr


def test_no_output_is_written_over_a_run_s_store(run_dir, tmp_path):
    """`-o DIR/tradeoff.sqlite` wrote a CSV over the store it had just read: the run was lost."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = (copy / "tradeoff.sqlite").read_bytes()
    for args in (["report", "-f", "csv"], ["report", "--records", "-f", "json"]):
        result = run_cli(args[0], str(copy), *args[1:], "-o", str(copy / "tradeoff.sqlite"))
        assert result.returncode == 2 and "is a file of a run's store" in result.stderr, result
    assert (copy / "tradeoff.sqlite").read_bytes() == before


def test_an_output_path_ending_in_a_slash_is_refused_as_a_directory(run_dir, tmp_path):
    """`-o sums.csv/` (a directory the user meant, which does not exist) wrote a file named
    sums.csv: pathlib drops the slash (and a last `.`: `sums.csv/.`). Each option that takes a
    file refuses it in one line."""
    from conftest import one_line_error

    copy = str(run_dir)
    for args, option in [
        (["report", copy, "-o"], "--output"),
        (["report", copy, "--html", "-o"], "--output"),
        (["report", copy, "--plot"], "--plot"),
        (["frontier", copy, "--plot"], "--plot"),
        (["compare", copy, copy, "--html"], "--html"),
    ]:
        result = run_cli(*args, "sums.csv/", cwd=tmp_path)
        one_line_error(result, option, "sums.csv/ ends in /", "give a file path")
        assert not (tmp_path / "sums.csv").exists(), args
    for given in ("sums.csv/.", "sums.csv/..", "."):
        result = run_cli("report", copy, "-o", given, cwd=tmp_path)
        one_line_error(result, "--output", f"{given} ends in", "naming a directory")
        assert not (tmp_path / "sums.csv").exists(), given
    # an empty path ended in nothing: "ends in , naming a directory"
    for args, option in [
        (["report", copy, "-o"], "--output"),
        (["compare", copy, copy, "--html"], "--html"),
    ]:
        result = run_cli(*args, "", cwd=tmp_path)
        one_line_error(result, option, "the path is empty; give a file path")


def test_a_long_output_is_cut_in_the_records_table_and_whole_with_wide():
    """One 200,000-character answer padded every row of a piped records table to its width."""
    import pandas as pd

    from tradeoff.report.table import TEXT_CUT, records_table

    df = pd.DataFrame(
        {"config": ["a", "b"], "output": ["x" * 200_000, "short"], "score": [1.0, 0.0]}
    )
    table, notes = records_table(df)
    cells = list(table.columns[1].cells)
    assert cells == ["x" * TEXT_CUT + "…", "short"] and "cut at" in (notes or "")
    wide, _ = records_table(df, wide=True)
    assert list(wide.columns[1].cells)[0] == "x" * 200_000


@pytest.fixture(scope="module")
def long_prompts(tmp_path_factory):
    """An imported run of six 40,000-character prompts (random letters: its parquet stays
    large), two models: every export of it is well over 64 KiB."""
    import random
    import string

    from conftest import import_outcomes

    letters = random.Random(1)
    rows = [("".join(letters.choices(string.ascii_letters, k=40_000)), i % 2, 1) for i in range(6)]
    return import_outcomes(tmp_path_factory.mktemp("long"), rows)


def _files_up_to(size: int):
    """For `preexec_fn`: no file of the process grows past `size` bytes; a write past it fails
    with EFBIG ("File too large"), as one on a full disk fails."""
    import resource
    import signal

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the process is killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


@pytest.mark.parametrize(
    "args, name",
    [
        (["--records"], "records.csv"),
        (["--records"], "records.json"),
        (["--records"], "records.parquet"),
        (["--html"], "report.html"),
    ],
)
def test_an_export_that_fails_part_way_leaves_the_previous_file_whole(
    long_prompts, tmp_path, args, name
):
    """A full disk part way through an export (here, a file size limit: SQLite's own files fit
    under it) truncated the previous export and left the cut-off new one, which could read as a
    whole export of fewer rows: now the previous file stays as it was, and nothing else."""
    from conftest import one_line_error

    out = tmp_path / name
    out.write_text("a previous, complete export\n")
    result = run_cli(
        "report", str(long_prompts), *args, "-o", str(out), preexec_fn=_files_up_to(65_536)
    )
    one_line_error(result, f"cannot write {out}: ", "File too large")
    assert out.read_text() == "a previous, complete export\n"
    assert os.listdir(tmp_path) == [name]


def test_an_export_replaces_the_file_as_its_permissions_and_links_had_it(long_prompts, tmp_path):
    """Written beside and renamed over its path, an export keeps the previous file's permissions
    (a private export stays private) and writes through a link to the file it names."""
    private, real = tmp_path / "private.csv", tmp_path / "real.csv"
    private.write_text("old\n")
    private.chmod(0o600)
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real.name)
    for out in (private, link):
        result = run_cli("report", str(long_prompts), "--records", "-o", str(out))
        assert result.returncode == 0, result.stderr
    assert private.stat().st_mode & 0o777 == 0o600
    assert link.is_symlink() and real.read_text().startswith("config,")
    assert sorted(os.listdir(tmp_path)) == ["link.csv", "private.csv", "real.csv"]


def test_an_export_to_dev_stdout_goes_to_the_pipe_or_the_file_the_shell_gave(
    long_prompts, tmp_path
):
    """`-o /dev/stdout | wc` was refused ("cannot write /dev/stdout: No such file or directory")
    once exports were written beside their path and renamed: /dev/stdout resolved to a pipe's
    name under /proc; where the shell sent stdout to a file, that file was replaced under it.
    A path under /dev or /proc is written as it is."""
    import subprocess
    import sys

    export = ("report", str(long_prompts), "--records", "--format", "csv", "-o", "/dev/stdout")
    piped = run_cli(*export)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith("config,") and piped.stdout.count("\n") > 6
    shells = tmp_path / "shell.out"
    with shells.open("w") as f:
        inode = os.fstat(f.fileno()).st_ino
        done = subprocess.run([sys.executable, "-m", "tradeoff", *export], stdout=f, timeout=600)
    assert done.returncode == 0
    assert shells.stat().st_ino == inode and shells.read_text() == piped.stdout
    assert os.listdir(tmp_path) == ["shell.out"]


def test_a_file_being_written_when_sigterm_comes_is_not_left_behind(tmp_path):
    """A scheduler's SIGTERM (`timeout`) part way through ended the process with the export cut
    short under its name: the previous file stays, the part written is removed."""
    import signal

    from tradeoff.paths import written_whole

    out = tmp_path / "records.csv"
    out.write_text("a previous, complete export\n")
    before = signal.getsignal(signal.SIGTERM)  # (another test of this process may have set one)
    with pytest.raises(KeyboardInterrupt), written_whole(out) as part:
        part.write_text("config,score\nweak,")
        os.kill(os.getpid(), signal.SIGTERM)
    assert out.read_text() == "a previous, complete export\n"
    assert os.listdir(tmp_path) == ["records.csv"]
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5])
def test_json_rows_written_in_chunks_are_the_text_of_the_whole_table(
    tmp_path, capsys, n, monkeypatch
):
    """The records' JSON was built whole (every row an object, then a copy, then one string:
    8.5 GB for 600,000 records); written a chunk of rows at a time, it is the same text, to a
    file and to stdout, however the rows fall into chunks."""
    import pandas as pd

    from tradeoff.cli import output

    monkeypatch.setattr(output, "JSON_CHUNK", 2)
    table = pd.DataFrame(
        {
            "config": [f"c{i}" for i in range(n)],
            "score": [float("nan") if i == 1 else i / 3 for i in range(n)],
            "tokens": pd.array([None if i == 2 else i for i in range(n)], dtype="Int64"),
            "extra": [{"routed_to": "é", "cost": 2e-11} for _ in range(n)],
        }
    )
    whole = json.dumps(
        output.strict_json(table.to_dict(orient="records")),
        indent=2, ensure_ascii=False, allow_nan=False,
    )  # fmt: skip
    output.write_json_rows(table, tmp_path / "rows.json")
    assert (tmp_path / "rows.json").read_text() == whole
    capsys.readouterr()
    output.write_json_rows(table)
    assert capsys.readouterr().out == whole + "\n"


def test_control_characters_in_stored_text_are_shown_escaped_and_exported_as_they_are(tmp_path):
    """An item id or a model's output holding ESC [2J cleared the user's terminal when the
    records table printed it (and recoloured it, and broke the columns): the table shows such a
    character as its escape, \\x1b; the exports keep the text as stored."""
    directory = tmp_path / "esc"
    store = Store.create(directory, {"models": {}}, {"host": "test"})
    store.add_configs([("id-a", "a", {"strategy": "single"})])
    store.write_record(
        Record(
            config_id="id-a", task="arith", item_id="x\x1b[2J\x1b[31mred", sample=0,
            output="4\x07\x9b1m\r\nnext", score=1.0, parsed=None, error=None, input_tokens=3,
            output_tokens=1, ttft_s=0.1, e2e_s=0.2, itl_s=None, decode_tps=None, energy_j=None,
            energy_source=None, energy_missing=NO_ENERGY, flops=None, peak_rss_bytes=None,
            cost_usd=None, calls=[],
        )
    )  # fmt: skip
    store.close()
    shown = run_cli("report", str(directory), "--records")
    assert shown.returncode == 0, shown.stderr
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", shown.stdout), repr(shown.stdout)
    assert "x\\x1b[2J\\x1b[31mred" in shown.stdout and "4\\x07\\x9b1m\\x0d" in shown.stdout
    assert "next" in shown.stdout
    exported = json.loads(run_cli("report", str(directory), "--records", "-f", "json").stdout)
    assert (exported[0]["item_id"], exported[0]["output"]) == (
        "x\x1b[2J\x1b[31mred",
        "4\x07\x9b1m\r\nnext",
    )


def test_a_failed_request_s_error_is_said_with_its_control_characters_escaped(tmp_path):
    """`profile` and `load` end with each configuration's first error ("the first: ..."): a
    server's error holding ESC [31m recoloured the terminal after the table's fix (the review)."""
    from tradeoff.cli.output import first_errors

    directory = tmp_path / "failed"
    store = Store.create(directory, {"models": {}}, {"host": "test"})
    store.add_configs([("id-a", "a", {"strategy": "single"})])
    store.write_record(
        Record(
            config_id="id-a", task="arith", item_id="1", sample=0, output="", score=0.0,
            parsed=None, error="HTTP 400: \x1b[31mRED\x1b[0m", input_tokens=None,
            output_tokens=0, ttft_s=None, e2e_s=0.2, itl_s=None, decode_tps=None, energy_j=None,
            energy_source=None, energy_missing=NO_ENERGY, flops=None, peak_rss_bytes=None,
            cost_usd=None, calls=[],
        )
    )  # fmt: skip
    store.close()
    assert first_errors(directory, ["config"]) == {("a",): (1, 1, "HTTP 400: \\x1b[31mRED\\x1b[0m")}
