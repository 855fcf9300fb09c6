"""NSGA-II over any SearchSpace's integer genes (pymoo), shared by the OFA and InstaTune finders.

The objectives are one vectorised callable over the whole population (predictors score a population in
one call, which is what makes 5,000 evaluations take well under a second), every column minimised:
pass -accuracy, not accuracy.
"""
from __future__ import annotations

import json
from typing import Callable

import numpy as np

from edgebench.search.space import SearchSpace

Objectives = Callable[[np.ndarray], np.ndarray]


def nsga2(space: SearchSpace, objectives: Objectives, pop_size: int = 50, n_gen: int = 50,
          seed: int = 0, seeds=None) -> list[dict]:
    """The final non-dominated set as [{"arch", "genes", "objectives"}], one entry per distinct arch.

    objectives(genes (n, n_genes) int64) -> (n, k) float, all minimised. seeds: genes (m, n_genes) put in
    the first population beside random ones (e.g. the largest and smallest nets, whose corners a random start
    rarely reaches in a few generations).
    """
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.optimize import minimize

    n_choices = np.asarray(space.n_choices(), dtype=np.int64)
    if n_choices.ndim != 1 or len(n_choices) == 0 or (n_choices < 1).any():
        raise ValueError(f"space {space.name}: n_choices must be a non-empty list of ints >= 1")
    # pymoo needs xl < xu to sample; a gene with one option is pinned to 0 outside pymoo
    free = n_choices > 1
    n_free = int(free.sum())

    def full_genes(x: np.ndarray) -> np.ndarray:
        genes = np.zeros((len(x), len(n_choices)), dtype=np.int64)
        genes[:, free] = np.clip(np.rint(x), 0, n_choices[free] - 1).astype(np.int64)
        return genes

    n_obj = np.asarray(objectives(full_genes(np.zeros((1, n_free))))).shape[1]

    class _Problem(Problem):
        def __init__(self):
            super().__init__(n_var=n_free, n_obj=n_obj, xl=np.zeros(n_free), xu=(n_choices[free] - 1).astype(float),
                             vtype=int)

        def _evaluate(self, x, out, *args, **kwargs):
            f = np.asarray(objectives(full_genes(x)), dtype=np.float64)
            if f.shape != (len(x), n_obj):
                raise ValueError(f"objectives returned shape {f.shape}, expected {(len(x), n_obj)}")
            out["F"] = f

    sampling = IntegerRandomSampling()
    if seeds is not None and len(seeds):
        first = np.asarray(seeds, dtype=np.int64).reshape(-1, len(n_choices))[:pop_size, free].astype(float)
        rng = np.random.default_rng(seed)
        rest = rng.integers(0, n_choices[free], size=(max(0, pop_size - len(first)), n_free)).astype(float)
        sampling = np.concatenate([first, rest])
    algorithm = NSGA2(
        pop_size=pop_size,
        sampling=sampling,
        crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
        mutation=PM(eta=20, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
    )
    res = minimize(_Problem(), algorithm, ("n_gen", n_gen), seed=seed, verbose=False)
    xs = np.atleast_2d(res.X)
    fs = np.atleast_2d(res.F)
    front, seen = [], set()
    for genes, f in zip(full_genes(xs), fs):
        arch = space.from_genes(genes)
        key = json.dumps(arch, sort_keys=True)
        if key in seen:  # inactive genes can differ while the arch is the same
            continue
        seen.add(key)
        front.append({"arch": arch, "genes": [int(g) for g in genes], "objectives": [float(v) for v in f]})
    front.sort(key=lambda p: p["objectives"])
    return front
