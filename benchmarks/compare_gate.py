"""Does `edgebench compare` fail a build on a real slowdown and not on noise? Measured in one run.

False alarms: PAIRS pairs of repeated runs of the same model on the same device (local, pinned to core 0),
each compared with the gate's default --max-slowdown 5%.
Detection: PAIRS trials where CURRENT runs on the same device slowed by a cgroup CPU quota of 0.9 cores
(about 11% slower for a model whose inference spans the quota's 100 ms period; a shorter model is slowed
only in its tail, which a median-based gate rightly does not call a regression).

The model is the OCR text detector shipped by rapidocr-onnxruntime at 640x640 (about 0.1-0.2 s per inference
on this kind of machine). Prints the false-alarm count and the detection share as the last lines.

    python benchmarks/compare_gate.py [--pairs 20] [--runs 25]
"""
from __future__ import annotations

import argparse
import importlib.metadata
import tempfile
from pathlib import Path


def main() -> None:
    from edgebench.api import bench
    from edgebench.reports.compare import compare_records

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--runs", type=int, default=25, help="measured inferences per run")
    ap.add_argument("--side", type=int, default=640, help="detector input side")
    ap.add_argument("--quota", type=float, default=0.9, help="CPU quota (cores) of the slowed device")
    args = ap.parse_args()
    model = importlib.metadata.distribution("rapidocr-onnxruntime").locate_file(
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx")
    shapes = {"x": (1, 3, args.side, args.side)}
    with tempfile.TemporaryDirectory(prefix="edgebench-gate-") as tmp:
        tmp = Path(tmp)
        normal, slowed = tmp / "normal.toml", tmp / "slowed.toml"
        normal.write_text('[devices.board]\nkind = "local"\ncores = [0]\n')
        slowed.write_text(f'[devices.board]\nkind = "local"\ncores = [0]\ncpu_quota = {args.quota}\n')

        def run(devices):
            return bench(model, device="board", runs=args.runs, warmup=3, shapes=shapes, store=tmp / "s.sqlite",
                         devices_file=devices)

        false_alarms = caught = 0
        ratios_same, ratios_slow = [], []
        for i in range(args.pairs):
            base = run(normal)
            same = run(normal)
            slow = run(slowed)
            v_same = compare_records([base], [same])[0]
            v_slow = compare_records([base], [slow])[0]
            false_alarms += v_same.verdict == "regression"
            caught += v_slow.verdict == "regression"
            ratios_same.append(v_same.ratio)
            ratios_slow.append(v_slow.ratio)
            print(f"pair {i + 1:2d}: same {v_same.ratio:.3f}x {v_same.verdict:12s}  slowed {v_slow.ratio:.3f}x "
                  f"{v_slow.verdict}", flush=True)
    print(f"median ratio, repeated runs: {sorted(ratios_same)[len(ratios_same) // 2]:.3f}x; "
          f"slowed device (quota {args.quota:g}): {sorted(ratios_slow)[len(ratios_slow) // 2]:.3f}x")
    print(f"false alarms: {false_alarms} of {args.pairs} pairs of repeated runs")
    print(f"slowdown caught: {caught} of {args.pairs} ({100 * caught / args.pairs:.0f}%)")


if __name__ == "__main__":
    main()
