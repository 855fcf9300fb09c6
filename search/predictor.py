"""A kernel-level latency predictor for one device, nn-Meter style, measured through the device adapters.

Build: the models to learn from (search/predictor_sources.py: the user's, given, and the ONNX artifacts in the
store that still exist; a generated zoo of CNNs, MLPs and small transformers; optionally OFA search-space
subnets; and kernels of the common operators at random configurations, search/prior.py) are split into the
kernels the runtime executes (search/kernels.py). Every distinct kernel is exported alone and timed on the
device, many per runner process (devices/batch.py, with the deployed session settings). Then, adaptively,
kernels around them: each dimension of each kernel scaled by 0.5 ... 2 (kernels.neighbours), so that a graph
near the ones learned from is interpolated. Whole models are timed too (and the store's records of this device
are taken as they are). The file keeps the raw measurements (and, on an emulated device, guest instructions),
so fitting is repeatable and an interrupted build resumes where it stopped. Every timing process also times an
empty model beside its kernels or whole model (`empty_ms`): a shared machine changes speed between processes, and
the fit scales every timing to the build's median speed first (predictor_fit.at_reference_speed).

Predict: each kernel of a graph gets its measured p50 when that exact kernel was timed ("measured" in the
breakdown), else its type's (or convolution class's) regressor, else its kind's ("fallback"): see
search/predictor_fit.py. The model's latency is the sum of its kernels plus what a whole model costs beyond its
kernels timed alone, linear in a few counts (kernel calls, runtime nodes, weights beyond cache, ...;
KernelPredictor._fit_overhead) fitted on the whole models. On an emulated device
the same is done for guest instruction counts, those run outside the Python interpreter, plus the deployed
runner's interpreter share (measured by the build). Figures are labelled `predicted`.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgebench.search.kernels import Kernel, kernel_file, neighbours, run_shapes, split_kernels, with_fixed_inputs
from edgebench.search.predictor_fit import OUTSIDE, KernelPredictor, speed_mix, stale_transpose
from edgebench.search.predictor_probes import empty_model, runner_harness, split_model
from edgebench.search.predictor_terms import llc_mb, model_terms, node_arch, weight_mb
from edgebench.types import EdgebenchError, first_line

PREDICTOR_FORMAT = "edgebench-kernel-predictor-5"
DEFAULT_DIR = Path("out/predictors")


@dataclass(frozen=True)
class BuildConfig:
    budget_minutes: float = 10.0  # stop measuring new kernels after this long (the fit uses what exists)
    runs: int = 60  # measured inferences per kernel, over `rounds` interleaved rounds
    rounds: int = 3
    warmup: int = 3
    threads: int = 1
    chunk: int = 64  # kernels per runner process; the file is saved after each
    whole_runs: int = 200  # measured inferences per whole model (the fit rests on few of them), over 5 rounds;
    # on an emulated device `runs`, in one round: its guest instruction counts are exact
    zoo: int = 24  # generated models to learn from (besides the store's artifacts)
    prior: int = 520  # kernels at random configurations of the common operators (search/prior.py)
    seed: int = 0


def predictor_path(device_name: str, folder: Path | None = None) -> Path:
    return Path(folder or DEFAULT_DIR) / f"{device_name}.json"


def model_feed(path: Path, shapes: dict | None = None, inputs: dict | None = None) -> dict:
    """The arrays a model is split and timed with (free dimensions given as for `bench`)."""
    from edgebench.api import describe
    from edgebench.deploy.inputs import resolve_feeds

    artifact = describe(path)
    _, arrays = resolve_feeds(artifact.inputs, shapes, inputs)
    return arrays


def model_kernels(path: Path, feed: dict) -> tuple[onnx.ModelProto, dict, list[Kernel]]:
    model = onnx.load(str(path))
    shapes = run_shapes(model, feed)
    return model, shapes, split_kernels(model, shapes=shapes)


# ---------------------------------------------------------------- building
def _load(path: Path) -> dict:
    if path.exists():
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise EdgebenchError(f"cannot read predictor file {path}: {first_line(exc)}") from None
        if not isinstance(doc, dict) or doc.get("format") != PREDICTOR_FORMAT:
            raise EdgebenchError(f"{path} is not an edgebench predictor file of this version "
                                 f"({doc.get('format') if isinstance(doc, dict) else type(doc).__name__}): "
                                 f"build it again into another --out")
        return doc
    return {"format": PREDICTOR_FORMAT, "kernels": {}, "models": {}, "meta": {}}


def _save(doc: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


SPEED_KEY = "_speed_reference"  # the empty model, timed in every timing process beside what it measures


def _measure(device, items: list[tuple[str, Path]], cfg: BuildConfig, workdir: Path, empty: Path | None = None) -> dict:
    """{key: {"p50_ms", "n", "instructions"[, "instructions_outside_interpreter"][, "empty_ms"]}}. `empty`: an
    empty model's file, timed in the same runner process and rounds as the items (not on an emulated device,
    whose counts are exact): its p50 is each item's `empty_ms`, the machine's speed while they were timed
    (predictor_fit.at_reference_speed)."""
    from edgebench.devices.batch import BatchConfig, measure_models

    speed = empty is not None and device.kind != "emulated"
    res = measure_models(device, [*items, *([(SPEED_KEY, empty)] if speed else [])],
                         BatchConfig(runs=cfg.runs, rounds=cfg.rounds, warmup=cfg.warmup, threads=cfg.threads),
                         workdir)

    def p50(key):
        return float(np.median(np.asarray(res[key]["samples_ns"], dtype=np.float64) / 1e6))

    out = {}
    for key, _ in items:
        out[key] = {"p50_ms": p50(key), "n": len(res[key]["samples_ns"]), "instructions": res[key]["instructions"]}
        if res[key].get("instructions_outside_interpreter") is not None:
            out[key]["instructions_outside_interpreter"] = res[key]["instructions_outside_interpreter"]
        if speed:
            out[key]["empty_ms"] = p50(SPEED_KEY)
    return out


@dataclass
class Source:
    """A model to learn from: its kernels are measured; `around`: kernels around them too (a user's model or a
    search space's); `record`: a whole-model measurement already in the store (p50_ms, instructions)."""
    name: str
    path: Path
    feed: dict
    around: bool = False
    record: dict | None = None


def _timed_whole(path: Path, model: onnx.ModelProto, feed: dict, folder: Path) -> tuple[Path, onnx.ModelProto]:
    """The file to time a whole model with. The runner feeds free dimensions as 1: a model fed other shapes
    is timed as a copy with those shapes fixed (its shape arithmetic then folds, as it would for the user)."""
    free = {}
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in dims) and inp.name in feed:
            if any(not d.HasField("dim_value") and v != 1 for d, v in zip(dims, np.shape(feed[inp.name]))):
                free[inp.name] = np.shape(feed[inp.name])
    if not free:
        return path, model
    fixed = with_fixed_inputs(model, {k: np.shape(v) for k, v in feed.items()})
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{path.stem}-fixed.onnx"
    onnx.save(fixed, str(out))
    return out, fixed


