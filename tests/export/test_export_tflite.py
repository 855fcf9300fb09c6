"""TFLite export with litert-torch: float, static INT8, dynamic-range INT8; real converter and interpreter."""
import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from edgebench.deploy.bundle import make_bundle
from edgebench.deploy.runner import TfliteBackend
from edgebench.devices.local import LocalDevice
from edgebench.export.errors import AgreementError, CalibrationError, ExportError
from edgebench.export.tflite import convert_tflite, describe_tflite, export_tflite, run_tflite
from edgebench.types import EdgebenchError, Format, Precision, RunSpec


@pytest.fixture(scope="module")
def tflite_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tflite")


@pytest.fixture(scope="module")
def fp32(trained_cnn, tflite_dir):
    return export_tflite(trained_cnn, tflite_dir, Precision.FP32)


@pytest.fixture(scope="module")
def int8(trained_cnn, tflite_dir):
    return export_tflite(trained_cnn, tflite_dir, Precision.INT8)


@pytest.fixture(scope="module")
def int8_dynamic(trained_cnn, tflite_dir):
    return export_tflite(trained_cnn, tflite_dir, Precision.INT8_DYNAMIC)


def test_float_tflite_matches_pytorch_within_atol(fp32, trained_cnn):
    assert fp32.name == "digits_cnn-tflite-fp32" and fp32.path.name == "digits_cnn-tflite-fp32.tflite"
    assert fp32.format is Format.TFLITE and fp32.precision is Precision.FP32
    assert fp32.inputs[0].shape == (1, 1, 8, 8) and fp32.inputs[0].dtype == "float32"  # NCHW, batch 1
    assert fp32.outputs[0].shape == (1, 10)
    v = fp32.validation
    assert v.n_samples == len(trained_cnn.dataset.x_test) == 450
    assert v.atol == 1e-4 and v.max_abs_diff <= 1e-4
    assert v.top1_agreement == 1.0


def test_static_int8_is_full_integer_and_agrees_with_pytorch(int8, fp32):
    assert int8.name == "digits_cnn-tflite-int8" and int8.precision is Precision.INT8
    assert int8.inputs[0].shape == (1, 1, 8, 8)
    assert int8.inputs[0].dtype == "int8" and int8.outputs[0].dtype == "int8"
    assert int8.extra["calibration_samples"] == 300
    assert int8.extra["input_quantization"][0]["scale"] > 0
    assert int8.validation.atol is None and int8.validation.top1_agreement >= 0.98
    assert int8.size_bytes * 2.5 < fp32.size_bytes


def test_dynamic_range_int8_keeps_float_io_and_agrees(int8_dynamic, fp32):
    assert int8_dynamic.name == "digits_cnn-tflite-int8-dynamic"
    assert int8_dynamic.precision is Precision.INT8_DYNAMIC
    assert int8_dynamic.inputs[0].dtype == "float32" and int8_dynamic.outputs[0].dtype == "float32"
    assert int8_dynamic.validation.top1_agreement >= 0.98
    assert int8_dynamic.size_bytes * 2.5 < fp32.size_bytes


def test_params_and_macs_read_from_the_flatbuffer(fp32, int8, trained_cnn):
    with FlopCounterMode(display=False) as counter:
        trained_cnn.module(trained_cnn.example_input(1))
    torch_macs = counter.get_total_flops() // 2  # conv + linear only, the same definition
    torch_params = sum(p.numel() for p in trained_cnn.module.parameters())
    for art in (fp32, int8):
        assert art.macs == torch_macs == 309248
        assert art.params == torch_params
        assert "CONV_2D" in art.macs_definition
    # a 1-channel conv becomes a depthwise conv; ReLU is fused into the convs
    lines = fp32.encoding.splitlines()
    assert lines[0] == "input 1x1x8x8"
    assert "DEPTHWISE_CONV_2D(fused=relu, Param[1x3x3x16], Param[16])" in lines[1]
    assert "FULLY_CONNECTED(Param[10x512], Param[10])" in lines[1]


def test_describe_any_user_file_infers_precision(int8, int8_dynamic, fp32, tmp_path):
    for art in (fp32, int8, int8_dynamic):
        copy = tmp_path / f"user-{art.precision.value}.tflite"
        copy.write_bytes(art.path.read_bytes())
        got = describe_tflite(copy)
        assert got.name == copy.stem and got.precision is art.precision
        assert got.sha256 == art.sha256 and got.size_bytes == art.size_bytes
        assert got.inputs == art.inputs and got.validation is None


@pytest.mark.parametrize("keep", [0, 100, 20000])
def test_truncated_or_junk_file_is_one_clear_error(fp32, tmp_path, keep):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(fp32.path.read_bytes()[:keep] if keep else b"this is not a flatbuffer")
    with pytest.raises(EdgebenchError) as exc:
        describe_tflite(bad)
    msg = str(exc.value)
    assert msg.startswith("not a valid TFLite model:") and "\n" not in msg


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(EdgebenchError, match="model file not found"):
        describe_tflite(tmp_path / "nope.tflite")


