"""The orchestration: train -> export -> bundle -> device -> record -> store -> report.

Resumable: every measurement is appended to the store as soon as it exists, keyed by
artifact@device. A run that was killed (status still 'running' in the store) is resumed by the next
`edgebench run` of the same config: finished measurements are skipped, none is repeated or lost.
"""
from __future__ import annotations

import tempfile
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from edgebench.config import RunConfig
from edgebench.train_pool import train_in_workers, warm_imports
from edgebench.export.errors import ExportError
from edgebench.types import Artifact, Format, Precision, RunSpec


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
                    min_agreement: float = 0.0, int8_activations: str = "int8") -> Artifact:
    """One artifact of a trained model, through the exporter registry; quantized artifacts reuse the fp32
    file of their format when given (no second conversion)."""
    from edgebench.export.registry import ExportOptions, export_trained

    fp32 = fp32_onnx if Format(fmt) is Format.ONNX else fp32_tflite
    return export_trained(trained, Format(fmt), Precision(precision), out_dir,
                          ExportOptions(opset=opset, atol=atol, min_agreement=min_agreement,
                                        int8_activations=int8_activations), fp32)


def _trained(name: str, out: Path, resumed: bool, log, make, pretrained: dict | None = None):
    """Train (or prune) and checkpoint; a resumed run reuses the checkpoint the killed run left, and a model
    trained by a worker process (train_pool.train_in_workers) is loaded from the checkpoint the worker wrote."""
    from edgebench.train.base import load_checkpoint, save_checkpoint

    ckpt = out / "checkpoints" / f"{name}.pt"
    if name in (pretrained or {}):
        return load_checkpoint(pretrained[name])
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
        from edgebench.devices.energy import synops_energy
        from edgebench.train.spiking import spiking_metrics

        extra.update(spiking_metrics(trained.module, trained.dataset.x_test))
        extra["spiking_metrics_source"] = "PyTorch model on the eval split"
        extra.update(synops_energy(extra))
    return extra


def _run_id(store, cfg: RunConfig, fresh: bool) -> tuple[str, bool]:
    digest = cfg.digest()
    if not fresh:
        for run in reversed(store.runs()):
            if run["name"] == cfg.name and run["run_id"].endswith(digest) and run["status"] == "running":
                return run["run_id"], True
    return f"{cfg.name}-{time.strftime('%Y%m%dT%H%M%S')}-{digest}", False


@dataclass
class Job:
    """One artifact to measure, with what its bundle needs."""

    artifact: Artifact
    eval_x: object = None
    eval_y: object = None
    preprocessing: str = ""
    shapes: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)


def _failed_rows(store, run_id: str, name: str, model: str, dataset: str, devices, fmt: str, prec: str,
                 reason: str) -> None:
    from edgebench.reports.record import Record

    for device in devices:
        store.append(Record(run_id=run_id, name=name, model=model, dataset=dataset, device=device.name,
                            status="failed", error=reason, format=fmt, precision=prec, device_kind=device.kind),
                     f"{name}@{device.name}")


def _train_step(cfg: RunConfig, m, out: Path, resumed: bool, log, progress: bool,
                pretrained: dict | None = None) -> list:
    """The trained model and its pruned variants, each with the formats and precisions it exports to."""
    from edgebench.train.registry import train_model

    if m.kind == "python":
        from edgebench.train.user import train_user_model, user_config

        make = lambda: train_user_model(m.name, user_config(m, cfg.base_dir), progress=progress)  # noqa: E731
    else:
        make = lambda: train_model(m.name, m.kind, m.dataset, m.model, m.train, m.data,  # noqa: E731
                                   progress=progress)
    trained = _trained(m.name, out, resumed, log, make, pretrained)
    variants = [(trained, cfg.export.formats, cfg.export.precisions)]
    for sparsity in m.prune:
        from edgebench.train.prune import prune_and_finetune

        vname = f"{m.name}-pruned{round(sparsity * 100)}"
        variants.append((_trained(vname, out, resumed, log, lambda s=sparsity: prune_and_finetune(
            trained, s, m.finetune_epochs, progress=progress)), m.prune_formats, m.prune_precisions))
    return variants


