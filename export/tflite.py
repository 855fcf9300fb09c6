"""PyTorch -> TFLite with litert-torch (no TensorFlow): float, full-integer INT8 and dynamic-range INT8.

litert-torch traces the module with torch.export and keeps PyTorch's NCHW input layout (it inserts
TRANSPOSE ops inside the graph). Files have a fixed batch of 1; the runner evaluates them per sample.

- FP32: validated by max abs difference against PyTorch on the eval split (AtolError above atol).
- INT8: static PT2E quantization (per-channel weights, int8 activations, int8 model inputs and outputs),
  calibrated on training samples; validated by top-1 agreement (AgreementError below min_agreement).
- INT8_DYNAMIC: ai-edge-quantizer's dynamic_wi8_afp32 recipe on the float file (int8 weights, activations
  quantized at run time, float inputs and outputs); validated by top-1 agreement.
"""
from __future__ import annotations

import io
import os
import re
import tempfile
import warnings
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import numpy as np
import torch

from edgebench.export.errors import CalibrationError, ExportError
from edgebench.export.onnx import compare, export_view, reference_outputs, spike_flip_share
from edgebench.export.tflite_model import _fd2_silenced, _first_line, describe_tflite, run_tflite
from edgebench.types import Artifact, Precision

from edgebench.export.registry import DEFAULT_ATOL  # float TFLite matches PyTorch to ~1e-7 on the digits CNN
DEFAULT_MIN_AGREEMENT = 0.98  # top-1 agreement a quantized file must reach
CALIB_SAMPLES = 300  # training samples used for static calibration when calib_x is not given
MIN_CALIB_SAMPLES = 16
# ---------------------------------------------------------------- conversion
def _import_litert_torch():
    with _fd2_silenced(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import litert_torch
    return litert_torch


@contextmanager
def _quiet():
    """Silence litert-torch's progress lines, Python warnings and the converter's C++ log on fd 2."""
    config = _import_litert_torch().config

    shown = config.show_progress
    config.show_progress = False
    saved_fd = os.dup(2)
    try:
        with tempfile.TemporaryFile() as log, warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            os.dup2(log.fileno(), 2)
            yield
    finally:
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        config.show_progress = shown


def _check_calibration(calib_x, input_shape: tuple) -> np.ndarray:
    if calib_x is None or len(calib_x) < MIN_CALIB_SAMPLES:
        n = 0 if calib_x is None else len(calib_x)
        raise CalibrationError(
            f"static INT8 needs at least {MIN_CALIB_SAMPLES} calibration samples, got {n}: pass calib_x "
            "or use a dataset with training samples (or choose int8-dynamic, which needs none)")
    calib_x = np.asarray(calib_x, dtype=np.float32)
    if tuple(calib_x.shape[1:]) != tuple(input_shape[1:]):
        raise CalibrationError(
            f"calibration samples have shape {list(calib_x.shape[1:])} per sample, "
            f"the model input needs {list(input_shape[1:])}")
    return calib_x


def _export_for_calibration(module: torch.nn.Module, example: torch.Tensor):
    """torch.export with a dynamic batch, so calibration runs in batches (HistogramObserver is slow per
    call: 300 single samples take 10-45 s, 5 batches under a second); a model whose batch cannot be
    dynamic is exported at the example's batch and calibrated one sample at a time."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        example2 = torch.cat([example[:1], example[:1]])
        return torch.export.export(module, (example2,), dynamic_shapes=({0: batch},)).module(), True
    except Exception:
        return torch.export.export(module, (example,)).module(), False


def _pt2e_quantized(module: torch.nn.Module, example: torch.Tensor, calib_x: np.ndarray | None):
    """Export, annotate, calibrate and convert with litert-torch's PT2E quantizer (torchao pt2e).

    The converter re-exports the quantized graph at the example's shape, so the file keeps a fixed batch.
    """
    from litert_torch.quantize import pt2e_quantizer as pq
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    dynamic = calib_x is None
    quantizer = pq.PT2EQuantizer().set_global(
        pq.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic))
    graph, batched = _export_for_calibration(module, example)
    graph = quantize_pt2e.prepare_pt2e(graph, quantizer)
    # Weight observers record only when the graph runs: even dynamic-range needs one pass, else the
    # per-channel weight scales keep their defaults and the file computes garbage (12% agreement).
    x = example if dynamic else torch.from_numpy(calib_x)
    step = 64 if batched else len(example)
    stop = len(x) if batched else len(x) - len(x) % step
    with torch.no_grad():
        for i in range(0, stop, step):
            graph(x[i:i + step])
    graph = quantize_pt2e.convert_pt2e(graph, fold_quantize=False)
    return graph, QuantConfig(pt2e_quantizer=quantizer)


def _litert_convert(module: torch.nn.Module, example: torch.Tensor, quant_config=None):
    """litert_torch.convert without its pre-convert decomposition pass.

    convert() runs torch.export, then run_decompositions twice: once before its FX passes and once more when
    lowering to MLIR. For an unrolled recurrent net (thousands of nodes, ~2 ms per node per pass) the first
    pass is a third of the conversion time; the lowering's own decomposition covers the graph (the V2
    converter skips the first pass the same way). Falls back to the public convert() if the internal API moves.
    """
    litert_torch = _import_litert_torch()
    args = example if isinstance(example, tuple) else (example,)  # a step model takes (x_t, *state, scores)
    try:
        from litert_torch import model as lt_model
        from litert_torch._convert import core, litert_converter, signature

        sig = signature.Signature("serving_default", module, args, {})
    except Exception:
        return litert_torch.convert(module, args, quant_config=quant_config)
    program = core.export_torch_signature(sig, run_decompositions=False)
    program = core._run_convert_passes(program)
    return lt_model.LiteRTModel(litert_converter.exported_programs_to_flatbuffer(
        [program], [sig], quant_config=quant_config))


def litert_form(precision: Precision) -> str | None:
    """The runtime a model shapes its graph for (export_module / step_module): LiteRT's own form (e.g. the LIF
    L2MU's spikes as ops XNNPACK runs) for fp32 and int8-dynamic files; None (the plain form) for static INT8,
    whose observers would see the scaled differences of that form (see _LeanL2MU._spike)."""
    return None if Precision(precision) is Precision.INT8 else "tflite"


def convert_tflite(module: torch.nn.Module, example: torch.Tensor, path: Path,
                   precision: Precision = Precision.FP32, calib_x: np.ndarray | None = None) -> Path:
    """Write one .tflite file; calib_x (N x input) is required for static INT8 and ignored otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = export_view(module.eval(), litert_form(precision))
    if precision == Precision.INT8:
        calib_x = _check_calibration(calib_x, tuple(example.shape))
    try:
        with _quiet():
            if precision == Precision.FP32:
                edge = _litert_convert(module, example)
            else:
                graph, qcfg = _pt2e_quantized(module, example, calib_x if precision == Precision.INT8 else None)
                edge = _litert_convert(graph, example, quant_config=qcfg)
            edge.export(str(path))
    except Exception as exc:
        raise ExportError(f"TFLite conversion ({precision.value}) failed: {_first_line(exc)}") from None
    return path


