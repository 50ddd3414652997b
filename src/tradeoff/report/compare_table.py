"""`tradeoff compare` as tables (the terminal's, and the HTML page's through
`html_page.column_table`): per configuration both runs have, the paired accuracy difference and
the ratios B/A; then what differs between the runs' hosts and specs."""

from __future__ import annotations

import json
from typing import Any

from rich.markup import escape

from tradeoff.analysis.compare import QUANTITIES, Comparison, ConfigComparison, FieldDifference
from tradeoff.report.columns import Column, ColumnTable, build_table, missing_cell

PAIRED_NOTE = (
    "n: the items both runs answered (same task, item, prompt, reference and sample, and in a "
    "load run the same load point; measured records only); every ratio is over those items, "
    "accuracy over those of tasks with reference answers (not synthetic load or served "
    "traffic). A failed query scores 0 and its costs count; errors: the paired queries that "
    "failed in each run."
)
DIFFERENCE_NOTE = (
    "B − A: the mean per-item difference of score; 95% CI: the paired t interval over the "
    "per-item differences (Student's t, scipy.stats), cut to [-1, 1], where differences lie"
)
RATIO_NOTE = (
    "B/A: B's value over A's, 1× when the same (below 1×: B faster, using less energy, writing "
    "fewer tokens, cheaper); latency and TTFT by the wall clock, energy as measured, cost by the "
    "spec's prices or as given with imported outcomes"
)
HEADERS = {
    "e2e_mean": "e2e s\nmean B/A",
    "e2e_p50": "e2e s\np50 B/A",
    "ttft_mean": "TTFT s\nmean B/A",
    "energy": "energy J\nB/A",
    "output_tokens": "out tok\nB/A",
    "cost": "cost\nB/A",
}


def labels(comparisons: list[Comparison]) -> list[str]:
    """Each comparison's run B as the page and the terminal name it: B, or B1, B2... in the
    order compared where there are several (a run left out is given no label)."""
    if len(comparisons) == 1:
        return ["B"]
    return [f"B{i}" for i in range(1, len(comparisons) + 1)]


def title(c: Comparison, label: str = "B") -> str:
    return (
        f"{label} = {c.b.directory} (run {c.b.id}) against A = {c.a.directory} "
        f"(run {c.a.id}, the baseline)"
    )


def ratio_text(ratio: float) -> str:
    return f"{ratio:.3g}×"


def _unpaired(r: ConfigComparison, notes: list[str]) -> str | None:
    """The cell of a configuration with no item answered in both runs: one footnote for all."""
    if r.n:
        return None
    return missing_cell(notes, f"n/a: n = 0, {r.accuracy_missing} (compare runs of one workload)")


def _accuracy(value: float | None, r: ConfigComparison, notes: list[str]) -> str:
    if value is None:
        return _unpaired(r, notes) or missing_cell(notes, f"accuracy n/a: {r.accuracy_missing}")
    return f"{value:.3f}"


def _difference(r: ConfigComparison, notes: list[str]) -> str:
    return _accuracy(r.difference, r, notes) if r.difference is None else f"{r.difference:+.3f}"


def _interval(r: ConfigComparison, notes: list[str]) -> str:
    if r.difference is None:
        return "n/a"
    if r.low is None or r.high is None:
        return missing_cell(notes, "95% CI n/a: one paired item gives no interval")
    return f"{r.low:+.3f} to {r.high:+.3f}"


def _errors(r: ConfigComparison, notes: list[str]) -> str:
    return _unpaired(r, notes) or f"{r.errors_a} / {r.errors_b}"


def _ratio(key: str) -> Column:
    def cell(r: ConfigComparison, notes: list[str]) -> str:
        unpaired = _unpaired(r, notes)
        if unpaired:
            return unpaired
        ratio = r.ratios[key]
        if ratio.ratio is None:
            return missing_cell(notes, f"{QUANTITIES[key].title} B/A n/a: {ratio.missing}")
        return ratio_text(ratio.ratio)

    return Column(HEADERS[key], cell)


