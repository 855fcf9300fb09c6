"""The user's own model in a run config: `kind = "python"`, `factory = "my_models:make_net"`.

The factory's module is imported from the config file's folder first, then from sys.path. The factory is
called with the `model` table as keyword arguments (checked against its signature: a typo is one line
naming the closest parameter). Data comes from an .npz (x_train, y_train, x_test, y_test) or a built-in
dataset. `checkpoint` loads a state dict; `train = false` keeps the loaded weights as they are.
"""
from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

import numpy as np
import torch

from edgebench.train.base import Dataset, Trained, seed_everything
from edgebench.types import EdgebenchError, first_line

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def import_factory(spec: str, base_dir: Path):
    module_name, _, func = spec.partition(":")
    if not module_name or not func:
        raise EdgebenchError(f"factory '{spec}': expected 'module:function'")
    base = str(Path(base_dir).resolve())
    sys.path.insert(0, base)  # the config's folder first, then the usual sys.path
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EdgebenchError(f"factory '{spec}': cannot import '{module_name}' from {base} or sys.path ({exc})") from None
    except Exception as exc:  # the user's module raised while importing: their bug, still one line here
        raise EdgebenchError(f"factory '{spec}': importing '{module_name}' failed: {type(exc).__name__}: {exc}") from None
    finally:
        if sys.path and sys.path[0] == base:
            sys.path.pop(0)
    fn = getattr(module, func, None)
    if not callable(fn):
        raise EdgebenchError(f"factory '{spec}': '{module_name}' has no function '{func}'")
    return fn


def check_kwargs(fn, kwargs: dict, where: str) -> None:
    """Keyword arguments against the factory's signature, with the closest parameter for a typo."""
    from edgebench.config import did_you_mean

    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    names = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in kwargs:
        if key not in names:
            raise EdgebenchError(f"unknown key '{key}' in {where}{did_you_mean(key, names)}")


def load_npz_dataset(path: Path, name: str | None = None) -> Dataset:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in NPZ_KEYS if k not in data.files]
            if missing:
                raise EdgebenchError(f"data file {path} lacks array(s) {', '.join(missing)} "
                                     f"(needs {', '.join(NPZ_KEYS)})")
            arrays = {k: data[k] for k in NPZ_KEYS}
    except (OSError, ValueError) as exc:
        raise EdgebenchError(f"cannot read data file {path}: {exc}") from None
    for split in ("train", "test"):
        if len(arrays[f"x_{split}"]) != len(arrays[f"y_{split}"]):
            raise EdgebenchError(f"data file {path}: x_{split} and y_{split} differ in length")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise EdgebenchError(f"data file {path}: x_train {list(arrays['x_train'].shape)} and x_test "
                             f"{list(arrays['x_test'].shape)} differ after the batch dimension")
    y = np.concatenate([arrays["y_train"], arrays["y_test"]]).astype(np.int64)
    n_classes = int(y.max()) + 1 if len(y) else 0
    return Dataset(name=name or path.stem, x_train=arrays["x_train"].astype(np.float32),
                   y_train=arrays["y_train"].astype(np.int64), x_test=arrays["x_test"].astype(np.float32),
                   y_test=arrays["y_test"].astype(np.int64), labels=tuple(str(i) for i in range(n_classes)),
                   preprocessing=f"as stored in {path.name}")


def _dataset(config: dict, base_dir: Path) -> Dataset:
    from edgebench.train.registry import load_dataset

    data = config.get("data")
    if isinstance(data, str):
        path = Path(data).expanduser()
        return load_npz_dataset(path if path.is_absolute() else Path(base_dir) / path)
    return load_dataset(config["dataset"], data or {})


def build_user_module(config: dict, dataset: Dataset, where: str = "model") -> torch.nn.Module:
    fn = import_factory(config["factory"], Path(config["base_dir"]))
    kwargs = dict(config.get("model") or {})
    check_kwargs(fn, kwargs, where)
    try:
        module = fn(**kwargs)
    except Exception as exc:
        raise EdgebenchError(f"factory '{config['factory']}' failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(module, torch.nn.Module):
        raise EdgebenchError(f"factory '{config['factory']}' returned {type(module).__name__}, not a torch.nn.Module")
    # Labels outside the model's classes would train and score nonsense: refuse them before any work.
    module.eval()
    with torch.no_grad():
        try:
            out = module(torch.from_numpy(dataset.x_test[:1].astype(np.float32)))
        except Exception as exc:
            raise EdgebenchError(f"model from '{config['factory']}' does not accept the data's input "
                                 f"{list(dataset.x_test.shape[1:])}: {type(exc).__name__}: {exc}") from None
    n_out = int(out.reshape(1, -1).shape[1])
    if len(dataset.labels) > n_out:
        raise EdgebenchError(f"the data has labels up to {len(dataset.labels) - 1} but the model from "
                             f"'{config['factory']}' outputs {n_out} classes")
    return module


def load_state(module: torch.nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise EdgebenchError(f"checkpoint not found: {path}") from None
    except Exception as exc:
        raise EdgebenchError(f"cannot read checkpoint {path}: {first_line(exc)}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        module.load_state_dict(state)
    except Exception as exc:
        raise EdgebenchError(f"checkpoint {path} does not fit the model: {first_line(exc)}") from None


def user_config(spec, base_dir: Path) -> dict:
    """What a checkpoint of a user model carries so it can be rebuilt (resume, `edgebench export`)."""
    return {"factory": spec.factory, "base_dir": str(Path(base_dir).resolve()), "model": dict(spec.model),
            "data": spec.data, "dataset": spec.dataset,
            "train": spec.train if isinstance(spec.train, dict) else False, "checkpoint": spec.checkpoint}


def train_user_model(name: str, config: dict, progress: bool = True) -> Trained:
    from edgebench.train.trainer import TrainConfig, evaluate, fit

    dataset = _dataset(config, Path(config["base_dir"]))
    tcfg = TrainConfig.from_dict(config["train"] if isinstance(config["train"], dict) else {})
    seed_everything(tcfg.seed)
    module = build_user_module(config, dataset)
    if config.get("checkpoint"):
        ckpt = Path(config["checkpoint"]).expanduser()
        load_state(module, ckpt if ckpt.is_absolute() else Path(config["base_dir"]) / ckpt)
    if config["train"] is False:
        metrics = {"test_accuracy": evaluate(module, dataset.x_test, dataset.y_test), "trained": False}
    else:
        metrics = fit(module, dataset, tcfg, progress=progress, description=f"train {name}")
    module.eval()
    return Trained(name=name, kind="python", module=module, dataset=dataset, config=config, metrics=metrics)


def rebuild(config: dict) -> tuple[torch.nn.Module, Dataset]:
    """The module (untrained) and data of a user model from the config its checkpoint carries."""
    dataset = _dataset(config, Path(config["base_dir"]))
    return build_user_module(config, dataset), dataset
