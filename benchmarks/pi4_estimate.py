"""How well the emulated Raspberry Pi 4 predicts a real Pi 4's latency, against published figures.

For every entry of the reference set (devices/data/pi4_reference.json: published Pi 4 latencies, each with
its source), this script rebuilds the architecture in PyTorch with random weights
(edgebench.devices.reference_models), exports it through edgebench's TFLite path, and counts the guest
instructions of one inference on `pi4-emulated`, split by instruction class (devices/insn_count.c). Counts
are cached in --counts (seeded from the shipped devices/data/pi4_counts.json); --recount redoes them.

It then compares, never on the data a number was fitted on:
  ipc=1.0        the old placeholder: instructions / (1.0 x 1.5 GHz), nothing fitted
  one-ipc        one fitted cycles-per-instruction for all instructions
  kernel-scalar  cycles per instruction for NEON/FP work (arithmetic + SIMD loads/stores) and for the rest
  five-class     one per plugin class
  kernel-scalar-fixed  kernel-scalar plus a fixed cost per inference (thread hand-offs, dispatch)
under leave-one-source-out and leave-one-model-out cross-validation: median and 90th percentile of
|estimate - published| / published, and Spearman's rank correlation. Then the shipped rule: the grouping
selected among calibration.CANDIDATES by leave-one-model-out inside every training fold (nested), under
both schemes, and within each source; the per-entry out-of-fold estimates; and the architectures both
sources publish, whose gap bounds any estimate from counts. The last lines are the summary.

With --attribution it also attributes each entry's instructions to the code that executes them (libraries,
XNNPACK microkernel families; cached in devices/data/pi4_attribution.json) and compares cost models over those
families with kernel-scalar.

Run: python benchmarks/pi4_estimate.py [--only KEY_SUBSTRING] [--recount] [--attribution] [--write-calibration]
Counting all entries under emulation takes about 30-40 minutes on 2 cores (runs under `nice`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from edgebench.devices import attribution as attr
from edgebench.devices import calibration as cal
from edgebench.devices import calibration_cv as calcv
from edgebench.devices.emulated import estimate_latency_ms
from edgebench.devices.registry import get_device

CLOCK_GHZ = 1.5  # Raspberry Pi 4 Model B (BCM2711 rev B0, as in the MLPerf system description)


def count_missing(reference: dict, counts: dict, counts_path: Path, only: str, recount: bool) -> None:
    todo = sorted((e for e in reference["entries"] if only in e["key"]
                   and (recount or cal.entry_signature(e) not in counts)),
                  key=lambda e: e["latency_ms"])  # cheapest first: an interrupted run still covers many
    if not todo:
        return
    device = get_device("pi4-emulated")
    device.setup()
    with tempfile.TemporaryDirectory(prefix="pi4-estimate-") as tmp:
        for i, e in enumerate(todo, 1):
            t0 = time.perf_counter()
            try:
                c = cal.count_entry(e, device, Path(tmp) / f"e{i}")
            except Exception as exc:  # one failed model must not lose the others' counts
                print(f"[{i}/{len(todo)}] {e['key']}: FAILED {exc}", flush=True)
                continue
            counts[c["signature"]] = c
            cal.save_counts(counts, counts_path)
            print(f"[{i}/{len(todo)}] {e['key']}: {c['instructions']:,} instructions "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)


def attribute_missing(reference: dict, attribution: dict, path: Path, only: str) -> None:
    """Which code runs each entry's inference (attribution.attribute_blocks), counted once on pi4-emulated
    with the plugin's blocks=PATH and cached in `path`."""
    from edgebench.deploy.bundle import make_bundle
    from edgebench.types import RunSpec

    todo = sorted((e for e in reference["entries"] if only in e["key"]
                   and cal.entry_signature(e) not in attribution), key=lambda e: e["latency_ms"])
    if not todo:
        return
    device = get_device("pi4-emulated")
    device.setup()
    with tempfile.TemporaryDirectory(prefix="pi4-attribution-") as tmp:
        for i, e in enumerate(todo, 1):
            t0 = time.perf_counter()
            artifact = cal.export_entry(e, Path(tmp) / f"a{i}")
            bundle = make_bundle(artifact, Path(tmp) / f"a{i}" / "bundle", None, None)
            device.blocks_out = Path(tmp) / f"a{i}" / "blocks.txt"
            m = device.run(bundle, RunSpec(runs=1, warmup=0, threads=1, eval=False))
            if not m.ok or not device.blocks_out.exists():
                print(f"[{i}/{len(todo)}] {e['key']}: FAILED {m.error}", flush=True)
                continue
            # the blocks file covers every marked region: the one inference plus the markers-only region
            # (tens of thousands of instructions)
            attribution[cal.entry_signature(e)] = dict(attr.attribute_blocks(device.blocks_out), key=e["key"])
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp_path = path.with_suffix(".tmp")
            tmp_path.write_text(json.dumps({"about": ATTRIBUTION_ABOUT, "attribution": attribution}, indent=1))
            tmp_path.replace(path)
            print(f"[{i}/{len(todo)}] {e['key']}: attributed ({time.perf_counter() - t0:.0f} s)", flush=True)


