"""PyTorch -> ONNX: one self-contained file, a stated opset, validated against PyTorch.

Exporter: the TorchScript-based `torch.onnx.export(dynamo=False)` with a dynamic batch axis. It keeps
the batch dimension dynamic for recurrent/spiking models (the dynamo exporter fixes it) and writes
weights inside the file (no side `.data` file).
"""
from __future__ import annotations

import inspect
import io
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import torch

from edgebench.export.errors import AtolError, ExportError, ShapeError
from edgebench.types import Artifact, EdgebenchError, Format, Precision, TensorSpec, Validation, first_line

from edgebench.export.registry import DEFAULT_ATOL, DEFAULT_OPSET  # noqa: E402  (one place for both)
MACS_DEFINITION = (
    "onnx-tool graph count: multiply-accumulates of Conv/Gemm/MatMul plus one per element for bias adds, "
    "activations, pooling and other elementwise ops (shape ops excluded)"
)

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.BOOL: "bool",
}


def export_view(module: torch.nn.Module, runtime: str | None = None) -> torch.nn.Module:
    """The module to trace: a model may offer `export_module()`, an inference twin with the same forward and
    fewer traced nodes (the unrolled L2MU/LMU hoist their per-step input and readout layers; conversion time
    grows with the node count), and may shape it for one runtime (`runtime="onnx"`: the L2MU/LMU windows
    that onnxruntime runs fastest). Validation always compares the file against the original module."""
    make = getattr(module, "export_module", None)
    if not callable(make):
        return module
    return for_runtime(make, runtime)


def for_runtime(make, runtime: str | None, **kwargs) -> torch.nn.Module:
    """make(**kwargs), with runtime=runtime where make takes it (a model's export_module / step_module)."""
    if runtime is not None and "runtime" in inspect.signature(make).parameters:
        kwargs["runtime"] = runtime
    return make(**kwargs)


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path, opset: int = DEFAULT_OPSET) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module, (example,), str(path), dynamo=False, opset_version=opset,
                input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )
        except Exception as exc:
            raise ExportError(f"ONNX export failed: {first_line(exc)}") from None
    compact_names(path)
    onnx.checker.check_model(str(path))
    return path


def compact_names(path: Path) -> Path:
    """Rewrite a file with short node and tensor names (n12, t34; graph inputs, outputs and weights keep theirs)
    and no value_info. An unrolled recurrent graph's bytes are mostly its nodes, not its weights: the
    TorchScript exporter's names (/lean/Concat_123_output_0) made up about a third of the L2MU window file."""
    path = Path(path)
    model = onnx.load(str(path))
    g = model.graph
    keep = {i.name for i in g.input} | {o.name for o in g.output} | {t.name for t in g.initializer}
    renamed: dict = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return renamed.setdefault(name, f"t{len(renamed)}")

    for k, node in enumerate(g.node):
        node.name, node.doc_string = f"n{k}", ""
        node.input[:] = [short(v) for v in node.input]
        node.output[:] = [short(v) for v in node.output]
    del g.value_info[:]
    onnx.save(model, str(path))
    return path


def load_onnx(path: Path) -> onnx.ModelProto:
    path = Path(path)
    if not path.exists():
        raise EdgebenchError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise EdgebenchError(f"not a valid ONNX model: {path} ({first_line(exc, 200)})") from None
    if not model.graph.input or not model.graph.output:
        raise EdgebenchError(f"ONNX model {path} has no inputs or outputs")
    return model


def tensor_specs(values, initializers=()) -> tuple:
    init = set(initializers)
    specs = []
    for v in values:
        if v.name in init:
            continue
        t = v.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
        specs.append(TensorSpec(v.name, shape, _ONNX_DTYPES.get(t.elem_type, "float32")))
    return tuple(specs)


def count_params(model: onnx.ModelProto) -> int:
    """Weights: elements of the floating-point initializers and Constant nodes (graphs exported from Paddle
    and others keep their weights in Constant nodes); integer constants (shapes, indices) are not weights."""
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16,
              onnx.TensorProto.INT8, onnx.TensorProto.UINT8}  # int8/uint8: quantized weights
    def count(graph) -> int:
        total = sum(int(np.prod(t.dims)) for t in graph.initializer
                    if t.data_type in floats or t.data_type == onnx.TensorProto.INT32)  # int32: quantized biases
        for node in graph.node:
            for a in node.attribute:
                if node.op_type == "Constant" and a.name == "value" and a.t.data_type in floats:
                    total += int(np.prod(a.t.dims))
                elif a.type == onnx.AttributeProto.GRAPH:  # If/Loop branches carry their own weights
                    total += count(a.g)
        return total

    return count(model.graph)


