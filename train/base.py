"""Shared training types: a Dataset split, the Trained result, checkpoints that carry their config."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from edgebench.types import EdgebenchError, first_line

if TYPE_CHECKING:  # torch loads where it is used: a config names its dataset's options without it
    import torch


@dataclass(frozen=True)
class Dataset:
    """An offline dataset, already preprocessed into the model's input layout (float32, NC...)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: tuple
    preprocessing: str  # what was done to raw samples, in words, for the bundle manifest
    # training-time augmentation: (x_batch, numpy Generator) -> a new x_batch of the same shape, applied by the
    # trainer to every training batch (never to test data, calibration or evaluation); None: none
    augment: object = field(default=None, compare=False, repr=False)

    @property
    def input_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])


@dataclass
class Trained:
    """A trained module plus everything later stages need to export and evaluate it."""

    name: str  # e.g. "digits_cnn"
    kind: str  # model registry key, e.g. "cnn", "l2mu"
    module: torch.nn.Module
    dataset: Dataset
    config: dict  # the full config that produced it (model + training + data)
    metrics: dict = field(default_factory=dict)  # e.g. {"test_accuracy": 0.97}
    checkpoint: Path | None = None

    def example_input(self, batch: int = 1) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.dataset.x_test[:batch].astype(np.float32))


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def save_checkpoint(trained: Trained, path: Path) -> Path:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": "edgebench-checkpoint-1",
            "name": trained.name,
            "kind": trained.kind,
            "config": trained.config,
            "metrics": trained.metrics,
            "state_dict": trained.module.state_dict(),
        },
        path,
    )
    trained.checkpoint = path
    return path


def read_checkpoint(path: Path, fmt: str, what: str = "checkpoint") -> dict:
    """A torch checkpoint dict of the given format; a missing, unreadable or foreign file is one line."""
    path = Path(path)
    if not path.exists():
        raise EdgebenchError(f"{what} not found: {path}")
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EdgebenchError(f"cannot read {what} {path}: {first_line(exc)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        raise EdgebenchError(f"{path} is not an edgebench {what} ({fmt})")
    return ckpt


def load_checkpoint(path: Path) -> Trained:
    """Rebuild model and data from the config the checkpoint carries, then load the weights."""
    from edgebench.train.registry import build_model, load_dataset

    path = Path(path)
    ckpt = read_checkpoint(path, "edgebench-checkpoint-1")
    config = ckpt["config"]
    if ckpt["kind"] == "python":  # the user's own model: rebuilt by its factory, from its data
        from edgebench.train.user import rebuild

        module, dataset = rebuild(config)
    else:
        dataset = load_dataset(config["dataset"], config.get("data", {}))
        module = build_model(ckpt["kind"], config.get("model", {}), dataset)
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    return Trained(name=ckpt["name"], kind=ckpt["kind"], module=module, dataset=dataset,
                   config=config, metrics=ckpt.get("metrics", {}), checkpoint=path)