ATTRIBUTION_ABOUT = ("Instructions of one inference (batch 1, one thread, ai-edge-litert) of each reference "
                     "entry on pi4-emulated, by library and, inside ai-edge-litert's library, by XNNPACK "
                     "microkernel family (devices/attribution.py: attribute_blocks; plugin option blocks=PATH). "
                     "Keyed by entry signature.")


def report_attribution(rows: list[dict], attribution: dict, reference: dict) -> None:
    """Library shares, and cost models over microkernel families against kernel-scalar, both CV schemes."""
    sig = {e["key"]: cal.entry_signature(e) for e in reference["entries"]}
    have = [r for r in rows if sig[r["key"]] in attribution]
    if len(have) < len(rows):
        print(f"\nattribution: {len(have)} of {len(rows)} entries attributed (run with --attribution to finish)")
    if len(have) < 3:
        return
    shares = [attribution[sig[r["key"]]]["libraries"].get("libpywrap_litert_common.so", 0)
              / attribution[sig[r["key"]]]["total"] for r in have]
    print(f"\ncode attribution ({len(have)} models): ai-edge-litert's libpywrap_litert_common.so (XNNPACK linked in) "
          f"executes {min(shares):.1%} to {max(shares):.1%} of an inference's instructions")
    print(f"{'entry':58s} " + " ".join(f"{f:>13s}" for f in attr.FAMILIES))
    for r in have:
        a = attribution[sig[r["key"]]]
        print(f"{r['key']:58s} " + " ".join(f"{a['families'][f] / a['total']:13.1%}" for f in attr.FAMILIES))
    merged = [dict(r, by_class=dict(r["by_class"], **attribution[sig[r["key"]]]["families"])) for r in have]
    sources = sorted({r["source"] for r in have})
    print("cost models over microkernel families (three groupings by what the kernels do; not candidates of the "
          "shipped calibration) "
          "vs kernel-scalar, on the same rows:")
    for g in ("kernel-scalar", *cal.ATTRIBUTION_GROUPINGS):
        line = f"  {g:30s} leave-one-model-out {fmt(calcv.cross_validate(merged, g, CLOCK_GHZ, 'key')[1])}"
        if len(sources) >= 2:
            line += f"\n  {'':30s} leave-one-source-out {fmt(calcv.cross_validate(merged, g, CLOCK_GHZ, 'source')[1])}"
        print(line)


