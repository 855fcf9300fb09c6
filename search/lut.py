"""A latency lookup table (LUT) of the OFA space, measured on a named device through its adapter.

Every distinct block configuration a subnet can contain gets OFA's key, e.g.
    expanded_conv-input:14x14x16-output:14x14x16-expand:4-kernel:5-stride:1-idskip:1
plus the stem (`Conv-...`), the final expansion (`Conv_1-...`), the pooling (`AvgPool2D-...`), the
classifier (`Logits-...`) and an empty model (`Identity-...`). Each is exported alone as a tiny ONNX file
(the same exporter and opset as a deployed subnet) and timed on the device: all models of a chunk in one
runner process (search/lut_runner.py, which loads them with the deployed runner's own session settings),
measured in interleaved rounds. The table is saved in OFA's YAML form, `key: {count, mean, var}` (ms,
ms^2), with p50, parameter count and, on an emulated device, guest instructions per inference, plus
`_meta` (device, facts, runtime and version, provenance, settings) and `_fit`.

Prediction (provenance `predicted`):
  latency_ms = sum of the entries' p50 + c + w * weight_MB + v * n_entries
  c, w and v are fitted by least squares on whole subnets measured in the same way (`_fit` says which
  and how many). A block timed alone keeps its weights in cache while a whole net streams them, so a
  plain sum runs low by an amount that grows with the weight size (w); every entry's p50 includes one
  runtime call that a whole net makes once (v, negative); c is the per-inference rest.
  instructions = sum of the blocks' instructions - (n_blocks - 1) * instructions of the empty model
  (each block's count includes one runtime call; a whole net makes one); no fitting.

The build is resumable: the table file is rewritten after every chunk and keys already in it are not
measured again. `resolutions` narrows the keys to what chosen input resolutions can reach.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgebench.devices.batch import BatchConfig, measure_models  # noqa: F401  (measure_models: OFA code imports it from here)
from edgebench.train.ofa import MBConv, OFASpec, SubNet
from edgebench.types import EdgebenchError, Provenance

LUT_FORMAT = "edgebench-ofa-lut-1"


@dataclass(frozen=True)
class LUTConfig(BatchConfig):
    """How the table is measured: BatchConfig's runs, rounds, warm-up, threads and timeout per runner process
    (and its emulated caps), plus how many keys go in one process and the whole subnets that fit c and w."""

    chunk: int = field(default=128, metadata={"help": "models per runner process (the table is saved after each)"})
    calib_nets: int = field(default=10, metadata={
        "help": "random whole subnets measured to fit the overhead (c, w, v), beside the smallest and largest"})
    seed: int = field(default=0, metadata={"help": "seed of the calibration subnets"})


# ============================================================ keys
def _hwc(side: int, c: int) -> str:
    return f"{side}x{side}x{c}"


def block_key(b: dict) -> str:
    return (f"expanded_conv-input:{_hwc(b['in_side'], b['c_in'])}-output:{_hwc(b['out_side'], b['c_out'])}"
            f"-expand:{b['expand']}-kernel:{b['kernel']}-stride:{b['stride']}-idskip:{b['idskip']}")


def _sides(spec: OFASpec, r: int) -> tuple[int, int]:
    """(side after the stem, side after the last stage) at resolution r."""
    side = (r - 1) // spec.stem_stride + 1
    stem = side
    for s in spec.strides:
        side = (side - 1) // s + 1
    return stem, side


def fixed_entries(spec: OFASpec, r: int) -> list[dict]:
    stem, last = _sides(spec, r)
    f = spec.final_width
    return [
        {"key": f"Conv-input:{_hwc(r, spec.in_channels)}-output:{_hwc(stem, spec.stem_width)}", "kind": "stem", "r": r},
        {"key": f"Conv_1-input:{_hwc(last, spec.widths[-1])}-output:{_hwc(last, f)}", "kind": "head", "side": last},
        {"key": f"AvgPool2D-input:{_hwc(last, f)}-output:{_hwc(1, f)}", "kind": "pool", "side": last},
        {"key": f"Logits-input:{_hwc(1, f)}-output:{spec.num_classes}", "kind": "logits"},
    ]


def empty_entry(spec: OFASpec) -> dict:
    return {"key": f"Identity-input:{_hwc(1, spec.num_classes)}", "kind": "empty"}


def arch_entries(spec: OFASpec, arch: dict) -> list[dict]:
    """The table entries one subnet is made of, in order."""
    fixed = fixed_entries(spec, int(arch["r"]))
    blocks = [dict(b, key=block_key(b), kind="block") for b in spec.blocks(arch)]
    return [fixed[0], *blocks, *fixed[1:]]


def all_entries(spec: OFASpec, resolutions=None) -> dict[str, dict]:
    """Every distinct entry the space can produce (at the given resolutions), plus the empty model."""
    out: dict[str, dict] = {}
    for r in resolutions or spec.resolutions:
        for e in fixed_entries(spec, r):
            out.setdefault(e["key"], e)
        for k in spec.ks_list:
            for x in spec.expand_list:
                arch = {"ks": [k] * spec.n_slots, "e": [x] * spec.n_slots, "d": [spec.max_depth] * spec.n_stages,
                        "r": r}
                for b in spec.blocks(arch):
                    out.setdefault(block_key(b), dict(b, key=block_key(b), kind="block"))
    out[empty_entry(spec)["key"]] = empty_entry(spec)
    return out


def entry_params(spec: OFASpec, e: dict) -> int:
    module, _ = entry_module(spec, e)
    return int(sum(p.numel() for p in module.parameters()) + sum(b.numel() for n, b in module.named_buffers()
                                                                  if "running" in n))


def entry_module(spec: OFASpec, e: dict):
    """(module with random weights, input shape) of one entry: latency depends on shapes, not values."""
    import torch
    from torch import nn

    from edgebench.train.ofa import Head, Pool, Stem

    kind = e["kind"]
    if kind == "block":
        m = MBConv(e["c_in"], e["c_out"], e["expand"], e["kernel"], e["stride"], e["se"], e["hswish"])
        shape = (1, e["c_in"], e["in_side"], e["in_side"])
    elif kind == "stem":
        m, shape = Stem(spec.in_channels, spec.stem_width, spec.stem_stride), (1, spec.in_channels, e["r"], e["r"])
    elif kind == "head":
        m, shape = Head(spec.widths[-1], spec.final_width), (1, spec.widths[-1], e["side"], e["side"])
    elif kind == "pool":
        m, shape = Pool(), (1, spec.final_width, e["side"], e["side"])
    elif kind == "logits":
        m, shape = nn.Linear(spec.final_width, spec.num_classes), (1, spec.final_width)
    elif kind == "empty":
        m, shape = nn.Identity(), (1, spec.num_classes)
    else:
        raise ValueError(kind)
    torch.manual_seed(0)
    return m.eval(), shape


def export_entry(spec: OFASpec, e: dict, path: Path) -> Path:
    import torch

    from edgebench.export.onnx import export_onnx

    module, shape = entry_module(spec, e)
    if e["kind"] == "empty":  # the TorchScript exporter drops a bare Identity graph: write it directly
        import onnx
        from onnx import TensorProto, helper

        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", shape[1]])
        out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", shape[1]])
        graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "empty", [inp], [out])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, str(path))
        return path
    return export_onnx(module, torch.randn(*shape), path)


def arch_weight_mb(spec: OFASpec, arch: dict, params: dict) -> float:
    return sum(params[e["key"]] for e in arch_entries(spec, arch)) * 4 / 1e6


# ============================================================ measuring
def _stats(samples_ns: list, instructions) -> dict:
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    d = {"count": int(ms.size), "mean": float(ms.mean()), "var": float(ms.var()), "p50": float(np.median(ms))}
    if instructions is not None:
        d["instructions"] = int(instructions)
    return d


# ============================================================ building
def _load_yaml(path: Path) -> dict:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise EdgebenchError(f"cannot read latency table {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict) or doc.get("_meta", {}).get("format") != LUT_FORMAT:
        raise EdgebenchError(f"{path} is not an edgebench OFA latency table")
    return doc


def _save_yaml(doc: dict, path: Path) -> None:
    import yaml

    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("# edgebench OFA latency table: key: {count, mean, var} in ms (OFA's form), plus p50, params\n"
                   + yaml.safe_dump(doc, sort_keys=False, width=200))
    tmp.replace(path)


def calibration_archs(spec: OFASpec, n: int, seed: int, resolutions=None) -> list[dict]:
    """The whole subnets the overhead is fitted on: the smallest (at the lowest resolution) and the largest
    (at the highest), then n random ones. Without the two ends the fit extrapolates: on random subnets only,
    its negative intercept predicted the smallest at 0.065 ms against 0.100 measured (local, measured)."""
    res = sorted(resolutions or spec.resolutions)
    ends = [dict(spec.smallest(), r=int(res[0])), dict(spec.largest(), r=int(res[-1]))]
    rng = np.random.default_rng(10_000 + seed)
    return ends + [spec.random_arch(rng, r=resolutions) for _ in range(n)]


def build_lut(spec: OFASpec, device, out_path: Path, cfg: LUTConfig = LUTConfig(), resolutions=None,
              progress: bool = True, log=print, replace_other: bool = False) -> "LatencyTable":
    """Measure every key not yet in `out_path` on `device`, then fit the overhead; resumable. A table of
    another device or space at `out_path` is an error, or with replace_other (a run's own output) rebuilt."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import edgebench

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    res = tuple(resolutions or spec.resolutions)
    bad = sorted(set(res) - set(spec.resolutions))
    if bad:
        raise EdgebenchError(f"resolutions {bad} are not in the space {list(spec.resolutions)}")
    entries = all_entries(spec, res)
    if out_path.exists():
        doc = _load_yaml(out_path)
        meta = doc["_meta"]
        if meta.get("device") != device.name or meta.get("space") != spec.to_dict():
            if not replace_other:
                raise EdgebenchError(f"{out_path} holds a table of another device or space "
                                     f"({meta.get('device')}); choose another --out")
            log(f"{out_path} was built for another device or space ({meta.get('device')}): measuring it anew")
            out_path.unlink()
    if out_path.exists():
        log(f"resuming {out_path}: {sum(not k.startswith('_') for k in doc)} keys already measured")
    else:
        doc = {"_meta": {
            "format": LUT_FORMAT, "device": device.name, "device_kind": device.kind,
            "provenance": device.provenance.value,
            "provenance_note": ("per-key figures are this device's own timings (emulated wall time on an emulated "
                                "device, never a device latency; its instructions are counted on the guest); "
                                "latencies predicted from the table are 'predicted'"),
            "space": spec.to_dict(), "resolutions": list(res), "settings": {
                "runs": cfg.for_device(device.kind).runs, "rounds": cfg.for_device(device.kind).rounds,
                "warmup": cfg.for_device(device.kind).warmup, "threads": cfg.threads,
                "statistic": "p50 of the measured runs; mean and var over the same runs"},
            "edgebench_version": getattr(edgebench, "__version__", ""),
            **_basis(device),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
    todo = [k for k in entries if k not in doc]
    calib = calibration_archs(spec, cfg.calib_nets, cfg.seed, res) if "_fit" not in doc else []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgebench-lut-") as tmp, \
            Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     disable=not progress) as bar:
        task = bar.add_task(f"LUT on {device.name}", total=len(todo) + len(calib))
        for start in range(0, len(todo), cfg.chunk):
            chunk = todo[start:start + cfg.chunk]
            files = []
            for key in chunk:
                path = Path(tmp) / "onnx" / f"k{len(files)}-{start}.onnx"
                path.parent.mkdir(parents=True, exist_ok=True)
                files.append((key, export_entry(spec, entries[key], path)))
            got = measure_models(device, files, cfg, Path(tmp) / f"bundle{start}")
            m = got.pop("_measurement")
            for key in chunk:
                e = entries[key]
                doc[key] = {**_stats(got[key]["samples_ns"], got[key]["instructions"]),
                            "params": entry_params(spec, e), "kind": e["kind"]}
            doc["_meta"].update({"runtime": m.runtime, "runtime_version": m.runtime_version,
                                 "facts": _plain(m.device_facts)})
            _save_yaml(doc, out_path)  # resumable from here
            bar.update(task, advance=len(chunk))
        if calib:
            doc["_fit"] = _fit(spec, device, doc, calib, cfg, Path(tmp))
            _save_yaml(doc, out_path)
            bar.update(task, advance=len(calib))
    log(f"latency table {out_path}: {sum(not k.startswith('_') for k in doc)} keys "
        f"({len(todo)} measured now, {time.perf_counter() - t0:.0f} s)")
    return LatencyTable(doc, out_path)


def _basis(device) -> dict:
    """What predicted latency is made of: the wall-time sum on a real device; on an emulated one, predicted
    instructions at the device's ipc and clock (the same conversion its estimated_latency_ms uses)."""
    if device.kind == "emulated":
        return {"latency_basis": "instructions", "ipc": device.config.ipc, "clock_ghz": device.config.clock_ghz}
    return {"latency_basis": "wall_time"}


def _plain(v):
    return json.loads(json.dumps(v, default=str))


def measure_archs(spec: OFASpec, device, archs: list[dict], cfg: LUTConfig, workdir: Path) -> list[dict]:
    """Whole subnets (random weights) measured exactly as the table's keys: [{p50_ms, instructions}]."""
    import torch

    from edgebench.export.onnx import export_onnx

    files = []
    for i, arch in enumerate(archs):
        torch.manual_seed(i)
        path = Path(workdir) / "nets" / f"net{i}.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        files.append((f"net{i}", export_onnx(SubNet(spec, arch).eval(), torch.randn(1, spec.in_channels,
                                                                                  arch["r"], arch["r"]), path)))
    got = measure_models(device, files, cfg, Path(workdir) / "nets-bundle")
    return [{"p50_ms": float(np.median(got[k]["samples_ns"])) / 1e6, "instructions": got[k]["instructions"]}
            for k, _ in files]


