"""The command line: a thin layer over library functions a user could call from Python.

Errors a user can cause print one line on stderr and exit non-zero; tracebacks are for bugs.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from edgebench.console import err, fmt as _fmt, out
from edgebench.devices.devices_cli import app as devices_app
from edgebench.reports.compare_cli import compare
from edgebench.reports.store import DEFAULT_STORE
from edgebench.search.instatune_cli import app as instatune_app
from edgebench.search.ofa_cli import app as ofa_app
from edgebench.search.predictor_cli import app as predictor_app, predict
from edgebench.types import EdgebenchError, Format, Precision

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Export PyTorch models to ONNX/TFLite, run them on edge devices, report what they measure.")
dataset_app = typer.Typer(no_args_is_help=True, help="Every measured artifact as an ONNX-Bench-style dataset.")


def _version(value: bool):
    if value:
        from edgebench import __version__

        print(f"edgebench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """Export PyTorch models to ONNX/TFLite, run them on edge devices, report what they measure."""


@contextlib.contextmanager
def _nothing():
    yield


def _records_table(records, title: str) -> Table:
    from edgebench.reports.render import compare_to_float

    cmp = compare_to_float(records)
    energy = any("energy_mj_per_inference" in r.extra for r in records)
    t = Table(title=title)
    for col in ("artifact", "device", "accuracy", "Δ acc", "p50 ms", "p99 ms", "CV", "vs fp32", "MACs",
                "size", "latency is", *(("mJ / inf", "energy is") if energy else ()), "status"):
        t.add_column(col, justify="left" if col in ("artifact", "device", "status") else "right")
    for r in records:
        lat = r.latency_ms or {}
        c = cmp.get(r.record_id, {})
        p50, p99, cv, prov = _fmt(lat.get("p50")), _fmt(lat.get("p99")), _fmt(lat.get("cv"), "{:.1%}"), r.latency_provenance
        if r.device_kind == "emulated":  # the estimate of the board's latency, its band and what it rests on
            from edgebench.reports.record import format_estimate

            p50, p99, cv = format_estimate(r.latency_ms), "–", "–"
            prov = ("estimated, " + (Path(lat["calibration"]).name if lat.get("calibration") else "uncalibrated")
                    if lat else "no estimate (emulated wall time only)")
        t.add_row(
            r.name, r.device, _fmt(None if r.accuracy is None else 100 * r.accuracy, "{:.2f}%"),
            _fmt(None if "accuracy_delta" not in c else 100 * c["accuracy_delta"], "{:+.2f}pp"),
            p50, p99, cv,
            _fmt(c.get("latency_ratio"), "{:.2f}x"), _fmt(r.macs, "{:,}"), _fmt(r.size_bytes, "{:,}"),
            prov, *((_fmt(r.extra.get("energy_mj_per_inference")), r.extra.get("energy_provenance", "–"))
                    if energy else ()),
            "ok" if r.status == "ok" else f"failed: {r.error}"[:60])
    return t


def _warn(records) -> None:
    from edgebench.reports.record import trust_warnings

    for line in trust_warnings(records):
        err.print(f"edgebench: warning: {line}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def run(config: Path = typer.Argument(..., help="Run config (TOML), e.g. examples/digits_cnn.toml"),
        fresh: bool = typer.Option(False, help="Start a new run even if an interrupted one can be resumed."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of a table."),
        quiet: bool = typer.Option(False, help="No progress bars."),
        ray: bool = typer.Option(False, "--ray", help="Measure on a Ray farm (each device a resource of capacity "
                                 "one); a local Ray instance unless --ray-address is given"),
        ray_address: str = typer.Option("", "--ray-address", help="Join a Ray cluster: 'auto' or 'ray://host:10001'")):
    """Train, export, bundle, benchmark on every configured device, and write the report."""
    from edgebench.config import load_config
    from edgebench.pipeline import run_pipeline
    from edgebench.reports.render import latest_per_key

    from edgebench.config import read_toml
    from edgebench.jobs import get_job

    doc = read_toml(config)
    log = (lambda *a: err.print(*a)) if as_json else out.print
    if "job" in doc:  # a search job (OFA, InstaTune, ...) validates and runs its own config
        cfg_name = str(doc.get("name", config.stem))
        result = get_job(str(doc["job"]))(doc, config, fresh=fresh, progress=not quiet and not as_json, log=log)
    else:
        cfg = load_config(config)
        if ray or ray_address:
            import dataclasses

            from edgebench.config import FarmSpec

            cfg = dataclasses.replace(cfg, farm=FarmSpec(engine="ray", address=ray_address or cfg.farm.address))
        cfg_name = cfg.name
        result = run_pipeline(cfg, fresh=fresh, progress=not quiet and not as_json, log=log)
    records = latest_per_key(result.records)
    failed = [r for r in records if r.status != "ok"]
    _warn(records)
    if as_json:
        print(json.dumps({"run_id": result.run_id, "resumed": result.resumed, "report": str(result.report_dir),
                          "wall_s": result.wall_s, "skipped": result.skipped, "train": result.train_metrics,
                          "records": [r.summary() for r in records]}, default=str))
    else:
        out.print(_records_table(records, f"{cfg_name}: {len(records)} measurements"))
        out.print(f"report: {result.report_dir}/report.html")
        out.print(f"wall time: {result.wall_s:.1f} s" + (f" (resumed, {result.skipped} skipped)" if result.resumed else ""))
    if failed:
        err.print(f"edgebench: {len(failed)} measurement(s) failed; see the report")
        raise typer.Exit(1)


@app.command()
def train(kind: str = typer.Argument(..., help="Model: cnn, l2mu, lmu"),
          dataset: str = typer.Option("digits", help="Dataset: digits, basicmotions, wisdm"),
          name: Optional[str] = typer.Option(None, help="Model name (default KIND-DATASET)"),
          epochs: Optional[int] = typer.Option(None, help="Training epochs"),
          seed: int = typer.Option(0, help="Random seed"),
          neuron: Optional[str] = typer.Option(None, help="Spiking neuron for l2mu: lif or cuba (default lif)"),
          data_root: Optional[Path] = typer.Option(None, help="Dataset folder on disk (wisdm: the folder holding raw/watch/...)"),
          out_dir: Path = typer.Option(Path("out/checkpoints"), "--out", help="Folder for checkpoint and eval data"),
          quiet: bool = typer.Option(False, help="No progress bar.")):
    """Train a model; writes a checkpoint (carrying its config) and the eval split as .npz."""
    import numpy as np

    from edgebench.train.registry import DATASETS, MODELS, check_name

    check_name(MODELS, kind, "model")  # both names before the data loads and torch imports: a typo is one line
    check_name(DATASETS, dataset, "dataset")
    from edgebench.train.base import save_checkpoint
    from edgebench.train.registry import train_model

    name = name or f"{kind}-{dataset}" + (f"-{neuron}" if neuron else "")
    mcfg, tcfg = {}, {}
    if neuron is not None and neuron not in ("lif", "cuba"):
        raise EdgebenchError(f"unknown neuron '{neuron}' (lif or cuba)")
    if kind in ("l2mu", "lmu"):  # the tuned recipes (sizes, memory gain, schedule) as the starting point
        from edgebench.train.l2mu import BASICMOTIONS_CONFIG

        preset = BASICMOTIONS_CONFIG["lmu" if kind == "lmu" else (neuron or "lif")]
        mcfg, tcfg = dict(preset["model"]), dict(preset["train"])
    tcfg.update({"seed": seed, **({"epochs": epochs} if epochs else {})})
    if neuron:
        mcfg["neuron"] = neuron
    dcfg = {"root": str(data_root)} if data_root else {}
    trained = train_model(name, kind, dataset, mcfg, tcfg, dcfg, progress=not quiet)
    ckpt = save_checkpoint(trained, out_dir / f"{name}.pt")
    npz = out_dir / f"{name}-eval.npz"
    np.savez(npz, x=trained.dataset.x_test.astype(np.float32), y=trained.dataset.y_test.astype(np.int64))
    out.print(f"{name}: test accuracy {trained.metrics['test_accuracy']:.2%}")
    out.print(f"checkpoint: {ckpt}\neval data: {npz}")


@app.command()
def export(checkpoint: Path = typer.Argument(..., help="Checkpoint written by `edgebench train`"),
           format: str = typer.Option("onnx", "--format", help="onnx or tflite"),
           precision: str = typer.Option("fp32", help="fp32, int8 (calibrated static) or int8-dynamic"),
           out_dir: Path = typer.Option(Path("out/artifacts"), "--out", help="Output folder"),
           opset: int = typer.Option(17, help="ONNX opset"),
           int8_activations: str = typer.Option(
               "int8", help="static ONNX INT8 activations: int8 (best on ARM) or uint8 (onnxruntime on x86 "
                            "fuses every Conv only with uint8; see benchmarks/int8_activations.py)"),
           atol: float = typer.Option(1e-4, help="fp32: largest |output - PyTorch| allowed on the eval split"),
           min_agreement: float = typer.Option(
               0.0, help="INT8: least share of eval samples whose top-1 class must match PyTorch's (0: the "
                         "exporter's default, 0.98 TFLite and 0.97 ONNX)"),
           as_json: bool = typer.Option(False, "--json", help="Print the artifact as JSON.")):
    """Export a checkpoint to ONNX or TFLite, validated against PyTorch on the eval split."""
    from edgebench.types import INT8_ACTIVATIONS

    try:  # the options and the file are checked before torch loads: a typo is one line at once
        fmt, prec = Format(format), Precision(precision)
    except ValueError as exc:
        raise EdgebenchError(f"{exc} (formats: onnx, tflite; precisions: fp32, int8, int8-dynamic)") from None
    if int8_activations not in INT8_ACTIVATIONS:
        raise EdgebenchError(f"--int8-activations must be int8 or uint8, not '{int8_activations}'")
    if not 0.0 <= min_agreement <= 1.0:
        raise EdgebenchError(f"--min-agreement is a share between 0 and 1, not {min_agreement:g}")
    if atol <= 0:
        raise EdgebenchError(f"--atol must be positive, not {atol:g}")
    from edgebench.export.errors import AgreementError
    from edgebench.train.base import load_checkpoint  # torch-free until the file is found

    trained = load_checkpoint(checkpoint)
    from edgebench.pipeline import export_artifact

    try:
        a = export_artifact(trained, fmt, prec, out_dir, opset, atol, min_agreement=min_agreement,
                            int8_activations=int8_activations)
    except AgreementError as exc:
        n = len(trained.dataset.x_test)
        raise EdgebenchError(f"{exc} on {n} eval samples; to keep the file anyway, lower --min-agreement "
                             f"(e.g. {max(0.0, exc.agreement - 0.005):.3f})") from None
    v = a.validation
    if as_json:
        print(json.dumps({"path": str(a.path), "format": a.format.value, "precision": a.precision.value,
                          "size_bytes": a.size_bytes, "sha256": a.sha256, "macs": a.macs, "params": a.params,
                          "validation": v.to_dict() if v else None}))
        return
    out.print(f"wrote {a.path} ({a.size_bytes:,} bytes, {a.format.value} {a.precision.value})")
    if v:
        out.print(f"vs PyTorch on {v.n_samples} eval samples: top-1 agreement {v.top1_agreement:.2%}, "
                  f"max |diff| {v.max_abs_diff:.3g}" + (f" (atol {v.atol:g})" if v.atol is not None else ""))
    if a.macs is not None:
        out.print(f"MACs {a.macs:,} ({a.macs_definition}); params {a.params:,}")


@app.command()
def bench(model: Path = typer.Argument(..., help="An .onnx or .tflite file (any model, not only edgebench's)"),
          device: str = typer.Option("local", help="Device name from devices.toml"),
          runs: int = typer.Option(100, min=1, help="Measured inferences (at least)"),
          warmup: int = typer.Option(10, min=0, help="Warm-up inferences"),
          threads: int = typer.Option(1, min=1, help="Runtime threads"),
          min_time: float = typer.Option(0.0, min=0.0, help="Keep measuring at least this many seconds"),
          eval_file: Optional[Path] = typer.Option(None, "--eval", help=".npz with arrays x and y: accuracy on the device"),
          shape: List[str] = typer.Option([], "--shape", help="NAME=1x3x640x640: a free dimension's size "
                                          "(repeatable). A leading batch dimension defaults to 1; any other free "
                                          "dimension must be given."),
          input_: List[str] = typer.Option([], "--input", help="NAME=FILE.npy, NAME=VALUE (e.g. sr=16000) or "
                                           "NAME=zeros|ones|random (repeatable)"),
          inputs_file: Optional[Path] = typer.Option(None, "--inputs", help=".npz with one array per input name"),
          profile: bool = typer.Option(False, help="Per-operator profile (onnxruntime)"),
          tflite_kernels: str = typer.Option("xnnpack", help="TFLite: xnnpack (LiteRT's default delegate), builtin "
                                             "(TFLite's own kernels) or auto (both probed on the device, the faster "
                                             "kept; the record says which)"),
          timeout: float = typer.Option(600.0, min=1.0, help="Seconds before the run is abandoned"),
          store: Path = typer.Option(DEFAULT_STORE, help="SQLite result store"),
          devices_file: Optional[Path] = typer.Option(None, "--devices", help="devices.toml (default ./devices.toml)"),
          as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """Benchmark a model file on a device; the record goes to the store."""
    from edgebench.api import bench as bench_model
    from edgebench.deploy.inputs import load_inputs_npz, parse_input_args, parse_shape_args

    shapes = parse_shape_args(shape)
    values = load_inputs_npz(inputs_file) if inputs_file else {}
    values.update(parse_input_args(input_))
    with err.status(f"benchmarking {model.name} on {device} ...", spinner="dots") if not as_json and err.is_terminal \
            else _nothing():
        record = bench_model(model, device=device, runs=runs, warmup=warmup, threads=threads, shapes=shapes,
                             inputs=values, eval=eval_file, min_time_s=min_time, profile=profile, timeout_s=timeout,
                             store=store, devices_file=devices_file, tflite_kernels=tflite_kernels)
    _warn([record])
    if as_json:
        print(json.dumps(record.summary(), default=str))
    else:
        out.print(_records_table([record], f"{model.name} on {device}"))
        if record.profile:
            t = Table(title="top operators (onnxruntime profiler, separate profiled session)")
            for col in ("op", "node", "mean µs/run", "share"):
                t.add_column(col)
            for p in record.profile[:10]:
                t.add_row(str(p["op"]), str(p.get("node", "")), f"{p['mean_us']:.2f}", f"{p['share']:.1%}")
            out.print(t)
        elif profile:
            out.print(f"no per-operator profile: {record.runtime or 'this runtime'} exposes none")
    if record.status != "ok":
        err.print(f"edgebench: measurement failed: {record.error}")
        raise typer.Exit(1)


@app.command()
def report(store: Path = typer.Option(DEFAULT_STORE, help="SQLite result store"),
           run_id: Optional[str] = typer.Option(None, "--run", help="Run id (default: the newest)"),
           out_dir: Path = typer.Option(Path("out/report"), "--out", help="Report folder"),
           list_runs: bool = typer.Option(False, "--list", help="List the runs in the store and exit."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON."),
           fmt: str = typer.Option("html", "--format",
                                   help="What to print after writing the folder: html (a table and the path of "
                                        "report.html) or md (report.md, for a pull-request comment or a CI log)")):
    """Write an ONNX-Bench-style report folder (HTML, Markdown, CSV, JSON, ONNX files) for a run in the store."""
    from edgebench.reports.render import latest_per_key, write_report
    from edgebench.reports.store import Store

    if fmt not in ("html", "md"):
        raise EdgebenchError(f"--format {fmt}: choose html or md")

    if not store.exists():
        raise EdgebenchError(f"result store not found: {store} (run `edgebench run` or `edgebench bench` first)")
    with Store(store) as s:
        if list_runs:
            runs = s.runs()
            if as_json:
                print(json.dumps(runs))
            else:
                t = Table(title=str(store))
                for col in ("run_id", "name", "status", "records", "failed"):
                    t.add_column(col)
                for r in runs:
                    t.add_row(r["run_id"], r["name"], r["status"], str(r["records"]), str(r["failed"]))
                out.print(t)
            return
        run_id = run_id or s.latest_run()
        records = s.query(run_id=run_id) if run_id else []
    if not records:
        raise EdgebenchError(f"no records for run '{run_id}' in {store} (see `edgebench report --list`)")
    path = write_report(records, out_dir, title=f"edgebench report: {run_id}")
    if as_json:
        print(json.dumps({"run_id": run_id, "report": str(path), "records": len(records)}))
    elif fmt == "md":
        sys.stdout.write((path / "report.md").read_text())
    else:
        out.print(_records_table(latest_per_key(records), run_id))
        out.print(f"report: {path}/report.html")


@dataset_app.command("export")
def dataset_export(store: Path = typer.Option(DEFAULT_STORE, help="SQLite result store (every run in it)"),
                   out_dir: Path = typer.Option(Path("out/dataset"), "--out", help="Dataset folder"),
                   fmt: str = typer.Option("csv", "--format", help="csv or parquet"),
                   as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """One row per unique artifact (by sha256) with per-device latency, provenance and accuracy, MACs and
    params; the model files with their metrics in metadata_props. Loadable offline with pandas, and the
    parquet with `datasets.load_dataset("parquet", data_files=...)`."""
    from edgebench.reports.dataset import export_dataset
    from edgebench.reports.store import Store

    if not store.exists():
        raise EdgebenchError(f"result store not found: {store}")
    with Store(store) as s:
        records = s.query()
    path = export_dataset(records, out_dir, fmt)
    if as_json:
        print(json.dumps({"table": str(path), "records": len(records)}))
    else:
        out.print(f"dataset: {path} (from {len(records)} records in {store})")


# the commands that live beside their subsystems, listed after the flow's own
app.command()(compare)
app.command()(predict)
app.add_typer(predictor_app, name="predictor")
app.add_typer(dataset_app, name="dataset")
app.add_typer(devices_app, name="devices")
app.add_typer(instatune_app, name="instatune")
app.add_typer(ofa_app, name="ofa")


def main() -> None:
    """Entry point: click handles usage errors (exit 2); user-caused errors become one line, exit 2."""
    try:
        app()  # standalone: exits by itself
    except EdgebenchError as exc:
        err.print(f"edgebench: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("edgebench: interrupted", markup=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
