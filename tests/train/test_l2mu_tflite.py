"""L2MU / LMU -> TFLite (litert-torch, real interpreter): spike-exact parity with PyTorch at batch 1 and 5,
and the lean export twin (export_module) is the same function as the model."""
import numpy as np
import pytest
import torch

from edgebench.export.onnx import compare, reference_outputs
from edgebench.export.tflite import convert_tflite, run_tflite
from edgebench.train.l2mu import L2MU
from edgebench.train.lmu import LMU

# Spikes must be identical; the membrane-readout scores then differ only by float summation order: 1e-6
# relative to the largest score (CuBa scores reach ~80). One flipped spike moves a score by ~|R|/steps ~ 1e-2.
SCORE_RTOL = 1e-6
STEPS = 15


def _l2mu(neuron, readout="membrane"):
    torch.manual_seed(3)
    m = L2MU(6, 4, hidden_size=12, memory_size=2, order=4, theta=STEPS, input_size=8, neuron=neuron,
             memory_gain=0.5, readout=readout).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(2.0)
    return m


def _x(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 6, STEPS)).astype(np.float32)


@pytest.mark.parametrize("neuron", ["lif", "cuba"])
def test_export_module_fires_the_same_spikes_as_the_model(neuron):
    """The lean twin folds leak and reset into one product per population: the sums run in another order
    (~1e-6 on the scores), the spikes of every population are identical."""
    m, x = _l2mu(neuron), torch.from_numpy(_x(7))
    lean = m.export_module()
    with torch.no_grad():
        torch.testing.assert_close(m(x), lean(x), rtol=0, atol=1e-5)
        ref, (_, got) = m.spike_record(x), lean.run(x, record=True)
    assert set(ref) == set(got)
    for pop in ref:
        assert float(ref[pop].sum()) > 0, pop
        assert torch.equal(ref[pop], got[pop]), pop
    lmu = LMU(6, 4, hidden_size=12, memory_size=2, order=4, theta=STEPS).eval()
    with torch.no_grad():
        torch.testing.assert_close(lmu(x), lmu.export_module()(x), rtol=0, atol=1e-5)  # folded GEMM rounding


@pytest.mark.parametrize("neuron", ["lif", "cuba"])
@pytest.mark.parametrize("batch", [1, 5])
def test_tflite_is_spike_exact(neuron, batch, tmp_path):
    m, x = _l2mu(neuron), _x(10)
    rec = m.spike_record(torch.from_numpy(x))
    assert all(float(v.sum()) > 0 for v in rec.values())  # every population fires
    path = convert_tflite(m, torch.from_numpy(x[:batch]), tmp_path / f"{neuron}-{batch}.tflite")
    got = run_tflite(path, x)  # fixed-batch file: chunks of `batch`
    ref = reference_outputs(m, x)
    v = compare(ref, got, atol=SCORE_RTOL * max(1.0, float(np.abs(ref).max())), min_agreement=1.0)
    assert v.top1_agreement == 1.0
    # the LIF's spikes as ops XNNPACK runs (no GREATER/CAST between partitions): its window is one delegate
    # (the CuBa keeps Greater and Cast, which ran faster there: L2MU._spikes_for)
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(str(path), num_threads=1)
    interp.allocate_tensors()
    ops = [d["op_name"] for d in interp._get_ops_details()]
    if neuron == "lif":
        assert "GREATER" not in ops and "CAST" not in ops and ops.count("DELEGATE") == 1, sorted(set(ops))
    else:
        assert "GREATER" in ops, sorted(set(ops))


@pytest.mark.parametrize("batch", [1, 5])
def test_tflite_count_readout_spike_counts_are_identical(batch, tmp_path):
    m, x = _l2mu("lif", readout="count"), _x(10, seed=1)
    path = convert_tflite(m, torch.from_numpy(x[:batch]), tmp_path / "count.tflite")
    ref = reference_outputs(m, x)
    assert ref.sum() > 0
    np.testing.assert_array_equal(run_tflite(path, x), ref)  # integer readout spike counts


def test_trained_lif_l2mu_exports_fp32_and_int8_dynamic_tflite(tmp_path):
    """The window model's TFLite path ([export] formats = ["tflite"]; the main job streams step models instead):
    float TFLite, then dynamic-range INT8 by ai-edge-quantizer on that file."""
    from edgebench.export.tflite import export_tflite
    from edgebench.train.registry import train_model
    from edgebench.types import Precision

    trained = train_model("lif", "l2mu", "basicmotions", {"neuron": "lif", "memory_gain": 0.5},
                          {"epochs": 3, "lr": 5e-3}, progress=False)
    fp32 = export_tflite(trained, tmp_path, Precision.FP32)
    assert fp32.validation.max_abs_diff <= 1e-4 and fp32.validation.top1_agreement == 1.0
    q = export_tflite(trained, tmp_path, Precision.INT8_DYNAMIC, fp32_tflite=fp32, min_agreement=0.9)
    assert q.extra["quantized_from"] == fp32.name
    assert q.validation.top1_agreement >= 0.9
    assert q.size_bytes < fp32.size_bytes
