"""Energy per inference: RAPL counters read by the runner (on a fake sysfs tree, wrap-around included, as
no RAPL exists on the machines this is developed on), and the power-profile estimate."""
import importlib.util
import json
import subprocess
import sys

import pytest

from edgebench.deploy.bundle import RUNNER_SOURCE
from edgebench.devices.energy import annotate_energy
from edgebench.devices.local import LocalConfig, LocalDevice
from edgebench.types import Measurement, Provenance

spec = importlib.util.spec_from_file_location("eb_runner_energy", RUNNER_SOURCE)
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)


def fake_powercap(root, zones):
    """zones: {name: (energy_uj, max_energy_range_uj)}; subzones (intel-rapl:0:0) are not summed."""
    for name, (energy, max_range) in zones.items():
        d = root / name
        d.mkdir(parents=True)
        (d / "energy_uj").write_text(f"{energy}\n")
        (d / "max_energy_range_uj").write_text(f"{max_range}\n")
    return root


def test_rapl_zones_and_wrap_around(tmp_path):
    root = fake_powercap(tmp_path, {"intel-rapl:0": (900, 1000), "intel-rapl:1": (50, 1000),
                                    "intel-rapl:0:0": (10, 1000)})
    zones = runner.rapl_zones(str(root))
    assert [z[0] for z in zones] == ["intel-rapl:0", "intel-rapl:1"]
    before = runner.rapl_read(zones)
    (root / "intel-rapl:0" / "energy_uj").write_text("100\n")  # wrapped: 900 -> 1000 -> 100
    (root / "intel-rapl:1" / "energy_uj").write_text("250\n")
    assert runner.rapl_delta_uj(zones, before, runner.rapl_read(zones)) == (100 + 100) + 200
    assert runner.rapl_zones(str(tmp_path / "missing")) == []


def test_runner_reports_the_energy_of_the_measured_runs(cnn_bundle, tmp_path):
    root = fake_powercap(tmp_path / "powercap", {"intel-rapl:0": (5000, 10**9)})
    p = subprocess.run([sys.executable, str(cnn_bundle.path / "runner.py"), str(cnn_bundle.path), "--runs", "20",
                        "--warmup", "2", "--no-eval", "--powercap-root", str(root)],
                       capture_output=True, text=True, timeout=120)
    doc = json.loads(p.stdout.split("EDGEBENCH-RESULT ")[1])
    # the fake counter does not move: zero energy counted over exactly the measured runs
    assert doc["energy_counter"] == {"source": "rapl:intel-rapl:0", "energy_uj": 0, "inferences": 20}
    m = Measurement(ok=True, device="local", provenance=Provenance.MEASURED, samples_ns=[10**6] * 20,
                    extra={"energy_counter": {"source": "rapl:intel-rapl:0", "energy_uj": 40_000, "inferences": 20}})
    annotated = annotate_energy(m, LocalDevice(LocalConfig(power_active_w=99.0)))
    assert annotated.extra["energy_mj_per_inference"] == pytest.approx(2.0)  # counters win over the profile
    assert annotated.extra["energy_provenance"] == "measured"


def test_power_profile_estimate_is_labelled_and_never_from_emulated_wall_time():
    m = Measurement(ok=True, device="board", provenance=Provenance.MEASURED, samples_ns=[2_000_000] * 5)
    dev = LocalDevice(LocalConfig(power_active_w=6.4, power_profile="Pi 4B under load"))
    e = annotate_energy(m, dev).extra
    assert e["energy_mj_per_inference"] == pytest.approx(12.8) and e["energy_provenance"] == "estimated"
    assert "Pi 4B under load" in e["energy_source"]

    class Emulated:
        kind, config = "emulated", LocalConfig(power_active_w=6.4)

    wall = Measurement(ok=True, device="pi4-emulated", provenance=Provenance.EMULATED, samples_ns=[900_000_000])
    assert "energy_mj_per_inference" not in annotate_energy(wall, Emulated()).extra
    est = Measurement(ok=True, device="pi4-emulated", provenance=Provenance.EMULATED, samples_ns=[900_000_000],
                      extra={"estimated_latency_ms": 3.0})
    assert annotate_energy(est, Emulated()).extra["energy_mj_per_inference"] == pytest.approx(19.2)
