"""`edgebench instatune train|search|export`: the InstaTune steps one at a time, as library calls."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="InstaTune: elastic fine-tuning of MiniLM, subnet search per device, subnet export.",
                  no_args_is_help=True)


def _echo(obj) -> None:
    typer.echo(json.dumps(obj, indent=1, default=str))


@app.command()
def train(out: Path = typer.Option(Path("out/instatune/supernet.pt"), help="Checkpoint to write"),
          steps: int = typer.Option(500, min=1, help="Elastic fine-tuning steps"),
          warmup_steps: int = typer.Option(200, min=0, help="Plain fine-tuning steps before importance reordering"),
          max_train: int = typer.Option(0, min=0, help="Use only the first N training rows (0: all)"),
          csv: Optional[Path] = typer.Option(None, help="Your CSV instead of Rotten Tomatoes"),
          text_column: str = typer.Option("text", help="The CSV's text column"),
          label_column: str = typer.Option("label", help="The CSV's label column"),
          threads: int = typer.Option(1, min=1, help="torch threads"),
          seed: int = typer.Option(0, help="Seed of head, batches, sampling and the data split"),
          quiet: bool = typer.Option(False, help="No progress bars")):
    """Fine-tune all-MiniLM-L6-v2 elastically (InstaTune loss, sandwich sampling); writes the supernet."""
    from edgebench.train.instatune import InstaTuneConfig, instatune

    data = ({"dataset": "csv", "csv": str(csv), "text_column": text_column, "label_column": label_column,
             "seed": seed} if csv else {"dataset": "rotten_tomatoes", "seed": seed})
    cfg = InstaTuneConfig(steps=steps, warmup_steps=warmup_steps, max_train=max_train, threads=threads, seed=seed)
    sn = instatune(cfg, data, out=out, progress=not quiet, log=typer.echo)
    _echo({"checkpoint": str(out), **{k: v for k, v in sn.metrics.items() if k != "log"}})


@app.command()
def search(supernet: Path = typer.Option(..., help="Supernet checkpoint (edgebench instatune train)"),
           device: str = typer.Option("local", help="Device name (devices.toml or built in)"),
           latency_ms: float = typer.Option(0.0, min=0.0, help="Latency budget on the device (0: none)"),
           picks: int = typer.Option(5, min=1, help="Picks to return"),
           n_initial: int = typer.Option(16, min=2, help="Random subnets evaluated first (plus largest and smallest)"),
           iterations: int = typer.Option(2, min=0, help="LINAS rounds (search, evaluate the front, refit)"),
           per_iteration: int = typer.Option(6, min=1, help="Front subnets evaluated per round"),
           val_samples: int = typer.Option(0, min=0, help="Validation sequences per accuracy evaluation (0: all)"),
           threads: int = typer.Option(1, min=1, help="Runtime threads on the device"),
           runs: int = typer.Option(50, min=1, help="Measured inferences per evaluated subnet"),
           work: Path = typer.Option(Path("out/instatune/search"), help="Folder for the measured subnets"),
           devices_file: Optional[Path] = typer.Option(None, "--devices", help="devices.toml"),
           as_json: bool = typer.Option(False, "--json", help="Print one JSON object")):
    """LINAS search for one device: measured sample -> predictors -> NSGA-II -> evaluate the front -> repeat."""
    from edgebench.devices.registry import get_device
    from edgebench.search.instatune_search import (LatencyEvaluator, LinasConfig, accuracy_evaluator, linas,
                                                   macs_of, pick_front)
    from edgebench.search.instatune_space import InstaTuneSpace
    from edgebench.train.instatune import load_supernet, token_data
    from edgebench.types import EdgebenchError, RunSpec

    dev = get_device(device, str(devices_file) if devices_file else None)
    sn = load_supernet(supernet)
    torch_threads()
    data = token_data(sn.config["data"], sn.max_length, with_train=False)
    n = val_samples or len(data.val_y)
    space = InstaTuneSpace(sn.choices)
    log = (lambda *_: None) if as_json else typer.echo
    lat = LatencyEvaluator(sn, dev, RunSpec(runs=runs, warmup=max(1, runs // 10), threads=threads), work / device,
                           data.test_x[:64], log=log)
    cfg = LinasConfig(n_initial=n_initial, iterations=iterations, per_iteration=per_iteration)
    result = linas(space, accuracy_evaluator(sn, data.val_x[:n], data.val_y[:n]), lat, macs_of(space, sn, sn.max_length),
                   cfg, log)
    chosen = pick_front(result["front"], picks, latency_ms)
    if not chosen:
        raise EdgebenchError(f"no subnet of the predicted front meets {latency_ms} ms on {device}")
    last = result["rounds"][-1]
    out = {"device": device, "budget_ms": latency_ms or None, "latency_provenance": lat.provenance,
           "picks": [{**p, "predicted_provenance": "predicted"} for p in chosen],
           "predictors": {"accuracy": last["accuracy_predictor"], "latency": last["latency_predictor"]},
           "nsga2": {"evaluations": result["evaluations"], "search_s": result["search_s"]},
           "evaluated": len(result["evaluated"])}
    if as_json:
        _echo(out)
    else:
        for p in chosen:
            typer.echo(f"{json.dumps(p['arch'])}  predicted accuracy {p['accuracy'] * 100:.1f}%  "
                       f"latency {p['latency_ms']:.2f} ms  MACs {p['macs'] / 1e6:.1f} M")
        typer.echo(f"NSGA-II: {result['evaluations']} evaluations in {result['search_s']:.2f} s")


def torch_threads(n: int = 1) -> None:
    import torch

    torch.set_num_threads(n)


@app.command()
def export(supernet: Path = typer.Option(..., help="Supernet checkpoint"),
           arch: Path = typer.Option(..., help='ARCH.json: {"layers": L, "heads": [...], "ffn": [...]}'),
           format_: str = typer.Option("onnx", "--format", help="onnx or tflite"),
           precision: str = typer.Option("fp32", help="fp32 or int8-dynamic"),
           out: Path = typer.Option(Path("out/instatune/export"), help="Output folder"),
           device: Optional[str] = typer.Option(None, help="Also run it on this device with the test split"),
           devices_file: Optional[Path] = typer.Option(None, "--devices", help="devices.toml"),
           as_json: bool = typer.Option(False, "--json", help="Print one JSON object")):
    """Extract one subnet (heads pruned, FFN sliced, layers dropped), export and validate it; writes the
    test split as eval.npz beside it (for `edgebench bench FILE --eval eval.npz`)."""
    import numpy as np

    from edgebench.search.instatune_export import export_subnet, file_accuracy
    from edgebench.search.instatune_space import InstaTuneSpace
    from edgebench.search.space import load_arch
    from edgebench.train.instatune import load_supernet, token_data
    from edgebench.types import EdgebenchError, Format, Precision

    try:
        fmt, prec = Format(format_), Precision(precision)
    except ValueError as exc:
        raise EdgebenchError(f"{exc} (formats: onnx, tflite; precisions: fp32, int8-dynamic)") from None
    sn = load_supernet(supernet)
    a = load_arch(arch, InstaTuneSpace(sn.choices))  # ArchError (one line, exit 2) before any work
    torch_threads()
    data = token_data(sn.config["data"], sn.max_length, with_train=False)
    name = "instatune-L{}-h{}-f{}".format(a["layers"], "_".join(map(str, a["heads"])), "_".join(map(str, a["ffn"])))
    art = export_subnet(sn, a, fmt, prec, out, data.test_x[:256], name)
    np.savez(out / "eval.npz", x=data.test_x, y=data.test_y)
    result = {"file": str(art.path), "arch": a, "format": fmt.value, "precision": prec.value,
              "params": art.params, "encoder_params": art.extra["encoder_params"], "macs": art.macs,
              "macs_definition": art.macs_definition, "size_bytes": art.size_bytes,
              "validation": art.validation.to_dict(), "seq_len": sn.max_length,
              "test_accuracy_host": file_accuracy(art.path, data.test_x, data.test_y),
              "test_accuracy_host_provenance": "measured on this host by the file's runtime, test split",
              "eval_file": str(out / "eval.npz")}
    if device:
        from edgebench.deploy.bundle import make_bundle
        from edgebench.devices.registry import get_device
        from edgebench.reports.record import LatencyStats
        from edgebench.types import RunSpec

        dev = get_device(device, str(devices_file) if devices_file else None)
        bundle = make_bundle(art, out / "bundle", data.test_x, data.test_y)
        m = dev.run(bundle, RunSpec(runs=50, warmup=5, threads=1))
        if not m.ok:
            raise EdgebenchError(f"run on {device} failed: {m.error}")
        result["device"] = {"name": device, "accuracy": m.accuracy, "n_eval": m.n_eval,
                            "p50_ms": LatencyStats.from_samples_ns(m.samples_ns).p50,
                            "latency_provenance": m.provenance.value}
    if as_json:
        _echo(result)
    else:
        for k, v in result.items():
            typer.echo(f"{k}: {v}")
