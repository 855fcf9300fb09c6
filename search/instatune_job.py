"""`edgebench run` for `job = "instatune"`: fine-tune MiniLM elastically, search each device, deploy the picks.

    fine-tune (or reuse the checkpoint this config made) -> per device: LINAS search (accuracy on the
    validation split, latency measured on the device) -> picks + the full model exported to ONNX,
    bundled with the test split's token ids, measured on the device -> records, report, search page.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from edgebench.search.instatune_search import (LatencyEvaluator, LinasConfig, accuracy_evaluator, arch_key,
                                               device_latency, linas, macs_of, pick_front)
from edgebench.train.instatune import InstaTuneConfig
from edgebench.types import EdgebenchError, Format, Precision, Provenance, RunSpec

TOP_LEVEL = {"job", "name", "out", "store", "supernet", "train", "data", "space", "search", "deploy"}


@dataclass(frozen=True)
class TextDataConfig:
    dataset: str = field(default="rotten_tomatoes", metadata={"help": "rotten_tomatoes or csv",
                                                              "choices": ("rotten_tomatoes", "csv")})
    seed: int = field(default=0, metadata={"help": "seed of the train/val/test split"})
    csv: str = field(default="", metadata={"help": "CSV path (dataset = 'csv'), relative to the config"})
    text_column: str = field(default="text", metadata={"help": "the CSV's text column"})
    label_column: str = field(default="label", metadata={"help": "the CSV's label column"})
    val_frac: float = field(default=0.1, metadata={"help": "validation fraction", "gt": 0.0, "max": 0.5})
    test_frac: float = field(default=0.1, metadata={"help": "test fraction", "gt": 0.0, "max": 0.5})


@dataclass(frozen=True)
class SpaceConfig:
    layers: tuple = field(default=(2, 3, 4, 5, 6), metadata={"help": "elastic depth choices (first L layers kept)"})
    heads: tuple = field(default=(4, 6, 8, 10, 12), metadata={"help": "attention heads per layer"})
    ffn: tuple = field(default=(384, 768, 1152, 1536), metadata={"help": "FFN neurons per layer"})


@dataclass(frozen=True)
class DeployConfig:
    devices: tuple = field(default=("local",), metadata={"help": "device names (devices.toml or built in)"})
    devices_file: str = field(default="", metadata={"help": "devices.toml path (default ./devices.toml)"})
    picks: int = field(default=5, metadata={"help": "Pareto picks deployed per device (plus the full model)",
                                            "min": 1})
    latency_ms: float = field(default=0.0, metadata={"help": "latency budget for the picks (0: none)", "min": 0.0})
    runs: int = field(default=100, metadata={"help": "measured inferences per pick", "min": 1})
    warmup: int = field(default=10, metadata={"help": "warm-up inferences", "min": 0})
    threads: int = field(default=1, metadata={"help": "runtime intra-op threads", "min": 1})
    timeout_s: float = field(default=900.0, metadata={"help": "per-measurement timeout", "gt": 0.0})
    emulated_runs: int = field(default=2, metadata={"help": "measured inferences on an emulated CPU (its figure "
                                                           "is an exact instruction count)", "min": 1})
    emulated_eval: int = field(default=16, metadata={"help": "test sequences bundled for an emulated CPU "
                                                            "(seconds each under qemu)", "min": 0})
    eval_samples: int = field(default=0, metadata={"help": "test sequences bundled for other devices (0: all)",
                                                   "min": 0})


@dataclass(frozen=True)
class InstaTuneJob:
    name: str
    out: Path
    store: Path
    supernet: Path | None
    train: InstaTuneConfig
    data: TextDataConfig
    space: SpaceConfig
    search: LinasConfig
    deploy: DeployConfig


def parse(doc: dict, source: Path) -> InstaTuneJob:
    from edgebench.config import build_strict, check_keys

    check_keys(doc, TOP_LEVEL, "instatune config")
    base = Path(source).parent
    name = str(doc.get("name", Path(source).stem))
    data = build_strict(TextDataConfig, doc.get("data", {}), "data")
    if data.csv:
        data = replace(data, csv=str((base / data.csv) if not Path(data.csv).is_absolute() else data.csv))
    train = build_strict(InstaTuneConfig, doc.get("train", {}), "train")
    train.check()
    space = build_strict(SpaceConfig, doc.get("space", {}), "space")
    search = build_strict(LinasConfig, doc.get("search", {}), "search")
    deploy = build_strict(DeployConfig, doc.get("deploy", {}), "deploy")
    if not deploy.devices:
        raise EdgebenchError("deploy.devices: name at least one device")
    for key in ("layers", "heads", "ffn"):
        values = getattr(space, key)
        if not values or any(not isinstance(v, int) or v < 1 for v in values):
            raise EdgebenchError(f"space.{key}: expected a list of positive integers, got {list(values)}")
    supernet = doc.get("supernet")
    if supernet is not None and not isinstance(supernet, str):
        raise EdgebenchError(f"supernet: expected a checkpoint path, got {supernet!r}")
    out = Path(str(doc.get("out", f"out/{name}")))
    store = Path(str(doc.get("store", "out/edgebench.sqlite")))
    return InstaTuneJob(name, out, store, (base / supernet) if supernet else None, train, data, space, search,
                        deploy)


def _same_training(a: dict, b: dict) -> bool:
    """Same fine-tuning recipe; the thread count changes speed, not the recipe."""
    return {k: v for k, v in a.items() if k != "threads"} == {k: v for k, v in b.items() if k != "threads"}


def _supernet(job: InstaTuneJob, fresh: bool, progress: bool, log):
    """The checkpoint named by `supernet`, else the one this exact config made before, else train now."""
    from edgebench.train.instatune import instatune, load_supernet
    from edgebench.train.minilm import ElasticChoices

    if job.supernet is not None:
        return load_supernet(job.supernet), True
    path = job.out / "supernet.pt"
    data_cfg = asdict(job.data)
    if path.exists() and not fresh:
        sn = load_supernet(path)
        made_by = {**asdict(TextDataConfig()), **sn.config.get("data", {})}
        if _same_training(sn.config.get("train", {}), asdict(job.train)) and made_by == data_cfg:
            log(f"instatune: reusing {path} (made by this config; --fresh retrains)")
            return sn, True
    choices = ElasticChoices(tuple(job.space.layers), tuple(job.space.heads), tuple(job.space.ffn))
    return instatune(job.train, data_cfg, choices, out=path, progress=progress, log=log), False


def _search_page(out_dir: Path, title: str, devices: dict, log) -> Path | None:
    try:
        from edgebench.search.report import write_search_page
    except ImportError:
        log("instatune: search page renderer (edgebench.search.report) not available; search.json written")
        return None
    return write_search_page(out_dir, title, devices, "a latency predictor fitted on the latencies this device gave "
                                                      "for the subnets LINAS evaluated (ridge, GBM or MLP, the best "
                                                      "by held-out Kendall tau)")


def run(doc: dict, source: Path, fresh: bool = False, progress: bool = True, log=print):
    import torch

    from edgebench.deploy.bundle import make_bundle
    from edgebench.devices.registry import get_device
    from edgebench.pipeline import RunResult
    from edgebench.reports.record import Record
    from edgebench.reports.render import write_report
    from edgebench.reports.store import Store
    from edgebench.search.instatune_export import export_subnet
    from edgebench.search.instatune_space import InstaTuneSpace
    from edgebench.train.instatune import token_data

    t_start = time.perf_counter()
    job = parse(doc, source)
    # every device resolves before any work: an unknown name fails now, not after fine-tuning
    devices = [get_device(n, job.deploy.devices_file or None) for n in job.deploy.devices]
    job.out.mkdir(parents=True, exist_ok=True)
    sn, reused = _supernet(job, fresh, progress, log)
    space = InstaTuneSpace(sn.choices)
    seq = sn.max_length
    torch.set_num_threads(job.train.threads)
    refit = job.search.refit_head
    data = token_data(sn.config.get("data", asdict(job.data)), seq, max_train=refit, with_train=refit > 0)
    n_val = job.search.val_samples or len(data.val_y)
    val_x, val_y = data.val_x[:n_val], data.val_y[:n_val]
    acc_cache: dict = {}
    heads: dict = {}  # arch key -> refitted head, when search.refit_head > 0
    acc_eval = accuracy_evaluator(sn, val_x, val_y, data.train_x if refit else None,
                                  data.train_y if refit else None, heads)

    def acc_fn(archs):
        todo = [a for a in archs if arch_key(a) not in acc_cache]
        for a, v in zip(todo, acc_eval(todo) if todo else []):
            acc_cache[arch_key(a)] = float(v)
        return np.array([acc_cache[arch_key(a)] for a in archs])

    spec = RunSpec(runs=job.deploy.runs, warmup=job.deploy.warmup, threads=job.deploy.threads,
                   timeout_s=job.deploy.timeout_s)
    run_id = f"{job.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    budget = job.deploy.latency_ms or None
    check_ids = data.test_x[:32]  # export validation (atol vs PyTorch) of every measured subnet
    artifacts: dict = {}  # arch key -> fp32 ONNX artifact, shared by all devices
    records, pages, summary = [], {}, {"run_id": run_id, "supernet": str(sn.path), "supernet_reused": reused,
                                       "train_metrics": {k: v for k, v in sn.metrics.items() if k != "log"},
                                       "seq_len": seq, "devices": {}}
    full = sn.choices.largest()
    with Store(job.store) as store:
        store.begin_run(run_id, job.name, {"job": "instatune", **{k: v for k, v in doc.items() if k != "job"}})
        for device in devices:
            log(f"instatune: searching for {device.name}")
            lat_fn = LatencyEvaluator(sn, device, spec, job.out / "work", check_ids, job.deploy.emulated_runs, log,
                                      artifacts)
            result = linas(space, acc_fn, lat_fn, macs_of(space, sn, seq), job.search, log)
            picks = pick_front(result["front"], job.deploy.picks, budget or 0.0)
            if not picks:
                raise EdgebenchError(f"{device.name}: no subnet of the predicted front meets {budget} ms")
            emulated = device.kind == "emulated"
            n_eval = job.deploy.emulated_eval if emulated else (job.deploy.eval_samples or len(data.test_y))
            dev_spec = lat_fn.spec
            measured = []
            full_acc, full_lat = result["predict"](full)
            targets = [("full", {"arch": full, "accuracy": full_acc, "latency_ms": full_lat})] + \
                      [(f"pick{i}", p) for i, p in enumerate(picks)]
            for role, p in targets:
                acc_fn([p["arch"]])  # evaluated (and its head refitted, if asked) before it is deployed
                head = heads.get(arch_key(p["arch"]))
                art = lat_fn.artifact(p["arch"]) if head is None else export_subnet(
                    sn, p["arch"], Format.ONNX, Precision.FP32, job.out / "work" / "refit", check_ids,
                    "refit-" + hashlib.sha1(arch_key(p["arch"]).encode()).hexdigest()[:10], head=head)
                pred_acc, pred_lat = p["accuracy"], p["latency_ms"]
                extra = dict(art.extra, role=role, arch=p["arch"], device_budget_ms=budget,
                             predicted_provenance=Provenance.PREDICTED.value,
                             predicted_accuracy=pred_acc, predicted_latency_ms=pred_lat,
                             val_accuracy_supernet=acc_fn([p["arch"]])[0])
                art_d = replace(art, name=f"{job.name}-{role}", extra=extra)
                bundle = make_bundle(art_d, job.out / "bundles" / device.name / role,
                                     data.test_x[:n_eval] if n_eval else None, data.test_y[:n_eval] if n_eval else None,
                                     preprocessing=f"MiniLM WordPiece ids, {seq} tokens, [PAD]=0; test split, "
                                                   f"first {n_eval}")
                log(f"instatune: measuring {role} {p['arch']} on {device.name}")
                m = device.run(bundle, dev_spec)
                rec = Record.from_parts(run_id, art_d, m, device.kind)
                store.append(rec, f"{art_d.name}@{device.name}")
                records.append(rec)
                if m.ok:
                    lat, prov = device_latency(m, device)
                    err = (pred_lat - lat) / lat * 100
                    measured.append({"name": role, "arch": p["arch"], "accuracy": m.accuracy, "n_eval": m.n_eval,
                                     "latency_ms": lat, "predicted_latency_ms": pred_lat, "predicted_accuracy": pred_acc,
                                     "error_pct": err, "budget_ms": budget, "provenance": prov})
            pages[device.name] = {"predicted": [{"arch": q["arch"], "accuracy": q["accuracy"],
                                                 "latency_ms": q["latency_ms"]} for q in result["front"]],
                                  "measured": measured}
            summary["devices"][device.name] = {"rounds": result["rounds"], "evaluated": result["evaluated"],
                                               "search_s": result["search_s"], "evaluations": result["evaluations"],
                                               "measured": measured, "spec": asdict(dev_spec)}
        store.finish_run(run_id)
    report_dir = write_report(records, job.out / "report", title=f"edgebench InstaTune: {job.name} ({run_id})")
    _search_page(report_dir, f"InstaTune search: {job.name}", pages, log)
    summary["wall_s"] = time.perf_counter() - t_start  # this run; fine-tuning counts only when it ran now
    summary["fine_tuned_in_this_run"] = not reused
    (report_dir / "search.json").write_text(json.dumps(summary, indent=1, default=str))
    return RunResult(run_id=run_id, resumed=False, report_dir=report_dir, records=records, skipped=0,
                     wall_s=summary["wall_s"], train_metrics=summary["train_metrics"])
