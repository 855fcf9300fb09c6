"""The few types every stage shares.

The flow is one direction: Trained -> Artifact -> Bundle -> Measurement -> Record.
Units live in names (`_ms`, `_ns`, `_bytes`, `_mb`); closed sets are enums.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


class Format(str, enum.Enum):
    ONNX = "onnx"
    TFLITE = "tflite"

    @classmethod
    def from_path(cls, path: Path) -> "Format":
        suffix = Path(path).suffix.lower()
        if suffix == ".onnx":
            return cls.ONNX
        if suffix == ".tflite":
            return cls.TFLITE
        raise ValueError(f"unsupported model file type '{suffix or path}': expected .onnx or .tflite")


class Precision(str, enum.Enum):
    FP32 = "fp32"
    INT8 = "int8"  # full-integer / static QDQ, calibrated
    INT8_DYNAMIC = "int8-dynamic"  # weights int8, activations quantized at run time


class Provenance(str, enum.Enum):
    """How a figure was obtained. A figure never pretends to be another kind."""

    MEASURED = "measured"  # timed on the device itself
    EMULATED = "emulated"  # wall time under emulation or throttling
    ESTIMATED = "estimated"  # derived, e.g. from instruction counts and a clock
    PREDICTED = "predicted"  # by a model


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple  # ints, or a str / None for a dynamic dimension
    dtype: str  # numpy dtype name, e.g. "float32"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        return cls(name=d["name"], shape=tuple(d["shape"]), dtype=d["dtype"])


@dataclass(frozen=True)
class Validation:
    """How an exported file compares with the PyTorch reference on real eval inputs."""

    reference: str  # e.g. "pytorch"
    n_samples: int
    max_abs_diff: float
    atol: Optional[float]  # the tolerance the max difference was held to (None: top-1 only)
    top1_agreement: float  # fraction of samples whose argmax agrees with the reference
    # samples whose max difference exceeded atol: allowed only for spiking models, a few of them (a membrane
    # within rounding of its threshold fires in one runtime and not in the other: export/onnx.py compare)
    beyond_atol: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def flips(self) -> str:
        """', 1 of 2047 samples beyond atol (spike flips)' where a spiking model's were allowed, else ''."""
        return (f", {self.beyond_atol} of {self.n_samples} samples beyond atol (spike flips)" if self.beyond_atol
                else "")


@dataclass(frozen=True)
class Artifact:
    """One exported model file and what is known about it before it runs anywhere."""

    name: str  # e.g. "digits_cnn-onnx-fp32"
    model: str  # e.g. "digits_cnn"
    dataset: str
    path: Path
    format: Format
    precision: Precision
    inputs: tuple  # of TensorSpec
    outputs: tuple  # of TensorSpec
    size_bytes: int
    sha256: str
    opset: Optional[int] = None
    macs: Optional[int] = None
    macs_definition: str = ""  # which operations the MACs figure counts
    params: Optional[int] = None
    encoding: str = ""  # ONNX-Net-style text encoding of the graph
    validation: Optional[Validation] = None
    labels: tuple = ()
    extra: dict = field(default_factory=dict)  # e.g. spiking metrics, pruning sparsity


@dataclass(frozen=True)
class RunSpec:
    """What a device is asked to do with a bundle."""

    runs: int = 100  # measured inferences (at least)
    warmup: int = 10
    threads: int = 1
    min_time_s: float = 0.0  # keep measuring until both `runs` and this time are reached
    eval: bool = True  # run the bundled eval data, if the bundle has some
    eval_threads: int = 0  # runtime threads of the accuracy pass (0: threads); never of the timed runs
    tflite_kernels: str = "xnnpack"  # TFLite: xnnpack (the runtime's default), builtin, or auto (probed, faster kept)
    profile: bool = False  # per-operator profile where the runtime has one
    timeout_s: float = 600.0


# how a TFLite file runs (deploy/runner.py TFLITE_KERNELS): XNNPACK, TFLite's builtin kernels, or the faster
TFLITE_KERNELS = ("xnnpack", "builtin", "auto")

# static ONNX INT8 activation types (weights are always int8): see export/registry.py ExportOptions
INT8_ACTIVATIONS = ("int8", "uint8")


@dataclass
class Measurement:
    """What came back from one device run. Raw samples; statistics are computed on the host."""

    ok: bool
    device: str
    provenance: Provenance
    error: str = ""
    samples_ns: list = field(default_factory=list)
    load_ms: Optional[float] = None
    first_inference_ms: Optional[float] = None
    peak_rss_mb: Optional[float] = None
    runtime: str = ""
    runtime_version: str = ""
    threads: Optional[int] = None
    predictions: Optional[list] = None  # argmax per eval sample, as the runner computed it
    accuracy: Optional[float] = None  # computed on the host from `predictions`
    n_eval: int = 0
    device_facts: dict = field(default_factory=dict)
    profile: list = field(default_factory=list)  # [{"op": ..., "total_us": ..., "count": ...}]
    extra: dict = field(default_factory=dict)  # e.g. guest instructions per inference
    inputs_fed: list = field(default_factory=list)  # [{"name", "shape", "dtype", "source"}] as the runner fed them

    @classmethod
    def failed(cls, device: str, provenance: Provenance, reason: str, **kw) -> "Measurement":
        return cls(ok=False, device=device, provenance=provenance, error=reason, **kw)


def sha256_file(path: Path) -> str:
    """The file's sha256, read in 1 MiB chunks (artifacts and bundles are hashed the same way)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class EdgebenchError(Exception):
    """An error a user can cause: printed as one line, non-zero exit, no traceback."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception for a one-line message: its first line, or its type's name when it has no text (torch.load
    of an empty file raises a bare EOFError)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
