"""An ONNX graph as the kernels a CPU runtime executes, nn-Meter style, and each kernel as a tiny model.

Fusion rules follow what onnxruntime's CPU provider fuses at its default (all) optimization level:
Conv [+ BatchNormalization] [+ activation], Gemm/MatMul [+ Add] [+ activation]; every other compute node is
a kernel of its own type. Shape-only nodes (Shape, Gather on shapes, Unsqueeze, Constant, ...) are folded
or cost next to nothing after optimization, and are not kernels.

A kernel's features are what its cost depends on: its type, its shapes, channels, kernel size, stride,
groups, MACs and the bytes it moves (inputs, weights, outputs). Its key (type + features) names a tiny ONNX
model holding just that kernel, with the original weights' shapes, to time on a device.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

ACTIVATIONS = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Tanh", "Gelu"}
FUSE_HEADS = {"Conv", "Gemm", "MatMul"}
SHAPE_OPS = {"Shape", "Constant", "ConstantOfShape", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity",
             "Cast", "Range", "Expand", "Gather", "Slice", "Concat", "Transpose", "Split"}  # see `is_kernel`
FLOAT_TYPES = {1, 10, 11, 16}  # float32, float16, float64, bfloat16 (onnx TensorProto)
SMALL_INT = 64  # integer tensors up to this size are shape arithmetic, baked into a kernel as constants
FEATURES = ("macs", "in_elems", "out_elems", "weight_elems", "c_in", "c_out", "hw", "kernel", "stride",
            "groups", "n_nodes", "spans", "n_inputs", "spatial", "width", "n_outputs", "run")
BROADCASTING = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Where", "Greater", "Less", "Equal", "And", "Or",
                "GreaterOrEqual", "LessOrEqual", "PRelu"}


@dataclass
class Kernel:
    type: str  # e.g. "Conv+Relu", "MatMul+Add", "Add"
    nodes: list  # onnx NodeProto, in graph order
    inputs: list  # activation input names (not weights)
    outputs: list  # output names
    features: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        f = ",".join(f"{k}={self.features[k]}" for k in FEATURES if self.features.get(k))
        return f"{self.type}[{f}]"

    def vector(self) -> np.ndarray:
        return np.asarray([float(self.features.get(k, 0)) for k in FEATURES], dtype=np.float64)


_NP_TO_ONNX = {np.dtype(k): v for k, v in {"float32": 1, "uint8": 2, "int8": 3, "int32": 6, "int64": 7,
                                               "bool": 9, "float16": 10, "float64": 11}.items()}


def run_shapes(model: onnx.ModelProto, feed: dict) -> dict:
    """Every tensor's concrete shape and type, read by running the graph once on `feed` with every node
    output exposed (static shape inference cannot follow shapes computed from data, e.g. Reshape targets)."""
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    for n in m.graph.node:
        for o in n.output:
            if o and o not in known:
                m.graph.output.append(onnx.ValueInfoProto(name=o))
                known.add(o)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4  # a variant the runtime rejects (see neighbours) is an expected failure
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, feed)
    out = {}
    for k, v in [*zip(names, values), *feed.items()]:
        v = np.asarray(v)
        # small integer tensors are shape arithmetic (Expand/Reshape targets, indices): keep their values so
        # a kernel that reads one is timed with it (fed zeros, an Expand or Reshape fails or does other work)
        small_int = v.dtype.kind in "iu" and v.size <= SMALL_INT
        out[k] = (tuple(v.shape), _NP_TO_ONNX.get(v.dtype, 1), *((v.copy(),) if small_int else ()))
    for init in model.graph.initializer:
        out[init.name] = (tuple(init.dims), init.data_type)
    return out


def _shapes(model: onnx.ModelProto) -> dict:
    inferred = shape_inference.infer_shapes(model, strict_mode=False)
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
            if all(isinstance(d, int) and d > 0 for d in dims):
                out[vi.name] = (tuple(dims), t.elem_type)
    for init in model.graph.initializer:
        out[init.name] = (tuple(init.dims), init.data_type)
    return out


def with_fixed_inputs(model: onnx.ModelProto, shapes: dict) -> onnx.ModelProto:
    """A copy whose graph inputs have the given concrete shapes (free dimensions set)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for inp in m.graph.input:
        if inp.name in shapes:
            dims = inp.type.tensor_type.shape.dim
            for d, v in zip(dims, shapes[inp.name]):
                d.ClearField("dim_param")
                d.dim_value = int(v)
    return m


