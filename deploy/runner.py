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
import re
import subprocess
import sys
import threading
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


# ---------------------------------------------------------------- streaming step models
class OnnxStepper(object):
    """One call of a step model with its state carried: the outputs named in stream['carry'] become the
    next call's inputs. reset() puts back the state the host fed (zeros: a window starts from rest).

    The state stays in onnxruntime's own tensors: two bindings alternate, each reading one set of state
    tensors and writing the other, and only the sample is copied in per call (IOBinding). Through
    session.run each call converted every state input and output (12 and 11 for the LIF L2MU): 2.5x slower
    per streamed window, same outputs. Older onnxruntime builds without OrtValue.update_inplace use run()."""

    def __init__(self, backend, feed, stream):
        self.x_name, self.out_name = stream["x"], stream["output"]
        self.carry = list(stream["carry"])
        self.rest = dict((i, np.ascontiguousarray(feed[i])) for i, _ in self.carry)
        self.feed = dict(feed)
        self.session, self.names = backend.session, backend.output_names
        self.binds, self.last = None, None
        # session.run path: output positions of the carried state and of the scores, found once
        self.carry_at = [(i, self.names.index(o)) for i, o in self.carry]
        self.out_at = self.names.index(self.out_name)
        ortvalue = getattr(backend.ort, "OrtValue", None)
        carried_out = dict((o, i) for i, o in self.carry)
        if ortvalue is None or not hasattr(ortvalue, "update_inplace") or self.out_name not in carried_out:
            return  # session.run, as older builds need
        new = ortvalue.ortvalue_from_numpy
        self.state = [dict((i, new(v.copy())) for i, v in self.rest.items()) for _ in range(2)]
        self.x = new(np.ascontiguousarray(feed[self.x_name]).copy())
        fixed = dict((n, new(np.ascontiguousarray(v))) for n, v in feed.items()
                     if n != self.x_name and n not in self.rest)
        self.binds = []
        for a in (0, 1):
            bind = self.session.io_binding()
            bind.bind_ortvalue_input(self.x_name, self.x)
            for n, v in fixed.items():
                bind.bind_ortvalue_input(n, v)
            for i, o in self.carry:
                bind.bind_ortvalue_input(i, self.state[a][i])
                bind.bind_ortvalue_output(o, self.state[1 - a][i])
            for o in self.names:
                if o not in carried_out:
                    bind.bind_output(o)
            self.binds.append(bind)
        self.out_input = carried_out[self.out_name]
        self.parity = 0

    def reset(self):
        if self.binds is None:
            self.feed.update(self.rest)
            return
        for i, v in self.rest.items():
            self.state[0][i].update_inplace(v)
        self.parity = 0

    def step(self, x_t):
        if self.binds is None:
            feed = self.feed
            feed[self.x_name] = x_t
            outs = self.session.run(self.names, feed)
            for name, k in self.carry_at:
                feed[name] = outs[k]
            self.last = outs[self.out_at]
            return
        self.x.update_inplace(x_t)
        self.session.run_with_iobinding(self.binds[self.parity])
        self.parity = 1 - self.parity

    def output(self):
        """The model's output after the last step (the running class scores)."""
        if self.binds is None:
            return self.last
        return self.state[self.parity][self.out_input].numpy()


