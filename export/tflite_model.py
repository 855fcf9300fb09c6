"""Reading a .tflite file: run it with the ai_edge_litert interpreter, describe its graph (inputs, outputs,
parameters, MACs, text encoding), for edgebench's own files and for any file a user brings."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from edgebench.types import Artifact, EdgebenchError, Format, Precision, TensorSpec, Validation, first_line

MACS_DEFINITION = (
    "TFLite graph count, batch 1: multiply-accumulates of CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, "
    "FULLY_CONNECTED and BATCH_MATMUL only (bias adds, activations, pooling and elementwise ops excluded)"
)

# ops whose arithmetic this module does not count: a graph holding one gets macs=None, not a wrong figure
_UNCOUNTED = {"CONV_3D", "CONV_3D_TRANSPOSE", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM",
              "BIDIRECTIONAL_SEQUENCE_LSTM", "RNN", "UNIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_RNN",
              "SVDF", "WHILE", "IF", "CALL_ONCE", "CUSTOM", "STABLEHLO_CONVOLUTION", "STABLEHLO_DOT_GENERAL"}
# ops whose integer constant inputs are shapes, permutations or axes, not parameters (bias is the exception)
_BIAS_INPUT = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "TRANSPOSE_CONV": 3}



@contextmanager
def _fd2_silenced():
    """Native libraries (absl, XNNPACK, torchao loaders) log straight to fd 2: keep that off the user's
    terminal. Python exceptions still propagate; their first line becomes the error message."""
    saved_fd = os.dup(2)
    try:
        with tempfile.TemporaryFile() as log:
            os.dup2(log.fileno(), 2)
            yield
    finally:
        os.dup2(saved_fd, 2)
        os.close(saved_fd)


def _first_line(exc: Exception) -> str:
    text = first_line(exc)
    return text if text == type(exc).__name__ else f"{type(exc).__name__}: {text}"


# ---------------------------------------------------------------- running
def _interpreter(path: Path, threads: int = 1, builtin: bool = False):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    path = Path(path)
    if not path.exists():
        raise EdgebenchError(f"model file not found: {path}")
    kind = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if builtin else OpResolverType.AUTO
    try:
        with _fd2_silenced():
            interp = Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=kind)
            interp.allocate_tensors()
    except Exception as exc:
        raise EdgebenchError(f"not a valid TFLite model: {path} ({_first_line(exc)})") from None
    return interp


def _to_input(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail["quantization"]
    if dtype.kind in "iu" and scale:
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / scale + zero), info.min, info.max)
    return np.ascontiguousarray(x.astype(dtype))


def _from_output(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail["quantization"]
    if np.dtype(detail["dtype"]).kind in "iu" and scale:
        return (y.astype(np.float32) - zero) * np.float32(scale)
    return y.astype(np.float32)


def run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    """Float outputs for float inputs x, with the file's own input quantization and output dequantization.

    A fixed-batch file runs in chunks of its batch size; a dynamic-batch file (shape signature -1)
    is resized to the whole of x. 50 chunks or more run on TFLite's builtin kernels where those are 1.5x
    faster than XNNPACK on the first chunk (XNNPACK can be 14x slower: depthwise kernels above 5x5; INT8
    outputs of the two differ by at most one quantization step).
    """
    interp = _interpreter(path)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    dynamic = int(inp["shape_signature"][0]) == -1
    step = len(x) if dynamic else int(inp["shape"][0])
    if not dynamic and len(x) // max(step, 1) >= 50:
        interp = _faster_kernels(path, interp, _to_input(x[:step], inp))
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    if dynamic and len(x):
        interp.resize_tensor_input(inp["index"], [len(x), *x.shape[1:]])
        interp.allocate_tensors()
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    outs = []
    for i in range(0, len(x) - len(x) % step, step):
        interp.set_tensor(inp["index"], _to_input(x[i:i + step], inp))
        interp.invoke()
        outs.append(_from_output(interp.get_tensor(out["index"]), out))
    if len(x) % step:
        raise EdgebenchError(f"{len(x)} samples do not fill whole batches of the file's fixed batch {step}")
    return np.concatenate(outs, axis=0)


def _faster_kernels(path: Path, interp, first: np.ndarray):
    """`interp` (XNNPACK) or the same file on TFLite's builtin kernels when those run `first` at least 1.5x
    faster (median of 3 invocations each, after one): a clear win, not noise, changes the kernels."""
    import time

    builtin = _interpreter(path, builtin=True)
    times = []
    for it in (interp, builtin):
        it.set_tensor(it.get_input_details()[0]["index"], first)
        it.invoke()
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            it.invoke()
            runs.append(time.perf_counter() - t0)
        times.append(sorted(runs)[1])
    return builtin if times[1] * 1.5 < times[0] else interp


# ---------------------------------------------------------------- describing
def _specs(details: list) -> tuple:
    specs = []
    for d in details:
        signature = d.get("shape_signature", d["shape"])
        shape = tuple(int(s) if int(s) >= 0 else None for s in signature)
        specs.append(TensorSpec(d["name"], shape, np.dtype(d["dtype"]).name))
    return tuple(specs)


def _op_names() -> dict:
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _op_codes(model) -> list:
    """Each operator code's builtin number (new files keep it in BuiltinCode, old ones in the deprecated byte)."""
    return [max(model.OperatorCodes(k).BuiltinCode(), model.OperatorCodes(k).DeprecatedBuiltinCode())
            for k in range(model.OperatorCodesLength())]


