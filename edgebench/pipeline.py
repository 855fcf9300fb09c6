"""The orchestration: train -> export -> bundle -> device -> record -> store -> report.

Resumable: every measurement is appended to the store as soon as it exists, keyed by
artifact@device. A run that was killed (status still 'running' in the store) is resumed by the next
`edgebench run` of the same config: finished measurements are skipped, none is repeated or lost.
"""
from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from edgebench.config import RunConfig
from edgebench.export.errors import ExportError
from edgebench.types import Artifact, EdgebenchError, Format, Precision, RunSpec


@dataclass
class RunResult:
    run_id: str
    resumed: bool
    report_dir: Path
    records: list
    skipped: int
    wall_s: float
    train_metrics: dict


def export_artifact(trained, fmt: Format, precision: Precision, out_dir: Path, opset: int, atol: float,
                    fp32_onnx: Artifact | None = None, fp32_tflite: Artifact | None = None,
                    min_agreement: float = 0.0) -> Artifact:
    """One artifact of a trained model; heavy converters are imported only when asked for. Quantized
    artifacts reuse the fp32 file of their format when given (no second conversion)."""
    agreement = {"min_agreement": min_agreement} if min_agreement > 0 else {}
    if fmt is Format.ONNX and precision is Precision.FP32:
        from edgebench.export.onnx import export_and_validate

        return export_and_validate(trained, out_dir, opset=opset, atol=atol)
    if fmt is Format.ONNX:
        from edgebench.export.quantize import quantize_onnx

        if fp32_onnx is None:
            from edgebench.export.onnx import export_and_validate

            fp32_onnx = export_and_validate(trained, out_dir, opset=opset, atol=atol)
        return quantize_onnx(fp32_onnx, trained, out_dir, precision, **agreement)
    from edgebench.export.tflite import export_tflite

    calib = trained.dataset.x_train if precision is Precision.INT8 else None
    return export_tflite(trained, out_dir, precision, calib_x=calib, atol=atol, fp32_tflite=fp32_tflite,
                         **agreement)


def _trained(name: str, out: Path, resumed: bool, log, make):
    """Train (or prune) and checkpoint; a resumed run reuses the checkpoint the killed run left."""
    from edgebench.train.base import load_checkpoint, save_checkpoint

    ckpt = out / "checkpoints" / f"{name}.pt"
    if resumed and ckpt.exists():
        log(f"{name}: reusing checkpoint {ckpt} from the interrupted run")
        return load_checkpoint(ckpt)
    trained = make()
    save_checkpoint(trained, ckpt)
    return trained


def model_metrics(trained) -> dict:
    """Figures of the PyTorch model that every artifact of it carries: for spiking networks, NeuroBench-style
    activation sparsity and synaptic operations on the eval set; for pruned ones, the weight sparsity."""
    extra = {"pytorch_test_accuracy": trained.metrics.get("test_accuracy")}
    if "weight_sparsity" in trained.metrics:
        extra["weight_sparsity"] = trained.metrics["weight_sparsity"]
        extra["pruned_from"] = trained.metrics.get("pruned_from")
    if hasattr(trained.module, "spike_record"):
        from edgebench.train.spiking import spiking_metrics

        extra.update(spiking_metrics(trained.module, trained.dataset.x_test))
        extra["spiking_metrics_source"] = "PyTorch model on the eval split"
    return extra


def _run_id(store, cfg: RunConfig, fresh: bool) -> tuple[str, bool]:
    digest = cfg.digest()
    if not fresh:
        for run in reversed(store.runs()):
            if run["name"] == cfg.name and run["run_id"].endswith(digest) and run["status"] == "running":
                return run["run_id"], True
    return f"{cfg.name}-{time.strftime('%Y%m%dT%H%M%S')}-{digest}", False


