"""Static ONNX INT8 with int8 (S8S8) or uint8 (U8S8) activations: what onnxruntime fuses, and what each costs.

An OFA MobileNetV3-style subnet (the default space's largest and smallest; untrained weights with their
BatchNorm recalibrated on Fashion-MNIST: latency does not depend on training) is exported to ONNX fp32 and
quantized both ways (per-channel int8 weights, QDQ, calibrated on 500 training images). For each file it prints
  - the Convs onnxruntime still runs in float after its graph optimizations (a QDQ Conv it could not fuse);
  - local: p50 / p50 of fp32, REPEATS rounds interleaved (ratios only: this machine is shared);
  - with --pi4-emulated: guest instructions per inference / those of fp32 on the emulated Cortex-A72.
Run: python benchmarks/int8_activations.py [--pi4-emulated]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort

from edgebench.deploy.bundle import make_bundle
from edgebench.devices.local import LocalDevice
from edgebench.pipeline import export_artifact
from edgebench.train.fashion import load_fashion_splits
from edgebench.train.ofa import OFASpec, OFASupernet, extract_subnet, subnet_trained
from edgebench.types import Format, Precision, RunSpec


def float_convs(path: Path, tmp: Path) -> int:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.optimized_model_filepath = str(tmp / "optimized.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sum(n.op_type == "Conv" for n in onnx.load(so.optimized_model_filepath).graph.node)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--pi4-emulated", action="store_true", help="also count instructions on pi4-emulated")
    args = ap.parse_args()
    ds, _, _ = load_fashion_splits(val_size=1000, train_limit=2000, test_limit=500)
    spec = OFASpec(widths=(16, 24, 40, 64), final_width=256)
    net = OFASupernet(spec)
    local = LocalDevice()
    emulated = None
    if args.pi4_emulated:
        from edgebench.devices.registry import get_device

        emulated = get_device("pi4-emulated")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for which, arch in (("largest", spec.largest()), ("smallest", spec.smallest())):
            trained = subnet_trained(extract_subnet(net, arch, ds.x_train[:1000]), ds, f"ofa-{which}")
            fp32 = export_artifact(trained, Format.ONNX, Precision.FP32, tmp / which, 17, 1e-3)
            files = {"fp32": fp32}
            for act in ("int8", "uint8"):
                files[act] = export_artifact(trained, Format.ONNX, Precision.INT8, tmp / f"{which}-{act}", 17, 1e-3,
                                             fp32, min_agreement=0.5, int8_activations=act)
            bundles = {k: make_bundle(a, tmp / f"b-{which}-{k}") for k, a in files.items()}
            p50 = {k: [] for k in files}
            for _ in range(args.repeats):
                for k, b in bundles.items():
                    m = local.run(b, RunSpec(runs=args.runs, warmup=args.runs // 10, threads=1, eval=False))
                    assert m.ok, m.error
                    p50[k].append(statistics.median(m.samples_ns))
            base = statistics.median(p50["fp32"])
            print(f"{which} (r={arch['r']}):")
            for k in ("int8", "uint8"):
                line = (f"  {k:5s} activations: float Convs after onnxruntime's fusions "
                        f"{float_convs(files[k].path, tmp)} of {float_convs(fp32.path, tmp)}; local p50 / fp32 "
                        f"{statistics.median(p50[k]) / base:.2f}x")
                if emulated is not None:
                    ins = {}
                    for kk in ("fp32", k):
                        m = emulated.run(bundles[kk], RunSpec(runs=3, warmup=1, threads=1, eval=False))
                        assert m.ok, m.error
                        ins[kk] = m.extra["instructions_per_inference"]
                    line += f"; pi4-emulated instructions / fp32 {ins[k] / ins['fp32']:.3f}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