class TfliteStepper(object):
    """The TFLite step call: set every input, invoke, read the carried outputs back (through float when a
    quantized file's state input and output scales differ)."""

    def __init__(self, backend, feed, stream):
        backend._set(feed)  # resizes a dynamic-batch file to the feed
        interp = backend.interp
        by_name = dict((d["name"], d) for d in backend.ins)
        outs = dict((d["name"], d) for d in interp.get_output_details())
        self.interp, self.backend = interp, backend
        self.ins = [(by_name[n]["index"], by_name[n]) for n in feed]
        self.values = dict((by_name[n]["index"], backend._quantize(v, by_name[n])) for n, v in feed.items())
        self.rest = dict((by_name[i]["index"], self.values[by_name[i]["index"]]) for i, _ in stream["carry"])
        self.carry = []
        for i, o in stream["carry"]:
            din, dout = by_name[i], outs[o]
            same = np.dtype(din["dtype"]) == np.dtype(dout["dtype"]) and \
                tuple(din.get("quantization", (0.0, 0))) == tuple(dout.get("quantization", (0.0, 0)))
            self.carry.append((din["index"], dout, din, same))
        self.out = outs[stream["output"]]
        self.x = by_name[stream["x"]]

    def reset(self):
        self.values.update(self.rest)

    def step(self, x_t):
        interp, values = self.interp, self.values
        values[self.x["index"]] = self.backend._quantize(x_t, self.x)
        for index, value in values.items():
            interp.set_tensor(index, value)
        interp.invoke()
        for index, dout, din, same in self.carry:
            y = interp.get_tensor(dout["index"])
            if not same:
                y = self.backend._quantize(_dequantize_with(y, dout), din)
            values[index] = y

    def output(self):
        """The model's output after the last step (the running class scores)."""
        return _dequantize_with(self.interp.get_tensor(self.out["index"]), self.out)


def _dequantize_with(y, detail):
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind in "iu" and scale:
        return (y.astype(np.float32) - zero) * np.float32(scale)
    return y


def stream_callables(backend, feed, stream, windows):
    """(one step with the state carried, one whole window from rest) over the timed windows
    (batch x channels x steps): step k feeds sample k mod steps and starts from rest at every window."""
    stepper = backend.stepper(feed, stream)
    steps = int(stream["steps"])
    xs = [np.ascontiguousarray(windows[:, :, t]) for t in range(steps)]
    counter = [0]

    def one_step():
        t = counter[0] % steps
        if t == 0:
            stepper.reset()
        stepper.step(xs[t])
        counter[0] += 1

    def one_window():
        stepper.reset()
        for x_t in xs:
            stepper.step(x_t)

    return one_step, one_window


def stream_eval(backend, feed, stream, windows, batch_size, pad):
    """Argmax of the running scores after streaming each eval window from rest, in batches the file takes."""
    steps = int(stream["steps"])
    preds = []
    for i in range(0, len(windows), batch_size):
        w = windows[i : i + batch_size]
        n = w.shape[0]
        if n < batch_size and pad:  # a fixed-batch file: the last batch padded, its padding dropped
            w = np.concatenate([w, np.zeros((batch_size - n,) + w.shape[1:], dtype=w.dtype)])
        m = w.shape[0]
        batch_feed = {}
        for k, v in feed.items():
            batch_feed[k] = np.repeat(v[:1], m, axis=0) if v.ndim and v.shape[0] != m else v
        stepper = backend.stepper(batch_feed, stream)
        for t in range(steps):
            stepper.step(np.ascontiguousarray(w[:, :, t]))
        y = np.asarray(stepper.output()).reshape(m, -1)[:n]
        preds.extend(int(v) for v in np.argmax(y, axis=-1))
    return preds


BACKENDS = {"onnx": OnnxBackend, "tflite": TfliteBackend}
TFLITE_KERNELS = ("xnnpack", "builtin", "auto")


def timed_callable(backend, feed, stream, bundle):
    """What one timed inference runs: the model on the feed, or a streaming step model's step / window."""
    if not stream:
        return backend.prepare(feed)
    with np.load(os.path.join(bundle, stream["file"])) as data:
        one_step, one_window = stream_callables(backend, feed, stream, data["x"])
    return one_step if stream.get("mode", "step") == "step" else one_window


