"""The speed probe (devices/stability.py): its summary on known traces, and a real probe on this computer."""
import json

import pytest

from edgebench.devices.local import LocalConfig, LocalDevice
from edgebench.devices.stability import probe_speed, summarize
from edgebench.types import EdgebenchError


def test_a_steady_trace_is_stable_and_a_two_speed_trace_is_not():
    steady = summarize([2.0, 2.02, 2.01, 2.04, 2.0, 2.03], seconds=1.5)
    assert steady.stable and steady.switches == 0 and steady.slow_share == 0.0
    assert steady.bins[0] == 1.0 and "steady" in steady.summary()
    # fast, fast, slow x3, fast, slow, slow: 5 of 8 bins slow, 3 switches between the states
    two = summarize([1.0, 1.01, 1.5, 1.52, 1.49, 1.0, 1.5, 1.51], seconds=2.0)
    assert not two.stable
    assert two.slow_share == pytest.approx(5 / 8) and two.switches == 3
    assert two.slowest == pytest.approx(1.52, abs=0.005)
    assert "CHANGES SPEED" in two.summary() and "1.52x" in two.summary()
    assert two.to_dict()["stable"] is False


def test_too_short_a_probe_is_one_clear_error():
    with pytest.raises(EdgebenchError, match="at least 4"):
        summarize([1.0, 1.1], seconds=0.5)
    with pytest.raises(EdgebenchError, match="at least"):
        probe_speed(LocalDevice(), 0.5)


def test_the_probe_runs_pinned_on_this_computer():
    trace = probe_speed(LocalDevice(LocalConfig(cores=(0,))), 1.5)
    assert len(trace.bins) >= 5  # 0.25-s bins over 1.5 s
    assert min(trace.bins) == 1.0 and all(b >= 1.0 for b in trace.bins)
    assert trace.slowest <= max(trace.bins) and trace.summary().startswith(("steady", "CHANGES SPEED"))


def test_doctor_prints_the_probe_for_local_devices(cli):
    p = cli("devices", "doctor", "local", "--stability", "1.5", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)["local"]
    assert doc["stability"]["seconds"] == 1.5 and len(doc["stability"]["bins"]) >= 5
    p = cli("devices", "doctor", "local", "--stability", "1.5")
    assert p.returncode == 0 and "speed:" in p.stdout
