"""Energy counters: RAPL through Linux powercap, NVML on NVIDIA GPUs, or none with the reason.

A meter reads a monotonically increasing counter in joules; the energy of a request is the
difference of two readings around it. With requests one at a time (the in-process engines) that
difference is the request's own; overlapping requests are split by a later meter.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

POWERCAP_ROOT = Path("/sys/class/powercap")


class CounterError(Exception):
    """A counter that opened could not be read later (EIO from sysfs, an NVML error): the
    message says which and why. It costs the energy of the work it was read around, no more."""


class EnergyMeter(Protocol):
    source: str  # "rapl", "nvml"
    # True when the counter moves in coarse steps (NVML: about every 100 ms), so that requests
    # are metered by splitting its steps (tradeoff.meters.account), not by two readings.
    stepped: bool

    def read_j(self) -> float:
        """The counter (J); raises CounterError where it cannot be read."""
        ...

    def power_w(self) -> float | None:
        """The instantaneous power reading (W), where the hardware gives one."""
        ...

    def memory_used_bytes(self) -> int | None:
        """Device memory in use (all processes), where the counter is a device's."""
        ...


@dataclass
class RaplMeter:
    """Sum of the RAPL package domains (`_package`), counter wrap-around handled."""

    domains: list[Path]
    source: str = "rapl"
    stepped: bool = False

    def __post_init__(self) -> None:
        self._max_uj = [_read_int(d / "max_energy_range_uj") for d in self.domains]
        self._last_uj = [_read_int(d / "energy_uj") for d in self.domains]
        self._total_uj = 0

    def read_j(self) -> float:
        for i, domain in enumerate(self.domains):
            try:
                now = _read_int(domain / "energy_uj")
            except (OSError, ValueError) as exc:
                raise CounterError(f"RAPL counter unreadable: {exc}") from exc
            delta = now - self._last_uj[i]
            if delta < 0:  # the counter wrapped
                delta += self._max_uj[i] + 1
            self._total_uj += delta
            self._last_uj[i] = now
        return self._total_uj / 1e6

    def power_w(self) -> float | None:
        return None  # RAPL has only the energy counter

    def memory_used_bytes(self) -> int | None:
        return None  # the host's memory is measured per process (peak RSS), not here


@dataclass
class NvmlMeter:
    """NVML's total-energy counter (millijoules since driver load), summed over the GPUs."""

    handles: list[object]
    source: str = "nvml"
    stepped: bool = True

    def read_j(self) -> float:
        import pynvml

        try:
            return sum(pynvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self.handles) / 1e3
        except pynvml.NVMLError as exc:
            raise CounterError(f"NVML counter unreadable: {exc}") from exc

    def power_w(self) -> float | None:
        """The GPUs' summed power reading (NVML averages it over about a second)."""
        import pynvml

        try:
            return sum(pynvml.nvmlDeviceGetPowerUsage(h) for h in self.handles) / 1e3
        except Exception:  # NVMLError: not supported on this GPU
            return None

    def memory_used_bytes(self) -> int | None:
        """Device memory in use on the GPUs (all processes), summed."""
        import pynvml

        try:
            return int(sum(pynvml.nvmlDeviceGetMemoryInfo(h).used for h in self.handles))
        except Exception:
            return None


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def _package(domain: Path) -> bool:
    """Whether a powercap zone is a CPU package: `intel-rapl:N` (AMD's too) named `package-N`.
    Not `psys` (the whole platform, a package inside it), nor `intel-rapl-mmio:N` (a package
    read again through another interface), nor `intel-rapl:N:M` (a part of one): summed with
    the packages they would count their energy two or three times. A zone without a `name`
    file (no such kernel seen) is taken for a package."""
    if not re.fullmatch(r"(intel|amd)-rapl:\d+", domain.name):
        return False
    try:
        name = (domain / "name").read_text().strip()
    except OSError:
        return True
    return name.startswith("package")


def rapl_meter(root: Path = POWERCAP_ROOT) -> tuple[RaplMeter | None, str]:
    """A RAPL meter over the package domains under `root`, or None and why not."""
    if not root.is_dir():
        return None, f"no RAPL: {root} does not exist (VM or non-Intel/AMD host)"
    domains = sorted(d for d in root.iterdir() if _package(d))
    if not domains:
        return None, f"no RAPL package domains under {root}"
    unreadable = [d for d in domains if not os.access(d / "energy_uj", os.R_OK)]
    if unreadable:
        return None, f"RAPL counter {unreadable[0] / 'energy_uj'} is not readable (needs root)"
    try:
        return RaplMeter(domains), ""
    except (OSError, ValueError) as exc:
        return None, f"RAPL counter unreadable: {exc}"


def _uuid_key(uuid: object) -> str:
    """A GPU's UUID as bare lowercase hex: NVML says "GPU-5a5d...", torch "5a5d..."."""
    text = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
    return "".join(c for c in text.lower().removeprefix("gpu-") if c in "0123456789abcdef")


def nvml_meter(uuids: list[str] | None = None) -> tuple[NvmlMeter | None, str]:
    """An NVML meter over the GPUs with these UUIDs (those the models run on), or over every
    visible GPU when none is given or none matches; or None and why not."""
    try:
        import pynvml
    except ImportError:
        return None, "no NVML: nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        if not handles:
            return None, "no NVIDIA GPU visible to NVML"
        wanted = {_uuid_key(u) for u in uuids or []} - {""}
        if wanted:
            mine = [h for h in handles if _uuid_key(pynvml.nvmlDeviceGetUUID(h)) in wanted]
            handles = mine or handles
        for h in handles:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
        return NvmlMeter(handles), ""
    except Exception as exc:  # NVMLError has many subclasses; all mean "not here"
        return None, f"no NVML energy counter: {exc}"


def find_energy_meter(
    powercap_root: Path = POWERCAP_ROOT, gpu_uuids: list[str] | None = None
) -> tuple[EnergyMeter | None, str]:
    """The counter of the hardware the in-process models run on.

    `gpu_uuids`: the GPUs they run on. Non-empty: NVML over those GPUs (never RAPL, which sees
    only the CPU). Empty: the models run on the CPU, so RAPL or nothing (a GPU's counter would
    measure something else). None (not known): RAPL when readable, else NVML over every GPU."""
    if gpu_uuids:
        return nvml_meter(gpu_uuids)
    rapl, rapl_why = rapl_meter(powercap_root)
    if gpu_uuids is not None:
        return (rapl, "") if rapl is not None else (None, f"{rapl_why}; no model runs on a GPU")
    if rapl is not None:
        return rapl, ""
    nvml, nvml_why = nvml_meter()
    if nvml is not None:
        return nvml, ""
    return None, f"{rapl_why}; {nvml_why}"