def probe_tflite_kernels(xnnpack, open_backend, threads, feed, stream, bundle, runs):
    """`xnnpack` (the file open with XNNPACK) against the same file on TFLite's builtin kernels, timed
    alternately (a few runs each: min(runs, 10), at least 3), the faster kept: (backend, its first inference
    ns, its load ns or None for `xnnpack`'s, {kernels: probe median ms}). XNNPACK can be many times slower
    (depthwise kernels above 5x5, measured: benchmarks/tflite_dwconv.py) or faster (most other models)."""
    infer = timed_callable(xnnpack, feed, stream, bundle)
    opened = {"xnnpack": (xnnpack, None, timed(infer), infer)}  # the first inference (delegate set-up) apart
    t0 = time.perf_counter_ns()
    try:
        b = open_backend(threads, kernels="builtin")
    except Exception:  # a runtime without the option: XNNPACK it is
        b = None
    if b is not None:
        load = time.perf_counter_ns() - t0
        infer = timed_callable(b, feed, stream, bundle)
        opened["builtin"] = (b, load, timed(infer), infer)
    times = dict((k, []) for k in opened)
    for _ in range(max(3, min(int(runs), 10))):
        for kernels, (_b, _load, _first, infer) in opened.items():
            times[kernels].append(timed(infer))
    medians = dict((k, sorted(v)[len(v) // 2] / 1e6) for k, v in times.items())
    best = min(medians, key=medians.get)
    return opened[best][0], opened[best][2], opened[best][1], medians


# ---------------------------------------------------------------- measuring
def timed(fn):
    t0 = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - t0


def measure(infer, runs, warmup, min_time_s, measured_infer=None, meter=None, energy=None):
    """Warm up with `infer`, then time `measured_infer` (default: `infer`) until runs and min_time are met.
    With an energy meter, the energy of exactly the measured runs goes into the dict `energy`."""
    for _ in range(warmup):
        infer()
    measured_infer = measured_infer or infer
    samples = []
    clock = time.perf_counter_ns
    if meter:
        meter.start()
    deadline = clock() + int(min_time_s * 1e9)
    while len(samples) < runs or (clock() < deadline and len(samples) < MAX_SAMPLES):
        t0 = clock()
        measured_infer()
        samples.append(clock() - t0)
    if meter:
        energy.update(meter.stop(), inferences=len(samples))
    return samples


ROUND_READY = "EDGEBENCH-ROUNDS-READY"
ROUND_TAG = "EDGEBENCH-ROUND-SAMPLES"


def serve_rounds(infer, measured_infer=None, stdin=None, stdout=None):
    """Rounds on demand, for a side-by-side comparison (--rounds-from-stdin): the model stays loaded while
    the host alternates it with another one. After ROUND_READY, each stdin line "RUNS WARMUP" runs one round
    and answers "ROUND_TAG [samples]"; an empty line or the end of input ends. (all samples, round sizes)."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    stdout.write("\n%s\n" % ROUND_READY)
    stdout.flush()
    samples, sizes = [], []
    for line in iter(stdin.readline, ""):
        if not line.strip():
            break
        runs, warmup = (int(v) for v in line.split())
        got = measure(infer, runs, warmup, 0.0, measured_infer)
        samples.extend(got)
        sizes.append(len(got))
        stdout.write("%s %s\n" % (ROUND_TAG, json.dumps(got)))
        stdout.flush()
    return samples, sizes


# ---------------------------------------------------------------- energy counters
# Read around exactly the measured runs. Counters (RAPL) are read twice; power meters (Raspberry Pi 5 PMIC,
# Android battery) are sampled on a thread and integrated over the same window (trapezoid rule).
RAPL_ROOT = "/sys/class/powercap"
POWER_SUPPLY_ROOT = "/sys/class/power_supply"
ENERGY_SOURCES = ("auto", "none", "rapl", "pi5-pmic", "android-battery")


def rapl_zones(root=RAPL_ROOT):
    """Top-level RAPL zones (package domains: intel-rapl:N, not their subzones intel-rapl:N:M) that can be
    read: [(name, energy_uj path, max_energy_range_uj)]."""
    zones = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return zones
    for name in names:
        if not name.startswith("intel-rapl:") or name.count(":") != 1:
            continue
        path = os.path.join(root, name, "energy_uj")
        try:
            with open(os.path.join(root, name, "max_energy_range_uj")) as f:
                max_range = int(f.read().strip())
            with open(path) as f:
                int(f.read().strip())
        except (OSError, ValueError):
            continue  # unreadable (often root-only): no measured energy from this zone
        zones.append((name, path, max_range))
    return zones


def rapl_read(zones):
    values = []
    for _, path, _ in zones:
        with open(path) as f:
            values.append(int(f.read().strip()))
    return values


def rapl_delta_uj(zones, before, after):
    """Energy counted between two reads, each counter's wrap-around at max_energy_range_uj handled."""
    total = 0
    for (_, _, max_range), b, a in zip(zones, before, after):
        total += a - b if a >= b else (max_range - b) + a
    return total


class RaplMeter:
    def __init__(self, zones):
        self.zones = zones

    def start(self):
        self.t0, self.before = time.perf_counter(), rapl_read(self.zones)

    def stop(self):
        after, seconds = rapl_read(self.zones), time.perf_counter() - self.t0
        return {"source": "rapl:" + ",".join(z[0] for z in self.zones), "scope": "CPU package counters (RAPL)",
                "energy_uj": rapl_delta_uj(self.zones, self.before, after), "seconds": seconds}


PMIC_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=(\S+?)[AV]\s*$")


def pmic_watts(text):
    """Power (W) from `vcgencmd pmic_read_adc` on a Raspberry Pi 5: the sum of current x voltage over the rails
    the PMIC reports both for (lines `  VDD_CORE_A current(7)=0.75A` and `  VDD_CORE_V volt(15)=0.72V`).
    Rails with a voltage only (EXT5V_V, BATT_V) are left out. None when nothing pairs (a Pi 4 answers
    `error=1 error_msg="Command not registered"`)."""
    amps, volts = {}, {}
    for line in text.splitlines():
        m = PMIC_LINE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        if value == value:  # not nan
            (amps if m.group(2) == "A" else volts)[m.group(1)] = value
    rails = sorted(set(amps) & set(volts))
    return sum(amps[r] * volts[r] for r in rails) if rails else None


def read_pmic(vcgencmd="vcgencmd"):
    try:
        p = subprocess.run([vcgencmd, "pmic_read_adc"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return pmic_watts(p.stdout) if p.returncode == 0 else None


def read_battery(root=POWER_SUPPLY_ROOT):
    """Power (W) drawn from an Android phone's battery: |current_now| (uA) x voltage_now (uV), the units of the
    Linux power_supply ABI. The sign of current_now while discharging differs between phones; its size
    does not. None when the files are absent or unreadable."""
    try:
        with open(os.path.join(root, "battery", "current_now")) as f:
            current_ua = int(f.read().strip())
        with open(os.path.join(root, "battery", "voltage_now")) as f:
            voltage_uv = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return abs(current_ua) * voltage_uv / 1e12


def integrate_uj(samples, t0, t1):
    """Energy (uJ) of power samples [(t_s, watts)] over [t0, t1], trapezoid rule."""
    pts = [(t, w) for t, w in samples if w is not None and t0 <= t <= t1]
    return sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(pts, pts[1:])) * 1e6


class SampledMeter:
    """Power read every `interval_s` on a thread, from start() to stop(), both ends included."""

    def __init__(self, source, scope, read_watts, interval_s):
        self.source, self.scope, self.read, self.interval_s = source, scope, read_watts, interval_s

    def _sample(self):
        self.samples.append((time.perf_counter(), self.read()))

    def _loop(self):
        while not self.done.wait(self.interval_s):
            self._sample()

    def start(self):
        self.samples, self.done = [], threading.Event()
        self._sample()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def stop(self):
        self.done.set()
        self.thread.join()
        self._sample()
        t0, t1 = self.samples[0][0], self.samples[-1][0]
        seconds = t1 - t0
        energy = integrate_uj(self.samples, t0, t1)
        read = [w for _, w in self.samples if w is not None]
        return {"source": self.source, "scope": self.scope, "energy_uj": int(round(energy)), "seconds": seconds,
                "power_samples": len(read), "sample_interval_s": self.interval_s,
                "mean_power_w": energy / 1e6 / seconds if seconds > 0 else None}


def energy_meter(kind, powercap_root=RAPL_ROOT, vcgencmd="vcgencmd", power_supply_root=POWER_SUPPLY_ROOT):
    """(meter or None, why none). `auto` takes the first source this device has: RAPL, a Pi 5 PMIC, a battery."""
    if kind == "none":
        return None, "energy counters off (--energy none)"
    if kind in ("auto", "rapl"):
        zones = rapl_zones(powercap_root)
        if zones:
            return RaplMeter(zones), ""
    if kind in ("auto", "pi5-pmic") and read_pmic(vcgencmd) is not None:
        return SampledMeter("pi5-pmic:vcgencmd pmic_read_adc", "sum of the PMIC's rails (board side of the "
                            "PMIC: USB devices and conversion losses are outside it)",
                            lambda: read_pmic(vcgencmd), 0.1), ""
    if kind in ("auto", "android-battery") and read_battery(power_supply_root) is not None:
        return SampledMeter("android-battery:" + os.path.join(power_supply_root, "battery"),
                            "whole phone, from its battery (screen, radios and idle draw included)",
                            lambda: read_battery(power_supply_root), 0.05), ""
    return None, ("no energy counter on this device (no readable RAPL, Pi 5 PMIC or battery)" if kind == "auto"
                  else "energy source %s is not readable on this device" % kind)


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


def eval_feeds(eval_data, specs):
    """Per-sample eval inputs by name: 'x' is the first input, 'input:NAME' any other; inputs without eval
    data repeat the bench feed's first row for every sample (e.g. a mask of ones, a sample rate)."""
    arrays = {}
    for key in eval_data.files:
        if key == "x":
            arrays[specs[0][0]] = eval_data[key]
        elif key.startswith("input:"):
            arrays[key[len("input:"):]] = eval_data[key]
    return arrays


def run_eval(backend, arrays, feed, batch_size):
    """Argmax predictions over the eval inputs, in batches when the model allows it."""
    preds = []
    n = next(iter(arrays.values())).shape[0]
    i = 0
    while i < n:
        batch = {k: v[i : i + batch_size] for k, v in arrays.items()}
        m = next(iter(batch.values())).shape[0]
        for k, v in feed.items():
            if k not in batch:
                batch[k] = np.repeat(v[:1], m, axis=0) if v.ndim and v.shape[0] == 1 else v
        y = np.asarray(backend.predict(batch))
        y = y.reshape(y.shape[0], -1) if y.ndim > 1 else y.reshape(1, -1)
        preds.extend(int(v) for v in np.argmax(y, axis=-1))
        i += batch_size
    return preds


def sharded_eval(backend, open_backend, shards, arrays, feed, batch_size):
    """run_eval split in `shards` contiguous parts (whole batches), each on its own session of the file (the
    first on `backend`, the others from open_backend()) in its own thread: both runtimes release the GIL while
    they infer. (predictions in the eval data's order, sessions used)."""
    n = next(iter(arrays.values())).shape[0]
    batches = (n + batch_size - 1) // batch_size
    shards = max(1, min(int(shards), batches))
    if shards == 1:
        return run_eval(backend, arrays, feed, batch_size), 1
    bounds = [min(n, (batches * i // shards) * batch_size) for i in range(shards + 1)]
    backends = [backend] + [open_backend() for _ in range(shards - 1)]
    results, errors = [None] * shards, []

    def work(i):
        try:
            part = dict((k, v[bounds[i]:bounds[i + 1]]) for k, v in arrays.items())
            results[i] = run_eval(backends[i], part, feed, batch_size)
        except Exception as exc:  # raised below, in the main thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(shards)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    return [p for part in results for p in part], shards


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
    ap.add_argument("--eval-threads", type=int, default=0,
                    help="runtime threads of the accuracy pass (0: --threads); latency is always timed at --threads")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--tflite-kernels", default="xnnpack", choices=TFLITE_KERNELS,
                    help="TFLite: xnnpack (the runtime's default delegate), builtin (TFLite's own kernels) or auto "
                         "(both probed here, the faster kept; the record says which)")
    ap.add_argument("--facts-only", action="store_true")
    ap.add_argument("--energy", default="auto", choices=ENERGY_SOURCES,
                    help="energy counter read around the measured runs (auto: the first the device has)")
    ap.add_argument("--powercap-root", default=RAPL_ROOT, help="where RAPL energy counters are read (tests)")
    ap.add_argument("--vcgencmd", default="vcgencmd", help="the Raspberry Pi's vcgencmd (tests: a fake one)")
    ap.add_argument("--power-supply-root", default=POWER_SUPPLY_ROOT, help="Android's power_supply (tests)")
    ap.add_argument("--insn-markers", action="store_true",
                    help="bracket each measured inference with instruction-count markers (emulated device)")
    ap.add_argument("--rounds-from-stdin", action="store_true",
                    help="time rounds on demand (see serve_rounds) instead of --runs; no energy counters")
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

        tflite = manifest["format"] == "tflite"
        kernels = args.tflite_kernels if tflite else None

        def open_backend(threads, **kw):  # TFLite: the run's kernels unless kw names others (the probe)
            return backend_cls(model_path, threads, **(dict({"kernels": kernels}, **kw) if tflite else kw))

        t0 = time.perf_counter_ns()
        backend = open_backend(args.threads, **({"kernels": "xnnpack"} if kernels == "auto" else {}))
        load_ns = time.perf_counter_ns() - t0
        result["runtime"] = backend.name
        result["runtime_version"] = backend.version
        result["threads"] = args.threads

        # The host resolved every input (shapes, dtypes, values) and wrote the exact arrays: nothing is
        # guessed here, and what was fed is what the record says was fed.
        specs = backend.input_specs()
        with np.load(os.path.join(args.bundle, manifest["feeds_file"])) as data:
            feed = {name: np.array(data[name], order="C") for name in data.files}
        missing = [n for n, _, _ in specs if n not in feed]
        if missing:
            raise ValueError("no value for model input(s) %s in the bundle" % ", ".join(missing))
        first_ns = None
        if kernels == "auto":  # the faster of XNNPACK and the builtin kernels on this device, probed here
            backend, first_ns, load, result["tflite_kernels_probe_ms"] = probe_tflite_kernels(
                backend, open_backend, args.threads, feed, manifest.get("stream"), args.bundle, args.runs)
            load_ns = load if load is not None else load_ns
            kernels = backend.kernels
        if tflite:
            result["tflite_kernels"] = kernels
        sources = dict((f["name"], f.get("source", "")) for f in manifest.get("feeds", []))
        result["inputs_fed"] = [{"name": n, "shape": list(feed[n].shape), "dtype": feed[n].dtype.name,
                                 "source": sources.get(n, "")} for n, _, _ in specs]

        stream = manifest.get("stream")  # a streaming step model: see stream_callables
        infer = timed_callable(backend, feed, stream, args.bundle)
        if stream:
            result["stream"] = {"mode": stream.get("mode", "step"), "steps": int(stream["steps"]),
                                "timed": "one step, state carried" if stream.get("mode", "step") == "step" else
                                "one window of %d steps from rest, state carried" % int(stream["steps"])}
        result["first_inference_ns"] = first_ns if first_ns is not None else timed(infer)
        result["load_ns"] = load_ns
        measured_infer = None
        if args.insn_markers:  # one empty region first: the markers' own cost, which the host subtracts
            insn_marker(INSN_MARK_START)
            insn_marker(INSN_MARK_END)
            measured_infer = with_insn_markers(infer)
        meter, why = None, "no energy counters under emulation"
        if args.rounds_from_stdin:
            meter, why = None, "not read in rounds on demand"
        elif not args.insn_markers:
            meter, why = energy_meter(args.energy, args.powercap_root, args.vcgencmd, args.power_supply_root)
        energy = {}
        if args.rounds_from_stdin:
            result["samples_ns"], result["round_samples"] = serve_rounds(infer, measured_infer)
        else:
            result["samples_ns"] = measure(infer, args.runs, args.warmup, args.min_time, measured_infer, meter, energy)
        if energy:
            result["energy_counter"] = energy
        elif why:
            result["energy_unavailable"] = why
        result["batch"] = int(feed[specs[0][0]].shape[0]) if feed[specs[0][0]].ndim else 1

        eval_file = manifest.get("eval_file")
        if eval_file and not args.no_eval:
            with np.load(os.path.join(args.bundle, eval_file)) as data:
                arrays = eval_feeds(data, specs)  # labels stay on the host: accuracy is computed there
            fixed_batch = isinstance(specs[0][1][0], int) and specs[0][1][0] > 0 if specs[0][1] else False
            eval_batch = specs[0][1][0] if fixed_batch else int(manifest.get("eval_batch", 64))
            if stream:
                with np.load(os.path.join(args.bundle, eval_file)) as data:
                    windows = data["x"]
                result["predictions"] = stream_eval(backend, feed, stream, windows, eval_batch, fixed_batch)
            else:
                # The accuracy pass has no clock. More threads than the timed runs' go into more sessions of
                # the same file, each on the timed thread count, over contiguous parts of the eval data: a small
                # model barely speeds up on more intra-op threads (TFLite's builtin INT8 kernels ran 8x
                # slower on 2 than on 1), while 2 sessions on 1 thread each ran 1.9-2.0x faster (OFA subnet,
                # TFLite fp32 and INT8, measured here). Fewer threads: one session on them.
                eval_threads = args.eval_threads or args.threads
                if eval_threads >= 2 * args.threads:
                    result["predictions"], shards = sharded_eval(
                        backend, lambda: open_backend(args.threads), eval_threads // args.threads, arrays, feed,
                        eval_batch)
                    if shards > 1:  # fewer batches than sessions: it ran on the timed session alone
                        result["eval_threads"], result["eval_sessions"] = shards * args.threads, shards
                elif eval_threads != args.threads:
                    result["predictions"] = run_eval(open_backend(eval_threads), arrays, feed, eval_batch)
                    result["eval_threads"], result["eval_sessions"] = eval_threads, 1
                else:
                    result["predictions"] = run_eval(backend, arrays, feed, eval_batch)
            result["n_eval"] = len(result["predictions"])
        if args.profile:
            result["profile"] = profile_pass(open_backend, args.threads, feed)
        result["peak_rss_mb"] = peak_rss_mb()
        result["ok"] = True
    except Exception as exc:  # reported, not raised: the host records a failed measurement
        result["error"] = "%s: %s" % (type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        result["traceback"] = traceback.format_exc()
    return result


def profile_pass(open_backend, threads, feed, runs=50, budget_s=0.1, min_runs=5):
    """A separate session with the profiler on, so profiling never touches the timed runs. Up to `runs`
    inferences, fewer (never under min_runs) once budget_s has passed: the profiler records an event per node
    and run, and reading them back took 1.4 s for 50 runs of a 1,217-node window model (0.3 s for 10), longer
    than its timed runs. Each row's count says how many runs it covers."""
    backend = open_backend(threads, profile=True)
    infer = backend.prepare(feed)
    t0 = time.perf_counter()
    for i in range(runs):
        infer()
        if i + 1 >= min_runs and time.perf_counter() - t0 > budget_s:
            break
    return backend.end_profile()


if __name__ == "__main__":
    out = main()
    sys.stdout.write("\nEDGEBENCH-RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()
    sys.exit(0 if out.get("ok") else 3)
