"""`edgebench predictor build` and `edgebench predict`: a kernel-level latency predictor per device, and the
prediction (labelled `predicted`) of any ONNX graph with its per-kernel breakdown and stated error. A thin
layer over edgebench.search.predictor; heavy modules load inside the commands. User errors are
EdgebenchError: one line, exit 2 (edgebench.cli.main)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from edgebench.console import err, fmt as _fmt, out
from edgebench.reports.store import DEFAULT_STORE
from edgebench.types import EdgebenchError

app = typer.Typer(no_args_is_help=True, help="Kernel-level latency predictors, one per device.")


@app.command("build")
def predictor_build(device: str = typer.Option(..., help="Device name (its kernels are measured there)"),
                    budget_minutes: float = typer.Option(10.0, min=0.1, help="Stop measuring new kernels after this"),
                    models: List[Path] = typer.Option([], "--model", help="ONNX models to learn from, with kernels "
                                                      "sampled around theirs (repeatable); the store's ONNX "
                                                      "artifacts are added, and its whole-model records"),
                    zoo: int = typer.Option(24, min=0, help="Generated CNNs, MLPs and transformers to learn from"),
                    streaming: int = typer.Option(5, min=0, max=5, help="Whole models whose weights (4.7-38 MB) "
                                                  "overflow the cache: what streaming weights costs a model"),
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
    from edgebench.search.predictor_sources import ofa_sources, store_sources, streaming_sources, zoo_sources

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
             *streaming_sources(path.parent / f"{dev.name}-streaming", streaming),
             *(ofa_sources(path.parent / f"{dev.name}-ofa") if "ofa" in space else [])]
    for src in learn:
        src.around = src.around and around
    cfg = BuildConfig(budget_minutes=budget_minutes, threads=threads, zoo=zoo, prior=prior)
    doc = build_predictor(dev, path, learn, cfg, progress=not quiet, log=lambda m: err.print(m, markup=False))
    out.print(f"predictor for {dev.name}: {len(doc['kernels'])} kernels, {len(doc['models'])} whole models -> {path}")


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
