"""Models and datasets by name, as import paths: heavy modules load only when used."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from edgebench.types import EdgebenchError

if TYPE_CHECKING:  # torch loads only when a model is built: a config is checked without it
    from torch import nn

    from edgebench.train.base import Dataset, Trained

# kind -> "module:function(model_config: dict, dataset: Dataset) -> nn.Module"
MODELS = {
    "cnn": "edgebench.train.registry:build_cnn",
    "l2mu": "edgebench.train.l2mu:build_l2mu",
    "lmu": "edgebench.train.lmu:build_lmu",
}
# kind -> the model config keys its builder reads (an unknown key is an error, not a silent default)
MODEL_KEYS = {
    "cnn": ("width",),
    "l2mu": ("hidden_size", "memory_size", "order", "theta", "input_size", "neuron", "beta", "alpha", "threshold",
             "learn_beta", "learn_threshold", "slope", "readout", "memory_gain", "learn_memory_gain"),
    "lmu": ("hidden_size", "memory_size", "order", "theta"),
}
# name -> "module:function(**data_config) -> Dataset"
DATASETS = {
    "digits": "edgebench.train.digits:load_digits_dataset",
    "basicmotions": "edgebench.train.har:load_basic_motions",
    "wisdm": "edgebench.train.har:load_wisdm",
    "hapt": "edgebench.train.hapt:load_hapt",
    "fashion_mnist": "edgebench.train.fashion:load_fashion_mnist",
}


def check_name(table: dict, key: str, what: str) -> None:
    """An unknown model kind or dataset is one line naming the closest known one."""
    if key not in table:
        from edgebench.config import did_you_mean

        raise EdgebenchError(f"unknown {what} '{key}'{did_you_mean(key, table)}")


def _resolve(table: dict, key: str, what: str):
    check_name(table, key, what)
    module, func = table[key].split(":")
    return getattr(importlib.import_module(module), func)


def dataset_keys(name: str) -> tuple:
    """The options a dataset loader takes, read from its signature."""
    import inspect

    return tuple(inspect.signature(_resolve(DATASETS, name, "dataset")).parameters)


def build_cnn(cfg: dict, dataset: Dataset) -> nn.Module:
    from edgebench.train.cnn import SmallCNN

    c, h, _ = dataset.input_shape
    return SmallCNN(in_channels=c, num_classes=len(dataset.labels), width=int(cfg.get("width", 16)), side=h)


def load_dataset(name: str, data_cfg: dict | None = None) -> Dataset:
    load = _resolve(DATASETS, name, "dataset")
    try:
        return load(**(data_cfg or {}))
    except TypeError as exc:  # an unknown or missing dataset option
        raise EdgebenchError(f"dataset '{name}' with options {data_cfg or {}}: {exc}") from None


def build_model(kind: str, model_cfg: dict, dataset: Dataset) -> nn.Module:
    build = _resolve(MODELS, kind, "model")
    try:
        return build(model_cfg, dataset)
    except (TypeError, ValueError, KeyError) as exc:  # a bad setting in the user's model config
        raise EdgebenchError(f"model '{kind}' with config {model_cfg}: {exc}") from None


def train_model(name: str, kind: str, dataset_name: str, model_cfg: dict | None = None,
                train_cfg: dict | None = None, data_cfg: dict | None = None, progress: bool = True) -> Trained:
    """Build, train and evaluate one model; the returned Trained carries the config that made it."""
    from edgebench.train.base import Trained, seed_everything
    from edgebench.train.train_config import TrainConfig
    from edgebench.train.trainer import fit

    model_cfg, train_cfg, data_cfg = dict(model_cfg or {}), dict(train_cfg or {}), dict(data_cfg or {})
    tcfg = TrainConfig.from_dict(train_cfg)
    dataset = load_dataset(dataset_name, data_cfg)
    seed_everything(tcfg.seed)
    module = build_model(kind, model_cfg, dataset)
    trainer = getattr(module, "fit", None)  # a model may bring its own loop (e.g. a spiking loss)
    if callable(trainer):
        metrics = trainer(dataset, tcfg, progress=progress, description=f"train {name}")
    else:
        metrics = fit(module, dataset, tcfg, progress=progress, description=f"train {name}")
    config = {"dataset": dataset_name, "data": data_cfg, "model": model_cfg, "train": train_cfg}
    return Trained(name=name, kind=kind, module=module, dataset=dataset, config=config, metrics=metrics)
