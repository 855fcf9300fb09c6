"""Energy per inference: RAPL counters read by the runner (on a fake sysfs tree, wrap-around included, as
no RAPL exists on the machines this is developed on), and the power-profile estimate."""
import importlib.util
import json
import subprocess
import sys

import pytest

from edgebench.deploy.bundle import RUNNER_SOURCE
from edgebench.devices.energy import annotate_energy, energy_warning, synops_energy
from edgebench.devices.local import LocalConfig, LocalDevice
from edgebench.types import Measurement, Provenance

# the runner's energy counters, loaded from the file the bundles ship (it imports nothing of edgebench)
spec = importlib.util.spec_from_file_location("eb_runner_device", RUNNER_SOURCE.with_name("runner_device.py"))
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
    counted = doc["energy_counter"]
    assert (counted["source"], counted["energy_uj"], counted["inferences"]) == ("rapl:intel-rapl:0", 0, 20)
    assert 0 < counted["seconds"] < 60 and "RAPL" in counted["scope"]
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


# The format of `vcgencmd pmic_read_adc` on a Raspberry Pi 5 (as shown in Jeff Geerling's Pi 5 write-up and
# parsed by several public tools): one `NAME_A current(N)=...A` line per current rail, one `NAME_V volt(N)=...V`
# per voltage rail; the indices of a rail's two lines differ, and some rails have a voltage only. Values here
# are made up in that format: no Pi 5 exists on this machine.
PMIC_SAMPLE = """ 3V7_WL_SW_A current(0)=0.10000000A
   3V3_SYS_A current(1)=0.20000000A
  VDD_CORE_A current(7)=2.00000000A
   3V3_DAC_A current(17)=0.00006105A
 3V7_WL_SW_V volt(8)=3.70000000V
   3V3_SYS_V volt(9)=3.30000000V
  VDD_CORE_V volt(15)=0.80000000V
   3V3_DAC_V volt(20)=nanV
     EXT5V_V volt(24)=5.10000000V
      BATT_V volt(25)=0.00000000V
"""
PMIC_WATTS = 0.1 * 3.7 + 0.2 * 3.3 + 2.0 * 0.8  # EXT5V and BATT have no current; 3V3_DAC's voltage is nan


def test_pmic_parser_pairs_rails_by_name():
    assert runner.pmic_watts(PMIC_SAMPLE) == pytest.approx(PMIC_WATTS)
    assert runner.pmic_watts('error=1 error_msg="Command not registered"\n') is None  # a Pi 4
    assert runner.pmic_watts("") is None


def test_integration_is_trapezoid_over_the_window():
    samples = [(0.0, 1.0), (1.0, 3.0), (2.0, 3.0), (3.0, None), (5.0, 100.0)]
    assert runner.integrate_uj(samples, 0.0, 2.0) == pytest.approx(((1 + 3) / 2 + 3) * 1e6)
    assert runner.integrate_uj(samples[:1], 0.0, 0.0) == 0


def run_runner(bundle, *args):
    p = subprocess.run([sys.executable, str(bundle.path / "runner.py"), str(bundle.path), "--runs", "20",
                        "--warmup", "2", "--no-eval", *map(str, args)], capture_output=True, text=True, timeout=120)
    return json.loads(p.stdout.split("EDGEBENCH-RESULT ")[1])


def test_runner_samples_a_pi5_pmic(cnn_bundle, tmp_path):
    fake = tmp_path / "vcgencmd"
    (tmp_path / "adc.txt").write_text(PMIC_SAMPLE)
    fake.write_text(f'#!/bin/sh\n[ "$1" = pmic_read_adc ] || exit 1\ncat {tmp_path / "adc.txt"}\n')
    fake.chmod(0o755)
    doc = run_runner(cnn_bundle, "--min-time", "0.6", "--powercap-root", tmp_path / "none", "--vcgencmd", fake,
                     "--power-supply-root", tmp_path / "none")  # auto: no RAPL here, so the PMIC
    e = doc["energy_counter"]
    assert e["source"].startswith("pi5-pmic") and e["seconds"] >= 0.6 and e["power_samples"] >= 4
    assert e["energy_uj"] == pytest.approx(PMIC_WATTS * e["seconds"] * 1e6, rel=1e-3)
    assert e["mean_power_w"] == pytest.approx(PMIC_WATTS, rel=1e-3)


def test_runner_samples_an_android_battery(cnn_bundle, tmp_path):
    battery = tmp_path / "power_supply" / "battery"
    battery.mkdir(parents=True)
    (battery / "current_now").write_text("-450000\n")  # uA, negative while discharging on many phones
    (battery / "voltage_now").write_text("3900000\n")  # uV
    doc = run_runner(cnn_bundle, "--min-time", "0.5", "--energy", "android-battery",
                     "--power-supply-root", tmp_path / "power_supply")
    e = doc["energy_counter"]
    assert e["source"].startswith("android-battery") and "whole phone" in e["scope"] and e["power_samples"] >= 5
    assert e["energy_uj"] == pytest.approx(0.45 * 3.9 * e["seconds"] * 1e6, rel=1e-3)
    m = Measurement(ok=True, device="phone", provenance=Provenance.MEASURED, samples_ns=[10**6] * e["inferences"],
                    extra={"energy_counter": e})
    x = annotate_energy(m, LocalDevice(LocalConfig())).extra
    assert x["energy_provenance"] == "measured" and "whole phone" in x["energy_source"]
    assert x["energy_mj_per_inference"] == pytest.approx(e["energy_uj"] / 1000 / e["inferences"])
    assert energy_warning(x) == ""


def test_no_counter_is_said_and_few_samples_are_flagged(cnn_bundle, tmp_path):
    doc = run_runner(cnn_bundle, "--energy", "pi5-pmic", "--vcgencmd", tmp_path / "absent")
    assert "energy_counter" not in doc and "pi5-pmic is not readable" in doc["energy_unavailable"]
    few = {"energy_provenance": "measured", "energy_power_samples": 2, "energy_window_s": 0.05}
    assert "only 2 power samples" in energy_warning(few)


def test_synops_energy_names_its_constant_and_source():
    e = synops_energy({"synops_per_sample": 2e6, "dense_macs_per_sample": 1e6})
    assert e["synops_energy_mj_per_sample"] == pytest.approx(2e6 * 0.9e-9)
    assert e["dense_mac_energy_mj_per_sample"] == pytest.approx(1e6 * 4.6e-9)
    assert "0.9 pJ" in e["synops_energy_source"] and "Horowitz" in e["synops_energy_source"]
    assert synops_energy({"dense_macs_per_sample": 1e6}) == {}
