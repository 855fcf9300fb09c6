"""Magnitude pruning with a short fine-tune: a compressed variant of a Trained model.

Global L1 (magnitude) pruning over the weights of every Linear and Conv layer, fine-tuned with the masks
held in place (the zeros stay zeros), then made permanent. Fixed buffers (e.g. the LMU's A and B) are not
parameters and are never pruned. The dense ONNX/TFLite files keep the zeros: their size and dense MACs do
not shrink, which the record says next to the weight sparsity.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn
from torch.nn.utils import prune

from edgebench.train.base import Trained
from edgebench.train.trainer import TrainConfig, evaluate, fit
from edgebench.types import EdgebenchError


def prunable(module: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in module.modules()
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) and getattr(m, "weight", None) is not None]


def weight_sparsity(module: nn.Module) -> float:
    """Fraction of zeros over the weights of the prunable layers."""
    total = zeros = 0
    for m, name in prunable(module):
        w = getattr(m, name)
        total += w.numel()
        zeros += int((w == 0).sum())
    return zeros / total if total else 0.0


def prune_and_finetune(trained: Trained, sparsity: float, finetune_epochs: int = 3, lr: float | None = None,
                       progress: bool = True) -> Trained:
    """A new Trained named `<name>-pruned<NN>` with `sparsity` of its prunable weights set to zero."""
    if not 0.0 < sparsity < 1.0:
        raise EdgebenchError(f"pruning sparsity must be between 0 and 1, got {sparsity}")
    module = copy.deepcopy(trained.module)
    params = prunable(module)
    if not params:
        raise EdgebenchError(f"{trained.name}: no Linear/Conv weights to prune")
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
    accuracy_after_pruning = evaluate(module, trained.dataset.x_test, trained.dataset.y_test)
    base = TrainConfig.from_dict(trained.config.get("train", {}))
    tcfg = replace(base, epochs=finetune_epochs, lr=lr if lr is not None else base.lr / 2)
    name = f"{trained.name}-pruned{round(sparsity * 100)}"
    if finetune_epochs > 0:
        own_loop = getattr(module, "fit", None)
        if callable(own_loop):
            metrics = own_loop(trained.dataset, tcfg, progress=progress, description=f"fine-tune {name}")
        else:
            metrics = fit(module, trained.dataset, tcfg, progress=progress, description=f"fine-tune {name}")
    else:
        metrics = {}
    for m, pname in params:
        prune.remove(m, pname)  # weight = weight_orig * mask, permanently
    module.eval()
    with torch.no_grad():
        test_accuracy = evaluate(module, trained.dataset.x_test, trained.dataset.y_test)
    metrics.update(test_accuracy=test_accuracy, accuracy_after_pruning_before_finetune=accuracy_after_pruning,
                   weight_sparsity=weight_sparsity(module), target_sparsity=sparsity,
                   finetune_epochs=finetune_epochs, pruned_from=trained.name)
    config = dict(trained.config)
    config["prune"] = {"sparsity": sparsity, "finetune_epochs": finetune_epochs, "from": trained.name}
    return Trained(name=name, kind=trained.kind, module=module, dataset=trained.dataset, config=config,
                   metrics=metrics)
