"""The emulated aarch64 device against a real arm64 root under qemu-aarch64.

The root is built once per machine (about 1-1.5 min with its bytecode, cached in ~/.cache/edgebench); each
emulated run of the digits CNN takes about 5-7 s, most of it the guest starting numpy and the runtime under TCG.
"""
from __future__ import annotations

import dataclasses
import re
import shutil

import pytest

from edgebench.deploy.bundle import Bundle, make_bundle
from edgebench.devices import aarch64_root
from edgebench.devices.emulated import EmulatedConfig, EmulatedDevice, calibrate_ipc, estimate_latency_ms
from edgebench.devices.insn_plugin import instructions_from_counts
from edgebench.devices.local import LocalDevice
from edgebench.devices.registry import get_device
from edgebench.types import EdgebenchError, Provenance, RunSpec

NEEDS = {"qemu-aarch64": "qemu-user", "debootstrap": "debootstrap", "dpkg-deb": "dpkg", "gcc": "gcc"}
SPEC = RunSpec(runs=8, warmup=2, threads=1)


@pytest.fixture(scope="session")
def emulated():
    """The pi4-emulated device with its root and plugin ready (built on first use, then cached)."""
    missing = [f"{tool} ({pkg})" for tool, pkg in NEEDS.items() if shutil.which(tool) is None
               and shutil.which(tool, path="/usr/sbin:/sbin") is None]
    if missing:
        pytest.skip(f"emulated device needs Debian packages: {', '.join(missing)}")
    device = get_device("pi4-emulated")
    device.setup()
    return device


@pytest.fixture(scope="session")
def onnx_bundle(onnx_artifact, trained_cnn, tmp_path_factory):
    ds = trained_cnn.dataset
    return make_bundle(onnx_artifact, tmp_path_factory.mktemp("emu") / "onnx", ds.x_test, ds.y_test)


@pytest.fixture(scope="session")
def tflite_bundle(onnx_artifact, trained_cnn, tmp_path_factory):
    litert_torch = pytest.importorskip("litert_torch")

    folder = tmp_path_factory.mktemp("emu-tflite")
    path = folder / "digits_cnn.tflite"
    litert_torch.convert(trained_cnn.module.eval(), (trained_cnn.example_input(1),)).export(str(path))
    from edgebench.export.tflite_model import describe_tflite

    artifact = describe_tflite(path, name="digits_cnn-tflite-fp32", model_name="digits_cnn",
                               labels=onnx_artifact.labels)
    ds = trained_cnn.dataset
    return make_bundle(artifact, folder / "bundle", ds.x_test, ds.y_test)


@pytest.fixture(scope="session")
def onnx_on_arm(emulated, onnx_bundle):
    return emulated.run(onnx_bundle, SPEC)


def _assert_arm_measurement(m, bundle, runtime, guest_versions):
    assert m.ok, m.error
    assert m.device_facts["machine"] == "aarch64"
    assert m.device_facts["emulated_cpu"] == "cortex-a72"
    assert m.runtime == runtime
    assert m.runtime_version == guest_versions[runtime]  # the guest's wheel, not the host's package
    # emulated wall time is never a device latency
    assert m.provenance is Provenance.EMULATED and m.provenance is not Provenance.MEASURED
    assert m.extra["wall_time_provenance"] == "emulated"
    assert len(m.samples_ns) == SPEC.runs
    host = LocalDevice().run(bundle, RunSpec(runs=3, warmup=0))
    assert host.ok, host.error
    assert m.n_eval == host.n_eval == 450
    assert abs(m.accuracy - host.accuracy) <= 2 / 450  # ARM float kernels may flip a borderline argmax
    ipi = m.extra["instructions_per_inference"]
    assert 10_000 < ipi < 50_000_000
    assert m.extra["instructions_regions"] == SPEC.runs
    # the runner's Python harness (thousands of instructions) is counted apart from the runtime's work
    assert 0 < ipi - m.extra["instructions_outside_interpreter"] < 100_000
    assert m.extra["estimated_provenance"] == "estimated"
    if m.extra["estimate_calibrated"]:  # the shipped calibration (devices/calibration.py) fits this runtime
        from edgebench.devices.calibration import load_calibration

        cal = load_calibration(m.extra["estimate_calibration"]["file"])
        assert cal.runtime == runtime
        assert m.extra["estimated_latency_ms"] == pytest.approx(cal.estimate_ms(m.extra["instructions_by_class"]))
        assert m.extra["estimate_band"] == cal.band > 0
    else:  # no calibration for this runtime: the plain ipc estimate, without a band
        assert m.extra["estimated_latency_ms"] == pytest.approx(ipi / (1.0 * 1.5e9) * 1e3)
        assert m.extra["estimate_band"] is None


