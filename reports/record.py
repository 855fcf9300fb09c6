"""The one record type: artifact + device + measurement + provenance, versioned.

Every stored or rendered figure passes through `Record`. Latency statistics are computed here, once,
from the raw samples the runner brought back.
"""
from __future__ import annotations

import math
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from edgebench.devices.energy import energy_warning
from edgebench.types import Artifact, Measurement, Provenance

SCHEMA_VERSION = 2  # 2: inputs_fed


CV_TRUST_LIMIT = 0.25  # above this spread a single p50 is not to be trusted on its own


def trust_warnings(records) -> list[str]:
    """Lines a user should read before trusting the figures (printed by the CLI, not stored)."""
    out = []
    for r in records:
        cv = (r.latency_ms or {}).get("cv")
        if cv is not None and cv > CV_TRUST_LIMIT:
            hint = (f"; `edgebench devices doctor {r.device} --stability 20` shows whether this machine "
                    f"changes speed" if r.device_kind == "local" else "")
            out.append(f"{r.name} on {r.device}: CV {cv:.0%} is too high to trust the p50 alone "
                       f"(busy machine or a very short model): pin a core, add --min-time, or run again{hint}")
        weak = energy_warning(r.extra)
        if weak:
            out.append(f"{r.name} on {r.device}: {weak}")
    return out


@dataclass(frozen=True)
class LatencyStats:
    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    cv: float  # std / mean

    @classmethod
    def from_samples_ns(cls, samples_ns) -> Optional["LatencyStats"]:
        values = sorted(s / 1e6 for s in samples_ns)
        n = len(values)
        if n == 0:
            return None
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        return cls(n=n, p50=percentile(values, 50), p90=percentile(values, 90), p99=percentile(values, 99),
                   mean=mean, std=std, min=values[0], max=values[-1], cv=std / mean if mean else 0.0)

    def to_dict(self) -> dict:
        return asdict(self)


