import os
import stat

import pytest

from edgebench.devices.local import LocalConfig, LocalDevice
from edgebench.devices.registry import get_device
from edgebench.reports.record import Record
from edgebench.reports.store import Store
from edgebench.types import EdgebenchError, Provenance, RunSpec


def test_local_run_measures_and_computes_accuracy_from_runner_outputs(cnn_bundle, trained_cnn):
    m = LocalDevice().run(cnn_bundle, RunSpec(runs=50, warmup=5, threads=1))
    assert m.ok, m.error
    assert m.provenance is Provenance.MEASURED
    assert len(m.samples_ns) == 50
    assert m.runtime == "onnxruntime" and m.runtime_version
    # accuracy comes from the deployed file's predictions; ONNX matches PyTorch here exactly
    assert m.accuracy == pytest.approx(trained_cnn.metrics["test_accuracy"], abs=1 / 450)
    assert m.n_eval == 450
    assert m.device_facts["cores"] == os.cpu_count()


def test_core_pinning_is_applied(cnn_bundle):
    m = LocalDevice(LocalConfig(cores=(0,))).run(cnn_bundle, RunSpec(runs=5, warmup=0, eval=False))
    assert m.ok, m.error
    assert m.device_facts["affinity"] == [0]
    assert m.device_facts["pinned_cores"] == [0]


def _wrapper(tmp_path, body: str) -> str:
    path = tmp_path / "python-wrapper"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_a_killed_runner_is_a_failed_measurement_and_earlier_records_stay(cnn_bundle, onnx_artifact, tmp_path):
    store = Store(tmp_path / "s.sqlite")
    good = LocalDevice().run(cnn_bundle, RunSpec(runs=5, warmup=0))
    store.append(Record.from_parts("r1", onnx_artifact, good, "local"))
    # a "Python" that dies from SIGKILL, as a runner does when the OOM killer or a user kills it
    dying = LocalDevice(LocalConfig(python=_wrapper(tmp_path, "kill -9 $$")))
    bad = dying.run(cnn_bundle, RunSpec(runs=5, warmup=0))
    assert not bad.ok and bad.error.startswith("runner killed by signal 9")
    store.append(Record.from_parts("r1", onnx_artifact, bad, "local"))
    recs = store.query(run_id="r1")
    assert [r.status for r in recs] == ["ok", "failed"]
    assert recs[0].latency_ms["n"] == 5 and recs[1].error == bad.error


def test_a_segfaulting_runtime_does_not_take_the_host_down(cnn_bundle, tmp_path):
    crash = _wrapper(tmp_path, 'exec python3 -c "import ctypes; ctypes.string_at(0)"')
    m = LocalDevice(LocalConfig(python=crash)).run(cnn_bundle, RunSpec(runs=5, warmup=0))
    assert not m.ok and "signal 11" in m.error


def test_timeout_is_a_failed_measurement(cnn_bundle, tmp_path):
    slow = _wrapper(tmp_path, "sleep 30")
    m = LocalDevice(LocalConfig(python=slow)).run(cnn_bundle, RunSpec(runs=5, warmup=0, timeout_s=1))
    assert not m.ok and "timed out" in m.error


def test_unknown_device_and_bad_devices_file(tmp_path):
    with pytest.raises(EdgebenchError, match="unknown device 'pi9'"):
        get_device("pi9")
    f = tmp_path / "devices.toml"
    f.write_text("[devices.x]\nkind = 'local'\ncores = 'zero'\n")
    with pytest.raises(EdgebenchError, match="should be tuple"):
        get_device("x", f)
    f.write_text("[devices.x\n")
    with pytest.raises(EdgebenchError, match="malformed devices file"):
        get_device("x", f)
