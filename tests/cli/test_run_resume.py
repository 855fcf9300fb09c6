"""`edgebench run` killed mid-sweep and run again: nothing finished is repeated or lost."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

CONFIG = """
name = "resume_demo"
out_dir = "{out}"
store = "{store}"

[[models]]
name = "tiny_cnn"
kind = "cnn"
dataset = "digits"
model = {{ width = 4 }}
train = {{ epochs = 1 }}

[export]
formats = ["onnx"]
precisions = ["fp32", "int8-dynamic"]

[bench]
devices = ["local", "core0", "core1"]
devices_file = "{devices}"
runs = 20
warmup = 2
min_time_s = 1.0
"""


def ok_records(store):
    con = sqlite3.connect(store)
    try:
        return con.execute("SELECT record_id, measure_key, run_id FROM records WHERE status='ok'").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def test_killed_run_resumes_without_repeating_or_losing_measurements(tmp_path):
    devices = tmp_path / "devices.toml"
    devices.write_text('[devices.core0]\nkind = "local"\ncores = [0]\n[devices.core1]\nkind = "local"\ncores = [1]\n')
    store = tmp_path / "store.sqlite"
    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG.format(out=tmp_path / "out", store=store, devices=devices))
    cmd = [sys.executable, "-m", "edgebench.cli", "run", str(cfg), "--quiet"]
    # a killed run cannot remove its temporary folders: they go under tmp_path, not the machine's /tmp
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}

    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and len(ok_records(store)) < 2:
        assert first.poll() is None, first.communicate()
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the whole process group, runner included
    first.wait()
    before = ok_records(store)
    assert 2 <= len(before) < 6, "the kill must land mid-sweep"

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stderr
    assert "resuming" in second.stdout
    after = ok_records(store)
    keys = [k for _, k, _ in after]
    assert len(after) == 6 and len(set(keys)) == 6  # every measurement exactly once
    assert {r[0] for r in before} <= {r[0] for r in after}  # the finished ones are kept, not redone
    assert len({run for _, _, run in after}) == 1  # one run, resumed
    assert (tmp_path / "out" / "report" / "report.html").exists()

    # a finished run is not resumed: the next one starts a new run id (its first line says which; the rest of
    # that run is the first run's work again, so it is stopped there)
    third = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                             env={**env, "PYTHONUNBUFFERED": "1"})
    try:
        first_line = third.stdout.readline()
    finally:
        os.killpg(third.pid, signal.SIGKILL)
        third.wait()
    run_id = after[0][2]
    assert first_line.startswith("run ") and "resuming" not in first_line, first_line + third.stderr.read()
    assert run_id not in first_line
