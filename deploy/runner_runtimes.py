#!/usr/bin/env python3
"""Part of edgebench's bundle runner (deploy/runner.py): the runtimes (onnxruntime, LiteRT / tflite_runtime) behind one interface.

Shipped beside runner.py in every bundle; like it, imports only the standard library, numpy and the runtime
for the model's format. Keep it compatible with Python 3.7 (older boards).
"""
import json
import os

import numpy as np

if __package__:  # imported as edgebench.deploy.runner_runtimes
    from .runner_stream import OnnxStepper, TfliteStepper
else:  # in a bundle, beside runner.py
    from runner_stream import OnnxStepper, TfliteStepper


# ---------------------------------------------------------------- runtimes
class OnnxBackend(object):
    """onnxruntime, CPU execution provider, sequential execution."""

    def __init__(self, model_path, threads, profile=False):
        import onnxruntime as ort

        self.ort = ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        if profile:
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(os.path.dirname(model_path), "ort_profile")
        self.session = ort.InferenceSession(model_path, sess_options=so, providers=["CPUExecutionProvider"])
        self.inputs = self.session.get_inputs()
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def name(self):
        return "onnxruntime"

    @property
    def version(self):
        return self.ort.__version__

    def input_specs(self):
        return [(i.name, list(i.shape), _ORT_DTYPES.get(i.type, "float32")) for i in self.inputs]

    def prepare(self, feed):
        """Return a zero-argument callable that runs one inference on `feed` (input name -> array)."""
        feed = as_feed(feed, self.input_specs())
        run = self.session.run
        names = self.output_names

        def infer():
            return run(names, feed)

        return infer

    def predict(self, feed):
        return self.session.run(self.output_names, as_feed(feed, self.input_specs()))[0]

    def stepper(self, feed, stream):
        return OnnxStepper(self, feed, stream)

    def end_profile(self):
        path = self.session.end_profiling()
        return summarize_ort_profile(path)


_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def as_feed(feed, specs):
    """A feed dict by input name; a bare array is the first input (older callers, single-input models)."""
    if isinstance(feed, dict):
        return feed
    return {specs[0][0]: feed}


def summarize_ort_profile(path, top=15):
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    per_op = {}
    for ev in events:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        args = ev.get("args", {})
        key = (args.get("op_name", "?"), ev["name"][: -len("_kernel_time")])
        slot = per_op.setdefault(key, {"op": key[0], "node": key[1], "total_us": 0.0, "count": 0})
        slot["total_us"] += float(ev.get("dur", 0))
        slot["count"] += 1
    rows = sorted(per_op.values(), key=lambda r: -r["total_us"])
    total = sum(r["total_us"] for r in rows) or 1.0
    for r in rows:
        r["share"] = r["total_us"] / total
        r["mean_us"] = r["total_us"] / max(r["count"], 1)
    return rows[:top]


class TfliteBackend(object):
    """The TFLite interpreter: ai_edge_litert, else tflite_runtime (Raspberry Pi OS boards).

    Full-integer files take int8/uint8 inputs: float data is quantized with the input's own scale and
    zero point before timing starts, and outputs are dequantized. A fixed-batch file (the usual case)
    reports its batch; a dynamic one (shape signature -1) reports None there and is resized on demand.
    """

    def __init__(self, model_path, threads, profile=False, kernels="xnnpack"):
        try:
            from ai_edge_litert import interpreter as mod

            import ai_edge_litert as pkg

            self._name = "ai_edge_litert"
        except ImportError:
            from tflite_runtime import interpreter as mod

            import tflite_runtime as pkg

            self._name = "tflite_runtime"
        self._version = getattr(pkg, "__version__", "unknown")
        self.kernels = kernels
        kw = {}
        if kernels == "builtin":  # TFLite's own kernels: no default delegate (XNNPACK) applied
            resolver = getattr(mod, "OpResolverType", None)
            if resolver is None:
                raise RuntimeError("this TFLite runtime (%s %s) cannot leave out its default delegate"
                                   % (self._name, self._version))
            kw["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.interp = mod.Interpreter(model_path=model_path, num_threads=int(threads), **kw)
        self.interp.allocate_tensors()
        self._details()
        self.fixed_batch = self.signatures[0][0] if self.signatures[0] and self.signatures[0][0] > 0 else None

    def _details(self):
        self.ins = self.interp.get_input_details()
        self.out = self.interp.get_output_details()[0]
        self.signatures = []
        for d in self.ins:
            sig = d.get("shape_signature")
            if sig is None or len(sig) == 0:
                sig = d["shape"]
            self.signatures.append([int(v) for v in sig])

    @property
    def name(self):
        return self._name

    @property
    def version(self):
        return self._version

    def input_specs(self):
        return [(d["name"], [v if v > 0 else None for v in sig], np.dtype(d["dtype"]).name)
                for d, sig in zip(self.ins, self.signatures)]

    @staticmethod
    def _quantize(x, detail):
        dtype = np.dtype(detail["dtype"])
        x = np.asarray(x)
        if dtype.kind in "iu" and x.dtype.kind == "f":
            scale, zero = detail.get("quantization", (0.0, 0))
            if scale:
                info = np.iinfo(dtype)
                x = np.clip(np.round(x / scale + zero), info.min, info.max)
        return np.ascontiguousarray(x.astype(dtype))

    def _dequantize(self, y):
        scale, zero = self.out.get("quantization", (0.0, 0))
        if np.dtype(self.out["dtype"]).kind in "iu" and scale:
            return (y.astype(np.float32) - zero) * np.float32(scale)
        return y

    def _resize(self, feed):
        changed = False
        for d in self.ins:
            x = feed[d["name"]]
            if [int(v) for v in d["shape"]] != list(x.shape):
                self.interp.resize_tensor_input(d["index"], list(x.shape))
                changed = True
        if changed:
            self.interp.allocate_tensors()
            self._details()

    def _set(self, feed):
        self._resize(feed)
        values = [(d["index"], self._quantize(feed[d["name"]], d)) for d in self.ins]
        return values

    def prepare(self, feed):
        values = self._set(as_feed(feed, self.input_specs()))
        interp = self.interp
        out_index = self.out["index"]

        def infer():  # set, run and read the output, as onnxruntime's session.run does
            for index, value in values:
                interp.set_tensor(index, value)
            interp.invoke()
            return interp.get_tensor(out_index)

        return infer

    def _run(self, feed):
        for index, value in self._set(feed):
            self.interp.set_tensor(index, value)
        self.interp.invoke()
        return self._dequantize(self.interp.get_tensor(self.out["index"]))

    def predict(self, feed):
        feed = as_feed(feed, self.input_specs())
        n_total = next(iter(feed.values())).shape[0]
        b = self.fixed_batch
        if b is None or n_total == b:
            return self._run(feed)
        # a fixed-batch file: whole batches, the last one padded with zeros and its padding dropped
        outs = []
        for i in range(0, n_total, b):
            chunk = {}
            for k, v in feed.items():
                c = v[i : i + b]
                if c.shape[0] < b:
                    c = np.concatenate([c, np.zeros((b - c.shape[0],) + c.shape[1:], dtype=c.dtype)])
                chunk[k] = c
            outs.append(self._run(chunk)[: min(b, n_total - i)])
        return np.concatenate(outs, axis=0)

    def end_profile(self):
        return []  # the Python interpreter API exposes no per-operator timings

    def stepper(self, feed, stream):
        return TfliteStepper(self, feed, stream)