def constants(model: onnx.ModelProto) -> set:
    """Initializers, Constant outputs, and what nodes compute from them alone (the runtime folds those: an
    exporter's Identity of a shared weight is a weight, not an activation)."""
    consts = {i.name for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" or all(i in consts for i in n.input if i):
            consts.update(o for o in n.output if o)
    return consts


def baked(shapes: dict) -> set:
    """Tensors whose values were kept by run_shapes (small integer tensors): constants of a kernel."""
    return {k for k, v in shapes.items() if len(v) > 2}


def is_kernel(node, consts: set, shapes: dict) -> bool:
    """A node that does arithmetic on activations (not a shape computation or a view)."""
    if node.op_type in ("Constant", "Identity", "Shape", "ConstantOfShape", "Range"):
        return False
    acts = [i for i in node.input if i and i not in consts]
    if not acts:
        return False  # folded into a constant by the optimizer
    if node.op_type in SHAPE_OPS:
        # views and shape arithmetic; a Concat/Transpose/Split/Slice of a real activation moves data
        if node.op_type in ("Concat", "Transpose", "Split", "Slice", "Gather", "Expand"):
            out = shapes.get(node.output[0])
            if not out:
                return False
            if out[1] in FLOAT_TYPES:  # a real activation, however small (a step model's state slices)
                return True
            return int(np.prod(out[0])) >= SMALL_INT  # small integer tensors are shape arithmetic
        return False
    return True


def split_kernels(model: onnx.ModelProto, feed: dict | None = None, shapes: dict | None = None) -> list[Kernel]:
    """The kernels of a model, with shapes read by running it on `feed` (else by static inference, which
    needs concrete input shapes: see with_fixed_inputs)."""
    shapes = shapes or (run_shapes(model, feed) if feed is not None else _shapes(model))
    g = model.graph
    consts = constants(model) | baked(shapes)
    consumers: dict = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    used = set()
    kernels = []
    nodes = list(g.node)
    for n in nodes:
        if id(n) in used or not is_kernel(n, consts, shapes):
            continue
        group = [n]
        if n.op_type in FUSE_HEADS:
            cur = n
            for follow in ("BatchNormalization", "Add", "ACT"):
                nxt = consumers.get(cur.output[0], [])
                if len(nxt) != 1:
                    break
                cand = nxt[0]
                ok = (cand.op_type in ACTIVATIONS) if follow == "ACT" else (cand.op_type == follow)
                if follow == "Add" and ok:  # only a bias add (a constant operand) fuses into the matmul
                    ok = cur.op_type == "MatMul" and any(i in consts for i in cand.input)
                if follow == "BatchNormalization" and ok:
                    ok = cur.op_type == "Conv"
                if ok:
                    group.append(cand)
                    cur = cand
        for x in group:
            used.add(id(x))
        ktype = "+".join(x.op_type for x in group)
        outs = list(group[-1].output)
        acts = []
        for x in group:
            for i in x.input:
                if i and i not in consts and all(i not in y.output for y in group) and i not in acts:
                    acts.append(i)
        if any(i not in shapes for i in acts) or any(o not in shapes for o in outs[:1]):
            continue  # shapes unknown: cannot be timed alone (rare after fixing the inputs)
        k = Kernel(ktype, group, acts, outs)
        k.features = _features(k, shapes, consts)
        kernels.append(k)
    return kernels


def _features(k: Kernel, shapes: dict, consts: set) -> dict:
    head = k.nodes[0]
    in_shape = shapes[k.inputs[0]][0] if k.inputs else ()
    out_shape = shapes[k.outputs[0]][0]
    weights = [i for x in k.nodes for i in x.input if i in consts and i in shapes and len(shapes[i]) == 2]
    weight_elems = int(sum(np.prod(shapes[w][0]) for w in weights))
    f = {"in_elems": int(sum(np.prod(shapes[i][0]) for i in k.inputs)), "out_elems": int(np.prod(out_shape)),
         "weight_elems": weight_elems, "n_nodes": len(k.nodes)}
    if len(k.inputs) > 1:  # each input is bound (alone) and walked: a Concat of 3 is not one of 2 (keys of
        f["n_inputs"] = len(k.inputs)  # one-input kernels stay as they were)
    if len(k.outputs) > 1:  # each output is allocated and written: a Split in 3 is not one in 2 (the split sizes
        f["n_outputs"] = len(k.outputs)  # may come as an input or an attribute, so only this says it)
    attrs = {a.name: helper.get_attribute_value(a) for a in head.attribute}
    if head.op_type == "Conv" and len(in_shape) >= 3 and head.input[1] in shapes:  # 1-D, 2-D, 3-D
        w = shapes[head.input[1]][0]
        groups = int(attrs.get("group", 1))
        f.update(c_in=in_shape[1], c_out=out_shape[1], hw=int(np.prod(out_shape[2:])), kernel=w[2],
                 stride=int(attrs.get("strides", [1])[0]), groups=groups,
                 macs=int(np.prod(out_shape) * np.prod(w[1:])))
        f["width"] = int(out_shape[-1])  # output rows are walked in vectors: a row's tail costs extra
        if len(in_shape) != 4:  # a 1-D or 3-D convolution runs other loops than a 2-D one of the same size
            f["spatial"] = len(in_shape) - 2
    elif head.op_type in ("GRU", "LSTM", "RNN") and head.input[1] in shapes and head.input[2] in shapes:
        w, r = shapes[head.input[1]][0], shapes[head.input[2]][0]  # [dirs, gates x hidden, input|hidden]
        steps = in_shape[1] if attrs.get("layout", 0) else in_shape[0]
        f.update(c_in=w[2], c_out=r[2], hw=steps, macs=int(steps * (np.prod(w) + np.prod(r))))
    elif head.op_type in ("Gemm", "MatMul"):
        b_name = head.input[1]
        b = shapes.get(b_name, ((),))[0]
        k_dim = in_shape[-1] if in_shape else 0
        f.update(c_in=k_dim, c_out=out_shape[-1] if out_shape else 0, macs=int(np.prod(out_shape) * k_dim))
        if b and b_name not in consts:  # activation x activation (attention): both operands are inputs
            f["weight_elems"] = 0
    else:
        f["macs"] = f["out_elems"]
    if head.op_type == "Transpose" and in_shape:
        f["run"] = transpose_run(in_shape, attrs.get("perm"))
    if head.op_type in BROADCASTING and len(out_shape):
        operands = [shapes[i][0] for i in head.input if i in shapes]
        spans = broadcast_spans(operands, out_shape)
        if spans > 1:  # keys of unbroadcast kernels stay as they were
            f["spans"] = spans
    return f


def transpose_run(in_shape: tuple, perm) -> int:
    """The elements a Transpose copies in one contiguous run: the trailing input axes its permutation leaves in
    place (all of them reversed when `perm` is not given). Two Transposes of the same size cost alike only if
    they move the same runs: on pi4-emulated, [64, 4, 64] swapping its first two axes (runs of 64) took 65,100
    guest instructions alone, [64, 1, 256] swapping them (one run: a copy) 30,216; keyed by size only, both were
    one kernel, and every transformer's attention Transposes took the copy's count."""
    rank = len(in_shape)
    perm = list(perm) if perm is not None else list(range(rank))[::-1]
    keep = [a for a in range(rank) if in_shape[a] != 1]  # axes of size 1 move nothing
    index = {a: i for i, a in enumerate(keep)}
    order = [index[a] for a in perm if a in index]  # the output's order of the input's other axes
    j = len(order)
    while j > 0 and order[j - 1] == j - 1:
        j -= 1
    return int(np.prod([in_shape[a] for a in keep[j:]]))


def broadcast_spans(operands: list, out_shape: tuple) -> int:
    """How many contiguous runs a broadcasting elementwise op walks: the output divided by its longest
    trailing block in which every operand is either whole or a single value (x[1,C,H,W] * s[1,C,1,1]: C
    runs of H*W; x[N,C] + b[C]: N runs of C). The runtime pays a loop per run: the cost is not the
    elements alone."""
    rank = len(out_shape)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in operands]
    span, k = 1, rank
    while k > 0:
        block = slice(k - 1, rank)
        ok = all(tuple(p[block]) == tuple(out_shape[block]) or all(d == 1 for d in p[block]) for p in padded)
        if not ok:
            break
        span *= out_shape[k - 1]
        k -= 1
    return int(np.prod(out_shape)) // max(span, 1)


