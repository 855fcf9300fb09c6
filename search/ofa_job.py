"""`edgebench run` for `job = "ofa"`: train the supernet, build a latency table per device, search several
budgets, deploy the picks, report predicted against measured.

    supernet (progressive shrinking; reused when this config already made it) -> accuracy predictor on
    the validation split -> per device: LUT (resumable) -> evolution search per budget + NSGA-II front
    -> every pick (and the largest and smallest subnet) of every device extracted, BN recalibrated and
    exported in worker processes (search/ofa_deploy.py) -> per device: each file bundled with the test split
    at its resolution, measured on the device -> records, report, search.html.

The library functions here (load_ofa, predictor_for, search_picks, export_subnet) are what
`edgebench ofa ...` calls too.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edgebench.search.accuracy import AccuracyPredictor, PredictorConfig
from edgebench.search.evolution import EvolutionConfig
from edgebench.search.ofa_config import (TOP_LEVEL, BenchConfig, DataConfig, ExportConfig, OFAJob,  # noqa: F401
                                         SearchConfig, parse)
from edgebench.types import Artifact, Format, Precision, Provenance, RunSpec

# ============================================================ library functions (the CLI uses them too)
def load_data(data_cfg: dict):
    from edgebench.train.fashion import load_fashion_splits

    return load_fashion_splits(**data_cfg)


def load_ofa(ckpt_path: Path):
    """(supernet, checkpoint info, space, predictor or None) from a supernet checkpoint."""
    from edgebench.search.ofa_space import OFASpace
    from edgebench.train.ofa_train import load_supernet

    net, info = load_supernet(ckpt_path)
    pred = info.get("accuracy_predictor")
    return net, info, OFASpace(net.spec), AccuracyPredictor.from_state(pred) if pred else None


def store_predictor(ckpt_path: Path, predictor: AccuracyPredictor) -> None:
    import torch

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    ckpt["accuracy_predictor"] = predictor.state()
    torch.save(ckpt, ckpt_path)


def predictor_for(ckpt_path: Path, cfg: PredictorConfig = PredictorConfig(), progress: bool = True, log=print):
    """The checkpoint's accuracy predictor; trained (validation split) and stored in it when missing."""
    from edgebench.search.accuracy import train_predictor

    net, info, space, pred = load_ofa(ckpt_path)
    if pred is None:
        ds, x_val, y_val = load_data(info.get("config", {}).get("data", {}))
        log(f"{ckpt_path}: no accuracy predictor yet; evaluating {cfg.subnets} subnets on the validation split")
        pred = train_predictor(net, space, ds.x_train, x_val, y_val, cfg, progress=progress, log=log)
        store_predictor(ckpt_path, pred)
    return net, info, space, pred


def search_picks(space, table, predictor: AccuracyPredictor, budgets_ms: list[float],
                 cfg: EvolutionConfig = EvolutionConfig()) -> list[dict]:
    """One evolution search per budget: [{arch, predicted_accuracy, predicted_latency_ms, budget_ms, ...}]."""
    from edgebench.search.evolution import evolution_search

    tables = table.gene_tables(space)
    lat = lambda g: table.predict_genes(space, g, tables)  # noqa: E731
    acc = lambda g: predictor.predict(space.features_batch(g))  # noqa: E731
    picks = []
    for b in budgets_ms:
        res = evolution_search(space, lat, acc, float(b), cfg)
        res.update(table.predict(res["arch"]))
        picks.append(res)
    return picks