def percentile(sorted_values, q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on an already sorted list."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


ESTIMATE_KEYS = ("estimated_latency_ms", "estimate_band", "estimate_calibrated", "estimate_calibration",
                 "estimate_note", "estimate_ipc", "estimate_clock_ghz", "instructions_by_class")


def estimate_latency(extra: dict) -> Optional[dict]:
    """The latency figures of an emulated run: the estimate of the board's latency, its band (relative, from
    cross-validation) and the interval it spans; None without an estimate (e.g. threads > 1)."""
    est = extra.get("estimated_latency_ms")
    if est is None:
        return None
    band = extra.get("estimate_band")
    return {"p50": est, "estimate": est, "band": band,
            "low": est * (1 - band) if band is not None else None,
            "high": est * (1 + band) if band is not None else None,
            "calibrated": bool(extra.get("estimate_calibrated")),
            "calibration": (extra.get("estimate_calibration") or {}).get("file")}


def format_estimate(lat: Optional[dict]) -> str:
    """`12.3 ms ±11%` for a calibrated estimate, `12.3 ms (uncalibrated)` otherwise."""
    if not lat or lat.get("estimate") is None:
        return "–"
    if lat.get("band") is not None:
        return f"{lat['estimate']:.4g} ms ±{lat['band']:.0%}"
    return f"{lat['estimate']:.4g} ms (uncalibrated)"


@dataclass
class Record:
    # identity
    run_id: str
    name: str  # artifact name
    model: str
    dataset: str
    device: str
    status: str  # "ok" or "failed"
    error: str = ""
    schema_version: int = SCHEMA_VERSION
    record_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = field(default_factory=time.time)
    # artifact
    format: str = ""
    precision: str = ""
    artifact_path: str = ""
    sha256: str = ""
    opset: Optional[int] = None
    size_bytes: Optional[int] = None
    macs: Optional[int] = None
    macs_definition: str = ""
    params: Optional[int] = None
    onnx_encoding: str = ""
    validation: Optional[dict] = None
    # device
    device_kind: str = ""
    device_facts: dict = field(default_factory=dict)
    runtime: str = ""
    runtime_version: str = ""
    threads: Optional[int] = None
    # measurement
    latency_ms: Optional[dict] = None  # LatencyStats.to_dict()
    latency_provenance: str = ""
    load_ms: Optional[float] = None
    first_inference_ms: Optional[float] = None
    peak_rss_mb: Optional[float] = None
    accuracy: Optional[float] = None  # computed on the host from predictions the device produced
    accuracy_provenance: str = ""  # "measured": the deployed file's outputs on the device
    n_eval: int = 0
    inputs_fed: list = field(default_factory=list)  # every input's shape, dtype and value source as timed
    samples_ns: list = field(default_factory=list)
    predictions: Optional[list] = None
    profile: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_parts(cls, run_id: str, artifact: Artifact, measurement: Measurement, device_kind: str) -> "Record":
        stats = LatencyStats.from_samples_ns(measurement.samples_ns) if measurement.ok else None
        extra = dict(artifact.extra)
        extra.update(measurement.extra)
        latency, provenance = (stats.to_dict() if stats else None), measurement.provenance.value
        if device_kind == "emulated" and measurement.ok:
            # the wall time under emulation is no device latency: it keeps its own name, and the latency
            # figures are the estimate of the board's latency (with its band), or absent
            extra["emulated_wall_time_ms"] = stats.to_dict() if stats else None
            latency, provenance = estimate_latency(extra), Provenance.ESTIMATED.value
            if latency is None:
                provenance = ""
        return cls(
            run_id=run_id, name=artifact.name, model=artifact.model, dataset=artifact.dataset,
            device=measurement.device, status="ok" if measurement.ok else "failed", error=measurement.error,
            format=artifact.format.value, precision=artifact.precision.value, artifact_path=str(Path(artifact.path).resolve()),
            sha256=artifact.sha256, opset=artifact.opset, size_bytes=artifact.size_bytes, macs=artifact.macs,
            macs_definition=artifact.macs_definition, params=artifact.params, onnx_encoding=artifact.encoding,
            validation=artifact.validation.to_dict() if artifact.validation else None,
            device_kind=device_kind, device_facts=dict(measurement.device_facts), runtime=measurement.runtime,
            runtime_version=measurement.runtime_version, threads=measurement.threads,
            latency_ms=latency,
            latency_provenance=provenance,
            load_ms=measurement.load_ms, first_inference_ms=measurement.first_inference_ms,
            peak_rss_mb=measurement.peak_rss_mb, accuracy=measurement.accuracy,
            accuracy_provenance=(Provenance.MEASURED.value if measurement.accuracy is not None else ""),
            n_eval=measurement.n_eval, inputs_fed=list(measurement.inputs_fed), samples_ns=list(measurement.samples_ns),
            predictions=measurement.predictions, profile=list(measurement.profile), extra=extra,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Record":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def summary(self) -> dict:
        """The JSON object `edgebench bench --json` prints (no raw samples)."""
        out = {
            "name": self.name,
            "status": self.status,
            "device": self.device,
            "device_kind": self.device_kind,
            "runtime": f"{self.runtime} {self.runtime_version}".strip(),
            "threads": self.threads,
            "format": self.format,
            "precision": self.precision,
            "latency_ms": self.latency_ms,
            "load_ms": self.load_ms,
            "first_inference_ms": self.first_inference_ms,
            "peak_rss_mb": self.peak_rss_mb,
            "inputs_fed": self.inputs_fed,
            "macs": self.macs,
            "macs_definition": self.macs_definition,
            "params": self.params,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "provenance": {"latency": self.latency_provenance, "accuracy": self.accuracy_provenance or None},
            "device_facts": self.device_facts,
            "record_id": self.record_id,
            "run_id": self.run_id,
        }
        if self.accuracy is not None:
            out["accuracy"] = self.accuracy
            out["n_eval"] = self.n_eval
        if self.error:
            out["error"] = self.error
        if self.profile:
            out["profile"] = self.profile
        if self.device_kind == "emulated":
            out["emulated_wall_time_ms"] = self.extra.get("emulated_wall_time_ms")
            out["estimate"] = {k: self.extra.get(k) for k in ESTIMATE_KEYS if k in self.extra}
        for key in ("instructions_per_inference", "instructions_outside_interpreter", "estimated_latency_ms",
                    "estimated_provenance",
                    "activation_sparsity", "synops_per_sample", "effective_macs_per_sample", "dense_macs_per_sample",
                    "spike_rate_by_population", "weight_sparsity", "macs_by_op", "macs_unavailable",
                    "energy_mj_per_inference", "energy_provenance", "energy_source", "energy_window_s",
                    "energy_mean_power_w", "energy_power_samples", "energy_unavailable",
                    "synops_energy_mj_per_sample", "synops_energy_source", "dense_mac_energy_mj_per_sample",
                    "farm", "tflite_kernels", "tflite_kernels_probe_ms", "eval_threads",
                    "eval_sessions"):
            if key in self.extra:
                out[key] = self.extra[key]
        return out