def kernel_model(k: Kernel, model: onnx.ModelProto, shapes: dict | None = None) -> onnx.ModelProto:
    """A tiny model holding just the kernel: its activation inputs as graph inputs, its weights (random, of
    the original shapes and types) as initializers, and the Constant nodes it reads."""
    shapes = shapes or _shapes(model)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    const_nodes = {o: n for n in g.node if n.op_type == "Constant" for o in n.output}
    rng = np.random.default_rng(0)
    new_inits, new_consts = [], []
    folded = constants(model) - set(inits) - set(const_nodes)
    for x in k.nodes:
        for i in x.input:
            if i and i not in inits and i not in const_nodes and len(shapes.get(i, ())) > 2 \
                    and all(t.name != i for t in new_inits):
                new_inits.append(numpy_helper.from_array(shapes[i][2], i))  # shape arithmetic, baked
            elif i in folded and i in shapes and i not in k.inputs and all(t.name != i for t in new_inits):
                dt = helper.tensor_dtype_to_np_dtype(shapes[i][1])  # a folded weight: random, of its shape
                arr = (rng.standard_normal(shapes[i][0]) * 0.1).astype(dt) if np.dtype(dt).kind == "f" \
                    else np.zeros(shapes[i][0], dt)
                new_inits.append(numpy_helper.from_array(arr, i))
            elif i in inits and all(t.name != i for t in new_inits):
                arr = numpy_helper.to_array(inits[i])
                if arr.dtype.kind == "f":
                    arr = (rng.standard_normal(arr.shape) * 0.1).astype(arr.dtype)
                new_inits.append(numpy_helper.from_array(arr, i))
            elif i in const_nodes and const_nodes[i] not in new_consts:
                new_consts.append(const_nodes[i])
    ins = [helper.make_tensor_value_info(i, shapes[i][1], list(shapes[i][0])) for i in k.inputs]
    outs = [helper.make_tensor_value_info(o, shapes[o][1], list(shapes[o][0])) for o in k.outputs[:1]]
    graph = helper.make_graph(new_consts + list(k.nodes), "kernel", ins, outs, new_inits)
    m = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return m


