"""The run config (`edgebench run CONFIG.toml`): frozen dataclasses read strictly from TOML.

A typo in a key is an error with one clear line, not a silently ignored setting.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from edgebench.types import EdgebenchError, Format, Precision


@dataclass(frozen=True)
class ModelSpec:
    name: str = field(metadata={"help": "name used in artifact and report rows"})
    kind: str = field(metadata={"help": "model registry key: cnn, l2mu, lmu"})
    dataset: str = field(metadata={"help": "dataset registry key: digits, basicmotions, wisdm"})
    model: dict = field(default_factory=dict, metadata={"help": "model hyper-parameters"})
    train: dict = field(default_factory=dict, metadata={"help": "epochs, batch_size, lr, seed"})
    data: dict = field(default_factory=dict, metadata={"help": "dataset options"})
    prune: tuple = field(default=(), metadata={"help": "magnitude-pruning sparsities, e.g. [0.5, 0.8]: one "
                                                        "fine-tuned variant each"})
    finetune_epochs: int = field(default=3, metadata={"help": "fine-tune epochs after pruning"})
    prune_formats: tuple = field(default=("onnx",), metadata={"help": "formats pruned variants export to"})
    prune_precisions: tuple = field(default=("fp32",), metadata={"help": "precisions pruned variants export to"})


@dataclass(frozen=True)
class ExportSpec:
    formats: tuple = field(default=("onnx",), metadata={"help": "onnx and/or tflite"})
    precisions: tuple = field(default=("fp32",), metadata={"help": "fp32, int8, int8-dynamic"})
    opset: int = field(default=17, metadata={"help": "ONNX opset"})
    atol: float = field(default=1e-4, metadata={"help": "fp32 tolerance against PyTorch"})
    min_agreement: float = field(default=0.0, metadata={
        "help": "top-1 agreement with PyTorch a quantized artifact must reach; 0: the exporter's default "
                "(0.98 TFLite, 0.97 ONNX)"})


@dataclass(frozen=True)
class BenchSpec:
    devices: tuple = field(default=("local",), metadata={"help": "device names from devices.toml"})
    runs: int = field(default=200, metadata={"help": "measured inferences (at least)"})
    warmup: int = field(default=20, metadata={"help": "warm-up inferences, not measured"})
    threads: int = field(default=1, metadata={"help": "runtime intra-op threads"})
    min_time_s: float = field(default=0.0, metadata={"help": "keep measuring at least this long"})
    profile: bool = field(default=False, metadata={"help": "per-operator profile (onnxruntime)"})
    timeout_s: float = field(default=600.0, metadata={"help": "per-measurement timeout"})
    devices_file: str = field(default="", metadata={"help": "devices.toml path (default ./devices.toml)"})


@dataclass(frozen=True)
class RunConfig:
    name: str
    models: tuple  # of ModelSpec
    export: ExportSpec = ExportSpec()
    bench: BenchSpec = BenchSpec()
    out_dir: str = ""  # default out/<name>
    store: str = ""  # default out/edgebench.sqlite
    source: str = ""

    @property
    def out_path(self) -> Path:
        return Path(self.out_dir or f"out/{self.name}")

    @property
    def store_path(self) -> Path:
        return Path(self.store or "out/edgebench.sqlite")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source", None)
        return d

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]


def build_strict(cls, raw: dict, where: str):
    """A frozen dataclass from a TOML table: an unknown key or a value of the wrong type is one line."""
    if not isinstance(raw, dict):
        raise EdgebenchError(f"{where}: expected a table, got {type(raw).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise EdgebenchError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    values = {}
    for k, v in raw.items():
        default = names[k].default
        if isinstance(default, tuple):
            if not isinstance(v, list):
                raise EdgebenchError(f"{where}.{k}: expected a list, got {v!r}")
            v = tuple(v)
        elif default is not dataclasses.MISSING and isinstance(default, (int, float, bool, str)):
            ok = isinstance(v, type(default)) or (isinstance(default, float) and isinstance(v, int)
                                                   and not isinstance(v, bool))
            if not ok:
                raise EdgebenchError(f"{where}.{k}: expected {type(default).__name__}, got {v!r}")
        values[k] = v
    try:
        return cls(**values)
    except TypeError as exc:
        raise EdgebenchError(f"{where}: {exc}") from None


def parse_config(doc: dict, source: str = "") -> RunConfig:
    where = source or "config"
    if "name" not in doc or not isinstance(doc["name"], str):
        raise EdgebenchError(f"{where}: needs a top-level name = \"...\"")
    raw_models = doc.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise EdgebenchError(f"{where}: needs at least one [[models]] table")
    models = tuple(build_strict(ModelSpec, m, f"{where}: models[{i}]") for i, m in enumerate(raw_models))
    export = build_strict(ExportSpec, doc.get("export", {}), f"{where}: [export]")
    bench = build_strict(BenchSpec, doc.get("bench", {}), f"{where}: [bench]")
    for f in export.formats:
        if f not in {x.value for x in Format}:
            raise EdgebenchError(f"{where}: [export] unknown format '{f}' (onnx, tflite)")
    for p in export.precisions:
        if p not in {x.value for x in Precision}:
            raise EdgebenchError(f"{where}: [export] unknown precision '{p}' (fp32, int8, int8-dynamic)")
    if bench.runs < 1 or bench.warmup < 0 or bench.threads < 1:
        raise EdgebenchError(f"{where}: [bench] runs and threads must be >= 1, warmup >= 0")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise EdgebenchError(f"{where}: model names must be unique, got {names}")
    rest = sorted(set(doc) - {"name", "models", "export", "bench", "out_dir", "store"})
    if rest:
        raise EdgebenchError(f"{where}: unknown top-level key(s) {', '.join(rest)}")
    return RunConfig(name=doc["name"], models=models, export=export, bench=bench,
                     out_dir=str(doc.get("out_dir", "")), store=str(doc.get("store", "")), source=source)


def read_toml(path: str | Path) -> dict:
    """A TOML file as a dict; a missing, malformed or non-UTF-8 file is one line."""
    path = Path(path)
    if not path.exists():
        raise EdgebenchError(f"config file not found: {path}")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise EdgebenchError(f"malformed TOML in {path}: {exc}") from None
    except UnicodeDecodeError:
        raise EdgebenchError(f"config file {path} is not UTF-8 text") from None
    return doc


def load_config(path: str | Path) -> RunConfig:
    return parse_config(read_toml(path), str(path))
