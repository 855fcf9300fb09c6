"""Many models timed in ONE runner process on any device: the generic timer behind the OFA latency table
(search/lut.py) and the kernel-level predictor (search/predictor.py).

The models go into one bundle with the batch runner (search/lut_runner.py, which loads each model with the
deployed runner's own session settings) and run in interleaved rounds, so slow drifts of the machine spread
over all models alike. On an emulated device the guest instructions of every measured inference are read
from the counter's per-region list.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgebench.types import EdgebenchError, RunSpec


def _runner() -> Path:
    return Path(importlib.util.find_spec("edgebench.search").origin).with_name("lut_runner.py")


@dataclass(frozen=True)
class BatchConfig:
    runs: int = field(default=200, metadata={"help": "measured inferences per model (over all rounds)"})
    rounds: int = field(default=5, metadata={"help": "interleaved rounds over all models of a batch"})
    warmup: int = field(default=5, metadata={"help": "unmeasured inferences per model and round"})
    threads: int = field(default=1, metadata={"help": "runtime threads (as the deployed models run)"})
    timeout_s: float = field(default=1800.0, metadata={"help": "timeout of one runner process"})

    def for_device(self, kind: str) -> "BatchConfig":
        """Under emulation instruction counts are exact after one run, and wall time is no latency."""
        if kind == "emulated":
            return dataclasses.replace(self, runs=min(self.runs, 3), rounds=1, warmup=min(self.warmup, 1))
        return self


def write_bundle(folder: Path, models: list[tuple[str, Path]], rounds: int):
    from edgebench.deploy.bundle import Bundle, copy_runner

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_runner(), folder / "runner.py")
    copy_runner(folder, "eb_runner.py")
    entries = []
    for i, (key, path) in enumerate(models):
        name = f"m{i:04d}.onnx"
        shutil.copyfile(path, folder / name)
        entries.append({"key": key, "file": name})
    manifest = {"bundle_version": 1, "name": "ofa-lut", "model": "ofa-lut", "format": "onnx",
                "model_file": entries[0]["file"], "eval_file": None, "kind": "edgebench-lut"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "lut.json").write_text(json.dumps({"rounds": rounds, "models": entries}))
    return Bundle(path=folder, manifest=manifest)


def run_emulated(device, bundle, spec: RunSpec):
    """The batch runner under qemu with the instruction counter: (Measurement, raw region counts, the same
    regions' counts inside the Python interpreter or None). The device's run() reports only the median over
    regions and caps the runs; a batch needs every round and one count per model, so it takes
    EmulatedDevice.run_counted's raw document."""
    m, counts = device.run_counted(bundle, spec)
    return m, (counts or {}).get("regions", []), (counts or {}).get("region_harness")


def measure_models(device, models: list[tuple[str, Path]], cfg, workdir: Path) -> dict:
    """{key: {"samples_ns": [...], "instructions": n or None[, "instructions_outside_interpreter": n]}} for
    models run in ONE runner process, plus "_measurement" (the runner's Measurement). `cfg`: a BatchConfig (or
    any config with its fields and for_device, such as the OFA table's LUTConfig)."""
    cfg = cfg.for_device(device.kind)
    bundle = write_bundle(Path(workdir), models, cfg.rounds)
    spec = RunSpec(runs=cfg.runs, warmup=cfg.warmup, threads=cfg.threads, eval=False, timeout_s=cfg.timeout_s)
    per_round = max(1, cfg.runs // cfg.rounds)
    if device.kind == "emulated":
        m, regions, harness = run_emulated(device, bundle, spec)
    else:
        m, regions, harness = device.run(bundle, spec), None, None
    if not m.ok:
        raise EdgebenchError(f"batch runner on {device.name} failed: {m.error}")
    n = len(models)
    if len(m.samples_ns) != cfg.rounds * per_round * n:
        raise EdgebenchError(f"batch runner on {device.name} returned {len(m.samples_ns)} samples, "
                             f"expected {cfg.rounds} x {per_round} x {n}")
    samples = np.asarray(m.samples_ns, dtype=np.int64).reshape(cfg.rounds, n, per_round)
    counts = None
    if regions:
        if len(regions) != 1 + samples.size:
            raise EdgebenchError(f"instruction counter saw {len(regions) - 1} regions, expected {samples.size}")
        counts = (np.asarray(regions[1:], dtype=np.int64) - regions[0]).reshape(cfg.rounds, n, per_round)
    outside = None
    if counts is not None and harness is not None and len(harness) == len(regions):
        outside = counts - (np.asarray(harness[1:], dtype=np.int64) - harness[0]).reshape(counts.shape)
    out = {}
    for i, (key, _) in enumerate(models):
        out[key] = {"samples_ns": samples[:, i, :].ravel().tolist(),
                    "instructions": int(np.median(counts[:, i, :])) if counts is not None else None}
        if outside is not None:
            out[key]["instructions_outside_interpreter"] = int(np.median(outside[:, i, :]))
    out["_measurement"] = m
    return out
