"""What a whole model costs beyond the sum of its kernels timed alone: the terms of the predictor's overhead fit
(search/predictor_fit.py KernelPredictor._fit_overhead), computed for a graph (model_terms) or derived for the
whole models of a predictor file built before a term existed (with_derived_terms)."""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import onnx

from edgebench.search.kernels import Kernel, kernel_model


X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def runtime_nodes(model: onnx.ModelProto, arch: str | None = None) -> int:
    """How many nodes the runtime executes once its graph optimizations (the deployed level: all) have run:
    with free input dimensions the shape arithmetic stays; on x86 a convolution alone gets its layout
    conversions (NCHWc). `arch`: the device's machine (its runner's facts), None for this host. The graph is
    optimized here, so an ARM device's is this host's without the x86-only NCHWc transformer: for an aarch64
    guest's onnxruntime 1.28 the node counts and types matched exactly (a CNN of HardSwish convolutions: 15
    nodes there, 8 with NCHWc here)."""
    off = [] if arch is None or arch.lower() in X86 else ["NchwcTransformer"]
    return len(_optimized(model, off).graph.node)


def _optimized(model: onnx.ModelProto, off: list) -> onnx.ModelProto:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgebench-opt-") as tmp:
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        so.log_severity_level = 3
        so.intra_op_num_threads = 1
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"],
                             disabled_optimizers=off)
        return onnx.load(str(Path(tmp) / "opt.onnx"), load_external_data=False)


def is_nchwc(features: dict, arch: str | None = None) -> bool:
    """Whether onnxruntime runs a 2-D convolution with these features in its NCHWc layout on the device without
    padding its input channels (only x86 has the transformer; `arch`: the device's machine, None for this host).
    Asked of this host's optimizer with a convolution of the same channels and groups (_nchwc_probe), so that it
    follows the installed onnxruntime: 1.32 on AVX-512 converts every ungrouped convolution, in blocks of 16
    channels; one with 16 or more input channels that are not a multiple of 16 gets them padded (24 -> 32: a
    third of its work on zeros), one with fewer reads them as they are."""
    c_in, c_out, g = (int(features.get(k) or 0) for k in ("c_in", "c_out", "groups"))
    if (arch is not None and arch.lower() not in X86) or not c_in or not c_out or features.get("spatial"):
        return False
    return _nchwc_probe(c_in, c_out, max(g, 1))


