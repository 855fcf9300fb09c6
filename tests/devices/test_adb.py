"""The adb device: benchmark_model output parsing, the adapter contract, and the adb server's lifetime.

No phone and no Android emulator can exist on the machines these tests run on. So:
- the parser is tested on text in exactly the format TensorFlow's benchmark_model prints (tests/devices/data/);
- the adapter contract (push to a fresh folder, run, parse, remove the folder) is tested through a fake
  transport whose "phone" is this computer's shell, with the real runner and real onnxruntime, and a
  stand-in benchmark_model script that prints the recorded output;
- the real adbutils transport is tested only for what needs no phone: a clear "no device" failure, and
  that an adb server it had to start is stopped again.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgebench.deploy.bundle import Bundle
from edgebench.devices.adb import ADBConfig, ADBDevice
from edgebench.devices.benchmark_model import parse_benchmark_model_output
from edgebench.devices.local import LocalDevice
from edgebench.types import EdgebenchError, Provenance, RunSpec

DATA = Path(__file__).parent / "data"
SPEC = RunSpec(runs=20, warmup=2, threads=2)


# ---------------------------------------------------------------- parser
# The recorded files follow TensorFlow's tensorflow/lite/tools/benchmark/benchmark_model.cc
# (BenchmarkModel::Run and BenchmarkLoggingListener::OnBenchmarkEnd) and Stat::OutputToStream in
# tensorflow/core/util/stats_calculator.h; benchmark_model_older.txt is the older layout shown in
# tensorflow/lite/tools/benchmark/README.md ("Average inference timings in us: Warmup: ..., Init: ...").
def test_parser_reads_current_benchmark_model_output():
    text = (DATA / "benchmark_model_current.txt").read_text()

    out = parse_benchmark_model_output(text)

    assert out["warmup"] == {"count": 10, "first": 212, "curr": 41, "min": 39, "max": 212, "avg": 58.6,
                             "std": 51, "p5": 39, "median": 41, "p95": 212}
    assert out["inference"] == {"count": 100, "first": 40, "curr": 38, "min": 36, "max": 97, "avg": 39.84,
                                "std": 6, "p5": 37, "median": 39, "p95": 45}
    assert (out["init_us"], out["first_inference_us"], out["warmup_avg_us"], out["inference_avg_us"]) == \
        (3412, 212, 58.6, 39.84)
    assert (out["memory_init_delta_mb"], out["memory_overall_delta_mb"]) == (2.70312, 3.01562)
    assert out["peak_memory_mb"] == 11.4219
    assert out["vm_rss_end_mb"] == 12.0
    assert out["init_session_ms"] == 3.412 and out["model_size_mb"] == 0.041872


def test_parser_reads_older_layout_and_ignores_profile_tables():
    text = (DATA / "benchmark_model_older.txt").read_text()

    out = parse_benchmark_model_output(text)

    # the op-profile summary's "Timings (microseconds): count=50 ..." is not the inference stat
    assert out["inference"] == {"count": 50, "first": 1490, "curr": 1502, "min": 1471, "max": 1633,
                                "avg": 1507.5, "std": 28}
    # "count=3 curr=1500(all same)": every warm-up run took 1500 us, so the rest follows exactly
    assert out["warmup"]["all_same"] is True and out["warmup"]["min"] == out["warmup"]["max"] == 1500
    assert (out["init_us"], out["warmup_avg_us"], out["inference_avg_us"]) == (1870, 1500, 1507.5)
    assert "first_inference_us" not in out  # that layout does not print it: absent, not invented
    assert (out["memory_init_delta_mb"], out["memory_overall_delta_mb"]) == (1.28516, 2.0625)


def test_parser_on_failed_run_finds_nothing():
    assert parse_benchmark_model_output((DATA / "benchmark_model_error.txt").read_text()) == {}


# ---------------------------------------------------------------- adapter contract (fake transport)
class ShellTransport:
    """A stand-in for adb where no phone can exist: the 'phone' is this computer's /bin/sh."""

    def __init__(self):
        self.commands: list[str] = []
        self.pushed: list[str] = []
        self.closed = False

    def shell(self, command, timeout_s):
        self.commands.append(command)
        p = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout_s)
        return p.returncode, p.stdout, p.stderr

    def push(self, local, remote):
        self.pushed.append(remote)
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, remote)

    def close(self):
        self.closed = True


@pytest.fixture
def phone_dir(tmp_path) -> Path:
    d = tmp_path / "data-local-tmp"
    d.mkdir()
    return d


def test_runner_path_on_a_phone_with_python(digits_bundle, phone_dir):
    t = ShellTransport()
    device = ADBDevice(ADBConfig(name="phone", python=sys.executable, workdir=str(phone_dir)), transport=t)

    m = device.run(digits_bundle, SPEC)
    local = LocalDevice().run(digits_bundle, SPEC)

    assert m.ok, m.error
    assert m.provenance is Provenance.MEASURED
    assert len(m.samples_ns) >= SPEC.runs and m.runtime == "onnxruntime"
    assert m.accuracy == local.accuracy and m.n_eval == 450  # computed on the host from the predictions
    assert {Path(p).name for p in t.pushed} >= {"runner.py", "manifest.json", "eval.npz", "model.onnx"}
    assert list(phone_dir.iterdir()) == []  # the temp folder is removed
    assert t.closed is False  # a transport handed in is the caller's to close


@pytest.fixture
def tflite_bundle(digits_bundle, tmp_path) -> Bundle:
    """A bundle that says it holds a .tflite file (the stand-in benchmark_model never reads it)."""
    folder = tmp_path / "tflite bundle"
    shutil.copytree(digits_bundle.path, folder)
    (folder / "model.onnx").rename(folder / "model.tflite")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(model_file="model.tflite", format="tflite")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return Bundle.load(folder)


