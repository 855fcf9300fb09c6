"""The ONNX exporter of the registry: fp32 through torch.onnx, INT8 through onnxruntime.quantization."""
from __future__ import annotations

from pathlib import Path

from edgebench.export.registry import ExportOptions
from edgebench.types import Artifact, Precision


def export(trained, precision: Precision, out_dir: Path, opts: ExportOptions, fp32: Artifact | None = None) -> Artifact:
    from edgebench.export.onnx import export_and_validate

    if precision is Precision.FP32:
        return export_and_validate(trained, out_dir, opset=opts.opset, atol=opts.atol)
    from edgebench.export.quantize import quantize_onnx

    if fp32 is None:
        fp32 = export_and_validate(trained, out_dir, opset=opts.opset, atol=opts.atol)
    agreement = {"min_agreement": opts.min_agreement} if opts.min_agreement > 0 else {}
    return quantize_onnx(fp32, trained, out_dir, precision, calib_x=opts.calibration,
                         activations=opts.int8_activations, **agreement)
