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
