"""From guest instructions counted under emulation to the latency a real board would show, with its error bar.

The cost model: the qemu plugin (devices/insn_count.c) splits every measured inference's instructions into
classes by their A64 encoding (NEON/FP arithmetic, SIMD loads/stores, general loads/stores, branches,
integer). A class group g costs `cpi[g]` cycles per instruction on the board, so

    latency_ms = sum_g cpi[g] * instructions[g] / (clock_ghz * 1e6)

One IPC for everything (the old estimate) is the special case of a single group. The constants are fitted
on a reference set of published board latencies (devices/data/pi4_reference.json: each figure with its
source), by non-negative least squares on the relative error, and kept in a small JSON file a user can read
and refit (`edgebench devices calibrate NAME --reference FILE | --from-device SSH_DEVICE`).

Which grouping a calibration uses is selected on its own rows by a rule fixed in advance (select_grouping:
lowest p90 error under leave-one-model-out among CANDIDATES), and the cross-validation repeats that selection
inside every training fold (nested_cross_validate), so no figure is predicted by a grouping or constants
chosen with it.

The error band an estimate carries is measured, never assumed: the 90th percentile of the absolute relative
error under that cross-validation (leave-one-source-out when the reference set has two or more sources, else
leave-one-model-out).

Code attribution (devices/attribution.py) says which library and which XNNPACK microkernel family executed the
counted instructions (the plugin's blocks=PATH); benchmarks/pi4_estimate.py --attribution compares cost
models over those families with the class groupings.
"""
from __future__ import annotations

import datetime
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from edgebench.types import EdgebenchError

DATA = Path(__file__).with_name("data")
REFERENCE_FILE = DATA / "pi4_reference.json"
COUNTS_FILE = DATA / "pi4_counts.json"
CLASSES = ("simd", "simd_ldst", "ldst", "branch", "int", "other")  # the plugin's classes, in its order
PER_INFERENCE = "1"  # a pseudo-class counting 1 per inference: its "cpi" is a fixed cost in cycles

# Class groupings the fit can use. "kernel" is what the NEON kernels execute; "scalar" is the interpreter,
# dispatch, bookkeeping and Python around them.
GROUPINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "one-ipc": {"all": CLASSES},
    "kernel-scalar": {"kernel": ("simd", "simd_ldst"), "scalar": ("ldst", "branch", "int", "other")},
    "five-class": {"simd": ("simd",), "simd_ldst": ("simd_ldst",), "ldst": ("ldst",), "branch": ("branch",),
                   "int": ("int", "other")},
    # plus a fixed cost per inference (cycles): thread hand-offs and dispatch that do not scale with work
    "kernel-scalar-fixed": {"kernel": ("simd", "simd_ldst"), "scalar": ("ldst", "branch", "int", "other"),
                            "per_inference": (PER_INFERENCE,)},
}
# The groupings AUTO selects among. kernel-scalar-fixed is left out on purpose (it stays available by name): its
# fixed cost per inference is fitted on models of 4.7 ms and more, and would be added whole to a user's 0.1 ms
# model; a cost proportional to counted instructions scales to any model size.
CANDIDATES = ("one-ipc", "kernel-scalar", "five-class")
AUTO = "auto"  # the grouping is selected on the calibration's own rows (select_grouping), never by hand
DEFAULT_GROUPING = AUTO


# ------------------------------------------------------------------ reference set and counts
def load_json(path: Path, what: str) -> dict:
    path = Path(path)
    if not path.exists():
        raise EdgebenchError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise EdgebenchError(f"{what} {path} is not valid JSON: {exc}") from None