def kernel_file(k: Kernel, model: onnx.ModelProto, folder: Path, shapes: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"k-{hashlib.sha256(k.key.encode()).hexdigest()[:16]}.onnx"
    if not path.exists():
        onnx.save(kernel_model(k, model, shapes), str(path))
    return path


# ---------------------------------------------------------------- adaptive sampling
PERTURB_FACTORS = (0.5, 0.75, 1.25, 1.5, 2.0)  # channels, spatial size, sequence length: around the config
SHAPE_TARGETS = {("Reshape", 1), ("Expand", 1)}  # integer inputs that name output dims


def perturbable_dims(k: Kernel, shapes: dict) -> list[int]:
    """The dimension values of a kernel's activation inputs worth varying (channels, spatial side, sequence
    length, hidden size): every distinct one >= 4 (smaller values are batch, heads or axes)."""
    vals = []
    for i in k.inputs:
        for d in shapes[i][0]:
            if d >= 4 and d not in vals:
                vals.append(int(d))
    return vals


def perturbed_model(tiny: onnx.ModelProto, value: int, new: int) -> onnx.ModelProto:
    """A kernel model with dimension `value` set to `new` wherever it is that dimension: activation inputs,
    weights (new random ones), Reshape/Expand targets and a depthwise Conv's `group`. Outputs lose their
    shapes (the runtime infers them). May describe an invalid graph: callers run it to check."""
    m = onnx.ModelProto()
    m.CopyFrom(tiny)
    g = m.graph
    rng = np.random.default_rng(new)
    for vi in g.input:
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_value == value:
                d.dim_value = new
    for vi in g.output:
        vi.type.tensor_type.ClearField("shape")
    targets = {n.input[idx] for n in g.node for op, idx in SHAPE_TARGETS if n.op_type == op and len(n.input) > idx}
    filters = {n.input[1] for n in g.node if n.op_type in ("Conv", "ConvTranspose") and len(n.input) > 1}
    for idx, init in enumerate(list(g.initializer)):
        arr = numpy_helper.to_array(init)
        if arr.dtype.kind == "f" and value in arr.shape:
            keep = 2 if init.name in filters else arr.ndim  # a filter's window is not a tensor dimension
            shape = tuple(new if (d == value and j < keep) else d for j, d in enumerate(arr.shape))
            g.initializer[idx].CopyFrom(numpy_helper.from_array(
                (rng.standard_normal(shape) * 0.1).astype(arr.dtype), init.name))
        elif arr.dtype.kind in "iu" and init.name in targets:
            g.initializer[idx].CopyFrom(numpy_helper.from_array(np.where(arr == value, new, arr).astype(arr.dtype),
                                                                init.name))
    for n in g.node:
        for a in n.attribute:
            if a.name == "group" and a.i == value:
                a.i = new
    return m


def neighbours(k: Kernel, model: onnx.ModelProto, shapes: dict,
               factors=PERTURB_FACTORS) -> list[tuple[Kernel, onnx.ModelProto, dict]]:
    """Kernels of the same type around `k` (each perturbable dimension scaled by each factor), each with the
    tiny model and shapes to time it: the configurations a regressor should interpolate between. A variant
    the runtime rejects, or that is no longer one kernel of the same type, is left out."""
    tiny = kernel_model(k, model, shapes)
    out, seen = [], {k.key}
    for value in perturbable_dims(k, shapes):
        for f in factors:
            new = max(1, int(round(value * f)))
            if new == value:
                continue
            m = perturbed_model(tiny, value, new)
            try:
                feed = {}
                for vi in m.graph.input:
                    dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
                    dt = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
                    feed[vi.name] = (np.zeros(dims, dt) if np.dtype(dt).kind in "iub"
                                     else np.random.default_rng(0).standard_normal(dims).astype(dt))
                sh = run_shapes(m, feed)
                ks = split_kernels(m, shapes=sh)
            except Exception:  # noqa: BLE001 - an invalid variant (e.g. a Reshape that no longer fits)
                continue
            if len(ks) == 1 and ks[0].type == k.type and ks[0].key not in seen:
                seen.add(ks[0].key)
                out.append((ks[0], m, sh))
    return out
