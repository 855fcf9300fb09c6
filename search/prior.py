"""Prior sampling, nn-Meter style: kernels of the common operators at random configurations across their
spaces, independent of any model, so that the regressors interpolate for a configuration no learned model
had (a dense 5x5 convolution from 8 to 16 channels at 32x32, a 1-D convolution, a GRU of another size).

Each sample is a tiny ONNX graph of one kernel, split by search/kernels.py like any model, so it gets the same
type, features and key as the same kernel found in a user's graph. The families: 2-D convolutions (dense,
depthwise, pointwise; stride 1 or 2; plain, +Relu, +HardSwish), 1-D convolutions, Gemm and MatMul (+bias,
+Relu), activation x activation MatMul, GRU and LSTM, elementwise ops (two inputs, broadcast, unary) and the
data movement a recurrent or spiking graph is made of (Concat, Split, Slice).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgebench.search.kernels import Kernel, run_shapes, split_kernels

F = TensorProto.FLOAT


def _log_int(rng, lo: int, hi: int) -> int:
    return int(round(float(np.exp(rng.uniform(np.log(lo), np.log(hi))))))


def _w(rng, name: str, shape) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)


def _model(nodes, inputs: dict, inits, outputs=("y",), out_type=F) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "prior", [helper.make_tensor_value_info(n, F, list(s)) for n, s in inputs.items()],
                          [helper.make_tensor_value_info(o, out_type, None) for o in outputs], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _act(rng, nodes: list, src: str, acts=("", "Relu", "HardSwish")) -> None:
    act = acts[int(rng.integers(len(acts)))]
    if act:
        nodes[-1].output[0] = "pre"
        nodes.append(helper.make_node(act, ["pre"], [src]))


def conv2d(rng):
    kind = ("dense", "depthwise", "pointwise")[int(rng.integers(3))]
    c_in = _log_int(rng, 3, 192) if kind != "depthwise" else _log_int(rng, 8, 384)
    c_out = c_in if kind == "depthwise" else _log_int(rng, 8, 192)
    k = 1 if kind == "pointwise" else int(rng.choice([3, 5, 7] if kind == "depthwise" else [3, 5]))
    side, stride = int(rng.integers(2, 33)), int(rng.choice([1, 1, 2]))
    groups = c_in if kind == "depthwise" else 1
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[k // 2] * 4, strides=[stride] * 2, group=groups)]
    _act(rng, nodes, "y")
    return _model(nodes, {"x": (1, c_in, side, side)}, [_w(rng, "w", (c_out, c_in // groups, k, k)),
                                                         _w(rng, "b", (c_out,))])


def conv1d(rng):
    depthwise = rng.random() < 0.25
    c_in = _log_int(rng, 3, 128)
    c_out = c_in if depthwise else _log_int(rng, 8, 128)
    k, stride, length = int(rng.choice([1, 3, 5, 7])), int(rng.choice([1, 1, 2])), _log_int(rng, 8, 256)
    groups = c_in if depthwise else 1
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[k // 2] * 2, strides=[stride], group=groups)]
    _act(rng, nodes, "y", ("", "Relu"))
    return _model(nodes, {"x": (1, c_in, length)}, [_w(rng, "w", (c_out, c_in // groups, k)),
                                                    _w(rng, "b", (c_out,))])


def gemm(rng):
    k, n, rows = _log_int(rng, 4, 1024), _log_int(rng, 2, 1024), int(rng.choice([1, 1, 1, 4, 16, 64]))
    if rows == 1 and rng.random() < 0.6:  # what a classifier head exports to
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]
        _act(rng, nodes, "y", ("", "Relu"))
        return _model(nodes, {"x": (1, k)}, [_w(rng, "w", (n, k)), _w(rng, "b", (n,))])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["y"])]
    _act(rng, nodes, "y", ("", "Relu"))
    return _model(nodes, {"x": (1, rows, k)}, [_w(rng, "w", (k, n)), _w(rng, "b", (n,))])


def matmul_act(rng):
    heads, s, d = int(rng.choice([1, 2, 4])), _log_int(rng, 4, 128), _log_int(rng, 8, 64)
    t = rng.random() < 0.5  # scores (s x d @ d x s) or context (s x s @ s x d)
    a, b = ((1, heads, s, d), (1, heads, d, s)) if t else ((1, heads, s, s), (1, heads, s, d))
    return _model([helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": a, "b": b}, [])


def recurrent(rng):
    op = ("GRU", "LSTM")[int(rng.integers(2))]
    gates = 3 if op == "GRU" else 4
    i, h, steps = _log_int(rng, 2, 128), _log_int(rng, 4, 256), _log_int(rng, 1, 128)
    node = helper.make_node(op, ["x", "w", "r", "b"], ["y"], hidden_size=h)
    return _model([node], {"x": (steps, 1, i)}, [_w(rng, "w", (1, gates * h, i)), _w(rng, "r", (1, gates * h, h)),
                                                 _w(rng, "b", (1, 2 * gates * h))])


def elementwise(rng):
    n = _log_int(rng, 4, 65536)
    shape = (1, n) if rng.random() < 0.5 else (1, max(n // 64, 1), 64)
    r = rng.random()
    if r < 0.35:
        op = str(rng.choice(["Add", "Sub", "Mul", "Div", "Greater"]))
        return _model([helper.make_node(op, ["a", "b"], ["y"])], {"a": shape, "b": shape}, [],
                      out_type=TensorProto.BOOL if op == "Greater" else F)
    if r < 0.55:  # one operand broadcast (a bias, a per-channel scale, a threshold)
        op = str(rng.choice(["Add", "Sub", "Mul", "Div"]))
        return _model([helper.make_node(op, ["a", "c"], ["y"])], {"a": shape},
                      [_w(rng, "c", shape[-1:] if rng.random() < 0.5 else (1,))])
    op = str(rng.choice(["Relu", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "Neg", "Exp"]))
    return _model([helper.make_node(op, ["a"], ["y"])], {"a": shape}, [])


def data_movement(rng):
    n, parts = _log_int(rng, 2, 1024), int(rng.choice([2, 3]))
    r = rng.random()
    if r < 0.4:
        names = [f"x{j}" for j in range(parts)]
        return _model([helper.make_node("Concat", names, ["y"], axis=1)], {nm: (1, n) for nm in names}, [])
    if r < 0.7:
        outs = [f"y{j}" for j in range(parts)]
        if rng.random() < 0.5:  # equal parts without sizes, as exporters also write it
            return _model([helper.make_node("Split", ["x"], outs, axis=1)], {"x": (1, n * parts)}, [], outputs=outs)
        return _model([helper.make_node("Split", ["x", "sizes"], outs, axis=1)], {"x": (1, n * parts)},
                      [numpy_helper.from_array(np.full(parts, n, np.int64), "sizes")], outputs=outs)
    start = int(rng.integers(0, n))
    return _model([helper.make_node("Slice", ["x", "s", "e", "ax"], ["y"])], {"x": (1, 2 * n)},
                  [numpy_helper.from_array(np.array([start], np.int64), "s"),
                   numpy_helper.from_array(np.array([start + n], np.int64), "e"),
                   numpy_helper.from_array(np.array([1], np.int64), "ax")])


FAMILIES = {"conv2d": conv2d, "conv1d": conv1d, "gemm": gemm, "matmul_act": matmul_act, "recurrent": recurrent,
            "elementwise": elementwise, "data_movement": data_movement}
WEIGHT = {"conv2d": 3, "conv1d": 3, "gemm": 2, "matmul_act": 1, "recurrent": 2, "elementwise": 1,
          "data_movement": 1}  # samples per family, relative: convolutions have the most classes; 1-D ones and
# recurrent cells have several parameters each (5-fold cross-validation on a build with 40 1-D convolutions:
# 10% of them within +-5%; 20 LSTMs: 30%)


def prior_kernels(n: int, seed: int = 0) -> list[tuple[Kernel, onnx.ModelProto, dict]]:
    """About `n` distinct kernels at random configurations, spread over the families by WEIGHT; each with the
    tiny model and shapes to time it (as search/kernels.py neighbours gives them). Deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    total = sum(WEIGHT.values())
    shares = {name: n * WEIGHT[name] / total for name in FAMILIES}
    wants = {name: int(share) for name, share in shares.items()}  # largest remainders: n in all
    for name in sorted(shares, key=lambda k: int(shares[k]) - shares[k])[:n - sum(wants.values())]:
        wants[name] += 1
    out, seen = [], set()
    for name, make in FAMILIES.items():
        want, got = wants[name], 0
        for _ in range(want * 3):  # a few draws may repeat a configuration
            if got >= want:
                break
            model = make(rng)
            feed = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
                    for i in model.graph.input}
            shapes = run_shapes(model, feed)
            ks = split_kernels(model, shapes=shapes)
            if len(ks) == 1 and ks[0].key not in seen:
                seen.add(ks[0].key)
                out.append((ks[0], model, shapes))
                got += 1
    return out
