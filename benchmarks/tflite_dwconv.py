"""LiteRT's default XNNPACK delegate against its builtin kernels on depthwise convolutions of growing kernel size.

Why: OFA subnets have 7x7 depthwise kernels, and their TFLite files (fp32 and INT8) ran far slower than the
ONNX twins on this machine. For each kernel size K this script builds one layer pair as the OFA blocks use it
(1x1 conv 1 -> C channels, then a K x K depthwise conv with 'same' padding, ReLU; 28 x 28 input), exports it
with edgebench's TFLite path (fp32, and static INT8 calibrated on random inputs), and times it in one process
with the interpreter as the runner creates it (default delegates: XNNPACK) and without default delegates
(TFLite's builtin kernels), REPEATS x interleaved. It prints, per K and precision,
  xnnpack / builtin  = median p50 with XNNPACK / median p50 with the builtin kernels
  K / 5 (xnnpack)    = median p50 at K / median p50 at K = 5, both with XNNPACK
Ratios only: absolute times on a shared machine mean little.
With --pi4-emulated it also counts guest instructions per inference of the XNNPACK runs on the emulated
Cortex-A72 (deterministic, so one run each) and prints K / 5 for them.
Run: python benchmarks/tflite_dwconv.py [--kernels 3,5,7] [--channels 96] [--pi4-emulated]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def layer(k: int, channels: int):
    from torch import nn

    return nn.Sequential(nn.Conv2d(1, channels, 1), nn.Conv2d(channels, channels, k, padding=k // 2,
                                                                groups=channels), nn.ReLU()).eval()


def p50_ms(path: Path, builtin: bool, runs: int) -> float:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if builtin else OpResolverType.AUTO
    it = Interpreter(model_path=str(path), num_threads=1, experimental_op_resolver_type=kind)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    for _ in range(10):
        it.invoke()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def instructions(path: Path) -> float | None:
    out = subprocess.run([sys.executable, "-m", "edgebench.cli", "bench", str(path), "--device", "pi4-emulated",
                          "--runs", "3", "--json"], capture_output=True, text=True, timeout=900)
    try:
        return json.loads(out.stdout).get("instructions_per_inference")
    except json.JSONDecodeError:
        print(f"  {path.name}: pi4-emulated bench failed: {out.stderr.strip().splitlines()[-1:]}")
        return None


def main() -> None:
    import torch

    from edgebench.export.tflite import convert_tflite
    from edgebench.types import Precision

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", default="3,5,7", help="depthwise kernel sizes (5 is the reference)")
    ap.add_argument("--channels", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--pi4-emulated", action="store_true", help="also count guest instructions (slow)")
    args = ap.parse_args()
    kernels = sorted({int(k) for k in args.kernels.split(",")} | {5})
    torch.manual_seed(0)
    calib = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="edgebench-dwconv-") as tmp:
        files = {}
        for k in kernels:
            m = layer(k, args.channels)
            for prec in (Precision.FP32, Precision.INT8):
                files[k, prec.value] = convert_tflite(m, torch.from_numpy(calib[:1]), Path(tmp) / f"dw{k}-{prec.value}.tflite",
                                                      prec, calib)
        p50 = {key: {False: [], True: []} for key in files}
        for _ in range(args.repeats):
            for key, path in files.items():
                for builtin in (False, True):
                    p50[key][builtin].append(p50_ms(path, builtin, args.runs))
        med = {key: {b: statistics.median(v) for b, v in d.items()} for key, d in p50.items()}
        ins = {key: instructions(path) for key, path in files.items()} if args.pi4_emulated else {}
    print(f"depthwise K x K on 28 x 28 x {args.channels}, 1 thread, LiteRT default (XNNPACK) vs builtin kernels, "
          f"median of {args.repeats} x {args.runs} runs")
    for prec in ("fp32", "int8"):
        for k in kernels:
            m = med[k, prec]
            line = (f"  {prec:4s} K={k}: xnnpack / builtin {m[False] / m[True]:6.2f}x   "
                    f"K / 5 (xnnpack) {m[False] / med[5, prec][False]:6.2f}x")
            if ins.get((k, prec)) and ins.get((5, prec)):
                line += f"   K / 5 (pi4-emulated instructions) {ins[k, prec] / ins[5, prec]:6.2f}x"
            print(line)


if __name__ == "__main__":
    main()
