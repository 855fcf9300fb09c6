"""`edgebench ofa ...`: train a supernet, build a device's latency table, search it, predict, export a pick.

A thin layer over edgebench.train.ofa, edgebench.search.lut and edgebench.search.ofa_job; heavy modules
load inside the commands. User errors (a missing file, an arch outside the space, an unknown device)
are EdgebenchError: one line, exit 2.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True, help="Once-for-All: elastic supernet, latency tables, search, export.")


def _echo(text: str, as_json: bool) -> None:
    # with --json, stdout holds only the JSON document; progress and notes go to stderr
    typer.echo(text, err=as_json)


@app.command("train")
def train_cmd(out: Path = typer.Option(..., "--out", help="Supernet checkpoint to write (.pt)"),
              full_epochs: float = typer.Option(3.0, help="epochs of the full network"),
              kernel_epochs: float = typer.Option(1.0, help="epochs with elastic kernel"),
              depth_epochs: float = typer.Option(1.0, help="epochs with elastic kernel + depth"),
              expand_epochs: float = typer.Option(2.0, help="epochs with everything elastic"),
              train_limit: int = typer.Option(0, help="use only this many training images (0: all)"),
              data_root: str = typer.Option("", help="folder of the Fashion-MNIST IDX files"),
              predictor_subnets: int = typer.Option(200, help="subnets evaluated for the accuracy predictor"),
              quiet: bool = typer.Option(False, help="No progress bars.")):
    """Train the supernet on Fashion-MNIST by progressive shrinking, then its accuracy predictor."""
    from edgebench.search.accuracy import PredictorConfig, train_predictor
    from edgebench.search.ofa_job import load_data, store_predictor
    from edgebench.search.ofa_space import OFASpace
    from edgebench.train.ofa import OFASpec, OFASupernet, subnet_accuracy
    from edgebench.train.ofa_train import ShrinkConfig, save_supernet, train_supernet

    data = {"root": data_root, "train_limit": train_limit}
    ds, x_val, y_val = load_data(data)
    cfg = ShrinkConfig(full_epochs=full_epochs, kernel_epochs=kernel_epochs, depth_epochs=depth_epochs,
                       expand_epochs=expand_epochs)
    net = OFASupernet(OFASpec())
    metrics = train_supernet(net, ds.x_train, ds.y_train, cfg, progress=not quiet, log=typer.echo)
    for which, arch in (("largest", net.spec.largest()), ("smallest", net.spec.smallest())):
        metrics[f"{which}_val_accuracy"] = subnet_accuracy(net, arch, ds.x_train[:cfg.bn_calib_images], x_val, y_val)
    save_supernet(net, out, metrics, {"data": data})
    pred = train_predictor(net, OFASpace(net.spec), ds.x_train, x_val, y_val, PredictorConfig(subnets=predictor_subnets),
                           progress=not quiet, log=typer.echo)
    store_predictor(out, pred)
    typer.echo(f"{out}: largest {metrics['largest_val_accuracy']:.2%}, smallest {metrics['smallest_val_accuracy']:.2%} "
               f"(validation split)")


@app.command("lut")
def lut_cmd(supernet: Path = typer.Option(..., help="Supernet checkpoint (its space is what the table covers)"),
            device: str = typer.Option(..., help="Device name (devices.toml or built in: local, pi4-emulated)"),
            out: Path = typer.Option(..., "--out", help="Table to write (YAML); an existing one is resumed"),
            devices_file: Optional[Path] = typer.Option(None, "--devices", help="devices.toml"),
            runs: int = typer.Option(200, help="measured inferences per key (3 on an emulated device)"),
            rounds: int = typer.Option(5, help="interleaved rounds"),
            threads: int = typer.Option(1, help="runtime threads (use what the deployed subnets will use)"),
            calib_nets: int = typer.Option(30, help="random whole subnets measured to fit the overhead (beside the smallest "
                                                       "and the largest), in the runner process of the last keys"),
            resolutions: Optional[str] = typer.Option(None, help="only keys these resolutions reach, e.g. 24,28"),
            quiet: bool = typer.Option(False, help="No progress bar.")):
    """Measure every block configuration of the space on DEVICE (one runner process per chunk)."""
    from edgebench.devices.registry import get_device
    from edgebench.search.lut import LUTConfig, build_lut, summary_line
    from edgebench.train.ofa_train import load_supernet
    from edgebench.types import EdgebenchError

    net, _ = load_supernet(supernet)
    dev = get_device(device, devices_file)
    res = None
    if resolutions:
        try:
            res = [int(v) for v in resolutions.split(",")]
        except ValueError:
            raise EdgebenchError(f"--resolutions must be integers separated by commas, got {resolutions!r}") from None
    cfg = LUTConfig(runs=runs, rounds=rounds, threads=threads, calib_nets=calib_nets)
    table = build_lut(net.spec, dev, out, cfg, resolutions=res, progress=not quiet, log=typer.echo)
    typer.echo(summary_line(table))


@app.command("search")
def search_cmd(supernet: Path = typer.Option(..., help="Supernet checkpoint"),
               lut: Path = typer.Option(..., help="Latency table of the target device"),
               latency_ms: float = typer.Option(..., "--latency-ms", help="Latency budget (predicted, ms)"),
               pareto: bool = typer.Option(False, "--pareto", help="Also the NSGA-II front (accuracy vs latency)"),
               as_json: bool = typer.Option(False, "--json", help="Print the picks as JSON"),
               population: int = typer.Option(100, help="evolution population"),
               generations: int = typer.Option(500, help="evolution generations"),
               seed: int = typer.Option(0, help="seed"),
               out: Optional[Path] = typer.Option(None, "--out", help="Also write the best arch here (ARCH.json)")):
    """OFA's evolutionary search under a latency budget; prints each pick's arch, predicted accuracy and
    predicted latency."""
    from edgebench.search.evolution import EvolutionConfig
    from edgebench.search.lut import LatencyTable
    from edgebench.search.ofa_job import pareto_front, predictor_for, search_picks
    from edgebench.types import EdgebenchError

    table = LatencyTable.load(lut)
    net, _, space, pred = predictor_for(supernet, progress=not as_json, log=lambda m: _echo(m, as_json))
    if table.spec != net.spec:
        raise EdgebenchError(f"{lut} was built for another space than {supernet}")
    picks = search_picks(space, table, pred, [latency_ms], EvolutionConfig(population=population,
                                                                             generations=generations, seed=seed))
    rows = [{"kind": "evolution", **_pick_row(p)} for p in picks]
    if pareto:
        rows += [{"kind": "pareto", **_pick_row(p)} for p in pareto_front(space, table, pred, seed=seed)]
    if out is not None:
        out.write_text(json.dumps(picks[0]["arch"]))
    if as_json:
        typer.echo(json.dumps({"device": table.device, "budget_ms": latency_ms, "picks": rows}))
        return
    for r in rows:
        typer.echo(f"{r['kind']:9s} predicted accuracy {r['predicted_accuracy']:.2%}  predicted latency "
                   f"{r['predicted_latency_ms']:.4g} ms  arch {json.dumps(r['arch'], separators=(',', ':'))}")


def _pick_row(p: dict) -> dict:
    keep = ("arch", "predicted_accuracy", "predicted_latency_ms", "predicted_latency_provenance", "budget_ms",
            "predicted_instructions", "accuracy_evaluations", "search_s")
    row = {k: p[k] for k in keep if k in p}
    row.setdefault("predicted_latency_provenance", "predicted")
    return row


@app.command("predict")
def predict_cmd(lut: Path = typer.Option(..., help="Latency table"),
                arch: Path = typer.Option(..., help="ARCH.json: {\"ks\": [...], \"e\": [...], \"d\": [...], \"r\": R}"),
                as_json: bool = typer.Option(False, "--json", help="Print JSON")):
    """Predicted latency of one arch from a device's table (provenance: predicted)."""
    from edgebench.search.lut import LatencyTable
    from edgebench.search.ofa_space import OFASpace
    from edgebench.search.space import load_arch

    table = LatencyTable.load(lut)
    a = load_arch(arch, OFASpace(table.spec))
    p = table.predict(a)
    if as_json:
        typer.echo(json.dumps(p))
    else:
        typer.echo(f"predicted latency on {table.device}: {p['predicted_latency_ms']:.4g} ms (predicted)"
                   + (f", {p['predicted_instructions']:,} instructions" if "predicted_instructions" in p else ""))