@pytest.mark.slow
def test_onnx_bundle_runs_on_aarch64_with_host_accuracy(emulated, onnx_on_arm, onnx_bundle):
    versions = aarch64_root.read_marker(aarch64_root.DEFAULT_ROOT)["versions"]
    _assert_arm_measurement(onnx_on_arm, onnx_bundle, "onnxruntime", versions)


@pytest.mark.slow
def test_tflite_bundle_runs_on_aarch64_with_host_accuracy(emulated, tflite_bundle):
    m = emulated.run(tflite_bundle, SPEC)
    versions = aarch64_root.read_marker(aarch64_root.DEFAULT_ROOT)["versions"]
    _assert_arm_measurement(m, tflite_bundle, "ai_edge_litert", versions)


@pytest.mark.slow
def test_instruction_counts_repeat_within_one_percent(emulated, onnx_on_arm, onnx_bundle):
    again = emulated.run(onnx_bundle, dataclasses.replace(SPEC, eval=False))
    assert again.ok, again.error
    first, second = onnx_on_arm.extra["instructions_per_inference"], again.extra["instructions_per_inference"]
    assert abs(first - second) / first < 0.01, (first, second)
    assert again.extra["instructions_spread"] < 0.05  # inference to inference, within one run


@pytest.mark.slow
def test_code_attribution_locates_every_counted_instruction_in_a_library(emulated, tflite_bundle, tmp_path):
    """blocks=PATH: the blocks' instructions inside the marked regions add up to the counted inferences (plus
    the markers-only region), and nearly all of them run in ai-edge-litert's library, in XNNPACK kernels."""
    from edgebench.devices.attribution import attribute_blocks

    device = EmulatedDevice(emulated.config)
    device.blocks_out = tmp_path / "blocks.txt"
    m = device.run(tflite_bundle, RunSpec(runs=3, warmup=1, threads=1, eval=False))
    assert m.ok, m.error
    a = attribute_blocks(device.blocks_out)
    per_inference = m.extra["instructions_per_inference"]
    # 3 inferences + the markers-only region (each inference's figure has the markers' cost taken off)
    assert 3 * per_inference <= a["total"] <= 3 * per_inference * 1.05 + 50_000
    # a digits CNN inference is ~170k instructions: Python's and libc's share is larger than for real CNNs
    assert max(a["libraries"], key=a["libraries"].get) == "libpywrap_litert_common.so"
    assert a["libraries"]["libpywrap_litert_common.so"] > 0.7 * a["total"]
    assert sum(a["families"].values()) == a["total"]
    assert a["symbolized"] and max(a["families"], key=a["families"].get) == "gemm"


@pytest.mark.slow
def test_doctor_reports_guest_versions_and_qemu(emulated):
    report = emulated.doctor()
    assert report["ok"], report["checks"]
    facts = report["facts"]
    assert facts["machine"] == "aarch64"
    assert re.match(r"\d+\.\d+", facts["qemu"]), facts["qemu"]
    assert facts["onnxruntime"] and facts["ai_edge_litert"] and facts["numpy"] and facts["python"]
    assert facts["cpu"].startswith("cortex-a72")


@pytest.mark.slow
def test_a_bundle_path_shadowed_by_the_root_is_refused(emulated, onnx_bundle, tmp_path):
    # -L ROOT would send the guest to ROOT's copy of a path that exists there: refuse, do not run stale files
    bundle_dir = tmp_path / "b"
    shutil.copytree(onnx_bundle.path, bundle_dir)
    created = aarch64_root.DEFAULT_ROOT
    for part in bundle_dir.relative_to("/").parts:
        created = created / part
        if not created.exists():
            break
    (aarch64_root.DEFAULT_ROOT / bundle_dir.relative_to("/")).mkdir(parents=True)
    try:
        m = emulated.run(Bundle.load(bundle_dir), SPEC)
    finally:
        shutil.rmtree(created)  # the topmost folder this test added to the shared root
    assert not m.ok
    assert "also exists inside the arm64 root" in m.error