def _fit(spec: OFASpec, device, doc: dict, archs: list[dict], cfg: LUTConfig, workdir: Path) -> dict:
    table = LatencyTable(doc)
    measured = measure_archs(spec, device, archs, cfg, workdir)
    sums = np.array([table.block_sum_ms(a) for a in archs])
    mb = np.array([table.weight_mb(a) for a in archs])
    nb = np.array([len(arch_entries(spec, a)) for a in archs], dtype=np.float64)
    y = np.array([m["p50_ms"] for m in measured]) - sums
    (c, w, v), *_ = np.linalg.lstsq(np.stack([np.ones_like(mb), mb, nb], 1), y, rcond=None)
    fit = {"c_ms": float(c), "w_ms_per_mb": float(w), "v_ms_per_entry": float(v), "n_calib": len(archs),
           "seed": cfg.seed,
           "method": ("least squares of (measured whole-subnet p50 - sum of entry p50s) = c + w * weight_MB + "
                      "v * n_entries over n_calib subnets (the smallest, the largest, random ones; random weights) "
                      "measured in one runner process like the keys; v absorbs the runtime call each entry's p50 "
                      "includes once per entry"),
           "calib": [{"arch": a, "measured_ms": m["p50_ms"], "sum_ms": float(s), "weight_mb": float(b)}
                     for a, m, s, b in zip(archs, measured, sums, mb)]}
    if all(m["instructions"] is not None for m in measured):
        pred = [table.instructions(a) for a in archs]
        fit["instructions_calib"] = [{"measured": m["instructions"], "predicted": p} for m, p in zip(measured, pred)]
    return fit


