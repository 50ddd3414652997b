"""`tradeoff calibrate` and `tradeoff roofline`: what this machine achieves, and the analytic least
time of a request on a device."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from tradeoff.cli.output import ListFormat, console, err_console, write_json, writing
from tradeoff.errors import UserError

# The peaks settle within seconds; past this a measurement is a mistake (1e308 measured for ever).
MAX_SECONDS = 600.0


class CalibrateDevice(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


def calibrate(
    device: Annotated[
        CalibrateDevice, typer.Option(help="cpu (numpy) or cuda (PyTorch).")
    ] = CalibrateDevice.cpu,
    seconds: Annotated[
        float,
        typer.Option(
            min=0.1,
            max=MAX_SECONDS,
            help="Time to spend measuring, at most 600 s (the best run is kept).",
        ),
    ] = 4.0,
    save: Annotated[
        bool, typer.Option(help="Store the result for the roofline columns of later runs.")
    ] = True,
) -> None:
    """Measure this machine's memory bandwidth and matmul FLOP/s: the roofline's peaks.

    Runs profiled afterwards on this device get an analytic roofline time per request and
    `report` shows the efficiency (roofline time / measured time). Stored in
    $TRADEOFF_CALIBRATION where set, else $XDG_CACHE_HOME/tradeoff/calibration.json, else
    ~/.cache/tradeoff/calibration.json.
    """
    from tradeoff.meters.calibrate import calibrate as measure
    from tradeoff.meters.conditions import HostSampler
    from tradeoff.meters.hardware import calibration_path, calibrations, save_calibration
    from tradeoff.report.hardware import calibration_table
    from tradeoff.report.table import host_notes

    if save:  # a file or folder that cannot hold them: said before measuring
        path = calibration_path()
        calibrations(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"{path}: its folder cannot be made ({exc.strerror or exc}); point "
                "TRADEOFF_CALIBRATION elsewhere, or give --no-save"
            ) from None
        probe = path.with_name(path.name + ".tmp")  # the file saving writes, then renames
        try:
            probe.touch()
            probe.unlink()
        except OSError as exc:  # (/proc: its folder exists, and takes no file)
            raise UserError(
                f"{path}: cannot be written there ({exc.strerror or exc}); point "
                "TRADEOFF_CALIBRATION elsewhere, or give --no-save"
            ) from None
    err_console.print(f"measuring {device.value} for about {seconds:g} s ...")
    host = HostSampler(lambda _samples: None).start()  # other work lowers the peaks measured
    try:
        result = measure(device.value, seconds)
    finally:
        _, busy = host_notes(host.stop(), "the peaks measured may be too low")
    console.print(calibration_table(result))
    console.print(f"method: {result.details['method']}")
    if busy:
        result.details["busy_host"] = busy
        err_console.print(busy, style="yellow", markup=False, highlight=False, soft_wrap=True)
    if save:
        with writing(calibration_path()):
            path = save_calibration(result.peaks, result.details)
        console.print(f"saved to {path}")


# Beyond any context a model has; the arithmetic of larger requests left the range of floats.
MAX_TOKENS = 10_000_000
MAX_BATCH = 100_000


def roofline(
    model: Annotated[
        str,
        typer.Argument(
            help="A shipped architecture config (llama-3.1-8b, qwen2.5-0.5b, qwen2.5-7b), a "
            "config.json or a directory holding one, a bundled model (smollm2-135m, "
            "gemma3-270m[?ctx=N]), gguf:PATH[?ctx=N], or torch:CONFIG_OR_DIR[?dtype=&ctx=] as "
            "the torch engine runs it."
        ),
    ],
    device: Annotated[
        str | None,
        typer.Option(
            help="A GPU name (H100, H200, A100, L40S, L4: datasheet, or its "
            "calibration) or cpu (needs `tradeoff calibrate`) (default: H100; cpu for a torch: "
            "reference with device=cpu)."
        ),
    ] = None,
    input_tokens: Annotated[
        int, typer.Option("--input", min=1, max=MAX_TOKENS, help="Prompt tokens.")
    ] = 128,
    output_tokens: Annotated[
        int, typer.Option("--output", min=1, max=MAX_TOKENS, help="Tokens generated.")
    ] = 256,
    batch: Annotated[
        int, typer.Option(min=1, max=MAX_BATCH, help="Requests decoded together.")
    ] = 1,
    dtype: Annotated[
        str | None,
        typer.Option(
            help="Weight and KV dtype for configs: bf16, fp16 or fp32 (default: the config's); "
            "fp32 is timed against the device's FP32 FLOP/s, the others its tensor cores'."
        ),
    ] = None,
    format: Annotated[ListFormat, typer.Option("--format", "-f", help="Output format.")] = (
        ListFormat.table
    ),
) -> None:
    """The analytic least time of a request on a device, bound by compute or by memory.

    FLOPs and bytes moved per pass, and whether each phase is bound by compute or by memory.
    """
    from dataclasses import asdict

    from tradeoff.meters.roofline import request_roofline
    from tradeoff.report.hardware import ROOFLINE_NOTE, roofline_heading, roofline_table

    estimate = request_roofline(model, device, input_tokens, output_tokens, batch, dtype)
    if format is ListFormat.json:
        write_json(asdict(estimate))
        return
    console.print(roofline_heading(estimate), soft_wrap=True, highlight=False)
    console.print(roofline_table(estimate))
    console.print(ROOFLINE_NOTE)
    for note in estimate.notes:
        err_console.print(f"note: {note}", style="yellow", markup=False, highlight=False)