def pareto_front(space, table, predictor: AccuracyPredictor, pop_size: int = 50, n_gen: int = 50,
                 seed: int = 0, seed_archs=()) -> list[dict]:
    """NSGA-II (search/nsga.py, pymoo) on (-predicted accuracy, predicted latency); its first population
    holds the largest and smallest subnets and seed_archs (e.g. the budget picks), so the front spans the
    whole latency range."""
    from edgebench.search.nsga import nsga2

    tables = table.gene_tables(space)

    def objectives(g):
        return np.stack([-predictor.predict(space.features_batch(g)), table.predict_genes(space, g, tables)], 1)

    archs = [table.spec.largest(), table.spec.smallest(), *seed_archs]
    front = nsga2(space, objectives, pop_size=pop_size, n_gen=n_gen, seed=seed,
                  seeds=np.stack([space.to_genes(a) for a in archs]))
    out = [{"arch": f["arch"], "genes": f["genes"], "predicted_accuracy": -float(f["objectives"][0]),
            "predicted_latency_ms": float(f["objectives"][1])} for f in front]
    return sorted(out, key=lambda p: p["predicted_latency_ms"])


def latency_range(space, table) -> tuple[float, float]:
    spec = table.spec
    return table.predict_ms(spec.smallest()), table.predict_ms(spec.largest())


def deployable_subnet(supernet, arch: dict, dataset, name: str, calib_images: int = 2000, eval_limit: int = 0,
                      int8_calib_images: int = 2000):
    """Extract `arch`, recalibrate its BN on the first calib_images training images: a Trained whose dataset
    is resized to the subnet's resolution (test split cut to eval_limit images, 0: all; the training split to
    the int8_calib_images that static INT8 calibrates on)."""
    from edgebench.train.ofa import extract_subnet, subnet_trained

    sub = extract_subnet(supernet, arch, dataset.x_train[:calib_images])
    trained = subnet_trained(sub, dataset, name, eval_limit=eval_limit, train_images=int8_calib_images)
    trained.config["bn_recalibration_images"] = int(min(calib_images, len(dataset.x_train)))
    return trained


def export_deployable(trained, fmt: Format, precision: Precision, out_dir: Path, opset: int = 17,
                      atol: float = 1e-4, fp32_onnx=None, fp32_tflite=None, validate_limit: int = 0,
                      int8_activations: str = "int8", min_agreement: float = 0.0):
    """Export a deployable_subnet, validated against PyTorch on the first validate_limit test images (0: all
    of its test split)."""
    from edgebench.pipeline import export_artifact

    checked = trained
    if validate_limit and validate_limit < len(trained.dataset.x_test):
        checked = dataclasses.replace(trained, dataset=dataclasses.replace(
            trained.dataset, x_test=trained.dataset.x_test[:validate_limit],
            y_test=trained.dataset.y_test[:validate_limit]))
    artifact = export_artifact(checked, fmt, precision, Path(out_dir), opset, atol, fp32_onnx, fp32_tflite,
                               min_agreement=min_agreement, int8_activations=int8_activations)
    artifact.extra.update({"arch": trained.config["arch"],
                           "bn_recalibration_images": trained.config.get("bn_recalibration_images"),
                           "validation_images": int(len(checked.dataset.x_test))})
    return artifact


def export_subnet(supernet, arch: dict, dataset, fmt: Format, precision: Precision, out_dir: Path, name: str,
                  calib_images: int = 2000, opset: int = 17, atol: float = 1e-4, eval_limit: int = 0,
                  validate_limit: int = 0, int8_activations: str = "int8", min_agreement: float = 0.0):
    """deployable_subnet + export_deployable: (Artifact, Trained with the eval_limit test images)."""
    trained = deployable_subnet(supernet, arch, dataset, name, calib_images, eval_limit)
    return export_deployable(trained, fmt, precision, out_dir, opset, atol, validate_limit=validate_limit,
                             int8_activations=int8_activations, min_agreement=min_agreement), trained