def count_macs(path: Path, arrays: dict) -> tuple[int, dict]:
    """MACs for the given input arrays (the values matter for graphs whose shapes depend on them) and MACs
    per operator type, read from the graph by onnx-tool."""
    import onnx_tool

    with redirect_stdout(io.StringIO()), warnings.catch_warnings():
        # onnx-tool warns once per operator type it has no MAC formula for and counts 0 for it: in edgebench's
        # exports that is DynamicQuantizeLinear, which has none (MatMulInteger, ConvInteger, QLinear*, GRU and
        # LSTM are all known to it); the raw warning only cluttered `predictor build` and `run`
        warnings.filterwarnings("ignore", message="node .* is not registed for profiling")
        g = onnx_tool.Model(str(path), {"verbose": False}).graph
        g.shape_infer({k: np.asarray(v) for k, v in arrays.items()})
        g.profile()
    by_op: dict = {}
    for node in g.nodemap.values():
        by_op[node.op_type] = by_op.get(node.op_type, 0) + int(node.macs[0])
    return int(g.macs[0]), by_op


def macs_for_feed(path: Path, arrays: dict) -> tuple[int | None, dict, str]:
    """(MACs, MACs per op, why there is no count) for one concrete feed; never raises."""
    try:
        macs, by_op = count_macs(path, arrays)
    except Exception as exc:  # a graph onnx-tool cannot shape-infer still benchmarks; the record says why
        return None, {}, f"onnx-tool could not shape-infer the graph: {first_line(exc, 160)}"
    return macs, by_op, ""


def _fmt_attr(value) -> str:
    if isinstance(value, onnx.TensorProto):
        arr = onnx.numpy_helper.to_array(value)
        return f"{arr.item():g}" if arr.size == 1 else f"Tensor[{'x'.join(str(d) for d in arr.shape)}]"
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def onnx_encoding(model: onnx.ModelProto) -> str:
    """ONNX-Net-style text: chains `Op(attr=v, Param[dims]) --> Op(...)`, inputs as `1x1x8x8`.

    A node whose only activation input is the previous node's output continues the chain;
    any other node starts a new line naming its inputs (`Add(n2, n5)`).
    """
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    consts = {}
    for node in model.graph.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = node
    inputs = tensor_specs(model.graph.input, inits)
    lines = ["input " + ", ".join(
        "x".join(str(d if isinstance(d, int) and d > 0 else 1) for d in s.shape) for s in inputs)]
    producer = {s.name: "input" for s in inputs}
    chain: list[str] = []
    prev_out = inputs[0].name if inputs else None
    for k, node in enumerate(model.graph.node):
        if node.op_type == "Constant":
            continue
        if node.op_type == "Identity" and node.input and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]  # an alias of a weight (shared across unrolled steps)
            continue
        attrs = [f"{a.name}={_fmt_attr(onnx.helper.get_attribute_value(a))}" for a in node.attribute
                 if a.type != onnx.AttributeProto.GRAPH]
        params = [f"Param[{'x'.join(str(d) for d in inits[i])}]" for i in node.input if i in inits]
        acts = [i for i in node.input if i and i not in inits and i not in consts]
        if len(acts) == 1 and acts[0] == prev_out and chain:
            chain.append(f"{node.op_type}({', '.join(attrs + params)})" if attrs or params else node.op_type)
        else:
            if chain:
                lines.append(" --> ".join(chain))
            refs = [producer.get(i, i) for i in acts]
            chain = [f"{node.op_type}({', '.join(refs + attrs + params)})"]
        for o in node.output:
            producer[o] = f"n{k}"
        prev_out = node.output[0] if node.output else None
    if chain:
        lines.append(" --> ".join(chain))
    # Unrolled recurrent graphs repeat a line once per time step: say it once with its count.
    out: list[str] = []
    for line in lines:
        if out and out[-1].split("  [x")[0] == line:
            head, _, count = out[-1].partition("  [x")
            out[-1] = f"{head}  [x{int(count.rstrip(']') or 1) + 1}]"
        else:
            out.append(line)
    return "\n".join(out)


def run_onnx(path: Path, x: np.ndarray, batch: int = 256) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: x[i:i + batch].astype(np.float32)})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs, axis=0)


def reference_outputs(module: torch.nn.Module, x: np.ndarray, batch: int = 256) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        outs = [module(torch.from_numpy(x[i:i + batch].astype(np.float32))).numpy() for i in range(0, len(x), batch)]
    return np.concatenate(outs, axis=0)


# A spiking model is discontinuous: a membrane within float rounding of its threshold fires in one runtime and
# not in the other (their products sum in other orders), and that window's scores then differ by far more
# than atol. Measured: 1 of 2,047 HAPT test windows for a trained LIF L2MU through onnxruntime (0.042, top-1
# unchanged), none through LiteRT. An export error differs in most windows; a flip in a few.
SPIKE_FLIP_SHARE = 0.005