# ---------------------------------------------------------------- no emulation needed
def test_registry_builds_the_builtin_emulated_device():
    device = get_device("pi4-emulated")
    assert isinstance(device, EmulatedDevice)
    assert device.kind == "emulated" and device.provenance is Provenance.EMULATED
    assert device.config.cpu == "cortex-a72"


def test_runs_are_capped_under_emulation():
    spec = EmulatedDevice(EmulatedConfig(max_runs=20, max_warmup=2)).effective_spec(
        RunSpec(runs=100, warmup=10, min_time_s=5.0))
    assert (spec.runs, spec.warmup, spec.min_time_s) == (20, 2, 0.0)


def test_marker_cost_is_subtracted_and_the_median_taken():
    figures = instructions_from_counts({"total": 10_000, "regions": [100, 1100, 1200, 1100]})
    assert figures["instructions_per_inference"] == 1000
    assert (figures["instructions_min"], figures["instructions_max"]) == (1000, 1100)
    assert figures["instructions_regions"] == 3
    assert instructions_from_counts({"total": 5, "regions": []}) == {}


def test_the_interpreters_share_is_taken_off_region_by_region():
    # region_harness: each region's instructions inside the Python interpreter (insn_count.c harness=)
    figures = instructions_from_counts({"total": 10_000, "regions": [100, 1100, 1300, 1100],
                                        "region_harness": [40, 340, 540, 350]})
    assert figures["instructions_per_inference"] == 1000
    # outside the interpreter: 1100-340, 1300-540, 1100-350, each minus the markers' 100-40
    assert figures["instructions_outside_interpreter"] == 700
    assert "instructions_outside_interpreter" not in instructions_from_counts({"total": 1, "regions": [1, 5]})


def test_multithreaded_counts_are_flagged_and_get_no_latency_estimate():
    from edgebench.types import Measurement

    m = Measurement(ok=True, device="emu", provenance=Provenance.EMULATED, threads=2, samples_ns=[1, 1])
    EmulatedDevice(EmulatedConfig())._add_estimates(m, {"total": 9, "regions": [10, 5000, 9000]})
    assert m.extra["instructions_per_inference"] == 6990
    assert "spin-waiting" in m.extra["instructions_note"]
    assert "estimated_latency_ms" not in m.extra


def test_ipc_calibration_inverts_the_estimate():
    ms = estimate_latency_ms(3_000_000, ipc=1.2, clock_ghz=1.5)
    assert ms == pytest.approx(3_000_000 / 1.8e9 * 1e3)
    assert calibrate_ipc(3_000_000, ms, 1.5) == pytest.approx(1.2)


def test_missing_tools_name_the_debian_package():
    with pytest.raises(EdgebenchError, match="apt-get install qemu-user"):
        EmulatedDevice(EmulatedConfig(qemu="qemu-aarch64-not-installed")).setup()
    with pytest.raises(EdgebenchError, match="'no-such-tool' is not installed"):
        aarch64_root.require_tool("no-such-tool")


def test_apt_mirror_is_read_from_apt_sources(tmp_path):
    """deb822 and one-line sources, security archives skipped, [options] skipped, else the default."""
    from pathlib import Path

    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    assert aarch64_root.apt_mirror(apt) == aarch64_root.DEFAULT_MIRROR  # nothing configured
    (apt / "sources.list").write_text(
        "# a comment\ndeb [signed-by=/k.gpg] http://security.mirror.test/debian-security bookworm-security main\n"
        f"deb [arch=amd64 signed-by=/k.gpg] http://list.mirror.test/debian/ {aarch64_root.SUITE} main\n")
    assert aarch64_root.apt_mirror(apt) == "http://list.mirror.test/debian"
    (apt / "sources.list").unlink()
    (apt / "sources.list.d" / "debian.sources").write_text(
        f"Types: deb\nURIs: http://security.mirror.test/debian-security\nSuites: {aarch64_root.SUITE}-security\n\n"
        f"Types: deb\nURIs: http://deb822.mirror.test/debian/\nSuites: {aarch64_root.SUITE} {aarch64_root.SUITE}-updates\n")
    assert aarch64_root.apt_mirror(apt) == "http://deb822.mirror.test/debian"
    assert aarch64_root.apt_mirror(Path("/etc/apt")).startswith(("http://", "https://"))  # this machine's own

