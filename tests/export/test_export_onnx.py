import numpy as np
import onnx
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from edgebench.export.errors import AtolError, ShapeError
from edgebench.export.onnx import compare, describe_onnx, export_onnx, onnx_encoding, reference_outputs, run_onnx
from edgebench.types import EdgebenchError, Format, Precision


def test_export_is_one_file_with_stated_opset_and_dynamic_batch(onnx_artifact):
    assert onnx_artifact.format is Format.ONNX and onnx_artifact.precision is Precision.FP32
    assert onnx_artifact.opset == 17
    assert list(onnx_artifact.path.parent.glob("*.data")) == []  # weights inside the file
    model = onnx.load(str(onnx_artifact.path))
    assert {i.name for i in model.graph.initializer}  # weights are embedded
    assert onnx_artifact.inputs[0].shape == ("batch", 1, 8, 8)
    assert onnx_artifact.outputs[0].shape == ("batch", 10)


def test_validation_against_pytorch_on_real_eval_inputs(onnx_artifact, trained_cnn):
    v = onnx_artifact.validation
    assert v.n_samples == len(trained_cnn.dataset.x_test) == 450
    assert v.atol == 1e-4 and v.max_abs_diff <= 1e-4
    assert v.top1_agreement == 1.0


def test_tolerance_exceeded_raises_atol_error_with_the_number(trained_cnn, onnx_artifact):
    x = trained_cnn.dataset.x_test[:50]
    ref = reference_outputs(trained_cnn.module, x)
    got = run_onnx(onnx_artifact.path, x) + 0.5  # a wrong export by half a logit
    with pytest.raises(AtolError) as exc:
        compare(ref, got, atol=1e-4)
    assert exc.value.max_diff == pytest.approx(0.5, abs=1e-4)
    assert exc.value.atol == 1e-4


def test_a_spiking_model_may_differ_in_a_few_windows_only():
    """A spike flipped by rounding changes one window's scores far beyond atol; a spiking model is allowed
    SPIKE_FLIP_SHARE of such windows, a continuous model none, and a wrong export fails either way."""
    from edgebench.export.onnx import SPIKE_FLIP_SHARE, spike_flip_share
    from edgebench.train.l2mu import L2MU

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(1000, 4)).astype(np.float32)
    got = ref.copy()
    got[7, 2] += 0.04  # one window: a membrane at threshold fired in one runtime only
    share = spike_flip_share(L2MU(6, 4, hidden_size=8, input_size=8))
    assert share == SPIKE_FLIP_SHARE and spike_flip_share(torch.nn.Linear(2, 2)) == 0.0
    v = compare(ref, got, atol=1e-4, flip_share=share)
    assert v.beyond_atol == 1 and v.max_abs_diff == pytest.approx(0.04, rel=1e-3)
    assert v.flips() == ", 1 of 1000 samples beyond atol (spike flips)"
    with pytest.raises(AtolError):  # the same difference in a continuous model is an export error
        compare(ref, got, atol=1e-4)
    got[:6] += 0.04  # 7 windows > 0.5 % of 1000: not rounding any more
    with pytest.raises(AtolError, match="in 7 of 1000 samples"):
        compare(ref, got, atol=1e-4, flip_share=share)
    assert compare(ref, ref, atol=1e-4, flip_share=share).flips() == ""


def test_shape_mismatch_raises_shape_error(trained_cnn, onnx_artifact):
    x = trained_cnn.dataset.x_test[:20]
    ref = reference_outputs(trained_cnn.module, x)
    with pytest.raises(ShapeError) as exc:
        compare(ref, ref[:, :5], atol=1e-4)
    assert exc.value.expected == (20, 10) and exc.value.got == (20, 5)


def test_macs_cross_checked_against_pytorch_conv_and_linear(onnx_artifact, trained_cnn):
    # PyTorch's counter gives FLOPs = 2 x MACs of conv/linear only; onnx-tool counts the graph and also
    # counts one MAC per output element for bias adds, activations and pooling.
    with FlopCounterMode(display=False) as counter:
        trained_cnn.module(trained_cnn.example_input(1))
    torch_macs = counter.get_total_flops() // 2
    by_op = onnx_artifact.extra["macs_by_op"]
    conv_gemm = by_op["Conv"] + by_op["Gemm"]
    # onnx-tool's Conv/Gemm include their bias adds: one per output element
    bias_adds = 16 * 8 * 8 + 32 * 8 * 8 + 10
    assert conv_gemm == torch_macs + bias_adds
    assert onnx_artifact.macs == sum(by_op.values())
    assert onnx_artifact.macs > torch_macs
    assert "bias adds" in onnx_artifact.macs_definition
    assert onnx_artifact.params == sum(p.numel() for p in trained_cnn.module.parameters())


def test_encoding_is_an_onnx_net_style_chain(onnx_artifact):
    enc = onnx_artifact.encoding.splitlines()
    assert enc[0] == "input 1x1x8x8"
    chain = enc[1].split(" --> ")
    assert [c.split("(")[0] for c in chain] == ["Conv", "Relu", "Conv", "Relu", "MaxPool", "Flatten", "Gemm"]
    assert "Param[16x1x3x3]" in chain[0] and "kernel_shape=3x3" in chain[0]
    assert "Param[10x512]" in chain[-1]


def test_encoding_names_inputs_of_a_branching_graph(tmp_path):
    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(4, 4)

        def forward(self, x):
            return torch.relu(self.a(x)) + x

    path = export_onnx(Residual(), torch.zeros(1, 4), tmp_path / "res.onnx")
    enc = onnx_encoding(onnx.load(str(path)))
    assert enc.splitlines()[0] == "input 1x4"
    assert any(line.startswith("Add(") for line in enc.splitlines())


def test_describe_rejects_a_truncated_file(onnx_artifact, tmp_path):
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(onnx_artifact.path.read_bytes()[:1000])
    with pytest.raises(EdgebenchError, match="not a valid ONNX model"):
        describe_onnx(bad)


def test_describe_any_user_onnx_file(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 3))
    path = export_onnx(net, torch.zeros(1, 20), tmp_path / "user.onnx")
    a = describe_onnx(path)
    assert a.params == 20 * 30 + 30 + 30 * 3 + 3
    assert a.macs is not None and a.macs >= 20 * 30 + 30 * 3
    assert a.size_bytes == path.stat().st_size and len(a.sha256) == 64