# ============================================================ the job
def _supernet(job: OFAJob, ds, x_val, y_val, fresh: bool, progress: bool, log):
    from edgebench.search.accuracy import train_predictor
    from edgebench.search.ofa_space import OFASpace
    from edgebench.train.ofa import OFASupernet, subnet_accuracy
    from edgebench.train.ofa_train import load_supernet, save_supernet, train_supernet

    path = job.out / "supernet.pt"
    if path.exists() and not fresh:
        net, info = load_supernet(path)
        if info.get("config", {}).get("identity") == job.train_identity():
            log(f"reusing the supernet {path} this config trained")
            _, _, _, pred = load_ofa(path)
            if pred is not None:
                return net, info.get("metrics", {}), pred, path
    net = OFASupernet(job.model)
    metrics = train_supernet(net, ds.x_train, ds.y_train, job.train, progress=progress, log=log)
    calib = ds.x_train[:job.train.bn_calib_images]
    for which, arch in (("largest", job.model.largest()), ("smallest", job.model.smallest())):
        metrics[f"{which}_val_accuracy"] = subnet_accuracy(net, arch, calib, x_val, y_val)
    log(f"supernet: validation accuracy (PyTorch, BN recalibrated) largest {metrics['largest_val_accuracy']:.2%}, "
        f"smallest {metrics['smallest_val_accuracy']:.2%}")
    config = {"identity": job.train_identity(), "data": asdict(job.data)}
    save_supernet(net, path, metrics, config)
    pred = train_predictor(net, OFASpace(job.model), ds.x_train, x_val, y_val, job.predictor, progress=progress,
                           log=log)
    metrics["accuracy_predictor"] = pred.report
    save_supernet(net, path, metrics, config)
    store_predictor(path, pred)
    return net, metrics, pred, path


def _run_id(store, job: OFAJob, fresh: bool) -> tuple[str, bool]:
    if not fresh:
        for run in reversed(store.runs()):
            if run["name"] == job.name and run["run_id"].endswith(job.digest) and run["status"] == "running":
                return run["run_id"], True
    return f"{job.name}-{time.strftime('%Y%m%dT%H%M%S')}-{job.digest}", False


def _budgets(job: OFAJob, device: str, lo: float, hi: float) -> list[float]:
    if device in job.search.budgets_ms:
        return [float(b) for b in job.search.budgets_ms[device]]
    return [lo + float(f) * (hi - lo) for f in job.search.budgets]


def _measured_point(rec, table) -> dict:
    """The figure a pick's prediction is compared with on this device: the p50 wall time, or on an
    emulated device the counted instructions at the table's ipc x clock (the conversion its prediction
    uses, so the error is the instruction-count error; the device's own, possibly calibrated, latency
    estimate is kept beside it as device_estimated_latency_ms)."""
    ex = rec.extra
    if table.by_instructions:
        ins = ex.get("instructions_per_inference")
        lat = table.instructions_to_ms(ins) if ins is not None else None
        prov = Provenance.ESTIMATED.value
    else:
        lat, prov = (rec.latency_ms or {}).get("p50"), rec.latency_provenance
    pred = ex.get("predicted_latency_ms")
    err = (lat - pred) / pred * 100 if lat is not None and pred else None
    return {"name": rec.name, "arch": ex.get("arch"), "accuracy": rec.accuracy, "n_eval": rec.n_eval,
            "latency_ms": lat,
            "predicted_latency_ms": pred, "error_pct": err, "budget_ms": ex.get("latency_budget_ms"),
            "provenance": prov, "predicted_instructions": ex.get("predicted_instructions"),
            "instructions": ex.get("instructions_per_inference"),
            "device_estimated_latency_ms": ex.get("estimated_latency_ms") if table.by_instructions else None}