def _shape(tensor) -> tuple:
    shape = tensor.ShapeAsNumpy()
    return tuple(int(d) for d in shape) if isinstance(shape, np.ndarray) else ()


def _op_macs(name: str, op, shapes: list, schema) -> int:
    ins = [i for i in op.InputsAsNumpy()]
    out = shapes[int(op.OutputsAsNumpy()[0])]
    n_out = int(np.prod(out)) if out else 1
    if name == "CONV_2D":  # filter [Cout, kh, kw, Cin / groups]
        return n_out * int(np.prod(shapes[ins[1]][1:]))
    if name == "DEPTHWISE_CONV_2D":  # filter [1, kh, kw, Cout]: one input channel per output channel
        f = shapes[ins[1]]
        return n_out * f[1] * f[2]
    if name == "TRANSPOSE_CONV":  # inputs (output_shape, filter [Cout, kh, kw, Cin], input)
        x, f = shapes[ins[2]], shapes[ins[1]]
        return int(np.prod(x)) * f[0] * f[1] * f[2]
    if name == "FULLY_CONNECTED":  # filter [units, in]
        return n_out * shapes[ins[1]][-1]
    if name == "BATCH_MATMUL":
        opts = schema.BatchMatMulOptions()
        table = op.BuiltinOptions()
        adj_x = False
        if table is not None:
            opts.Init(table.Bytes, table.Pos)
            adj_x = bool(opts.AdjX())
        lhs = shapes[ins[0]]
        return n_out * (lhs[-2] if adj_x else lhs[-1])
    return 0


_FUSED_OPTIONS = {"CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
                  "FULLY_CONNECTED": "FullyConnectedOptions"}


def _fused_activation(name: str, op, schema) -> str:
    """The activation TFLite fused into a conv/FC op ("relu"), so the encoding does not hide it."""
    table = op.BuiltinOptions() if name in _FUSED_OPTIONS else None
    if table is None:
        return ""
    opts = getattr(schema, _FUSED_OPTIONS[name])()
    opts.Init(table.Bytes, table.Pos)
    names = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}
    act = names.get(opts.FusedActivationFunction(), "")
    return "" if act in ("", "NONE") else f"fused={act.lower()}"