def _pt2e_quantized_step(step: torch.nn.Module, example: tuple, calib_feeds: list):
    """Static PT2E INT8 of a step model, calibrated on the per-step inputs (x_t, *state, scores) seen while
    the float model streams training windows (export/step.py). Observers see batches of windows per step."""
    from litert_torch.quantize import pt2e_quantizer as pq
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    class SynapsesOnly(pq.PT2EQuantizer):
        # Only the products are int8 (their inputs are spikes, exact in int8, or raw samples); membranes and
        # currents stay float32: with int8 neuron state (every static op quantized) the trained L2MU step fell
        # to 70-78 % top-1 agreement (measured on BasicMotions).
        STATIC_OPS = ["linear", "addmm"]

    quantizer = SynapsesOnly().set_global(pq.get_symmetric_quantization_config(is_per_channel=True))
    batch = torch.export.Dim("batch", min=1, max=4096)
    two = tuple(torch.cat([a, a]) for a in example)
    flat = tuple({0: batch} for _ in two)
    try:
        graph = torch.export.export(step, two, dynamic_shapes=flat).module()
    except Exception:  # forward(x_t, *state): torch.export sees (x_t, (state...))
        graph = torch.export.export(step, two, dynamic_shapes=(flat[0], flat[1:])).module()
    graph = quantize_pt2e.prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for feed in calib_feeds:
            graph(*feed)
    graph = quantize_pt2e.convert_pt2e(graph, fold_quantize=False)
    return graph, QuantConfig(pt2e_quantizer=quantizer)


