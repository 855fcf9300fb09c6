"""What INT8 costs in accuracy and buys in speed, per runtime, measured in one run on the local device.

For the example digits CNN (width 16) and a wider one (width 64), both trained the same way, this script
exports ONNX and TFLite at fp32, int8 (static, calibrated) and int8-dynamic, benchmarks every artifact on the
local device REPEATS times interleaved (so drift on this shared machine hits all alike), and prints
  latency ratio  = median p50(int8 variant) / median p50(fp32 twin of the same runtime)
  accuracy delta = accuracy on the device (int8 variant) - accuracy on the device (fp32 twin)
Ratios only: absolute times on a shared machine mean little. Run: python benchmarks/quantization.py
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from edgebench.deploy.bundle import make_bundle
from edgebench.devices.local import LocalDevice
from edgebench.pipeline import export_artifact
from edgebench.train.registry import train_model
from edgebench.types import Format, Precision, RunSpec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    device = LocalDevice()
    spec = RunSpec(runs=args.runs, warmup=args.runs // 10, threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for width in (16, 64):
            trained = train_model(f"cnn{width}", "cnn", "digits", {"width": width}, {"epochs": 15}, progress=False)
            bundles = {}
            fp32_onnx = fp32_tflite = None
            for fmt in (Format.ONNX, Format.TFLITE):
                for prec in (Precision.FP32, Precision.INT8, Precision.INT8_DYNAMIC):
                    a = export_artifact(trained, fmt, prec, tmp / "art", 17, 1e-4, fp32_onnx, fp32_tflite)
                    if prec is Precision.FP32:
                        fp32_onnx, fp32_tflite = (a, fp32_tflite) if fmt is Format.ONNX else (fp32_onnx, a)
                    bundles[(fmt, prec)] = (a, make_bundle(a, tmp / f"b-{width}-{a.name}", trained.dataset.x_test,
                                                           trained.dataset.y_test))
            p50s = {k: [] for k in bundles}
            acc = {}
            for _ in range(args.repeats):
                for key, (a, b) in bundles.items():
                    m = device.run(b, spec)
                    assert m.ok, m.error
                    p50s[key].append(sorted(m.samples_ns)[len(m.samples_ns) // 2] / 1e6)
                    acc[key] = m.accuracy
            print(f"cnn width {width}: PyTorch test accuracy {trained.metrics['test_accuracy']:.2%}, "
                  f"{args.runs} runs x {args.repeats} repeats, threads={args.threads}")
            for fmt in (Format.ONNX, Format.TFLITE):
                base = statistics.median(p50s[(fmt, Precision.FP32)])
                print(f"  {fmt.value:6s} fp32          p50 {base:.4f} ms   accuracy {acc[(fmt, Precision.FP32)]:.2%}"
                      f"   size {bundles[(fmt, Precision.FP32)][0].size_bytes:,} B")
                for prec in (Precision.INT8, Precision.INT8_DYNAMIC):
                    p = statistics.median(p50s[(fmt, prec)])
                    d = acc[(fmt, prec)] - acc[(fmt, Precision.FP32)]
                    print(f"  {fmt.value:6s} {prec.value:13s} latency ratio vs fp32 = {p / base:.2f}   "
                          f"accuracy delta = {d * 100:+.2f} pp   size {bundles[(fmt, prec)][0].size_bytes:,} B")


if __name__ == "__main__":
    main()
