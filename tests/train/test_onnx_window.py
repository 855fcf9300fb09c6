"""The onnxruntime window forms (train/onnx_window.py): the same function as the lean twin, exactly in float64,
spike-exact through the real onnxruntime, and with the node counts that make them faster there."""
import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgebench.export.onnx import compare, export_onnx, export_view, reference_outputs, run_onnx
from edgebench.train.lmu import LMU
from edgebench.train.onnx_window import FusedLMU, WavefrontL2MU
from tests.train.test_l2mu_tflite import STEPS, _l2mu  # the same small L2MU whose populations all fire


def _x(n, steps=STEPS, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 6, steps)).astype(np.float32))


def _ort_ops(path, tmp_path):
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


@pytest.mark.parametrize("neuron", ["lif", "cuba"])
@pytest.mark.parametrize("steps", [1, 2, STEPS])
def test_wavefront_is_the_lean_window_in_float64(neuron, steps):
    """Same equations and weights: in float64 the differences are the order of the sums (~1e-15) and the
    biases that carry the thresholds, stored in float32 (~1e-7); a wrong time alignment of one population
    would move the scores by whole spikes (~1e-2)."""
    m = _l2mu(neuron)
    lean = m.export_module()
    wave = m.export_module(runtime="onnx")
    assert isinstance(wave, WavefrontL2MU)
    x = _x(5, steps).double() * 2
    with torch.no_grad():
        ref, spikes = lean.double().run(x, record=True)
        got = wave.double()(x)
    if steps == STEPS:
        assert all(float(s.sum()) > 0 for s in spikes.values())  # every population fires
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


def test_a_threshold_at_or_below_zero_keeps_greater_for_the_spikes(tmp_path):
    """HardSigmoid(3.4e38 x) is a spike only where every silent column stays at or below 0; with a threshold
    <= 0 the silent columns (-thr) would fire, so the wavefront keeps Greater + Cast, and stays exact."""
    lean = _l2mu("lif").export_module()
    assert WavefrontL2MU(lean).heaviside
    with torch.no_grad():
        lean.hidden_thr[0] = 0.0
    wave = WavefrontL2MU(lean).eval()
    assert not wave.heaviside
    x = _x(5).double() * 2
    with torch.no_grad():
        ref, _ = lean.double().run(x, record=True)
        torch.testing.assert_close(wave.double()(x), ref, rtol=0, atol=1e-6)
    path = export_onnx(wave.float(), _x(1), tmp_path / "greater.onnx")
    ops = _ort_ops(path, tmp_path)
    assert ops.get("Greater", 0) > 0 and ops.get("HardSigmoid", 0) == 0, ops


def test_lmu_fused_is_the_lean_window_in_float64():
    torch.manual_seed(0)
    m = LMU(6, 4, hidden_size=12, memory_size=2, order=4, theta=STEPS).eval()
    lean, fused = m.export_module(), m.export_module(runtime="onnx")
    assert isinstance(fused, FusedLMU)
    x = _x(5).double()
    with torch.no_grad():
        # the fused weights are products of float32 weights stored as float32: 1e-7 relative
        torch.testing.assert_close(fused.double()(x), lean.double()(x), rtol=0, atol=1e-6)


def test_count_readout_and_int8_source_keep_the_lean_window():
    assert not isinstance(_l2mu("lif", readout="count").export_module(runtime="onnx"), WavefrontL2MU)
    assert not isinstance(_l2mu("lif").export_module(fold_state=False, runtime="onnx"), WavefrontL2MU)
    assert not isinstance(export_view(_l2mu("lif")), WavefrontL2MU)  # LiteRT keeps the lean window


