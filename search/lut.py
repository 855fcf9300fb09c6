"""A latency lookup table (LUT) of the OFA space, measured on a named device through its adapter.

Every distinct block configuration a subnet can contain gets OFA's key, e.g.
    expanded_conv-input:14x14x16-output:14x14x16-expand:4-kernel:5-stride:1-idskip:1
plus the stem (`Conv-...`), the final expansion (`Conv_1-...`), the pooling (`AvgPool2D-...`), the
classifier (`Logits-...`) and an empty model (`Identity-...`). Each is exported alone as a tiny ONNX file
(the same exporter and opset as a deployed subnet) and timed on the device: all models of a chunk in one
runner process (search/lut_runner.py, which loads them with the deployed runner's own session settings),
measured in interleaved rounds; the whole subnets the overhead is fitted on run in the last chunk's process.
The table is saved in OFA's YAML form, `key: {count, mean, var}` (ms, ms^2), with p50, parameter count and,
on an emulated device, guest instructions per inference, plus `_meta` (device, facts, runtime and version,
provenance, settings) and `_fit`.

Prediction (provenance `predicted`):
  latency_ms = sum of the entries' p50 + c + w * weight_MB + v * n_entries
  c, w and v are fitted by least squares of the relative error on whole subnets measured in the same
  runner process as the last keys (`_fit` says which and how many). A block timed alone keeps its
  weights in cache while a whole net streams them, so a plain sum runs low by an amount that grows with
  the weight size (w); every entry's p50 includes one runtime call that a whole net makes once (v,
  negative); c is the per-inference rest.
  instructions = sum of the blocks' instructions - (n_blocks - 1) * instructions of the empty model
  (each block's count includes one runtime call; a whole net makes one); no fitting.

The build is resumable: the table file is rewritten after every chunk and keys already in it are not
measured again. `resolutions` narrows the keys to what chosen input resolutions can reach.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgebench.devices.batch import BatchConfig, measure_models  # noqa: F401  (measure_models: OFA code imports it from here)
from edgebench.search.lut_table import (LUT_FORMAT, LatencyTable, _load_yaml, all_entries, arch_entries,  # noqa: F401
                                        block_key, empty_entry, fixed_entries, latency_budget_keys, summary_line)
from edgebench.train.ofa import MBConv, OFASpec, SubNet
from edgebench.types import EdgebenchError


@dataclass(frozen=True)
class LUTConfig(BatchConfig):
    """How the table is measured: BatchConfig's runs, rounds, warm-up, threads and timeout per runner process
    (and its emulated caps), plus how many keys go in one process and the whole subnets that fit c and w."""

    chunk: int = field(default=256, metadata={
        "help": "models per runner process (the table is saved after each); the OFA space's ~220 keys and the "
                "fit's subnets then share one process, whose interleaved rounds spread a drift over all"})
    calib_nets: int = field(default=30, metadata={
        "help": "random whole subnets measured to fit the overhead (c, w, v), beside the smallest and largest"})
    seed: int = field(default=0, metadata={"help": "seed of the calibration subnets"})


def entry_params(spec: OFASpec, e: dict) -> int:
    module, _ = entry_module(spec, e)
    return int(sum(p.numel() for p in module.parameters()) + sum(b.numel() for n, b in module.named_buffers()
                                                                  if "running" in n))


def entry_module(spec: OFASpec, e: dict):
    """(module with random weights, input shape) of one entry: latency depends on shapes, not values."""
    import torch
    from torch import nn

    from edgebench.train.ofa import Head, Pool, Stem

    kind = e["kind"]
    if kind == "block":
        m = MBConv(e["c_in"], e["c_out"], e["expand"], e["kernel"], e["stride"], e["se"], e["hswish"])
        shape = (1, e["c_in"], e["in_side"], e["in_side"])
    elif kind == "stem":
        m, shape = Stem(spec.in_channels, spec.stem_width, spec.stem_stride), (1, spec.in_channels, e["r"], e["r"])
    elif kind == "head":
        m, shape = Head(spec.widths[-1], spec.final_width), (1, spec.widths[-1], e["side"], e["side"])
    elif kind == "pool":
        m, shape = Pool(), (1, spec.final_width, e["side"], e["side"])
    elif kind == "logits":
        m, shape = nn.Linear(spec.final_width, spec.num_classes), (1, spec.final_width)
    elif kind == "empty":
        m, shape = nn.Identity(), (1, spec.num_classes)
    else:
        raise ValueError(kind)
    torch.manual_seed(0)
    return m.eval(), shape


def export_entry(spec: OFASpec, e: dict, path: Path) -> Path:
    import torch

    from edgebench.export.onnx import export_onnx

    module, shape = entry_module(spec, e)
    if e["kind"] == "empty":  # the TorchScript exporter drops a bare Identity graph: write it directly
        import onnx
        from onnx import TensorProto, helper

        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", shape[1]])
        out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", shape[1]])
        graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "empty", [inp], [out])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, str(path))
        return path
    return export_onnx(module, torch.randn(*shape), path)


# ============================================================ measuring
def _stats(samples_ns: list, instructions) -> dict:
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    d = {"count": int(ms.size), "mean": float(ms.mean()), "var": float(ms.var()), "p50": float(np.median(ms))}
    if instructions is not None:
        d["instructions"] = int(instructions)
    return d


# ============================================================ building
def _save_yaml(doc: dict, path: Path) -> None:
    import yaml

    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("# edgebench OFA latency table: key: {count, mean, var} in ms (OFA's form), plus p50, params\n"
                   + yaml.safe_dump(doc, sort_keys=False, width=200))
    tmp.replace(path)


def calibration_archs(spec: OFASpec, n: int, seed: int, resolutions=None) -> list[dict]:
    """The whole subnets the overhead is fitted on: the smallest (at the lowest resolution) and the largest
    (at the highest), then n random ones. Without the two ends the fit extrapolates: on random subnets only,
    its negative intercept predicted the smallest at 0.065 ms against 0.100 measured (local, measured)."""
    res = sorted(resolutions or spec.resolutions)
    ends = [dict(spec.smallest(), r=int(res[0])), dict(spec.largest(), r=int(res[-1]))]
    rng = np.random.default_rng(10_000 + seed)
    return ends + [spec.random_arch(rng, r=resolutions) for _ in range(n)]


def build_lut(spec: OFASpec, device, out_path: Path, cfg: LUTConfig = LUTConfig(), resolutions=None,
              progress: bool = True, log=print, replace_other: bool = False, alongside=()) -> "LatencyTable":
    """Measure every key not yet in `out_path` on `device`, then fit the overhead; resumable. A table of
    another device or space at `out_path` is an error, or with replace_other (a run's own output) rebuilt.
    `alongside`: whole subnets measured in the same runner process as the last keys (a held-out check);
    their [{p50_ms, instructions}] are the returned table's `measured_alongside`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import edgebench

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    res = tuple(resolutions or spec.resolutions)
    bad = sorted(set(res) - set(spec.resolutions))
    if bad:
        raise EdgebenchError(f"resolutions {bad} are not in the space {list(spec.resolutions)}")
    entries = all_entries(spec, res)
    if out_path.exists():
        doc = _load_yaml(out_path)
        meta = doc["_meta"]
        if meta.get("device") != device.name or meta.get("space") != spec.to_dict():
            if not replace_other:
                raise EdgebenchError(f"{out_path} holds a table of another device or space "
                                     f"({meta.get('device')}); choose another --out")
            log(f"{out_path} was built for another device or space ({meta.get('device')}): measuring it anew")
            out_path.unlink()
    if out_path.exists():
        log(f"resuming {out_path}: {sum(not k.startswith('_') for k in doc)} keys already measured")
    else:
        doc = {"_meta": {
            "format": LUT_FORMAT, "device": device.name, "device_kind": device.kind,
            "provenance": device.provenance.value,
            "provenance_note": ("per-key figures are this device's own timings (emulated wall time on an emulated "
                                "device, never a device latency; its instructions are counted on the guest); "
                                "latencies predicted from the table are 'predicted'"),
            "space": spec.to_dict(), "resolutions": list(res), "settings": {
                "runs": cfg.for_device(device.kind).runs, "rounds": cfg.for_device(device.kind).rounds,
                "warmup": cfg.for_device(device.kind).warmup, "threads": cfg.threads,
                "statistic": "p50 of the measured runs; mean and var over the same runs"},
            "edgebench_version": getattr(edgebench, "__version__", ""),
            **_basis(device),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
    todo = [k for k in entries if k not in doc]
    calib = calibration_archs(spec, cfg.calib_nets, cfg.seed, res) if "_fit" not in doc else []
    extra = [dict(a) for a in alongside]
    # the whole subnets (the fit's calibration subnets, then `alongside`) run in the same runner process as
    # the last chunk of keys, in the same interleaved rounds: a drift of the machine's speed between the keys
    # and the whole nets would otherwise enter the fit (and a held-out comparison) as error
    whole = calib + extra
    chunks = [todo[i:i + cfg.chunk] for i in range(0, len(todo), cfg.chunk)] or ([[]] if whole else [])
    t0 = time.perf_counter()
    measured_whole = []
    with tempfile.TemporaryDirectory(prefix="edgebench-lut-") as tmp, \
            Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     disable=not progress) as bar:
        task = bar.add_task(f"LUT on {device.name}", total=len(todo) + len(whole))
        for ci, chunk in enumerate(chunks):
            files = []
            for key in chunk:
                path = Path(tmp) / "onnx" / f"c{ci}-k{len(files)}.onnx"
                path.parent.mkdir(parents=True, exist_ok=True)
                files.append((key, export_entry(spec, entries[key], path)))
            last = ci == len(chunks) - 1
            nets = _export_archs(spec, whole, Path(tmp) / "nets") if last else []
            got = measure_models(device, files + nets, cfg, Path(tmp) / f"bundle{ci}")
            m = got.pop("_measurement")
            for key in chunk:
                e = entries[key]
                doc[key] = {**_stats(got[key]["samples_ns"], got[key]["instructions"]),
                            "params": entry_params(spec, e), "kind": e["kind"]}
            doc["_meta"].update({"runtime": m.runtime, "runtime_version": m.runtime_version,
                                 "facts": _plain(m.device_facts)})
            if last:
                measured_whole = _whole(got, nets)
                if calib:
                    doc["_fit"] = _fit(spec, doc, calib, measured_whole[:len(calib)], cfg.seed)
            _save_yaml(doc, out_path)  # resumable from here
            bar.update(task, advance=len(chunk) + len(nets))
    log(f"latency table {out_path}: {sum(not k.startswith('_') for k in doc)} keys "
        f"({len(todo)} measured now, {time.perf_counter() - t0:.0f} s)")
    table = LatencyTable(doc, out_path)
    table.measured_alongside = measured_whole[len(calib):]
    return table


def _basis(device) -> dict:
    """What predicted latency is made of: the wall-time sum on a real device; on an emulated one, predicted
    instructions at the device's ipc and clock (the same conversion its estimated_latency_ms uses)."""
    if device.kind == "emulated":
        return {"latency_basis": "instructions", "ipc": device.config.ipc, "clock_ghz": device.config.clock_ghz}
    return {"latency_basis": "wall_time"}


def _plain(v):
    return json.loads(json.dumps(v, default=str))


def _export_archs(spec: OFASpec, archs: list[dict], folder: Path) -> list[tuple[str, Path]]:
    """Whole subnets with random weights (seeded by position): latency depends on shapes, not values."""
    import torch

    from edgebench.export.onnx import export_onnx

    files = []
    for i, arch in enumerate(archs):
        torch.manual_seed(i)
        path = Path(folder) / f"net{i}.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        files.append((f"net{i}", export_onnx(SubNet(spec, arch).eval(),
                                             torch.randn(1, spec.in_channels, arch["r"], arch["r"]), path)))
    return files


