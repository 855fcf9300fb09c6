"""Streaming step models (L2MU LIF/CuBa, LMU) in ONNX and TFLite: streaming the file over a window from zero
state gives the window model's output, spike for spike, at batch 1 and 5."""
import numpy as np
import onnx
import pytest
import torch

from edgebench.export.step import (_OnnxRun, _TfliteRun, export_onnx_step, onnx_stream_spec, stream_scores,
                                   stream_torch, tflite_stream_spec)
from edgebench.train.l2mu import L2MU
from edgebench.train.lmu import LMU

STEPS = 15


def _model(kind, readout="membrane"):
    torch.manual_seed(3)
    if kind == "lmu":
        return LMU(6, 4, hidden_size=12, memory_size=2, order=4, theta=STEPS).eval()
    m = L2MU(6, 4, hidden_size=12, memory_size=2, order=4, theta=STEPS, input_size=8, neuron=kind,
             memory_gain=0.5, readout=readout).eval()
    with torch.no_grad():  # weights pushed away from init so that every population fires
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(2.0)
    return m


def _x(n=10, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 6, STEPS)).astype(np.float32)


def _window(m, x):
    with torch.no_grad():
        return m(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("kind", ["lif", "cuba", "lmu"])
@pytest.mark.parametrize("fold_state", [True, False])
def test_pytorch_step_model_streams_the_window_model(kind, fold_state):
    """Folded (fp32 files) and unfolded (the INT8 files' source: leak, reset, Abar apart) steps alike."""
    m, x = _model(kind, readout="count" if kind == "lif" else "membrane"), _x()
    got, _ = stream_torch(m.step_module(fold_state=fold_state), x)
    ref = _window(m, x)
    if kind == "lif":
        assert ref.sum() > 0
        np.testing.assert_array_equal(got * STEPS, ref)  # spike counts
    else:
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * max(1.0, float(np.abs(ref).max())))


@pytest.mark.parametrize("kind", ["lif", "cuba", "lmu"])
def test_onnx_step_model_streams_the_window_model_at_batch_1_and_5(kind, tmp_path):
    m, x = _model(kind), _x()
    step = m.step_module()
    path = export_onnx_step(step, 6, tmp_path / "step.onnx", 17)
    spec = onnx_stream_spec(step, STEPS)
    ref = _window(m, x)
    for batch in (1, 5):
        got = stream_scores(_OnnxRun(path), spec, x, batch=batch)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * max(1.0, float(np.abs(ref).max())))
        assert (got.argmax(1) == ref.argmax(1)).all()
    # every state input has its output, and the batch of every input is free
    inputs = onnx.load(str(path)).graph.input
    assert [i.name for i in inputs] == step.input_names()
    assert all(i.type.tensor_type.shape.dim[0].dim_param for i in inputs)


@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_step_spike_counts_are_identical(batch, tmp_path):
    """Readout by spike count: the streamed file's scores are integer spike counts, equal to the window's."""
    m, x = _model("lif", readout="count"), _x(seed=1)
    step = m.step_module()
    path = export_onnx_step(step, 6, tmp_path / "count.onnx", 17)
    got = stream_scores(_OnnxRun(path), onnx_stream_spec(step, STEPS), x, batch=batch) * STEPS
    ref = _window(m, x)
    assert ref.sum() > 0
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)  # counts summed in float, divided and multiplied


@pytest.mark.parametrize("kind", ["lif", "cuba", "lmu"])
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("runtime", [None, "tflite"])
def test_tflite_step_model_streams_the_window_model(kind, batch, runtime, tmp_path):
    """runtime="tflite": the LIF L2MU's spikes as XNNPACK's ops (relu6 of the scaled difference), which the
    files export/step.py writes; None: Greater and Cast."""
    from edgebench.export.tflite import convert_tflite_step

    m, x = _model(kind, readout="count" if kind == "lif" else "membrane"), _x()
    step = m.step_module(runtime=runtime) if kind != "lmu" else m.step_module()
    path = convert_tflite_step(step, 6, tmp_path / "step.tflite", batch=batch)
    run = _TfliteRun(path)
    assert run.fixed_batch == batch
    got = stream_scores(run, tflite_stream_spec(path, step, STEPS), x)
    ref = _window(m, x)
    if kind == "lif":  # integer spike counts (stream_scores divides by the steps)
        assert ref.sum() > 0
        np.testing.assert_array_equal(got * STEPS, ref)
    else:
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * max(1.0, float(np.abs(ref).max())))