# ============================================================ predicting
class LatencyTable:
    """A loaded table: predicted latency (and instructions) of an arch, one at a time or vectorised."""

    def __init__(self, doc: dict, path: Path | None = None):
        self.doc = doc
        self.path = path
        self.meta = doc["_meta"]
        self.spec = OFASpec.from_dict(self.meta["space"])
        self.fit = doc.get("_fit")

    @classmethod
    def load(cls, path) -> "LatencyTable":
        path = Path(path)
        if not path.exists():
            raise EdgebenchError(f"latency table not found: {path}")
        return cls(_load_yaml(path), path)

    @property
    def device(self) -> str:
        return self.meta["device"]

    @property
    def has_instructions(self) -> bool:
        return "instructions" in self.doc.get(empty_entry(self.spec)["key"], {})

    def _get(self, key: str) -> dict:
        try:
            return self.doc[key]
        except KeyError:
            raise EdgebenchError(f"latency table {self.path or ''} has no entry {key} (built for resolutions "
                                 f"{self.meta.get('resolutions')})") from None

    def block_sum_ms(self, arch: dict) -> float:
        return float(sum(self._get(e["key"])["p50"] for e in arch_entries(self.spec, arch)))

    def weight_mb(self, arch: dict) -> float:
        return sum(self._get(e["key"])["params"] for e in arch_entries(self.spec, arch)) * 4 / 1e6

    @property
    def by_instructions(self) -> bool:
        return self.meta.get("latency_basis") == "instructions"

    def instructions_to_ms(self, instructions):
        return instructions / (self.meta["ipc"] * self.meta["clock_ghz"] * 1e9) * 1e3

    def predict_ms(self, arch: dict) -> float:
        """sum of block p50s + c + w * weight_MB (the fit; without one, the plain sum); on an emulated
        device, the predicted instructions at its ipc and clock."""
        if self.by_instructions:
            return float(self.instructions_to_ms(self.instructions(arch)))
        total = self.block_sum_ms(arch)
        if self.fit:
            total += (self.fit["c_ms"] + self.fit["w_ms_per_mb"] * self.weight_mb(arch)
                      + self.fit.get("v_ms_per_entry", 0.0) * len(arch_entries(self.spec, arch)))
        return max(total, self.floor_ms)

    @property
    def floor_ms(self) -> float:
        """No net runs faster than the empty model's one runtime call: the floor of every prediction (a fit
        on noisy calibration runs can push a tiny subnet's sum + overhead below it, even below zero)."""
        return float(self._get(empty_entry(self.spec)["key"])["p50"])

    def instructions(self, arch: dict) -> int | None:
        if not self.has_instructions:
            return None
        ents = arch_entries(self.spec, arch)
        empty = self._get(empty_entry(self.spec)["key"])["instructions"]
        return int(sum(self._get(e["key"])["instructions"] for e in ents) - (len(ents) - 1) * empty)

    def predict(self, arch: dict) -> dict:
        out = {"predicted_latency_ms": self.predict_ms(arch), "predicted_latency_provenance": Provenance.PREDICTED.value,
               "lut_device": self.device, "weight_mb": self.weight_mb(arch)}
        if self.by_instructions:  # the table's wall times are emulated: not part of any prediction
            out["predicted_instructions"] = self.instructions(arch)
            out["predicted_latency_basis"] = (f"predicted instructions at ipc {self.meta['ipc']} and "
                                              f"{self.meta['clock_ghz']} GHz")
        else:
            out["lut_sum_ms"] = self.block_sum_ms(arch)
            out["predicted_latency_basis"] = "sum of entry p50s + fitted overhead, at least the empty model's p50"
        return out

    # ---------------------------------------------------------------- vectorised, for the finders
    def gene_tables(self, space) -> dict:
        """Arrays indexed by genes: per slot, resolution, kernel and expand choice, the block's p50 and
        params (and instructions); per resolution the fixed parts. predict_genes() gathers from them."""
        spec = self.spec
        n_r, n_k, n_e = len(spec.resolutions), len(spec.ks_list), len(spec.expand_list)
        lat = np.zeros((spec.n_slots, n_r, n_k, n_e))
        par = np.zeros((spec.n_slots, n_r, n_k, n_e))
        ins = np.zeros((spec.n_slots, n_r, n_k, n_e))
        fixed_lat, fixed_par, fixed_ins = np.zeros(n_r), np.zeros(n_r), np.zeros(n_r)
        have = set(k for k in self.doc if not k.startswith("_"))
        for ri, r in enumerate(spec.resolutions):
            if fixed_entries(spec, r)[0]["key"] not in have:
                fixed_lat[ri] = np.inf  # a resolution the table was not built for: never within a budget
                continue
            for e in fixed_entries(spec, r):
                d = self._get(e["key"])
                fixed_lat[ri] += d["p50"]
                fixed_par[ri] += d["params"]
                fixed_ins[ri] += d.get("instructions", 0)
            for ki, k in enumerate(spec.ks_list):
                for ei, x in enumerate(spec.expand_list):
                    arch = {"ks": [k] * spec.n_slots, "e": [x] * spec.n_slots,
                            "d": [spec.max_depth] * spec.n_stages, "r": r}
                    for b in spec.blocks(arch):
                        d = self._get(block_key(b))
                        lat[b["slot"], ri, ki, ei] = d["p50"]
                        par[b["slot"], ri, ki, ei] = d["params"]
                        ins[b["slot"], ri, ki, ei] = d.get("instructions", 0)
        return {"lat": lat, "par": par, "ins": ins, "fixed_lat": fixed_lat, "fixed_par": fixed_par,
                "fixed_ins": fixed_ins}

    def predict_genes(self, space, genes: np.ndarray, tables: dict | None = None) -> np.ndarray:
        """predict_ms for many archs at once (genes (N, n_genes)); same formula as predict_ms."""
        t = tables or self.gene_tables(space)
        genes = np.asarray(genes, dtype=np.int64)
        n = self.spec.n_slots
        slots = np.arange(n)[None, :]
        r = genes[:, -1]
        active = space.active_slots(genes)
        if self.by_instructions:
            ins = t["ins"][slots, r[:, None], genes[:, :n], genes[:, n:2 * n]]
            n_entries = active.sum(1) + len(fixed_entries(self.spec, self.spec.resolutions[0]))
            empty = self._get(empty_entry(self.spec)["key"])["instructions"]
            return self.instructions_to_ms((ins * active).sum(1) + t["fixed_ins"][r] - (n_entries - 1) * empty)
        lat = t["lat"][slots, r[:, None], genes[:, :n], genes[:, n:2 * n]]
        par = t["par"][slots, r[:, None], genes[:, :n], genes[:, n:2 * n]]
        total = (lat * active).sum(1) + t["fixed_lat"][r]
        if self.fit:
            mb = ((par * active).sum(1) + t["fixed_par"][r]) * 4 / 1e6
            n_entries = active.sum(1) + len(fixed_entries(self.spec, self.spec.resolutions[0]))
            total = (total + self.fit["c_ms"] + self.fit["w_ms_per_mb"] * mb
                     + self.fit.get("v_ms_per_entry", 0.0) * n_entries)
        return np.maximum(total, self.floor_ms)


def latency_budget_keys(table: LatencyTable) -> int:
    return sum(not k.startswith("_") for k in table.doc)


def summary_line(table: LatencyTable) -> str:
    fit = table.fit
    head = (f"{latency_budget_keys(table)} keys on {table.device} ({table.meta.get('runtime', '?')} "
            f"{table.meta.get('runtime_version', '')})")
    if table.by_instructions:
        cal = (fit or {}).get("instructions_calib", [])
        errs = [abs(c["predicted"] - c["measured"]) / c["measured"] * 100 for c in cal if c["measured"]]
        return head + ("; predicts guest instructions (sum - (n - 1) x empty model), max error "
                       f"{max(errs):.3f}% on {len(errs)} calibration subnets" if errs else "; predicts instructions")
    if not fit:
        return head + "; no overhead fit"
    return head + (f"; overhead fit c = {fit['c_ms'] * 1e3:.1f} us, w = {fit['w_ms_per_mb'] * 1e3:.1f} us/MB, "
                   f"v = {fit.get('v_ms_per_entry', 0) * 1e3:.2f} us/entry on {fit['n_calib']} subnets")
