"""Host side of the runner protocol: runner argv and parsing of the JSON document it prints."""
from __future__ import annotations

import json

from edgebench.types import Measurement, Provenance, RunSpec

RESULT_TAG = "EDGEBENCH-RESULT "

# Run with a device's Python (`python -c VERSIONS_PROBE`): prints one JSON line with its version and the
# versions of the packages the runner may import (None: not installed).
VERSIONS_PROBE = r"""
import importlib, json, platform, sys
out = {"python": platform.python_version(), "python_executable": sys.executable, "machine": platform.machine()}
for name in ("numpy", "onnxruntime", "ai_edge_litert", "tflite_runtime"):
    try:
        m = importlib.import_module(name)
        out[name] = getattr(m, "__version__", "installed")
    except Exception:
        out[name] = None
print(json.dumps(out))
"""


def runner_args(spec: RunSpec) -> list[str]:
    args = [
        "--runs", str(spec.runs),
        "--warmup", str(spec.warmup),
        "--threads", str(spec.threads),
        "--min-time", repr(float(spec.min_time_s)),
    ]
    if not spec.eval:
        args.append("--no-eval")
    elif spec.eval_threads and spec.eval_threads != spec.threads:
        args += ["--eval-threads", str(spec.eval_threads)]
    if spec.profile:
        args.append("--profile")
    if spec.tflite_kernels != "xnnpack":
        args += ["--tflite-kernels", spec.tflite_kernels]
    return args


def parse_result(stdout: str) -> dict | None:
    """The runner's JSON document, or None when it never printed one (killed, crashed)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            try:
                return json.loads(line[len(RESULT_TAG):])
            except json.JSONDecodeError:
                return None
    return None


def _tail(text: str, n: int = 300) -> str:
    text = " ".join(text.strip().split())
    return text[-n:]


def measurement_from_output(
    device: str,
    provenance: Provenance,
    stdout: str,
    stderr: str,
    returncode: int | None,
    eval_labels=None,
) -> Measurement:
    """Turn what a runner process left behind into a Measurement, failed ones included."""
    doc = parse_result(stdout)
    if doc is None:
        if returncode is not None and returncode < 0:
            reason = f"runner killed by signal {-returncode}"
        elif returncode is None:
            reason = "runner did not finish"
        else:
            reason = f"runner exited with code {returncode} and no result"
        detail = _tail(stderr)
        return Measurement.failed(device, provenance, reason + (f": {detail}" if detail else ""))
    facts = doc.get("facts", {})
    if not doc.get("ok"):
        return Measurement.failed(
            device, provenance, f"runner error: {doc.get('error', 'unknown')}",
            device_facts=facts, runtime=doc.get("runtime", ""), runtime_version=doc.get("runtime_version", ""),
        )
    preds = doc.get("predictions")
    accuracy = None
    if preds is not None and eval_labels is not None and len(preds) == len(eval_labels) and len(preds):
        accuracy = float(sum(int(p) == int(y) for p, y in zip(preds, eval_labels)) / len(preds))
    return Measurement(
        ok=True,
        device=device,
        provenance=provenance,
        samples_ns=[int(s) for s in doc.get("samples_ns", [])],
        load_ms=doc["load_ns"] / 1e6 if doc.get("load_ns") is not None else None,
        first_inference_ms=doc["first_inference_ns"] / 1e6 if doc.get("first_inference_ns") is not None else None,
        peak_rss_mb=doc.get("peak_rss_mb"),
        runtime=doc.get("runtime", ""),
        runtime_version=doc.get("runtime_version", ""),
        threads=doc.get("threads"),
        predictions=preds,
        accuracy=accuracy,
        n_eval=int(doc.get("n_eval", 0) or 0),
        device_facts=facts,
        profile=doc.get("profile", []) or [],
        extra={"batch": doc.get("batch", 1),
               **({"energy_counter": doc["energy_counter"]} if doc.get("energy_counter") else {}),
               **({"energy_unavailable": doc["energy_unavailable"]} if doc.get("energy_unavailable") else {}),
               **({k: doc[k] for k in ("eval_threads", "eval_sessions") if doc.get(k)}),
               **({k: doc[k] for k in ("tflite_kernels", "tflite_kernels_probe_ms") if doc.get(k)})},
        inputs_fed=list(doc.get("inputs_fed") or []),
    )
