"""The host's conditions while a run measures: load average, CPU time of other processes, CPU
steal, and on the GPUs the models use their clocks and other processes. Sampled on a daemon
thread, stored with the run (`host_samples`), summarised, and judged: a run measured on a busy
host says so (on 2 cores, llama.cpp ran 3-5x slower while another job shared them).

"Ours" is this process and every live descendant (dispatch helpers), found through the parent
ids in every /proc/<pid>/stat at each sample (/proc/<pid>/task/<tid>/children needs a kernel
option that VMs like ours lack; about 1 ms for 80 processes), plus the children they have waited
for (cutime, cstime): a child that is reaped moves from the one to the other, so nothing is
counted twice or lost. os.times() alone would miss live children, which is what dispatch helpers
are until the run ends. Other processes' CPU time is the busy time of the
CPUs this process may run on (its affinity) less ours: processes on other CPUs do not take ours.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("tradeoff.conditions")

SAMPLE_S = 1.0
# Samples written to the store together: a killed run loses at most this many seconds of them.
FLUSH_EVERY = 10

# Busy when other processes used this many cores on average, on the CPUs the run may use. An
# absolute figure, not a share: llama.cpp's threads meet at spin barriers after every layer, so
# one core taken part of the time stalls all of them, whatever the number of cores.
BUSY_OTHER_CORES = 0.25
# Busy when the hypervisor kept this share of the CPU time from the VM (steal): time our threads
# were ready to run and did not.
BUSY_STEAL_SHARE = 0.05
# Busy when this many other processes held a GPU the models run on: NVML's energy counter is the
# whole GPU's, so their work is charged to the run's requests; and they compete for the SMs.
BUSY_GPU_OTHER_PROCESSES = 1

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")

Sample = dict[str, Any]


@dataclass
class _CpuTicks:
    busy: int
    steal: int | None  # None: the kernel does not report it
    total: int


def _cpu_ticks() -> dict[int, _CpuTicks]:
    """Per CPU (the cpuN lines of /proc/stat): busy, steal and total jiffies. Busy is all but
    idle, iowait and steal (guest time is inside user already)."""
    ticks: dict[int, _CpuTicks] = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                if ticks:  # the cpuN lines come together, first in the file
                    break
                continue
            name, *values = line.split()
            v = [int(x) for x in values[:8]]
            steal = v[7] if len(v) > 7 else None
            total = sum(v)
            ticks[int(name[3:])] = _CpuTicks(total - v[3] - v[4] - (steal or 0), steal, total)
    return ticks


def _stat(pid: str) -> tuple[int, int] | None:
    """(parent pid, CPU ticks of the process and its waited-for children), or None if gone."""
    try:  # os.open and os.read: half the cost of open() (a sample reads every process's stat)
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    fields = data[data.rindex(b")") + 2 :].split()  # the name may hold spaces and parentheses
    return int(fields[1]), sum(int(x) for x in fields[11:15])  # utime stime cutime cstime


def tree_ticks(root: int) -> tuple[int, set[int]]:
    """CPU ticks used by `root` and its live descendants (with the children each has waited
    for), and their pids."""
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (s := _stat(name)) is not None:
            stats[int(name)] = s
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    pids, todo, ticks = set(), [root], 0
    while todo:
        pid = todo.pop()
        if pid in pids or pid not in stats:
            continue
        pids.add(pid)
        ticks += stats[pid][1]
        todo.extend(children.get(pid, []))
    return ticks, pids


def _load1() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


@dataclass
class _Reading:
    t: float  # time.time()
    mono: float
    cpus: dict[int, _CpuTicks]
    ours: int
    pids: set[int]


class _Gpus:
    """NVML over the GPUs with these UUIDs; `read` is empty when NVML cannot be used here."""

    def __init__(self, uuids: list[str]):
        self.handles: list[tuple[str, Any]] = []
        if not uuids:
            return
        try:
            import pynvml

            from tradeoff.meters.energy import _uuid_key

            pynvml.nvmlInit()
            wanted = {_uuid_key(u) for u in uuids}
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                uuid = pynvml.nvmlDeviceGetUUID(h)
                if _uuid_key(uuid) in wanted:
                    self.handles.append((uuid if isinstance(uuid, str) else uuid.decode(), h))
        except Exception as exc:  # ImportError, or NVMLError and its many subclasses
            log.info("GPU conditions not sampled: %s", exc)

    def read(self, ours: set[int]) -> list[dict[str, Any]]:
        if not self.handles:
            return []
        import pynvml

        gpus = []
        for uuid, h in self.handles:
            gpu: dict[str, Any] = {"uuid": uuid}
            try:
                gpu["sm_mhz"] = pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)
                gpu["mem_mhz"] = pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM)
                pids = sorted({p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)})
            except Exception as exc:
                gpu["error"] = str(exc)
                gpus.append(gpu)
                continue
            others = [p for p in pids if p not in ours]
            count = len(others)
            if pids and count == len(pids):
                # None is ours: the driver reports pids of another namespace (a container). The
                # run holds the GPU, so one of them is the run, which one unknown.
                count -= 1
            gpu["other_pids"] = others
            gpu["other_processes"] = count
            gpus.append(gpu)
        return gpus


def _sample(before: _Reading, now: _Reading, gpus: list[dict[str, Any]]) -> Sample:
    """What happened between two readings, in cores used on average over the interval."""
    seconds = now.mono - before.mono
    mine = os.sched_getaffinity(0)
    cpus = [c for c in mine if c in now.cpus and c in before.cpus]
    busy = sum(now.cpus[c].busy - before.cpus[c].busy for c in cpus) * _TICK_S / seconds
    total = sum(now.cpus[c].total - before.cpus[c].total for c in cpus)
    steal = None
    if total > 0 and all(now.cpus[c].steal is not None for c in cpus):
        steal = sum((now.cpus[c].steal or 0) - (before.cpus[c].steal or 0) for c in cpus) / total
    ours = max(0, now.ours - before.ours) * _TICK_S / seconds
    sample: Sample = {
        "t": now.t,
        "interval_s": round(seconds, 4),
        "load1": _load1(),
        "cores": len(mine),
        "busy_cores": round(busy, 3),
        "ours_cores": round(ours, 3),
        # /proc/stat and the processes' times are counted apart: clamp their rounding at 0
        "other_cores": round(max(0.0, busy - ours), 3),
        "steal_share": None if steal is None else round(steal, 4),
    }
    if gpus:
        sample["gpus"] = gpus
    return sample


def _read(root: int) -> _Reading:
    ours, pids = tree_ticks(root)
    return _Reading(time.time(), time.monotonic(), _cpu_ticks(), ours, pids)


@dataclass
class _Totals:
    """The running summary of samples (a long serve keeps no list of them)."""

    samples: int = 0
    seconds: float = 0.0
    cores: int = 0
    load1: float = 0.0
    load1_max: float = 0.0
    other: float = 0.0
    other_max: float = 0.0
    other_share: float = 0.0
    ours: float = 0.0
    steal: float = 0.0
    steal_s: float = 0.0
    sm_mhz: list[int] = field(default_factory=list)  # [min, max]
    mem_mhz: list[int] = field(default_factory=list)
    gpu_others: int = 0
    gpu_pids: set[int] = field(default_factory=set)

    def add(self, s: Sample) -> None:
        dt = s["interval_s"]
        self.samples += 1
        self.seconds += dt
        self.cores = max(self.cores, s["cores"])
        self.load1 += s["load1"] * dt
        self.load1_max = max(self.load1_max, s["load1"])
        self.other += s["other_cores"] * dt
        self.other_max = max(self.other_max, s["other_cores"])
        self.other_share += s["other_cores"] / max(1, s["cores"]) * dt
        self.ours += s["ours_cores"] * dt
        if s["steal_share"] is not None:
            self.steal += s["steal_share"] * dt
            self.steal_s += dt
        for g in s.get("gpus", []):
            for key, span in (("sm_mhz", self.sm_mhz), ("mem_mhz", self.mem_mhz)):
                if key in g:
                    span[:] = [min(span[0], g[key]), max(span[1], g[key])] if span else [g[key]] * 2
            if g.get("other_processes"):
                self.gpu_others = max(self.gpu_others, g["other_processes"])
                self.gpu_pids.update(g["other_pids"])

    def summary(self) -> dict[str, Any]:
        if not self.seconds:
            return {"samples": 0, "busy": False, "busy_reason": None}
        s = self.seconds
        other = self.other / s
        steal = self.steal / self.steal_s if self.steal_s else None
        reasons = []
        if other >= BUSY_OTHER_CORES:
            reasons.append(f"other processes used {other:.2g} of {self.cores} cores on average")
        if steal is not None and steal >= BUSY_STEAL_SHARE:
            reasons.append(f"the hypervisor withheld {steal:.0%} of the CPU time (steal)")
        if self.gpu_others >= BUSY_GPU_OTHER_PROCESSES:
            reasons.append(f"{self.gpu_others} other process(es) ran on the GPU")
        return {
            "samples": self.samples,
            "seconds": round(s, 3),
            "cores": self.cores,
            "load1_mean": round(self.load1 / s, 3),
            "load1_max": self.load1_max,
            "other_cores_mean": round(other, 3),
            "other_cores_max": self.other_max,
            "other_share_mean": round(self.other_share / s, 4),
            "ours_cores_mean": round(self.ours / s, 3),
            "steal_share_mean": None if steal is None else round(steal, 4),
            "gpu_sm_mhz": self.sm_mhz or None,
            "gpu_mem_mhz": self.mem_mhz or None,
            "gpu_other_processes_max": self.gpu_others,
            "gpu_other_pids": sorted(self.gpu_pids),
            "thresholds": {
                "other_cores": BUSY_OTHER_CORES,
                "steal_share": BUSY_STEAL_SHARE,
                "gpu_other_processes": BUSY_GPU_OTHER_PROCESSES,
            },
            "busy": bool(reasons),
            "busy_reason": "; ".join(reasons) or None,
        }


def summarize(samples: list[Sample]) -> dict[str, Any]:
    """The conditions over `samples` (time-weighted means, extremes) and the verdict: `busy`,
    with `busy_reason` saying why in words."""
    totals = _Totals()
    for s in samples:
        totals.add(s)
    return totals.summary()


class HostSampler:
    """Samples every `period_s` on a daemon thread from `start` to `stop`, handing samples to
    `write` in batches (from that thread; `write` must be safe there). `gpu_uuids`: the GPUs
    the run's models use; their clocks and processes are sampled where NVML is available."""

    def __init__(
        self,
        write: Callable[[list[Sample]], None],
        gpu_uuids: list[str] | None = None,
        period_s: float = SAMPLE_S,
        flush_every: int = FLUSH_EVERY,
    ):
        self.write = write
        self.period_s = period_s
        self.flush_every = flush_every
        self.root = os.getpid()
        self._gpus = _Gpus(gpu_uuids or [])
        self._stop = threading.Event()
        self._pending: list[Sample] = []
        self._totals = _Totals()
        self._last: _Reading | None = None
        self._thread = threading.Thread(target=self._run, name="tradeoff-host", daemon=True)
        self.missing: str | None = None  # why nothing is sampled (no /proc: not Linux)

    def start(self) -> HostSampler:
        try:
            self._last = _read(self.root)
        except OSError as exc:
            self.missing = f"host conditions not sampled: {exc}"
            return self
        self._thread.start()
        return self

    # _take and _flush run on the sampler's thread, then (once it has ended) in `stop`.

    def _take(self) -> None:
        now = _read(self.root)
        assert self._last is not None
        if now.mono - self._last.mono < 0.05:  # too short to say anything (a last sample)
            return
        s = _sample(self._last, now, self._gpus.read(now.pids))
        self._last = now
        self._totals.add(s)
        self._pending.append(s)

    def _flush(self) -> None:
        if not self._pending:
            return
        try:
            self.write(self._pending)
            self._pending = []
        except Exception as exc:  # disk full, store locked: kept for the next try
            log.warning("could not store %d host samples: %s", len(self._pending), exc)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self._take()
            except Exception as exc:  # never let the run fail for its conditions
                log.warning("host sample failed: %s", exc)
            if len(self._pending) >= self.flush_every:
                self._flush()

    def stop(self) -> dict[str, Any]:
        """Stop sampling, take a last sample, write what is pending; the summary of this
        sampler's samples (`summarize`)."""
        if self.missing:
            return {**self._totals.summary(), "missing": self.missing}
        self._stop.set()
        self._thread.join()
        try:
            self._take()
        except Exception as exc:
            log.warning("host sample failed: %s", exc)
        self._flush()
        return self._totals.summary()
