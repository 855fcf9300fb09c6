"""InstaTune's search space, predictors and the LINAS loop (fast: synthetic evaluators)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgebench.search.instatune_search import LinasConfig, linas, pick_front
from edgebench.search.instatune_space import InstaTuneSpace
from edgebench.search.predictors import fit_predictor, quality, select_predictor
from edgebench.search.space import ArchError, SearchSpace, load_arch, sample_genes
from edgebench.train.minilm import arch_macs

SPACE = InstaTuneSpace()


def test_space_meets_the_protocol_and_round_trips_genes():
    assert isinstance(SPACE, SearchSpace)
    assert SPACE.n_choices() == [5] + [5] * 6 + [4] * 6
    genes = sample_genes(SPACE, 200, np.random.default_rng(0))
    for g in genes:
        arch = SPACE.from_genes(g)
        assert len(arch["heads"]) == len(arch["ffn"]) == arch["layers"]
        assert SPACE.from_genes(SPACE.to_genes(arch)) == arch
    feats = SPACE.features_from_genes(genes)
    assert feats.shape == (200, 15) and feats.dtype == np.float32
    np.testing.assert_allclose(feats[7], SPACE.features(SPACE.from_genes(genes[7])))
    macs = SPACE.macs_from_genes(genes)
    assert macs[3] == arch_macs(SPACE.from_genes(genes[3]))


@pytest.mark.parametrize("arch, message", [
    ({"layers": 7, "heads": [4] * 7, "ffn": [384] * 7}, "layers 7 is outside"),
    ({"layers": 2, "heads": [4, 5], "ffn": [384, 384]}, r"heads\[1\] = 5 is outside"),
    ({"layers": 2, "heads": [4, 4], "ffn": [384]}, "ffn must be a list of 2"),
    ({"layers": 2, "heads": [4, 4]}, "exactly the keys"),
])
def test_arch_outside_the_space_is_an_arch_error(arch, message):
    with pytest.raises(ArchError, match=message):
        SPACE.validate(arch)


def test_load_arch_accepts_a_small_arch_and_refuses_a_malformed_file(tmp_path):
    good = tmp_path / "arch.json"
    good.write_text(json.dumps({"layers": 2, "heads": [4, 4], "ffn": [384, 384]}))
    assert load_arch(good, SPACE) == {"layers": 2, "heads": [4, 4], "ffn": [384, 384]}
    bad = tmp_path / "bad.json"
    bad.write_text("{layers: 2")
    with pytest.raises(ArchError, match="malformed arch file"):
        load_arch(bad, SPACE)


def test_predictor_quality_on_held_out_points():
    rng = np.random.default_rng(0)
    x = rng.random((60, 5))
    y = x @ np.array([3.0, 1.0, 0.5, 0.0, 0.0]) + 10
    p = fit_predictor("ridge", x[:40], y[:40])
    q = quality(y[40:], p.predict(x[40:]))
    assert q["kendall_tau"] > 0.95 and q["mape_pct"] < 1.0 and q["n_holdout"] == 20
    shuffled = quality(y[40:], rng.permutation(y[40:]))
    assert shuffled["kendall_tau"] < 0.6  # the measure can fail
    best, table = select_predictor(x, y)
    assert set(table) == {"ridge", "gbm", "mlp"} and best.kind == "ridge"


def _synthetic():
    rng = np.random.default_rng(1)

    def acc(archs):  # more layers and heads help, with noise
        return np.array([0.6 + 0.04 * a["layers"] + 0.002 * np.mean(a["heads"]) + rng.normal(0, 0.003) for a in archs])

    def lat(archs):
        return np.array([arch_macs(a) / 6e7 * (1 + rng.normal(0, 0.02)) for a in archs])

    return acc, lat


def test_linas_refines_the_front_over_5000_evaluations():
    """The search's speed is measured in benchmarks/instatune.py (a ratio on a quiet machine), not here."""
    acc, lat = _synthetic()
    cfg = LinasConfig(n_initial=12, iterations=1, per_iteration=5, pop_size=50, n_gen=100)

    result = linas(SPACE, acc, lat, SPACE.macs_from_genes, cfg, log=lambda *_: None)

    assert len(result["evaluated"]) == 14 + 5
    assert result["evaluations"] >= 5000 and result["search_s"] > 0
    last = result["rounds"][-1]
    assert last["latency_predictor"]["holdout"]  # quality stated for every predictor kind
    assert result["rounds"][0]["new_front_latency"]["kendall_tau"] > 0.5
    picks = pick_front(result["front"], 5)
    assert len(picks) == 5
    lats = [p["latency_ms"] for p in picks]
    accs = [p["accuracy"] for p in picks]
    assert lats == sorted(lats) and accs == sorted(accs)  # a front: slower picks are more accurate
    budget = pick_front(result["front"], 5, budget_ms=lats[2])
    assert all(p["latency_ms"] <= lats[2] for p in budget)


def test_log_target_latency_predictor_stays_positive_when_extrapolating():
    x = np.linspace(0, 1, 12)[:, None]
    y = np.exp(3 * x[:, 0]) * 0.5  # 0.5 .. 10 ms
    p = fit_predictor("ridge", x, y, log_target=True)
    far = p.predict(np.array([[-2.0], [3.0]]))
    assert (far > 0).all()
    assert quality(y, p.predict(x))["mape_pct"] < 5
