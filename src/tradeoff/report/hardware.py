"""The hardware tables: a request's roofline phase by phase (`tradeoff roofline`) and a measured
calibration beside the datasheet (`tradeoff calibrate`)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from tradeoff.meters.calibrate import Calibration
from tradeoff.meters.hardware import datasheet_peaks
from tradeoff.meters.roofline import RooflineEstimate

ROOFLINE_NOTE = (
    "analytic: FLOPs as `tradeoff.meters.flops`, bytes = weights once per pass (of an untied "
    "input embedding, only the rows gathered) + KV cache read and written; time per pass = "
    "max(FLOPs / peak FLOP/s of the model's precision, bytes / peak bandwidth)"
)


def scaled(value: float, unit: str) -> str:
    """`value` to three significant figures with a prefix: counts (unit '') in K, M and B
    (billions, as parameter counts are said: '8.03 B'), other units in SI's, kB to ZB ('FLOP':
    '269 MFLOP', the largest request and batch roofline takes some ZFLOP)."""
    prefixes = ("", "K", "M", "B") if unit == "" else ("", "k", "M", "G", "T", "P", "E", "Z")
    step = 0
    # Rounded before the prefix is chosen: 999.6 MB is '1 GB', not '1e+03 MB'.
    while abs(float(f"{value:.3g}")) >= 1000 and step < len(prefixes) - 1:
        value, step = value / 1000, step + 1
    return f"{value:.3g} {prefixes[step]}{unit}".rstrip()


def _ms(seconds: float) -> str:
    """Milliseconds to three significant figures, whole above 100 (no exponent)."""
    ms = seconds * 1e3
    return f"{ms:,.0f} ms" if ms >= 100 else f"{ms:.3g} ms"


def roofline_heading(estimate: RooflineEstimate) -> str:
    """What `roofline_table` is of: the model, its size, the device and the batch (a line of
    its own: as the table's title, it was wrapped at the table's width, in a file too)."""
    shape, peaks = estimate.shape, estimate.peaks
    weights = f"{scaled(shape.weight_bytes or 0, 'B')} of weights"
    return (
        f"{estimate.model} ({scaled(shape.n_params, '')} parameters, {weights}) on "
        f"{peaks.device} ({peaks.source}), batch {estimate.batch}"
    )


def roofline_table(estimate: RooflineEstimate) -> Table:
    """FLOPs, bytes moved, roofline time, the bound and tokens/s of each phase (analytic), the
    counts scaled to their size (in fixed TFLOPs and GB, a small model's read 0.000)."""
    table = Table()
    for column in ["phase", "FLOPs", "bytes moved", "roofline time", "bound", "tokens/s"]:
        table.add_column(column, justify="left" if column == "phase" else "right")
    for p in estimate.phases:
        if p.phase == "prefill":
            name, time, rate = f"prefill ({p.steps} token{_s(p.steps)})", _ms(p.seconds), ",.0f"
        else:
            name = f"decode ({p.steps} step{_s(p.steps)})"
            time, rate = f"{_ms(p.seconds)} ({_ms(p.seconds / p.steps)}/step)", ",.1f"
        table.add_row(
            name,
            scaled(p.flops, "FLOP"),
            scaled(p.bytes, "B"),
            time,
            p.bound,
            format(p.tokens_per_s, rate),
        )
    return table


def calibration_table(result: Calibration) -> Table:
    """Measured memory bandwidth and matmul FLOP/s, beside the datasheet's where it is known."""
    peaks = result.peaks
    sheet = datasheet_peaks(peaks.device)
    table = Table(title=escape(peaks.device), title_justify="left")
    table.add_column("measurement")
    table.add_column("measured", justify="right")
    table.add_column("datasheet", justify="right")
    table.add_row(
        "memory bandwidth (read + write)",
        f"{peaks.bytes_per_s / 1e9:,.1f} GB/s",
        f"{sheet.bytes_per_s / 1e9:,.0f} GB/s ({peaks.bytes_per_s / sheet.bytes_per_s:.0%})"
        if sheet
        else "-",
    )
    table.add_row(
        f"matmul ({result.details['precision']})",
        f"{peaks.flops_per_s / 1e12:,.3f} TFLOP/s",
        f"{sheet.flops_per_s / 1e12:,.0f} TFLOP/s ({peaks.flops_per_s / sheet.flops_per_s:.0%})"
        if sheet
        else "-",
    )
    return table


def _s(count: int) -> str:
    return "" if count == 1 else "s"
