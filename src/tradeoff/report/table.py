"""The per-configuration summary as a Rich table, with every unit and source in the header."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def short_reason(missing: str) -> str:
    """'no RAPL: /sys/... does not exist; no NVML: ...' -> 'no RAPL; no NVML'."""
    return ", ".join(part.split(":", 1)[0].strip() for part in missing.split(";"))


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def summary_table(rows: list[dict[str, Any]], title: str | None = None) -> tuple[Table, list[str]]:
    """The table, and footnotes giving each missing measurement's full reason."""
    table = Table(title=title, title_justify="left")
    table.add_column("config", style="bold")
    table.add_column("n", justify="right")
    for header in [
        "accuracy [95% CI]",
        "in tok",
        "out tok",
        "TTFT s",
        "e2e s",
        "decode tok/s",
        "energy J/query",
        "GFLOPs/query\n(analytic)",
        "errors",
    ]:
        table.add_column(header, justify="right")
    notes: list[str] = []
    for r in rows:
        if r["energy_j"] is not None:
            energy = f"{r['energy_j']:.2f} ({r['energy_source']})"
        else:
            reason = r["energy_missing"] or "not measured"
            if reason not in notes:
                notes.append(reason)
            energy = f"n/a ({short_reason(reason)})[{notes.index(reason) + 1}]"
        table.add_row(
            r["config"],
            str(r["n"]),
            f"{r['accuracy']:.3f} [{r['accuracy_low']:.3f}, {r['accuracy_high']:.3f}]",
            _num(r["input_tokens"], ".1f"),
            _num(r["output_tokens"], ".1f"),
            _num(r["ttft_s"], ".3f"),
            _num(r["e2e_s"], ".3f"),
            _num(r["decode_tps"], ".1f"),
            energy,
            _num(r["gflops"], ".2f"),
            str(r["errors"]) if not r["errors"] else f"[red]{r['errors']}[/red]",
        )
    footnotes = [f"[{i + 1}] energy not measured: {reason}" for i, reason in enumerate(notes)]
    return table, footnotes