def spike_flip_share(module) -> float:
    """The share of samples allowed beyond atol for `module`: SPIKE_FLIP_SHARE for spiking models, else 0."""
    return SPIKE_FLIP_SHARE if getattr(module, "spiking", False) else 0.0


def compare(ref: np.ndarray, got: np.ndarray, atol: float | None, min_agreement: float | None = None,
            flip_share: float = 0.0) -> Validation:
    """Check shape, max abs difference (when atol is given) and top-1 agreement; raise typed errors.
    flip_share: the share of samples that may exceed atol (spiking models: spike_flip_share)."""
    from edgebench.export.errors import AgreementError

    if ref.shape != got.shape:
        raise ShapeError(ref.shape, got.shape)
    n = int(len(ref))
    per_sample = (np.abs(ref.astype(np.float64) - got.astype(np.float64)).reshape(n, -1).max(-1) if ref.size
                  else np.zeros(n))
    max_diff = float(per_sample.max()) if per_sample.size else 0.0
    agree = float(np.mean(ref.reshape(len(ref), -1).argmax(-1) == got.reshape(len(got), -1).argmax(-1)))
    beyond = int(np.sum(per_sample > atol)) if atol is not None else 0
    allowed = int(flip_share * n)
    if beyond > allowed:
        raise AtolError(max_diff, atol, beyond, n, allowed)
    if min_agreement is not None and agree < min_agreement:
        raise AgreementError(agree, min_agreement)
    return Validation(reference="pytorch", n_samples=n, max_abs_diff=max_diff, atol=atol, top1_agreement=agree,
                      beyond_atol=beyond)


def describe_onnx(path: Path, name: str | None = None, model_name: str | None = None, dataset: str = "",
                  precision: Precision = Precision.FP32, validation: Validation | None = None,
                  labels: tuple = (), extra: dict | None = None) -> Artifact:
    """An Artifact for any valid ONNX file, edgebench's own or one a user brings."""
    from edgebench.types import sha256_file

    path = Path(path)
    model = load_onnx(path)
    inits = [i.name for i in model.graph.initializer]
    inputs = tensor_specs(model.graph.input, inits)
    outputs = tensor_specs(model.graph.output)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    extra = dict(extra or {})
    macs, macs_by_op, why = None, {}, ""
    try:  # MACs at batch 1 where every other dimension is fixed; else they wait for the shapes fed
        from edgebench.deploy.inputs import resolve_feeds

        feeds, arrays = resolve_feeds(inputs)
        macs, macs_by_op, why = macs_for_feed(path, arrays)
        extra["macs_input_shapes"] = {k: list(v.shape) for k, v in arrays.items()}
    except EdgebenchError as exc:
        why = f"depends on the input shapes ({exc})"
    if macs_by_op:
        extra["macs_by_op"] = macs_by_op
    if why:
        extra["macs_unavailable"] = why
    params = count_params(model)
    return Artifact(
        name=name or path.stem, model=model_name or path.stem, dataset=dataset, path=path,
        format=Format.ONNX, precision=precision, inputs=inputs, outputs=outputs,
        size_bytes=path.stat().st_size, sha256=sha256_file(path), opset=opset,
        macs=macs, macs_definition=MACS_DEFINITION if macs is not None else "", params=params,
        encoding=onnx_encoding(model), validation=validation, labels=tuple(labels), extra=extra,
    )


def export_and_validate(trained, out_dir: Path, opset: int = DEFAULT_OPSET, atol: float = DEFAULT_ATOL) -> Artifact:
    """Export a Trained model to ONNX fp32 and validate it on the real eval split."""
    name = f"{trained.name}-onnx-fp32"
    path, x = Path(out_dir) / f"{name}.onnx", trained.dataset.x_test
    ref, flip = reference_outputs(trained.module, x), spike_flip_share(trained.module)
    view, extra = export_view(trained.module, "onnx"), {}
    export_onnx(view, trained.example_input(1), path, opset)
    try:
        validation = compare(ref, run_onnx(path, x), atol, flip_share=flip)
    except AtolError as exc:
        # onnxruntime's form sums in another order (the LMU's memory and score ride through Tanh, whose
        # rounding grows with the window): where that exceeds atol, the plain export view, if it differs
        plain = export_view(trained.module)
        if type(plain) is type(view):
            raise
        export_onnx(plain, trained.example_input(1), path, opset)
        validation = compare(ref, run_onnx(path, x), atol, flip_share=flip)
        extra["onnx_form"] = (f"{type(plain).__name__}, not onnxruntime's faster {type(view).__name__}: that one "
                              f"differed from PyTorch by {exc.max_diff:.3g} > atol {exc.atol:.3g}")
    return describe_onnx(path, name=name, model_name=trained.name, dataset=trained.dataset.name,
                         validation=validation, labels=trained.dataset.labels, extra=extra)
