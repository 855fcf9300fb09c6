#!/usr/bin/env python3
"""edgebench latency-table runner: times every model of a LUT bundle in ONE process.

Copied into a LUT bundle as `runner.py`, next to `eb_runner.py` (a verbatim copy of edgebench's
deploy/runner.py) and that runner's parts, so every device adapter starts it exactly as it starts the normal
runner:

    python3 runner.py BUNDLE [--runs N] [--warmup N] [--threads N] [--insn-markers] ...

Each model is loaded with eb_runner's own OnnxBackend (only its constructor, input_specs() and
prepare() are used, with the marker and facts helpers) (same onnxruntime session settings as a deployed
model: a table built with other settings predicts something else). Measurement is interleaved: for
each of `rounds` rounds, every model runs `warmup` unmeasured then `runs // rounds` measured inferences,
so slow drifts of the machine spread over all models alike. samples_ns is the concatenation, round by
round and model by model in lut.json order: the host splits it. With --insn-markers every measured
inference is bracketed for the emulator's instruction counter, in the same order.
Standard library + numpy + the runtime only; Python 3.7 compatible.
"""
import argparse
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eb_runner  # noqa: E402  (the bundle's copy of deploy/runner.py)

import numpy as np  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description="edgebench LUT runner")
    ap.add_argument("bundle")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-time", type=float, default=0.0)  # accepted for the protocol; not used
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--facts-only", action="store_true")
    ap.add_argument("--insn-markers", action="store_true")
    args = ap.parse_args(argv)
    result = {"protocol": eb_runner.PROTOCOL, "ok": False, "facts": eb_runner.device_facts()}
    try:
        if args.facts_only:
            result["ok"] = True
            return result
        with open(os.path.join(args.bundle, "lut.json")) as f:
            lut = json.load(f)
        rounds = max(1, int(lut.get("rounds", 1)))
        per_round = max(1, args.runs // rounds)
        models, fed = [], []
        t0 = time.perf_counter_ns()
        for m in lut["models"]:
            backend = eb_runner.OnnxBackend(os.path.join(args.bundle, m["file"]), args.threads)
            feed = {}
            for name, shape, dtype in backend.input_specs():  # every input (a kernel may read two)
                shape = [d if isinstance(d, int) and d > 0 else 1 for d in shape]  # batch 1
                if np.dtype(dtype).kind in "iub":  # indices and flags: zeros are valid
                    feed[name] = np.zeros(shape, dtype=dtype)
                else:
                    feed[name] = np.random.default_rng(0).standard_normal(shape).astype(dtype)
                fed.append({"name": "%s:%s" % (m["key"], name), "shape": shape, "dtype": dtype,
                            "source": "random normal, seed 0" if np.dtype(dtype).kind == "f" else "zeros"})
            models.append(backend.prepare(feed))
        result["load_ns"] = time.perf_counter_ns() - t0
        result["runtime"] = "onnxruntime"
        result["runtime_version"] = backend.version if models else ""
        result["threads"] = args.threads
        if args.insn_markers:  # the markers' own cost first, as the normal runner does
            eb_runner.insn_marker(eb_runner.INSN_MARK_START)
            eb_runner.insn_marker(eb_runner.INSN_MARK_END)
        samples = []
        clock = time.perf_counter_ns
        for _ in range(rounds):
            for infer in models:
                for _ in range(args.warmup):
                    infer()
                measured = eb_runner.with_insn_markers(infer) if args.insn_markers else infer
                for _ in range(per_round):
                    t = clock()
                    measured()
                    samples.append(clock() - t)
        result["samples_ns"] = samples
        result["inputs_fed"] = fed
        result["lut_layout"] = {"rounds": rounds, "per_round": per_round, "models": len(models)}
        result["batch"] = 1
        result["peak_rss_mb"] = eb_runner.peak_rss_mb()
        result["ok"] = True
    except Exception as exc:
        result["error"] = "%s: %s" % (type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        result["traceback"] = traceback.format_exc()
    return result


if __name__ == "__main__":
    out = main()
    sys.stdout.write("\nEDGEBENCH-RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()
    sys.exit(0 if out.get("ok") else 3)
