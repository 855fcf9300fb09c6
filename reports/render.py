"""Render records into an ONNX-Bench-style report folder: ONNX files with metrics in metadata_props,
records.csv, records.json, report.html (reports/interactive.py) and report.md (reports/markdown.py).

Rendering only: every figure here comes from a Record; nothing is measured in this module.
"""
from __future__ import annotations

import csv
import html
import json
import shutil
from pathlib import Path

from edgebench.deploy.inputs import feeds_text
from edgebench.reports.encoding import fold_blocks
from edgebench.reports.intervals import difference, wilson
from edgebench.reports.record import Record

CSV_COLUMNS = [
    "name", "dataset", "onnx_encoding", "accuracy", "accuracy_ci95_low", "accuracy_ci95_high", "n_eval",
    "device", "format", "precision", "graph", "status",
    "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_mean_ms", "latency_std_ms",
    "latency_min_ms", "latency_max_ms", "latency_cv", "latency_n", "latency_provenance",
    "load_ms", "first_inference_ms", "peak_rss_mb",
    "macs", "params", "size_bytes",
    "accuracy_delta_vs_fp32", "accuracy_delta_ci95_low", "accuracy_delta_ci95_high", "latency_ratio_vs_fp32", "top1_agreement_vs_fp32",
    "activation_sparsity", "synops_per_sample", "effective_macs_per_sample", "dense_macs_per_sample",
    "weight_sparsity", "instructions_per_inference", "estimated_latency_ms",
    "energy_mj_per_inference", "energy_provenance", "energy_source", "energy_mean_power_w",
    "synops_energy_mj_per_sample", "dense_mac_energy_mj_per_sample",
    "runtime", "threads", "inputs_fed", "macs_definition", "error",
]


def latest_per_key(records: list[Record]) -> list[Record]:
    """One record per (artifact, device): the newest ok one, else the newest failure."""
    best: dict = {}
    for r in sorted(records, key=lambda r: r.created_at):
        key = (r.name, r.device)
        if key not in best or r.status == "ok" or best[key].status != "ok":
            best[key] = r
    return list(best.values())


def accuracy_ci(r: Record) -> tuple:
    """95 % Wilson interval of the accuracy on the device over its n_eval windows (None, None without)."""
    if r.accuracy is None or not r.n_eval:
        return (None, None)
    return wilson(r.accuracy, r.n_eval)


def graph_of(r: Record) -> str:
    """'window' (one call per window), 'step' (a step model, one call per sample) or 'stream' (the same step
    file timed per streamed window of T calls)."""
    return r.extra.get("graph", "window") if isinstance(r.extra, dict) else "window"


def stream_rows(records: list[Record]) -> list[dict]:
    """Step, streamed-window and window-model figures side by side, per model, format, precision and device."""
    rows: dict = {}
    for r in records:
        if r.status != "ok":
            continue
        key = (r.model, r.format, r.precision, r.device)
        row = rows.setdefault(key, {"model": r.model, "format": r.format, "precision": r.precision,
                                    "device": r.device})
        g = graph_of(r)
        row[f"{g}_p50_ms"] = (r.latency_ms or {}).get("p50")
        row[f"{g}_accuracy"] = r.accuracy
        row[f"{g}_size_bytes"] = r.size_bytes
        row[f"{g}_provenance"] = r.latency_provenance
        if "instructions_per_inference" in r.extra:
            row[f"{g}_instructions"] = r.extra["instructions_per_inference"]
    return [v for v in rows.values() if "step_p50_ms" in v or "stream_p50_ms" in v]


