"""The OFA space (edgebench.train.ofa.OFASpec) behind the SearchSpace contract of search/space.py.

Genes, in this order: one kernel-size index per block slot, one expand-ratio index per slot, one depth
index per stage, one resolution index. Slots beyond a stage's depth keep their genes (inactive).
Features are OFA's one-hot encoding: kernel and expand one-hots of the active slots (zeros for inactive
ones) and the resolution one-hot.
"""
from __future__ import annotations

import numpy as np

from edgebench.search.space import ArchError
from edgebench.train.ofa import OFASpec

ARCH_KEYS = ("ks", "e", "d", "r")


class OFASpace:
    def __init__(self, spec: OFASpec, name: str = "ofa-mbv3"):
        self.spec = spec
        self.name = name
        self.ks = np.asarray(spec.ks_list)
        self.ex = np.asarray(spec.expand_list)
        self.dp = np.asarray(spec.depth_list)
        self.res = np.asarray(spec.resolutions)
        n, st = spec.n_slots, spec.n_stages
        self.n_genes = 2 * n + st + 1
        self.n_features = n * (len(self.ks) + len(self.ex)) + len(self.res)
        # slot -> stage and position within the stage, for vectorised "is this slot active"
        self.slot_stage = np.repeat(np.arange(st), spec.max_depth)
        self.slot_pos = np.tile(np.arange(spec.max_depth), st)

    # ------------------------------------------------------------ the contract
    def n_choices(self) -> list[int]:
        n, st = self.spec.n_slots, self.spec.n_stages
        return [len(self.ks)] * n + [len(self.ex)] * n + [len(self.dp)] * st + [len(self.res)]

    def validate(self, arch: dict) -> dict:
        if not isinstance(arch, dict):
            raise ArchError(f"arch must be a JSON object with keys {', '.join(ARCH_KEYS)}, got {type(arch).__name__}")
        missing = [k for k in ARCH_KEYS if k not in arch]
        extra = sorted(set(arch) - set(ARCH_KEYS))
        if missing or extra:
            raise ArchError(f"arch keys must be exactly {', '.join(ARCH_KEYS)}"
                            + (f"; missing {', '.join(missing)}" if missing else "")
                            + (f"; unknown {', '.join(extra)}" if extra else ""))
        n, st = self.spec.n_slots, self.spec.n_stages
        out = {}
        for key, length, allowed in (("ks", n, self.spec.ks_list), ("e", n, self.spec.expand_list),
                                     ("d", st, self.spec.depth_list)):
            v = arch[key]
            if not isinstance(v, list) or len(v) != length:
                raise ArchError(f"arch '{key}' must be a list of {length} integers, got {_short(v)}")
            if any(not _is_int(x) for x in v):
                raise ArchError(f"arch '{key}' must hold integers, got {_short(v)}")
            bad = sorted({int(x) for x in v} - set(allowed))
            if bad:
                raise ArchError(f"arch '{key}' has {bad} outside the space {list(allowed)}")
            out[key] = [int(x) for x in v]
        r = arch["r"]
        if not _is_int(r) or int(r) not in self.spec.resolutions:
            raise ArchError(f"arch 'r' must be one of {list(self.spec.resolutions)}, got {_short(r)}")
        out["r"] = int(r)
        return out

    def to_genes(self, arch: dict) -> np.ndarray:
        a = self.validate(arch)
        return np.concatenate([
            np.searchsorted(self.ks, a["ks"]), np.searchsorted(self.ex, a["e"]),
            np.searchsorted(self.dp, a["d"]), [np.searchsorted(self.res, a["r"])]]).astype(np.int64)

    def from_genes(self, genes) -> dict:
        g = np.asarray(genes, dtype=np.int64)
        n, st = self.spec.n_slots, self.spec.n_stages
        return {"ks": self.ks[g[:n]].tolist(), "e": self.ex[g[n:2 * n]].tolist(),
                "d": self.dp[g[2 * n:2 * n + st]].tolist(), "r": int(self.res[g[-1]])}

    def features(self, arch: dict) -> np.ndarray:
        return self.features_batch(self.to_genes(arch)[None])[0]

    # ------------------------------------------------------------ vectorised helpers (search)
    def active_slots(self, genes: np.ndarray) -> np.ndarray:
        """(n, n_slots) bool: which block slots the arch uses."""
        n, st = self.spec.n_slots, self.spec.n_stages
        depth = self.dp[genes[:, 2 * n:2 * n + st]]  # (N, stages)
        return self.slot_pos[None, :] < depth[:, self.slot_stage]

    def features_batch(self, genes: np.ndarray) -> np.ndarray:
        genes = np.asarray(genes, dtype=np.int64)
        n = self.spec.n_slots
        nk, ne = len(self.ks), len(self.ex)
        rows = np.arange(len(genes))[:, None]
        active = self.active_slots(genes).astype(np.float32)
        feat = np.zeros((len(genes), self.n_features), dtype=np.float32)
        k_cols = np.arange(n)[None, :] * nk + genes[:, :n]
        e_cols = n * nk + np.arange(n)[None, :] * ne + genes[:, n:2 * n]
        feat[rows, k_cols] = active
        feat[rows, e_cols] = active
        feat[np.arange(len(genes)), n * (nk + ne) + genes[:, -1]] = 1.0
        return feat

    def random_archs(self, n: int, seed: int = 0) -> list[dict]:
        from edgebench.search.space import sample_genes

        return [self.from_genes(g) for g in sample_genes(self, n, np.random.default_rng(seed))]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."
