#!/usr/bin/env python3
"""edgebench bundle runner: the one script every device executes.

Self-contained on purpose: it imports only the standard library, numpy and the runtime for the
model's format (onnxruntime; ai_edge_litert, or tflite_runtime where a board only has that). It is
copied verbatim into every bundle and run as

    python3 runner.py BUNDLE_DIR [--runs N] [--warmup N] [--threads N] [--min-time S]
                                 [--no-eval] [--profile] [--insn-markers]

It loads the model, times one first inference, the warm-up runs and the measured runs with
time.perf_counter_ns, runs the bundled eval data (eval.npz: arrays x and y), reads peak RSS and prints
ONE JSON document on stdout. Raw samples only: statistics are computed on the host, once.
Keep it compatible with Python 3.7 (older boards).
"""
import argparse
import json
import os
import platform
import sys
import time
import traceback

import numpy as np

PROTOCOL = 1
MAX_SAMPLES = 200000  # a cap so a tiny model with a long --min-time cannot exhaust memory


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

    def _feed(self, x):
        """x for the first input; any further inputs (e.g. a text model's attention_mask) get neutral
        values of the same batch: ones for a '*mask*' input, zeros otherwise."""
        feed = {self.inputs[0].name: x}
        for inp in self.inputs[1:]:
            dtype = _ORT_DTYPES.get(inp.type, "float32")
            shape = concrete_shape(inp.shape, x.shape[0])
            fill = np.ones if "mask" in inp.name.lower() else np.zeros
            feed[inp.name] = fill(shape, dtype=dtype)
        return feed

    def prepare(self, x):
        """Return a zero-argument callable that runs one inference on batch x."""
        feed = self._feed(x)
        run = self.session.run
        names = self.output_names

        def infer():
            return run(names, feed)

        return infer

    def predict(self, x):
        return self.session.run(self.output_names, self._feed(x))[0]

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
}


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

    def __init__(self, model_path, threads, profile=False):
        try:
            from ai_edge_litert.interpreter import Interpreter

            import ai_edge_litert as pkg

            self._name = "ai_edge_litert"
        except ImportError:
            from tflite_runtime.interpreter import Interpreter

            import tflite_runtime as pkg

            self._name = "tflite_runtime"
        self._version = getattr(pkg, "__version__", "unknown")
        self.interp = Interpreter(model_path=model_path, num_threads=int(threads))
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        signature = self.inp.get("shape_signature")
        if signature is None or len(signature) == 0:
            signature = self.inp["shape"]
        self.signature = [int(d) for d in signature]
        self.fixed_batch = self.signature[0] if self.signature and self.signature[0] > 0 else None

    @property
    def name(self):
        return self._name

    @property
    def version(self):
        return self._version

    def input_specs(self):
        shape = [d if d > 0 else None for d in self.signature]
        return [(self.inp["name"], shape, np.dtype(self.inp["dtype"]).name)]

    def _quantize(self, x):
        dtype = np.dtype(self.inp["dtype"])
        if dtype.kind in "iu" and x.dtype.kind == "f":
            scale, zero = self.inp.get("quantization", (0.0, 0))
            if scale:
                info = np.iinfo(dtype)
                x = np.clip(np.round(x / scale + zero), info.min, info.max)
        return np.ascontiguousarray(x.astype(dtype))

    def _dequantize(self, y):
        scale, zero = self.out.get("quantization", (0.0, 0))
        if np.dtype(self.out["dtype"]).kind in "iu" and scale:
            return (y.astype(np.float32) - zero) * np.float32(scale)
        return y

    def _resize(self, x):
        if [int(d) for d in self.inp["shape"]] != list(x.shape):
            self.interp.resize_tensor_input(self.inp["index"], list(x.shape))
            self.interp.allocate_tensors()
            self.inp = self.interp.get_input_details()[0]
            self.out = self.interp.get_output_details()[0]

    def prepare(self, x):
        self._resize(x)
        xq = self._quantize(x)
        interp = self.interp
        index, out_index = self.inp["index"], self.out["index"]

        def infer():  # set, run and read the output, as onnxruntime's session.run does
            interp.set_tensor(index, xq)
            interp.invoke()
            return interp.get_tensor(out_index)

        return infer

    def _run(self, x):
        self._resize(x)
        self.interp.set_tensor(self.inp["index"], self._quantize(x))
        self.interp.invoke()
        return self._dequantize(self.interp.get_tensor(self.out["index"]))

    def predict(self, x):
        b = self.fixed_batch
        if b is None or x.shape[0] == b:
            return self._run(x)
        # a fixed-batch file: whole batches, the last one padded with zeros and its padding dropped
        outs = []
        for i in range(0, x.shape[0], b):
            chunk = x[i : i + b]
            n = chunk.shape[0]
            if n < b:
                chunk = np.concatenate([chunk, np.zeros((b - n,) + chunk.shape[1:], dtype=chunk.dtype)])
            outs.append(self._run(chunk)[:n])
        return np.concatenate(outs, axis=0)

    def end_profile(self):
        return []  # the Python interpreter API exposes no per-operator timings