def compare_to_float(records: list[Record]) -> dict[str, dict]:
    """For each quantized record: accuracy delta, p50 latency ratio and top-1 agreement against the fp32
    artifact of the same model and format on the same device, in the same run."""
    twins = {(r.run_id, r.model, r.format, r.device, graph_of(r)): r for r in records
             if r.precision == "fp32" and r.status == "ok"}
    out = {}
    for r in records:
        if r.precision == "fp32" or r.status != "ok":
            continue
        t = twins.get((r.run_id, r.model, r.format, r.device, graph_of(r)))
        if t is None:
            continue
        row = {"twin": t.name}
        if r.accuracy is not None and t.accuracy is not None:
            row["accuracy_delta"] = r.accuracy - t.accuracy
            if r.n_eval and t.n_eval:
                row["accuracy_delta_ci95"] = list(difference(r.accuracy, r.n_eval, t.accuracy, t.n_eval))
        if r.latency_ms and t.latency_ms and t.latency_ms["p50"]:
            row["latency_ratio"] = r.latency_ms["p50"] / t.latency_ms["p50"]
        if r.predictions and t.predictions and len(r.predictions) == len(t.predictions):
            row["top1_agreement"] = sum(a == b for a, b in zip(r.predictions, t.predictions)) / len(r.predictions)
        out[r.record_id] = row
    return out


def csv_row(r: Record, cmp: dict) -> dict:
    lat = r.latency_ms or {}
    c = cmp.get(r.record_id, {})
    return {
        "name": r.name, "dataset": r.dataset, "onnx_encoding": fold_blocks(r.onnx_encoding), "accuracy": r.accuracy,
        **dict(zip(("accuracy_ci95_low", "accuracy_ci95_high"), accuracy_ci(r))), "n_eval": r.n_eval or None,
        **dict(zip(("accuracy_delta_ci95_low", "accuracy_delta_ci95_high"), c.get("accuracy_delta_ci95", (None, None)))),
        "device": r.device, "format": r.format, "precision": r.precision, "graph": graph_of(r), "status": r.status,
        **{f"latency_{k}_ms": lat.get(k) for k in ("p50", "p90", "p99", "mean", "std", "min", "max")},
        "latency_cv": lat.get("cv"), "latency_n": lat.get("n"), "latency_provenance": r.latency_provenance,
        "load_ms": r.load_ms, "first_inference_ms": r.first_inference_ms, "peak_rss_mb": r.peak_rss_mb,
        "macs": r.macs, "params": r.params, "size_bytes": r.size_bytes,
        "accuracy_delta_vs_fp32": c.get("accuracy_delta"), "latency_ratio_vs_fp32": c.get("latency_ratio"),
        "top1_agreement_vs_fp32": c.get("top1_agreement"),
        **{k: r.extra.get(k) for k in ("activation_sparsity", "synops_per_sample", "effective_macs_per_sample",
                                        "dense_macs_per_sample", "weight_sparsity")},
        "instructions_per_inference": r.extra.get("instructions_per_inference"),
        "estimated_latency_ms": r.extra.get("estimated_latency_ms"),
        **{k: r.extra.get(k) for k in ("energy_mj_per_inference", "energy_provenance", "energy_source",
                                        "energy_mean_power_w", "synops_energy_mj_per_sample",
                                        "dense_mac_energy_mj_per_sample")},
        "runtime": f"{r.runtime} {r.runtime_version}".strip(), "threads": r.threads,
        "inputs_fed": feeds_text(r.inputs_fed),
        "macs_definition": r.macs_definition or r.extra.get("macs_unavailable", ""), "error": r.error,
    }