@functools.lru_cache(maxsize=None)
def _nchwc_probe(c_in: int, c_out: int, groups: int) -> bool:
    """A 3x3 convolution of these channels through this host's optimizer: converted to NCHWc, and its
    weight's input dimension (per group) left as it is."""
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    if c_in % groups or c_out % groups:
        return False
    w = numpy_helper.from_array(np.zeros((c_out, c_in // groups, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], group=groups)],
                              "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c_out, 4, 4])], [w])
    opt = _optimized(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), [])
    conv = [n for n in opt.graph.node if n.domain == "com.microsoft.nchwc" and n.op_type == "Conv"]
    dims = {i.name: list(i.dims) for i in opt.graph.initializer}
    return bool(conv) and dims.get(conv[0].input[1], [0, 0])[1] == c_in // groups


STREAMED = ("Conv", "Gemm", "MatMul")  # kernels that read all their weights every inference
CACHE_MB = 2.0  # a kernel's weights timed alone stay in a cache of about this size (a core's L2 here)
# The last-level cache where the device does not say (this machine's L3). A model whose weights outgrow it reads
# them from memory on every inference, cycling through the cache so that it keeps almost none: stacks of
# feed-forward blocks timed here cost 0.165 ms a block up to 9.4 MB of weights, 0.28 at 18.9 MB and 0.40 from
# 28 MB on. dram_mb is the share of the weights read from memory: none up to a quarter of the cache, all of them
# from its full size, linear between (streaming_sources; search/predictor_fit.py _fit_overhead).
DEFAULT_LLC_MB = 32.0


def llc_mb(facts: dict | None) -> float:
    """The device's last-level cache in MB (its runner's facts), else DEFAULT_LLC_MB."""
    kb = (facts or {}).get("last_level_cache_kb")
    return kb / 1024 if kb else DEFAULT_LLC_MB


def streamed_mb(kernels) -> float:
    """MB of weights the model's products read every inference; `kernels`: (type, features) pairs."""
    return sum(f.get("weight_elems", 0) for t, f in kernels if t.split("+")[0] in STREAMED) * 4 / 1e6


def weight_mb(model: onnx.ModelProto) -> float:
    from edgebench.export.onnx import count_params

    return count_params(model) * 4 / 1e6


def dram_mb(streamed: float, weights: float, llc: float) -> float:
    """MB of weights read from memory per inference. The products' weights count once each: a recurrent or
    unrolled graph reads the same weights at every step (its kernels' sum counts them 100 times), so no more than
    the model's weights; nor more than its products' (an embedding table is read a few rows at a time)."""
    mb = min(streamed, weights)
    return mb * min(max((mb - llc / 4) / (llc - llc / 4), 0.0), 1.0)


def kernel_nodes(k: Kernel, model: onnx.ModelProto, shapes: dict, cache: dict, arch: str | None = None) -> int:
    """Nodes the runtime executes for the kernel timed alone (cached by key)."""
    if cache.get(k.key) is None:
        cache[k.key] = runtime_nodes(kernel_model(k, model, shapes), arch)
    return cache[k.key]


def node_arch(meta: dict) -> str | None:
    """The machine a predictor file's node counts are for (`node_counts` in its meta). None: this host's
    optimizer, as files built before 2026-11-29 counted for every device (an ARM device's included)."""
    return meta.get("node_counts")


def model_terms(model: onnx.ModelProto, kernels: list[Kernel], shapes: dict, cache: dict | None = None,
                llc: float = DEFAULT_LLC_MB, arch: str | None = None) -> dict:
    """What a whole model adds to the sum of its kernels timed alone (see KernelPredictor._fit_overhead).
    `cache`: kernel key -> nodes executed alone, filled as needed; `llc`: the device's last-level cache (MB);
    `arch`: the machine whose optimizer the nodes are counted for (runtime_nodes)."""
    cache = {} if cache is None else cache
    streamed = streamed_mb((k.type, k.features) for k in kernels)
    convs = [k for k in kernels if k.type.split("+")[0] == "Conv"]
    alone = sum(kernel_nodes(k, model, shapes, cache, arch) for k in kernels)
    whole = runtime_nodes(model, arch)
    return {"n_kernels": len(kernels),
            "alone_extra_nodes": alone - len(kernels), "model_extra_nodes": whole - len(kernels),
            "node_excess": alone - whole,
            "streamed_mb_beyond_cache": max(streamed - CACHE_MB, 0.0),
            "dram_mb": dram_mb(streamed, weight_mb(model), llc),
            "conv_io_melems": sum(k.features["in_elems"] + k.features["out_elems"] for k in convs) / 1e6,
            "kernel_inputs": sum(len(k.inputs) for k in kernels),
            "extra_outputs": sum(len(k.outputs) - 1 for k in kernels),
            "kernel_out_melems": sum(k.features["out_elems"] for k in kernels) / 1e6,
            "model_io": len([i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}])
            + len(model.graph.output)}


def with_derived_terms(doc: dict) -> dict:
    """The predictor file with the terms of model_terms that a whole model measured before they were recorded
    lacks: its extra nodes of both kinds (from its node_excess and the nodes its kernels run alone), its
    extra_outputs and its dram_mb (from its kernels' weights, its own and the device's last-level cache)."""
    models, llc = {}, llc_mb(doc.get("meta", {}).get("facts"))
    for name, m in doc.get("models", {}).items():
        known = [doc["kernels"].get(k) for k in m.get("kernels", [])]
        alone = [k.get("runtime_nodes") if k else None for k in known]
        if "model_extra_nodes" not in m and "node_excess" in m and alone and None not in alone:
            m = {**m, "alone_extra_nodes": sum(alone) - len(alone),
                 "model_extra_nodes": sum(alone) - m["node_excess"] - len(alone)}
        if "extra_outputs" not in m and None not in known:  # each kernel alone hands back all its outputs
            m = {**m, "extra_outputs": sum(max(int(k["features"].get("n_outputs") or 1), 1) - 1 for k in known)}
        if "dram_mb" not in m and None not in known:
            streamed = streamed_mb((k["type"], k["features"]) for k in known)
            m = {**m, "dram_mb": dram_mb(streamed, m.get("weight_mb", float("inf")), llc)}
        models[name] = m
    return {**doc, "models": models}
