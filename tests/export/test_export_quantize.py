"""ONNX INT8 with onnxruntime.quantization: dynamic and static QDQ, validated against PyTorch."""
import dataclasses

import onnx
import pytest

from edgebench.deploy.bundle import make_bundle
from edgebench.devices.local import LocalDevice
from edgebench.export.errors import AgreementError, CalibrationError, ExportError
from edgebench.export.quantize import quantize_onnx
from edgebench.types import Format, Precision, RunSpec


@pytest.fixture(scope="module")
def quant_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-int8")


@pytest.fixture(scope="module")
def dynamic(onnx_artifact, trained_cnn, quant_dir):
    return quantize_onnx(onnx_artifact, trained_cnn, quant_dir, Precision.INT8_DYNAMIC)


@pytest.fixture(scope="module")
def static(onnx_artifact, trained_cnn, quant_dir):
    return quantize_onnx(onnx_artifact, trained_cnn, quant_dir, Precision.INT8)


def _ops(path) -> set:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_dynamic_quantization_is_smaller_and_agrees(dynamic, onnx_artifact):
    assert dynamic.name == "digits_cnn-onnx-int8-dynamic" and dynamic.path.name == f"{dynamic.name}.onnx"
    assert dynamic.format is Format.ONNX and dynamic.precision is Precision.INT8_DYNAMIC
    assert {"ConvInteger", "DynamicQuantizeLinear"} <= _ops(dynamic.path)
    assert dynamic.inputs == onnx_artifact.inputs  # float input, batch still dynamic
    assert dynamic.size_bytes * 2.5 < onnx_artifact.size_bytes
    assert dynamic.validation.atol is None and dynamic.validation.n_samples == 450
    assert dynamic.validation.top1_agreement >= 0.97


def test_static_qdq_per_channel_is_smaller_and_agrees(static, onnx_artifact):
    assert static.name == "digits_cnn-onnx-int8" and static.precision is Precision.INT8
    model = onnx.load(str(static.path))
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= _ops(static.path)
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    # per-channel: the first conv's weight scale holds one value per output channel
    assert any(n.op_type == "DequantizeLinear" and inits.get(n.input[1]) == [16] for n in model.graph.node)
    assert static.extra["calibration_samples"] == 300 and static.extra["quant_format"] == "QDQ"
    assert static.inputs == onnx_artifact.inputs
    assert static.size_bytes * 2 < onnx_artifact.size_bytes
    assert static.validation.top1_agreement >= 0.97


@pytest.mark.parametrize("which", ["dynamic", "static"])
def test_each_quantized_onnx_runs_on_the_local_device(which, request, trained_cnn, tmp_path):
    art = request.getfixturevalue(which)
    bundle = make_bundle(art, tmp_path / "bundle", trained_cnn.dataset.x_test, trained_cnn.dataset.y_test)
    m = LocalDevice().run(bundle, RunSpec(runs=20, warmup=2))
    assert m.ok, m.error
    assert m.runtime == "onnxruntime" and len(m.samples_ns) >= 20
    assert m.n_eval == 450 and m.accuracy is not None
    assert abs(m.accuracy - trained_cnn.metrics["test_accuracy"]) <= 0.02


def test_static_without_calibration_samples_raises(onnx_artifact, trained_cnn, tmp_path):
    empty = dataclasses.replace(trained_cnn.dataset, x_train=trained_cnn.dataset.x_train[:0])
    with pytest.raises(CalibrationError, match="got 0"):
        quantize_onnx(onnx_artifact, dataclasses.replace(trained_cnn, dataset=empty), tmp_path, Precision.INT8)


def test_agreement_below_the_bar_raises_with_the_number(onnx_artifact, trained_cnn, tmp_path):
    with pytest.raises(AgreementError) as exc:
        quantize_onnx(onnx_artifact, trained_cnn, tmp_path, Precision.INT8_DYNAMIC, min_agreement=1.01)
    assert 0.97 <= exc.value.agreement <= 1.0


def test_only_fp32_onnx_in_and_int8_out(onnx_artifact, dynamic, trained_cnn, tmp_path):
    with pytest.raises(ExportError, match="needs an fp32 ONNX artifact"):
        quantize_onnx(dynamic, trained_cnn, tmp_path, Precision.INT8)
    with pytest.raises(ExportError, match="not fp32"):
        quantize_onnx(onnx_artifact, trained_cnn, tmp_path, Precision.FP32)


def _optimized_ops(path, tmp_path) -> list:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]


def test_uint8_activations_run_every_conv_as_qlinearconv(onnx_artifact, trained_cnn, tmp_path):
    u8 = quantize_onnx(onnx_artifact, trained_cnn, tmp_path, Precision.INT8, activations="uint8")
    assert u8.extra["activations"] == "uint8" and u8.extra["weights"] == "int8"
    assert u8.validation.top1_agreement >= 0.97
    ops = _optimized_ops(u8.path, tmp_path)
    assert "QLinearConv" in ops and "Conv" not in ops  # onnxruntime fused every DQ -> Conv -> Q
    with pytest.raises(ExportError, match="INT8 activations must be one of int8, uint8"):
        quantize_onnx(onnx_artifact, trained_cnn, tmp_path / "bad", Precision.INT8, activations="int4")
