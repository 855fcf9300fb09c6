"""The library functions behind `import edgebench`: export, bench, report. The command line and the run
config call these same functions.

    import edgebench
    art = edgebench.export(net, torch.randn(1, 1, 8, 8), format="onnx", eval=(x_test, y_test), out="out/artifacts")
    rec = edgebench.bench(art, device="local", eval=(x_test, y_test))
    edgebench.report([rec], out="out/report")
"""
from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from edgebench.types import TFLITE_KERNELS, Artifact, EdgebenchError, Format, Precision, RunSpec


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def export(module, example_inputs, format: str = "onnx", precision: str = "fp32", calibration=None,
           eval=None, out: str | Path = "out/artifacts", name: str | None = None, labels=(),
           opset: int | None = None, atol: float | None = None, min_agreement: float = 0.0) -> Artifact:
    """Export a PyTorch module to ONNX or TFLite at one precision, validated against the module.

    example_inputs: one input tensor (batch first). eval: (x, y) arrays the file is validated on (and whose
    y gives the class labels); without it, validation runs on example_inputs. calibration: samples for
    static INT8 (default: the eval inputs). Float files are held to `atol`, INT8 ones to top-1 agreement.
    """
    from edgebench.export.registry import DEFAULT_ATOL, DEFAULT_OPSET, ExportOptions, export_trained
    from edgebench.train.base import Dataset, Trained

    if isinstance(example_inputs, (tuple, list)):
        if len(example_inputs) != 1:
            raise EdgebenchError(f"export takes one input tensor for now, got {len(example_inputs)}; wrap a "
                                 f"several-input module so it takes one tensor, or export it with torch.onnx "
                                 f"and use edgebench.bench on the file")
        example_inputs = example_inputs[0]
    example = _as_array(example_inputs).astype(np.float32)
    if example.ndim < 1:
        raise EdgebenchError("example_inputs must have a batch dimension first")
    if eval is not None:
        x, y = (_as_array(a) for a in eval)
        if len(x) != len(y):
            raise EdgebenchError(f"eval: x has {len(x)} samples but y has {len(y)}")
    else:
        x, y = example, np.zeros(len(example), dtype=np.int64)
    if x.shape[1:] != example.shape[1:]:
        raise EdgebenchError(f"eval inputs {list(x.shape)} do not fit example_inputs {list(example.shape)}")
    calib = _as_array(calibration).astype(np.float32) if calibration is not None else None
    n_classes = int(max(y.max() + 1, 1)) if len(y) else 1
    labels = tuple(labels) or tuple(str(i) for i in range(n_classes))
    model_name = name or type(module).__name__.lower()
    dataset = Dataset(name="eval" if eval is not None else "example_inputs",
                      x_train=calib if calib is not None else x, y_train=y if calib is None else np.zeros(len(calib)),
                      x_test=x.astype(np.float32), y_test=y, labels=labels,
                      preprocessing="as given to edgebench.export")
    module.eval()
    trained = Trained(name=model_name, kind="python", module=module, dataset=dataset,
                      config={"source": "edgebench.export"}, metrics={})
    opts = ExportOptions(opset=opset or DEFAULT_OPSET, atol=DEFAULT_ATOL if atol is None else atol,
                         min_agreement=min_agreement, calibration=calib)
    return export_trained(trained, Format(format), Precision(precision), Path(out), opts)


def describe(path: str | Path, dataset: str = "") -> Artifact:
    """An Artifact for any model file a user brings (.onnx or .tflite)."""
    path = Path(path)
    if not path.exists():
        raise EdgebenchError(f"model file not found: {path}")
    try:
        fmt = Format.from_path(path)
    except ValueError as exc:
        raise EdgebenchError(str(exc)) from None
    if fmt is Format.ONNX:
        from edgebench.export.onnx import describe_onnx

        return describe_onnx(path, dataset=dataset)
    from edgebench.export.tflite_model import describe_tflite

    return describe_tflite(path, dataset=dataset)


def _eval_arrays(eval) -> tuple:
    if eval is None:
        return None, None
    if isinstance(eval, (str, Path)):
        from edgebench.deploy.bundle import load_eval_npz

        return load_eval_npz(Path(eval))
    x, y = eval
    return (x if isinstance(x, dict) else _as_array(x)), _as_array(y)


def with_fed_macs(artifact: Artifact, bundle) -> Artifact:
    """MACs of an ONNX graph for the shapes actually fed (free dimensions change them); the reason when
    there is no count."""
    import dataclasses

    from edgebench.export.onnx import MACS_DEFINITION, macs_for_feed

    if artifact.format is not Format.ONNX or "quantized_from" in artifact.extra:
        return artifact  # a quantized file states its fp32 graph's MACs (see export/quantize.py)
    arrays = bundle.feed_arrays()
    macs, by_op, why = macs_for_feed(artifact.path, arrays)
    extra = {k: v for k, v in artifact.extra.items() if k not in ("macs_by_op", "macs_unavailable")}
    extra["macs_input_shapes"] = {k: list(v.shape) for k, v in arrays.items()}
    if by_op:
        extra["macs_by_op"] = by_op
    if why:
        extra["macs_unavailable"] = why
    return dataclasses.replace(artifact, macs=macs, macs_definition=MACS_DEFINITION if macs is not None else "",
                               extra=extra)