class _Exports:
    """Every subnet extracted (BN recalibrated) once, and exported once per format and precision (named by the
    first deployment that asks), checked against PyTorch on the first [bench] validate_images test images and
    benchmarked on every device that deploys it with them (an emulated device: the first emulated_eval_images).
    INT8 files are quantized from the same subnet's fp32 file. A failed export is remembered and raised again for
    the next device."""

    def __init__(self, job: OFAJob, net, ds):
        self.job, self.net, self.ds = job, net, ds
        self.done: dict = {}
        self.subnets: dict = {}

    def _fp32(self, arch_key: str, fmt: str):
        a = self.done.get((arch_key, fmt, "fp32"))
        return a if isinstance(a, Artifact) else None

    def get(self, arch: dict, fmt: str, prec: str, name: str):
        from edgebench.export.errors import ExportError

        arch_key = json.dumps(arch, sort_keys=True)
        key = (arch_key, fmt, prec)
        if isinstance(self.done.get(key), ExportError):  # failed before (here or in an export worker)
            raise self.done[key]
        if arch_key not in self.subnets:
            self.subnets[arch_key] = deployable_subnet(self.net, arch, self.ds, name, self.job.train.bn_calib_images,
                                                       self.job.bench.eval_images, self.job.export.calib_images)
        trained = self.subnets[arch_key]
        if key not in self.done:
            ex = self.job.export
            try:
                self.done[key] = export_deployable(
                    trained, Format(fmt), Precision(prec), self.job.out / "artifacts", ex.opset, ex.atol,
                    self._fp32(arch_key, "onnx"), self._fp32(arch_key, "tflite"), self.job.bench.validate_images,
                    ex.int8_activations, ex.min_agreement)
            except ExportError as exc:
                self.done[key] = exc
        a = self.done[key]
        if isinstance(a, ExportError):
            raise a
        return a, trained


