"""The SSH device against a real sshd on loopback, the real runner and real onnxruntime. No mocks.

The "board" is this computer reached over SSH, so what the remote side did (temp folders, canary
files) can be checked directly on the file system.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from edgebench.deploy.bundle import Bundle
from edgebench.devices.local import LocalDevice
from edgebench.devices.ssh import HostKeyError, SSHDevice
from edgebench.types import Provenance, RunSpec

SPEC = RunSpec(runs=30, warmup=3, threads=1)


def test_bench_over_ssh_matches_local_and_cleans_up(ssh_config, digits_bundle, remote_workdir):
    device = SSHDevice(ssh_config())

    m = device.run(digits_bundle, SPEC)
    local = LocalDevice().run(digits_bundle, SPEC)

    assert m.ok, m.error
    assert m.provenance is Provenance.MEASURED
    assert m.runtime == "onnxruntime"
    assert len(m.samples_ns) >= SPEC.runs
    assert m.n_eval == 450
    assert m.accuracy is not None and m.accuracy == local.accuracy  # same file, same data, same runtime
    assert m.predictions == local.predictions
    assert list(remote_workdir.iterdir()) == []  # the remote temp folder is gone


def test_facts_and_doctor_come_from_the_board(ssh_config):
    import numpy
    import onnxruntime
    import os
    import platform

    device = SSHDevice(ssh_config())

    report = device.doctor()

    assert report["ok"], report["checks"]
    facts = report["facts"]
    assert facts["python"] == platform.python_version()
    assert facts["numpy"] == numpy.__version__
    assert facts["onnxruntime"] == onnxruntime.__version__
    assert facts["cores"] == os.cpu_count()
    assert facts["mem_total_mb"] > 0
    assert dict((c[0], c[1]) for c in report["checks"])["reachable"] is True


def test_unknown_host_key_is_refused_with_fingerprint(ssh_config, sshd, tmp_path, digits_bundle, remote_workdir):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    device = SSHDevice(ssh_config(known_hosts=str(empty)))
    expected_fp = subprocess.run(["ssh-keygen", "-lf", f"{sshd.host_key}.pub"], capture_output=True,
                                 text=True, check=True).stdout.split()[1]

    with pytest.raises(HostKeyError) as err:
        device.run(digits_bundle, SPEC)

    msg = str(err.value)
    assert "127.0.0.1" in msg and str(sshd.port) in msg
    assert expected_fp in msg  # the same fingerprint ssh-keygen -lf prints
    assert "trust_unknown_host" in msg and "ssh-keyscan" in msg
    assert empty.read_text() == ""  # nothing was added
    assert list(remote_workdir.iterdir()) == []  # and nothing ran


def test_changed_host_key_is_refused(ssh_config, tmp_path, digits_bundle):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kt, b64 = (tmp_path / "other_key.pub").read_text().split()[:2]
    config = ssh_config()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{config.port} {kt} {b64}\n")

    with pytest.raises(HostKeyError, match="CHANGED"):
        SSHDevice(ssh_config(known_hosts=str(wrong))).run(digits_bundle, SPEC)


def test_trust_unknown_host_adds_key_and_says_so(ssh_config, tmp_path, digits_bundle):
    known = tmp_path / "known_hosts"
    device = SSHDevice(ssh_config(known_hosts=str(known), trust_unknown_host=True))

    m = device.run(digits_bundle, SPEC)

    assert m.ok, m.error
    assert any("trusted unknown host key" in n for n in m.extra["notes"])
    assert known.read_text().startswith(f"[127.0.0.1]:{device.config.port} ssh-ed25519 ")
    # the next device with the default (refusing) policy now accepts that file
    assert SSHDevice(ssh_config(known_hosts=str(known))).run(digits_bundle, SPEC).ok


def test_hostile_names_are_quoted(ssh_config, digits_bundle, tmp_path, remote_workdir):
    # A name a shell would execute if any remote path reached it unquoted: it would create `created`
    # and delete `kept`. '/' cannot appear in a file name, so printf builds the absolute paths ('\057').
    canary_dir = Path(tempfile.mkdtemp(prefix="eb"))
    created, kept = canary_dir / "created", canary_dir / "kept"
    kept.write_text("still here")
    enc = lambda p: str(p).replace("/", "\\057")  # noqa: E731
    hostile = (f"it's a \"model\"; $(touch \"$(printf '{enc(created)}')\"); "
               f"`rm -f \"$(printf '{enc(kept)}')\"` x")
    folder = tmp_path / hostile
    shutil.copytree(digits_bundle.path, folder)
    model_name = f"{hostile[:60]}.onnx"
    (folder / "model.onnx").rename(folder / model_name)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["model_file"] = model_name
    (folder / "manifest.json").write_text(json.dumps(manifest))
    bundle = Bundle.load(folder)

    try:
        m = SSHDevice(ssh_config(name=hostile)).run(bundle, SPEC)

        assert not created.exists(), "a remote shell executed part of a name"
        assert kept.read_text() == "still here"
        assert m.ok, m.error
        assert m.n_eval == 450
        assert list(remote_workdir.iterdir()) == []
    finally:
        shutil.rmtree(canary_dir)


def test_sshd_killed_mid_run_gives_failed_measurement(private_sshd, digits_bundle, remote_workdir):
    device = SSHDevice(private_sshd.config(workdir=str(remote_workdir), retries=2, backoff_s=0.1))
    spec = RunSpec(runs=10, warmup=1, min_time_s=60.0)  # long enough to be killed mid-run
    result = {}
    worker = threading.Thread(target=lambda: result.update(m=device.run(digits_bundle, spec)))

    worker.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until the runner is up on the "board"
        if any("runner.py" in _cmdline(p) for p in private_sshd.session_pids()):
            break
        time.sleep(0.05)
    else:
        pytest.fail("runner never started under sshd")
    time.sleep(0.5)
    t_kill = time.monotonic()
    private_sshd.kill_all()
    worker.join(timeout=60)

    assert not worker.is_alive()
    m = result["m"]
    assert not m.ok
    assert "dropped" in m.error and "3 attempt(s)" in m.error and "connection refused" in m.error
    assert time.monotonic() - t_kill < 20  # gave up after the retries, not after the 60 s run
    # the folder could not be removed through a dead link: reported, not hidden
    assert m.extra["remote_leftovers"] and all(Path(p).parent == remote_workdir for p in m.extra["remote_leftovers"])


def test_closed_port_fails_after_retries(sshd, closed_port, digits_bundle, remote_workdir):
    device = SSHDevice(sshd.config(port=closed_port, workdir=str(remote_workdir), retries=2, backoff_s=0.1))

    t0 = time.monotonic()
    m = device.run(digits_bundle, SPEC)
    elapsed = time.monotonic() - t0

    assert not m.ok
    assert "connection refused" in m.error and "3 attempt(s)" in m.error
    assert elapsed >= 0.3  # backoff 0.1 + 0.2 s: it did wait between attempts
    assert device.doctor()["ok"] is False


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
def test_ssh_to_an_emulated_aarch64_board(ssh_config, aarch64_python, digits_bundle, remote_workdir):
    """The whole SSH path with an ARM 'board': the remote python is qemu-aarch64 running Debian arm64's."""
    device = SSHDevice(ssh_config(python=str(aarch64_python), run_timeout_s=900.0, emulated=True))
    spec = RunSpec(runs=5, warmup=1, threads=1)

    facts = device.facts()
    m = device.run(digits_bundle, spec)
    local = LocalDevice().run(digits_bundle, spec)

    assert facts["machine"] == "aarch64"
    assert facts["onnxruntime"] and facts["ai_edge_litert"]  # the guest's own aarch64 wheels
    assert m.ok, m.error
    assert m.device_facts["machine"] == "aarch64"
    assert m.runtime == "onnxruntime"
    assert m.accuracy == local.accuracy  # the aarch64 build of onnxruntime predicts what the x86 one does
    assert m.provenance is Provenance.EMULATED  # a board behind qemu never reports 'measured' latency
    assert list(remote_workdir.iterdir()) == []
