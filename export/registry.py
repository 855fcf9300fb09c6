"""Exporters by format, as import paths (devices are found the same way): torch's ONNX exporter and
litert-torch load only when their format is asked for.

Every exporter is `export(trained, precision, out_dir, opts, fp32=None) -> Artifact`: it validates the
file against the PyTorch module (atol for float, top-1 agreement for INT8) and raises ExportError subclasses.
`fp32` is the float artifact of the same format, when the caller already has one, so a quantized export
does not convert twice.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from edgebench.types import Artifact, EdgebenchError, Format, Precision

DEFAULT_OPSET = 17
DEFAULT_ATOL = 1e-4  # fp32 files against PyTorch, max absolute difference


@dataclass(frozen=True)
class ExportOptions:
    opset: int = DEFAULT_OPSET
    atol: float = DEFAULT_ATOL
    min_agreement: float = 0.0  # 0: the exporter's own default (0.98 TFLite, 0.97 ONNX)
    calibration: object = None  # INT8 calibration inputs (array); None: the training split
    # static ONNX INT8 activations: "int8" (onnxruntime's default, S8S8) or "uint8" (U8S8). onnxruntime 1.32
    # on x86 leaves about half of an S8S8 MobileNet's Convs in float between DequantizeLinear and
    # QuantizeLinear (4.3x slower than U8S8, measured); on the emulated Cortex-A72 S8S8 counts 6% fewer
    # instructions (benchmarks/int8_activations.py)
    int8_activations: str = "int8"


EXPORTERS = {
    Format.ONNX: "edgebench.export.onnx_exporter:export",
    Format.TFLITE: "edgebench.export.tflite:export",
}


def get_exporter(fmt: Format):
    try:
        fmt = Format(fmt)
    except ValueError:
        raise EdgebenchError(f"unknown format '{fmt}' (known: {', '.join(f.value for f in EXPORTERS)})") from None
    module, func = EXPORTERS[fmt].split(":")
    return getattr(importlib.import_module(module), func)


def export_trained(trained, fmt: Format, precision: Precision, out_dir: Path, opts: ExportOptions = ExportOptions(),
                   fp32: Artifact | None = None) -> Artifact:
    try:
        precision = Precision(precision)
    except ValueError:
        raise EdgebenchError(f"unknown precision '{precision}' (known: "
                             f"{', '.join(p.value for p in Precision)})") from None
    return get_exporter(fmt)(trained, precision, Path(out_dir), opts, fp32)
