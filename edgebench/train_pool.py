"""The run's built-in models trained side by side, one worker process per core (edgebench/train_worker.py), each
handed to the run as its worker ends so that it is exported while the others still train; and a thread that
imports what loading and exporting need meanwhile. Used by edgebench/pipeline.py."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from edgebench.config import RunConfig


def train_in_workers(cfg: RunConfig, out: Path, resumed: bool, log, progress: bool = False):
    """Train the run's built-in models side by side, one worker process per core (edgebench/train_worker.py).
    A generator: yields (name, checkpoint) as each worker finishes, so the run exports a trained model while the
    others still train (nothing is timed until every model is trained). The main job's three models train in
    about the time of the slowest instead of the sum. A model whose worker failed is yielded with checkpoint None
    and trained again in this process, which then reports its error as usual. Nothing is yielded when workers
    do not pay (one model, one core, every checkpoint of a resumed run already there)."""
    import os
    import queue
    import threading

    ckpts = {m.name: out / "checkpoints" / f"{m.name}.pt" for m in cfg.models}
    todo = [m for m in cfg.models if m.kind not in ("python", "hf") and not (resumed and ckpts[m.name].exists())]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers, threads = min(len(todo), cores), max(1, cores // max(1, min(len(todo), cores)))
    if workers < 2:
        return
    log(f"training {len(todo)} models in {workers} worker processes ({threads} thread(s) each)")
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    finished, stop = queue.Queue(), threading.Event()
    with tempfile.TemporaryDirectory(prefix="edgebench-train-") as tmp, \
            Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True,
                     disable=not progress) as bar:
        # a thread keeps both cores busy (starts the next worker as one ends) while the caller exports
        manager = threading.Thread(target=_manage_workers, daemon=True,
                                   args=(todo, ckpts, workers, threads, Path(tmp), bar, finished, stop))
        manager.start()
        try:
            while (item := finished.get()) is not None:
                name, ckpt, message = item
                log(message)
                yield name, ckpt
        finally:  # the caller stopped or failed: no worker outlives the run
            stop.set()
            manager.join()


def _manage_workers(todo: list, ckpts: dict, workers: int, threads: int, tmp: Path, bar, finished, stop) -> None:
    """The worker pool behind train_in_workers: puts (name, checkpoint or None, log line) on `finished` as each
    worker ends, then None."""
    import json
    import subprocess
    import sys

    running, pending = {}, list(todo)
    try:
        while (pending or running) and not stop.is_set():
            while pending and len(running) < workers:
                m = pending.pop(0)
                spec = tmp / f"{m.name}.json"
                spec.write_text(json.dumps({"name": m.name, "kind": m.kind, "dataset": m.dataset, "model": m.model,
                                            "train": m.train, "data": m.data, "threads": threads,
                                            "checkpoint": str(ckpts[m.name])}))
                err = open(tmp / f"{m.name}.err", "w+")
                proc = subprocess.Popen([sys.executable, "-m", "edgebench.train_worker", str(spec)],
                                        stdout=subprocess.DEVNULL, stderr=err)
                running[m.name] = (proc, err, time.perf_counter(), bar.add_task(f"train {m.name}", total=None))
            time.sleep(0.1)
            for name, (proc, err, t0, task) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                bar.remove_task(task)
                err.seek(0)
                lines = [line for line in err.read().splitlines() if line.strip()]
                err.close()
                if proc.returncode == 0 and ckpts[name].exists():
                    finished.put((name, ckpts[name],
                                  f"{name}: trained in a worker process in {time.perf_counter() - t0:.1f} s"))
                else:
                    why = lines[-1] if lines else f"exit status {proc.returncode}"
                    finished.put((name, None, f"{name}: training in a worker process failed ({why}); "
                                              "training it here"))
    finally:
        for proc, err, _t0, _task in running.values():
            proc.kill()
            proc.wait()
            err.close()
        finished.put(None)


def warm_imports(cfg: RunConfig):
    """A thread that imports what loading a checkpoint and exporting need (torch, onnx, onnxruntime,
    litert-torch, a dataset's loader: about 8 s here) while the workers train, so the first export does not
    wait for it. Join it before exporting: the TFLite stack's import silences fd 2 for a moment, which must not
    overlap an export's own silencing."""
    import importlib
    import threading

    tflite = "tflite" in cfg.export.formats or any(
        "tflite" in (*m.step_formats, *(m.prune_formats if m.prune else ())) for m in cfg.models)
    basicmotions = any(m.dataset == "basicmotions" for m in cfg.models)

    def warm():
        try:
            for name in ("torch", "onnx", "onnxruntime"):
                importlib.import_module(name)
            # loading a checkpoint rebuilds its dataset: BasicMotions is read from sktime's files without importing
            # sktime, unless they are not where train/har.py looks (then sktime's loader: 2 s to import here)
            from edgebench.train.har import basic_motions_files

            if basicmotions and basic_motions_files() is None:
                importlib.import_module("sktime.datasets")
            if tflite:
                from edgebench.export.tflite import _import_litert_torch

                _import_litert_torch()
        except Exception:  # noqa: BLE001 - only a head start: the export's own import reports any error
            pass

    thread = threading.Thread(target=warm, daemon=True, name="edgebench-warm-imports")
    thread.start()
    return thread
