"""How much does edgebench's harness add to what it measures, and how repeatable is it?

For two models (about 0.05 ms and 1-5 ms per inference on this machine) this script, in one run:
  * times a bare onnxruntime loop (a fresh Python process, the same session options and threads, the same
    perf_counter_ns around each `session.run`), and
  * runs `edgebench bench` (library call `edgebench.bench`: describe, bundle, local device subprocess, record),
interleaving the two REPEATS times, and prints
  ratio = median(edgebench p50s) / median(bare p50s)        target <= 1.02 for the larger model
  cv    = std / mean of the edgebench p50 over the repeats     target <= 3%

Ratios only: absolute times on a shared machine mean little. Run: python benchmarks/harness_overhead.py
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from edgebench.export.onnx import export_onnx
from edgebench.api import bench

BARE_LOOP = r"""
import json, sys, time
import numpy as np, onnxruntime as ort
path, runs, warmup, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
inp = sess.get_inputs()[0]
shape = [d if isinstance(d, int) else 1 for d in inp.shape]
feed = {inp.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
names = [o.name for o in sess.get_outputs()]
for _ in range(warmup):
    sess.run(names, feed)
samples = []
for _ in range(runs):
    t0 = time.perf_counter_ns()
    sess.run(names, feed)
    samples.append(time.perf_counter_ns() - t0)
samples.sort()
print(json.dumps({"p50_ms": samples[len(samples) // 2] / 1e6}))
"""


def small_model() -> tuple[nn.Module, torch.Tensor]:
    """About 0.05 ms: an MLP on a 128-vector."""
    return nn.Sequential(nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)), \
        torch.zeros(1, 128)


def large_model() -> tuple[nn.Module, torch.Tensor]:
    """About 1-5 ms: a CNN on a 3x64x64 image."""
    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 16 * 16, 10))
    return net, torch.zeros(1, 3, 64, 64)


def bare_p50(path: Path, runs: int, warmup: int, threads: int, core: int | None) -> float:
    cmd = [sys.executable, "-c", BARE_LOOP, str(path), str(runs), str(warmup), str(threads)]
    if core is not None:
        cmd = ["taskset", "-c", str(core), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["p50_ms"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--core", type=int, default=1 if (os.cpu_count() or 1) > 1 else None,
                    help="pin both the bare loop and edgebench's runner to this core (default 1; -1: no pinning)")
    args = ap.parse_args()
    core = None if args.core is None or args.core < 0 else args.core
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        devices = tmp / "devices.toml"
        devices.write_text("[devices.bench]\nkind = 'local'\n" + (f"cores = [{core}]\n" if core is not None else ""))
        for label, (net, example), runs in (("small", small_model(), 3000), ("large", large_model(), 300)):
            path = export_onnx(net.eval(), example, tmp / f"{label}.onnx")
            warmup = runs // 10

            bare, eb = [], []
            for _ in range(args.repeats):  # interleaved, so drift on the machine hits both alike
                bare.append(bare_p50(path, runs, warmup, args.threads, core))
                rec = bench(path, device="bench", runs=runs, warmup=warmup, threads=args.threads,
                            store=tmp / "store.sqlite", devices_file=devices)
                assert rec.status == "ok", rec.error
                eb.append(rec.latency_ms["p50"])
            ratio = statistics.median(eb) / statistics.median(bare)
            cv = statistics.stdev(eb) / statistics.mean(eb)
            print(f"{label}: model p50 {statistics.median(eb):.4f} ms (edgebench) vs {statistics.median(bare):.4f} ms "
                  f"(bare onnxruntime loop), {runs} runs x {args.repeats} repeats, threads={args.threads}, "
                  f"core={core if core is not None else 'any'}")
            print(f"{label}: ratio edgebench/bare = {ratio:.3f}   (target <= 1.02 for the large model)")
            print(f"{label}: cv of edgebench p50 over {args.repeats} bench runs = {cv:.2%}   (target <= 3%)")


if __name__ == "__main__":
    main()