def _whole(got: dict, files: list[tuple[str, Path]]) -> list[dict]:
    return [{"p50_ms": float(np.median(got[k]["samples_ns"])) / 1e6, "instructions": got[k]["instructions"]}
            for k, _ in files]


def measure_archs(spec: OFASpec, device, archs: list[dict], cfg: LUTConfig, workdir: Path) -> list[dict]:
    """Whole subnets (random weights) measured exactly as the table's keys, in one runner process:
    [{p50_ms, instructions}]."""
    files = _export_archs(spec, archs, Path(workdir) / "nets")
    return _whole(measure_models(device, files, cfg, Path(workdir) / "nets-bundle"), files)


def _fit(spec: OFASpec, doc: dict, archs: list[dict], measured: list[dict], seed: int) -> dict:
    table = LatencyTable(doc)
    sums = np.array([table.block_sum_ms(a) for a in archs])
    mb = np.array([table.weight_mb(a) for a in archs])
    nb = np.array([len(arch_entries(spec, a)) for a in archs], dtype=np.float64)
    p50 = np.array([m["p50_ms"] for m in measured])
    # relative least squares (each row divided by its measured p50): the error that matters is relative,
    # and plain least squares let the largest subnets set c, leaving the smallest +10% high (measured)
    wts = 1.0 / p50
    (c, w, v), *_ = np.linalg.lstsq(np.stack([np.ones_like(mb), mb, nb], 1) * wts[:, None], (p50 - sums) * wts,
                                    rcond=None)
    fit = {"c_ms": float(c), "w_ms_per_mb": float(w), "v_ms_per_entry": float(v), "n_calib": len(archs),
           "seed": seed,
           "method": ("least squares of the relative error of (measured whole-subnet p50 - sum of entry p50s) = c + "
                      "w * weight_MB + "
                      "v * n_entries over n_calib subnets (the smallest, the largest, random ones; random weights) "
                      "measured in the runner process of the last keys, in the same interleaved rounds; v absorbs "
                      "the runtime call each entry's p50 includes once per entry"),
           "calib": [{"arch": a, "measured_ms": m["p50_ms"], "sum_ms": float(s), "weight_mb": float(b)}
                     for a, m, s, b in zip(archs, measured, sums, mb)]}
    if all(m["instructions"] is not None for m in measured):
        pred = [table.instructions(a) for a in archs]
        fit["instructions_calib"] = [{"measured": m["instructions"], "predicted": p} for m, p in zip(measured, pred)]
    return fit
