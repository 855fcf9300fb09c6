"""The HAR deployment targets of issue 12, measured in one run on the local device (ratios, not absolute times).

For the L2MU (LIF, CuBa) and the LMU on BasicMotions (trained with the shipped recipes, or loaded from
--checkpoints), this script
  - counts the window graph's nodes after onnxruntime's optimizations: the model traced as written
    (L2MU.run / LMU.forward), the lean step-by-step window (export_module, what LiteRT gets) and onnxruntime's
    form (export_module(runtime="onnx"), train/onnx_window.py), and checks that form against PyTorch;
  - exports the window model (ONNX fp32 and int8-dynamic, TFLite fp32) and the step model (ONNX and TFLite at
    fp32, int8-dynamic, int8), and prints every file size;
  - benchmarks every artifact REPEATS times interleaved (step models per step and per streamed window) and
    prints, from the medians of the p50s:
      ONNX / TFLite per-window p50 of the same model (target <= 1.5x),
      INT8 / fp32 p50 of the same file kind and runtime, with the accuracy delta on the device
      (target: one INT8 artifact per model at <= 1.0x within 1 point; flagged where <= 0.67x),
      INT8 bytes / fp32 bytes (target <= 1.0), the step model's text encoding length (target < 10,000).
Run: python benchmarks/streaming.py [--repeats 3] [--runs 200] [--checkpoints out/har_l2mu/checkpoints]
"""
from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgebench.deploy.bundle import make_bundle
from edgebench.devices.local import LocalDevice
from edgebench.export.onnx import export_onnx, export_view, reference_outputs, run_onnx
from edgebench.export.step import export_step, streamed_window_twin
from edgebench.pipeline import export_artifact
from edgebench.types import Format, Precision, RunSpec

MODELS = {"lif": "l2mu_lif", "cuba": "l2mu_cuba", "lmu": "lmu"}


def ort_nodes(path: Path, tmp: Path) -> tuple[int, dict]:
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    nodes = onnx.load(so.optimized_model_filepath).graph.node
    return len(nodes), dict(collections.Counter(n.op_type for n in nodes).most_common(6))