BACKENDS = {"onnx": OnnxBackend, "tflite": TfliteBackend}


# ---------------------------------------------------------------- measuring
def timed(fn):
    t0 = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - t0


def measure(infer, runs, warmup, min_time_s, measured_infer=None):
    """Warm up with `infer`, then time `measured_infer` (default: `infer`) until runs and min_time are met."""
    for _ in range(warmup):
        infer()
    measured_infer = measured_infer or infer
    samples = []
    clock = time.perf_counter_ns
    deadline = clock() + int(min_time_s * 1e9)
    while len(samples) < runs or (clock() < deadline and len(samples) < MAX_SAMPLES):
        t0 = clock()
        measured_infer()
        samples.append(clock() - t0)
    return samples


# Instruction-count markers for an emulator (edgebench's qemu plugin devices/insn_count.c): a failing,
# side-effect-free syscall lseek(-1, MAGIC, 0) that the plugin recognizes by its arguments.
INSN_MARK_START = 0x4544474542530001
INSN_MARK_END = 0x4544474542530002


def insn_marker(code):
    try:
        os.lseek(-1, code, 0)
    except OSError:
        pass


def with_insn_markers(infer):
    """`infer` bracketed by markers, so a counting emulator isolates exactly the measured inferences."""

    def marked():
        insn_marker(INSN_MARK_START)
        infer()
        insn_marker(INSN_MARK_END)

    return marked


def concrete_shape(shape, batch):
    out = []
    for i, d in enumerate(shape):
        if isinstance(d, int) and d > 0:
            out.append(d)
        else:
            out.append(batch if i == 0 else 1)
    return out


def run_eval(backend, x, batch_size):
    """Argmax predictions over the eval inputs, in batches when the model allows it."""
    preds = []
    n = x.shape[0]
    i = 0
    while i < n:
        xb = x[i : i + batch_size]
        y = np.asarray(backend.predict(xb))
        y = y.reshape(y.shape[0], -1) if y.ndim > 1 else y.reshape(1, -1)
        preds.extend(int(v) for v in np.argmax(y, axis=-1))
        i += batch_size
    return preds


