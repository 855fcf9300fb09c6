import csv
import json

import onnx
import pytest

from edgebench.devices.local import LocalDevice
from edgebench.reports.record import LatencyStats, Record, percentile
from edgebench.reports.render import CSV_COLUMNS, write_report
from edgebench.reports.store import Store
from edgebench.types import Measurement, Provenance, RunSpec


def test_latency_stats_from_raw_samples():
    s = LatencyStats.from_samples_ns([4_000_000, 1_000_000, 3_000_000, 2_000_000])
    assert (s.n, s.min, s.max, s.mean) == (4, 1.0, 4.0, 2.5)
    assert s.p50 == pytest.approx(2.5) and s.p90 == pytest.approx(3.7)
    assert s.std == pytest.approx(1.2909944, rel=1e-6) and s.cv == pytest.approx(s.std / 2.5)
    assert percentile([1.0], 99) == 1.0
    assert LatencyStats.from_samples_ns([]) is None


@pytest.fixture()
def measured(cnn_bundle, onnx_artifact):
    m = LocalDevice().run(cnn_bundle, RunSpec(runs=60, warmup=5))
    assert m.ok, m.error
    return Record.from_parts("run-a", onnx_artifact, m, "local")


def test_store_appends_lists_and_queries(tmp_path, measured, onnx_artifact):
    path = tmp_path / "store.sqlite"
    with Store(path) as s:
        s.begin_run("run-a", "demo", {"k": 1})
        s.append(measured, "k1")
        failed = Record.from_parts("run-a", onnx_artifact,
                                   Measurement.failed("pi", Provenance.MEASURED, "host unreachable"), "ssh")
        s.append(failed, "k2")
        s.finish_run("run-a")
    with Store(path) as s:  # a new connection sees everything: it is on disk
        runs = s.runs()
        assert runs[0]["run_id"] == "run-a" and runs[0]["records"] == 2 and runs[0]["failed"] == 1
        assert s.done_keys("run-a") == {"k1"}
        back = s.query(run_id="run-a", device="local")[0]
    assert back.to_dict() == measured.to_dict()
    assert back.latency_ms["n"] == 60 and len(back.samples_ns) == 60


def test_report_folder_is_onnx_bench_style(tmp_path, measured):
    out = write_report([measured], tmp_path / "report")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["records.csv", "records.json", "recommendation.json", "report.html", "report.md", f"{measured.name}.onnx"])
    rows = list(csv.DictReader(open(out / "records.csv")))
    header = next(csv.reader(open(out / "records.csv")))
    assert header[:4] == ["name", "dataset", "onnx_encoding", "accuracy"] and header == CSV_COLUMNS
    assert float(rows[0]["accuracy"]) == pytest.approx(measured.accuracy)
    assert float(rows[0]["latency_p50_ms"]) == pytest.approx(measured.latency_ms["p50"])
    assert rows[0]["latency_provenance"] == "measured"
    assert rows[0]["onnx_encoding"].startswith("input 1x1x8x8")
    props = {p.key: p.value for p in onnx.load(str(out / f"{measured.name}.onnx")).metadata_props}
    assert float(props["accuracy"]) == pytest.approx(measured.accuracy, abs=1e-6)
    assert float(props["latency_p50_ms"]) == pytest.approx(measured.latency_ms["p50"], abs=1e-6)
    assert props["latency_provenance"] == "measured"
    assert json.loads(props["edgebench.measurements"])[0]["device"] == "local"
    doc = json.loads((out / "records.json").read_text())
    assert doc[0]["schema_version"] == 2 and doc[0]["latency_provenance"] == "measured"


def test_quantized_rows_compare_with_their_float_twin(tmp_path, measured):
    import copy

    q = copy.deepcopy(measured)
    q.record_id, q.name, q.precision = "q1", "digits_cnn-onnx-int8", "int8"
    q.accuracy = measured.accuracy - 0.01
    q.samples_ns = [s // 2 for s in measured.samples_ns]
    q.latency_ms = LatencyStats.from_samples_ns(q.samples_ns).to_dict()
    q.predictions = list(measured.predictions)
    q.predictions[0] = (q.predictions[0] + 1) % 10
    out = write_report([measured, q], tmp_path / "r")
    row = [r for r in csv.DictReader(open(out / "records.csv")) if r["precision"] == "int8"][0]
    assert float(row["accuracy_delta_vs_fp32"]) == pytest.approx(-0.01)
    assert float(row["latency_ratio_vs_fp32"]) == pytest.approx(0.5, rel=0.01)
    assert float(row["top1_agreement_vs_fp32"]) == pytest.approx(449 / 450)
