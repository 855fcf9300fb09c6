"""The main job's records, for the report tests.

data/har_l2mu_records.json is records.json of a real `edgebench run examples/har_l2mu.toml` on this kind of
machine (33 records on `local`, raw samples and predictions kept; graph encodings cut to 8 lines and artifact
paths dropped, so the fixture stays small and copies no ONNX file).

The main job measures one device. To test what a report shows for more (filtering to one device, estimated
latencies, instruction counts, search picks with a predicted point and an arch), `with_more_devices` adds
records made here, marked by their names and run as synthetic: an emulated Cortex-A72 with estimated
latencies and guest instruction counts, one failed measurement, and OFA-style picks (two with an
operator profile).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from edgebench.reports.record import LatencyStats, Record

MAIN_JOB = Path(__file__).parent / "data" / "har_l2mu_records.json"


def main_job_records() -> list[Record]:
    return [Record.from_dict(d) for d in json.loads(MAIN_JOB.read_text())]


def synthetic_records(base: list[Record]) -> list[Record]:
    out = []
    for i, r in enumerate(x for x in base if x.model == "lmu" and x.extra.get("graph") in (None, "stream")):
        e = copy.deepcopy(r)
        e.record_id, e.run_id, e.device, e.device_kind = f"syn-emu-{i}", "synthetic", "pi4-emulated", "emulated"
        e.device_facts = {"cpu": "cortex-a72 (emulated, qemu-aarch64 TCG)", "cores": 4, "machine": "aarch64"}
        est = 6.0 * r.latency_ms["p50"]
        e.latency_ms = {"p50": est, "estimate": est, "band": 0.11, "low": est * 0.89, "high": est * 1.11}
        e.latency_provenance = "estimated"
        e.samples_ns = [s * 40 for s in r.samples_ns]  # emulated wall time: drawn, never a device latency
        insn = 1_000_000 + 50_000 * i
        e.extra = {**r.extra, "instructions_per_inference": insn, "estimated_latency_ms": est,
                   "instructions_by_class": {"float": insn // 2, "int": insn // 4, "load/store": insn // 4}}
        out.append(e)
    failed = copy.deepcopy(base[0])
    failed.record_id, failed.device, failed.name = "syn-failed", "pi4-emulated", "l2mu_lif-onnx-int8"
    failed.status, failed.error = "failed", "export: top-1 agreement 50% < 90% | second line\nthird"
    failed.latency_ms, failed.samples_ns, failed.accuracy, failed.latency_provenance = None, [], None, ""
    out.append(failed)
    for i, (acc, p50, pred) in enumerate([(0.83, 2.4, 2.2), (0.79, 1.5, 1.6), (0.69, 0.6, 0.55)]):
        o = copy.deepcopy(base[0])
        o.record_id, o.run_id, o.model, o.name = f"syn-ofa-{i}", "synthetic", f"ofa-b{i}", f"ofa-local-b{i}-onnx-fp32"
        o.samples_ns = [int(p50 * 1e6 * (1 + 0.01 * (k % 7))) for k in range(100)]
        o.latency_ms = LatencyStats.from_samples_ns(o.samples_ns).to_dict()
        o.accuracy, o.n_eval, o.predictions = acc, 1000, None
        o.extra = {"arch": {"ks": [3, 5, 7][: i + 1], "e": [4, 6], "d": [2, 2, 2], "r": 28},
                   "predicted_latency_ms": pred, "predicted_accuracy": acc + 0.02}
        if i < 2:  # an operator profile as onnxruntime's profiler gives it (op, node, µs per run, share)
            o.profile = [{"op": op, "node": f"n{k}", "mean_us": us, "share": us / 30.0, "count": 100,
                          "total_us": 100 * us} for k, (op, us) in enumerate([("Conv", 18.0 + i), ("Gemm", 7.0),
                                                                                 ("Relu", 3.0), ("Add", 2.0)])]
        out.append(o)
    return out


@pytest.fixture()
def main_job() -> list[Record]:
    return main_job_records()


@pytest.fixture()
def with_more_devices() -> list[Record]:
    base = main_job_records()
    return base + synthetic_records(base)