def load_reference(path: str | Path | None = None) -> dict:
    """The reference set: {"sources": {id: citation}, "entries": [...]}; every entry names its source."""
    doc = load_json(Path(path) if path else REFERENCE_FILE, "reference file")
    sources, entries = doc.get("sources", {}), doc.get("entries", [])
    if not entries:
        raise EdgebenchError(f"reference file {path or REFERENCE_FILE} has no entries")
    for i, e in enumerate(entries):
        missing = [k for k in ("key", "source", "arch", "input_shape", "latency_ms") if k not in e]
        if missing:
            raise EdgebenchError(f"reference entry {i} ({e.get('key', '?')}) lacks {', '.join(missing)}")
        if e["source"] not in sources:
            raise EdgebenchError(f"reference entry {e['key']}: source '{e['source']}' is not cited under 'sources'")
        if not (isinstance(e["latency_ms"], (int, float)) and e["latency_ms"] > 0):
            raise EdgebenchError(f"reference entry {e['key']}: latency_ms must be a positive number")
    return doc


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


FORMATS = {"tflite": "ai_edge_litert", "onnx": "onnxruntime"}  # export format -> the runtime that runs it


def entry_signature(entry: dict, cpu: str = "cortex-a72", fmt: str = "tflite") -> str:
    """What decides an entry's instruction count: the architecture, its arguments, the input shape, the
    emulated CPU (the runtime picks its kernels by the CPU's features) and the export format (hence the
    runtime). A TFLite signature keeps its original four fields, so counts written before stay valid."""
    sig = [entry["arch"], entry.get("arch_kwargs", {}), entry["input_shape"], cpu]
    return json.dumps(sig if fmt == "tflite" else sig + [fmt], sort_keys=True)


def load_counts(path: str | Path | None = None) -> dict[str, dict]:
    """Counted instructions per entry signature (see count_entry); empty when the file does not exist."""
    p = Path(path) if path else COUNTS_FILE
    if not p.exists():
        return {}
    out = {}
    for c in load_json(p, "counts file").get("counts", []):
        sig = json.loads(c["signature"])
        if len(sig) == 3:  # written before the CPU was part of the signature
            sig.append(c.get("emulated_cpu") or "cortex-a72")
        c["signature"] = json.dumps(sig, sort_keys=True)
        out[c["signature"]] = c
    return out


def save_counts(counts: dict[str, dict], path: str | Path) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    doc = {"about": "Guest instructions of one measured inference (batch 1, one thread, warm-up excluded) of each "
                    "reference architecture, exported with edgebench's TFLite path and counted on the emulated "
                    "CPU named in each count (emulated_cpu) by the qemu plugin devices/insn_count.c, split by "
                    "instruction class.",
           "counts": sorted(counts.values(), key=lambda c: c["key"])}
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(p)


def export_entry(entry: dict, out_dir: Path, fmt: str = "tflite"):
    """The entry's architecture, rebuilt with random weights and exported through edgebench's `fmt` path."""
    import torch

    from edgebench.api import export
    from edgebench.devices.reference_models import build

    module = build(entry["arch"], **entry.get("arch_kwargs", {}))
    torch.manual_seed(1)
    x = torch.randn(*entry["input_shape"])
    name = entry["key"].replace("/", "_")
    with torch.no_grad():
        scale = float(module(x).abs().max())
    # random weights give outputs of arbitrary scale; validation here only guards the conversion
    return export(module, x, format=fmt, out=out_dir, name=name, atol=1e-2 * max(1.0, scale))