@pytest.mark.parametrize("neuron", ["lif", "cuba", "lmu"])
@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_window_is_spike_exact_and_lean(neuron, batch, tmp_path):
    """Through the real onnxruntime: the scores of the original model within float rounding (one flipped spike
    moves a score by ~1e-2), with 9 nodes per step for the L2MU (lean: 20 and a Squeeze) and 1 for the LMU."""
    m = LMU(6, 4, hidden_size=12, memory_size=2, order=4, theta=STEPS).eval() if neuron == "lmu" else _l2mu(neuron)
    x = _x(10).numpy()
    path = export_onnx(export_view(m, "onnx"), torch.from_numpy(x[:batch]), tmp_path / f"{neuron}.onnx")
    ref = reference_outputs(m, x)
    v = compare(ref, run_onnx(path, x), atol=1e-6 * max(1.0, float(np.abs(ref).max())), min_agreement=1.0)
    assert v.top1_agreement == 1.0
    # and no less accurate than the step-by-step window (the membranes join each product last)
    lean = export_onnx(export_view(m), torch.from_numpy(x[:batch]), tmp_path / f"{neuron}-lean.onnx")
    assert v.max_abs_diff <= 2 * float(np.abs(run_onnx(lean, x) - ref).max()) + 1e-6
    ops = _ort_ops(path, tmp_path)
    # the LMU's step: one FusedGemm (product + Tanh); the L2MU's: Concat, Gemm, HardSigmoid per level
    per_step = 1 if neuron == "lmu" else 9
    assert sum(ops.values()) <= per_step * STEPS + 24, ops  # + splitting the input, zero state, readout
    if neuron == "lmu":
        # the score rides in the state: no Concat of the steps' states, one small product at the end
        assert ops["FusedGemm"] == STEPS - 1 and ops.get("Concat", 0) == 0 and ops.get("Gemm", 0) == 1, ops
    # no Add per step (the LMU adds its bias to every step's input product once)
    assert ops.get("Squeeze", 0) == 0 and ops.get("Add", 0) <= (neuron == "lmu"), ops
    if neuron != "lmu":  # spikes by one HardSigmoid per level (fused into the product where nothing else reads it)
        assert ops.get("Greater", 0) == 0 and ops.get("HardSigmoid", 0) + ops.get("FusedGemm", 0) >= 3 * STEPS, ops
    lean_ops = _ort_ops(lean, tmp_path)
    assert sum(lean_ops.values()) > 1.5 * sum(ops.values()), (lean_ops, ops)


def test_export_falls_back_to_the_lean_window_where_the_fused_form_exceeds_atol(tmp_path):
    """The fused LMU's memory and score ride through Tanh, whose rounding (about -1e-7 relative in
    onnxruntime, every step) grows with the window and the scores: where that exceeds atol, the exporter
    writes the lean window instead and says why; the default atol keeps the fused form."""
    from edgebench.export.onnx import export_and_validate
    from edgebench.train.base import Dataset, Trained

    torch.manual_seed(0)
    steps = 150
    m = LMU(6, 4, hidden_size=12, memory_size=2, order=4, theta=steps).eval()
    with torch.no_grad():
        m.readout.weight.mul_(200.0)  # scores in the hundreds
    x = _x(8, steps).numpy()
    ref = reference_outputs(m, x)
    err = {}
    for form in ("fused", "lean"):
        path = export_onnx(export_view(m, "onnx" if form == "fused" else None), torch.from_numpy(x[:1]),
                           tmp_path / f"{form}.onnx")
        err[form] = float(np.abs(run_onnx(path, x) - ref).max())
    assert err["fused"] > 4 * err["lean"], err  # else this model tests nothing
    data = Dataset("toy", x, ref.argmax(1), x, ref.argmax(1), ("a", "b", "c", "d"), "none")
    trained = Trained("toy_lmu", "lmu", m, data, {})
    art = export_and_validate(trained, tmp_path / "out", atol=(err["fused"] * err["lean"]) ** 0.5)
    assert art.extra["onnx_form"].startswith("_LeanLMU, not onnxruntime's faster FusedLMU"), art.extra
    assert art.validation.max_abs_diff == pytest.approx(err["lean"], rel=1e-6)
    # the default atol (1e-4) and these scores in the hundreds: the lean window too
    assert "onnx_form" in export_and_validate(trained, tmp_path / "default").extra
    with torch.no_grad():
        m.readout.weight.div_(200.0)  # scores of a few units: the fused form within the default atol
    data = Dataset("toy", x, m(torch.from_numpy(x)).argmax(1).numpy(), x, ref.argmax(1), ("a", "b", "c", "d"), "none")
    kept = export_and_validate(Trained("toy_lmu", "lmu", m, data, {}), tmp_path / "kept")
    assert "onnx_form" not in kept.extra and kept.validation.max_abs_diff <= 1e-4