def end_matmuls(path: Path) -> tuple:
    """Output tensor names of the first and the last matrix product (FULLY_CONNECTED, BATCH_MATMUL) of the
    main subgraph, in execution order: the layers that read the raw input and write the scores."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    names = _op_names()
    codes = _op_codes(model)
    g = model.Subgraphs(0)
    outs = []
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        if names.get(codes[op.OpcodeIndex()]) in ("FULLY_CONNECTED", "BATCH_MATMUL") and op.OutputsLength() == 1:
            outs.append(g.Tensors(int(op.Outputs(0))).Name().decode())
    return tuple(dict.fromkeys(outs[:1] + outs[-1:]))


def tflite_graph_facts(path: Path) -> dict:
    """Parameters, MACs and a text encoding read from the flatbuffer (main subgraph, batch 1).

    Parameters: elements of constant tensors, except integer constants that are shapes, permutations or
    axes (a conv/FC bias stored as int32 counts). MACs: see MACS_DEFINITION; None when the graph holds
    an op whose arithmetic is not counted here.
    """
    from ai_edge_litert import schema_py_generated as schema

    buf = Path(path).read_bytes()
    model = schema.Model.GetRootAsModel(buf, 0)
    names = _op_names()
    codes = _op_codes(model)
    g = model.Subgraphs(0)
    tensors = [g.Tensors(i) for i in range(g.TensorsLength())]
    shapes = [_shape(t) for t in tensors]

    def is_const(t) -> bool:
        b = t.Buffer()
        if b <= 0 or b >= model.BuffersLength():
            return False
        buffer = model.Buffers(b)
        return buffer.DataLength() > 0 or buffer.Offset() > 1

    const = {i for i, t in enumerate(tensors) if is_const(t)}
    float_or_q = {schema.TensorType.FLOAT32, schema.TensorType.FLOAT16, schema.TensorType.INT8,
                  schema.TensorType.UINT8, schema.TensorType.INT4, schema.TensorType.BFLOAT16}
    params_idx = {i for i in const if tensors[i].Type() in float_or_q}
    macs, by_op, uncounted, ops = 0, {}, set(), []
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        name = names.get(codes[op.OpcodeIndex()], "UNKNOWN")
        ins = [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [int(o) for o in op.OutputsAsNumpy()] if op.OutputsLength() else []
        ops.append((name, ins, outs, _fused_activation(name, op, schema)))
        if name in _BIAS_INPUT and len(ins) > _BIAS_INPUT[name] and ins[_BIAS_INPUT[name]] in const:
            params_idx.add(ins[_BIAS_INPUT[name]])
        if name in _UNCOUNTED or name == "UNKNOWN":
            uncounted.add(name)
            continue
        n = _op_macs(name, op, shapes, schema)
        if n:
            macs += n
            by_op[name] = by_op.get(name, 0) + n
    params = sum(int(np.prod(shapes[i])) if shapes[i] else 1 for i in params_idx)
    graph_inputs = [int(i) for i in g.InputsAsNumpy()] if g.InputsLength() else []
    return {
        "params": params,
        "macs": None if uncounted else macs,
        "macs_by_op": {} if uncounted else by_op,
        "uncounted_ops": sorted(uncounted),
        "op_counts": {n: sum(1 for o in ops if o[0] == n) for n in sorted({o[0] for o in ops})},
        "int8_ops": any(tensors[i].Type() in (schema.TensorType.INT8, schema.TensorType.UINT8)
                        for o in ops for i in o[1][:1] if i >= 0 and i not in const),
        "int8_weights": any(tensors[i].Type() == schema.TensorType.INT8 for i in params_idx),
        "encoding": _encoding(ops, shapes, const, graph_inputs),
        "subgraphs": model.SubgraphsLength(),
    }


def _encoding(ops: list, shapes: list, const: set, graph_inputs: list) -> str:
    """ONNX-Net-style text as export.onnx.onnx_encoding writes it, with TFLite op names."""
    dims = lambda s: "x".join(str(d) for d in s) if s else "1"  # noqa: E731
    lines = ["input " + ", ".join(dims(shapes[i]) for i in graph_inputs)]
    producer = {i: "input" for i in graph_inputs}
    chain: list = []
    prev_out = graph_inputs[0] if graph_inputs else None
    for k, (name, ins, outs, fused) in enumerate(ops):
        params = ([fused] if fused else []) + [f"Param[{dims(shapes[i])}]" for i in ins if i in const]
        acts = [i for i in ins if i >= 0 and i not in const]
        if len(acts) == 1 and acts[0] == prev_out and chain:
            chain.append(f"{name}({', '.join(params)})" if params else name)
        else:
            if chain:
                lines.append(" --> ".join(chain))
            chain = [f"{name}({', '.join([producer.get(i, f't{i}') for i in acts] + params)})"]
        for o in outs:
            producer[o] = f"n{k}"
        prev_out = outs[0] if outs else None
    if chain:
        lines.append(" --> ".join(chain))
    return "\n".join(lines)


def _quant_params(details: list) -> list:
    out = []
    for d in details:
        scale, zero = d["quantization"]
        if scale:
            out.append({"name": d["name"], "scale": float(scale), "zero_point": int(zero)})
    return out


def describe_tflite(path: Path, name: str | None = None, model_name: str | None = None, dataset: str = "",
                    precision: Precision | None = None, validation: Validation | None = None,
                    labels: tuple = (), extra: dict | None = None) -> Artifact:
    """An Artifact for any valid .tflite file, edgebench's own or one a user brings.

    precision None: read from the graph (int8 activations -> INT8, int8 weights only -> INT8_DYNAMIC).
    """
    from edgebench.types import sha256_file

    path = Path(path)
    interp = _interpreter(path)
    inputs, outputs = interp.get_input_details(), interp.get_output_details()
    if not inputs or not outputs:
        raise EdgebenchError(f"TFLite model {path} has no inputs or outputs")
    try:
        facts = tflite_graph_facts(path)
    except Exception:  # the interpreter accepted the file; only the extra facts stay unknown
        facts = {"params": None, "macs": None, "macs_by_op": {}, "encoding": "", "int8_ops": False,
                 "int8_weights": False}
    if precision is None:
        precision = (Precision.INT8 if facts["int8_ops"] else
                     Precision.INT8_DYNAMIC if facts["int8_weights"] else Precision.FP32)
    extra = dict(extra or {})
    for key in ("macs_by_op", "op_counts", "uncounted_ops"):
        if facts.get(key):
            extra[key] = facts[key]
    if _quant_params(inputs):
        extra["input_quantization"] = _quant_params(inputs)
    if _quant_params(outputs):
        extra["output_quantization"] = _quant_params(outputs)
    return Artifact(
        name=name or path.stem, model=model_name or path.stem, dataset=dataset, path=path,
        format=Format.TFLITE, precision=precision, inputs=_specs(inputs), outputs=_specs(outputs),
        size_bytes=path.stat().st_size, sha256=sha256_file(path), opset=None,
        macs=facts["macs"], macs_definition=MACS_DEFINITION if facts["macs"] is not None else "",
        params=facts["params"], encoding=facts["encoding"], validation=validation, labels=tuple(labels),
        extra=extra,
    )
