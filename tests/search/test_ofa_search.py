"""The OFA space contract, the evolutionary finder and the accuracy predictor (synthetic objectives with
known answers, so the tests can fail)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgebench.search.accuracy import AccuracyPredictor, PredictorConfig, kendall_tau
from edgebench.search.evolution import EvolutionConfig, evolution_search
from edgebench.search.ofa_space import OFASpace
from edgebench.search.space import ArchError, SearchSpace, load_arch, sample_genes
from edgebench.train.ofa import OFASpec

SPEC = OFASpec()
SPACE = OFASpace(SPEC)


def test_space_meets_the_contract_and_round_trips():
    assert isinstance(SPACE, SearchSpace)
    assert len(SPACE.n_choices()) == 2 * SPEC.n_slots + SPEC.n_stages + 1
    genes = sample_genes(SPACE, 50, np.random.default_rng(0))
    for g in genes:
        arch = SPACE.from_genes(g)
        assert np.array_equal(SPACE.to_genes(arch), g)
        f = SPACE.features(arch)
        # one kernel and one expand one-hot per active block, one resolution one-hot
        assert f.sum() == 2 * sum(arch["d"]) + 1
    assert np.array_equal(SPACE.features_batch(genes), np.stack([SPACE.features(SPACE.from_genes(g)) for g in genes]))


@pytest.mark.parametrize("arch, message", [
    ({"ks": [3] * 16, "e": [3] * 16, "d": [2] * 4}, "missing r"),
    ({"ks": [3] * 16, "e": [3] * 16, "d": [2] * 4, "r": 28, "w": 1}, "unknown w"),
    ({"ks": [4] * 16, "e": [3] * 16, "d": [2] * 4, "r": 28}, r"'ks' has \[4\] outside"),
    ({"ks": [3] * 15, "e": [3] * 16, "d": [2] * 4, "r": 28}, "list of 16 integers"),
    ({"ks": [3] * 16, "e": [3] * 16, "d": [2] * 4, "r": 32}, "'r' must be one of"),
    ({"ks": [3] * 16, "e": [3.0] * 16, "d": [2] * 4, "r": 28}, "must hold integers"),
])
def test_arch_outside_the_space_is_one_line(arch, message, tmp_path):
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(arch))
    with pytest.raises(ArchError, match=message) as err:
        load_arch(path, SPACE)
    assert "\n" not in str(err.value)


def test_malformed_arch_file_is_one_line(tmp_path):
    path = tmp_path / "arch.json"
    path.write_text("{not json")
    with pytest.raises(ArchError, match="malformed arch file"):
        load_arch(path, SPACE)


def _objectives():
    """Latency grows with every choice; accuracy too but with other weights: a real trade-off."""
    rng = np.random.default_rng(5)
    n = SPACE.n_features
    w_lat = rng.uniform(0.5, 1.5, n)
    w_acc = rng.uniform(0.0, 1.0, n)
    return (lambda g: SPACE.features_batch(g) @ w_lat / 10), (lambda g: SPACE.features_batch(g) @ w_acc / 40)


def test_evolution_respects_the_budget_and_beats_random_sampling():
    latency, accuracy = _objectives()
    budget = 2.0
    res = evolution_search(SPACE, latency, accuracy, budget, EvolutionConfig(population=50, generations=60))
    assert res["predicted_latency_ms"] <= budget
    g = np.asarray(res["genes"])[None]
    assert latency(g)[0] == pytest.approx(res["predicted_latency_ms"])
    assert accuracy(g)[0] == pytest.approx(res["predicted_accuracy"])
    rand = sample_genes(SPACE, 3000, np.random.default_rng(1))
    ok = latency(rand) <= budget
    assert res["predicted_accuracy"] > accuracy(rand[ok]).max()
    assert res["accuracy_evaluations"] == 50 + 60 * 50
    SPACE.validate(res["arch"])


def test_default_finder_makes_50000_evaluations():
    latency, accuracy = _objectives()
    res = evolution_search(SPACE, latency, accuracy, 2.5, EvolutionConfig())
    assert res["accuracy_evaluations"] == 100 + 500 * 100


def test_unreachable_budget_is_one_clear_line():
    latency, accuracy = _objectives()
    with pytest.raises(Exception, match="no subnet is predicted within 0.01 ms"):
        evolution_search(SPACE, latency, accuracy, 0.01, EvolutionConfig(population=10, generations=1))


def test_accuracy_predictor_learns_a_known_function_and_reports_held_out_error():
    rng = np.random.default_rng(0)
    genes = sample_genes(SPACE, 300, rng)
    x = SPACE.features_batch(genes)
    w = rng.uniform(0, 0.01, x.shape[1])
    y = 0.7 + x @ w
    pred = AccuracyPredictor.fit(x, y, PredictorConfig(subnets=300, hidden=64, epochs=300, holdout=0.2))
    rep = pred.report
    assert rep["n_heldout"] == 60 and rep["n_train"] == 240
    assert rep["heldout_mae"] < 0.5 * np.mean(np.abs(y - y.mean()))  # far better than the mean guess
    assert rep["heldout_kendall_tau"] > 0.5
    again = AccuracyPredictor.from_state(pred.state())
    assert np.allclose(again.predict(x[:5]), pred.predict(x[:5]))
    assert kendall_tau(np.array([1, 2, 3]), np.array([3, 2, 1])) == -1.0
