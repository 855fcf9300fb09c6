"""What a `job = "ofa"` run config holds: its sections as strict dataclasses, parsed and checked in one place
(search/ofa_job.py runs it). A field's help and limits sit beside it; a bad value is one line naming the section.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgebench.search.accuracy import PredictorConfig
from edgebench.search.lut import LUTConfig
from edgebench.train.ofa import OFASpec
from edgebench.train.ofa_train import ShrinkConfig
from edgebench.types import INT8_ACTIVATIONS, TFLITE_KERNELS, EdgebenchError, Format, Precision

TOP_LEVEL = {"job", "name", "out_dir", "store", "data", "model", "train", "predictor", "lut", "search", "export",
             "bench"}


@dataclass(frozen=True)
class DataConfig:
    root: str = field(default="", metadata={"help": "folder of the Fashion-MNIST IDX files (default: Debian's "
                                                    "/usr/share/datasets/fashion-mnist)"})
    val_size: int = field(default=5000, metadata={"help": "training images held out for validation", "min": 100})
    seed: int = field(default=0, metadata={"help": "seed of the validation split"})
    train_limit: int = field(default=0, metadata={"help": "use only this many training images (0: all)", "min": 0})
    test_limit: int = field(default=0, metadata={"help": "use only this many test images (0: all)", "min": 0})


@dataclass(frozen=True)
class SearchConfig:
    budgets: tuple = field(default=(0.3, 0.6, 0.9), metadata={
        "help": "latency budgets per device as fractions of its predicted range (0: smallest subnet, 1: "
                "largest), so one list serves devices of any speed"})
    budgets_ms: dict = field(default_factory=dict, metadata={
        "help": "absolute budgets per device, e.g. {local = [0.5, 1.0]}; replace the fractions for that device"})
    pareto: bool = field(default=True, metadata={
        "help": "NSGA-II front of predicted accuracy vs latency for the report"})
    pareto_population: int = field(default=50, metadata={"help": "NSGA-II population", "min": 4})
    pareto_generations: int = field(default=50, metadata={"help": "NSGA-II generations", "min": 1})
    population: int = field(default=100, metadata={"help": "evolution population", "min": 4})
    generations: int = field(default=500, metadata={"help": "evolution generations", "min": 0})
    seed: int = field(default=0, metadata={"help": "seed"})
    deploy_extremes: bool = field(default=True, metadata={"help": "also deploy the largest and smallest subnet"})


@dataclass(frozen=True)
class ExportConfig:
    formats: tuple = field(default=("onnx",), metadata={"help": "onnx and/or tflite"})
    precisions: tuple = field(default=("fp32",), metadata={"help": "fp32, int8, int8-dynamic"})
    opset: int = field(default=17, metadata={"help": "ONNX opset"})
    atol: float = field(default=1e-4, metadata={"help": "fp32 tolerance against PyTorch", "gt": 0.0})
    min_agreement: float = field(default=0.0, metadata={
        "help": "top-1 agreement with PyTorch an INT8 file must reach on the validation images (0: the format's "
                "default, 0.98 TFLite, 0.97 ONNX)", "min": 0.0, "max": 1.0})
    int8_activations: str = field(default="int8", metadata={
        "help": "static ONNX INT8 activations: int8 (best on ARM) or uint8 (onnxruntime on x86 fuses every Conv)",
        "choices": INT8_ACTIVATIONS})
    calib_images: int = field(default=500, metadata={
        "help": "static INT8 calibration images from the training split at the subnet's resolution (TFLite "
                "calibrates on all of them, ONNX on the first 300)", "min": 16})
    workers: int = field(default=0, metadata={
        "help": "processes that export the subnets before any device measures (0: one per core)", "min": 0})


@dataclass(frozen=True)
class BenchConfig:
    devices: tuple = field(default=("local",), metadata={"help": "device names (devices.toml or built in)"})
    devices_file: str = field(default="", metadata={"help": "devices.toml path (default ./devices.toml)"})
    runs: int = field(default=200, metadata={"help": "measured inferences per artifact", "min": 1})
    warmup: int = field(default=20, metadata={"help": "warm-up inferences", "min": 0})
    threads: int = field(default=1, metadata={"help": "runtime threads (the LUT is built with the same)", "min": 1})
    timeout_s: float = field(default=900.0, metadata={"help": "per-measurement timeout", "gt": 0.0})
    eval_images: int = field(default=0, metadata={
        "help": "test images a device measures accuracy on (0: all)", "min": 0})
    eval_threads: int = field(default=0, metadata={
        "help": "runtime threads of the accuracy pass on a device that is not emulated (0: threads); the timed "
                "runs keep threads", "min": 0})
    tflite_kernels: str = field(default="xnnpack", metadata={
        "help": "TFLite: xnnpack (the runtime's default delegate), builtin (TFLite's own kernels) or auto (both "
                "probed on the device, the faster kept; XNNPACK is many times slower on depthwise kernels above "
                "5x5: benchmarks/tflite_dwconv.py)", "choices": TFLITE_KERNELS})
    validate_images: int = field(default=1000, metadata={
        "help": "test images every export is checked against PyTorch on (atol, INT8 top-1 agreement; 0: the "
                "eval images); accuracy on the device still uses eval_images", "min": 0})
    emulated_eval_images: int = field(default=500, metadata={
        "help": "test images bundled for an emulated device (qemu runs them 100x slower)", "min": 0})
    emulated_runs: int = field(default=5, metadata={
        "help": "measured inferences on an emulated device: its counted instructions are exact after one (the "
                "device's own cap, max_runs, still applies); the wall time under qemu is no latency", "min": 1})
    emulated_parallel: int = field(default=2, metadata={
        "help": "measurements on an emulated device run at once (its counted "
                "instructions do not depend on the load); any other device measures alone", "min": 1})


@dataclass(frozen=True)
class OFAJob:
    name: str
    out: Path
    store: Path
    data: DataConfig
    model: OFASpec
    train: ShrinkConfig
    predictor: PredictorConfig
    lut: LUTConfig
    search: SearchConfig
    export: ExportConfig
    bench: BenchConfig
    digest: str

    def train_identity(self) -> dict:
        """What makes a supernet checkpoint reusable by this config."""
        return {"data": asdict(self.data), "model": self.model.to_dict(), "train": asdict(self.train)}


def parse(doc: dict, source: Path) -> OFAJob:
    from edgebench.config import build_strict

    where = str(source)
    unknown = sorted(set(doc) - TOP_LEVEL)
    if unknown:
        raise EdgebenchError(f"{where}: unknown top-level key(s) {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(TOP_LEVEL))})")
    if not isinstance(doc.get("name"), str) or not doc["name"]:
        raise EdgebenchError(f"{where}: needs a top-level name = \"...\"")
    model = build_strict(OFASpec, doc.get("model", {}), f"{where}: [model]")
    search = build_strict(SearchConfig, doc.get("search", {}), f"{where}: [search]")
    export = build_strict(ExportConfig, doc.get("export", {}), f"{where}: [export]")
    bench = build_strict(BenchConfig, doc.get("bench", {}), f"{where}: [bench]")
    for f in export.formats:
        if f not in {x.value for x in Format}:
            raise EdgebenchError(f"{where}: [export] unknown format '{f}' (onnx, tflite)")
    for p in export.precisions:
        if p not in {x.value for x in Precision}:
            raise EdgebenchError(f"{where}: [export] unknown precision '{p}' (fp32, int8, int8-dynamic)")
    if any(not 0 <= float(b) <= 1 for b in search.budgets):
        raise EdgebenchError(f"{where}: [search] budgets are fractions within [0, 1], got {list(search.budgets)}")
    if not bench.devices:
        raise EdgebenchError(f"{where}: [bench] devices must name at least one device")
    name = doc["name"]
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return OFAJob(
        name=name, out=Path(doc.get("out_dir") or f"out/{name}"),
        store=Path(doc.get("store") or "out/edgebench.sqlite"),
        data=build_strict(DataConfig, doc.get("data", {}), f"{where}: [data]"), model=model,
        train=build_strict(ShrinkConfig, doc.get("train", {}), f"{where}: [train]"),
        predictor=build_strict(PredictorConfig, doc.get("predictor", {}), f"{where}: [predictor]"),
        lut=build_strict(LUTConfig, doc.get("lut", {}), f"{where}: [lut]"), search=search, export=export,
        bench=bench, digest=digest)