def count_entry(entry: dict, device, out_dir: Path, fmt: str = "tflite") -> dict:
    """Instructions of one inference of the entry's model, exported as `fmt`, on an emulated device (one
    thread)."""
    from edgebench.deploy.bundle import make_bundle
    from edgebench.types import RunSpec

    artifact = export_entry(entry, Path(out_dir), fmt)
    bundle = make_bundle(artifact, Path(out_dir) / f"bundle-{artifact.name}", None, None)
    # warm-up changes nothing here: XNNPACK packs weights when the interpreter is built, and the first
    # inference counted 6,617,751 instructions vs 6,617,723 after one warm-up (MobileNet v1 0.25 128)
    # onnxruntime does part of its set-up in the first Run(): one warm-up there
    m = device.run(bundle, RunSpec(runs=1, warmup=0 if fmt == "tflite" else 1, threads=1, eval=False))
    if not m.ok:
        raise EdgebenchError(f"{entry['key']}: emulated run failed: {m.error}")
    if "instructions_by_class" not in m.extra:
        raise EdgebenchError(f"{entry['key']}: no instruction classes ({m.extra.get('instructions_note', '?')})")
    return {
        "key": entry["key"], "signature": entry_signature(entry, device.config.cpu, fmt),
        "instructions": m.extra["instructions_per_inference"], "by_class": m.extra["instructions_by_class"],
        "runtime": m.runtime, "runtime_version": m.runtime_version,
        "emulated_cpu": m.extra.get("emulated_cpu"), "qemu": m.device_facts.get("qemu"),
        f"{fmt}_sha256": artifact.sha256, f"{fmt}_size_bytes": artifact.size_bytes,
        "counted_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


# ------------------------------------------------------------------ the cost model
def group_counts(by_class: dict, grouping: str) -> list[float]:
    groups = GROUPINGS[grouping] if grouping in GROUPINGS else ATTRIBUTION_GROUPINGS[grouping]
    return [float(sum(1 if c == PER_INFERENCE else by_class.get(c, 0) for c in members)) for members in groups.values()]


def fit_cpi(rows: list[tuple[dict, float]], grouping: str, clock_ghz: float) -> dict[str, float]:
    """Cycles per instruction per class group, non-negative, minimising the squared relative error over
    rows of (instructions by class, latency ms)."""
    import numpy as np
    from scipy.optimize import nnls

    if not rows:
        raise EdgebenchError("nothing to fit: no reference entry has instruction counts")
    x = np.array([group_counts(bc, grouping) for bc, _ in rows])
    y = np.array([ms for _, ms in rows]) * clock_ghz * 1e6  # cycles
    cpi, _ = nnls(x / y[:, None], np.ones(len(rows)))
    groups = GROUPINGS[grouping] if grouping in GROUPINGS else ATTRIBUTION_GROUPINGS[grouping]
    return dict(zip(groups, (float(v) for v in cpi)))


def predict_ms(by_class: dict, cpi: dict[str, float], grouping: str, clock_ghz: float) -> float:
    cycles = sum(c * n for c, n in zip(cpi.values(), group_counts(by_class, grouping)))
    return cycles / (clock_ghz * 1e6)


def error_stats(pred: list[float], published: list[float]) -> dict:
    """Median and 90th percentile of |pred - published| / published, and Spearman's rank correlation."""
    import numpy as np
    from scipy.stats import spearmanr

    err = [abs(p - y) / y for p, y in zip(pred, published)]
    rho = float(spearmanr(pred, published).statistic) if len(pred) > 2 else float("nan")
    return {"n": len(err), "median_abs_error": float(np.median(err)), "p90_abs_error": float(np.percentile(err, 90)),
            "spearman": rho}


def cross_validate(rows: list[dict], grouping: str, clock_ghz: float, by: str) -> tuple[list[float], dict]:
    """Out-of-fold predictions for rows ({"by_class", "latency_ms", "source", "key"}), holding out one
    `by` value ("source" or "key") at a time; fold sizes are left as they come."""
    preds = [float("nan")] * len(rows)
    for held in sorted({r[by] for r in rows}):
        train = [(r["by_class"], r["latency_ms"]) for r in rows if r[by] != held]
        if not train:
            raise EdgebenchError(f"cross-validation by {by} needs at least two distinct values")
        cpi = fit_cpi(train, grouping, clock_ghz)
        for i, r in enumerate(rows):
            if r[by] == held:
                preds[i] = predict_ms(r["by_class"], cpi, grouping, clock_ghz)
    return preds, error_stats(preds, [r["latency_ms"] for r in rows])


def n_constants(grouping: str) -> int:
    return len(GROUPINGS[grouping] if grouping in GROUPINGS else ATTRIBUTION_GROUPINGS[grouping])


def select_grouping(rows: list[dict], candidates: tuple[str, ...], clock_ghz: float) -> tuple[str, dict]:
    """The grouping a calibration uses, chosen on its own rows only: the lowest p90 of |error| under
    leave-one-model-out among `candidates` (ties: the lower median, then the fewer constants). A grouping with
    as many constants as rows minus one is never a candidate: its held-out errors measure nothing. With
    too few rows for any comparison, the candidate with the fewest constants is taken.
    The rule is fixed before any evaluation; nested_cross_validate applies it inside every training fold."""
    scored = {}
    for g in candidates:
        if n_constants(g) <= len(rows) - 2:
            s = cross_validate(rows, g, clock_ghz, "key")[1]
            scored[g] = (round(s["p90_abs_error"], 6), round(s["median_abs_error"], 6), n_constants(g))
    if not scored:  # too few rows to compare groupings: the one with the fewest constants, chosen a priori
        if not rows:
            raise EdgebenchError("no rows to select a grouping on")
        return min(candidates, key=n_constants), {}
    best = min(scored, key=scored.get)
    return best, {g: {"p90_abs_error": v[0], "median_abs_error": v[1]} for g, v in scored.items()}


def nested_cross_validate(rows: list[dict], candidates: tuple[str, ...], clock_ghz: float,
                          by: str) -> tuple[list[float], dict, dict]:
    """Out-of-fold predictions where the grouping too is chosen without the held-out rows: for every held-out
    `by` value, select_grouping runs on the training rows alone, and its fit predicts the held-out rows.
    Returns (predictions, error_stats, {held-out value: chosen grouping})."""
    preds = [float("nan")] * len(rows)
    chosen = {}
    for held in sorted({r[by] for r in rows}):
        train = [r for r in rows if r[by] != held]
        g, _ = select_grouping(train, candidates, clock_ghz)
        chosen[held] = g
        cpi = fit_cpi([(r["by_class"], r["latency_ms"]) for r in train], g, clock_ghz)
        for i, r in enumerate(rows):
            if r[by] == held:
                preds[i] = predict_ms(r["by_class"], cpi, g, clock_ghz)
    return preds, error_stats(preds, [r["latency_ms"] for r in rows]), chosen


def within_source_cross_validate(rows: list[dict], candidates: tuple[str, ...],
                                 clock_ghz: float) -> tuple[list[float], dict]:
    """Nested leave-one-model-out inside each source separately (a source of fewer than 4 models predicts
    nothing and is left out), pooled: the error of a calibration fitted on the same setup (board, runtime,
    threads, harness) as the figure it predicts, which is what `--from-device` gives a user. It says nothing
    about another setup; leave-one-source-out does."""
    preds, ys, kept = [], [], []
    for s in sorted({r["source"] for r in rows}):
        sub = [r for r in rows if r["source"] == s]
        if len(sub) < 4:
            continue
        p, _, _ = nested_cross_validate(sub, candidates, clock_ghz, "key")
        preds += p
        ys += [r["latency_ms"] for r in sub]
        kept += sub
    if len(kept) < 3:
        raise EdgebenchError("within-source cross-validation needs a source of at least 4 models")
    return preds, error_stats(preds, ys)


def same_architecture_pairs(rows: list[dict], reference: dict) -> list[dict]:
    """Entries of different sources that publish the same architecture at the same input size (only the
    classifier's width may differ). Their counts are nearly equal, so any estimate from counts gives them
    nearly equal latencies; when the published figures differ, the gap is the sources' own (runtime, threads,
    harness) and bounds what a cost model fitted on one source can do on the other. `floor` is the smallest
    possible larger relative error of the two for an estimate proportional to the counts."""
    spec = {e["key"]: (e["arch"], json.dumps({k: v for k, v in e.get("arch_kwargs", {}).items() if k != "classes"},
                                             sort_keys=True), json.dumps(e["input_shape"])) for e in reference["entries"]}
    out = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if a["source"] != b["source"] and spec[a["key"]] == spec[b["key"]]:
                # estimates in the counts' ratio c = n_a / n_b; published ratio p = y_a / y_b: the best common
                # scale leaves both off by (r - 1) / (r + 1), r = max(p / c, c / p)
                c, p = a["instructions"] / b["instructions"], a["latency_ms"] / b["latency_ms"]
                r = max(p / c, c / p)
                out.append({"a": a["key"], "b": b["key"], "published_a": a["latency_ms"], "published_b": b["latency_ms"],
                            "published_ratio": p, "count_ratio": c, "floor": (r - 1) / (r + 1)})
    return out


def joined_rows(reference: dict, counts: dict[str, dict], cpu: str = "cortex-a72",
                fmt: str = "tflite") -> tuple[list[dict], list[str]]:
    """Reference entries that have counts on this emulated CPU in this format, as fit rows; and the keys that
    have none."""
    rows, missing = [], []
    for e in reference["entries"]:
        c = counts.get(entry_signature(e, cpu, fmt))
        if c is None:
            missing.append(e["key"])
            continue
        rows.append({"key": e["key"], "source": e["source"], "latency_ms": float(e["latency_ms"]),
                     "by_class": c["by_class"], "instructions": c["instructions"], "threads": e.get("threads")})
    return rows, missing


# Groupings over microkernel families (rows' by_class then also holds the families' counts), compared with
# the class groupings by benchmarks/pi4_estimate.py --attribution; not a CANDIDATE of the shipped calibration.
ATTRIBUTION_GROUPINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "gemm-dwconv": {"gemm": ("gemm",), "dwconv": ("dwconv",)},
    "gemm-dwconv-elementwise-rest": {"gemm": ("gemm",), "dwconv": ("dwconv",),
                                     "elementwise": ("elementwise", "transpose"),
                                     "rest": ("xnnpack-other", "runtime", "outside")},
    "gemm-memory-rest": {"gemm": ("gemm",), "memory": ("dwconv", "elementwise", "transpose"),
                         "rest": ("xnnpack-other", "runtime", "outside")},
}


