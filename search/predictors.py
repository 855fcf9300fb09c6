"""Light predictors of a subnet's accuracy or latency from its space features (LINAS): ridge, GBM, small MLP.

Each is fitted on a few dozen evaluated subnets and scores a whole NSGA-II population in one call. Their
quality is stated on subnets held out from fitting: Kendall tau (does it rank subnets right, which is
what the search needs) and mean absolute percentage error (is the figure itself right).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgebench.types import EdgebenchError

KINDS = ("ridge", "gbm", "mlp")


def make_regressor(kind: str, seed: int = 0):
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "ridge":
        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    if kind == "gbm":
        return GradientBoostingRegressor(n_estimators=200, max_depth=2, learning_rate=0.05, subsample=0.8,
                                         random_state=seed)
    if kind == "mlp":
        return make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(32,), alpha=1e-2, max_iter=3000,
                                                            random_state=seed))
    raise EdgebenchError(f"unknown predictor '{kind}' (known: {', '.join(KINDS)})")


@dataclass
class Predictor:
    """A fitted regressor; targets are standardised so one setting suits accuracies and milliseconds."""

    kind: str
    model: object
    mean: float
    std: float
    log_target: bool = False  # fitted on log(y): predictions stay positive, errors are relative

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = self.model.predict(np.asarray(x, np.float64)) * self.std + self.mean
        return np.exp(z) if self.log_target else z


def fit_predictor(kind: str, x: np.ndarray, y: np.ndarray, seed: int = 0, log_target: bool = False) -> Predictor:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 3:
        raise EdgebenchError(f"a {kind} predictor needs at least 3 evaluated subnets, got {len(x)}")
    if log_target:
        if (y <= 0).any():
            raise EdgebenchError("a log-target predictor needs positive targets (latencies)")
        y = np.log(y)
    mean, std = float(y.mean()), float(y.std()) or 1.0
    model = make_regressor(kind, seed)
    model.fit(x, (y - mean) / std)
    return Predictor(kind, model, mean, std, log_target)


def quality(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Kendall tau and MAPE (%) of predictions against held-out truth."""
    from scipy.stats import kendalltau

    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    tau = kendalltau(y_true, y_pred).statistic if len(y_true) > 1 else float("nan")
    mape = float(np.mean(np.abs(y_pred - y_true) / np.maximum(np.abs(y_true), 1e-12)) * 100)
    return {"kendall_tau": float(tau), "mape_pct": mape, "n_holdout": int(len(y_true))}


def select_predictor(x: np.ndarray, y: np.ndarray, kinds=KINDS, folds: int = 5, seed: int = 0,
                     log_target: bool = False) -> tuple[Predictor, dict]:
    """State every kind's quality on held-out subnets (k-fold: each subnet predicted by a predictor that
    never saw it), keep the best by Kendall tau (ties within 0.02: lower MAPE), refit it on all points.
    Returns (predictor, {kind: quality})."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = len(x)
    folds = min(folds, n)
    if n < 4:
        raise EdgebenchError(f"predictor selection needs at least 4 evaluated subnets, got {n}")
    fold_of = np.random.default_rng(seed).permutation(n) % folds
    table = {}
    for kind in kinds:
        oof = np.empty(n)
        for k in range(folds):
            test = fold_of == k
            oof[test] = fit_predictor(kind, x[~test], y[~test], seed, log_target).predict(x[test])
        table[kind] = quality(y, oof)
        table[kind]["folds"] = folds
    top = max(np.nan_to_num(table[k]["kendall_tau"], nan=-2) for k in kinds)
    near = [k for k in kinds if np.nan_to_num(table[k]["kendall_tau"], nan=-2) >= top - 0.02]
    best = min(near, key=lambda k: table[k]["mape_pct"])
    return fit_predictor(best, x, y, seed, log_target), table
