"""Console tables built column by column, in which a configuration's name is printed whole at any
width (it is what `policy fit --configs` takes): the other columns wrap instead, and secondary
ones are left to wide tables.

The widths are chosen here, not by Rich: Rich narrows a table too wide for the terminal by
collapsing its widest columns evenly, through words and no_wrap columns alike, so names and
numbers come out cut ('smoll…') or folded mid-number."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class Column:
    """One column: its header, each row's cell (Rich markup; a cell may add a footnote to the
    list it is given and cite its number), and whether only wide tables show it."""

    header: str
    cell: Callable[[Any, list[str]], str]
    wide: bool = False
    justify: JustifyMethod = "right"
    name: bool = False  # the configuration's name: never wrapped, never shortened


def number(value: float | None, fmt: str) -> str:
    """A cell of a number in `fmt`, '-' for none. A 'g' format whose figures do not reach the
    units shows the whole number instead of an exponent: 1,550, not 1.55e+03; its thousands are
    separated at any size, so that a column reads 4,594 above 14,173, not 4594. A value that an 'f'
    format rounds to zero shows two figures (0.00042), not a zero it is not."""
    if value is None:
        return "-"
    if fmt.endswith("f") and math.isfinite(value) and value != 0:
        shown = format(value, fmt)
        if not shown.strip("-0.,"):  # 0.0004 s at ".3f" is no 0.000: two figures instead
            return format(value, ".2g")
        return shown
    if fmt.endswith("g") and math.isfinite(value):
        figures = int(fmt.rstrip("g").rpartition(".")[2] or 6)
        if abs(value) >= 10**figures:
            return f"{value:,.0f}"
        return format(value, fmt if "," in fmt else "," + fmt)
    return format(value, fmt)


def footnote(notes: list[str], note: str) -> int:
    """The number of footnote `note` in `notes`, added if it is not there yet."""
    if note not in notes:
        notes.append(note)
    return notes.index(note) + 1


def missing_cell(notes: list[str], why: str) -> str:
    """'n/a[k]': footnote k says why the value is missing."""
    return f"n/a[{footnote(notes, why)}]"


def visible(columns: list[Column], wide: bool, command: str) -> tuple[list[Column], list[str]]:
    """The columns a table shows, and a footnote saying which `command --wide` adds (none
    where it adds none)."""
    if wide:
        return columns, []
    hidden = ", ".join(c.header.replace("\n", " ") for c in columns if c.wide)
    return [c for c in columns if not c.wide], [f"{command} --wide adds: {hidden}"] * bool(hidden)


def fit(high: list[int], floors: list[list[int]], room: int) -> list[int]:
    """Column widths within `room`: each column at its natural width `high`, the widest narrowed
    first, down to the first of `floors`, then to the next. Where the last floor does not fit,
    the last floor: wider than the room."""
    widths = list(high)
    for floor in floors:
        while sum(widths) > room:
            narrowable = [i for i, width in enumerate(widths) if width > floor[i]]
            if not narrowable:
                break
            widths[max(narrowable, key=widths.__getitem__)] -= 1
    return widths


@dataclass
class ColumnTable:
    """A table of cells (Rich markup) under a title (plain text), laid out for the width it is
    printed at. Each column is at least as wide as its longest word, header included (headers
    wrap first, then cells, between words), or as its longest cell for names. A table that cannot
    fit is wider than the terminal: print it with crop=False and the terminal wraps it, nothing
    is cut."""

    title: str | None
    columns: list[Column]
    cells: list[list[str]]

    def _widths(self) -> tuple[list[int], list[int], list[int]]:
        """Each column's natural width, its width with the header wrapped between words, and
        with the cells wrapped too (a name is one word: it is never wrapped)."""
        high: list[int] = []
        headers_wrapped: list[int] = []
        cells_wrapped: list[int] = []
        for i, column in enumerate(self.columns):
            cells = [Text.from_markup(row[i]).plain for row in self.cells]
            lines = cells if column.name else [ln for cell in cells for ln in cell.splitlines()]
            words = cells if column.name else [w for cell in cells for w in cell.split()]
            header_lines, header_words = column.header.splitlines(), column.header.split()
            space = 1 if column.name else 0  # so that a name ends clearly before the next value
            high.append(max(map(cell_len, [*header_lines, *lines]), default=0) + space)
            headers_wrapped.append(max(map(cell_len, [*header_words, *lines]), default=0) + space)
            cells_wrapped.append(max(map(cell_len, [*header_words, *words]), default=0) + space)
        return high, headers_wrapped, cells_wrapped

    def _table(self, widths: list[int]) -> Table:
        table = Table(
            # No borders, a rule under the headers, one space between columns: the room borders
            # and padding would take goes to the data.
            box=box.SIMPLE_HEAD,
            show_edge=False,
            padding=0,
        )
        for column, width in zip(self.columns, widths, strict=True):
            style = "bold" if column.name else None
            table.add_column(column.header, justify=column.justify, style=style, width=width)
        for row in self.cells:
            table.add_row(*row)
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        high, *floors = self._widths()
        natural = self._table(high)
        # What the table adds to its columns' widths: the gaps between them.
        frame = Measurement.get(console, options.update_width(10**6), natural).maximum - sum(high)
        widths = fit(high, floors, options.max_width - frame)  # headers wrap before cells do
        table = self._table(widths)
        table.width = sum(widths) + frame  # Rich would narrow it to the terminal otherwise
        if self.title is not None:  # a line of its own, not wrapped at the table's width
            yield Text(self.title, style="table.title")
        yield table


def build_table(
    title: str | None, columns: list[Column], rows: list[Any]
) -> tuple[ColumnTable, list[str]]:
    """A table of `rows`, one cell per column, and the footnotes its cells cited (footnote k is
    the k-th of the list, cited in the order of the cells)."""
    notes: list[str] = []
    cells = [[column.cell(row, notes) for column in columns] for row in rows]
    return ColumnTable(title, columns, cells), notes


def empty_columns(columns: list[Column], rows: list[Any], kept: tuple[str, ...] = ()) -> list[str]:
    """The headers of the wide columns that hold no value in any row ('-' throughout: an
    imported run's latencies and tokens), but those headed as in `kept` (whose footnote says how
    to get the value): a table leaves them out, and says so."""
    scratch: list[str] = []
    return [
        c.header
        for c in columns
        if c.wide
        and c.header not in kept
        and all(Text.from_markup(c.cell(row, scratch)).plain == "-" for row in rows)
    ]
