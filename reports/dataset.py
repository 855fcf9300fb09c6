"""Every measured artifact in a store as one ONNX-Bench-style dataset: model files with their per-device
metrics in metadata_props, and one table row per unique artifact (by sha256).

Columns: ONNX-Bench's `name, dataset, onnx_encoding, accuracy, onnx_encoding_tokens`, then format, precision,
sha256, MACs (and their definition), params, size, the model file, and per device `latency_p50_ms@DEVICE`,
`latency_provenance@DEVICE`, `accuracy@DEVICE`. `onnx_encoding_tokens` counts whitespace-separated tokens of
the encoding. The CSV holds the encoding with repeated blocks folded (readable with any CSV reader's default
limits); the parquet file holds it in full.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from edgebench.reports.encoding import fold_blocks
from edgebench.reports.record import Record
from edgebench.types import EdgebenchError


def _rows(records: list[Record]) -> tuple[list[dict], dict[str, list[Record]]]:
    by_sha: dict[str, list[Record]] = {}
    for r in records:
        if r.status == "ok" and r.sha256:
            by_sha.setdefault(r.sha256, []).append(r)
    rows = []
    for sha, recs in sorted(by_sha.items(), key=lambda kv: kv[1][0].name):
        newest, accuracy = {}, {}
        for r in sorted(recs, key=lambda r: r.created_at):
            newest[r.device] = r  # the newest measurement per device
            if r.accuracy is not None:
                accuracy[r.device] = r.accuracy  # the newest accuracy (a later run may have had no eval data)
        first = recs[0]
        accs = list(accuracy.values())
        row = {"name": first.name, "dataset": first.dataset, "onnx_encoding": first.onnx_encoding,
               "accuracy": accs[0] if accs else None,
               "onnx_encoding_tokens": len(first.onnx_encoding.split()) if first.onnx_encoding else 0,
               "format": first.format, "precision": first.precision, "sha256": sha, "macs": first.macs,
               "macs_definition": first.macs_definition, "params": first.params, "size_bytes": first.size_bytes,
               "file": f"models/{first.name}-{sha[:8]}.{first.format}"}
        for device, r in sorted(newest.items()):
            row[f"latency_p50_ms@{device}"] = (r.latency_ms or {}).get("p50")
            row[f"latency_provenance@{device}"] = r.latency_provenance
            row[f"accuracy@{device}"] = accuracy.get(device)
        rows.append(row)
    return rows, by_sha


def export_dataset(records: list[Record], out_dir: Path, fmt: str = "csv") -> Path:
    """Write the dataset folder; returns the table's path."""
    import pandas as pd

    from edgebench.reports.render import write_onnx_with_metadata

    if fmt not in ("csv", "parquet"):
        raise EdgebenchError(f"unknown dataset format '{fmt}' (csv or parquet)")
    rows, by_sha = _rows(records)
    if not rows:
        raise EdgebenchError("no successful measurements to export")
    out_dir = Path(out_dir)
    models = out_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    for row in rows:
        recs = by_sha[row["sha256"]]
        stem = Path(row["file"]).stem
        if row["format"] == "onnx":  # metrics of every device in the file's metadata_props
            write_onnx_with_metadata([dataclasses.replace(r, name=stem) for r in recs], models)
        elif Path(recs[0].artifact_path).exists():
            shutil.copyfile(recs[0].artifact_path, out_dir / row["file"])
    present = [r for r in rows if (out_dir / r["file"]).exists()]
    for r in rows:
        if r not in present:
            r["file"] = ""  # the artifact file is gone from disk: the row keeps its figures, says so
    frame = pd.DataFrame(rows)
    if fmt == "parquet":
        try:
            path = out_dir / "dataset.parquet"
            frame.to_parquet(path, index=False)
        except ImportError:
            raise EdgebenchError("parquet needs pyarrow: pip install 'edgebench[dataset]'") from None
    else:
        frame["onnx_encoding"] = [fold_blocks(e) for e in frame["onnx_encoding"]]
        path = out_dir / "dataset.csv"
        frame.to_csv(path, index=False)
    return path
