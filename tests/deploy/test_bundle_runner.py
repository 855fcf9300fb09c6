import json
import subprocess
import sys

import numpy as np
import pytest

from edgebench.deploy.bundle import Bundle, check_eval, make_bundle, sha256_file
from edgebench.devices.protocol import parse_result
from edgebench.types import EdgebenchError


def test_bundle_holds_model_manifest_eval_and_runner(cnn_bundle, onnx_artifact):
    files = sorted(p.name for p in cnn_bundle.path.iterdir())
    assert files == ["eval.npz", "inputs.npz", "manifest.json", "model.onnx", "runner.py", "runner_device.py",
                     "runner_runtimes.py", "runner_stream.py"]
    m = json.loads((cnn_bundle.path / "manifest.json").read_text())
    assert m["sha256"] == onnx_artifact.sha256 == sha256_file(cnn_bundle.path / "model.onnx")
    assert m["inputs"] == [{"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32"}]
    assert m["outputs"][0]["shape"] == ["batch", 10]
    assert m["labels"] == [str(i) for i in range(10)]
    with np.load(cnn_bundle.path / "eval.npz") as d:
        assert d["x"].shape == (450, 1, 8, 8) and d["y"].shape == (450,)
    assert Bundle.load(cnn_bundle.path).manifest == m


def test_runner_imports_only_stdlib_numpy_runtimes_and_its_parts(cnn_bundle):
    parts = {p.stem for p in cnn_bundle.path.glob("runner*.py")}
    assert parts == {"runner", "runner_device", "runner_runtimes", "runner_stream"}
    imported = set()
    for part in parts:
        for line in (cnn_bundle.path / f"{part}.py").read_text().splitlines():
            s = line.strip()
            if s.startswith("import "):
                imported.update(p.strip().split(" as ")[0].split(".")[0] for p in s[7:].split(","))
            elif s.startswith("from ") and " import " in s:
                imported.add(s[5:].split(" import ")[0].lstrip(".").split(".")[0])
    allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime", "ai_edge_litert", "tflite_runtime"} | parts
    assert imported <= allowed, imported - allowed
    assert {"runner_device", "runner_runtimes", "runner_stream"} <= imported


def test_runner_prints_one_json_document_with_raw_samples(cnn_bundle):
    out = subprocess.run([sys.executable, str(cnn_bundle.path / "runner.py"), str(cnn_bundle.path),
                          "--runs", "37", "--warmup", "3"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = parse_result(out.stdout)
    assert doc["ok"] and doc["runtime"] == "onnxruntime"
    assert len(doc["samples_ns"]) == 37 and all(isinstance(s, int) and s > 0 for s in doc["samples_ns"])
    assert doc["load_ns"] > 0 and doc["first_inference_ns"] > 0
    assert len(doc["predictions"]) == 450 and doc["n_eval"] == 450
    assert 10 < doc["peak_rss_mb"] < 2000
    assert doc["facts"]["cores"] >= 1 and doc["facts"]["python"]


def test_the_runner_reads_the_last_level_cache_from_sysfs(tmp_path):
    from edgebench.deploy.runner_device import last_level_cache_kb

    for index, size in (("index0", "48K"), ("index2", "1024K"), ("index3", "32M"), ("index9", "n/a")):
        (tmp_path / index).mkdir()
        (tmp_path / index / "size").write_text(size + "\n")
    assert last_level_cache_kb(str(tmp_path)) == 32 * 1024
    assert last_level_cache_kb(str(tmp_path / "absent")) is None


def test_the_accuracy_pass_on_more_threads_predicts_the_same_and_says_so(cnn_bundle):
    from edgebench.devices.protocol import runner_args
    from edgebench.types import RunSpec

    docs = []
    for extra in ([], ["--eval-threads", "2"]):
        out = subprocess.run([sys.executable, str(cnn_bundle.path / "runner.py"), str(cnn_bundle.path),
                              "--runs", "5", "--warmup", "0", *extra], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        docs.append(parse_result(out.stdout))
    assert docs[0]["predictions"] == docs[1]["predictions"] and len(docs[1]["predictions"]) == 450
    assert "eval_threads" not in docs[0] and docs[1]["eval_threads"] == 2 and docs[1]["threads"] == 1
    assert docs[1]["eval_sessions"] == 2  # two sessions on the timed runs' one thread, half the data each
    assert runner_args(RunSpec(threads=1, eval_threads=2))[-2:] == ["--eval-threads", "2"]
    assert "--eval-threads" not in runner_args(RunSpec(threads=2, eval_threads=2))
    assert "--eval-threads" not in runner_args(RunSpec(threads=1, eval_threads=2, eval=False))


def test_runner_min_time_extends_measuring(cnn_bundle):
    out = subprocess.run([sys.executable, str(cnn_bundle.path / "runner.py"), str(cnn_bundle.path),
                          "--runs", "5", "--warmup", "0", "--min-time", "0.3", "--no-eval"],
                         capture_output=True, text=True, timeout=120)
    doc = parse_result(out.stdout)
    assert sum(doc["samples_ns"]) >= 0.25e9 * 0.9 and len(doc["samples_ns"]) > 5
    assert "predictions" not in doc


def test_runner_reports_a_corrupt_model_as_an_error_document(cnn_bundle):
    (cnn_bundle.path / "model.onnx").write_bytes(b"\x08\x07garbage" * 10)
    out = subprocess.run([sys.executable, str(cnn_bundle.path / "runner.py"), str(cnn_bundle.path)],
                         capture_output=True, text=True, timeout=120)
    doc = parse_result(out.stdout)
    assert out.returncode == 3 and doc["ok"] is False and doc["error"]


def test_eval_data_of_the_wrong_shape_is_refused(onnx_artifact, tmp_path):
    with pytest.raises(EdgebenchError, match="does not fit the model's input"):
        make_bundle(onnx_artifact, tmp_path / "b", np.zeros((4, 1, 6, 6), np.float32), np.zeros(4))
    with pytest.raises(EdgebenchError, match="rank differs"):
        check_eval(np.zeros((4, 64)), np.zeros(4), ("batch", 1, 8, 8))
    with pytest.raises(EdgebenchError, match="samples"):
        check_eval(np.zeros((4, 1, 8, 8)), np.zeros(3), ("batch", 1, 8, 8))
