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
inside every training fold (nested_cross_validate; both in devices/calibration_cv.py), so no figure is predicted by a grouping or constants
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


# Exports of reference models are kept here between calibrations (a TFLite conversion costs 5-60 s a model):
# keyed by the architecture, the input, the format, the exporters' versions and the code that builds and
# exports them, so a change to any of these exports anew. EDGEBENCH_CALIBRATION_CACHE names another folder;
# set to "" it turns the cache off.
CACHE_ENV = "EDGEBENCH_CALIBRATION_CACHE"
EXPORTERS = ("torch", "onnx", "onnxscript", "litert-torch", "ai-edge-litert", "ai-edge-quantizer")


def export_cache_dir() -> Path | None:
    import os

    value = os.environ.get(CACHE_ENV)
    if value is None:
        return Path.home() / ".cache" / "edgebench" / "calibration-exports"
    return Path(value) if value else None


def export_key(entry: dict, fmt: str) -> str:
    """What an export of `entry` depends on, hashed: a cached file is reused only when all of it is the same."""
    from importlib import metadata

    from edgebench import api
    from edgebench import export as export_pkg

    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    code = hashlib.sha256()
    for src in [Path(__file__).with_name("reference_models.py"), Path(api.__file__),
                *sorted(Path(export_pkg.__file__).parent.glob("*.py"))]:
        code.update(src.name.encode() + src.read_bytes())
    what = [entry["arch"], entry.get("arch_kwargs", {}), entry["input_shape"], fmt,
            {d: version(d) for d in EXPORTERS}, code.hexdigest()]
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]


def export_entry(entry: dict, out_dir: Path, fmt: str = "tflite"):
    """The entry's architecture, rebuilt with random weights and exported through edgebench's `fmt` path;
    taken from the export cache (export_cache_dir) when the same export was made before."""
    import shutil

    cache = export_cache_dir()
    slot = cache / export_key(entry, fmt) if cache else None
    if slot is not None and (slot / "done").exists():
        from edgebench.api import describe

        return describe(slot / (slot / "done").read_text().strip())
    artifact = _export_entry(entry, out_dir, fmt)
    if slot is not None:
        try:  # a cache that cannot be written costs the next calibration time, never this one its result
            part = slot.with_name(slot.name + ".part")
            shutil.rmtree(part, ignore_errors=True)
            part.mkdir(parents=True)
            shutil.copy2(artifact.path, part / artifact.path.name)
            (part / "done").write_text(artifact.path.name)
            shutil.rmtree(slot, ignore_errors=True)
            part.rename(slot)
        except OSError as exc:
            import sys

            print(f"note: the export cache {cache} was not written ({exc})", file=sys.stderr)
    return artifact


def _export_entry(entry: dict, out_dir: Path, fmt: str):
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
    from edgebench.devices.calibration_cv import (cross_validate, nested_cross_validate, select_grouping,
                                                  within_source_cross_validate)

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