def peak_rss_mb():
    """Peak resident set size of this process in MiB.

    /proc/self/status VmHWM first: it belongs to this program's own address space. getrusage's ru_maxrss
    is a fallback only, because Linux carries the parent's high-water mark across fork+exec (a runner
    started from a host holding torch would report the host's memory).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    except Exception:
        return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":")[0].strip().lower()
                if key in ("model name", "hardware", "cpu model", "processor") and ":" in line:
                    value = line.split(":", 1)[1].strip()
                    if value and not value.isdigit():
                        return value
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_facts():
    mem_total_mb = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_total_mb = int(line.split()[1]) / 1024.0
                    break
    except OSError:
        pass
    affinity = None
    if hasattr(os, "sched_getaffinity"):
        affinity = sorted(os.sched_getaffinity(0))
    return {
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "affinity": affinity,
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "mem_total_mb": mem_total_mb,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description="edgebench bundle runner")
    ap.add_argument("bundle")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-time", type=float, default=0.0)
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--facts-only", action="store_true")
    ap.add_argument("--insn-markers", action="store_true",
                    help="bracket each measured inference with instruction-count markers (emulated device)")
    args = ap.parse_args(argv)

    result = {"protocol": PROTOCOL, "ok": False, "facts": device_facts()}
    try:
        if args.facts_only:
            result["ok"] = True
            return result
        with open(os.path.join(args.bundle, "manifest.json")) as f:
            manifest = json.load(f)
        model_path = os.path.join(args.bundle, manifest["model_file"])
        backend_cls = BACKENDS[manifest["format"]]

        t0 = time.perf_counter_ns()
        backend = backend_cls(model_path, args.threads)
        load_ns = time.perf_counter_ns() - t0
        result["runtime"] = backend.name
        result["runtime_version"] = backend.version
        result["threads"] = args.threads

        name, shape, dtype = backend.input_specs()[0]
        eval_x = None
        eval_file = manifest.get("eval_file")
        if eval_file and os.path.exists(os.path.join(args.bundle, eval_file)):
            data = np.load(os.path.join(args.bundle, eval_file))
            eval_x = data["x"]  # labels stay on the host: accuracy is computed there from predictions
        in_dtype = "float32" if dtype in ("int8", "uint8") else dtype  # quantized inputs are fed as float
        batch = manifest.get("bench_batch", 1)
        fixed_batch = isinstance(shape[0], int) and shape[0] > 0
        if fixed_batch:
            batch = shape[0]
        if eval_x is not None and eval_x.shape[0] >= batch:
            x = np.ascontiguousarray(eval_x[:batch].astype(in_dtype))
        else:
            if np.dtype(in_dtype).kind in "iub":  # ids or flags: zeros are valid for any vocabulary
                x = np.zeros(concrete_shape(shape, batch), dtype=in_dtype)
            else:
                x = np.random.default_rng(0).standard_normal(concrete_shape(shape, batch)).astype(in_dtype)

        infer = backend.prepare(x)
        result["first_inference_ns"] = timed(infer)
        result["load_ns"] = load_ns
        measured_infer = None
        if args.insn_markers:  # one empty region first: the markers' own cost, which the host subtracts
            insn_marker(INSN_MARK_START)
            insn_marker(INSN_MARK_END)
            measured_infer = with_insn_markers(infer)
        result["samples_ns"] = measure(infer, args.runs, args.warmup, args.min_time, measured_infer)
        result["batch"] = int(x.shape[0])

        if eval_x is not None and not args.no_eval:
            eval_batch = batch if fixed_batch else int(manifest.get("eval_batch", 64))
            x_eval = eval_x.astype(in_dtype)
            result["predictions"] = run_eval(backend, x_eval, eval_batch)
            result["n_eval"] = len(result["predictions"])
        if args.profile:
            result["profile"] = profile_pass(backend_cls, model_path, args.threads, x)
        result["peak_rss_mb"] = peak_rss_mb()
        result["ok"] = True
    except Exception as exc:  # reported, not raised: the host records a failed measurement
        result["error"] = "%s: %s" % (type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        result["traceback"] = traceback.format_exc()
    return result


def profile_pass(backend_cls, model_path, threads, x, runs=50):
    """A separate session with the profiler on, so profiling never touches the timed runs."""
    backend = backend_cls(model_path, threads, profile=True)
    infer = backend.prepare(x)
    for _ in range(runs):
        infer()
    return backend.end_profile()


if __name__ == "__main__":
    out = main()
    sys.stdout.write("\nEDGEBENCH-RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()
    sys.exit(0 if out.get("ok") else 3)
