"""The predictor counts the nodes an ARM device's onnxruntime runs (search/predictor_terms.py runtime_nodes) on
this host, without the x86-only NCHWc transformer. Checked against the real aarch64 onnxruntime under qemu."""
from __future__ import annotations

import math
import platform
import subprocess

import onnx
from onnx import TensorProto, helper

from edgebench.search.predictor_terms import X86, runtime_nodes

GUEST = """
import sys, onnxruntime as ort
so = ort.SessionOptions()
so.optimized_model_filepath = sys.argv[2]
so.intra_op_num_threads = 1
so.log_severity_level = 3
ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
"""


def _hardswish_cnn() -> onnx.ModelProto:
    """Two convolutions with HardSwish (what the zoo's CNNs are made of), global pooling."""
    def w(name, shape):
        return helper.make_tensor(name, TensorProto.FLOAT, shape, [0.01] * math.prod(shape))

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("HardSwish", ["c1"], ["h1"]),
             helper.make_node("Conv", ["h1", "w2", "b2"], ["c2"]),
             helper.make_node("HardSwish", ["c2"], ["h2"]),
             helper.make_node("GlobalAveragePool", ["h2"], ["y"])]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 1, 1])],
                              [w("w1", [16, 8, 3, 3]), w("b1", [16]), w("w2", [16, 16, 1, 1]), w("b2", [16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def test_an_arm_devices_node_count_is_the_aarch64_onnxruntimes(aarch64_python, tmp_path):
    model = _hardswish_cnn()
    src, opt = tmp_path / "cnn.onnx", tmp_path / "opt.onnx"
    onnx.save(model, str(src))
    (tmp_path / "guest.py").write_text(GUEST)
    subprocess.run([str(aarch64_python), str(tmp_path / "guest.py"), str(src), str(opt)], check=True, timeout=600,
                   capture_output=True)
    guest = onnx.load(str(opt)).graph.node
    assert not [n for n in guest if n.op_type.startswith("Reorder")]  # no NCHWc on ARM
    assert runtime_nodes(model, "aarch64") == len(guest), [n.op_type for n in guest]
    if platform.machine().lower() in X86:  # here the host's own optimizer converts layouts
        host = runtime_nodes(model)
        assert host == runtime_nodes(model, "x86_64")
        assert host != len(guest)