# ------------------------------------------------------------------ the calibration file
@dataclass(frozen=True)
class Calibration:
    device: str
    cpu: str
    clock_ghz: float
    runtime: str  # the runtime whose instructions were counted and whose latencies were fitted
    grouping: str
    cpi: dict
    band: float  # relative, e.g. 0.12 for ±12%
    band_basis: str
    cv: dict = field(default_factory=dict)
    fitted_on: dict = field(default_factory=dict)
    path: str = ""

    @property
    def label(self) -> str:
        return f"{Path(self.path).name or 'calibration'} ({self.fitted_on.get('summary', '')})".strip()

    def estimate_ms(self, by_class: dict) -> float:
        return predict_ms(by_class, self.cpi, self.grouping, self.clock_ghz)

    def to_dict(self) -> dict:
        return {"device": self.device, "cpu": self.cpu, "clock_ghz": self.clock_ghz, "runtime": self.runtime,
                "model": "latency_ms = sum over class groups of cpi[group] * instructions[group] / (clock_ghz * 1e6)",
                "grouping": self.grouping, "groups": {g: list(m) for g, m in GROUPINGS[self.grouping].items()},
                "cpi": self.cpi, "band": self.band, "band_basis": self.band_basis, "cv": self.cv,
                "fitted_on": self.fitted_on}


