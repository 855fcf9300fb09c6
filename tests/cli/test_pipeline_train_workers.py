"""The run's built-in models train side by side in worker processes (one per core) before exports and
measurements; the weights are the ones training in the run's own process gives, and a model whose worker
fails is trained again in the run's process, which reports the error as usual. Real training, real processes."""
import os

import pytest
import torch

from edgebench import pipeline
from edgebench.config import parse_config
from edgebench.train.base import load_checkpoint
from edgebench.train.registry import train_model

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores")


def _cfg(tmp_path, models):
    return parse_config({"name": "workers", "out_dir": str(tmp_path / "out"), "store": str(tmp_path / "s.sqlite"),
                         "models": models, "export": {"formats": ["onnx"], "precisions": ["fp32"]}})


def _cnn(name, width, epochs=1):
    return {"name": name, "kind": "cnn", "dataset": "digits", "model": {"width": width},
            "train": {"epochs": epochs, "seed": 3}}


def test_models_train_in_workers_with_the_weights_of_in_process_training(tmp_path):
    cfg = _cfg(tmp_path, [_cnn("a", 4), _cnn("b", 6)])
    lines = []
    done = pipeline._train_in_workers(cfg, cfg.out_path, resumed=False, log=lines.append)
    assert set(done) == {"a", "b"} and all(p.exists() for p in done.values())
    assert lines[0] == "training 2 models in 2 worker processes (1 thread(s) each)"
    assert sorted(line.split(":")[0] for line in lines[1:]) == ["a", "b"]
    torch.set_num_threads(1)
    here = train_model("b", "cnn", "digits", {"width": 6}, {"epochs": 1, "seed": 3}, {}, progress=False)
    there = load_checkpoint(done["b"])
    assert there.metrics["test_accuracy"] == here.metrics["test_accuracy"]
    for (k, v), (_, w) in zip(here.module.state_dict().items(), there.module.state_dict().items()):
        assert torch.equal(v, w), k


def test_a_failed_worker_leaves_the_model_to_the_run_process(tmp_path):
    cfg = _cfg(tmp_path, [_cnn("good", 4), _cnn("bad", 4)])
    cfg.models[1].train["lr"] = -1.0  # past the config check: the worker's training raises
    lines = []
    done = pipeline._train_in_workers(cfg, cfg.out_path, resumed=False, log=lines.append)
    assert set(done) == {"good"}
    assert any(line.startswith("bad: training in a worker process failed (") and line.endswith("training it here")
               for line in lines)
    # nothing to gain from workers for one model, or when a resumed run has every checkpoint already
    assert pipeline._train_in_workers(_cfg(tmp_path, [_cnn("solo", 4)]), cfg.out_path, False, lines.append) == {}
