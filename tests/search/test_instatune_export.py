"""Exported InstaTune subnets really shrink, match PyTorch, and run on the local device with token eval data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgebench.search.instatune_export import export_subnet, file_accuracy, run_file
from edgebench.train.instatune import Supernet
from edgebench.train.minilm import ElasticChoices, predict, pretrained_minilm
from edgebench.types import Format, Precision

SMALL = {"layers": 2, "heads": [4, 4], "ffn": [384, 384]}
SEQ = 64


@pytest.fixture(scope="module")
def supernet():
    torch.set_num_threads(1)
    model = pretrained_minilm(2, seed=0).eval()
    with torch.no_grad():  # a head with clear margins, so INT8 agreement is not decided by ties
        model.classifier.weight.mul_(50.0)
    return Supernet(model, ElasticChoices(), ("rotten", "fresh"), {"train": {"max_length": SEQ}, "data": {}})


@pytest.fixture(scope="module")
def ids():
    rng = np.random.default_rng(0)
    x = rng.integers(1000, 30000, (64, SEQ))
    lengths = rng.integers(8, SEQ, 64)
    x[np.arange(SEQ)[None, :] >= lengths[:, None]] = 0  # padded like real snippets
    x[:, 0] = 101
    return x


@pytest.fixture(scope="module")
def full_and_small(supernet, ids, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    full = export_subnet(supernet, ElasticChoices().largest(), Format.ONNX, Precision.FP32, out, ids, "full")
    small = export_subnet(supernet, SMALL, Format.ONNX, Precision.FP32, out, ids, "small")
    return full, small


def test_small_arch_onnx_has_far_fewer_params_and_macs(full_and_small):
    full, small = full_and_small
    assert small.inputs[0].name == "input_ids" and small.inputs[0].dtype == "int64"
    assert small.inputs[0].shape[1] == SEQ
    assert small.macs < full.macs / 5  # onnx-tool's graph count
    assert small.extra["arch_macs"] < full.extra["arch_macs"] / 7
    assert small.extra["encoder_params"] < full.extra["encoder_params"] / 7
    assert small.params < full.params - 9_000_000  # the 11.7 M embedding table stays in both
    assert small.size_bytes < 0.6 * full.size_bytes
    assert small.validation.max_abs_diff < 1e-4 and small.validation.top1_agreement == 1.0


def test_exported_file_computes_what_the_supernet_slice_computes(supernet, ids, full_and_small):
    _, small = full_and_small
    np.testing.assert_allclose(run_file(small.path, ids), predict(supernet.model, ids, SMALL), atol=1e-4)
    y = predict(supernet.model, ids, SMALL).argmax(-1)
    assert file_accuracy(small.path, ids, y) == 1.0
    assert file_accuracy(small.path, ids, 1 - y) == 0.0


def test_int8_dynamic_and_tflite_exports_validate(supernet, ids, full_and_small, tmp_path):
    _, small = full_and_small
    q = export_subnet(supernet, SMALL, Format.ONNX, Precision.INT8_DYNAMIC, tmp_path, ids, "small", fp32=small)
    assert q.size_bytes < 0.5 * small.size_bytes and q.validation.top1_agreement >= 0.97
    t = export_subnet(supernet, SMALL, Format.TFLITE, Precision.FP32, tmp_path, ids, "small")
    assert t.validation.max_abs_diff < 1e-4 and t.path.suffix == ".tflite"


def test_local_device_measures_the_subnet_with_token_eval_data(supernet, ids, full_and_small, tmp_path):
    from edgebench.deploy.bundle import make_bundle
    from edgebench.devices.registry import get_device
    from edgebench.types import RunSpec

    _, small = full_and_small
    y = predict(supernet.model, ids, SMALL).argmax(-1)
    y[:16] = 1 - y[:16]  # a known accuracy: 48 of 64

    bundle = make_bundle(small, tmp_path / "bundle", ids, y)
    m = get_device("local").run(bundle, RunSpec(runs=5, warmup=1, threads=1))

    assert m.ok, m.error
    assert m.n_eval == 64 and m.accuracy == pytest.approx(48 / 64)
