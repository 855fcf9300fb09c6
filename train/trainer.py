"""A seeded, reproducible supervised trainer with a progress bar."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch
from torch import nn

from edgebench.train.base import Dataset, seed_everything
from edgebench.train.train_config import TrainConfig  # (also re-exported: where it was)


def evaluate(module: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    module.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out = module(torch.from_numpy(x[i:i + batch_size].astype(np.float32)))
            correct += int((out.argmax(-1).numpy() == y[i:i + batch_size]).sum())
    return correct / max(len(x), 1)


def fit(module: nn.Module, dataset: Dataset, cfg: TrainConfig, progress: bool = True,
        loss_fn: nn.Module | None = None, description: str = "training") -> dict:
    """Train `module` in place; returns {'test_accuracy', 'train_accuracy', 'final_loss'}."""
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _fit(module, dataset, cfg, progress, loss_fn, description)
    finally:
        torch.set_num_threads(threads_before)


def _fit(module: nn.Module, dataset: Dataset, cfg: TrainConfig, progress: bool, loss_fn: nn.Module | None,
         description: str) -> dict:
    seed_everything(cfg.seed)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    opt = torch.optim.Adam(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    x = torch.from_numpy(dataset.x_train.astype(np.float32))
    y = torch.from_numpy(dataset.y_train.astype(np.int64))
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)  # the dataset's augmentation draws, if it has one
    last_loss = float("nan")

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(),
                  disable=not progress, transient=False) as bar:
        task = bar.add_task(description, total=cfg.epochs, loss=float("nan"))
        for _ in range(cfg.epochs):
            module.train()
            perm = torch.randperm(len(x), generator=gen)
            total, count = 0.0, 0
            for i in range(0, len(x), cfg.batch_size):
                idx = perm[i:i + cfg.batch_size]
                xb = x[idx]
                if dataset.augment is not None:
                    xb = torch.from_numpy(np.ascontiguousarray(dataset.augment(xb.numpy(), rng), dtype=np.float32))
                opt.zero_grad()
                loss = loss_fn(module(xb), y[idx])
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                count += len(idx)
            sched.step()
            last_loss = total / max(count, 1)
            bar.update(task, advance=1, loss=last_loss)
    module.eval()
    return {
        "test_accuracy": evaluate(module, dataset.x_test, dataset.y_test),
        "train_accuracy": evaluate(module, dataset.x_train, dataset.y_train),
        "final_loss": last_loss,
        "train_config": asdict(cfg),
    }
