"""The predictor's parts that need no device: shape arithmetic baked into a kernel, adaptive sampling around a
kernel's configuration, kernel features and keys, prior samples (the overhead fit: test_predictor_overhead.py)."""
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgebench.search.kernels import kernel_model, neighbours, run_shapes, split_kernels
from edgebench.search.predictor import PREDICTOR_FORMAT
from edgebench.search.predictor_fit import KernelPredictor
from tests.search.test_predictor_overhead import _doc


def _expand_model() -> onnx.ModelProto:
    """y = Expand(x, [batch, 32, 16]) with the target computed from x's shape at run time (free batch)."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "zero", "one"], ["b"]),
             helper.make_node("Concat", ["b", "rest"], ["target"], axis=0),
             helper.make_node("Expand", ["x", "target"], ["y"])]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([32, 16], np.int64), "rest")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_shape_arithmetic_is_baked_into_the_kernel_so_it_runs_alone_on_zeros():
    model = _expand_model()
    shapes = run_shapes(model, {"x": np.ones((1, 1, 16), np.float32)})
    kernels = split_kernels(model, shapes=shapes)
    assert [k.type for k in kernels] == ["Expand"] and kernels[0].inputs == ["x"]
    tiny = kernel_model(kernels[0], model, shapes)
    baked = {i.name: numpy_helper.to_array(i).tolist() for i in tiny.graph.initializer}
    assert baked == {"target": [1, 32, 16]}
    sess = ort.InferenceSession(tiny.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["x"]
    assert sess.run(None, {"x": np.zeros((1, 1, 16), np.float32)})[0].shape == (1, 32, 16)


def _conv_model(c_in=8, c_out=16, side=12, groups=1) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((c_out, c_in // groups, 3, 3), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(c_out, np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], group=groups),
             helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, side, side])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, b])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_neighbours_scale_channels_and_spatial_size_around_a_conv():
    model = _conv_model()
    shapes = run_shapes(model, {"x": np.zeros((1, 8, 12, 12), np.float32)})
    (k,) = split_kernels(model, shapes=shapes)
    near = neighbours(k, model, shapes)
    got = {(n.features["c_in"], n.features["hw"]) for n, _, _ in near}
    # channels 8 -> 4, 6, 10, 12, 16 at 12x12; side 12 -> 6, 9, 15, 18, 24 at 8 channels
    assert got == {(c, 144) for c in (4, 6, 10, 12, 16)} | {(8, s * s) for s in (6, 9, 15, 18, 24)}
    assert all(n.type == "Conv+Relu" and n.features["c_out"] == 16 for n, _, _ in near)
    n, m, sh = near[0]  # each one is a model of its own that runs
    tiny = kernel_model(n, m, sh)
    sess = ort.InferenceSession(tiny.SerializeToString(), providers=["CPUExecutionProvider"])
    x = sess.get_inputs()[0]
    assert sess.run(None, {x.name: np.zeros(x.shape, np.float32)})[0].shape[1] == 16


def test_neighbours_of_a_depthwise_conv_stay_depthwise():
    model = _conv_model(c_in=16, c_out=16, groups=16)
    shapes = run_shapes(model, {"x": np.zeros((1, 16, 12, 12), np.float32)})
    (k,) = split_kernels(model, shapes=shapes)
    near = [n for n, _, _ in neighbours(k, model, shapes) if n.features["c_in"] != 16]
    assert sorted(n.features["c_in"] for n in near) == [8, 12, 20, 24, 32]
    assert all(n.features["groups"] == n.features["c_in"] == n.features["c_out"] for n in near)


def test_recurrent_and_1d_conv_kernels_get_their_macs(tmp_path):
    import torch
    from torch import nn

    from edgebench.export.onnx import export_onnx

    torch.manual_seed(0)
    gru = export_onnx(nn.GRU(6, 16, batch_first=True).eval(), torch.randn(1, 20, 6), tmp_path / "gru.onnx")
    model = onnx.load(str(gru))
    shapes = run_shapes(model, {model.graph.input[0].name: np.zeros((1, 20, 6), np.float32)})
    (k,) = [k for k in split_kernels(model, shapes=shapes) if k.type == "GRU"]
    assert k.features["macs"] == 20 * (3 * 16 * 6 + 3 * 16 * 16) and k.features["hw"] == 20

    conv = export_onnx(nn.Sequential(nn.Conv1d(6, 8, 5, padding=2), nn.ReLU()).eval(), torch.randn(1, 6, 32),
                       tmp_path / "conv1d.onnx")
    model = onnx.load(str(conv))
    shapes = run_shapes(model, {model.graph.input[0].name: np.zeros((1, 6, 32), np.float32)})
    (k,) = split_kernels(model, shapes=shapes)
    assert k.type == "Conv+Relu" and k.features["macs"] == 8 * 32 * 6 * 5 and k.features["hw"] == 32


def test_a_weight_shared_through_identity_is_a_weight_not_an_input():
    """Exporters deduplicate equal weights and read the copy through Identity: the runtime folds it, so the
    kernel timed alone must hold it as a constant (fed as an input, a convolution takes a slow path)."""
    model = _conv_model()
    g = model.graph
    g.node.insert(0, helper.make_node("Identity", ["w"], ["w_shared"]))
    g.node[1].input[1] = "w_shared"
    shapes = run_shapes(model, {"x": np.zeros((1, 8, 12, 12), np.float32)})
    (k,) = split_kernels(model, shapes=shapes)
    assert k.inputs == ["x"] and k.features["weight_elems"] == 16 * 8 * 9 + 16
    tiny = kernel_model(k, model, shapes)
    assert [i.name for i in tiny.graph.input] == ["x"]
    assert {i.name for i in tiny.graph.initializer} == {"w_shared", "b"}


def test_a_spatial_side_equal_to_the_filter_window_scales_the_input_only():
    w = numpy_helper.from_array(np.ones((8, 8, 5, 5), np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[2, 2, 2, 2])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    shapes = run_shapes(model, {"x": np.zeros((1, 8, 5, 5), np.float32)})
    (k,) = split_kernels(model, shapes=shapes)
    sides = sorted(n.features["hw"] for n, _, _ in neighbours(k, model, shapes) if n.features["c_in"] == 8)
    assert sides == [s * s for s in (2, 4, 6, 8, 10)] and k.features["kernel"] == 5
    assert all(n.features["kernel"] == 5 for n, _, _ in neighbours(k, model, shapes))


def test_a_small_float_slice_is_a_kernel_and_a_small_integer_one_is_shape_arithmetic():
    """A step model slices its few-element state every step: data the runtime moves, unlike a shape vector."""
    nodes = [helper.make_node("Slice", ["state", "start", "end"], ["part"]),
             helper.make_node("Shape", ["state"], ["s"]),
             helper.make_node("Slice", ["s", "start", "end"], ["dims"]),
             helper.make_node("Add", ["part", "part"], ["y"])]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "start"),
             numpy_helper.from_array(np.array([1], np.int64), "end")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("state", TensorProto.FLOAT, [4, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("dims", TensorProto.INT64, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    shapes = run_shapes(model, {"state": np.zeros((4, 8), np.float32)})
    assert [(k.type, k.outputs[0]) for k in split_kernels(model, shapes=shapes)] == [("Slice", "part"), ("Add", "y")]


def test_broadcast_spans_count_the_loops_a_broadcasting_op_walks():
    from edgebench.search.kernels import broadcast_spans

    assert broadcast_spans([(1, 16, 8, 8), (1, 16, 1, 1)], (1, 16, 8, 8)) == 16  # squeeze-excite scale
    assert broadcast_spans([(32, 64), (64,)], (32, 64)) == 32  # a bias over rows
    assert broadcast_spans([(1, 16, 8, 8), (1, 16, 8, 8)], (1, 16, 8, 8)) == 1  # same shapes: one run
    assert broadcast_spans([(1, 16, 8, 8), ()], (1, 16, 8, 8)) == 1  # a scalar


def _rows_doc(rows: list[tuple[str, dict, float]]) -> dict:
    kernels = {"_empty": {"type": "_empty", "features": {}, "instructions": 30000}}
    for i, (t, f, y) in enumerate(rows):
        kernels[f"{t}-{i}"] = {"type": t, "features": f, "instructions": y}
    return {"format": PREDICTOR_FORMAT, "kernels": kernels, "models": {}, "meta": {}}


def _conv_features(c: int, side: int, k: int, groups: int) -> dict:
    hw = side * side
    return {"c_in": c, "c_out": c, "hw": hw, "kernel": k, "stride": 1, "groups": groups, "in_elems": c * hw,
            "out_elems": c * hw, "weight_elems": c * (c // groups) * k * k, "macs": hw * c * (c // groups) * k * k,
            "n_nodes": 2}


def test_a_convolution_is_predicted_from_the_measured_ones_of_its_algorithm():
    """Depthwise and dense convolutions of one type follow different laws (a per-group call vs a GEMM with
    16-wide column tiles): a held-out depthwise one is predicted from the depthwise rows, a dense one from the
    dense rows, each within 2% (mixed into one trend, the depthwise ones were 20-40% off on pi4-emulated)."""
    def dense(c, side, k):
        return 40000 + 2.0 * side * side * (-(-c // 16) * 16) * c * k * k

    def depthwise(c, side, k):
        return 40000 + 900 * c + 12.0 * c * side * side * k * k

    rows = [("Conv+Relu", _conv_features(c, s, k, 1), dense(c, s, k))
            for c in (8, 12, 16, 24, 32, 40, 48) for s in (4, 8, 12) for k in (3, 5)]
    rows += [("Conv+Relu", _conv_features(c, s, k, c), depthwise(c, s, k))
             for c in (8, 16, 24, 32, 48) for s in (4, 8, 12) for k in (5, 7)]
    pred = KernelPredictor(_rows_doc(rows), "instructions")
    from edgebench.search.kernels import Kernel

    for groups, truth in ((1, dense(20, 10, 5)), (20, depthwise(20, 10, 5))):
        k = Kernel("Conv+Relu", [], ["x"], ["y"], _conv_features(20, 10, 5, groups))
        value, how = pred.kernel(k)
        assert how == "regressed" and abs(value / truth - 1) < 0.02, (groups, value, truth)


def test_an_operator_never_measured_is_estimated_from_its_kind():
    """An elementwise op the build never saw takes the trend of the measured elementwise ones, and is
    labelled a fallback; a recurrent cell (more multiply-adds than elements) that of the arithmetic ones."""
    rows = [(t, {"in_elems": n, "out_elems": n, "macs": n, "n_nodes": 1}, 30000 + 3.0 * n)
            for t in ("Add", "Mul", "Relu") for n in (64, 128, 256, 512, 1024, 4096)]
    rows += [("MatMul", {"in_elems": k, "out_elems": n, "macs": k * n, "weight_elems": k * n, "c_in": k, "c_out": n,
                         "n_nodes": 1}, 30000 + 1.5 * k * n) for k in (32, 64, 128) for n in (16, 64, 256)]
    convs = [_conv_features(c, side, 3, 1) for c in (8, 16) for side in (4, 8)]
    rows += [("Conv", f, 30000 + 1.5 * f["macs"]) for f in convs]
    pred = KernelPredictor(_rows_doc(rows), "instructions")
    from edgebench.search.kernels import Kernel

    value, how = pred.kernel(Kernel("Sub", [], ["a", "b"], ["y"], {"in_elems": 2000, "out_elems": 2000,
                                                                    "macs": 2000, "n_nodes": 1}))
    assert how == "fallback" and abs(value / (30000 + 3.0 * 2000) - 1) < 0.05
    value, how = pred.kernel(Kernel("GRU", [], ["x"], ["y"], {"in_elems": 600, "out_elems": 64, "macs": 20000,
                                                             "c_in": 6, "c_out": 64, "hw": 100, "n_nodes": 1}))
    assert how == "fallback" and abs(value / (30000 + 1.5 * 20000) - 1) < 0.10


def test_a_concat_of_three_inputs_is_not_the_kernel_of_two():
    def concat(n_in: int) -> list:
        names = [f"x{i}" for i in range(n_in)]
        g = helper.make_graph([helper.make_node("Concat", names, ["y"], axis=1)], "g",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 12 // n_in]) for n in names],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        shapes = run_shapes(model, {n: np.zeros((1, 12 // n_in), np.float32) for n in names})
        (k,) = split_kernels(model, shapes=shapes)
        return k

    two, three = concat(2), concat(3)
    assert two.features["in_elems"] == three.features["in_elems"] == 12
    assert (two.features["n_inputs"], three.features["n_inputs"]) == (2, 3) and two.key != three.key


def test_a_split_in_three_is_not_the_kernel_of_a_split_in_two_however_the_sizes_are_given():
    def split(n_out: int, sizes_as_input: bool):
        names = [f"y{i}" for i in range(n_out)]
        inits = [numpy_helper.from_array(np.full(n_out, 12 // n_out, np.int64), "sizes")] if sizes_as_input else []
        node = helper.make_node("Split", ["x", "sizes"] if sizes_as_input else ["x"], names, axis=1,
                                **({} if sizes_as_input else {"num_outputs": n_out}))
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 12])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names], inits)
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
        (k,) = split_kernels(model, shapes=run_shapes(model, {"x": np.zeros((1, 12), np.float32)}))
        return k

    two, three = split(2, True), split(3, True)
    assert (two.features["n_outputs"], three.features["n_outputs"]) == (2, 3) and two.key != three.key
    # the sizes as an attribute leave no small constant input: the output count still tells them apart
    assert split(2, False).features["n_outputs"] == 2 and split(2, False).key != split(3, False).key


def test_prior_samples_cover_the_common_operators_and_each_runs_alone():
    from edgebench.search.predictor_fit import conv_class
    from edgebench.search.prior import prior_kernels

    got = prior_kernels(160, seed=3)
    assert [k.key for k, _, _ in got] == [k.key for k, _, _ in prior_kernels(160, seed=3)]  # deterministic
    assert len({k.key for k, _, _ in got}) == len(got) >= 150
    heads = {k.type.split("+")[0] for k, _, _ in got}
    assert {"Conv", "Gemm", "MatMul", "GRU", "LSTM", "Concat", "Split", "Slice"} <= heads
    classes = {conv_class(k.type, k.features) for k, _, _ in got} - {""}
    assert {"/dw", "/pw", "/im2col", "/1d", "/1d-dw"} <= classes
    for k, model, shapes in got[::15]:  # the tiny model of each runs alone, like a user's kernel
        tiny = kernel_model(k, model, shapes)
        sess = ort.InferenceSession(tiny.SerializeToString(), providers=["CPUExecutionProvider"])
        feed = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
                for i in sess.get_inputs()}
        assert sess.run(None, feed)[0].size > 0


def test_predict_names_the_operators_its_build_never_measured(tmp_path):
    import json

    from edgebench.search.predictor import predict_file

    doc = _doc(lambda total, t: total + 0.003 - 0.0038 * t["n_kernels"])  # Add kernels only
    (tmp_path / "p.json").write_text(json.dumps(doc))
    g = helper.make_graph([helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [32, 64])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "t.onnx"))
    out = predict_file(tmp_path / "p.json", tmp_path / "t.onnx")
    assert out["unmeasured_operators"] == ["Transpose"] and out["breakdown"][0]["fallback"] == 1
    assert out["error_band"]["text"].startswith("no error band: this predictor file predates it")


def _transpose(shape: tuple, perm: list):
    g = helper.make_graph([helper.make_node("Transpose", ["x"], ["y"], perm=perm)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    (k,) = split_kernels(model, shapes=run_shapes(model, {"x": np.zeros(shape, np.float32)}))
    return k


def test_transposes_of_one_size_that_copy_other_runs_are_other_kernels():
    from edgebench.search.kernels import transpose_run

    heads = _transpose((64, 4, 64), [1, 0, 2])  # attention heads to the front: runs of 64
    copy = _transpose((64, 1, 256), [1, 0, 2])  # the same swap where one axis is 1: a plain copy
    keys_t = _transpose((4, 64, 32), [0, 2, 1])  # K transposed: element by element
    assert heads.features["in_elems"] == copy.features["in_elems"] == 16384
    assert (heads.features["run"], copy.features["run"], keys_t.features["run"]) == (64, 16384, 1)
    assert len({heads.key, copy.key, keys_t.key}) == 3
    assert transpose_run((2, 3, 4), None) == 1 and transpose_run((1, 12, 48, 32), [0, 2, 1, 3]) == 32


def test_a_transpose_measured_before_its_run_was_keyed_is_left_out_of_the_fit():
    def row(run, y):  # 20 Transposes of the layout of `run`, elements 1k .. 20k, measured y x elements + 20k
        return [("Transpose", {"in_elems": n, "out_elems": n, "macs": n, "n_nodes": 1, **({"run": run} if run else {})},
                 20000 + y * n) for n in range(1000, 21000, 1000)]

    fresh = KernelPredictor(_rows_doc(row(64, 3)), "instructions")
    mixed = KernelPredictor(_rows_doc(row(64, 3) + row(None, 30)), "instructions")  # stale rows, 10x the cost
    k = _transpose((96, 4, 64), [1, 0, 2])
    assert mixed.kernel(k) == fresh.kernel(k)
    assert 0.9 < fresh.kernel(k)[0] / (20000 + 3 * 24576) < 1.1


def test_on_x86_the_convolutions_onnxruntime_runs_in_nchwc_unpadded_get_a_class_of_their_own():
    """On an x86 device onnxruntime converts convolutions to its NCHWc layout, padding input channels of 16 or
    more to its block (24 -> 32 with AVX-512). is_nchwc asks this host's optimizer; a convolution it holds true
    for is fitted first among its own kind, and never on an ARM device (no NCHWc transformer there)."""
    import platform

    import pytest

    from edgebench.search.predictor_fit import _groups
    from edgebench.search.predictor_terms import X86, _optimized, is_nchwc

    if platform.machine().lower() not in X86:
        pytest.skip("the NCHWc transformer is x86 only")

    def optimized_conv(c_in):  # the truth: onnxruntime's own graph for a 3x3 convolution c_in -> 32
        w = numpy_helper.from_array(np.ones((32, c_in, 3, 3), np.float32), "w")
        g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 6, 6])], [w])
        opt = _optimized(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), [])
        conv = [n for n in opt.graph.node if n.domain == "com.microsoft.nchwc" and n.op_type == "Conv"]
        dims = {i.name: list(i.dims) for i in opt.graph.initializer}
        return bool(conv) and dims[conv[0].input[1]][1] == c_in

    if not optimized_conv(3):
        pytest.skip("this host's onnxruntime converts no convolution to NCHWc (no AVX2)")
    got = {c: is_nchwc({"c_in": c, "c_out": 32, "groups": 1, "kernel": 3}) for c in (3, 16, 20, 24, 32)}
    assert got == {c: optimized_conv(c) for c in got}
    assert got[3] and not got[20], got  # fewer channels than any block: read as they are; 20: padded (8 or 16)
    assert not any(is_nchwc({"c_in": c, "c_out": 32, "groups": 1}, "aarch64") for c in got)
    f = {"c_in": 3, "c_out": 32, "groups": 1, "kernel": 3, "stride": 1}
    assert _groups("Conv+Relu", f, "x86_64")[0] == ("Conv+Relu/im2col/nchwc", "regressed")
    assert not any(name.endswith("/nchwc") for name, _ in _groups("Conv+Relu", f, "aarch64"))