def test_a_batch_of_models_gets_one_instruction_count_each(emulated, tmp_path):
    """devices/batch.py on the emulated device: several models in one runner under qemu, the counter's raw
    regions taken through EmulatedDevice.run_counted, one exact count per model (the OFA table and the
    predictor rely on it)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper, save

    from edgebench.devices.batch import BatchConfig, measure_models

    models = []
    for width in (8, 256):
        w = numpy_helper.from_array(np.ones((64, width), np.float32), "w")
        g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])], [w])
        path = tmp_path / f"matmul{width}.onnx"
        save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
        models.append((f"matmul{width}", path))
    models.append(("matmul8-again", models[0][1]))  # the same model again, after the others ran
    out = measure_models(emulated, models, BatchConfig(runs=3, rounds=1, warmup=1), tmp_path / "batch")
    small, big = out["matmul8"]["instructions"], out["matmul256"]["instructions"]
    assert isinstance(small, int) and 0 < small < big  # 32x the multiply-adds: more guest instructions
    assert len(out["matmul8"]["samples_ns"]) == 3 and out["_measurement"].ok
    # what ran outside the Python interpreter (the runtime, libc, numpy) is counted apart (insn_count.c
    # harness=): session.run's Python harness is thousands of instructions, and the runtime's own count of the
    # same model hardly depends on what ran before it in the process (measured: 23,528 and 23,651; the full
    # counts 34,844 and 32,556)
    first, again = out["matmul8"], out["matmul8-again"]
    assert 5_000 < first["instructions"] - first["instructions_outside_interpreter"] < first["instructions"]
    assert abs(again["instructions_outside_interpreter"] - first["instructions_outside_interpreter"]) \
        <= 0.01 * first["instructions_outside_interpreter"], (first, again)


def test_the_guest_reads_bytecode_compiled_once_and_writes_none(emulated):
    """ensure_root compiled the guest's standard library and wheels (aarch64_root.ensure_bytecode); a guest
    started with guest_env(root=...) imports numpy and onnxruntime from that bytecode and writes nothing."""
    import json
    import subprocess
    from pathlib import Path

    root = emulated._root
    cache = Path(root.path) / aarch64_root.PYCACHE
    assert (cache / aarch64_root.PYCACHE_DONE).exists()
    before = sorted(p.stat().st_mtime_ns for p in cache.rglob("*.pyc"))
    probe = ("import json, sys, numpy, onnxruntime, json.decoder as d\n"
             "print(json.dumps({'prefix': sys.pycache_prefix, 'cached': [numpy.__cached__, onnxruntime.__cached__, d.__cached__]}))")
    cmd = ["qemu-aarch64", "-L", str(root.path), "-cpu", "cortex-a72", str(root.python), "-c", probe]
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True,
                                    env=aarch64_root.guest_env(root=root.path)).stdout)
    assert out["prefix"] == str(cache.resolve())
    for cached in out["cached"]:  # numpy's, onnxruntime's and a standard-library module's bytecode: all there
        assert cached.startswith(out["prefix"]) and Path(cached).is_file(), cached
    assert sorted(p.stat().st_mtime_ns for p in cache.rglob("*.pyc")) == before  # nothing written by the guest
    assert "PYTHONPYCACHEPREFIX" not in aarch64_root.guest_env()  # without a root: no prefix


def test_a_failed_bytecode_compile_is_reported_once_and_never_fatal(tmp_path):
    """A root whose guest Python cannot run: ensure_bytecode says so, marks it done (not retried at every
    start) and returns; guest_env then points at what there is (nothing: the guest compiles as before)."""
    import json

    root = aarch64_root.Root(tmp_path, tmp_path / "usr/bin/python3.11", {})
    said: list = []
    aarch64_root.ensure_bytecode(root, "qemu-aarch64", said.append)
    assert any("not (fully) compiled" in s for s in said)
    done = json.loads((tmp_path / aarch64_root.PYCACHE / aarch64_root.PYCACHE_DONE).read_text())
    assert done["error"]
    said.clear()
    aarch64_root.ensure_bytecode(root, "qemu-aarch64", said.append)
    assert said == []