def write_onnx_with_metadata(records: list[Record], out_dir: Path) -> list[Path]:
    """Copy each ONNX artifact into the report with its measured metrics in metadata_props."""
    import onnx

    written = []
    by_name: dict = {}
    for r in records:
        if r.format == "onnx":
            by_name.setdefault(r.name, []).append(r)
    for name, recs in sorted(by_name.items()):
        src = Path(recs[0].artifact_path) if recs[0].artifact_path else None
        if src is None or not src.is_file():  # a failed export has no file
            continue
        model = onnx.load(str(src))
        ok = [r for r in recs if r.status == "ok"]
        props = {"edgebench.schema_version": str(recs[0].schema_version), "name": name,
                 "dataset": recs[0].dataset, "macs": str(recs[0].macs), "params": str(recs[0].params)}
        if ok:
            first = ok[0]
            props["accuracy"] = "" if first.accuracy is None else f"{first.accuracy:.6f}"
            props["latency_p50_ms"] = f"{first.latency_ms['p50']:.6f}" if first.latency_ms else ""
            props["latency_device"] = first.device
            props["latency_provenance"] = first.latency_provenance
            props["inputs_fed"] = feeds_text(first.inputs_fed)
        props["edgebench.measurements"] = json.dumps([
            {"device": r.device, "status": r.status, "accuracy": r.accuracy, "inputs_fed": r.inputs_fed,
             "latency_ms": r.latency_ms, "provenance": r.latency_provenance, "error": r.error} for r in recs])
        del model.metadata_props[:]
        for k, v in props.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = k, v
        dst = out_dir / f"{name}.onnx"
        onnx.save(model, str(dst))
        written.append(dst)
    return written


def _fmt(v, spec="{:.4g}") -> str:
    if v is None or v == "":
        return "–"
    if isinstance(v, float):
        return spec.format(v)
    return html.escape(str(v))


def stream_html(records: list[Record]) -> str:
    rows = stream_rows(records)
    if not rows:
        return ""
    body = "".join(
        "<tr><td>{m}</td><td>{d}</td><td>{f}</td><td>{p}</td><td>{s}</td><td>{i}</td><td>{w}</td><td>{wm}</td>"
        "<td>{sa}</td><td>{wa}</td><td>{ssz}</td><td>{wsz}</td><td>{prov}</td></tr>".format(
            m=html.escape(r["model"]), d=html.escape(r["device"]), f=r["format"], p=r["precision"],
            s=_fmt(r.get("step_p50_ms")), i=_fmt(r.get("step_instructions"), "{:,.0f}"),
            w=_fmt(r.get("stream_p50_ms")), wm=_fmt(r.get("window_p50_ms")),
            sa=_fmt(None if r.get("stream_accuracy") is None else 100 * r["stream_accuracy"], "{:.2f}%"),
            wa=_fmt(None if r.get("window_accuracy") is None else 100 * r["window_accuracy"], "{:.2f}%"),
            ssz=_fmt(r.get("step_size_bytes") or r.get("stream_size_bytes"), "{:,}"),
            wsz=_fmt(r.get("window_size_bytes"), "{:,}"),
            prov=html.escape(r.get("step_provenance") or r.get("stream_provenance") or ""))
        for r in sorted(rows, key=lambda r: (r["device"], r["model"], r["format"], r["precision"])))
    return ("<h2>Streaming: step model vs window model</h2><p class='note'>Step p50: one call of the step model "
            "(one sample in, state carried). Streamed window p50: the window's T calls from rest, call overhead "
            "included. Window model p50: the unrolled window model, one call. Streamed accuracy: eval windows "
            "streamed through the step file on the device.</p><table><tr><th>model</th><th>device</th>"
            "<th>format</th><th>precision</th><th>step p50 ms</th><th>guest instructions / step</th>"
            "<th>streamed window p50 ms</th><th>window model p50 ms</th><th>streamed accuracy</th>"
            "<th>window model accuracy</th><th>step file bytes</th><th>window file bytes</th><th>latency "
            f"provenance</th></tr>{body}</table>")


QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Cast", "MatMulIntegerToFloat")