def test_int8_without_calibration_data_raises(trained_cnn, tmp_path):
    with pytest.raises(CalibrationError, match="calibration samples, got 0"):
        export_tflite(trained_cnn, tmp_path, Precision.INT8, calib_x=np.zeros((0, 1, 8, 8), np.float32))
    empty = dataclasses.replace(trained_cnn.dataset, x_train=trained_cnn.dataset.x_train[:0])
    with pytest.raises(CalibrationError, match="got 0"):
        export_tflite(dataclasses.replace(trained_cnn, dataset=empty), tmp_path, Precision.INT8)
    with pytest.raises(CalibrationError, match="per sample"):
        export_tflite(trained_cnn, tmp_path, Precision.INT8, calib_x=np.zeros((32, 1, 4, 4), np.float32))
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_unsupported_op_is_an_export_error_with_a_one_line_reason(tmp_path):
    class Svd(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.svd(x)[1]

    with pytest.raises(ExportError) as exc:
        convert_tflite(Svd(), torch.rand(1, 3, 3), tmp_path / "svd.tflite")
    msg = str(exc.value)
    assert msg.startswith("TFLite conversion (fp32) failed:") and "svd" in msg and "\n" not in msg


def test_agreement_below_the_bar_raises_with_the_number(trained_cnn, tmp_path):
    with pytest.raises(AgreementError) as exc:
        export_tflite(trained_cnn, tmp_path, Precision.INT8_DYNAMIC, min_agreement=1.01)
    assert 0.98 <= exc.value.agreement <= 1.0 and exc.value.required == 1.01


def test_runner_backend_feeds_a_fixed_batch_file_any_number_of_samples(int8, trained_cnn):
    x = trained_cnn.dataset.x_test[:7]
    backend = TfliteBackend(str(int8.path), threads=1)
    assert backend.input_specs() == [("serving_default_args_0", [1, 1, 8, 8], "int8")]
    got = backend.predict(x)  # quantized in, dequantized out, one sample at a time
    assert got.shape == (7, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, run_tflite(int8.path, x))


@pytest.mark.parametrize("which", ["fp32", "int8", "int8_dynamic"])
def test_each_tflite_artifact_runs_on_the_local_device(which, request, trained_cnn, tmp_path):
    art = request.getfixturevalue(which)
    bundle = make_bundle(art, tmp_path / "bundle", trained_cnn.dataset.x_test, trained_cnn.dataset.y_test)
    m = LocalDevice().run(bundle, RunSpec(runs=20, warmup=2, threads=2))
    assert m.ok, m.error
    assert m.runtime == "ai_edge_litert" and m.threads == 2
    assert len(m.samples_ns) >= 20 and min(m.samples_ns) > 0
    assert m.n_eval == 450 and m.accuracy is not None
    assert abs(m.accuracy - trained_cnn.metrics["test_accuracy"]) <= 0.02


def test_tflite_kernels_builtin_or_auto_run_the_same_file_and_say_which(int8, trained_cnn, tmp_path):
    """XNNPACK (LiteRT's default), TFLite's builtin kernels, or auto: both probed on the device and the faster
    kept. The record says which kernels ran, and auto's probe medians; accuracy holds on every path."""
    from edgebench.devices.protocol import runner_args

    bundle = make_bundle(int8, tmp_path / "bundle", trained_cnn.dataset.x_test, trained_cnn.dataset.y_test)
    got = {}
    for kernels in ("xnnpack", "builtin", "auto"):
        m = LocalDevice().run(bundle, RunSpec(runs=10, warmup=1, tflite_kernels=kernels))
        assert m.ok, m.error
        assert abs(m.accuracy - trained_cnn.metrics["test_accuracy"]) <= 0.02
        got[kernels] = m.extra
    assert got["xnnpack"]["tflite_kernels"] == "xnnpack" and "tflite_kernels_probe_ms" not in got["xnnpack"]
    assert got["builtin"]["tflite_kernels"] == "builtin"
    probe = got["auto"]["tflite_kernels_probe_ms"]
    assert set(probe) == {"xnnpack", "builtin"} and all(v > 0 for v in probe.values())
    assert got["auto"]["tflite_kernels"] == min(probe, key=probe.get)
    # two threads for the accuracy pass: two sessions on the timed runs' one thread each, the same predictions
    one = LocalDevice().run(bundle, RunSpec(runs=5, warmup=1, tflite_kernels="builtin"))
    for kernels in ("builtin", "xnnpack"):
        m = LocalDevice().run(bundle, RunSpec(runs=5, warmup=1, tflite_kernels=kernels, eval_threads=2))
        assert m.ok and m.n_eval == 450 and m.extra["eval_threads"] == 2 and m.extra["eval_sessions"] == 2
        assert m.predictions == one.predictions
    (bundle.path / "model.tflite").write_bytes(b"not a flatbuffer" * 64)  # auto on a broken file: its error
    m = LocalDevice().run(bundle, RunSpec(runs=5, warmup=1, tflite_kernels="auto"))
    assert not m.ok and "runner error" in m.error and "min()" not in m.error
    assert runner_args(RunSpec(tflite_kernels="auto"))[-2:] == ["--tflite-kernels", "auto"]
    assert "--tflite-kernels" not in runner_args(RunSpec())
    builtin = TfliteBackend(str(int8.path), threads=1, kernels="builtin")
    step = builtin.out["quantization"][0]  # the kernels may round differently: one output step at most
    diff = builtin.predict(trained_cnn.dataset.x_test[:50]) - TfliteBackend(str(int8.path), 1).predict(
        trained_cnn.dataset.x_test[:50])
    assert step > 0 and np.abs(diff).max() <= step * 1.001


def test_run_tflite_on_many_samples_probes_the_kernels_and_keeps_the_numbers(int8, trained_cnn):
    """Host-side validation runs 50+ chunks on the builtin kernels where those are clearly faster; either
    way its outputs stay within one output quantization step of the runner's XNNPACK session."""
    x = trained_cnn.dataset.x_test[:120]
    runner = TfliteBackend(str(int8.path), threads=1)
    diff = run_tflite(int8.path, x) - runner.predict(x)
    assert np.abs(diff).max() <= runner.out["quantization"][0] * 1.001
