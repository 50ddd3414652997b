"""Device peaks for the roofline: published datasheet figures for common GPUs, and what
`tradeoff calibrate` measured on this machine (preferred where present: it is what the device
achieves, not what it is rated for).

Datasheet figures are HBM/GDDR bandwidth and dense FLOP/s (no sparsity) from NVIDIA's product
datasheets, in two precisions: 16-bit (bf16 and fp16 on tensor cores) and fp32 (the plain FP32
units, without TF32: PyTorch leaves TF32 off for matmuls unless told, and the torch engine does
not turn it on). A model in fp32 timed against the 16-bit peak was 15 times too fast where
compute-bound. A CPU has no entry: calibrate it.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from tradeoff.errors import UserError
from tradeoff.meters.roofline import Peaks
from tradeoff.paths import written_whole

# (words of the device name, as NVML reports it) -> (name, 16-bit FLOP/s, fp32 FLOP/s, bytes/s).
# First match wins.
DATASHEET: list[tuple[str, str, float, float, float]] = [
    ("H200 NVL", "NVIDIA H200 NVL", 835e12, 60e12, 4.8e12),  # before "H200": it gave SXM's
    ("H200", "NVIDIA H200 SXM", 989e12, 67e12, 4.8e12),
    ("H100 PCIe", "NVIDIA H100 PCIe", 756e12, 51e12, 2.0e12),
    ("H100 NVL", "NVIDIA H100 NVL", 835e12, 60e12, 3.9e12),
    ("H100", "NVIDIA H100 SXM", 989e12, 67e12, 3.35e12),
    ("A100-SXM4-80GB", "NVIDIA A100 SXM 80GB", 312e12, 19.5e12, 2.039e12),
    ("A100-SXM4-40GB", "NVIDIA A100 SXM 40GB", 312e12, 19.5e12, 1.555e12),
    ("A100 80GB", "NVIDIA A100 PCIe 80GB", 312e12, 19.5e12, 1.935e12),  # any 80GB but SXM4's
    ("A100", "NVIDIA A100 40GB PCIe", 312e12, 19.5e12, 1.555e12),
    ("L40S", "NVIDIA L40S", 362e12, 91.6e12, 0.864e12),
    ("L4", "NVIDIA L4", 121e12, 30.3e12, 0.3e12),
]
# A precision by each name a model's dtype or a calibration gives it, in lower case.
PRECISIONS = {"bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16"}
PRECISIONS |= {"fp32": "fp32", "float32": "fp32"}


def _precision(name: str) -> str | None:
    """The precision `name` gives in any case ("BF16", "bfloat16": "bf16"), None if unknown."""
    return PRECISIONS.get(name.lower())


def _is_fp32(dtype: str | None) -> bool:
    """Whether `dtype` runs on the FP32 units (None: 16-bit, the tensor-core figure)."""
    precision = None if dtype is None else _precision(dtype)
    if dtype is not None and precision is None:
        raise ValueError(f"precision '{dtype}' is not known; known: {', '.join(PRECISIONS)}")
    return precision == "fp32"


def _names(words: str, device: str) -> bool:
    """Whether `device` holds `words` whole, in any case: "L4" names "NVIDIA L4", not "NVIDIA
    L40" (a substring did, and gave an L40 an L4's peaks). Blank words name nothing (they
    matched the end of "cpu: ... (2 threads)")."""
    return bool(words.strip()) and (
        re.search(rf"(?<![a-z0-9]){re.escape(words.lower())}(?![a-z0-9])", device.lower())
        is not None
    )


def datasheet_peaks(device: str, dtype: str | None = None) -> Peaks | None:
    """The datasheet peaks of a GPU by its reported name, for a model in `dtype` (None: 16-bit),
    None if not in the table."""
    fp32 = _is_fp32(dtype)
    precision = _precision(dtype) if dtype else "bf16"
    for needle, name, flops_16, flops_32, bandwidth in DATASHEET:
        if _names(needle, device):
            source = f"datasheet: {name}, {precision} {'no TF32' if fp32 else 'tensor core'}"
            return Peaks(device, flops_32 if fp32 else flops_16, bandwidth, source, precision)
    return None


def calibration_path() -> Path:
    """Where calibrations are kept: $TRADEOFF_CALIBRATION, else the user's cache directory."""
    explicit = os.environ.get("TRADEOFF_CALIBRATION")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "tradeoff" / "calibration.json"


def calibrations(path: Path) -> dict[str, Any]:
    """The calibrations kept in `path`: none where it does not exist; a path that is not a
    calibration file (a directory, not JSON, not an object) is one line naming it."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else f"not JSON ({exc})"
        raise UserError(
            f"{path}: {why}; remove it, or point TRADEOFF_CALIBRATION elsewhere"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a calibration file (a JSON object of devices)")
    return data


def save_calibration(peaks: Peaks, details: dict[str, Any], path: Path | None = None) -> Path:
    """Store a measurement under its device name (replacing an earlier one)."""
    path = path or calibration_path()
    data = calibrations(path)
    data[peaks.device] = {
        "flops_per_s": peaks.flops_per_s,
        "bytes_per_s": peaks.bytes_per_s,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        **details,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path) as part:
        part.write_text(json.dumps(data, indent=2) + "\n")
    return path


def calibrated_peaks(device: str, path: Path | None = None) -> Peaks | None:
    """The peaks `tradeoff calibrate` measured on `device`: by its full name, or by the words
    one calibrated device's name and `device` share whole, either way round ("H100" for "NVIDIA
    H100 80GB HBM3", as torch names it, and a calibration kept as "H100" for a run on that)."""
    return _calibrated(device, path or calibration_path())[0]


