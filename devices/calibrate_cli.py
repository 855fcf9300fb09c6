"""`edgebench devices calibrate NAME --reference FILE | --from-device SSH_DEVICE`: refit an emulated device's
cost model (devices/calibration.py) and write the constants, with their cross-validated error band.

--reference FILE: published latencies (the format of devices/data/pi4_reference.json, every figure with
  its source). --from-device DEV: the reference set's models (--reference, default the shipped set), rebuilt
  and exported as edgebench does, are measured on your own board over SSH (p50 of --runs), and those
  latencies are fitted instead of the published ones.
Instruction counts come from --counts (default: the shipped devices/data/pi4_counts.json); a model without
one is counted on the emulated device first (tens of seconds to minutes each) and added to the output's
side file NAME.counts.json. Exports of the reference models are kept in ~/.cache/edgebench/calibration-exports
(keyed by architecture, input, format, exporter versions and edgebench's export code; the environment variable
EDGEBENCH_CALIBRATION_CACHE names another folder, or turns it off when empty), so a second calibration against
the same models converts nothing again.
--format onnx calibrates onnxruntime runs instead of TFLite ones (counts and board runs of the ONNX exports,
  written to NAME.onnxruntime.json, which onnxruntime runs of NAME then use). Published figures of another
  runtime are refused: a cost model fitted across runtimes would carry an error nobody measured.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional

import typer

from edgebench.types import EdgebenchError


# what a reference entry's "runtime" may say for figures a format's counts can be fitted to
RUNTIME_NAMES = {"tflite": {"tflite", "ai_edge_litert", "tflite_runtime", "litert"},
                 "onnx": {"onnx", "onnxruntime"}}


def refit(name: str, reference: Optional[Path] = None, from_device: Optional[str] = None,
          counts: Optional[Path] = None, out: Optional[Path] = None, only: str = "", runs: int = 20,
          warmup: int = 3, threads: int = 1, grouping: str | None = None,
          devices_file: Optional[Path] = None, log=print, fmt: str = "tflite"):
    """The library function behind the command: returns (Calibration, written path)."""
    from edgebench.deploy.bundle import make_bundle
    from edgebench.devices import calibration as cal
    from edgebench.devices.emulated import USER_CALIBRATIONS
    from edgebench.devices.registry import get_device
    from edgebench.types import RunSpec

    if reference is None and from_device is None:
        raise EdgebenchError("give --reference FILE (published latencies) or --from-device SSH_DEVICE (measure "
                             "the reference models on your board; --reference then names the models)")
    if fmt not in cal.FORMATS:
        raise EdgebenchError(f"unknown format '{fmt}' (known: {', '.join(cal.FORMATS)})")
    grouping = grouping or cal.DEFAULT_GROUPING
    if grouping != cal.AUTO and grouping not in cal.GROUPINGS:
        raise EdgebenchError(f"unknown grouping '{grouping}' (known: {cal.AUTO}, {', '.join(cal.GROUPINGS)})")
    emu = get_device(name, devices_file)
    if emu.kind != "emulated":
        raise EdgebenchError(f"device '{name}' is of kind '{emu.kind}': only an emulated device is calibrated")
    board = None
    if from_device is not None:
        board = get_device(from_device, devices_file)
        if board.kind != "ssh":
            raise EdgebenchError(f"--from-device '{from_device}' is of kind '{board.kind}': give an ssh device")
    ref_path = Path(reference) if reference is not None else cal.REFERENCE_FILE
    ref = cal.load_reference(ref_path)
    entries = [e for e in ref["entries"] if only in e["key"]]
    if not entries:
        raise EdgebenchError(f"no reference entry matches --only '{only}'")
    if board is None:
        other = sorted({e["runtime"] for e in entries if e.get("runtime") and e["runtime"] not in RUNTIME_NAMES[fmt]})
        if other:
            raise EdgebenchError(f"the reference figures were measured with {', '.join(other)}: fitting {fmt} "
                                 f"counts to them would mix runtimes; measure your board with --from-device "
                                 f"--format {fmt}, or give a reference measured with {cal.FORMATS[fmt]}")
    # a TFLite refit keeps its historic name; another runtime's gets its own file, found by runs of that runtime
    default_name = f"{name}.json" if fmt == "tflite" else f"{name}.{cal.FORMATS[fmt]}.json"
    out = Path(out) if out else USER_CALIBRATIONS / default_name
    counts_out = out.with_name(out.stem + ".counts.json")
    known = cal.load_counts(counts) if counts else cal.load_counts()
    if counts_out.exists():
        known.update(cal.load_counts(counts_out))

    with tempfile.TemporaryDirectory(prefix="edgebench-calibrate-") as tmp:
        cpu = emu.config.cpu
        missing = [e for e in entries if cal.entry_signature(e, cpu, fmt) not in known]
        if missing:
            log(f"counting {len(missing)} model(s) on {name} (emulated)")
            emu.setup()
            for i, e in enumerate(missing):
                c = cal.count_entry(e, emu, Path(tmp) / f"count{i}", fmt)
                known[c["signature"]] = c
                cal.save_counts({k: v for k, v in known.items()
                                 if k in {cal.entry_signature(x, cpu, fmt) for x in entries}}, counts_out)
                log(f"  {e['key']}: {c['instructions']:,} instructions")
        if board is not None:
            ref = _measure_on_board(ref, entries, board, from_device, Path(tmp), RunSpec(
                runs=runs, warmup=warmup, threads=threads, eval=False), make_bundle, log, fmt)
            entries = ref["entries"]
    rows, _ = cal.joined_rows({"entries": entries}, known, emu.config.cpu, fmt)
    runtimes = {known[cal.entry_signature(e, emu.config.cpu, fmt)]["runtime"] for e in entries}
    if len(runtimes) != 1:
        raise EdgebenchError(f"the counts come from several runtimes ({', '.join(sorted(runtimes))}): refit per runtime")
    cfg = emu.config
    c = cal.calibrate(rows, name, cfg.cpu, cfg.clock_ghz, runtimes.pop(), {
        "reference": str(ref_path) if board is None else f"measured on '{from_device}' over SSH",
        "reference_sha256": cal.file_sha256(ref_path) if board is None else None,
        "summary": (f"{len(rows)} models from {ref_path.name}" if board is None
                    else f"{len(rows)} models measured on {from_device}, threads {threads}"),
        "by": "edgebench devices calibrate"}, grouping)
    return c, cal.save_calibration(c, out)


def _measure_on_board(ref, entries, board, board_name, tmp: Path, spec, make_bundle, log, fmt="tflite") -> dict:
    """The same models on the user's board: p50 of the raw samples, as a one-source reference set."""
    from edgebench.devices import calibration as cal
    from edgebench.reports.record import LatencyStats

    measured = []
    for i, e in enumerate(entries):
        artifact = cal.export_entry(e, tmp / f"board{i}", fmt)
        bundle = make_bundle(artifact, tmp / f"board-bundle{i}", None, None)
        m = board.run(bundle, spec)
        if not m.ok:
            raise EdgebenchError(f"{e['key']} on '{board_name}': {m.error}")
        p50 = LatencyStats.from_samples_ns(m.samples_ns).p50
        log(f"  {e['key']} on {board_name}: p50 {p50:.3f} ms ({len(m.samples_ns)} runs, {m.runtime})")
        measured.append(dict(e, source=f"board:{board_name}", latency_ms=p50, statistic="p50",
                             threads=spec.threads, runtime=m.runtime, runtime_detail=m.runtime_version,
                             published_text=None, location=f"measured by edgebench on '{board_name}'"))
    return {"sources": {f"board:{board_name}": {"title": f"measured on {board_name}"}}, "entries": measured}