def _recount_others(doc: dict, done: set, nodes: dict, arch: str | None, log) -> None:
    """Kernel lists and node counts made again (for the device's optimizer): the whole models of the file that
    this build was not given (from their files, fed as `model_feed` does; one whose file is gone leaves the fit,
    said so), and every kernel counted on the way."""
    for name in [n for n in doc["models"] if n not in done]:
        m, path = doc["models"][name], Path(doc["models"][name].get("path", ""))
        try:
            model, shapes, kernels = model_kernels(path, model_feed(path))
            m.update(kernels=[k.key for k in kernels],
                     **model_terms(model, kernels, shapes, nodes, llc_mb(doc["meta"]["facts"]), arch))
        except Exception as exc:  # noqa: BLE001 - gone or unreadable: its terms cannot be made again
            del doc["models"][name]
            log(f"  {name}: left out of the overhead fit; its nodes cannot be counted for {arch} "
                f"({type(exc).__name__}: {first_line(exc, 80)})")
    for key, v in doc["kernels"].items():
        if nodes.get(key) is not None:
            v["runtime_nodes"] = nodes[key]


def build_predictor(device, out: Path, models: list, cfg: BuildConfig = BuildConfig(), progress: bool = True,
                    log=print) -> dict:
    """Measure kernels (and whole models) of `models` (Source, or (name, path, feed)) on `device`; resumable.

    Order, so that a short budget still gives a usable predictor: the exact kernels of every model, then the
    whole models (for the overhead fit), then `cfg.prior` kernels of the common operators at random
    configurations (search/prior.py), then kernels sampled around the `around` models' configurations (each
    dimension scaled by 0.5 ... 2: search/kernels.py neighbours)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    models = [m if isinstance(m, Source) else Source(*m) for m in models]
    doc = _load(out)
    prior_cv, per_output = doc["meta"].get("cv"), doc["meta"].get("per_output")
    facts = doc["meta"].get("facts") or device.facts()
    # node counts are for the device's optimizer (runtime_nodes); a file counted for another (this host's, before
    # 2026-11-29) has its whole models' terms and its kernels' counts made again. Transposes keyed by size only
    # (stale_transpose) are measured again under their new keys, and the whole models' kernel lists made anew.
    stale = [k for k, v in doc["kernels"].items() if stale_transpose(v)]
    for k in stale:
        del doc["kernels"][k]
    if stale:
        log(f"  {len(stale)} Transpose kernels measured before their key said which runs they copy: measured again")
    recount = bool(doc["models"]) and (node_arch(doc["meta"]) != facts.get("machine") or bool(stale))
    doc["meta"] = {"device": device.name, "device_kind": device.kind, "threads": cfg.threads,
                   "runner": "search/lut_runner.py (deployed session settings)", "provenance": "predicted",
                   "facts": facts, "node_counts": facts.get("machine"),
                   "sampled_around": sorted(set(doc["meta"].get("sampled_around", []))
                                            | {m.name for m in models if m.around})}
    arch = facts.get("machine")
    exact, around, whole = {}, {}, []
    # kernel key -> nodes run alone
    nodes = {} if recount else {k: v.get("runtime_nodes") for k, v in doc["kernels"].items()}
    recounted = set()
    deadline = time.monotonic() + cfg.budget_minutes * 60
    with tempfile.TemporaryDirectory(prefix="edgebench-predictor-") as tmp:
        tmp = Path(tmp)
        for src in models:
            try:
                model, shapes, kernels = model_kernels(src.path, src.feed)
            except Exception as exc:  # a model that cannot run here is skipped, and said so
                log(f"  skipped {src.name}: {type(exc).__name__}: {first_line(exc, 120)}")
                continue
            for k in kernels:
                if k.key not in doc["kernels"]:
                    exact.setdefault(k.key, (k, model, shapes))
            if src.around:
                for k in {k.key: k for k in kernels}.values():
                    for nk, nm, nsh in neighbours(k, model, shapes):
                        if nk.key not in doc["kernels"]:
                            around.setdefault(nk.key, (nk, nm, nsh))
            if src.name in doc["models"] and recount:
                timed = _timed_whole(src.path, model, src.feed, tmp / "whole")[1]
                doc["models"][src.name].update(kernels=[k.key for k in kernels],
                                               **model_terms(timed, kernels, shapes, nodes, llc_mb(facts), arch))
                recounted.add(src.name)
            if src.name not in doc["models"]:
                timed_path, timed = _timed_whole(src.path, model, src.feed, tmp / "whole")
                entry = {"path": str(src.path), "kernels": [k.key for k in kernels], "weight_mb": weight_mb(model),
                         **model_terms(timed, kernels, shapes, nodes, llc_mb(facts), arch)}
                if src.record:  # already measured on this device: the store's figures, not timed again
                    doc["models"][src.name] = {**entry, **src.record, "source": "store"}
                else:
                    whole.append((src.name, timed_path, entry))
        if recount:
            _recount_others(doc, recounted, nodes, arch, log)
        around = {k: v for k, v in around.items() if k not in exact}
        from edgebench.search.prior import prior_kernels

        prior = {k.key: (k, m, sh) for k, m, sh in prior_kernels(cfg.prior, cfg.seed)
                 if k.key not in doc["kernels"] and k.key not in exact and k.key not in around} if cfg.prior else {}
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      disable=not progress) as bar:
            task = bar.add_task(f"kernels on {device.name}",
                                total=len(exact) + len(whole) + len(prior) + len(around) + 1)
            empty = tmp / "empty.onnx"
            onnx.save(empty_model(), str(empty))
            if "_empty" not in doc["kernels"]:
                got = _measure(device, [("_empty", tmp / "empty.onnx")], cfg, tmp / "e")["_empty"]
                doc["kernels"]["_empty"] = {"type": "_empty", "features": {}, **got}
            doc["meta"]["per_output"] = per_output or _per_output(device, cfg, tmp / "outputs")
            if device.kind == "emulated" and "runner_harness_instructions" not in doc["meta"]:
                doc["meta"]["runner_harness_instructions"] = runner_harness(device, tmp / "harness")
            bar.update(task, advance=1)
            left = 0
            for phase, pending in (("exact", exact), ("whole", None), ("prior", prior), ("around", around)):
                if phase == "whole":
                    # each in its own runner process, as `bench` times a model: sharing one with other models
                    # made small ones up to 10% slower (caches and predictors shared). Guest instruction counts
                    # do not care: under emulation they share processes.
                    step = cfg.chunk if device.kind == "emulated" else 1
                    # exact counts need no more runs than a kernel's (a 38 MB model under qemu takes seconds each)
                    whole_cfg = dataclasses.replace(cfg, runs=cfg.runs, rounds=1) if device.kind == "emulated" \
                        else dataclasses.replace(cfg, runs=cfg.whole_runs, rounds=5)
                    for start in range(0, len(whole), step):
                        if time.monotonic() > deadline + 60:  # the fit needs them: a minute of grace
                            left += len(whole) - start
                            break
                        part = whole[start:start + step]
                        got = _measure(device, [(n, p) for n, p, _ in part], whole_cfg, tmp / f"w{start}", empty)
                        for n, _, entry in part:
                            doc["models"][n] = {**entry, **got[n], "source": "measured"}
                        _save(doc, out)
                        bar.update(task, advance=len(part))
                    continue
                keys = list(pending)
                for start in range(0, len(keys), cfg.chunk):
                    if time.monotonic() > deadline:
                        left += len(keys) - start
                        break
                    chunk = keys[start:start + cfg.chunk]
                    files = [(key, kernel_file(pending[key][0], pending[key][1], tmp / "k", pending[key][2]))
                             for key in chunk]
                    got = _measure(device, files, cfg, tmp / f"{phase}{start}", empty)
                    for key in chunk:
                        k = pending[key][0]
                        doc["kernels"][key] = {"type": k.type, "features": k.features, "sampled": phase,
                                               "runtime_nodes": nodes.get(key), **got[key]}
                    _save(doc, out)  # resumable from here
                    bar.update(task, advance=len(chunk))
    if left:
        log(f"  budget of {cfg.budget_minutes:g} min reached: {left} kernels or models left unmeasured "
            f"(run again to continue)")
    from edgebench.search.predictor_cv import band_text, cross_validate

    target = "instructions" if device.kind == "emulated" else "p50_ms"
    measured = (len(doc["kernels"]), len(doc["models"]))
    old = prior_cv if prior_cv and prior_cv.get("measured") == list(measured) and not recount else None
    cv = old[target] if old and target in old else cross_validate(doc, target)  # nothing new: the same band
    doc["meta"]["cv"] = {target: cv, "measured": list(measured)}
    log(f"  {'instructions' if target == 'instructions' else 'latency'} of an unseen model: {band_text(cv)}")
    mixed = speed_mix(doc)
    if mixed:
        log(f"edgebench: warning: {mixed}")
    _save(doc, out)
    return doc


def _per_output(device, cfg: BuildConfig, folder: Path) -> dict:
    """What one more output handed back costs a kernel timed alone ({target: value}, never below 0): the same
    Split with both outputs returned against one, in one runner process. A whole model returns none of its
    kernels' outputs, so a kernel alone with several (the CuBa L2MU's 500 Splits in two) counts this once per
    extra output too many: 2,546-2,561 guest instructions outside the interpreter on pi4-emulated. Left out of the
    fit, the unseen CuBa L2MU came out 4.9-5.9% high on 21 held-out sets, no training model having a Split."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for n in (1, 2):
        onnx.save(split_model(n), str(folder / f"split{n}.onnx"))
        files.append((f"split{n}", folder / f"split{n}.onnx"))
    got = _measure(device, files, cfg, folder / "w")
    one, two = got["split1"], got["split2"]
    return {t: max(float(two[t]) - float(one[t]), 0.0) for t in ("p50_ms", "instructions", OUTSIDE)
            if one.get(t) is not None and two.get(t) is not None}