def int8_verdicts(records: list[Record], cmp: dict) -> list[dict]:
    """Per quantized record: does INT8 pay here (p50 no higher than its fp32 twin's, accuracy within 1 point),
    and if not, what the operator profile (onnxruntime, `profile = true`) says the time goes to."""
    sizes = {(r.name, r.device): r.size_bytes for r in records}
    out = []
    for r in records:
        c = cmp.get(r.record_id, {})
        if "latency_ratio" not in c:
            continue
        ratio, delta = c["latency_ratio"], c.get("accuracy_delta")
        pays = ratio <= 1.0 and (delta is None or abs(delta) <= 0.01)
        reasons = []
        if ratio > 1.0:
            reasons.append(f"{ratio:.2f}x the fp32 p50")
        if delta is not None and abs(delta) > 0.01:
            reasons.append(f"accuracy {100 * delta:+.2f} pp")
        why = ", ".join(reasons)
        if not pays and r.profile:  # facts from the profile, no verdict beyond them
            total = sum(p.get("total_us", 0.0) for p in r.profile) or 1.0
            quant = sum(p.get("total_us", 0.0) for p in r.profile if p.get("op") in QUANT_OPS)
            by_op: dict = {}
            for p in r.profile:
                by_op[p.get("op")] = by_op.get(p.get("op"), 0.0) + p.get("total_us", 0.0)
            top = sorted(by_op.items(), key=lambda kv: -kv[1])[:3]
            why += (f"; onnxruntime profile (top operators): {100 * quant / total:.0f}% of kernel time in "
                    "quantize/dequantize/cast ops; " + ", ".join(f"{op} {100 * us / total:.0f}%" for op, us in top))
        if not pays and r.macs and r.latency_ms and r.latency_ms.get("p50"):
            why += (f"; {r.macs:,} MACs per call in {1000 * r.latency_ms['p50']:.3g} µs "
                    f"({r.macs / (1e6 * r.latency_ms['p50']):.2g} GMAC/s): a graph this small spends its time "
                    "in per-operator and per-call work that int8 kernels do not shorten")
        twin_size = sizes.get((c.get("twin"), r.device))
        out.append({"name": r.name, "device": r.device, "graph": graph_of(r), "ratio": ratio, "delta": delta,
                    "pays": pays, "why": why,
                    "size_ratio": r.size_bytes / twin_size if twin_size and r.size_bytes else None})
    return out


def int8_html(records: list[Record], cmp: dict) -> str:
    rows = []
    for v in int8_verdicts(records, cmp):
        delta = "–" if v["delta"] is None else f"{100 * v['delta']:+.2f} pp"
        size = "–" if v["size_ratio"] is None else f"{v['size_ratio']:.2f}x"
        verdict = "pays" if v["pays"] else "does not pay: " + html.escape(v["why"])
        rows.append(f"<tr><td>{html.escape(v['name'])}</td><td>{html.escape(v['device'])}</td><td>{v['graph']}</td>"
                    f"<td>{v['ratio']:.2f}x</td><td>{delta}</td><td>{size}</td><td>{verdict}</td></tr>")
    if not rows:
        return ""
    return ("<h2>INT8 where it pays</h2><p class='note'>Each quantized artifact against the fp32 file of the same "
            "model, runtime and graph on the same device: it pays when its p50 is no higher and its accuracy is "
            "within 1 point.</p><table><tr><th>artifact</th><th>device</th><th>graph</th><th>p50 vs fp32</th>"
            f"<th>Δ accuracy</th><th>size vs fp32</th><th>verdict</th></tr>{''.join(rows)}</table>")


def write_report(records: list[Record], out_dir: str | Path, title: str = "edgebench report") -> Path:
    """Write the report folder; returns its path. Replaces an older report at the same place."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    records = latest_per_key(records)
    cmp = compare_to_float(records)
    with open(out_dir / "records.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in records:
            w.writerow(csv_row(r, cmp))
    docs = []
    for r in records:
        d = r.to_dict()
        d["compared_to_fp32"] = cmp.get(r.record_id)
        docs.append(d)
    from edgebench.reports.recommend import recommend

    (out_dir / "recommendation.json").write_text(json.dumps(
        {dev: rec.__dict__ for dev, rec in recommend(records).items()}, indent=1, default=str))
    (out_dir / "records.json").write_text(json.dumps(docs, indent=1, default=str))
    write_onnx_with_metadata(records, out_dir)
    from edgebench.reports.interactive import render_page
    from edgebench.reports.markdown import render_markdown

    (out_dir / "report.html").write_text(render_page(records, cmp, title))  # interactive, decision first
    (out_dir / "report.md").write_text(render_markdown(records, title))  # for a pull request or a CI log
    return out_dir