def calibrate(name: str = typer.Argument(..., help="The emulated device to calibrate, e.g. pi4-emulated"),
              reference: Optional[Path] = typer.Option(None, "--reference", help="Reference file of published "
                                                       "latencies (format of devices/data/pi4_reference.json)"),
              from_device: Optional[str] = typer.Option(None, "--from-device", help="An ssh device (your board): "
                                                        "measure the reference models there and fit on that"),
              counts: Optional[Path] = typer.Option(None, "--counts", help="Instruction counts file (default: "
                                                    "the shipped devices/data/pi4_counts.json)"),
              out: Optional[Path] = typer.Option(None, "--out", help="Where to write the calibration (default: "
                                                 "~/.config/edgebench/calibrations/NAME.json, used by NAME)"),
              only: str = typer.Option("", "--only", help="Only reference entries whose key contains this"),
              runs: int = typer.Option(20, help="Measured runs per model on the board (--from-device)"),
              warmup: int = typer.Option(3, help="Warm-up runs per model on the board (--from-device)"),
              threads: int = typer.Option(1, help="Threads on the board (--from-device)"),
              fmt: str = typer.Option("tflite", "--format", help="Export format of the models, hence the runtime "
                                      "calibrated: tflite (ai_edge_litert) or onnx (onnxruntime; with "
                                      "--from-device, as no published Pi 4 onnxruntime set ships)"),
              grouping: Optional[str] = typer.Option(None, help="Instruction class grouping: auto (default: "
                                                     "selected by leave-one-model-out on the rows), one-ipc, "
                                                     "kernel-scalar, five-class, kernel-scalar-fixed"),
              devices_file: Optional[Path] = typer.Option(None, "--devices", help="devices.toml"),
              as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Refit an emulated device's latency estimate from published figures or from your own board."""
    log = (lambda *a: None) if as_json else typer.echo
    c, path = refit(name, reference, from_device, counts, out, only, runs, warmup, threads, grouping,
                    devices_file, log, fmt)
    if as_json:
        print(json.dumps(dict(c.to_dict(), file=str(path))))
        return
    typer.echo(f"{name}: cycles per instruction " + ", ".join(f"{g} {v:.3f}" for g, v in c.cpi.items()))
    for how, s in c.cv.items():
        typer.echo(f"  {how.replace('_', '-')}: median |error| {s['median_abs_error']:.1%}, p90 "
                   f"{s['p90_abs_error']:.1%}, Spearman {s['spearman']:.3f} (n={s['n']})")
    typer.echo(f"  band ±{c.band:.0%} ({c.band_basis})")
    typer.echo(f"wrote {path}")
