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
from rich.console import Console
from rich.table import Table

from edgebench.types import EdgebenchError, Format, Precision

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Export PyTorch models to ONNX/TFLite, run them on edge devices, report what they measure.")
devices_app = typer.Typer(no_args_is_help=True, help="List, check and prepare the devices in devices.toml.")
dataset_app = typer.Typer(no_args_is_help=True, help="Every measured artifact as an ONNX-Bench-style dataset.")
predictor_app = typer.Typer(no_args_is_help=True, help="Kernel-level latency predictors, one per device.")
app.add_typer(predictor_app, name="predictor")
app.add_typer(dataset_app, name="dataset")
app.add_typer(devices_app, name="devices")
from edgebench.search.instatune_cli import app as instatune_app  # noqa: E402
app.add_typer(instatune_app, name="instatune")
from edgebench.search.ofa_cli import app as ofa_app  # noqa: E402
app.add_typer(ofa_app, name="ofa")


def _version(value: bool):
    if value:
        from edgebench import __version__

        print(f"edgebench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """Export PyTorch models to ONNX/TFLite, run them on edge devices, report what they measure."""

# Wide when not a terminal (pipes, CI logs): a summary table should not be cut to 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
from edgebench.reports.store import DEFAULT_STORE  # noqa: E402


@contextlib.contextmanager
def _nothing():
    yield


def _fmt(v, spec="{:.4g}"):
    return "–" if v is None else spec.format(v)


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
           as_json: bool = typer.Option(False, "--json", help="Print the artifact as JSON.")):
    """Export a checkpoint to ONNX or TFLite, validated against PyTorch on the eval split."""
    from edgebench.pipeline import export_artifact
    from edgebench.train.base import load_checkpoint

    try:
        fmt, prec = Format(format), Precision(precision)
    except ValueError as exc:
        raise EdgebenchError(f"{exc} (formats: onnx, tflite; precisions: fp32, int8, int8-dynamic)") from None
    trained = load_checkpoint(checkpoint)
    from edgebench.types import INT8_ACTIVATIONS

    if int8_activations not in INT8_ACTIVATIONS:
        raise EdgebenchError(f"--int8-activations must be int8 or uint8, not '{int8_activations}'")
    a = export_artifact(trained, fmt, prec, out_dir, opset, 1e-4, int8_activations=int8_activations)
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


def _fraction(text: str, unit: str) -> float:
    t = text.strip().lower().removesuffix(unit)
    try:
        return float(t)
    except ValueError:
        raise EdgebenchError(f"'{text}' is not a number with {unit} (e.g. 5{unit})") from None


@app.command()
def compare(base: str = typer.Argument(..., help="BASE: a run id (in --store), a report folder, a store file, or "
                                       "a model file (then both files are measured here, side by side)"),
            current: str = typer.Argument(..., help="CURRENT: the same kinds as BASE"),
            max_slowdown: str = typer.Option("5%", help="Slowdown beyond which a pair regresses, e.g. 5%"),
            max_accuracy_drop: str = typer.Option("0.5pp", help="Accuracy drop (points) beyond which a pair regresses"),
            store: Path = typer.Option(DEFAULT_STORE, help="SQLite store for run ids (and side-by-side records)"),
            device: str = typer.Option("local", help="Side by side: the device both files run on"),
            current_device: Optional[str] = typer.Option(None, help="Side by side: another device for CURRENT"),
            rounds: int = typer.Option(48, min=2, help="Side by side: alternating rounds per file (more rounds, "
                                       "a narrower interval)"),
            runs: Optional[int] = typer.Option(None, min=1, help="Side by side: measured inferences per round "
                                               "(default: as many as take about 0.25 s, at least 3)"),
            warmup: int = typer.Option(1, min=0, help="Side by side: warm-up inferences per round"),
            threads: int = typer.Option(1, min=1, help="Side by side: runtime threads"),
            shape: List[str] = typer.Option([], "--shape", help="Side by side: NAME=1x3x640x640 for a free dimension"),
            input_: List[str] = typer.Option([], "--input", help="Side by side: NAME=FILE.npy|VALUE|zeros|ones|random"),
            devices_file: Optional[Path] = typer.Option(None, "--devices", help="devices.toml"),
            as_json: bool = typer.Option(False, "--json", help="Print JSON verdicts.")):
    """Regression gate: pair the records of two runs and exit 1 on a real slowdown or accuracy drop.

    Latency is judged on the raw samples (bootstrap 95% interval of the ratio of medians): a pair regresses
    only when the whole interval is beyond --max-slowdown, so noise does not fail a build. Instruction counts
    (emulated devices) are compared exactly. Unpaired records are listed.

    Given two model files, both are measured here in alternating rounds and judged on the rounds' paired
    ratios: on a machine that changes speed (devices doctor --stability), the way to tell the model from the
    machine. On a local device or an SSH board each file keeps one runner process for all rounds; a local
    device that names no cores is pinned to one, both files on the same. Both records go to --store.

    When identical files (same sha256) of two stored runs come out both slower and faster, compare warns that
    the machine's speed moved, not the files."""
    from edgebench.reports.compare import compare_records, judge, load_records, machine_moved

    slow = _fraction(max_slowdown, "%") / 100.0
    drop = _fraction(max_accuracy_drop, "pp")
    if slow < 0 or drop < 0:
        raise EdgebenchError("--max-slowdown and --max-accuracy-drop must be >= 0")
    models = [Path(x) for x in (base, current)]
    is_model = [p.suffix in (".onnx", ".tflite") for p in models]
    if any(is_model) and not all(is_model):
        raise EdgebenchError("compare takes two model files (measured side by side here) or two runs (run ids, "
                             f"report folders, store files), not one of each: {base} vs {current}")
    if all(is_model):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from edgebench.deploy.inputs import parse_input_args, parse_shape_args
        from edgebench.reports.side_by_side import side_by_side

        for p in models:
            if not p.is_file():
                raise EdgebenchError(f"model file not found: {p}")
        with Progress(TextColumn("side by side"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, disable=as_json or not err.is_terminal) as bar:
            task = bar.add_task("rounds", total=rounds)
            b, c = side_by_side(models[0], models[1], device, current_device, rounds, runs, warmup, threads,
                                parse_shape_args(shape), parse_input_args(input_), store, devices_file,
                                progress=lambda done, _total: bar.update(task, completed=done))
        verdicts = [judge(b, c, slow, drop)]
    else:
        verdicts = compare_records(load_records(base, store), load_records(current, store), slow, drop)
    regressed = [v for v in verdicts if v.verdict == "regression"]
    moved = machine_moved(verdicts)
    if as_json:
        print(json.dumps({"regressions": len(regressed), "verdicts": [v.to_dict() for v in verdicts],
                          **({"warning": moved} if moved else {})}))
    else:
        t = Table(title=f"compare {base} -> {current} (max slowdown {slow:.1%}, max accuracy drop {drop:g} pp)")
        for col in ("artifact", "device", "runtime", "base p50 ms", "current p50 ms", "ratio", "95% interval",
                    "Δ acc", "verdict", "why"):
            t.add_column(col, justify="right" if "ms" in col or col in ("ratio", "Δ acc") else "left")
        for v in verdicts:
            t.add_row(v.name, v.device, v.runtime, _fmt(v.base_p50_ms), _fmt(v.current_p50_ms),
                      _fmt(v.ratio, "{:.3f}x"), "–" if not v.ratio_ci else f"{v.ratio_ci[0]:.3f}..{v.ratio_ci[1]:.3f}",
                      _fmt(v.accuracy_delta_pp, "{:+.2f}pp"), v.verdict, v.reason or v.basis)
        out.print(t)
    if moved:
        err.print(f"edgebench: warning: {moved}")
    if regressed:
        err.print(f"edgebench: {len(regressed)} regression(s): " + ", ".join(f"{v.name}@{v.device}" for v in regressed))
        raise typer.Exit(1)


@predictor_app.command("build")
def predictor_build(device: str = typer.Option(..., help="Device name (its kernels are measured there)"),
                    budget_minutes: float = typer.Option(10.0, min=0.1, help="Stop measuring new kernels after this"),
                    models: List[Path] = typer.Option([], "--model", help="ONNX models to learn from, with kernels "
                                                      "sampled around theirs (repeatable); the store's ONNX "
                                                      "artifacts are added, and its whole-model records"),
                    zoo: int = typer.Option(24, min=0, help="Generated CNNs, MLPs and transformers to learn from"),
                    around: bool = typer.Option(True, help="Also time kernels around every learned kernel (each "
                                                "dimension x0.5 ... x2), so the regressors interpolate"),
                    prior: int = typer.Option(520, min=0, help="Kernels of the common operators (convolutions, "
                                              "matmuls, GRU/LSTM, elementwise, data movement) at random "
                                              "configurations, for graphs unlike any learned from"),
                    space: List[str] = typer.Option([], "--space", help="A search space to learn from: 'ofa' "
                                                    "(subnets of the default OFA space; repeatable)"),
                    threads: int = typer.Option(1, min=1, help="Runtime threads (as the predicted models will run)"),
                    store: Path = typer.Option(DEFAULT_STORE, help="SQLite store whose ONNX artifacts are added"),
                    out_file: Optional[Path] = typer.Option(None, "--out", help="Predictor file "
                                                            "(default out/predictors/DEVICE.json)"),
                    devices_file: Optional[Path] = typer.Option(None, "--devices", help="devices.toml"),
                    quiet: bool = typer.Option(False, help="No progress bar.")):
    """Measure the kernels of many models on a device and fit a latency predictor (nn-Meter style).

    Resumable: run it again to continue an interrupted or budget-limited build."""
    from edgebench.devices.registry import get_device
    from edgebench.search.predictor import BuildConfig, build_predictor, predictor_path
    from edgebench.search.predictor_sources import ofa_sources, store_sources, zoo_sources

    dev = get_device(device, str(devices_file) if devices_file else None)
    path = out_file or predictor_path(dev.name)
    for p in models:
        if not p.exists():
            raise EdgebenchError(f"model file not found: {p}")
    unknown = sorted(set(space) - {"ofa"})
    if unknown:
        raise EdgebenchError(f"--space: unknown search space {', '.join(unknown)} (known: ofa)")
    # the user's models (given and in the store), the zoo and the search spaces; kernels sampled around them all
    say = lambda m: err.print(m, markup=False, highlight=False)  # noqa: E731
    learn = [*store_sources([(p.stem, p) for p in models], store, dev.name, threads, log=say),
             *zoo_sources(zoo, path.parent / f"{dev.name}-zoo"),
             *(ofa_sources(path.parent / f"{dev.name}-ofa") if "ofa" in space else [])]
    for src in learn:
        src.around = src.around and around
    cfg = BuildConfig(budget_minutes=budget_minutes, threads=threads, zoo=zoo, prior=prior)
    doc = build_predictor(dev, path, learn, cfg, progress=not quiet, log=lambda m: err.print(m, markup=False))
    out.print(f"predictor for {dev.name}: {len(doc['kernels'])} kernels, {len(doc['models'])} whole models -> {path}")


@app.command()
def predict(model: Path = typer.Argument(..., help="An ONNX graph"),
            device: str = typer.Option(..., help="The device whose predictor to use"),
            predictor_file: Optional[Path] = typer.Option(None, "--predictor", help="Predictor file "
                                                          "(default out/predictors/DEVICE.json)"),
            shape: List[str] = typer.Option([], "--shape", help="NAME=1x3x224x224 for a free dimension"),
            input_: List[str] = typer.Option([], "--input", help="NAME=FILE.npy|VALUE|zeros|ones|random"),
            max_latency_ms: Optional[float] = typer.Option(None, "--max-latency-ms", min=0.0,
                                                           help="Exit 1 when the predicted latency exceeds this"),
            max_instructions: Optional[int] = typer.Option(None, "--max-instructions", min=0,
                                                           help="Exit 1 when the predicted guest instructions "
                                                                "exceed this (emulated devices)"),
            as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """Predicted latency of any ONNX graph on a device, with the per-kernel breakdown (provenance
    `predicted`). For an emulated device: predicted guest instructions (and emulated wall time, named so).
    With a budget (--max-latency-ms, --max-instructions) it exits 1 when the prediction exceeds it: a CI gate
    that needs no device."""
    from edgebench.deploy.inputs import parse_input_args, parse_shape_args
    from edgebench.search.predictor import predict_file, predictor_path

    if not model.exists():
        raise EdgebenchError(f"model file not found: {model}")
    doc = predict_file(predictor_file or predictor_path(device), model, parse_shape_args(shape),
                       parse_input_args(input_))
    if as_json:
        print(json.dumps(doc))
        _predict_budget(doc, model, max_latency_ms, max_instructions)
        return
    t = Table(title=f"{model.name} on {device}: predicted (provenance: predicted)")
    key = "p50_ms" if "predicted_latency_ms" in doc or "predicted_emulated_wall_ms" in doc else "instructions"
    for col in ("kernel type", "count", "ms", "measured", "regressed", "fallback"):
        t.add_column(col, justify="left" if col == "kernel type" else "right")
    for b in doc["breakdown"]:
        t.add_row(b["type"], str(b["count"]), _fmt(b.get(key)), str(b["measured"]), str(b["regressed"]),
                  str(b["fallback"]))
    out.print(t)
    if "predicted_latency_ms" in doc:
        how = (f"overhead fitted on {doc['fit']['n_models']} whole models" if "c" in doc["fit"] else doc["fit"]["method"])
        out.print(f"predicted latency: {doc['predicted_latency_ms']:.4g} ms ({doc['kernels']} kernels; {how})")
        if doc.get("machine_speed"):
            out.print(f"  {doc['machine_speed']['text']}", markup=False)
    if "predicted_emulated_wall_ms" in doc:
        out.print(f"predicted emulated wall time: {doc['predicted_emulated_wall_ms']:.4g} ms (not a device latency)")
    if "predicted_instructions" in doc:
        out.print(f"predicted guest instructions per inference: {doc['predicted_instructions']:,}")
    if doc.get("error_band"):
        out.print(f"error of {doc['error_band']['of']} on an unseen model: {doc['error_band']['text']}",
                  markup=False)
    if doc.get("unmeasured_operators"):
        err.print(f"edgebench: warning: the predictor never measured {', '.join(doc['unmeasured_operators'])}: "
                  f"estimated from other operators, outside the stated error; run `edgebench predictor build "
                  f"--device {device} --model {model}` to measure them (it resumes)", markup=False)
    _predict_budget(doc, model, max_latency_ms, max_instructions)


def _predict_budget(doc: dict, model: Path, max_latency_ms, max_instructions) -> None:
    checks = [("predicted_latency_ms", max_latency_ms, "ms"), ("predicted_instructions", max_instructions, "instructions")]
    for key, limit, unit in checks:
        if limit is None:
            continue
        if key not in doc:
            raise EdgebenchError(f"--max-{'latency-ms' if unit == 'ms' else 'instructions'}: this predictor gives "
                                 f"no {key} (device {doc.get('device')})")
        if doc[key] > limit:
            err.print(f"edgebench: {model.name}: {key} {doc[key]:,.4g} exceeds the budget {limit:,.4g} {unit}",
                      markup=False, highlight=False)
            raise typer.Exit(1)


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


@devices_app.command("list")
def devices_list(devices_file: Optional[Path] = typer.Option(None, "--devices", help="devices.toml"),
                 as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """The configured devices (built-ins plus devices.toml)."""
    from edgebench.devices.registry import device_table

    table = device_table(devices_file)
    if as_json:
        print(json.dumps(table))
        return
    t = Table(title="devices")
    t.add_column("name")
    t.add_column("kind")
    t.add_column("settings")
    for name, raw in sorted(table.items()):
        t.add_row(name, raw["kind"], ", ".join(f"{k}={v}" for k, v in raw.items() if k != "kind"))
    out.print(t)


@devices_app.command("doctor")
def devices_doctor(names: List[str] = typer.Argument(None, help="Device names (default: all configured)"),
                   devices_file: Optional[Path] = typer.Option(None, "--devices", help="devices.toml"),
                   stability: float = typer.Option(0.0, min=0.0, help="Also time a fixed workload for this many "
                                                   "seconds on each local device's cores and say whether the "
                                                   "machine keeps its speed (a shared host may not); 0: skip"),
                   as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Is each device reachable and ready? Prints its Python, runtimes, CPU, cores, memory.

    With --stability S (e.g. 20), a local device's cores are probed for S seconds: if the same work runs
    at two speeds (another tenant or an SMT sibling on the core), latency figures move between runs by as
    much, and the line says so (a warning, not a failure)."""
    from edgebench.devices.registry import device_table, get_device
    from edgebench.devices.stability import probe_speed

    names = names or sorted(device_table(devices_file))
    results = {}
    for name in names:
        dev = get_device(name, devices_file)
        results[name] = dev.doctor()
        if stability and dev.kind == "local":
            results[name]["stability"] = probe_speed(dev, stability).to_dict()
    if as_json:
        print(json.dumps(results, default=str))
    else:
        for name, res in results.items():
            out.print(f"[bold]{name}[/bold]: {'ready' if res['ok'] else 'NOT READY'}")
            for what, ok, detail in res["checks"]:
                out.print(f"  {'✓' if ok else '✗'} {what}: {detail}")
            if "stability" in res:
                from edgebench.devices.stability import SpeedTrace

                trace = SpeedTrace(**{k: v for k, v in res["stability"].items() if k != "stable"})
                out.print(f"  {'✓' if trace.stable else '!'} speed: {trace.summary()}", markup=False)
            facts = res.get("facts", {})
            if facts:
                out.print(f"  cpu {facts.get('cpu')}, {facts.get('cores')} cores, {facts.get('machine')}, "
                          f"memory {_fmt(facts.get('mem_total_mb'), '{:.0f}')} MB, {facts.get('os')}")
    if not all(r["ok"] for r in results.values()):
        raise typer.Exit(1)


@devices_app.command("setup")
def devices_setup(name: str = typer.Argument(..., help="Device name"),
                  devices_file: Optional[Path] = typer.Option(None, "--devices", help="devices.toml")):
    """Prepare what a device needs (e.g. build the emulated aarch64 root). Safe to repeat."""
    from edgebench.devices.registry import get_device

    dev = get_device(name, devices_file)
    dev.setup()
    out.print(f"{name}: ready")


devices_app.command("calibrate")(__import__("edgebench.devices.calibrate_cli", fromlist=["calibrate"]).calibrate)


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
