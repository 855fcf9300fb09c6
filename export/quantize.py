"""ONNX INT8 with onnxruntime.quantization, validated by top-1 agreement with PyTorch.

- INT8_DYNAMIC: `quantize_dynamic` (int8 weights; activations quantized at run time: ConvInteger,
  MatMulInteger, DynamicQuantizeLinear).
- INT8: `quant_pre_process` (shape inference + graph optimisation), then `quantize_static` in QDQ format,
  per-channel int8 weights, int8 activations, calibrated (MinMax) on training samples.
Inputs and outputs stay float32, and the batch axis stays dynamic.
"""
from __future__ import annotations

import dataclasses

import io
import logging
import tempfile
import warnings
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from edgebench.export.errors import AgreementError, CalibrationError, ExportError
from edgebench.export.onnx import compare, describe_onnx, reference_outputs, run_onnx
from edgebench.types import INT8_ACTIVATIONS, Artifact, Format, Precision, first_line

DEFAULT_MIN_AGREEMENT = 0.97
CALIB_SAMPLES = 300
CALIB_BATCH = 32
MIN_CALIB_SAMPLES = 16


class _Batches(CalibrationDataReader):
    """Calibration feeds over an array: one {input_name: batch} dict per call, then None."""

    def __init__(self, input_name: str, x: np.ndarray, batch: int):
        self._feeds = [{input_name: x[i:i + batch]} for i in range(0, len(x), batch)]
        self._next = iter(self._feeds)

    def get_next(self):
        return next(self._next, None)

    def rewind(self):
        self._next = iter(self._feeds)


@contextmanager
def _quiet():
    """onnxruntime.quantization logs through the root logger and prints; keep a user's console clean."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _calibration_samples(trained, input_spec) -> np.ndarray:
    x = trained.dataset.x_train[:CALIB_SAMPLES]
    if x is None or len(x) < MIN_CALIB_SAMPLES:
        raise CalibrationError(f"static INT8 needs at least {MIN_CALIB_SAMPLES} calibration samples from the "
                               f"training split, got {0 if x is None else len(x)} (int8-dynamic needs none)")
    x = np.ascontiguousarray(x, dtype=np.float32)
    fixed = [d for d in input_spec.shape[1:]]
    if len(fixed) != x.ndim - 1 or any(isinstance(d, int) and d > 0 and d != g for d, g in zip(fixed, x.shape[1:])):
        raise CalibrationError(f"calibration samples of shape {list(x.shape[1:])} do not fit the model input "
                               f"{list(input_spec.shape)}")
    return x


def quantize_onnx_file(src: Path, dst: Path, precision: Precision, calib_x: np.ndarray | None = None,
                       input_name: str = "input", activations: str = "int8") -> Path:
    """Quantize one ONNX file; calib_x (N x input, float32) is needed for static INT8, whose activations are
    `activations` (int8 or uint8; weights are always int8, per channel)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    if activations not in INT8_ACTIVATIONS:
        raise ExportError(f"INT8 activations must be one of {', '.join(INT8_ACTIVATIONS)}, not '{activations}'")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet():
            if precision == Precision.INT8_DYNAMIC:
                quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                                 nodes_to_exclude=size_losing_nodes(src))
            elif precision == Precision.INT8:
                if calib_x is None or len(calib_x) < MIN_CALIB_SAMPLES:
                    raise CalibrationError(f"static INT8 needs at least {MIN_CALIB_SAMPLES} calibration samples")
                with tempfile.TemporaryDirectory(prefix="edgebench-quant-") as tmp:
                    pre = Path(tmp) / "preprocessed.onnx"
                    quant_pre_process(str(src), str(pre))
                    quantize_static(str(pre), str(dst), _Batches(input_name, calib_x, CALIB_BATCH),
                                    quant_format=QuantFormat.QDQ, per_channel=True,
                                    activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                                    weight_type=QuantType.QInt8)
            else:
                raise ExportError(f"quantize_onnx makes int8 or int8-dynamic, not {precision.value}")
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"ONNX quantization ({precision.value}) failed: {first_line(exc)}") from None
    from edgebench.export.onnx import compact_names

    return compact_names(dst)


