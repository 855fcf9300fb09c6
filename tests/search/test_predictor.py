"""The kernel-level latency predictor: graphs split into the kernels the runtime runs, kernels timed alone
on a real device (the local CPU), a resumable build, and `edgebench predict` on a graph it never saw."""
import json
import statistics

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgebench.export.onnx import export_onnx
from edgebench.search.kernels import kernel_model, run_shapes, split_kernels


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
                        nn.Hardswish(), nn.Flatten(), nn.Linear(8 * 7 * 7, 10)).eval()
    return export_onnx(net, torch.randn(1, 3, 16, 16), tmp_path_factory.mktemp("k") / "cnn.onnx")


def test_graph_splits_into_fused_kernels_that_run_alone(cnn_onnx):
    import onnxruntime as ort

    model = onnx.load(str(cnn_onnx))
    feed = {"input": np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    shapes = run_shapes(model, feed)
    kernels = split_kernels(model, shapes=shapes)
    assert [k.type for k in kernels] == ["Conv+Relu", "Conv+HardSwish", "Gemm"]  # BN folded by the exporter
    conv = kernels[0].features
    assert (conv["c_in"], conv["c_out"], conv["hw"], conv["kernel"], conv["stride"]) == (3, 8, 256, 3, 1)
    assert conv["macs"] == 8 * 16 * 16 * 3 * 3 * 3
    assert kernels[1].features["stride"] == 2 and kernels[2].features["macs"] == 10 * 8 * 7 * 7
    for k in kernels:  # each kernel is a model of its own, with the original shapes
        tiny = kernel_model(k, model, shapes)
        sess = ort.InferenceSession(tiny.SerializeToString(), providers=["CPUExecutionProvider"])
        x = {i.name: np.zeros(shapes[i.name][0], np.float32) for i in sess.get_inputs()}
        assert sess.run(None, x)[0].shape == shapes[k.outputs[0]][0]


def test_predictor_build_resumes_and_predicts_an_unseen_graph(cli, cnn_onnx, tmp_path):
    pred = tmp_path / "local.json"
    args = ("predictor", "build", "--device", "local", "--zoo", "4", "--streaming", "0", "--no-around",
            "--prior", "12", "--budget-minutes", "3", "--out", pred, "--store", tmp_path / "none.sqlite", "--quiet")
    p = cli(*args)
    assert p.returncode == 0, p.stderr
    doc = json.loads(pred.read_text())
    assert doc["meta"]["device"] == "local" and len(doc["models"]) == 4
    kernels = {k: v for k, v in doc["kernels"].items() if k != "_empty"}
    assert len(kernels) >= 10 and all(v["p50_ms"] > 0 and v["n"] >= 60 for v in kernels.values())
    assert {v["sampled"] for v in kernels.values()} == {"exact", "prior"}
    # every timing process also timed an empty model: the machine's speed beside each kernel and whole model
    assert all(0 < v["empty_ms"] < 1 for v in [*kernels.values(), *doc["models"].values()])
    assert 8 <= sum(v["sampled"] == "prior" for v in kernels.values()) <= 12  # random configurations of common ops
    # what one more returned output costs a kernel alone, measured beside the empty model (never below 0)
    assert doc["meta"]["per_output"]["p50_ms"] >= 0
    # the nodes are counted for the device's own optimizer (here this machine's)
    assert doc["meta"]["node_counts"] == doc["meta"]["facts"]["machine"]
    # a file counted before that (no node_counts) has its whole models' node terms made again on resuming
    first = next(iter(doc["models"]))
    counted = doc["models"][first]["model_extra_nodes"]
    older = {**doc, "meta": {k: v for k, v in doc["meta"].items() if k != "node_counts"},
             "models": {**doc["models"], first: {**doc["models"][first], "model_extra_nodes": counted + 99}}}
    pred.write_text(json.dumps(older))
    before = pred.stat().st_mtime_ns
    again = cli(*args)  # everything measured already: nothing is timed again
    assert again.returncode == 0 and json.loads(pred.read_text())["kernels"].keys() == doc["kernels"].keys()
    assert pred.stat().st_mtime_ns >= before
    resumed = json.loads(pred.read_text())
    assert resumed["models"][first]["model_extra_nodes"] == counted
    assert resumed["meta"]["node_counts"] == doc["meta"]["facts"]["machine"]

    p = cli("predict", cnn_onnx, "--device", "local", "--predictor", pred, "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["provenance"] == "predicted" and out["kernels"] == 3 and out["predicted_latency_ms"] > 0
    assert sum(b["count"] for b in out["breakdown"]) == 3
    assert out["machine_speed"]["reference_empty_ms"] == pytest.approx(statistics.median(
        v["empty_ms"] for v in [*kernels.values(), *doc["models"].values()]))
    # 4 whole models are too few to cross-validate: the prediction says it has no band, and why
    band = out["error_band"]
    assert band["of"] == "predicted_latency_ms" and band["text"].startswith("no error band: the build has too few")
    over = cli("predict", cnn_onnx, "--device", "local", "--predictor", pred,
               "--max-latency-ms", out["predicted_latency_ms"] / 2)
    assert over.returncode == 1 and "exceeds the budget" in over.stderr
    within = cli("predict", cnn_onnx, "--device", "local", "--predictor", pred,
                 "--max-latency-ms", out["predicted_latency_ms"] * 2)
    assert within.returncode == 0, within.stderr
    missing = cli("predict", cnn_onnx, "--device", "nowhere")
    assert missing.returncode == 2 and "no predictor at" in missing.stderr


def test_build_samples_around_the_users_model_and_adds_its_store_record(cli, cnn_onnx, tmp_path):
    store = tmp_path / "s.sqlite"
    b = cli("bench", cnn_onnx, "--device", "local", "--runs", "20", "--store", store)
    assert b.returncode == 0, b.stderr
    pred = tmp_path / "p.json"
    p = cli("predictor", "build", "--device", "local", "--zoo", "0", "--streaming", "0", "--budget-minutes", "3",
            "--out", pred, "--store", store, "--quiet")
    assert p.returncode == 0, p.stderr
    doc = json.loads(pred.read_text())
    (name, whole), = doc["models"].items()
    assert name.startswith("store-cnn-") and whole["source"] == "store" and whole["p50_ms"] > 0
    sampled = [v for v in doc["kernels"].values() if v.get("sampled") == "around"]
    exact = [v for v in doc["kernels"].values() if v.get("sampled") == "exact"]
    assert len(exact) == 3 and len(sampled) >= 20  # the CNN's 3 kernels, each dimension x0.5 ... x2
    first_conv = [v["features"] for v in sampled if v["type"] == "Conv+Relu" and v["features"]["c_out"] == 8]
    assert {f["hw"] for f in first_conv} >= {8 * 8, 24 * 24, 32 * 32}  # the 16x16 input's side scaled
    assert doc["meta"]["sampled_around"] == [name]
