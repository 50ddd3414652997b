"""What the commands share: the consoles, the progress bar, the output formats and the cost axis
choices (from `analysis.costs`, the one list of them)."""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn, TextIO

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from tradeoff.analysis.costs import COST_CHOICES
from tradeoff.errors import UserError
from tradeoff.paths import written_whole
from tradeoff.resumes import resume_command

# On a terminal, tables fit its width (names whole, other columns wrapped). Into a file or a pipe
# nothing is wrapped or cut: a table prints at its natural width (Rich tables do not stretch to
# the console's), a line of text on one line; stderr's messages and progress lines too.
UNWRAPPED = 1_000_000


class OutputFailed(Exception):
    """The standard output could not be written (a full disk behind `> file`, an encoding
    without the text's characters): one line."""

    def __init__(self, exc: OSError | UnicodeEncodeError):
        if isinstance(exc, UnicodeEncodeError):
            shown = exc.object[exc.start : exc.end]
            why = (
                f"its encoding, {exc.encoding}, has no {shown!r}; set PYTHONIOENCODING=utf-8 "
                "(or a UTF-8 locale)"
            )
        else:
            why = str(exc.strerror)
        super().__init__(f"cannot write the standard output: {why}")


class _Literal(Console):
    """A console that prints text as written: a model's, a task's or a file's name holding
    `[red]` or `[/]` was read as Rich markup (cut short, or a MarkupError traceback after the
    work was done). Styles are given by `style=`; tables escape their own cells."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(Text(o) if isinstance(o, str) else o for o in objects), **kwargs)


class _Stdout(_Literal):
    """The console of the standard output: a write it cannot make is `OutputFailed` (an OSError
    names no file: raised as it is, a full disk anywhere would read as the output's)."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        with to_stdout():
            super().print(*objects, **kwargs)


@contextlib.contextmanager
def to_stdout() -> Iterator[None]:
    """A write the standard output cannot take is `OutputFailed`; a pipe whose reader left
    (`| head`) is left to click, as before."""
    try:
        yield
    except BrokenPipeError:
        raise
    except (OSError, UnicodeEncodeError) as exc:
        raise OutputFailed(exc) from None


def _width(stream: Any) -> int | None:
    """A terminal's width (None: Rich asks it), else UNWRAPPED; a stream the shell closed
    (`>&-`) is None here, and writes to it go nowhere (`_open_closed`)."""
    return None if stream is not None and stream.isatty() else UNWRAPPED


def _open_closed() -> None:
    """A standard stream the shell closed (`tradeoff serve >&-`) is None, which every print
    would fail on (a traceback before any command began): it writes to nowhere instead."""
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (for the process)
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115


_open_closed()
# No emoji codes: a load point's label followed by a colon ("constant:100:") would print as one.
console = _Stdout(width=_width(sys.stdout), emoji=False)
err_console = _Literal(stderr=True, width=_width(sys.stderr), emoji=False)


class SummaryFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    parquet = "parquet"


class ListFormat(str, Enum):
    table = "table"
    json = "json"


class FrontierFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


COST_METAVAR = "<" + "|".join(COST_CHOICES) + ">"


def cost_choice(value: str) -> str:
    """Parses --cost: one of the cost axes, or auto."""
    if value not in COST_CHOICES:
        raise typer.BadParameter(f"'{value}' is not one of {', '.join(COST_CHOICES)}")
    return value


def interrupted(command: str, directory: Path | None) -> NoReturn:
    """A Ctrl-C before the run's own handler took over (the models loading, the store opening):
    how to go on where a store exists, else that nothing was written; exit 130."""
    from tradeoff.store import STORE_FILE

    if directory is not None and (Path(directory) / STORE_FILE).exists():
        err_console.print(
            f"interrupted; continue with: {resume_command(command, directory)}", soft_wrap=True
        )
    else:
        err_console.print("interrupted before the run began; nothing was written")
    sys.exit(130)  # said why: not typer's silent 130


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("errors {task.fields[errors]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


def strict_json(value: Any) -> Any:
    """`value` as JSON takes it: every NaN, infinity or missing value (pandas' NA and NaT) as
    null, numpy's numbers as Python's, a timestamp in ISO 8601."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (pd.Timestamp, datetime.datetime)):
        return value.isoformat()
    return value


JSON_CHUNK = 1_000  # rows made objects, then text, at a time (`write_json_rows`)


def write_json_rows(table: pd.DataFrame, output: Path | None = None) -> None:
    """A table's rows as an indented JSON array of objects, each value as it is (pandas' own
    JSON writer rounds every float to 10 decimals: a cost of 2e-11 $ read 0.0, and the JSON
    disagreed with the CSV), to `output` or stdout: the text `write_json` gives, written
    `JSON_CHUNK` rows at a time (the whole table as objects, then as text, took 13 times the
    file's size in memory: 8.5 GB for 600,000 records)."""
    with opened(output) as out:
        out.write("[")
        for start in range(0, len(table), JSON_CHUNK):
            rows = strict_json(table.iloc[start : start + JSON_CHUNK].to_dict(orient="records"))
            text = json.dumps(rows, indent=2, ensure_ascii=False, allow_nan=False)
            out.write(("," if start else "") + text[1:-2])  # its rows, less `[` and `\n]`
        out.write("\n]" if len(table) else "]")
        if output is None:  # as `write_text` ends it
            out.write("\n")


def write_json(value: Any, output: Path | None = None) -> None:
    """`value` as indented JSON (`strict_json`: no NaN, which JSON has not) to `output` or
    stdout."""
    write_text(
        json.dumps(strict_json(value), indent=2, ensure_ascii=False, allow_nan=False), output
    )


def write_text(text: str, output: Path | None = None) -> None:
    """To `output` as it is (saying so on stderr), else to stdout, ending in one newline."""
    with opened(output) as out:
        out.write(text if output or text.endswith("\n") else text + "\n")


@contextlib.contextmanager
def opened(output: Path | None = None) -> Iterator[TextIO]:
    """A text stream to `output`, written whole (`paths.written_whole`) and said so on stderr,
    else stdout."""
    if output:
        with writing(output), written_whole(output) as part, part.open("w", encoding="utf-8") as f:
            yield f
        err_console.print(f"wrote {output}")
    else:
        with to_stdout():
            yield sys.stdout
            sys.stdout.flush()


def file_path(value: str) -> Path:
    """Parses an option naming a file to write (shown as `<path>`, as typer shows a Path): one
    ending in `/` (or `/.`, `/..`, or `.` itself) names a directory, which pathlib would drop,
    writing a file of its name."""
    if not value:  # it ends in nothing and names no directory
        raise typer.BadParameter("the path is empty; give a file path")
    plain = value.replace(os.sep, "/")
    last = plain.rsplit("/", 1)[-1]
    if last in ("", ".", ".."):
        end = plain[len(plain) - len(last) - 1 :] if "/" in plain else plain
        raise typer.BadParameter(f"{value} ends in {end}, naming a directory; give a file path")
    return Path(value)


def file_option(*names: str, help: str) -> Any:
    """A typer option naming a file to write: parsed by `file_path`, shown as `<path>`."""
    return typer.Option(*names, parser=file_path, metavar="<path>", help=help)


def check_writable(option: str, path: Path) -> None:
    """Refuses, before any work is done, an output file that could not be written, or one of a
    run's store (`report DIR -o DIR/tradeoff.sqlite` wrote a CSV over the run it read)."""
    from tradeoff.store import STORE_FILES

    parent = path.parent
    if path.name in STORE_FILES:
        raise UserError(f"{option} {path} is a file of a run's store; give another file")
    if path.is_dir():
        raise UserError(f"{option} {path} is a directory; give a file path")
    if not parent.exists():
        raise UserError(f"{option} {path}: the directory {parent} does not exist; create it first")
    if not parent.is_dir():
        raise UserError(f"{option} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"{option} {path}: permission denied; choose another path")


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """An OSError while writing `path` (a full disk, a directory gone) becomes one line."""
    try:
        yield
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None


def check_html(option: str, path: Path) -> None:
    """An HTML page's path: a file ending in .html that can be written."""
    if path.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"{option} {path}: the page is HTML; give a file ending in .html")
    check_writable(option, path)


def check_plot(plot: Path | None) -> None:
    """--plot names a .png or .html file that can be written."""
    if plot is None:
        return
    if plot.suffix.lower() not in (".png", ".html"):
        raise UserError(f"--plot {plot}: give a file ending in .png or .html")
    check_writable("--plot", plot)


def first_errors(
    directory: Path, by: list[str], load_only: bool = False
) -> dict[tuple[str, ...], tuple[int, int, str]]:
    """For each group (the values of the `by` columns) of a run's records with failures: how
    many failed, of how many, and the first failed one's error (a table counts them; this says
    why), its control characters escaped for the terminal (a server's error holding ESC [31m
    recoloured it)."""
    from tradeoff.report.table import controls_escaped
    from tradeoff.store import Store

    store = Store.open(directory)
    try:
        records = store.records(columns=[*by, "error"], load_only=load_only)
    finally:
        store.close()
    found = {}
    for key, group in records.groupby(by, sort=False, observed=True):
        errors = group["error"].dropna()
        errors = errors[errors != ""]
        if len(errors):
            found[tuple(key)] = (len(errors), len(group), controls_escaped(str(errors.iloc[0])))
    return found
