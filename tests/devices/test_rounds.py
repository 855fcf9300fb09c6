"""Rounds on demand (side-by-side compare): one runner process per model on a local device, a fresh runner per
round elsewhere; the same contract."""
import io
import json
from pathlib import Path

import paramiko
import pytest

from edgebench.deploy.bundle import make_bundle
from edgebench.deploy.runner import ROUND_READY, ROUND_TAG, serve_rounds
from edgebench.devices.local import LocalConfig, LocalDevice
from edgebench.devices.rounds import FreshRunnerRounds, open_rounds
from edgebench.types import EdgebenchError, RunSpec

SPEC = RunSpec(runs=3, warmup=1, eval=False, timeout_s=120)


def test_serve_rounds_times_what_each_line_asks_and_stops_at_an_empty_line():
    calls = []
    stdout = io.StringIO()
    samples, sizes = serve_rounds(lambda: calls.append(1), stdin=io.StringIO("3 1\n2 0\n\n5 5\n"), stdout=stdout)
    assert sizes == [3, 2] and len(samples) == 5 and all(s >= 0 for s in samples)
    assert len(calls) == 3 + 1 + 2  # measured and warm-up inferences; nothing after the empty line
    lines = stdout.getvalue().split("\n")
    assert ROUND_READY in lines
    answers = [json.loads(x[len(ROUND_TAG):]) for x in lines if x.startswith(ROUND_TAG)]
    assert [len(a) for a in answers] == [3, 2] and answers[0] + answers[1] == samples


@pytest.fixture()
def bundle(onnx_artifact, tmp_path):
    return make_bundle(onnx_artifact, tmp_path / "b")


def test_a_local_device_keeps_one_process_for_all_rounds(bundle):
    session = open_rounds(LocalDevice(LocalConfig(cores=(0,))), bundle, SPEC)
    try:
        pid = session.proc.pid
        got = [session.round(4, 1), session.round(2, 0), session.round(3, 2)]
        assert session.proc.pid == pid and session.proc.poll() is None  # still the same, still alive
        m = session.finish()
    finally:
        session.close()
    assert [len(r) for r in got] == [4, 2, 3]
    assert m.ok and m.samples_ns == [s for r in got for s in r]
    assert m.runtime == "onnxruntime" and m.device_facts["pinned_cores"] == [0]


def test_a_throttled_local_session_joins_its_quota_group_and_removes_it(bundle, cpu_cgroup):
    _, root = cpu_cgroup
    before = set(root.glob("edgebench-*"))
    session = open_rounds(LocalDevice(LocalConfig(cores=(0,), cpu_quota=0.5)), bundle, SPEC)
    try:
        groups = set(root.glob("edgebench-*")) - before
        assert len(groups) == 1
        assert str(session.proc.pid) in (groups.pop() / "cgroup.procs").read_text().split()
        session.round(2, 0)
        m = session.finish()
    finally:
        session.close()
    assert m.ok and m.device_facts["cpu_quota_cores"] == 0.5
    assert set(root.glob("edgebench-*")) == before


def test_a_model_the_runtime_rejects_is_one_clear_error_not_a_hang(bundle):
    (bundle.path / bundle.manifest["model_file"]).write_bytes(b"not an onnx file")
    with pytest.raises(EdgebenchError, match="runner error"):
        open_rounds(LocalDevice(LocalConfig()), bundle, SPEC)


def test_other_devices_run_a_fresh_runner_per_round_under_the_same_contract(bundle):
    class NoSessions:  # a device without open_rounds (ssh, emulated, adb)
        def __init__(self):
            self.local = LocalDevice(LocalConfig())
            self.runs = 0

        def run(self, b, spec):
            self.runs += 1
            return self.local.run(b, spec)

    device = NoSessions()
    session = open_rounds(device, bundle, SPEC)
    assert isinstance(session, FreshRunnerRounds)
    got = [session.round(2, 0), session.round(3, 1)]
    m = session.finish()
    assert device.runs == 2 and [len(r) for r in got] == [2, 3] and m.samples_ns == got[0] + got[1]


def test_an_ssh_board_keeps_one_remote_runner_for_all_rounds_and_cleans_up(ssh_config, digits_bundle,
                                                                            remote_workdir):
    from edgebench.devices.ssh import SSHDevice

    device = SSHDevice(ssh_config())
    session = open_rounds(device, digits_bundle, SPEC)
    try:
        pid = session.proc.pid
        assert pid and (Path("/proc") / str(pid)).exists()  # the board is this machine, behind sshd
        got = [session.round(3, 1), session.round(2, 0)]
        assert (Path("/proc") / str(pid)).exists() and "runner.py" in (Path("/proc") / str(pid) / "cmdline").read_text()
        assert len(list(remote_workdir.iterdir())) == 1  # the bundle, uploaded once
        m = session.finish()
    finally:
        session.close()
    assert m.ok and [len(r) for r in got] == [3, 2] and m.samples_ns == got[0] + got[1]
    assert list(remote_workdir.iterdir()) == []


def test_a_link_dropped_mid_session_is_one_clear_error(private_sshd, digits_bundle, remote_workdir):
    from edgebench.devices.ssh import SSHDevice

    device = SSHDevice(private_sshd.config(workdir=str(remote_workdir)))
    session = open_rounds(device, digits_bundle, SPEC)
    try:
        session.round(2, 0)
        private_sshd.kill_all()
        with pytest.raises(EdgebenchError, match="runner"):
            session.round(2, 0)
    finally:
        session.close()



@pytest.mark.parametrize("error", [EOFError(), OSError("Socket is closed"), paramiko.SSHException("closed")])
def test_a_write_on_a_dropped_ssh_link_reads_as_a_broken_pipe(error):
    """paramiko raises EOFError from a write when the socket died before the transport noticed (a race the
    test above only sometimes hits); rounds.py handles a broken pipe by reading why the runner ended."""
    from edgebench.devices.ssh_rounds import _ChannelStdin

    class Dead:
        def write(self, data):
            raise error

        def flush(self):
            raise error

        close = flush

    stdin = _ChannelStdin(Dead())
    for op in (lambda: stdin.write("2 0\n"), stdin.flush, stdin.close):
        with pytest.raises(BrokenPipeError, match="SSH link dropped"):
            op()
