"""OFA's accuracy predictor: a small MLP on the one-hot architecture encoding.

Trained on subnets sampled from the supernet, each extracted, BN-recalibrated on training images and
evaluated on the VALIDATION split (never the test split). Part of the sampled subnets is held out and
the predictor's error on them is reported with it. Inference runs in numpy (the finders call it tens of
thousands of times; a forward pass is three matrix products).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from edgebench.types import EdgebenchError


@dataclass(frozen=True)
class PredictorConfig:
    subnets: int = field(default=200, metadata={"help": "random subnets evaluated on the validation split"})
    holdout: float = field(default=0.2, metadata={"help": "fraction of them held out to report the error"})
    hidden: int = field(default=400, metadata={"help": "hidden units per layer (OFA: 400)"})
    layers: int = field(default=3, metadata={"help": "hidden layers (OFA: 3)"})
    epochs: int = field(default=400, metadata={"help": "full-batch training epochs"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    calib_images: int = field(default=1000, metadata={"help": "training images for each subnet's BN recalibration"})
    val_images: int = field(default=2000, metadata={"help": "validation images each subnet is evaluated on"})
    seed: int = field(default=0, metadata={"help": "seed (subnet sampling, split, initialisation)"})

    def __post_init__(self):
        if self.subnets < 5 or not 0 < self.holdout < 1 or self.hidden < 1 or self.layers < 1 or self.epochs < 1:
            raise EdgebenchError("accuracy predictor: subnets >= 5, 0 < holdout < 1, hidden, layers, epochs >= 1")


class AccuracyPredictor:
    """y = MLP(one-hot) + base accuracy (the mean of the training targets), as in OFA."""

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray], base: float, report: dict | None = None):
        self.weights = [np.asarray(w, dtype=np.float32) for w in weights]
        self.biases = [np.asarray(b, dtype=np.float32) for b in biases]
        self.base = float(base)
        self.report = dict(report or {})

    @property
    def n_features(self) -> int:
        return self.weights[0].shape[0]

    def predict(self, features: np.ndarray) -> np.ndarray:
        h = np.asarray(features, dtype=np.float32)
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = np.maximum(h @ w + b, 0.0)
        return (h @ self.weights[-1] + self.biases[-1])[:, 0] + self.base

    def state(self) -> dict:
        import torch

        return {"weights": [torch.from_numpy(w) for w in self.weights],
                "biases": [torch.from_numpy(b) for b in self.biases], "base": self.base, "report": self.report}

    @classmethod
    def from_state(cls, state: dict) -> "AccuracyPredictor":
        return cls([w.numpy() for w in state["weights"]], [b.numpy() for b in state["biases"]], state["base"],
                   state.get("report"))

    @classmethod
    def fit(cls, features: np.ndarray, accuracy: np.ndarray, cfg: PredictorConfig) -> "AccuracyPredictor":
        """Train on a random (1 - holdout) part, report MAE/RMSE and rank correlation on the rest."""
        import torch
        from torch import nn

        x = np.asarray(features, dtype=np.float32)
        y = np.asarray(accuracy, dtype=np.float32)
        rng = np.random.default_rng(cfg.seed)
        perm = rng.permutation(len(x))
        n_hold = max(1, int(round(cfg.holdout * len(x))))
        hold, train = perm[:n_hold], perm[n_hold:]
        torch.manual_seed(cfg.seed)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a few hundred rows: one thread is faster than two contending ones
        layers, d = [], x.shape[1]
        for _ in range(cfg.layers):
            layers += [nn.Linear(d, cfg.hidden), nn.ReLU()]
            d = cfg.hidden
        layers.append(nn.Linear(d, 1))
        mlp = nn.Sequential(*layers)
        base = float(y[train].mean())
        scale = float(y[train].std()) or 1.0  # accuracies differ by a few points: learn them standardised
        xt, yt = torch.from_numpy(x[train]), torch.from_numpy((y[train] - base) / scale)
        opt = torch.optim.Adam(mlp.parameters(), lr=cfg.lr)
        for _ in range(cfg.epochs):
            opt.zero_grad()
            loss = torch.mean((mlp(xt)[:, 0] - yt) ** 2)
            loss.backward()
            opt.step()
        torch.set_num_threads(threads)
        linears = [m for m in mlp if isinstance(m, nn.Linear)]
        weights = [m.weight.detach().numpy().T.copy() for m in linears]
        biases = [m.bias.detach().numpy().copy() for m in linears]
        weights[-1] *= scale  # fold the scale into the last layer: predict() stays MLP(x) + base
        biases[-1] *= scale
        pred = cls(weights, biases, base)
        p_hold = pred.predict(x[hold])
        err = p_hold - y[hold]
        pred.report = {
            "n_train": int(len(train)), "n_heldout": int(n_hold),
            "heldout_mae": float(np.mean(np.abs(err))), "heldout_rmse": float(np.sqrt(np.mean(err ** 2))),
            "heldout_max_abs_error": float(np.max(np.abs(err))),
            "heldout_kendall_tau": kendall_tau(p_hold, y[hold]),
            "train_mae": float(np.mean(np.abs(pred.predict(x[train]) - y[train]))),
            "target": "top-1 accuracy on the validation split after BN recalibration (fraction)",
        }
        return pred


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = np.asarray(a), np.asarray(b)
    if len(a) < 2:
        return None
    i, j = np.triu_indices(len(a), 1)
    s = np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
    return float(s.mean())


def evaluate_subnets(supernet, space, archs: list[dict], calib_x: np.ndarray, x_val: np.ndarray,
                     y_val: np.ndarray, progress: bool = True) -> np.ndarray:
    """Validation accuracy of every arch (extracted, BN recalibrated on calib_x)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgebench.train.ofa import subnet_accuracy

    out = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=not progress) as bar:
        task = bar.add_task("evaluate subnets (validation split)", total=len(archs))
        for arch in archs:
            out.append(subnet_accuracy(supernet, arch, calib_x, x_val, y_val))
            bar.update(task, advance=1)
    return np.asarray(out, dtype=np.float32)


def train_predictor(supernet, space, calib_x: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                    cfg: PredictorConfig = PredictorConfig(), progress: bool = True, log=print) -> AccuracyPredictor:
    """Sample cfg.subnets archs (the largest and smallest included), measure them, fit the MLP."""
    t0 = time.perf_counter()
    spec = supernet.spec
    archs = [spec.largest(), spec.smallest()] + space.random_archs(cfg.subnets - 2, seed=cfg.seed)
    acc = evaluate_subnets(supernet, space, archs, calib_x[:cfg.calib_images], x_val[:cfg.val_images],
                           y_val[:cfg.val_images], progress)
    feats = np.stack([space.features(a) for a in archs])
    pred = AccuracyPredictor.fit(feats, acc, cfg)
    pred.report.update({"subnets": len(archs), "val_images": int(min(cfg.val_images, len(x_val))),
                        "calib_images": int(min(cfg.calib_images, len(calib_x))),
                        "val_accuracy_range": [float(acc.min()), float(acc.max())],
                        "build_s": time.perf_counter() - t0})
    r = pred.report
    log(f"accuracy predictor: {len(archs)} subnets in {r['build_s']:.0f} s; held-out MAE "
        f"{r['heldout_mae'] * 100:.2f} points, RMSE {r['heldout_rmse'] * 100:.2f}, Kendall tau "
        f"{r['heldout_kendall_tau']:.2f} on {r['n_heldout']} subnets")
    return pred
