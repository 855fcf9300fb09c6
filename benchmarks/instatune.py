"""InstaTune's targets, as ratios and accuracies, from a finished `edgebench run examples/instatune_minilm.toml`.

Prints, from the run's records and search.json (nothing here is typed in by hand):
  * the full fine-tuned model's test accuracy on the local device           target >= 82%
  * measured Pareto picks per device                                        target >= 5
  * the best speedup of a pick over the full model at p50 (local, 1 thread, batch 1, the run's sequence
    length) among picks within 2 points of the full model's accuracy     target >= 2x
    -- re-measured here, full and pick interleaved REPEATS times, so a busy moment cannot make the ratio
  * predictor quality on held-out subnets (k-fold Kendall tau, MAPE) per device
  * NSGA-II: 5,000 evaluations with the run's predictors, timed here        target <= 10 s
  * the run's wall time (and whether fine-tuning was part of it)            target <= 25 min

Run: python benchmarks/instatune.py [--report out/instatune_minilm/report] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def load(report: Path):
    from edgebench.reports.record import Record

    search = json.loads((report / "search.json").read_text())
    records = [Record.from_dict(d) for d in json.loads((report / "records.json").read_text())]
    return search, records


def p50_interleaved(paths: list, repeats: int, runs: int) -> list:
    """Median over `repeats` of each file's p50 on the local device, the files interleaved each round."""
    from edgebench.deploy.bundle import make_bundle
    from edgebench.devices.registry import get_device
    from edgebench.export.onnx import describe_onnx
    from edgebench.reports.record import LatencyStats
    from edgebench.types import RunSpec

    import tempfile

    dev = get_device("local")
    p50s = [[] for _ in paths]
    with tempfile.TemporaryDirectory() as tmp:
        bundles = [make_bundle(describe_onnx(p), Path(tmp) / f"b{i}") for i, p in enumerate(paths)]
        for _ in range(repeats):
            for i, b in enumerate(bundles):
                m = dev.run(b, RunSpec(runs=runs, warmup=runs // 10, threads=1))
                if not m.ok:
                    raise SystemExit(f"benchmark run failed: {m.error}")
                p50s[i].append(LatencyStats.from_samples_ns(m.samples_ns).p50)
    return [statistics.median(v) for v in p50s]


def nsga_timing(evaluated: list, seed: int = 0) -> tuple[float, int]:
    from edgebench.search.instatune_space import InstaTuneSpace
    from edgebench.search.nsga import nsga2
    from edgebench.search.predictors import select_predictor

    space = InstaTuneSpace()
    x = np.stack([space.features(e["arch"]) for e in evaluated])
    acc, _ = select_predictor(x, [e["accuracy"] for e in evaluated], seed=seed)
    lat, _ = select_predictor(x, [e["latency_ms"] for e in evaluated], seed=seed, log_target=True)
    n = [0]

    def objectives(genes):
        n[0] += len(genes)
        f = space.features_from_genes(genes)
        return np.stack([-acc.predict(f), lat.predict(f), space.macs_from_genes(genes) / 1e6], axis=1)

    t0 = time.perf_counter()
    nsga2(space, objectives, pop_size=50, n_gen=100, seed=seed)
    return time.perf_counter() - t0, n[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", type=Path, default=Path("out/instatune_minilm/report"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    if not (args.report / "search.json").exists():
        print(f"no InstaTune report at {args.report}: run `edgebench run examples/instatune_minilm.toml` first",
              file=sys.stderr)
        return 2
    search, records = load(args.report)
    ok = [r for r in records if r.status == "ok"]
    print(f"run {search['run_id']}  (supernet {search['supernet']}, sequence length {search['seq_len']})")
    tm = search["train_metrics"]
    print(f"fine-tuning: {tm.get('train_s', float('nan')) / 60:.1f} min; supernet val accuracy full "
          f"{tm.get('val_accuracy_full', float('nan')):.2%}, smallest {tm.get('val_accuracy_smallest', float('nan')):.2%}"
          f"; test full {tm.get('test_accuracy_full', float('nan')):.2%} (PyTorch)")

    local_full = next((r for r in ok if r.device == "local" and r.extra.get("role") == "full"), None)
    if local_full is None:
        print("no measured full model on 'local' in this report", file=sys.stderr)
        return 2
    full_acc = local_full.accuracy
    print(f"\n[target >= 82%] full model test accuracy on local: {full_acc:.2%} "
          f"({local_full.n_eval} test sequences, {local_full.accuracy_provenance})")

    for dev, info in search["devices"].items():
        picks = [m for m in info["measured"] if m["name"] != "full"]
        print(f"\n== {dev} ==")
        print(f"[target >= 5] measured Pareto picks: {len(picks)}")
        for m in info["measured"]:
            acc = "n/a" if m["accuracy"] is None else f"{m['accuracy']:.2%}"
            print(f"  {m['name']:6s} L{m['arch']['layers']} heads {m['arch']['heads']} ffn {m['arch']['ffn']}: "
                  f"accuracy {acc} (n={m.get('n_eval')}), latency {m['latency_ms']:.3f} ms [{m['provenance']}], "
                  f"predicted {m['predicted_latency_ms']:.3f} ms ({m['error_pct']:+.1f}%)")
        last = info["rounds"][-1]
        for what in ("accuracy", "latency"):
            p = last[f"{what}_predictor"]
            q = p["holdout"].get(p["kind"])
            if q:
                print(f"  {what} predictor {p['kind']}: Kendall tau {q['kendall_tau']:.3f}, MAPE {q['mape_pct']:.2f}% "
                      f"({q['n_holdout']} subnets, {q['folds']}-fold held out)")
        first = info["rounds"][0]
        if "new_front_latency" in first:
            a, l = first["new_front_accuracy"], first["new_front_latency"]
            print(f"  round-0 predictors on the front they chose (out of sample, n={a['n_holdout']}): accuracy tau "
                  f"{a['kendall_tau']:.3f} MAPE {a['mape_pct']:.2f}%, latency tau {l['kendall_tau']:.3f} "
                  f"MAPE {l['mape_pct']:.2f}%")
        print(f"  NSGA-II in the run: {info['evaluations']} evaluations in {info['search_s']:.2f} s")

    local = search["devices"].get("local")
    if local:
        by_name = {r.extra.get("role"): r for r in ok if r.device == "local"}
        close = [m for m in local["measured"] if m["name"] != "full" and m["accuracy"] is not None
                 and m["accuracy"] >= full_acc - 0.02]
        if not close:
            print("\n[target >= 2x] no local pick is within 2 points of the full model's accuracy")
        else:
            fastest = min(close, key=lambda m: m["latency_ms"])
            pick_rec = by_name[fastest["name"]]
            full_p50, pick_p50 = p50_interleaved([local_full.artifact_path, pick_rec.artifact_path], args.repeats,
                                                 args.runs)
            print(f"\n[target >= 2x] {fastest['name']} (accuracy {fastest['accuracy']:.2%} vs full {full_acc:.2%}, "
                  f"{(fastest['accuracy'] - full_acc) * 100:+.1f} points): p50 {pick_p50:.3f} ms vs full "
                  f"{full_p50:.3f} ms = {full_p50 / pick_p50:.2f}x faster (local, 1 thread, batch 1, "
                  f"seq {search['seq_len']}; median of {args.repeats} interleaved runs of {args.runs})")
        s, n = nsga_timing(local["evaluated"])
        print(f"[target <= 10 s] NSGA-II with the run's predictors: {n} evaluations in {s:.2f} s")
    print(f"\n[target <= 25 min] the run took {search['wall_s'] / 60:.1f} min"
          + ("" if search.get("fine_tuned_in_this_run") else
             " (fine-tuning not included: the supernet was reused; add the fine-tuning time above)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
