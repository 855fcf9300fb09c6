"""The runner streams a step model: per-step latency with the state carried, per-window latency (T calls from
rest) and the accuracy of streamed windows, which equals the window model's predictions."""
import dataclasses

import numpy as np
import pytest
import torch

from edgebench.deploy.bundle import make_bundle
from edgebench.devices.local import LocalDevice
from edgebench.export.onnx import describe_onnx
from edgebench.export.step import export_onnx_step, onnx_stream_spec, streamed_window_twin, tflite_stream_spec
from edgebench.train.l2mu import L2MU
from edgebench.types import RunSpec

STEPS = 12


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    m = L2MU(6, 4, hidden_size=12, memory_size=2, order=4, theta=STEPS, input_size=8, neuron="lif",
             memory_gain=0.5).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(2.0)
    return m


def _data(model):
    x = np.random.default_rng(0).standard_normal((9, 6, STEPS)).astype(np.float32)
    with torch.no_grad():
        window_pred = model(torch.from_numpy(x)).numpy().argmax(1)
    y = window_pred.copy()
    y[:3] = (y[:3] + 1) % 4  # three wrong labels: the streamed accuracy must be exactly 6/9
    return x, y, window_pred


def _artifact(model, tmp_path, fmt):
    step = model.step_module()
    if fmt == "onnx":
        path = export_onnx_step(step, 6, tmp_path / "step.onnx", 17)
        a = describe_onnx(path, name="lif-step-onnx-fp32", model_name="lif")
        spec = onnx_stream_spec(step, STEPS)
    else:
        from edgebench.export.tflite import convert_tflite_step
        from edgebench.export.tflite_model import describe_tflite

        path = convert_tflite_step(step, 6, tmp_path / "step.tflite")
        a = describe_tflite(path, name="lif-step-tflite-fp32", model_name="lif")
        spec = tflite_stream_spec(path, step, STEPS)
    return dataclasses.replace(a, extra={"graph": "step", "stream": spec})


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_runner_streams_step_and_window_with_streamed_accuracy(model, tmp_path, fmt):
    x, y, window_pred = _data(model)
    step_art = _artifact(model, tmp_path, fmt)
    device, spec = LocalDevice(), RunSpec(runs=30, warmup=3)
    results = {}
    for art in (step_art, streamed_window_twin(step_art)):
        bundle = make_bundle(art, tmp_path / art.name, x, y)
        assert bundle.manifest["stream"]["mode"] == art.extra["stream"]["mode"]
        fed = {f["name"]: f for f in bundle.manifest["feeds"]}
        carried = [i for i, _ in art.extra["stream"]["carry"]]
        assert all(fed[n]["source"].startswith("zeros") for n in carried)  # every window starts from rest
        m = device.run(bundle, spec)
        assert m.ok, m.error
        assert m.predictions == window_pred.tolist()  # streamed windows = the window model
        assert m.accuracy == pytest.approx(6 / 9)
        assert len(m.samples_ns) >= 30
        results[art.extra["stream"]["mode"]] = float(np.median(m.samples_ns))
    # a streamed window is STEPS calls: it cannot take less than a few single steps
    assert results["window"] > 3 * results["step"]


def test_stream_bundle_refuses_windows_of_another_length(model, tmp_path):
    from edgebench.types import EdgebenchError

    art = _artifact(model, tmp_path, "onnx")
    x = np.zeros((4, 6, STEPS + 1), np.float32)
    with pytest.raises(EdgebenchError, match="streams windows"):
        make_bundle(art, tmp_path / "b", x, np.zeros(4, int))


def test_onnx_stepper_bindings_equal_session_run_and_reset_to_rest(model, tmp_path):
    """The runner keeps an ONNX step model's state in onnxruntime's tensors (two alternating IOBindings); a
    build without OrtValue.update_inplace falls back to session.run. Both give the window model's scores, and
    reset() starts the next window from rest."""
    import types

    import onnxruntime

    from edgebench.deploy import runner

    x, _, _ = _data(model)
    art = _artifact(model, tmp_path, "onnx")
    stream = art.extra["stream"]
    backend = runner.OnnxBackend(str(art.path), 1)
    feed = {i.name: np.zeros([len(x)] + list(i.shape[1:]), np.float32) for i in backend.session.get_inputs()}
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    old_build = types.SimpleNamespace(OrtValue=types.SimpleNamespace())  # no update_inplace
    got = {}
    for label, ort_module in (("bindings", onnxruntime), ("session.run", old_build)):
        backend.ort = ort_module
        stepper = backend.stepper(feed, stream)
        assert (stepper.binds is not None) == (label == "bindings")
        for _ in range(2):  # the second window must start from rest again
            stepper.reset()
            for t in range(STEPS):
                stepper.step(np.ascontiguousarray(x[:, :, t]))
            got[label] = np.asarray(stepper.output()) / STEPS
            np.testing.assert_allclose(got[label], want, rtol=0, atol=1e-5 * max(1.0, float(np.abs(want).max())))
    np.testing.assert_array_equal(got["bindings"], got["session.run"])
