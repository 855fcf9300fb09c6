"""TFLite's benchmark_model binary: its text output parsed, and turned into a Measurement that fills in
nothing the binary did not print (no raw samples, no percentiles of ours, no accuracy)."""
from __future__ import annotations

import re

from edgebench.types import Measurement, Provenance, RunSpec


# ---------------------------------------------------------------- benchmark_model output
# Format: TensorFlow's tensorflow/lite/tools/benchmark/benchmark_model.cc (BenchmarkModel::Run logs
# "Running benchmark for at least N iterations ..." then one Stat line per phase, warm-up first, then
# the regular runs; BenchmarkLoggingListener::OnBenchmarkEnd logs "Inference timings in us: Init: ...,
# First inference: ..., Warmup (avg): ..., Inference (avg): ..." and the memory lines), and
# Stat::OutputToStream (tensorflow/core/util/stats_calculator.h): "count=N first=F curr=C min=A max=B
# avg=M std=S", "count=N curr=C(all same)" or "count=0"; newer builds append "p5=.. median=.. p95=..".
# Older builds print "Average inference timings in us: Warmup: W, Init: I, Inference: X".
_LOG_PREFIX = r"^\s*(?:[A-Z]+:\s+)?"
_STAT_LINE = re.compile(_LOG_PREFIX + r"count=(\d+)(.*)$")
_STAT_FIELD = re.compile(r"(\w+)=(-?[\d.eE+-]+)")
_TIMINGS = re.compile(r"timings in us:\s*(.*)$", re.IGNORECASE)
_TIMING_KEYS = {
    "init": "init_us",
    "first inference": "first_inference_us",
    "warmup (avg)": "warmup_avg_us",
    "warmup": "warmup_avg_us",
    "inference (avg)": "inference_avg_us",
    "inference": "inference_avg_us",
    "no stats": "inference_avg_us",
}
_MEMORY_DELTA = re.compile(r"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\):"
                           r"\s*init=([\d.eE+-]+)\s+overall=([\d.eE+-]+)")
_MEMORY_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring:\s*([\d.eE+-]+)")
_VMRSS_END = re.compile(r"-\s*VmRSS\s*:\s*([\d.]+)\s*MB")
_INIT_SESSION = re.compile(r"Initialized session in ([\d.eE+-]+)\s*ms")
_MODEL_SIZE = re.compile(r"The input model file size \(MB\):\s*([\d.eE+-]+)")


def _number(text: str):
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def _parse_stat(count: str, rest: str) -> dict:
    stat = {"count": int(count)}
    for key, value in _STAT_FIELD.findall(rest):
        stat[key] = _number(value)
    if "(all same)" in rest or (stat["count"] == 1 and "curr" in stat and "min" not in stat):
        # every run took the same time: the tool prints only `curr`; the rest follows exactly
        c = stat["curr"]
        stat.update(first=c, min=c, max=c, avg=c, std=0, all_same=True)
    return stat


def parse_benchmark_model_output(text: str) -> dict:
    """The figures TFLite's benchmark_model printed, in its own units (us, MB). Missing ones are absent.

    Keys: warmup / inference (each {count, first, curr, min, max, avg, std[, p5, median, p95]}),
    init_us, first_inference_us, warmup_avg_us, inference_avg_us, init_session_ms, model_size_mb,
    memory_init_delta_mb, memory_overall_delta_mb, peak_memory_mb, vm_rss_end_mb.
    """
    out: dict = {}
    stats = []
    for line in text.splitlines():
        m = _STAT_LINE.match(line)
        if m:
            stats.append(_parse_stat(m.group(1), m.group(2)))
            continue
        m = _TIMINGS.search(line)
        if m:
            for part in m.group(1).split(","):
                key, _, value = part.partition(":")
                name = _TIMING_KEYS.get(key.strip().lower())
                if name and value.strip():
                    try:
                        out[name] = _number(value.strip())
                    except ValueError:
                        pass
            continue
        if (m := _MEMORY_DELTA.search(line)):
            out["memory_init_delta_mb"], out["memory_overall_delta_mb"] = float(m.group(1)), float(m.group(2))
        elif (m := _MEMORY_PEAK.search(line)):
            out["peak_memory_mb"] = float(m.group(1))
        elif (m := _VMRSS_END.search(line)):
            out["vm_rss_end_mb"] = float(m.group(1))
        elif (m := _INIT_SESSION.search(line)):
            out["init_session_ms"] = float(m.group(1))
        elif (m := _MODEL_SIZE.search(line)):
            out["model_size_mb"] = float(m.group(1))
    if len(stats) >= 2:
        out["warmup"], out["inference"] = stats[0], stats[-1]
    elif len(stats) == 1:
        out["inference"] = stats[0]
    return out


ABSENT_FROM_BENCHMARK_MODEL = ["samples_ns", "percentiles", "predictions", "accuracy", "peak_rss_mb"]


def measurement_from_benchmark_model(device: str, parsed: dict, spec: RunSpec) -> Measurement:
    """A Measurement from benchmark_model's aggregates: nothing it did not print is filled in."""
    first = parsed.get("first_inference_us")
    if first is None and parsed.get("warmup", {}).get("first") is not None:
        first = parsed["warmup"]["first"]
    init_us = parsed.get("init_us")
    return Measurement(
        ok=True,
        device=device,
        provenance=Provenance.MEASURED,
        samples_ns=[],  # the binary prints aggregates, never the individual runs
        load_ms=init_us / 1e3 if init_us is not None else None,
        first_inference_ms=first / 1e3 if first is not None else None,
        peak_rss_mb=None,  # its memory figures are deltas from tool start, a different quantity: in extra
        runtime="tflite-benchmark_model",
        runtime_version="",
        threads=spec.threads,
        predictions=None,
        accuracy=None,  # random inputs: no eval pass
        n_eval=0,
        extra={
            "benchmark_model": parsed,
            "absent": list(ABSENT_FROM_BENCHMARK_MODEL),
            "latency_source": "benchmark_model aggregates (us)",
            "energy_unavailable": "benchmark_model has no window around its measured runs to read a counter in",
        },
    )
