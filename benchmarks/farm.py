"""The Ray farm against the one-process sweep, measured in one run.

4 models (digits CNNs of 4 widths, ONNX fp32) x 3 devices (two local devices pinned to cores 0 and 1, and
pi4-emulated): the same measure step once sequentially and once on a local Ray instance. Prints Ray's
start-up on its own line, whether any device's job intervals overlap (they must not) and whether jobs on
different devices overlap (they should), and as the last line the wall-time ratio ray / sequential.

What the ratio can reach depends on the mix: a farm's wall time is at least its busiest device's, so the script
also prints each device's share of the sequential sweep and that bound. `--min-time` (seconds each job keeps
measuring on a real device, as a benchmark of a small model usually does to steady its figures) sets the local
devices' share; pi4-emulated ignores it (its runs are capped, its figure is an instruction count). With
`--min-time 0` the emulated device is most of the sequential sweep, and no schedule can do much better than it.
This machine has 2 cores for 3 devices: the two pinned local runners and qemu share them.

    python benchmarks/farm.py [--devices core0,core1,pi4-emulated] [--runs 100] [--min-time 4]
                              [--widths 16,32,48,64] [--eval]

The defaults are a latency sweep (no accuracy pass) whose three devices carry comparable shares (about 15, 15
and 20 s sequentially on this machine). With the accuracy pass on (`--eval`), qemu running the eval set makes
pi4-emulated most of the sweep, and the ratio is bounded by its share.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    from edgebench.devices.registry import get_device
    from edgebench.farm import measure_step, start
    from edgebench.pipeline import Job, _measure_step, export_artifact
    from edgebench.reports.store import Store
    from edgebench.train.registry import train_model
    from edgebench.types import Format, Precision, RunSpec

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="core0,core1,pi4-emulated")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--min-time", type=float, default=4.0, help="seconds each job measures at least (real devices)")
    ap.add_argument("--widths", default="16,32,48,64", help="widths of the 4 digits CNNs")
    ap.add_argument("--eval", action=argparse.BooleanOptionalAction, default=False,
                    help="accuracy pass on every device (under emulation it is most of a job's time)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgebench-farm-bench-") as tmp:
        tmp = Path(tmp)
        devices_file = tmp / "devices.toml"
        devices_file.write_text('[devices.core0]\nkind = "local"\ncores = [0]\n'
                                '[devices.core1]\nkind = "local"\ncores = [1]\n')
        devices = [get_device(n, devices_file) for n in args.devices.split(",")]
        for d in devices:
            d.setup()
        jobs = []
        for width in (int(w) for w in args.widths.split(",")):
            t = train_model(f"cnn{width}", "cnn", "digits", {"width": width}, {"epochs": 1}, progress=False)
            a = export_artifact(t, Format.ONNX, Precision.FP32, tmp / "art", 17, 1e-4)
            jobs.append(Job(a, t.dataset.x_test, t.dataset.y_test, t.dataset.preprocessing))
        spec = RunSpec(runs=args.runs, warmup=10, threads=1, min_time_s=args.min_time, eval=args.eval)
        quiet = lambda *a: None  # noqa: E731
        busy = {d.name: 0.0 for d in devices}

        def timed_run(d, run):
            def run_and_time(*a, **k):
                t = time.perf_counter()
                try:
                    return run(*a, **k)
                finally:
                    busy[d.name] += time.perf_counter() - t
            return run_and_time

        for d in devices:
            d.run = timed_run(d, d.run)
        with Store(tmp / "seq.sqlite") as store:
            store.begin_run("seq", "seq", {})
            t0 = time.perf_counter()
            _measure_step(jobs, devices, spec, store, "seq", set(), quiet, False)
            sequential = time.perf_counter() - t0
        ray, _, startup = start(devices, log=quiet)
        print(f"ray start-up: {startup:.2f} s (local instance, {len(devices)} device resources)")
        with Store(tmp / "ray.sqlite") as store:
            store.begin_run("ray", "ray", {})
            t0 = time.perf_counter()
            measure_step(jobs, devices, spec, store, "ray", set(), quiet, False, devices_file=str(devices_file))
            farm = time.perf_counter() - t0
            records = store.query(run_id="ray")
        ray.shutdown()
    spans: dict = {}
    for r in records:
        f = r.extra["farm"]
        spans.setdefault(r.device, []).append((f["started_s"], f["ended_s"]))
    same = any(a[1] > b[0] for s in spans.values() for a, b in zip(sorted(s), sorted(s)[1:]))
    every = sorted(x for s in spans.values() for x in s)
    across = any(a[1] > b[0] for a, b in zip(every, every[1:]))
    print(f"records: {len(records)} ({sum(r.status == 'ok' for r in records)} ok)")
    print(f"jobs on one device overlapping: {'YES (a defect)' if same else 'never'}; "
          f"jobs on different devices overlapping: {'yes' if across else 'no'}")
    print("sequential sweep, time on each device: " + ", ".join(f"{n} {t:.1f} s" for n, t in busy.items()))
    print(f"bound from the busiest device: {max(busy.values()) / sequential:.2f}x the sequential sweep")
    print(f"sequential sweep {sequential:.1f} s, ray sweep {farm:.1f} s (start-up excluded), "
          f"runs {args.runs}, min-time {args.min_time:g} s, load average {os.getloadavg()[0]:.1f}")
    print(f"wall-time ratio ray / sequential: {farm / sequential:.2f}x")


if __name__ == "__main__":
    main()