@app.command("export")
def export_cmd(supernet: Path = typer.Option(..., help="Supernet checkpoint"),
               arch: Path = typer.Option(..., help="ARCH.json of the subnet"),
               fmt: str = typer.Option("onnx", "--format", help="onnx or tflite"),
               precision: str = typer.Option("fp32", help="fp32, int8, int8-dynamic"),
               out: Path = typer.Option(Path("out/ofa-artifacts"), "--out", help="Output folder"),
               name: str = typer.Option("ofa-subnet", help="artifact name prefix"),
               as_json: bool = typer.Option(False, "--json", help="Print JSON")):
    """Extract a subnet, recalibrate its BatchNorm on training images, export and validate it. Also writes
    NAME-eval.npz (the test split at the subnet's resolution) for `edgebench bench --eval`."""
    from edgebench.search.ofa_job import load_data, load_ofa
    from edgebench.search.space import load_arch
    from edgebench.types import EdgebenchError, Format, Precision

    try:
        f, p = Format(fmt), Precision(precision)
    except ValueError as exc:
        raise EdgebenchError(f"{exc} (formats: onnx, tflite; precisions: fp32, int8, int8-dynamic)") from None
    net, info, space, _ = load_ofa(supernet)
    a = load_arch(arch, space)
    ds, _, _ = load_data(info.get("config", {}).get("data", {}))
    from edgebench.search.ofa_job import export_subnet

    artifact, trained = export_subnet(net, a, ds, f, p, out, name)
    import numpy as np

    eval_npz = Path(out) / f"{name}-eval.npz"
    np.savez(eval_npz, x=trained.dataset.x_test, y=trained.dataset.y_test)
    v = artifact.validation
    doc = {"path": str(artifact.path), "eval": str(eval_npz), "arch": a, "size_bytes": artifact.size_bytes,
           "macs": artifact.macs, "params": artifact.params,
           "max_abs_diff": v.max_abs_diff if v else None, "top1_agreement": v.top1_agreement if v else None}
    if as_json:
        typer.echo(json.dumps(doc))
    else:
        typer.echo(f"exported {artifact.path} ({artifact.size_bytes:,} bytes, validated against PyTorch"
                   + (f": max |diff| {v.max_abs_diff:.2g}, top-1 agreement {v.top1_agreement:.2%}" if v else "")
                   + f"); eval data {eval_npz}")
