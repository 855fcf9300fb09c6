"""nsga2 over a toy space whose Pareto front is known exactly."""
from __future__ import annotations

import numpy as np
import pytest

from edgebench.search.nsga import nsga2
from edgebench.search.space import ArchError, SearchSpace

K = 6


class ToySpace:
    """Genes: a (K options), b (4), c (3), pinned (1 option). Arch = the values themselves."""

    name = "toy"

    def n_choices(self):
        return [K, 4, 3, 1]

    def to_genes(self, arch):
        return np.array([arch["a"], arch["b"], arch["c"], 0])

    def from_genes(self, genes):
        return {"a": int(genes[0]), "b": int(genes[1]), "c": int(genes[2])}

    def features(self, arch):
        return self.to_genes(arch).astype(np.float32)

    def validate(self, arch):
        if arch.get("a") not in range(K):
            raise ArchError("a out of range")
        return arch


def toy_objectives(genes: np.ndarray) -> np.ndarray:
    # front: b == 0 and c == 0, every a is a trade-off between f1 and f2
    a, b, c = genes[:, 0], genes[:, 1], genes[:, 2]
    return np.stack([a + b + c, (K - 1 - a) + b + 2 * c], axis=1).astype(float)


def test_toy_space_meets_the_protocol():
    assert isinstance(ToySpace(), SearchSpace)


def test_nsga2_finds_the_exact_front_of_a_known_problem():
    seen_shapes = []

    def objectives(genes):
        seen_shapes.append(genes.shape)
        assert genes.dtype == np.int64
        return toy_objectives(genes)

    front = nsga2(ToySpace(), objectives, pop_size=20, n_gen=30, seed=0)

    assert all(shape[1] == 4 for shape in seen_shapes)  # pinned gene is passed too
    assert max(shape[0] for shape in seen_shapes) > 1  # vectorised over the population
    assert {p["arch"]["a"] for p in front} == set(range(K))
    for p in front:
        assert p["arch"]["b"] == 0 and p["arch"]["c"] == 0
        assert p["genes"][3] == 0
        assert p["objectives"] == [p["arch"]["a"], K - 1 - p["arch"]["a"]]
    assert len({p["arch"]["a"] for p in front}) == len(front)  # one entry per distinct arch


def test_nsga2_is_repeatable_by_seed():
    a = nsga2(ToySpace(), toy_objectives, pop_size=10, n_gen=5, seed=3)
    b = nsga2(ToySpace(), toy_objectives, pop_size=10, n_gen=5, seed=3)
    assert a == b


def test_nsga2_rejects_objectives_of_the_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        nsga2(ToySpace(), lambda g: toy_objectives(g)[:1], pop_size=10, n_gen=2)


class WideSpace:
    """30 genes of 3 options: the corners (all 0, all 2) are the front's ends, far from any random start."""

    name = "wide"

    def n_choices(self):
        return [3] * 30

    def to_genes(self, arch):
        return np.asarray(arch["g"])

    def from_genes(self, genes):
        return {"g": [int(v) for v in genes]}

    def features(self, arch):
        return self.to_genes(arch).astype(np.float32)

    def validate(self, arch):
        return arch


def test_seeded_corners_stay_on_a_short_runs_front():
    def objectives(genes):  # latency grows with every gene, accuracy too: every point is a trade-off
        s = genes.sum(1).astype(float)
        return np.stack([-s, s], 1)

    ends = lambda front: (min(p["objectives"][1] for p in front), max(p["objectives"][1] for p in front))  # noqa: E731
    lo, hi = ends(nsga2(WideSpace(), objectives, pop_size=20, n_gen=3, seed=0))
    assert lo > 0 and hi < 60  # a random start does not reach the corners in 3 generations
    seeds = np.array([[0] * 30, [2] * 30])
    assert ends(nsga2(WideSpace(), objectives, pop_size=20, n_gen=3, seed=0, seeds=seeds)) == (0, 60)