def _export_step(cfg: RunConfig, m, variants: list, out: Path, store, run_id: str, devices, log, t_start) -> list:
    """Every format x precision of every variant; a failed export is a failed row and the sweep goes on."""
    jobs = []
    for variant, formats, precisions in variants:
        log(f"{variant.name}: test accuracy in PyTorch {variant.metrics.get('test_accuracy', float('nan')):.2%} "
            f"({time.perf_counter() - t_start:.0f} s into the run)")
        model_extra = model_metrics(variant)
        fp32 = {}
        for fmt in formats:
            for prec in precisions:
                t_export = time.perf_counter()
                try:
                    a = export_artifact(variant, Format(fmt), Precision(prec), out / "artifacts", cfg.export.opset,
                                        cfg.export.atol, fp32.get(Format.ONNX), fp32.get(Format.TFLITE),
                                        cfg.export.min_agreement, cfg.export.int8_activations)
                except ExportError as exc:
                    name = f"{variant.name}-{fmt}-{prec}"
                    log(f"  export of {name} failed: {exc}")
                    _failed_rows(store, run_id, name, variant.name, variant.dataset.name, devices, fmt, prec,
                                 f"export: {exc}")
                    continue
                a.extra.update(model_extra)
                if a.precision is Precision.FP32:
                    fp32[a.format] = a
                v = a.validation
                log(f"  exported {a.name} in {time.perf_counter() - t_export:.1f} s: {a.size_bytes:,} bytes"
                    + (f", max |diff| {v.max_abs_diff:.2g}, top-1 agreement {v.top1_agreement:.2%}{v.flips()}" if v
                       else ""))
                ds = variant.dataset
                jobs.append(Job(a, ds.x_test, ds.y_test, ds.preprocessing, dict(m.shapes), dict(m.inputs)))
    return jobs


def _stream_step(cfg: RunConfig, m, trained, out: Path, store, run_id: str, devices, log) -> list:
    """The streaming step model of a trained L2MU/LMU (export/step.py): each artifact measured twice, per step
    (state carried) and per streamed window (T steps from rest), both with streamed accuracy."""
    from edgebench.export.step import export_step, has_step_model, streamed_window_twin

    if not m.step_formats or not has_step_model(trained.module):
        return []
    jobs, ds = [], trained.dataset
    for fmt in m.step_formats:
        for prec in m.step_precisions:
            t_export = time.perf_counter()
            try:
                a = export_step(trained, Format(fmt), Precision(prec), out / "artifacts", cfg.export.opset,
                                cfg.export.atol, **({"min_agreement": cfg.export.min_agreement}
                                                    if cfg.export.min_agreement > 0 else {}))
            except ExportError as exc:
                name = f"{trained.name}-step-{fmt}-{prec}"
                log(f"  export of {name} failed: {exc}")
                _failed_rows(store, run_id, name, trained.name, ds.name, devices, fmt, prec, f"export: {exc}")
                continue
            a.extra.update(model_metrics(trained))
            log(f"  exported {a.name} in {time.perf_counter() - t_export:.1f} s: {a.size_bytes:,} bytes, "
                f"streamed max |diff| {a.validation.max_abs_diff:.2g}, top-1 agreement {a.validation.top1_agreement:.2%}"
                f"{a.validation.flips()}")
            for art in (a, streamed_window_twin(a)):
                jobs.append(Job(art, ds.x_test, ds.y_test, ds.preprocessing, dict(m.shapes), dict(m.inputs)))
    return jobs


def _hf_step(cfg: RunConfig, m, out: Path, store, run_id: str, devices, log) -> list:
    """A Hugging Face folder: ONNX through optimum, benched with its own tokenizer's token inputs."""
    from edgebench.export.hf import export_hf

    jobs = []
    for fmt in cfg.export.formats:
        for prec in cfg.export.precisions:
            name = f"{m.name}-{fmt}-{prec}"
            if (fmt, prec) != ("onnx", "fp32"):
                reason = "export: kind = \"hf\" exports ONNX fp32 through optimum only"
                log(f"  {name}: {reason}")
                _failed_rows(store, run_id, name, m.name, "", devices, fmt, prec, reason)
                continue
            folder = Path(m.path).expanduser()
            folder = folder if folder.is_absolute() else cfg.base_dir / folder
            try:
                a, tokens = export_hf(m.name, folder, out / "artifacts", m.task, m.sequence_length, m.text,
                                      cfg.export.opset)
            except ExportError as exc:
                log(f"  export of {name} failed: {exc}")
                _failed_rows(store, run_id, name, m.name, "", devices, fmt, prec, f"export: {exc}")
                continue
            log(f"  exported {a.name} with optimum: {a.size_bytes:,} bytes, max |diff| {a.validation.max_abs_diff:.2g}")
            jobs.append(Job(a, shapes=dict(m.shapes), inputs={**tokens, **m.inputs}))
    return jobs


