"""Streaming step models (L2MU LIF/CuBa, LMU): one sample and the state in, running scores and the new state out.

A model offers `step_module()` (train/l2mu.py, train/lmu.py): forward(x_t, *state, scores) -> (scores',
*state'). It is exported beside the window model, to ONNX (TorchScript exporter, every input's batch dynamic)
and TFLite (litert-torch, batch fixed by the example), and validated by streaming the real eval windows
through the file on the host: after T steps from zero state, scores / T must match the PyTorch window model
(atol for float files, top-1 agreement for INT8).

The artifact's extra["stream"] tells the bundle runner how to stream the file:
    {"x": input fed one sample per step, "carry": [[input, output], ...] (state and scores fed back),
     "output": the running scores, "steps": T, "state_sizes": [...], "mode": "step"}
Mode "step" times one call with the state carried; "window" times T calls from zero state (the streamed
window, call overhead included). Both stream the eval windows for accuracy.
"""
from __future__ import annotations

import io
import re
import tempfile
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import torch

from edgebench.export.errors import ExportError
from edgebench.export.onnx import compare, describe_onnx, for_runtime, reference_outputs, spike_flip_share
from edgebench.types import Artifact, EdgebenchError, Format, Precision, first_line

STEP_MIN_AGREEMENT = 0.9  # a quantized step model may flip a few spikes; the number is recorded
CALIB_WINDOWS = 64  # training windows streamed through the float step model for static INT8 calibration


def has_step_model(module) -> bool:
    return callable(getattr(module, "step_module", None))


def step_example(step: torch.nn.Module, channels: int, batch: int = 1) -> tuple:
    """(x_t, *zero state, zero scores) at a batch."""
    return (torch.zeros(batch, channels),) + tuple(torch.zeros(batch, n) for n in step.state_sizes())


