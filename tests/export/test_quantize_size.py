"""ONNX dynamic INT8 files are no larger than their fp32 twins: an unrolled window uses each weight once per
step, and a quantized use adds ~6 nodes, so only weights that save more bytes than their uses add are
quantized; a step model (each weight used once) has all its products quantized."""
import collections

import onnx
import torch

from edgebench.export.onnx import export_onnx, export_view
from edgebench.export.quantize import quantize_onnx_file, size_losing_nodes
from edgebench.export.step import export_onnx_step
from edgebench.train.l2mu import L2MU
from edgebench.types import Precision


def _ops(path):
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_unrolled_window_int8_dynamic_is_no_larger_than_fp32(tmp_path):
    torch.manual_seed(0)
    m = L2MU(6, 4, neuron="lif", memory_gain=0.5, theta=40).eval()  # the main job's sizes, 40 steps (HAPT)
    fp32 = export_onnx(export_view(m), torch.randn(1, 6, 40), tmp_path / "w.onnx")
    excluded = size_losing_nodes(fp32)
    assert excluded  # the small encoders are left in float
    q = quantize_onnx_file(fp32, tmp_path / "w-int8.onnx", Precision.INT8_DYNAMIC)
    assert q.stat().st_size <= fp32.stat().st_size
    assert _ops(q)["MatMulInteger"] == 40  # the hidden population's 64 x 192 product, once per step


def test_step_model_int8_dynamic_quantizes_every_product_and_shrinks(tmp_path):
    torch.manual_seed(0)
    step = L2MU(6, 4, neuron="lif", memory_gain=0.5).eval().step_module(fold_state=False)
    fp32 = export_onnx_step(step, 6, tmp_path / "s.onnx", 17)
    assert size_losing_nodes(fp32) == []
    q = quantize_onnx_file(fp32, tmp_path / "s-int8.onnx", Precision.INT8_DYNAMIC)
    assert _ops(q)["MatMulInteger"] == _ops(fp32)["Gemm"] == 5
    assert q.stat().st_size * 2 < fp32.stat().st_size


def test_an_int8_window_larger_than_its_fp32_twin_is_not_kept(tmp_path):
    """The LMU's onnxruntime window (one fused product per step, the memory scaled by 2^-16) loses its accuracy
    in int8, so its INT8 file would come from the unfolded graph, whose 100 steps carry more nodes than the fused
    fp32 file: the export fails with one line that says why, and leaves no file."""
    import numpy as np
    import pytest

    from edgebench.export.errors import ExportError
    from edgebench.export.onnx import export_and_validate
    from edgebench.export.quantize import quantize_onnx
    from edgebench.train.base import Dataset, Trained
    from edgebench.train.lmu import LMU

    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((40, 6, 100)).astype(np.float32)
    data = Dataset("synthetic", x, np.zeros(40, np.int64), x, np.zeros(40, np.int64), tuple("abcd"), "random")
    lmu = LMU(6, 4, hidden_size=64, memory_size=4, order=8, theta=100).eval()
    with torch.no_grad():  # untrained, every window would get the same class: spread the scores
        lmu.readout.weight.mul_(50.0)
        lmu.readout.bias.zero_()
    trained = Trained("lmu", "lmu", lmu, data, {})
    fp32 = export_and_validate(trained, tmp_path)
    with pytest.raises(ExportError, match=r"not kept, it would be larger than its fp32 twin \(.* vs 5\d,\d{3} bytes"):
        # this untrained LMU's fused file agrees on 38 of 40 windows in int8, the unfolded one on 39 (0.97 asked)
        quantize_onnx(fp32, trained, tmp_path, Precision.INT8_DYNAMIC, min_agreement=0.97)
    assert not (tmp_path / "lmu-onnx-int8-dynamic.onnx").exists()