def _calibrated(device: str, path: Path) -> tuple[Peaks | None, list[str]]:
    """`calibrated_peaks`, and the calibrated names that name `device`: none of them is used
    where there are two or more."""
    kept = calibrations(path)
    named = [device] if device in kept else [
        name for name in kept if _names(device, name) or _names(name, device)
    ]  # fmt: skip
    return (_entry_peaks(path, named[0], kept[named[0]]) if len(named) == 1 else None), named


def _entry_peaks(path: Path, device: str, entry: Any) -> Peaks | None:
    """The peaks of `device`'s calibration `entry` in `path` (None where it is not an object);
    peaks that are not numbers above 0 are one line naming the file and the device."""
    if not isinstance(entry, dict):
        return None
    given = [entry.get(key) for key in ("flops_per_s", "bytes_per_s")]
    flops, bandwidth = (_number(value) for value in given)
    if not (0 < flops < math.inf and 0 < bandwidth < math.inf):  # a roofline divides by them
        shown = [json.dumps(value) if key in entry else "missing" for key, value in zip(
            ("flops_per_s", "bytes_per_s"), given, strict=True)]  # fmt: skip
        raise UserError(
            f"{path}: the calibration of {device} has peaks flops_per_s {shown[0]} and "
            f"bytes_per_s {shown[1]}; each must be a number above 0: {_remedy(device)}"
        )
    measured_in = entry.get("precision")
    precision = _precision(measured_in) if isinstance(measured_in, str) else None
    if measured_in is not None and precision is None:  # read as none, it timed fp32 as bf16
        raise UserError(
            f"{path}: the calibration of {device} has precision {json.dumps(measured_in)}; "
            f"known: {', '.join(PRECISIONS)}: {_remedy(device)}"
        )
    matmul = f", {precision} matmul" if precision else ""
    # `calibrate` keeps its warning of other work (busy_host); unsaid, the low peaks it measured
    # were used as any, making roofline times too long and efficiencies too high.
    busy = " on a busy host (the peaks may be too low)" if entry.get("busy_host") else ""
    source = f"calibrated{busy}: {entry.get('measured_at', '?')}{matmul}"
    return Peaks(device, flops, bandwidth, source, precision)


def _remedy(device: str) -> str:
    """What mends a bad entry: every entry is checked before a run, the other machines' too
    (one file may be shared), and `calibrate` here rewrites only this machine's."""
    return (
        f"edit or remove the entry '{device}', or run `tradeoff calibrate` (--device cuda for a "
        "GPU) on that machine"
    )


def _number(value: Any) -> float:
    """A JSON number as a float; anything else (text, true, null) NaN, which no check passes."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def device_peaks(
    device: str, dtype: str | None = None, *, path: Path | None = None
) -> tuple[Peaks | None, str]:
    """(peaks, "") for a device running a model in `dtype` (None: as calibrated, else 16-bit):
    calibrated if measured, else the datasheet; or (None, why)."""
    path = path or calibration_path()
    measured, named = _calibrated(device, path)
    peaks = datasheet_peaks(device, dtype) if measured is None else _as(measured, dtype)
    twice = (
        f"{device} matches {len(named)} calibrated devices ({', '.join(named)}), so neither "
        "calibration is used"
    )
    if peaks is not None:
        return (replace(peaks, source=f"{peaks.source}; {twice}") if len(named) > 1 else peaks), ""
    if len(named) > 1:
        return None, f"no peaks: {twice}; name one of them whole"
    kept = ", ".join(calibrations(path))
    also = f" (calibrated here: {kept})" if kept else ""
    return None, f"no peaks for {device}{also}: run `tradeoff calibrate` on this machine"


def _as(measured: Peaks, dtype: str | None) -> Peaks:
    """Calibrated peaks for a model in `dtype`: a matmul measured in bf16 says nothing of fp32
    (15 times slower on an H100), so where the widths differ the datasheet's FLOP/s for `dtype`
    go with the measured bandwidth; a device with no datasheet entry (a CPU) keeps its measured
    figure, and its source says in what it was measured."""
    if dtype is None or measured.precision is None:
        return measured
    if _is_fp32(dtype) == _is_fp32(measured.precision):
        return measured
    sheet = datasheet_peaks(measured.device, dtype)
    if sheet is None:
        return replace(measured, source=f"{measured.source}; the model runs in {dtype}")
    calibrated = measured.source.removesuffix(f", {measured.precision} matmul")
    return replace(
        sheet,
        bytes_per_s=measured.bytes_per_s,
        source=f"{calibrated} bandwidth, {sheet.source.removeprefix('datasheet: ')} FLOP/s "
        f"from the datasheet (calibrated in {measured.precision})",
    )


def local_peaks() -> Peaks | None:
    """The peaks of the device in-process llama.cpp models run on (this CPU), if calibrated.
    Every calibration kept is checked too: a run calls this before its models load, and a model
    on a GPU looks its device's up only at its first call, when the run directory exists."""
    from tradeoff.meters.calibrate import cpu_device

    path = calibration_path()
    for device, entry in calibrations(path).items():
        _entry_peaks(path, device, entry)
    return calibrated_peaks(cpu_device(), path)
