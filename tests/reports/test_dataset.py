"""`edgebench dataset export`: every measured artifact of a store as an ONNX-Bench-style dataset that pandas
and `datasets` read offline."""
import json

import onnx
import pandas as pd


def test_dataset_export_csv_and_parquet(cli, onnx_artifact, eval_npz, tmp_path):
    store = tmp_path / "s.sqlite"
    assert cli("bench", onnx_artifact.path, "--eval", eval_npz, "--runs", "20", "--store", store).returncode == 0
    assert cli("bench", onnx_artifact.path, "--runs", "20", "--store", store).returncode == 0  # no eval this time
    p = cli("dataset", "export", "--store", store, "--out", tmp_path / "ds", "--json")
    assert p.returncode == 0, p.stderr
    frame = pd.read_csv(json.loads(p.stdout)["table"])
    assert list(frame.columns[:5]) == ["name", "dataset", "onnx_encoding", "accuracy", "onnx_encoding_tokens"]
    assert len(frame) == 1  # one row per unique artifact (same sha256 benched twice)
    row = frame.iloc[0]
    assert row["sha256"] == onnx_artifact.sha256 and row["latency_provenance@local"] == "measured"
    assert 0.5 < row["accuracy"] == row["accuracy@local"]  # the newest accuracy, not the later run's none
    assert row["latency_p50_ms@local"] > 0 and row["macs"] == onnx_artifact.macs
    model = onnx.load(str(tmp_path / "ds" / row["file"]))
    props = {m.key: m.value for m in model.metadata_props}
    assert json.loads(props["edgebench.measurements"])[0]["device"] == "local"

    p = cli("dataset", "export", "--store", store, "--out", tmp_path / "dsp", "--format", "parquet")
    assert p.returncode == 0, p.stderr
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=str(tmp_path / "dsp" / "dataset.parquet"),
                      cache_dir=str(tmp_path / "hf-cache"))["train"]
    assert ds.num_rows == 1 and ds[0]["name"] == row["name"] and ds[0]["onnx_encoding"] == onnx_artifact.encoding
    bad = cli("dataset", "export", "--store", tmp_path / "none.sqlite")
    assert bad.returncode == 2 and "result store not found" in bad.stderr