def record_of(run_id: str, artifact: Artifact, bundle, m, device):
    """The Record of one measurement: MACs follow the shapes actually fed; energy per inference from the
    device's counters or its power profile (devices/energy.py)."""
    from edgebench.devices.energy import annotate_energy
    from edgebench.reports.record import Record

    fed = {f["name"]: list(f["shape"]) for f in bundle.manifest["feeds"]}
    if artifact.format is Format.ONNX and artifact.extra.get("macs_input_shapes") != fed:
        artifact = with_fed_macs(artifact, bundle)
    return Record.from_parts(run_id, artifact, annotate_energy(m, device), device.kind)


def measure(artifact: Artifact, bundle, device, spec: RunSpec, run_id: str):
    """Run a bundle on a device and make its Record. Shared by `bench` and the run-config pipeline (the Ray
    farm runs the device elsewhere and calls record_of on the driver)."""
    return record_of(run_id, artifact, bundle, device.run(bundle, spec), device)


def bench(model, device: str = "local", runs: int = 100, warmup: int = 10, threads: int = 1,
          shapes: dict | None = None, inputs: dict | None = None, eval=None, min_time_s: float = 0.0,
          profile: bool = False, timeout_s: float = 600.0, store: str | Path | None = None,
          devices_file: str | Path | None = None, run_id: str | None = None, tflite_kernels: str = "xnnpack"):
    """Benchmark an Artifact or a model file on one device; the Record is stored and returned (ok or failed).

    shapes: input name -> shape for free dimensions (a leading batch dimension defaults to 1, and the record
    says so). inputs: input name -> array, number (e.g. a sample rate) or 'zeros' / 'ones' / 'random'.
    eval: (x, y) or an .npz with arrays x and y: accuracy of the deployed file on the device (classifiers).
    tflite_kernels: xnnpack (LiteRT's default delegate), builtin (TFLite's own kernels), or auto (both probed
    on the device, the faster kept; the record's tflite_kernels says which).
    """
    if tflite_kernels not in TFLITE_KERNELS:
        raise EdgebenchError(f"tflite_kernels must be one of {', '.join(TFLITE_KERNELS)}, not '{tflite_kernels}'")
    from edgebench.deploy.bundle import make_bundle
    from edgebench.devices.registry import get_device
    from edgebench.reports.store import DEFAULT_STORE, Store

    dev = get_device(device, str(devices_file) if devices_file else None)
    x, y = _eval_arrays(eval)
    if y is not None and len(y) and (np.asarray(y) < 0).any():
        raise EdgebenchError("eval labels must be class indices >= 0")
    if isinstance(model, Artifact):
        artifact = model
    else:
        artifact = describe(Path(model), dataset=Path(eval).stem if isinstance(eval, (str, Path)) else "")
    n_out = artifact.outputs[0].shape[-1] if artifact.outputs and artifact.outputs[0].shape else None
    if y is not None and len(y) and isinstance(n_out, int) and n_out > 0 and int(np.max(y)) >= n_out:
        raise EdgebenchError(f"eval labels go up to {int(np.max(y))} but the model outputs {n_out} classes: "
                             f"labels outside the model's classes cannot be scored")
    spec = RunSpec(runs=runs, warmup=warmup, threads=threads, min_time_s=min_time_s, eval=x is not None,
                   profile=profile, timeout_s=timeout_s, tflite_kernels=tflite_kernels)
    with tempfile.TemporaryDirectory(prefix="edgebench-bench-") as tmp:
        bundle = make_bundle(artifact, Path(tmp) / "bundle", x, y, shapes=shapes, inputs=inputs)
        run_id = run_id or f"bench-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        record = measure(artifact, bundle, dev, spec, run_id)
    with Store(Path(store) if store else DEFAULT_STORE) as s:
        s.begin_run(record.run_id, f"bench {artifact.name}", {"model": str(artifact.path), "device": device,
                                                             "shapes": {k: list(v) for k, v in (shapes or {}).items()}})
        s.append(record)
        s.finish_run(record.run_id, "finished" if record.status == "ok" else "failed")
    return record


def report(records_or_run_id, out: str | Path = "out/report", store: str | Path | None = None,
           title: str | None = None) -> Path:
    """Write an ONNX-Bench-style report folder for records (a list) or a run id in the store."""
    from edgebench.reports.render import write_report
    from edgebench.reports.store import run_records

    if isinstance(records_or_run_id, str):
        records = run_records(records_or_run_id, store)
        title = title or f"edgebench report: {records_or_run_id}"
    else:
        records = list(records_or_run_id)
        if not records:
            raise EdgebenchError("report: no records given")
    return write_report(records, Path(out), title=title or "edgebench report")