def convert_tflite_step(step: torch.nn.Module, channels: int, path: Path, calib_feeds: list | None = None,
                        batch: int = 1) -> Path:
    """The step model (export/step.py) as one .tflite at a fixed batch: float, or static INT8 when
    calibration feeds are given."""
    from edgebench.export.step import step_example

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = step_example(step, channels, batch)
    try:
        with _quiet():
            if calib_feeds is None:
                edge = _litert_convert(step, example)
            else:
                graph, qcfg = _pt2e_quantized_step(step, example, calib_feeds)
                edge = _litert_convert(graph, example, quant_config=qcfg)
            edge.export(str(path))
    except Exception as exc:
        kind = "INT8" if calib_feeds is not None else "fp32"
        raise ExportError(f"TFLite conversion of the step model ({kind}) failed: {_first_line(exc)}") from None
    return path


# ---------------------------------------------------------------- the export step
def quantize_tflite_dynamic(fp32_path: Path, path: Path, keep_float: tuple = ()) -> Path:
    """Dynamic-range INT8 of a float .tflite with ai-edge-quantizer (recipe dynamic_wi8_afp32: int8 weights,
    activations quantized at run time). Works on the converted file, so no second PyTorch conversion.
    keep_float: output tensor names of ops left in float32 (see end_matmuls)."""
    try:
        with _fd2_silenced(), redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from ai_edge_quantizer import qtyping, quantizer, recipe_manager

            every = qtyping.TFLOperationName.ALL_SUPPORTED
            rm = recipe_manager.RecipeManager()
            rm.add_dynamic_config(regex=".*", operation_name=every, num_bits=8)  # = recipe.dynamic_wi8_afp32()
            for name in keep_float:  # an op's scope is its output names, each followed by ";"
                rm.add_quantization_config(regex=f"^{re.escape(name)};$", operation_name=every,
                                           algorithm_key="no_quantize")
            qt = quantizer.Quantizer(str(fp32_path))
            qt.load_quantization_recipe(rm.get_quantization_recipe())
            qt.quantize().export_model(str(path), overwrite=True)
    except Exception as exc:
        raise ExportError(f"TFLite dynamic-range quantization failed: {_first_line(exc)}") from None
    return Path(path)


def export(trained, precision: Precision, out_dir: Path, opts, fp32: Artifact | None = None) -> Artifact:
    """The registry's TFLite exporter (edgebench.export.registry)."""
    agreement = {"min_agreement": opts.min_agreement} if opts.min_agreement > 0 else {}
    calib = opts.calibration
    if calib is None and precision is Precision.INT8:
        calib = trained.dataset.x_train
    return export_tflite(trained, out_dir, precision, calib_x=calib, atol=opts.atol, fp32_tflite=fp32, **agreement)


def export_tflite(trained, out_dir: Path, precision: Precision = Precision.FP32, calib_x: np.ndarray | None = None,
                  atol: float = DEFAULT_ATOL, min_agreement: float = DEFAULT_MIN_AGREEMENT,
                  fp32_tflite: Artifact | None = None) -> Artifact:
    """Export a Trained model to TFLite at one precision and validate it on the real eval split.

    INT8 calibrates on calib_x, or else on the first CALIB_SAMPLES training samples. INT8_DYNAMIC quantizes
    the float file (`fp32_tflite` when given, else one converted here) with ai-edge-quantizer.
    """
    precision = Precision(precision)
    name = f"{trained.name}-tflite-{precision.value}"
    extra = {}
    path = Path(out_dir) / f"{name}.tflite"
    if precision == Precision.INT8:
        if calib_x is None:
            calib_x = trained.dataset.x_train[:CALIB_SAMPLES]
        calib_x = _check_calibration(calib_x, tuple(trained.example_input(1).shape))
        extra["calibration_samples"] = int(len(calib_x))
    if precision == Precision.INT8_DYNAMIC:
        if fp32_tflite is None:
            fp32_tflite = export_tflite(trained, out_dir, Precision.FP32, atol=atol)
        quantize_tflite_dynamic(fp32_tflite.path, path)
        extra.update(quantized_from=fp32_tflite.name, quantizer="ai-edge-quantizer dynamic_wi8_afp32")
    else:
        convert_tflite(trained.module, trained.example_input(1), path, precision, calib_x)
    x = trained.dataset.x_test
    ref, got = reference_outputs(trained.module, x), run_tflite(path, x)
    if precision == Precision.FP32:
        validation = compare(ref, got, atol, flip_share=spike_flip_share(trained.module))
    else:
        validation = compare(ref, got, None, min_agreement)
        extra["min_agreement"] = min_agreement
    return describe_tflite(path, name=name, model_name=trained.name, dataset=trained.dataset.name,
                           precision=precision, validation=validation, labels=trained.dataset.labels,
                           extra=extra)