# ---------------------------------------------------------------- ONNX
def export_onnx_step(step: torch.nn.Module, channels: int, path: Path, opset: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names_in, names_out = step.input_names(), step.output_names()
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(step, step_example(step, channels), str(path), dynamo=False, opset_version=opset,
                              input_names=names_in, output_names=names_out,
                              dynamic_axes={n: {0: "batch"} for n in names_in + names_out})
        except Exception as exc:
            raise ExportError(f"ONNX export of the step model failed: {first_line(exc)}") from None
    from edgebench.export.onnx import compact_names

    return compact_names(path)


def onnx_stream_spec(step: torch.nn.Module, steps: int) -> dict:
    names_in, names_out = step.input_names(), step.output_names()
    carry = [[i, o] for i, o in zip(names_in[1:-1], names_out[1:])] + [[names_in[-1], names_out[0]]]
    return {"x": names_in[0], "carry": carry, "output": names_out[0], "steps": int(steps),
            "state_sizes": list(step.state_sizes()), "mode": "step"}


class _OnnxRun:
    def __init__(self, path: Path):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.out_names = [o.name for o in self.sess.get_outputs()]
        self.fixed_batch = None

    def __call__(self, feed: dict) -> dict:
        return dict(zip(self.out_names, self.sess.run(None, feed)))


# ---------------------------------------------------------------- TFLite
def _arg_number(name: str, word: str) -> int:
    found = re.search(rf"{word}_(\d+)", name)
    if not found:
        raise EdgebenchError(f"unexpected TFLite tensor name {name!r} (no {word}_N)")
    return int(found.group(1))


def tflite_stream_spec(path: Path, step: torch.nn.Module, steps: int) -> dict:
    """litert-torch names inputs serving_default_args_K and outputs serving_default_output_K_output in the
    order of the module's arguments and returned tuple."""
    from edgebench.export.tflite_model import _interpreter

    interp = _interpreter(path)
    ins = sorted((d["name"] for d in interp.get_input_details()), key=lambda n: _arg_number(n, "args"))
    outs = sorted((d["name"] for d in interp.get_output_details()), key=lambda n: _arg_number(n, "output"))
    if len(ins) != len(step.input_names()) or len(outs) != len(step.output_names()):
        raise ExportError(f"TFLite step model has {len(ins)} inputs / {len(outs)} outputs, expected "
                          f"{len(step.input_names())} / {len(step.output_names())}")
    carry = [[i, o] for i, o in zip(ins[1:-1], outs[1:])] + [[ins[-1], outs[0]]]
    return {"x": ins[0], "carry": carry, "output": outs[0], "steps": int(steps),
            "state_sizes": list(step.state_sizes()), "mode": "step"}


class _TfliteRun:
    def __init__(self, path: Path):
        from edgebench.export.tflite_model import _interpreter

        self.interp = _interpreter(path)
        self.ins = {d["name"]: d for d in self.interp.get_input_details()}
        self.outs = self.interp.get_output_details()
        self.fixed_batch = int(next(iter(self.ins.values()))["shape"][0])

    def __call__(self, feed: dict) -> dict:
        from edgebench.export.tflite_model import _from_output, _to_input

        for name, x in feed.items():
            self.interp.set_tensor(self.ins[name]["index"], _to_input(x, self.ins[name]))
        self.interp.invoke()
        return {d["name"]: _from_output(self.interp.get_tensor(d["index"]), d) for d in self.outs}


# ---------------------------------------------------------------- streaming on the host
def stream_scores(run, spec: dict, windows: np.ndarray, batch: int = 256) -> np.ndarray:
    """Stream N x C x T windows through a step file (zero state per window); scores / T per window."""
    windows = np.asarray(windows, dtype=np.float32)
    steps = windows.shape[-1]
    b = run.fixed_batch or batch
    outs = []
    for i in range(0, len(windows), b):
        w = windows[i:i + b]
        n = len(w)
        if n < b and run.fixed_batch:
            w = np.concatenate([w, np.zeros((b - n,) + w.shape[1:], np.float32)])
        feed = {inp: np.zeros((len(w), size), np.float32)
                for (inp, _), size in zip(spec["carry"], spec["state_sizes"])}
        for t in range(steps):
            feed[spec["x"]] = np.ascontiguousarray(w[:, :, t])
            out = run(feed)
            for inp, o in spec["carry"]:
                feed[inp] = out[o]
        outs.append(out[spec["output"]][:n] / steps)
    return np.concatenate(outs, axis=0)


def stream_torch(step: torch.nn.Module, windows: np.ndarray, record_states: bool = False):
    """The PyTorch step model streamed over windows: (scores / T, [per-step input tuples] if record_states)."""
    x = torch.from_numpy(np.asarray(windows, dtype=np.float32))
    args = step_example(step, x.shape[1], len(x))[1:]
    seen = []
    with torch.no_grad():
        for t in range(x.shape[-1]):
            if record_states:
                seen.append((x[:, :, t],) + tuple(args))
            out = step(x[:, :, t], *args)
            args = tuple(out[1:]) + (out[0],)
    return (args[-1] / x.shape[-1]).numpy(), seen


# ---------------------------------------------------------------- the export step
def export_step(trained, fmt: Format, precision: Precision, out_dir: Path, opset: int = 17, atol: float = 1e-4,
                min_agreement: float = STEP_MIN_AGREEMENT) -> Artifact:
    """Export the trained model's step model at one format and precision, validated by streaming.
    INT8 files are quantized from an unfolded float step graph of their own (see below; the LMU's TFLite
    dynamic-range file from the folded one), not from the fp32 file."""
    fmt, precision = Format(fmt), Precision(precision)
    if not has_step_model(trained.module):
        raise ExportError(f"{trained.name}: {type(trained.module).__name__} has no step_module()")
    # INT8 quantizes weights per output channel: folded into them, the decays (~0.9) and thresholds lose
    # precision beside the synaptic weights and the CuBa membrane drifts (77 % top-1 agreement dynamic, 48 %
    # static, measured); the quantized step keeps leak and reset as float elementwise ops. A model whose folded
    # step keeps its folded state in the first product, which TFLite's dynamic-range INT8 leaves float32 (the
    # LMU), says so with int8_dynamic_tflite_step_folded: that file then has the fp32 file's ops.
    folded = precision is Precision.FP32 or (fmt is Format.TFLITE and precision is Precision.INT8_DYNAMIC and bool(
        getattr(trained.module, "int8_dynamic_tflite_step_folded", False)))
    from edgebench.export.tflite import litert_form

    step = for_runtime(trained.module.step_module, litert_form(precision) if fmt is Format.TFLITE else None,
                       fold_state=folded)
    x = trained.dataset.x_test
    channels, steps = int(x.shape[1]), int(x.shape[-1])
    name = f"{trained.name}-step-{fmt.value}-{precision.value}"
    out_dir = Path(out_dir)
    extra: dict = {"graph": "step", "window_steps": steps}
    if fmt is Format.TFLITE and precision is Precision.INT8_DYNAMIC:
        extra["quantized_from"] = f"the step model's {'folded' if folded else 'unfolded'} float graph"
    with tempfile.TemporaryDirectory(prefix="edgebench-step-") as tmp:
        path, spec, run = _export_file(step, fmt, precision, channels, steps, out_dir / name, tmp, opset,
                                       trained, extra)
        got = stream_scores(run, spec, x)
    ref = reference_outputs(trained.module, x)
    if precision is Precision.FP32:
        validation = compare(ref, got, atol, flip_share=spike_flip_share(trained.module))
    else:
        validation = compare(ref, got, None, min_agreement)
        extra["min_agreement"] = min_agreement
    extra["stream"] = spec
    common = dict(name=name, model_name=trained.name, dataset=trained.dataset.name, precision=precision,
                  validation=validation, labels=trained.dataset.labels, extra=extra)
    if fmt is Format.ONNX:
        from edgebench.export.quantize import _quiet

        with _quiet():
            return describe_onnx(path, **common)
    from edgebench.export.tflite_model import describe_tflite

    return describe_tflite(path, **common)


def _export_file(step, fmt, precision, channels, steps, stem, tmp, opset, trained, extra) -> tuple:
    """Write the step file; (path, stream spec, host runner)."""
    if fmt is Format.ONNX:
        path = Path(f"{stem}.onnx")
        if precision is Precision.FP32:
            export_onnx_step(step, channels, path, opset)
        else:
            from edgebench.export.quantize import quantize_onnx_step

            src = export_onnx_step(step, channels, Path(tmp) / "float.onnx", opset)  # unfolded float graph
            calib = _calibration_feeds(trained, step) if precision is Precision.INT8 else None
            extra.update(quantize_onnx_step(src, path, precision, calib))
        spec = onnx_stream_spec(step, steps)
        run = _OnnxRun(path)
    else:
        from edgebench.export.tflite import convert_tflite_step, quantize_tflite_dynamic

        path = Path(f"{stem}.tflite")
        if precision is Precision.INT8_DYNAMIC:  # from the float file of `step` (not the fp32 artifact)
            from edgebench.export.tflite_model import end_matmuls

            src = convert_tflite_step(step, channels, Path(tmp) / "float.tflite")
            # The sample's encoder and the readout stay float32: 448 of the L2MU's 10,304 weights, and int8
            # weights there flipped the most windows (HAPT, 2,047 windows: top-1 agreement LIF 98.49 -> 98.83%,
            # CuBa 92.57 -> 92.87%, LMU 99.90% either way; fewer run-time quantizations, no slower).
            keep = end_matmuls(src)
            quantize_tflite_dynamic(src, path, keep_float=keep)
            extra.update(quantizer="ai-edge-quantizer dynamic_wi8_afp32, first and last matrix product float32",
                         float_ops=list(keep))
        else:
            calib = _calibration_feeds(trained, step) if precision is Precision.INT8 else None
            convert_tflite_step(step, channels, path, calib)
        spec = tflite_stream_spec(path, step, steps)
        run = _TfliteRun(path)
    return path, spec, run


def streamed_window_twin(artifact: Artifact) -> Artifact:
    """The same step file measured per streamed window (T calls from rest) instead of per step: its own
    record name (`-stream-` for `-step-`), so both sit side by side in a run."""
    import dataclasses

    stream = dict(artifact.extra["stream"], mode="window")
    return dataclasses.replace(artifact, name=artifact.name.replace("-step-", "-stream-", 1),
                               extra={**artifact.extra, "graph": "stream", "stream": stream})


def _calibration_feeds(trained, step) -> list:
    """Per-step inputs (x_t, *state, scores) seen while the float step model streams training windows."""
    windows = trained.dataset.x_train[:CALIB_WINDOWS]
    if len(windows) < 8:
        from edgebench.export.errors import CalibrationError

        raise CalibrationError(f"static INT8 of a step model needs training windows, got {len(windows)}")
    return stream_torch(step, windows, record_states=True)[1]