def default_calibration_path(device_name: str) -> Path:
    return DATA / f"{device_name}.calibration.json"


def load_calibration(path: str | Path) -> Calibration:
    d = load_json(Path(path), "calibration file")
    try:
        grouping = d["grouping"]
        if grouping not in GROUPINGS:
            raise EdgebenchError(f"calibration file {path}: unknown grouping '{grouping}' "
                                 f"(known: {', '.join(GROUPINGS)})")
        cpi = {g: float(d["cpi"][g]) for g in GROUPINGS[grouping]}
        return Calibration(device=d["device"], cpu=d["cpu"], clock_ghz=float(d["clock_ghz"]), runtime=d["runtime"],
                           grouping=grouping, cpi=cpi, band=float(d["band"]), band_basis=d["band_basis"],
                           cv=d.get("cv", {}), fitted_on=d.get("fitted_on", {}), path=str(path))
    except KeyError as exc:
        raise EdgebenchError(f"calibration file {path} lacks {exc}") from None


def calibrate(rows: list[dict], device: str, cpu: str, clock_ghz: float, runtime: str, fitted_on: dict,
              grouping: str = DEFAULT_GROUPING) -> Calibration:
    """Fit on every row; the band comes from cross-validation on the same rows (never from the fit itself).

    grouping AUTO selects the grouping on all rows by leave-one-model-out (select_grouping), and the errors
    (hence the band) come from nested cross-validation, which repeats that selection inside every training
    fold: the band then covers the choice of grouping too. A named grouping is fitted as it is."""
    if len(rows) < 3:
        raise EdgebenchError(f"calibrating needs at least 3 reference models with counts, got {len(rows)}")
    if grouping != AUTO and grouping not in GROUPINGS:
        raise EdgebenchError(f"unknown grouping '{grouping}' (known: {AUTO}, {', '.join(GROUPINGS)})")
    n_sources = len({r["source"] for r in rows})
    schemes = [("leave_one_model_out", "key")] + ([("leave_one_source_out", "source")] if n_sources >= 2 else [])
    cv = {}
    if grouping == AUTO:
        grouping, scores = select_grouping(rows, CANDIDATES, clock_ghz)
        for name, by in schemes:
            _, stats, picks = nested_cross_validate(rows, CANDIDATES, clock_ghz, by)
            cv[name] = dict(stats, selection="nested: grouping selected by leave-one-model-out inside each "
                                              "training fold", selected=sorted(set(picks.values())))
        if n_sources >= 2 and max(Counter(r["source"] for r in rows).values()) >= 4:
            cv["within_source_leave_one_model_out"] = dict(
                within_source_cross_validate(rows, CANDIDATES, clock_ghz)[1],
                selection="nested, inside each source separately, pooled: the error when calibrated on the "
                          "same setup (what --from-device gives); the band stays leave-one-source-out")
        selection = {"rule": "lowest p90 |error| under leave-one-model-out on all rows",
                     "candidates": list(CANDIDATES), "scores": scores}
    else:
        for name, by in schemes:
            cv[name] = cross_validate(rows, grouping, clock_ghz, by)[1]
        selection = {"rule": "named by the caller"}
    cpi = fit_cpi([(r["by_class"], r["latency_ms"]) for r in rows], grouping, clock_ghz)
    basis = schemes[-1][0]  # leave-one-source-out when there are two sources or more
    band = cv[basis]["p90_abs_error"]
    fitted_on = dict(fitted_on, n_models=len(rows), sources=sorted({r["source"] for r in rows}),
                     threads=sorted({str(r.get("threads")) for r in rows}), grouping_selection=selection,
                     fitted_at=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    fitted_on.setdefault("summary", f"{len(rows)} models, {n_sources} source(s)")
    return Calibration(device=device, cpu=cpu, clock_ghz=clock_ghz, runtime=runtime, grouping=grouping, cpi=cpi,
                       band=band, band_basis=f"p90 of |error| under {basis.replace('_', '-')} cross-validation "
                                             f"({cv[basis]['n']} models)", cv=cv, fitted_on=fitted_on)


def save_calibration(cal: Calibration, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(cal.to_dict(), indent=1) + "\n")
    return p

