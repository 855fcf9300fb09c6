"""`edgebench compare BASE CURRENT`: the regression gate. Pairs the two sides' records (model, device, runtime,
threads), decides each pair on the raw samples (reports/compare.py), prints the verdicts, exits 1 on a real
regression. Heavy modules load inside the command."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from edgebench.console import err, fmt as _fmt, out
from edgebench.reports.store import DEFAULT_STORE
from edgebench.types import EdgebenchError


def _fraction(text: str, unit: str) -> float:
    t = text.strip().lower().removesuffix(unit)
    try:
        return float(t)
    except ValueError:
        raise EdgebenchError(f"'{text}' is not a number with {unit} (e.g. 5{unit})") from None


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
