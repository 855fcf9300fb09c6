"""The OFA job's deployment: its exports, made before any device measures in worker processes (one per core),
and its measurements, recorded per device in the order asked (_Benches).

Nothing is timed while they run: every latency table is built first, then every subnet the devices deploy is
extracted, BN recalibrated and exported (each format and precision, INT8 from the same subnet's fp32 file) in
a pool of processes, then the devices measure the files one after the other. An export converts and
validates; it times nothing, so running two at once changes no figure.
Each worker loads the supernet checkpoint and the data once and exports whole subnets with the job's own code
(search/ofa_job.py `_Exports`), on one torch thread. A worker that dies fails its subnet's files as a failed
export does, and the job measures the rest.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

_WORKER: dict = {}


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _start(job, ckpt: str) -> None:
    from dataclasses import asdict

    import torch

    from edgebench.search import ofa_job
    from edgebench.train.ofa_train import load_supernet

    torch.set_num_threads(1)  # one process per core
    net, _ = load_supernet(Path(ckpt))
    ds, _, _ = ofa_job.load_data(asdict(job.data))
    _WORKER["exports"] = ofa_job._Exports(job, net, ds)


def _export_subnet(arch: dict, name: str, wanted: list) -> tuple:
    """(the subnet's Trained, {(fmt, prec): Artifact or the export error's text}) in a worker."""
    from edgebench.export.errors import ExportError

    exports = _WORKER["exports"]
    files = {}
    for fmt, prec in wanted:
        try:
            files[(fmt, prec)], _ = exports.get(arch, fmt, prec, name)
        except ExportError as exc:
            files[(fmt, prec)] = str(exc)
    return exports.subnets.get(json.dumps(arch, sort_keys=True)), files


def export_ahead(exports, items: list, ckpt: Path, workers: int, log) -> None:
    """Fill `exports` (ofa_job._Exports) with every (arch, name, [(fmt, prec), ...]) of `items`, in `workers`
    processes (with fewer than 2, nothing: the job exports on demand). A failed export is kept as an ExportError."""
    from edgebench.export.errors import ExportError

    by_arch: dict = {}  # the first name that asks names the files (as _Exports.get does)
    for arch, name, wanted in items:
        key = json.dumps(arch, sort_keys=True)
        _, _, missing = by_arch.setdefault(key, (arch, name, []))
        missing.extend(w for w in wanted if (key, *w) not in exports.done and w not in missing)
    todo = [entry for entry in by_arch.values() if entry[2]]
    if not todo:
        return
    workers = min(int(workers), len(todo))
    if workers < 2:  # nothing to gain: the job exports each file in its own process when a device first asks
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from edgebench.types import first_line

    log(f"exporting {len(todo)} subnets in {workers} worker processes before any device measures")
    ctx = multiprocessing.get_context("spawn")  # a fork of a process holding torch's threads can hang
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_start,
                             initargs=(exports.job, str(ckpt))) as pool:
        futures = [(arch, wanted, pool.submit(_export_subnet, arch, name, wanted)) for arch, name, wanted in todo]
        for arch, wanted, fut in futures:
            try:
                trained, files = fut.result()
            except BrokenProcessPool as exc:  # a worker died (a converter crashed, out of memory): those
                # files fail as exports do, and the job goes on measuring the others
                why = f"an export worker process ended before its files were made ({first_line(exc) or 'killed'})"
                trained, files = None, {tuple(w): why for w in wanted}
            key = json.dumps(arch, sort_keys=True)
            if trained is not None:
                exports.subnets[key] = trained
            for (fmt, prec), got in files.items():
                exports.done[(key, fmt, prec)] = ExportError(got) if isinstance(got, str) else got


class _Benches:
    """The device measurements of one device, recorded in the order they were asked for. On an emulated device
    up to `parallel` run at once in background threads: its counted instructions do not depend on the load, and
    its wall time under qemu is never a latency. Any other device measures alone."""

    def __init__(self, store, run_id: str, device, table, parallel: int, log):
        from concurrent.futures import ThreadPoolExecutor

        self.store, self.run_id, self.device, self.table, self.log = store, run_id, device, table, log
        self.pool = ThreadPoolExecutor(max_workers=parallel) if parallel > 1 else None
        self.pending: list = []

    def submit(self, artifact, budget, key: str, fn, *args) -> None:
        if self.pool is None:
            self._record(artifact, budget, key, fn(*args))
            return
        self.pending.append((artifact, budget, key, self.pool.submit(fn, *args)))
        self._collect(wait=False)

    def drain(self) -> None:
        self._collect(wait=True)
        if self.pool is not None:
            self.pool.shutdown()

    def _collect(self, wait: bool) -> None:
        while self.pending and (wait or self.pending[0][-1].done()):
            *head, fut = self.pending.pop(0)
            self._record(*head, fut.result())

    def _record(self, a, budget, key: str, m) -> None:
        from edgebench.reports.record import Record
        from edgebench.search.ofa_job import _measured_point

        rec = Record.from_parts(self.run_id, a, m, self.device.kind)
        if budget is not None:
            point = _measured_point(rec, self.table)
            rec.extra["latency_budget_met"] = None if point["latency_ms"] is None else bool(point["latency_ms"] <= budget)
        self.store.append(rec, key)
        if not m.ok:
            self.log(f"  {key} failed: {m.error}")
