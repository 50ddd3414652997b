"""Device peaks for the roofline: published datasheet figures for common GPUs, and what
`tradeoff calibrate` measured on this machine (preferred where present: it is what the device
achieves, not what it is rated for).

Datasheet figures are dense BF16 tensor-core FLOP/s (no sparsity) and HBM/GDDR bandwidth, from
NVIDIA's product datasheets. A CPU has no entry: calibrate it.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

from tradeoff.errors import UserError
from tradeoff.meters.roofline import Peaks

# (words of the device name, as NVML reports it) -> (name, FLOP/s, bytes/s). First match wins.
DATASHEET: list[tuple[str, str, float, float]] = [
    ("H200", "NVIDIA H200 SXM", 989e12, 4.8e12),
    ("H100 PCIe", "NVIDIA H100 PCIe", 756e12, 2.0e12),
    ("H100 NVL", "NVIDIA H100 NVL", 835e12, 3.9e12),
    ("H100", "NVIDIA H100 SXM", 989e12, 3.35e12),
    ("A100-SXM4-80GB", "NVIDIA A100 SXM 80GB", 312e12, 2.039e12),
    ("A100-SXM4-40GB", "NVIDIA A100 SXM 40GB", 312e12, 1.555e12),
    ("A100 80GB PCIe", "NVIDIA A100 PCIe 80GB", 312e12, 1.935e12),
    ("A100", "NVIDIA A100 40GB PCIe", 312e12, 1.555e12),
    ("L40S", "NVIDIA L40S", 362e12, 0.864e12),
    ("L4", "NVIDIA L4", 121e12, 0.3e12),
]


def _names(words: str, device: str) -> bool:
    """Whether `device` holds `words` whole, in any case: "L4" names "NVIDIA L4", not "NVIDIA
    L40" (a substring did, and gave an L40 an L4's peaks)."""
    return (
        re.search(rf"(?<![a-z0-9]){re.escape(words.lower())}(?![a-z0-9])", device.lower())
        is not None
    )


def datasheet_peaks(device: str) -> Peaks | None:
    """The datasheet peaks of a GPU by its reported name, None if not in the table."""
    for needle, name, flops, bandwidth in DATASHEET:
        if _names(needle, device):
            return Peaks(device, flops, bandwidth, f"datasheet: {name}")
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
    written = path.with_name(path.name + ".tmp")  # replaced whole: never a half-written file
    written.write_text(json.dumps(data, indent=2) + "\n")
    written.replace(path)
    return path


def calibrated_peaks(device: str, path: Path | None = None) -> Peaks | None:
    """The peaks `tradeoff calibrate` measured on `device`: by its full name, or by the words
    of one calibrated device's name ("H100" for "NVIDIA H100 80GB HBM3", as torch names it)."""
    kept = calibrations(path or calibration_path())
    if device not in kept:
        named = [name for name in kept if _names(device, name)]
        device = named[0] if len(named) == 1 else device
    entry = kept.get(device)
    if not isinstance(entry, dict):
        return None
    try:
        flops, bandwidth = float(entry["flops_per_s"]), float(entry["bytes_per_s"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (0 < flops < math.inf and 0 < bandwidth < math.inf):  # a roofline divides by them
        raise UserError(
            f"{path or calibration_path()}: the calibration of {device} has peaks "
            f"flops_per_s {entry['flops_per_s']} and bytes_per_s {entry['bytes_per_s']}; each "
            "must be a number above 0: run `tradeoff calibrate` again"
        )
    return Peaks(device, flops, bandwidth, f"calibrated: {entry.get('measured_at', '?')}")


def device_peaks(device: str, path: Path | None = None) -> tuple[Peaks | None, str]:
    """(peaks, "") for a device: calibrated if measured, else the datasheet; or (None, why)."""
    peaks = calibrated_peaks(device, path) or datasheet_peaks(device)
    if peaks is not None:
        return peaks, ""
    kept = ", ".join(calibrations(path or calibration_path()))
    also = f" (calibrated here: {kept})" if kept else ""
    return None, f"no peaks for {device}{also}: run `tradeoff calibrate` on this machine"


def local_peaks() -> Peaks | None:
    """The peaks of the device in-process llama.cpp models run on (this CPU), if calibrated."""
    from tradeoff.meters.calibrate import cpu_device

    return calibrated_peaks(cpu_device())
