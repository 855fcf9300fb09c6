"""LINAS-style search over InstaTune subnets for one device, and deployment of the picks.

LINAS (lightweight iterative NAS, DyNAS-T): evaluate a sample of subnets for real (accuracy on the
validation split through the supernet's weight slices; latency by exporting the subnet and running it on
the device through the device adapters), fit light predictors, search them with NSGA-II, evaluate the new
front for real, refit, repeat. The last search's predicted front is what picks come from; every pick is
then measured on the device, and its record carries the predicted figures beside the measured ones.

Latency on an emulated device is the instruction-count estimate (provenance `estimated`), never the
emulator's wall time.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from edgebench.search.instatune_space import InstaTuneSpace
from edgebench.search.nsga import nsga2
from edgebench.search.predictors import KINDS, fit_predictor, quality, select_predictor
from edgebench.train.instatune import Supernet
from edgebench.train.minilm import accuracy
from edgebench.types import EdgebenchError, Format, Precision, Provenance, RunSpec


@dataclass(frozen=True)
class LinasConfig:
    n_initial: int = field(default=16, metadata={"help": "random subnets evaluated first (plus the largest and "
                                                         "smallest)", "min": 2})
    iterations: int = field(default=2, metadata={"help": "search -> evaluate the new front -> refit rounds", "min": 0})
    per_iteration: int = field(default=6, metadata={"help": "front subnets evaluated per round", "min": 1})
    pop_size: int = field(default=50, metadata={"help": "NSGA-II population", "min": 4})
    n_gen: int = field(default=100, metadata={"help": "NSGA-II generations (50 x 100 = 5,000 evaluations)", "min": 1})
    refit_head: int = field(default=0, metadata={"help": "refit each subnet's classification head on this many "
                                                      "training rows, for evaluation and deployment (0: keep the "
                                                      "supernet's head)", "min": 0})
    predictor: str = field(default="auto", metadata={"help": "auto (best held-out Kendall tau) or ridge, gbm, mlp",
                                                      "choices": ("auto",) + KINDS})
    val_samples: int = field(default=0, metadata={"help": "validation sequences per accuracy evaluation (0: all)",
                                                  "min": 0})
    seed: int = field(default=0, metadata={"help": "seed of sampling and NSGA-II"})


def arch_key(arch: dict) -> str:
    return json.dumps(arch, sort_keys=True)


def accuracy_evaluator(sn: Supernet, ids: np.ndarray, y: np.ndarray, refit_x: np.ndarray | None = None,
                       refit_y: np.ndarray | None = None, heads: dict | None = None) -> Callable[[list], np.ndarray]:
    """Validation accuracy of each arch, computed through the supernet's weight slices. With refit rows, every
    subnet but the largest is extracted and gets its own head (refit_head_); the head is kept in `heads`
    (arch key -> (weight, bias)) so the deployed file is the subnet that was evaluated."""
    from edgebench.train.minilm import extract_subnet, refit_head_

    largest = arch_key(sn.choices.largest())

    def one(arch: dict) -> float:
        if refit_x is None or arch_key(arch) == largest:
            return accuracy(sn.model, ids, y, arch)
        sub = extract_subnet(sn.model, arch)
        refit_head_(sub, refit_x, refit_y)
        if heads is not None:
            heads[arch_key(arch)] = (sub.classifier.weight.detach().clone(), sub.classifier.bias.detach().clone())
        return accuracy(sub, ids, y)

    return lambda archs: np.array([one(a) for a in archs])


def _spec_for(device, spec: RunSpec, emulated_runs: int) -> RunSpec:
    if device.provenance == Provenance.EMULATED and device.kind == "emulated":
        return replace(spec, runs=min(spec.runs, emulated_runs), warmup=min(spec.warmup, 1), min_time_s=0.0)
    return spec


def device_latency(m, device) -> tuple[float, str]:
    """(latency ms, provenance) of one measurement: p50 of raw samples; for an emulated CPU the
    instruction-count estimate (its wall time is not a device latency)."""
    from edgebench.reports.record import LatencyStats

    if not m.ok:
        raise EdgebenchError(f"measurement on {device.name} failed: {m.error}")
    if device.kind == "emulated":
        est = m.extra.get("estimated_latency_ms")
        if est is None:
            raise EdgebenchError(f"{device.name}: no instruction-count estimate came back")
        return float(est), Provenance.ESTIMATED.value
    return float(LatencyStats.from_samples_ns(m.samples_ns).p50), m.provenance.value


class LatencyEvaluator:
    """Latency of archs on one device: extract, export to ONNX fp32, bundle, run, read p50 (cached by arch)."""

    def __init__(self, sn: Supernet, device, spec: RunSpec, work_dir: Path, check_ids: np.ndarray,
                 emulated_runs: int = 2, log=print, artifacts: dict | None = None):
        self.sn, self.device, self.work_dir, self.check_ids, self.log = sn, device, Path(work_dir), check_ids, log
        self.spec = _spec_for(device, spec, emulated_runs)
        self.cache: dict = {}
        # arch key -> fp32 ONNX artifact; an export does not depend on the device, so callers share this
        self.artifacts = {} if artifacts is None else artifacts
        self.provenance = ""

    def artifact(self, arch: dict):
        from edgebench.search.instatune_export import export_subnet

        key = arch_key(arch)
        if key not in self.artifacts:
            i = len(self.artifacts)
            self.artifacts[key] = export_subnet(self.sn, arch, Format.ONNX, Precision.FP32,
                                                self.work_dir / "subnets", self.check_ids, name=f"subnet{i}")
        return self.artifacts[key]

    def __call__(self, archs: list) -> np.ndarray:
        from edgebench.deploy.bundle import make_bundle

        out = []
        for arch in archs:
            key = arch_key(arch)
            if key not in self.cache:
                art = self.artifact(arch)
                bundle = make_bundle(art, self.work_dir / "bundles" / self.device.name / art.name)
                try:
                    ms, self.provenance = device_latency(self.device.run(bundle, self.spec), self.device)
                finally:  # a copy of the model (up to 90 MB) per subnet and device: gone once measured
                    shutil.rmtree(bundle.path, ignore_errors=True)
                self.cache[key] = ms
            out.append(self.cache[key])
        return np.array(out)


def macs_of(space: InstaTuneSpace, sn: Supernet, seq_len: int):
    d = sn.model.dims
    return lambda genes: space.macs_from_genes(genes, d.hidden, d.head_dim, seq_len, d.n_classes)


def _fit(kind: str, x, y, seed: int, log_target: bool = False):
    if kind == "auto":
        return select_predictor(x, y, seed=seed, log_target=log_target)
    return fit_predictor(kind, x, y, seed, log_target), {}


def _spread(front: list, k: int, exclude: set) -> list:
    """k archs from the front, evenly spaced along predicted latency, none already evaluated."""
    cands = sorted((p for p in front if arch_key(p["arch"]) not in exclude), key=lambda p: p["latency_ms"])
    if len(cands) <= k:
        return [p["arch"] for p in cands]
    idx = np.unique(np.round(np.linspace(0, len(cands) - 1, k)).astype(int))
    return [cands[i]["arch"] for i in idx]


def linas(space: InstaTuneSpace, acc_fn, lat_fn, macs_fn, cfg: LinasConfig, log=print) -> dict:
    """The LINAS loop; returns the predicted front, every evaluated subnet, predictor quality, timing."""
    rng = np.random.default_rng(cfg.seed)
    evaluated: list = []
    seen: set = set()

    def evaluate(archs):
        archs = [a for a in archs if arch_key(a) not in seen]
        if not archs:
            return
        acc, lat = acc_fn(archs), lat_fn(archs)
        for a, ac, la in zip(archs, acc, lat):
            seen.add(arch_key(a))
            evaluated.append({"arch": a, "accuracy": float(ac), "latency_ms": float(la)})

    initial = [space.choices.largest(), space.choices.smallest()]
    while len(initial) < cfg.n_initial + 2:
        a = space.choices.sample(rng)
        if arch_key(a) not in {arch_key(b) for b in initial}:
            initial.append(a)
    log(f"linas: evaluating {len(initial)} initial subnets")
    evaluate(initial)
    rounds = []
    for it in range(cfg.iterations + 1):
        x = np.stack([space.features(e["arch"]) for e in evaluated])
        acc_p, acc_table = _fit(cfg.predictor, x, [e["accuracy"] for e in evaluated], cfg.seed)
        # latency in log space: positive predictions, relative errors across a 10x range of subnets
        lat_p, lat_table = _fit(cfg.predictor, x, [e["latency_ms"] for e in evaluated], cfg.seed, log_target=True)
        n_rows = [0]

        def objectives(genes):
            n_rows[0] += len(genes)
            f = space.features_from_genes(genes)
            return np.stack([-acc_p.predict(f), lat_p.predict(f), macs_fn(genes) / 1e6], axis=1)

        t0 = time.perf_counter()
        front = nsga2(space, objectives, pop_size=cfg.pop_size, n_gen=cfg.n_gen, seed=cfg.seed + it)
        search_s = time.perf_counter() - t0
        front = [{"arch": p["arch"], "accuracy": -p["objectives"][0], "latency_ms": p["objectives"][1],
                  "macs": int(round(p["objectives"][2] * 1e6))} for p in front]
        round_info = {"round": it, "n_evaluated": len(evaluated), "search_s": round(search_s, 3),
                      "evaluations": n_rows[0], "front_size": len(front),
                      "accuracy_predictor": {"kind": acc_p.kind, "holdout": acc_table},
                      "latency_predictor": {"kind": lat_p.kind, "holdout": lat_table}}
        if it < cfg.iterations:
            new = _spread(front, cfg.per_iteration, seen)
            # out-of-sample check: how well did this round's predictors do on the subnets it chose
            n_before = len(evaluated)
            evaluate(new)
            fresh = evaluated[n_before:]
            if len(fresh) >= 2:
                fx = np.stack([space.features(e["arch"]) for e in fresh])
                round_info["new_front_accuracy"] = quality([e["accuracy"] for e in fresh], acc_p.predict(fx))
                round_info["new_front_latency"] = quality([e["latency_ms"] for e in fresh], lat_p.predict(fx))
        rounds.append(round_info)
        log(f"linas round {it}: {len(evaluated)} evaluated, front {len(front)}, NSGA-II {n_rows[0]} evaluations "
            f"in {search_s:.2f} s (accuracy: {acc_p.kind}, latency: {lat_p.kind})")
    def predict_arch(arch: dict) -> tuple[float, float]:
        """(accuracy, latency_ms) of any arch by the last round's predictors."""
        f = space.features(arch)[None]
        return float(acc_p.predict(f)[0]), float(lat_p.predict(f)[0])

    return {"front": front, "evaluated": evaluated, "rounds": rounds, "predict": predict_arch,
            "search_s": rounds[-1]["search_s"], "evaluations": rounds[-1]["evaluations"]}


def pick_front(front: list, k: int, budget_ms: float = 0.0) -> list:
    """k picks spread along latency among the front's accuracy-latency non-dominated points (within budget)."""
    pts = sorted((p for p in front if not budget_ms or p["latency_ms"] <= budget_ms),
                 key=lambda p: (p["latency_ms"], -p["accuracy"]))
    nd, best = [], -np.inf
    for p in pts:  # 2-D non-dominated: faster ones first, keep only accuracy gains
        if p["accuracy"] > best:
            nd.append(p)
            best = p["accuracy"]
    pool = nd if len(nd) >= k else nd + [p for p in pts if p not in nd]
    pool = sorted(pool, key=lambda p: p["latency_ms"])
    if len(pool) <= k:
        return pool
    idx = np.unique(np.round(np.linspace(0, len(pool) - 1, k)).astype(int))
    return [pool[i] for i in idx]
