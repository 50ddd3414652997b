"""Energy meters. RAPL is read from a directory laid out like /sys/class/powercap that the test
writes: this VM has no RAPL, so the real files cannot be read here."""

import asyncio
from pathlib import Path

from tradeoff.meters.energy import POWERCAP_ROOT, _uuid_key, find_energy_meter, rapl_meter
from tradeoff.strategies.calls import CallMeter
from tradeoff.types import Request


def _domain(root: Path, name: str, energy_uj: int, max_uj: int = 1000) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


def test_rapl_sums_package_domains_and_handles_wraparound(tmp_path):
    pkg0 = _domain(tmp_path, "intel-rapl:0", 900)
    pkg1 = _domain(tmp_path, "intel-rapl:1", 100)
    _domain(tmp_path, "intel-rapl:0:0", 5)  # a sub-domain (core): counted inside its package
    meter, why = rapl_meter(tmp_path)
    assert meter is not None, why
    assert meter.read_j() == 0.0
    (pkg0 / "energy_uj").write_text("50\n")  # wrapped: 900 -> 1000 -> 50 is 151 uJ
    (pkg1 / "energy_uj").write_text("300\n")  # +200 uJ
    assert abs(meter.read_j() - 351e-6) < 1e-12
    (pkg1 / "energy_uj").write_text("400\n")
    assert abs(meter.read_j() - 451e-6) < 1e-12


def test_rapl_sums_the_packages_only_not_the_zones_that_hold_or_repeat_them(tmp_path):
    # As an Intel laptop lays them out: the package, psys (the platform, the package inside
    # it), the package again through MMIO, and a part of the package (core).
    zones = {"intel-rapl:0": "package-0", "intel-rapl:1": "psys",
             "intel-rapl-mmio:0": "package-0", "intel-rapl:0:0": "core"}  # fmt: skip
    for zone, name in zones.items():
        (_domain(tmp_path, zone, 0, max_uj=10**9) / "name").write_text(f"{name}\n")
    meter, why = rapl_meter(tmp_path)
    assert meter is not None, why
    assert [d.name for d in meter.domains] == ["intel-rapl:0"]
    for zone, joules in [("intel-rapl:0", 10), ("intel-rapl:1", 12), ("intel-rapl-mmio:0", 10)]:
        (tmp_path / zone / "energy_uj").write_text(f"{joules * 10**6}\n")
    assert meter.read_j() == 10.0  # 32 J before
    (tmp_path / "intel-rapl:0" / "name").unlink()
    (tmp_path / "intel-rapl:1" / "name").write_text("package-1\n")  # a second socket
    meter, why = rapl_meter(tmp_path)
    assert meter is not None and [d.name for d in meter.domains] == ["intel-rapl:0", "intel-rapl:1"]


def test_rapl_missing_root_gives_reason(tmp_path):
    meter, why = rapl_meter(tmp_path / "absent")
    assert meter is None and "does not exist" in why


def test_rapl_without_packages_gives_reason(tmp_path):
    meter, why = rapl_meter(tmp_path)
    assert meter is None and "no RAPL package domains" in why


def test_find_energy_meter_on_this_machine_says_why_when_missing():
    meter, why = find_energy_meter()
    if not POWERCAP_ROOT.is_dir():
        assert meter is None or meter.source == "nvml"
        if meter is None:
            assert "RAPL" in why and "NVML" in why


def test_models_on_a_gpu_are_metered_by_its_counter_never_by_rapl(tmp_path):
    _domain(tmp_path, "intel-rapl:0", 10)
    meter, why = find_energy_meter(tmp_path, gpu_uuids=["GPU-5a5d9c0f-0000"])
    # No GPU on this machine: NVML's reason, and RAPL (readable here) is not used instead.
    assert meter is None or meter.source == "nvml"
    if meter is None:
        assert "NVML" in why and "RAPL" not in why
    meter, _ = find_energy_meter(tmp_path, gpu_uuids=[])  # models on the CPU: RAPL
    assert meter is not None and meter.source == "rapl"
    meter, why = find_energy_meter(tmp_path / "absent", gpu_uuids=[])
    assert meter is None and "no RAPL" in why and "no model runs on a GPU" in why


def test_gpu_uuids_match_across_nvml_and_torch_spellings():
    assert _uuid_key("GPU-5A5D9C0F-1234") == _uuid_key("5a5d9c0f-1234") == "5a5d9c0f1234"
    assert _uuid_key(b"GPU-5a5d9c0f-1234") == "5a5d9c0f1234"


def test_a_rapl_counter_that_fails_mid_run_costs_only_the_call_s_energy(tmp_path, smollm):
    """A counter read that failed after the meter opened (EIO from sysfs) raised out of the call:
    `profile` stopped with a traceback, `serve` answered 502 though the model answered. Now the
    call keeps its answer and its energy is missing with the reason."""
    domain = _domain(tmp_path, "intel-rapl:0", 1000)
    rapl, why = rapl_meter(tmp_path)
    assert rapl is not None, why
    meter = CallMeter({"s": smollm}, rapl, "")
    ask = Request(messages=[{"role": "user", "content": "2+2?"}], max_tokens=4)
    metered = asyncio.run(meter.call("s", ask))
    assert metered.energy_j == 0.0 and metered.energy_source == "rapl"
    (domain / "energy_uj").unlink()  # the counter's file is gone: every read fails from here
    call = asyncio.run(meter.call("s", ask))
    assert call.generation.error is None and call.generation.text == metered.generation.text
    assert call.energy_j is None and call.energy_source is None
    assert call.energy_missing is not None
    assert call.energy_missing.startswith("RAPL counter unreadable: [Errno 2]")
    decision = asyncio.run(meter.measure(lambda: "small"))
    assert decision is not None and decision.value == "small"
    assert decision.energy_j is None and decision.energy_missing == call.energy_missing