# Bytes a dynamically quantized weight use adds to the file: quantize_dynamic replaces one Gemm/MatMul by
# DynamicQuantizeLinear, MatMulInteger, Cast, two Mul and an Add (~250 bytes with compact names, measured on
# the unrolled L2MU window: 500 uses, +124 kB). An unrolled graph uses each weight once per time step.
QUANT_BYTES_PER_USE = 256


def size_losing_nodes(src: Path) -> list:
    """Gemm/MatMul nodes whose weight saves fewer bytes in int8 (3 per element) than its quantized uses add:
    quantizing them made the unrolled windows' INT8 files larger than fp32 (LIF 602 kB -> 1.07 MB)."""
    import onnx

    g = onnx.load(str(src)).graph
    numel = {t.name: int(np.prod(t.dims)) for t in g.initializer}
    users: dict = {}
    for node in g.node:
        if node.op_type in ("Gemm", "MatMul"):
            w = next((i for i in node.input[1:2] if i in numel), None)
            if w:
                users.setdefault(w, []).append(node.name)
    # quantize_dynamic first rewrites each Gemm as MatMul + Add named "<gemm>_MatMul": exclude both names
    return [name for w, nodes in users.items() if 3 * numel[w] < QUANT_BYTES_PER_USE * len(nodes)
            for n in nodes for name in (n, f"{n}_MatMul")]


def _unfolded_source(trained, tmp: Path, fp32_artifact: Artifact) -> Path:
    """The float graph to quantize. The lean L2MU/LMU exports fold each neuron's leak and reset (and the LMU's
    Abar) into its weight matrix; per-channel int8 cannot hold a 0.9 decay beside the synaptic weights (the
    CuBa window fell to 67.5 % top-1 agreement, measured), so their INT8 files come from the unfolded twin
    (export_module(fold_state=False)). Other models: the fp32 file itself."""
    import inspect

    make = getattr(trained.module, "export_module", None)
    if not callable(make) or "fold_state" not in inspect.signature(make).parameters:
        return Path(fp32_artifact.path)
    from edgebench.export.onnx import export_onnx

    return export_onnx(make(fold_state=False), trained.example_input(1), tmp / "unfolded.onnx",
                       fp32_artifact.opset or 17)


