"""InstaTune's elastic MiniLM space as a SearchSpace: layers, then heads and FFN size per layer.

Genes: [layers index, heads index x max_layers, ffn index x max_layers]. The heads/FFN genes of layers
beyond `layers` are inactive (kept so mutation and crossover stay simple, ignored by the arch).
"""
from __future__ import annotations

import numpy as np

from edgebench.search.space import ArchError
from edgebench.train.minilm import ElasticChoices


class InstaTuneSpace:
    name = "instatune-minilm"

    def __init__(self, choices: ElasticChoices = ElasticChoices()):
        self.choices = choices
        self.layers = tuple(sorted(choices.layers))
        self.heads = tuple(sorted(choices.heads))
        self.ffn = tuple(sorted(choices.ffn))
        self.max_layers = max(self.layers)

    def n_choices(self) -> list[int]:
        return [len(self.layers)] + [len(self.heads)] * self.max_layers + [len(self.ffn)] * self.max_layers

    def validate(self, arch: dict) -> dict:
        if not isinstance(arch, dict) or set(arch) != {"layers", "heads", "ffn"}:
            got = sorted(arch) if isinstance(arch, dict) else type(arch).__name__
            raise ArchError(f"arch must have exactly the keys layers, heads, ffn (got {got})")
        L = arch["layers"]
        if isinstance(L, bool) or not isinstance(L, int) or L not in self.layers:
            raise ArchError(f"layers {L!r} is outside the space (choices: {list(self.layers)})")
        for key, options in (("heads", self.heads), ("ffn", self.ffn)):
            values = arch[key]
            if not isinstance(values, list) or len(values) not in (L, self.max_layers):
                raise ArchError(f"{key} must be a list of {L} values, one per kept layer (got {values!r})")
            for i, v in enumerate(values[:L]):
                if isinstance(v, bool) or not isinstance(v, int) or v not in options:
                    raise ArchError(f"{key}[{i}] = {v!r} is outside the space (choices: {list(options)})")
        return {"layers": L, "heads": list(arch["heads"][:L]), "ffn": list(arch["ffn"][:L])}

    def to_genes(self, arch: dict) -> np.ndarray:
        arch = self.validate(arch)
        L, m = arch["layers"], self.max_layers
        genes = np.zeros(1 + 2 * m, dtype=np.int64)
        genes[0] = self.layers.index(L)
        genes[1:1 + L] = [self.heads.index(h) for h in arch["heads"]]
        genes[1 + m:1 + m + L] = [self.ffn.index(f) for f in arch["ffn"]]
        return genes

    def from_genes(self, genes) -> dict:
        g = np.asarray(genes, dtype=np.int64)
        m = self.max_layers
        if g.shape != (1 + 2 * m,) or (g < 0).any() or (g >= np.asarray(self.n_choices())).any():
            raise ArchError(f"genes {g.tolist()} do not fit the space {self.n_choices()}")
        L = self.layers[g[0]]
        return {"layers": L, "heads": [self.heads[i] for i in g[1:1 + L]],
                "ffn": [self.ffn[i] for i in g[1 + m:1 + m + L]]}

    def features(self, arch: dict) -> np.ndarray:
        """[layers, heads per layer (0 when dropped), ffn per layer (0 when dropped), total heads, total ffn],
        each scaled to [0, 1]."""
        m = self.max_layers
        L = arch["layers"]
        heads = np.zeros(m, np.float32)
        ffn = np.zeros(m, np.float32)
        heads[:L] = np.asarray(arch["heads"][:L], np.float32) / max(self.heads)
        ffn[:L] = np.asarray(arch["ffn"][:L], np.float32) / max(self.ffn)
        return np.concatenate([[L / m], heads, ffn, [heads.sum() / m, ffn.sum() / m]]).astype(np.float32)

    def features_from_genes(self, genes: np.ndarray) -> np.ndarray:
        """features() of a whole population at once (NSGA-II scores thousands of archs)."""
        g = np.asarray(genes, dtype=np.int64)
        m = self.max_layers
        L = np.asarray(self.layers)[g[:, 0]]
        active = np.arange(m)[None, :] < L[:, None]
        heads = np.asarray(self.heads, np.float32)[g[:, 1:1 + m]] / max(self.heads) * active
        ffn = np.asarray(self.ffn, np.float32)[g[:, 1 + m:]] / max(self.ffn) * active
        return np.concatenate([(L / m)[:, None], heads, ffn, heads.sum(1, keepdims=True) / m,
                               ffn.sum(1, keepdims=True) / m], axis=1).astype(np.float32)

    def macs_from_genes(self, genes: np.ndarray, hidden: int = 384, head_dim: int = 32, seq_len: int = 64,
                        n_classes: int = 2) -> np.ndarray:
        """arch_macs() of a whole population (same definition)."""
        g = np.asarray(genes, dtype=np.int64)
        m = self.max_layers
        L = np.asarray(self.layers)[g[:, 0]]
        active = np.arange(m)[None, :] < L[:, None]
        d = np.asarray(self.heads, np.int64)[g[:, 1:1 + m]] * head_dim * active
        f = np.asarray(self.ffn, np.int64)[g[:, 1 + m:]] * active
        t = seq_len
        per = 4 * t * hidden * d + 2 * t * t * d + 2 * t * hidden * f
        return per.sum(1) + hidden * n_classes
