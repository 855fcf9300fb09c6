"""A device farm on Ray: each device is a Ray custom resource of capacity one (`edgebench-device:NAME`), so
two jobs never share a board while different boards run at once.

The driver keeps every decision and the single store writer: it bundles each artifact once, ships the
bundle to a task that holds the device's resource, and appends each record as its result streams back
(ray.wait). A killed driver or worker loses nothing that was stored: the next `edgebench run` resumes from the
store's done keys as the one-process sweep does. `ray.init()` starts a local instance by default (the
devices' resources declared on it); an address (`auto`, `ray://host:10001`) joins a cluster whose nodes
declare the resources of the boards they reach (`ray start --resources='{"edgebench-device:pi4": 1}'`).
Ray is imported only here, only when a farm is asked for (`pip install 'edgebench[farm]'`).
"""
from __future__ import annotations

import io
import os
import tarfile
import tempfile
import time
from pathlib import Path

from edgebench.types import EdgebenchError, RunSpec

RESOURCE_PREFIX = "edgebench-device:"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise EdgebenchError("the Ray farm needs Ray: pip install 'edgebench[farm]'") from None
    return ray


def _tar(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(folder), arcname="bundle")
    return buf.getvalue()


def _run_remote(device_name: str, devices_file: str | None, bundle_tar: bytes, spec: RunSpec):
    """In a Ray worker: unpack the bundle, run it on the device, return the Measurement and the interval."""
    from edgebench.deploy.bundle import Bundle
    from edgebench.devices.registry import get_device

    device = get_device(device_name, devices_file)
    with tempfile.TemporaryDirectory(prefix="edgebench-farm-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(bundle_tar)) as tar:
            tar.extractall(tmp, filter="data")
        started = time.time()
        m = device.run(Bundle.load(Path(tmp) / "bundle"), spec)
        ended = time.time()
    m.extra["farm"] = {"engine": "ray", "started_s": started, "ended_s": ended, "worker_pid": os.getpid(),
                       "node": os.uname().nodename}
    return m


def start(devices, address: str = "", log=print) -> tuple[object, bool, float]:
    """(ray, started_here, start-up seconds). A local instance declares one resource per device."""
    ray = _import_ray()
    t0 = time.perf_counter()
    if ray.is_initialized():
        return ray, False, 0.0
    resources = {f"{RESOURCE_PREFIX}{d.name}": 1 for d in devices}
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        have = ray.cluster_resources()
        missing = [r for r in resources if have.get(r, 0) < 1]
        if missing:
            ray.shutdown()
            raise EdgebenchError(f"the Ray cluster at {address} has no resource for {', '.join(missing)}: start "
                                 f"the node that reaches each board with ray start --resources='{{\"{missing[0]}\": 1}}'")
    else:
        ray.init(num_cpus=os.cpu_count() or 1, resources=resources, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    startup = time.perf_counter() - t0
    log(f"ray: {'joined ' + address if address else 'local instance'} in {startup:.1f} s "
        f"({len(resources)} device resources)")
    return ray, True, startup


def measure_step(jobs: list, devices, spec: RunSpec, store, run_id: str, done: set, log, progress: bool,
                 address: str = "", devices_file: str | None = None) -> int:
    """The pipeline's measure step on Ray: the same jobs, bundles, records and store; one bar per device."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgebench.api import record_of
    from edgebench.deploy.bundle import make_bundle
    from edgebench.devices.registry import devices_file as find_devices_file

    ray, started_here, _ = start(devices, address, log)
    found = find_devices_file(devices_file) if devices_file else find_devices_file(None)
    devices_path = str(Path(found).resolve()) if found else None
    remote = ray.remote(_run_remote)
    skipped = 0
    pending = {}
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      disable=not progress) as bar, tempfile.TemporaryDirectory(prefix="edgebench-bundles-") as tmp:
            tasks = {d.name: bar.add_task(f"ray {d.name}", total=len(jobs)) for d in devices}
            for job in jobs:
                todo = [d for d in devices if f"{job.artifact.name}@{d.name}" not in done]
                for d in devices:
                    if d not in todo:
                        skipped += 1
                        bar.update(tasks[d.name], advance=1)
                if not todo:
                    continue
                bundle = make_bundle(job.artifact, Path(tmp) / job.artifact.name, job.eval_x, job.eval_y,
                                     job.preprocessing, shapes=job.shapes, inputs=job.inputs)
                ref = ray.put(_tar(bundle.path))
                for d in todo:
                    fut = remote.options(num_cpus=0, resources={f"{RESOURCE_PREFIX}{d.name}": 1}).remote(
                        d.name, devices_path, ref, spec)
                    pending[fut] = (job, bundle, d)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                job, bundle, d = pending.pop(ready[0])
                key = f"{job.artifact.name}@{d.name}"
                try:
                    m = ray.get(ready[0])
                except Exception as exc:  # a worker that died: a failed measurement, the sweep goes on
                    from edgebench.types import Measurement

                    m = Measurement.failed(d.name, d.provenance, f"ray task failed: {type(exc).__name__}: "
                                           f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}")
                record = record_of(run_id, job.artifact, bundle, m, d)
                store.append(record, key)  # the driver is the store's single writer
                if record.status != "ok":
                    log(f"  {key} failed: {record.error}")
                bar.update(tasks[d.name], advance=1)
    finally:
        if started_here:
            ray.shutdown()
    return skipped