def _measure_step(jobs: list, devices, spec: RunSpec, store, run_id: str, done: set, log, progress: bool) -> int:
    """Bundle each artifact once, run it on every device, append each record as soon as it exists."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgebench.api import measure
    from edgebench.deploy.bundle import make_bundle

    skipped = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=not progress) as bar, tempfile.TemporaryDirectory(prefix="edgebench-bundles-") as tmp:
        task = bar.add_task("benchmark", total=len(jobs) * len(devices))
        for job in jobs:
            bundle = None  # one bundle per artifact, shared by every device (devices only read it)
            for device in devices:
                key = f"{job.artifact.name}@{device.name}"
                bar.update(task, description=f"benchmark {key}")
                if key in done:
                    skipped += 1
                    bar.update(task, advance=1)
                    continue
                if bundle is None:
                    bundle = make_bundle(job.artifact, Path(tmp) / job.artifact.name, job.eval_x, job.eval_y,
                                         job.preprocessing, shapes=job.shapes, inputs=job.inputs)
                record = measure(job.artifact, bundle, device, spec, run_id)
                store.append(record, key)
                if record.status != "ok":
                    log(f"  {key} failed: {record.error}")
                bar.update(task, advance=1)
    return skipped


def _log_recommendations(records: list, log) -> None:
    """Per device, the fastest artifact within 1 point of the best accuracy there (reports/recommend.py)."""
    from edgebench.reports.recommend import recommend
    from edgebench.reports.render import latest_per_key

    for device, rec in recommend(latest_per_key(records)).items():
        log(f"recommended on {device}: {rec.pick}: {rec.reason}")


def run_pipeline(cfg: RunConfig, fresh: bool = False, progress: bool = True, log=print) -> RunResult:
    """train -> export -> measure -> report, resumable (see the module docstring)."""
    from edgebench.devices.registry import get_device
    from edgebench.reports.render import write_report
    from edgebench.reports.store import Store

    t_start = time.perf_counter()
    # Resolve every device before any work: an unknown name or a bad setting fails now, not after training.
    devices = [get_device(name, cfg.bench.devices_file or None) for name in cfg.bench.devices]
    out = cfg.out_path
    out.mkdir(parents=True, exist_ok=True)
    spec = RunSpec(runs=cfg.bench.runs, warmup=cfg.bench.warmup, threads=cfg.bench.threads,
                   min_time_s=cfg.bench.min_time_s, profile=cfg.bench.profile, timeout_s=cfg.bench.timeout_s,
                   tflite_kernels=cfg.bench.tflite_kernels)
    with Store(cfg.store_path) as store:
        run_id, resumed = _run_id(store, cfg, fresh)
        store.begin_run(run_id, cfg.name, cfg.to_dict())
        done = store.done_keys(run_id)
        log(f"run {run_id}" + (f" (resuming: {len(done)} measurements already done)" if resumed else ""))
        train_metrics, model_jobs = {}, {}

        def model_step(m, pretrained: dict, bars: bool) -> list:
            if m.kind == "hf":
                return _hf_step(cfg, m, out, store, run_id, devices, log)
            variants = _train_step(cfg, m, out, resumed, log, bars, pretrained)
            train_metrics.update({v.name: v.metrics for v, _, _ in variants})
            return (_export_step(cfg, m, variants, out, store, run_id, devices, log, t_start)
                    + _stream_step(cfg, m, variants[0][0], out, store, run_id, devices, log))

        by_name = {m.name: m for m in cfg.models}
        warm = warm_imports(cfg)
        with closing(train_in_workers(cfg, out, resumed, log, progress)) as trained:
            for name, ckpt in trained:  # exported as each worker ends, beside the others still training
                if ckpt is not None:  # (no bar of its own for pruning: the workers' spinners are live)
                    warm.join()
                    model_jobs[name] = model_step(by_name[name], {name: ckpt}, bars=False)
        warm.join()
        for m in cfg.models:  # the rest here, in the config's order: failed workers, python/hf, resumed
            if m.name not in model_jobs:
                model_jobs[m.name] = model_step(m, {}, progress)
        jobs = [job for m in cfg.models for job in model_jobs[m.name]]  # measured in the config's order
        if cfg.farm.engine == "ray":
            from edgebench.farm import measure_step

            skipped = measure_step(jobs, devices, spec, store, run_id, done, log, progress, cfg.farm.address,
                                   cfg.bench.devices_file or None)
        else:
            skipped = _measure_step(jobs, devices, spec, store, run_id, done, log, progress)
        records = store.query(run_id=run_id)
        report_dir = write_report(records, out / "report", title=f"edgebench report: {cfg.name} ({run_id})")
        _log_recommendations(records, log)
        store.finish_run(run_id)
    return RunResult(run_id=run_id, resumed=resumed, report_dir=report_dir, records=records, skipped=skipped,
                     wall_s=time.perf_counter() - t_start, train_metrics=train_metrics)