def load_predictor(path: Path, target: str = "p50_ms") -> KernelPredictor:
    path = Path(path)
    if not path.exists():
        raise EdgebenchError(f"no predictor at {path}: build one with `edgebench predictor build --device NAME`")
    return KernelPredictor(_load(path), target)


def predict_file(predictor_file: Path, model_path: Path, shapes=None, inputs=None) -> dict:
    """Predicted latency (and instructions, for an emulated device's predictor) of any ONNX graph."""
    pred = load_predictor(predictor_file)
    feed = model_feed(model_path, shapes, inputs)
    model, shapes, kernels = model_kernels(model_path, feed)
    out = {"model": str(model_path), "device": pred.meta.get("device"), "provenance": "predicted",
           "predictor": str(predictor_file)}
    terms = model_terms(model, kernels, shapes, pred.node_cache(), llc_mb(pred.meta.get("facts")),
                        node_arch(pred.meta))
    lat = pred.predict_model(kernels, terms)
    # under emulation the timed figure is emulated wall time, never a device latency: it keeps its name
    name = "predicted_emulated_wall_ms" if pred.meta.get("device_kind") == "emulated" else "predicted_latency_ms"
    out.update({name: lat["value"], "kernels": lat["kernels"], "breakdown": lat["breakdown"], "fit": lat["fit"]})
    ref = pred.doc["meta"].get("reference_empty_ms")
    if ref:  # predictor_fit.at_reference_speed: what "this machine's speed" means for the figure
        out["machine_speed"] = {"reference_empty_ms": ref, "text": (
            f"at the build's median speed of this machine (an empty model ran in {1000 * ref:.2f} us); a shared "
            "machine that runs slower or faster now moves a measurement by as much")}
    if any(v.get("instructions") for v in pred.doc["kernels"].values()):
        ins = load_predictor(predictor_file, "instructions").predict_model(kernels, terms)
        out["predicted_instructions"] = int(ins["value"])
    # the stated error: cross-validated on the build's whole models (search/predictor_cv.py)
    from edgebench.search.predictor_cv import band_text

    target = "instructions" if "predicted_instructions" in out else "p50_ms"
    cv = (pred.meta.get("cv") or {}).get(target)
    out["error_band"] = {**{k: v for k, v in (cv or {}).items() if k != "errors"},
                         "text": band_text(cv, computed=target in (pred.meta.get("cv") or {})),
                         "of": "predicted_instructions" if target == "instructions" else "predicted_latency_ms"}
    # operators the build never timed are estimated from others of their kind: outside what the band measured
    out["unmeasured_operators"] = sorted({b["type"] for b in out["breakdown"] if b["fallback"]})
    return out
