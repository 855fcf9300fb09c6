"""The orchestration: train -> export -> bundle -> device -> record -> store -> report.

Resumable: every measurement is appended to the store as soon as it exists, keyed by
artifact@device. A run that was killed (status still 'running' in the store) is resumed by the next
`edgebench run` of the same config: finished measurements are skipped, none is repeated or lost.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edgebench.config import RunConfig
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
                    fp32_onnx: Artifact | None = None) -> Artifact:
    """One artifact of a trained model; heavy converters are imported only when asked for."""
    if fmt is Format.ONNX and precision is Precision.FP32:
        from edgebench.export.onnx import export_and_validate

        return export_and_validate(trained, out_dir, opset=opset, atol=atol)
    if fmt is Format.ONNX:
        from edgebench.export.quantize import quantize_onnx

        if fp32_onnx is None:
            from edgebench.export.onnx import export_and_validate

            fp32_onnx = export_and_validate(trained, out_dir, opset=opset, atol=atol)
        return quantize_onnx(fp32_onnx, trained, out_dir, precision)
    from edgebench.export.tflite import export_tflite

    calib = trained.dataset.x_train if precision is Precision.INT8 else None
    return export_tflite(trained, out_dir, precision, calib_x=calib)


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
    from edgebench.train.base import save_checkpoint
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
            ckpt = out / "checkpoints" / f"{m.name}.pt"
            trained = None
            if resumed and ckpt.exists():
                from edgebench.train.base import load_checkpoint

                trained = load_checkpoint(ckpt)
                log(f"{m.name}: reusing checkpoint {ckpt} from the interrupted run")
            if trained is None:
                trained = train_model(m.name, m.kind, m.dataset, m.model, m.train, m.data, progress=progress)
                save_checkpoint(trained, ckpt)
            train_metrics[m.name] = trained.metrics
            log(f"{m.name}: test accuracy in PyTorch {trained.metrics.get('test_accuracy', float('nan')):.2%}")
            fp32_onnx = None
            for fmt in cfg.export.formats:
                for prec in cfg.export.precisions:
                    a = export_artifact(trained, Format(fmt), Precision(prec), out / "artifacts",
                                        cfg.export.opset, cfg.export.atol, fp32_onnx)
                    if a.format is Format.ONNX and a.precision is Precision.FP32:
                        fp32_onnx = a
                    v = a.validation
                    log(f"  exported {a.name}: {a.size_bytes} bytes"
                        + (f", max |diff| {v.max_abs_diff:.2g}, top-1 agreement {v.top1_agreement:.2%}" if v else ""))
                    artifacts.append((a, trained))

        # 3. bundle + 4. measure, one record appended per measurement
        jobs = [(a, t, d) for a, t in artifacts for d in devices]
        skipped = 0
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      disable=not progress) as bar:
            task = bar.add_task("benchmark", total=len(jobs))
            with tempfile.TemporaryDirectory(prefix="edgebench-bundles-") as tmp:
                for a, trained, device in jobs:
                    key = f"{a.name}@{device.name}"
                    if key in done:
                        skipped += 1
                        bar.update(task, advance=1)
                        continue
                    bar.update(task, description=f"benchmark {key}")
                    bundle = make_bundle(a, Path(tmp) / f"{a.name}-{device.name}", trained.dataset.x_test,
                                         trained.dataset.y_test, trained.dataset.preprocessing)
                    m = device.run(bundle, spec)
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
    from edgebench.export.tflite import describe_tflite

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
    import uuid

    record = Record.from_parts(f"bench-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}", artifact, m,
                               device.kind)
    with Store(store_path or Path("out/edgebench.sqlite")) as store:
        store.begin_run(record.run_id, f"bench {artifact.name}", {"model": str(model_path), "device": device_name})
        store.append(record)
        store.finish_run(record.run_id, "finished" if m.ok else "failed")
    return record