def fake_benchmark_model(tmp_path: Path, recorded: str, code: int = 0) -> tuple[Path, Path]:
    """A script standing in for benchmark_model: logs its argv, checks --graph exists, prints `recorded`."""
    argv_log = tmp_path / "argv.json"
    script = tmp_path / "benchmark_model"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"json.dump(sys.argv[1:], open({str(argv_log)!r}, 'w'))\n"
        "graph = [a for a in sys.argv if a.startswith('--graph=')][0][len('--graph='):]\n"
        "assert os.path.isfile(graph), graph\n"
        f"sys.stdout.write(open({str(DATA / recorded)!r}).read())\n"
        f"sys.exit({code})\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, argv_log


def test_benchmark_model_path_keeps_absent_figures_absent(tflite_bundle, phone_dir, tmp_path):
    binary, argv_log = fake_benchmark_model(tmp_path, "benchmark_model_current.txt")
    device = ADBDevice(ADBConfig(name="phone", benchmark_binary=str(binary), workdir=str(phone_dir)),
                       transport=ShellTransport())

    m = device.run(tflite_bundle, SPEC)

    assert m.ok, m.error
    assert m.provenance is Provenance.MEASURED
    argv = json.loads(argv_log.read_text())
    assert argv[0].startswith("--graph=") and argv[0].endswith("/bundle/model.tflite")
    assert argv[1:4] == ["--num_threads=2", "--warmup_runs=2", "--num_runs=20"]
    assert m.samples_ns == [] and m.accuracy is None and m.predictions is None and m.peak_rss_mb is None
    assert set(m.extra["absent"]) >= {"samples_ns", "percentiles", "accuracy"}
    assert m.extra["benchmark_model"]["inference"]["avg"] == 39.84
    assert m.load_ms == pytest.approx(3.412) and m.first_inference_ms == pytest.approx(0.212)
    assert m.threads == 2
    assert list(phone_dir.iterdir()) == []


def test_benchmark_model_failure_is_a_failed_measurement(tflite_bundle, phone_dir, tmp_path):
    binary, _ = fake_benchmark_model(tmp_path, "benchmark_model_error.txt", code=1)
    device = ADBDevice(ADBConfig(name="phone", benchmark_binary=str(binary), workdir=str(phone_dir)),
                       transport=ShellTransport())

    m = device.run(tflite_bundle, SPEC)

    assert not m.ok
    assert "code 1" in m.error and "Could not open" in m.error
    assert list(phone_dir.iterdir()) == []


def test_onnx_bundle_without_python_is_refused_clearly(digits_bundle, phone_dir, tmp_path):
    binary, _ = fake_benchmark_model(tmp_path, "benchmark_model_current.txt")
    device = ADBDevice(ADBConfig(name="phone", benchmark_binary=str(binary), workdir=str(phone_dir)),
                       transport=ShellTransport())

    m = device.run(digits_bundle, SPEC)

    assert not m.ok and "only .tflite" in m.error
    with pytest.raises(EdgebenchError, match="set python"):
        ADBDevice(ADBConfig(name="phone"), transport=ShellTransport()).run(digits_bundle, SPEC)


def test_hostile_model_file_name_is_quoted(tflite_bundle, phone_dir, tmp_path):
    # The model file name goes into `--graph=...` on the phone's shell. If it were not quoted, the
    # shell would create `canary` ('/' cannot be in a file name: printf builds it from '\057').
    canary = tmp_path / "canary"
    enc = str(canary).replace("/", "\\057")
    hostile = f"it's a \"model\"; $(touch \"$(printf '{enc}')\") #.tflite"
    (tflite_bundle.path / "model.tflite").rename(tflite_bundle.path / hostile)
    manifest = dict(tflite_bundle.manifest, model_file=hostile)
    (tflite_bundle.path / "manifest.json").write_text(json.dumps(manifest))
    binary, argv_log = fake_benchmark_model(tmp_path, "benchmark_model_current.txt")
    device = ADBDevice(ADBConfig(name="phone", benchmark_binary=str(binary), workdir=str(phone_dir)),
                       transport=ShellTransport())

    m = device.run(Bundle.load(tflite_bundle.path), SPEC)

    assert not canary.exists(), "the phone's shell executed part of a file name"
    assert m.ok, m.error
    assert json.loads(argv_log.read_text())[0].endswith("/bundle/" + hostile)  # one argument, intact


# ---------------------------------------------------------------- the real adbutils transport
def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def adb_port(closed_port):
    """A private adb server port; whatever server ends up there is stopped afterwards (adb kill-server)."""
    pytest.importorskip("adbutils")
    yield closed_port
    import adbutils

    subprocess.run([adbutils.adb_path(), "-P", str(closed_port), "kill-server"], capture_output=True, timeout=30)
    assert not _listening(closed_port)


def test_no_phone_fails_clearly_and_stops_the_server_it_started(adb_port, digits_bundle):
    device = ADBDevice(ADBConfig(name="phone", python="/data/data/com.termux/files/usr/bin/python",
                                 server_port=adb_port))
    assert not _listening(adb_port)

    report = device.doctor()
    m = device.run(digits_bundle, SPEC)

    assert report["ok"] is False
    assert "no Android device connected" in report["checks"][0][2]
    assert not m.ok and "no Android device connected" in m.error
    assert not _listening(adb_port)  # the adb server this device started is gone again


def test_adbutils_is_imported_only_by_the_adb_device():
    code = ("import sys, edgebench.devices.registry, edgebench.devices.adb; "
            "print('adbutils' in sys.modules, 'paramiko' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"}).stdout.split()
    assert out == ["False", "False"]