def run_pipeline(cfg: RunConfig, fresh: bool = False, progress: bool = True, log=print) -> RunResult:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgebench.deploy.bundle import make_bundle
    from edgebench.devices.registry import get_device
    from edgebench.reports.record import Record
    from edgebench.reports.render import write_report
    from edgebench.reports.store import Store
    from edgebench.train.registry import train_model

    t_start = time.perf_counter()
    out = cfg.out_path
    out.mkdir(parents=True, exist_ok=True)
    # Resolve every device before any work: an unknown name fails now, not after training.
    devices_file = cfg.bench.devices_file or None
    devices = [get_device(name, devices_file) for name in cfg.bench.devices]
    spec = RunSpec(runs=cfg.bench.runs, warmup=cfg.bench.warmup, threads=cfg.bench.threads,
                   min_time_s=cfg.bench.min_time_s, profile=cfg.bench.profile, timeout_s=cfg.bench.timeout_s)

    with Store(cfg.store_path) as store:
        run_id, resumed = _run_id(store, cfg, fresh)
        store.begin_run(run_id, cfg.name, cfg.to_dict())
        done = store.done_keys(run_id)
        log(f"run {run_id}" + (f" (resuming: {len(done)} measurements already done)" if resumed else ""))

        # 1. train + 2. export
        artifacts: list[tuple[Artifact, object]] = []
        train_metrics = {}
        for m in cfg.models:
            trained = _trained(m.name, out, resumed, log,
                               lambda: train_model(m.name, m.kind, m.dataset, m.model, m.train, m.data,
                                                   progress=progress))
            variants = [(trained, cfg.export.formats, cfg.export.precisions)]
            for sparsity in m.prune:
                from edgebench.train.prune import prune_and_finetune

                vname = f"{m.name}-pruned{round(sparsity * 100)}"
                variants.append((_trained(vname, out, resumed, log, lambda s=sparsity: prune_and_finetune(
                    trained, s, m.finetune_epochs, progress=progress)), m.prune_formats, m.prune_precisions))
            for variant, formats, precisions in variants:
                train_metrics[variant.name] = variant.metrics
                log(f"{variant.name}: test accuracy in PyTorch {variant.metrics.get('test_accuracy', float('nan')):.2%} "
                    f"({time.perf_counter() - t_start:.0f} s into the run)")
                model_extra = model_metrics(variant)
                fp32_onnx = fp32_tflite = None
                for fmt in formats:
                    for prec in precisions:
                        t_export = time.perf_counter()
                        try:
                            a = export_artifact(variant, Format(fmt), Precision(prec), out / "artifacts",
                                                cfg.export.opset, cfg.export.atol, fp32_onnx, fp32_tflite,
                                                cfg.export.min_agreement)
                        except ExportError as exc:
                            # One artifact that fails conversion or validation is a failed row with its
                            # reason; the rest of the sweep goes on.
                            name = f"{variant.name}-{fmt}-{prec}"
                            log(f"  export of {name} failed: {exc}")
                            for device in devices:
                                store.append(Record(run_id=run_id, name=name, model=variant.name,
                                                    dataset=variant.dataset.name, device=device.name,
                                                    status="failed", error=f"export: {exc}", format=fmt,
                                                    precision=prec, device_kind=device.kind),
                                             f"{name}@{device.name}")
                            continue
                        a.extra.update(model_extra)
                        if a.format is Format.ONNX and a.precision is Precision.FP32:
                            fp32_onnx = a
                        if a.format is Format.TFLITE and a.precision is Precision.FP32:
                            fp32_tflite = a
                        v = a.validation
                        log(f"  exported {a.name} in {time.perf_counter() - t_export:.1f} s: {a.size_bytes:,} bytes"
                            + (f", max |diff| {v.max_abs_diff:.2g}, top-1 agreement {v.top1_agreement:.2%}" if v else ""))
                        artifacts.append((a, variant))

        # 3. bundle + 4. measure, one record appended per measurement
        jobs = [(a, t, d) for a, t in artifacts for d in devices]
        skipped = 0
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      disable=not progress) as bar:
            task = bar.add_task("benchmark", total=len(jobs))
            with tempfile.TemporaryDirectory(prefix="edgebench-bundles-") as tmp:
                bundles: dict = {}  # one bundle per artifact, shared by every device (devices only read it)
                for a, trained, device in jobs:
                    key = f"{a.name}@{device.name}"
                    if key in done:
                        skipped += 1
                        bar.update(task, advance=1)
                        continue
                    bar.update(task, description=f"benchmark {key}")
                    if a.name not in bundles:
                        bundles[a.name] = make_bundle(a, Path(tmp) / a.name, trained.dataset.x_test,
                                                      trained.dataset.y_test, trained.dataset.preprocessing)
                    m = device.run(bundles[a.name], spec)
                    rec = Record.from_parts(run_id, a, m, device.kind)
                    store.append(rec, key)
                    if not m.ok:
                        log(f"  {key} failed: {m.error}")
                    bar.update(task, advance=1)

        records = store.query(run_id=run_id)
        report_dir = write_report(records, out / "report", title=f"edgebench report: {cfg.name} ({run_id})")
        store.finish_run(run_id)
    return RunResult(run_id=run_id, resumed=resumed, report_dir=report_dir, records=records, skipped=skipped,
                     wall_s=time.perf_counter() - t_start, train_metrics=train_metrics)


def describe_model_file(path: Path, dataset: str = "") -> Artifact:
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


def bench_file(model_path: Path, device_name: str, spec: RunSpec, eval_npz: Path | None = None,
               store_path: Path | None = None, devices_file: str | None = None):
    """Benchmark one model file on one device; the record is stored and returned (ok or failed)."""
    from edgebench.deploy.bundle import load_eval_npz, make_bundle
    from edgebench.devices.registry import get_device
    from edgebench.reports.record import Record
    from edgebench.reports.store import Store

    device = get_device(device_name, devices_file)
    artifact = describe_model_file(Path(model_path), dataset=Path(eval_npz).stem if eval_npz else "")
    x = y = None
    if eval_npz is not None:
        x, y = load_eval_npz(Path(eval_npz))
    with tempfile.TemporaryDirectory(prefix="edgebench-bench-") as tmp:
        bundle = make_bundle(artifact, Path(tmp) / "bundle", x, y)
        m = device.run(bundle, spec)
    record = Record.from_parts(f"bench-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}", artifact, m,
                               device.kind)
    with Store(store_path or Path("out/edgebench.sqlite")) as store:
        store.begin_run(record.run_id, f"bench {artifact.name}", {"model": str(model_path), "device": device_name})
        store.append(record)
        store.finish_run(record.run_id, "finished" if m.ok else "failed")
    return record