def run(doc: dict, source: Path, fresh: bool = False, progress: bool = True, log=print):
    import tempfile

    from edgebench.deploy.bundle import make_bundle
    from edgebench.devices.registry import get_device
    from edgebench.export.errors import ExportError
    from edgebench.pipeline import RunResult
    from edgebench.reports.record import Record
    from edgebench.reports.render import write_report
    from edgebench.reports.store import Store
    from edgebench.search.lut import build_lut
    from edgebench.search.ofa_deploy import _Benches, default_workers, export_ahead
    from edgebench.search.ofa_space import OFASpace
    from edgebench.search.report import write_search_page

    t0 = time.perf_counter()
    job = parse(doc, Path(source))
    devices = [get_device(n, job.bench.devices_file or None) for n in job.bench.devices]  # fail before work
    job.out.mkdir(parents=True, exist_ok=True)
    ds, x_val, y_val = load_data(asdict(job.data))
    net, metrics, predictor, ckpt = _supernet(job, ds, x_val, y_val, fresh, progress, log)
    space = OFASpace(job.model)
    evo = EvolutionConfig(population=job.search.population, generations=job.search.generations, seed=job.search.seed)
    spec = RunSpec(runs=job.bench.runs, warmup=job.bench.warmup, threads=job.bench.threads,
                   timeout_s=job.bench.timeout_s, tflite_kernels=job.bench.tflite_kernels)
    lut_cfg = dataclasses.replace(job.lut, threads=job.bench.threads)
    pages: dict = {}
    exports = _Exports(job, net, ds)
    with Store(job.store) as store, tempfile.TemporaryDirectory(prefix="edgebench-ofa-") as tmp:
        run_id, resumed = _run_id(store, job, fresh)
        store.begin_run(run_id, job.name, doc)
        done = store.done_keys(run_id)
        skipped = 0
        plans = []  # every table first (nothing else runs while a device is timed), then every export
        for device in devices:
            table = build_lut(job.model, device, job.out / f"lut-{device.name}.yaml", lut_cfg, progress=progress,
                              log=log, replace_other=True)  # the run's own table: a changed [model] remeasures
            lo, hi = latency_range(space, table)
            picks = search_picks(space, table, predictor, _budgets(job, device.name, lo, hi), evo)
            front = (pareto_front(space, table, predictor, job.search.pareto_population, job.search.pareto_generations,
                                  job.search.seed, [p["arch"] for p in picks]) if job.search.pareto else picks)
            deploy = [(f"ofa-{device.name}-b{i}", p["arch"], p["budget_ms"], p) for i, p in enumerate(picks)]
            if job.search.deploy_extremes:  # the same two subnets on every device: exported once
                deploy += [("ofa-largest", job.model.largest(), None, None),
                           ("ofa-smallest", job.model.smallest(), None, None)]
            plans.append((device, table, front, deploy))
        files = [(f, p) for f in job.export.formats for p in job.export.precisions]
        export_ahead(exports, [(arch, name, [w for w in files if f"{name}-{w[0]}-{w[1]}@{device.name}" not in done])
                               for device, _, _, deploy in plans for name, arch, _, _ in deploy],
                     ckpt, job.export.workers or default_workers(), log)
        for device, table, front, deploy in plans:
            benches = _Benches(store, run_id, device, table,
                               job.bench.emulated_parallel if device.kind == "emulated" else 1, log)
            for name, arch, budget, pick in deploy:
                log(f"{device.name}: {name} r={arch['r']} d={arch['d']}"
                    + (f", budget {budget:.4g} ms, predicted {pick['predicted_latency_ms']:.4g} ms, accuracy "
                       f"{pick['predicted_accuracy']:.2%}" if pick else ""))
                limit = job.bench.emulated_eval_images if device.kind == "emulated" else job.bench.eval_images
                dspec = (dataclasses.replace(spec, runs=min(spec.runs, job.bench.emulated_runs))
                         if device.kind == "emulated" else
                         dataclasses.replace(spec, eval_threads=job.bench.eval_threads))
                for fmt in job.export.formats:
                    for prec in job.export.precisions:
                        aname = f"{name}-{fmt}-{prec}"
                        key = f"{aname}@{device.name}"
                        if key in done:
                            skipped += 1
                            continue
                        try:
                            a, trained = exports.get(arch, fmt, prec, name)
                        except ExportError as exc:
                            log(f"  export of {aname} failed: {exc}")
                            store.append(Record(run_id=run_id, name=aname, model=name, dataset=ds.name,
                                                device=device.name, status="failed", error=f"export: {exc}",
                                                format=fmt, precision=prec, device_kind=device.kind), key)
                            continue
                        # one file, a record per device: this device's prediction and budget on a copy
                        a = dataclasses.replace(a, name=aname, model=name, extra=dict(a.extra))
                        if fmt == "onnx" and prec == "fp32":
                            # the table was measured on fp32 ONNX with these session settings: only this
                            # artifact carries the prediction
                            a.extra.update(table.predict(arch))
                        a.extra.update({"latency_budget_ms": budget, "lut": str(table.path), "supernet": str(ckpt)})
                        if pick:
                            a.extra.update({"predicted_accuracy": pick["predicted_accuracy"],
                                            "predicted_accuracy_provenance": Provenance.PREDICTED.value})
                        x_te, y_te = trained.dataset.x_test, trained.dataset.y_test
                        if limit:
                            x_te, y_te = x_te[:limit], y_te[:limit]
                        bundle = make_bundle(a, Path(tmp) / f"{aname}-{device.name}", x_te, y_te)
                        benches.submit(a, budget, key, device.run, bundle, dspec)
            benches.drain()
            pages[device.name] = {"table": table, "front": front}
        records = store.query(run_id=run_id)
        report_dir = write_report(records, job.out / "report", title=f"edgebench OFA: {job.name} ({run_id})")
        devices_page = {}
        for dname, info in pages.items():
            measured = [_measured_point(r, info["table"]) for r in records
                        if r.device == dname and r.status == "ok" and r.format == "onnx" and r.precision == "fp32"]
            devices_page[dname] = {
                "predicted": [{"arch": p["arch"], "accuracy": p["predicted_accuracy"],
                               "latency_ms": p["predicted_latency_ms"]} for p in info["front"]],
                "measured": measured}
        write_search_page(report_dir, f"OFA search: {job.name}", devices_page)
        (report_dir / "ofa_summary.json").write_text(json.dumps(
            {"supernet": str(ckpt), "train_metrics": metrics, "devices": devices_page}, indent=1, default=str))
        store.finish_run(run_id)
    return RunResult(run_id=run_id, resumed=resumed, report_dir=report_dir, records=records, skipped=skipped,
                     wall_s=time.perf_counter() - t0, train_metrics={"supernet": metrics})
