#!/usr/bin/env python3
"""edgebench bundle runner: the one script every device executes.

Self-contained on purpose: it and its parts beside it (runner_runtimes.py, runner_stream.py,
runner_device.py; deploy/bundle.py RUNNER_FILES) import only the standard library, numpy and the runtime
for the model's format (onnxruntime; ai_edge_litert, or tflite_runtime where a board only has that). They
are copied verbatim into every bundle and run as

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
import sys
import threading
import time
import traceback

import numpy as np

PROTOCOL = 1
MAX_SAMPLES = 200000  # a cap so a tiny model with a long --min-time cannot exhaust memory


if __package__:  # imported as edgebench.deploy.runner (the host's tests and tools)
    from .runner_device import (ENERGY_SOURCES, INSN_MARK_END, INSN_MARK_START, POWER_SUPPLY_ROOT, RAPL_ROOT,
                                device_facts, energy_meter, insn_marker, peak_rss_mb, with_insn_markers)
    from .runner_runtimes import OnnxBackend, TfliteBackend
    from .runner_stream import stream_callables, stream_eval
else:  # run as a script in a bundle: its parts sit beside it (deploy/bundle.py RUNNER_FILES)
    from runner_device import (ENERGY_SOURCES, INSN_MARK_END, INSN_MARK_START, POWER_SUPPLY_ROOT, RAPL_ROOT,
                               device_facts, energy_meter, insn_marker, peak_rss_mb, with_insn_markers)
    from runner_runtimes import OnnxBackend, TfliteBackend
    from runner_stream import stream_callables, stream_eval


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