def fmt(stats: dict) -> str:
    return (f"median {stats['median_abs_error']:6.1%}  p90 {stats['p90_abs_error']:6.1%}  "
            f"Spearman {stats['spearman']:.3f}  (n={stats['n']})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", default=str(cal.REFERENCE_FILE))
    ap.add_argument("--counts", default="out/pi4_estimate/counts.json")
    ap.add_argument("--only", default="", help="count only entries whose key contains this")
    ap.add_argument("--recount", action="store_true")
    ap.add_argument("--attribution", action="store_true",
                    help="also attribute each entry's instructions to libraries and XNNPACK microkernel families "
                         "(cached in --attribution-file; about a minute per model under emulation)")
    ap.add_argument("--attribution-file", default=str(cal.DATA / "pi4_attribution.json"))
    ap.add_argument("--write-calibration", default="",
                    help="also write the calibration fitted on all counted entries (--grouping) to this file")
    ap.add_argument("--grouping", default=cal.AUTO, choices=[cal.AUTO, *sorted(cal.GROUPINGS)],
                    help="the calibration's grouping; auto: selected by leave-one-model-out on the rows")
    args = ap.parse_args()
    if hasattr(os, "nice"):
        os.nice(10)  # a shared machine: emulation runs in the background of others' work
    reference = cal.load_reference(args.reference)
    counts_path = Path(args.counts)
    counts = cal.load_counts(counts_path) if counts_path.exists() else cal.load_counts()
    count_missing(reference, counts, counts_path, args.only, args.recount)
    attribution_path = Path(args.attribution_file)
    attribution = (json.loads(attribution_path.read_text())["attribution"] if attribution_path.exists() else {})
    if args.attribution:
        attribute_missing(reference, attribution, attribution_path, args.only)
    rows, missing = cal.joined_rows(reference, counts)
    if missing:
        print(f"no counts for {len(missing)} entries: {', '.join(missing)}")
    if len(rows) < 3:
        print("fewer than 3 counted entries: nothing to evaluate")
        return 1
    published = [r["latency_ms"] for r in rows]
    sources = sorted({r["source"] for r in rows})

    print(f"\n{'entry':58s} {'published':>10s} {'ipc=1.0':>9s} {'instr':>13s} {'kernel%':>8s}")
    base = [estimate_latency_ms(r["instructions"], 1.0, CLOCK_GHZ) for r in rows]
    for r, b in zip(rows, base):
        kernel = (r["by_class"].get("simd", 0) + r["by_class"].get("simd_ldst", 0)) / max(r["instructions"], 1)
        print(f"{r['key']:58s} {r['latency_ms']:10.2f} {b:9.2f} {r['instructions']:13,} {kernel:8.1%}")

    results = {"ipc=1.0 (placeholder, nothing fitted)": {"all": calcv.error_stats(base, published)}}
    for grouping in cal.GROUPINGS:
        res = {"leave-one-model-out": calcv.cross_validate(rows, grouping, CLOCK_GHZ, "key")[1]}
        if len(sources) >= 2:
            res["leave-one-source-out"] = calcv.cross_validate(rows, grouping, CLOCK_GHZ, "source")[1]
        for s in sources:  # within one source: leave one model out among that source's entries only
            sub = [r for r in rows if r["source"] == s]
            if len(sub) >= 3:
                res[f"within {s}, leave-one-model-out"] = calcv.cross_validate(sub, grouping, CLOCK_GHZ, "key")[1]
        results[grouping] = res
        fitted = cal.fit_cpi([(r["by_class"], r["latency_ms"]) for r in rows], grouping, CLOCK_GHZ)
        print(f"\n{grouping}: cycles per instruction fitted on all {len(rows)} (for reading only, not an "
              f"evaluation): " + ", ".join(f"{g}={v:.3f}" for g, v in fitted.items()))

    # the grouping chosen among cal.CANDIDATES inside every training fold by leave-one-model-out
    # (calibration.select_grouping): no figure is predicted by a grouping or constants chosen with it
    nested, chosen = {}, {}
    for by, how in (("key", "leave-one-model-out"), ("source", "leave-one-source-out")):
        if by == "source" and len(sources) < 2:
            continue
        preds, stats, picks = calcv.nested_cross_validate(rows, cal.CANDIDATES, CLOCK_GHZ, by)
        nested[how], chosen[how] = (preds, stats), picks
    results["selected in each fold (nested)"] = {how: st for how, (_, st) in nested.items()}
    if len(sources) >= 2:
        how = "within each source, leave-one-model-out, pooled"
        results["selected in each fold (nested)"][how] = calcv.within_source_cross_validate(
            rows, cal.CANDIDATES, CLOCK_GHZ)[1]

    if "leave-one-source-out" in nested:
        preds = nested["leave-one-source-out"][0]
        print("\nleave-one-source-out, grouping selected inside each training fold: per held-out source")
        for s in sources:
            idx = [i for i, r in enumerate(rows) if r["source"] == s]
            st = calcv.error_stats([preds[i] for i in idx], [published[i] for i in idx])
            print(f"  held out {s:40s} fitted on the other {len(rows) - len(idx):2d} with "
                  f"{chosen['leave-one-source-out'][s]:20s} {fmt(st)}")
        print(f"\n{'entry':58s} {'published':>10s} {'LOSO est':>9s} {'error':>7s} {'LOMO est':>9s} {'error':>7s}")
        lomo = nested["leave-one-model-out"][0]
        for r, p, q in zip(rows, preds, lomo):
            y = r["latency_ms"]
            print(f"{r['key']:58s} {y:10.2f} {p:9.2f} {(p - y) / y:+7.1%} {q:9.2f} {(q - y) / y:+7.1%}")

    if attribution:
        report_attribution(rows, attribution, reference)

    pairs = calcv.same_architecture_pairs(rows, reference)
    if pairs:
        print("\nthe same architecture (rebuilt identically) published by two sources: a gap between the "
              "sources that no estimate from counts can close")
        for p in pairs:
            print(f"  {p['a']} {p['published_a']:.2f} ms vs {p['b']} {p['published_b']:.2f} ms: published "
                  f"ratio {p['published_ratio']:.3f}, count ratio {p['count_ratio']:.3f} -> at least one is off "
                  f"by >= {p['floor']:.1%}")

    if args.write_calibration:
        c = cal.calibrate(rows, "pi4-emulated", "cortex-a72", CLOCK_GHZ, "ai_edge_litert",
                          {"reference": Path(args.reference).name,
                           "reference_sha256": cal.file_sha256(Path(args.reference)),
                           "counts": counts_path.name, "by": "benchmarks/pi4_estimate.py --write-calibration"},
                          args.grouping)
        print(f"\nwrote {cal.save_calibration(c, args.write_calibration)}: {c.grouping}, band ±{c.band:.0%} "
              f"({c.band_basis})")

    print(f"\n=== Raspberry Pi 4 estimate vs published latency: {len(rows)} models, {len(sources)} sources "
          f"({', '.join(sources)}) ===")
    for name, res in results.items():
        for how, stats in res.items():
            print(f"{name:40s} {how:58s} {fmt(stats)}")
    print("(within a 5-model source, five-class fits 5 constants on 4 rows: underdetermined, so its held-out "
          "errors there are no reliable measure; nested selection never considers a grouping with more than "
          "rows - 2 constants)")
    for how, picks in chosen.items():
        print(f"groupings selected in the {how} training folds: " + ", ".join(
            f"{g} x{n}" for g, n in sorted(Counter(picks.values()).items())))
    print(f"today, ipc=1.0 (nothing fitted){'':40s} {fmt(results['ipc=1.0 (placeholder, nothing fitted)']['all'])}")
    for how, st in results["selected in each fold (nested)"].items():
        print(f"selected in each fold, {how:48s} {fmt(st)}")
    print("(leave-one-source-out: fitted on one publisher's setup, predicting another's: the shipped band. "
          "Within each source: calibrated on the same setup, as `edgebench devices calibrate --from-device` does)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
