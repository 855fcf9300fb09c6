"""`edgebench run --ray`: a local Ray instance, each device a resource of capacity one. Real Ray, real local
devices pinned to different cores, real store; the driver killed with SIGKILL resumes with nothing lost."""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.cli.test_run_resume import CONFIG, ok_records

pytest.importorskip("ray")


def kill_session(sid: int) -> None:
    """SIGKILL every process of a session: Ray's workers run in process groups of their own, so killing the
    driver's group leaves them; `ray stop --force` would also stop every other Ray instance of the user's."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            session = int(stat.read_text().rsplit(")", 1)[1].split()[3])  # after "(comm)": state ppid pgrp session
            if session == sid:
                os.kill(int(stat.parent.name), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile


def _setup(tmp_path, min_time="1.0"):
    devices = tmp_path / "devices.toml"
    devices.write_text('[devices.core0]\nkind = "local"\ncores = [0]\npower_active_w = 3.5\n'
                       'power_profile = "test profile"\n[devices.core1]\nkind = "local"\ncores = [1]\n')
    store = tmp_path / "store.sqlite"
    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG.format(out=tmp_path / "out", store=store, devices=devices).replace(
        "min_time_s = 1.0", f"min_time_s = {min_time}"))
    return cfg, store


def test_ray_sweep_never_shares_a_device_and_overlaps_different_ones(tmp_path):
    cfg, store = _setup(tmp_path, min_time="0.3")
    p = subprocess.run([sys.executable, "-m", "edgebench.cli", "run", str(cfg), "--ray", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "ray: local instance in" in p.stderr
    con = sqlite3.connect(store)
    docs = [json.loads(d) for (d,) in con.execute("SELECT data FROM records WHERE status='ok'")]
    con.close()
    assert len(docs) == 6  # 2 artifacts x 3 devices, each once
    spans = {}
    for d in docs:
        farm = d["extra"]["farm"]
        assert farm["engine"] == "ray" and farm["ended_s"] > farm["started_s"]
        spans.setdefault(d["device"], []).append((farm["started_s"], farm["ended_s"]))
    for device, s in spans.items():  # capacity one: a device's jobs never overlap
        s.sort()
        assert all(a[1] <= b[0] for a, b in zip(s, s[1:])), device
    every = sorted(x for s in spans.values() for x in s)
    assert any(a[1] > b[0] for a, b in zip(every, every[1:])), "different devices should run at once"
    energy = [d["extra"] for d in docs if d["device"] == "core0"]
    assert all(e["energy_provenance"] == "estimated" and "test profile" in e["energy_source"] for e in energy)
    assert all("energy_mj_per_inference" not in d["extra"] for d in docs if d["device"] != "core0")
    # no counter here and no profile: the record says why it has no energy (this machine has no RAPL)
    assert all("no energy counter" in d["extra"]["energy_unavailable"] for d in docs if d["device"] == "core1")


def test_killed_ray_driver_resumes_without_repeating_or_losing(tmp_path):
    cfg, store = _setup(tmp_path, min_time="1.0")
    cmd = [sys.executable, "-m", "edgebench.cli", "run", str(cfg), "--quiet", "--ray"]
    # the killed workers cannot remove their temporary folders: a short folder of this test's own (Ray's sockets
    # live under it too, and a socket path has at most 107 characters), removed at the end
    tmp = tempfile.mkdtemp(prefix="ebt-")
    env = {**os.environ, "TMPDIR": tmp}
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and len(ok_records(store)) < 1:
        assert first.poll() is None, first.communicate()
        time.sleep(0.2)
    kill_session(first.pid)  # the driver and the Ray instance it started, nobody else's Ray
    first.wait()
    before = ok_records(store)
    assert 1 <= len(before) < 6, "the kill must land mid-sweep"
    try:
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming" in second.stdout
    after = ok_records(store)
    keys = [k for _, k, _ in after]
    assert len(after) == 6 and len(set(keys)) == 6  # every measurement exactly once
    assert {r[0] for r in before} <= {r[0] for r in after}
