"""Does `edgebench compare` fail a build on a real slowdown and not on noise? Measured in one run.

False alarms: PAIRS comparisons of the same model with itself on the same device (local, pinned to core 0),
each with the gate's default --max-slowdown 5%.
Detection: PAIRS comparisons where CURRENT runs on the same core slowed by a cgroup CPU quota of 0.92 cores in
10 ms periods (devices/throttle.py), which slows this model by about 10%: 1/0.92 = 1.087x of CPU time, plus what
the throttling itself costs. The measured slowed ratio is printed with the counts. (A model much shorter than
the 10 ms period would keep its median under any quota: its inferences mostly run between throttled stretches.)

Two protocols:
  side by side (default)  `edgebench compare BASE.onnx CURRENT.onnx`: both measured in ROUNDS alternating
                          rounds of RUNS inferences, judged on the rounds' paired ratios;
  --stored                two separate `bench` runs of RUNS inferences each, judged on their raw samples
                          (`edgebench compare RUN_A RUN_B`), as a CI job comparing with a stored baseline does.
This project's CI machine switches between two speeds (1.0x and 1.5x) in stretches of 0.5 to 20 s
(`edgebench devices doctor local --stability 20`); a speed probe runs before and after, and its summary is
printed with the figures.

The model is the OCR text detector shipped by rapidocr-onnxruntime at 640x640 (about 0.1-0.2 s per inference
on this kind of machine). Prints the false-alarm count and the detection share as the last lines.

    python benchmarks/compare_gate.py [--pairs 20] [--rounds 48] [--runs N] [--stored --runs 25 --warmup 3]
"""
from __future__ import annotations

import argparse
import importlib.metadata
import tempfile
from pathlib import Path


def main() -> None:
    from edgebench.api import bench
    from edgebench.devices.local import LocalConfig, LocalDevice
    from edgebench.devices.stability import probe_speed
    from edgebench.reports.compare import judge
    from edgebench.reports.side_by_side import side_by_side

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--stored", action="store_true", help="two separate bench runs per comparison")
    ap.add_argument("--rounds", type=int, default=48, help="side by side: alternating rounds per file")
    ap.add_argument("--runs", type=int, default=None,
                    help="inferences per round (side by side; default: compare's own, about 0.25 s) or per run "
                         "(--stored; default 25)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up inferences per round or run")
    ap.add_argument("--side", type=int, default=640, help="detector input side")
    ap.add_argument("--quota", type=float, default=0.92, help="CPU quota (cores) of the slowed device")
    ap.add_argument("--stability", type=float, default=20.0, help="seconds of the speed probe before and after")
    ap.add_argument("--keep", type=Path, default=None, help="keep the records' store (every sample) in this folder")
    args = ap.parse_args()
    model = importlib.metadata.distribution("rapidocr-onnxruntime").locate_file(
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx")
    shapes = {"x": (1, 3, args.side, args.side)}
    probe = LocalDevice(LocalConfig(cores=(0,)))
    before = probe_speed(probe, args.stability) if args.stability else None
    with tempfile.TemporaryDirectory(prefix="edgebench-gate-") as tmp:
        tmp = args.keep or Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        devices = tmp / "devices.toml"
        devices.write_text('[devices.board]\nkind = "local"\ncores = [0]\n\n'
                           f'[devices.board-slow]\nkind = "local"\ncores = [0]\ncpu_quota = {args.quota}\n')

        def run(device):
            return bench(model, device=device, runs=args.runs or 25, warmup=args.warmup, shapes=shapes, store=tmp / "s.sqlite",
                         devices_file=devices)

        def verdict(current_device):
            if args.stored:
                base, cur = run("board"), run(current_device)
                return judge(base, cur)  # paired by hand: the slowed device has another name
            base, cur = side_by_side(model, model, "board", current_device, args.rounds, args.runs, args.warmup,
                                     shapes=shapes, store=tmp / "s.sqlite", devices_file=devices)
            return judge(base, cur)

        false_alarms = caught = 0
        ratios_same, ratios_slow = [], []
        for i in range(args.pairs):
            v_same, v_slow = verdict("board"), verdict("board-slow")
            false_alarms += v_same.verdict == "regression"
            caught += v_slow.verdict == "regression"
            ratios_same.append(v_same.ratio)
            ratios_slow.append(v_slow.ratio)
            print(f"pair {i + 1:2d}: same {v_same.ratio:.3f}x [{v_same.ratio_ci[0]:.3f}, {v_same.ratio_ci[1]:.3f}] "
                  f"{v_same.verdict:12s}  slowed {v_slow.ratio:.3f}x [{v_slow.ratio_ci[0]:.3f}, "
                  f"{v_slow.ratio_ci[1]:.3f}] {v_slow.verdict}", flush=True)
    if before is not None:
        print(f"core 0 before: {before.summary()}")
        print(f"core 0 after:  {probe_speed(probe, args.stability).summary()}")
    how = (f"two separate runs of {args.runs or 25}" if args.stored
           else f"side by side, {args.rounds} alternating rounds of {args.runs or 'about 0.25 s of'}")
    print(f"protocol: {how} inferences; basis: {v_same.basis}")
    print(f"median ratio, same model: {sorted(ratios_same)[len(ratios_same) // 2]:.3f}x; "
          f"slowed device (quota {args.quota:g}): {sorted(ratios_slow)[len(ratios_slow) // 2]:.3f}x")
    print(f"false alarms: {false_alarms} of {args.pairs} comparisons of the same model")
    print(f"slowdown caught: {caught} of {args.pairs} ({100 * caught / args.pairs:.0f}%)")


if __name__ == "__main__":
    main()
