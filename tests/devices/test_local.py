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
    with pytest.raises(EdgebenchError, match=r"devices.x.cores: expected a list"):
        get_device("x", f)
    f.write_text("[devices.x\n")
    with pytest.raises(EdgebenchError, match="malformed devices file"):
        get_device("x", f)


@pytest.fixture(scope="module")
def heavy_bundle(tmp_path_factory):
    """A CNN of about 1-2 ms per inference: long enough runs for a CPU quota to bite."""
    import torch

    from edgebench.deploy.bundle import make_bundle
    from edgebench.export.onnx import describe_onnx, export_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(64 * 32 * 32, 10)).eval()
    d = tmp_path_factory.mktemp("heavy")
    a = describe_onnx(export_onnx(net, torch.zeros(1, 3, 32, 32), d / "heavy.onnx"))
    return make_bundle(a, d / "bundle")


def test_cpu_quota_throttles_and_is_labelled_emulated(heavy_bundle, cpu_cgroup):
    version, root = cpu_cgroup
    before = set(root.glob("edgebench-*"))
    spec = RunSpec(runs=500, warmup=5, eval=False)
    free = LocalDevice(LocalConfig(cores=(0,))).run(heavy_bundle, spec)
    slow = LocalDevice(LocalConfig(cores=(0,), cpu_quota=0.2)).run(heavy_bundle, spec)
    assert free.ok and slow.ok, (free.error, slow.error)
    assert free.provenance is Provenance.MEASURED and slow.provenance is Provenance.EMULATED
    # A fifth of a core: the measured loop takes about 5x the CPU time it needs in wall time. Compared
    # with the unthrottled median x n, which other load on this shared machine can only raise.
    free_median = sorted(free.samples_ns)[len(free.samples_ns) // 2]
    assert sum(slow.samples_ns) > 3 * free_median * len(free.samples_ns)
    assert slow.device_facts["cpu_quota_cores"] == 0.2 and slow.device_facts["cgroup"] == f"v{version}"
    assert set(root.glob("edgebench-*")) == before  # the temporary group is removed


def test_the_quota_group_throttles_in_10_ms_periods_longer_only_below_the_kernels_1_ms(cpu_cgroup):
    from edgebench.devices.throttle import CpuQuota

    version, _ = cpu_cgroup
    for cores, want in ((0.9, (9000, 10000)), (0.05, (1000, 20000))):
        with CpuQuota(cores) as q:
            if version == 2:
                got = tuple(int(v) for v in (q.path / "cpu.max").read_text().split())
            else:
                got = tuple(int((q.path / f).read_text()) for f in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
        assert got == want
    with pytest.raises(EdgebenchError, match="cpu_quota must be at least 0.001 cores"):
        CpuQuota(0.0005)


def test_cpu_quota_without_permission_is_one_clear_error(heavy_bundle, monkeypatch):
    from edgebench.devices import throttle

    monkeypatch.setattr(throttle, "_mounts", lambda: iter([]))
    with pytest.raises(EdgebenchError, match="cannot set a CPU quota"):
        LocalDevice(LocalConfig(cpu_quota=0.5)).run(heavy_bundle, RunSpec(runs=1, warmup=0, eval=False))