def trained_models(checkpoints: str | None) -> dict:
    from edgebench.train.base import load_checkpoint
    from edgebench.train.l2mu import BASICMOTIONS_CONFIG
    from edgebench.train.registry import train_model

    out = {}
    for key, name in MODELS.items():
        ckpt = Path(checkpoints or "-") / f"{name}.pt"
        if checkpoints and ckpt.exists():
            out[key] = load_checkpoint(ckpt)
        else:
            cfg = BASICMOTIONS_CONFIG[key]
            out[key] = train_model(name, cfg["kind"], "basicmotions", cfg["model"], cfg["train"], progress=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--checkpoints", default=None, help="folder with l2mu_lif.pt, l2mu_cuba.pt, lmu.pt")
    ap.add_argument("--no-tflite-window", action="store_true",
                    help="skip the unrolled TFLite window (its conversion takes minutes on a busy machine)")
    args = ap.parse_args()
    args.step_precisions = (Precision.FP32, Precision.INT8_DYNAMIC, Precision.INT8)
    torch.set_num_threads(1)
    device, spec = LocalDevice(), RunSpec(runs=args.runs, warmup=max(5, args.runs // 10), threads=1)
    models = trained_models(args.checkpoints)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("== window graph nodes after onnxruntime's optimizations (100 steps, batch 1)")
        for key, t in models.items():
            x = t.dataset.x_test
            ort_form = export_onnx(export_view(t.module, "onnx"), t.example_input(1), tmp / f"{key}-ort.onnx")
            step_form = export_onnx(export_view(t.module), t.example_input(1), tmp / f"{key}-litert.onnx")
            plain = export_onnx(t.module, t.example_input(1), tmp / f"{key}-plain.onnx")
            (n_ort, ops_ort), (n_plain, _) = ort_nodes(ort_form, tmp), ort_nodes(plain, tmp)
            n_step = ort_nodes(step_form, tmp)[0]
            diff = float(np.abs(run_onnx(ort_form, x) - reference_outputs(t.module, x)).max())
            print(f"  {key:5s} as written {n_plain:6,d}  step by step (LiteRT's form) {n_step:6,d}  "
                  f"onnxruntime's form {n_ort:6,d}  ratio {n_plain / n_ort:.2f}x  "
                  f"max |diff| vs PyTorch {diff:.2g}  ops {ops_ort}")

        arts = {}  # (model, graph, format, precision) -> artifact
        for key, t in models.items():
            fp32 = {}
            kinds = [(Format.ONNX, (Precision.FP32, Precision.INT8_DYNAMIC))]
            if not args.no_tflite_window:
                kinds.append((Format.TFLITE, (Precision.FP32,)))
            for fmt, precs in kinds:
                for prec in precs:
                    t0 = time.perf_counter()
                    try:
                        a = export_artifact(t, fmt, prec, tmp / "art", 17, 1e-4, fp32.get(Format.ONNX), None, 0.9)
                    except Exception as exc:
                        print(f"  {key} window {fmt.value} {prec.value}: export failed: {exc}")
                        continue
                    fp32.setdefault(fmt, a)
                    arts[(key, "window", fmt.value, prec.value)] = a
                    print(f"  exported {a.name} in {time.perf_counter() - t0:.1f} s")
            for fmt in (Format.ONNX, Format.TFLITE):
                for prec in args.step_precisions:
                    try:
                        a = export_step(t, fmt, prec, tmp / "art", min_agreement=0.0)
                    except Exception as exc:
                        print(f"  {key} step {fmt.value} {prec.value}: export failed: {exc}")
                        continue
                    arts[(key, "step", fmt.value, prec.value)] = a
                    arts[(key, "stream", fmt.value, prec.value)] = streamed_window_twin(a)

        bundles = {k: make_bundle(a, tmp / "b" / f"{a.name}", models[k[0]].dataset.x_test, models[k[0]].dataset.y_test)
                   for k, a in arts.items()}
        p50s, acc = collections.defaultdict(list), {}
        for _ in range(args.repeats):
            for k, b in bundles.items():
                m = device.run(b, spec)
                if not m.ok:
                    print(f"  {arts[k].name} ({k[1]}): run failed: {m.error}")
                    continue
                p50s[k].append(statistics.median(m.samples_ns) / 1e6)
                acc[k] = m.accuracy
        p50 = {k: statistics.median(v) for k, v in p50s.items()}

        print(f"\n== {args.runs} runs x {args.repeats} interleaved repeats, 1 thread, medians of p50 (ms)")
        for key in models:
            print(f"-- {key} (PyTorch test accuracy {models[key].metrics.get('test_accuracy', float('nan')):.2%})")
            for k in sorted(k for k in p50 if k[0] == key):
                unit = "step" if k[1] == "step" else "window"
                print(f"  {k[1]:6s} {k[2]:6s} {k[3]:12s} p50 {p50[k]:9.4f} ms/{unit:6s} accuracy "
                      f"{acc[k]:.2%}  {arts[k].size_bytes:9,d} B")
            for graph in ("window", "stream"):
                o, t_ = p50.get((key, graph, "onnx", "fp32")), p50.get((key, graph, "tflite", "fp32"))
                if o and t_:
                    print(f"  {graph:6s} fp32 ONNX / TFLite per-window p50 = {o / t_:.2f}x  (target <= 1.5x: "
                          f"{'met' if max(o, t_) / min(o, t_) <= 1.5 else 'missed'})")
            met = []
            for k in sorted(k for k in p50 if k[0] == key and k[3] != "fp32"):
                twin = (k[0], k[1], k[2], "fp32")
                if twin not in p50 or k[1] == "step":
                    continue
                ratio, delta = p50[k] / p50[twin], 100 * (acc[k] - acc[twin])
                size = arts[k].size_bytes / arts[twin].size_bytes
                ok = ratio <= 1.0 and abs(delta) <= 1.0
                if ok:
                    met.append(k)
                print(f"  {k[1]:6s} {k[2]:6s} {k[3]:12s} vs fp32: latency {ratio:.2f}x{'  (<= 0.67x)' if ratio <= 0.67 else ''}"
                      f"  accuracy {delta:+.2f} pp  size {size:.2f}x{'  LARGER' if size > 1 else ''}"
                      f"{'  meets <= 1.0x within 1 point' if ok else ''}")
            print(f"  INT8 target (<= 1.0x fp32 p50, within 1 point): {'met by ' + ', '.join('/'.join(k[1:]) for k in met) if met else 'missed'}")
            enc = arts.get((key, "step", "onnx", "fp32"))
            if enc is not None:
                print(f"  step model text encoding: {len(enc.encoding):,} characters (target < 10,000)")


if __name__ == "__main__":
    main()