def test_step_model_encoding_is_short(tmp_path):
    from edgebench.export.onnx import describe_onnx

    step = L2MU(6, 4, neuron="lif", memory_gain=0.5).eval().step_module()
    path = export_onnx_step(step, 6, tmp_path / "full.onnx", 17)
    a = describe_onnx(path)
    assert 0 < len(a.encoding) < 10_000
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("Gemm") == 5  # one product per population


def _matmul_weight_types(path):
    """(output tensor name, weight tensor type name) of every FULLY_CONNECTED op, in execution order."""
    from ai_edge_litert import schema_py_generated as schema

    from edgebench.export.tflite_model import _op_names

    model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    g, names = model.Subgraphs(0), _op_names()
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    out = []
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        if names[model.OperatorCodes(op.OpcodeIndex()).BuiltinCode()] == "FULLY_CONNECTED":
            out.append((g.Tensors(int(op.Outputs(0))).Name().decode(), types[g.Tensors(int(op.Inputs(1))).Type()]))
    return out


@pytest.mark.parametrize("kind", ["lif", "lmu"])
def test_dynamic_int8_step_keeps_the_encoder_and_readout_float(kind, tmp_path):
    from edgebench.export.tflite import convert_tflite_step, quantize_tflite_dynamic
    from edgebench.export.tflite_model import end_matmuls

    m, x = _model(kind), _x()
    step = m.step_module(fold_state=False)
    src = convert_tflite_step(step, 6, tmp_path / "float.tflite")
    keep = end_matmuls(src)
    fcs = _matmul_weight_types(src)
    assert len(fcs) >= 3 and keep == (fcs[0][0], fcs[-1][0])
    every = _matmul_weight_types(quantize_tflite_dynamic(src, tmp_path / "all.tflite"))
    assert [t for _, t in every] == ["INT8"] * len(fcs)
    ends = quantize_tflite_dynamic(src, tmp_path / "ends.tflite", keep_float=keep)
    assert [t for _, t in _matmul_weight_types(ends)] == ["FLOAT32"] + ["INT8"] * (len(fcs) - 2) + ["FLOAT32"]
    got = stream_scores(_TfliteRun(ends), tflite_stream_spec(ends, step, STEPS), x)
    assert (got.argmax(1) == _window(m, x).argmax(1)).mean() >= 0.9


@pytest.mark.parametrize("kind", ["lif", "lmu"])
def test_dynamic_int8_tflite_step_of_the_lmu_comes_from_the_folded_step(kind, tmp_path):
    """The LMU's folded step keeps its one folded product (the memory update) first, which stays float32: its
    dynamic-range file has the fp32 file's ops, with only the hidden update in int8. The L2MU's folds leak and
    reset into every population's product, so its file comes from the unfolded step (more ops)."""
    from edgebench.export.step import export_step
    from edgebench.train.base import Dataset, Trained
    from edgebench.types import Format, Precision

    m, x = _model(kind), _x(20)
    y = _window(m, x).argmax(1)
    data = Dataset("toy", x, y, x, y, ("a", "b", "c", "d"), "none")
    trained = Trained(kind, "lmu" if kind == "lmu" else "l2mu", m, data, {})
    fp32 = export_step(trained, Format.TFLITE, Precision.FP32, tmp_path)
    dyn = export_step(trained, Format.TFLITE, Precision.INT8_DYNAMIC, tmp_path)
    fp32_fcs, dyn_fcs = _matmul_weight_types(fp32.path), _matmul_weight_types(dyn.path)
    if kind == "lmu":
        assert dyn.extra["quantized_from"] == "the step model's folded float graph"
        assert dyn.extra["op_counts"] == fp32.extra["op_counts"]
        assert [t for _, t in dyn_fcs] == ["FLOAT32", "INT8", "FLOAT32"]
    else:
        assert dyn.extra["quantized_from"] == "the step model's unfolded float graph"
        assert sum(dyn.extra["op_counts"].values()) > sum(fp32.extra["op_counts"].values())
        # spikes as ops XNNPACK runs (_LeanL2MU._spike): no GREATER/CAST splitting the step into partitions
        assert not {"GREATER", "CAST"} & (set(fp32.extra["op_counts"]) | set(dyn.extra["op_counts"]))
        assert [t for _, t in dyn_fcs] == ["FLOAT32"] + ["INT8"] * (len(fp32_fcs) - 2) + ["FLOAT32"]
    assert dyn.size_bytes < fp32.size_bytes
    assert dyn.validation.top1_agreement >= 0.9
