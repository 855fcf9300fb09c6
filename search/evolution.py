"""OFA's evolutionary finder under a latency budget, vectorised over the population.

As in OFA's EvolutionFinder: a population of valid (within budget) random subnets; each generation keeps
the best `parent_ratio` by predicted accuracy, makes `mutation_ratio` of the new children by mutating a
random parent (every gene with probability `mutate_prob`, the resolution with `resolution_mutate_prob`)
and the rest by uniform crossover of two random parents; a child over the budget is redrawn. Defaults:
population 100, 500 generations, parent ratio 0.25, mutation ratio 0.5, mutation probability 0.1 =
50,000 predicted-accuracy evaluations. Everything is numpy arrays of genes (search/space.py); the
latency and accuracy predictors take whole batches.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgebench.search.space import sample_genes
from edgebench.types import EdgebenchError


@dataclass(frozen=True)
class EvolutionConfig:
    population: int = field(default=100, metadata={"help": "population size"})
    generations: int = field(default=500, metadata={"help": "generations"})
    parent_ratio: float = field(default=0.25, metadata={"help": "share of the population kept as parents"})
    mutation_ratio: float = field(default=0.5, metadata={"help": "share of children made by mutation"})
    mutate_prob: float = field(default=0.1, metadata={"help": "per-gene mutation probability"})
    resolution_mutate_prob: float = field(default=0.5, metadata={"help": "mutation probability of the resolution"})
    max_redraws: int = field(default=200, metadata={"help": "attempts to find a child within the budget"})
    seed: int = field(default=0, metadata={"help": "seed"})

    def __post_init__(self):
        if self.population < 4 or self.generations < 0:
            raise EdgebenchError("evolution: population >= 4 and generations >= 0")
        if not (0 < self.parent_ratio <= 1 and 0 <= self.mutation_ratio <= 1 and 0 <= self.mutate_prob <= 1):
            raise EdgebenchError("evolution: ratios and probabilities must be within [0, 1]")


class _Sampler:
    def __init__(self, n_choices, latency: Callable, budget: float, rng, max_redraws: int):
        self.n_choices = np.asarray(n_choices)
        self.latency, self.budget, self.rng, self.max_redraws = latency, budget, rng, max_redraws
        self.evaluations = 0

    def fill(self, n: int, propose: Callable[[int], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """n genes within the budget, each drawn by `propose` until it fits (batched redraws)."""
        out_g = np.empty((0, len(self.n_choices)), dtype=np.int64)
        out_l = np.empty(0)
        for _ in range(self.max_redraws):
            need = n - len(out_g)
            if need <= 0:
                break
            cand = propose(max(need * 2, 8))
            lat = self.latency(cand)
            self.evaluations += len(cand)
            ok = lat <= self.budget
            out_g = np.concatenate([out_g, cand[ok][:need]])
            out_l = np.concatenate([out_l, lat[ok][:need]])
        if len(out_g) < n:
            raise EdgebenchError(f"no subnet found within {self.budget:g} ms after {self.max_redraws} attempts")
        return out_g, out_l


def evolution_search(space, latency: Callable[[np.ndarray], np.ndarray],
                     accuracy: Callable[[np.ndarray], np.ndarray], budget_ms: float,
                     cfg: EvolutionConfig = EvolutionConfig()) -> dict:
    """The best arch (highest predicted accuracy) with predicted latency <= budget_ms.

    latency(genes) -> ms and accuracy(genes) -> predicted accuracy, both for a batch (N, n_genes).
    Runs with the BLAS pool at one thread: the predictor's matrices are 100 x 400, and a multi-threaded
    BLAS spin-waiting on a busy machine made each call 30x slower (87 ms against 2.6 ms, measured)."""
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency, always installed with it

    with threadpool_limits(limits=1):
        return _evolution_search(space, latency, accuracy, budget_ms, cfg)


def _evolution_search(space, latency, accuracy, budget_ms: float, cfg: EvolutionConfig) -> dict:
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    n_choices = np.asarray(space.n_choices())
    n_genes = len(n_choices)
    res_gene = np.zeros(n_genes, dtype=bool)
    res_gene[-1] = True  # the OFA space keeps the resolution last (search/ofa_space.py)
    probs = np.where(res_gene, cfg.resolution_mutate_prob, cfg.mutate_prob)
    smallest = float(np.min(latency(sample_genes(space, 2000, rng))))
    sampler = _Sampler(n_choices, latency, budget_ms, rng, cfg.max_redraws)
    try:
        pop, pop_lat = sampler.fill(cfg.population, lambda k: sample_genes(space, k, rng))
    except EdgebenchError:
        raise EdgebenchError(f"no subnet is predicted within {budget_ms:g} ms (the fastest of 2,000 random "
                             f"subnets is predicted at {smallest:.4g} ms)") from None
    pop_acc = accuracy(pop)
    acc_evals = len(pop)
    n_parents = max(1, int(round(cfg.parent_ratio * cfg.population)))
    n_mut = int(round(cfg.mutation_ratio * cfg.population))
    best_curve = []
    for _ in range(cfg.generations):
        order = np.argsort(-pop_acc)[:n_parents]
        parents, par_lat, par_acc = pop[order], pop_lat[order], pop_acc[order]
        best_curve.append(float(par_acc[0]))

        def mutate(k):
            base = parents[rng.integers(0, n_parents, k)]
            flip = rng.random((k, n_genes)) < probs
            fresh = (rng.random((k, n_genes)) * n_choices).astype(np.int64)
            return np.where(flip, fresh, base)

        def crossover(k):
            a = parents[rng.integers(0, n_parents, k)]
            b = parents[rng.integers(0, n_parents, k)]
            return np.where(rng.random((k, n_genes)) < 0.5, a, b)

        kids_m, lat_m = sampler.fill(n_mut, mutate) if n_mut else (np.empty((0, n_genes), np.int64), np.empty(0))
        kids_c, lat_c = sampler.fill(cfg.population - n_mut, crossover)
        kids = np.concatenate([kids_m, kids_c])
        kid_acc = accuracy(kids)
        acc_evals += len(kids)
        pop = np.concatenate([parents, kids])
        pop_lat = np.concatenate([par_lat, lat_m, lat_c])
        pop_acc = np.concatenate([par_acc, kid_acc])
    best = int(np.argmax(pop_acc))
    return {
        "arch": space.from_genes(pop[best]), "genes": pop[best].tolist(),
        "predicted_accuracy": float(pop_acc[best]), "predicted_latency_ms": float(pop_lat[best]),
        "budget_ms": float(budget_ms), "accuracy_evaluations": int(acc_evals),
        "latency_evaluations": int(sampler.evaluations), "search_s": time.perf_counter() - t0,
        "best_curve": best_curve[:: max(1, len(best_curve) // 50)],
    }
