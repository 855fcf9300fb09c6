"""The run config (`edgebench run CONFIG.toml`): frozen dataclasses read strictly from TOML.

A typo in a key is an error with one clear line, not a silently ignored setting.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from edgebench.types import INT8_ACTIVATIONS, TFLITE_KERNELS, EdgebenchError, Format, Precision


FORMATS = tuple(f.value for f in Format)
PRECISIONS = tuple(p.value for p in Precision)
KINDS_OWN = ("python", "hf")  # the user's own model: a factory in their code, a Hugging Face folder


@dataclass(frozen=True)
class ModelSpec:
    name: str = field(metadata={"help": "name used in artifact and report rows"})
    kind: str = field(metadata={"help": "cnn, l2mu, lmu (built in); python (factory in your code); hf (a local "
                                        "Hugging Face folder)"})
    dataset: str = field(default="", metadata={"help": "dataset registry key: digits, basicmotions, wisdm"})
    model: dict = field(default_factory=dict, metadata={"help": "model hyper-parameters (python: the factory's "
                                                                 "keyword arguments)"})
    train: object = field(default_factory=dict, metadata={
        "types": (dict, bool), "help": "epochs, batch_size, lr, weight_decay, seed, threads (default 1); false: already trained"})
    data: object = field(default_factory=dict, metadata={
        "types": (dict, str), "help": "dataset options, or an .npz with x_train, y_train, x_test, y_test"})
    prune: tuple = field(default=(), metadata={"help": "magnitude-pruning sparsities, e.g. [0.5, 0.8]: one "
                                                        "fine-tuned variant each"})
    finetune_epochs: int = field(default=3, metadata={"help": "fine-tune epochs after pruning", "min": 0})
    prune_formats: tuple = field(default=("onnx",), metadata={"help": "formats pruned variants export to",
                                                              "choices": FORMATS})
    prune_precisions: tuple = field(default=("fp32",), metadata={"help": "precisions pruned variants export to",
                                                                 "choices": PRECISIONS})
    step_formats: tuple = field(default=(), metadata={
        "help": "formats of the streaming step model (l2mu, lmu: one sample and the state per call), exported "
                "beside the window model and measured per step and per streamed window", "choices": FORMATS})
    step_precisions: tuple = field(default=("fp32",), metadata={"help": "precisions of the step model",
                                                                 "choices": PRECISIONS})
    factory: str = field(default="", metadata={"help": "python: 'module:function' returning an nn.Module, "
                                                       "imported from the config file's folder first"})
    checkpoint: str = field(default="", metadata={"help": "python: a state dict (.pt) to load into the module"})
    path: str = field(default="", metadata={"help": "hf: the local model folder"})
    task: str = field(default="text-classification", metadata={"help": "hf: optimum's task, e.g. "
                                                                        "feature-extraction"})
    sequence_length: int = field(default=64, metadata={"help": "hf: tokens per input when benchmarked", "min": 1})
    text: str = field(default="edgebench measures what the device gives.", metadata={
        "help": "hf: the text tokenized into the benchmark's token inputs"})
    shapes: dict = field(default_factory=dict, metadata={"help": "input name -> shape for free dimensions"})
    inputs: dict = field(default_factory=dict, metadata={"help": "input name -> number, 'zeros', 'ones', "
                                                                 "'random' or a .npy path"})


@dataclass(frozen=True)
class ExportSpec:
    formats: tuple = field(default=("onnx",), metadata={"help": "onnx and/or tflite", "choices": FORMATS})
    precisions: tuple = field(default=("fp32",), metadata={"help": "fp32, int8, int8-dynamic", "choices": PRECISIONS})
    opset: int = field(default=17, metadata={"help": "ONNX opset", "min": 7})
    atol: float = field(default=1e-4, metadata={"help": "fp32 tolerance against PyTorch", "gt": 0})
    min_agreement: float = field(default=0.0, metadata={
        "help": "top-1 agreement with PyTorch a quantized artifact must reach; 0: the exporter's default "
                "(0.98 TFLite, 0.97 ONNX)", "min": 0.0, "max": 1.0})
    int8_activations: str = field(default="int8", metadata={
        "help": "static ONNX INT8 activations: int8 (best on ARM) or uint8 (onnxruntime on x86 fuses every Conv; "
                "see benchmarks/int8_activations.py)", "choices": INT8_ACTIVATIONS})


@dataclass(frozen=True)
class BenchSpec:
    devices: tuple = field(default=("local",), metadata={"help": "device names from devices.toml"})
    runs: int = field(default=200, metadata={"help": "measured inferences (at least)", "min": 1})
    warmup: int = field(default=20, metadata={"help": "warm-up inferences, not measured", "min": 0})
    threads: int = field(default=1, metadata={"help": "runtime intra-op threads", "min": 1})
    min_time_s: float = field(default=0.0, metadata={"help": "keep measuring at least this long", "min": 0.0})
    profile: bool = field(default=False, metadata={"help": "per-operator profile (onnxruntime)"})
    tflite_kernels: str = field(default="xnnpack", metadata={
        "help": "TFLite: xnnpack (the runtime's default delegate), builtin (TFLite's own kernels) or auto (both "
                "probed on the device, the faster kept; XNNPACK is many times slower on depthwise kernels above "
                "5x5: benchmarks/tflite_dwconv.py)", "choices": TFLITE_KERNELS})
    timeout_s: float = field(default=600.0, metadata={"help": "per-measurement timeout", "gt": 0})
    devices_file: str = field(default="", metadata={"help": "devices.toml path (default ./devices.toml)"})


@dataclass(frozen=True)
class FarmSpec:
    engine: str = field(default="local", metadata={"help": "local: one process walks the devices; ray: a Ray "
                                                           "farm, each device a resource of capacity one",
                                                   "choices": ("local", "ray")})
    address: str = field(default="", metadata={"help": "ray: '' starts a local instance; 'auto' or "
                                                       "'ray://host:10001' joins a cluster"})


@dataclass(frozen=True)
class RunConfig:
    name: str
    models: tuple  # of ModelSpec
    export: ExportSpec = ExportSpec()
    bench: BenchSpec = BenchSpec()
    farm: FarmSpec = FarmSpec()
    out_dir: str = ""  # default out/<name>
    store: str = ""  # default out/edgebench.sqlite
    source: str = ""

    @property
    def out_path(self) -> Path:
        return Path(self.out_dir or f"out/{self.name}")

    @property
    def store_path(self) -> Path:
        from edgebench.reports.store import DEFAULT_STORE

        return Path(self.store) if self.store else DEFAULT_STORE

    @property
    def base_dir(self) -> Path:
        """The config file's folder: a factory's module and relative paths are looked up there first."""
        return Path(self.source).resolve().parent if self.source else Path.cwd()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source", None)
        return d

    def digest(self) -> str:
        """What the run measures; how it is scheduled (farm) does not change it, so a sweep resumes either way."""
        d = self.to_dict()
        d.pop("farm", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def did_you_mean(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f" (known: {', '.join(sorted(known))})"


def check_keys(raw: dict, known, where: str) -> None:
    """An unknown key is one line naming it, where it is and the closest valid name."""
    for key in raw:
        if key not in known:
            raise EdgebenchError(f"unknown key '{key}' in {where}{did_you_mean(key, known)}")


def _check_value(key: str, value, meta, where: str) -> None:
    """Impossible values, declared next to the field: metadata min / max / gt / choices."""
    if "choices" in meta:
        items = value if isinstance(value, tuple) else (value,)
        for v in items:
            if v not in meta["choices"]:
                raise EdgebenchError(f"{where}.{key}: '{v}' is not one of {', '.join(map(str, meta['choices']))}"
                                     + did_you_mean(str(v), meta["choices"]).split(" (known")[0])
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "min" in meta and value < meta["min"]:
            raise EdgebenchError(f"{where}.{key} = {value}: must be >= {meta['min']}")
        if "max" in meta and value > meta["max"]:
            raise EdgebenchError(f"{where}.{key} = {value}: must be <= {meta['max']}")
        if "gt" in meta and not value > meta["gt"]:
            raise EdgebenchError(f"{where}.{key} = {value}: must be > {meta['gt']}")


def build_strict(cls, raw: dict, where: str, **fixed):
    """A frozen dataclass from a TOML table: an unknown key (with the closest valid name), a value of the
    wrong type or an impossible value (field metadata min / max / gt / choices) is one line.
    A field whose metadata names `types` accepts those types (e.g. a table or `false`)."""
    if not isinstance(raw, dict):
        raise EdgebenchError(f"{where}: expected a table, got {type(raw).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls) if f.name not in fixed}
    check_keys(raw, names, where)
    values = dict(fixed)
    for k, v in raw.items():
        f = names[k]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        allowed = f.metadata.get("types")
        if allowed is not None:
            if not isinstance(v, allowed):
                raise EdgebenchError(f"{where}.{k}: expected {' or '.join(t.__name__ for t in allowed)}, got {v!r}")
        elif isinstance(default, tuple):
            if not isinstance(v, list):
                raise EdgebenchError(f"{where}.{k}: expected a list, got {v!r}")
            v = tuple(v)
        elif default is not dataclasses.MISSING and default is not None and \
                isinstance(default, (int, float, bool, str, dict)):
            ok = isinstance(v, type(default)) and not (isinstance(v, bool) and not isinstance(default, bool))
            ok = ok or (isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool))
            if not ok:
                raise EdgebenchError(f"{where}.{k}: expected {type(default).__name__}, got {v!r}")
        _check_value(k, v, f.metadata, where)
        values[k] = v
    try:
        return cls(**values)
    except TypeError as exc:
        missing = [n for n, f in names.items() if n not in values and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise EdgebenchError(f"{where}: missing key(s) {', '.join(missing)}") from None
        raise EdgebenchError(f"{where}: {exc}") from None


def _check_model(m: ModelSpec, where: str, base_dir: Path) -> None:
    """Model, training and data settings are checked before any work: a typo is one line, not a default."""
    from edgebench.train.registry import DATASETS, MODEL_KEYS, dataset_keys

    known_kinds = sorted(MODEL_KEYS) + list(KINDS_OWN)
    if m.kind not in known_kinds:
        raise EdgebenchError(f"{where}.kind: unknown model kind '{m.kind}'{did_you_mean(m.kind, known_kinds)}")
    if isinstance(m.train, dict):
        from edgebench.train.train_config import TrainConfig

        build_strict(TrainConfig, m.train, f"{where}.train")
    elif m.train is not False:
        raise EdgebenchError(f"{where}.train: expected a table or false, got {m.train!r}")
    if m.kind == "hf":
        if not m.path:
            raise EdgebenchError(f"{where}: kind = \"hf\" needs path = \"MODEL_FOLDER\"")
        return
    if m.kind == "python":
        if ":" not in m.factory:
            raise EdgebenchError(f"{where}: kind = \"python\" needs factory = \"module:function\", got "
                                 f"'{m.factory}'")
        if not isinstance(m.data, str) and not m.dataset:
            raise EdgebenchError(f"{where}: kind = \"python\" needs data = \"FILE.npz\" or a built-in dataset")
        from edgebench.train.user import check_kwargs, import_factory

        check_kwargs(import_factory(m.factory, base_dir), m.model, f"{where}.model")
    else:
        check_keys(m.model, MODEL_KEYS[m.kind], f"{where}.model")
        if not m.dataset:
            raise EdgebenchError(f"{where}: needs dataset = \"...\" ({', '.join(sorted(DATASETS))})")
    if m.dataset and m.dataset not in DATASETS:
        raise EdgebenchError(f"{where}.dataset: unknown dataset '{m.dataset}'{did_you_mean(m.dataset, DATASETS)}")
    if isinstance(m.data, dict) and m.dataset:
        check_keys(m.data, dataset_keys(m.dataset), f"{where}.data")
    if m.kind != "python" and (m.factory or m.checkpoint):
        raise EdgebenchError(f"{where}: factory and checkpoint are for kind = \"python\"")
    if m.train is False and not m.checkpoint and m.kind != "python":
        raise EdgebenchError(f"{where}: train = false needs a checkpoint")
    for s in m.prune:
        if not isinstance(s, (int, float)) or not 0 < s < 1:
            raise EdgebenchError(f"{where}.prune: sparsity {s!r} must be between 0 and 1")


def parse_config(doc: dict, source: str = "") -> RunConfig:
    where = source or "config"
    check_keys(doc, ("name", "models", "export", "bench", "farm", "out_dir", "store"), where)
    if "name" not in doc or not isinstance(doc["name"], str):
        raise EdgebenchError(f"{where}: needs a top-level name = \"...\"")
    raw_models = doc.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise EdgebenchError(f"{where}: needs at least one [[models]] table")
    base_dir = Path(source).resolve().parent if source else Path.cwd()
    models = tuple(build_strict(ModelSpec, m, f"models[{i}]") for i, m in enumerate(raw_models))
    for i, m in enumerate(models):
        _check_model(m, f"models[{i}]", base_dir)
    export = build_strict(ExportSpec, doc.get("export", {}), "export")
    bench = build_strict(BenchSpec, doc.get("bench", {}), "bench")
    farm = build_strict(FarmSpec, doc.get("farm", {}), "farm")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise EdgebenchError(f"{where}: model names must be unique, got {names}")
    return RunConfig(name=doc["name"], models=models, export=export, bench=bench, farm=farm,
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