COLUMNS = [
    Column("config", lambda r, _: escape(r.config), justify="left", name=True),
    Column("n", lambda r, _: str(r.n)),
    Column("accuracy\nA", lambda r, notes: _accuracy(r.accuracy_a, r, notes)),
    Column("accuracy\nB", lambda r, notes: _accuracy(r.accuracy_b, r, notes)),
    Column("B − A", _difference),
    Column("95% CI", _interval),
    Column("errors\nA / B", _errors),
    *[_ratio(key) for key in QUANTITIES],
]


def _energy_note(c: Comparison) -> str | None:
    """Which meters measured the energy each run compares, where any did."""
    sources = {
        run: sorted({s for s in found if s})
        for run, found in (
            ("A", [r.energy_source_a for r in c.configs]),
            ("B", [r.energy_source_b for r in c.configs]),
        )
    }
    if not any(sources.values()):
        return None
    parts = [f"{'+'.join(found) or 'none'} in {run}" for run, found in sources.items()]
    return "energy J: measured by " + ", ".join(parts)


def config_table(c: Comparison, label: str = "B") -> tuple[ColumnTable, list[str]]:
    """The configurations both runs have, one row each, and the table's footnotes; `label`
    names B in its title (`labels`)."""
    table, cited = build_table(title(c, label), COLUMNS, c.configs)
    notes = [f"[{i + 1}] {note}" for i, note in enumerate(cited)]
    failing = [
        f"{r.config} (A {r.errors_a}, B {r.errors_b} of {r.paired})"
        for r in c.configs
        if r.errors_a != r.errors_b
    ]
    if failing:  # a request that fails at once looks fast: say so before the ratios are read
        notes.append(
            "warning: the runs failed different numbers of the paired queries, "
            f"{'; '.join(failing)}; a failed query's latency, tokens and energy are those of "
            "its failure (one refused at once looks fast), so these ratios compare failures"
        )
    notes += [PAIRED_NOTE, DIFFERENCE_NOTE, RATIO_NOTE]
    energy = _energy_note(c)
    if energy:
        notes.append(energy)
    unpaired = [
        f"{r.config} {r.n_a - r.paired} of A's {r.n_a}, {r.n_b - r.paired} of B's {r.n_b}"
        for r in c.configs
        if r.paired < max(r.n_a, r.n_b)
    ]
    points = [f"{r.config} {', '.join(r.load_points)}" for r in c.configs if r.load_points]
    if points:  # one row a configuration: its load points pooled
        notes.append("load points measured in both runs, pooled in each row: " + "; ".join(points))
    if unpaired:
        notes.append("left out, answered in one run only: " + "; ".join(unpaired))
    if c.only_a:
        notes.append(f"only in A, not compared: {', '.join(c.only_a)}")
    if c.only_b:
        notes.append(f"only in B, not compared: {', '.join(c.only_b)}")
    return table, notes


def value_text(value: Any) -> str:
    """A host's or spec's value as one line: '-' where the run has none."""
    if value is None or value == []:
        return "-"
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ", ".join(str(v) for v in value)
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(", ", ": "), default=str)
    return str(value)


DIFFERENCE_COLUMNS = [
    Column("field", lambda d, _: escape(d.field), justify="left", name=True),
    Column("A", lambda d, _: escape(value_text(d.a)), justify="left"),
    Column("B", lambda d, _: escape(value_text(d.b)), justify="left"),
]


def differences_table(differences: list[FieldDifference]) -> ColumnTable | None:
    """What differs between the runs' hosts and specs, or None when nothing does."""
    if not differences:
        return None
    table, _ = build_table(
        "what differs between the runs (host: where each ran; spec: what each ran)",
        DIFFERENCE_COLUMNS,
        differences,
    )
    return table


def same_note(c: Comparison) -> str:
    """What a comparison whose runs differ in nothing says in place of their differences."""
    if c.a.id == c.b.id:
        return (
            f"A and B are one run ({c.a.id}): every difference is 0 and every ratio 1× by "
            "construction; compare it with another run"
        )
    return "the runs' hosts (machine, CPU, GPUs, library versions) and specs are the same"