def quantize_onnx(fp32_artifact: Artifact, trained, out_dir: Path, precision: Precision,
                  min_agreement: float = DEFAULT_MIN_AGREEMENT, calib_x: np.ndarray | None = None,
                  activations: str = "int8") -> Artifact:
    """Quantize an fp32 ONNX artifact of `trained` and validate it against PyTorch on the eval split."""
    precision = Precision(precision)
    if fp32_artifact.format != Format.ONNX or fp32_artifact.precision != Precision.FP32:
        raise ExportError(f"quantize_onnx needs an fp32 ONNX artifact, got {fp32_artifact.format.value} "
                          f"{fp32_artifact.precision.value} ({fp32_artifact.name})")
    name = f"{trained.name}-onnx-{precision.value}"
    spec = fp32_artifact.inputs[0]
    extra = {"quantized_from": fp32_artifact.name, "min_agreement": min_agreement}
    if precision == Precision.INT8:
        calib_x = _calibration_samples(trained, spec) if calib_x is None else np.asarray(calib_x, np.float32)
        extra.update(calibration_samples=int(len(calib_x)), calibration_method="MinMax", quant_format="QDQ",
                     per_channel=True, activations=activations, weights="int8")
    x = trained.dataset.x_test
    ref = reference_outputs(trained.module, x)
    dst = Path(out_dir) / f"{name}.onnx"
    with tempfile.TemporaryDirectory(prefix="edgebench-quant-") as tmp:
        # the fp32 file first (fewest nodes, smallest INT8 file); the unfolded twin when that loses accuracy
        path = quantize_onnx_file(fp32_artifact.path, dst, precision, calib_x, spec.name, activations)
        try:
            validation = compare(ref, run_onnx(path, x), None, min_agreement)
        except AgreementError as folded_error:
            src = _unfolded_source(trained, Path(tmp), fp32_artifact)
            if src == Path(fp32_artifact.path):
                raise
            path = quantize_onnx_file(src, dst, precision, calib_x, spec.name, activations)
            validation = compare(ref, run_onnx(path, x), None, min_agreement)
            extra["quantized_from"] = (f"{fp32_artifact.name}'s model exported with leak and reset unfolded (from "
                                       f"the fp32 file: top-1 agreement {folded_error.agreement:.1%})")
            size, twin = Path(path).stat().st_size, Path(fp32_artifact.path).stat().st_size
            if size > twin:  # the unfolded graph has more nodes than the fp32 file (e.g. the LMU's fused window)
                Path(path).unlink()
                raise ExportError(
                    f"{precision.value}: not kept, it would be larger than its fp32 twin ({size:,} vs {twin:,} "
                    f"bytes): quantized as it is, {fp32_artifact.name} agreed with PyTorch on "
                    f"{folded_error.agreement:.1%} of the eval samples, and the unfolded graph that keeps the "
                    f"accuracy has more nodes than the fp32 file saves in weights")
    with _quiet():  # onnx-tool warns about every quantized op it cannot profile (MACs then stay None)
        artifact = describe_onnx(path, name=name, model_name=trained.name, dataset=trained.dataset.name,
                                 precision=precision, validation=validation, labels=trained.dataset.labels,
                                 extra=extra)
    # onnx-tool cannot profile the integer ops quantize_dynamic inserts and counts QDQ nodes as work; the
    # quantized kernels do the fp32 graph's multiply-accumulates in int8, so its count is the one to state.
    if fp32_artifact.macs is not None:
        artifact.extra["macs_onnx_tool_quantized_graph"] = artifact.macs
        artifact = dataclasses.replace(
            artifact, macs=fp32_artifact.macs,
            macs_definition=f"of the fp32 graph it was quantized from: {fp32_artifact.macs_definition}")
    return artifact


class _Feeds(CalibrationDataReader):
    """Calibration feeds that are already dicts (a step model's per-step inputs)."""

    def __init__(self, feeds: list):
        self._feeds = feeds
        self._next = iter(feeds)

    def get_next(self):
        return next(self._next, None)

    def rewind(self):
        self._next = iter(self._feeds)


def quantize_onnx_step(src: Path, dst: Path, precision: Precision, calib_feeds: list | None = None) -> dict:
    """INT8 of a step model's ONNX file; calib_feeds: per-step input tuples (x_t, *state, scores) in the
    file's input order, from streaming training windows (static INT8 only). Returns facts for the record."""
    import onnx

    src, dst = Path(src), Path(dst)
    facts: dict = {"quantized_from": "the step model's unfolded float graph (leak and reset elementwise)"}
    if precision is Precision.INT8_DYNAMIC:
        quantize_onnx_file(src, dst, precision)
        return facts
    if not calib_feeds:
        raise CalibrationError("static INT8 of a step model needs calibration feeds (training windows)")
    names = [i.name for i in onnx.load(str(src)).graph.input]
    feeds = [{n: np.ascontiguousarray(t.numpy(), dtype=np.float32) for n, t in zip(names, f)} for f in calib_feeds]
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with _quiet(), tempfile.TemporaryDirectory(prefix="edgebench-quant-") as tmp:
            pre = Path(tmp) / "preprocessed.onnx"
            quant_pre_process(str(src), str(pre))
            # Only the synapses: their inputs are spikes (0/1, exact in int8) or raw samples; the membranes and
            # currents they produce stay float32 (int8 membranes lost the LIF to 50 % top-1 agreement, measured)
            quantize_static(str(pre), str(dst), _Feeds(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["Gemm", "MatMul"])
    except Exception as exc:
        raise ExportError(f"ONNX quantization of the step model (int8) failed: {first_line(exc)}") from None
    facts.update(calibration_steps=len(feeds), calibration_method="MinMax", quant_format="QDQ", per_channel=True,
                 quantized_ops="Gemm, MatMul (synapses); neuron state float32")
    return facts
