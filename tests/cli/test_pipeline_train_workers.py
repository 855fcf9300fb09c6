"""The run's built-in models train side by side in worker processes (one per core), each handed to the run as
its worker ends (so it is exported while the others train); the weights are the ones training in the run's own
process gives, and a model whose worker fails is trained again in the run's process, which reports the error as
usual. Real training, real processes."""
import os

from pathlib import Path

import pytest
import torch

from edgebench import train_pool
from edgebench.config import parse_config
from edgebench.train.base import load_checkpoint
from edgebench.train.registry import train_model

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores")


def _cfg(tmp_path, models):
    return parse_config({"name": "workers", "out_dir": str(tmp_path / "out"), "store": str(tmp_path / "s.sqlite"),
                         "models": models, "export": {"formats": ["onnx"], "precisions": ["fp32"]}})


def _trained(cfg, lines):
    return {name: ckpt for name, ckpt in train_pool.train_in_workers(cfg, cfg.out_path, False, lines.append) if ckpt}


def _cnn(name, width, epochs=1):
    return {"name": name, "kind": "cnn", "dataset": "digits", "model": {"width": width},
            "train": {"epochs": epochs, "seed": 3}}


def test_models_train_in_workers_with_the_weights_of_in_process_training(tmp_path):
    cfg = _cfg(tmp_path, [_cnn("a", 4), _cnn("b", 6)])
    lines = []
    done = _trained(cfg, lines)
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
    done = _trained(cfg, lines)
    assert set(done) == {"good"}
    assert any(line.startswith("bad: training in a worker process failed (") and line.endswith("training it here")
               for line in lines)
    # nothing to gain from workers for one model, or when a resumed run has every checkpoint already
    assert _trained(_cfg(tmp_path / "solo", [_cnn("solo", 4)]), lines) == {}


def test_each_model_is_handed_over_as_its_worker_ends_while_the_others_train(tmp_path):
    # "slow" is killed once "quick" is handed over, so its length costs nothing: 40 epochs had finished in that
    # window once, on a fast CPU while another suite loaded it (quick's worker started late)
    cfg = _cfg(tmp_path, [_cnn("slow", 16, epochs=2000), _cnn("quick", 4)])
    lines = []
    workers = train_pool.train_in_workers(cfg, cfg.out_path, False, lines.append)
    name, ckpt = next(workers)
    assert name == "quick" and ckpt.exists()
    slow = cfg.out_path / "checkpoints" / "slow.pt"
    assert not slow.exists() and _worker_children()  # still training in its worker while the caller has "quick"
    workers.close()  # the caller stops early (an error, Ctrl-C): the slow worker is killed, not left running
    assert not slow.exists()
    assert not _worker_children()


def _worker_children() -> list:
    """This process's children that run edgebench.train_worker (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmd = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # ended while being read
        if ppid == os.getpid() and b"edgebench.train_worker" in cmd:
            found.append(stat.parent.name)
    return found


@pytest.mark.parametrize("formats,litert", [(["onnx", "tflite"], True), (["onnx"], False)])
def test_the_export_stack_is_imported_while_the_workers_train(tmp_path, formats, litert):
    """warm_imports gives the first export a head start: torch, onnx and onnxruntime, and litert-torch only
    when a model exports TFLite. In a fresh interpreter, so that nothing is imported already."""
    import json
    import subprocess
    import sys

    code = f"""
import json, sys
from edgebench import train_pool
before = {{m: m in sys.modules for m in ("torch", "onnxruntime", "litert_torch")}}
from edgebench.config import parse_config
cfg = parse_config({{"name": "w", "models": [{{"name": "a", "kind": "cnn", "dataset": "digits"}}],
                    "export": {{"formats": {formats!r}, "precisions": ["fp32"]}}}})
train_pool.warm_imports(cfg).join()
print(json.dumps([before, {{m: m in sys.modules for m in ("torch", "onnxruntime", "litert_torch")}}]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert not any(before.values())  # nothing of it before (the config may import torch, not the rest)
    assert after == {"torch": True, "onnxruntime": True, "litert_torch": litert}
