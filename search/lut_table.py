"""What an OFA latency table is: its keys (OFA's format) and the predictions read from a built table.

search/lut.py measures a table on a device; this module names the entries a subnet is made of and turns a
table into predicted latency (provenance `predicted`) or guest instructions, one arch at a time or
vectorised for the finders. The formulas are in search/lut.py's docstring.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgebench.train.ofa import OFASpec
from edgebench.types import EdgebenchError, Provenance, first_line

LUT_FORMAT = "edgebench-ofa-lut-1"


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


def _load_yaml(path: Path) -> dict:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise EdgebenchError(f"cannot read latency table {path}: {first_line(exc)}") from None
    if not isinstance(doc, dict) or doc.get("_meta", {}).get("format") != LUT_FORMAT:
        raise EdgebenchError(f"{path} is not an edgebench OFA latency table")
    return doc



# ============================================================ predicting
class LatencyTable:
    """A loaded table: predicted latency (and instructions) of an arch, one at a time or vectorised."""

    def __init__(self, doc: dict, path: Path | None = None):
        self.doc = doc
        self.path = path
        self.meta = doc["_meta"]
        self.spec = OFASpec.from_dict(self.meta["space"])
        self.fit = doc.get("_fit")
        self.measured_alongside: list[dict] = []  # build_lut(alongside=...): whole subnets timed with the keys

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
